//! Journal and replay: an execution resumes on a new engine over the same store without
//! re-running completed steps; parallel steps get deterministic keys; a workflow that no longer
//! calls the same steps is blocked with a non-determinism error naming the key; an exported
//! journal kept as a test fixture replays, or fails naming where the code departs. (Replay of
//! journals written by other code — forged in the store — is tested in the runtime crate:
//! `journal::replay_tests`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{
    EngineBuilder, ExecutionId, ExecutionState, FailureKind, JournalEvent, MemoryStore, WorkflowFn,
};
use workflows_tests::{Gate, Log, eventually};

/// Counts every step run, and holds `gated` steps at the gate.
#[derive(Default)]
struct Probe {
    runs: Log,
    gate: Gate,
}

#[step]
async fn first(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Probe>>()?.runs.push(format!("first({n})"));
    Ok(n + 1)
}

#[step]
async fn gated(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    let probe = ctx.resolve::<Arc<Probe>>()?;
    probe.runs.push(format!("gated({n}) attempt {}", ctx.attempt()));
    probe.gate.pass().await;
    Ok(n * 10)
}

#[workflow]
async fn resumable(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let a = first(wf, n).await?;
    let b = gated(wf, a).await?;
    Ok(b + 1)
}

fn engine_on(store: &Arc<MemoryStore>, probe: &Arc<Probe>) -> EngineBuilder {
    Engine::builder().store(store.clone()).container(Container::new().with(probe.clone()))
}

/// An engine that only reads `store` (it takes over nothing): how the tests look at it.
async fn reader(store: &Arc<MemoryStore>) -> Engine {
    Engine::builder().store(store.clone()).worker(false).start().await.unwrap()
}

/// `run` drives the execution in the caller's task; a caller that stops waiting (its future
/// dropped: a client went away, a timeout) does not stop the execution.
#[tokio::test]
async fn a_run_whose_caller_stops_waiting_goes_on_by_itself() {
    let store = Arc::new(MemoryStore::new());
    let view = reader(&store).await;
    let probe = Arc::new(Probe::default());
    let engine = engine_on(&store, &probe).start().await.unwrap();
    let id = ExecutionId::from("left-behind");

    let waited =
        tokio::time::timeout(Duration::from_millis(50), resumable::run_with(&engine, 4, RunOptions::new().id(&id)))
            .await;
    assert!(waited.is_err(), "the run should still wait at the gate");
    assert_eq!(probe.gate.arrived(), 1);
    assert_eq!(engine.running(), 1, "the execution is still driven here");

    probe.gate.open();
    let record = eventually(Duration::from_secs(5), || async {
        view.execution(&id).await.unwrap().filter(|r| r.state == ExecutionState::Completed)
    })
    .await;
    assert_eq!(record.result.unwrap().get(), "51");
    // Nothing ran twice: the same attempt went on after the caller left.
    assert_eq!(probe.runs.lines(), ["first(4)", "gated(5) attempt 1"]);
    eventually(Duration::from_secs(5), || async { (engine.running() == 0).then_some(()) }).await;
}

/// A shutdown stops a `run` under way like a started execution: the caller hears it was
/// interrupted, and the execution is left for another engine to resume.
#[tokio::test]
async fn a_shutdown_interrupts_a_run_in_its_callers_task() {
    let store = Arc::new(MemoryStore::new());
    let view = reader(&store).await;
    let probe = Arc::new(Probe::default());
    let engine = engine_on(&store, &probe).start().await.unwrap();
    let id = ExecutionId::from("interrupted-run");

    let caller = {
        let (engine, id) = (engine.clone(), id.clone());
        tokio::spawn(async move { resumable::run_with(&engine, 4, RunOptions::new().id(&id)).await })
    };
    eventually(Duration::from_secs(5), || async { (probe.gate.arrived() == 1).then_some(()) }).await;
    engine.shutdown().await;
    let interrupted = caller.await.unwrap().unwrap_err();
    assert!(matches!(interrupted, RunError::Interrupted { .. }), "{interrupted}");
    let record = view.execution(&id).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Running);
    assert_eq!(record.owner, None, "released for another engine");

    probe.gate.open();
    let other = engine_on(&store, &probe).start().await.unwrap();
    let record = eventually(Duration::from_secs(5), || async {
        view.execution(&id).await.unwrap().filter(|r| r.state == ExecutionState::Completed)
    })
    .await;
    assert_eq!(record.result.unwrap().get(), "51");
    other.shutdown().await;
}

