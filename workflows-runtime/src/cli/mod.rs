//! The `workflows` helper binary, as a library function (feature `cli`).
//!
//! `inventory` only sees the steps and workflows linked into a binary, so the tool is not a
//! binary of this crate: each application builds its own, in two lines, over its own
//! workflows. In `src/bin/workflows.rs` of the crate that defines them (or of a crate that
//! depends on it):
//!
//! ```no_run
//! use my_app as _; // links the crate that defines the workflows (see below)
//! # mod my_app {}
//!
//! fn main() -> std::process::ExitCode {
//!     workflows_runtime::cli::main()
//! }
//! ```
//!
//! The `use my_app as _;` line matters when the workflows live in a library crate that the
//! binary would not otherwise use: Rust links only the crates a binary refers to, and a
//! crate that is not linked registers nothing. A binary of the same package as the library
//! (`src/bin/` next to `src/lib.rs`) needs the line too; workflows defined in the binary
//! itself need nothing.
//!
//! [`main_with`] configures the engine the tool runs workflows with, e.g. the services the
//! steps resolve from the container.
//!
//! Commands (`workflows help` lists them; every command takes `--store` and `--json`):
//! `list`, `show`, `run`, `executions`, `inspect`, `watch`, `export`, `replay-check`, `rerun`, `cancel`, `compensate`, `retry-step`, `complete`, `fail`,
//! `send-event`, `purge`, `check`, `queues`, `schedules`, `worker`. Exit codes: 0 success; 1 the command failed (the message
//! says why); 2 the command line is wrong; 3 the workflow ran and failed (compensated,
//! failed, cancelled, timed out); 4 the execution waits for something (suspended). Codes 3
//! and 4 follow the execution for every command that drives one (`run`, `rerun`, `cancel`,
//! `complete`, `fail`, `send-event`).

mod args;
mod common;
mod dispatch;
mod events;
mod executions;
mod operator;
mod output;
mod pending;
mod queues;
mod registry;
mod replay;
mod run;
mod schedules;

pub use args::Cli;
pub use common::{EXIT_ERROR, EXIT_OK, EXIT_USAGE, EXIT_WAITING, EXIT_WORKFLOW_FAILED};
pub use dispatch::{main, main_with};
