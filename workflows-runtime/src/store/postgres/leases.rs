//! Renewing leases on PostgreSQL: one statement of its own (autocommit, on a pooled connection,
//! never in the writer's batches), for the executions the engine drives, that waits for no row
//! lock.
//!
//! A renewal that waited for row locks could close a cycle with another process's write
//! transaction — a delivery locks the row it delivers to, a journal write its own execution's,
//! in the order its batch holds them — and the server would abort one of them as a deadlock.
//! So the renewal skips the rows another transaction holds (`SKIP LOCKED`), tries those again
//! a moment later, and answers the rows still held at the end as busy: their leases stand as
//! they were, and the engine's own clock decides whether it can still count on them.

use std::time::Duration;

use deadpool_postgres::Object;
use tokio_postgres::error::SqlState;

use super::error::backend;
use super::queries;
use super::writer::query;
use crate::execution::ExecutionId;
use crate::store::{Renewal, Renewals, Renewed, StoreError};

/// How often a renewal tries the rows it found locked again, and how long it waits first.
const TRIES: u32 = 5;
const PAUSE: Duration = Duration::from_millis(10);

/// Renews the leases of `renewal.held` that `renewal.owner` still holds at their epochs.
pub(super) async fn renew(client: &Object, renewal: &Renewal) -> Result<Renewals, StoreError> {
    let context = "cannot renew leases";
    let mut left: Vec<(ExecutionId, u64)> = renewal.held.clone();
    let mut renewals = Renewals::default();
    let until = renewal.lease_until.as_micros();
    for attempt in 0..TRIES {
        if left.is_empty() {
            break;
        }
        if attempt > 0 {
            tokio::time::sleep(PAUSE * attempt).await;
        }
        let ids: Vec<&str> = left.iter().map(|(id, _)| id.as_str()).collect();
        let epochs: Vec<i64> = left.iter().map(|(_, epoch)| *epoch as i64).collect();
        let rows = match query(client, &queries::renew(), &[&renewal.owner, &ids, &until, &epochs]).await {
            Ok(rows) => rows,
            // It waits for no lock, so it should never be chosen to break a deadlock; if the
            // server did choose it, it is tried again at once.
            Err(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) && attempt + 1 < TRIES => {
                tracing::warn!(error = %super::error::chain(&e), "a lease renewal was chosen to break a deadlock; trying again");
                continue;
            }
            Err(e) => return Err(backend(context, e)),
        };
        for row in &rows {
            renewals.renewed.push(Renewed {
                execution: ExecutionId::from(row.get::<_, String>(0)),
                epoch: row.get::<_, i64>(1) as u64,
                cancel_requested: row.get(2),
            });
        }
        let done: std::collections::HashSet<&str> = rows.iter().map(|row| row.get::<_, &str>(0)).collect();
        let skipped: Vec<(ExecutionId, u64)> =
            left.iter().filter(|(id, _)| !done.contains(id.as_str())).cloned().collect();
        if skipped.is_empty() {
            left.clear();
            break;
        }
        // Not renewed: either no longer this engine's (taken over, finished, released) or
        // locked by another transaction. A plain read (it waits for nothing) tells which.
        let ids: Vec<&str> = skipped.iter().map(|(id, _)| id.as_str()).collect();
        let epochs: Vec<i64> = skipped.iter().map(|(_, epoch)| *epoch as i64).collect();
        let still = query(client, &queries::still_held(), &[&renewal.owner, &ids, &epochs])
            .await
            .map_err(|e| backend(context, e))?;
        let still: std::collections::HashSet<String> = still.iter().map(|row| row.get::<_, String>(0)).collect();
        left = skipped.into_iter().filter(|(id, _)| still.contains(id.as_str())).collect();
    }
    renewals.busy = left.into_iter().map(|(id, _)| id).collect();
    Ok(renewals)
}
