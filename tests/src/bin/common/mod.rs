//! What both crash-test workers share: the side-effect log, the `crash_saga`, `approval_flow`,
//! `fan_saga`, `budget_saga` and `stale_saga` workflows, and the command line
//! (`DB LOG full|process start ID PLAN_JSON|approval|fan:N|budget|stale:PAUSE | resume ID | complete ID TOKEN JSON`;
//! it prints `STATE <state>` once the execution finished, or is blocked by this build),
//! and the fleet test's processes (`work -`, `orders PREFIX N`, `queued PREFIX N`, `events PREFIX N`,
//! `schedules -`: see `fleet`). `DB` is a SQLite
//! file, or a `postgres://` URL.

pub mod fleet;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{Durability, ExecutionState, PostgresOptions, SqliteOptions};

/// What the workflow does; part of its input, so replay sees the same plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    steps: u32,
    /// This step fails permanently, so the completed ones are compensated.
    fail_at: Option<u32>,
    /// Each step and compensation sleeps a pseudo-random 0..=jitter_ms, from `seed`.
    jitter_ms: u64,
    seed: u64,
}

impl Plan {
    fn delay(&self, salt: u64) -> Duration {
        if self.jitter_ms == 0 {
            return Duration::ZERO;
        }
        let mut x = self.seed ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        Duration::from_millis(x % (self.jitter_ms + 1))
    }
}

/// The side-effect log: one line per effect, appended with one `write` each.
struct SideEffects {
    path: PathBuf,
    lock: Mutex<()>,
}

impl SideEffects {
    fn record(&self, line: String) {
        let _guard = self.lock.lock().unwrap();
        let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&self.path).unwrap();
        file.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    fn contains(&self, line: &str) -> bool {
        std::fs::read_to_string(&self.path).unwrap_or_default().lines().any(|l| l == line)
    }
}

/// Records a side effect, then stops forever if `CRASH_BLOCK` names `point` and this is the
/// first attempt (the test kills the process there).
pub async fn effect(ctx: &StepContext, line: String, point: &str) -> Result<(), StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(line);
    if ctx.attempt() == 1 {
        maybe_block(effects, point).await;
    }
    Ok(())
}

/// Stops here forever if `CRASH_BLOCK` names this point (the test kills the process).
async fn maybe_block(effects: &SideEffects, point: &str) {
    if std::env::var("CRASH_BLOCK").ok().as_deref() == Some(point) {
        effects.record(format!("{point} blocked"));
        std::future::pending::<()>().await;
    }
}

#[step(compensate = undo)]
async fn act(ctx: &StepContext, k: u32, plan: Plan) -> Result<u32, StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(format!("step {k} begin {}", ctx.attempt()));
    if ctx.attempt() == 1 {
        maybe_block(effects, &format!("step:{k}")).await;
    }
    tokio::time::sleep(plan.delay(u64::from(k))).await;
    if plan.fail_at == Some(k) {
        effects.record(format!("step {k} failed"));
        return Err(StepError::permanent(format!("step {k} fails as planned")));
    }
    effects.record(format!("step {k} end"));
    Ok(k)
}

async fn undo(ctx: &StepContext, k: u32) -> Result<(), StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(format!("comp {k} begin"));
    maybe_block(effects, &format!("comp:{k}")).await;
    tokio::time::sleep(Duration::from_millis(u64::from(k) % 3)).await;
    // Idempotent, as compensations must be: a re-run after a crash does not undo twice.
    if !effects.contains(&format!("comp {k} end")) {
        effects.record(format!("comp {k} end"));
    }
    Ok(())
}

/// One part of the `evolving` workflow, which each worker build defines its own way.
#[step]
pub async fn part(ctx: &StepContext, name: String) -> Result<String, StepError> {
    effect(ctx, format!("part {name} begin {}", ctx.attempt()), &format!("part:{name}")).await?;
    Ok(name)
}

/// Fails unless `CRASH_FLAKY_OK` is set; its failures pause the execution after two attempts.
#[step(retry(max_attempts = 2, backoff = "10ms"), on_failure = "pause")]
pub async fn flaky(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(format!("flaky begin {}", ctx.attempt()));
    if std::env::var("CRASH_BLOCK").ok().as_deref() == Some("flaky") && ctx.attempt() == 3 {
        effects.record("flaky blocked".to_owned());
        std::future::pending::<()>().await;
    }
    if std::env::var_os("CRASH_FLAKY_OK").is_none() {
        return Err(StepError::new("the service is down"));
    }
    effects.record(format!("flaky end {}", ctx.attempt()));
    Ok(n)
}

#[workflow]
async fn pausing(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let a = part(wf, "before".into()).await?;
    let b = flaky(wf, n).await?;
    Ok(a.len() as u32 + b)
}

/// The first version of the `versioned` workflow, linked in every build; `crash_worker_v2`
/// links a second beside it.
#[workflow(name = "versioned")]
async fn versioned_v1(wf: &Workflow, _input: ()) -> Result<String, WorkflowError> {
    let a = part(wf, "v1-a".into()).await?;
    let b = part(wf, "v1-b".into()).await?;
    Ok(format!("{a}{b}"))
}

