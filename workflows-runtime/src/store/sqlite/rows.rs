//! Rows to records and back. A row that does not decode is a `StoreError::Corrupt` naming
//! the execution (and the step, for journal rows), never a panic.

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::value::RawValue;

use super::checksum;
use super::error::backend;
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::Failure;
use crate::journal::{JournalEntry, JournalEvent};
use crate::store::StoreError;
use crate::time::Timestamp;

/// The columns [`execution`] reads, in order.
pub(super) const EXECUTION_COLUMNS: &str = "id, workflow, fingerprint, version, input, state, result, failure, \
     created_at, updated_at, owner, lease_until, epoch, exclusive_key, rerun_of, cancel_requested, retain_until, \
     wake_at, wakeups, parent_id, parent_key, deadline, checksum, result_checksum, queue, blocked_by";

/// The columns [`journal_entry`] reads, in order.
pub(super) const JOURNAL_COLUMNS: &str = "execution_id, idx, at, call_key, event, kind, checksum";

fn get<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> Result<T, StoreError> {
    row.get(index).map_err(|e| backend("cannot read an execution row", e))
}

fn corrupt(execution: &ExecutionId, what: impl Into<String>, detail: impl ToString) -> StoreError {
    StoreError::Corrupt { execution: execution.clone(), what: what.into(), detail: detail.to_string() }
}

fn json(execution: &ExecutionId, what: &str, text: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(text).map_err(|e| corrupt(execution, format!("its {what} is not valid JSON"), e))
}

/// What a checksum mismatch says.
const DAMAGED: &str = "it does not match its checksum: it was damaged on disk or changed outside the engine";

/// The id of an execution row, as stored: the bytes that select the row again, even when they
/// are not valid UTF-8 (a damaged row is failed by its stored id).
pub(super) fn raw_id(row: &Row<'_>) -> Result<Vec<u8>, StoreError> {
    match row.get_ref(0).map_err(|e| backend("cannot read an execution row", e))? {
        rusqlite::types::ValueRef::Text(bytes) | rusqlite::types::ValueRef::Blob(bytes) => Ok(bytes.to_vec()),
        other => Ok(format!("{other:?}").into_bytes()),
    }
}

/// The stored id `raw`, bound as the TEXT it is stored as (not re-encoded).
pub(super) fn id_param(raw: &[u8]) -> rusqlite::types::ToSqlOutput<'_> {
    rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(raw))
}

