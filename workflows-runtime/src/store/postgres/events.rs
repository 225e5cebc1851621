//! Events on PostgreSQL (see `Store::record_event`): one row per event, each write its own
//! statement on a pooled connection; recording one tells the workers (`NOTIFY`) so that they
//! dispatch it at once.

use deadpool_postgres::Object;

use super::error::backend;
use super::writer::query;
use crate::store::{NewEvent, StepEvent, StoreError};
use crate::time::Timestamp;

/// Records an event (and notifies the workers); false if one with its id exists.
pub(super) async fn record(client: &Object, event: &NewEvent) -> Result<bool, StoreError> {
    let inserted = query(
        client,
        "WITH recorded AS (
             INSERT INTO events (id, name, payload, emitted_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (id) DO NOTHING RETURNING 1
         ), work AS (SELECT pg_notify(current_schema(), 'work') FROM recorded)
         SELECT (SELECT COUNT(*) FROM recorded), (SELECT COUNT(*) FROM work)",
        &[&event.id, &event.name, &event.payload.get(), &event.at.as_micros()],
    )
    .await
    .map_err(|e| backend(format!("cannot record event `{}` ({})", event.name, event.id), e))?;
    Ok(inserted.first().is_some_and(|r| r.get::<_, i64>(0) == 1))
}

/// Records the events a step emitted with its completion (the held ones held by the
/// execution), in the journal write's transaction.
pub(super) async fn record_emitted(client: &Object, execution: &str, emitted: &[StepEvent]) -> Result<(), StoreError> {
    for StepEvent { event, held } in emitted {
        let held_by = held.then_some(execution);
        query(
            client,
            "INSERT INTO events (id, name, payload, emitted_at, held_by) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
            &[&event.id, &event.name, &event.payload.get(), &event.at.as_micros(), &held_by],
        )
        .await
        .map_err(|e| backend(format!("cannot record the events of execution {execution}"), e))?;
    }
    Ok(())
}

/// Publishes (if it completed; a child hands them to its parent: they belong to the top-level
/// execution) or deletes (if it ended otherwise) the events execution `execution` held.
pub(super) async fn release_held(client: &Object, execution: &str, completed: bool) -> Result<(), StoreError> {
    let sql = if completed {
        "UPDATE events SET held_by = (SELECT parent_id FROM executions WHERE id = $1) WHERE held_by = $1"
    } else {
        "DELETE FROM events WHERE held_by = $1"
    };
    query(client, sql, &[&execution])
        .await
        .map(drop)
        .map_err(|e| backend(format!("cannot release the events of execution {execution}"), e))
}

/// Up to `limit` events not dispatched yet, oldest first.
pub(super) async fn undispatched(client: &Object, limit: usize) -> Result<Vec<NewEvent>, StoreError> {
    let rows = query(
        client,
        "SELECT id, name, payload, emitted_at FROM events WHERE NOT dispatched AND held_by IS NULL
         ORDER BY emitted_at, id LIMIT $1",
        &[&(limit as i64)],
    )
    .await
    .map_err(|e| backend("cannot read the events to dispatch", e))?;
    rows.iter()
        .map(|r| {
            let id: String = r.get(0);
            let payload = serde_json::value::RawValue::from_string(r.get(2)).map_err(|e| StoreError::Backend {
                context: format!("event {id}: its payload is not valid JSON: the store is damaged"),
                source: Box::new(e),
            })?;
            Ok(NewEvent { id, name: r.get(1), payload, at: Timestamp::from_micros(r.get(3)) })
        })
        .collect()
}

/// Marks events dispatched.
pub(super) async fn mark(client: &Object, ids: &[String]) -> Result<(), StoreError> {
    query(client, "UPDATE events SET dispatched = true WHERE id = ANY($1)", &[&ids])
        .await
        .map(drop)
        .map_err(|e| backend("cannot mark events dispatched", e))
}
