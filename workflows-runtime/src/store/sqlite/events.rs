//! Events on SQLite (see `Store::record_event`): one row per event, recorded and marked by
//! the writer; the ones not dispatched yet are a range of a partial index, oldest first.

use rusqlite::{Connection, params};

use super::error::backend;
use crate::execution::{ExecutionId, ExecutionState};
use crate::store::{NewEvent, StepEvent, StoreError};
use crate::time::Timestamp;

/// Records an event; false if one with its id exists.
pub(super) fn record(conn: &Connection, event: &NewEvent) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "INSERT INTO events (id, name, payload, emitted_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (id) DO NOTHING",
    )
    .and_then(|mut s| s.execute(params![event.id, event.name, event.payload.get(), event.at.as_micros()]))
    .map(|n| n == 1)
    .map_err(|e| backend(format!("cannot record event `{}` ({})", event.name, event.id), e))
}

/// What a journal write does to events: records those its step emitted (held ones held by
/// the execution) and, if it ends the execution (`finished`), publishes its held events if it
/// completed — hands them to its parent if it is a child: they belong to the top-level
/// execution, published when it completes and dropped when it is rolled back —, or deletes
/// them.
pub(super) fn with_write(
    conn: &Connection,
    execution: &ExecutionId,
    emitted: &[StepEvent],
    finished: Option<ExecutionState>,
) -> Result<(), StoreError> {
    let context = || format!("cannot record the events of execution {execution}");
    for StepEvent { event, held } in emitted {
        conn.prepare_cached(
            "INSERT INTO events (id, name, payload, emitted_at, held_by) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (id) DO NOTHING",
        )
        .and_then(|mut s| {
            let held_by = held.then(|| execution.as_str());
            s.execute(params![event.id, event.name, event.payload.get(), event.at.as_micros(), held_by])
        })
        .map_err(|e| backend(context(), e))?;
    }
    let sql = match finished {
        Some(ExecutionState::Completed) => {
            "UPDATE events SET held_by = (SELECT parent_id FROM executions WHERE id = ?1) WHERE held_by = ?1"
        }
        Some(_) => "DELETE FROM events WHERE held_by = ?1",
        None => return Ok(()),
    };
    conn.prepare_cached(sql).and_then(|mut s| s.execute([execution.as_str()])).map_err(|e| backend(context(), e))?;
    Ok(())
}

/// Up to `limit` events not dispatched yet, oldest first.
pub(super) fn undispatched(conn: &Connection, limit: usize) -> Result<Vec<NewEvent>, StoreError> {
    let context = "cannot read the events to dispatch";
    let mut statement = conn
        .prepare_cached(
            "SELECT id, name, payload, emitted_at FROM events INDEXED BY events_undispatched
             WHERE dispatched = 0 AND held_by IS NULL ORDER BY emitted_at, id LIMIT ?1",
        )
        .map_err(|e| backend(context, e))?;
    let rows = statement
        .query_map([limit as i64], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?)))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| backend(context, e))?;
    rows.into_iter()
        .map(|(id, name, payload, at)| {
            let payload = serde_json::value::RawValue::from_string(payload).map_err(|e| StoreError::Backend {
                context: format!("event {id}: its payload is not valid JSON: the store is damaged"),
                source: Box::new(e),
            })?;
            Ok(NewEvent { id, name, payload, at: Timestamp::from_micros(at) })
        })
        .collect()
}

/// Marks events dispatched.
pub(super) fn mark(conn: &Connection, ids: &[String]) -> Result<(), StoreError> {
    let mut statement = conn
        .prepare_cached("UPDATE events SET dispatched = 1 WHERE id = ?1")
        .map_err(|e| backend("cannot mark events dispatched", e))?;
    for id in ids {
        statement.execute([id]).map_err(|e| backend("cannot mark events dispatched", e))?;
    }
    Ok(())
}
