//! Parked executions. Blocked ones: parked when the code that claimed them cannot replay their
//! journal, and taken again by a process whose code may (a fixed deploy, the old version linked
//! again). Paused ones: parked after a step with `on_failure = "pause"` failed for good, until an
//! operator acts (`operator`).
//!
//! A build that diverges from a journal diverges from every longer one (journals only grow,
//! and replay is deterministic), so each blocked execution keeps the builds that could not
//! replay it (`blocked_by`) and only other builds try it again: a fleet of one build never
//! loops on it, and two builds that both lack the code do not hand it back and forth.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use super::core::{EngineInner, LiveExecution};
use super::finish::interrupted;
use crate::error::RunError;
use crate::execution::ExecutionState;
use crate::failure::Failure;
use crate::store::{ExecutionQuery, StoreError, Transition, WriteMode};

/// How many blocked executions the report at start reads at most.
const REPORT_LIMIT: usize = 10_000;

/// The build of this process: a hash of its executable, so that every process started from
/// the same binary — on this host or another — is the same build, and any rebuilt binary is
/// another. Read once, when first needed (there is a blocked execution to try or to park).
pub(crate) fn this_build() -> Arc<str> {
    static BUILD: OnceLock<Arc<str>> = OnceLock::new();
    BUILD
        .get_or_init(|| {
            let hash = std::env::current_exe().and_then(hash_file).unwrap_or_else(|_| registry_hash());
            Arc::from(format!("{hash:016x}"))
        })
        .clone()
}

fn hash_file(path: std::path::PathBuf) -> std::io::Result<u64> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buffer[..read]);
    }
}

/// Where the executable cannot be read: the registered workflows' names, versions and
/// fingerprints, and the steps' names (a change to a helper function goes unseen here).
fn registry_hash() -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    if let Ok(registry) = crate::registry::Registry::global() {
        for workflow in registry.all_versions() {
            hasher.update(workflow.name().as_bytes());
            hasher.update(&workflow.version().to_le_bytes());
            hasher.update(workflow.fingerprint().as_bytes());
        }
        for step in registry.steps() {
            hasher.update(step.name().as_bytes());
        }
    }
    hasher.digest()
}

/// Parks the execution `blocked`: its lease given up, nothing compensated, its failure saying
/// where the code diverges; step bodies under way end first, and their outcomes are journaled.
pub(crate) async fn block(live: &Arc<LiveExecution>, failure: Failure) -> RunError {
    live.finish_detached().await;
    let build = live.engine.build();
    let mut blocked_by = live.blocked_by.clone();
    if !blocked_by.iter().any(|b| **b == *build) {
        blocked_by.push(build.to_string());
    }
    let transition = Transition {
        state: ExecutionState::Blocked,
        result: None,
        failure: Some(failure.clone()),
        retain_until: None,
        blocked_by,
    };
    let ack = live.submit([], Some(transition), WriteMode::Durable, None, Vec::new(), |_| {});
    if let Err(error) = live.durable(ack).await {
        return interrupted(live, error);
    }
    tracing::warn!(
        execution = %live.id,
        workflow = live.definition.name(),
        version = live.definition.version(),
        build = %build,
        "execution blocked: {}; it runs again when a process whose code can replay it takes it \
         (`workflows executions --state blocked` lists it; `workflows cancel` compensates it)",
        failure.message
    );
    // A parent waiting for it keeps waiting: it did not finish.
    RunError::Blocked {
        workflow: live.definition.name().to_owned(),
        execution: live.id.clone(),
        failure: Box::new(failure),
    }
}

/// Parks the execution `paused` after a step with `on_failure = "pause"` failed for good: its
/// lease given up, nothing compensated, until an operator retries the step
/// ([`crate::Engine::retry_step`]) or compensates it.
pub(crate) async fn pause(live: &Arc<LiveExecution>, failure: Failure) -> RunError {
    live.finish_detached().await;
    let transition = Transition {
        state: ExecutionState::Paused,
        result: None,
        failure: Some(failure.clone()),
        retain_until: None,
        blocked_by: Vec::new(),
    };
    let ack = live.submit([], Some(transition), WriteMode::Durable, None, Vec::new(), |_| {});
    if let Err(error) = live.durable(ack).await {
        return interrupted(live, error);
    }
    let key = failure.key.clone().unwrap_or_default();
    tracing::warn!(
        execution = %live.id,
        workflow = live.definition.name(),
        step = %key,
        "execution paused: {}; `workflows retry-step {} {key}` runs the step again, `workflows compensate {}` gives \
         up on it",
        failure.message,
        live.id,
        live.id
    );
    RunError::Paused {
        workflow: live.definition.name().to_owned(),
        execution: live.id.clone(),
        failure: Box::new(failure),
    }
}

