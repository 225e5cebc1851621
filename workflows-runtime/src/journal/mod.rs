//! The journal: the ordered record of everything an execution did — every step attempt,
//! completion, failure and compensation — from which replay rebuilds its progress.

mod input_hash;
pub(crate) mod json;
pub(crate) mod replay;
#[cfg(test)]
mod replay_tests;
pub(crate) mod variant;

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use input_hash::input_hash;

use crate::failure::Failure;
use crate::time::Timestamp;

/// The deterministic key of a journaled call — a step, a timer, an event wait, a child
/// workflow —: its name and its occurrence in the execution, written `name#occurrence`
/// (`reserve_stock#2` is the second call of step `reserve_stock`; a durable sleep is `@sleep`,
/// an event wait `@event:NAME`, a child `@child:WORKFLOW`).
///
/// Occurrences are assigned when the call is *made* (not when its future is first polled), in
/// program order, so the steps of a `join!` get the same keys on every replay.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallKey {
    name: Cow<'static, str>,
    occurrence: u32,
}

impl CallKey {
    /// The key of the `occurrence`-th call (1-based) of the step `name`.
    pub fn new(name: impl Into<Cow<'static, str>>, occurrence: u32) -> Self {
        Self { name: name.into(), occurrence }
    }

    /// The step's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which call of this step it is, from 1.
    pub fn occurrence(&self) -> u32 {
        self.occurrence
    }
}

impl fmt::Display for CallKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.occurrence)
    }
}

/// A string that is not a `name#occurrence` call key.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{0}` is not a call key; expected `name#occurrence`, e.g. `reserve_stock#1`")]
pub struct InvalidCallKey(pub String);

impl FromStr for CallKey {
    type Err = InvalidCallKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, occurrence) = s.rsplit_once('#').ok_or_else(|| InvalidCallKey(s.to_owned()))?;
        let occurrence = occurrence.parse().map_err(|_| InvalidCallKey(s.to_owned()))?;
        if name.is_empty() {
            return Err(InvalidCallKey(s.to_owned()));
        }
        Ok(Self::new(name.to_owned(), occurrence))
    }
}

