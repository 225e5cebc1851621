//! `export` and `replay-check`: recorded journals as files, and replayed against this program's
//! code before a deploy.

use std::path::PathBuf;

use serde_json::json;

use super::common::{CliError, Context, EXIT_ERROR, EXIT_OK};
use super::output::{Table, out, print_json};
use crate::engine::{ExportedExecution, ReplayVerdict, replay_check};
use crate::execution::{ExecutionId, ExecutionState};
use crate::store::{ExecutionQuery, PageCursor};

/// How many executions `replay-check` reads from the store at a time.
const PAGE: usize = 500;

/// `workflows export ID`: the execution's record and journal as JSON, for `replay-check
/// --journals` (or a repository's tests).
pub(crate) async fn export(context: &Context, id: &str) -> Result<u8, CliError> {
    let store = context.existing_store().await?;
    let id = ExecutionId::from(id);
    let execution = store.execution(&id).await?.ok_or_else(|| super::common::unknown_execution(&context.store, &id))?;
    let journal = store.journal(&id).await?;
    print_json(&ExportedExecution { execution, journal })?;
    Ok(EXIT_OK)
}

/// `workflows replay-check [--journals DIR | --store URL] [--workflow W] [--state S]...`:
/// replays each recorded execution against this program's code, runs nothing, and says which
/// it would block, where; exit code 1 if one would.
pub(crate) async fn replay_check_command(
    context: &Context,
    journals: Option<PathBuf>,
    workflow: Option<String>,
    states: Vec<ExecutionState>,
) -> Result<u8, CliError> {
    let executions = match journals {
        Some(dir) => read_dir(&dir)?,
        None => from_store(context, workflow, states).await?,
    };
    let checked = executions.len();
    let reports = replay_check(executions).await.map_err(|e| CliError::new(e.to_string()))?;
    let diverging = reports.iter().filter(|r| r.diverges()).count();
    if context.json {
        let rows: Vec<_> = reports
            .iter()
            .map(|r| {
                let (verdict, failure) = match &r.verdict {
                    ReplayVerdict::Replays => ("replays", None),
                    ReplayVerdict::Diverges(failure) => ("diverges", Some(failure.clone())),
                    ReplayVerdict::NotLinked => ("not_linked", None),
                };
                json!({
                    "execution": r.execution, "workflow": r.workflow, "version": r.version, "state": r.state,
                    "verdict": verdict, "failure": failure,
                })
            })
            .collect();
        print_json(&json!({ "checked": checked, "diverging": diverging, "executions": rows }))?;
    } else {
        let mut table = Table::new(&["EXECUTION", "WORKFLOW", "STATE", "REPLAY"]);
        for report in &reports {
            let verdict = match &report.verdict {
                ReplayVerdict::Replays => "replays".to_owned(),
                ReplayVerdict::Diverges(failure) => format!("WOULD BLOCK: {}", failure.message),
                ReplayVerdict::NotLinked => {
                    format!("version {} not linked here: left to a build that has it", report.version)
                }
            };
            table.row(vec![
                report.execution.to_string(),
                format!("{} v{}", report.workflow, report.version),
                report.state.to_string(),
                verdict,
            ]);
        }
        table.print();
        out!(
            "\n{checked} execution{} replayed, no step run: {}",
            if checked == 1 { "" } else { "s" },
            if diverging == 0 {
                "this code replays every one".to_owned()
            } else {
                format!(
                    "{diverging} would be blocked by this code (keep their step sequence, or branch with `wf.patched(..)`)"
                )
            }
        );
    }
    Ok(if diverging == 0 { EXIT_OK } else { EXIT_ERROR })
}

/// The `*.json` files of `dir`, each an exported execution (`workflows export`), by name.
fn read_dir(dir: &std::path::Path) -> Result<Vec<ExportedExecution>, CliError> {
    ExportedExecution::load(dir).map_err(|e| CliError::new(e.to_string()))
}

async fn from_store(
    context: &Context,
    workflow: Option<String>,
    states: Vec<ExecutionState>,
) -> Result<Vec<ExportedExecution>, CliError> {
    let store = context.existing_store().await?;
    let states =
        if states.is_empty() { ExecutionState::ALL.into_iter().filter(|s| !s.is_finished()).collect() } else { states };
    let mut after: Option<PageCursor> = None;
    let mut executions = Vec::new();
    loop {
        let query = ExecutionQuery {
            states: states.clone(),
            workflow: workflow.clone(),
            after: after.clone(),
            limit: Some(PAGE),
            ..Default::default()
        };
        let page = store.list_executions(&query).await?.records;
        let full = page.len() == PAGE;
        after = page.last().map(PageCursor::after);
        for execution in page {
            let journal = store.journal(&execution.id).await?;
            executions.push(ExportedExecution { execution, journal });
        }
        if !full {
            return Ok(executions);
        }
    }
}
