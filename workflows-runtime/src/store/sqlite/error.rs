//! How SQLite's errors become [`StoreError`]s: with what was being done, and for the failures an
//! operator can fix, how.

use crate::store::StoreError;

/// A SQLite failure while doing `context`.
pub(super) fn backend(
    context: impl Into<String>,
    source: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    let mut context = context.into();
    if let Some(hint) = (&source as &dyn std::any::Any).downcast_ref::<rusqlite::Error>().and_then(hint) {
        context = format!("{context} ({hint})");
    }
    StoreError::Backend { context, source: Box::new(source) }
}

/// How to fix the SQLite failures an operator can fix.
fn hint(error: &rusqlite::Error) -> Option<&'static str> {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code()? {
        ErrorCode::ReadOnly => Some("the file or its directory is read-only: check their permissions"),
        ErrorCode::DiskFull => Some("the disk is full, or the store reached its `max_size`: free space and retry"),
        ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => {
            Some("another process holds the file's write lock longer than the busy timeout")
        }
        ErrorCode::CannotOpen => Some("check that the directory exists and is writable"),
        ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase => {
            Some("the file is damaged or not a SQLite database: restore it from a backup")
        }
        ErrorCode::PermissionDenied => Some("permission denied: check the file's owner and mode"),
        _ => None,
    }
}