impl Serialize for CallKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CallKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One thing that happened in an execution.
///
/// `seq` is the call's sequence number, its place in program order (0 for the first call), which
/// replay uses together with the key to detect a workflow that no longer calls the same steps.
///
/// An attempt that finishes within its first poll (no I/O awaited) is journaled by its
/// completion or failure alone, which carries the attempt's number, input hash and start time;
/// an attempt that suspends is journaled when it suspends ([`JournalEvent::StepStarted`]), so a
/// crash during it is counted as an attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalEvent {
    /// An attempt of a step suspended (awaits I/O) before finishing.
    StepStarted {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The step call's key.
        key: CallKey,
        /// The attempt number, from 1.
        attempt: u32,
        /// A hash of the step's input (of its JSON, map order ignored).
        #[serde(with = "hex_u64")]
        input_hash: u64,
        /// The process that ran the attempt (`host:pid`), for people (`workflows inspect`);
        /// absent in journals written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<std::sync::Arc<str>>,
    },
    /// A step completed; its output is what replay returns from now on.
    StepCompleted {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The step call's key.
        key: CallKey,
        /// The attempt number, from 1.
        attempt: u32,
        /// A hash of the step's input (of its JSON, map order ignored).
        #[serde(with = "hex_u64")]
        input_hash: u64,
        /// When the attempt started.
        started_at: Timestamp,
        /// The step's output, as JSON.
        output: Box<RawValue>,
        /// The input of the step's compensation, present exactly when the step has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compensation: Option<Box<RawValue>>,
        /// The process that ran the attempt (`host:pid`), for people (`workflows inspect`);
        /// absent in journals written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<std::sync::Arc<str>>,
    },
    /// An attempt of a step failed.
    StepFailed {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The step call's key.
        key: CallKey,
        /// The attempt number, from 1.
        attempt: u32,
        /// A hash of the step's input (of its JSON, map order ignored).
        #[serde(with = "hex_u64")]
        input_hash: u64,
        /// When the attempt started.
        started_at: Timestamp,
        /// The error.
        error: Box<Failure>,
        /// When the next attempt is due; `None` when this failure is final.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<Timestamp>,
        /// For an async step failed from outside (`Engine::fail_step`): the inbox position of
        /// the failure this attempt consumed; the next attempt waits for a later one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        consumed: Option<u64>,
        /// The process that ran the attempt (`host:pid`), for people (`workflows inspect`);
        /// absent in journals written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<std::sync::Arc<str>>,
    },
    /// A step failed for good and its `on_failure = "skip"` policy skipped it: the call
    /// returned `None`, and replay returns `None` from now on.
    StepSkipped {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The step call's key.
        key: CallKey,
        /// The last attempt's number.
        attempt: u32,
        /// A hash of the step's input (of its JSON, map order ignored).
        #[serde(with = "hex_u64")]
        input_hash: u64,
        /// The last attempt's error.
        error: Box<Failure>,
    },
    /// An async step's attempt ran its body and now waits for its completion, delivered from
    /// outside (`Engine::complete_step`) until `deadline` (the attempt's timeout), if any.
    StepWaiting {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The step call's key (its completion token names it).
        key: CallKey,
        /// The attempt number, from 1.
        attempt: u32,
        /// A hash of the step's input (of its JSON, map order ignored).
        #[serde(with = "hex_u64")]
        input_hash: u64,
        /// When the attempt started.
        started_at: Timestamp,
        /// When the wait times out, if it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
        /// The inbox position of the completion this attempt waits for (earlier ones were
        /// failures consumed by earlier attempts).
        #[serde(default)]
        position: u64,
        /// The process that ran the attempt (`host:pid`), for people (`workflows inspect`);
        /// absent in journals written before it was recorded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<std::sync::Arc<str>>,
    },
    /// A durable timer (`wf.sleep`) began; it fires at `wake_at`, also after a restart.
    TimerStarted {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The timer's key (`@sleep#n`).
        key: CallKey,
        /// When it fires.
        wake_at: Timestamp,
    },
    /// A timer fired.
    TimerFired {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The timer's key.
        key: CallKey,
    },
    /// The workflow began waiting for an event, until `deadline` if the wait has a timeout.
    EventAwaited {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The wait's key (`@event:NAME#n`: the n-th wait for that event).
        key: CallKey,
        /// When the wait times out, if it does.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Timestamp>,
        /// The inbox position of the event it waits for (events of one name are consumed in
        /// the order they were sent).
        #[serde(default)]
        position: u64,
    },
    /// The awaited event arrived; its payload is what replay returns from now on.
    EventReceived {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The wait's key.
        key: CallKey,
        /// The event's payload.
        payload: Box<RawValue>,
    },
    /// A wait (for an event) timed out.
    WaitTimedOut {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The wait's key.
        key: CallKey,
    },
    /// A child workflow's execution started.
    ChildStarted {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The child's key in the parent (`@child:WORKFLOW#n`).
        key: CallKey,
        /// The child execution's id.
        child: crate::execution::ExecutionId,
    },
    /// A child workflow completed; its output is what replay returns from now on.
    ChildCompleted {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The child's key in the parent.
        key: CallKey,
        /// The child's output.
        output: Box<RawValue>,
    },
    /// A child workflow failed (it compensated itself).
    ChildFailed {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The child's key in the parent.
        key: CallKey,
        /// Why.
        error: Box<Failure>,
    },
    /// An operator retried a step that failed for good and paused the execution
    /// (`workflows retry-step`): its next attempt runs, with a fresh attempt budget.
    StepRetried {
        /// The step call's sequence number: its place in program order.
        seq: u32,
        /// The step call's key.
        key: CallKey,
        /// The process that retried it (`host:pid`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<std::sync::Arc<str>>,
    },
    /// The body asked `wf.patched(..)` for the first time at this point, in code that has the
    /// patch: it took the patch's branch, and replays take it again.
    Patched {
        /// The call's sequence number: its place in program order.
        seq: u32,
        /// The patch's key (`@patch:ID#n`).
        key: CallKey,
    },
    /// A step's compensation began.
    CompensationStarted {
        /// Position of the compensated call in program order.
        seq: u32,
        /// The compensated step call's key.
        key: CallKey,
    },
    /// A step's compensation completed.
    CompensationCompleted {
        /// Position of the compensated call in program order.
        seq: u32,
        /// The compensated step call's key.
        key: CallKey,
    },
    /// A step's compensation failed.
    CompensationFailed {
        /// Position of the compensated call in program order.
        seq: u32,
        /// The compensated step call's key.
        key: CallKey,
        /// The error.
        error: Box<Failure>,
    },
}

