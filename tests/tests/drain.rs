//! Stopping a worker gracefully (`Engine::drain`, what `workflows worker` does on Ctrl-C):
//! running executions finish within the grace period; the ones that do not are released and
//! resumed by another engine; nothing new is taken over meanwhile. Under the test clock: the
//! 300 ms leases and the waits that show nothing happened are the clock's, not the machine's.

use std::sync::Arc;
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::testing::TestClock;
use workflows_runtime::{ExecutionState, MemoryStore};
use workflows_tests::{Gate, eventually};

#[step]
async fn held(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Gate>>()?.pass().await;
    Ok(n + 1)
}

#[workflow]
async fn drained(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let n = held(wf, n).await?;
    Ok(held(wf, n).await?)
}

async fn engine(store: &Arc<MemoryStore>, gate: &Arc<Gate>) -> Engine {
    Engine::builder()
        .store(store.clone())
        .container(Container::new().with(gate.clone()))
        .lease_duration(Duration::from_millis(300))
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_draining_engine_lets_running_executions_finish() {
    let clock = TestClock::start();
    let (store, gate) = (Arc::new(MemoryStore::new()), Arc::new(Gate::default()));
    let engine = engine(&store, &gate).await;
    let handle = drained::start_with(&engine, 1, RunOptions::new().id("in-flight")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() == 1).then_some(()) }).await;

    let draining = tokio::spawn({
        let engine = engine.clone();
        async move { engine.drain(Duration::from_secs(30)).await }
    });
    clock.advance(Duration::from_secs(10)).await;
    assert!(!draining.is_finished(), "it waits for the execution in flight");
    gate.open();
    assert_eq!(handle.result().await.unwrap(), 3);
    assert_eq!(draining.await.unwrap(), 0, "nothing was left running");
    let record = store_record(&engine, "in-flight").await;
    assert_eq!(record.state, ExecutionState::Completed);
}

#[tokio::test]
async fn what_does_not_finish_within_the_grace_period_is_released_and_resumed_elsewhere() {
    let _clock = TestClock::start();
    let (store, gate) = (Arc::new(MemoryStore::new()), Arc::new(Gate::default()));
    let first = engine(&store, &gate).await;
    drained::start_with(&first, 1, RunOptions::new().id("stuck")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() == 1).then_some(()) }).await;
    assert_eq!(first.drain(Duration::from_millis(100)).await, 1, "one execution was still running");
    let record = store_record(&first, "stuck").await;
    assert_eq!(record.owner, None, "released at once, not left to its lease");

    gate.open();
    let second = engine(&store, &gate).await;
    let result = eventually(Duration::from_secs(10), || async {
        let record = store_record(&second, "stuck").await;
        (record.state == ExecutionState::Completed).then_some(record.result)
    })
    .await;
    assert_eq!(result.unwrap().get(), "3");
}

#[tokio::test]
async fn a_draining_engine_takes_nothing_over() {
    let clock = TestClock::start();
    let (store, gate) = (Arc::new(MemoryStore::new()), Arc::new(Gate::default()));
    let other = engine(&store, &gate).await;
    drained::start_with(&other, 1, RunOptions::new().id("released")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() == 1).then_some(()) }).await;

    let (hold, worker) = (Arc::new(Gate::default()), engine(&store, &gate).await);
    let local = RunOptions::new().id("local").container(Container::new().with(hold.clone()));
    drained::start_with(&worker, 5, local).await.unwrap();
    let draining = tokio::spawn({
        let worker = worker.clone();
        async move { worker.drain(Duration::from_secs(30)).await }
    });
    clock.settle().await;
    // The other engine stops and releases its execution: any engine could take it over now.
    other.shutdown().await;
    assert_eq!(store_record(&worker, "released").await.owner, None);
    // Many times the worker's takeover period (half its lease), within its grace period: still
    // not taken over.
    clock.advance(Duration::from_secs(10)).await;
    assert_eq!(store_record(&worker, "released").await.owner, None, "a draining worker takes over nothing");
    hold.open();
    assert_eq!(draining.await.unwrap(), 0);
    assert_eq!(store_record(&worker, "local").await.state, ExecutionState::Completed);
}

async fn store_record(engine: &Engine, id: &str) -> workflows_runtime::ExecutionRecord {
    engine.execution(&ExecutionId::from(id)).await.unwrap().expect("stored")
}
