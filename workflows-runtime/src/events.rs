//! The execution event stream: what the executions an engine drives do, as they do it
//! (see [`Engine::subscribe`](crate::Engine::subscribe)).
//!
//! Events are published only while someone subscribes: an engine without subscribers pays one
//! atomic load per step.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::broadcast;

use crate::execution::{ExecutionId, ExecutionState};
use crate::failure::Failure;
use crate::journal::{CallKey, JournalEvent};
use crate::time::Timestamp;

/// How many events a subscriber may fall behind before it misses some.
const CAPACITY: usize = 4096;

/// Something an execution did, published by the engine driving it.
#[derive(Clone, Debug, Serialize)]
pub struct ExecutionEvent {
    /// The execution.
    pub execution: ExecutionId,
    /// Its workflow's registered name.
    pub workflow: &'static str,
    /// When it happened.
    pub at: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened to an execution. Serialized with an `event` tag: `{"event":"step_completed",..}`.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// A new execution started running on this engine.
    Started,
    /// This engine resumed an execution (after a crash, a suspension, or a takeover).
    Resumed,
    /// A step attempt began.
    StepStarted {
        /// The step call.
        key: CallKey,
        /// The attempt, from 1.
        attempt: u32,
        /// A test's double runs instead of the step's body (the `testing` feature's `Double`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        double: bool,
    },
    /// A step completed.
    StepCompleted {
        /// The step call.
        key: CallKey,
        /// The attempt that completed it.
        attempt: u32,
        /// Its output.
        output: Box<RawValue>,
    },
    /// A step attempt failed; `retry_at` says when the next attempt runs, if one does.
    StepFailed {
        /// The step call.
        key: CallKey,
        /// The attempt that failed.
        attempt: u32,
        /// Why.
        error: Box<Failure>,
        /// When the next attempt is due; absent when this failure is final.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<Timestamp>,
    },
    /// A step failed for good and was skipped (`on_failure = "skip"`).
    StepSkipped {
        /// The step call.
        key: CallKey,
    },
    /// An async step's attempt waits for its completion from outside.
    StepWaiting {
        /// The step call (its completion token is `<execution>/<key>`).
        key: CallKey,
        /// The attempt.
        attempt: u32,
    },
    /// A durable timer began.
    TimerStarted {
        /// The timer (`@sleep#n`).
        key: CallKey,
        /// When it fires.
        wake_at: Timestamp,
    },
    /// A durable timer fired.
    TimerFired {
        /// The timer.
        key: CallKey,
    },
    /// The workflow waits for an event.
    EventAwaited {
        /// The wait (`@event:NAME#n`).
        key: CallKey,
    },
    /// The awaited event arrived.
    EventReceived {
        /// The wait.
        key: CallKey,
    },
    /// A wait for an event timed out.
    WaitTimedOut {
        /// The wait.
        key: CallKey,
    },
    /// A child workflow's execution started.
    ChildStarted {
        /// The child's key in this execution.
        key: CallKey,
        /// The child execution.
        child: ExecutionId,
    },
    /// A child workflow completed.
    ChildCompleted {
        /// The child's key.
        key: CallKey,
    },
    /// A child workflow failed.
    ChildFailed {
        /// The child's key.
        key: CallKey,
        /// Why.
        error: Box<Failure>,
    },
    /// The execution failed and compensates its completed steps.
    Compensating {
        /// Why it failed.
        failure: Box<Failure>,
    },
    /// A step's compensation began.
    CompensationStarted {
        /// The compensated step call.
        key: CallKey,
    },
    /// A step's compensation completed.
    CompensationCompleted {
        /// The compensated step call.
        key: CallKey,
    },
    /// A step's compensation failed.
    CompensationFailed {
        /// The compensated step call.
        key: CallKey,
        /// Why.
        error: Box<Failure>,
    },
    /// Every branch waits on something durable: the engine let go of the execution until a
    /// delivery or `wake_at`.
    Suspended {
        /// When a timer wakes it, if one does.
        #[serde(skip_serializing_if = "Option::is_none")]
        wake_at: Option<Timestamp>,
    },
    /// An operator retried a step that had failed for good (`workflows retry-step`).
    StepRetried {
        /// The step call.
        key: CallKey,
    },
    /// A step with `on_failure = "pause"` failed for good: the execution is parked `paused`,
    /// nothing compensated, until an operator retries the step or compensates it.
    Paused {
        /// The step's failure.
        failure: Box<Failure>,
    },
    /// The code that ran it cannot replay its journal: it is parked `blocked`, nothing
    /// compensated, until a process whose code can replay it takes it (see
    /// [`ExecutionState::Blocked`]).
    Blocked {
        /// Where the code diverges from the journal.
        failure: Box<Failure>,
    },
    /// The execution finished.
    Finished {
        /// Its final state.
        state: ExecutionState,
        /// Why it failed, unless it completed.
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<Box<Failure>>,
    },
}

