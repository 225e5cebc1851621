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
    // Each set of ids is made into an array that the next statement looks up by key: a plan
    // that joins them instead could read a whole index (see `plans.rs`).
    let candidates = if only {
        format!("SELECT id FROM executions WHERE id = $6 AND workflow || '@' || version = ANY($4) AND {due}")
    } else {
        format!(
            "SELECT id FROM executions WHERE id = ANY(ARRAY(
                 (SELECT id FROM executions WHERE state IN {ACTIVE_STATES} AND lease_until IS NULL
                      AND workflow || '@' || version = ANY($4) LIMIT $5)
                 UNION ALL
                 (SELECT id FROM executions WHERE state IN {ACTIVE_STATES} AND lease_until < $3
                      AND workflow || '@' || version = ANY($4) LIMIT $5)
                 UNION ALL
                 (SELECT id FROM executions WHERE state = 'waiting' AND wake_at IS NOT NULL AND wake_at <= $3
                      AND workflow || '@' || version = ANY($4) LIMIT $5)))
             AND {due}"
        )
    };
    format!(
        "UPDATE executions SET owner = $1, lease_until = $2, epoch = epoch + 1,
             state = CASE WHEN state = 'waiting' THEN 'running' ELSE state END,
             wake_at = CASE WHEN state = 'waiting' THEN NULL ELSE wake_at END
         WHERE id = ANY(ARRAY({candidates} LIMIT $5 FOR UPDATE SKIP LOCKED))
         RETURNING {EXECUTION_COLUMNS}"
    )
}

/// Takes up to `$4` blocked executions of the workflows `$3` that build `$5` did not block (see
/// `Claim::unblock`), for owner `$1` until `$2`: they become `running`. A range of
/// `executions_by_state` (blocked executions have no lease).
pub(super) fn unblock() -> String {
    format!(
        "UPDATE executions SET owner = $1, lease_until = $2, epoch = epoch + 1, state = 'running'
         WHERE id = ANY(ARRAY(
             SELECT id FROM executions
             WHERE state = 'blocked' AND workflow || '@' || version = ANY($3)
               AND position(' ' || $5::text || ' ' IN ' ' || COALESCE(blocked_by, '') || ' ') = 0
             LIMIT $4 FOR UPDATE SKIP LOCKED))
           AND state = 'blocked'
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
    "DELETE FROM events WHERE id = ANY(ARRAY(
         SELECT id FROM events WHERE dispatched AND emitted_at < $1 ORDER BY emitted_at LIMIT $2))
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
    "SELECT wake_at FROM executions WHERE state = 'waiting' AND wake_at IS NOT NULL ORDER BY wake_at LIMIT 1";

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

/// A delivery's lock on execution `$1` (until the commit: deliveries to one execution take
/// their positions in turn), and what it needs of it.
pub(super) const DELIVERY_LOCK: &str = "SELECT state, deadline FROM executions WHERE id = $1 FOR UPDATE";

/// A delivery into the inbox of execution `$1`, at the next position of its kind and name.
pub(super) const DELIVERY_INSERT: &str = "
INSERT INTO inbox (execution_id, kind, name, position, payload, failure, at, attempt)
SELECT $1::text, $2::text, $3::text, COALESCE(MAX(position) + 1, 0), $4::text, $5::text, $6::bigint, $7::bigint
FROM inbox WHERE execution_id = $1 AND kind = $2 AND name = $3";

/// A delivery's wake-up of execution `$1` (due at `$2` if it waits).
pub(super) const DELIVERY_WAKE: &str = "
UPDATE executions SET wakeups = wakeups + 1,
    wake_at = CASE WHEN state = 'waiting' THEN LEAST(COALESCE(wake_at, $2), $2) ELSE wake_at END
WHERE id = $1";

/// The latest `step_*` entry of step call `$2` in the journal of execution `$1`.
pub(super) const STEP_LATEST: &str = "
SELECT idx, event, at FROM journal
WHERE execution_id = $1 AND call_key = $2
  AND kind IN ('step_started', 'step_waiting', 'step_completed', 'step_failed', 'step_skipped')
ORDER BY idx DESC LIMIT 1";

/// What the inbox of execution `$1` holds from outside for step call `$2`: a completion (of
/// any attempt), a delivery to attempt `$3`.
pub(super) const STEP_DELIVERED: &str = "
SELECT COALESCE(bool_or(failure IS NULL), false), COALESCE(bool_or(attempt = $3), false) FROM inbox
WHERE execution_id = $1 AND kind = 'completion' AND name = $2 AND attempt IS NOT NULL";

/// Suspends execution `$1` held at epoch `$2`, unless a delivery arrived since wake-up count
/// `$4` or its cancellation was requested. (Its state, `running`, is the parameter `$6`: a
/// plan made for any value cannot read the index of the active executions for it, only the
/// key's.)
pub(super) const SUSPEND: &str = "
UPDATE executions SET state = 'waiting', wake_at = $3, owner = NULL, lease_until = NULL, updated_at = $5
WHERE id = $1 AND epoch = $2 AND wakeups = $4 AND state = $6 AND NOT cancel_requested";

/// The undispatched events, oldest first: a range of `events_undispatched`.
pub(super) const UNDISPATCHED_EVENTS: &str = "
SELECT id, name, payload, emitted_at FROM events WHERE NOT dispatched AND held_by IS NULL
ORDER BY emitted_at, id LIMIT $1";

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
