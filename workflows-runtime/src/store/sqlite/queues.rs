//! Queues on SQLite (see `store::queues`): their stored limits, admitting queued executions
//! (in the writer's transaction, which is the only writer of the file at a time: counting a
//! queue's slots and admitting by that count cannot interleave with another process's
//! admission), and what `workflows queues` shows.

use rusqlite::{Connection, OptionalExtension, params};

use super::error::backend;
use super::rows;
use crate::execution::ExecutionRecord;
use crate::queue::{Queue, QueueStatus};
use crate::store::queues::{self, SLOT_STATES};
use crate::store::{Claim, StoreError};
use crate::time::Timestamp;

/// Stores the queues' limits, replacing the ones stored under the same names.
pub(super) fn define(conn: &Connection, defined: &[Queue]) -> Result<(), StoreError> {
    let context = "cannot store the queues' limits";
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO queues (name, concurrency, rate_starts, rate_per, defined_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (name) DO UPDATE SET concurrency = ?2, rate_starts = ?3, rate_per = ?4, defined_at = ?5",
        )
        .map_err(|e| backend(context, e))?;
    for queue in defined {
        let (concurrency, starts, per) = queues::to_columns(queue);
        upsert
            .execute(params![queue.name(), concurrency, starts, per, Timestamp::now().as_micros()])
            .map_err(|e| backend(context, e))?;
    }
    Ok(())
}

