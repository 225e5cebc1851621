//! A live execution: the in-memory state an engine keeps while it drives one execution.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use serde_json::value::RawValue;

use super::EngineInner;
use crate::container::Container;
use crate::error::{Failure, FailureKind};
use crate::execution::{ExecutionId, ExecutionState};
use crate::journal::replay::{Mismatch, Progress};
use crate::journal::{JournalEntry, JournalEvent};
use crate::registry::WorkflowDefinition;
use crate::store::{AppendBatch, JournalEntries, StoreError, Transition, WriteAck, WriteMode};
use crate::time::Timestamp;

/// Why the engine stops driving an execution's body before it returns.
pub(crate) enum Abort {
    /// The execution fails without compensation.
    Fail(Failure),
    /// A step failed for good (with `on_failure = "fail"`): compensate.
    Compensate(Failure),
    /// The execution was cancelled or ran out of time: compensate, and end `cancelled` or
    /// `timed_out` (the failure's kind says which).
    Stop(Failure),
    /// A store write failed: the execution stays as stored; another start resumes it.
    Store(StoreError),
}

pub(crate) struct LiveExecution {
    pub id: ExecutionId,
    pub definition: &'static WorkflowDefinition,
    pub engine: Arc<EngineInner>,
    /// The per-run container, consulted before the engine's.
    pub container: Option<Container>,
    /// The lease epoch every write carries.
    pub epoch: u64,
    /// The workflow fingerprint recorded when the execution started.
    pub started_fingerprint: Cow<'static, str>,
    /// Set with `state.abort`, so the driver can check it on every poll without the lock.
    aborted: AtomicBool,
    state: Mutex<State>,
    /// Durable writes submitted and not yet confirmed (see [`LiveExecution::defer`]).
    unconfirmed: Mutex<Unconfirmed>,
    /// Why the execution must stop (cancelled, timed out), once it must.
    stopping: Mutex<Option<Failure>>,
    /// Set with `stopping`, for lock-free checks.
    stop_requested: AtomicBool,
    /// Wakes step bodies waiting on [`crate::StepContext::cancelled`].
    stop_signal: tokio::sync::Notify,
    /// Step attempts running now: a timed-out workflow lets them finish.
    running_steps: AtomicU32,
    /// The driver's waker, to stop a body that is idle.
    waker: Mutex<Option<Waker>>,
    /// When the execution times out.
    pub deadline: Option<Timestamp>,
    /// The exclusive key it holds (or waits for).
    pub exclusive_key: Option<String>,
}

/// Acks of durable writes, in submission order.
#[derive(Default)]
struct Unconfirmed {
    acks: VecDeque<WriteAck>,
    /// How many durable writes were submitted.
    submitted: u64,
    /// How many of them are confirmed durable.
    confirmed: u64,
}

struct State {
    progress: Progress,
    abort: Option<Abort>,
}

impl LiveExecution {
    pub fn new(
        id: ExecutionId,
        definition: &'static WorkflowDefinition,
        engine: Arc<EngineInner>,
        container: Option<Container>,
        epoch: u64,
        started_fingerprint: Cow<'static, str>,
        progress: Progress,
    ) -> Self {
        Self {
            id,
            definition,
            engine,
            container,
            epoch,
            started_fingerprint,
            aborted: AtomicBool::new(false),
            state: Mutex::new(State { progress, abort: None }),
            unconfirmed: Mutex::new(Unconfirmed::default()),
            stopping: Mutex::new(None),
            stop_requested: AtomicBool::new(false),
            stop_signal: tokio::sync::Notify::new(),
            running_steps: AtomicU32::new(0),
            waker: Mutex::new(None),
            deadline: None,
            exclusive_key: None,
        }
    }

    /// This execution, timing out at `deadline`.
    pub fn with_deadline(mut self, deadline: Option<Timestamp>) -> Self {
        self.deadline = deadline;
        self
    }

