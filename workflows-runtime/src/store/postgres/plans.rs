//! The PostgreSQL store's hot queries, planned by the server (`EXPLAIN`) on a fresh schema with
//! sequential scans, bitmap scans and sorts turned off (on an empty table every plan looks
//! cheap; this asks whether the index the query is written for answers it): each must read
//! its index, and sort nothing — the same plan at a hundred executions or a million. Needs
//! `WORKFLOWS_TEST_POSTGRES`. They found that a claim could read the index of every execution
//! of a workflow (hence `executions_active`, schema version 2).

use tokio_postgres::types::ToSql;

use super::{queries, queues};
use crate::store::conformance::postgres_server;
use crate::store::{ExecutionQuery, PageCursor};
use crate::{ExecutionState, Timestamp};

/// The plan of `sql` with `params`, as text, on the schema of a fresh store.
async fn explain(sql: &str, params: &[&(dyn ToSql + Sync)]) -> Option<String> {
    let (_store, schema) = postgres_server::fresh_store().await?;
    let (client, connection) = tokio_postgres::connect(&postgres_server::url()?, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path TO {}; SET enable_seqscan = off; SET enable_bitmapscan = off; SET enable_sort = off",
            schema.name()
        ))
        .await
        .unwrap();
    let rows = client.query(&format!("EXPLAIN {sql}"), params).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    Some(rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n"))
}

/// Asserts the plan reads `index` and sorts nothing.
fn uses(plan: &str, index: &str) {
    assert!(plan.contains(index), "not read from {index}:\n{plan}");
    assert!(!plan.contains("Sort"), "sorts:\n{plan}");
    assert!(!plan.contains("Seq Scan"), "scans a table:\n{plan}");
}

#[tokio::test]
async fn claims_read_three_index_ranges_and_sort_nothing() {
    let workflows = vec!["w".to_owned()];
    let (owner, now, limit) = ("o", Timestamp::now().as_micros(), 100i64);
    let sql = queries::claim(false);
    let Some(plan) = explain(&sql, &[&owner, &now, &now, &workflows, &limit]).await else { return };
    uses(&plan, "executions_active");
    uses(&plan, "executions_by_wake");
    let only = queries::claim(true);
    let Some(plan) = explain(&only, &[&owner, &now, &now, &workflows, &limit, &"x"]).await else { return };
    uses(&plan, "executions_pkey");
}

#[tokio::test]
async fn the_next_wake_up_is_the_first_entry_of_its_index() {
    let Some(plan) = explain(queries::NEXT_WAKE, &[]).await else { return };
    uses(&plan, "executions_by_wake");
}

#[tokio::test]
async fn purges_read_a_range_of_the_retention_or_finish_time_index() {
    let (now, limit) = (Timestamp::now().as_micros(), 25i64);
    let Some(plan) = explain(&queries::purge_retained(), &[&now, &limit]).await else { return };
    uses(&plan, "executions_by_retention");
    let Some(plan) = explain(&queries::purge_finished_before(), &[&now, &limit]).await else { return };
    uses(&plan, "executions_finished");
}

#[tokio::test]
async fn listings_and_their_next_pages_read_an_index_backwards() {
    let after = Some(PageCursor { created_at: Timestamp::now(), id: "x".into() });
    for (query, index) in [
        (ExecutionQuery { limit: Some(50), ..Default::default() }, "executions_by_created"),
        (ExecutionQuery { limit: Some(50), after: after.clone(), ..Default::default() }, "executions_by_created"),
        (
            ExecutionQuery { states: vec![ExecutionState::Completed], limit: Some(50), after, ..Default::default() },
            "executions_by_state_created",
        ),
        (
            ExecutionQuery { workflow: Some("w".into()), limit: Some(50), ..Default::default() },
            "executions_by_workflow",
        ),
    ] {
        let (sql, values) = queries::list(&query);
        let params: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
        let Some(plan) = explain(&sql, &params).await else { return };
        uses(&plan, index);
    }
}

