//! The command line.

use clap::{Parser, Subcommand, ValueEnum};

use crate::execution::ExecutionState;
use crate::store::PageCursor;

/// Inspect and operate the durable workflows of this program.
#[derive(Debug, Parser)]
#[command(name = "workflows", version, long_about = None)]
pub struct Cli {
    /// The store: `sqlite:PATH`, `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME]` or
    /// `memory`. Default: $WORKFLOWS_STORE, else `sqlite:workflows.db`.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,

    /// Print JSON for scripts (one document per command; its shape is documented in the README).
    #[arg(long, global = true)]
    pub json: bool,

    /// Leave the work a command starts or wakes (`run`, `rerun`, `cancel`, `complete`, `fail`,
    /// `send-event`, `schedules trigger|backfill`) to the workers sharing the store: this
    /// process runs no workflow body, and returns once the store has it. Without it, the
    /// command runs that work here until it finishes or waits.
    #[arg(long, global = true)]
    pub client_only: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// List the registered workflows and steps, with their source locations and policies.
    List,
    /// Show the steps a workflow calls, in order, with branches, loops and parallel lanes.
    Show {
        /// The workflow's registered name.
        name: String,
        /// How to draw it.
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run a workflow here, showing each step as it starts and finishes.
    Run {
        /// The workflow's registered name.
        name: String,
        /// The input: JSON text, `@FILE` to read it from a file, or `@-` for standard input.
        #[arg(long, default_value = "null", value_name = "JSON|@FILE")]
        input: String,
        /// The execution's id (a new one by default); starting an id that exists returns its
        /// result, as `RunOptions::id` does.
        #[arg(long)]
        id: Option<String>,
    },
    /// List executions, newest first.
    Executions {
        /// Only executions in this state (repeat for several).
        #[arg(long, value_parser = parse_state)]
        state: Vec<ExecutionState>,
        /// Only executions of this workflow.
        #[arg(long)]
        workflow: Option<String>,
        /// Only executions created since this long ago (`1h`, `2d`) or this time (RFC 3339).
        #[arg(long, value_name = "AGE|TIME")]
        since: Option<String>,
        /// How many per page.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// Which page, from 1 (a deep page costs what it skips: prefer `--after`).
        #[arg(long, default_value_t = 1, conflicts_with = "after")]
        page: usize,
        /// The page after this cursor: the `next` a listing printed. Every page costs the same,
        /// however deep.
        #[arg(long, value_name = "CURSOR", value_parser = parse_cursor)]
        after: Option<PageCursor>,
    },
    /// Show an execution's timeline: every step and compensation, with attempts, durations,
    /// errors and outputs.
    Inspect {
        /// The execution's id.
        id: String,
        /// Show outputs and inputs in full instead of truncated.
        #[arg(long)]
        full: bool,
    },
    /// Follow an execution, whichever process drives it: print its timeline as it grows, until
    /// it finishes (exit code as for `run`) or Ctrl-C.
    Watch {
        /// The execution's id.
        id: String,
        /// How often to look at the store.
        #[arg(long, default_value = "200ms", value_name = "DURATION", value_parser = parse_duration)]
        every: std::time::Duration,
    },
    /// Write an execution's record and journal as JSON (`> order-17.json`): a fixture for
    /// `replay-check --journals`.
    Export {
        /// The execution's id.
        id: String,
    },
    /// Replay recorded executions against this program's code, running no step, and report each
    /// one it would block and where (exit code 1 if one would): for CI, before a deploy. Reads
    /// the store's executions in flight and blocked (or those of --state), or the files of
    /// --journals.
    #[command(name = "replay-check")]
    ReplayCheck {
        /// A directory of exported executions (`*.json`, from `workflows export`) instead of the
        /// store.
        #[arg(long, value_name = "DIR")]
        journals: Option<std::path::PathBuf>,
        /// Only executions of this workflow (from the store).
        #[arg(long)]
        workflow: Option<String>,
        /// Only executions in this state (repeat for several; from the store). Default: every
        /// state but the finished ones.
        #[arg(long, value_parser = parse_state)]
        state: Vec<ExecutionState>,
    },
    /// Run a finished execution's workflow again, with the same input, as a new execution.
    Rerun {
        /// The finished execution's id.
        id: String,
        /// Re-run a completed execution (its steps' side effects happen again).
        #[arg(long)]
        force: bool,
    },
    /// Revert executions that completed, failed, paused or are blocked: the compensations of their
    /// completed steps run here, in reverse order, and each ends `compensated`. One execution by
    /// id, or every one a filter selects (it says how many first, then touches exactly those).
    Compensate {
        /// The execution's id (or select several with --workflow / --state).
        #[arg(required_unless_present_any = ["workflow", "state"], conflicts_with_all = ["workflow", "state"])]
        id: Option<String>,
        /// Every execution of this workflow (with --state: in one of those states).
        #[arg(long)]
        workflow: Option<String>,
        /// Every execution in this state (repeat for several): completed, failed, paused or blocked.
        #[arg(long, value_parser = parse_state)]
        state: Vec<ExecutionState>,
        /// Do not ask for a confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Run again the step that paused an execution (`on_failure = "pause"`), with a fresh
    /// attempt budget; the execution resumes here until it finishes or waits.
    #[command(name = "retry-step")]
    RetryStep {
        /// The paused execution's id.
        id: String,
        /// The step's call key, as `inspect` shows it (`charge_card#1`).
        key: String,
    },
    /// Cancel an execution: its completed steps are compensated.
    Cancel {
        /// The execution's id.
        id: String,
    },
    /// Complete an async step with its output.
    Complete {
        /// The step's completion token (`wf1.…`), as `run` and `inspect` show it.
        token: String,
        /// The step's output: JSON text, `@FILE` or `@-`.
        #[arg(long, value_name = "JSON|@FILE")]
        output: String,
    },
    /// Fail the current attempt of an async step (its retry policy applies).
    Fail {
        /// The step's completion token.
        token: String,
        /// The error message.
        #[arg(long, value_name = "MESSAGE")]
        error: String,
        /// Fail it for good: no retry.
        #[arg(long)]
        permanent: bool,
    },
    /// Send an event to an execution.
    SendEvent {
        /// The execution's id.
        id: String,
        /// The event's name.
        name: String,
        /// The event's payload: JSON text, `@FILE` or `@-`.
        #[arg(long, default_value = "null", value_name = "JSON|@FILE")]
        payload: String,
    },
    /// Delete finished executions: those past their retention, or those finished before a time.
    Purge {
        /// Delete the executions that finished more than this long ago (`30d`, `12h`),
        /// whatever their retention.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
    },
    /// List the events a subscriber's execution could not be started for (`--failed`): those
    /// tried again later and those parked; or retry or drop one.
    Events {
        /// List the events not delivered to a subscriber.
        #[arg(long)]
        failed: bool,
        #[command(subcommand)]
        action: Option<EventsCommand>,
    },
    /// List the queues: each one's limits, how many executions wait in it, how many hold its
    /// slots, how many started within its rate window, and how long its oldest has waited.
    Queues,
    /// List the scheduled workflows (`#[workflow(schedule = "...")]`): pattern and time zone,
    /// paused or not, next fire times, last run; or pause, resume, trigger or backfill one.
    Schedules {
        #[command(subcommand)]
        action: Option<ScheduleCommand>,
    },
    /// Check that everything stored reads back intact: the store's file (SQLite's own check),
    /// then every execution and journal entry against its checksum. Exits 1 naming what is
    /// damaged. The engine also runs this in the background when it opens a store that was not
    /// closed cleanly.
    Check {
        /// SQLite's thorough `integrity_check` (also checks every index) instead of `quick_check`.
        #[arg(long)]
        full: bool,
    },
    /// Run a worker: take over executions whose owner is gone, resume suspended ones when they
    /// are due, and run them until Ctrl-C (or SIGTERM); then stop gracefully: take nothing new,
    /// let running executions finish or suspend for up to `--grace`, release the rest.
    Worker {
        /// How long running executions may take to finish or suspend after Ctrl-C (a second
        /// Ctrl-C stops at once).
        #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_duration)]
        grace: std::time::Duration,
    },
}

/// How `show` draws a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// An indented outline.
    Text,
    /// A Mermaid flowchart (paste into Markdown).
    Mermaid,
    /// A Graphviz digraph (`dot -Tsvg`).
    Dot,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e}; e.g. `10s`, `2m`"))
}

