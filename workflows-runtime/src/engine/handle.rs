//! Handles to started executions, and results read back from the store.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::oneshot;

use super::core::EngineInner;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::journal::JournalEvent;

/// Where the result of a run goes, when a caller waits for it in this process.
pub(crate) type Waiter<O> = oneshot::Sender<Sent<O>>;

/// What the driver sends the caller waiting in this process.
pub(crate) enum Sent<O> {
    /// The execution finished (or this engine stopped driving it).
    Done(Result<O, RunError>),
    /// The execution was suspended: its result is read from the store once it finishes.
    Suspended,
}

/// A started execution: its id, and its result to await.
///
/// ```no_run
/// # use workflows_runtime::prelude::*;
/// # #[workflow] async fn nightly(wf: &Workflow, input: u32) -> Result<u32, WorkflowError> { Ok(input) }
/// # async fn demo(engine: Engine) -> Result<(), RunError> {
/// let handle = nightly::start(&engine, 7).await?;
/// println!("started {}", handle.id());
/// let output = handle.await?;
/// # Ok(()) }
/// ```
pub struct ExecutionHandle<O> {
    id: ExecutionId,
    state: State<O>,
}

enum State<O> {
    /// Driven by this engine: the driver sends the result (or that it suspended it).
    Live(oneshot::Receiver<Sent<O>>, Arc<EngineInner>),
    /// Known already.
    Ready(Result<O, RunError>),
    /// Driven elsewhere (or resumed by recovery): read from the store when it finishes.
    Attached(Arc<EngineInner>),
}

impl<O> std::fmt::Debug for ExecutionHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionHandle").field("id", &self.id).finish_non_exhaustive()
    }
}

impl<O> ExecutionHandle<O> {
    pub(crate) fn live(id: ExecutionId, receiver: oneshot::Receiver<Sent<O>>, engine: Arc<EngineInner>) -> Self {
        Self { id, state: State::Live(receiver, engine) }
    }

    /// A handle on an execution another engine drives: its result is read from the store.
    pub(crate) fn attached(id: ExecutionId, engine: Arc<EngineInner>) -> Self {
        Self { id, state: State::Attached(engine) }
    }

    /// The execution's id.
    pub fn id(&self) -> &ExecutionId {
        &self.id
    }
}

impl<O: DeserializeOwned> ExecutionHandle<O> {
    /// Waits for the execution to finish and returns its output, or why it failed.
    pub async fn result(self) -> Result<O, RunError> {
        match self.state {
            State::Live(receiver, engine) => match receiver.await {
                Ok(Sent::Done(result)) => result,
                // Suspended: it finishes after a resumption, here or in another process.
                Ok(Sent::Suspended) => wait_for(&engine, &self.id).await,
                Err(_) => Err(RunError::Interrupted {
                    execution: self.id,
                    reason: "the engine stopped driving it before it finished".to_owned(),
                }),
            },
            State::Ready(result) => result,
            State::Attached(engine) => wait_for(&engine, &self.id).await,
        }
    }
}

impl<O: DeserializeOwned + Send + 'static> IntoFuture for ExecutionHandle<O> {
    type Output = Result<O, RunError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<O, RunError>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.result())
    }
}

/// The start of an execution whose id exists already: its result if it finished, a handle
/// attached to it if it runs, or a conflict if it is another workflow or had another input.
pub(super) async fn existing<O: DeserializeOwned>(
    engine: Arc<EngineInner>,
    workflow: &str,
    record: ExecutionRecord,
    same_input: bool,
) -> Result<ExecutionHandle<O>, RunError> {
    if record.workflow != workflow {
        return Err(RunError::Conflict {
            execution: record.id,
            reason: format!("it is an execution of workflow `{}`, not `{workflow}`", record.workflow),
        });
    }
    if !same_input {
        return Err(RunError::Conflict {
            execution: record.id,
            reason: format!(
                "it was started with a different input ({}); start it with the same input to get its result, \
                 or use another id",
                truncate(record.input.get(), 200)
            ),
        });
    }
    let state = if record.state.is_finished() || record.state.is_parked() {
        State::Ready(outcome(&engine, record.clone()).await)
    } else {
        State::Attached(engine)
    };
    Ok(ExecutionHandle { id: record.id, state })
}

