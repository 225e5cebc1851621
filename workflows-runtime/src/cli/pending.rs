//! What an unfinished execution waits for from outside (an async step's completion, an
//! event), read from its journal: shown by `inspect` and by the commands that drive an
//! execution until it waits.

use serde_json::{Value, json};

use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::{CallKey, JournalEntry, JournalEvent};

/// Something an unfinished execution waits for from outside.
pub(super) enum Pending {
    /// An async step's completion: its key, and the token that completes it.
    Completion(String, String),
    Event(String),
}

impl Pending {
    pub(super) fn to_json(&self) -> Value {
        match self {
            Self::Completion(key, token) => json!({ "completion": key, "token": token }),
            Self::Event(name) => json!({ "event": name }),
        }
    }

    pub(super) fn hint(&self, id: &ExecutionId) -> String {
        match self {
            Self::Completion(key, token) => format!(
                "waiting for the completion of async step {key}:\n  workflows complete {token} --output JSON\n  \
                 workflows fail {token} --error MESSAGE"
            ),
            Self::Event(name) => {
                format!("waiting for event `{name}`:\n  workflows send-event {id} {name} --payload JSON")
            }
        }
    }
}

pub(super) fn pending_waits(
    record: &ExecutionRecord,
    journal: &[JournalEntry],
    token: &dyn Fn(&CallKey) -> String,
) -> Vec<Pending> {
    if record.state.is_finished() {
        return Vec::new();
    }
    let mut waits: Vec<(String, Pending)> = Vec::new();
    for entry in journal {
        let step = entry.event.step().1;
        let key = step.to_string();
        match &entry.event {
            JournalEvent::StepWaiting { .. } => {
                let token = token(step);
                waits.push((key.clone(), Pending::Completion(key, token)))
            }
            JournalEvent::EventAwaited { key: wait, .. } => {
                let name = wait.name().strip_prefix("@event:").unwrap_or(wait.name()).to_owned();
                waits.push((key, Pending::Event(name)));
            }
            JournalEvent::StepCompleted { .. }
            | JournalEvent::StepFailed { .. }
            | JournalEvent::EventReceived { .. }
            | JournalEvent::WaitTimedOut { .. } => waits.retain(|(k, _)| *k != key),
            _ => {}
        }
    }
    waits.into_iter().map(|(_, wait)| wait).collect()
}
