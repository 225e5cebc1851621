//! Benchmarks the engine on the reference workloads and prints one JSON line per workload:
//!
//! ```text
//! cargo run --release -p workflows-examples --bin bench -- \
//!     [--workload seq-10,concurrent-10,saga-5,parallel-10,long-1000,waiting-10k] \
//!     [--store memory|sqlite|sqlite-process|postgres[=URL]] \
//!     [--scale F] [--concurrency K] [--threads current|multi]
//! ```
//!
//! Counts, warm-ups and checks follow the Medusa reference harness. Any failed check exits
//! non-zero.

mod postgres;
mod workloads;

use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use clap::{Parser, ValueEnum};
use workflows_runtime::{Durability, Engine, PostgresOptions, SqliteOptions};

use workloads::{LONG_STEPS, SAGA_COMPENSATIONS, SAGA_INVOKES};

#[derive(Parser)]
#[command(about = "Benchmarks workflows-runtime on the reference workloads (one JSON line per workload)")]
struct Args {
    /// Workloads to run, comma-separated, in this order.
    #[arg(long, value_delimiter = ',', default_value = "seq-10,concurrent-10,saga-5,parallel-10,long-1000")]
    workload: Vec<Workload>,
    /// Where executions are stored: in memory, a fresh SQLite file with `Full` durability
    /// (fsync per commit) or `Process` durability, or a fresh schema (dropped after the run)
    /// on a PostgreSQL server (`postgres=URL`; default `postgres://postgres@127.0.0.1:5432/test`).
    #[arg(long, default_value = "memory")]
    store: StoreKind,
    /// Directory for the SQLite file and the fsync probe (default: the system's temp directory).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Multiplies every run count and warm-up (0.1 for a quick run).
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Runs in flight at once in concurrent-10.
    #[arg(long, default_value_t = 100)]
    concurrency: usize,
    /// The Tokio runtime: one thread (comparable with Node's single thread) or two workers.
    #[arg(long, value_enum, default_value_t = Threads::Current)]
    threads: Threads,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Workload {
    #[value(name = "seq-10")]
    Seq10,
    #[value(name = "concurrent-10")]
    Concurrent10,
    #[value(name = "saga-5")]
    Saga5,
    #[value(name = "parallel-10")]
    Parallel10,
    #[value(name = "long-1000")]
    Long1000,
    /// A workflow without steps: the engine's fixed cost per execution.
    #[value(name = "noop")]
    Noop,
    /// 10,000 executions suspended on an async step, then all completed from outside.
    #[value(name = "waiting-10k")]
    Waiting10k,
    /// The same with 100,000 executions.
    #[value(name = "waiting-100k")]
    Waiting100k,
}

#[derive(Clone, PartialEq, Eq)]
enum StoreKind {
    Memory,
    Sqlite,
    SqliteProcess,
    /// The server's URL.
    Postgres(String),
}

impl std::str::FromStr for StoreKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "memory" => Self::Memory,
            "sqlite" => Self::Sqlite,
            "sqlite-process" => Self::SqliteProcess,
            "postgres" => Self::Postgres(DEFAULT_POSTGRES.into()),
            other => match other.strip_prefix("postgres=") {
                Some(url) => Self::Postgres(url.into()),
                None => return Err(format!("`{other}`: use memory, sqlite, sqlite-process or postgres[=URL]")),
            },
        })
    }
}

/// The server these machines provide.
const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

