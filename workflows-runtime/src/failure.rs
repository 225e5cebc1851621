//! The [`Failure`] record: how a failure is stored with an execution and in its journal.
//!
//! A leaf: the store, the journal and the errors users see all hold failures, so the record
//! depends on none of them.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What kind of failure a [`Failure`] records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// A step failed (after its last attempt) and the workflow let the error propagate.
    Step,
    /// The workflow body returned an error of its own.
    Workflow,
    /// A step body or the workflow body panicked.
    Panic,
    /// Replay found a different step than the journal recorded.
    NonDeterminism,
    /// Stored data (an input, an output, a compensation input) could not be decoded.
    Decode,
    /// A compensation failed.
    Compensation,
    /// The execution was cancelled.
    Cancelled,
    /// The execution exceeded its time limit.
    TimedOut,
    /// An operator compensated the execution (`workflows compensate`, `Engine::compensate`).
    Operator,
}

/// A failure as stored with an execution or in its journal: a message plus, for step failures,
/// the step's name, key and attempt count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// What kind of failure this is.
    pub kind: FailureKind,
    /// The error message, with its causes.
    pub message: String,
    /// The name of the step that failed, for step failures and compensation failures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The key of the step call (`name#occurrence`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// How many attempts ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// True if the error was marked permanent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub permanent: bool,
}

impl Failure {
    /// A failure of this kind with a message and no step.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self { kind, message: message.into(), step: None, key: None, attempts: None, permanent: false }
    }

    /// Why a cancelled execution stopped.
    pub(crate) fn cancellation() -> Self {
        Self::new(FailureKind::Cancelled, "the execution was cancelled")
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.kind, &self.step, &self.key) {
            (FailureKind::Step, Some(step), Some(key)) => {
                let attempts = self.attempts.unwrap_or(1);
                write!(
                    f,
                    "step `{step}` ({key}) failed after {attempts} attempt{}: {}",
                    if attempts == 1 { "" } else { "s" },
                    self.message
                )
            }
            (FailureKind::Compensation, Some(step), Some(key)) => {
                write!(f, "compensation of step `{step}` ({key}) failed: {}", self.message)
            }
            (FailureKind::Panic, Some(step), Some(key)) => {
                write!(f, "step `{step}` ({key}) panicked: {}", self.message)
            }
            _ => f.write_str(&self.message),
        }
    }
}
