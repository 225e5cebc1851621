//! `crash_worker` after a fixed deploy: `crash_worker_v2`'s `evolving` workflow (c before b)
//! behind a patch, so the executions `crash_worker` started go on with b before c, and new ones
//! take c before b. A process for the crash tests; see `crash_worker`.

mod common;

use common::part;
use workflows_runtime::prelude::*;

#[workflow(name = "evolving")]
async fn evolving(wf: &Workflow, _input: ()) -> Result<String, WorkflowError> {
    let a = part(wf, "a".into()).await?;
    if wf.patched("c-first") {
        let c = part(wf, "c".into()).await?;
        let b = part(wf, "b".into()).await?;
        Ok(format!("{a}{c}{b}"))
    } else {
        let b = part(wf, "b".into()).await?;
        let c = part(wf, "c".into()).await?;
        Ok(format!("{a}{b}{c}"))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    common::main().await
}
