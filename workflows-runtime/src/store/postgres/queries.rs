//! The hot queries of the PostgreSQL store, in one place, so that `plans.rs` can check with
//! `EXPLAIN` that each is answered from its index with no sort: their cost must not grow with
//! the finished executions a store keeps (as on SQLite, `store/sqlite/queries.rs`).

use super::rows::{ACTIVE_STATES, EXECUTION_COLUMNS, FINISHED_STATES, INBOX_COLUMNS, JOURNAL_COLUMNS};
use crate::store::ExecutionQuery;
use tokio_postgres::types::ToSql;

/// Takes over up to `$5` executions of the workflows `$4` that need an engine, for owner `$1`
/// until `$2`, at time `$3`, from three index ranges (as on SQLite: no sort of the remaining
/// orphans), skipping the rows another transaction holds.
pub(super) fn claim(only: bool) -> String {
    let due = format!(
        "((state IN {ACTIVE_STATES} AND (lease_until IS NULL OR lease_until < $3))
          OR (state = 'waiting' AND wake_at IS NOT NULL AND wake_at <= $3))"
    );
    let candidates = if only {
        format!("SELECT id FROM executions WHERE id = $6 AND workflow = ANY($4) AND {due}")
    } else {
        format!(
            "SELECT id FROM executions WHERE id IN (
                 (SELECT id FROM executions WHERE state IN {ACTIVE_STATES} AND lease_until IS NULL
                      AND workflow = ANY($4) LIMIT $5)
                 UNION ALL
                 (SELECT id FROM executions WHERE state IN {ACTIVE_STATES} AND lease_until < $3
                      AND workflow = ANY($4) LIMIT $5)
                 UNION ALL
                 (SELECT id FROM executions WHERE state = 'waiting' AND wake_at IS NOT NULL AND wake_at <= $3
                      AND workflow = ANY($4) LIMIT $5))
             AND {due}"
        )
    };
    format!(
        "UPDATE executions SET owner = $1, lease_until = $2, epoch = epoch + 1,
             state = CASE WHEN state = 'waiting' THEN 'running' ELSE state END,
             wake_at = CASE WHEN state = 'waiting' THEN NULL ELSE wake_at END
         WHERE id IN ({candidates} LIMIT $5 FOR UPDATE SKIP LOCKED)
         RETURNING {EXECUTION_COLUMNS}"
    )
}

/// Extends to `$3` (never shortening) the leases of the executions `$2` that owner `$1` still
/// holds at the epochs `$4`, each found by its key (a nested loop over the array, whatever the
/// statistics say), skipping the rows another transaction holds.
pub(super) fn renew() -> String {
    format!(
        "UPDATE executions SET lease_until = GREATEST(lease_until, $3)
         WHERE id = ANY(ARRAY(
             SELECT x.id FROM UNNEST($2::text[], $4::bigint[]) AS h(id, epoch)
             CROSS JOIN LATERAL (
                 SELECT e.id FROM executions e
                 WHERE e.id = h.id AND e.epoch = h.epoch AND e.owner = $1 AND e.state IN {ACTIVE_STATES}
                 FOR UPDATE SKIP LOCKED) AS x))
         RETURNING id, epoch, cancel_requested"
    )
}

/// Which of the executions `$2` owner `$1` still holds at the epochs `$3` (a plain read).
pub(super) fn still_held() -> String {
    format!(
        "SELECT e.id FROM UNNEST($2::text[], $3::bigint[]) AS h(id, epoch)
         CROSS JOIN LATERAL (
             SELECT e.id FROM executions e
             WHERE e.id = h.id AND e.epoch = h.epoch AND e.owner = $1 AND e.state IN {ACTIVE_STATES}
             OFFSET 0) AS e"
    )
}

/// Up to `$2` finished executions whose retention ended at or before `$1`, in the order it
/// ended: a range of `executions_by_retention`.
pub(super) fn purge_retained() -> String {
    format!(
        "SELECT id FROM executions WHERE retain_until <= $1 AND state IN {FINISHED_STATES}
         ORDER BY retain_until LIMIT $2"
    )
}

