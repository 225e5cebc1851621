//! Step and workflow policies through the public API: retries with backoff (on tokio's paused
//! clock), attempt timeouts, failure policies, workflow timeouts, idempotent starts, exclusive
//! keys, cancellation, re-runs and retention.

use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use workflows_runtime::ExecutionQuery;
use workflows_runtime::prelude::*;
use workflows_runtime::{Backoff, RetryPolicy};
use workflows_runtime::{EngineBuilder, ExecutionState, FailureKind, JournalEvent, MemoryStore, Timestamp};
use workflows_tests::{Gate, Log, eventually};

/// Records when each attempt ran, and fails the first `fail_first` attempts.
#[derive(Default)]
struct Flaky {
    fail_first: u32,
    permanent: bool,
    attempts: Mutex<Vec<Instant>>,
}

impl Flaky {
    fn failing(n: u32) -> Arc<Self> {
        Arc::new(Self { fail_first: n, ..Self::default() })
    }

    fn attempt(&self) -> Result<u32, StepError> {
        let mut attempts = self.attempts.lock().unwrap();
        attempts.push(Instant::now());
        let n = attempts.len() as u32;
        match (n <= self.fail_first, self.permanent) {
            (true, true) => Err(StepError::permanent(format!("attempt {n} failed for good"))),
            (true, false) => Err(StepError::new(format!("attempt {n} failed"))),
            (false, _) => Ok(n),
        }
    }

    fn gaps_ms(&self) -> Vec<u128> {
        let attempts = self.attempts.lock().unwrap();
        attempts.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect()
    }
}

#[step(retry(max_attempts = 4, backoff = "100ms..1s", jitter = 0))]
async fn flaky(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Flaky>>()?.attempt()
}

#[workflow]
async fn retrying(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    Ok(flaky(wf).await?)
}

fn engine_with<T: Send + Sync + 'static>(service: T) -> EngineBuilder {
    Engine::builder().memory().container(Container::new().with(service))
}

