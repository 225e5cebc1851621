//! The SQLite schema and its versioned migrations.
//!
//! The file's `application_id` marks it as a workflows store; its `user_version` is the schema
//! version. Opening applies the missing migrations, each in its own transaction; a file
//! written by a newer schema is refused, untouched.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior, params};

use super::checksum;
use super::error::backend;
use crate::store::StoreError;

/// "WFLW": identifies a workflows store among SQLite files.
pub(super) const APPLICATION_ID: i32 = 0x5746_4c57;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`.
const MIGRATIONS: &[&str] = &[
    // 1: executions and their journals.
    r#"
    CREATE TABLE executions (
        id          TEXT PRIMARY KEY NOT NULL,
        workflow    TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        version     INTEGER NOT NULL,
        input       TEXT NOT NULL,
        state       TEXT NOT NULL,
        result      TEXT,
        failure     TEXT,
        created_at  INTEGER NOT NULL,
        updated_at  INTEGER NOT NULL,
        owner       TEXT,
        lease_until INTEGER,
        epoch       INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX executions_by_state ON executions (state, lease_until);
    CREATE INDEX executions_by_created ON executions (created_at);
    CREATE INDEX executions_by_workflow ON executions (workflow, created_at);
    CREATE INDEX executions_by_owner ON executions (owner) WHERE owner IS NOT NULL;

    CREATE TABLE journal (
        execution_id TEXT NOT NULL,
        idx          INTEGER NOT NULL,
        at           INTEGER NOT NULL,
        kind         TEXT NOT NULL,
        step_key     TEXT NOT NULL,
        event        TEXT NOT NULL,
        PRIMARY KEY (execution_id, idx)
    ) WITHOUT ROWID;
    "#,
    // 2: exclusive keys, re-runs, cancellation requests, retention.
    r#"
    ALTER TABLE executions ADD COLUMN exclusive_key TEXT;
    ALTER TABLE executions ADD COLUMN rerun_of TEXT;
    ALTER TABLE executions ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN retain_until INTEGER;
    CREATE INDEX executions_by_key ON executions (exclusive_key, state, created_at) WHERE exclusive_key IS NOT NULL;
    CREATE INDEX executions_by_retention ON executions (retain_until) WHERE retain_until IS NOT NULL;
    "#,
    // 3: suspension (wake-up times and counts), child executions, the inbox of deliveries.
    r#"
    ALTER TABLE executions ADD COLUMN wake_at INTEGER;
    ALTER TABLE executions ADD COLUMN wakeups INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN parent_id TEXT;
    ALTER TABLE executions ADD COLUMN parent_key TEXT;
    CREATE INDEX executions_by_wake ON executions (wake_at) WHERE state = 'waiting' AND wake_at IS NOT NULL;
    CREATE INDEX executions_by_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;

    CREATE TABLE inbox (
        execution_id TEXT NOT NULL,
        kind         TEXT NOT NULL,
        name         TEXT NOT NULL,
        position     INTEGER NOT NULL,
        payload      TEXT,
        failure      TEXT,
        at           INTEGER NOT NULL,
        PRIMARY KEY (execution_id, kind, name, position)
    ) WITHOUT ROWID;
    "#,
    // 4: the deadline of executions of workflows with a timeout (a suspended one wakes at it,
    // and deliveries after it are refused).
    r#"
    ALTER TABLE executions ADD COLUMN deadline INTEGER;
    "#,
    // 5: the attempt an async step's completion from outside was delivered to (one per attempt).
    r#"
    ALTER TABLE inbox ADD COLUMN attempt INTEGER;
    "#,
    // 6: checksums (see `checksum`), filled in for the rows already there by `backfill`.
    r#"
    ALTER TABLE executions ADD COLUMN journal_len INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE executions ADD COLUMN checksum INTEGER;
    ALTER TABLE executions ADD COLUMN result_checksum INTEGER;
    ALTER TABLE journal ADD COLUMN checksum INTEGER;
    UPDATE executions SET journal_len = (SELECT COUNT(*) FROM journal WHERE journal.execution_id = executions.id);
    "#,
    // 7: the key completion tokens are signed with, made by `backfill` (its `created_at` tells
    // the steps that started before: they may still be completed with unsigned tokens).
    r#"
    CREATE TABLE secrets (
        name       TEXT PRIMARY KEY NOT NULL,
        value      BLOB NOT NULL,
        created_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 8: the journal's key column names what it holds for every journaled call — a step's, a
    // timer's, an event wait's, a child's: its call key, not a "step key".
    r#"
    ALTER TABLE journal RENAME COLUMN step_key TO call_key;
    "#,
    // 9: listing by state newest first, and purging by finish time, from indexes (no scan of
    // the finished executions, no sort). The partial index's condition is `FINISHED_STATES`.
    r#"
    CREATE INDEX executions_by_state_created ON executions (state, created_at);
    CREATE INDEX executions_finished ON executions (updated_at)
        WHERE state IN ('completed', 'compensated', 'compensation_failed', 'cancelled', 'timed_out', 'failed');
    "#,
    // 10: queues (see `store::queues`): their stored limits; each execution's queue and when
    // the queue admitted it; the queued executions of a queue in order, the ones holding its
    // slots, and its starts by time, each a range of an index.
    r#"
    ALTER TABLE executions ADD COLUMN queue TEXT;
    ALTER TABLE executions ADD COLUMN admitted_at INTEGER;
    CREATE TABLE queues (
        name        TEXT PRIMARY KEY NOT NULL,
        concurrency INTEGER,
        rate_starts INTEGER,
        rate_per    INTEGER,
        defined_at  INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX executions_queued ON executions (queue, created_at) WHERE state = 'queued';
    CREATE INDEX executions_by_queue ON executions (queue, state) WHERE queue IS NOT NULL;
    CREATE INDEX executions_admitted ON executions (queue, admitted_at) WHERE admitted_at IS NOT NULL;
    "#,
    // 11: schedules (see `Store::schedules`): when each was first seen, up to which instant its
    // ticks were taken care of, whether it is paused, and its latest run.
    r#"
    CREATE TABLE schedules (
        name     TEXT PRIMARY KEY NOT NULL,
        since    INTEGER NOT NULL,
        handled  INTEGER NOT NULL,
        paused   INTEGER NOT NULL DEFAULT 0,
        last_run TEXT
    ) WITHOUT ROWID;
    "#,
    // 12: events the application emits (see `Store::record_event`), the ones to dispatch in
    // an index of their own.
    r#"
    CREATE TABLE events (
        id         TEXT PRIMARY KEY NOT NULL,
        name       TEXT NOT NULL,
        payload    TEXT NOT NULL,
        emitted_at INTEGER NOT NULL,
        dispatched INTEGER NOT NULL DEFAULT 0
    ) WITHOUT ROWID;
    CREATE INDEX events_undispatched ON events (emitted_at, id) WHERE dispatched = 0;
    "#,
    // 13: events a step emitted, held by their execution until it completes (see
    // `AppendBatch::events`).
    r#"
    ALTER TABLE events ADD COLUMN held_by TEXT;
    CREATE INDEX events_held ON events (held_by) WHERE held_by IS NOT NULL;
    "#,
    // 14: the ticks a schedule missed: how many, and the latest.
    r#"
    ALTER TABLE schedules ADD COLUMN missed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE schedules ADD COLUMN last_missed INTEGER;
    "#,
    // 15: the events a subscriber's execution could not be started for (see
    // `Store::record_undelivered`), the ones due to be tried again in an index of their own;
    // the dispatched events by time, purged after their retention.
    r#"
    CREATE TABLE undelivered (
        event_id        TEXT NOT NULL,
        subscriber      TEXT NOT NULL,
        name            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        emitted_at      INTEGER NOT NULL,
        attempts        INTEGER NOT NULL,
        error           TEXT NOT NULL,
        first_failed_at INTEGER NOT NULL,
        last_failed_at  INTEGER NOT NULL,
        retry_at        INTEGER,
        PRIMARY KEY (event_id, subscriber)
    ) WITHOUT ROWID;
    CREATE INDEX undelivered_due ON undelivered (retry_at) WHERE retry_at IS NOT NULL;
    CREATE INDEX events_dispatched ON events (emitted_at) WHERE dispatched = 1;
    "#,
    // 16: the builds that could not replay a `blocked` execution (space-separated; see
    // `ExecutionRecord::blocked_by`).
    r#"
    ALTER TABLE executions ADD COLUMN blocked_by TEXT;
    "#,
];

/// The name of the completion-token key in `secrets`.
pub(super) const TOKEN_KEY: &str = "completion_tokens";

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Checks the file is a workflows store of a version this build can use, and applies the
/// missing migrations.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let context = || format!("cannot open the workflows store {}", path.display());
    loop {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| backend(format!("{}: cannot lock it to check its schema", context()), e))?;
        let (application_id, version) = read_header(&tx).map_err(|e| backend(context(), e))?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema { path: path.to_owned(), found: version, supported: SCHEMA_VERSION });
        }
        if application_id != APPLICATION_ID {
            let has_tables: bool = tx
                .query_row("SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table')", [], |r| r.get(0))
                .map_err(|e| backend(context(), e))?;
            if application_id != 0 || has_tables {
                return Err(StoreError::NotAStore {
                    path: path.to_owned(),
                    detail: format!(
                        "it is a SQLite database of another application (application_id {application_id:#x}, \
                         expected {APPLICATION_ID:#x}); point the engine at a new file or an existing workflows store"
                    ),
                });
            }
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        // One migration per transaction: a crash leaves the file at a consistent version.
        let next = version + 1;
        let sql = MIGRATIONS[(next - 1) as usize];
        let apply = || -> rusqlite::Result<()> {
            tx.execute_batch(sql)?;
            backfill(&tx, next)?;
            tx.pragma_update(None, "application_id", APPLICATION_ID)?;
            tx.pragma_update(None, "user_version", next)?;
            Ok(())
        };
        apply().map_err(|e| backend(format!("{}: migration to schema version {next} failed", context()), e))?;
        tx.commit().map_err(|e| backend(format!("{}: migration to schema version {next} failed", context()), e))?;
    }
}

/// What a migration computes in Rust for the rows already there, after its SQL.
fn backfill(conn: &Connection, version: i64) -> rusqlite::Result<()> {
    if version == 7 {
        let key = crate::store::random_token_key();
        conn.execute(
            "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3)",
            params![TOKEN_KEY, &key[..], crate::time::Timestamp::now().as_micros()],
        )?;
        return Ok(());
    }
    if version != 6 {
        return Ok(());
    }
    // Rows that do not decode as text keep no checksum: they read back as damaged, as before.
    let mut update = conn.prepare("UPDATE journal SET checksum = ?3 WHERE execution_id = ?1 AND idx = ?2")?;
    // `step_key`: renamed `call_key` by migration 8, later.
    let mut entries = conn.prepare("SELECT execution_id, idx, at, kind, step_key, event FROM journal")?;
    let mut rows = entries.query([])?;
    while let Some(row) = rows.next()? {
        let (Ok(id), Ok(index), Ok(at), Ok(kind), Ok(key), Ok(event)) = (
            row.get::<_, String>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, String>(3),
            row.get::<_, String>(4),
            row.get::<_, String>(5),
        ) else {
            continue;
        };
        update.execute(params![id, index, checksum::journal_entry(&id, index, at, &kind, &key, &event)])?;
    }
    drop(rows);
    let mut update = conn.prepare("UPDATE executions SET checksum = ?2, result_checksum = ?3 WHERE id = ?1")?;
    let mut executions = conn.prepare(
        "SELECT id, workflow, fingerprint, version, input, created_at, exclusive_key, rerun_of, parent_id,
                parent_key, deadline, result
         FROM executions",
    )?;
    let mut rows = executions.query([])?;
    while let Some(row) = rows.next()? {
        let decoded = (|| -> rusqlite::Result<(String, i64, Option<i64>)> {
            let id: String = row.get(0)?;
            let content = checksum::content(&checksum::Content {
                id: &id,
                workflow: &row.get::<_, String>(1)?,
                fingerprint: &row.get::<_, String>(2)?,
                version: row.get(3)?,
                input: &row.get::<_, String>(4)?,
                created_at: row.get(5)?,
                exclusive_key: row.get::<_, Option<String>>(6)?.as_deref(),
                rerun_of: row.get::<_, Option<String>>(7)?.as_deref(),
                parent_id: row.get::<_, Option<String>>(8)?.as_deref(),
                parent_key: row.get::<_, Option<String>>(9)?.as_deref(),
                deadline: row.get(10)?,
                queue: None,
            });
            let result = row.get::<_, Option<String>>(11)?.as_deref().map(checksum::result);
            Ok((id, content, result))
        })();
        if let Ok((id, content, result)) = decoded {
            update.execute(params![id, content, result])?;
        }
    }
    Ok(())
}

fn read_header(conn: &Connection) -> rusqlite::Result<(i32, i64)> {
    let application_id: i32 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    Ok((application_id, version))
}
