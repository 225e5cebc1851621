//! Durable workflows for Rust.
//!
//! A workflow is an ordinary `async fn` made of steps. Every step's result is checkpointed,
//! so a workflow survives crashes and restarts; when it fails for good, the completed steps
//! are rolled back by running their compensations in reverse order (a saga).
//!
//! ```
//! use workflows_runtime::prelude::*;
//!
//! #[step]
//! async fn step_1() -> Result<String, StepError> {
//!     Ok("Hello from step one!".into())
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct HelloInput { name: String }
//!
//! #[step]
//! async fn step_2(input: HelloInput) -> Result<String, StepError> {
//!     Ok(format!("Hello {} from step two!", input.name))
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct Message { message: String }
//!
//! #[workflow]
//! async fn hello_world(wf: &Workflow, input: HelloInput) -> Result<Message, WorkflowError> {
//!     let _str1 = step_1(wf).await?;
//!     let str2 = step_2(wf, input).await?;
//!     Ok(Message { message: str2 })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let engine = Engine::builder().memory().start().await?;
//! let out = hello_world::run(&engine, HelloInput { name: "John".into() }).await?;
//! assert_eq!(out.message, "Hello John from step two!");
//! # Ok(()) }
//! ```
//!
//! Users depend on this crate alone (plus `serde` for their own types): it re-exports the
//! [`step`](macro@step) and [`workflow`](macro@workflow) macros and a [`prelude`].
#![warn(missing_docs)]

#[cfg(feature = "cli")]
pub mod cli;
mod container;
mod emitted;
mod engine;
mod error;
mod events;
mod execution;
mod failure;
mod journal;
mod policy;
mod queue;
pub mod registry;
mod schedule;
mod source;
mod step;
mod store;
#[cfg(feature = "testing")]
pub mod testing;
mod time;
mod workflow;

#[doc(hidden)]
pub mod __private;

// The crate's own tests use the macros, whose code names the crate by its name.
#[cfg(test)]
extern crate self as workflows_runtime;

/// A step with a compensation, retries, a timeout, and an async step completed from outside:
///
/// ```
/// use workflows_runtime::prelude::*;
///
/// #[step(compensate = refund_order, retry(max_attempts = 3, backoff = "10ms..1s"), timeout = "30s")]
/// async fn charge_order(ctx: &StepContext, cents: u64) -> Result<String, StepError> {
///     Ok(format!("payment-{cents}-{}", ctx.idempotency_key()))
/// }
///
/// async fn refund_order(_ctx: &StepContext, payment: String) -> Result<(), StepError> {
///     let _ = payment;
///     Ok(())
/// }
///
/// #[step(async)]
/// async fn ask_manager(ctx: &StepContext, cents: u64) -> Result<Completion<bool>, StepError> {
///     let _ = (cents, ctx.completion_token()); // send the token to whoever answers
///     Ok(Completion::later())
/// }
///
/// #[workflow]
/// async fn pay_order(wf: &Workflow, cents: u64) -> Result<String, WorkflowError> {
///     if cents > 10_000 && !ask_manager(wf, cents).await? {
///         return Err(WorkflowError::new("refused by the manager"));
///     }
///     Ok(charge_order(wf, cents).await?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().memory().start().await?;
/// assert!(pay_order::run(&engine, 500).await?.starts_with("payment-500-"));
/// # Ok(()) }
/// ```
pub use workflows_macros::step;
/// Workflows run by hand, on an event and on a schedule:
///
/// ```
/// use workflows_runtime::prelude::*;
///
/// #[derive(Serialize, Deserialize)]
/// struct OrderPlaced { order: u32 }
///
/// #[step]
/// async fn notify_customer(order: u32) -> Result<(), StepError> {
///     let _ = order;
///     Ok(())
/// }
///
/// #[workflow(timeout = "5m", retention = "30d")]
/// async fn confirm_placed(wf: &Workflow, order: u32) -> Result<u32, WorkflowError> {
///     notify_customer(wf, order).await?;
///     Ok(order)
/// }
///
/// #[workflow(on_event = "order.placed")]
/// async fn on_order_placed(wf: &Workflow, event: Event<OrderPlaced>) -> Result<(), WorkflowError> {
///     Ok(notify_customer(wf, event.payload.order).await?)
/// }
///
/// #[workflow(schedule = "0 * * * *", tz = "Europe/Paris", overlap = "skip", catch_up = "1h", jitter = "30s")]
/// async fn hourly_summary(wf: &Workflow, tick: Tick) -> Result<(), WorkflowError> {
///     let _ = (wf, tick.at);
///     Ok(())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().memory().run_schedules(false).start().await?;
/// assert_eq!(confirm_placed::run(&engine, 7).await?, 7);
/// engine.emit("order.placed", OrderPlaced { order: 8 }).await?; // runs `on_order_placed` once
/// # Ok(()) }
/// ```
pub use workflows_macros::workflow;

pub use container::{Container, ResolveError};
pub use emitted::{Event, FromEvent};
pub use engine::{
    DeliveryError, Engine, EngineBuilder, EngineError, ExecutionHandle, ExportedExecution, LoadError, ReplayReport,
    ReplayVerdict, RunOptions, ScheduleStatus, UnknownSchedule, replay_check,
};
pub use error::{RunError, StepError, StepResultExt, WorkflowError};
pub use events::{EventKind, ExecutionEvent, RecvError, Subscription};
pub use execution::{ExecutionId, ExecutionRecord, ExecutionState, UnknownState};
pub use failure::{Failure, FailureKind};
pub use journal::{CallKey, InvalidCallKey, JournalEntry, JournalEvent};
pub use policy::{Backoff, OnFailure, RetryPolicy, StepPolicy};
pub use queue::{Queue, QueueStatus, Rate};
pub use registry::Registry;
pub use schedule::{CatchUp, CronSchedule, Due, FromTick, Overlap, ScheduleError, ScheduleSpec, Tick, Ticks};
#[cfg(feature = "redis")]
pub use source::RedisSource;
pub use step::{Completion, StepContext, StepResponse};
pub use store::{
    CheckReport, DamagedExecution, Durability, ExecutionQuery, IntoStore, MemoryStore, PageCursor, SqliteOptions,
    SqliteStore, StoreError, Undelivered,
};
#[cfg(feature = "postgres")]
pub use store::{PostgresOptions, PostgresStore};
pub use time::Timestamp;
/// tokio-postgres, re-exported for [`Engine::emit_in_transaction`]: use this version's
/// `Transaction`.
#[cfg(feature = "postgres")]
pub use tokio_postgres;
pub use workflow::{EventWait, WaitError, Workflow, WorkflowFn};

/// serde, re-exported for `#[serde(crate = "workflows_runtime::serde")]`.
pub use serde;

/// Everything a workflow file needs: `use workflows_runtime::prelude::*;`
pub mod prelude {
    pub use crate::{
        Backoff, Completion, Container, DeliveryError, Engine, Event, ExecutionId, Queue, RetryPolicy, RunError,
        RunOptions, StepContext, StepError, StepResponse, StepResultExt, Tick, WaitError, Workflow, WorkflowError,
        step, workflow,
    };
    pub use serde::{Deserialize, Serialize};
}