#[tokio::test(start_paused = true)]
async fn retries_wait_an_exponential_backoff_and_then_succeed() {
    let probe = Flaky::failing(2);
    let engine = engine_with(probe.clone()).start().await.unwrap();
    let handle = retrying::start(&engine, ()).await.unwrap();
    let id = handle.id().clone();
    assert_eq!(handle.await.unwrap(), 3, "the third attempt succeeds");
    assert_eq!(probe.gaps_ms(), [100, 200], "waits of 100 ms, then 200 ms");

    let failures: Vec<(u32, bool)> = engine
        .journal(&id)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            JournalEvent::StepFailed { attempt, retry_at, .. } => Some((attempt, retry_at.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(failures, [(1, true), (2, true)], "each failed attempt and its next-attempt time are journaled");
}

#[tokio::test(start_paused = true)]
async fn after_the_last_attempt_the_error_names_the_step_and_the_attempts() {
    let probe = Flaky::failing(10);
    let engine = engine_with(probe.clone()).start().await.unwrap();
    let error = retrying::run(&engine, ()).await.unwrap_err();
    assert_eq!(probe.attempts.lock().unwrap().len(), 4);
    assert_eq!(probe.gaps_ms(), [100, 200, 400]);
    let failure = error.failure().unwrap();
    assert_eq!(failure.step.as_deref(), Some("flaky"));
    assert_eq!(failure.attempts, Some(4));
    assert_eq!(failure.message, "attempt 4 failed", "the last error, not swallowed");
    assert!(error.to_string().contains("step `flaky` (flaky#1) failed after 4 attempts: attempt 4 failed"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let probe = Arc::new(Flaky { fail_first: 10, permanent: true, ..Flaky::default() });
    let engine = engine_with(probe.clone()).start().await.unwrap();
    let error = retrying::run(&engine, ()).await.unwrap_err();
    assert_eq!(probe.attempts.lock().unwrap().len(), 1);
    assert_eq!(error.failure().unwrap().attempts, Some(1));
}

#[step]
async fn default_policy(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Flaky>>()?.attempt()
}

#[workflow]
async fn using_defaults(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    Ok(default_policy(wf).await?)
}

#[tokio::test(start_paused = true)]
async fn steps_without_a_policy_use_the_engines_default() {
    // One attempt unless the engine says otherwise.
    let probe = Flaky::failing(1);
    let engine = engine_with(probe.clone()).start().await.unwrap();
    assert!(using_defaults::run(&engine, ()).await.is_err());
    assert_eq!(probe.attempts.lock().unwrap().len(), 1);

    let probe = Flaky::failing(2);
    let policy = RetryPolicy::new(3, Backoff::Fixed(Duration::from_millis(40)));
    let engine = engine_with(probe.clone()).default_retry(policy).start().await.unwrap();
    assert_eq!(using_defaults::run(&engine, ()).await.unwrap(), 3);
    assert_eq!(probe.gaps_ms(), [40, 40]);
}

/// Set when a hanging step's future is dropped.
static HANG_DROPPED: AtomicBool = AtomicBool::new(false);

struct SetOnDrop(&'static AtomicBool);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[step(timeout = "50ms", retry(max_attempts = 2, backoff = "10ms"))]
async fn hangs(ctx: &StepContext) -> Result<(), StepError> {
    ctx.resolve::<Arc<Flaky>>()?.attempts.lock().unwrap().push(Instant::now());
    let _guard = SetOnDrop(&HANG_DROPPED);
    std::future::pending::<()>().await;
    Ok(())
}

#[workflow]
async fn hanging(wf: &Workflow, _input: ()) -> Result<(), WorkflowError> {
    Ok(hangs(wf).await?)
}

#[tokio::test(start_paused = true)]
async fn a_step_that_never_returns_is_stopped_by_its_timeout_and_retried() {
    let probe = Arc::new(Flaky::default());
    let engine = engine_with(probe.clone()).start().await.unwrap();
    let started = Instant::now();
    let error = hanging::run(&engine, ()).await.unwrap_err();
    assert!(HANG_DROPPED.load(Ordering::SeqCst), "the body's future was dropped at the deadline");
    assert_eq!(probe.attempts.lock().unwrap().len(), 2, "the timed-out attempt counts as failed and is retried");
    assert_eq!(probe.gaps_ms(), [60], "50 ms of attempt, then the 10 ms backoff");
    assert_eq!(started.elapsed().as_millis(), 110);
    let failure = error.failure().unwrap();
    assert_eq!(failure.attempts, Some(2));
    assert!(failure.message.contains("the attempt timed out after 50ms"), "{}", failure.message);
}

#[derive(Default)]
struct Effects {
    log: Log,
    gate: Gate,
}

#[step(compensate = undo_effect)]
async fn effect(ctx: &StepContext, name: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Effects>>()?.log.push(format!("do {name}"));
    Ok(name)
}

async fn undo_effect(ctx: &StepContext, name: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Effects>>()?.log.push(format!("undo {name}"));
    Ok(())
}

#[step(compensate = undo_effect)]
async fn slow_effect(ctx: &StepContext, name: String, millis: u64) -> Result<String, StepError> {
    let effects = ctx.resolve::<Arc<Effects>>()?;
    effects.log.push(format!("start {name}"));
    tokio::time::sleep(Duration::from_millis(millis)).await;
    effects.log.push(format!("do {name}"));
    Ok(name)
}

#[workflow(timeout = "1s")]
async fn deadline(wf: &Workflow, _input: ()) -> Result<(), WorkflowError> {
    effect(wf, "a".into()).await?;
    slow_effect(wf, "b".into(), 3000).await?;
    effect(wf, "c".into()).await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_workflow_past_its_timeout_stops_at_the_next_step_boundary_and_compensates() {
    let effects = Arc::new(Effects::default());
    let engine = engine_with(effects.clone()).start().await.unwrap();
    let handle = deadline::start(&engine, ()).await.unwrap();
    let id = handle.id().clone();
    let error = handle.await.unwrap_err();
    let RunError::TimedOut { failure, .. } = &error else { panic!("{error}") };
    assert_eq!(failure.kind, FailureKind::TimedOut);
    assert!(failure.message.contains("longer than the workflow's timeout (1s)"), "{}", failure.message);
    // b was running at the deadline: it finished, so it is compensated too; c never started.
    assert_eq!(effects.log.lines(), ["do a", "start b", "do b", "undo b", "undo a"]);
    assert_eq!(engine.execution(&id).await.unwrap().unwrap().state, ExecutionState::TimedOut);
}

#[step(on_failure = "continue")]
async fn optional_discount(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Flaky>>()?.attempt()
}

#[step(on_failure = "skip")]
async fn newsletter(ctx: &StepContext) -> Result<String, StepError> {
    ctx.resolve::<Arc<Flaky>>()?.attempt().map(|n| format!("sent {n}"))
}

#[step]
async fn must_work(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Flaky>>()?.attempt()
}

#[workflow]
async fn tolerant(wf: &Workflow, _input: ()) -> Result<String, WorkflowError> {
    // `continue`: the body gets the error and decides.
    let discount = optional_discount(wf).await.unwrap_or(0);
    // `skip`: the step is recorded as skipped and returns None.
    let sent = newsletter(wf).await?;
    Ok(format!("discount {discount}, newsletter {sent:?}"))
}

#[workflow]
async fn careless(wf: &Workflow, _input: ()) -> Result<String, WorkflowError> {
    // The error is ignored here, but a step with the default policy fails the workflow anyway.
    let _ = must_work(wf).await;
    Ok("carried on".into())
}

#[tokio::test]
async fn failure_policies_continue_skip_and_fail() {
    let probe = Flaky::failing(2);
    let engine = engine_with(probe.clone()).start().await.unwrap();
    let handle = tolerant::start(&engine, ()).await.unwrap();
    let id = handle.id().clone();
    assert_eq!(handle.await.unwrap(), "discount 0, newsletter None");
    let skipped = engine.journal(&id).await.unwrap().into_iter().any(|e| e.event.kind() == "step_skipped");
    assert!(skipped, "the skip is journaled");
    // On replay the skip stays a skip.
    assert_eq!(
        tolerant::run_with(&engine, (), RunOptions::new().id(&id)).await.unwrap(),
        "discount 0, newsletter None"
    );

    let probe = Flaky::failing(1);
    let engine = engine_with(probe).start().await.unwrap();
    let error = careless::run(&engine, ()).await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "a failure cannot be swallowed by accident: {error}");
    assert_eq!(error.step(), Some("must_work"));
}

#[step]
async fn count_run(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<AtomicU32>>()?.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(20)).await;
    Ok(n * 2)
}

#[workflow]
async fn once(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(count_run(wf, n).await?)
}

async fn fifty_concurrent_starts(engine: Engine, runs: Arc<AtomicU32>) {
    let starts = (0..50).map(|_| {
        let engine = engine.clone();
        tokio::spawn(async move { once::run_with(&engine, 21, RunOptions::new().id("checkout-42")).await })
    });
    for start in starts.collect::<Vec<_>>() {
        assert_eq!(start.await.unwrap().unwrap(), 42);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the step ran once");
    let all = engine.executions(&ExecutionQuery::default()).await.unwrap();
    assert_eq!(all.iter().filter(|r| r.workflow == "once").count(), 1, "one execution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_starts_of_one_id_create_one_execution() {
    let runs = Arc::new(AtomicU32::new(0));
    let engine = Engine::builder().memory().container(Container::new().with(runs.clone())).start().await.unwrap();
    fifty_concurrent_starts(engine, runs).await;

    let dir = tempfile::tempdir().unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let engine = Engine::builder()
        .sqlite(dir.path().join("idempotent.db"))
        .container(Container::new().with(runs.clone()))
        .start()
        .await
        .unwrap();
    fifty_concurrent_starts(engine, runs).await;
}

/// Counts the executions inside the critical section at once.
#[derive(Default)]
struct Critical {
    inside: AtomicI32,
    most: AtomicI32,
    order: Mutex<Vec<u32>>,
}

#[step]
async fn capture_payment(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    let critical = ctx.resolve::<Arc<Critical>>()?;
    let inside = critical.inside.fetch_add(1, Ordering::SeqCst) + 1;
    critical.most.fetch_max(inside, Ordering::SeqCst);
    critical.order.lock().unwrap().push(n);
    tokio::time::sleep(Duration::from_millis(3)).await;
    critical.inside.fetch_sub(1, Ordering::SeqCst);
    Ok(n)
}

#[workflow]
async fn pay_cart(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(capture_payment(wf, n).await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_with_one_exclusive_key_never_overlap_across_engines_sharing_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exclusive.db");
    let critical = Arc::new(Critical::default());
    // Two engines on one file, as two processes would be.
    let engines = [
        Engine::builder().sqlite(&path).container(Container::new().with(critical.clone())).start().await.unwrap(),
        Engine::builder().sqlite(&path).container(Container::new().with(critical.clone())).start().await.unwrap(),
    ];
    let mut runs = Vec::new();
    for n in 0..20u32 {
        let engine = &engines[n as usize % 2];
        // Started (stored) in this order, one after the other: they run in this order.
        runs.push(pay_cart::start_with(engine, n, RunOptions::new().exclusive_key("cart:123")).await.unwrap());
    }
    for (n, run) in runs.into_iter().enumerate() {
        assert_eq!(run.await.unwrap(), n as u32);
    }
    assert_eq!(critical.most.load(Ordering::SeqCst), 1, "never two at once");
    assert_eq!(*critical.order.lock().unwrap(), (0..20).collect::<Vec<_>>(), "first come, first served");
}

#[tokio::test]
async fn a_held_key_can_fail_fast_instead_of_waiting() {
    let effects = Arc::new(Effects::default());
    let engine = engine_with(effects.clone()).start().await.unwrap();
    let holder = gated_effect::start_with(&engine, (), RunOptions::new().id("holder").exclusive_key("order:9")).await;
    let holder = holder.unwrap();
    eventually(Duration::from_secs(5), || async { (effects.gate.arrived() == 1).then_some(()) }).await;
    let options = RunOptions::new().exclusive_key("order:9").fail_if_key_held();
    let error = gated_effect::run_with(&engine, (), options).await.unwrap_err();
    assert!(matches!(&error, RunError::KeyHeld { holder, .. } if holder.as_str() == "holder"), "{error}");
    effects.gate.open();
    holder.await.unwrap();
    // Free again: the key can be taken.
    let options = RunOptions::new().exclusive_key("order:9").fail_if_key_held();
    gated_effect::run_with(&engine, (), options).await.unwrap();
}

#[step]
async fn wait_at_gate(ctx: &StepContext) -> Result<(), StepError> {
    let effects = ctx.resolve::<Arc<Effects>>()?;
    let _guard = SetOnDrop(&GATE_DROPPED);
    tokio::select! {
        () = effects.gate.pass() => Ok(()),
        () = ctx.cancelled() => {
            // A cancelled execution waits for its running bodies (bounded by their timeout):
            // this one stops as soon as it sees the cancellation.
            effects.log.push("saw the cancellation");
            Err(StepError::permanent("stopped: the execution is cancelled"))
        }
    }
}

static GATE_DROPPED: AtomicBool = AtomicBool::new(false);

#[workflow]
async fn gated_effect(wf: &Workflow, _input: ()) -> Result<(), WorkflowError> {
    effect(wf, "first".into()).await?;
    wait_at_gate(wf).await?;
    effect(wf, "never".into()).await?;
    Ok(())
}

#[tokio::test]
async fn cancelling_a_running_execution_cancels_its_step_and_compensates() {
    let effects = Arc::new(Effects::default());
    let engine = engine_with(effects.clone()).start().await.unwrap();
    let handle = gated_effect::start(&engine, ()).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (effects.gate.arrived() == 1).then_some(()) }).await;

    engine.cancel(&id).await.unwrap();
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Cancelled { .. }), "{error}");
    assert!(GATE_DROPPED.load(Ordering::SeqCst), "the running step body ended");
    // Its outcome was journaled before the compensation ran.
    let journal = engine.journal(&id).await.unwrap();
    let kinds: Vec<_> = journal.iter().map(|e| format!("{} {}", e.event.kind(), e.event.step().1)).collect();
    assert!(kinds.contains(&"step_failed wait_at_gate#1".to_owned()), "{kinds:?}");
    assert_eq!(effects.log.lines(), ["do first", "saw the cancellation", "undo first"]);
    let record = engine.execution(&id).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Cancelled);
    assert_eq!(record.failure.unwrap().kind, FailureKind::Cancelled);

    // Finished: cancelling again is a clear no-op error.
    let again = engine.cancel(&id).await.unwrap_err();
    assert!(matches!(again, RunError::NotCancellable { state: ExecutionState::Cancelled, .. }), "{again}");
    assert!(again.to_string().contains("already finished (cancelled)"), "{again}");
    let unknown = engine.cancel(&"nope".into()).await.unwrap_err();
    assert!(matches!(unknown, RunError::NotFound { .. }), "{unknown}");
}

#[tokio::test]
async fn an_execution_driven_by_another_engine_is_cancelled_by_that_engine() {
    // The 150 ms lease is the test clock's, not the machine's.
    let _clock = workflows_runtime::testing::TestClock::start();
    let store = Arc::new(MemoryStore::new());
    let effects = Arc::new(Effects::default());
    let builder = || {
        Engine::builder()
            .store(store.clone())
            .container(Container::new().with(effects.clone()))
            .lease_duration(Duration::from_millis(150))
    };
    let owner = builder().start().await.unwrap();
    let other = builder().start().await.unwrap();
    let handle = gated_effect::start(&owner, ()).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (effects.gate.arrived() == 1).then_some(()) }).await;

    other.cancel(&id).await.unwrap();
    let error =
        tokio::time::timeout(Duration::from_secs(5), handle).await.expect("cancelled within a lease").unwrap_err();
    assert!(matches!(error, RunError::Cancelled { .. }), "{error}");
    assert_eq!(effects.log.lines().last().map(String::as_str), Some("undo first"));
}

