//! Where executions and their journals live: the store contract ([`Store`], crate-private:
//! the engine and its stores change together) and its implementations.
//!
//! The engine is the only writer of an execution while it holds the execution's lease; every
//! write carries the lease's `epoch`, and a store refuses writes with an older epoch, so an
//! engine that lost its lease (it stalled, another engine took over) cannot corrupt the journal.

mod commands;
#[cfg(test)]
pub(crate) mod conformance;
mod contract;
#[cfg(test)]
pub(crate) mod hooked;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
pub(crate) mod queues;
mod sqlite;

use std::sync::Arc;

pub(crate) use contract::{
    AppendBatch, Claim, CreateOutcome, Delivered, Delivery, ExecutionList, InboxEntry, InboxKind, JournalEntries,
    NewEvent, NewExecution, Notice, OwnerLeases, Purge, Renewal, Renewals, Renewed, Reopen, Reopened, Reopening,
    ScheduleAdvance, ScheduleState, StepEvent, Store, StoreAck, StoreFuture, Suspend, Suspended, Transition, WriteAck,
    WriteMode,
};
pub use contract::{CheckReport, DamagedExecution, Durability, ExecutionQuery, PageCursor, StoreError, Undelivered};
pub(crate) use contract::{
    blocked_by_list, blocked_by_text, random_token_key, refused_by_earlier, stored_step_attempt,
};
pub use memory::MemoryStore;
#[cfg(feature = "postgres")]
pub use postgres::{PostgresOptions, PostgresStore};
#[cfg(test)]
pub(crate) use sqlite::SCHEMA_VERSION;
pub use sqlite::{SqliteOptions, SqliteStore};

/// What [`EngineBuilder::store`](crate::EngineBuilder::store) takes: a [`MemoryStore`] or a
/// [`SqliteStore`], or an `Arc` of either to share one store between engines (tests do, to
/// show an execution resuming on a new engine).
///
/// Sealed: the contract between the engine and its stores is internal — it changes with the
/// engine, and every store is tested against it in this crate.
pub trait IntoStore: sealed::Sealed {}

mod sealed {
    use std::sync::Arc;

    use crate::store::{IntoStore, MemoryStore, SqliteStore, Store};

    /// A store, type-erased, as the engine keeps it. Opaque outside this crate.
    pub struct Shared(pub(crate) Arc<dyn Store>);

    /// Implemented by this crate's stores only.
    pub trait Sealed {
        /// The store, as the engine keeps it.
        fn into_shared(self) -> Shared;
    }

    impl<S: Store> Sealed for S {
        fn into_shared(self) -> Shared {
            Shared(Arc::new(self))
        }
    }

    impl<S: Store> Sealed for Arc<S> {
        fn into_shared(self) -> Shared {
            Shared(self)
        }
    }

    impl IntoStore for MemoryStore {}
    impl IntoStore for SqliteStore {}
    impl IntoStore for Arc<MemoryStore> {}
    impl IntoStore for Arc<SqliteStore> {}
    #[cfg(feature = "postgres")]
    impl IntoStore for crate::store::PostgresStore {}
    #[cfg(feature = "postgres")]
    impl IntoStore for Arc<crate::store::PostgresStore> {}
}

/// The environment variable naming the default store (see [`open_url`]).
pub(crate) const STORE_ENV: &str = "WORKFLOWS_STORE";

/// The store used when none is configured: `sqlite:workflows.db` in the working directory.
pub(crate) const DEFAULT_STORE_URL: &str = "sqlite:workflows.db";

/// The store named by `$WORKFLOWS_STORE`, or [`DEFAULT_STORE_URL`].
pub(crate) fn default_url() -> String {
    std::env::var(STORE_ENV).ok().filter(|url| !url.trim().is_empty()).unwrap_or_else(|| DEFAULT_STORE_URL.to_owned())
}

/// Opens the store a URL names: `sqlite:PATH` (a file, created if missing), `memory`, or
/// `postgres://…` (with the `postgres` feature). File stores are opened off the async threads.
pub(crate) async fn open_url(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let url = url.trim();
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        if path.is_empty() {
            return Err(StoreError::Unavailable("`sqlite:` needs a file path, e.g. `sqlite:workflows.db`".into()));
        }
        let path = path.to_owned();
        return tokio::task::spawn_blocking(crate::time::on_this_clock(move || {
            SqliteStore::open(path).map(|s| Arc::new(s) as Arc<dyn Store>)
        }))
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the store was interrupted: {e}")))?;
    }
    if is_postgres_url(url) {
        #[cfg(feature = "postgres")]
        return Ok(Arc::new(PostgresStore::connect(url).await?));
        #[cfg(not(feature = "postgres"))]
        return Err(StoreError::Unavailable(
            "this build has no PostgreSQL store: enable the `postgres` feature of workflows-runtime".into(),
        ));
    }
    Err(StoreError::Unavailable(format!(
        "`{url}` is not a store this build can open; use `sqlite:PATH` (e.g. `sqlite:workflows.db`), \
         `postgres://USER@HOST/DB` or `memory`"
    )))
}

/// True if `url` names a PostgreSQL database.
pub(crate) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}
