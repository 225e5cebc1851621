//! How PostgreSQL's errors become [`StoreError`]s: with what was being done, and the whole
//! chain of causes (tokio-postgres shows only the first link: "db error", "error connecting to
//! server"), so that the message says what the server said.

use crate::store::StoreError;

/// A PostgreSQL (or pool) failure while doing `context`.
pub(super) fn backend(context: impl Into<String>, source: impl std::error::Error + 'static) -> StoreError {
    StoreError::Backend { context: context.into(), source: chain(&source).into() }
}

/// An error and its causes: `error connecting to server: Connection refused (os error 111)`.
pub(super) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    crate::error::render_chain(error)
}
