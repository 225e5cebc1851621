//! The PostgreSQL schema and its versioned migrations.
//!
//! Everything lives in one PostgreSQL schema of its own (`workflows` unless configured), so an
//! application shares its database safely. Its `store_info` table holds the schema version.
//! Opening applies the missing migrations in one transaction under an advisory lock: ten
//! processes starting at once migrate once, the others wait and find it done. A schema written
//! by a newer build is refused, untouched.

use tokio_postgres::Client;

use super::error::backend;
use crate::store::StoreError;

/// Migration `n` (1-based) brings the schema from version `n - 1` to `n`. Times are
/// microseconds since the Unix epoch (as on SQLite); JSON is stored as the text written (so a
/// record reads back byte for byte).
const MIGRATIONS: &[&str] = &[
    // 1: executions, journals, inboxes, the completion-token key.
    r#"
    CREATE TABLE executions (
        id               TEXT PRIMARY KEY,
        workflow         TEXT NOT NULL,
        fingerprint      TEXT NOT NULL,
        version          BIGINT NOT NULL,
        input            TEXT NOT NULL,
        state            TEXT NOT NULL,
        result           TEXT,
        failure          TEXT,
        created_at       BIGINT NOT NULL,
        updated_at       BIGINT NOT NULL,
        owner            TEXT,
        lease_until      BIGINT,
        epoch            BIGINT NOT NULL,
        exclusive_key    TEXT,
        rerun_of         TEXT,
        cancel_requested BOOLEAN NOT NULL DEFAULT false,
        retain_until     BIGINT,
        wake_at          BIGINT,
        wakeups          BIGINT NOT NULL DEFAULT 0,
        parent_id        TEXT,
        parent_key       TEXT,
        deadline         BIGINT,
        journal_len      BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX executions_by_state ON executions (state, lease_until);
    CREATE INDEX executions_by_created ON executions (created_at, id);
    CREATE INDEX executions_by_workflow ON executions (workflow, created_at, id);
    CREATE INDEX executions_by_state_created ON executions (state, created_at, id);
    CREATE INDEX executions_by_owner ON executions (owner) WHERE owner IS NOT NULL;
    CREATE INDEX executions_by_key ON executions (exclusive_key, state, created_at) WHERE exclusive_key IS NOT NULL;
    CREATE INDEX executions_by_retention ON executions (retain_until) WHERE retain_until IS NOT NULL;
    CREATE INDEX executions_by_wake ON executions (wake_at) WHERE state = 'waiting' AND wake_at IS NOT NULL;
    CREATE INDEX executions_by_parent ON executions (parent_id) WHERE parent_id IS NOT NULL;
    CREATE INDEX executions_finished ON executions (updated_at)
        WHERE state IN ('completed', 'compensated', 'compensation_failed', 'cancelled', 'timed_out', 'failed');

    CREATE TABLE journal (
        execution_id TEXT NOT NULL,
        idx          BIGINT NOT NULL,
        at           BIGINT NOT NULL,
        kind         TEXT NOT NULL,
        call_key     TEXT NOT NULL,
        event        TEXT NOT NULL,
        PRIMARY KEY (execution_id, idx)
    );

    CREATE TABLE inbox (
        execution_id TEXT NOT NULL,
        kind         TEXT NOT NULL,
        name         TEXT NOT NULL,
        position     BIGINT NOT NULL,
        payload      TEXT,
        failure      TEXT,
        at           BIGINT NOT NULL,
        attempt      BIGINT,
        PRIMARY KEY (execution_id, kind, name, position)
    );

    CREATE TABLE secrets (
        name       TEXT PRIMARY KEY,
        value      BYTEA NOT NULL,
        created_at BIGINT NOT NULL
    );
    "#,
    // 2: the executions an engine may have to take over, alone in an index of their own: a
    // claim reads it (never an index of every execution of a workflow, finished ones too),
    // whatever the planner estimates of a table it has not analyzed yet.
    r#"
    CREATE INDEX executions_active ON executions (lease_until)
        WHERE state IN ('pending', 'running', 'compensating');
    "#,
    // 3: half of every page of executions left free, so that a row's new version (its end, a
    // renewal) fits beside it. Kept on a measurement that is not conclusive: concurrent-10
    // (`bench --store postgres`) ran at 9,200–9,600 steps/s without it and 18,000–20,800 with
    // it back to back, but later runs with it ranged from 7,200 to 23,500 on this noisy
    // machine.
    r#"
    ALTER TABLE executions SET (fillfactor = 50);
    "#,
    // 4: queues (see `store::queues`): their stored limits; each execution's queue and when
    // the queue admitted it; the queued executions of a queue in order, the ones holding its
    // slots, and its starts by time, each a range of an index.
    r#"
    ALTER TABLE executions ADD COLUMN queue TEXT;
    ALTER TABLE executions ADD COLUMN admitted_at BIGINT;
    CREATE TABLE queues (
        name        TEXT PRIMARY KEY,
        concurrency BIGINT,
        rate_starts BIGINT,
        rate_per    BIGINT,
        defined_at  BIGINT NOT NULL
    );
    CREATE INDEX executions_queued ON executions (queue, created_at, id) WHERE state = 'queued';
    CREATE INDEX executions_by_queue ON executions (queue, state) WHERE queue IS NOT NULL;
    CREATE INDEX executions_admitted ON executions (queue, admitted_at) WHERE admitted_at IS NOT NULL;
    "#,
    // 5: schedules (see `Store::schedules`): when each was first seen, up to which instant its
    // ticks were taken care of, whether it is paused, and its latest run.
    r#"
    CREATE TABLE schedules (
        name     TEXT PRIMARY KEY,
        since    BIGINT NOT NULL,
        handled  BIGINT NOT NULL,
        paused   BOOLEAN NOT NULL DEFAULT false,
        last_run TEXT
    );
    "#,
    // 6: events the application emits (see `Store::record_event`), the ones to dispatch in an
    // index of their own.
    r#"
    CREATE TABLE events (
        id         TEXT PRIMARY KEY,
        name       TEXT NOT NULL,
        payload    TEXT NOT NULL,
        emitted_at BIGINT NOT NULL,
        dispatched BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX events_undispatched ON events (emitted_at, id) WHERE NOT dispatched;
    "#,
    // 7: events a step emitted, held by their execution until it completes (see
    // `AppendBatch::events`).
    r#"
    ALTER TABLE events ADD COLUMN held_by TEXT;
    CREATE INDEX events_held ON events (held_by) WHERE held_by IS NOT NULL;
    "#,
    // 8: the ticks a schedule missed: how many, and the latest.
    r#"
    ALTER TABLE schedules ADD COLUMN missed BIGINT NOT NULL DEFAULT 0;
    ALTER TABLE schedules ADD COLUMN last_missed BIGINT;
    "#,
    // 9: the events a subscriber's execution could not be started for (see
    // `Store::record_undelivered`), the ones due to be tried again in an index of their own;
    // the dispatched events by time, purged after their retention; the events to dispatch
    // (neither dispatched nor held) alone in their index, which the planner then reads
    // whatever it estimates of the table.
    r#"
    DROP INDEX events_undispatched;
    CREATE INDEX events_undispatched ON events (emitted_at, id) WHERE NOT dispatched AND held_by IS NULL;
    CREATE TABLE undelivered (
        event_id        TEXT NOT NULL,
        subscriber      TEXT NOT NULL,
        name            TEXT NOT NULL,
        payload         TEXT NOT NULL,
        emitted_at      BIGINT NOT NULL,
        attempts        BIGINT NOT NULL,
        error           TEXT NOT NULL,
        first_failed_at BIGINT NOT NULL,
        last_failed_at  BIGINT NOT NULL,
        retry_at        BIGINT,
        PRIMARY KEY (event_id, subscriber)
    );
    CREATE INDEX undelivered_due ON undelivered (retry_at) WHERE retry_at IS NOT NULL;
    CREATE INDEX events_dispatched ON events (emitted_at) WHERE dispatched;
    "#,
    // 10: the builds that could not replay a `blocked` execution (space-separated; see
    // `ExecutionRecord::blocked_by`).
    r#"
    ALTER TABLE executions ADD COLUMN blocked_by TEXT;
    "#,
];

/// The name of the completion-token key in `secrets`.
pub(super) const TOKEN_KEY: &str = "completion_tokens";

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// True if `name` can name the store's PostgreSQL schema: a plain lower-case identifier, so it
/// is used unquoted and never needs escaping.
pub(super) fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 63
}

/// Creates the schema if missing, checks its version, and applies the missing migrations.
pub(super) async fn migrate(client: &mut Client, schema: &str, store: &str) -> Result<(), StoreError> {
    let context = || format!("cannot open the workflows store {store}");
    let tx = client.transaction().await.map_err(|e| backend(context(), e))?;
    // One migrator at a time per schema, whatever the number of processes starting.
    tx.execute("SELECT pg_advisory_xact_lock(hashtext('workflows schema ' || $1::text))", &[&schema])
        .await
        .map_err(|e| backend(format!("{}: cannot lock it to check its schema", context()), e))?;
    // Quietly: the server's notices that they exist already ("schema ... already exists,
    // skipping") would reach the application's log at every start.
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning;
         CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE IF NOT EXISTS {schema}.store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    ))
    .await
    .map_err(|e| backend(context(), e))?;
    let found = tx
        .query_opt(&format!("SELECT value FROM {schema}.store_info WHERE key = 'schema_version'"), &[])
        .await
        .map_err(|e| backend(context(), e))?;
    let version = match found {
        None => 0,
        Some(row) => {
            let text: String = row.get(0);
            text.parse::<i64>().map_err(|_| StoreError::NotAStore {
                path: store.into(),
                detail: format!("its schema version is `{text}`, not a number"),
            })?
        }
    };
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema { path: store.into(), found: version, supported: SCHEMA_VERSION });
    }
    if version == SCHEMA_VERSION {
        return tx.commit().await.map_err(|e| backend(context(), e));
    }
    if version == 0 {
        let existing: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name <> 'store_info'",
                &[&schema],
            )
            .await
            .map_err(|e| backend(context(), e))?
            .get(0);
        if existing > 0 {
            return Err(StoreError::NotAStore {
                path: store.into(),
                detail: format!(
                    "its PostgreSQL schema `{schema}` holds {existing} tables of another application; choose another \
                     schema name for the workflows store"
                ),
            });
        }
    }
    tx.batch_execute(&format!("SET LOCAL search_path TO {schema}")).await.map_err(|e| backend(context(), e))?;
    for next in version + 1..=SCHEMA_VERSION {
        let failed = |e| backend(format!("{}: migration to schema version {next} failed", context()), e);
        tx.batch_execute(MIGRATIONS[(next - 1) as usize]).await.map_err(failed)?;
        if next == 1 {
            let key = crate::store::random_token_key();
            tx.execute(
                "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3)",
                &[&TOKEN_KEY, &&key[..], &crate::time::Timestamp::now().as_micros()],
            )
            .await
            .map_err(failed)?;
        }
    }
    tx.execute(
        "INSERT INTO store_info (key, value) VALUES ('schema_version', $1)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&SCHEMA_VERSION.to_string()],
    )
    .await
    .map_err(|e| backend(context(), e))?;
    tx.commit().await.map_err(|e| backend(context(), e))
}
