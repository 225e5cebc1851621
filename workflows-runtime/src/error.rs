//! The errors of steps, workflows and runs (the [`Failure`] record that stores them is in `failure`).

use std::error::Error as StdError;
use std::fmt;

use crate::execution::ExecutionId;
pub use crate::failure::{Failure, FailureKind};
use crate::store::StoreError;

type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// Renders an error and its chain of sources as `outer: inner: innermost`.
pub(crate) fn render_chain(error: &(dyn StdError + 'static)) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        // Many errors already include their source in their own message.
        if !message.ends_with(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The error a step returns.
///
/// Any error is **retryable** by default (the step's retry policy decides whether another
/// attempt runs); [`StepError::permanent`] marks a failure that no retry can fix.
/// `?` converts any `std::error::Error` into a `StepError`, keeping it as the source.
///
/// Inside a workflow, a failed step call returns the `StepError` with the step's name, key and
/// attempt count attached ([`StepError::step`], [`StepError::key`], [`StepError::attempts`]).
///
/// ```
/// use workflows_runtime::prelude::*;
///
/// fn charge(amount: u64) -> Result<(), StepError> {
///     if amount == 0 {
///         return Err(StepError::permanent("amount must be positive"));
///     }
///     let _n: u32 = "42".parse()?; // any std error converts, retryable
///     Ok(())
/// }
/// # charge(1).unwrap();
/// ```
pub struct StepError(Box<StepErrorInner>);

struct StepErrorInner {
    message: String,
    permanent: bool,
    source: Option<BoxError>,
    step: Option<StepRef>,
}

/// Which step call an error belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct StepRef {
    name: String,
    key: String,
    attempts: u32,
}

impl StepError {
    /// A retryable error with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self::build(message.to_string(), false, None)
    }

    /// A permanent error: the step is not retried, whatever its retry policy.
    pub fn permanent(message: impl fmt::Display) -> Self {
        Self::build(message.to_string(), true, None)
    }

    /// This error, marked permanent.
    pub fn into_permanent(mut self) -> Self {
        self.0.permanent = true;
        self
    }

    fn build(message: String, permanent: bool, source: Option<BoxError>) -> Self {
        Self(Box::new(StepErrorInner { message, permanent, source, step: None }))
    }

    /// True if no retry should be attempted.
    pub fn is_permanent(&self) -> bool {
        self.0.permanent
    }

    /// The error message (with its sources, for converted errors), without step context.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// The name of the step that failed, when this error was returned by a step call.
    pub fn step(&self) -> Option<&str> {
        self.0.step.as_ref().map(|s| s.name.as_str())
    }

    /// The key of the step call that failed (`name#occurrence`), when returned by a step call.
    pub fn key(&self) -> Option<&str> {
        self.0.step.as_ref().map(|s| s.key.as_str())
    }

    /// How many attempts ran, when returned by a step call.
    pub fn attempts(&self) -> Option<u32> {
        self.0.step.as_ref().map(|s| s.attempts)
    }

    /// The original error, if this one was converted from a `std::error::Error`
    /// in this process (sources are not stored: after a restart only the message remains).
    pub fn source(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.0.source.as_deref()
    }

    /// The original error as `E`, if it is one.
    pub fn downcast_ref<E: StdError + 'static>(&self) -> Option<&E> {
        self.0.source.as_deref().and_then(|e| e.downcast_ref::<E>())
    }

    pub(crate) fn with_step(mut self, name: &str, key: &str, attempts: u32) -> Self {
        self.0.step = Some(StepRef { name: name.to_owned(), key: key.to_owned(), attempts });
        self
    }

    /// Rebuilds the error a step call returns from a stored failure (on replay).
    pub(crate) fn from_failure(failure: &Failure) -> Self {
        let mut error = Self::build(failure.message.clone(), failure.permanent, None);
        if let (Some(name), Some(key)) = (&failure.step, &failure.key) {
            error = error.with_step(name, key, failure.attempts.unwrap_or(1));
        }
        error
    }

    /// The stored form of this error.
    pub(crate) fn to_failure(&self) -> Failure {
        let step = self.0.step.as_ref();
        Failure {
            kind: FailureKind::Step,
            message: self.0.message.clone(),
            step: step.map(|s| s.name.clone()),
            key: step.map(|s| s.key.clone()),
            attempts: step.map(|s| s.attempts),
            permanent: self.0.permanent,
        }
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for StepError {
    fn from(error: E) -> Self {
        Self::build(render_chain(&error), false, Some(Box::new(error)))
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0.step {
            Some(step) => write!(
                f,
                "step `{}` ({}) failed after {} attempt{}: {}",
                step.name,
                step.key,
                step.attempts,
                if step.attempts == 1 { "" } else { "s" },
                self.0.message
            ),
            None => f.write_str(&self.0.message),
        }
    }
}

impl fmt::Debug for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("StepError");
        d.field("message", &self.0.message).field("permanent", &self.0.permanent);
        if let Some(step) = &self.0.step {
            d.field("step", &step.name).field("key", &step.key).field("attempts", &step.attempts);
        }
        d.finish()
    }
}