impl StoreKind {
    fn name(&self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
            Self::SqliteProcess => "sqlite-process",
            Self::Postgres(_) => "postgres",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Threads {
    Current,
    Multi,
}

/// How a workload is driven and counted.
struct Plan {
    name: &'static str,
    runs: usize,
    warmup: usize,
    steps_per_workflow: u64,
    /// Runs in flight at once (1: one after another).
    concurrency: usize,
}

impl Workload {
    fn plan(self, args: &Args) -> Plan {
        let scaled = |n: f64| ((n * args.scale).round() as usize).max(1);
        let (name, runs, warmup, steps, concurrency) = match self {
            Self::Seq10 => ("seq-10", 2000.0, 200.0, 10, 1),
            Self::Concurrent10 => ("concurrent-10", 10_000.0, 200.0, 10, args.concurrency.max(1)),
            Self::Saga5 => ("saga-5", 1000.0, 200.0, 5, 1),
            Self::Parallel10 => ("parallel-10", 2000.0, 200.0, 10, 1),
            Self::Long1000 => ("long-1000", 20.0, 2.0, LONG_STEPS, 1),
            Self::Noop => ("noop", 2000.0, 200.0, 0, 1),
            Self::Waiting10k => ("waiting-10k", 10_000.0, 0.0, 1, args.concurrency.max(1)),
            Self::Waiting100k => ("waiting-100k", 100_000.0, 0.0, 1, args.concurrency.max(1)),
        };
        Plan { name, runs: scaled(runs), warmup: scaled(warmup), steps_per_workflow: steps, concurrency }
    }

    async fn run_once(self, engine: &Engine) -> Result<(), String> {
        match self {
            Self::Seq10 | Self::Concurrent10 => workloads::run_seq_10(engine).await,
            Self::Saga5 => workloads::run_saga_5(engine).await,
            Self::Parallel10 => workloads::run_parallel_10(engine).await,
            Self::Long1000 => workloads::run_long_1000(engine).await,
            Self::Noop => workloads::run_noop(engine).await,
            Self::Waiting10k | Self::Waiting100k => Err("waiting workloads are driven by `run_waiting`".into()),
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match args.threads {
        Threads::Current => tokio::runtime::Builder::new_current_thread().enable_all().build(),
        Threads::Multi => tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build(),
    }
    .expect("a Tokio runtime");
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bench: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<(), String> {
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let scratch = Scratch::new(&dir).map_err(|e| format!("cannot use {}: {e}", dir.display()))?;
    let mut schema = None;
    let mut commit_us = None;
    let (engine, fsync_us) = match &args.store {
        StoreKind::Memory => (Engine::builder().memory().start().await.map_err(|e| e.to_string())?, None),
        StoreKind::Postgres(url) => {
            let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
            commit_us = Some(postgres::commit_median_us(url).await?);
            let options = PostgresOptions::new().schema(&name);
            schema = Some(postgres::Schema { url: url.clone(), name });
            (Engine::builder().postgres_with(url, options).start().await.map_err(|e| e.to_string())?, None)
        }
        StoreKind::Sqlite | StoreKind::SqliteProcess => {
            let fsync = fsync_median_us(&scratch.path.join("fsync-probe")).map_err(|e| format!("fsync probe: {e}"))?;
            let durability = if args.store == StoreKind::Sqlite { Durability::Full } else { Durability::Process };
            let options = SqliteOptions::new().durability(durability);
            let engine = Engine::builder().sqlite_with(scratch.path.join("bench.db"), options).start().await;
            (engine.map_err(|e| e.to_string())?, Some(fsync))
        }
    };
    let store = args.store.name();
    let threads = match args.threads {
        Threads::Current => "current",
        Threads::Multi => "multi",
    };
    for &workload in &args.workload {
        let plan = workload.plan(args);
        if matches!(workload, Workload::Waiting10k | Workload::Waiting100k) {
            let mut line = run_waiting(&engine, plan.name, plan.runs, plan.concurrency).await?;
            line["store"] = store.into();
            line["threads"] = threads.into();
            if let Some(fsync_us) = fsync_us {
                line["fsync_us"] = round(fsync_us, 1).into();
            }
            if let Some(commit_us) = commit_us {
                line["commit_us"] = round(commit_us, 1).into();
            }
            println!("{line}");
            continue;
        }
        drive(&engine, workload, plan.warmup, plan.concurrency).await?;
        SAGA_INVOKES.store(0, Ordering::Relaxed);
        SAGA_COMPENSATIONS.store(0, Ordering::Relaxed);

        let started = Instant::now();
        drive(&engine, workload, plan.runs, plan.concurrency).await?;
        let seconds = started.elapsed().as_secs_f64();

        let mut line = serde_json::json!({
            "system": "workflows-rs",
            "store": store,
            "workload": plan.name,
            "runs": plan.runs,
            "concurrency": plan.concurrency,
            "threads": threads,
            "total_ms": round(seconds * 1000.0, 3),
            "us_per_workflow": round(seconds * 1e6 / plan.runs as f64, 3),
            "workflows_per_s": round(plan.runs as f64 / seconds, 1),
            "steps_per_s": round((plan.runs as u64 * plan.steps_per_workflow) as f64 / seconds, 1),
            "rss_mb": round(rss_bytes() as f64 / (1024.0 * 1024.0), 1),
            "steps_per_workflow": plan.steps_per_workflow,
            "warmup_runs": plan.warmup,
        });
        if workload == Workload::Saga5 {
            let (invokes, compensations) =
                (SAGA_INVOKES.load(Ordering::Relaxed), SAGA_COMPENSATIONS.load(Ordering::Relaxed));
            let runs = plan.runs as u64;
            if invokes != 5 * runs || compensations != 4 * runs {
                return Err(format!(
                    "saga-5: {invokes} step invocations and {compensations} compensations for {runs} runs \
                     (expected 5 and 4 per run)"
                ));
            }
            line["step_invocations"] = invokes.into();
            line["compensations"] = compensations.into();
        }
        if let Some(fsync_us) = fsync_us {
            line["fsync_us"] = round(fsync_us, 1).into();
            let per_step_fsyncs = seconds * 1e6 / plan.runs as f64 / fsync_us;
            line["fsyncs_per_workflow"] = round(per_step_fsyncs, 2).into();
        }
        if let Some(commit_us) = commit_us {
            line["commit_us"] = round(commit_us, 1).into();
            line["commits_per_workflow"] = round(seconds * 1e6 / plan.runs as f64 / commit_us, 2).into();
        }
        if workload == Workload::Long1000 {
            line["us_per_step"] = round(seconds * 1e6 / (plan.runs as u64 * LONG_STEPS) as f64, 3).into();
        }
        println!("{line}");
    }
    drop(engine);
    if let Some(schema) = schema {
        schema.drop().await;
    }
    Ok(())
}

/// waiting-10k and waiting-100k: starts `runs` executions that suspend on an async step,
/// measures the memory they hold once the engine is idle, then completes them all
/// (`concurrency` at a time) and measures the completion throughput.
async fn run_waiting(
    engine: &Engine,
    name: &str,
    runs: usize,
    concurrency: usize,
) -> Result<serde_json::Value, String> {
    fn id(n: usize) -> String {
        format!("waiting-{n}")
    }
    trim();
    let (before, heap_before) = (rss_bytes(), heap_bytes());
    let started = Instant::now();
    let starter = engine.clone();
    for_each(runs, concurrency, move |n| {
        let engine = starter.clone();
        async move { workloads::start_waiting(&engine, id(n)).await }
    })
    .await?;
    // Every execution suspends once its async step has sent its request.
    idle(engine).await;
    let suspended_s = started.elapsed().as_secs_f64();
    // Memory the allocator holds free is given back first: what remains is held.
    trim();
    let (waiting, heap_waiting) = (rss_bytes(), heap_bytes());

    let completing = Instant::now();
    let completer = engine.clone();
    for_each(runs, concurrency, move |n| {
        let engine = completer.clone();
        async move { workloads::complete_waiting(&engine, &id(n)).await }
    })
    .await?;
    let delivered_s = completing.elapsed().as_secs_f64();
    idle(engine).await;
    let finished_s = completing.elapsed().as_secs_f64();
    let query = workflows_runtime::ExecutionQuery {
        states: vec![workflows_runtime::ExecutionState::Completed],
        workflow: Some("waiting".into()),
        ..Default::default()
    };
    let completed = engine.executions(&query).await.map_err(|e| e.to_string())?;
    let correct = completed.iter().filter(|r| r.result.as_ref().is_some_and(|v| v.get() == r#"{"i":42}"#)).count();
    if correct != runs {
        return Err(format!("{name}: {correct} of {runs} executions completed with the expected result"));
    }
    let mib = |b: u64| round(b as f64 / (1024.0 * 1024.0), 1);
    let total_s = suspended_s + finished_s;
    Ok(serde_json::json!({
        "system": "workflows-rs",
        "workload": name,
        "runs": runs,
        "concurrency": concurrency,
        // Each execution: started, suspended, completed from outside, resumed, finished.
        "total_ms": round(total_s * 1000.0, 3),
        "us_per_workflow": round(total_s * 1e6 / runs as f64, 3),
        "workflows_per_s": round(runs as f64 / total_s, 1),
        "steps_per_s": round(runs as f64 / total_s, 1),
        "suspended_s": round(suspended_s, 3),
        "rss_before_mb": mib(before),
        "rss_waiting_mb": mib(waiting),
        "bytes_per_waiting": (waiting.saturating_sub(before) as f64 / runs as f64).round(),
        "heap_bytes_per_waiting": (heap_waiting.saturating_sub(heap_before) as f64 / runs as f64).round(),
        "completions_delivered_per_s": round(runs as f64 / delivered_s, 1),
        "completed_per_s": round(runs as f64 / finished_s, 1),
        "rss_mb": mib(rss_bytes()),
    }))
}

/// Runs `task(n)` for `n` in `0..runs`, `concurrency` at a time.
async fn for_each<F, Fut>(runs: usize, concurrency: usize, task: F) -> Result<(), String>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..concurrency.clamp(1, runs.max(1))).map(|_| {
        let (next, task) = (next.clone(), task.clone());
        spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= runs {
                    return Ok(());
                }
                task(n).await?;
            }
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.map_err(|e| format!("a benchmark worker failed: {e}"))??;
    }
    Ok(())
}

/// Waits until the engine drives no execution.
async fn idle(engine: &Engine) {
    while engine.running() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Runs `runs` executions with at most `concurrency` in flight.
async fn drive(engine: &Engine, workload: Workload, runs: usize, concurrency: usize) -> Result<(), String> {
    if concurrency <= 1 {
        for _ in 0..runs {
            workload.run_once(engine).await?;
        }
        return Ok(());
    }
    let next = Arc::new(AtomicUsize::new(0));
    let workers = (0..concurrency.min(runs)).map(|_| {
        let engine = engine.clone();
        let next = next.clone();
        spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < runs {
                workload.run_once(&engine).await?;
            }
            Ok(())
        })
    });
    for worker in workers.collect::<Vec<_>>() {
        worker.await.map_err(|e| format!("a benchmark worker failed: {e}"))??;
    }
    Ok(())
}

fn spawn<F: Future<Output = Result<(), String>> + Send + 'static>(f: F) -> tokio::task::JoinHandle<F::Output> {
    tokio::spawn(f)
}

/// A fresh directory for the benchmark's files, removed at the end.
struct Scratch {
    path: std::path::PathBuf,
}

impl Scratch {
    fn new(parent: &std::path::Path) -> std::io::Result<Self> {
        let path = parent.join(format!("workflows-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The median time of one 4 KiB append followed by `fsync`, on the disk of `path`: what one
/// durable commit costs at least. `fsync`, not `fdatasync`, because that is what SQLite calls
/// (it does not trust `fdatasync` unless compiled to).
fn fsync_median_us(path: &std::path::Path) -> std::io::Result<f64> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
    let block = [7u8; 4096];
    let mut samples = Vec::with_capacity(200);
    for _ in 0..200 {
        let started = Instant::now();
        file.write_all(&block)?;
        file.sync_all()?;
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples[samples.len() / 2])
}

fn round(value: f64, digits: i32) -> f64 {
    let factor = 10f64.powi(digits);
    (value * factor).round() / factor
}

/// Gives the memory the allocator holds free back to the system (glibc), so that the RSS
/// shows what the process holds.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: glibc's malloc_trim only releases free memory.
        unsafe { malloc_trim(0) };
    }
}

/// The bytes allocated through malloc and not freed (glibc's `mallinfo2`; 0 elsewhere):
/// the heap the process holds, without the allocator's free lists.
fn heap_bytes() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        #[repr(C)]
        struct MallInfo2 {
            arena: usize,
            ordblks: usize,
            smblks: usize,
            hblks: usize,
            hblkhd: usize,
            usmblks: usize,
            fsmblks: usize,
            uordblks: usize,
            fordblks: usize,
            keepcost: usize,
        }
        unsafe extern "C" {
            fn mallinfo2() -> MallInfo2;
        }
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { mallinfo2() };
        (info.uordblks + info.hblkhd) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

/// The process's resident set size (Linux; 0 elsewhere).
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(0)
}