#[tokio::test]
async fn a_new_engine_resumes_without_rerunning_completed_steps() {
    let store = Arc::new(MemoryStore::new());
    let view = reader(&store).await;
    let probe = Arc::new(Probe::default());

    let engine1 = engine_on(&store, &probe).start().await.unwrap();
    let handle = resumable::start(&engine1, 4).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (probe.gate.arrived() == 1).then_some(()) }).await;
    engine1.shutdown().await;
    let interrupted = handle.await.unwrap_err();
    assert!(matches!(interrupted, RunError::Interrupted { .. }), "{interrupted}");
    assert_eq!(view.execution(&id).await.unwrap().unwrap().state, ExecutionState::Running);

    // A new engine on the same store takes the execution over at start.
    probe.gate.open();
    let engine2 = engine_on(&store, &probe).start().await.unwrap();
    let output = resumable::run_with(&engine2, 4, RunOptions::new().id(&id)).await.unwrap();
    assert_eq!(output, 51);
    assert_eq!(probe.runs.lines(), ["first(4)", "gated(5) attempt 1", "gated(5) attempt 2"]);

    let journal = engine2.journal(&id).await.unwrap();
    let kinds: Vec<_> = journal.iter().map(|e| format!("{} {}", e.event.kind(), e.event.step().1)).collect();
    // `first` finished within its first poll: its completion alone is journaled. `gated`
    // suspended at the gate, so its start was journaled; attempt 2 passed the open gate at once.
    assert_eq!(kinds, ["step_completed first#1", "step_started gated#1", "step_completed gated#1"]);
    assert!(matches!(journal[1].event, JournalEvent::StepStarted { attempt: 1, .. }));
    assert!(matches!(journal[2].event, JournalEvent::StepCompleted { attempt: 2, .. }));
    assert!(journal.windows(2).all(|w| w[1].index == w[0].index + 1));
    let record = engine2.execution(&id).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Completed);
    assert_eq!(record.result.unwrap().get(), "51");
    assert_eq!(record.epoch, 2, "the second engine claimed it with a new epoch");
}

#[test]
fn an_engine_that_dies_is_replaced_once_its_lease_expires() {
    let store = Arc::new(MemoryStore::new());
    let probe = Arc::new(Probe::default());
    let lease = Duration::from_millis(300);

    // The first engine runs on its own runtime; dropping the runtime kills every task
    // mid-flight without releasing anything, as a crashed process would.
    let first_runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let id = first_runtime.block_on(async {
        let engine = engine_on(&store, &probe).lease_duration(lease).start().await.unwrap();
        let handle = resumable::start(&engine, 1).await.unwrap();
        eventually(Duration::from_secs(5), || async { (probe.gate.arrived() == 1).then_some(()) }).await;
        handle.id().clone()
    });
    drop(first_runtime);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        probe.gate.open();
        let engine = engine_on(&store, &probe).lease_duration(lease).start().await.unwrap();
        // Still leased by the dead engine: not taken over yet.
        assert_eq!(engine.running(), 0);
        let output = resumable::run_with(&engine, 1, RunOptions::new().id(&id)).await.unwrap();
        assert_eq!(output, 21);
        assert_eq!(probe.runs.count("first(1)"), 1, "{:?}", probe.runs.lines());
        assert_eq!(probe.runs.count("gated(2) attempt 2"), 1, "{:?}", probe.runs.lines());
    });
}

#[step]
async fn numbered(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Probe>>()?.runs.push(format!("numbered({n})"));
    Ok(n)
}

#[workflow]
async fn fan_out(wf: &Workflow, n: u32) -> Result<Vec<u32>, WorkflowError> {
    // Created in program order, polled concurrently: keys numbered#1..#3 in call order.
    let (a, b, c) = tokio::try_join!(numbered(wf, n), numbered(wf, n + 1), numbered(wf, n + 2))?;
    // Called in one order, awaited in the other: keys follow the calls.
    let later = numbered(wf, 100);
    let sooner = numbered(wf, 200);
    let sooner = sooner.await?;
    let later = later.await?;
    let gate = gated(wf, a + b + c).await?;
    Ok(vec![a, b, c, later, sooner, gate])
}