/// Extension methods for results in step bodies.
pub trait StepResultExt<T> {
    /// Converts the error into a permanent [`StepError`]: the step will not be retried.
    ///
    /// ```
    /// # use workflows_runtime::prelude::*;
    /// fn parse(s: &str) -> Result<u32, StepError> {
    ///     let n: u32 = s.parse().permanent()?; // retrying cannot fix bad input
    ///     Ok(n)
    /// }
    /// # assert!(parse("x").unwrap_err().is_permanent());
    /// ```
    fn permanent(self) -> Result<T, StepError>;
}

impl<T, E: Into<StepError>> StepResultExt<T> for Result<T, E> {
    fn permanent(self) -> Result<T, StepError> {
        self.map_err(|e| e.into().into_permanent())
    }
}

/// The error a workflow body returns.
///
/// `?` converts a failed step call ([`StepError`], keeping the step's name and key) and any
/// `std::error::Error` into a `WorkflowError`; [`WorkflowError::new`] makes one from a message.
/// When a workflow returns an error, the engine compensates its completed steps.
pub struct WorkflowError(Box<WorkflowErrorInner>);

struct WorkflowErrorInner {
    failure: Failure,
    source: Option<BoxError>,
}

impl WorkflowError {
    /// An error with this message (a business-rule failure, for example).
    pub fn new(message: impl fmt::Display) -> Self {
        Self(Box::new(WorkflowErrorInner {
            failure: Failure::new(FailureKind::Workflow, message.to_string()),
            source: None,
        }))
    }

    /// The error message, without step context.
    pub fn message(&self) -> &str {
        &self.0.failure.message
    }

    /// The name of the step whose failure this is, if it came from a step call.
    pub fn step(&self) -> Option<&str> {
        self.0.failure.step.as_deref()
    }

    /// The original error, if this one was converted from a `std::error::Error`.
    pub fn source(&self) -> Option<&(dyn StdError + Send + Sync + 'static)> {
        self.0.source.as_deref()
    }

    /// The stored form of this error.
    pub fn to_failure(&self) -> Failure {
        self.0.failure.clone()
    }

    pub(crate) fn into_failure(self) -> Failure {
        self.0.failure
    }
}

impl From<StepError> for WorkflowError {
    fn from(error: StepError) -> Self {
        let failure = error.to_failure();
        Self(Box::new(WorkflowErrorInner { failure, source: error.0.source }))
    }
}

impl<E: StdError + Send + Sync + 'static> From<E> for WorkflowError {
    fn from(error: E) -> Self {
        Self(Box::new(WorkflowErrorInner {
            failure: Failure::new(FailureKind::Workflow, render_chain(&error)),
            source: Some(Box::new(error)),
        }))
    }
}

impl fmt::Display for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.failure, f)
    }
}

impl fmt::Debug for WorkflowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("WorkflowError").field(&self.0.failure).finish()
    }
}

