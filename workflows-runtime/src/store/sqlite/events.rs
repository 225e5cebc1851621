//! Events on SQLite (see `Store::record_event`): one row per event, recorded and marked by
//! the writer; the ones not dispatched yet are a range of a partial index, oldest first.

use rusqlite::{Connection, params};

use super::error::backend;
use crate::store::{NewEvent, StoreError};
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

/// Up to `limit` events not dispatched yet, oldest first.
pub(super) fn undispatched(conn: &Connection, limit: usize) -> Result<Vec<NewEvent>, StoreError> {
    let context = "cannot read the events to dispatch";
    let mut statement = conn
        .prepare_cached(
            "SELECT id, name, payload, emitted_at FROM events INDEXED BY events_undispatched
             WHERE dispatched = 0 ORDER BY emitted_at, id LIMIT ?1",
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
