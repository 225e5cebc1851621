//! Queues through the public API, on the embedded stores: a queue's concurrency across two
//! engines sharing one SQLite file, its order, its rate, cancelling a queued run, and the
//! errors of an unknown queue and of unusable limits. (Across processes killed at random:
//! `postgres_fleet.rs`.)

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use workflows_runtime::prelude::*;
use workflows_runtime::{EngineError, ExecutionState, MemoryStore};
use workflows_tests::{Gate, eventually};

/// Who is inside a step body, at most how many at once, and in which order they came in.
#[derive(Default)]
struct Inside {
    now: AtomicI32,
    most: AtomicI32,
    order: Mutex<Vec<u32>>,
    started: Mutex<Vec<Instant>>,
}

#[step]
async fn send_email(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    let inside = ctx.resolve::<Arc<Inside>>()?;
    let now = inside.now.fetch_add(1, Ordering::SeqCst) + 1;
    inside.most.fetch_max(now, Ordering::SeqCst);
    inside.order.lock().unwrap().push(n);
    inside.started.lock().unwrap().push(Instant::now());
    tokio::time::sleep(Duration::from_millis(5)).await;
    inside.now.fetch_sub(1, Ordering::SeqCst);
    Ok(n)
}

#[workflow]
async fn email(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(send_email(wf, n).await?)
}

#[step]
async fn hold(ctx: &StepContext, _: ()) -> Result<(), StepError> {
    ctx.resolve::<Arc<Gate>>()?.pass().await;
    Ok(())
}

#[workflow]
async fn held(wf: &Workflow, _: ()) -> Result<(), WorkflowError> {
    Ok(hold(wf, ()).await?)
}

fn engine(store: impl workflows_runtime::IntoStore, queue: Queue, inside: &Arc<Inside>) -> EngineBuilder {
    Engine::builder().store(store).queue(queue).container(Container::new().with(inside.clone()))
}

use workflows_runtime::EngineBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_runs_no_more_than_its_concurrency_across_engines_sharing_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("queues.db");
    let inside = Arc::new(Inside::default());
    let emails = Queue::new("emails").concurrency(3);
    let build = || {
        Engine::builder()
            .sqlite(&path)
            .queue(emails.clone())
            .lease_duration(Duration::from_secs(2))
            .container(Container::new().with(inside.clone()))
    };
    // Two engines on one file, as two processes would be.
    let engines = [build().start().await.unwrap(), build().start().await.unwrap()];
    let mut runs = Vec::new();
    for n in 0..30u32 {
        let options = RunOptions::new().queue("emails");
        runs.push(email::start_with(&engines[n as usize % 2], n, options).await.unwrap());
    }
    for (n, run) in runs.into_iter().enumerate() {
        assert_eq!(run.await.unwrap(), n as u32);
    }
    let most = inside.most.load(Ordering::SeqCst);
    assert!(most <= 3, "the queue's concurrency was exceeded: {most} at once");
    assert!(most >= 2, "the queue ran its executions side by side");
    let status = engines[0].queues().await.unwrap();
    assert_eq!(status.len(), 1);
    assert_eq!((status[0].name.as_str(), status[0].queued, status[0].active), ("emails", 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_of_one_runs_its_executions_in_the_order_they_were_started() {
    let inside = Arc::new(Inside::default());
    let engine = engine(MemoryStore::new(), Queue::new("serial").concurrency(1), &inside).start().await.unwrap();
    let mut runs = Vec::new();
    for n in 0..20u32 {
        runs.push(email::start_with(&engine, n, RunOptions::new().queue("serial")).await.unwrap());
    }
    for run in runs {
        run.await.unwrap();
    }
    assert_eq!(inside.most.load(Ordering::SeqCst), 1);
    assert_eq!(*inside.order.lock().unwrap(), (0..20).collect::<Vec<_>>(), "first in, first out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_queue_waits_for_its_window_to_have_room() {
    let inside = Arc::new(Inside::default());
    let per = Duration::from_millis(300);
    let engine = engine(MemoryStore::new(), Queue::new("sms").rate(3, per), &inside).start().await.unwrap();
    let began = Instant::now();
    let mut runs = Vec::new();
    for n in 0..7u32 {
        runs.push(email::start_with(&engine, n, RunOptions::new().queue("sms")).await.unwrap());
    }
    for run in runs {
        run.await.unwrap();
    }
    // Seven starts at three per window: the seventh starts two full windows after the first
    // could (the engine admits by the store's clock; a millisecond of slack for the two clocks).
    let started = inside.started.lock().unwrap().clone();
    let last = started.iter().max().unwrap().duration_since(began);
    assert!(last + Duration::from_millis(1) >= per * 2, "the seventh started {last:?} after the first was started");
}

#[tokio::test]
async fn a_queued_run_is_cancelled_before_it_starts() {
    let gate = Arc::new(Gate::default());
    let engine = Engine::builder()
        .memory()
        .queue(Queue::new("one").concurrency(1))
        .container(Container::new().with(gate.clone()))
        .start()
        .await
        .unwrap();
    let first = held::start_with(&engine, (), RunOptions::new().queue("one")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() == 1).then_some(()) }).await;
    let second = held::start_with(&engine, (), RunOptions::new().queue("one")).await.unwrap();
    let record = engine.execution(second.id()).await.unwrap().unwrap();
    assert_eq!((record.state, record.queue.as_deref()), (ExecutionState::Queued, Some("one")));
    engine.cancel(second.id()).await.unwrap();
    let error = second.await.unwrap_err();
    assert!(matches!(error, RunError::Cancelled { .. }), "{error}");
    gate.open();
    first.await.unwrap();
    assert_eq!(gate.arrived(), 1, "the cancelled run never started");
}

#[tokio::test]
async fn an_unknown_queue_and_unusable_limits_are_refused_with_what_to_do() {
    let inside = Arc::new(Inside::default());
    let engine = engine(MemoryStore::new(), Queue::new("emails").concurrency(2), &inside).start().await.unwrap();
    let error = email::run_with(&engine, 1, RunOptions::new().queue("emial")).await.unwrap_err();
    assert!(matches!(&error, RunError::UnknownQueue { queue, .. } if queue == "emial"), "{error}");
    let message = error.to_string();
    assert!(message.contains("queue `emial` is not defined (defined: `emails`)"), "{message}");
    assert!(message.contains("Queue::new(\"emial\")"), "{message}");
    assert!(engine.executions(&Default::default()).await.unwrap().is_empty(), "nothing stored");

    let error = Engine::builder().memory().queue(Queue::new("none").concurrency(0)).start().await.err().unwrap();
    assert!(matches!(error, EngineError::Queue(_)), "{error}");
    assert!(error.to_string().contains("queue `none` has concurrency 0"), "{error}");
}
