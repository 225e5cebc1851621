//! The PostgreSQL store through the public API, on the server `WORKFLOWS_TEST_POSTGRES` names
//! (each test in a schema of its own): workflows run, compensate, are listed and inspected;
//! an execution left by an engine that died resumes on another engine without repeating its
//! journaled steps; many concurrent executions go through the group-committing writer; two
//! engines sharing a schema never run two executions of one exclusive key at once. (The rules
//! every store keeps, fencing among them, are the runtime's conformance suite.)

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{ExecutionQuery, ExecutionState, PostgresOptions};
use workflows_tests::postgres::TestSchema;
use workflows_tests::{Gate, Log, eventually};

#[step]
async fn add(ctx: &StepContext, n: u32, m: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("add {n} {m}"));
    Ok(n + m)
}

#[step]
async fn held(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Gate>>()?.pass().await;
    Ok(n)
}

#[workflow]
async fn add_then_hold(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let a = add(wf, n, 1).await?;
    let b = add(wf, a, 1).await?;
    Ok(held(wf, b).await?)
}

#[step(compensate = unreserve)]
async fn reserve(ctx: &StepContext, item: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("reserve {item}"));
    Ok(item)
}

async fn unreserve(ctx: &StepContext, item: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("unreserve {item}"));
    Ok(())
}

#[step]
async fn charge(_amount: u32) -> Result<(), StepError> {
    Err(StepError::permanent("card declined"))
}

#[workflow]
async fn order(wf: &Workflow, amount: u32) -> Result<(), WorkflowError> {
    reserve(wf, "book".to_owned()).await?;
    reserve(wf, "pen".to_owned()).await?;
    charge(wf, amount).await?;
    Ok(())
}

fn container(log: &Arc<Log>, gate: &Arc<Gate>) -> Container {
    Container::new().with(log.clone()).with(gate.clone())
}

fn small_pool() -> PostgresOptions {
    PostgresOptions::new().pool_size(3)
}

#[tokio::test]
async fn workflows_run_compensate_and_are_listed() {
    let Some(schema) = TestSchema::new().await else { return };
    let (log, gate) = (Arc::new(Log::default()), Arc::new(Gate::opened()));
    let engine = Engine::builder()
        .postgres_with(schema.url(), small_pool())
        .container(container(&log, &gate))
        .start()
        .await
        .unwrap();
    assert_eq!(add_then_hold::run_with(&engine, 1, RunOptions::new().id("sum")).await.unwrap(), 3);
    let failed = order::run_with(&engine, 12, RunOptions::new().id("order")).await.unwrap_err();
    assert!(failed.to_string().contains("card declined"), "{failed}");
    let lines = log.lines();
    assert_eq!(lines[2..], ["reserve book", "reserve pen", "unreserve pen", "unreserve book"], "{lines:?}");

    let sum = engine.execution(&"sum".into()).await.unwrap().unwrap();
    assert_eq!((sum.state, sum.result.unwrap().get()), (ExecutionState::Completed, "3"));
    assert_eq!(engine.journal(&"sum".into()).await.unwrap().len(), 3);
    assert_eq!(engine.execution(&"order".into()).await.unwrap().unwrap().state, ExecutionState::Compensated);
    let listed = engine.executions(&ExecutionQuery::default()).await.unwrap();
    let ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["order", "sum"], "newest first");
    let compensated = ExecutionQuery { states: vec![ExecutionState::Compensated], ..Default::default() };
    assert_eq!(engine.executions(&compensated).await.unwrap().len(), 1);
}

#[test]
fn an_execution_left_by_an_engine_that_died_resumes_on_another_without_repeating_steps() {
    let runtime = || tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let schema = runtime().block_on(TestSchema::new());
    let Some(schema) = schema else { return };
    let log = Arc::new(Log::default());
    let builder = |gate: &Arc<Gate>| {
        Engine::builder()
            .postgres_with(schema.url(), small_pool())
            .container(container(&log, gate))
            // Its owner is a process of this host that is still alive: taken over when the
            // lease ends.
            .lease_duration(Duration::from_millis(900))
    };
    // The first engine dies inside the held step: its runtime is dropped, nothing released.
    let crashed = runtime();
    crashed.block_on(async {
        let gate = Arc::new(Gate::default());
        let engine = builder(&gate).start().await.unwrap();
        add_then_hold::start_with(&engine, 40, RunOptions::new().id("left")).await.unwrap();
        eventually(Duration::from_secs(10), || async { (gate.arrived() == 1).then_some(()) }).await;
    });
    drop(crashed);

    runtime().block_on(async {
        let gate = Arc::new(Gate::opened());
        let engine = builder(&gate).start().await.unwrap();
        let output = add_then_hold::run_with(&engine, 40, RunOptions::new().id("left")).await.unwrap();
        assert_eq!(output, 42);
        assert_eq!(log.lines(), ["add 40 1", "add 41 1"], "no journaled step ran again");
        assert_eq!(engine.execution(&"left".into()).await.unwrap().unwrap().epoch, 2, "taken over once");
    });
}

