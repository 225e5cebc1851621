//! Executions: one run of a workflow, its id, its state and its stored record.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::failure::Failure;
use crate::time::Timestamp;

/// The id of an execution: a UUIDv7 by default, or any non-empty string the caller chose
/// (see [`RunOptions::id`](crate::RunOptions::id)).
///
/// Cloning is cheap (a reference count). The id carries a hash of its text, computed once, so
/// the engine's and the stores' maps do not rehash it on every step.
#[derive(Clone)]
pub struct ExecutionId {
    text: Arc<str>,
    hash: u64,
}

impl ExecutionId {
    /// A new, time-ordered unique id (UUIDv7).
    pub fn new() -> Self {
        let mut buf = uuid::Uuid::encode_buffer();
        Self::from(&*uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn from_text(text: Arc<str>) -> Self {
        // Seeded per process: ids are often chosen by callers, and a fixed hash would let them
        // pick colliding ids.
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new().build_hasher().finish()
        });
        let hash = xxhash_rust::xxh3::xxh3_64_with_seed(text.as_bytes(), seed);
        Self { text, hash }
    }
}

impl PartialEq for ExecutionId {
    fn eq(&self, other: &Self) -> bool {
        // Clones of one id share their text: compare the pointer before the bytes.
        Arc::ptr_eq(&self.text, &other.text) || (self.hash == other.hash && self.text == other.text)
    }
}

impl Eq for ExecutionId {}

impl std::hash::Hash for ExecutionId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl PartialOrd for ExecutionId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ExecutionId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.text.cmp(&other.text)
    }
}

impl Default for ExecutionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl From<&str> for ExecutionId {
    fn from(s: &str) -> Self {
        Self::from_text(Arc::from(s))
    }
}

impl From<String> for ExecutionId {
    fn from(s: String) -> Self {
        Self::from_text(Arc::from(s))
    }
}

impl From<&String> for ExecutionId {
    fn from(s: &String) -> Self {
        Self::from(s.as_str())
    }
}

impl From<&ExecutionId> for ExecutionId {
    fn from(id: &ExecutionId) -> Self {
        id.clone()
    }
}

impl AsRef<str> for ExecutionId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl Serialize for ExecutionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for ExecutionId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(Self::from(&*s))
    }
}

/// Where an execution is in its life.
///
/// ```text
/// queued ─┐
/// pending → running → completed
///              │
///              ├──→ compensating → compensated | compensation_failed
///              ├──→ paused   (a step with `on_failure = "pause"` failed for good: an
///              │              operator retries the step or compensates it)
///              ├──→ blocked  (its journal cannot be replayed by the code that claimed it:
///              │              it runs again in a process whose code can)
///              └──→ failed   (a failure that must not be compensated, e.g. undecodable data)
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionState {
    /// Started on a queue, waiting for the queue's limits to let it run (see
    /// [`Queue`](crate::Queue)); no engine holds it.
    Queued,
    /// Created, not started yet: waiting for its exclusive key.
    Pending,
    /// Running (or to be resumed by an engine after its owner went away).
    Running,
    /// Suspended until something durable happens (an external completion, a timer, an event).
    Waiting,
    /// Finished with a result.
    Completed,
    /// Failed; the compensations of its completed steps are running.
    Compensating,
    /// Failed, and every completed step was compensated.
    Compensated,
    /// Failed, and at least one compensation failed (the others still ran).
    CompensationFailed,
    /// Cancelled; its completed steps were compensated.
    Cancelled,
    /// Exceeded its time limit; its completed steps were compensated.
    TimedOut,
    /// Failed in a way that must not be compensated automatically (undecodable stored data,
    /// input that does not match the workflow).
    Failed,
    /// Parked after a step with `on_failure = "pause"` failed for good: nothing compensated,
    /// nobody drives it, until an operator retries the step
    /// ([`Engine::retry_step`](crate::Engine::retry_step)) or compensates it.
    Paused,
    /// Parked: the code that claimed it cannot replay its journal (a step call that differs
    /// since it started, a patch it lacks). Nothing was compensated and nobody drives it; a
    /// process whose code can replay it takes it over by itself (a fixed deploy), and only an
    /// operator fails or compensates it. Its failure says where the code diverges.
    Blocked,
}

