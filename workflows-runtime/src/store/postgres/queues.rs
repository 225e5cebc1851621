//! Queues on PostgreSQL (see `store::queues`): their stored limits, admitting queued
//! executions, and what `workflows queues` shows.
//!
//! Admission to one queue is serialized across processes by an advisory lock on the queue
//! held until the commit: counting its slots and admitting by that count must not interleave
//! with another worker's admission (`SKIP LOCKED` alone would hand two workers disjoint rows
//! and let both spend the same budget). The lock is only tried: a worker that finds it held
//! leaves the queue to the worker admitting from it now, and never waits in a transaction
//! that holds other locks. Each statement after the lock sees every admission and every end
//! committed before it (`READ COMMITTED`).

use deadpool_postgres::Object;
use tokio_postgres::types::ToSql;

use super::error::backend;
use super::rows::{self, EXECUTION_COLUMNS};
use super::writer::query;
use crate::execution::ExecutionRecord;
use crate::queue::{Queue, QueueStatus};
use crate::store::queues::{self, SLOT_STATES};
use crate::store::{Claim, StoreError};
use crate::time::Timestamp;

/// How many of queue `$1`'s executions hold a slot, and how many started after `$2`: a range
/// of `executions_by_queue` per state, and one of `executions_admitted`.
pub(super) fn usage_sql() -> String {
    format!(
        "SELECT (SELECT COUNT(*) FROM executions WHERE queue = $1 AND state IN {SLOT_STATES}),
                (SELECT COUNT(*) FROM executions WHERE queue = $1 AND admitted_at > $2)"
    )
}

/// Admits the `$6` oldest queued executions of queue `$1` (of the workflows `$5`) for owner `$2`
/// until `$3`, at `$4`: the first entries of the queue's range of `executions_queued`.
pub(super) fn admit_sql() -> String {
    format!(
        "UPDATE executions SET owner = $2, lease_until = $3, epoch = epoch + 1, admitted_at = $4, updated_at = $4,
             state = CASE WHEN exclusive_key IS NULL THEN 'running' ELSE 'pending' END
         WHERE id = ANY(ARRAY(SELECT id FROM executions
                              WHERE queue = $1 AND state = 'queued' AND workflow || '@' || version = ANY($5)
                              ORDER BY created_at, id LIMIT $6))
         RETURNING {EXECUTION_COLUMNS}"
    )
}

/// Stores the queues' limits, replacing the ones stored under the same names.
pub(super) async fn define(client: &Object, defined: &[Queue]) -> Result<(), StoreError> {
    for queue in defined {
        let (concurrency, starts, per) = queues::to_columns(queue);
        query(
            client,
            "INSERT INTO queues (name, concurrency, rate_starts, rate_per, defined_at) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET concurrency = $2, rate_starts = $3, rate_per = $4, defined_at = $5",
            &[&queue.name(), &concurrency, &starts, &per, &Timestamp::now().as_micros()],
        )
        .await
        .map_err(|e| backend("cannot store the queues' limits", e))?;
    }
    Ok(())
}

/// The stored limits of every defined queue.
async fn stored(client: &Object) -> Result<Vec<Queue>, tokio_postgres::Error> {
    let found = query(client, "SELECT name, concurrency, rate_starts, rate_per FROM queues ORDER BY name", &[]).await?;
    Ok(found.iter().map(|r| queues::from_columns(r.get(0), r.get(1), r.get(2), r.get(3))).collect())
}

/// How many of the queue's executions hold a slot, and how many started within the rate
/// window that ends at `now`.
async fn usage(client: &Object, queue: &Queue, now: Timestamp) -> Result<(u64, u64), tokio_postgres::Error> {
    let since = queue.rate.map_or(i64::MAX, |rate| queues::window_start(rate.per, now).as_micros());
    let found = query(client, &usage_sql(), &[&queue.name(), &since]).await?;
    let row = found.first();
    Ok(row.map_or((0, 0), |r| (r.get::<_, i64>(0) as u64, r.get::<_, i64>(1) as u64)))
}

