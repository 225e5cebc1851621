//! The integrity check: SQLite's own check of the file, then every execution row and journal
//! read back and verified against its checksums (see [`super::checksum`]). Run on demand
//! (`workflows check`, [`SqliteStore::check`](super::SqliteStore::check)) and, in the
//! background, when a store is opened after an unclean shutdown (see [`super::session`]).

use rusqlite::Connection;

use super::error::backend;
use super::rows::{self, read_journal};
use crate::execution::ExecutionId;
use crate::store::{CheckReport, DamagedExecution, StoreError};

/// Checks the whole store through `conn` (a read connection). `full` runs SQLite's
/// `integrity_check` (which also checks that indexes match their tables) instead of the faster
/// `quick_check`.
pub(super) fn run(conn: &Connection, full: bool) -> Result<CheckReport, StoreError> {
    let mut report = CheckReport::default();
    let pragma = if full { "PRAGMA integrity_check" } else { "PRAGMA quick_check" };
    report.store_check = Some(format!("SQLite {}", if full { "integrity_check" } else { "quick_check" }));
    let context = "cannot check the store";
    let mut statement = conn.prepare(pragma).map_err(|e| backend(context, e))?;
    let found = statement.query_map([], |r| r.get::<_, String>(0)).map_err(|e| backend(context, e))?;
    for line in found {
        let line = line.map_err(|e| backend(context, e))?;
        if line != "ok" {
            report.store_problems.push(line);
        }
    }
    drop(statement);

    let sql = format!("SELECT {} FROM executions ORDER BY created_at, id", rows::EXECUTION_COLUMNS);
    let mut statement = conn.prepare(&sql).map_err(|e| backend(context, e))?;
    let mut found = statement.query([]).map_err(|e| backend(context, e))?;
    let mut ids = Vec::new();
    while let Some(row) = found.next().map_err(|e| backend(context, e))? {
        report.executions += 1;
        match rows::execution(row) {
            Ok(record) => ids.push(record.id),
            Err(StoreError::Corrupt { execution, what, detail }) => {
                report.damaged.push(DamagedExecution { id: execution, problem: format!("{what}: {detail}") });
            }
            Err(other) => return Err(other),
        }
    }
    drop(found);
    drop(statement);
    for id in ids {
        match read_journal(conn, &id) {
            Ok(entries) => report.journal_entries += entries.len() as u64,
            Err(StoreError::Corrupt { execution, what, detail }) => {
                report.damaged.push(DamagedExecution { id: execution, problem: format!("{what}: {detail}") });
            }
            Err(other) => return Err(other),
        }
    }
    Ok(report)
}

/// Logs what a check found, naming every damaged execution.
pub(super) fn log(report: &CheckReport, store: &str) {
    for problem in &report.store_problems {
        tracing::error!(store, problem = %problem, "the store file is damaged");
    }
    for damaged in &report.damaged {
        let execution: &ExecutionId = &damaged.id;
        tracing::error!(store, %execution, problem = %damaged.problem, "a stored execution is damaged");
    }
    if report.is_clean() {
        tracing::info!(
            store,
            executions = report.executions,
            journal_entries = report.journal_entries,
            "integrity check: no damage found"
        );
    }
}
