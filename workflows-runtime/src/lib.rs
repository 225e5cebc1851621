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
mod time;
mod workflow;

#[doc(hidden)]
pub mod __private;

// The crate's own tests use the macros, whose code names the crate by its name.
#[cfg(test)]
extern crate self as workflows_runtime;

/// Turns an `async fn` into a durable step.
///
/// See the crate documentation and the README for the options
/// (`name = "..."`, `compensate = path`, `crate = "..."`).
pub use workflows_macros::step;
/// Turns an `async fn(&Workflow, Input) -> Result<Output, E>` into a registered workflow with
/// generated entry points `name::run`, `name::start` and `name::run_with`.
pub use workflows_macros::workflow;

pub use container::{Container, ResolveError};
pub use emitted::{Event, FromEvent};
pub use engine::{
    DeliveryError, Engine, EngineBuilder, EngineError, ExecutionHandle, RunOptions, ScheduleStatus, UnknownSchedule,
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