    /// This execution, holding (or waiting for) `key`.
    pub fn with_exclusive_key(mut self, key: Option<String>) -> Self {
        self.exclusive_key = key;
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only touched in short, panic-free sections.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the progress, under the execution's lock (never held across an await).
    pub fn with_progress<R>(&self, f: impl FnOnce(&mut Progress) -> R) -> R {
        f(&mut self.lock().progress)
    }

    /// Stops the body at its next poll (and wakes the driver). The first reason wins.
    pub fn abort(&self, abort: Abort) {
        {
            let mut state = self.lock();
            if state.abort.is_some() {
                return;
            }
            state.abort = Some(abort);
            self.aborted.store(true, Ordering::Release);
        }
        if let Some(waker) = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take() {
            waker.wake();
        }
    }

    /// Remembers the driver's waker, so that [`LiveExecution::abort`] can wake an idle body.
    pub fn register_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Asks the execution to stop: step bodies see the signal
    /// ([`crate::StepContext::cancelled`]); no new step starts. With `now`, the body is
    /// dropped at once (cancellation: running step bodies are cancelled); otherwise running
    /// steps may finish and the execution stops at the next step boundary (a deadline).
    pub fn request_stop(&self, why: Failure, now: bool) {
        {
            let mut stopping = self.stopping.lock().unwrap_or_else(|p| p.into_inner());
            if stopping.is_none() {
                *stopping = Some(why);
            }
        }
        self.stop_requested.store(true, Ordering::Release);
        self.stop_signal.notify_waiters();
        if now || self.running_steps.load(Ordering::Acquire) == 0 {
            self.stop_at_boundary();
        }
    }

    /// Why the execution was asked to stop, if it was.
    pub fn stop_reason(&self) -> Option<Failure> {
        self.stopping.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// True once the execution was asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Stops the body now, for the reason given to [`LiveExecution::request_stop`].
    pub fn stop_at_boundary(&self) {
        let why = self.stopping.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(why) = why {
            self.abort(Abort::Stop(why));
        }
    }

    /// Resolves once the execution was asked to stop.
    pub async fn stopped(&self) {
        loop {
            let notified = self.stop_signal.notified();
            if self.is_stopping() {
                return;
            }
            notified.await;
        }
    }

    /// A step attempt begins running its body.
    pub fn step_started(&self) {
        self.running_steps.fetch_add(1, Ordering::AcqRel);
    }

    /// A step attempt ended; a stopping execution stops once none runs.
    pub fn step_boundary(&self) {
        let left = self.running_steps.fetch_sub(1, Ordering::AcqRel).saturating_sub(1);
        if left == 0 && self.is_stopping() {
            self.stop_at_boundary();
        }
    }

    /// The abort reason, if the execution was aborted since the last call.
    pub fn take_abort(&self) -> Option<Abort> {
        if !self.aborted.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        self.aborted.store(false, Ordering::Release);
        state.abort.take()
    }

    /// Aborts with a non-determinism failure that explains whether the code changed.
    pub fn abort_mismatch(&self, mismatch: &Mismatch) {
        self.abort(Abort::Fail(self.non_determinism(mismatch)));
    }

    pub fn non_determinism(&self, mismatch: &Mismatch) -> Failure {
        let current = self.definition.fingerprint();
        let cause = if self.started_fingerprint == current {
            format!(
                "the workflow's code is unchanged since the execution started (fingerprint {current}), so its body \
                 is not deterministic: keep clocks, random values and I/O inside steps"
            )
        } else {
            format!(
                "the workflow's code changed since the execution started (fingerprint {} then, {current} now): \
                 keep the old step sequence for executions started before the change, or let them finish first",
                self.started_fingerprint
            )
        };
        let mut failure = Failure::new(
            FailureKind::NonDeterminism,
            format!(
                "non-determinism in execution {} of workflow `{}`: {}; {cause}",
                self.id,
                self.definition.name(),
                mismatch.describe()
            ),
        );
        let key = mismatch.called.as_ref().map(|(k, _)| k).or(mismatch.recorded.as_ref().map(|(k, _)| k));
        if let Some(key) = key {
            failure.step = Some(key.name().to_owned());
            failure.key = Some(key.to_string());
        }
        failure
    }

    /// Aborts because stored data did not decode.
    pub fn abort_decode(&self, what: String, error: &serde_json::Error) {
        let message = format!("execution {} of workflow `{}`: {what}: {error}", self.id, self.definition.name());
        self.abort(Abort::Fail(Failure::new(FailureKind::Decode, message)));
    }

    /// Appends events (and a state change) to the journal, in order, and updates `progress`
    /// with `update` under the same lock, so the journal order and the in-memory order agree.
    pub fn append(
        &self,
        events: impl IntoIterator<Item = JournalEvent>,
        transition: Option<Transition>,
        mode: WriteMode,
        update: impl FnOnce(&mut Progress),
    ) -> WriteAck {
        let at = Timestamp::now();
        let mut state = self.lock();
        let mut entries = JournalEntries::new();
        for event in events {
            entries.push(JournalEntry { index: state.progress.take_index(), at, event });
        }
        update(&mut state.progress);
        // Submitted under the lock: the store applies one execution's writes in call order.
        self.engine.store.append(AppendBatch {
            execution: self.id.clone(),
            epoch: self.epoch,
            entries,
            transition,
            mode,
        })
    }

    /// Keeps the ack of a durable write without waiting for it. Durability is a barrier: the
    /// engine waits for every write submitted before a side effect (a step body, a
    /// compensation, the result going back to the caller) before that effect happens — see
    /// [`LiveExecution::barrier`] — so writes ride along in the same commit when they can.
    pub fn defer(&self, ack: WriteAck) {
        let mut unconfirmed = self.lock_unconfirmed();
        unconfirmed.acks.push_back(ack);
        unconfirmed.submitted += 1;
    }

    /// How many durable writes were submitted so far: the barrier of a step called now.
    pub fn submitted(&self) -> u64 {
        self.lock_unconfirmed().submitted
    }

    /// Resolves once the first `upto` durable writes are durable.
    pub fn barrier(&self, upto: u64) -> Barrier<'_> {
        Barrier { live: self, upto }
    }

    /// Waits until `ack` and every write submitted before it are durable.
    pub async fn durable(&self, ack: WriteAck) -> Result<(), StoreError> {
        let upto = self.submitted();
        self.barrier(upto).await?;
        ack.await
    }

    fn lock_unconfirmed(&self) -> MutexGuard<'_, Unconfirmed> {
        self.unconfirmed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Writes a state change with no journal entry.
    pub fn transition(
        &self,
        state: ExecutionState,
        result: Option<Box<RawValue>>,
        failure: Option<Failure>,
    ) -> WriteAck {
        let retain_until = state
            .is_finished()
            .then(|| Timestamp::now() + self.definition.retention().unwrap_or(self.engine.retention));
        self.append([], Some(Transition { state, result, failure, retain_until }), WriteMode::Durable, |_| {})
    }
}

/// Waits until the first `upto` durable writes of an execution are durable.
///
/// Polled from any branch of the workflow; all branches run in one task, so whichever polls
/// the oldest unconfirmed ack registers the task's waker.
pub(crate) struct Barrier<'a> {
    live: &'a LiveExecution,
    upto: u64,
}

impl Future for Barrier<'_> {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut unconfirmed = self.live.lock_unconfirmed();
        while unconfirmed.confirmed < self.upto {
            let Some(ack) = unconfirmed.acks.front_mut() else { break };
            match Pin::new(ack).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    unconfirmed.acks.pop_front();
                    unconfirmed.confirmed += 1;
                    result?;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}
