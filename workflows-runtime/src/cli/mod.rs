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
//! `list`, `show`, `run`, `executions`, `inspect`, `watch`, `retry`, `cancel`, `complete`, `fail`,
//! `send-event`, `purge`, `check`, `worker`. Exit codes: 0 success; 1 the command failed (the message
//! says why); 2 the command line is wrong; 3 the workflow ran and failed (compensated,
//! failed, cancelled, timed out); 4 the execution waits for something (suspended). Codes 3
//! and 4 follow the execution for every command that drives one (`run`, `retry`, `cancel`,
//! `complete`, `fail`, `send-event`).

mod args;
mod executions;
mod output;
mod registry;
mod run;

use std::process::ExitCode;

use clap::Parser;

use self::output::note;

use crate::engine::EngineBuilder;
use crate::store::{self, Store, StoreError};

pub use args::Cli;

/// Exit code: the command did what was asked.
pub const EXIT_OK: u8 = 0;
/// Exit code: the command failed; the message says why.
pub const EXIT_ERROR: u8 = 1;
/// Exit code: the command line is wrong (unknown command or option).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the workflow ran and did not complete (compensated, failed, cancelled, timed out).
pub const EXIT_WORKFLOW_FAILED: u8 = 3;
/// Exit code: the execution is suspended, waiting for a completion, an event or a timer.
pub const EXIT_WAITING: u8 = 4;

/// Runs the helper binary over the workflows linked into this program, with the arguments
/// of the process. See the [module documentation](self).
pub fn main() -> ExitCode {
    main_with(|engine| engine)
}

/// [`main`], with the engine configured by `configure` (its container, retry default,
/// retention...). The store is the tool's choice (`--store`, `$WORKFLOWS_STORE`).
///
/// ```no_run
/// use workflows_runtime::Container;
///
/// fn main() -> std::process::ExitCode {
///     workflows_runtime::cli::main_with(|engine| engine.container(Container::new().with(42u32)))
/// }
/// ```
pub fn main_with(configure: impl FnOnce(EngineBuilder) -> EngineBuilder + 'static) -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // `--help` and `--version` are "errors" that print to stdout and succeed.
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            note!("error: cannot start the async runtime: {error}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let code = match runtime.block_on(dispatch(cli, Box::new(configure))) {
        Ok(code) => code,
        Err(error) => {
            note!("error: {error}");
            EXIT_ERROR
        }
    };
    // Background tasks (lease renewal, the SQLite writer) end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    ExitCode::from(code)
}

/// Configures the engine of commands that run workflows.
type Configure = Box<dyn FnOnce(EngineBuilder) -> EngineBuilder>;

async fn dispatch(cli: Cli, configure: Configure) -> Result<u8, CliError> {
    use args::Command;
    let context = Context { store: cli.store.unwrap_or_else(store::default_url), json: cli.json, configure };
    match cli.command {
        Command::List => registry::list(&context),
        Command::Show { name, format } => registry::show(&context, &name, format),
        Command::Run { name, input, id } => run::run(context, &name, &input, id).await,
        Command::Executions { state, workflow, since, limit, page } => {
            executions::list(&context, state, workflow, since, limit, page).await
        }
        Command::Inspect { id, full } => executions::inspect(&context, &id, full).await,
        Command::Watch { id, every } => executions::watch(&context, &id, every).await,
        Command::Retry { id, force } => run::retry(context, &id, force).await,
        Command::Cancel { id } => run::cancel(context, &id).await,
        Command::Complete { token, output } => run::complete(context, &token, &output).await,
        Command::Fail { token, error, permanent } => run::fail(context, &token, &error, permanent).await,
        Command::SendEvent { id, name, payload } => run::send_event(context, &id, &name, &payload).await,
        Command::Purge { older_than } => executions::purge(context, older_than).await,
        Command::Check { full } => executions::check(&context, full).await,
        Command::Worker { grace } => run::worker(context, grace).await,
    }
}

/// What every command gets.
pub(crate) struct Context {
    /// The store URL.
    store: String,
    /// Print JSON for scripts instead of text for people.
    json: bool,
    configure: Configure,
}

impl Context {
    /// Opens the store for commands that read or change executions: it must exist.
    async fn existing_store(&self) -> Result<std::sync::Arc<dyn Store>, CliError> {
        self.check_exists()?;
        let url = self.store.clone();
        tokio::task::spawn_blocking(move || store::open_url(&url))
            .await
            .map_err(|e| CliError::new(format!("opening the store was interrupted: {e}")))?
            .map_err(CliError::from)
    }

    /// A file store that does not exist is an error for every command but `run` and
    /// `worker` (which create it): reading it would create an empty file and show nothing.
    fn check_exists(&self) -> Result<(), CliError> {
        let url = self.store.trim();
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))
            && !path.is_empty()
            && !std::path::Path::new(path).exists()
        {
            return Err(CliError::new(format!(
                "no store at `{path}` (store `{url}`): nothing has run there yet; run a workflow first \
                 (`workflows run NAME`), or name the store with --store or ${}",
                store::STORE_ENV
            )));
        }
        Ok(())
    }

    /// An engine on the store: a worker (`worker`, `run`) or a client that drives only what
    /// it starts, wakes or cancels.
    async fn engine(self, worker: bool) -> Result<(crate::Engine, bool), CliError> {
        if !worker {
            self.check_exists()?;
        }
        let builder = (self.configure)(crate::Engine::builder()).store_url(self.store).worker(worker);
        let engine = builder.start().await.map_err(|e| CliError::new(e.to_string()))?;
        Ok((engine, self.json))
    }
}

/// The one message for an execution id the store does not have, whichever command was given it.
pub(crate) fn unknown_execution(store: &str, id: &crate::ExecutionId) -> CliError {
    CliError::new(format!(
        "no execution `{id}` in store `{store}` (it never existed, or it was purged after its retention); list \
         them with `workflows executions`"
    ))
}

/// An engine's error, with the one message for an unknown execution.
pub(crate) fn run_error(store: &str, error: crate::RunError) -> CliError {
    match error {
        crate::RunError::NotFound { execution } => unknown_execution(store, &execution),
        other => other.into(),
    }
}

/// A delivery's error, with the one message for an unknown execution.
pub(crate) fn delivery_error(store: &str, error: crate::DeliveryError) -> CliError {
    match error {
        crate::DeliveryError::NotFound { execution } => unknown_execution(store, &execution),
        other => other.into(),
    }
}

/// A command failed; the message is for a person.
#[derive(Debug)]
pub(crate) struct CliError(String);

impl CliError {
    fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<StoreError> for CliError {
    fn from(error: StoreError) -> Self {
        Self(error.to_string())
    }
}

impl From<crate::RunError> for CliError {
    fn from(error: crate::RunError) -> Self {
        Self(error.to_string())
    }
}

impl From<crate::DeliveryError> for CliError {
    fn from(error: crate::DeliveryError) -> Self {
        Self(error.to_string())
    }
}

impl From<crate::registry::RegistryError> for CliError {
    fn from(error: crate::registry::RegistryError) -> Self {
        Self(error.to_string())
    }
}
