//! The [`Store`] conformance suite: one test per rule of each operation's contract, run for
//! every store, so that a listing shows each store's result (`conformance::memory::…`,
//! `conformance::sqlite::…`). A new store joins by adding a module to the [`conformance!`]
//! call below; rules that apply to one kind of store only (schema versions, for files) are
//! tested beside it.
//!
//! PostgreSQL runs when `WORKFLOWS_TEST_POSTGRES` names a server (`.ci/run` sets it), each case
//! in a schema of its own, dropped after it: the cases run in parallel and leave nothing
//! behind. Without the variable its cases pass at once, and say once how to run them.

use std::sync::Arc;

use super::contract::Store;
use super::{MemoryStore, SqliteStore};

mod cases;
pub(crate) mod fixture;

/// A store a case runs on, with what keeps it alive (a temporary directory) or cleans up after
/// it (a PostgreSQL schema).
pub(super) struct Subject {
    pub(super) store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    #[cfg(feature = "postgres")]
    _schema: Option<postgres_server::Schema>,
}

impl Subject {
    fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            _dir: None,
            #[cfg(feature = "postgres")]
            _schema: None,
        }
    }
}

async fn memory() -> Option<Subject> {
    Some(Subject::new(Arc::new(MemoryStore::new())))
}

async fn sqlite() -> Option<Subject> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("conformance.db")).expect("a new SQLite store");
    Some(Subject { _dir: Some(dir), ..Subject::new(Arc::new(store)) })
}

/// A PostgreSQL store in a new schema, or `None` when `WORKFLOWS_TEST_POSTGRES` is not set.
#[cfg(feature = "postgres")]
async fn postgres() -> Option<Subject> {
    let (store, schema) = postgres_server::fresh_store().await?;
    Some(Subject { _schema: Some(schema), ..Subject::new(Arc::new(store)) })
}

#[cfg(feature = "postgres")]
pub(crate) mod postgres_server {
    //! A PostgreSQL store per test, in a schema of its own (`WORKFLOWS_TEST_POSTGRES`).

    use crate::store::{PostgresOptions, PostgresStore};

    /// The environment variable naming the test server.
    pub(crate) const ENV: &str = "WORKFLOWS_TEST_POSTGRES";

    /// The server's URL, or `None` (said once per test binary) when the variable is not set.
    pub(crate) fn url() -> Option<String> {
        static SAID: std::sync::Once = std::sync::Once::new();
        match std::env::var(ENV) {
            Ok(url) if !url.trim().is_empty() => Some(url),
            _ => {
                // Straight to stderr: the test harness captures `eprintln!`.
                SAID.call_once(|| {
                    use std::io::Write;
                    let _ = writeln!(
                        std::io::stderr(),
                        "PostgreSQL tests skipped: set {ENV}=postgres://USER@HOST:PORT/DB to run them (`.ci/run` does)"
                    );
                });
                None
            }
        }
    }

    /// A new store in a schema named for this test, dropped when the returned guard is.
    /// Panics (fails the test, never skips it) if the server named cannot be reached.
    pub(crate) async fn fresh_store() -> Option<(PostgresStore, Schema)> {
        let url = url()?;
        let name = format!("test_{}", uuid::Uuid::now_v7().simple());
        let options = PostgresOptions::new().schema(&name).pool_size(2);
        let store = PostgresStore::connect_with(&url, options)
            .await
            .unwrap_or_else(|e| panic!("{ENV} is set, and the PostgreSQL store cannot be opened: {e}"));
        Some((store, Schema::new(&url, &name)))
    }

    /// Drops its schema when dropped (after a failed test too).
    pub(crate) struct Schema {
        url: String,
        name: String,
    }

    impl Schema {
        /// A guard for schema `name` on the server at `url`.
        pub(crate) fn new(url: &str, name: &str) -> Self {
            Self { url: url.to_owned(), name: name.to_owned() }
        }

        /// The schema's name.
        pub(crate) fn name(&self) -> &str {
            &self.name
        }
    }

    impl Drop for Schema {
        fn drop(&mut self) {
            let (url, name) = (self.url.clone(), std::mem::take(&mut self.name));
            // Its own thread and runtime: this may run inside a runtime that is shutting down.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.ok()?;
                    tokio::spawn(connection);
                    client.batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE")).await.ok()
                })
            });
            let _ = dropped.join();
        }
    }
}

/// For each store, a module with a test per case of [`cases`], named after it.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        on_store!(memory; $($case),*);
        on_store!(sqlite; $($case),*);
        #[cfg(feature = "postgres")]
        on_store!(postgres; $($case),*);
    };
}

macro_rules! on_store {
    ($store:ident; $($case:ident),*) => {
        mod $store {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(subject) = super::$store().await else { return };
                    super::cases::$case(&*subject.store).await;
                }
            )*
        }
    };
}