impl JournalEvent {
    /// The event's name as stored: `step_started`, `step_completed`, ... (its serde name).
    pub fn kind(&self) -> &'static str {
        variant::external(self)
    }

    /// The step call the event is about.
    pub fn step(&self) -> (u32, &CallKey) {
        match self {
            Self::StepStarted { seq, key, .. }
            | Self::StepCompleted { seq, key, .. }
            | Self::StepFailed { seq, key, .. }
            | Self::StepSkipped { seq, key, .. }
            | Self::StepWaiting { seq, key, .. }
            | Self::TimerStarted { seq, key, .. }
            | Self::TimerFired { seq, key }
            | Self::EventAwaited { seq, key, .. }
            | Self::EventReceived { seq, key, .. }
            | Self::WaitTimedOut { seq, key }
            | Self::ChildStarted { seq, key, .. }
            | Self::ChildCompleted { seq, key, .. }
            | Self::ChildFailed { seq, key, .. }
            | Self::Patched { seq, key }
            | Self::StepRetried { seq, key, .. }
            | Self::CompensationStarted { seq, key }
            | Self::CompensationCompleted { seq, key }
            | Self::CompensationFailed { seq, key, .. } => (*seq, key),
        }
    }
}

/// A journal event with its position and time.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JournalEntry {
    /// Position in the execution's journal, from 0, without gaps.
    pub index: u64,
    /// When it was recorded.
    pub at: Timestamp,
    /// What happened.
    pub event: JournalEvent,
}

/// Hashes are shown and stored as 16 hex digits: JSON numbers above 2^53 lose precision in
/// many JSON readers.
mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_keys_round_trip() {
        let key: CallKey = "reserve_stock#2".parse().unwrap();
        assert_eq!(key.name(), "reserve_stock");
        assert_eq!(key.occurrence(), 2);
        assert_eq!(key.to_string(), "reserve_stock#2");
        assert!("nohash".parse::<CallKey>().is_err());
        assert!("#1".parse::<CallKey>().is_err());
        assert!("a#b".parse::<CallKey>().is_err());
        // Names may contain '#': the occurrence is after the last one.
        assert_eq!("a#b#3".parse::<CallKey>().unwrap().name(), "a#b");
    }

    #[test]
    fn an_events_kind_is_its_serde_name() {
        let key = || CallKey::new("a", 1);
        let failure = || Box::new(Failure::new(crate::failure::FailureKind::Step, "no"));
        let output = || RawValue::from_string("1".into()).unwrap();
        let events = [
            JournalEvent::TimerFired { seq: 0, key: key() },
            JournalEvent::WaitTimedOut { seq: 0, key: key() },
            JournalEvent::ChildFailed { seq: 0, key: key(), error: failure() },
            JournalEvent::ChildCompleted { seq: 0, key: key(), output: output() },
            JournalEvent::CompensationStarted { seq: 0, key: key() },
            JournalEvent::CompensationFailed { seq: 0, key: key(), error: failure() },
        ];
        for event in events {
            let json = serde_json::to_value(&event).unwrap();
            let tag = json.as_object().unwrap().keys().next().unwrap().clone();
            assert_eq!(event.kind(), tag);
        }
        assert_eq!(JournalEvent::TimerFired { seq: 0, key: key() }.kind(), "timer_fired");
    }

    #[test]
    fn events_round_trip_through_json() {
        let event = JournalEvent::StepCompleted {
            seq: 3,
            key: CallKey::new("charge", 1),
            attempt: 1,
            input_hash: 255,
            started_at: Timestamp::from_micros(5),
            output: RawValue::from_string("{\"id\":7}".into()).unwrap(),
            compensation: None,
            by: Some("worker-2:4242".into()),
        };
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(
            json,
            r#"{"step_completed":{"seq":3,"key":"charge#1","attempt":1,"input_hash":"00000000000000ff","started_at":5,"output":{"id":7},"by":"worker-2:4242"}}"#
        );
        let back: JournalEvent = serde_json::from_str(&json).unwrap();
        assert_eq!(back.step().1.to_string(), "charge#1");
        let started =
            JournalEvent::StepStarted { seq: 0, key: CallKey::new("a", 1), input_hash: u64::MAX, attempt: 1, by: None };
        let json = serde_json::to_string(&started).unwrap();
        assert!(json.contains("\"ffffffffffffffff\""), "{json}");
        let back: JournalEvent = serde_json::from_str(&json).unwrap();
        assert!(matches!(back, JournalEvent::StepStarted { input_hash: u64::MAX, .. }));
    }
}
