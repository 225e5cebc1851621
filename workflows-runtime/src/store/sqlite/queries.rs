//! The hot queries of the SQLite store, in one place, so that `plans.rs` can check with
//! `EXPLAIN QUERY PLAN` that each is answered from its index, with no temporary sort: their
//! cost must not grow with the finished executions a store keeps.
//!
//! Where the planner, having no statistics, could prefer another index (the state index
//! matches almost every query), `INDEXED BY` names the one meant: SQLite then refuses to
//! prepare the statement rather than scan.

use rusqlite::types::Value;

use super::rows::{self, ACTIVE_STATES};
use crate::store::ExecutionQuery;

/// The finished states, as an SQL list: the same text as the `executions_finished` index's
/// condition (a partial index is used only for a query that repeats its condition).
pub(super) const FINISHED_STATES: &str =
    "('completed', 'compensated', 'compensation_failed', 'cancelled', 'timed_out', 'failed')";

/// The earliest wake-up of the waiting executions: the first entry of `executions_by_wake`.
pub(super) const NEXT_WAKE: &str =
    "SELECT MIN(wake_at) FROM executions INDEXED BY executions_by_wake WHERE state = 'waiting' AND wake_at IS NOT NULL";

/// Up to `?2` finished executions whose retention ended at or before `?1`, in the order it
/// ended: a range of `executions_by_retention` (only finished executions have a retention).
pub(super) fn purge_retained() -> String {
    format!(
        "SELECT id FROM executions INDEXED BY executions_by_retention
         WHERE retain_until <= ?1 AND state IN {FINISHED_STATES}
         ORDER BY retain_until LIMIT ?2"
    )
}

/// Up to `?2` executions that finished (last changed) before `?1`: a range of
/// `executions_finished`.
pub(super) fn purge_finished_before() -> String {
    format!(
        "SELECT id FROM executions INDEXED BY executions_finished
         WHERE state IN {FINISHED_STATES} AND updated_at < ?1
         ORDER BY updated_at LIMIT ?2"
    )
}

/// Which executions a claim looks for (see [`claim`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Claiming {
    /// Every kind that needs an engine.
    All,
    /// One execution, by its key.
    Only,
    /// Blocked executions the claiming build did not block.
    Unblock,
}

impl Claiming {
    pub(super) fn of(claim: &crate::store::Claim) -> Self {
        match (&claim.only, &claim.unblock) {
            (Some(_), _) => Self::Only,
            (None, Some(_)) => Self::Unblock,
            (None, None) => Self::All,
        }
    }
}