conformance!(
    create_is_idempotent,
    a_blocked_execution_is_claimed_only_by_another_build_or_to_be_cancelled,
    a_claim_takes_only_executions_whose_lease_expired,
    an_execution_created_without_an_owner_is_claimed_at_once,
    a_claim_takes_only_the_workflows_it_names_and_no_more_than_its_limit,
    fencing_refuses_a_stale_epoch_atomically,
    appends_follow_the_journal_without_gaps_or_repeats,
    a_transition_is_written_with_its_entries,
    renewal_extends_leases_and_release_gives_them_up,
    releasing_one_execution_checks_its_epoch,
    a_suspended_execution_is_woken_by_a_delivery,
    a_suspend_behind_a_delivery_is_refused,
    a_suspend_with_a_stale_epoch_is_fenced,
    deliveries_are_kept_in_order_per_name,
    wake_up_times_come_due,
    exclusive_keys_queue_and_hand_over,
    a_key_held_refuses_a_start_that_asks_not_to_queue,
    cancellation_requests_reach_the_owner_and_stop_a_suspend,
    cancelling_a_waiting_execution_wakes_it,
    purge_deletes_finished_executions_past_their_retention,
    purge_by_finish_time_and_within_its_limit,
    deliveries_to_finished_unknown_or_timed_out_executions_are_refused,
    an_async_step_takes_the_first_completion_of_its_token,
    a_delivery_written_with_an_append_lands_with_it,
    reopen_takes_a_completed_execution_into_compensation,
    the_token_key_is_made_once,
    listing_filters_and_pages_newest_first,
    a_fresh_store_checks_clean,
    a_queue_admits_within_its_concurrency_oldest_first,
    a_queue_starts_no_more_than_its_rate_in_a_window,
    queued_executions_take_their_key_when_admitted_and_cancel_at_once,
    schedules_are_stored_at_first_sight_and_advanced_by_compare_and_set,
    events_are_recorded_once_and_listed_until_dispatched,
    events_a_step_emits_are_held_until_its_execution_completes,
    a_child_s_held_events_follow_its_parent,
    dispatched_events_are_purged_after_their_retention,
    undelivered_events_are_recorded_listed_and_forgotten,
);

/// The rules of file stores: a store written by a newer schema is refused, and left as it was.
mod sqlite_files {
    #[test]
    fn a_store_of_a_newer_schema_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("newer.db");
        drop(super::SqliteStore::open(&path).unwrap());
        let newer = crate::store::SCHEMA_VERSION + 1;
        rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", newer).unwrap();
        let before = std::fs::read(&path).unwrap();
        let error = super::SqliteStore::open(&path).err().expect("refused");
        let message = error.to_string();
        assert!(matches!(error, crate::StoreError::NewerSchema { found, .. } if found == newer), "{message}");
        assert!(message.contains("upgrade workflows-runtime"), "{message}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "the file is untouched");
    }
}

/// The rules of the PostgreSQL store's schema: migrated once however many processes start at
/// once, a newer schema refused untouched, an unreachable server named without its password.
#[cfg(feature = "postgres")]
mod postgres_schemas {
    use super::postgres_server::{Schema, fresh_store, url};
    use crate::store::{PostgresOptions, PostgresStore, StoreError};

    #[tokio::test]
    async fn ten_stores_opening_a_new_schema_at_once_migrate_it_once() {
        let Some((first, schema)) = fresh_store().await else { return };
        drop(first);
        let name = format!("{}_many", schema_name(&schema));
        let url = url().unwrap();
        let opened = futures_util::future::join_all((0..10).map(|_| {
            let (url, name) = (url.clone(), name.clone());
            async move { PostgresStore::connect_with(&url, PostgresOptions::new().schema(name).pool_size(2)).await }
        }))
        .await;
        let cleanup = drop_schema_later(&url, &name);
        for store in &opened {
            assert!(store.is_ok(), "{:?}", store.as_ref().err().map(ToString::to_string));
        }
        let client = connect(&url).await;
        let versions = client
            .query(&format!("SELECT value FROM {name}.store_info WHERE key = 'schema_version'"), &[])
            .await
            .unwrap();
        assert_eq!(versions.len(), 1);
        assert_eq!(versions[0].get::<_, String>(0), crate::store::postgres::SCHEMA_VERSION.to_string());
        drop(cleanup);
    }

    #[tokio::test]
    async fn a_schema_of_a_newer_version_is_refused_untouched() {
        let Some((store, schema)) = fresh_store().await else { return };
        drop(store);
        let (url, name) = (url().unwrap(), schema_name(&schema));
        let client = connect(&url).await;
        let newer = crate::store::postgres::SCHEMA_VERSION + 1;
        client
            .execute(
                &format!("UPDATE {name}.store_info SET value = $1 WHERE key = 'schema_version'"),
                &[&newer.to_string()],
            )
            .await
            .unwrap();
        let tables = |client: tokio_postgres::Client, name: String| async move {
            let rows = client
                .query("SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1", &[&name])
                .await
                .unwrap();
            (client, rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>())
        };
        let (client, before) = tables(client, name.clone()).await;
        let error = PostgresStore::connect_with(&url, PostgresOptions::new().schema(&name)).await.expect_err("refused");
        let message = error.to_string();
        assert!(matches!(error, StoreError::NewerSchema { found, .. } if found == newer), "{message}");
        assert!(message.contains(&format!("schema version {newer}")), "{message}");
        assert!(message.contains(&format!("({})", newer - 1)), "{message}");
        assert!(message.contains(&format!("schema {name}")), "{message}");
        let (_, after) = tables(client, name).await;
        assert_eq!(before, after, "nothing was changed");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_named_without_its_password() {
        // Port 9 (discard) on this host: nothing listens there.
        let url = "postgres://app:s3cret@127.0.0.1:9/orders";
        let options = PostgresOptions::new().connect_timeout(std::time::Duration::from_secs(5));
        let error = PostgresStore::connect_with(url, options).await.expect_err("unreachable");
        let message = error.to_string();
        assert!(message.contains("postgres://app@127.0.0.1:9/orders"), "{message}");
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("cannot connect"), "{message}");
    }

    fn schema_name(schema: &Schema) -> String {
        schema.name().to_owned()
    }

    async fn connect(url: &str) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client
    }

    fn drop_schema_later(url: &str, name: &str) -> Schema {
        Schema::new(url, name)
    }
}
