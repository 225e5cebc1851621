//! The `#[step]` and `#[workflow]` attribute macros of `workflows-runtime`.
//!
//! Use them through `workflows_runtime` (`use workflows_runtime::prelude::*;`): the generated
//! code reaches the runtime only through `::workflows_runtime::__private`.

mod args;
mod calls;
mod duration;
mod emit;
mod fingerprint;
mod policy;
mod signature;
mod step;
mod workflow;

use proc_macro::TokenStream;

/// Turns an `async fn` into a durable step.
///
/// ```ignore
/// #[step(compensate = release_stock, retry(max_attempts = 5, backoff = "100ms..10s"), timeout = "30s")]
/// async fn reserve_stock(ctx: &StepContext, order: Order)
///     -> Result<StepResponse<Reservation, ReservationId>, StepError> { ... }
/// ```
///
/// The function is replaced by the step call used inside workflows,
/// `reserve_stock(wf, order).await?`, which replays the recorded output if the step
/// completed before and otherwise runs the body and records its output. It may take
/// `&StepContext` first, then any number of serde inputs, and returns `Result<T, E>` (`T` a
/// serde type, or `StepResponse<T, C>`; `E` converts into `StepError`).
///
/// Options (each at most once):
///
/// | option | meaning |
/// |---|---|
/// | `name = "..."` | the registered name (default: the function's name) |
/// | `compensate = path` | an `async fn(&StepContext, C) -> Result<(), E>` run when the workflow fails after this step completed; `C` is the output, or what `StepResponse::compensate_with` gave |
/// | `retry(max_attempts = N, backoff = "100ms..10s", factor = 2, jitter = 0.2)` | retries of a failed attempt (`backoff = "1s"`: fixed) |
/// | `timeout = "30s"` | per attempt: the body is stopped, the attempt fails |
/// | `on_failure = "fail" \| "continue" \| "skip" \| "pause"` | what a permanent failure does: fail the workflow (default), return the error as a value, return `None`, or park the execution `paused` until an operator retries the step (`workflows retry-step`) or compensates it |
/// | `async` | an async step: it starts work elsewhere and returns `Result<Completion<T>, E>`; the workflow waits, suspended, until `Engine::complete_step(token, output)` or `fail_step(token, error)` (the token is `ctx.completion_token()`), from any process |
/// | `crate = "path"` | where `workflows_runtime` is, if renamed or re-exported |
#[proc_macro_attribute]
pub fn step(args: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(args.into(), item.into()).into()
}

/// Turns an `async fn(&Workflow, Input) -> Result<Output, E>` into a registered workflow.
///
/// ```ignore
/// #[workflow(timeout = "5m", retention = "30d")]
/// async fn place_order(wf: &Workflow, order: Order) -> Result<Receipt, WorkflowError> { ... }
///
/// #[workflow(on_event = "order.placed")]
/// async fn confirm_order(wf: &Workflow, event: Event<OrderPlaced>) -> Result<(), WorkflowError> { ... }
///
/// #[workflow(schedule = "0 * * * *", tz = "Europe/Paris", overlap = "skip", catch_up = "1h", jitter = "30s")]
/// async fn hourly_report(wf: &Workflow, tick: Tick) -> Result<(), WorkflowError> { ... }
/// ```
///
/// The function stays as written; a type of the same name carries the entry points:
/// `name::run(&engine, input)`, `name::run_with(&engine, input, options)`,
/// `name::start(&engine, input)` (a handle with the execution id) and `name::start_with`.
/// Called from another workflow, it runs as a child execution.
///
/// Options (each at most once):
///
/// | option | meaning |
/// |---|---|
/// | `name = "..."` | the registered name (default: the function's name) |
/// | `version = N` | recorded with each execution; several versions of one name may be linked side by side: new executions start on the highest, each resumes on its own (default 0) |
/// | `timeout = "5m"` | from the execution's start: past it, the execution is compensated and ends `timed_out` |
/// | `retention = "30d"` | how long a finished execution is kept before it is purged |
/// | `on_event = "order.placed"` | a subscriber: runs once for each event of that name, its input `Event<T>` |
/// | `schedule = "0 * * * *"` | a cron pattern (seconds optional): runs once per tick across every process, its input `Tick` or `()` |
/// | `tz = "Europe/Paris"` | the schedule's IANA time zone (default `UTC`) |
/// | `overlap = "skip" \| "allow" \| "queue_one"` | a tick that comes while the previous run goes: skipped (default), run beside it, or run after it (one waits at most) |
/// | `catch_up = "1h"` | after a stop, each tick missed within this window runs once (default: only the latest) |
/// | `jitter = "30s"` | each tick starts up to this much later, the same delay in every process |
/// | `crate = "path"` | where `workflows_runtime` is, if renamed or re-exported |
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    workflow::expand(args.into(), item.into()).into()
}
