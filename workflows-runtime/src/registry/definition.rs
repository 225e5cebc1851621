//! The static definitions the macros emit for each step and workflow.

use std::fmt;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::error::{StepError, WorkflowError};
use crate::policy::StepPolicy;
use crate::step::StepContext;
use crate::workflow::Workflow;
use futures_util::future::BoxFuture;

/// Where a step or workflow is defined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceLocation {
    /// The Rust module path (`my_app::orders`).
    pub module_path: &'static str,
    /// The source file.
    pub file: &'static str,
    /// The line of the function's name.
    pub line: u32,
}

impl fmt::Display for SourceLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.file, self.line, self.module_path)
    }
}

/// Runs a step's compensation from its stored JSON input.
#[doc(hidden)]
pub type CompensationHook = for<'a> fn(&'a StepContext, &'a RawValue) -> BoxFuture<'a, Result<(), StepError>>;

/// Starts a workflow body from its stored JSON input; the output comes back as JSON.
/// Fails before running if the input does not decode as the workflow's input type.
#[doc(hidden)]
pub type ErasedEntry = for<'a> fn(
    &'a Workflow,
    &RawValue,
) -> Result<BoxFuture<'a, Result<Box<RawValue>, WorkflowError>>, serde_json::Error>;

/// Checks that JSON decodes as a workflow's input type.
#[doc(hidden)]
pub type InputCheck = fn(&RawValue) -> Result<(), serde_json::Error>;

/// A workflow body's calls and the control flow around them, as the `#[workflow]` macro
/// reads them from the source: calls `f(wf, ..)` with the workflow context as first argument,
/// and the context's durable waits (`@sleep`, `@event:NAME`). Control flow without calls is
/// left out; what happens inside helper functions is not seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// A call of a step, a child workflow or a helper function, by function name; or a durable
    /// wait of the context (`@sleep`, `@event:NAME`).
    Call(&'static str),
    /// One of the lanes runs (`if`/`else`, `match` arms); a lane may be empty.
    Branch(&'static [&'static [Flow]]),
    /// Runs any number of times (`for`, `while`, `loop`).
    Loop(&'static [Flow]),
    /// The lanes run concurrently (`join!`, `try_join!`, `select!`).
    Parallel(&'static [&'static [Flow]]),
    /// Runs once per item, a bounded number at a time (`wf.fan_out(items, limit, ..)`).
    FanOut(&'static [Flow]),
}

/// A step's compensation.
#[derive(Clone, Copy)]
pub struct CompensationDefinition {
    pub(crate) name: &'static str,
    pub(crate) hook: CompensationHook,
}

impl CompensationDefinition {
    #[doc(hidden)]
    pub const fn new(name: &'static str, hook: CompensationHook) -> Self {
        Self { name, hook }
    }

    /// The compensation function as written in `compensate = ...`.
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Debug for CompensationDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// A registered `#[step]`.
#[derive(Debug)]
pub struct StepDefinition {
    pub(crate) name: &'static str,
    pub(crate) fn_name: &'static str,
    pub(crate) location: SourceLocation,
    pub(crate) compensation: Option<CompensationDefinition>,
    pub(crate) policy: StepPolicy,
    /// For async steps: checks that a delivered output decodes as the step's output type.
    pub(crate) check_output: Option<InputCheck>,
}

impl StepDefinition {
    #[doc(hidden)]
    pub const fn new(
        name: &'static str,
        fn_name: &'static str,
        location: SourceLocation,
        compensation: Option<CompensationDefinition>,
        policy: StepPolicy,
    ) -> Self {
        Self { name, fn_name, location, compensation, policy, check_output: None }
    }

    /// This definition, for an async step (`#[step(async)]`) whose output `check` decodes.
    #[doc(hidden)]
    pub const fn completed_later(mut self, check: InputCheck) -> Self {
        self.check_output = Some(check);
        self
    }

    /// True for an async step (`#[step(async)]`): completed from outside.
    pub fn is_async(&self) -> bool {
        self.check_output.is_some()
    }

