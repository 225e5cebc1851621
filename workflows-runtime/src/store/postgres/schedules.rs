//! Schedules on PostgreSQL (see `Store::schedules`): one row per schedule; the compare-and-set
//! of its handled ticks is one `UPDATE ... WHERE handled = $from`, so racing processes agree.

use deadpool_postgres::Object;

use super::error::backend;
use super::writer::query;
use crate::execution::ExecutionId;
use crate::store::{ScheduleAdvance, ScheduleState, StoreError};
use crate::time::Timestamp;

/// The schedules named, in order, each stored first (handled up to `now`) if it was not.
pub(super) async fn states(
    client: &Object,
    names: &[String],
    now: Timestamp,
) -> Result<Vec<ScheduleState>, StoreError> {
    let context = "cannot read the schedules";
    query(
        client,
        "INSERT INTO schedules (name, since, handled, paused)
         SELECT name, $2, $2, false FROM UNNEST($1::text[]) AS name
         ON CONFLICT (name) DO NOTHING",
        &[&names, &now.as_micros()],
    )
    .await
    .map_err(|e| backend(context, e))?;
    let sql = "SELECT name, since, handled, paused, last_run, missed, last_missed FROM schedules WHERE name = ANY($1)";
    let found = query(client, sql, &[&names]).await.map_err(|e| backend(context, e))?;
    let mut states: Vec<ScheduleState> = found.iter().map(state).collect();
    // In the order asked.
    states.sort_by_key(|state| names.iter().position(|name| *name == state.name));
    Ok(states)
}

fn state(r: &tokio_postgres::Row) -> ScheduleState {
    ScheduleState {
        name: r.get(0),
        since: Timestamp::from_micros(r.get(1)),
        handled: Timestamp::from_micros(r.get(2)),
        paused: r.get(3),
        last_run: r.get::<_, Option<String>>(4).map(ExecutionId::from),
        missed: r.get::<_, i64>(5) as u64,
        last_missed: r.get::<_, Option<i64>>(6).map(Timestamp::from_micros),
    }
}

/// Every stored schedule, by name.
pub(super) async fn stored(client: &Object) -> Result<Vec<ScheduleState>, StoreError> {
    let sql = "SELECT name, since, handled, paused, last_run, missed, last_missed FROM schedules ORDER BY name";
    let found = query(client, sql, &[]).await.map_err(|e| backend("cannot read the schedules", e))?;
    Ok(found.iter().map(state).collect())
}

/// The compare-and-set of a schedule's handled ticks.
pub(super) async fn advance(client: &Object, advance: &ScheduleAdvance) -> Result<bool, StoreError> {
    let moved = query(
        client,
        "UPDATE schedules SET handled = $3, last_run = COALESCE($4, last_run), missed = missed + $5,
             last_missed = COALESCE($6, last_missed)
         WHERE name = $1 AND handled = $2
         RETURNING 1",
        &[
            &advance.name,
            &advance.from.as_micros(),
            &advance.to.as_micros(),
            &advance.last_run.as_ref().map(ExecutionId::as_str),
            &(advance.missed as i64),
            &advance.last_missed.map(Timestamp::as_micros),
        ],
    )
    .await
    .map_err(|e| backend(format!("cannot record the ticks of schedule `{}`", advance.name), e))?;
    Ok(!moved.is_empty())
}

/// Pauses or resumes a schedule; false if there is none of that name.
pub(super) async fn pause(client: &Object, name: &str, paused: bool) -> Result<bool, StoreError> {
    let found = query(client, "UPDATE schedules SET paused = $2 WHERE name = $1 RETURNING 1", &[&name, &paused])
        .await
        .map_err(|e| backend(format!("cannot pause or resume schedule `{name}`"), e))?;
    Ok(!found.is_empty())
}