/// Takes over up to `?5` executions of the workflows `?4` (a JSON list) that need an engine, for
/// owner `?1` until `?2`, at time `?3`; or only execution `?6`, looked up by its key; or (with
/// `Claiming::Unblock`) the blocked executions that build `?7` did not block, from the
/// `blocked` range of `executions_by_state`.
///
/// The candidates come from three index ranges, each read only as far as the limit needs:
/// active executions nobody holds (`executions_by_state`, `lease_until IS NULL`: an owner and
/// its lease are set and cleared together), active ones whose lease ended before `?3` (the same
/// index, the range below `?3`, longest expired first), and waiting ones due (`executions_by_wake`).
/// No sort: a batch costs the same with ten orphans left or a hundred thousand, and executions
/// just taken (their lease now in the future) fall outside every range.
pub(super) fn claim(claiming: Claiming) -> String {
    let candidates = if claiming == Claiming::Unblock {
        "SELECT id FROM executions INDEXED BY executions_by_state
         WHERE state = 'blocked' AND workflow || '@' || version IN (SELECT value FROM json_each(?4))
           AND instr(' ' || COALESCE(blocked_by, '') || ' ', ' ' || ?7 || ' ') = 0"
            .to_owned()
    } else if claiming == Claiming::Only {
        format!(
            "SELECT id FROM executions
             WHERE id = ?6 AND workflow || '@' || version IN (SELECT value FROM json_each(?4))
               AND ((state IN {ACTIVE_STATES} AND (lease_until IS NULL OR lease_until < ?3))
                    OR (state = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?3))"
        )
    } else {
        format!(
            "SELECT id FROM executions INDEXED BY executions_by_state
             WHERE ?6 IS NULL AND state IN {ACTIVE_STATES} AND lease_until IS NULL
               AND workflow || '@' || version IN (SELECT value FROM json_each(?4))
             UNION ALL
             SELECT id FROM executions INDEXED BY executions_by_state
             WHERE ?6 IS NULL AND state IN {ACTIVE_STATES} AND lease_until < ?3
               AND workflow || '@' || version IN (SELECT value FROM json_each(?4))
             UNION ALL
             SELECT id FROM executions INDEXED BY executions_by_wake
             WHERE ?6 IS NULL AND state = 'waiting' AND wake_at IS NOT NULL AND wake_at <= ?3
               AND workflow || '@' || version IN (SELECT value FROM json_each(?4))"
        )
    };
    format!(
        "UPDATE executions SET owner = ?1, lease_until = ?2, epoch = epoch + 1,
             state = CASE WHEN state IN ('waiting', 'blocked') THEN 'running' ELSE state END,
             wake_at = CASE WHEN state = 'waiting' THEN NULL ELSE wake_at END
         WHERE id IN (SELECT id FROM ({candidates}) LIMIT ?5)
         RETURNING {}",
        rows::EXECUTION_COLUMNS
    )
}

/// A listing, newest first, with its parameters. One state is listed from
/// `executions_by_state_created`, a workflow from `executions_by_workflow`, everything from
/// `executions_by_created`, each read backwards from where the page starts (the table's key,
/// the id, ends every index entry, so ties are ordered by id with no sort). Several states at
/// once are merged by a sort.
pub(super) fn list(query: &ExecutionQuery) -> (String, Vec<Value>) {
    let mut values: Vec<Value> = Vec::new();
    let mut sql = match query.states.as_slice() {
        [state] => {
            values.push(state.as_str().to_owned().into());
            format!(
                "SELECT {} FROM executions INDEXED BY executions_by_state_created WHERE state = ?",
                rows::EXECUTION_COLUMNS
            )
        }
        [] => format!("SELECT {} FROM executions WHERE 1 = 1", rows::EXECUTION_COLUMNS),
        states => {
            let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
            values.push(serde_json::to_string(&states).unwrap_or_default().into());
            format!(
                "SELECT {} FROM executions WHERE state IN (SELECT value FROM json_each(?))",
                rows::EXECUTION_COLUMNS
            )
        }
    };
    if let Some(workflow) = &query.workflow {
        sql.push_str(" AND workflow = ?");
        values.push(workflow.clone().into());
    }
    if let Some(since) = query.since {
        sql.push_str(" AND created_at >= ?");
        values.push(since.as_micros().into());
    }
    if let Some(before) = query.before {
        sql.push_str(" AND created_at < ?");
        values.push(before.as_micros().into());
    }
    if let Some(after) = &query.after {
        // A range of the index, from where the previous page ended.
        sql.push_str(" AND (created_at, id) < (?, ?)");
        values.push(after.created_at.as_micros().into());
        values.push(after.id.to_string().into());
    }
    sql.push_str(" ORDER BY created_at DESC, id DESC");
    // SQLite takes an offset only after a limit; -1 is none.
    sql.push_str(" LIMIT ? OFFSET ?");
    values.push(query.limit.map_or(-1, |limit| limit as i64).into());
    values.push((query.offset as i64).into());
    (sql, values)
}

/// The first inbox entry of an execution's kind and name at a position or later.
pub(super) const INBOX_ENTRY: &str = "SELECT position, payload, failure, attempt FROM inbox
     WHERE execution_id = ?1 AND kind = ?2 AND name = ?3 AND position >= ?4
     ORDER BY position LIMIT 1";
