//! Creating an execution: its record in the store (or the one that has the requested id),
//! and the live state this engine drives it with.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::value::RawValue;

use super::core::{EngineInner, LiveExecution};
use super::live::Setup;
use super::options::RunOptions;
use crate::error::RunError;
use crate::execution::ExecutionState;
use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::replay::Progress;
use crate::registry::WorkflowDefinition;
use crate::store::{CreateOutcome, NewExecution, StoreError};
use crate::time::Timestamp;

/// What [`Engine::create`] found.
pub(crate) enum Created {
    /// A new execution; `true` if it waits for its exclusive key.
    New(Arc<LiveExecution>, bool),
    Exists(Box<ExecutionRecord>),
    /// Created for the workers to run: this engine is client-only, or the execution waits
    /// for its queue (a claim admits it).
    ForWorkers(ExecutionId),
}

impl EngineInner {
    /// Creates a new execution of `definition`, or finds the one with the requested id.
    pub(crate) async fn create(
        self: &Arc<Self>,
        definition: &'static WorkflowDefinition,
        input: Box<RawValue>,
        options: RunOptions,
    ) -> Result<Created, RunError> {
        let inner = self;
        if inner.closed.load(Ordering::Acquire) {
            return Err(RunError::ShutDown);
        }
        if let Some(queue) = &options.queue {
            inner.check_queue(queue).await?;
        }
        let id = options.id.unwrap_or_default();
        // Before the write that grants the lease: the lease is provable from here.
        let lease_from = tokio::time::Instant::now();
        let now = inner.creation_time();
        let deadline = definition.timeout().map(|timeout| now + timeout);
        let new = NewExecution {
            id: id.clone(),
            workflow: definition.name(),
            fingerprint: definition.fingerprint(),
            version: definition.version(),
            input,
            owner: (!inner.client_only).then(|| inner.owner.clone()),
            lease_until: now + inner.lease,
            now,
            exclusive_key: options.exclusive_key.clone(),
            queue: options.queue.clone(),
            fail_if_held: options.fail_if_held,
            rerun_of: options.rerun_of,
            parent: options.parent.clone(),
            deadline,
            expected_entries: definition.calls().len(),
        };
        let queued = match inner.write_creation(new).await? {
            CreateOutcome::Created => false,
            CreateOutcome::Queued => true,
            CreateOutcome::Exists(record) => return Ok(Created::Exists(record)),
            CreateOutcome::KeyHeld(holder) => {
                return Err(RunError::KeyHeld { key: options.exclusive_key.unwrap_or_default(), holder });
            }
        };
        if options.queue.is_some() {
            // Admitted by a claim — this engine's now, if it is a worker, or any worker's.
            inner.work_arrived();
            inner.timer_changed.notify_one();
            return Ok(Created::ForWorkers(id));
        }
        if inner.client_only {
            // Woken at once where the store can (see `Store::notices`).
            return Ok(Created::ForWorkers(id));
        }
        let setup = Setup {
            container: options.container,
            epoch: 1,
            lease_from,
            started_fingerprint: definition.fingerprint().into(),
            deadline,
            exclusive_key: options.exclusive_key,
            in_queue: false,
            parent: options.parent,
            wakeups: 0,
            blocked_by: Vec::new(),
        };
        let live = LiveExecution::new(id, definition, inner.clone(), Progress::new(definition.calls().len()), setup);
        Ok(Created::New(Arc::new(live), queued))
    }
}

/// How often a creation whose outcome is unknown is written again, and the first pause.
const CREATION_TRIES: u32 = 4;
const CREATION_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

impl EngineInner {
    /// Writes a creation. A store that fails to answer may have committed it all the same (the
    /// reply was lost after the commit): the creation is written again — it is idempotent by
    /// id, and the store waits for a write still in flight on that id — and this engine's own
    /// earlier write is recognised in what exists (its owner and creation time), so the
    /// execution runs here instead of sitting owned by an engine that does not drive it.
    async fn write_creation(&self, new: NewExecution) -> Result<CreateOutcome, StoreError> {
        let mut tries = 1;
        loop {
            match self.store.create_execution(new.clone()).await {
                Ok(CreateOutcome::Exists(record)) if is_own_creation(&record, &new) => {
                    tracing::debug!(execution = %new.id, "a creation whose answer was lost had landed");
                    return Ok(match record.state {
                        ExecutionState::Pending => CreateOutcome::Queued,
                        _ => CreateOutcome::Created,
                    });
                }
                Ok(outcome) => return Ok(outcome),
                Err(error @ (StoreError::Unavailable(_) | StoreError::Backend { .. })) if tries < CREATION_TRIES => {
                    tracing::warn!(execution = %new.id, %error, "the creation's outcome is unknown; writing it again");
                    tokio::time::sleep(CREATION_PAUSE * 2u32.pow(tries - 1)).await;
                    tries += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Now, for a creation: later than this engine's previous creation, by a microsecond if
    /// need be, so that no two of its creations share an owner and a creation time.
    fn creation_time(&self) -> Timestamp {
        let now = Timestamp::now().as_micros();
        let previous = self.last_creation.fetch_max(now, Ordering::AcqRel);
        if previous < now {
            return Timestamp::from_micros(now);
        }
        Timestamp::from_micros(self.last_creation.fetch_add(1, Ordering::AcqRel) + 1)
    }

    /// Fails unless `queue` is defined: by this engine, or by another sharing the store.
    async fn check_queue(&self, queue: &str) -> Result<(), RunError> {
        if self.queues.contains_key(queue) {
            return Ok(());
        }
        let stored = self.store.queues(Timestamp::now()).await?;
        if stored.iter().any(|status| status.name == queue && status.limits.is_some()) {
            return Ok(());
        }
        let mut defined: Vec<String> = stored.into_iter().filter(|s| s.limits.is_some()).map(|s| s.name).collect();
        defined.extend(self.queues.keys().cloned());
        defined.sort();
        defined.dedup();
        Err(RunError::UnknownQueue { queue: queue.to_owned(), defined })
    }
}

/// True if `record` is what `new` wrote: the same owner (an engine's id is unique; none for a
/// client-only engine) and creation time (unique among an engine's creations: see
/// `creation_time`), and no engine took it since (the first epoch).
fn is_own_creation(record: &ExecutionRecord, new: &NewExecution) -> bool {
    let owner = new.owner.as_deref().filter(|_| new.queue.is_none());
    record.owner.as_deref() == owner
        && record.created_at == new.now
        && record.epoch <= 1
        && record.input.get() == new.input.get()
        && !record.state.is_finished()
}
