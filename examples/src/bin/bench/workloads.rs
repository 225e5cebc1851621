//! The benchmark workflows, with the semantics of the Medusa reference harness: every step
//! returns at once, with no I/O; every run starts from `{i: 0}`.

use std::sync::atomic::{AtomicU64, Ordering};

use workflows_runtime::prelude::*;
use workflows_runtime::{FailureKind, RunError};

/// `{i: n}`: the value every step passes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub i: u64,
}

/// `{i, k}`: a parallel-10 step's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Indexed {
    pub i: u64,
    pub k: u64,
}

/// `{step: k}`: a saga step's compensation input.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SagaStep {
    pub step: u64,
}

// ---- seq-10 / concurrent-10: ten distinct steps in a chain ----

macro_rules! chain_steps {
    ($($name:ident = $registered:literal),* $(,)?) => {$(
        #[step(name = $registered)]
        async fn $name(input: Counter) -> Result<Counter, StepError> {
            Ok(Counter { i: input.i + 1 })
        }
    )*};
}

chain_steps!(
    seq10_step_1 = "seq10-step-1",
    seq10_step_2 = "seq10-step-2",
    seq10_step_3 = "seq10-step-3",
    seq10_step_4 = "seq10-step-4",
    seq10_step_5 = "seq10-step-5",
    seq10_step_6 = "seq10-step-6",
    seq10_step_7 = "seq10-step-7",
    seq10_step_8 = "seq10-step-8",
    seq10_step_9 = "seq10-step-9",
    seq10_step_10 = "seq10-step-10",
);

#[workflow(name = "seq-10")]
pub async fn seq_10(wf: &Workflow, input: Counter) -> Result<Counter, WorkflowError> {
    let c = seq10_step_1(wf, input).await?;
    let c = seq10_step_2(wf, c).await?;
    let c = seq10_step_3(wf, c).await?;
    let c = seq10_step_4(wf, c).await?;
    let c = seq10_step_5(wf, c).await?;
    let c = seq10_step_6(wf, c).await?;
    let c = seq10_step_7(wf, c).await?;
    let c = seq10_step_8(wf, c).await?;
    let c = seq10_step_9(wf, c).await?;
    let c = seq10_step_10(wf, c).await?;
    Ok(c)
}

pub async fn run_seq_10(engine: &Engine) -> Result<(), String> {
    let out = seq_10::run(engine, Counter { i: 0 }).await.map_err(|e| e.to_string())?;
    if out.i != 10 {
        return Err(format!("seq-10 returned i = {}, expected 10", out.i));
    }
    Ok(())
}

// ---- saga-5: four steps with compensations, the fifth fails permanently ----

/// Counters checked after the timed loop.
pub static SAGA_INVOKES: AtomicU64 = AtomicU64::new(0);
pub static SAGA_COMPENSATIONS: AtomicU64 = AtomicU64::new(0);

macro_rules! saga_steps {
    ($($name:ident = $registered:literal, $k:literal);* $(;)?) => {$(
        #[step(name = $registered, compensate = undo_saga_step)]
        async fn $name(input: Counter) -> Result<StepResponse<Counter, SagaStep>, StepError> {
            SAGA_INVOKES.fetch_add(1, Ordering::Relaxed);
            Ok(StepResponse::new(Counter { i: input.i + 1 }).compensate_with(SagaStep { step: $k }))
        }
    )*};
}

saga_steps!(
    saga5_step_1 = "saga5-step-1", 1;
    saga5_step_2 = "saga5-step-2", 2;
    saga5_step_3 = "saga5-step-3", 3;
    saga5_step_4 = "saga5-step-4", 4;
);