#[tokio::test]
async fn inbox_lookups_and_journal_reads_follow_their_keys() {
    let Some(plan) = explain(&queries::inbox_entry(), &[&"x", &"event", &"paid", &0i64]).await else { return };
    uses(&plan, "inbox_pkey");
    let Some(plan) = explain(&queries::journal(), &[&"x"]).await else { return };
    uses(&plan, "journal_pkey");
}

#[tokio::test]
async fn admissions_read_their_queue_s_ranges_of_its_indexes() {
    let (now, limit, workflows) = (Timestamp::now().as_micros(), 10i64, vec!["w".to_owned()]);
    let params: [&(dyn ToSql + Sync); 6] = [&"q", &"o", &now, &now, &workflows, &limit];
    let Some(plan) = explain(&queues::admit_sql(), &params).await else { return };
    uses(&plan, "executions_queued");
    let Some(plan) = explain(&queues::usage_sql(), &[&"q", &now]).await else { return };
    uses(&plan, "executions_by_queue");
    uses(&plan, "executions_admitted");
}

/// How the tables' statistics stand when the statements are planned.
#[derive(Clone, Copy, Debug)]
enum Stats {
    /// Never analyzed: a fresh schema on a server with autovacuum off (these machines' CI).
    None,
    /// Analyzed while the tables were empty, then bulk-loaded: statistics that lie.
    Stale,
}

/// The hot statements, with their parameters as SQL literals.
fn hot_statements() -> Vec<(&'static str, String, String)> {
    let append_many_params = "'{e10,e20}', '{1,1}', '{1,1}', '{NULL,NULL}', '{NULL,NULL}', '{NULL,NULL}', '{1,1}', \
                              '{false,false}', '{NULL,NULL}', '{5,5}', '{0,1}', '{e10,e20}', '{5,5}', '{1,1}', \
                              '{step_completed,step_completed}', '{k#1,k#1}', '{\"{}\",\"{}\"}'";
    vec![
        (
            "a journal write",
            super::pipeline::APPEND.to_owned(),
            "'e10', 1, 1, NULL, NULL, NULL, 1, false, NULL, 5, '{5}', '{1}', '{step_completed}', '{k#1}', '{\"{}\"}'"
                .to_owned(),
        ),
        (
            "journal writes of several executions",
            super::pipeline::APPEND_MANY.to_owned(),
            append_many_params.to_owned(),
        ),
        ("a claim", queries::claim(false), "'o', 1, 1, '{w1,w2}', 100".to_owned()),
        ("a claim of one execution", queries::claim(true), "'o', 1, 1, '{w1,w2}', 100, 'e10'".to_owned()),
        ("a claim of blocked executions", queries::unblock(), "'o', 1, '{w1,w2}', 100, 'b1'".to_owned()),
        ("a renewal", queries::renew(), "'o0', '{e10,e70}', 1, '{1,1}'".to_owned()),
        ("a renewal's check", queries::still_held(), "'o0', '{e10,e70}', '{1,1}'".to_owned()),
        ("the next wake-up", queries::NEXT_WAKE.to_owned(), String::new()),
        ("a purge by retention", queries::purge_retained(), "1000, 25".to_owned()),
        ("a purge by finish time", queries::purge_finished_before(), "1000, 25".to_owned()),
        ("a purge of events", queries::purge_events(), "1000, 200".to_owned()),
        ("an inbox entry", queries::inbox_entry(), "'e10', 'event', 'paid', 0".to_owned()),
        ("a journal", queries::journal(), "'e10'".to_owned()),
        ("a delivery's lock", queries::DELIVERY_LOCK.to_owned(), "'e10'".to_owned()),
        ("a delivery", queries::DELIVERY_INSERT.to_owned(), "'e10', 'event', 'paid', '{}', NULL, 1, NULL".to_owned()),
        ("a delivery's wake-up", queries::DELIVERY_WAKE.to_owned(), "'e10', 1".to_owned()),
        ("an async step's latest entry", queries::STEP_LATEST.to_owned(), "'e10', 'k#1'".to_owned()),
        ("an async step's deliveries", queries::STEP_DELIVERED.to_owned(), "'e10', 'k#1', 1".to_owned()),
        ("a suspension", queries::SUSPEND.to_owned(), "'e10', 1, NULL, 0, 1, 'running'".to_owned()),
        ("the events to dispatch", queries::UNDISPATCHED_EVENTS.to_owned(), "100".to_owned()),
        ("the undelivered events due", queries::undelivered_due(), "1000, 100".to_owned()),
        ("an admission", queues::admit_sql(), "'q', 'o', 1, 1, '{w1}', 10".to_owned()),
        ("a queue's usage", queues::usage_sql(), "'q', 1".to_owned()),
    ]
}

