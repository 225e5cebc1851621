//! `executions`, `inspect` and `purge`: reading and deleting what the store holds. These work
//! on any store, whatever workflows this program links.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::common::{CliError, Context, EXIT_OK, stop_signal};
use super::output::{Table, duration, millis, note, out, print_json, time_arg, truncate};
use super::pending::{Pending, pending_waits};
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::journal::{CallKey, JournalEntry, JournalEvent};
use crate::store::{ExecutionList, ExecutionQuery, PageCursor};
use crate::time::Timestamp;

/// How much of an output or input `inspect` shows without `--full`.
const SHOWN: usize = 80;

/// `workflows executions`.
pub(crate) async fn list(
    context: &Context,
    states: Vec<ExecutionState>,
    workflow: Option<String>,
    since: Option<String>,
    limit: usize,
    page: usize,
    after: Option<PageCursor>,
) -> Result<u8, CliError> {
    let store = context.existing_store().await?;
    let since = since.map(|s| time_arg("--since", &s)).transpose()?;
    let (limit, page) = (limit.max(1), page.max(1));
    // One more than a page tells whether there is a next one.
    let offset = if after.is_some() { 0 } else { (page - 1) * limit };
    let query = ExecutionQuery { states, workflow, since, before: None, after, limit: Some(limit + 1), offset };
    let ExecutionList { mut records, damaged } = store.list_executions(&query).await?;
    let more = records.len() + damaged.len() > limit;
    if more {
        records.truncate(limit.saturating_sub(damaged.len()));
    }
    // Where the next page starts (a damaged row, listed apart, is not a place to start from).
    let next = records.last().filter(|_| more).map(PageCursor::after);
    if context.json {
        let executions: Vec<Value> = records.iter().map(summary_json).collect();
        let damaged: Vec<Value> = damaged.iter().map(|d| json!({ "id": d.id, "problem": d.problem })).collect();
        let next = next.as_ref().map(ToString::to_string);
        let listed = json!({
            "executions": executions, "damaged": damaged, "page": page, "limit": limit, "more": more, "next": next
        });
        print_json(&listed)?;
        return Ok(EXIT_OK);
    }
    // Damaged rows never hide the others: each is named, and the rest is listed.
    for row in &damaged {
        note!("warning: execution {} cannot be decoded ({}); the other executions are listed", row.id, row.problem);
    }
    if records.is_empty() {
        out!("no executions{}", if page > 1 { " on this page" } else { " match" });
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(&["ID", "WORKFLOW", "STATE", "CREATED", "TOOK"]);
    for record in &records {
        let took = record.state.is_finished().then(|| duration(record.updated_at.duration_since(record.created_at)));
        table.row(vec![
            record.id.to_string(),
            record.workflow.clone(),
            record.state.to_string(),
            record.created_at.to_string(),
            took.unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print();
    if let Some(next) = next {
        out!("(more: --after {next})");
    }
    Ok(EXIT_OK)
}

/// An execution in lists: what it is and how it ended.
fn summary_json(record: &ExecutionRecord) -> Value {
    json!({
        "id": record.id,
        "workflow": record.workflow,
        "state": record.state,
        "created_at": record.created_at.to_string(),
        "updated_at": record.updated_at.to_string(),
        "duration_ms": record.state.is_finished().then(|| millis(record.updated_at.duration_since(record.created_at))),
        "parent": record.parent.as_ref().map(|(id, _)| id),
        "rerun_of": record.rerun_of,
        "failure": record.failure,
    })
}

/// `workflows inspect ID`.
pub(crate) async fn inspect(context: &Context, id: &str, full: bool) -> Result<u8, CliError> {
    let store = context.existing_store().await?;
    let id = ExecutionId::from(id);
    let record = store.execution(&id).await?.ok_or_else(|| super::common::unknown_execution(&context.store, &id))?;
    let journal = store.journal(&id).await?;
    let tokens = crate::engine::token::TokenKey::new(store.token_key().await?);
    let token = |key: &CallKey| tokens.issue(&record.id, key);
    let timeline = timeline(&record, &journal, &token);
    let pending = pending_waits(&record, &journal, &token);
    if context.json {
        let mut execution = summary_json(&record);
        let extra = json!({
            "input": record.input,
            "result": record.result,
            "fingerprint": record.fingerprint,
            "version": record.version,
            "owner": record.owner,
            "exclusive_key": record.exclusive_key,
            "queue": record.queue,
            "cancel_requested": record.cancel_requested,
            "wake_at": record.wake_at.map(|t| t.to_string()),
            "blocked_by": record.blocked_by,
        });
        if let (Value::Object(execution), Value::Object(extra)) = (&mut execution, extra) {
            execution.extend(extra);
        }
        let rows: Vec<Value> = timeline.iter().map(Row::to_json).collect();
        let waiting: Vec<Value> = pending.iter().map(Pending::to_json).collect();
        print_json(&json!({ "execution": execution, "timeline": rows, "waiting_for": waiting, "journal": journal }))?;
        return Ok(EXIT_OK);
    }
    let shown = |text: &str| if full { text.to_owned() } else { truncate(text, SHOWN) };
    out!("execution {} (workflow {})", record.id, record.workflow);
    out!("  state    {}", record.state);
    let took = if record.state.is_finished() {
        format!("  (took {})", duration(record.updated_at.duration_since(record.created_at)))
    } else {
        String::new()
    };
    out!("  created  {}   updated {}{took}", record.created_at, record.updated_at);
    if let Some((parent, key)) = &record.parent {
        out!("  parent   {parent} (as {key})");
    }
    if let Some(queue) = &record.queue {
        out!("  queue    {queue}");
    }
    if let Some(original) = &record.rerun_of {
        out!("  re-runs  {original}");
    }
    out!("  input    {}", shown(record.input.get()));
    if let Some(result) = &record.result {
        out!("  result   {}", shown(result.get()));
    }
    if let Some(failure) = &record.failure {
        out!("  failure  {failure}");
    }
    out!();
    if timeline.is_empty() {
        out!("  (no steps ran yet)");
    } else {
        let mut table = Table::new(&["  +TIME", "EVENT", "STEP", "ATTEMPT", "STARTED", "TOOK", "PROCESS", "DETAIL"]);
        let since_created = |at: Timestamp| format!("+{}", duration(at.duration_since(record.created_at)));
        for row in &timeline {
            table.row(vec![
                format!("  {}", since_created(row.at)),
                row.event.replace('_', " "),
                row.key.clone(),
                row.attempt.map_or(String::new(), |a| a.to_string()),
                row.started.map_or(String::new(), since_created),
                row.took.map_or(String::new(), duration),
                row.by.as_deref().unwrap_or_default().to_owned(),
                row.detail.as_deref().map(shown).unwrap_or_default(),
            ]);
        }
        table.print();
    }
    for wait in &pending {
        out!("\n{}", wait.hint(&record.id));
    }
    if record.state.is_finished() && record.state != ExecutionState::Completed {
        out!("\nrun it again with the same input: workflows rerun {}", record.id);
    }
    if record.state == ExecutionState::Paused {
        let key = record.failure.as_ref().and_then(|f| f.key.clone()).unwrap_or_else(|| "KEY".to_owned());
        out!(
            "\npaused: its step {key} failed for good. Run it again with a fresh attempt budget: workflows retry-step \
             {} {key}; or give up on it: workflows compensate {}",
            record.id,
            record.id
        );
    }
    if record.state == ExecutionState::Blocked {
        out!(
            "\nblocked: the code of build{} {} cannot replay its journal (see the failure above). Deploy code that \
             replays it (keep the old step sequence, or branch with `wf.patched(..)`): a process of another build \
             takes it over by itself. Or give up on it: workflows cancel {} (compensates its completed steps)",
            if record.blocked_by.len() == 1 { "" } else { "s" },
            record.blocked_by.join(", "),
            record.id
        );
    }
    Ok(EXIT_OK)
}

/// `workflows watch ID`: the timeline as it grows, from the store, so it follows executions
/// driven by any process.
pub(crate) async fn watch(context: &Context, id: &str, every: std::time::Duration) -> Result<u8, CliError> {
    let store = context.existing_store().await?;
    let id = ExecutionId::from(id);
    let mut record =
        store.execution(&id).await?.ok_or_else(|| super::common::unknown_execution(&context.store, &id))?;
    if !context.json {
        out!(
            "watching execution {} (workflow {}), {}; Ctrl-C stops watching",
            record.id,
            record.workflow,
            record.state
        );
    }
    let mut shown = 0;
    let mut state = record.state;
    let mut stop = std::pin::pin!(stop_signal());
    loop {
        // The journal before the record: a finished record then has its whole journal here.
        let journal = store.journal(&id).await?;
        record = store.execution(&id).await?.ok_or_else(|| super::common::unknown_execution(&context.store, &id))?;
        let tokens = crate::engine::token::TokenKey::new(store.token_key().await?);
        let rows = timeline(&record, &journal, &|key: &CallKey| tokens.issue(&record.id, key));
        for row in rows.iter().skip(shown) {
            if context.json {
                out!("{}", row.to_json());
            } else {
                let attempt = row.attempt.map_or(String::new(), |a| format!(" (attempt {a})"));
                let took = row.took.map_or(String::new(), |t| format!(" in {}", duration(t)));
                let detail = row.detail.as_deref().map_or(String::new(), |d| format!(": {}", truncate(d, SHOWN)));
                let at = duration(row.at.duration_since(record.created_at));
                out!("+{at}  {} {}{attempt}{took}{detail}", row.key, row.event.replace('_', " "));
            }
        }
        shown = rows.len();
        let changed = record.state != state;
        state = record.state;
        // Each change of state on a line of its own, and the final state last, even for an
        // execution that finished before the watch could see it change.
        if (changed || state.is_finished()) && !context.json {
            out!("{state}");
        }
        if state.is_finished() {
            if context.json {
                out!("{}", summary_json(&record));
            } else if let Some(failure) = &record.failure {
                out!("failure: {failure}");
            }
            return Ok(if state == ExecutionState::Completed { EXIT_OK } else { super::common::EXIT_WORKFLOW_FAILED });
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = &mut stop => return Ok(EXIT_OK),
        }
    }
}

/// One line of an execution's timeline.
struct Row {
    index: u64,
    at: Timestamp,
    event: &'static str,
    key: String,
    attempt: Option<u32>,
    /// When the attempt began (a step's rows).
    started: Option<Timestamp>,
    took: Option<std::time::Duration>,
    /// The process that ran the attempt (`host:pid`), where the journal recorded it.
    by: Option<std::sync::Arc<str>>,
    /// The output, error, or what it waits for.
    detail: Option<String>,
    /// The same, as JSON.
    fields: Value,
}

impl Row {
    fn to_json(&self) -> Value {
        let mut row = json!({
            "index": self.index,
            "at": self.at.to_string(),
            "event": self.event,
            "key": self.key,
            "attempt": self.attempt,
            "started_at": self.started.map(|t| t.to_string()),
            "duration_ms": self.took.map(millis),
            "by": self.by.as_deref(),
        });
        if let (Value::Object(row), Value::Object(fields)) = (&mut row, &self.fields) {
            row.extend(fields.clone());
        }
        row
    }
}

/// The rows of an execution's timeline; `token` gives a waiting step's completion token.
fn timeline(record: &ExecutionRecord, journal: &[JournalEntry], token: &dyn Fn(&CallKey) -> String) -> Vec<Row> {
    let mut compensation_started: HashMap<String, Timestamp> = HashMap::new();
    let mut awaited: HashMap<String, Timestamp> = HashMap::new();
    let interrupted = interrupted_attempts(record, journal);
    journal
        .iter()
        .map(|entry| {
            let (_, key) = entry.event.step();
            let key_text = key.to_string();
            let since = |started: Timestamp| Some(entry.at.duration_since(started));
            let (attempt, took, detail, fields) = match &entry.event {
                JournalEvent::StepStarted { attempt, .. } if interrupted.contains(&entry.index) => {
                    let detail = "interrupted: the process running it stopped (or lost its lease) before it \
                                  finished; its outcome is unknown";
                    (Some(*attempt), None, Some(detail.to_owned()), json!({ "interrupted": true }))
                }
                JournalEvent::StepStarted { attempt, .. } => (Some(*attempt), None, None, json!({})),
                JournalEvent::StepCompleted { attempt, started_at, output, .. } => {
                    (Some(*attempt), since(*started_at), Some(output.get().to_owned()), json!({ "output": output }))
                }
                JournalEvent::StepFailed { attempt, started_at, error, retry_at, .. } => {
                    let retry = retry_at.map(|at| format!(" (retry at {at})")).unwrap_or_default();
                    let detail = format!("{}{retry}", error.message);
                    let fields = json!({ "error": error, "retry_at": retry_at.map(|t| t.to_string()) });
                    (Some(*attempt), since(*started_at), Some(detail), fields)
                }
                JournalEvent::StepSkipped { attempt, error, .. } => {
                    (Some(*attempt), None, Some(format!("skipped: {}", error.message)), json!({ "error": error }))
                }
                JournalEvent::StepWaiting { attempt, deadline, .. } => {
                    let token = token(key);
                    let until = deadline.map(|d| format!(" until {d}")).unwrap_or_default();
                    let detail = format!("token {token}; waits for its completion{until}");
                    let fields = json!({ "token": token, "deadline": deadline.map(|t| t.to_string()) });
                    (Some(*attempt), None, Some(detail), fields)
                }
                JournalEvent::TimerStarted { wake_at, .. } => {
                    (None, None, Some(format!("until {wake_at}")), json!({ "wake_at": wake_at.to_string() }))
                }
                JournalEvent::Patched { .. } => (None, None, Some("took the patched branch".to_owned()), json!({})),
                JournalEvent::StepRetried { by, .. } => {
                    let who = by.as_deref().map(|b| format!(" (from {b})")).unwrap_or_default();
                    (None, None, Some(format!("retried by an operator{who}: a fresh attempt budget")), json!({}))
                }
                JournalEvent::EventAwaited { deadline, .. } => {
                    awaited.insert(key_text.clone(), entry.at);
                    let until = deadline.map(|d| format!(" until {d}")).unwrap_or_default();
                    (None, None, Some(format!("waits{until}")), json!({ "deadline": deadline.map(|t| t.to_string()) }))
                }
                JournalEvent::EventReceived { payload, .. } => {
                    let took = awaited.get(&key_text).and_then(|at| since(*at));
                    (None, took, Some(payload.get().to_owned()), json!({ "payload": payload }))
                }
                JournalEvent::ChildStarted { child, .. } => {
                    (None, None, Some(format!("execution {child}")), json!({ "child": child }))
                }
                JournalEvent::ChildCompleted { output, .. } => {
                    (None, None, Some(output.get().to_owned()), json!({ "output": output }))
                }
                JournalEvent::ChildFailed { error, .. } => {
                    (None, None, Some(error.to_string()), json!({ "error": error }))
                }
                JournalEvent::CompensationStarted { .. } => {
                    compensation_started.insert(key_text.clone(), entry.at);
                    (None, None, None, json!({}))
                }
                JournalEvent::CompensationCompleted { .. } => {
                    let took = compensation_started.get(&key_text).and_then(|at| since(*at));
                    (None, took, None, json!({}))
                }
                JournalEvent::CompensationFailed { error, .. } => {
                    let took = compensation_started.get(&key_text).and_then(|at| since(*at));
                    (None, took, Some(error.message.clone()), json!({ "error": error }))
                }
                JournalEvent::TimerFired { .. } | JournalEvent::WaitTimedOut { .. } => (None, None, None, json!({})),
            };
            let (started, by) = match &entry.event {
                JournalEvent::StepStarted { by, .. } => (Some(entry.at), by.clone()),
                JournalEvent::StepCompleted { started_at, by, .. }
                | JournalEvent::StepFailed { started_at, by, .. }
                | JournalEvent::StepWaiting { started_at, by, .. } => (Some(*started_at), by.clone()),
                _ => (None, None),
            };
            Row {
                index: entry.index,
                at: entry.at,
                event: entry.event.kind(),
                key: key_text,
                attempt,
                started,
                took,
                by,
                detail,
                fields,
            }
        })
        .collect()
}

/// The journal indexes of the `step_started` entries whose attempt was interrupted: no outcome
/// of that attempt was journaled, and the step went on after it (another attempt, or its final
/// outcome), or the execution finished. The latest attempt of a running execution is under way,
/// not interrupted.
fn interrupted_attempts(record: &ExecutionRecord, journal: &[JournalEntry]) -> std::collections::HashSet<u64> {
    let step_entry = |event: &JournalEvent| match event {
        JournalEvent::StepStarted { attempt, .. }
        | JournalEvent::StepCompleted { attempt, .. }
        | JournalEvent::StepFailed { attempt, .. }
        | JournalEvent::StepSkipped { attempt, .. }
        | JournalEvent::StepWaiting { attempt, .. } => Some(*attempt),
        _ => None,
    };
    let mut interrupted = std::collections::HashSet::new();
    for (position, entry) in journal.iter().enumerate() {
        let JournalEvent::StepStarted { key, attempt, .. } = &entry.event else { continue };
        let later = journal[position + 1..].iter().filter(|e| e.event.step().1 == key);
        let mut went_on = false;
        let mut ended = false;
        for next in later {
            match step_entry(&next.event) {
                Some(a) if a == *attempt && !matches!(next.event, JournalEvent::StepStarted { .. }) => ended = true,
                Some(a) if a > *attempt => went_on = true,
                _ => {}
            }
        }
        if !ended && (went_on || record.state.is_finished()) {
            interrupted.insert(entry.index);
        }
    }
    interrupted
}

/// `workflows purge`.
pub(crate) async fn purge(context: Context, older_than: Option<String>) -> Result<u8, CliError> {
    let before = older_than.map(|age| time_arg("--older-than", &age)).transpose()?;
    let json = context.json;
    let (engine, _) = context.engine(false).await?;
    let purged = match before {
        Some(before) => engine.purge_finished_before(before).await?,
        None => engine.purge_due().await?,
    };
    engine.shutdown().await;
    if json {
        print_json(&json!({ "purged": purged }))?;
    } else {
        let which = if before.is_some() { "finished before the given age" } else { "past their retention" };
        out!("purged {purged} finished execution{} {which}", if purged == 1 { "" } else { "s" });
    }
    Ok(EXIT_OK)
}

/// `workflows check [--full]`.
pub(crate) async fn check(context: &Context, full: bool) -> Result<u8, CliError> {
    let store = context.existing_store().await?;
    let report = store.check(full).await?;
    if context.json {
        let damaged: Vec<Value> = report.damaged.iter().map(|d| json!({ "id": d.id, "problem": d.problem })).collect();
        print_json(&json!({
            "clean": report.is_clean(),
            "store_check": report.store_check,
            "store_problems": report.store_problems,
            "damaged": damaged,
            "executions": report.executions,
            "journal_entries": report.journal_entries,
        }))?;
    } else {
        match &report.store_check {
            Some(which) if report.store_problems.is_empty() => out!("store file: ok ({which})"),
            Some(which) => {
                out!("store file: damaged ({which}):");
                for problem in &report.store_problems {
                    out!("  {problem}");
                }
            }
            None => {
                let describe = store.describe();
                let why = if describe.starts_with("postgres") { " (PostgreSQL checks its own pages)" } else { "" };
                out!("store {describe}: no file of its own to check{why}; every row is read back below");
            }
        }
        for damaged in &report.damaged {
            out!("damaged: execution {}: {}", damaged.id, damaged.problem);
        }
        out!(
            "checked {} executions and {} journal entries: {}",
            report.executions,
            report.journal_entries,
            if report.is_clean() { "no damage found".to_owned() } else { format!("{} damaged", report.damaged.len()) }
        );
        if !report.is_clean() {
            note!(
                "damaged executions fail when they are read (nothing damaged is replayed); restore the store from a \
                 backup, or re-run them (`workflows rerun ID`) once their data is repaired"
            );
        }
    }
    Ok(if report.is_clean() { EXIT_OK } else { super::common::EXIT_ERROR })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::CallKey;

    fn entry(index: u64, event: JournalEvent) -> JournalEntry {
        JournalEntry { index, at: Timestamp::now(), event }
    }

    fn started(index: u64, attempt: u32) -> JournalEntry {
        entry(
            index,
            JournalEvent::StepStarted { seq: 0, key: CallKey::new("charge", 1), attempt, input_hash: 0, by: None },
        )
    }

    fn record(state: ExecutionState) -> ExecutionRecord {
        ExecutionRecord {
            id: "e".into(),
            workflow: "w".into(),
            fingerprint: String::new(),
            version: 0,
            input: crate::journal::replay::null(),
            state,
            result: None,
            failure: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
            owner: None,
            lease_until: None,
            epoch: 1,
            exclusive_key: None,
            queue: None,
            rerun_of: None,
            cancel_requested: false,
            retain_until: None,
            wake_at: None,
            wakeups: 0,
            parent: None,
            deadline: None,
            blocked_by: Vec::new(),
        }
    }

    #[test]
    fn an_attempt_that_a_crash_interrupted_shows_in_the_timeline() {
        let completed = JournalEvent::StepCompleted {
            seq: 0,
            key: CallKey::new("charge", 1),
            attempt: 2,
            input_hash: 0,
            started_at: Timestamp::now(),
            output: crate::journal::replay::null(),
            compensation: None,
            by: None,
        };
        let journal = vec![started(0, 1), started(1, 2), entry(2, completed)];
        let rows = timeline(&record(ExecutionState::Completed), &journal, &|k| k.to_string());
        assert_eq!(rows[0].fields["interrupted"], true);
        assert!(rows[0].detail.as_deref().unwrap().starts_with("interrupted: the process running it stopped"));
        assert!(rows[1].detail.is_none(), "attempt 2 ended with its completion");
        assert_eq!(rows[0].to_json()["interrupted"], true);

        // The latest attempt of a running execution is under way, not interrupted; once the
        // execution ended without its outcome, it was.
        let journal = vec![started(0, 1)];
        assert!(timeline(&record(ExecutionState::Running), &journal, &|k| k.to_string())[0].detail.is_none());
        let rows = timeline(&record(ExecutionState::Failed), &journal, &|k| k.to_string());
        assert_eq!(rows[0].fields["interrupted"], true);
    }
}
