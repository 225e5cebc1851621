//! Long-running workflows, on the SQLite store and on the memory store (each test runs on
//! both: `sqlite::name` and `memory::name`): async steps completed from outside, durable
//! timers across a restart, events (also sent before the wait), waits that time out and
//! compensate, suspension, child workflows compensated and cancelled with their parent, and
//! the fan-out helper.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{CallKey, DeliveryError, EngineBuilder, ExecutionState, JournalEvent, MemoryStore, WaitError};
use workflows_tests::{Gate, Log, eventually};

/// What the steps did, and the completion tokens they sent out.
#[derive(Default)]
struct Outbox {
    tokens: Mutex<Vec<String>>,
    log: Log,
    gate: Gate,
}

impl Outbox {
    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }
}

/// The store a test runs on; engines built from it share it (a restart sees what was stored).
enum Store {
    Sqlite { _dir: tempfile::TempDir, path: std::path::PathBuf },
    Memory(Arc<MemoryStore>),
}

impl Store {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("long.db");
        Self::Sqlite { _dir: dir, path }
    }

    fn memory() -> Self {
        Self::Memory(Arc::new(MemoryStore::new()))
    }

    fn builder(&self) -> EngineBuilder {
        match self {
            Self::Sqlite { path, .. } => Engine::builder().sqlite(path),
            Self::Memory(store) => Engine::builder().store(store.clone()),
        }
    }

    fn engine(&self, outbox: &Arc<Outbox>) -> EngineBuilder {
        self.builder().container(Container::new().with(outbox.clone()))
    }

    /// Virtual time for the engines started from now on (on either store).
    fn clock(&self) -> workflows_runtime::testing::TestClock {
        workflows_runtime::testing::TestClock::start()
    }
}

async fn token(outbox: &Outbox, n: usize) -> String {
    eventually(Duration::from_secs(10), || async { outbox.tokens().get(n).cloned() }).await
}

async fn state(engine: &Engine, id: &ExecutionId) -> ExecutionState {
    engine.execution(id).await.unwrap().unwrap().state
}

async fn wait_for_state(engine: &Engine, id: &ExecutionId, wanted: ExecutionState) {
    eventually(Duration::from_secs(10), || async {
        let record = engine.execution(id).await.unwrap();
        record.is_some_and(|r| r.state == wanted).then_some(())
    })
    .await
}

#[step(async)]
async fn ask(ctx: &StepContext, question: String) -> Result<Completion<bool>, StepError> {
    let outbox = ctx.resolve::<Arc<Outbox>>()?;
    outbox.log.push(format!("ask {question} attempt {}", ctx.attempt()));
    outbox.tokens.lock().unwrap().push(ctx.completion_token());
    Ok(Completion::later())
}

#[workflow]
async fn ask_once(wf: &Workflow, question: String) -> Result<String, WorkflowError> {
    let yes = ask(wf, question.clone()).await?;
    Ok(format!("{question}: {}", if yes { "yes" } else { "no" }))
}

async fn an_async_step_suspends_the_execution_until_it_is_completed(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = ask_once::start(&engine, "ship?".into()).await.unwrap();
    let id = handle.id().clone();
    let token = token(&outbox, 0).await;
    assert_eq!(token, engine.completion_token(&id, &CallKey::new("ask", 1)));
    assert!(token.starts_with("wf1."), "{token}");
    // Made up from the execution's id (the form of earlier releases): refused.
    let forged = engine.complete_step(&format!("{id}/ask#1"), true).await.unwrap_err();
    assert!(matches!(forged, DeliveryError::InvalidToken { .. }), "{forged}");
    let tampered = format!("{}x", &token[..token.len() - 1]);
    assert!(matches!(engine.complete_step(&tampered, true).await, Err(DeliveryError::InvalidToken { .. })));
    // Suspended: waiting in the store, no task in the engine.
    wait_for_state(&engine, &id, ExecutionState::Waiting).await;
    eventually(Duration::from_secs(5), || async { (engine.running() == 0).then_some(()) }).await;

    // Bad completions are refused and change nothing.
    let wrong_shape = engine.complete_step(&token, "certainly").await.unwrap_err();
    assert!(matches!(wrong_shape, DeliveryError::Output { .. }), "{wrong_shape}");
    assert!(wrong_shape.to_string().contains("does not decode as the step's output"), "{wrong_shape}");
    let unknown = engine.complete_step("no-such-execution/ask#1", true).await.unwrap_err();
    assert!(matches!(unknown, DeliveryError::NotFound { .. }), "{unknown}");
    let garbage = engine.complete_step("garbage", true).await.unwrap_err();
    assert!(matches!(garbage, DeliveryError::InvalidToken { .. }), "{garbage}");
    let not_async = engine.complete_step(&format!("{id}/pick#1"), 1).await.unwrap_err();
    assert!(not_async.to_string().contains("not an async step"), "{not_async}");
    assert_eq!(state(&engine, &id).await, ExecutionState::Waiting);

    engine.complete_step(&token, true).await.unwrap();
    assert_eq!(handle.await.unwrap(), "ship?: yes");
    let twice = engine.complete_step(&token, false).await.unwrap_err();
    assert!(matches!(twice, DeliveryError::Finished { .. }), "{twice}");
    assert_eq!(outbox.log.count("ask ship? attempt 1"), 1);
}