#[tokio::test]
async fn a_queued_execution_can_be_cancelled_before_it_runs() {
    let effects = Arc::new(Effects::default());
    let engine = engine_with(effects.clone()).start().await.unwrap();
    let first = gated_effect::start_with(&engine, (), RunOptions::new().exclusive_key("k")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (effects.gate.arrived() == 1).then_some(()) }).await;
    let queued = gated_effect::start_with(&engine, (), RunOptions::new().exclusive_key("k")).await.unwrap();
    let queued_id = queued.id().clone();
    assert_eq!(engine.execution(&queued_id).await.unwrap().unwrap().state, ExecutionState::Pending);

    engine.cancel(&queued_id).await.unwrap();
    assert!(matches!(queued.await.unwrap_err(), RunError::Cancelled { .. }));
    assert_eq!(effects.log.count("do first"), 1, "the queued execution never ran a step");
    effects.gate.open();
    first.await.unwrap();
}

#[step(compensate = undo_effect)]
async fn ship(ctx: &StepContext, name: String) -> Result<String, StepError> {
    let effects = ctx.resolve::<Arc<Effects>>()?;
    if effects.log.count("carrier fixed") == 0 {
        return Err(StepError::permanent("the carrier is down"));
    }
    effects.log.push(format!("ship {name}"));
    Ok(name)
}