async fn undo_saga_step(_ctx: &StepContext, input: SagaStep) -> Result<(), StepError> {
    if !(1..=4).contains(&input.step) {
        return Err(StepError::permanent(format!("unexpected compensation input {input:?}")));
    }
    SAGA_COMPENSATIONS.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[step(name = "saga5-step-5")]
async fn saga5_step_5(_input: Counter) -> Result<Counter, StepError> {
    SAGA_INVOKES.fetch_add(1, Ordering::Relaxed);
    Err(StepError::permanent("saga-5: step 5 failed"))
}

#[workflow(name = "saga-5")]
pub async fn saga_5(wf: &Workflow, input: Counter) -> Result<Counter, WorkflowError> {
    let c = saga5_step_1(wf, input).await?;
    let c = saga5_step_2(wf, c).await?;
    let c = saga5_step_3(wf, c).await?;
    let c = saga5_step_4(wf, c).await?;
    Ok(saga5_step_5(wf, c).await?)
}

pub async fn run_saga_5(engine: &Engine) -> Result<(), String> {
    match saga_5::run(engine, Counter { i: 0 }).await {
        Err(RunError::Compensated { failure, .. })
            if failure.kind == FailureKind::Step && failure.step.as_deref() == Some("saga5-step-5") =>
        {
            Ok(())
        }
        Err(other) => Err(format!("saga-5 ended with an unexpected error: {other}")),
        Ok(out) => Err(format!("saga-5 succeeded with {out:?}, expected compensation")),
    }
}

// ---- parallel-10: ten distinct steps joined ----

macro_rules! parallel_steps {
    ($($name:ident = $registered:literal, $k:literal);* $(;)?) => {$(
        #[step(name = $registered)]
        async fn $name(input: Counter) -> Result<Indexed, StepError> {
            Ok(Indexed { i: input.i + 1, k: $k })
        }
    )*};
}

parallel_steps!(
    par10_step_1 = "par10-step-1", 0;
    par10_step_2 = "par10-step-2", 1;
    par10_step_3 = "par10-step-3", 2;
    par10_step_4 = "par10-step-4", 3;
    par10_step_5 = "par10-step-5", 4;
    par10_step_6 = "par10-step-6", 5;
    par10_step_7 = "par10-step-7", 6;
    par10_step_8 = "par10-step-8", 7;
    par10_step_9 = "par10-step-9", 8;
    par10_step_10 = "par10-step-10", 9;
);

#[workflow(name = "parallel-10")]
pub async fn parallel_10(wf: &Workflow, input: Counter) -> Result<Vec<Indexed>, WorkflowError> {
    let (r0, r1, r2, r3, r4, r5, r6, r7, r8, r9) = tokio::try_join!(
        par10_step_1(wf, input),
        par10_step_2(wf, input),
        par10_step_3(wf, input),
        par10_step_4(wf, input),
        par10_step_5(wf, input),
        par10_step_6(wf, input),
        par10_step_7(wf, input),
        par10_step_8(wf, input),
        par10_step_9(wf, input),
        par10_step_10(wf, input),
    )?;
    Ok(vec![r0, r1, r2, r3, r4, r5, r6, r7, r8, r9])
}

pub async fn run_parallel_10(engine: &Engine) -> Result<(), String> {
    let out = parallel_10::run(engine, Counter { i: 0 }).await.map_err(|e| e.to_string())?;
    let expected: Vec<Indexed> = (0..10).map(|k| Indexed { i: 1, k }).collect();
    if out != expected {
        return Err(format!("parallel-10 returned {out:?}"));
    }
    Ok(())
}

// ---- long-1000: one step called 1,000 times in sequence ----

pub const LONG_STEPS: u64 = 1000;

#[step(name = "long-step")]
async fn long_step(input: Counter) -> Result<Counter, StepError> {
    Ok(Counter { i: input.i + 1 })
}

#[workflow(name = "long-1000")]
pub async fn long_1000(wf: &Workflow, input: Counter) -> Result<Counter, WorkflowError> {
    let mut c = input;
    for _ in 0..LONG_STEPS {
        c = long_step(wf, c).await?;
    }
    Ok(c)
}

pub async fn run_long_1000(engine: &Engine) -> Result<(), String> {
    let out = long_1000::run(engine, Counter { i: 0 }).await.map_err(|e| e.to_string())?;
    if out.i != LONG_STEPS {
        return Err(format!("long-1000 returned i = {}", out.i));
    }
    Ok(())
}

#[workflow(name = "noop")]
pub async fn noop(_wf: &Workflow, input: Counter) -> Result<Counter, WorkflowError> {
    Ok(input)
}

pub async fn run_noop(engine: &Engine) -> Result<(), String> {
    noop::run(engine, Counter { i: 0 }).await.map(|_| ()).map_err(|e| e.to_string())
}

// ---- waiting-10k / waiting-100k: executions suspended on an external completion ----

/// An async step: completed from outside by the benchmark.
#[step(name = "waiting-approval", async)]
async fn waiting_approval(input: Counter) -> Result<Completion<Counter>, StepError> {
    let _ = input;
    Ok(Completion::later())
}

#[workflow(name = "waiting")]
async fn waiting(wf: &Workflow, input: Counter) -> Result<Counter, WorkflowError> {
    let approved = waiting_approval(wf, input).await?;
    Ok(Counter { i: input.i + approved.i })
}

/// Starts execution `id` of the `waiting` workflow; it suspends on its async step.
pub async fn start_waiting(engine: &Engine, id: String) -> Result<(), String> {
    waiting::start_with(engine, Counter { i: 1 }, RunOptions::new().id(id)).await.map(drop).map_err(|e| e.to_string())
}

/// Completes the async step of the `waiting` execution `id`.
pub async fn complete_waiting(engine: &Engine, id: &str) -> Result<(), String> {
    let token = engine.completion_token(&id.into(), &workflows_runtime::CallKey::new("waiting-approval", 1));
    engine.complete_step(&token, Counter { i: 41 }).await.map_err(|e| e.to_string())
}