#[workflow]
async fn crash_saga(wf: &Workflow, plan: Plan) -> Result<u32, WorkflowError> {
    let mut sum = 0;
    for k in 1..=plan.steps {
        sum += act(wf, k, plan.clone()).await?;
    }
    Ok(sum)
}

/// An async step: logs its completion token (the test hands it to another process, which
/// completes the step) and waits for the completion. `CRASH_BLOCK=approval:N` stops attempt N
/// once its request went out, before it recorded that it waits.
#[step(async)]
async fn request_approval(ctx: &StepContext, order: u32) -> Result<Completion<bool>, StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(format!("token {}", ctx.completion_token()));
    maybe_block(effects, &format!("approval:{}", ctx.attempt())).await;
    let _ = order;
    Ok(Completion::later())
}

#[workflow]
async fn approval_flow(wf: &Workflow, order: u32) -> Result<String, WorkflowError> {
    let approved = request_approval(wf, order).await?;
    Ok(format!("order {order} {}", if approved { "approved" } else { "declined" }))
}

/// One item of the fan-out: takes a while that does not grow with `k`, so items complete in
/// another order than they started.
#[step]
async fn item(ctx: &StepContext, k: u32) -> Result<u32, StepError> {
    effect(ctx, format!("item {k} begin {}", ctx.attempt()), &format!("item:{k}")).await?;
    tokio::time::sleep(Duration::from_millis(u64::from(k * 37 % 50))).await;
    ctx.resolve::<SideEffects>()?.record(format!("item {k} end"));
    Ok(k * k)
}

#[workflow]
async fn fan_saga(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let squares = wf.fan_out(1..=n, 3, |k| item(wf, k)).await?;
    Ok(squares.iter().sum())
}

#[step(compensate = release_seat)]
async fn reserve_seat(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<SideEffects>()?.record("reserve".into());
    Ok(1)
}

async fn release_seat(ctx: &StepContext, _seat: u32) -> Result<(), StepError> {
    ctx.resolve::<SideEffects>()?.record("release".into());
    Ok(())
}

/// Fails its first two attempts; the third one stops forever if `CRASH_BLOCK=charge:3`.
#[step(retry(max_attempts = 3, backoff = "10ms"))]
async fn flaky_charge(ctx: &StepContext) -> Result<u32, StepError> {
    let effects = ctx.resolve::<SideEffects>()?;
    effects.record(format!("charge begin {}", ctx.attempt()));
    if ctx.attempt() < 3 {
        return Err(StepError::new("the card network is busy"));
    }
    maybe_block(effects, "charge:3").await;
    effects.record("charge end".into());
    Ok(2)
}

/// A seat reserved, then a charge with a budget of three attempts.
#[workflow]
async fn budget_saga(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    let seat = reserve_seat(wf).await?;
    Ok(seat + flaky_charge(wf).await?)
}

/// Fails its first attempt; the next one is due 700 ms later (too soon to suspend, so the
/// process that ran the first attempt keeps the execution in memory meanwhile).
#[step(retry(max_attempts = 2, backoff = "700ms"))]
async fn pay_later(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<SideEffects>()?.record(format!("pay begin {} {}", ctx.attempt(), std::process::id()));
    if ctx.attempt() == 1 {
        return Err(StepError::new("the bank is busy"));
    }
    Ok(2)
}

#[step]
async fn after_sleep(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<SideEffects>()?.record(format!("after sleep {}", std::process::id()));
    Ok(3)
}

/// Its compensation fails its first attempt and retries 700 ms later.
#[step(compensate = unhold_room, retry(max_attempts = 2, backoff = "700ms"))]
async fn hold_room(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<SideEffects>()?.record("hold".into());
    Ok(4)
}

async fn unhold_room(ctx: &StepContext, _room: u32) -> Result<(), StepError> {
    ctx.resolve::<SideEffects>()?.record(format!("unhold begin {} {}", ctx.attempt(), std::process::id()));
    if ctx.attempt() == 1 {
        return Err(StepError::new("the hotel is busy"));
    }
    Ok(())
}

#[step]
async fn refuse() -> Result<u32, StepError> {
    Err(StepError::permanent("refused"))
}

/// What a stale worker is stopped in: a retry's backoff, a durable sleep, or a compensation's
/// retry backoff.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Pause {
    Backoff,
    Sleep,
    Compensation,
}

#[workflow]
async fn stale_saga(wf: &Workflow, pause: Pause) -> Result<u32, WorkflowError> {
    let seat = reserve_seat(wf).await?;
    match pause {
        Pause::Backoff => Ok(seat + pay_later(wf).await?),
        Pause::Sleep => {
            wf.sleep(Duration::from_millis(700)).await;
            Ok(seat + after_sleep(wf).await?)
        }
        Pause::Compensation => {
            let room = hold_room(wf).await?;
            Ok(seat + room + refuse(wf).await?)
        }
    }
}