impl EngineInner {
    /// Takes and resumes the blocked executions that this build did not block (its code may
    /// replay them); returns how many. Reads nothing more when none is blocked.
    pub(crate) async fn unblock(self: &Arc<Self>) -> Result<usize, StoreError> {
        if self.client_only || self.is_draining() {
            return Ok(0);
        }
        let any = ExecutionQuery { states: vec![ExecutionState::Blocked], limit: Some(1), ..Default::default() };
        if self.store.list_executions(&any).await?.records.is_empty() {
            return Ok(0);
        }
        self.claim_blocked(self.build().to_string()).await
    }

    /// Says at start how many executions are blocked, per workflow and version, in one warning.
    pub(crate) async fn report_blocked(&self) -> Result<(), StoreError> {
        let query =
            ExecutionQuery { states: vec![ExecutionState::Blocked], limit: Some(REPORT_LIMIT), ..Default::default() };
        let blocked = self.store.list_executions(&query).await?.records;
        if blocked.is_empty() {
            return Ok(());
        }
        let mut counts: BTreeMap<(String, u32), usize> = BTreeMap::new();
        for record in &blocked {
            *counts.entry((record.workflow.clone(), record.version)).or_default() += 1;
        }
        let per_workflow = counts
            .iter()
            .map(|((workflow, version), n)| format!("{workflow} v{version}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let at_least = if blocked.len() == REPORT_LIMIT { "at least " } else { "" };
        tracing::warn!(
            blocked = blocked.len(),
            "{at_least}{} executions are blocked ({per_workflow}): the code that claimed them could not replay \
             their journals; this process tries those its build did not block. See `workflows executions --state \
             blocked` and `workflows inspect ID` for where each diverges",
            blocked.len()
        );
        Ok(())
    }

    /// Says at start how many executions in flight are of a version of a linked workflow that
    /// this program does not link, per workflow and version: no worker of this build takes them
    /// (a build that links the version must).
    pub(crate) async fn report_unlinked_versions(&self) -> Result<(), StoreError> {
        let unlinked = self.unlinked_versions().await?;
        if unlinked.is_empty() {
            return Ok(());
        }
        let per_version = unlinked
            .iter()
            .map(|((workflow, version), n)| format!("{workflow} v{version}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(
            "executions in flight need a version this program does not link ({per_version}): no worker of this \
             build takes them; run a worker whose program links that version (`#[workflow(version = N)]`), or \
             cancel them"
        );
        Ok(())
    }

    /// The executions not finished of the workflows linked here whose version is not linked,
    /// counted per workflow and version (at most [`REPORT_LIMIT`] read per workflow).
    pub(crate) async fn unlinked_versions(&self) -> Result<BTreeMap<(String, u32), usize>, StoreError> {
        let registry = crate::registry::Registry::checked();
        let states: Vec<ExecutionState> = ExecutionState::ALL.into_iter().filter(|s| !s.is_finished()).collect();
        let mut counts = BTreeMap::new();
        for workflow in registry.workflows() {
            let query = ExecutionQuery {
                states: states.clone(),
                workflow: Some(workflow.name().to_owned()),
                limit: Some(REPORT_LIMIT),
                ..Default::default()
            };
            for record in self.store.list_executions(&query).await?.records {
                if registry.workflow_version(&record.workflow, record.version).is_none() {
                    *counts.entry((record.workflow, record.version)).or_default() += 1;
                }
            }
        }
        Ok(counts)
    }
}

impl EngineInner {
    /// The build this engine runs (see [`this_build`]), unless its builder named another.
    pub(crate) fn build(&self) -> Arc<str> {
        self.build_override.clone().unwrap_or_else(this_build)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::prelude::*;
    use crate::store::Store;
    use crate::store::conformance::fixture;
    use crate::{MemoryStore, Timestamp};

    #[workflow]
    async fn blocked_tests_versioned(_wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
        Ok(n)
    }

    /// An execution of a version this program does not link is counted, per version; one of
    /// the linked version, or of a workflow this program does not have, is not.
    #[tokio::test]
    async fn executions_of_versions_not_linked_here_are_counted() {
        let store = Arc::new(MemoryStore::new());
        let now = Timestamp::now();
        for (id, workflow, version) in [
            ("v7-a", "blocked_tests_versioned", 7),
            ("v7-b", "blocked_tests_versioned", 7),
            ("v0", "blocked_tests_versioned", 0),
            ("other", "someone_elses_workflow", 3),
        ] {
            let mut new = fixture::new_execution(id, "gone", now);
            (new.workflow, new.version) = (workflow, version);
            store.create_execution(new).await.unwrap();
        }
        let engine = Engine::builder().store(store.clone()).worker(false).start().await.unwrap();
        let counts = engine.inner.unlinked_versions().await.unwrap();
        assert_eq!(counts.into_iter().collect::<Vec<_>>(), [(("blocked_tests_versioned".to_owned(), 7), 2)]);
    }
}
