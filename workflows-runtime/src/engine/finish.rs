//! What every way of ending an execution shares: waking what waits on it (its parent, the
//! executions queued for its exclusive key or its queue) and, when this engine stops driving it before its
//! end, what the caller hears.

use crate::error::RunError;
use crate::store::StoreError;

use super::core::LiveExecution;

/// Wakes what waits for what this execution held: the executions of this engine queued for
/// its exclusive key, and, for an execution of a queue, this engine's claim, which admits the
/// next of the queue (other processes hear of it from the store, where it can tell them).
pub(crate) fn release_slots(live: &LiveExecution) {
    if live.exclusive_key.is_some() {
        live.engine.key_released.notify_waiters();
    }
    if live.in_queue && live.engine.worker {
        live.engine.work_available.notify_one();
    }
    // Events it emitted here are published now (held ones if it completed), and so are the
    // held events of steps completed before a takeover (its epoch says it was taken over; the
    // replay did not emit them again): the dispatcher looks at once, not at its next poll.
    if live.emitted.load(std::sync::atomic::Ordering::Acquire) || live.epoch > 1 {
        live.engine.events_emitted.notify_one();
        // A child's held events are its parent's now (the top-level execution publishes them):
        // its end, if it is driven here, wakes the dispatcher too.
        if let Some(parent) = live.parent.as_ref().and_then(|(parent, _)| live.engine.live_execution(parent)) {
            parent.emitted.store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// A child finished (its outcome is in its parent's inbox): wakes the parent.
pub(crate) async fn wake_parent(live: &LiveExecution) {
    if let Some((parent, _)) = &live.parent {
        live.engine.wake(parent).await;
    }
}

/// This engine cannot prove its lease any more: it stops driving the execution at once and
/// writes nothing more; the store takes it back (unless another engine owns it already), for
/// whoever resumes it.
pub(crate) fn gave_up(live: &LiveExecution, why: &str) -> RunError {
    tracing::warn!(execution = %live.id, reason = why, "gave up an execution whose lease this engine could not prove");
    live.engine.abandon(live.id.clone(), live.epoch);
    RunError::Interrupted {
        execution: live.id.clone(),
        reason: format!("this engine gave the execution up: {why}; the engine that holds its lease resumes it"),
    }
}

/// The store refused a write: this engine stops driving the execution, which stays as stored,
/// and gives up its ownership (unless another engine owns it already) so that it is taken over
/// once the store works again.
pub(crate) fn interrupted(live: &LiveExecution, error: StoreError) -> RunError {
    tracing::warn!(execution = %live.id, %error, "stopped driving an execution after a store error");
    if !matches!(error, StoreError::Fenced { .. }) {
        live.engine.abandon(live.id.clone(), live.epoch);
    }
    RunError::Interrupted { execution: live.id.clone(), reason: format!("a store write failed: {error}") }
}
