//! `workflows schedules`: the scheduled workflows, and pausing, resuming, triggering and
//! backfilling them.

use serde_json::{Value, json};

use super::args::ScheduleCommand;
use super::common::{CliError, Context, EXIT_OK};
use super::output::{Table, note, out, print_json, time_arg};
use crate::schedule::CatchUp;

/// `workflows schedules [pause|resume|trigger|backfill ...]`.
pub(crate) async fn run(context: Context, command: Option<ScheduleCommand>) -> Result<u8, CliError> {
    let store = context.store.clone();
    let client_only = context.client_only;
    let (engine, json) = context.engine(false).await?;
    let failed = |error: crate::RunError| super::common::run_error(&store, error);
    let outcome = match command {
        None => list(&engine, json).await,
        Some(ScheduleCommand::Pause { name }) => {
            engine.pause_schedule(&name).await.map_err(failed)?;
            said(json, &name, "paused")
        }
        Some(ScheduleCommand::Resume { name }) => {
            engine.resume_schedule(&name).await.map_err(failed)?;
            said(json, &name, "resumed")
        }
        Some(ScheduleCommand::Trigger { name }) => {
            let events = engine.subscribe();
            let handle = engine.trigger_schedule(&name).await.map_err(failed)?;
            let id = handle.id().clone();
            if client_only {
                return super::run::left_to_workers(engine, &id, "started", json).await;
            }
            note!("started {id}; running it here until it finishes or waits (--client-only leaves it to the workers)");
            let outcome = super::run::watch(&engine, &id, events, Some(handle)).await;
            engine.shutdown().await;
            return super::run::report(&engine, outcome?, json).await;
        }
        Some(ScheduleCommand::Backfill { name, from, until }) => {
            let (from, until) = (time_arg("FROM", &from)?, time_arg("UNTIL", &until)?);
            let ids = engine.backfill_schedule(&name, from, until).await.map_err(failed)?;
            // Run here (unless left to the workers): each to its end, or until it waits.
            if !client_only {
                while engine.running() > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
            let mut states = Vec::with_capacity(ids.len());
            for id in &ids {
                let state = match client_only {
                    true => None,
                    false => engine.execution(id).await?.map(|record| record.state),
                };
                states.push(state);
            }
            let place = if client_only { "left to the workers" } else { "run here" };
            if json {
                let runs: Vec<Value> =
                    ids.iter().zip(&states).map(|(id, state)| json!({ "id": id, "state": state })).collect();
                print_json(
                    &json!({ "schedule": name, "executions": ids, "runs": runs, "left_to_workers": client_only }),
                )
            } else {
                out!(
                    "{} ticks from {from} to {until}, each run once (ticks that ran before are not run again), {place}:",
                    ids.len()
                );
                for (id, state) in ids.iter().zip(&states) {
                    match state {
                        Some(state) => out!("  {id}  {state}"),
                        None => out!("  {id}"),
                    }
                }
                Ok(())
            }
        }
    };
    engine.shutdown().await;
    outcome.map(|()| EXIT_OK)
}

fn said(json: bool, name: &str, what: &str) -> Result<(), CliError> {
    if json {
        print_json(&json!({ "schedule": name, "state": what }))
    } else {
        out!("schedule `{name}` {what}");
        Ok(())
    }
}

async fn list(engine: &crate::Engine, json: bool) -> Result<(), CliError> {
    let schedules = engine.schedules().await.map_err(|e| CliError::new(e.to_string()))?;
    let unknown = engine.unknown_schedules().await.map_err(|e| CliError::new(e.to_string()))?;
    if json {
        let listed: Vec<Value> = schedules
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "pattern": s.schedule.pattern(),
                    "tz": s.schedule.zone(),
                    "overlap": s.overlap.as_str(),
                    "catch_up_ms": match s.catch_up { CatchUp::Latest => None, CatchUp::Within(w) => Some(w.as_millis() as u64) },
                    "paused": s.paused,
                    "next": s.next.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "last_run": s.last_run.as_ref().map(|r| json!({ "id": r.id, "state": r.state })),
                    "missed": s.missed,
                    "last_missed": s.last_missed.map(|t| t.to_string()),
                })
            })
            .collect();
        let unknown: Vec<Value> = unknown
            .iter()
            .map(|u| {
                json!({
                    "name": u.name,
                    "since": u.since.to_string(),
                    "handled": u.handled.to_string(),
                    "paused": u.paused,
                    "last_run": u.last_run,
                })
            })
            .collect();
        return print_json(&json!({ "schedules": listed, "unknown": unknown }));
    }
    for u in &unknown {
        note!(
            "schedule `{}` is stored but no workflow of this program has it (removed or renamed, or only another \
             program links it): nothing here runs its ticks (last run: {})",
            u.name,
            u.last_run.as_ref().map_or("none", |id| id.as_str())
        );
    }
    if schedules.is_empty() {
        out!("no scheduled workflows: give one `#[workflow(schedule = \"0 * * * *\")]`");
        return Ok(());
    }
    let mut table = Table::new(&["SCHEDULE", "PATTERN", "STATE", "NEXT", "LAST RUN", "MISSED"]);
    for s in &schedules {
        let next = s.next.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let last = s.last_run.as_ref().map_or_else(|| "-".to_owned(), |r| format!("{} ({})", r.id, r.state));
        let state = if s.paused { "paused" } else { "active" };
        let missed = match s.last_missed {
            Some(at) => format!("{} (latest {at})", s.missed),
            None => "0".to_owned(),
        };
        table.row(vec![s.name.clone(), s.schedule.to_string(), state.to_owned(), next, last, missed]);
    }
    table.print();
    Ok(())
}
