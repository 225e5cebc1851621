//! Operator actions that undo: `compensate`, by id or over a filter.

use std::io::{IsTerminal, Write};

use serde_json::json;

use super::common::{CliError, Context, EXIT_OK, EXIT_WORKFLOW_FAILED};
use super::output::{note, out, print_json};
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::journal::replay::Progress;
use crate::store::ExecutionQuery;

/// The states `compensate` reverts.
const COMPENSABLE: [ExecutionState; 4] =
    [ExecutionState::Completed, ExecutionState::Failed, ExecutionState::Paused, ExecutionState::Blocked];

/// `workflows compensate ID | --workflow W --state S [--yes]`: lists what it will touch, asks,
/// then compensates exactly those, one after the other, here.
pub(crate) async fn compensate(
    context: Context,
    id: Option<String>,
    workflow: Option<String>,
    states: Vec<ExecutionState>,
    yes: bool,
) -> Result<u8, CliError> {
    if context.client_only {
        return Err(CliError::new(
            "`compensate` runs the compensations in this process (they are the program's code): drop --client-only",
        ));
    }
    if let Some(state) = states.iter().find(|s| !COMPENSABLE.contains(s)) {
        return Err(CliError::new(format!(
            "--state {state}: only completed, failed, paused or blocked executions are compensated (cancel a \
             running or waiting one: `workflows cancel ID`)"
        )));
    }
    let store = context.existing_store().await?;
    let selected: Vec<ExecutionRecord> = match id {
        Some(id) => {
            let id = ExecutionId::from(id);
            vec![store.execution(&id).await?.ok_or_else(|| super::common::unknown_execution(&context.store, &id))?]
        }
        None => {
            let states = if states.is_empty() { COMPENSABLE.to_vec() } else { states };
            store.list_executions(&ExecutionQuery { states, workflow, ..Default::default() }).await?.records
        }
    };
    if !context.json {
        out!("{} execution{} to compensate:", selected.len(), if selected.len() == 1 { "" } else { "s" });
        for record in &selected {
            let journal = store.journal(&record.id).await?;
            let (plan, _) = Progress::from_journal(journal).compensation_plan();
            let undo: Vec<String> = plan.iter().map(|c| c.key.to_string()).collect();
            let undo = if undo.is_empty() { "nothing to undo".to_owned() } else { format!("undo {}", undo.join(", ")) };
            out!("  {} ({} v{}, {}): {undo}", record.id, record.workflow, record.version, record.state);
        }
    }
    if selected.is_empty() {
        return Ok(EXIT_OK);
    }
    if !yes && !confirmed(selected.len())? {
        note!("nothing was changed");
        return Ok(EXIT_OK);
    }
    let json = context.json;
    let (engine, _) = context.engine(false).await?;
    let mut outcomes = Vec::new();
    let mut failed = 0;
    for record in &selected {
        let error = engine.compensate(&record.id).await.err().map(|e| e.to_string());
        if error.is_some() {
            failed += 1;
        }
        if !json {
            match &error {
                None => out!("{}: compensated", record.id),
                Some(error) => out!("{}: {error}", record.id),
            }
        }
        outcomes.push(json!({ "execution": record.id, "compensated": error.is_none(), "error": error }));
    }
    engine.shutdown().await;
    if json {
        print_json(&json!({ "selected": selected.len(), "outcomes": outcomes }))?;
    }
    Ok(if failed == 0 { EXIT_OK } else { EXIT_WORKFLOW_FAILED })
}

/// Asks on the terminal; without one, says how to go on.
fn confirmed(count: usize) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::new(format!(
            "compensating {count} execution{} runs their compensations: pass --yes to go on without a terminal to \
             confirm it",
            if count == 1 { "" } else { "s" }
        )));
    }
    print!("compensate {count}? [y/N] ");
    std::io::stdout().flush().map_err(|e| CliError::new(e.to_string()))?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).map_err(|e| CliError::new(e.to_string()))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}
