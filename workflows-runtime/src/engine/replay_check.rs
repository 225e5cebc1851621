//! The replay check: recorded journals (from a store, or exported with `workflows export`)
//! replayed against this program's code, to find before a deploy the executions it would block.
//! Nothing runs: no step body, no compensation, no child; each execution is replayed in an engine
//! of its own over a store in memory, up to the end of its journal.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::builder::EngineError;
use super::core::{EngineInner, LiveExecution};
use super::driver;
use super::engine::Engine;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::Failure;
use crate::journal::JournalEntry;
use crate::journal::replay::Progress;
use crate::store::{NewExecution, StoreError, WriteMode};
use crate::time::Timestamp;
use crate::workflow::Workflow;

/// An execution as `workflows export` writes it: its record and its journal, to replay against
/// other code ([`replay_check`]), e.g. kept as a fixture in a repository's tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportedExecution {
    /// The execution's record.
    pub execution: ExecutionRecord,
    /// Its journal, in order.
    pub journal: Vec<JournalEntry>,
}

impl ExportedExecution {
    /// Reads exported executions: the file `workflows export ID > FILE` wrote, or every `.json`
    /// file of a directory of them, in the order of their names.
    pub fn load(path: impl AsRef<std::path::Path>) -> Result<Vec<Self>, LoadError> {
        let path = path.as_ref();
        let failed = |why: String| LoadError(why);
        if !path.is_dir() {
            return Ok(vec![Self::load_file(path)?]);
        }
        let entries = std::fs::read_dir(path)
            .map_err(|e| failed(format!("cannot read the journals in `{}`: {e}", path.display())))?;
        let mut paths: Vec<std::path::PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
            .collect();
        paths.sort();
        paths.iter().map(|path| Self::load_file(path)).collect()
    }

    fn load_file(path: &std::path::Path) -> Result<Self, LoadError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| LoadError(format!("cannot read `{}`: {e}", path.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            LoadError(format!(
                "`{}` is not an exported execution (`workflows export ID > FILE` writes one): {e}",
                path.display()
            ))
        })
    }
}

/// Exported executions could not be read: which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LoadError(String);

/// What replaying one recorded execution against this program's code found.
#[derive(Clone, Debug)]
pub enum ReplayVerdict {
    /// The code replays its whole journal: it would go on (or it ends the same way).
    Replays,
    /// The code would block it: where it diverges from the journal (the key, the call's
    /// position, and why), as the blocked execution's failure would say.
    Diverges(Box<Failure>),
    /// Its workflow's version is not linked in this program: no worker running this code takes
    /// it (a worker of a build that has the version must).
    NotLinked,
}

/// One execution's replay check.
#[derive(Clone, Debug)]
pub struct ReplayReport {
    /// The execution.
    pub execution: ExecutionId,
    /// Its workflow.
    pub workflow: String,
    /// The version that started it.
    pub version: u32,
    /// Its state where it was recorded.
    pub state: ExecutionState,
    /// What the replay found.
    pub verdict: ReplayVerdict,
}

impl ReplayReport {
    /// True if this code would block the execution.
    pub fn diverges(&self) -> bool {
        matches!(self.verdict, ReplayVerdict::Diverges(_))
    }
}

impl Engine {
    /// An execution's record and journal, as `workflows export` writes them (see
    /// [`replay_check`]); `None` if no execution has this id.
    pub async fn export(&self, id: &ExecutionId) -> Result<Option<ExportedExecution>, StoreError> {
        let Some(execution) = self.inner.store.execution(id).await? else { return Ok(None) };
        let journal = self.inner.store.journal(id).await?;
        Ok(Some(ExportedExecution { execution, journal }))
    }
}