#[step(async, retry(max_attempts = 2, backoff = "10ms"))]
async fn ask_twice(ctx: &StepContext) -> Result<Completion<u32>, StepError> {
    let outbox = ctx.resolve::<Arc<Outbox>>()?;
    outbox.log.push(format!("ask attempt {}", ctx.attempt()));
    outbox.tokens.lock().unwrap().push(ctx.completion_token());
    Ok(Completion::later())
}

#[step]
async fn pick(n: u32) -> Result<u32, StepError> {
    Ok(n)
}

#[workflow]
async fn retried_ask(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    let n = ask_twice(wf).await?;
    Ok(pick(wf, n).await? + 1)
}

async fn a_failed_async_step_is_retried_by_its_policy(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = retried_ask::start(&engine, ()).await.unwrap();
    let first = token(&outbox, 0).await;
    engine.fail_step(&first, StepError::new("the approver is away")).await.unwrap();
    // The retry runs the body again (which sends the request again), with the same token.
    let second = token(&outbox, 1).await;
    assert_eq!(first, second);
    engine.complete_step(&second, 41).await.unwrap();
    assert_eq!(handle.await.unwrap(), 42);
    assert_eq!(outbox.log.lines(), ["ask attempt 1", "ask attempt 2"]);
}

#[step]
async fn note(ctx: &StepContext, line: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Outbox>>()?.log.push(line);
    Ok(())
}

#[workflow]
async fn napper(wf: &Workflow, _input: ()) -> Result<(), WorkflowError> {
    note(wf, "before".into()).await?;
    wf.sleep(Duration::from_millis(1500)).await;
    note(wf, "after".into()).await?;
    Ok(())
}

async fn a_sleep_continues_across_a_restart_without_starting_over(store: Store) {
    let _clock = store.clock();
    let outbox = Arc::new(Outbox::default());
    let first = store.engine(&outbox).start().await.unwrap();
    let handle = napper::start(&first, ()).await.unwrap();
    let id = handle.id().clone();
    wait_for_state(&first, &id, ExecutionState::Waiting).await;
    first.shutdown().await;
    drop(handle);

    let second = store.engine(&outbox).start().await.unwrap();
    napper::run_with(&second, (), RunOptions::new().id(&id)).await.unwrap();
    let journal = second.journal(&id).await.unwrap();
    let wake_at = journal.iter().find_map(|e| match e.event {
        JournalEvent::TimerStarted { wake_at, .. } => Some(wake_at),
        _ => None,
    });
    let timers = journal.iter().filter(|e| e.event.kind() == "timer_started").count();
    assert_eq!(timers, 1, "the restart did not start the sleep over");
    let fired = journal.iter().find(|e| e.event.kind() == "timer_fired").expect("fired");
    assert!(fired.at >= wake_at.unwrap(), "fired at its journaled time, not before");
    assert_eq!(outbox.log.lines(), ["before", "after"]);
}

#[step]
async fn wait_at_gate(ctx: &StepContext) -> Result<(), StepError> {
    ctx.resolve::<Arc<Outbox>>()?.gate.pass().await;
    Ok(())
}

