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
/// #[step(compensate = release_stock)]
/// async fn reserve_stock(ctx: &StepContext, order: Order)
///     -> Result<StepResponse<Reservation, ReservationId>, StepError> { ... }
/// ```
///
/// The function is replaced by the step call used inside workflows,
/// `reserve_stock(wf, order).await?`, which replays the recorded output if the step
/// completed before and otherwise runs the body and records its output.
///
/// Options: `name = "..."` (the registered name; default: the function's name),
/// `compensate = path` (an `async fn(&StepContext, C) -> Result<(), E>` run when the workflow
/// fails after this step completed), `retry(max_attempts = N, backoff = "100ms..10s",
/// factor = 2, jitter = 0.2)`, `timeout = "30s"` (per attempt), `on_failure = "fail" |
/// "continue" | "skip"`, `crate = "path"` (where `workflows_runtime` is, if renamed).
#[proc_macro_attribute]
pub fn step(args: TokenStream, item: TokenStream) -> TokenStream {
    step::expand(args.into(), item.into()).into()
}

/// Turns an `async fn(&Workflow, Input) -> Result<Output, E>` into a registered workflow.
///
/// The function stays as written; a type of the same name carries the entry points:
/// `name::run(&engine, input)`, `name::run_with(&engine, input, options)`,
/// `name::start(&engine, input)` (a handle with the execution id) and `name::start_with`.
///
/// Options: `name = "..."` (the registered name; default: the function's name),
/// `version = N` (recorded with each execution), `timeout = "5m"` (from the start of the
/// execution), `retention = "30d"` (how long it is kept once finished), `crate = "path"`.
#[proc_macro_attribute]
pub fn workflow(args: TokenStream, item: TokenStream) -> TokenStream {
    workflow::expand(args.into(), item.into()).into()
}
