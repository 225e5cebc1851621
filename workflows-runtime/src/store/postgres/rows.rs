//! PostgreSQL rows to records. A value that does not decode (not JSON, a state this build does
//! not know, out of range) is a `StoreError::Corrupt` naming the execution and the column,
//! never a panic; PostgreSQL checks its own pages, so rows carry no checksums here.

use serde_json::value::RawValue;
use tokio_postgres::Row;

use super::error::backend;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::Failure;
use crate::journal::{JournalEntry, JournalEvent};
use crate::store::{InboxEntry, StoreError};
use crate::time::Timestamp;

/// The columns [`execution`] reads, in order.
pub(super) const EXECUTION_COLUMNS: &str = "id, workflow, fingerprint, version, input, state, result, failure, \
     created_at, updated_at, owner, lease_until, epoch, exclusive_key, rerun_of, cancel_requested, retain_until, \
     wake_at, wakeups, parent_id, parent_key, deadline, queue, blocked_by";

/// The columns [`journal_entry`] reads, in order.
pub(super) const JOURNAL_COLUMNS: &str = "idx, at, call_key, event";

/// The columns [`inbox_entry`] reads, in order.
pub(super) const INBOX_COLUMNS: &str = "position, payload, failure, attempt";

/// The states an engine drives, as an SQL list.
pub(super) const ACTIVE_STATES: &str = "('pending', 'running', 'compensating')";

/// The finished states, as an SQL list (the `executions_finished` index's condition).
pub(super) const FINISHED_STATES: &str =
    "('completed', 'compensated', 'compensation_failed', 'cancelled', 'timed_out', 'failed')";

fn corrupt(execution: &ExecutionId, what: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { execution: execution.clone(), what: what.into(), detail: detail.to_string() }
}

fn json(execution: &ExecutionId, what: &str, text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| corrupt(execution, format!("its {what} is not valid JSON"), e))
}

fn failure(execution: &ExecutionId, what: &str, text: String) -> Result<Failure, StoreError> {
    serde_json::from_str::<Failure>(&text).map_err(|e| corrupt(execution, what, e))
}

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, index: usize) -> Result<T, StoreError> {
    row.try_get(index).map_err(|e| backend("cannot read a row", e))
}

/// An execution row, selected with [`EXECUTION_COLUMNS`].
pub(super) fn execution(row: &Row) -> Result<ExecutionRecord, StoreError> {
    let id = ExecutionId::from(get::<String>(row, 0)?);
    let time = |index: usize| -> Result<Option<Timestamp>, StoreError> {
        Ok(get::<Option<i64>>(row, index)?.map(Timestamp::from_micros))
    };
    let state = get::<String>(row, 5)?.parse::<ExecutionState>().map_err(|e| corrupt(&id, "its state", e))?;
    let version = get::<i64>(row, 3)?;
    let epoch = get::<i64>(row, 12)?;
    let (parent_id, parent_key) = (get::<Option<String>>(row, 19)?, get::<Option<String>>(row, 20)?);
    Ok(ExecutionRecord {
        workflow: get(row, 1)?,
        fingerprint: get(row, 2)?,
        version: u32::try_from(version).map_err(|e| corrupt(&id, "its version", e))?,
        input: json(&id, "input", get(row, 4)?)?,
        state,
        result: get::<Option<String>>(row, 6)?.map(|text| json(&id, "result", text)).transpose()?,
        failure: get::<Option<String>>(row, 7)?.map(|text| failure(&id, "its failure record", text)).transpose()?,
        created_at: Timestamp::from_micros(get(row, 8)?),
        updated_at: Timestamp::from_micros(get(row, 9)?),
        owner: get(row, 10)?,
        lease_until: time(11)?,
        epoch: u64::try_from(epoch).map_err(|e| corrupt(&id, "its epoch", e))?,
        exclusive_key: get(row, 13)?,
        queue: get(row, 22)?,
        rerun_of: get::<Option<String>>(row, 14)?.map(ExecutionId::from),
        cancel_requested: get(row, 15)?,
        retain_until: time(16)?,
        wake_at: time(17)?,
        wakeups: get::<i64>(row, 18)? as u64,
        parent: match (parent_id, parent_key) {
            (Some(parent), Some(key)) => Some((ExecutionId::from(parent), key)),
            _ => None,
        },
        deadline: time(21)?,
        blocked_by: crate::store::blocked_by_list(get::<Option<String>>(row, 23)?.as_deref()),
        id,
    })
}

/// A journal row of execution `id`, selected with [`JOURNAL_COLUMNS`].
pub(super) fn journal_entry(row: &Row, id: &ExecutionId) -> Result<JournalEntry, StoreError> {
    let index: i64 = get(row, 0)?;
    let call_key: String = get(row, 2)?;
    let event = serde_json::from_str::<JournalEvent>(get(row, 3)?)
        .map_err(|e| corrupt(id, format!("journal entry {index} (step `{call_key}`)"), e))?;
    Ok(JournalEntry {
        index: u64::try_from(index).map_err(|e| corrupt(id, format!("journal entry {index}"), e))?,
        at: Timestamp::from_micros(get(row, 1)?),
        event,
    })
}

/// An inbox row, selected with [`INBOX_COLUMNS`].
pub(super) fn inbox_entry(row: &Row, execution: &ExecutionId) -> Result<InboxEntry, StoreError> {
    Ok(InboxEntry {
        position: get::<i64>(row, 0)? as u64,
        payload: get::<Option<String>>(row, 1)?.map(|text| json(execution, "inbox payload", text)).transpose()?,
        failure: get::<Option<String>>(row, 2)?.map(|text| failure(execution, "an inbox failure", text)).transpose()?,
        attempt: get::<Option<i64>>(row, 3)?.map(|a| a as u32),
    })
}

/// A journal event as stored: its JSON text.
pub(super) fn event_json(event: &JournalEvent) -> Result<String, StoreError> {
    serde_json::to_string(event).map_err(|e| backend("cannot encode a journal event as JSON", e))
}

/// A failure record as stored.
pub(super) fn failure_json(failure: &Failure) -> Result<String, StoreError> {
    serde_json::to_string(failure).map_err(|e| backend("cannot encode a failure record as JSON", e))
}