#[workflow]
async fn fulfil(wf: &Workflow, name: String) -> Result<String, WorkflowError> {
    let reserved = effect(wf, name).await?;
    Ok(ship(wf, reserved).await?)
}

#[tokio::test]
async fn a_compensated_execution_can_be_rerun_as_a_new_linked_execution() {
    let effects = Arc::new(Effects::default());
    let engine = engine_with(effects.clone()).start().await.unwrap();
    let error = fulfil::run_with(&engine, "tee".into(), RunOptions::new().id("order-7")).await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }));

    // Running the same id again returns the recorded outcome; a re-run is explicit.
    assert!(fulfil::run_with(&engine, "tee".into(), RunOptions::new().id("order-7")).await.is_err());
    effects.log.push("carrier fixed");
    let output = engine.rerun_workflow::<fulfil>(&"order-7".into()).await.unwrap();
    assert_eq!(output, "tee");
    let reruns = engine.executions(&ExecutionQuery::default()).await.unwrap();
    let rerun = reruns.iter().find(|r| r.rerun_of.as_ref().is_some_and(|o| o.as_str() == "order-7")).unwrap();
    assert_eq!(rerun.state, ExecutionState::Completed);
    assert_eq!(engine.execution(&"order-7".into()).await.unwrap().unwrap().state, ExecutionState::Compensated);

    let running = gated_effect::start(&engine, ()).await.unwrap();
    let refused = engine.rerun(running.id()).await.unwrap_err();
    assert!(refused.to_string().contains("still running"), "{refused}");
}