/// Replays recorded executions — finished, in flight or blocked — against the workflows linked
/// in this program, and says for each whether this code replays its journal or would block it
/// (and where). Runs no step body, no compensation and no child: what the journal recorded is
/// replayed, and the replay stops where the journal ends. For CI: fail the build when a change
/// would block executions in flight (`workflows replay-check`).
pub async fn replay_check(
    executions: impl IntoIterator<Item = ExportedExecution>,
) -> Result<Vec<ReplayReport>, EngineError> {
    let engine = Engine::builder().memory().worker(false).replay_only().start().await?;
    let mut reports = Vec::new();
    for ExportedExecution { execution, journal } in executions {
        let verdict = match engine.inner.replay_one(&execution, journal).await {
            Ok(verdict) => verdict,
            Err(error) => ReplayVerdict::Diverges(Box::new(Failure::new(
                crate::failure::FailureKind::Decode,
                format!("the recorded journal could not be replayed: {error}"),
            ))),
        };
        reports.push(ReplayReport {
            execution: execution.id,
            workflow: execution.workflow,
            version: execution.version,
            state: execution.state,
            verdict,
        });
    }
    engine.shutdown().await;
    Ok(reports)
}

impl EngineInner {
    /// Replays one recorded execution in this (replay-only) engine's memory store.
    async fn replay_one(
        self: &Arc<Self>,
        record: &ExecutionRecord,
        journal: Vec<JournalEntry>,
    ) -> Result<ReplayVerdict, StoreError> {
        let registry = crate::registry::Registry::checked();
        let Some(definition) = registry.workflow_version(&record.workflow, record.version) else {
            return Ok(ReplayVerdict::NotLinked);
        };
        // A copy of the execution, held by this engine: the replay's writes (a patch taken at
        // the journal's end, the block itself) land here and nowhere else.
        // Under its own id, so that what the replay says names it (a second copy of one
        // execution in the same check gets a fresh one).
        let id = match self.store.execution(&record.id).await? {
            None => record.id.clone(),
            Some(_) => ExecutionId::new(),
        };
        let now = Timestamp::now();
        let new = NewExecution {
            id: id.clone(),
            workflow: definition.name(),
            fingerprint: definition.fingerprint(),
            version: record.version,
            input: record.input.clone(),
            owner: Some(self.owner.clone()),
            lease_until: now + self.lease,
            now,
            exclusive_key: None,
            queue: None,
            fail_if_held: false,
            rerun_of: None,
            parent: None,
            deadline: None,
            expected_entries: journal.len(),
        };
        self.store.create_execution(new).await?;
        let journal: Vec<JournalEntry> =
            journal.into_iter().enumerate().map(|(i, e)| JournalEntry { index: i as u64, ..e }).collect();
        if !journal.is_empty() {
            let batch = crate::store::AppendBatch {
                execution: id.clone(),
                epoch: 1,
                entries: journal.iter().cloned().collect(),
                transition: None,
                mode: WriteMode::Durable,
                deliver: None,
                events: Vec::new(),
            };
            self.store.append(batch).await?;
        }
        let setup = super::live::Setup {
            container: None,
            epoch: 1,
            lease_from: tokio::time::Instant::now(),
            started_fingerprint: record.fingerprint.clone().into(),
            // No deadline: the replay must not time out and compensate.
            deadline: None,
            exclusive_key: None,
            in_queue: false,
            parent: None,
            wakeups: 0,
            blocked_by: Vec::new(),
        };
        let live =
            Arc::new(LiveExecution::new(id.clone(), definition, self.clone(), Progress::from_journal(journal), setup));
        let wf = Workflow { live: live.clone() };
        let body = match (definition.entry)(&wf, &record.input) {
            Ok(body) => body,
            Err(error) => {
                let message = format!("its input does not decode as `{}`: {error}", definition.input_type());
                return Ok(ReplayVerdict::Diverges(Box::new(Failure::new(
                    crate::failure::FailureKind::Decode,
                    message,
                ))));
            }
        };
        self.track(&live, Box::pin(driver::drive(&wf, body, None))).await;
        let replayed = self.store.execution(&id).await?;
        Ok(match replayed {
            Some(ExecutionRecord { state: ExecutionState::Blocked, failure, .. }) => ReplayVerdict::Diverges(Box::new(
                failure.unwrap_or_else(|| Failure::new(crate::failure::FailureKind::NonDeterminism, "diverges")),
            )),
            _ => ReplayVerdict::Replays,
        })
    }
}
