//! Row locks across a fleet on PostgreSQL (`WORKFLOWS_TEST_POSTGRES`): three worker engines,
//! each with its own connections, run executions that write their journals (each write locks
//! its execution's row) while every engine delivers events to executions the others run (each
//! delivery locks the row it delivers to, several in one of its writer's transactions), leases
//! are renewed every third of a second, and claims take what is due. No transaction may wait
//! for another in a cycle: the server's count of deadlocks in the test database stays as it
//! was (`pg_stat_database.deadlocks`), and every execution completes with every step once.

use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{Engine, ExecutionQuery, ExecutionState, PostgresOptions};
use workflows_tests::postgres::TestSchema;
use workflows_tests::{Random, eventually};

#[step]
async fn busy_step(n: u32) -> Result<u32, StepError> {
    tokio::time::sleep(Duration::from_millis(1 + u64::from(n % 3))).await;
    Ok(n + 1)
}

/// Journal writes, then the events the other engines send it.
#[workflow]
async fn locked_saga(wf: &Workflow, events: u32) -> Result<u32, WorkflowError> {
    let mut n = 0;
    for _ in 0..8 {
        n = busy_step(wf, n).await?;
    }
    for _ in 0..events {
        n += wf.wait_for_event::<u32>("nudge").await?;
    }
    Ok(n)
}

/// The deadlocks the server counted in the current database (flushed by the backends that
/// ended or went idle: read after the engines shut down).
async fn deadlocks(schema: &TestSchema) -> i64 {
    let client = schema.connect().await;
    let row = client
        .query_one("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()", &[])
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_deliveries_and_claims_across_a_fleet_never_deadlock() {
    let Some(schema) = TestSchema::new().await else { return };
    let before = deadlocks(&schema).await;
    let mut engines = Vec::new();
    for _ in 0..3 {
        let options = PostgresOptions::new().pool_size(4);
        let builder = Engine::builder().postgres_with(schema.url(), options).lease_duration(Duration::from_secs(1));
        engines.push(builder.start().await.unwrap());
    }
    const EXECUTIONS: u32 = 150;
    // Each engine sends each execution two events.
    const EVENTS: u32 = 6;
    let ids: Vec<String> = (0..EXECUTIONS).map(|n| format!("locked-{n}")).collect();
    for (k, id) in ids.iter().enumerate() {
        locked_saga::start_with(&engines[k % 3], EVENTS, RunOptions::new().id(id)).await.unwrap();
    }
    // Every engine delivers events to every execution, each in its own order, all at once.
    let mut senders = Vec::new();
    for (k, engine) in engines.iter().enumerate() {
        let (engine, mut order) = (engine.clone(), ids.clone());
        let mut random = Random(0x10c5 + k as u64);
        for i in (1..order.len()).rev() {
            order.swap(i, random.below(i as u64 + 1) as usize);
        }
        senders.push(tokio::spawn(async move {
            let mut sends = Vec::new();
            for id in order {
                let engine = engine.clone();
                sends.push(tokio::spawn(async move {
                    for _ in 0..EVENTS / 3 {
                        engine.send_event(&id.as_str().into(), "nudge", 1u32).await.unwrap();
                    }
                }));
            }
            for send in sends {
                send.await.unwrap();
            }
        }));
    }
    for sender in senders {
        sender.await.unwrap();
    }
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    eventually(Duration::from_secs(120), || async {
        let done = engines[0].executions(&completed).await.ok()?;
        (done.len() == ids.len()).then_some(())
    })
    .await;
    for id in &ids {
        let journal = engines[0].journal(&id.as_str().into()).await.unwrap();
        let steps = journal.iter().filter(|e| e.event.kind() == "step_completed").count();
        assert_eq!(steps, 8, "{id}");
    }
    for engine in engines {
        engine.shutdown().await;
    }
    // A backend adds its counts to the database's when it ends: wait until the engines'
    // connections (the only ones of this test binary) are gone.
    let client = schema.connect().await;
    eventually(Duration::from_secs(30), || async {
        let row = client
            .query_one("SELECT COUNT(*) FROM pg_stat_activity WHERE application_name = 'workflows'", &[])
            .await
            .ok()?;
        (row.get::<_, i64>(0) == 0).then_some(())
    })
    .await;
    assert_eq!(deadlocks(&schema).await - before, 0, "the server detected deadlocks between the engines' transactions");
}