fn parse_cursor(text: &str) -> Result<PageCursor, String> {
    text.parse()
}

fn parse_state(text: &str) -> Result<ExecutionState, String> {
    text.parse().map_err(|e: crate::execution::UnknownState| e.to_string())
}

/// What `workflows events` does to an undelivered event.
#[derive(Debug, Subcommand)]
pub(crate) enum EventsCommand {
    /// Try it again (a new series of tries) for its subscribers that did not get it.
    Retry {
        /// The event's id, as `workflows events --failed` lists it.
        event: String,
        /// Only for this subscribing workflow.
        #[arg(long)]
        subscriber: Option<String>,
    },
    /// Give up delivering it to its subscribers that did not get it.
    Drop {
        /// The event's id, as `workflows events --failed` lists it.
        event: String,
        /// Only for this subscribing workflow.
        #[arg(long)]
        subscriber: Option<String>,
    },
}

/// What `workflows schedules` does to one schedule.
#[derive(Debug, Subcommand)]
pub(crate) enum ScheduleCommand {
    /// Skip its ticks, in every process, until resumed.
    Pause {
        /// The scheduled workflow's name.
        name: String,
    },
    /// Run its ticks again, from the next one.
    Resume {
        /// The scheduled workflow's name.
        name: String,
    },
    /// Start a run now, outside its ticks.
    Trigger {
        /// The scheduled workflow's name.
        name: String,
    },
    /// Run its ticks from FROM to UNTIL (times, or ages such as `2d`), each once: a tick that
    /// ran already is not run again.
    Backfill {
        /// The scheduled workflow's name.
        name: String,
        /// The first tick (included): `2026-11-01T00:00:00Z`, or an age: `7d`.
        from: String,
        /// The last tick (included).
        until: String,
    },
}