/// Up to `$2` executions that finished (last changed) before `$1`: a range of
/// `executions_finished`.
pub(super) fn purge_finished_before() -> String {
    format!(
        "SELECT id FROM executions WHERE state IN {FINISHED_STATES} AND updated_at < $1
         ORDER BY updated_at LIMIT $2"
    )
}

/// Deletes up to `$2` dispatched events emitted before `$1`, oldest first: a range of
/// `events_dispatched`. Returns a row per event deleted.
pub(super) fn purge_events() -> String {
    "DELETE FROM events WHERE id IN (
         SELECT id FROM events WHERE dispatched AND emitted_at < $1 ORDER BY emitted_at LIMIT $2)
     RETURNING 1"
        .to_owned()
}

/// Up to `$2` undelivered events due by `$1`, soonest first: a range of `undelivered_due`.
pub(super) fn undelivered_due() -> String {
    format!(
        "SELECT {} FROM undelivered WHERE retry_at IS NOT NULL AND retry_at <= $1 ORDER BY retry_at LIMIT $2",
        super::events::UNDELIVERED_COLUMNS
    )
}

/// The earliest wake-up of the waiting executions: the first entry of `executions_by_wake`.
pub(super) const NEXT_WAKE: &str =
    "SELECT MIN(wake_at) FROM executions WHERE state = 'waiting' AND wake_at IS NOT NULL";

/// The first inbox entry of an execution's kind and name at a position or later.
pub(super) fn inbox_entry() -> String {
    format!(
        "SELECT {INBOX_COLUMNS} FROM inbox
         WHERE execution_id = $1 AND kind = $2 AND name = $3 AND position >= $4
         ORDER BY position LIMIT 1"
    )
}

/// An execution's journal, in order.
pub(super) fn journal() -> String {
    format!("SELECT {JOURNAL_COLUMNS} FROM journal WHERE execution_id = $1 ORDER BY idx")
}

/// A parameter of a listing.
pub(super) type Value = Box<dyn ToSql + Sync + Send>;

/// A listing, newest first, with its parameters. One state is listed from
/// `executions_by_state_created`, a workflow from `executions_by_workflow`, everything from
/// `executions_by_created`, each read backwards from where the page starts (every index ends
/// with the id, so ties are ordered with no sort). Several states at once are merged by a sort.
pub(super) fn list(query: &ExecutionQuery) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = Vec::new();
    let next = |value: Value, values: &mut Vec<Value>| {
        values.push(value);
        format!("${}", values.len())
    };
    let mut sql = format!("SELECT {EXECUTION_COLUMNS} FROM executions WHERE true");
    match query.states.as_slice() {
        [] => {}
        [state] => sql.push_str(&format!(" AND state = {}", next(Box::new(state.as_str().to_owned()), &mut values))),
        states => {
            let states: Vec<String> = states.iter().map(|s| s.as_str().to_owned()).collect();
            sql.push_str(&format!(" AND state = ANY({})", next(Box::new(states), &mut values)));
        }
    }
    if let Some(workflow) = &query.workflow {
        sql.push_str(&format!(" AND workflow = {}", next(Box::new(workflow.clone()), &mut values)));
    }
    if let Some(since) = query.since {
        sql.push_str(&format!(" AND created_at >= {}", next(Box::new(since.as_micros()), &mut values)));
    }
    if let Some(before) = query.before {
        sql.push_str(&format!(" AND created_at < {}", next(Box::new(before.as_micros()), &mut values)));
    }
    if let Some(after) = &query.after {
        let created = next(Box::new(after.created_at.as_micros()), &mut values);
        let id = next(Box::new(after.id.to_string()), &mut values);
        sql.push_str(&format!(" AND (created_at, id) < ({created}, {id})"));
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    if let Some(limit) = query.limit {
        sql.push_str(&format!(" LIMIT {}", next(Box::new(limit as i64), &mut values)));
    }
    sql.push_str(&format!(" OFFSET {}", next(Box::new(query.offset as i64), &mut values)));
    (sql, values)
}
