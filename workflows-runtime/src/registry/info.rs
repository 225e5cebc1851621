//! What is known of a workflow without running it — its names, where it is defined, its
//! fingerprint and policies, the calls of its body —, and where steps and workflows are defined.
//! Plain data: the engine's live state refers to it, so it refers to nothing above it.

use std::fmt;
use std::time::Duration;

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

/// A workflow, as the `#[workflow]` macro describes it.
pub struct WorkflowInfo {
    pub(crate) name: &'static str,
    pub(crate) fn_name: &'static str,
    pub(crate) location: SourceLocation,
    pub(crate) fingerprint: &'static str,
    pub(crate) version: u32,
    pub(crate) input_type: &'static str,
    pub(crate) output_type: &'static str,
    pub(crate) calls: &'static [&'static str],
    pub(crate) flow: &'static [Flow],
    pub(crate) timeout: Option<Duration>,
    pub(crate) retention: Option<Duration>,
    pub(crate) schedule: Option<crate::schedule::ScheduleSpec>,
    pub(crate) on_event: Option<&'static str>,
}

impl WorkflowInfo {
    /// How long an execution may run, from its start, before it is stopped and compensated.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// How long a finished execution is kept, if set on the workflow (otherwise the engine's
    /// default applies).
    pub fn retention(&self) -> Option<Duration> {
        self.retention
    }

    /// The event that starts it (`#[workflow(on_event = "...")]`), if one does.
    pub fn on_event(&self) -> Option<&'static str> {
        self.on_event
    }

    /// Its schedule (`#[workflow(schedule = "...")]`), if it has one.
    pub fn schedule(&self) -> Option<&crate::schedule::ScheduleSpec> {
        self.schedule.as_ref()
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

impl fmt::Debug for WorkflowInfo {
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
