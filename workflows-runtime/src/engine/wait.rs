//! Waiting on the inbox: for an async step's completion, an event, a child's result.
//!
//! A wait looks at the execution's inbox, then sleeps until a delivery in this engine wakes it,
//! its deadline passes, or a while (deliveries from other processes are also noticed when the
//! execution next tries to suspend). While every branch of an execution waits, the driver
//! suspends it: its future is dropped, and replay resumes it when it is woken.

use std::time::Duration;

use super::core::{Abort, LiveExecution};
use crate::journal::CallKey;
use crate::journal::replay::{Decision, Mismatch};
use crate::store::{InboxEntry, InboxKind};
use crate::time::Timestamp;

/// How often a live wait looks at the inbox by itself.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Waits for inbox entry `position` of `kind`/`name`; `None` once `until` passed.
pub(crate) async fn delivery(
    live: &LiveExecution,
    seq: u32,
    kind: InboxKind,
    name: &str,
    position: u64,
    until: Option<Timestamp>,
) -> Option<InboxEntry> {
    let _wait = live.wait(seq, until, true);
    loop {
        // Registered before looking, so a delivery while looking is not missed.
        let changed = live.inbox_changed();
        let seen = live.wakeups_seen();
        match live.engine.store.inbox(&live.id, kind, name, position).await {
            Ok(Some(entry)) => return Some(entry),
            Ok(None) => live.inbox_checked(seq, seen),
            Err(error) => {
                live.abort(Abort::Store(error));
                return std::future::pending().await;
            }
        }
        let remaining = until.map(|at| at.duration_since(Timestamp::now()));
        if remaining == Some(Duration::ZERO) {
            return None;
        }
        let look_again = live.engine.poll(LOOK_AGAIN);
        let pause = remaining.map_or(look_again, |r| r.min(look_again));
        tokio::select! {
            () = changed => {}
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// A journal entry of another kind at this position: the workflow changed. Never returns.
pub(crate) async fn unexpected<T>(live: &LiveExecution, seq: u32, key: &CallKey, decision: Decision) -> T {
    let mismatch = match decision {
        Decision::Mismatch(mismatch) => mismatch,
        _ => Mismatch {
            seq,
            recorded: live.with_progress(|p| p.recorded(seq)),
            called: Some((key.clone(), 0)),
            waiting: false,
        },
    };
    live.abort_mismatch(&mismatch);
    std::future::pending().await
}
