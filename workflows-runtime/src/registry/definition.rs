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
pub type CompensationHook = for<'a> fn(&'a StepContext, &'a RawValue) -> BoxFuture<'a, Result<(), StepError>>;

/// Starts a workflow body from its stored JSON input; the output comes back as JSON.
/// Fails before running if the input does not decode as the workflow's input type.
pub type ErasedEntry = for<'a> fn(
    &'a Workflow,
    &RawValue,
) -> Result<BoxFuture<'a, Result<Box<RawValue>, WorkflowError>>, serde_json::Error>;

/// Checks that JSON decodes as a workflow's input type.
pub type InputCheck = fn(&RawValue) -> Result<(), serde_json::Error>;

/// A step's compensation.
#[derive(Clone, Copy)]
pub struct CompensationDefinition {
    pub(crate) name: &'static str,
    pub(crate) hook: CompensationHook,
}

impl CompensationDefinition {
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

/// What `#[step]` writes for a step: named fields, so that no two can be swapped unnoticed.
pub struct StepParts {
    /// The registered name.
    pub name: &'static str,
    /// The function's name.
    pub fn_name: &'static str,
    /// Where the function is.
    pub location: SourceLocation,
    /// `compensate = path`: its name and how to run it from its stored input.
    pub compensation: Option<(&'static str, CompensationHook)>,
    /// Retries, timeout, what a failure does.
    pub policy: StepPolicy,
    /// For an async step (`#[step(async)]`): checks that a delivered output decodes.
    pub check_output: Option<InputCheck>,
}

/// A step's definition, from what `#[step]` wrote.
pub const fn step_definition(parts: StepParts) -> StepDefinition {
    let StepParts { name, fn_name, location, compensation, policy, check_output } = parts;
    let compensation = match compensation {
        Some((name, hook)) => Some(CompensationDefinition { name, hook }),
        None => None,
    };
    StepDefinition { name, fn_name, location, compensation, policy, check_output }
}

/// What `#[workflow]` writes for a workflow: named fields, so that no two can be swapped
/// unnoticed.
pub struct WorkflowParts {
    /// The registered name.
    pub name: &'static str,
    /// The function's name.
    pub fn_name: &'static str,
    /// Where the function is.
    pub location: SourceLocation,
    /// The hash of the function's tokens.
    pub fingerprint: &'static str,
    /// `version = N`.
    pub version: u32,
    /// The input type, as written.
    pub input_type: &'static str,
    /// The output type, as written.
    pub output_type: &'static str,
    /// The functions the body calls with the workflow context, in source order.
    pub calls: &'static [&'static str],
    /// The body's control flow around those calls.
    pub flow: &'static [Flow],
    /// Starts the body from stored JSON input.
    pub entry: ErasedEntry,
    /// Checks that JSON decodes as the input type.
    pub check_input: InputCheck,
    /// `timeout = "..."`.
    pub timeout: Option<Duration>,
    /// `retention = "..."`.
    pub retention: Option<Duration>,
    /// `schedule = "..."` and its options.
    pub schedule: Option<crate::schedule::ScheduleSpec>,
    /// `on_event = "..."`: the event that starts it.
    pub on_event: Option<&'static str>,
}

/// A workflow's definition, from what `#[workflow]` wrote.
pub const fn workflow_definition(parts: WorkflowParts) -> WorkflowDefinition {
    let WorkflowParts {
        name,
        fn_name,
        location,
        fingerprint,
        version,
        input_type,
        output_type,
        calls,
        flow,
        entry,
        check_input,
        timeout,
        retention,
        schedule,
        on_event,
    } = parts;
    let info = WorkflowInfo {
        name,
        fn_name,
        location,
        fingerprint,
        version,
        input_type,
        output_type,
        calls,
        flow,
        timeout,
        retention,
        schedule,
        on_event,
    };
    WorkflowDefinition { info, entry, check_input }
}

/// The `inventory` entry of a step.
pub struct StepRegistration(pub &'static StepDefinition);

/// The `inventory` entry of a workflow.
pub struct WorkflowRegistration(pub &'static WorkflowDefinition);

inventory::collect!(StepRegistration);
inventory::collect!(WorkflowRegistration);