#[tokio::test]
async fn parallel_steps_get_keys_in_call_order_and_replay_exactly() {
    let store = Arc::new(MemoryStore::new());
    let view = reader(&store).await;
    let probe = Arc::new(Probe::default());
    let engine1 = engine_on(&store, &probe).start().await.unwrap();
    let handle = fan_out::start(&engine1, 1).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (probe.gate.arrived() == 1).then_some(()) }).await;
    engine1.shutdown().await;

    let journal = view.journal(&id).await.unwrap();
    let completed: Vec<(u32, String, String)> = journal
        .iter()
        .filter_map(|e| match &e.event {
            JournalEvent::StepCompleted { seq, key, output, .. } => {
                Some((*seq, key.to_string(), output.get().to_owned()))
            }
            _ => None,
        })
        .collect();
    let mut by_seq = completed.clone();
    by_seq.sort();
    assert_eq!(
        by_seq,
        [
            (0, "numbered#1".into(), "1".into()),
            (1, "numbered#2".into(), "2".into()),
            (2, "numbered#3".into(), "3".into()),
            (3, "numbered#4".into(), "100".into()),
            (4, "numbered#5".into(), "200".into()),
        ]
    );

    probe.gate.open();
    let engine2 = engine_on(&store, &probe).start().await.unwrap();
    let output = fan_out::run_with(&engine2, 1, RunOptions::new().id(&id)).await.unwrap();
    assert_eq!(output, [1, 2, 3, 100, 200, 60]);
    for n in ["numbered(1)", "numbered(2)", "numbered(3)", "numbered(100)", "numbered(200)"] {
        assert_eq!(probe.runs.count(n), 1, "{n} ran again: {:?}", probe.runs.lines());
    }
}

/// Flipped by the test to make the workflow take another path on replay.
static TAKE_OTHER_PATH: AtomicBool = AtomicBool::new(false);

#[step]
async fn path_a(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Probe>>()?.runs.push("path_a");
    Ok(1)
}

#[step]
async fn path_b(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Probe>>()?.runs.push("path_b");
    Ok(2)
}

#[workflow]
async fn wobbly(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    // Reading a global in the body is exactly the non-determinism replay must catch.
    let first = if TAKE_OTHER_PATH.load(Ordering::SeqCst) { path_b(wf).await? } else { path_a(wf).await? };
    let second = gated(wf, first).await?;
    Ok(second)
}

#[tokio::test]
async fn a_body_that_takes_another_path_on_replay_is_blocked_with_the_differing_key() {
    let store = Arc::new(MemoryStore::new());
    let probe = Arc::new(Probe::default());
    let engine1 = engine_on(&store, &probe).start().await.unwrap();
    let handle = wobbly::start(&engine1, ()).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (probe.gate.arrived() == 1).then_some(()) }).await;
    engine1.shutdown().await;

    TAKE_OTHER_PATH.store(true, Ordering::SeqCst);
    let engine2 = engine_on(&store, &probe).start().await.unwrap();
    let error = wobbly::run_with(&engine2, (), RunOptions::new().id(&id)).await.unwrap_err();
    let RunError::Blocked { failure, .. } = &error else { panic!("expected it blocked: {error}") };
    assert_eq!(failure.kind, FailureKind::NonDeterminism);
    let message = &failure.message;
    assert!(message.contains("`path_b#1`") && message.contains("`path_a#1`"), "{message}");
    assert!(message.contains("code is unchanged"), "{message}");
    assert_eq!(probe.runs.count("path_b"), 0, "nothing runs with the wrong data");
    assert_eq!(engine2.execution(&id).await.unwrap().unwrap().state, ExecutionState::Blocked);
}

#[tokio::test]
async fn recovered_executions_use_the_registered_entry_point() {
    // `WorkflowFn` is usable generically; the definition names the steps the body calls.
    let definition = <fan_out as WorkflowFn>::definition();
    assert_eq!(definition.calls(), ["numbered", "numbered", "numbered", "numbered", "numbered", "gated"]);
    let engine = Engine::builder().memory().start().await.unwrap();
    let calls = engine.registry().calls(definition);
    assert!(calls.iter().all(|c| matches!(c, workflows_runtime::registry::Call::Step(_))), "{calls:?}");
}

#[step]
async fn echo(n: u32) -> Result<u32, StepError> {
    Ok(n)
}

#[workflow]
async fn echo_twice(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let a = echo(wf, n).await?;
    let b = echo(wf, a + 1).await?;
    Ok(b)
}