/// The stored limits of every defined queue.
fn stored(conn: &Connection) -> rusqlite::Result<Vec<Queue>> {
    let mut statement =
        conn.prepare_cached("SELECT name, concurrency, rate_starts, rate_per FROM queues ORDER BY name")?;
    let found = statement.query_map([], |r| Ok(queues::from_columns(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?;
    found.collect()
}

/// How many of queue `?1`'s executions hold a slot: a range of `executions_by_queue` per state.
pub(super) fn active_sql() -> String {
    format!("SELECT COUNT(*) FROM executions WHERE queue = ?1 AND state IN {SLOT_STATES}")
}

/// How many of queue `?1`'s executions started after `?2`: a range of `executions_admitted`.
pub(super) const STARTED_SINCE: &str = "SELECT COUNT(*) FROM executions WHERE queue = ?1 AND admitted_at > ?2";

/// Admits the `?6` oldest queued executions of queue `?1` (of the workflows `?5`, a JSON list)
/// for owner `?2` until `?3`, at `?4`: the first entries of the queue's range of
/// `executions_queued`.
pub(super) fn admit_sql() -> String {
    format!(
        "UPDATE executions SET owner = ?2, lease_until = ?3, epoch = epoch + 1, admitted_at = ?4, updated_at = ?4,
             state = CASE WHEN exclusive_key IS NULL THEN 'running' ELSE 'pending' END
         WHERE id IN (SELECT id FROM executions INDEXED BY executions_queued
                      WHERE queue = ?1 AND state = 'queued' AND workflow || '@' || version IN (SELECT value FROM json_each(?5))
                      ORDER BY created_at, id LIMIT ?6)
         RETURNING {}",
        rows::EXECUTION_COLUMNS
    )
}

/// True if the queue has queued executions.
fn has_queued(conn: &Connection, queue: &Queue) -> rusqlite::Result<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM executions WHERE queue = ?1 AND state = 'queued')")?
        .query_row([queue.name()], |r| r.get(0))
}

/// How many of the queue's executions hold a slot, and how many started after `since`.
fn usage(conn: &Connection, queue: &Queue, now: Timestamp) -> rusqlite::Result<(u64, u64)> {
    let active: i64 = conn.prepare_cached(&active_sql())?.query_row([queue.name()], |r| r.get(0))?;
    let started: i64 = match queue.rate {
        Some(rate) => conn
            .prepare_cached(STARTED_SINCE)?
            .query_row(params![queue.name(), queues::window_start(rate.per, now).as_micros()], |r| r.get(0))?,
        None => 0,
    };
    Ok((active as u64, started as u64))
}

/// Admits up to `left` queued executions, oldest first in each queue, as far as the stored
/// limits allow at the claim's time, for the claiming engine.
pub(super) fn admit(conn: &Connection, claim: &Claim, mut left: usize) -> Result<Vec<ExecutionRecord>, StoreError> {
    let context = "cannot admit queued executions";
    let workflows = serde_json::to_string(&claim.workflows).map_err(|e| backend(context, e))?;
    let mut admitted = Vec::new();
    for queue in stored(conn).map_err(|e| backend(context, e))? {
        if left == 0 {
            break;
        }
        if !has_queued(conn, &queue).map_err(|e| backend(context, e))? {
            continue;
        }
        let (active, started) = usage(conn, &queue, claim.now).map_err(|e| backend(context, e))?;
        let budget = queues::budget(&queue, active, started, left as u64);
        if budget == 0 {
            continue;
        }
        let mut statement = conn.prepare_cached(&admit_sql()).map_err(|e| backend(context, e))?;
        let mut found = statement
            .query(params![
                queue.name(),
                claim.owner,
                claim.lease_until.as_micros(),
                claim.now.as_micros(),
                workflows,
                budget as i64
            ])
            .map_err(|e| backend(context, e))?;
        while let Some(row) = found.next().map_err(|e| backend(context, e))? {
            admitted.push(rows::execution(row)?);
        }
        left = left.saturating_sub(budget as usize);
    }
    Ok(admitted)
}

/// The earliest time a rate-limited queue with queued executions may start one again, if its
/// window is full now.
pub(super) fn next_reopening(conn: &Connection, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
    let context = "cannot read when the queues may start executions again";
    let mut next: Option<Timestamp> = None;
    for queue in stored(conn).map_err(|e| backend(context, e))? {
        let Some(rate) = queue.rate else { continue };
        if !has_queued(conn, &queue).map_err(|e| backend(context, e))? {
            continue;
        }
        let nth: Option<i64> = conn
            .prepare_cached(
                "SELECT admitted_at FROM executions WHERE queue = ?1 AND admitted_at IS NOT NULL
                 ORDER BY admitted_at DESC LIMIT 1 OFFSET ?2",
            )
            .and_then(|mut s| s.query_row(params![queue.name(), i64::from(rate.starts) - 1], |r| r.get(0)).optional())
            .map_err(|e| backend(context, e))?;
        if let Some(at) = queues::reopens_at(rate.per, nth.map(Timestamp::from_micros), now) {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    Ok(next)
}

/// Every queue defined or named by an execution, as it stands at `now`.
pub(super) fn statuses(conn: &Connection, now: Timestamp) -> Result<Vec<QueueStatus>, StoreError> {
    let context = "cannot read the queues";
    let defined = stored(conn).map_err(|e| backend(context, e))?;
    let named: Vec<String> = conn
        .prepare_cached("SELECT DISTINCT queue FROM executions INDEXED BY executions_by_queue WHERE queue IS NOT NULL")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| backend(context, e))?;
    let mut statuses = Vec::new();
    for name in queues::all_names(named, &defined) {
        let probe = defined.iter().find(|q| q.name == name).cloned().unwrap_or_else(|| Queue::new(name.clone()));
        let usage = usage(conn, &probe, now).map_err(|e| backend(context, e))?;
        let (queued, oldest): (i64, Option<i64>) = conn
            .prepare_cached(
                "SELECT COUNT(*), MIN(created_at) FROM executions INDEXED BY executions_queued
                 WHERE queue = ?1 AND state = 'queued'",
            )
            .and_then(|mut s| s.query_row([&name], |r| Ok((r.get(0)?, r.get(1)?))))
            .map_err(|e| backend(context, e))?;
        statuses.push(queues::status(name, &defined, usage, queued as u64, oldest.map(Timestamp::from_micros)));
    }
    Ok(statuses)
}
