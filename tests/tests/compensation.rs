//! Saga compensation: completed steps are compensated in reverse completion order with their
//! stored compensation inputs; a failing compensation leaves `compensation_failed` after the
//! others still ran; an interrupted compensation finishes on another engine.

use std::sync::Arc;
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{ExecutionState, FailureKind, JournalEvent, MemoryStore};
use workflows_tests::{Gate, Log, eventually};

#[derive(Default)]
struct Saga {
    log: Log,
    /// Steps named here fail permanently.
    failing_steps: Vec<&'static str>,
    /// Compensations named here fail.
    failing_compensations: Vec<&'static str>,
    /// Held by `slow_undo` until opened.
    gate: Gate,
}

impl Saga {
    fn failing(steps: &[&'static str], compensations: &[&'static str]) -> Arc<Self> {
        Arc::new(Self {
            failing_steps: steps.to_vec(),
            failing_compensations: compensations.to_vec(),
            gate: Gate::opened(),
            ..Self::default()
        })
    }

    fn run(&self, step: &'static str, detail: String) -> Result<(), StepError> {
        self.log.push(format!("{step}({detail})"));
        if self.failing_steps.contains(&step) {
            return Err(StepError::permanent(format!("{step} refused")));
        }
        Ok(())
    }

    fn undo(&self, compensation: &'static str, input: String) -> Result<(), StepError> {
        self.log.push(format!("{compensation}({input})"));
        if self.failing_compensations.contains(&compensation) {
            return Err(StepError::new(format!("{compensation} broke")));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ticket {
    id: u32,
    note: String,
}

/// Output is a ticket; its compensation gets only the id.
#[step(compensate = undo_one)]
async fn one(ctx: &StepContext, n: u32) -> Result<StepResponse<Ticket, u32>, StepError> {
    ctx.resolve::<Arc<Saga>>()?.run("one", n.to_string())?;
    let ticket = Ticket { id: n * 100, note: "reserved".into() };
    let id = ticket.id;
    Ok(StepResponse::new(ticket).compensate_with(id))
}

async fn undo_one(ctx: &StepContext, id: u32) -> Result<(), StepError> {
    ctx.resolve::<Arc<Saga>>()?.undo("undo_one", id.to_string())
}

/// Plain output: the compensation receives the output itself.
#[step(compensate = undo_two)]
async fn two(ctx: &StepContext, ticket: Ticket) -> Result<String, StepError> {
    ctx.resolve::<Arc<Saga>>()?.run("two", ticket.id.to_string())?;
    Ok(format!("charge-{}", ticket.id))
}

async fn undo_two(ctx: &StepContext, charge: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Saga>>()?.undo("undo_two", charge)
}

/// No compensation: nothing to undo.
#[step]
async fn notify(ctx: &StepContext, charge: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Saga>>()?.run("notify", charge)
}

#[step(compensate = undo_three)]
async fn three(ctx: &StepContext, charge: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Saga>>()?.run("three", charge.clone())?;
    Ok(format!("{charge}/shipped"))
}

async fn undo_three(ctx: &StepContext, shipment: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Saga>>()?.undo("undo_three", shipment)
}

#[step]
async fn four(ctx: &StepContext, shipment: String) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Saga>>()?.run("four", shipment)?;
    Ok(4)
}

#[workflow]
async fn saga(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let ticket = one(wf, n).await?;
    let charge = two(wf, ticket).await?;
    notify(wf, charge.clone()).await?;
    let shipment = three(wf, charge).await?;
    Ok(four(wf, shipment).await?)
}

async fn engine(saga: &Arc<Saga>) -> Engine {
    Engine::builder().memory().container(Container::new().with(saga.clone())).start().await.unwrap()
}

#[tokio::test]
async fn compensations_run_in_reverse_order_with_their_stored_inputs() {
    let probe = Saga::failing(&["four"], &[]);
    let engine = engine(&probe).await;
    let error = saga::run(&engine, 7).await.unwrap_err();

    assert_eq!(
        probe.log.lines(),
        [
            "one(7)",
            "two(700)",
            "notify(charge-700)",
            "three(charge-700)",
            "four(charge-700/shipped)",
            "undo_three(charge-700/shipped)",
            "undo_two(charge-700)",
            "undo_one(700)",
        ]
    );
    let RunError::Compensated { failure, execution, workflow } = &error else { panic!("{error}") };
    assert_eq!(workflow, "saga");
    assert_eq!(failure.kind, FailureKind::Step);
    assert_eq!(failure.step.as_deref(), Some("four"));
    assert_eq!(failure.key.as_deref(), Some("four#1"));
    assert!(failure.permanent);
    assert_eq!(error.step(), Some("four"));
    assert!(error.to_string().contains("step `four` (four#1) failed after 1 attempt: four refused"), "{error}");

    let record = engine.execution(execution).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Compensated);
    assert_eq!(record.failure.as_ref(), Some(&**failure));
    let compensated: Vec<_> = engine
        .journal(execution)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| match e.event {
            JournalEvent::CompensationCompleted { key, .. } => Some(key.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(compensated, ["three#1", "two#1", "one#1"]);
}

#[tokio::test]
async fn a_failed_compensation_is_recorded_and_the_others_still_run() {
    let probe = Saga::failing(&["four"], &["undo_two"]);
    let engine = engine(&probe).await;
    let error = saga::run(&engine, 1).await.unwrap_err();

    assert_eq!(probe.log.count("undo_one(100)"), 1, "{:?}", probe.log.lines());
    let RunError::CompensationFailed { failure, compensation_failures, execution, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(failure.step.as_deref(), Some("four"));
    assert_eq!(compensation_failures.len(), 1);
    assert_eq!(compensation_failures[0].kind, FailureKind::Compensation);
    assert_eq!(compensation_failures[0].key.as_deref(), Some("two#1"));
    assert!(error.to_string().contains("compensation of step `two` (two#1) failed: undo_two broke"), "{error}");
    let record = engine.execution(execution).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::CompensationFailed);

    // Read back from the store, the outcome is the same.
    let again = saga::run_with(&engine, 1, RunOptions::new().id(execution)).await.unwrap_err();
    assert!(
        matches!(again, RunError::CompensationFailed { ref compensation_failures, .. } if compensation_failures.len() == 1)
    );
}

#[tokio::test]
async fn a_failure_before_any_completed_step_compensates_nothing() {
    let probe = Saga::failing(&["one"], &[]);
    let engine = engine(&probe).await;
    let error = saga::run(&engine, 3).await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    assert_eq!(probe.log.lines(), ["one(3)"]);
}

#[step(compensate = undo_side)]
async fn side(ctx: &StepContext, name: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Saga>>()?.run("side", name.clone())?;
    // Finish in reverse call order: "a" waits for "c".
    let delay = match name.as_str() {
        "a" => 30,
        "b" => 15,
        _ => 0,
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    Ok(name)
}

async fn undo_side(ctx: &StepContext, name: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Saga>>()?.undo("undo_side", name)
}

#[workflow]
async fn parallel_then_refuse(wf: &Workflow, _input: ()) -> Result<(), WorkflowError> {
    tokio::try_join!(side(wf, "a".into()), side(wf, "b".into()), side(wf, "c".into()))?;
    // A business rule, not a step, fails the workflow.
    Err(WorkflowError::new("the order total is over the limit"))
}

#[tokio::test]
async fn a_workflow_error_compensates_parallel_steps_in_reverse_completion_order() {
    let probe = Saga::failing(&[], &[]);
    let engine = engine(&probe).await;
    let error = parallel_then_refuse::run(&engine, ()).await.unwrap_err();
    let failure = error.failure().unwrap();
    assert_eq!(failure.kind, FailureKind::Workflow);
    assert_eq!(failure.message, "the order total is over the limit");
    assert_eq!(failure.step, None);
    let undone: Vec<_> = probe.log.lines().into_iter().filter(|l| l.starts_with("undo")).collect();
    // Completed c, b, a; compensated a, b, c.
    assert_eq!(undone, ["undo_side(a)", "undo_side(b)", "undo_side(c)"]);
}

#[step]
async fn explode(_n: u32) -> Result<u32, StepError> {
    panic!("the step blew up");
}

#[workflow]
async fn panicking(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let ticket = one(wf, n).await?;
    explode(wf, ticket.id).await?;
    Ok(0)
}

#[tokio::test]
async fn a_panicking_step_fails_and_compensates_instead_of_crashing_the_engine() {
    let probe = Saga::failing(&[], &[]);
    let engine = engine(&probe).await;
    let error = panicking::run(&engine, 2).await.unwrap_err();
    let failure = error.failure().unwrap();
    assert_eq!(failure.key.as_deref(), Some("explode#1"));
    assert!(failure.message.contains("the step panicked: the step blew up"), "{}", failure.message);
    assert_eq!(probe.log.lines(), ["one(2)", "undo_one(200)"]);
    // The same engine still runs workflows to their end (the probe fails nothing).
    assert_eq!(saga::run(&engine, 1).await.unwrap(), 4);
    assert_eq!(
        probe.log.lines()[2..],
        ["one(1)", "two(100)", "notify(charge-100)", "three(charge-100)", "four(charge-100/shipped)"]
    );
}

#[step(compensate = slow_undo)]
async fn slow(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Saga>>()?.run("slow", n.to_string())?;
    Ok(n)
}

async fn slow_undo(ctx: &StepContext, n: u32) -> Result<(), StepError> {
    let saga = ctx.resolve::<Arc<Saga>>()?;
    saga.undo("slow_undo", n.to_string())?;
    saga.gate.pass().await;
    saga.log.push(format!("slow_undo({n}) finished"));
    Ok(())
}

#[workflow]
async fn interrupted_saga(wf: &Workflow, _input: ()) -> Result<(), WorkflowError> {
    slow(wf, 1).await?;
    slow(wf, 2).await?;
    one(wf, 3).await?;
    Err(WorkflowError::new("give up"))
}

#[tokio::test]
async fn an_interrupted_compensation_finishes_on_another_engine() {
    let store = Arc::new(MemoryStore::new());
    let probe = Arc::new(Saga::default());
    let builder = || Engine::builder().store(store.clone()).container(Container::new().with(probe.clone()));

    let engine1 = builder().start().await.unwrap();
    let handle = interrupted_saga::start(&engine1, ()).await.unwrap();
    let id = handle.id().clone();
    // undo_one ran; slow_undo(2) is held at the gate.
    eventually(Duration::from_secs(5), || async { (probe.gate.arrived() == 1).then_some(()) }).await;
    engine1.shutdown().await;
    assert_eq!(store_state(&engine1, &id).await, ExecutionState::Compensating);

    probe.gate.open();
    let engine2 = builder().start().await.unwrap();
    let error = interrupted_saga::run_with(&engine2, (), RunOptions::new().id(&id)).await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    assert_eq!(
        probe.log.lines(),
        [
            "slow(1)",
            "slow(2)",
            "one(3)",
            "undo_one(300)",
            "slow_undo(2)",
            // engine 2: the interrupted compensation runs again, then the rest; undo_one does not.
            "slow_undo(2)",
            "slow_undo(2) finished",
            "slow_undo(1)",
            "slow_undo(1) finished",
        ]
    );
}

async fn store_state(engine: &Engine, id: &ExecutionId) -> ExecutionState {
    engine.execution(id).await.unwrap().unwrap().state
}
