//! The static definitions the macros emit for each step and workflow.

use std::fmt;
use std::time::Duration;

use serde_json::value::RawValue;

use crate::error::{StepError, WorkflowError};
use crate::policy::StepPolicy;
use crate::step::StepContext;
use crate::workflow::Workflow;

use super::info::{Flow, SourceLocation, WorkflowInfo};
use futures_util::future::BoxFuture;

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

/// A registered `#[workflow]`: what is known of it without running it ([`WorkflowInfo`], which
/// it dereferences to), and how to run it.
pub struct WorkflowDefinition {
    pub(crate) info: WorkflowInfo,
    pub(crate) entry: ErasedEntry,
    pub(crate) check_input: InputCheck,
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
        let info = WorkflowInfo {
            name,
            fn_name,
            location,
            fingerprint,
            version,
            input_type,
            output_type,
            calls,
            flow: &[],
            timeout,
            retention,
        };
        Self { info, entry, check_input }
    }

    /// This definition, with the control flow of its body.
    #[doc(hidden)]
    pub const fn with_flow(mut self, flow: &'static [Flow]) -> Self {
        self.info.flow = flow;
        self
    }

    /// What is known of the workflow without running it.
    pub fn info(&self) -> &WorkflowInfo {
        &self.info
    }
}

impl std::ops::Deref for WorkflowDefinition {
    type Target = WorkflowInfo;

    fn deref(&self) -> &WorkflowInfo {
        &self.info
    }
}

impl fmt::Debug for WorkflowDefinition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.info.fmt(f)
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
