//! The engine: starts executions, drives their bodies, compensates, and resumes executions
//! whose owner went away.

mod background;
pub(crate) mod blocked;
mod builder;
mod child;
pub(crate) mod child_call;
pub(crate) mod compensation;
mod control;
pub(crate) mod core;
mod create;
mod dispatch;
#[cfg(feature = "testing")]
pub(crate) mod double;
mod driver;
#[allow(clippy::module_inception)]
mod engine;
pub(crate) mod event;
mod finish;
mod handle;
mod inbox;
mod inline;
mod lease;
#[cfg(test)]
mod lease_tests;
pub(crate) mod live;
mod operator;
mod options;
mod owner;
pub(crate) mod panic;
pub(crate) mod patch;
mod recovery;
#[cfg(test)]
mod recovery_tests;
mod replay_check;
mod rollback;
mod scheduler;
mod state;
mod step_attempt;
pub(crate) mod step_call;
pub(crate) mod timer;
pub(crate) mod token;
mod wait;

pub use builder::{EngineBuilder, EngineError};
pub use engine::Engine;
pub use handle::ExecutionHandle;
pub use inbox::DeliveryError;
pub use options::RunOptions;
pub use replay_check::{ExportedExecution, LoadError, ReplayReport, ReplayVerdict, replay_check};
pub use scheduler::{ScheduleStatus, UnknownSchedule};
