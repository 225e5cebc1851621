//! Schedules on SQLite (see `Store::schedules`): one row per schedule, written by the writer
//! (the only writer of the file at a time: a compare-and-set of its handled ticks cannot
//! interleave with another process's).

use rusqlite::{Connection, params};

use super::error::backend;
use crate::execution::ExecutionId;
use crate::store::{ScheduleAdvance, ScheduleState, StoreError};
use crate::time::Timestamp;

/// The schedules named, in order, each stored first (handled up to `now`) if it was not.
pub(super) fn states(conn: &Connection, names: &[String], now: Timestamp) -> Result<Vec<ScheduleState>, StoreError> {
    let context = "cannot read the schedules";
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO schedules (name, since, handled, paused) VALUES (?1, ?2, ?2, 0) ON CONFLICT (name) DO NOTHING",
        )
        .map_err(|e| backend(context, e))?;
    let mut select = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM schedules WHERE name = ?1"))
        .map_err(|e| backend(context, e))?;
    let mut states = Vec::with_capacity(names.len());
    for name in names {
        insert.execute(params![name, now.as_micros()]).map_err(|e| backend(context, e))?;
        states.push(select.query_row([name], state).map_err(|e| backend(context, e))?);
    }
    Ok(states)
}

/// A schedule's columns, in [`state`]'s order.
const COLUMNS: &str = "name, since, handled, paused, last_run, missed, last_missed";

fn state(r: &rusqlite::Row<'_>) -> rusqlite::Result<ScheduleState> {
    Ok(ScheduleState {
        name: r.get(0)?,
        since: Timestamp::from_micros(r.get(1)?),
        handled: Timestamp::from_micros(r.get(2)?),
        paused: r.get::<_, i64>(3)? != 0,
        last_run: r.get::<_, Option<String>>(4)?.map(ExecutionId::from),
        missed: r.get::<_, i64>(5)? as u64,
        last_missed: r.get::<_, Option<i64>>(6)?.map(Timestamp::from_micros),
    })
}

/// Every stored schedule, by name.
pub(super) fn stored(conn: &Connection) -> Result<Vec<ScheduleState>, StoreError> {
    let context = "cannot read the schedules";
    let mut select = conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM schedules ORDER BY name"))
        .map_err(|e| backend(context, e))?;
    let rows = select.query_map([], state).and_then(|rows| rows.collect::<Result<Vec<_>, _>>());
    rows.map_err(|e| backend(context, e))
}

/// The compare-and-set of a schedule's handled ticks.
pub(super) fn advance(conn: &Connection, advance: &ScheduleAdvance) -> Result<bool, StoreError> {
    conn.prepare_cached(
        "UPDATE schedules SET handled = ?3, last_run = COALESCE(?4, last_run), missed = missed + ?5,
             last_missed = COALESCE(?6, last_missed)
         WHERE name = ?1 AND handled = ?2",
    )
    .and_then(|mut s| {
        s.execute(params![
            advance.name,
            advance.from.as_micros(),
            advance.to.as_micros(),
            advance.last_run.as_ref().map(ExecutionId::as_str),
            advance.missed as i64,
            advance.last_missed.map(Timestamp::as_micros)
        ])
    })
    .map(|n| n == 1)
    .map_err(|e| backend(format!("cannot record the ticks of schedule `{}`", advance.name), e))
}

/// Pauses or resumes a schedule; false if there is none of that name.
pub(super) fn pause(conn: &Connection, name: &str, paused: bool) -> Result<bool, StoreError> {
    conn.prepare_cached("UPDATE schedules SET paused = ?2 WHERE name = ?1")
        .and_then(|mut s| s.execute(params![name, paused]))
        .map(|n| n == 1)
        .map_err(|e| backend(format!("cannot pause or resume schedule `{name}`"), e))
}
