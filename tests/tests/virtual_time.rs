//! The test clock (`workflows_runtime::testing::TestClock`): durable sleeps, retry backoffs,
//! schedules, timeouts and leases follow virtual time, on the memory and SQLite stores, with
//! auto-skip and with time moved by hand. Wall times are printed, never asserted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use workflows_runtime::prelude::*;
use workflows_runtime::testing::TestClock;
use workflows_runtime::{EngineBuilder, ExecutionQuery, ExecutionState};

const DAY: Duration = Duration::from_secs(24 * 3600);
const MINUTE: Duration = Duration::from_secs(60);

/// 2026-01-05T00:00:00Z: a fixed start, so that schedule ticks fall on known instants.
fn monday() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_571_200)
}

static CHARGES: AtomicU32 = AtomicU32::new(0);

#[step(retry(max_attempts = 3, backoff = "10m", jitter = 0.0))]
async fn charge_late(ctx: &StepContext, order: u32) -> Result<String, StepError> {
    CHARGES.fetch_add(1, Ordering::SeqCst);
    if ctx.attempt() < 3 {
        return Err(StepError::new("the provider is busy"));
    }
    Ok(format!("charged order {order} at attempt {}", ctx.attempt()))
}

#[workflow]
async fn month_then_charge(wf: &Workflow, order: u32) -> Result<String, WorkflowError> {
    wf.sleep(30 * DAY).await;
    Ok(charge_late(wf, order).await?)
}

#[step]
async fn note_tick(at: String) -> Result<String, StepError> {
    Ok(at)
}

#[workflow(schedule = "0 * * * *", overlap = "allow")]
async fn every_hour(wf: &Workflow, tick: Tick) -> Result<String, WorkflowError> {
    Ok(note_tick(wf, tick.at.to_string()).await?)
}

#[step(async)]
async fn never_answers(ctx: &StepContext) -> Result<Completion<String>, StepError> {
    let _ = ctx.completion_token();
    Ok(Completion::later())
}

#[workflow(timeout = "3d")]
async fn approval_in_three_days(wf: &Workflow, order: u32) -> Result<String, WorkflowError> {
    let _ = order;
    Ok(never_answers(wf).await?)
}

async fn ticks(engine: &Engine) -> usize {
    let query = ExecutionQuery { workflow: Some("every_hour".into()), ..ExecutionQuery::default() };
    engine.executions(&query).await.unwrap().len()
}

/// A 30-day sleep, a step that fails twice with a 10-minute backoff, and an hourly schedule:
/// all of it in milliseconds of wall time.
async fn a_month_a_backoff_and_an_hourly_schedule(builder: EngineBuilder, store: &str) {
    let clock = TestClock::start_at(monday());
    // Finished executions are kept for 7 days by default: the ticks of the month are counted.
    let engine = builder.retention(60 * DAY).start().await.unwrap();
    let began = Instant::now();
    let started = clock.now();
    let charges = CHARGES.load(Ordering::SeqCst);
    let charged = month_then_charge::run(&engine, 7).await.unwrap();
    let took = clock.now().duration_since(started).unwrap();
    println!(
        "{store}: 30 days, 2 backoffs of 10 minutes and {} hourly ticks in {:?} of wall time",
        ticks(&engine).await,
        began.elapsed()
    );
    assert_eq!(charged, "charged order 7 at attempt 3");
    assert!(CHARGES.load(Ordering::SeqCst) - charges >= 3);
    assert!(took >= 30 * DAY + 20 * MINUTE, "the clock moved {took:?}");
    assert!(took < 31 * DAY, "the clock moved {took:?}");
    // The schedule ran once an hour, on the hour, while the month went by.
    let hours = ticks(&engine).await;
    assert!((720..=722).contains(&hours), "{hours} ticks in 30 days");
    engine.shutdown().await;
}

#[tokio::test]
async fn a_month_long_workflow_completes_at_once_in_memory() {
    a_month_a_backoff_and_an_hourly_schedule(Engine::builder().memory(), "memory").await;
}

#[tokio::test]
async fn a_month_long_workflow_completes_at_once_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    a_month_a_backoff_and_an_hourly_schedule(Engine::builder().sqlite(dir.path().join("month.db")), "sqlite").await;
}

/// With auto-skip off, time moves only when the test moves it: an hour later one tick ran,
/// three hours later three; nothing ran in between.
#[tokio::test]
async fn advance_runs_exactly_what_became_due() {
    let clock = TestClock::start_at(monday());
    clock.auto_skip(false);
    let engine = Engine::builder().memory().start().await.unwrap();
    clock.settle().await;
    assert_eq!(ticks(&engine).await, 0, "the first tick is due at 01:00");
    clock.advance(Duration::from_secs(3600)).await;
    assert_eq!(ticks(&engine).await, 1);
    clock.advance(Duration::from_secs(2 * 3600)).await;
    assert_eq!(ticks(&engine).await, 3);
    let waiting = approval_in_three_days::start(&engine, 1).await.unwrap();
    clock.advance(2 * DAY).await;
    let state = |engine: &Engine| {
        let (engine, id) = (engine.clone(), waiting.id().clone());
        async move { engine.execution(&id).await.unwrap().unwrap() }
    };
    assert_eq!(state(&engine).await.state, ExecutionState::Waiting, "two days in, it still waits");
    clock.advance(DAY).await;
    let record = state(&engine).await;
    assert_eq!(record.state, ExecutionState::TimedOut, "three days in, its timeout ended it: {record:?}");
    engine.shutdown().await;
}

/// On SQLite, with auto-skip: a workflow's timeout, with a commit under way at every step,
/// fires at its own instant and no earlier.
#[tokio::test]
async fn a_timeout_follows_the_clock_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let clock = TestClock::start_at(monday());
    let engine = Engine::builder().sqlite(dir.path().join("timeout.db")).run_schedules(false).start().await.unwrap();
    let started = clock.now();
    let error = approval_in_three_days::run(&engine, 2).await.unwrap_err();
    let took = clock.now().duration_since(started).unwrap();
    assert!(error.to_string().contains("timeout"), "{error}");
    assert!(took >= 3 * DAY && took < 3 * DAY + MINUTE, "the clock moved {took:?}");
    engine.shutdown().await;
}