#[tokio::test]
async fn idempotent_ids_return_the_first_result_and_refuse_other_input() {
    let engine = Engine::builder().memory().start().await.unwrap();
    let first = echo_twice::run_with(&engine, 1, RunOptions::new().id("order-1")).await.unwrap();
    let again = echo_twice::run_with(&engine, 1, RunOptions::new().id("order-1")).await.unwrap();
    assert_eq!((first, again), (2, 2));
    assert_eq!(engine.journal(&"order-1".into()).await.unwrap().len(), 2, "the second run ran nothing");

    let conflict = echo_twice::run_with(&engine, 2, RunOptions::new().id("order-1")).await.unwrap_err();
    assert!(matches!(conflict, RunError::Conflict { .. }), "{conflict}");
    assert!(conflict.to_string().contains("different input"), "{conflict}");
    let other = resumable::run_with(&engine, 1, RunOptions::new().id("order-1")).await.unwrap_err();
    assert!(other.to_string().contains("workflow `echo_twice`, not `resumable`"), "{other}");
}

#[step]
async fn pause(ms: u64) -> Result<u64, StepError> {
    tokio::time::sleep(Duration::from_millis(ms)).await;
    Ok(ms)
}

#[step]
async fn hold(ctx: &StepContext) -> Result<(), StepError> {
    ctx.resolve::<Arc<Probe>>()?.gate.pass().await;
    Ok(())
}

/// Two chains in parallel: the second chain's first step finishes first, so its next step is
/// called (and gets its position) before the first chain's next one.
#[workflow]
async fn two_chains(wf: &Workflow, _input: ()) -> Result<u64, WorkflowError> {
    let (x, y) = tokio::try_join!(async { Ok::<_, StepError>(pause(wf, 80).await? + pause(wf, 1).await?) }, async {
        Ok::<_, StepError>(pause(wf, 5).await? + pause(wf, 2).await?)
    },)?;
    hold(wf).await?;
    Ok(x + y)
}

#[tokio::test]
async fn parallel_chains_replay_in_the_order_their_steps_first_completed() {
    // Replayed steps return at once, in whatever order their futures are polled; unless they
    // return in the order they first completed, the chains' next calls get other positions.
    let store = Arc::new(MemoryStore::new());
    let probe = Arc::new(Probe::default());
    let first_engine = engine_on(&store, &probe).start().await.unwrap();
    let handle = two_chains::start(&first_engine, ()).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (probe.gate.arrived() == 1).then_some(()) }).await;
    first_engine.shutdown().await;
    probe.gate.open();

    let second = engine_on(&store, &probe).start().await.unwrap();
    let output = two_chains::run_with(&second, (), RunOptions::new().id(&id)).await;
    assert_eq!(output.unwrap(), 88);
}

#[step]
async fn doubled_later(n: u32) -> Result<u32, StepError> {
    Ok(n * 2)
}

#[workflow]
async fn kept_as_fixture(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(doubled_later(wf, n).await? + doubled_later(wf, n + 1).await?)
}

/// Recorded journals kept as regression fixtures (`testing::replay_fixture`): an exported
/// execution replays against the code that wrote it; a journal the code departs from fails
/// the fixture, naming the execution and where.
#[tokio::test]
async fn a_recorded_journal_kept_as_a_fixture_replays_or_names_where_the_code_departs() {
    let engine = Engine::builder().memory().start().await.unwrap();
    let handle = kept_as_fixture::start_with(&engine, 3, RunOptions::new().id("fixture-1")).await.unwrap();
    assert_eq!(handle.result().await.unwrap(), 14);
    let exported = engine.export(&"fixture-1".into()).await.unwrap().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let json = serde_json::to_string_pretty(&exported).unwrap();
    std::fs::write(dir.path().join("fixture-1.json"), &json).unwrap();
    let reports = workflows_runtime::testing::replay_fixture(dir.path()).await.unwrap();
    assert_eq!(reports.len(), 1);

    // A journal written by other code: its second call was another step.
    let forged = json.replace("doubled_later#2", "charged_twice#1").replace("fixture-1", "fixture-2");
    std::fs::write(dir.path().join("fixture-2.json"), forged).unwrap();
    let failure = workflows_runtime::testing::replay_fixture(dir.path()).await.unwrap_err();
    let message = failure.to_string();
    assert!(message.starts_with("1 of 2 recorded executions do not replay"), "{message}");
    assert!(message.contains("fixture-2 (kept_as_fixture v0, completed): would block"), "{message}");
    assert!(message.contains("charged_twice#1"), "{message}");
    assert!(!message.contains("fixture-1 "), "{message}");
}