/// Plans every hot statement as a worker's connection does — prepared when the schema was
/// fresh and run a few times (the server settles on a plan per statement, and keeps it), then
/// run again after the tables grew to 50,000 executions and 250,000 journal entries with the
/// statistics `stats` — and returns each statement's plan then, and the plan of a connection
/// that prepared it on the grown tables. They found that every hot statement read whole tables
/// in the first case (the plan made for the empty tables), until sequential scans were priced
/// out (`session_options`) and the statements that joined a set of ids look each one up by key.
async fn plans_after_growth(stats: Stats) -> Option<Vec<(&'static str, String)>> {
    let (_store, schema) = postgres_server::fresh_store().await?;
    let url = postgres_server::url()?;
    let connect = |options: Option<String>| {
        let url = url.clone();
        async move {
            let mut config: tokio_postgres::Config = url.parse().unwrap();
            if let Some(options) = options {
                config.options(options);
            }
            let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            client
        }
    };
    let admin = connect(Some(format!("-c search_path={}", schema.name()))).await;
    let tables = ["executions", "journal", "inbox", "events", "undelivered", "queues"];
    for table in tables {
        admin
            .batch_execute(&format!(
                "ALTER TABLE {table} SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)"
            ))
            .await
            .unwrap();
    }
    if matches!(stats, Stats::Stale) {
        admin.batch_execute(&format!("ANALYZE {}", tables.join(", "))).await.unwrap();
    }
    // A connection of the store's own: its session settings.
    let worker = connect(Some(super::session_options(schema.name(), std::time::Duration::from_secs(5)))).await;
    let statements = hot_statements();
    for (n, (what, sql, _)) in statements.iter().enumerate() {
        worker.batch_execute(&format!("PREPARE hot{n} AS {sql}")).await.unwrap_or_else(|e| panic!("{what}: {e:?}"));
    }
    // Run (planned) a few times while the tables are empty: by default the server then keeps
    // a generic plan, made for these tiny tables.
    for _ in 0..6 {
        for (n, (what, _, params)) in statements.iter().enumerate() {
            let args = if params.is_empty() { String::new() } else { format!("({params})") };
            worker
                .batch_execute(&format!("EXPLAIN EXECUTE hot{n}{args}"))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e:?}"));
        }
    }
    admin
        .batch_execute(
            "INSERT INTO executions (id, workflow, fingerprint, version, input, state, created_at, updated_at, owner,
                                     lease_until, epoch, retain_until, wake_at, queue, admitted_at)
             SELECT 'e' || g, 'w' || (g % 5), 'f', 0, '{}',
                    CASE g % 10 WHEN 0 THEN 'running' WHEN 1 THEN 'waiting' WHEN 2 THEN 'queued' ELSE 'completed' END,
                    g, g, CASE WHEN g % 10 = 0 THEN 'o' || (g % 7) END, CASE WHEN g % 10 = 0 THEN g END, 1,
                    CASE WHEN g % 10 >= 3 THEN g END, CASE WHEN g % 10 = 1 THEN g END,
                    CASE WHEN g % 10 IN (0, 2) THEN 'q' END, CASE WHEN g % 10 = 0 THEN g END
             FROM generate_series(1, 50000) AS g;
             INSERT INTO journal (execution_id, idx, at, kind, call_key, event)
             SELECT 'e' || (g / 5), g % 5, g, 'step_completed', 'k#' || (g % 5), '{}' FROM generate_series(5, 250004) AS g;
             INSERT INTO inbox (execution_id, kind, name, position, payload, at)
             SELECT 'e' || g, 'event', 'paid', 0, '{}', g FROM generate_series(1, 50000, 3) AS g;
             INSERT INTO events (id, name, payload, emitted_at, dispatched)
             SELECT 'ev' || g, 'n', '{}', g, g % 2 = 0 FROM generate_series(1, 20000) AS g;
             INSERT INTO undelivered (event_id, subscriber, name, payload, emitted_at, attempts, error, first_failed_at,
                                      last_failed_at, retry_at)
             SELECT 'ev' || g, 's', 'n', '{}', g, 1, 'e', g, g, CASE WHEN g % 2 = 0 THEN g END
             FROM generate_series(1, 5000) AS g;",
        )
        .await
        .unwrap();
    let explain_all = async |worker: &tokio_postgres::Client| {
        let mut plans = Vec::new();
        for (n, (what, _, params)) in statements.iter().enumerate() {
            let args = if params.is_empty() { String::new() } else { format!("({params})") };
            for _ in 0..6 {
                worker.batch_execute(&format!("EXPLAIN EXECUTE hot{n}{args}")).await.unwrap();
            }
            let rows = worker.query(&format!("EXPLAIN EXECUTE hot{n}{args}"), &[]).await.unwrap();
            plans.push((*what, rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>().join("\n")));
        }
        plans
    };
    // What the connection that prepared them on the empty tables runs now, and what a
    // connection opened since runs (prepared on the grown tables, run until the server
    // settles on a generic plan).
    let mut plans = explain_all(&worker).await;
    worker.batch_execute("DEALLOCATE ALL").await.unwrap();
    for (n, (_, sql, _)) in statements.iter().enumerate() {
        worker.batch_execute(&format!("PREPARE hot{n} AS {sql}")).await.unwrap();
    }
    plans.extend(explain_all(&worker).await);
    Some(plans)
}