/// Why running a workflow did not return its output.
///
/// The first three variants say what happened to the execution: it failed and was compensated,
/// it failed and a compensation failed too, or it failed without compensation. Each carries
/// the [`Failure`]: the underlying error with the step's name and key when a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The workflow failed; every completed step was compensated (state `compensated`).
    #[error("workflow `{workflow}` (execution {execution}) failed and was compensated: {failure}")]
    Compensated {
        /// The workflow's name.
        workflow: String,
        /// The execution's id.
        execution: ExecutionId,
        /// Why it failed.
        failure: Box<Failure>,
    },
    /// The workflow failed and at least one compensation failed too (state `compensation_failed`).
    #[error(
        "workflow `{workflow}` (execution {execution}) failed: {failure}; and compensation failed: {}",
        list(compensation_failures)
    )]
    CompensationFailed {
        /// The workflow's name.
        workflow: String,
        /// The execution's id.
        execution: ExecutionId,
        /// Why the workflow failed.
        failure: Box<Failure>,
        /// Each compensation that failed.
        compensation_failures: Vec<Failure>,
    },
    /// The execution failed and was not compensated (state `failed`): non-determinism,
    /// undecodable stored data, or input that does not match the workflow.
    #[error("workflow `{workflow}` (execution {execution}) failed without compensation: {failure}")]
    Failed {
        /// The workflow's name.
        workflow: String,
        /// The execution's id.
        execution: ExecutionId,
        /// Why it failed.
        failure: Box<Failure>,
    },
    /// The code that ran the execution cannot replay its journal: it is parked `blocked`, with
    /// nothing compensated, until a process whose code can replay it takes it over (a fixed
    /// deploy) or an operator cancels it.
    #[error(
        "workflow `{workflow}` (execution {execution}) is blocked: {failure}; it resumes when a process whose code          can replay it takes it over, or cancel it to compensate it"
    )]
    Blocked {
        /// The workflow's name.
        workflow: String,
        /// The execution's id.
        execution: ExecutionId,
        /// Where the code diverges from the journal.
        failure: Box<Failure>,
    },
    /// A step with `on_failure = "pause"` failed for good: the execution is parked `paused`,
    /// nothing compensated, until an operator retries the step or compensates it.
    #[error(
        "workflow `{workflow}` (execution {execution}) is paused: {failure}; retry the step (`workflows retry-step`) \
         or compensate it (`workflows compensate`)"
    )]
    Paused {
        /// The workflow's name.
        workflow: String,
        /// The execution's id.
        execution: ExecutionId,
        /// The step's failure.
        failure: Box<Failure>,
    },
    /// The execution was cancelled; its completed steps were compensated (state `cancelled`).
    #[error("workflow `{workflow}` (execution {execution}) was cancelled; its completed steps were compensated")]
    Cancelled {
        /// The workflow's name.
        workflow: String,
        /// The execution's id.
        execution: ExecutionId,
    },
    /// The execution exceeded the workflow's timeout; its completed steps were compensated
    /// (state `timed_out`).
    #[error("workflow `{workflow}` (execution {execution}) timed out and was compensated: {failure}")]
    TimedOut {
        /// The workflow's name.
        workflow: String,
        /// The execution's id.
        execution: ExecutionId,
        /// Why (the timeout).
        failure: Box<Failure>,
    },
    /// The execution cannot be cancelled: it finished already.
    #[error("execution {execution} cannot be cancelled: it already finished ({state})")]
    NotCancellable {
        /// The execution's id.
        execution: ExecutionId,
        /// Its final state.
        state: crate::execution::ExecutionState,
    },
    /// The exclusive key is held by another active execution, and the run asked not to wait.
    #[error(
        "the exclusive key `{key}` is held by execution {holder}; wait for it, or start without `fail_if_key_held`"
    )]
    KeyHeld {
        /// The key.
        key: String,
        /// The execution holding it (or first in line for it).
        holder: ExecutionId,
    },
    /// The run names a queue that no engine sharing the store defines.
    #[error(
        "queue `{queue}` is not defined ({}): define it with `Engine::builder().queue(Queue::new(\"{queue}\").concurrency(..))`",
        defined_list(defined)
    )]
    UnknownQueue {
        /// The name the run gave.
        queue: String,
        /// The queues that are defined.
        defined: Vec<String>,
    },
    /// No workflow with a schedule has this name.
    #[error(
        "no workflow named `{schedule}` has a schedule ({}); give one `#[workflow(schedule = \"0 * * * *\")]`",
        scheduled_list(scheduled)
    )]
    UnknownSchedule {
        /// The name asked for.
        schedule: String,
        /// The workflows that have a schedule.
        scheduled: Vec<String>,
    },
    /// No execution has this id.
    #[error("no execution `{execution}` in the store (it never existed, or it was purged after its retention)")]
    NotFound {
        /// The id asked for.
        execution: ExecutionId,
    },
    /// The input could not be serialized to JSON.
    #[error("the input of workflow `{workflow}` could not be serialized to JSON: {source}")]
    Input {
        /// The workflow's name.
        workflow: String,
        /// serde's error.
        source: serde_json::Error,
    },
    /// No workflow is registered under this name.
    #[error("no workflow is registered as `{name}`{}", suggest(similar))]
    UnknownWorkflow {
        /// The name asked for.
        name: String,
        /// Registered names close to it.
        similar: Vec<&'static str>,
    },
    /// The input does not match the workflow's input type.
    #[error("the input does not match workflow `{workflow}`'s input type `{expected}`: {source}")]
    InvalidInput {
        /// The workflow's name.
        workflow: String,
        /// The input type as written in the workflow's signature.
        expected: &'static str,
        /// serde's error, with the line and column.
        source: serde_json::Error,
    },
    /// The stored output could not be decoded as the workflow's output type.
    #[error("the output of execution {execution} could not be decoded as `{expected}`: {source}")]
    Output {
        /// The execution's id.
        execution: ExecutionId,
        /// The output type's name.
        expected: &'static str,
        /// serde's error.
        source: serde_json::Error,
    },
    /// An execution with the requested id exists and does not match this start.
    #[error("execution {execution} already exists: {reason}")]
    Conflict {
        /// The execution's id.
        execution: ExecutionId,
        /// What differs.
        reason: String,
    },
    /// The engine stopped (or lost ownership of the execution) before it finished.
    /// The execution is durable: an engine on the same store resumes it.
    #[error(
        "execution {execution} did not finish in this engine: {reason}; it is resumed by an engine running on the same store"
    )]
    Interrupted {
        /// The execution's id.
        execution: ExecutionId,
        /// Why it stopped here.
        reason: String,
    },
    /// The engine was shut down: it starts nothing new.
    #[error("the engine is shut down; start a new engine to run workflows")]
    ShutDown,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn suggest(similar: &[&'static str]) -> String {
    match similar {
        [] => "; list the registered workflows with `workflows list`".to_owned(),
        names => format!("; did you mean {}?", names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" or ")),
    }
}

