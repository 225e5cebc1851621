//! Rows to records and back. A row that does not decode is a `StoreError::Corrupt` naming
//! the execution (and the step, for journal rows), never a panic.

use rusqlite::Row;
use serde_json::value::RawValue;

use super::backend;
use crate::error::Failure;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::journal::{JournalEntry, JournalEvent};
use crate::store::StoreError;
use crate::time::Timestamp;

/// The columns [`execution`] reads, in order.
pub(super) const EXECUTION_COLUMNS: &str = "id, workflow, fingerprint, version, input, state, result, failure, \
     created_at, updated_at, owner, lease_until, epoch, exclusive_key, rerun_of, cancel_requested, retain_until, \
     wake_at, wakeups, parent_id, parent_key, deadline";

/// The columns [`journal_entry`] reads, in order.
pub(super) const JOURNAL_COLUMNS: &str = "execution_id, idx, at, step_key, event";

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> Result<T, StoreError> {
    row.get(index).map_err(|e| backend("cannot read an execution row", e))
}

fn corrupt(execution: &ExecutionId, what: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { execution: execution.clone(), what: what.into(), detail: detail.to_string() }
}

fn json(execution: &ExecutionId, what: &str, text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| corrupt(execution, format!("its {what} is not valid JSON"), e))
}

/// An execution row, selected with [`EXECUTION_COLUMNS`].
pub(super) fn execution(row: &Row<'_>) -> Result<ExecutionRecord, StoreError> {
    let id = ExecutionId::from(get::<String>(row, 0)?);
    let state: String = get(row, 5)?;
    let state = state.parse::<ExecutionState>().map_err(|e| corrupt(&id, "its state", e))?;
    let input = json(&id, "input", get(row, 4)?)?;
    let result = get::<Option<String>>(row, 6)?.map(|text| json(&id, "result", text)).transpose()?;
    let failure = get::<Option<String>>(row, 7)?
        .map(|text| serde_json::from_str::<Failure>(&text).map_err(|e| corrupt(&id, "its failure record", e)))
        .transpose()?;
    let version: i64 = get(row, 3)?;
    let epoch: i64 = get(row, 12)?;
    Ok(ExecutionRecord {
        workflow: get(row, 1)?,
        fingerprint: get(row, 2)?,
        version: u32::try_from(version).map_err(|e| corrupt(&id, "its version", e))?,
        input,
        state,
        result,
        failure,
        created_at: Timestamp::from_micros(get(row, 8)?),
        updated_at: Timestamp::from_micros(get(row, 9)?),
        owner: get(row, 10)?,
        lease_until: get::<Option<i64>>(row, 11)?.map(Timestamp::from_micros),
        epoch: u64::try_from(epoch).map_err(|e| corrupt(&id, "its epoch", e))?,
        exclusive_key: get(row, 13)?,
        rerun_of: get::<Option<String>>(row, 14)?.map(ExecutionId::from),
        cancel_requested: get::<i64>(row, 15)? != 0,
        retain_until: get::<Option<i64>>(row, 16)?.map(Timestamp::from_micros),
        wake_at: get::<Option<i64>>(row, 17)?.map(Timestamp::from_micros),
        wakeups: get::<i64>(row, 18)? as u64,
        parent: match (get::<Option<String>>(row, 19)?, get::<Option<String>>(row, 20)?) {
            (Some(parent), Some(key)) => Some((ExecutionId::from(parent), key)),
            _ => None,
        },
        deadline: get::<Option<i64>>(row, 21)?.map(Timestamp::from_micros),
        id,
    })
}

/// A journal row, selected with [`JOURNAL_COLUMNS`].
pub(super) fn journal_entry(row: &Row<'_>) -> Result<JournalEntry, StoreError> {
    let id = ExecutionId::from(get::<String>(row, 0)?);
    let index: i64 = get(row, 1)?;
    let step_key: String = get(row, 3)?;
    let text: String = get(row, 4)?;
    let event = serde_json::from_str::<JournalEvent>(&text)
        .map_err(|e| corrupt(&id, format!("journal entry {index} (step `{step_key}`)"), e))?;
    Ok(JournalEntry {
        index: u64::try_from(index).map_err(|e| corrupt(&id, format!("journal entry {index}"), e))?,
        at: Timestamp::from_micros(get(row, 2)?),
        event,
    })
}

/// A journal event as stored: its JSON text.
pub(super) fn event_json(event: &JournalEvent) -> Result<String, StoreError> {
    serde_json::to_string(event).map_err(|e| StoreError::Backend {
        context: "cannot encode a journal event as JSON".into(),
        source: Box::new(e),
    })
}

/// A failure record as stored.
pub(super) fn failure_json(failure: &Failure) -> Result<String, StoreError> {
    serde_json::to_string(failure).map_err(|e| StoreError::Backend {
        context: "cannot encode a failure record as JSON".into(),
        source: Box::new(e),
    })
}

/// An inbox row: position, payload, failure, at, attempt.
pub(super) fn inbox_entry(row: &Row<'_>, execution: &ExecutionId) -> Result<crate::store::InboxEntry, StoreError> {
    let position: i64 = get(row, 0)?;
    let payload = get::<Option<String>>(row, 1)?.map(|text| json(execution, "inbox payload", text)).transpose()?;
    let failure = get::<Option<String>>(row, 2)?
        .map(|text| serde_json::from_str::<Failure>(&text).map_err(|e| corrupt(execution, "an inbox failure", e)))
        .transpose()?;
    Ok(crate::store::InboxEntry {
        position: position as u64,
        payload,
        failure,
        at: Timestamp::from_micros(get(row, 3)?),
        attempt: get::<Option<i64>>(row, 4)?.map(|a| a as u32),
    })
}
