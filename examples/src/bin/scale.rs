//! The costs that could grow with a store's history, measured on an SQLite store holding many
//! finished executions (seq-10, written by the library itself): engine start, a seq-10, the
//! first and a deep page of the listing, a listing by state and by workflow, a purge that finds
//! nothing, a purge of 20,000 executions and the stall it causes a workflow running meanwhile,
//! and the recovery of 10,000 and 100,000 orphaned executions. Prints one line per figure
//! (medians where repeated).
//!
//! ```text
//! cargo run --release -p workflows-examples --bin scale -- [--executions 1000000] [--dir DIR] \
//!     [--orphans 10000,100000]
//! ```
//!
//! The filled store (`DIR/scale-N.db`) is kept and topped up on the next run, so a second run
//! measures without filling again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use workflows_runtime::prelude::*;
use workflows_runtime::{Durability, ExecutionQuery, ExecutionState, PageCursor, SqliteOptions};

#[derive(Parser)]
#[command(about = "Measures what could grow with the store: start, listing, purge, recovery")]
struct Args {
    /// Finished executions the store holds.
    #[arg(long, default_value_t = 1_000_000)]
    executions: usize,
    /// Where the stores are kept (default: the system's temp directory).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Orphaned executions to recover, one fresh store each, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    orphans: Vec<usize>,
    /// Internal: start this many executions that never finish on `--db`, then exit.
    #[arg(long, hide = true)]
    make_orphans: Option<usize>,
    /// Internal: the store `--make-orphans` writes.
    #[arg(long, hide = true)]
    db: Option<PathBuf>,
}

/// Holds step bodies until the process exits (in the process that makes orphans), and counts
/// the bodies that ran (in the one that recovers them).
#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    passed: AtomicUsize,
}

#[step]
async fn add_one(n: u64) -> Result<u64, StepError> {
    Ok(n + 1)
}

/// Ten steps in a chain, as the bench's seq-10.
#[workflow(name = "scale-seq-10")]
async fn seq_10(wf: &Workflow, n: u64) -> Result<u64, WorkflowError> {
    let mut n = n;
    for _ in 0..10 {
        n = add_one(wf, n).await?;
    }
    Ok(n)
}

