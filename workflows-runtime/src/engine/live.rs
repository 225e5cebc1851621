//! A live execution: the in-memory state an engine keeps while it drives one execution.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use parking_lot::Mutex;
use std::task::{Context, Poll, Waker};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde_json::value::RawValue;

use super::core::{Abort, DetachedBody, EngineInner, LiveExecution, State, Unconfirmed, Wait};
use super::lease::HeldLease;
use crate::container::Container;
use crate::events::{EventKind, ExecutionEvent};
use crate::execution::{ExecutionId, ExecutionState};
use crate::failure::{Failure, FailureKind};
use crate::journal::replay::{Mismatch, Progress};
use crate::journal::{JournalEntry, JournalEvent};
use crate::registry::WorkflowInfo;
use crate::store::{
    AppendBatch, Delivery, InboxKind, JournalEntries, NewEvent, StepEvent, StoreError, Transition, WriteAck, WriteMode,
};
use crate::time::Timestamp;

/// Where a live execution comes from: what [`LiveExecution::new`] needs besides its progress.
pub(crate) struct Setup {
    /// The per-run container, consulted before the engine's.
    pub container: Option<Container>,
    /// The lease epoch every write carries.
    pub epoch: u64,
    /// When the write that granted the lease began (see [`super::lease`]).
    pub lease_from: tokio::time::Instant,
    /// The workflow fingerprint recorded when the execution started.
    pub started_fingerprint: Cow<'static, str>,
    /// When the execution times out.
    pub deadline: Option<Timestamp>,
    /// The exclusive key it holds (or waits for).
    pub exclusive_key: Option<String>,
    /// It holds a slot of a queue until it finishes.
    pub in_queue: bool,
    /// For a child execution: the parent and the parent's key for it.
    pub parent: Option<(ExecutionId, String)>,
    /// How many deliveries its record had counted.
    pub wakeups: u64,
    /// The builds that could not replay it before (see [`ExecutionRecord::blocked_by`](crate::ExecutionRecord::blocked_by)).
    pub blocked_by: Vec<String>,
}

impl LiveExecution {
    /// Built in one piece (not with `with_*` methods): the struct is large, and every by-value
    /// hand-over copies it.
    pub fn new(
        id: ExecutionId,
        definition: &'static WorkflowInfo,
        engine: Arc<EngineInner>,
        progress: Progress,
        setup: Setup,
    ) -> Self {
        let Setup {
            container,
            epoch,
            lease_from,
            started_fingerprint,
            deadline,
            exclusive_key,
            in_queue,
            parent,
            wakeups,
            blocked_by,
        } = setup;
        let lease = HeldLease::granted(&engine.lease_clock, lease_from);
        Self {
            id,
            definition,
            engine,
            container,
            epoch,
            lease,
            lease_lost: tokio::sync::Notify::new(),
            started_fingerprint,
            blocked_by,
            aborted: AtomicBool::new(false),
            replaying: AtomicBool::new(progress.replaying()),
            state: Mutex::new(State { progress, abort: None }),
            unconfirmed: Mutex::new(Unconfirmed::default()),
            stopping: Mutex::new(None),
            stop_requested: AtomicBool::new(false),
            stop_signal: tokio::sync::Notify::new(),
            running_steps: AtomicU32::new(0),
            busy: AtomicU32::new(0),
            waker: Mutex::new(None),
            deadline,
            exclusive_key,
            in_queue,
            parent,
            waits: Mutex::new(Vec::new()),
            step_events: Mutex::new(Vec::new()),
            emitted: AtomicBool::new(false),
            observed_wakeups: std::sync::atomic::AtomicU64::new(wakeups),
            inbox_signal: tokio::sync::Notify::new(),
            detached: Mutex::new(FuturesUnordered::new()),
            has_detached: AtomicBool::new(false),
            tearing_down: AtomicBool::new(false),
        }
    }

    /// True if a step body whose call is dropped while it runs should be run to its end (not
    /// while the execution is being given up, or the engine shuts down: then it is dropped,
    /// as in a crash).
    pub fn may_detach(&self) -> bool {
        !self.tearing_down.load(Ordering::Acquire) && !self.engine.is_closed()
    }