/// Asserts that no statement reads the whole of a table that grows with the executions.
fn no_table_scans(stats: Stats, plans: &[(&str, String)]) {
    let mut scans = Vec::new();
    for (what, plan) in plans {
        for table in ["executions", "journal", "inbox", "events", "undelivered"] {
            if let Some(scan) = whole_scan(plan, table) {
                scans.push(format!("{what} reads all of `{table}` ({scan}):\n{plan}"));
            }
        }
    }
    assert!(scans.is_empty(), "with {stats:?} statistics:\n\n{}", scans.join("\n\n"));
}

/// A node of `plan` that reads all of `table`: a sequential scan, or an index scan with no
/// index condition (the whole index, in its order).
fn whole_scan(plan: &str, table: &str) -> Option<String> {
    let lines: Vec<&str> = plan.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        if line.contains(&format!("Seq Scan on {table}")) {
            return Some(line.trim().to_owned());
        }
        let on_table = line.contains(&format!(" on {table} ")) || line.ends_with(&format!(" on {table}"));
        if on_table && line.contains("Index") && line.contains("Scan using") {
            // The node's own details are the lines indented deeper, up to the next node.
            let indent = line.len() - line.trim_start().len();
            let conditioned = lines[n + 1..]
                .iter()
                .take_while(|l| l.len() - l.trim_start().len() > indent && !l.trim_start().starts_with("->"))
                .any(|l| l.contains("Index Cond:"));
            // Under a Limit, an index read in its order stops after the first rows.
            let under_limit = n > 0 && lines[n - 1].trim_start().trim_start_matches("->  ").starts_with("Limit");
            if !conditioned && !under_limit {
                return Some(line.trim().to_owned());
            }
        }
    }
    None
}

#[tokio::test]
async fn hot_statements_read_their_indexes_on_tables_never_analyzed() {
    let Some(plans) = plans_after_growth(Stats::None).await else { return };
    no_table_scans(Stats::None, &plans);
}

#[tokio::test]
async fn hot_statements_read_their_indexes_on_tables_analyzed_while_empty() {
    let Some(plans) = plans_after_growth(Stats::Stale).await else { return };
    no_table_scans(Stats::Stale, &plans);
}