/// The worker's main: see the binaries' docs.
pub async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, db, log, durability, command, id, rest @ ..] = args.as_slice() else {
        eprintln!(
            "usage: crash_worker DB LOG full|process start ID PLAN_JSON|approval|fan:N | resume ID | complete ID TOKEN JSON"
        );
        return ExitCode::from(2);
    };
    let durability = if durability == "process" { Durability::Process } else { Durability::Full };
    let effects = SideEffects { path: PathBuf::from(log), lock: Mutex::new(()) };
    let lease = std::env::var("CRASH_LEASE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    // A `postgres://` DB is a PostgreSQL store (`?schema=` picks the test's schema): the
    // server ends a transaction left idle by a stopped process quickly, so that its locks do
    // not outlast the short test lease.
    let builder = if db.starts_with("postgres://") {
        let idle = Duration::from_millis((lease / 3).max(20));
        let options = PostgresOptions::new().pool_size(3).idle_transaction_timeout(idle);
        Engine::builder().postgres_with(db, options)
    } else {
        Engine::builder().sqlite_with(db, SqliteOptions::new().durability(durability))
    };
    // The fleet's client only starts orders: the workers run them.
    let client = command == "orders" || command == "queued" || command == "events";
    let builder = if client { builder.client_only() } else { builder };
    let engine = builder
        .container(Container::new().with(effects))
        .queue(Queue::new(fleet::QUEUE).concurrency(fleet::QUEUE_CONCURRENCY))
        // The tests drive the schedules on a simulated clock (`schedules`).
        .run_schedules(false)
        .lease_duration(Duration::from_millis(lease))
        .start()
        .await
        .expect("engine start");
    // A fleet process: a worker (`work`), or the client-only engine that starts the orders
    // (`orders N`, ID the prefix of their ids; `queued N`: on the fleet's queue); both run
    // until they are killed.
    if command == "schedules" {
        fleet::drive_schedules(&engine).await;
        return ExitCode::SUCCESS;
    }
    if command == "work" || client {
        if command == "events" {
            fleet::emit_orders(&engine, id, rest[0].parse().expect("a count")).await;
        } else if client {
            fleet::start_orders(&engine, id, rest[0].parse().expect("a count"), command == "queued").await;
        }
        std::future::pending::<()>().await;
    }
    let id = ExecutionId::from(id.as_str());
    if command == "start" {
        // The outcome is read back from the store below, like after a resume.
        if rest[0] == "evolving" || rest[0] == "versioned" {
            let _ = engine.start_workflow_by_name(&rest[0], serde_json::Value::Null, RunOptions::new().id(&id)).await;
        } else if let Some(pause) = rest[0].strip_prefix("stale:") {
            let pause: Pause = serde_json::from_str(&format!("\"{pause}\"")).expect("Backoff, Sleep or Compensation");
            let _ = stale_saga::run_with(&engine, pause, RunOptions::new().id(&id)).await;
        } else if rest[0] == "pausing" {
            let _ = pausing::run_with(&engine, 7, RunOptions::new().id(&id)).await;
        } else if rest[0] == "budget" {
            let _ = budget_saga::run_with(&engine, (), RunOptions::new().id(&id)).await;
        } else if rest[0] == "approval" {
            // Started; once it is suspended (it waits for its approval) this process exits.
            let _ = approval_flow::start_with(&engine, 7, RunOptions::new().id(&id)).await;
        } else if let Some(n) = rest[0].strip_prefix("fan:") {
            let _ = fan_saga::run_with(&engine, n.parse().expect("a count"), RunOptions::new().id(&id)).await;
        } else {
            let plan: Plan = serde_json::from_str(&rest[0]).expect("a plan");
            let _ = crash_saga::run_with(&engine, plan, RunOptions::new().id(&id)).await;
        }
    }
    if command == "retry"
        && let Err(error) = engine.retry_step(&id, &rest[0]).await
    {
        eprintln!("crash_worker: {error}");
        return ExitCode::FAILURE;
    }
    if command == "complete" {
        let output: serde_json::Value = serde_json::from_str(&rest[1]).expect("an output");
        if let Err(error) = engine.complete_step(&rest[0], output).await {
            eprintln!("crash_worker: {error}");
            return ExitCode::FAILURE;
        }
    }
    loop {
        match engine.execution(&id).await {
            Ok(Some(record)) if record.state.is_finished() => {
                println!("STATE {}", record.state);
                return ExitCode::SUCCESS;
            }
            Ok(Some(record)) if record.state == ExecutionState::Paused && command != "retry" => {
                println!("STATE {}", record.state);
                return ExitCode::SUCCESS;
            }
            // Blocked by this build: another build's worker may take it, not this one.
            Ok(Some(record))
                if record.state == ExecutionState::Blocked && record.blocked_by.contains(&engine.build_id()) =>
            {
                println!("STATE {}", record.state);
                return ExitCode::SUCCESS;
            }
            Ok(Some(record)) if record.state == ExecutionState::Waiting && command == "start" => {
                println!("STATE {}", record.state);
                return ExitCode::SUCCESS;
            }
            // Killed before the execution was created: nothing to resume.
            Ok(None) => {
                println!("STATE none");
                return ExitCode::SUCCESS;
            }
            Ok(Some(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => {
                eprintln!("crash_worker: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
}
