//! Plans as tests: each hot query of the SQLite store is answered from its index, with no
//! temporary sort and no scan of a table — checked with `EXPLAIN QUERY PLAN`, so the rule holds
//! without timing anything: the plan is the same on an empty store and on one with a million
//! finished executions (SQLite has no statistics here to change its mind).

use rusqlite::types::Value;
use rusqlite::{Connection, params_from_iter};

use super::{SqliteStore, queries, queues};
use crate::execution::ExecutionState;
use crate::store::ExecutionQuery;

/// A store's file, opened next to the store.
fn connection() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plans.db");
    drop(SqliteStore::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    (dir, conn)
}

/// The plan's lines, with `values` bound (or as many NULLs as the statement takes).
fn plan(conn: &Connection, sql: &str, values: Option<Vec<Value>>) -> Vec<String> {
    let mut statement = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap_or_else(|e| panic!("{e}: {sql}"));
    let values = values.unwrap_or_else(|| vec![Value::Null; statement.parameter_count()]);
    let rows = statement.query_map(params_from_iter(values), |row| row.get::<_, String>(3)).unwrap();
    rows.map(Result::unwrap).collect()
}

/// Asserts that the plan reads `table` through each of `indexes` and in no other way, and
/// sorts nothing.
#[track_caller]
fn assert_indexed(plan: &[String], table: &str, indexes: &[&str]) {
    let text = plan.join("\n");
    assert!(!text.contains("TEMP B-TREE"), "a temporary sort:\n{text}");
    for line in plan.iter().filter(|line| line.split_whitespace().nth(1) == Some(table)) {
        let named = indexes.iter().any(|index| line.contains(&format!("INDEX {index}")));
        let keyed = indexes.contains(&"PRIMARY KEY") && line.contains("USING PRIMARY KEY");
        assert!(named || keyed, "`{line}` is not one of {indexes:?}:\n{text}");
        assert!(line.starts_with("SEARCH") || indexes.len() == 1, "`{line}` scans:\n{text}");
    }
    for index in indexes {
        assert!(text.contains(index), "{index} is not used:\n{text}");
    }
}

#[test]
fn claims_read_three_index_ranges_and_sort_nothing() {
    let (_dir, conn) = connection();
    let plan = plan(&conn, &queries::claim(queries::Claiming::All), None);
    // The update itself finds the chosen executions by their key.
    assert_indexed(&plan, "executions", &["executions_by_state", "executions_by_wake", "PRIMARY KEY"]);
    assert_eq!(plan.iter().filter(|l| l.contains("INDEX executions_by_state (")).count(), 2, "{plan:?}");
}

#[test]
fn a_claim_of_one_execution_looks_it_up_by_its_key() {
    let (_dir, conn) = connection();
    assert_indexed(&plan(&conn, &queries::claim(queries::Claiming::Only), None), "executions", &["PRIMARY KEY"]);
}

#[test]
fn a_claim_of_blocked_executions_reads_their_range_of_the_state_index() {
    let (_dir, conn) = connection();
    let plan = plan(&conn, &queries::claim(queries::Claiming::Unblock), None);
    assert_indexed(&plan, "executions", &["executions_by_state", "PRIMARY KEY"]);
}

#[test]
fn the_next_wake_up_is_the_first_entry_of_its_index() {
    let (_dir, conn) = connection();
    assert_indexed(&plan(&conn, queries::NEXT_WAKE, None), "executions", &["executions_by_wake"]);
}

#[test]
fn purges_read_a_range_of_the_retention_or_the_finish_time() {
    let (_dir, conn) = connection();
    assert_indexed(&plan(&conn, &queries::purge_retained(), None), "executions", &["executions_by_retention"]);
    assert_indexed(&plan(&conn, &queries::purge_finished_before(), None), "executions", &["executions_finished"]);
    // A partial index serves only the queries that repeat its condition.
    let index: String =
        conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'executions_finished'", [], |r| r.get(0)).unwrap();
    assert!(index.ends_with(&format!("WHERE state IN {}", queries::FINISHED_STATES)), "{index}");
    let finished: Vec<String> =
        ExecutionState::ALL.iter().filter(|s| s.is_finished()).map(|s| format!("'{}'", s.as_str())).collect();
    assert_eq!(queries::FINISHED_STATES, format!("({})", finished.join(", ")));
}

#[test]
fn listings_by_state_by_workflow_and_of_everything_read_an_index_in_order() {
    let (_dir, conn) = connection();
    let listing = |query: ExecutionQuery| {
        let (sql, values) = queries::list(&query);
        plan(&conn, &sql, Some(values))
    };
    let page = |query: ExecutionQuery| ExecutionQuery { limit: Some(50), offset: 0, ..query };
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    assert_indexed(&listing(page(completed.clone())), "executions", &["executions_by_state_created"]);
    let of_workflow = ExecutionQuery { workflow: Some("checkout".into()), ..Default::default() };
    assert_indexed(&listing(page(of_workflow)), "executions", &["executions_by_workflow"]);
    assert_indexed(&listing(page(ExecutionQuery::default())), "executions", &["executions_by_created"]);
    let before = ExecutionQuery { before: Some(crate::time::Timestamp::now()), ..completed.clone() };
    assert_indexed(&listing(page(before)), "executions", &["executions_by_state_created"]);
    // The next page starts where the last ended: a range of the same index, at any depth.
    let cursor = crate::store::PageCursor { created_at: crate::time::Timestamp::now(), id: "order-7".into() };
    let next = |query: ExecutionQuery| page(ExecutionQuery { after: Some(cursor.clone()), ..query });
    for (query, index) in [
        (completed, "executions_by_state_created"),
        (ExecutionQuery { workflow: Some("checkout".into()), ..Default::default() }, "executions_by_workflow"),
        (ExecutionQuery::default(), "executions_by_created"),
    ] {
        let plan = listing(next(query));
        assert_indexed(&plan, "executions", &[index]);
        assert!(plan.iter().any(|line| line.contains("(created_at,id)<")), "not a range: {plan:?}");
    }
}

#[test]
fn inbox_lookups_and_journal_reads_go_by_the_key() {
    let (_dir, conn) = connection();
    assert_indexed(&plan(&conn, queries::INBOX_ENTRY, None), "inbox", &["PRIMARY KEY"]);
    let journal = "SELECT idx FROM journal WHERE execution_id = ?1 ORDER BY idx";
    assert_indexed(&plan(&conn, journal, None), "journal", &["PRIMARY KEY"]);
}

#[test]
fn admissions_read_their_queue_s_ranges_of_its_indexes() {
    let (_dir, conn) = connection();
    // The update finds the chosen executions by their key.
    assert_indexed(&plan(&conn, &queues::admit_sql(), None), "executions", &["executions_queued", "PRIMARY KEY"]);
    assert_indexed(&plan(&conn, &queues::active_sql(), None), "executions", &["executions_by_queue"]);
    assert_indexed(&plan(&conn, queues::STARTED_SINCE, None), "executions", &["executions_admitted"]);
}
