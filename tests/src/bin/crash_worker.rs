//! A process for the crash tests: runs (or resumes) a workflow on a SQLite store, recording
//! every side effect in a log file outside the store, so that a test can SIGKILL it at any
//! moment and check what ran, and how often, after a restart.
//!
//! ```text
//! crash_worker DB LOG full|process start ID PLAN_JSON   # run a new execution of crash_saga
//! crash_worker DB LOG full|process start ID approval    # start approval_flow; exit once it waits
//! crash_worker DB LOG full|process start ID fan:N       # run fan_saga over N items
//! crash_worker DB LOG full|process start ID budget      # run budget_saga (a step with 3 attempts)
//! crash_worker DB LOG full|process start ID stale:Backoff|Sleep|Compensation  # run stale_saga
//! crash_worker DB LOG full|process resume ID            # take over ID after a crash
//! crash_worker DB LOG full|process complete ID TOKEN JSON  # complete an async step, then finish ID
//! ```
//! `CRASH_BLOCK=step:K` (or `comp:K`) makes the first attempt of step K (or the compensation of
//! step K) stop forever after logging `... begin`, so the test can kill it there. The process
//! prints `STATE <state>` when the execution has finished (`STATE none` if it does not exist).
//!
//! `crash_worker_v2` is the same program after a deploy that changed the `evolving` workflow.

mod common;

use common::part;
use workflows_runtime::prelude::*;

/// Version 1: parts a, b, c.
#[workflow(name = "evolving")]
async fn evolving(wf: &Workflow, _input: ()) -> Result<String, WorkflowError> {
    let a = part(wf, "a".into()).await?;
    let b = part(wf, "b".into()).await?;
    let c = part(wf, "c".into()).await?;
    Ok(format!("{a}{b}{c}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    common::main().await
}