#[workflow(retention = "1ms")]
async fn short_lived(wf: &Workflow, name: String) -> Result<String, WorkflowError> {
    Ok(effect(wf, name).await?)
}

#[tokio::test]
async fn retention_purges_only_what_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let effects = Arc::new(Effects::default());
    let engine = Engine::builder()
        .sqlite(dir.path().join("retention.db"))
        .container(Container::new().with(effects.clone()))
        .purge_interval(Duration::ZERO)
        .start()
        .await
        .unwrap();
    short_lived::run_with(&engine, "a".into(), RunOptions::new().id("expired")).await.unwrap();
    fulfil::run_with(&engine, "b".into(), RunOptions::new().id("kept")).await.unwrap_err();
    let running = gated_effect::start_with(&engine, (), RunOptions::new().id("running")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (effects.gate.arrived() == 1).then_some(()) }).await;
    tokio::time::sleep(Duration::from_millis(20)).await;

    assert_eq!(engine.purge_due().await.unwrap(), 1);
    assert!(engine.execution(&"expired".into()).await.unwrap().is_none());
    assert!(engine.journal(&"expired".into()).await.unwrap().is_empty(), "its journal went with it");
    let kept = engine.execution(&"kept".into()).await.unwrap().unwrap();
    let retained = kept.retain_until.unwrap().duration_since(Timestamp::now());
    assert!(retained > Duration::from_secs(6 * 24 * 3600), "the default retention is 7 days: {retained:?}");

    // An explicit purge of everything finished before now keeps running executions.
    assert_eq!(engine.purge_finished_before(Timestamp::now()).await.unwrap(), 1);
    assert!(engine.execution(&"kept".into()).await.unwrap().is_none());
    assert!(engine.execution(&"running".into()).await.unwrap().is_some());
    effects.gate.open();
    running.await.unwrap();
}