#[workflow]
async fn paid_twice(wf: &Workflow, _input: ()) -> Result<Vec<u64>, WorkflowError> {
    wait_at_gate(wf).await?;
    let first: u64 = wf.wait_for_event("paid").await?;
    let second: u64 = wf.wait_for_event("paid").await?;
    Ok(vec![first, second])
}

async fn events_sent_before_the_wait_are_kept_in_order(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = paid_twice::start(&engine, ()).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (outbox.gate.arrived() == 1).then_some(()) }).await;
    // Both events arrive while the workflow is still in its first step.
    engine.send_event(&id, "paid", 10).await.unwrap();
    engine.send_event(&id, "paid", 20).await.unwrap();
    outbox.gate.open();
    assert_eq!(handle.await.unwrap(), [10, 20]);
    let late = engine.send_event(&id, "paid", 30).await.unwrap_err();
    assert!(matches!(late, DeliveryError::Finished { .. }), "{late}");
    let unknown = engine.send_event(&"nobody".into(), "paid", 1).await.unwrap_err();
    assert!(unknown.to_string().contains("no execution `nobody`"), "{unknown}");
}

#[step(compensate = release)]
async fn reserve(ctx: &StepContext, sku: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Outbox>>()?.log.push(format!("reserve {sku}"));
    Ok(sku)
}

async fn release(ctx: &StepContext, sku: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Outbox>>()?.log.push(format!("release {sku}"));
    Ok(())
}

#[workflow]
async fn pay_or_release(wf: &Workflow, sku: String) -> Result<u64, WorkflowError> {
    reserve(wf, sku).await?;
    let paid: u64 = wf.wait_for_event("paid").timeout(Duration::from_millis(1200)).await?;
    Ok(paid)
}

async fn a_wait_that_times_out_compensates(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = pay_or_release::start(&engine, "tee".into()).await.unwrap();
    let id = handle.id().clone();
    // A 1.2 s wait suspends the execution; the timer scheduler resumes it when it is due.
    wait_for_state(&engine, &id, ExecutionState::Waiting).await;
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    assert!(error.to_string().contains("no `paid` event arrived within 1s 200ms"), "{error}");
    assert_eq!(outbox.log.lines(), ["reserve tee", "release tee"]);
    let journal = engine.journal(&id).await.unwrap();
    assert!(journal.iter().any(|e| e.event.kind() == "wait_timed_out"));
    let error: WaitError = WaitError::TimedOut { event: "paid".into(), timeout: Duration::from_secs(1) };
    assert_eq!(error.to_string(), "no `paid` event arrived within 1s");
}

#[workflow]
async fn child_reserves(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
    let a = reserve(wf, format!("{sku}-a")).await?;
    let b = reserve(wf, format!("{sku}-b")).await?;
    Ok(format!("{a}+{b}"))
}

#[step]
async fn charge(fail: bool) -> Result<(), StepError> {
    if fail { Err(StepError::permanent("card declined")) } else { Ok(()) }
}

#[workflow]
async fn parent_order(wf: &Workflow, fail: bool) -> Result<String, WorkflowError> {
    note(wf, "parent begins".into()).await?;
    let reserved = child_reserves(wf, "mug".into()).await?;
    charge(wf, fail).await?;
    Ok(reserved)
}

async fn a_child_runs_as_its_own_execution_and_is_compensated_as_a_unit(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();

    let handle = parent_order::start(&engine, false).await.unwrap();
    let parent = handle.id().clone();
    assert_eq!(handle.await.unwrap(), "mug-a+mug-b");
    let child: ExecutionId = format!("{parent}:@child:child_reserves#1").into();
    let record = engine.execution(&child).await.unwrap().expect("the child execution");
    assert_eq!(record.state, ExecutionState::Completed);
    assert_eq!(
        record.parent.as_ref().map(|(p, k)| (p.clone(), k.as_str())),
        Some((parent.clone(), "@child:child_reserves#1"))
    );

    let handle = parent_order::start(&engine, true).await.unwrap();
    let parent = handle.id().clone();
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    let child: ExecutionId = format!("{parent}:@child:child_reserves#1").into();
    assert_eq!(state(&engine, &child).await, ExecutionState::Compensated);
    // The child's steps were undone in reverse order, as part of the parent's compensation.
    let lines = outbox.log.lines();
    let tail: Vec<&str> = lines.iter().rev().take(2).map(String::as_str).collect();
    assert_eq!(tail, ["release mug-a", "release mug-b"]);
}

