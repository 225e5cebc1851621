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