    /// Its retry, timeout and failure policies.
    pub fn policy(&self) -> &StepPolicy {
        &self.policy
    }

    /// The registered name (the function's name unless `name = "..."` was given).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function's name.
    pub fn fn_name(&self) -> &'static str {
        self.fn_name
    }

    /// Where it is defined.
    pub fn location(&self) -> SourceLocation {
        self.location
    }

    /// Its compensation, if it has one.
    pub fn compensation(&self) -> Option<&CompensationDefinition> {
        self.compensation.as_ref()
    }
}

/// A registered `#[workflow]`.
pub struct WorkflowDefinition {
    pub(crate) name: &'static str,
    pub(crate) fn_name: &'static str,
    pub(crate) location: SourceLocation,
    pub(crate) fingerprint: &'static str,
    pub(crate) version: u32,
    pub(crate) input_type: &'static str,
    pub(crate) output_type: &'static str,
    pub(crate) calls: &'static [&'static str],
    pub(crate) flow: &'static [Flow],
    pub(crate) entry: ErasedEntry,
    pub(crate) check_input: InputCheck,
    pub(crate) timeout: Option<Duration>,
    pub(crate) retention: Option<Duration>,
}

impl WorkflowDefinition {
    #[doc(hidden)]
    #[allow(clippy::too_many_arguments)]
    pub const fn new(
        name: &'static str,
        fn_name: &'static str,
        location: SourceLocation,
        fingerprint: &'static str,
        version: u32,
        input_type: &'static str,
        output_type: &'static str,
        calls: &'static [&'static str],
        entry: ErasedEntry,
        check_input: InputCheck,
        timeout: Option<Duration>,
        retention: Option<Duration>,
    ) -> Self {
        Self {
            name,
            fn_name,
            location,
            fingerprint,
            version,
            input_type,
            output_type,
            calls,
            flow: &[],
            entry,
            check_input,
            timeout,
            retention,
        }
    }

    /// This definition, with the control flow of its body.
    #[doc(hidden)]
    pub const fn with_flow(mut self, flow: &'static [Flow]) -> Self {
        self.flow = flow;
        self
    }

    /// How long an execution may run, from its start, before it is stopped and compensated.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How long a finished execution is kept, if set on the workflow (otherwise the engine's
    /// default applies).
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// The registered name (the function's name unless `name = "..."` was given).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function's name.
    pub fn fn_name(&self) -> &'static str {
        self.fn_name
    }

    /// Where it is defined.
    pub fn location(&self) -> SourceLocation {
        self.location
    }

    /// A hash of the function's tokens (signature and body): it changes when the code does.
    /// Executions record it, so a replay mismatch can say whether the code changed since.
    pub fn fingerprint(&self) -> &'static str {
        self.fingerprint
    }

    /// The declared `version` (0 unless `#[workflow(version = N)]`).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// The input type as written in the signature.
    pub fn input_type(&self) -> &'static str {
        self.input_type
    }

    /// The output type as written in the signature.
    pub fn output_type(&self) -> &'static str {
        self.output_type
    }

    /// The names of the functions the body calls with its workflow context, in source order.
    pub fn calls(&self) -> &'static [&'static str] {
        self.calls
    }

    /// The body's calls with the control flow around them, as far as the macro sees it in
    /// the source (what `workflows show` draws).
    pub fn flow(&self) -> &'static [Flow] {
        self.flow
    }
}

impl fmt::Debug for WorkflowDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowDefinition")
            .field("name", &self.name)
            .field("location", &self.location)
            .field("fingerprint", &self.fingerprint)
            .field("version", &self.version)
            .field("calls", &self.calls)
            .finish()
    }
}

/// The `inventory` entry of a step.
#[doc(hidden)]
pub struct StepRegistration(pub &'static StepDefinition);

/// The `inventory` entry of a workflow.
#[doc(hidden)]
pub struct WorkflowRegistration(pub &'static WorkflowDefinition);

inventory::collect!(StepRegistration);
inventory::collect!(WorkflowRegistration);