#[workflow]
async fn child_waits(wf: &Workflow, sku: String) -> Result<u64, WorkflowError> {
    reserve(wf, sku).await?;
    Ok(wf.wait_for_event::<u64>("never").await?)
}

#[workflow]
async fn parent_waits(wf: &Workflow, _input: ()) -> Result<u64, WorkflowError> {
    Ok(child_waits(wf, "lamp".into()).await?)
}

async fn cancelling_a_parent_cancels_its_running_child(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = parent_waits::start(&engine, ()).await.unwrap();
    let parent = handle.id().clone();
    let child: ExecutionId = format!("{parent}:@child:child_waits#1").into();
    // Both suspend: the child waits for its event, the parent for its child.
    wait_for_state(&engine, &child, ExecutionState::Waiting).await;
    wait_for_state(&engine, &parent, ExecutionState::Waiting).await;

    engine.cancel(&parent).await.unwrap();
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Cancelled { .. }), "{error}");
    assert_eq!(state(&engine, &child).await, ExecutionState::Cancelled);
    assert_eq!(outbox.log.lines(), ["reserve lamp", "release lamp"]);
}

#[step]
async fn square(ctx: &StepContext, k: u32) -> Result<u32, StepError> {
    let running = ctx.resolve::<Arc<Concurrency>>()?;
    let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
    running.max.fetch_max(now, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(u64::from(k * 7 % 5))).await;
    running.now.fetch_sub(1, Ordering::SeqCst);
    Ok(k * k)
}

#[derive(Default)]
struct Concurrency {
    now: AtomicU32,
    max: AtomicU32,
}

#[workflow]
async fn squares(wf: &Workflow, n: u32) -> Result<Vec<u32>, WorkflowError> {
    Ok(wf.fan_out(1..=n, 4, |k| square(wf, k)).await?)
}

async fn fan_out_bounds_concurrency_and_keeps_item_order(store: Store) {
    // On SQLite, the calls wait for their barriers at the same time, each with its own waker.
    let running = Arc::new(Concurrency::default());
    let engine = store.builder().container(Container::new().with(running.clone())).start().await.unwrap();
    let output = squares::run(&engine, 20).await.unwrap();
    assert_eq!(output, (1..=20).map(|k| k * k).collect::<Vec<_>>());
    assert_eq!(running.max.load(Ordering::SeqCst), 4);
}

#[step(async, timeout = "1s", compensate = withdraw)]
async fn ask_with_deadline(ctx: &StepContext, question: String) -> Result<Completion<String>, StepError> {
    ctx.resolve::<Arc<Outbox>>()?.tokens.lock().unwrap().push(ctx.completion_token());
    let _ = question;
    Ok(Completion::later())
}

async fn withdraw(ctx: &StepContext, answer: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Outbox>>()?.log.push(format!("withdraw {answer}"));
    Ok(())
}

#[workflow]
async fn ask_then_fail(wf: &Workflow, fail_charge: bool) -> Result<String, WorkflowError> {
    reserve(wf, "desk".into()).await?;
    let answer = ask_with_deadline(wf, "ok?".into()).await?;
    charge(wf, fail_charge).await?;
    Ok(answer)
}

async fn an_async_step_times_out_by_its_policy_and_is_compensated_like_any_step(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();

    // Never completed: the attempt times out after 1 s and the workflow compensates.
    let handle = ask_then_fail::start(&engine, false).await.unwrap();
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    assert!(error.to_string().contains("no completion was delivered within the step's timeout (1s)"), "{error}");
    assert_eq!(outbox.log.lines(), ["reserve desk", "release desk"]);

    // Completed in time, then a later step fails: the async step's compensation gets its output.
    let handle = ask_then_fail::start(&engine, true).await.unwrap();
    let token = token(&outbox, 1).await;
    engine.complete_step(&token, "yes").await.unwrap();
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    assert_eq!(outbox.log.lines()[2..], ["reserve desk", "withdraw yes", "release desk"]);
}

/// What a workflow with a timeout waits for when its deadline passes.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
enum Waits {
    AsyncStep,
    Timer,
    Event,
    Child,
}