/// Compares as JSON values, so that the order of map entries does not matter.
pub(super) fn same_json<T: Serialize + ?Sized>(value: &T, stored: &serde_json::value::RawValue) -> bool {
    match (serde_json::to_value(value), serde_json::from_str::<serde_json::Value>(stored.get())) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// Waits until the execution finishes, then returns its outcome.
pub(crate) async fn wait_for<O: DeserializeOwned>(engine: &Arc<EngineInner>, id: &ExecutionId) -> Result<O, RunError> {
    let record = finished(engine, id).await?;
    outcome(engine, record).await
}

/// Waits until the execution finishes and returns its record. Woken when its task ends in
/// this engine; otherwise (it runs in another process, or is suspended) the store is read
/// again after a delay that grows to a second.
pub(crate) async fn finished(inner: &EngineInner, id: &ExecutionId) -> Result<ExecutionRecord, RunError> {
    let mut delay = Duration::from_millis(5);
    // A client-only engine runs nothing: if no worker takes the execution, it says so once.
    let mut unclaimed_since = inner.client_only.then(std::time::Instant::now);
    loop {
        let watch = inner.watch(id);
        let found = {
            let ended = watch.notified();
            tokio::pin!(ended);
            // Registered before reading, so an end in between is not missed.
            ended.as_mut().enable();
            let found = match inner.store.execution(id).await {
                // Blocked: it runs again only where other code takes it; the caller hears why.
                Ok(Some(record)) if record.state.is_finished() || record.state.is_parked() => Ok(Some(record)),
                Ok(Some(record)) => {
                    if let Some(since) = unclaimed_since
                        && since.elapsed() >= inner.lease
                        && never_claimed(&record)
                    {
                        unclaimed_since = None;
                        warn_unclaimed(inner, &record, since.elapsed()).await;
                    }
                    Ok(None)
                }
                Ok(None) => Err(RunError::Interrupted {
                    execution: id.clone(),
                    reason: "the execution was removed from the store".to_owned(),
                }),
                Err(error) => Err(RunError::from(error)),
            };
            if matches!(found, Ok(None)) {
                tokio::select! {
                    () = &mut ended => {}
                    () = tokio::time::sleep(delay) => {}
                }
            }
            found
        };
        inner.unwatch(id, watch);
        if let Some(record) = found? {
            return Ok(record);
        }
        delay = (delay * 2).min(inner.poll(Duration::from_secs(1)));
    }
}

/// True if no worker ever took the execution: it waits, unowned, as it was created.
fn never_claimed(record: &ExecutionRecord) -> bool {
    record.owner.is_none()
        && record.epoch <= 1
        && matches!(record.state, ExecutionState::Running | ExecutionState::Pending | ExecutionState::Queued)
}

/// Says that a client-only engine's execution has waited `waited` for a worker, and how many
/// engines hold executions on its store (a worker with nothing to do holds none).
async fn warn_unclaimed(inner: &EngineInner, record: &ExecutionRecord, waited: Duration) {
    let now = crate::time::Timestamp::now();
    let owners = inner.store.owners().await.unwrap_or_default();
    let live = owners.iter().filter(|o| o.lease_until.is_some_and(|until| until > now)).count();
    tracing::warn!(
        execution = %record.id,
        workflow = %record.workflow,
        waited_s = waited.as_secs(),
        workers_holding_executions = live,
        store = %inner.store.describe(),
        "no worker has taken this execution yet: this engine is client-only and runs nothing; start a worker on \
         the same store (`workflows worker`, or an engine that is not client-only) whose program links workflow \
         `{}`",
        record.workflow
    );
}

/// The result of a finished execution, as its `run` would have returned it.
pub(crate) async fn outcome<O: DeserializeOwned>(engine: &EngineInner, record: ExecutionRecord) -> Result<O, RunError> {
    let failure = || {
        Box::new(record.failure.clone().unwrap_or_else(|| Failure::new(FailureKind::Workflow, "no failure recorded")))
    };
    let workflow = record.workflow.clone();
    let execution = record.id.clone();
    match record.state {
        ExecutionState::Completed => {
            let json = record.result.as_deref().map(|r| r.get()).unwrap_or("null");
            serde_json::from_str(json).map_err(|source| RunError::Output {
                execution,
                expected: std::any::type_name::<O>(),
                source,
            })
        }
        ExecutionState::Compensated => Err(RunError::Compensated { workflow, execution, failure: failure() }),
        ExecutionState::CompensationFailed => {
            let compensation_failures = engine
                .store
                .journal(&record.id)
                .await?
                .into_iter()
                .filter_map(|entry| match entry.event {
                    JournalEvent::CompensationFailed { error, .. } => Some(*error),
                    _ => None,
                })
                .collect();
            Err(RunError::CompensationFailed { workflow, execution, failure: failure(), compensation_failures })
        }
        ExecutionState::Cancelled => Err(RunError::Cancelled { workflow, execution }),
        ExecutionState::TimedOut => Err(RunError::TimedOut { workflow, execution, failure: failure() }),
        ExecutionState::Blocked => Err(RunError::Blocked { workflow, execution, failure: failure() }),
        ExecutionState::Paused => Err(RunError::Paused { workflow, execution, failure: failure() }),
        _ => Err(RunError::Failed { workflow, execution, failure: failure() }),
    }
}