    /// Runs `body` — a step body whose call was dropped while it ran, and the journaling of its
    /// outcome — to its end, in the execution's task: a started body is never abandoned
    /// silently (its side effect may have happened).
    pub fn detach(&self, body: DetachedBody) {
        self.detached.lock().push(body);
        self.has_detached.store(true, Ordering::Release);
        // The driver polls it (it may be between polls of the body).
        if let Some(waker) = self.waker.lock().as_ref() {
            waker.wake_by_ref();
        }
    }

    /// Polls the detached bodies; ready once none is left.
    pub fn poll_detached(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.has_detached.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let mut detached = self.detached.lock();
        while let Poll::Ready(Some(())) = detached.poll_next_unpin(cx) {}
        if detached.is_empty() {
            self.has_detached.store(false, Ordering::Release);
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Resolves once every detached body ended and its outcome was journaled.
    pub async fn finish_detached(&self) {
        std::future::poll_fn(|cx| self.poll_detached(cx)).await
    }

    /// The execution is being given up: bodies whose calls are dropped from now on are dropped
    /// too, and those already detached are dropped now.
    pub fn tear_down(&self) {
        self.tearing_down.store(true, Ordering::Release);
        let detached = std::mem::take(&mut *self.detached.lock());
        self.has_detached.store(false, Ordering::Release);
        drop(detached);
    }

    /// Forgets the journaled outcome of the call at `seq`, whose future was dropped before it
    /// took its turn (see [`CallGuard`]).
    fn forget_turn(&self, seq: u32) {
        let mut wake = Vec::new();
        {
            let mut state = self.state.lock();
            state.progress.forget_turn(seq, &mut wake);
            if !state.progress.replaying() {
                self.replaying.store(false, Ordering::Release);
            }
        }
        wake.into_iter().for_each(Waker::wake);
    }

    /// Marks a branch as waiting on something durable, until the guard is dropped. While every
    /// branch waits (and none runs a step body), the execution can be suspended.
    pub fn wait(&self, seq: u32, until: Option<Timestamp>, on_inbox: bool) -> WaitGuard<'_> {
        let checked = on_inbox.then_some(u64::MAX);
        self.waits.lock().push(Wait { seq, until, checked });
        WaitGuard { live: self, seq }
    }

    /// The wake-up count to record when a wait is about to look at the inbox.
    pub fn wakeups_seen(&self) -> u64 {
        self.observed_wakeups.load(Ordering::Acquire)
    }

    /// Notes that the wait of `seq` looked at the inbox when the count was `wakeups`.
    pub fn inbox_checked(&self, seq: u32, wakeups: u64) {
        if let Some(wait) = self.waits.lock().iter_mut().find(|w| w.seq == seq) {
            wait.checked = Some(wakeups);
        }
    }

    /// Resolves when the waits should look at the inbox again.
    pub fn inbox_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.inbox_signal.notified()
    }

    /// A delivery arrived (or may have): the waits look at the inbox again.
    pub fn wake_waits(&self, wakeups: Option<u64>) {
        if let Some(wakeups) = wakeups {
            self.observed_wakeups.fetch_max(wakeups, Ordering::AcqRel);
        }
        self.inbox_signal.notify_waiters();
    }

    /// True if the execution can be suspended now: some branch waits durably, no step body
    /// runs, and every wait on the inbox looked at it since the last known delivery.
    pub fn suspendable(&self) -> bool {
        if self.running_steps.load(Ordering::Acquire) != 0
            || self.busy.load(Ordering::Acquire) != 0
            || self.is_stopping()
            || self.is_replaying()
        {
            return false;
        }
        let seen = self.wakeups_seen();
        let waits = self.waits.lock();
        !waits.is_empty() && waits.iter().all(|w| w.checked.is_none_or(|c| c != u64::MAX && c >= seen))
    }