fn list(failures: &[Failure]) -> String {
    failures.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl RunError {
    /// The execution this error is about, if one was created.
    pub fn execution(&self) -> Option<&ExecutionId> {
        match self {
            Self::Compensated { execution, .. }
            | Self::CompensationFailed { execution, .. }
            | Self::Failed { execution, .. }
            | Self::Blocked { execution, .. }
            | Self::Paused { execution, .. }
            | Self::Output { execution, .. }
            | Self::Conflict { execution, .. }
            | Self::Cancelled { execution, .. }
            | Self::TimedOut { execution, .. }
            | Self::NotCancellable { execution, .. }
            | Self::NotFound { execution }
            | Self::Interrupted { execution, .. } => Some(execution),
            Self::Input { .. }
            | Self::UnknownWorkflow { .. }
            | Self::InvalidInput { .. }
            | Self::KeyHeld { .. }
            | Self::UnknownQueue { .. }
            | Self::UnknownSchedule { .. }
            | Self::ShutDown
            | Self::Store(_) => None,
        }
    }

    /// Why the workflow failed, for the variants that record an execution's failure.
    pub fn failure(&self) -> Option<&Failure> {
        match self {
            Self::Compensated { failure, .. }
            | Self::CompensationFailed { failure, .. }
            | Self::TimedOut { failure, .. }
            | Self::Failed { failure, .. }
            | Self::Blocked { failure, .. }
            | Self::Paused { failure, .. } => Some(failure),
            _ => None,
        }
    }

    /// The name of the step whose failure made the workflow fail, if a step failed.
    pub fn step(&self) -> Option<&str> {
        self.failure().and_then(|f| f.step.as_deref())
    }
}

/// The scheduled workflows, for [`RunError::UnknownSchedule`].
fn scheduled_list(scheduled: &[String]) -> String {
    if scheduled.is_empty() {
        "none has".to_owned()
    } else {
        format!("scheduled: {}", scheduled.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", "))
    }
}

/// The defined queues, for [`RunError::UnknownQueue`].
fn defined_list(defined: &[String]) -> String {
    if defined.is_empty() {
        "no queue is".to_owned()
    } else {
        format!("defined: {}", defined.iter().map(|q| format!("`{q}`")).collect::<Vec<_>>().join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn std_errors_keep_their_chain_and_are_retryable() {
        let e = StepError::from(Outer(std::io::Error::other("disk on fire")));
        assert_eq!(e.message(), "outer: disk on fire");
        assert!(!e.is_permanent());
        assert!(e.downcast_ref::<Outer>().is_some());
    }

    #[test]
    fn step_context_is_shown_and_kept_through_workflow_error() {
        let e = StepError::permanent("card declined").with_step("charge", "charge#1", 3);
        assert_eq!(e.to_string(), "step `charge` (charge#1) failed after 3 attempts: card declined");
        let w = WorkflowError::from(e);
        assert_eq!(w.step(), Some("charge"));
        let failure = w.into_failure();
        assert_eq!(failure.key.as_deref(), Some("charge#1"));
        assert!(failure.permanent);
        let json = serde_json::to_string(&failure).unwrap();
        let back: Failure = serde_json::from_str(&json).unwrap();
        assert_eq!(back, failure);
    }

    #[test]
    fn permanent_ext() {
        let r: Result<u32, StepError> = "x".parse::<u32>().permanent();
        assert!(r.unwrap_err().is_permanent());
    }
}