impl ExecutionState {
    /// Every state, in life-cycle order.
    pub const ALL: [ExecutionState; 13] = [
        Self::Queued,
        Self::Pending,
        Self::Running,
        Self::Waiting,
        Self::Completed,
        Self::Compensating,
        Self::Compensated,
        Self::CompensationFailed,
        Self::Cancelled,
        Self::TimedOut,
        Self::Failed,
        Self::Paused,
        Self::Blocked,
    ];

    /// The state's name as stored and shown: `running`, `compensation_failed`, ...
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Compensating => "compensating",
            Self::Compensated => "compensated",
            Self::CompensationFailed => "compensation_failed",
            Self::Cancelled => "cancelled",
            Self::TimedOut => "timed_out",
            Self::Failed => "failed",
            Self::Paused => "paused",
            Self::Blocked => "blocked",
        }
    }

    /// True when the execution will not change by itself any more.
    pub const fn is_finished(self) -> bool {
        matches!(
            self,
            Self::Completed
                | Self::Compensated
                | Self::CompensationFailed
                | Self::Cancelled
                | Self::TimedOut
                | Self::Failed
        )
    }

    /// True for the states an engine drives (and recovers when their owner is gone); a
    /// `waiting` execution is driven by nobody until it is woken.
    pub const fn is_active(self) -> bool {
        matches!(self, Self::Pending | Self::Running | Self::Compensating)
    }

    /// True for `paused` and `blocked`: not finished, but nothing happens to the execution
    /// until something outside acts (an operator, another build); a caller waiting for its
    /// result hears why.
    pub const fn is_parked(self) -> bool {
        matches!(self, Self::Paused | Self::Blocked)
    }

    /// True for the states whose execution nobody owns once it is in them: the finished ones,
    /// `paused` and `blocked` (a write that moves an execution there gives up its lease).
    pub const fn releases_owner(self) -> bool {
        self.is_finished() || matches!(self, Self::Blocked | Self::Paused)
    }
}

impl fmt::Display for ExecutionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown [`ExecutionState`] name.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "unknown execution state `{0}`; expected one of: queued, pending, running, waiting, completed, compensating, compensated, compensation_failed, cancelled, timed_out, failed, paused, blocked"
)]
pub struct UnknownState(pub String);

impl FromStr for ExecutionState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// An execution as the store keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The execution's id.
    pub id: ExecutionId,
    /// The registered name of the workflow.
    pub workflow: String,
    /// The fingerprint of the workflow's code when the execution started.
    pub fingerprint: String,
    /// The workflow's declared `version` when the execution started.
    pub version: u32,
    /// The workflow input, as JSON.
    pub input: Box<RawValue>,
    /// The current state.
    pub state: ExecutionState,
    /// The output, once `completed`.
    pub result: Option<Box<RawValue>>,
    /// Why it failed, once failing or failed.
    pub failure: Option<Failure>,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its record last changed.
    pub updated_at: Timestamp,
    /// The engine that owns it while it is active.
    pub owner: Option<String>,
    /// Until when the owner's lease holds; after that another engine may take it over.
    pub lease_until: Option<Timestamp>,
    /// Incremented on every change of owner; writes carrying an older epoch are refused.
    pub epoch: u64,
    /// The exclusive key it holds or waits for (see [`RunOptions::exclusive_key`](crate::RunOptions::exclusive_key)).
    pub exclusive_key: Option<String>,
    /// The queue it was started on (see [`RunOptions::queue`](crate::RunOptions::queue)).
    pub queue: Option<String>,
    /// The execution this one re-runs (see [`Engine::rerun`](crate::Engine::rerun)).
    pub rerun_of: Option<ExecutionId>,
    /// A cancellation was requested; the engine that drives it cancels it.
    pub cancel_requested: bool,
    /// When the finished execution may be purged.
    pub retain_until: Option<Timestamp>,
    /// When a `waiting` execution's timer (or wait deadline) wakes it.
    pub wake_at: Option<Timestamp>,
    /// How many deliveries (completions, events) it received.
    pub wakeups: u64,
    /// For a child execution: its parent and the parent's key for it.
    pub parent: Option<(ExecutionId, String)>,
    /// When it times out (`#[workflow(timeout = "...")]` from its start), if it does.
    pub deadline: Option<Timestamp>,
    /// The builds (see [`crate::Engine::build_id`]) whose code could not replay its journal and
    /// blocked it: none of them takes it again (a build that diverges from a journal diverges
    /// from every longer one), any other build may.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blocked_by: Vec<String>,
}