    /// Marks a branch busy (see `busy`) until the guard is dropped.
    pub fn busy(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self)
    }

    /// When the earliest wait ends by itself, or the execution times out: the suspended
    /// execution's wake-up time.
    pub fn wake_at(&self) -> Option<Timestamp> {
        self.waits.lock().iter().filter_map(|w| w.until).chain(self.deadline).min()
    }

    /// Runs `f` on the progress, under the execution's lock (never held across an await).
    pub fn with_progress<R>(&self, f: impl FnOnce(&mut Progress) -> R) -> R {
        f(&mut self.state.lock().progress)
    }

    /// Resolves when it is the turn of the call at `seq` to return its journaled outcome, or
    /// (`None`) when replay is over and live outcomes may return (see [`Progress::turn`]).
    pub fn turn(&self, seq: Option<u32>) -> Turn<'_> {
        Turn { live: self, seq }
    }

    /// True while journaled outcomes remain to be replayed.
    pub fn is_replaying(&self) -> bool {
        self.replaying.load(Ordering::Acquire)
    }

    /// After a poll of the body: aborts if the body waits for something else while the journal
    /// says its next outcome is a call it did not make.
    pub fn check_stuck(&self) {
        if self.is_replaying()
            && let Some(mismatch) = self.with_progress(|p| p.stuck())
        {
            self.abort_mismatch(&mismatch);
        }
    }

    /// True if this engine can prove, by its own clock, that it holds the lease now.
    pub fn holds_lease(&self) -> bool {
        self.lease.holds(&self.engine.lease_clock)
    }

    /// The lease was renewed by a write that began at `from` and has returned.
    pub fn lease_renewed(&self, from: tokio::time::Instant) {
        self.lease.renewed(&self.engine.lease_clock, from);
    }

    /// True if the last write that granted or renewed the lease had returned before `at`.
    pub fn lease_confirmed_before(&self, at: tokio::time::Instant) -> bool {
        self.lease.confirmed_before(&self.engine.lease_clock, at)
    }

    /// Gives the execution up: this engine cannot prove its lease any more (`why`). The body
    /// stops at once, and so does a compensation under way.
    pub fn give_up(&self, why: &str) {
        self.lease.lost();
        self.abort(Abort::LeaseLost(why.to_owned()));
        self.lease_lost.notify_waiters();
    }

    /// Resolves once the execution was given up (see [`LiveExecution::give_up`]).
    pub async fn given_up(&self) {
        loop {
            let notified = self.lease_lost.notified();
            if !self.holds_lease() {
                return;
            }
            notified.await;
        }
    }

    /// The gate before any side effect — a step body's attempt, a compensation's attempt, a
    /// child's start: true if it may happen now. False if the execution is being aborted (by
    /// another branch, in the same poll), or if this engine cannot prove its lease, in which
    /// case it gives the execution up. Call it right before the side effect, with no await in
    /// between (see [`super::lease`]).
    pub fn may_start(&self) -> bool {
        !self.aborted.load(Ordering::Acquire) && self.lease_proven()
    }

    /// True if this engine can prove its lease now; otherwise it gives the execution up. The
    /// gate before a compensation's attempt (compensations run whatever else happens).
    pub fn lease_proven(&self) -> bool {
        if self.holds_lease() {
            return true;
        }
        self.give_up("this engine could not prove its lease before a side effect (it stalled, or renewals failed)");
        false
    }

    /// Stops the body at its next poll (and wakes the driver). The first reason wins.
    pub fn abort(&self, abort: Abort) {
        {
            let mut state = self.state.lock();
            if state.abort.is_some() {
                return;
            }
            state.abort = Some(abort);
            self.aborted.store(true, Ordering::Release);
        }
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }

    /// Remembers the driver's waker, so that [`LiveExecution::abort`] can wake an idle body.
    pub fn register_waker(&self, waker: &Waker) {
        let mut slot = self.waker.lock();
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
            let mut stopping = self.stopping.lock();
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
        self.stopping.lock().clone()
    }

    /// True once the execution was asked to stop.
    pub fn is_stopping(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Stops the body now, for the reason given to [`LiveExecution::request_stop`].
    pub fn stop_at_boundary(&self) {
        let why = self.stopping.lock().clone();
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
        let mut state = self.state.lock();
        self.aborted.store(false, Ordering::Release);
        state.abort.take()
    }

    /// Aborts with a non-determinism failure that explains whether the code changed.
    pub fn abort_mismatch(&self, mismatch: &Mismatch) {
        self.abort(Abort::Block(self.non_determinism(mismatch)));
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
        self.submit(events, transition, mode, None, Vec::new(), update)
    }

    /// Journals a step's completion (`entries`) with the events its attempt emitted.
    pub fn append_completion(
        &self,
        entries: impl IntoIterator<Item = JournalEvent>,
        key: &crate::journal::CallKey,
        attempt: u32,
        update: impl FnOnce(&mut Progress),
    ) -> WriteAck {
        let emitted = self.take_step_events(key, attempt);
        self.submit(entries, None, WriteMode::Durable, None, emitted, update)
    }

    /// The events the attempt `attempt` of step call `key` emitted, with their ids; those of
    /// its other attempts (cut short, or failed) are dropped.
    pub fn take_step_events(&self, key: &crate::journal::CallKey, attempt: u32) -> Vec<StepEvent> {
        if !self.emitted.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut pending = self.step_events.lock();
        if pending.is_empty() {
            return Vec::new();
        }
        let at = Timestamp::now();
        let mut taken = Vec::new();
        pending.retain_mut(|event| {
            if event.key != *key {
                return true;
            }
            if event.attempt == attempt {
                let id = format!("{}/{}/{}", self.id, key, taken.len());
                let payload = std::mem::replace(&mut event.payload, crate::journal::replay::null());
                let name = std::mem::take(&mut event.name);
                taken.push(StepEvent { event: NewEvent { id, name, payload, at }, held: event.held });
            }
            false
        });
        taken
    }

    pub(crate) fn submit(
        &self,
        events: impl IntoIterator<Item = JournalEvent>,
        transition: Option<Transition>,
        mode: WriteMode,
        deliver: Option<Box<Delivery>>,
        emitted: Vec<StepEvent>,
        update: impl FnOnce(&mut Progress),
    ) -> WriteAck {
        let at = Timestamp::now();
        let mut state = self.state.lock();
        let mut entries = JournalEntries::new();
        for event in events {
            entries.push(JournalEntry { index: state.progress.take_index(), at, event });
        }
        update(&mut state.progress);
        // Published under the lock, so one execution's events keep their order.
        if self.engine.events.active() {
            for entry in &entries {
                self.emit(|| EventKind::from_journal(&entry.event));
            }
            if let Some(transition) = &transition {
                self.emit(|| transition_event(transition));
            }
        }
        // Submitted under the lock: the store applies one execution's writes in call order.
        self.engine.store.append(AppendBatch {
            execution: self.id.clone(),
            epoch: self.epoch,
            entries,
            transition,
            mode,
            deliver,
            events: emitted,
        })
    }

    /// Publishes an event to the engine's subscribers, if there are any (`event` is not even
    /// called otherwise).
    #[inline]
    pub fn emit(&self, event: impl FnOnce() -> Option<EventKind>) {
        if self.engine.events.active()
            && let Some(kind) = event()
        {
            self.engine.events.publish(ExecutionEvent {
                execution: self.id.clone(),
                workflow: self.definition.name(),
                at: Timestamp::now(),
                kind,
            });
        }
    }

    /// Keeps the ack of a durable write without waiting for it. Durability is a barrier: the
    /// engine waits for every write submitted before a side effect (a step body, a
    /// compensation, the result going back to the caller) before that effect happens — see
    /// [`LiveExecution::barrier`] — so writes ride along in the same commit when they can.
    pub fn defer(&self, ack: WriteAck) {
        let mut unconfirmed = self.unconfirmed.lock();
        unconfirmed.submitted += 1;
        if unconfirmed.acks.is_empty() && ack.is_ready_ok() {
            // Durable already (a synchronous store) and nothing older is pending: confirmed
            // now, so the barriers after it need not poll it.
            unconfirmed.confirmed += 1;
            return;
        }
        unconfirmed.acks.push_back(ack);
    }

    /// How many durable writes were submitted so far: the barrier of a step called now.
    pub fn submitted(&self) -> u64 {
        self.unconfirmed.lock().submitted
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
        // A child's outcome goes to its parent's inbox in the same write.
        let deliver = match (&self.parent, state.is_finished()) {
            (Some((parent, key)), true) => Some(Box::new(Delivery {
                execution: parent.clone(),
                kind: InboxKind::Completion,
                name: key.clone(),
                payload: (state == ExecutionState::Completed).then(|| result.clone()).flatten(),
                failure: (state != ExecutionState::Completed).then(|| failure.clone()).flatten(),
                at: Timestamp::now(),
                for_async_step: false,
                legacy_token: false,
            })),
            _ => None,
        };
        let transition = Transition { state, result, failure, retain_until, blocked_by: Vec::new() };
        self.submit([], Some(transition), WriteMode::Durable, deliver, Vec::new(), |_| {})
    }
}