/// Admits up to `left` queued executions, oldest first in each queue, as far as the stored
/// limits allow at the claim's time, for the claiming engine.
pub(super) async fn admit(client: &Object, claim: &Claim, mut left: usize) -> Result<Vec<ExecutionRecord>, StoreError> {
    let context = "cannot admit queued executions";
    let waiting = query(
        client,
        "SELECT q.name, q.concurrency, q.rate_starts, q.rate_per FROM queues q
         WHERE EXISTS (SELECT 1 FROM executions e WHERE e.queue = q.name AND e.state = 'queued')
         ORDER BY q.name",
        &[],
    )
    .await
    .map_err(|e| backend(context, e))?;
    let mut admitted = Vec::new();
    for row in &waiting {
        if left == 0 {
            break;
        }
        let queue = queues::from_columns(row.get(0), row.get(1), row.get(2), row.get(3));
        let locked = query(
            client,
            "SELECT pg_try_advisory_xact_lock(hashtext('workflows queue ' || $1::text))",
            &[&queue.name()],
        )
        .await
        .map_err(|e| backend(context, e))?
        .first()
        .is_some_and(|r| r.get::<_, bool>(0));
        if !locked {
            continue;
        }
        let (active, started) = usage(client, &queue, claim.now).await.map_err(|e| backend(context, e))?;
        let budget = queues::budget(&queue, active, started, left as u64) as i64;
        if budget == 0 {
            continue;
        }
        let sql = admit_sql();
        let params: [&(dyn ToSql + Sync); 6] = [
            &queue.name(),
            &claim.owner,
            &claim.lease_until.as_micros(),
            &claim.now.as_micros(),
            &claim.workflows,
            &budget,
        ];
        let found = query(client, &sql, &params).await.map_err(|e| backend(context, e))?;
        for row in &found {
            admitted.push(rows::execution(row)?);
        }
        left = left.saturating_sub(found.len());
    }
    Ok(admitted)
}

/// The earliest time a rate-limited queue with queued executions may start one again, if its
/// window is full now.
pub(super) async fn next_reopening(client: &Object, now: Timestamp) -> Result<Option<Timestamp>, StoreError> {
    let context = "cannot read when the queues may start executions again";
    let found = query(
        client,
        "SELECT q.rate_per, q.rate_starts,
                (SELECT e.admitted_at FROM executions e WHERE e.queue = q.name AND e.admitted_at IS NOT NULL
                 ORDER BY e.admitted_at DESC LIMIT 1 OFFSET GREATEST(q.rate_starts - 1, 0))
         FROM queues q
         WHERE q.rate_starts IS NOT NULL
           AND EXISTS (SELECT 1 FROM executions e WHERE e.queue = q.name AND e.state = 'queued')",
        &[],
    )
    .await
    .map_err(|e| backend(context, e))?;
    Ok(found
        .iter()
        .filter_map(|row| {
            let per = std::time::Duration::from_micros(row.get::<_, i64>(0).max(0) as u64);
            queues::reopens_at(per, row.get::<_, Option<i64>>(2).map(Timestamp::from_micros), now)
        })
        .min())
}

/// Every queue defined or named by an execution, as it stands at `now`.
pub(super) async fn statuses(client: &Object, now: Timestamp) -> Result<Vec<QueueStatus>, StoreError> {
    let context = "cannot read the queues";
    let defined = stored(client).await.map_err(|e| backend(context, e))?;
    let named = query(client, "SELECT DISTINCT queue FROM executions WHERE queue IS NOT NULL", &[])
        .await
        .map_err(|e| backend(context, e))?;
    let named: Vec<String> = named.iter().map(|r| r.get(0)).collect();
    let mut statuses = Vec::new();
    for name in queues::all_names(named, &defined) {
        let probe = defined.iter().find(|q| q.name == name).cloned().unwrap_or_else(|| Queue::new(name.clone()));
        let usage = usage(client, &probe, now).await.map_err(|e| backend(context, e))?;
        let found = query(
            client,
            "SELECT COUNT(*), MIN(created_at) FROM executions WHERE queue = $1 AND state = 'queued'",
            &[&name],
        )
        .await
        .map_err(|e| backend(context, e))?;
        let (queued, oldest) = found.first().map_or((0, None), |r| (r.get::<_, i64>(0), r.get::<_, Option<i64>>(1)));
        statuses.push(queues::status(name, &defined, usage, queued as u64, oldest.map(Timestamp::from_micros)));
    }
    Ok(statuses)
}
