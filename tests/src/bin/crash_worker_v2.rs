//! `crash_worker` after a deploy that reordered the `evolving` workflow's steps. A process for the crash tests: runs (or resumes) a workflow on a SQLite store, recording
//! every side effect in a log file outside the store, so that a test can SIGKILL it at any
//! moment and check what ran, and how often, after a restart.
//!
//! ```text
//! crash_worker DB LOG full|process start ID PLAN_JSON   # run a new execution
//! crash_worker DB LOG full|process resume ID            # take over ID after a crash
//! ```
//! `CRASH_BLOCK=step:K` (or `comp:K`) makes the first attempt of step K (or the compensation of
//! step K) stop forever after logging `... begin`, so the test can kill it there. The process
//! prints `STATE <state>` when the execution has finished (`STATE none` if it does not exist).
//!
//! `crash_worker_v2` is the same program after a deploy that changed the `evolving` workflow.

mod common;

use common::part;
use workflows_runtime::prelude::*;

/// Version 2, deployed while version 1 executions were in flight: c now runs before b.
#[workflow(name = "evolving")]
async fn evolving(wf: &Workflow, _input: ()) -> Result<String, WorkflowError> {
    let a = part(wf, "a".into()).await?;
    let c = part(wf, "c".into()).await?;
    let b = part(wf, "b".into()).await?;
    Ok(format!("{a}{c}{b}"))
}

/// A second version of `versioned`, beside the first (in `common`): new executions run it,
/// those the first started go on with the first.
#[workflow(name = "versioned", version = 1)]
async fn versioned_v2(wf: &Workflow, _input: ()) -> Result<String, WorkflowError> {
    let a = part(wf, "v2-a".into()).await?;
    let b = part(wf, "v2-b".into()).await?;
    Ok(format!("{a}{b}"))
}

/// A second version of the fleet's saga, beside the first: its steps are 11 to 13, so the side-
/// effect log tells which version ran a body.
#[workflow(name = "fleet_saga", version = 1)]
async fn fleet_saga_v2(wf: &Workflow, order: common::fleet::Order) -> Result<u32, WorkflowError> {
    let mut done = 0;
    for step in 11..=13 {
        common::fleet::fleet_step(wf, order.clone(), step).await?;
        done += 1;
    }
    Ok(done)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    common::main().await
}
