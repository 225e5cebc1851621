//! The binary's entry points: parse the command line, start the runtime, run the command.

use std::process::ExitCode;

use clap::Parser;

use super::args::{Cli, Command};
use super::common::{CliError, Configure, Context, EXIT_ERROR, EXIT_OK, EXIT_USAGE};
use super::output::note;
use super::{events, executions, operator, queues, registry, replay, run, schedules};
use crate::engine::EngineBuilder;
use crate::store;

/// Runs the helper binary over the workflows linked into this program, with the arguments
/// of the process. See the [module documentation](super).
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

async fn dispatch(cli: Cli, configure: Configure) -> Result<u8, CliError> {
    let store = cli.store.unwrap_or_else(store::default_url);
    let context = Context { store, json: cli.json, client_only: cli.client_only, configure };
    if cli.client_only && matches!(cli.command, Command::Worker { .. }) {
        return Err(CliError::new("`worker` runs workflows: it cannot be --client-only"));
    }
    match cli.command {
        Command::List => registry::list(&context).await,
        Command::Show { name, format } => registry::show(&context, &name, format),
        Command::Run { name, input, id } => run::run(context, &name, &input, id).await,
        Command::Executions { state, workflow, since, limit, page, after } => {
            executions::list(&context, state, workflow, since, limit, page, after).await
        }
        Command::Inspect { id, full } => executions::inspect(&context, &id, full).await,
        Command::Watch { id, every } => executions::watch(&context, &id, every).await,
        Command::Rerun { id, force } => run::rerun(context, &id, force).await,
        Command::Cancel { id } => run::cancel(context, &id).await,
        Command::RetryStep { id, key } => run::retry_step(context, &id, &key).await,
        Command::Export { id } => replay::export(&context, &id).await,
        Command::ReplayCheck { journals, workflow, state } => {
            replay::replay_check_command(&context, journals, workflow, state).await
        }
        Command::Compensate { id, workflow, state, yes } => {
            operator::compensate(context, id, workflow, state, yes).await
        }
        Command::Complete { token, output } => run::complete(context, &token, &output).await,
        Command::Fail { token, error, permanent } => run::fail(context, &token, &error, permanent).await,
        Command::SendEvent { id, name, payload } => run::send_event(context, &id, &name, &payload).await,
        Command::Purge { older_than } => executions::purge(context, older_than).await,
        Command::Check { full } => executions::check(&context, full).await,
        Command::Events { failed, action } => events::run(context, failed, action).await,
        Command::Queues => queues::list(&context).await,
        Command::Schedules { action } => schedules::run(context, action).await,
        Command::Worker { grace } => run::worker(context, grace).await,
    }
}
