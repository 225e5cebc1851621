//! Where executions and their journals live: the [`Store`] trait and its implementations.
//!
//! The engine is the only writer of an execution while it holds the execution's lease; every
//! write carries the lease's `epoch`, and a store refuses writes with an older epoch, so an
//! engine that lost its lease (it stalled, another engine took over) cannot corrupt the journal.

#[cfg(test)]
mod conformance;
mod contract;
mod memory;
mod sqlite;

use std::sync::Arc;

pub use contract::{
    AppendBatch, CheckReport, Claim, CreateOutcome, DamagedExecution, Delivered, Delivery, Durability, ExecutionList,
    ExecutionQuery, InboxEntry, InboxKind, JournalEntries, NewExecution, OwnerLeases, Purge, Renewed, Reopen, Reopened,
    Store, StoreAck, StoreError, StoreFuture, Suspend, Suspended, Transition, WriteAck, WriteMode,
};
pub(crate) use contract::{async_step_attempt, random_token_key};
pub use memory::MemoryStore;
pub use sqlite::{SCHEMA_VERSION, SqliteOptions, SqliteStore};

/// The environment variable naming the default store (see [`open_url`]).
pub const STORE_ENV: &str = "WORKFLOWS_STORE";

/// The store used when none is configured: `sqlite:workflows.db` in the working directory.
pub const DEFAULT_STORE_URL: &str = "sqlite:workflows.db";

/// The store named by `$WORKFLOWS_STORE`, or [`DEFAULT_STORE_URL`].
pub fn default_url() -> String {
    std::env::var(STORE_ENV).ok().filter(|url| !url.trim().is_empty()).unwrap_or_else(|| DEFAULT_STORE_URL.to_owned())
}

/// Opens the store a URL names: `sqlite:PATH` (a file, created if missing) or `memory`.
/// Blocking for file stores.
pub fn open_url(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    let url = url.trim();
    if url == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
        if path.is_empty() {
            return Err(StoreError::Unavailable("`sqlite:` needs a file path, e.g. `sqlite:workflows.db`".into()));
        }
        return Ok(Arc::new(SqliteStore::open(path)?));
    }
    Err(StoreError::Unavailable(format!(
        "`{url}` is not a store this build can open; use `sqlite:PATH` (e.g. `sqlite:workflows.db`) or `memory`"
    )))
}