#[workflow]
async fn waits_forever(wf: &Workflow, sku: String) -> Result<(), WorkflowError> {
    reserve(wf, sku).await?;
    wf.wait_for_event::<u64>("never").await?;
    Ok(())
}

/// Reserves stock, then waits for something that does not come before the 1.2 s timeout: long
/// enough to be suspended first, so the deadline must wake it.
#[workflow(timeout = "1200ms")]
async fn deadline_while_waiting(wf: &Workflow, waits: Waits) -> Result<(), WorkflowError> {
    let sku = format!("{waits:?}");
    reserve(wf, sku.clone()).await?;
    match waits {
        Waits::AsyncStep => {
            ask(wf, sku).await?;
        }
        Waits::Timer => wf.sleep(Duration::from_secs(3600)).await,
        Waits::Event => {
            wf.wait_for_event::<u64>("payment").await?;
        }
        Waits::Child => waits_forever(wf, format!("{sku} child")).await?,
    }
    Ok(())
}

/// A workflow's timeout fires while its execution is suspended: at the deadline it wakes,
/// compensates and ends `timed_out`, whatever it waited for; a delivery after that is refused.
async fn a_suspended_execution_times_out_at_its_deadline(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let mut runs = Vec::new();
    for waits in [Waits::AsyncStep, Waits::Timer, Waits::Event, Waits::Child] {
        let id = ExecutionId::from(format!("deadline-{waits:?}"));
        let handle = deadline_while_waiting::start_with(&engine, waits, RunOptions::new().id(&id)).await.unwrap();
        runs.push((waits, id, handle));
    }
    for (waits, id, _) in &runs {
        wait_for_state(&engine, id, ExecutionState::Waiting).await;
        assert!(engine.execution(id).await.unwrap().unwrap().deadline.is_some(), "{waits:?}");
    }
    for (waits, id, handle) in runs {
        let error = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("woken at its deadline");
        let error = error.unwrap_err();
        assert!(matches!(error, RunError::TimedOut { .. }), "{waits:?}: {error}");
        assert_eq!(state(&engine, &id).await, ExecutionState::TimedOut, "{waits:?}");
        assert_eq!(outbox.log.count(&format!("release {waits:?}")), 1, "{waits:?}: {:?}", outbox.log.lines());
    }
    // The child was cancelled with its parent and released its own reservation.
    let child = ExecutionId::from("deadline-Child:@child:waits_forever#1");
    assert_eq!(state(&engine, &child).await, ExecutionState::Cancelled);
    assert_eq!(outbox.log.count("release Child child"), 1, "{:?}", outbox.log.lines());

    // Late deliveries are refused and change nothing.
    let late = engine.complete_step("deadline-AsyncStep/ask#1", true).await.unwrap_err();
    assert!(matches!(late, DeliveryError::Finished { state: ExecutionState::TimedOut, .. }), "{late}");
    let late = engine.send_event(&"deadline-Event".into(), "payment", 5u64).await.unwrap_err();
    assert!(matches!(late, DeliveryError::Finished { state: ExecutionState::TimedOut, .. }), "{late}");
}

/// Between its deadline and the moment an engine wakes it, a delivery is refused too: it
/// would be ignored by the execution, which times out.
async fn a_delivery_after_the_deadline_is_refused_before_the_execution_wakes(store: Store) {
    let clock = store.clock();
    let outbox = Arc::new(Outbox::default());
    // A client engine: it drives what it starts, but takes over nothing, so nothing wakes the
    // execution at its deadline here.
    let client = store.engine(&outbox).worker(false).start().await.unwrap();
    let id = ExecutionId::from("late");
    let handle = deadline_while_waiting::start_with(&client, Waits::Event, RunOptions::new().id(&id)).await.unwrap();
    wait_for_state(&client, &id, ExecutionState::Waiting).await;
    clock.advance(Duration::from_secs(3600)).await;
    assert_eq!(state(&client, &id).await, ExecutionState::Waiting, "nobody woke it");
    let late = client.send_event(&id, "payment", 5u64).await.unwrap_err();
    assert!(matches!(late, DeliveryError::TimedOut { .. }), "{late}");
    assert!(late.to_string().contains("timed out at"), "{late}");
    // A worker wakes it and times it out.
    let worker = store.engine(&outbox).start().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("timed out").unwrap_err();
    assert!(matches!(error, RunError::TimedOut { .. }), "{error}");
    assert_eq!(outbox.log.count("release Event"), 1);
    drop(worker);
}