#[step]
async fn pass(ctx: &StepContext, n: u64) -> Result<u64, StepError> {
    let gate = ctx.resolve::<Arc<Gate>>()?;
    if gate.closed.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    gate.passed.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

#[workflow(name = "scale-orphan")]
async fn orphan(wf: &Workflow, n: u64) -> Result<u64, WorkflowError> {
    Ok(pass(wf, n).await?)
}

fn options() -> SqliteOptions {
    SqliteOptions::new().durability(Durability::Process)
}

async fn engine(path: &Path, gate: &Arc<Gate>) -> Engine {
    Engine::builder()
        .sqlite_with(path, options())
        .container(Container::new().with(gate.clone()))
        .start()
        .await
        .expect("engine start")
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Times `f` `n` times; the median.
async fn timed<F, Fut, T>(n: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        std::hint::black_box(f().await);
        samples.push(started.elapsed());
    }
    median(samples)
}

/// How many executions the store holds, up to `n`: found by probing pages (a count would read
/// every row).
async fn count(engine: &Engine, n: usize) -> usize {
    let exists = |offset: usize| async move {
        let probe = ExecutionQuery { offset, limit: Some(1), ..Default::default() };
        !engine.executions(&probe).await.unwrap().is_empty()
    };
    let (mut low, mut high) = (0, n);
    if exists(n - 1).await {
        return n;
    }
    // The first offset with nothing is in low..=high.
    while low < high {
        let mid = (low + high) / 2;
        if exists(mid).await { low = mid + 1 } else { high = mid }
    }
    low
}

/// Tops the store up to `n` finished seq-10 executions, 64 at a time.
async fn fill(engine: &Engine, have: usize, n: usize) {
    if have >= n {
        return;
    }
    let started = Instant::now();
    let next = Arc::new(AtomicUsize::new(have));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (engine, next) = (engine.clone(), next.clone());
            tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < n {
                    seq_10::run(&engine, 0).await.expect("a seq-10 run");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!("fill: {} executions in {secs:.1} s ({:.0}/s)", n - have, (n - have) as f64 / secs);
}

/// Runs seq-10 workflows back to back until `stop`, returning each one's latency.
fn run_meanwhile(engine: &Engine, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<Duration>> {
    let (engine, stop) = (engine.clone(), stop.clone());
    tokio::spawn(async move {
        let mut latencies = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let started = Instant::now();
            seq_10::run(&engine, 0).await.expect("a seq-10 run");
            latencies.push(started.elapsed());
        }
        latencies
    })
}

fn percentiles(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    format!("{} runs, p50 {}, p99 {}, max {}", latencies.len(), ms(at(0.5)), ms(at(0.99)), ms(at(1.0)))
}

async fn measure(dir: &Path, n: usize) {
    let path = dir.join(format!("scale-{n}.db"));
    let gate = Arc::new(Gate::default());
    {
        let engine = engine(&path, &gate).await;
        let have = count(&engine, n).await;
        fill(&engine, have, n).await;
        engine.shutdown().await;
    }
    println!("store: {n} finished executions ({:.2} GB)", std::fs::metadata(&path).map_or(0, |m| m.len()) as f64 / 1e9);

    let start = timed(3, || async { engine(&path, &gate).await.shutdown().await }).await;
    println!("engine start: {}", ms(start));
    let engine = engine(&path, &gate).await;
    let run = timed(200, || async { seq_10::run(&engine, 0).await.unwrap() }).await;
    println!("seq-10: {:.0} µs", run.as_secs_f64() * 1e6);

    let page = |query: ExecutionQuery| {
        let engine = engine.clone();
        async move { engine.executions(&ExecutionQuery { limit: Some(50), ..query }).await.unwrap() }
    };
    println!("first page: {}", ms(timed(5, || page(ExecutionQuery::default())).await));
    let deep = ExecutionQuery { offset: n / 2, ..Default::default() };
    println!("deep page (offset {}): {}", n / 2, ms(timed(3, || page(deep.clone())).await));
    let middle = page(deep).await;
    let after = ExecutionQuery { after: middle.last().map(PageCursor::after), ..Default::default() };
    println!("deep page (after a cursor there): {}", ms(timed(5, || page(after.clone())).await));
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    println!("by state, first page: {}", ms(timed(5, || page(completed.clone())).await));
    let of_workflow = ExecutionQuery { workflow: Some("scale-seq-10".into()), ..Default::default() };
    println!("by workflow, first page: {}", ms(timed(5, || page(of_workflow.clone())).await));

    println!("purge, nothing due: {}", ms(timed(3, || async { engine.purge_due().await.unwrap() }).await));

    // A quiet baseline, then the same workflows while 20,000 executions are purged.
    let stop = Arc::new(AtomicBool::new(false));
    let quiet = run_meanwhile(&engine, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    println!("seq-10 alone: {}", percentiles(quiet.await.unwrap()));
    let oldest = ExecutionQuery { offset: n - 20_000, limit: Some(1), ..Default::default() };
    let cutoff = engine.executions(&oldest).await.unwrap()[0].updated_at;
    let stop = Arc::new(AtomicBool::new(false));
    let meanwhile = run_meanwhile(&engine, &stop);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let purged = engine.purge_finished_before(cutoff).await.unwrap();
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    println!("purge of {purged}: {}", ms(took));
    println!("seq-10 during the purge: {}", percentiles(meanwhile.await.unwrap()));
    engine.shutdown().await;
}

async fn recover(dir: &Path, orphans: usize) {
    let path = dir.join(format!("orphans-{orphans}.db"));
    let _ = std::fs::remove_file(&path);
    let made = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--make-orphans", &orphans.to_string(), "--db"])
        .arg(&path)
        .status()
        .expect("the orphan maker");
    assert!(made.success(), "the orphan maker failed");
    let gate = Arc::new(Gate::default());
    let started = Instant::now();
    let engine = engine(&path, &gate).await;
    let start = started.elapsed();
    while gate.passed.load(Ordering::SeqCst) < orphans {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    println!(
        "recovery of {orphans} orphans: start() returned in {}, all resumed in {}",
        ms(start),
        ms(started.elapsed())
    );
    engine.shutdown().await;
    let _ = std::fs::remove_file(&path);
}

/// Starts `n` executions whose step never ends, and exits without releasing them: a crash.
async fn make_orphans(path: &Path, n: usize) {
    let gate = Arc::new(Gate { closed: AtomicBool::new(true), ..Gate::default() });
    let engine = engine(path, &gate).await;
    for k in 0..n {
        orphan::start(&engine, k as u64).await.expect("started");
    }
    std::process::exit(0);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    if let (Some(n), Some(db)) = (args.make_orphans, &args.db) {
        make_orphans(db, n).await;
    }
    let dir = args.dir.unwrap_or_else(std::env::temp_dir);
    measure(&dir, args.executions).await;
    for orphans in args.orphans {
        recover(&dir, orphans).await;
    }
    ExitCode::SUCCESS
}
