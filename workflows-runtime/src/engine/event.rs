//! Waiting for an event: what `wf.wait_for_event(..)` does. The wait (and its deadline) is
//! journaled with the position of the event it waits for among the events of that name, so
//! the n-th wait gets the n-th event, whenever it was sent; the payload is journaled when it
//! arrives.

use std::time::Duration;

use serde_json::value::RawValue;

use super::core::LiveExecution;
use super::live::CallGuard;
use super::wait::{delivery, unexpected};
use crate::journal::replay::{Decision, null};
use crate::journal::{CallKey, JournalEvent};
use crate::store::{InboxKind, WriteMode};
use crate::time::Timestamp;

/// Waits for the event `event` at call `seq`: its payload, or `None` when `timeout` passed
/// first.
pub(crate) async fn wait(
    live: &LiveExecution,
    guard: CallGuard<'_>,
    seq: u32,
    key: CallKey,
    event: &str,
    timeout: Option<Duration>,
) -> Option<Box<RawValue>> {
    let _guard = guard;
    let (deadline, position) = match live.with_progress(|p| p.decide(seq, &key, 0)) {
        Decision::Completed(payload) => {
            live.turn(Some(seq)).await;
            return Some(payload);
        }
        Decision::TimedOut => {
            live.turn(Some(seq)).await;
            return None;
        }
        Decision::Wait { until, position, .. } => (until, position),
        Decision::Run { .. } => {
            let deadline = timeout.map(|timeout| Timestamp::now() + timeout);
            let progress_key = key.clone();
            let position = live.with_progress(|p| p.next_event_position(key.name()));
            let awaited = JournalEvent::EventAwaited { seq, key: key.clone(), deadline, position };
            let ack = live.append([awaited], None, WriteMode::Durable, |p| {
                p.event_awaited(seq, progress_key, deadline, position)
            });
            live.defer(ack);
            (deadline, position)
        }
        other => return unexpected(live, seq, &key, other).await,
    };
    let result = match delivery(live, seq, InboxKind::Event, event, position, deadline).await {
        Some(entry) => {
            let payload = entry.payload.unwrap_or_else(null);
            let received = JournalEvent::EventReceived { seq, key, payload: payload.clone() };
            drop(live.append([received], None, WriteMode::Lazy, |p| p.completed(seq, None, None)));
            Some(payload)
        }
        None => {
            let expired = JournalEvent::WaitTimedOut { seq, key };
            drop(live.append([expired], None, WriteMode::Lazy, |p| p.timed_out(seq)));
            None
        }
    };
    live.turn(None).await;
    result
}