#[step]
async fn held_first(ctx: &StepContext) -> Result<(), StepError> {
    ctx.resolve::<Arc<Outbox>>()?.gate.pass().await;
    Ok(())
}

#[workflow]
async fn ask_after_gate(wf: &Workflow, question: String) -> Result<String, WorkflowError> {
    held_first(wf).await?;
    let yes = ask(wf, question.clone()).await?;
    Ok(format!("{question}: {}", if yes { "yes" } else { "no" }))
}

/// Only a step that runs or waits can be completed or failed, once per attempt; every other
/// delivery is refused with the reason and changes nothing.
async fn only_a_waiting_step_can_be_completed_or_failed_once(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = ask_after_gate::start(&engine, "early?".into()).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (outbox.gate.arrived() == 1).then_some(()) }).await;

    // Not started yet: refused, and nothing is kept for later.
    let token = engine.completion_token(&id, &CallKey::new("ask", 1));
    let early = engine.complete_step(&token, true).await.unwrap_err();
    assert!(matches!(early, DeliveryError::NotStarted { .. }), "{early}");
    assert!(early.to_string().contains("has not started"), "{early}");
    let early = engine.fail_step(&token, StepError::permanent("no")).await.unwrap_err();
    assert!(matches!(early, DeliveryError::NotStarted { .. }), "{early}");
    // A call the workflow never makes.
    let never = engine.complete_step(&engine.completion_token(&id, &CallKey::new("ask", 2)), true).await.unwrap_err();
    assert!(matches!(never, DeliveryError::NotStarted { .. }), "{never}");

    outbox.gate.open();
    assert_eq!(self::token(&outbox, 0).await, token);
    wait_for_state(&engine, &id, ExecutionState::Waiting).await;
    let never = engine.complete_step(&engine.completion_token(&id, &CallKey::new("ask", 2)), true).await.unwrap_err();
    assert!(matches!(never, DeliveryError::NotStarted { .. }), "{never}");
    // The first failure for the attempt wins; a completion after it is refused.
    engine.fail_step(&token, StepError::permanent("manager away")).await.unwrap();
    let after = engine.complete_step(&token, true).await;
    assert!(matches!(after, Err(DeliveryError::AlreadyFailed { .. } | DeliveryError::Finished { .. })), "{after:?}");
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    let journal = engine.journal(&id).await.unwrap();
    assert!(
        !journal.iter().any(|e| matches!(e.event, JournalEvent::StepCompleted { ref key, .. } if key.name() == "ask"))
    );
}

#[workflow]
async fn failed_for_good_then_goes_on(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    match asked_on_failure_continue(wf).await {
        Ok(n) => Ok(n),
        Err(_) => {
            // Still running: a completion for the failed step must be refused, not kept.
            held_first(wf).await?;
            Ok(0)
        }
    }
}

#[step(async, on_failure = "continue")]
async fn asked_on_failure_continue(ctx: &StepContext) -> Result<Completion<u32>, StepError> {
    ctx.resolve::<Arc<Outbox>>()?.tokens.lock().unwrap().push(ctx.completion_token());
    Ok(Completion::later())
}

/// After a step failed for good, the execution goes on (`on_failure = "continue"`): a
/// completion for the failed step is refused while the execution still runs.
async fn a_step_that_failed_for_good_cannot_be_completed_afterwards(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = failed_for_good_then_goes_on::start(&engine, ()).await.unwrap();
    let token = token(&outbox, 0).await;
    engine.fail_step(&token, StepError::permanent("declined")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (outbox.gate.arrived() == 1).then_some(()) }).await;
    let refused = engine.complete_step(&token, 7).await.unwrap_err();
    assert!(matches!(refused, DeliveryError::AlreadyFailed { .. }), "{refused}");
    outbox.gate.open();
    assert_eq!(handle.await.unwrap(), 0);
}

