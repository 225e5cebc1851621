//! What every command shares: its context (the store, JSON or text, the engine's
//! configuration), its error, the exit codes and the messages more than one command gives.

use crate::engine::EngineBuilder;
use crate::store::{self, Store, StoreError};

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

/// Configures the engine of commands that run workflows.
pub(crate) type Configure = Box<dyn FnOnce(EngineBuilder) -> EngineBuilder>;

/// What every command gets.
pub(crate) struct Context {
    /// The store URL.
    pub store: String,
    /// Print JSON for scripts instead of text for people.
    pub json: bool,
    /// Leave what a command starts or wakes to the workers (see `Cli::client_only`).
    pub client_only: bool,
    pub configure: Configure,
}

impl Context {
    /// Opens the store for commands that read or change executions: it must exist.
    pub async fn existing_store(&self) -> Result<std::sync::Arc<dyn Store>, CliError> {
        self.check_exists()?;
        store::open_url(&self.store).await.map_err(CliError::from)
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
    pub async fn engine(self, worker: bool) -> Result<(crate::Engine, bool), CliError> {
        if !worker {
            self.check_exists()?;
        }
        let builder = (self.configure)(crate::Engine::builder()).store_url(self.store);
        let builder = if self.client_only { builder.client_only() } else { builder.worker(worker) };
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
    pub fn new(message: impl Into<String>) -> Self {
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

/// Resolves on Ctrl-C or SIGTERM.
pub(super) async fn stop_signal() {
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