#[tokio::test]
async fn the_background_purge_runs_on_its_interval() {
    let effects = Arc::new(Effects::default());
    let engine = engine_with(effects.clone()).purge_interval(Duration::from_millis(20)).start().await.unwrap();
    short_lived::run_with(&engine, "x".into(), RunOptions::new().id("soon-gone")).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        engine.execution(&"soon-gone".into()).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[step(retry(max_attempts = 3, backoff = "900ms", jitter = 0))]
async fn fails_once(ctx: &StepContext) -> Result<u32, StepError> {
    let log = ctx.resolve::<Arc<Log>>()?;
    log.push(format!("attempt {} at {}", ctx.attempt(), Timestamp::now().as_micros()));
    if ctx.attempt() == 1 { Err(StepError::new("not yet")) } else { Ok(ctx.attempt()) }
}

#[workflow]
async fn backs_off(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    Ok(fails_once(wf).await?)
}

#[test]
fn a_backoff_and_the_attempt_count_survive_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("backoff.db");
    let log = Arc::new(Log::default());
    let builder = || {
        Engine::builder()
            .sqlite(&path)
            .container(Container::new().with(log.clone()))
            // Short, for the takeover in the same process (its owner cannot be proven gone),
            // and long enough that a slow commit on a loaded machine does not outlast the
            // provable part of it (the attempt would be given up and taken over: attempt 3).
            .lease_duration(Duration::from_millis(600))
    };

    // The first engine dies (its runtime is dropped, nothing released) during the backoff.
    let crashed = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let retry_at = crashed.block_on(async {
        let engine = builder().start().await.unwrap();
        let handle = backs_off::start_with(&engine, (), RunOptions::new().id("backoff")).await.unwrap();
        eventually(Duration::from_secs(5), || async {
            engine.journal(handle.id()).await.unwrap().into_iter().find_map(|e| match e.event {
                JournalEvent::StepFailed { attempt: 1, retry_at: Some(at), .. } => Some(at),
                _ => None,
            })
        })
        .await
    });
    drop(crashed);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let engine = builder().start().await.unwrap();
        let output = backs_off::run_with(&engine, (), RunOptions::new().id("backoff")).await.unwrap();
        assert_eq!(output, 2, "the attempt number continues: {:?}", log.lines());
        let lines = log.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let second: i64 = lines[1].rsplit(' ').next().unwrap().parse().unwrap();
        assert!(second >= retry_at.as_micros(), "attempt 2 waited for the journaled retry time: {lines:?}");
    });
}