/// `complete_step` and `fail_step` racing on one token: exactly one of them wins, every time.
async fn a_completion_racing_a_failure_on_one_token_lets_exactly_one_win(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let rounds = 40;
    let mut handles = Vec::new();
    for round in 0..rounds {
        handles.push(ask_once::start(&engine, format!("race {round}")).await.unwrap());
    }
    for (round, handle) in handles.into_iter().enumerate() {
        let token = engine.completion_token(handle.id(), &CallKey::new("ask", 1));
        eventually(Duration::from_secs(10), || async { outbox.tokens().contains(&token).then_some(()) }).await;
        let (completed, failed) =
            tokio::join!(engine.complete_step(&token, true), engine.fail_step(&token, StepError::permanent("no")),);
        assert_eq!(completed.is_ok() as u32 + failed.is_ok() as u32, 1, "round {round}: {completed:?} {failed:?}");
        let outcome = handle.await;
        assert_eq!(outcome.is_ok(), completed.is_ok(), "round {round}: the winner decides: {outcome:?}");
    }
}

/// A step body whose request is answered before the body even returns (a fast webhook): the
/// completion is accepted, because the attempt's start was journaled before the body ran.
#[step(async)]
async fn answered_at_once(ctx: &StepContext) -> Result<Completion<u32>, StepError> {
    let engine = ctx.resolve::<Arc<std::sync::OnceLock<Engine>>>()?.get().expect("the engine").clone();
    let token = ctx.completion_token();
    tokio::spawn(async move { engine.complete_step(&token, 5).await }).await.unwrap().expect("accepted");
    Ok(Completion::later())
}

#[workflow]
async fn fast_webhook(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    Ok(answered_at_once(wf).await? + 1)
}

async fn a_completion_that_arrives_before_the_body_returns_is_accepted(store: Store) {
    let cell = Arc::new(std::sync::OnceLock::new());
    let engine = store.builder().container(Container::new().with(cell.clone())).start().await.unwrap();
    cell.set(engine.clone()).unwrap();
    assert_eq!(fast_webhook::run(&engine, ()).await.unwrap(), 6);
}

#[step]
async fn pause_ms(ms: u64) -> Result<(), StepError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(())
}

#[workflow]
async fn reserving_child(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
    let sku = reserve(wf, sku).await?;
    pause_ms(wf, sku.len() as u64 % 9).await?;
    Ok(sku)
}

#[workflow]
async fn parent_of_reserving_child(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
    Ok(reserving_child(wf, sku).await?)
}