/// The event a state change publishes: compensating, or finished.
fn transition_event(transition: &Transition) -> Option<EventKind> {
    let failure = transition.failure.clone().map(Box::new);
    match transition.state {
        ExecutionState::Compensating => {
            let failure = failure.unwrap_or_else(|| Box::new(Failure::new(FailureKind::Workflow, "failed")));
            Some(EventKind::Compensating { failure })
        }
        ExecutionState::Paused => {
            let failure = failure.unwrap_or_else(|| Box::new(Failure::new(FailureKind::Step, "paused")));
            Some(EventKind::Paused { failure })
        }
        ExecutionState::Blocked => {
            let failure = failure.unwrap_or_else(|| Box::new(Failure::new(FailureKind::NonDeterminism, "blocked")));
            Some(EventKind::Blocked { failure })
        }
        state if state.is_finished() => Some(EventKind::Finished { state, failure }),
        _ => None,
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

/// Wakes every barrier waiting for an ack (an ack keeps one waker).
impl Future for Barrier<'_> {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut unconfirmed = self.live.unconfirmed.lock();
        if let Some(cause) = &unconfirmed.failed {
            return Poll::Ready(Err(StoreError::Unavailable(cause.clone())));
        }
        while unconfirmed.confirmed < self.upto {
            let waiting = unconfirmed.waiting.clone();
            let Some(ack) = unconfirmed.acks.front_mut() else { break };
            {
                let mut wakers = waiting.0.lock();
                if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    wakers.push(cx.waker().clone());
                }
            }
            let shared = Waker::from(waiting);
            match Pin::new(ack).poll(&mut Context::from_waker(&shared)) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => {
                    unconfirmed.acks.pop_front();
                    unconfirmed.confirmed += 1;
                    if let Err(error) = result {
                        unconfirmed.failed = Some(format!(
                            "an earlier write of execution {} failed ({error}), so nothing that depends on it may \
                             run; the execution resumes from what is stored",
                            self.live.id
                        ));
                        return Poll::Ready(Err(error));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Held by the future of every journaled call (a step, a timer, an event wait, a child) from
/// the moment the call is made: if the future is dropped before the call took its journaled
/// outcome — during replay, a `select!` took another branch — that outcome is forgotten, so
/// the calls after it do not wait for its turn forever.
pub(crate) struct CallGuard<'a> {
    live: &'a LiveExecution,
    seq: u32,
}

impl<'a> CallGuard<'a> {
    pub fn new(live: &'a LiveExecution, seq: u32) -> Self {
        Self { live, seq }
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        // A call that took its outcome, or ran live, has nothing to forget.
        if self.live.is_replaying() {
            self.live.forget_turn(self.seq);
        }
    }
}

/// A busy branch; see [`LiveExecution::busy`].
pub(crate) struct Busy<'a>(&'a LiveExecution);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// See [`LiveExecution::turn`].
pub(crate) struct Turn<'a> {
    live: &'a LiveExecution,
    seq: Option<u32>,
}

impl Future for Turn<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.live.is_replaying() {
            return Poll::Ready(());
        }
        let mut wake = Vec::new();
        let ready = {
            let mut state = self.live.state.lock();
            let ready = state.progress.turn(self.seq, cx.waker(), &mut wake);
            if !state.progress.replaying() {
                self.live.replaying.store(false, Ordering::Release);
            }
            ready
        };
        wake.into_iter().for_each(Waker::wake);
        if ready { Poll::Ready(()) } else { Poll::Pending }
    }
}

/// A branch's durable wait; dropping it ends the wait.
pub(crate) struct WaitGuard<'a> {
    live: &'a LiveExecution,
    seq: u32,
}

impl Drop for WaitGuard<'_> {
    fn drop(&mut self) {
        let mut waits = self.live.waits.lock();
        if let Some(index) = waits.iter().position(|w| w.seq == self.seq) {
            waits.swap_remove(index);
        }
    }
}
