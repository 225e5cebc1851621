//! Recovery: taking over the executions whose owner is gone (at once when it was a process of
//! this host, otherwise once its lease expired) and the suspended ones that are due, and
//! resuming them by replay or finishing their compensation.

use std::sync::Arc;

use super::core::EngineInner;
use super::core::LiveExecution;
use super::{driver, rollback};
use crate::events::EventKind;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::journal::replay::Progress;
use crate::store::{Claim, OwnerLeases, StoreError};
use crate::time::Timestamp;
use crate::workflow::Workflow;
use futures_util::future::BoxFuture;

/// How many orphans one claim takes at most.
const CLAIM_BATCH: usize = 100;

/// How often a long recovery logs its progress at `info`: every this many executions.
const PROGRESS_EVERY: usize = 10 * CLAIM_BATCH;

impl EngineInner {
    /// Claims orphaned executions (and suspended ones that are due) and resumes them;
    /// returns how many.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        self.claim(None, None).await
    }

    /// Claims and resumes the blocked executions that `build` did not block (see
    /// [`super::blocked`]); returns how many.
    pub(crate) async fn claim_blocked(self: &Arc<Self>, build: String) -> Result<usize, StoreError> {
        self.claim(None, Some(build)).await
    }

    /// Gives back the executions of owners this engine can prove are gone (an engine of a
    /// process on this host that died: see [`super::owner`]), so that the next claim takes them
    /// over at once rather than when their leases expire. At start, also says how many
    /// executions other engines hold, and until when, if they cannot be proven gone. Returns
    /// the earliest end of another live-looking engine's lease (its executions are orphans
    /// from then on if it is gone).
    pub(crate) async fn take_over_from_the_gone(&self, at_start: bool) -> Result<Option<Timestamp>, StoreError> {
        if self.is_draining() {
            return Ok(None);
        }
        let mut earliest: Option<Timestamp> = None;
        for OwnerLeases { owner, executions, lease_until, earliest_lease_until } in self.store.owners().await? {
            if owner == *self.owner {
                continue;
            }
            let gone = self.same_host_takeover && super::owner::is_gone(&owner);
            if let Some(end) = earliest_lease_until.filter(|_| !gone) {
                earliest = Some(earliest.map_or(end, |e| e.min(end)));
            }
            if gone {
                let released = self.store.release(&owner).await?;
                if released > 0 {
                    tracing::info!(
                        owner,
                        pid = super::owner::pid_of(&owner),
                        executions = released,
                        "the process that owned these executions is gone: taking them over now"
                    );
                }
            } else if at_start {
                let until = lease_until.map_or_else(|| "now".to_owned(), |t| t.to_string());
                tracing::info!(
                    owner,
                    executions,
                    lease_until = %until,
                    "executions held by another engine: if it is gone, they are taken over when its lease expires"
                );
            }
        }
        Ok(earliest)
    }

    /// Claims and resumes execution `id` if it needs an engine (woken, or orphaned).
    pub(crate) async fn resume_one(self: &Arc<Self>, id: &ExecutionId) -> Result<bool, StoreError> {
        Ok(self.claim(Some(id.clone()), None).await? > 0)
    }

    /// Boxed (as `Send`): resuming executions can wake or cancel others, which claims again,
    /// and the compiler cannot see through that cycle.
    fn claim(
        self: &Arc<Self>,
        only: Option<ExecutionId>,
        unblock: Option<String>,
    ) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(self.claim_now(only, unblock))
    }

    async fn claim_now(
        self: &Arc<Self>,
        only: Option<ExecutionId>,
        unblock: Option<String>,
    ) -> Result<usize, StoreError> {
        // A client-only engine leaves everything to the workers, what it woke or cancelled too.
        if self.is_draining() || self.client_only {
            return Ok(0);
        }
        // Every version linked here, and only those.
        let workflows: Vec<String> = crate::registry::Registry::checked()
            .all_versions()
            .iter()
            .map(|w| Claim::workflow_key(w.name(), w.version()))
            .collect();
        let mut resumed = 0;
        loop {
            // Recovery runs in the background from start: a shutdown or a drain that begins
            // meanwhile stops it between batches.
            if self.is_draining() || self.is_closed() {
                return Ok(resumed);
            }
            // Before the write that grants the leases: they are provable from here.
            let lease_from = tokio::time::Instant::now();
            let now = Timestamp::now();
            let claim = Claim {
                owner: self.owner.to_string(),
                now,
                lease_until: now + self.lease,
                limit: CLAIM_BATCH,
                workflows: workflows.clone(),
                only: only.clone(),
                unblock: unblock.clone(),
            };
            let records = self.store.claim_orphans(&claim).await?;
            let count = records.len();
            for record in records {
                self.resume(record, lease_from).await?;
                resumed += 1;
            }
            if count < CLAIM_BATCH {
                return Ok(resumed);
            }
            // Progress of a long recovery; each execution also publishes `resumed` on the event
            // stream as it runs again.
            if resumed % PROGRESS_EVERY == 0 {
                tracing::info!(resumed, "recovery: executions taken over so far, looking for more");
            } else {
                tracing::debug!(resumed, "recovery: a batch of executions taken over, looking for more");
            }
        }
    }

    /// Resumes a claimed execution (its lease granted by a write that began at `lease_from`):
    /// replays its body, or finishes compensating it.
    pub(crate) async fn resume(
        self: &Arc<Self>,
        record: ExecutionRecord,
        lease_from: tokio::time::Instant,
    ) -> Result<(), StoreError> {
        if self.is_closed() {
            // Claimed while this engine shut down (recovery runs in the background): given
            // back at once, for another engine to resume, rather than held until its lease ends.
            self.store.release_execution(&record.id, record.epoch).await?;
            return Ok(());
        }
        // The claim only returns versions of workflows of this registry: each resumes on the
        // version that started it.
        let Some(definition) = crate::registry::Registry::checked().workflow_version(&record.workflow, record.version)
        else {
            return Ok(());
        };
        let (progress, corrupt) = match self.store.journal(&record.id).await {
            Ok(journal) => (Progress::from_journal(journal), None),
            // A journal row that cannot be decoded fails this execution, not the engine.
            Err(StoreError::Corrupt { execution, what, detail }) => {
                let message =
                    format!("execution {execution} cannot be resumed: its {what} cannot be decoded: {detail}");
                (Progress::default(), Some(Failure::new(FailureKind::Decode, message)))
            }
            Err(other) => return Err(other),
        };
        let setup = super::live::Setup {
            container: None,
            epoch: record.epoch,
            lease_from,
            started_fingerprint: record.fingerprint.into(),
            // Stores written before deadlines were stored have none: the code's timeout, then.
            deadline: record.deadline.or_else(|| definition.timeout().map(|timeout| record.created_at + timeout)),
            exclusive_key: record.exclusive_key,
            in_queue: record.queue.is_some(),
            parent: record.parent,
            wakeups: record.wakeups,
            blocked_by: record.blocked_by,
        };
        let live = LiveExecution::new(record.id.clone(), definition, self.clone(), progress, setup);
        let live = Arc::new(live);
        if let Some(failure) = corrupt {
            tracing::error!(execution = %record.id, "{}", failure.message);
            driver::fail(&live, failure).await;
            return Ok(());
        }
        tracing::info!(execution = %record.id, workflow = definition.name(), state = %record.state, "resuming execution");
        let state = record.state;
        if record.cancel_requested || state == ExecutionState::Compensating {
            // The body's driver publishes it otherwise.
            live.emit(|| Some(EventKind::Resumed));
        }
        if record.cancel_requested && state != ExecutionState::Compensating {
            self.spawn(&live.clone(), async move {
                rollback::compensate(&live, Failure::cancellation(), true).await;
            });
            return Ok(());
        }
        if state == ExecutionState::Compensating {
            let failure = record
                .failure
                .unwrap_or_else(|| Failure::new(FailureKind::Workflow, "failed (no failure was recorded)"));
            self.spawn(&live.clone(), async move {
                rollback::compensate(&live, failure, false).await;
            });
            return Ok(());
        }
        let input = record.input;
        self.spawn(&live.clone(), async move {
            if state == ExecutionState::Pending && driver::wait_for_key(&live).await.is_err() {
                return;
            }
            let wf = Workflow { live };
            match (definition.entry)(&wf, &input) {
                Ok(body) => driver::drive(&wf, body, None).await,
                Err(error) => {
                    let message = format!(
                        "the stored input of execution {} does not decode as `{}`: {error}",
                        wf.live.id,
                        definition.input_type()
                    );
                    driver::fail(&wf.live, Failure::new(FailureKind::Decode, message)).await;
                }
            }
        });
        Ok(())
    }
}
