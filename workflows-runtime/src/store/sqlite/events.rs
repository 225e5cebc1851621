//! Events on SQLite (see `Store::record_event`): one row per event, recorded and marked by
//! the writer; the ones not dispatched yet are a range of a partial index, oldest first, and
//! so are the dispatched ones, purged after the events' retention. The events a subscriber's
//! execution could not be started for are rows of `undelivered` (see `Store::record_undelivered`).

use rusqlite::{Connection, params};

use super::error::backend;
use crate::execution::{ExecutionId, ExecutionState};
use crate::store::{NewEvent, StepEvent, StoreError, Undelivered};
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

/// Deletes up to `limit` dispatched events emitted before `before`, oldest first.
pub(super) fn purge(conn: &Connection, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "DELETE FROM events WHERE id IN (
             SELECT id FROM events INDEXED BY events_dispatched
             WHERE dispatched = 1 AND emitted_at < ?1 ORDER BY emitted_at LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![before.as_micros(), limit as i64]))
    .map(|n| n as u64)
    .map_err(|e| backend("cannot purge dispatched events", e))
}

/// The columns of `undelivered`, in [`undelivered_row`]'s order.
const UNDELIVERED_COLUMNS: &str =
    "event_id, name, payload, emitted_at, subscriber, attempts, error, first_failed_at, last_failed_at, retry_at";

/// Records (or updates) an undelivered event.
pub(super) fn record_undelivered(conn: &Connection, u: &Undelivered) -> Result<(), StoreError> {
    conn.prepare_cached(&format!(
        "INSERT INTO undelivered ({UNDELIVERED_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (event_id, subscriber) DO UPDATE SET attempts = excluded.attempts, error = excluded.error,
             last_failed_at = excluded.last_failed_at, retry_at = excluded.retry_at"
    ))
    .and_then(|mut s| {
        s.execute(params![
            u.event,
            u.name,
            u.payload,
            u.emitted_at.as_micros(),
            u.subscriber,
            u.attempts,
            u.error,
            u.first_failed_at.as_micros(),
            u.last_failed_at.as_micros(),
            u.retry_at.map(Timestamp::as_micros),
        ])
    })
    .map(drop)
    .map_err(|e| backend(format!("cannot record that event {} was not delivered to {}", u.event, u.subscriber), e))
}

fn undelivered_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Undelivered> {
    Ok(Undelivered {
        event: r.get(0)?,
        name: r.get(1)?,
        payload: r.get(2)?,
        emitted_at: Timestamp::from_micros(r.get(3)?),
        subscriber: r.get(4)?,
        attempts: r.get(5)?,
        error: r.get(6)?,
        first_failed_at: Timestamp::from_micros(r.get(7)?),
        last_failed_at: Timestamp::from_micros(r.get(8)?),
        retry_at: r.get::<_, Option<i64>>(9)?.map(Timestamp::from_micros),
    })
}

/// The undelivered events due by `due` (soonest first), or all of them (latest failure
/// first), up to `limit`.
pub(super) fn undelivered(
    conn: &Connection,
    due: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<Undelivered>, StoreError> {
    let context = "cannot read the undelivered events";
    let rows = match due {
        Some(due) => conn
            .prepare_cached(&format!(
                "SELECT {UNDELIVERED_COLUMNS} FROM undelivered INDEXED BY undelivered_due
                 WHERE retry_at IS NOT NULL AND retry_at <= ?1 ORDER BY retry_at LIMIT ?2"
            ))
            .and_then(|mut s| s.query_map(params![due.as_micros(), limit as i64], undelivered_row)?.collect()),
        None => conn
            .prepare_cached(&format!(
                "SELECT {UNDELIVERED_COLUMNS} FROM undelivered ORDER BY last_failed_at DESC, event_id DESC LIMIT ?1"
            ))
            .and_then(|mut s| s.query_map(params![limit as i64], undelivered_row)?.collect()),
    };
    rows.map_err(|e| backend(context, e))
}

/// Forgets an undelivered event (for one subscriber, or all).
pub(super) fn forget_undelivered(conn: &Connection, event: &str, subscriber: Option<&str>) -> Result<u64, StoreError> {
    conn.prepare_cached("DELETE FROM undelivered WHERE event_id = ?1 AND (?2 IS NULL OR subscriber = ?2)")
        .and_then(|mut s| s.execute(params![event, subscriber]))
        .map(|n| n as u64)
        .map_err(|e| backend(format!("cannot forget undelivered event {event}"), e))
}
