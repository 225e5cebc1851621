//! The engine's bookkeeping: the executions it drives (tracked until their task ends, and
//! stopped at shutdown), the ones it gave up, and the callers waiting for executions to finish.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::core::{EngineInner, LiveExecution, LiveTask, Stopper};
use crate::execution::ExecutionId;
use crate::policy::RetryPolicy;
use crate::registry::StepDefinition;

/// The shortest period of the looks for other processes' writes under a test clock.
const VIRTUAL_POLL: std::time::Duration = std::time::Duration::from_secs(3600);

pin_project_lite::pin_project! {
    /// An execution's task, in its tracing span. A struct rather than an `async` wrapper (or
    /// `Instrument`), which would store or move the execution's large future once more.
    pub(crate) struct Tracked<F> {
        #[pin]
        task: F,
        span: tracing::Span,
        _guard: Untrack,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.task.poll(cx)
    }
}

/// Removes an execution from the engine's live set when its task ends or is aborted, and
/// wakes the callers waiting for it to finish.
struct Untrack {
    engine: Arc<EngineInner>,
    execution: std::sync::Weak<LiveExecution>,
    id: ExecutionId,
}

impl Drop for Untrack {
    fn drop(&mut self) {
        // A task stopped where it stood (a shutdown) leaves no detached step body behind: it
        // would keep the execution alive (it holds a reference to it) and never run.
        if let Some(live) = self.execution.upgrade() {
            live.tear_down();
        }
        self.engine.untrack(&self.id, self.execution.as_ptr());
        self.engine.notify_watchers(&self.id);
    }
}

impl EngineInner {
    /// Spawns the task driving execution `id` and tracks it until it ends.
    pub(crate) fn spawn(self: &Arc<Self>, live: &Arc<LiveExecution>, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(self.track(live, task));
        self.stop_with(live, Stopper::Task(handle.abort_handle()));
    }

    /// Counts `live` as driven here until `task` (which drives it) ends or is dropped, and
    /// runs the task in the execution's tracing span.
    pub(crate) fn track<F: Future>(self: &Arc<Self>, live: &Arc<LiveExecution>, task: F) -> Tracked<F> {
        // The entry exists before the task can end, so the task's guard always finds it; the
        // stopper is filled in afterwards (`stop_with`), unless the task already ended.
        let id = live.id.clone();
        self.live.lock().insert(id.clone(), LiveTask { execution: live.clone(), handle: None });
        let span = tracing::info_span!("execution", execution = %id, workflow = live.definition.name());
        let guard = Untrack { engine: self.clone(), execution: Arc::downgrade(live), id };
        Tracked { task, span, _guard: guard }
    }

    /// Records how to stop the task driving `live`.
    pub(crate) fn stop_with(&self, live: &LiveExecution, stopper: Stopper) {
        {
            let mut tasks = self.live.lock();
            let Some(entry) = tasks.get_mut(&live.id) else { return };
            if !self.is_closed() {
                entry.handle = Some(stopper);
                return;
            }
        }
        // Started while the engine shut down (past `shutdown`'s sweep): stop it too (outside
        // the lock: a stopped task untracks itself).
        stopper.abort();
    }

    /// The execution this engine drives under `id`, if it does.
    pub(crate) fn live_execution(&self, id: &ExecutionId) -> Option<Arc<LiveExecution>> {
        self.live.lock().get(id).map(|task| task.execution.clone())
    }

    /// Every execution this engine drives.
    pub(crate) fn live_executions(&self) -> Vec<Arc<LiveExecution>> {
        self.live.lock().values().map(|task| task.execution.clone()).collect()
    }

    /// Marks an execution this engine stopped driving, to release it (see `abandoned`).
    pub(crate) fn abandon(&self, id: ExecutionId, epoch: u64) {
        self.abandoned.lock().push((id, epoch));
    }

    /// Releases the abandoned executions the store accepts to release now.
    pub(crate) async fn release_abandoned(&self) {
        let pending = std::mem::take(&mut *self.abandoned.lock());
        for (id, epoch) in pending {
            if let Err(error) = self.store.release_execution(&id, epoch).await {
                tracing::warn!(execution = %id, %error, "could not release an execution yet; retrying");
                self.abandon(id, epoch);
            }
        }
    }

    /// Stops counting execution `id` as driven here, if `execution` is the one driven under it
    /// (a suspended execution may be resumed by a new task before the old one is gone).
    pub(crate) fn untrack(&self, id: &ExecutionId, execution: *const LiveExecution) {
        let mut live = self.live.lock();
        if live.get(id).is_some_and(|task| std::ptr::eq(Arc::as_ptr(&task.execution), execution)) {
            live.remove(id);
        }
    }

    /// Wakes the timer scheduler: an execution was suspended until some time, which may be
    /// earlier than the one it sleeps until.
    pub(crate) fn timer_set(&self) {
        self.timer_changed.notify_one();
    }

    /// The signal for callers waiting for execution `id` to finish (see [`handle::wait_for`]).
    pub(crate) fn watch(&self, id: &ExecutionId) -> Arc<tokio::sync::Notify> {
        let mut watchers = self.watchers.lock();
        watchers.entry(id.clone()).or_default().clone()
    }

    /// Forgets the signal of a caller that stopped waiting, if nobody else waits.
    pub(crate) fn unwatch(&self, id: &ExecutionId, watch: Arc<tokio::sync::Notify>) {
        let mut watchers = self.watchers.lock();
        // The map's reference and `watch`: nobody else holds it.
        if watchers.get(id).is_some_and(|known| Arc::ptr_eq(known, &watch) && Arc::strong_count(&watch) == 2) {
            watchers.remove(id);
        }
    }

    /// Wakes the callers waiting for execution `id`: its task ended here.
    /// Wakes everyone waiting here for an execution's end (they read the store again).
    pub(crate) fn notify_all_watchers(&self) {
        let watchers: Vec<_> = self.watchers.lock().drain().map(|(_, watch)| watch).collect();
        for watch in watchers {
            watch.notify_waiters();
        }
    }

    /// Another process says there is work to take: a worker claims now, and executions queued
    /// for an exclusive key try it again.
    pub(crate) fn work_arrived(&self) {
        self.key_released.notify_waiters();
        self.events_emitted.notify_one();
        if self.worker {
            self.work_available.notify_one();
        }
    }

    pub(crate) fn notify_watchers(&self, id: &ExecutionId) {
        let watch = self.watchers.lock().remove(id);
        if let Some(watch) = watch {
            watch.notify_waiters();
        }
    }

    /// The attempt budget of a step: its own retry policy, or the engine's default if the
    /// application set one. A budget counts every attempt that started, also one a crash
    /// interrupted; `None` (no policy anywhere) means one attempt per failure — a failed
    /// attempt is not retried — while an attempt a crash interrupted runs again.
    pub(crate) fn retry_budget(&self, step: &StepDefinition) -> Option<RetryPolicy> {
        step.policy.retry.or(self.default_retry)
    }

    /// How long to wait before looking again for what other processes may have written, when
    /// `every` is the usual period: under a test clock at least an hour of the test's time (in
    /// a test one process writes, and tells its engines at once; the look is a safety net, and
    /// a month skipped should not look a million times).
    pub(crate) fn poll(&self, every: std::time::Duration) -> std::time::Duration {
        if self.virtual_time { every.max(VIRTUAL_POLL) } else { every }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True once [`Engine::drain`] began: no execution is taken over or resumed here.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