#[tokio::test]
async fn many_concurrent_executions_go_through_the_group_commit_intact() {
    let Some(schema) = TestSchema::new().await else { return };
    let (log, gate) = (Arc::new(Log::default()), Arc::new(Gate::opened()));
    let engine = Engine::builder()
        .postgres_with(schema.url(), small_pool())
        .container(container(&log, &gate))
        .start()
        .await
        .unwrap();
    let runs = (0..200u32).map(|n| {
        let engine = engine.clone();
        tokio::spawn(async move { add_then_hold::run_with(&engine, n, RunOptions::new().id(format!("c-{n}"))).await })
    });
    for (n, run) in runs.collect::<Vec<_>>().into_iter().enumerate() {
        assert_eq!(run.await.unwrap().unwrap(), n as u32 + 2);
    }
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    assert_eq!(engine.executions(&completed).await.unwrap().len(), 200);
    for n in (0..200).step_by(20) {
        assert_eq!(engine.journal(&format!("c-{n}").into()).await.unwrap().len(), 3);
    }
}

/// How many bodies of `exclusive` run at once, and the most that ever did.
#[derive(Default)]
struct Overlap {
    now: AtomicU32,
    most: AtomicU32,
}

#[step]
async fn exclusive(ctx: &StepContext) -> Result<(), StepError> {
    let overlap = ctx.resolve::<Arc<Overlap>>()?;
    let now = overlap.now.fetch_add(1, Ordering::SeqCst) + 1;
    overlap.most.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    overlap.now.fetch_sub(1, Ordering::SeqCst);
    Ok(())
}

#[workflow]
async fn keyed(wf: &Workflow, _n: u32) -> Result<(), WorkflowError> {
    Ok(exclusive(wf).await?)
}

#[tokio::test]
async fn two_engines_never_run_two_executions_of_one_key_at_once() {
    let Some(schema) = TestSchema::new().await else { return };
    let overlap = Arc::new(Overlap::default());
    let engine = || {
        Engine::builder()
            .postgres_with(schema.url(), small_pool())
            .container(Container::new().with(overlap.clone()))
            .start()
    };
    let engines = [engine().await.unwrap(), engine().await.unwrap()];
    let runs = (0..12u32).map(|n| {
        let engine = engines[n as usize % 2].clone();
        tokio::spawn(async move {
            keyed::run_with(&engine, n, RunOptions::new().id(format!("k-{n}")).exclusive_key("account-7")).await
        })
    });
    for run in runs.collect::<Vec<_>>() {
        run.await.unwrap().unwrap();
    }
    assert_eq!(overlap.most.load(Ordering::SeqCst), 1, "one body of the key at a time, across both engines");
}

#[tokio::test]
async fn a_client_only_engine_starts_what_the_workers_run_and_gets_the_results() {
    let Some(schema) = TestSchema::new().await else { return };
    let gate = Arc::new(Gate::opened());
    let (worker_log, client_log) = (Arc::new(Log::default()), Arc::new(Log::default()));
    // Ten-minute leases: the worker's periodic claim comes every five minutes, so only a notice
    // can make it take the work within the test's minute.
    let engine = |log: &Arc<Log>| {
        Engine::builder()
            .postgres_with(schema.url(), small_pool())
            .container(container(log, &gate))
            .lease_duration(Duration::from_secs(600))
    };
    let worker = engine(&worker_log).start().await.unwrap();
    let client = engine(&client_log).client_only().start().await.unwrap();

    let run = add_then_hold::run_with(&client, 1, RunOptions::new().id("from-client"));
    let output = tokio::time::timeout(Duration::from_secs(60), run).await.expect("a worker ran it, woken by a notice");
    assert_eq!(output.unwrap(), 3);
    let failed = tokio::time::timeout(Duration::from_secs(60), order::run_with(&client, 9, RunOptions::new().id("o")))
        .await
        .expect("a worker ran it")
        .unwrap_err();
    assert!(failed.to_string().contains("card declined"), "{failed}");
    assert_eq!(
        worker_log.lines(),
        ["add 1 1", "add 2 1", "reserve book", "reserve pen", "unreserve pen", "unreserve book"],
        "the worker ran every body and compensation"
    );
    assert!(client_log.lines().is_empty(), "the client ran nothing: {:?}", client_log.lines());
    let record = worker.execution(&"from-client".into()).await.unwrap().unwrap();
    assert_eq!((record.state, record.epoch), (ExecutionState::Completed, 2), "created unowned, claimed once");
}