/// An execution row, selected with [`EXECUTION_COLUMNS`]. Every column is decoded on its own:
/// a value that does not decode (not UTF-8, not JSON, out of range) is a
/// [`StoreError::Corrupt`] naming the execution and the column, never a failure of the query.
pub(super) fn execution(row: &Row<'_>) -> Result<ExecutionRecord, StoreError> {
    let id = ExecutionId::from(String::from_utf8_lossy(&raw_id(row)?).into_owned());
    let column = |index: usize, name: &str| -> Result<rusqlite::types::Value, StoreError> {
        let value = row.get_ref(index).map_err(|e| backend("cannot read an execution row", e))?;
        if let rusqlite::types::ValueRef::Text(bytes) = value
            && let Err(e) = std::str::from_utf8(bytes)
        {
            return Err(corrupt(&id, format!("its {name} is not valid UTF-8"), e));
        }
        rusqlite::types::Value::try_from(value).map_err(|e| corrupt(&id, format!("its {name}"), e))
    };
    let text = |index: usize, name: &str| -> Result<Option<String>, StoreError> {
        match column(index, name)? {
            rusqlite::types::Value::Null => Ok(None),
            rusqlite::types::Value::Text(text) => Ok(Some(text)),
            other => Err(corrupt(&id, format!("its {name}"), format!("expected text, found {:?}", other.data_type()))),
        }
    };
    let required = |index: usize, name: &str| -> Result<String, StoreError> {
        text(index, name)?.ok_or_else(|| corrupt(&id, format!("its {name}"), "it is missing (NULL)"))
    };
    let integer = |index: usize, name: &str| -> Result<Option<i64>, StoreError> {
        match column(index, name)? {
            rusqlite::types::Value::Null => Ok(None),
            rusqlite::types::Value::Integer(n) => Ok(Some(n)),
            other => {
                Err(corrupt(&id, format!("its {name}"), format!("expected an integer, found {:?}", other.data_type())))
            }
        }
    };
    let required_integer = |index: usize, name: &str| -> Result<i64, StoreError> {
        integer(index, name)?.ok_or_else(|| corrupt(&id, format!("its {name}"), "it is missing (NULL)"))
    };
    let time = |index: usize, name: &str| -> Result<Option<Timestamp>, StoreError> {
        Ok(integer(index, name)?.map(Timestamp::from_micros))
    };
    let state = required(5, "state")?.parse::<ExecutionState>().map_err(|e| corrupt(&id, "its state", e))?;
    let input = json(&id, "input", required(4, "input")?)?;
    let result = text(6, "result")?.map(|text| json(&id, "result", text)).transpose()?;
    let failure = text(7, "failure")?
        .map(|text| serde_json::from_str::<Failure>(&text).map_err(|e| corrupt(&id, "its failure record", e)))
        .transpose()?;
    let version = required_integer(3, "version")?;
    let epoch = required_integer(12, "epoch")?;
    let (workflow, fingerprint) = (required(1, "workflow")?, required(2, "fingerprint")?);
    let created_at = required_integer(8, "created_at")?;
    let (exclusive_key, rerun_of) = (text(13, "exclusive_key")?, text(14, "rerun_of")?);
    let (parent_id, parent_key) = (text(19, "parent_id")?, text(20, "parent_key")?);
    let deadline = integer(21, "deadline")?;
    let queue = text(24, "queue")?;
    let content = checksum::content(&checksum::Content {
        id: id.as_str(),
        workflow: &workflow,
        fingerprint: &fingerprint,
        version,
        input: input.get(),
        created_at,
        exclusive_key: exclusive_key.as_deref(),
        rerun_of: rerun_of.as_deref(),
        parent_id: parent_id.as_deref(),
        parent_key: parent_key.as_deref(),
        deadline,
        queue: queue.as_deref(),
    });
    if integer(22, "checksum")? != Some(content) {
        return Err(corrupt(&id, "its record", DAMAGED));
    }
    if let Some(result) = &result
        && integer(23, "result checksum")? != Some(checksum::result(result.get()))
    {
        return Err(corrupt(&id, "its result", DAMAGED));
    }
    Ok(ExecutionRecord {
        workflow,
        fingerprint,
        version: u32::try_from(version).map_err(|e| corrupt(&id, "its version", e))?,
        input,
        state,
        result,
        failure,
        created_at: Timestamp::from_micros(created_at),
        updated_at: Timestamp::from_micros(required_integer(9, "updated_at")?),
        owner: text(10, "owner")?,
        lease_until: time(11, "lease_until")?,
        epoch: u64::try_from(epoch).map_err(|e| corrupt(&id, "its epoch", e))?,
        exclusive_key,
        queue,
        rerun_of: rerun_of.map(ExecutionId::from),
        cancel_requested: required_integer(15, "cancel_requested")? != 0,
        retain_until: time(16, "retain_until")?,
        wake_at: time(17, "wake_at")?,
        wakeups: required_integer(18, "wakeups")? as u64,
        parent: match (parent_id, parent_key) {
            (Some(parent), Some(key)) => Some((ExecutionId::from(parent), key)),
            _ => None,
        },
        deadline: deadline.map(Timestamp::from_micros),
        blocked_by: crate::store::blocked_by_list(text(25, "blocked_by")?.as_deref()),
        id,
    })
}