/// A parent cancelled while its child runs, at moments around the child's own completion:
/// whatever the order, the parent never ends cancelled with its child `completed` — a running
/// child is cancelled, and one that completed first is compensated as a unit, before the
/// parent's own compensations.
async fn a_cancelled_parent_never_leaves_a_completed_child_uncompensated(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let mut cancelled_parents = 0;
    for round in 0..40u64 {
        // SKUs of 1 to 9 characters: the child's second step takes that many ms (mod 9).
        let sku = "x".repeat(1 + (round as usize % 9));
        let sku = format!("{sku}{round}");
        let handle = parent_of_reserving_child::start(&engine, sku.clone()).await.unwrap();
        let parent = handle.id().clone();
        let child = ExecutionId::from(format!("{parent}:@child:reserving_child#1"));
        eventually(Duration::from_secs(10), || async {
            (outbox.log.count(&format!("reserve {sku}")) == 1).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(round % 8)).await;
        match engine.cancel(&parent).await {
            Ok(()) | Err(RunError::NotCancellable { .. }) => {}
            Err(error) => panic!("round {round}: {error}"),
        }
        let parent_outcome = tokio::time::timeout(Duration::from_secs(20), handle).await.expect("the parent ends");
        let child_state = state(&engine, &child).await;
        let released = outbox.log.count(&format!("release {sku}"));
        match parent_outcome {
            Ok(_) => {
                assert_eq!(child_state, ExecutionState::Completed, "round {round}");
                assert_eq!(released, 0, "round {round}");
            }
            Err(RunError::Cancelled { .. }) => {
                cancelled_parents += 1;
                assert!(
                    matches!(child_state, ExecutionState::Cancelled | ExecutionState::Compensated),
                    "round {round}: the parent was cancelled but its child ended {child_state}"
                );
                assert_eq!(released, 1, "round {round}: the child's reservation is released once");
            }
            Err(error) => panic!("round {round}: {error}"),
        }
    }
    assert!(cancelled_parents > 0, "no cancel landed while the child ran");
}

#[workflow]
async fn gated_child(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
    let sku = reserve(wf, sku).await?;
    held_first(wf).await?;
    Ok(sku)
}

#[workflow]
async fn parent_of_gated_child(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
    Ok(gated_child(wf, sku).await?)
}

/// The parent is cancelled the moment its child completes, before the parent took the child's
/// result: the completed child is compensated as a unit, before the parent ends `cancelled`.
async fn a_child_that_completed_just_before_its_parent_was_cancelled_is_compensated(store: Store) {
    let outbox = Arc::new(Outbox::default());
    let engine = store.engine(&outbox).start().await.unwrap();
    let handle = parent_of_gated_child::start(&engine, "desk".into()).await.unwrap();
    let parent = handle.id().clone();
    let child = ExecutionId::from(format!("{parent}:@child:gated_child#1"));
    // The parent suspends, waiting for its child; the child waits at the gate.
    wait_for_state(&engine, &parent, ExecutionState::Waiting).await;
    eventually(Duration::from_secs(5), || async { (outbox.gate.arrived() == 1).then_some(()) }).await;
    let mut events = engine.subscribe_to(&child);
    outbox.gate.open();
    loop {
        let event = events.recv().await.unwrap();
        if let workflows_runtime::EventKind::Finished { state, .. } = event.kind {
            assert_eq!(state, ExecutionState::Completed);
            break;
        }
    }
    engine.cancel(&parent).await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(10), handle).await.expect("the parent ends").unwrap_err();
    assert!(matches!(error, RunError::Cancelled { .. }), "{error}");
    assert_eq!(state(&engine, &child).await, ExecutionState::Compensated);
    assert_eq!(outbox.log.lines(), ["reserve desk", "release desk"]);
    let journal = engine.journal(&parent).await.unwrap();
    let kinds: Vec<_> = journal.iter().map(|e| e.event.kind()).collect();
    assert!(kinds.contains(&"child_completed") && kinds.contains(&"compensation_completed"), "{kinds:?}");
}

/// On SQLite only: the window this test aims at (the child completed, the parent not yet woken
/// to take its result) lasts a store round trip there; on the memory store the parent is woken
/// and done before the test's cancel can land. The engine's logic under test is the same.
mod sqlite_only {
    #[tokio::test]
    async fn a_child_that_completed_just_before_its_parent_was_cancelled_is_compensated() {
        super::a_child_that_completed_just_before_its_parent_was_cancelled_is_compensated(super::Store::sqlite()).await
    }
}

/// Each test above, as `sqlite::name` and `memory::name`.
macro_rules! on_every_store {
    ($($name:ident $(($($flavor:tt)*))?),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test$(($($flavor)*))?]
                async fn $name() {
                    super::$name(super::Store::sqlite()).await
                }
            )*
        }

        mod memory {
            $(
                #[tokio::test$(($($flavor)*))?]
                async fn $name() {
                    super::$name(super::Store::memory()).await
                }
            )*
        }
    };
}

on_every_store!(
    an_async_step_suspends_the_execution_until_it_is_completed,
    a_failed_async_step_is_retried_by_its_policy,
    a_sleep_continues_across_a_restart_without_starting_over,
    events_sent_before_the_wait_are_kept_in_order,
    a_wait_that_times_out_compensates,
    a_child_runs_as_its_own_execution_and_is_compensated_as_a_unit,
    cancelling_a_parent_cancels_its_running_child,
    fan_out_bounds_concurrency_and_keeps_item_order,
    an_async_step_times_out_by_its_policy_and_is_compensated_like_any_step,
    a_suspended_execution_times_out_at_its_deadline,
    a_delivery_after_the_deadline_is_refused_before_the_execution_wakes,
    only_a_waiting_step_can_be_completed_or_failed_once,
    a_step_that_failed_for_good_cannot_be_completed_afterwards,
    a_completion_racing_a_failure_on_one_token_lets_exactly_one_win(flavor = "multi_thread", worker_threads = 2),
    a_completion_that_arrives_before_the_body_returns_is_accepted,
    a_cancelled_parent_never_leaves_a_completed_child_uncompensated(flavor = "multi_thread", worker_threads = 2),
);
