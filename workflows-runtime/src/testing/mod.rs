//! A test kit for workflows (the `testing` feature, for `[dev-dependencies]`):
//!
//! - [`TestClock`]: virtual time — a 30-day sleep, a 10-minute backoff or an hourly schedule
//!   runs in milliseconds, deterministically;
//! - [`Double`]: a step's body (and compensation) replaced in one test engine by a closure,
//!   checked by the compiler against the step's signature, journaled like the step, its calls
//!   recorded;
//! - [`explore_crashes`]: the workflow crashed just before and just after each of its durable
//!   writes, restarted, and checked: same ending, nothing journaled or compensated twice, no
//!   step body begun once its completion was committed — and how often each body ran;
//! - [`replay_fixture`]: a journal recorded in production (`workflows export`) replayed
//!   against today's code, without running step bodies: a regression test for deploys.
//!
//! ```toml
//! [dev-dependencies]
//! workflows-runtime = { version = "0.1", features = ["testing"] }
//! ```

mod clock;
mod crash;
mod fixture;

pub use crate::engine::double::{Double, DoubleCall, DoubleFn, DoubleOutput, StepFunction};
pub use clock::TestClock;
pub use crash::{BodyRuns, CrashExploration, CrashFailure, CrashPoint, CrashReport, Ending, When, explore_crashes};
pub use fixture::{FixtureError, replay_fixture};