/// A journal row of execution `id`, selected with [`JOURNAL_COLUMNS`], its checksum verified.
pub(super) fn journal_entry(row: &Row<'_>, id: &ExecutionId) -> Result<JournalEntry, StoreError> {
    let index: i64 = get(row, 1)?;
    let entry = || format!("journal entry {index}");
    let text = |column: usize, name: &str| -> Result<String, StoreError> {
        match row.get_ref(column).map_err(|e| backend("cannot read a journal row", e))? {
            rusqlite::types::ValueRef::Text(bytes) => std::str::from_utf8(bytes)
                .map(str::to_owned)
                .map_err(|e| corrupt(id, format!("{}: its {name} is not valid UTF-8", entry()), e)),
            other => Err(corrupt(id, entry(), format!("its {name} is {:?}, not text", other.data_type()))),
        }
    };
    let (call_key, event_text, kind) = (text(3, "call key")?, text(4, "event")?, text(5, "kind")?);
    let at: i64 = get(row, 2)?;
    let stored: Option<i64> = get(row, 6)?;
    let expected = checksum::journal_entry(id.as_str(), index, at, &kind, &call_key, &event_text);
    if stored != Some(expected) {
        return Err(corrupt(
            id,
            format!("{} (step `{call_key}`)", entry()),
            "it does not match its checksum: it was damaged on disk or changed outside the engine",
        ));
    }
    let event = serde_json::from_str::<JournalEvent>(&event_text)
        .map_err(|e| corrupt(id, format!("{} (step `{call_key}`)", entry()), e))?;
    Ok(JournalEntry {
        index: u64::try_from(index).map_err(|e| corrupt(id, entry(), e))?,
        at: Timestamp::from_micros(at),
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

/// An inbox row: position, payload, failure, attempt.
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
        attempt: get::<Option<i64>>(row, 3)?.map(|a| a as u32),
    })
}

/// The states an engine drives, as an SQL list.
pub(super) const ACTIVE_STATES: &str = "('pending', 'running', 'compensating')";

/// The journal of execution `id`, each entry's checksum verified, and checked against the
/// length its execution recorded: a journal with a lost, added or reordered entry is damaged.
pub(super) fn read_journal(conn: &Connection, id: &ExecutionId) -> Result<Vec<JournalEntry>, StoreError> {
    let context = || format!("cannot read the journal of execution {id}");
    // One read transaction: the length and the entries from one snapshot.
    let tx = conn.unchecked_transaction().map_err(|e| backend(context(), e))?;
    let written: Option<i64> = tx
        .prepare_cached("SELECT journal_len FROM executions WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
        .map_err(|e| backend(context(), e))?;
    let sql = format!("SELECT {} FROM journal WHERE execution_id = ?1 ORDER BY idx", JOURNAL_COLUMNS);
    let mut statement = tx.prepare_cached(&sql).map_err(|e| backend(context(), e))?;
    let mut found = statement.query([id.as_str()]).map_err(|e| backend(context(), e))?;
    let mut entries = Vec::new();
    while let Some(row) = found.next().map_err(|e| backend(context(), e))? {
        let entry = journal_entry(row, id)?;
        if entry.index != entries.len() as u64 {
            return Err(StoreError::Corrupt {
                execution: id.clone(),
                what: format!("its journal (entry {} is missing)", entries.len()),
                detail: "the journal was damaged on disk or changed outside the engine".into(),
            });
        }
        entries.push(entry);
    }
    drop(found);
    drop(statement);
    tx.commit().map_err(|e| backend(context(), e))?;
    // No execution row (purged, or never there): nothing to compare with.
    if let Some(written) = written
        && written != entries.len() as i64
    {
        return Err(StoreError::Corrupt {
            execution: id.clone(),
            what: "its journal".into(),
            detail: format!(
                "{} entries are stored where {written} were written: the journal was damaged on disk or changed \
                 outside the engine",
                entries.len()
            ),
        });
    }
    Ok(entries)
}