impl EventKind {
    /// The event for a journal event; `None` for the ones published otherwise (an attempt's
    /// start is published when it starts, journaled or not).
    pub(crate) fn from_journal(event: &JournalEvent) -> Option<Self> {
        Some(match event {
            JournalEvent::StepStarted { .. } | JournalEvent::Patched { .. } => return None,
            JournalEvent::StepRetried { key, .. } => Self::StepRetried { key: key.clone() },
            JournalEvent::StepCompleted { key, attempt, output, .. } => {
                Self::StepCompleted { key: key.clone(), attempt: *attempt, output: output.clone() }
            }
            JournalEvent::StepFailed { key, attempt, error, retry_at, .. } => {
                Self::StepFailed { key: key.clone(), attempt: *attempt, error: error.clone(), retry_at: *retry_at }
            }
            JournalEvent::StepSkipped { key, .. } => Self::StepSkipped { key: key.clone() },
            JournalEvent::StepWaiting { key, attempt, .. } => Self::StepWaiting { key: key.clone(), attempt: *attempt },
            JournalEvent::TimerStarted { key, wake_at, .. } => {
                Self::TimerStarted { key: key.clone(), wake_at: *wake_at }
            }
            JournalEvent::TimerFired { key, .. } => Self::TimerFired { key: key.clone() },
            JournalEvent::EventAwaited { key, .. } => Self::EventAwaited { key: key.clone() },
            JournalEvent::EventReceived { key, .. } => Self::EventReceived { key: key.clone() },
            JournalEvent::WaitTimedOut { key, .. } => Self::WaitTimedOut { key: key.clone() },
            JournalEvent::ChildStarted { key, child, .. } => {
                Self::ChildStarted { key: key.clone(), child: child.clone() }
            }
            JournalEvent::ChildCompleted { key, .. } => Self::ChildCompleted { key: key.clone() },
            JournalEvent::ChildFailed { key, error, .. } => {
                Self::ChildFailed { key: key.clone(), error: error.clone() }
            }
            JournalEvent::CompensationStarted { key, .. } => Self::CompensationStarted { key: key.clone() },
            JournalEvent::CompensationCompleted { key, .. } => Self::CompensationCompleted { key: key.clone() },
            JournalEvent::CompensationFailed { key, error, .. } => {
                Self::CompensationFailed { key: key.clone(), error: error.clone() }
            }
        })
    }

    /// The event's name, as in its JSON `event` tag: `step_completed`, `finished`, ...
    pub fn name(&self) -> &'static str {
        crate::journal::variant::internal(self, "event")
    }
}

/// The engine's side of the stream.
pub(crate) struct EventHub {
    sender: broadcast::Sender<ExecutionEvent>,
    /// Live subscriptions: publishing is skipped (no event is even built) when zero.
    subscribers: Arc<AtomicUsize>,
}

impl EventHub {
    pub fn new() -> Self {
        Self { sender: broadcast::channel(CAPACITY).0, subscribers: Arc::new(AtomicUsize::new(0)) }
    }

    /// True if anyone listens.
    #[inline]
    pub fn active(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    pub fn publish(&self, event: ExecutionEvent) {
        // No receiver left (a subscription dropped meanwhile) is not an error.
        let _ = self.sender.send(event);
    }

    pub fn subscribe(&self, only: Option<ExecutionId>) -> Subscription {
        self.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription { receiver: self.sender.subscribe(), only, subscribers: self.subscribers.clone() }
    }
}

/// A subscription to an engine's execution events (all of them, or one execution's); see
/// [`Engine::subscribe`](crate::Engine::subscribe). Events of one execution arrive in the
/// order they happened. Dropping it unsubscribes.
pub struct Subscription {
    receiver: broadcast::Receiver<ExecutionEvent>,
    only: Option<ExecutionId>,
    subscribers: Arc<AtomicUsize>,
}

/// The subscription missed events, or the engine is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The subscriber fell behind by more than the stream buffers (4,096 events); this many
    /// were dropped. The next `recv` continues with the oldest event still buffered.
    #[error("the subscriber fell behind and missed {0} events")]
    Lagged(u64),
    /// The engine was dropped: no event will come.
    #[error("the engine is gone")]
    Closed,
}

impl Subscription {
    /// The next event.
    pub async fn recv(&mut self) -> Result<ExecutionEvent, RecvError> {
        loop {
            let event = self.receiver.recv().await.map_err(|error| match error {
                broadcast::error::RecvError::Lagged(missed) => RecvError::Lagged(missed),
                broadcast::error::RecvError::Closed => RecvError::Closed,
            })?;
            if self.wants(&event) {
                return Ok(event);
            }
        }
    }

    /// The next event if one is buffered, without waiting.
    pub fn try_recv(&mut self) -> Option<Result<ExecutionEvent, RecvError>> {
        loop {
            match self.receiver.try_recv() {
                Ok(event) if self.wants(&event) => return Some(Ok(event)),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Empty) => return None,
                Err(broadcast::error::TryRecvError::Lagged(missed)) => return Some(Err(RecvError::Lagged(missed))),
                Err(broadcast::error::TryRecvError::Closed) => return Some(Err(RecvError::Closed)),
            }
        }
    }

    fn wants(&self, event: &ExecutionEvent) -> bool {
        self.only.as_ref().is_none_or(|id| *id == event.execution)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("only", &self.only).finish()
    }
}
