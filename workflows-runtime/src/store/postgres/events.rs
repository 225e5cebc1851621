//! Events on PostgreSQL (see `Store::record_event`): one row per event, each write its own
//! statement on a pooled connection; recording one tells the workers (`NOTIFY`) so that they
//! dispatch it at once. The dispatched ones are purged after the events' retention; the events
//! a subscriber's execution could not be started for are rows of `undelivered`.

use deadpool_postgres::Object;

use super::error::backend;
use super::writer::query;
use crate::store::{NewEvent, StepEvent, StoreError, Undelivered};
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
    let rows = query(client, super::queries::UNDISPATCHED_EVENTS, &[&(limit as i64)])
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

/// Deletes up to `limit` dispatched events emitted before `before`, oldest first.
pub(super) async fn purge(client: &Object, before: Timestamp, limit: usize) -> Result<u64, StoreError> {
    let sql = super::queries::purge_events();
    let deleted = query(client, &sql, &[&before.as_micros(), &(limit as i64)])
        .await
        .map_err(|e| backend("cannot purge dispatched events", e))?;
    Ok(deleted.len() as u64)
}

/// The columns of `undelivered`, in [`undelivered_row`]'s order.
pub(super) const UNDELIVERED_COLUMNS: &str =
    "event_id, name, payload, emitted_at, subscriber, attempts, error, first_failed_at, last_failed_at, retry_at";

/// Records (or updates) an undelivered event.
pub(super) async fn record_undelivered(client: &Object, u: &Undelivered) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO undelivered ({UNDELIVERED_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (event_id, subscriber) DO UPDATE SET attempts = excluded.attempts, error = excluded.error,
             last_failed_at = excluded.last_failed_at, retry_at = excluded.retry_at"
    );
    query(
        client,
        &sql,
        &[
            &u.event,
            &u.name,
            &u.payload,
            &u.emitted_at.as_micros(),
            &u.subscriber,
            &i64::from(u.attempts),
            &u.error,
            &u.first_failed_at.as_micros(),
            &u.last_failed_at.as_micros(),
            &u.retry_at.map(Timestamp::as_micros),
        ],
    )
    .await
    .map(drop)
    .map_err(|e| backend(format!("cannot record that event {} was not delivered to {}", u.event, u.subscriber), e))
}

fn undelivered_row(r: &tokio_postgres::Row) -> Undelivered {
    Undelivered {
        event: r.get(0),
        name: r.get(1),
        payload: r.get(2),
        emitted_at: Timestamp::from_micros(r.get(3)),
        subscriber: r.get(4),
        attempts: r.get::<_, i64>(5) as u32,
        error: r.get(6),
        first_failed_at: Timestamp::from_micros(r.get(7)),
        last_failed_at: Timestamp::from_micros(r.get(8)),
        retry_at: r.get::<_, Option<i64>>(9).map(Timestamp::from_micros),
    }
}

/// The undelivered events due by `due` (soonest first), or all of them (latest failure first),
/// up to `limit`.
pub(super) async fn undelivered(
    client: &Object,
    due: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<Undelivered>, StoreError> {
    let context = "cannot read the undelivered events";
    let rows = match due {
        Some(due) => query(client, &super::queries::undelivered_due(), &[&due.as_micros(), &(limit as i64)]).await,
        None => {
            let sql = format!(
                "SELECT {UNDELIVERED_COLUMNS} FROM undelivered ORDER BY last_failed_at DESC, event_id DESC LIMIT $1"
            );
            query(client, &sql, &[&(limit as i64)]).await
        }
    };
    Ok(rows.map_err(|e| backend(context, e))?.iter().map(undelivered_row).collect())
}

/// Forgets an undelivered event (for one subscriber, or all).
pub(super) async fn forget_undelivered(
    client: &Object,
    event: &str,
    subscriber: Option<&str>,
) -> Result<u64, StoreError> {
    let deleted = query(
        client,
        "WITH deleted AS (
             DELETE FROM undelivered WHERE event_id = $1 AND ($2::text IS NULL OR subscriber = $2) RETURNING 1
         ) SELECT COUNT(*) FROM deleted",
        &[&event, &subscriber],
    )
    .await
    .map_err(|e| backend(format!("cannot forget undelivered event {event}"), e))?;
    Ok(deleted.first().map_or(0, |row| row.get::<_, i64>(0) as u64))
}
