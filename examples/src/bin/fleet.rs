//! The fleet on PostgreSQL, measured with real processes: worker processes and a client-only
//! engine (this process) on one fresh schema.
//!
//! - **Dispatch**: the client starts `--executions` seq-10 workflows (32 starts in flight); it
//!   prints the throughput (first start to last result) and, from the first step's body in a
//!   worker, the latency from `start` to that body starting (p50/p99) — with `LISTEN/NOTIFY`,
//!   then polling only (a tenth of the executions: a worker then looks every half lease).
//! - **Takeover**: 30 long workflows (a step every 50 ms) run on the workers; `--kills` times a
//!   worker running some of them is SIGKILLed (and restarted); for each execution it ran, the
//!   time from the kill to its next step starting in another worker (p50/p99). Three ways: on
//!   one host, the killed process reaped at once (the restarted worker proves it gone and
//!   takes over at start); on one host, the killed process left a zombie until the next kill
//!   (a PID 1 that reaps slowly: a zombie counts as gone); and as across hosts (the workers
//!   cannot tell a dead process from a live one: they take over when its lease ends).
//!
//! ```text
//! cargo run --release -p workflows-examples --bin fleet -- [--url URL] [--executions 10000] \
//!     [--workers 3] [--kills 20] [--lease-ms 2000]
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use workflows_runtime::prelude::*;
use workflows_runtime::{PostgresOptions, Timestamp};

#[derive(Parser)]
#[command(about = "Measures a fleet of worker processes on PostgreSQL: dispatch latency, throughput, takeover")]
struct Args {
    /// The PostgreSQL server (a fresh schema is made on it, and dropped after).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    url: String,
    /// seq-10 executions the client starts.
    #[arg(long, default_value_t = 10_000)]
    executions: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// SIGKILLs in the takeover measurement.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// The engines' lease.
    #[arg(long, default_value_t = 2000)]
    lease_ms: u64,
    /// Internal: run as a worker on `--schema`, recording in `--log`.
    #[arg(long, hide = true)]
    worker: bool,
    #[arg(long, hide = true)]
    schema: Option<String>,
    #[arg(long, hide = true)]
    log: Option<PathBuf>,
    #[arg(long, hide = true)]
    polling: bool,
    #[arg(long, hide = true)]
    other_hosts: bool,
}

/// How the takeover measurement kills and sees workers.
#[derive(Clone, Copy, PartialEq)]
enum Kill {
    /// SIGKILL, reaped at once; the workers see each other's processes.
    Reaped,
    /// SIGKILL, left a zombie until the next kill.
    Zombie,
    /// SIGKILL; the workers act as if each ran on a host of its own.
    OtherHosts,
}

/// Lines recorded by the step bodies of a worker, appended to the log.
struct Recorder(Mutex<std::fs::File>);

impl Recorder {
    fn line(&self, line: String) {
        let _ = self.0.lock().unwrap().write_all(format!("{line}\n").as_bytes());
    }
}

fn now_us() -> i64 {
    Timestamp::now().as_micros()
}

/// The first step records how long after `start` it began.
#[step]
async fn first(ctx: &StepContext, started_us: i64) -> Result<i64, StepError> {
    ctx.resolve::<Recorder>()?.line(format!("first {}", now_us() - started_us));
    Ok(1)
}

#[step]
async fn add_one(n: i64) -> Result<i64, StepError> {
    Ok(n + 1)
}

#[workflow(name = "fleet-seq-10")]
async fn fleet_seq_10(wf: &Workflow, started_us: i64) -> Result<i64, WorkflowError> {
    let mut n = first(wf, started_us).await?;
    for _ in 1..10 {
        n = add_one(wf, n).await?;
    }
    Ok(n)
}

#[step]
async fn tick(ctx: &StepContext, id: String) -> Result<(), StepError> {
    ctx.resolve::<Recorder>()?.line(format!("tick {id} {} {}", std::process::id(), now_us()));
    tokio::time::sleep(Duration::from_millis(50)).await;
    Ok(())
}

#[workflow(name = "fleet-long")]
async fn fleet_long(wf: &Workflow, id: String) -> Result<(), WorkflowError> {
    for _ in 0..2000 {
        tick(wf, id.clone()).await?;
    }
    Ok(())
}

fn options(schema: &str, polling: bool) -> PostgresOptions {
    PostgresOptions::new().schema(schema).pool_size(4).listen(!polling)
}

async fn run_worker(args: &Args) -> ExitCode {
    let (schema, log) = (args.schema.as_deref().expect("--schema"), args.log.as_deref().expect("--log"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("the log");
    let engine = Engine::builder()
        .postgres_with(&args.url, options(schema, args.polling))
        .container(Container::new().with(Recorder(Mutex::new(file))))
        .lease_duration(Duration::from_millis(args.lease_ms))
        .same_host_takeover(!args.other_hosts)
        .start()
        .await
        .expect("a worker");
    std::future::pending::<()>().await;
    drop(engine);
    ExitCode::SUCCESS
}

fn spawn_worker(args: &Args, schema: &str, log: &Path, polling: bool) -> Child {
    spawn_worker_seeing(args, schema, log, polling, false)
}

fn spawn_worker_seeing(args: &Args, schema: &str, log: &Path, polling: bool, other_hosts: bool) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--worker", "--url", &args.url, "--schema", schema, "--lease-ms", &args.lease_ms.to_string()]);
    command.arg("--log").arg(log);
    if polling {
        command.arg("--polling");
    }
    if other_hosts {
        command.arg("--other-hosts");
    }
    command.spawn().expect("a worker process")
}

async fn drop_schema(url: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(connection);
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// Starts `n` seq-10 executions from a client-only engine and waits for every result.
async fn dispatch(args: &Args, n: usize, polling: bool) {
    let schema = format!("fleet_{}", uuid::Uuid::now_v7().simple());
    let log = std::env::temp_dir().join(format!("{schema}.log"));
    let client = Engine::builder()
        .postgres_with(&args.url, options(&schema, polling))
        .lease_duration(Duration::from_millis(args.lease_ms))
        .client_only()
        .start()
        .await
        .expect("the client");
    let mut workers: Vec<Child> = (0..args.workers).map(|_| spawn_worker(args, &schema, &log, polling)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let started = Instant::now();
    let results = futures_util::stream::iter(0..n)
        .map(|k| {
            let client = client.clone();
            async move {
                let id = format!("d-{k}");
                let handle = fleet_seq_10::start_with(&client, now_us(), RunOptions::new().id(id)).await.unwrap();
                handle.result().await
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let seconds = started.elapsed().as_secs_f64();
    assert!(results.iter().all(|r| matches!(r, Ok(10))), "every seq-10 returned 10");
    for worker in &mut workers {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let mut latencies: Vec<f64> = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("first ")?.parse::<f64>().ok())
        .map(|us| us / 1000.0)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let how = if polling { "polling only" } else { "LISTEN/NOTIFY" };
    println!(
        "dispatch ({how}): {n} seq-10 over {} workers in {seconds:.2} s = {:.0} workflows/s ({:.0} steps/s); \
         start to first step: p50 {:.2} ms, p99 {:.2} ms",
        args.workers,
        n as f64 / seconds,
        n as f64 * 10.0 / seconds,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99)
    );
    drop(client);
    drop_schema(&args.url, &schema).await;
}

/// Kills workers running long executions; for each execution a killed worker ran, the time
/// from the kill to its next step starting elsewhere.
async fn takeover(args: &Args, kill: Kill) {
    let other_hosts = kill == Kill::OtherHosts;
    let spawn_worker = |args: &Args, schema: &str, log: &Path, polling: bool| {
        spawn_worker_seeing(args, schema, log, polling, other_hosts)
    };
    let schema = format!("fleet_{}", uuid::Uuid::now_v7().simple());
    let log = std::env::temp_dir().join(format!("{schema}.log"));
    let client = Engine::builder()
        .postgres_with(&args.url, options(&schema, false))
        .lease_duration(Duration::from_millis(args.lease_ms))
        .client_only()
        .start()
        .await
        .expect("the client");
    let mut workers: Vec<Child> = (0..args.workers).map(|_| spawn_worker(args, &schema, &log, false)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    for k in 0..30 {
        let id = format!("long-{k}");
        fleet_long::start_with(&client, id.clone(), RunOptions::new().id(id)).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = |log: &Path| -> Vec<(String, u32, i64)> {
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.strip_prefix("tick ")?.split(' ');
                Some((parts.next()?.to_owned(), parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect()
    };
    let mut kills = Vec::new();
    let mut zombie: Option<Child> = None;
    let mut seed = now_us() as u64 | 1;
    for _ in 0..args.kills {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let slot = (seed % workers.len() as u64) as usize;
        let pid = workers[slot].id();
        let at = now_us();
        let _ = workers[slot].kill();
        let killed = std::mem::replace(&mut workers[slot], spawn_worker(args, &schema, &log, false));
        // The previous zombie is reaped now; this one stays one until the next kill.
        if let Some(mut previous) = zombie.take() {
            let _ = previous.wait();
        }
        match kill {
            Kill::Zombie => zombie = Some(killed),
            Kill::Reaped | Kill::OtherHosts => {
                let mut killed = killed;
                let _ = killed.wait();
            }
        }
        kills.push((pid, at));
        // Long enough for the takeover (a lease at most) and some ticks.
        tokio::time::sleep(Duration::from_millis(args.lease_ms) * 2 + Duration::from_millis(500)).await;
    }
    for worker in workers.iter_mut().chain(zombie.as_mut()) {
        let _ = worker.kill();
        let _ = worker.wait();
    }
    let ticks = ticks(&log);
    let mut latencies = Vec::new();
    for (pid, at) in &kills {
        // The executions the killed worker ran last before the kill.
        let mut last: std::collections::HashMap<&str, (u32, i64)> = std::collections::HashMap::new();
        for (id, by, when) in &ticks {
            if when < at {
                last.insert(id, (*by, *when));
            }
        }
        for (id, (by, _)) in last {
            if by != *pid {
                continue;
            }
            if let Some((_, _, next)) = ticks.iter().find(|(i, b, w)| i == id && *b != *pid && w > at) {
                latencies.push((next - at) as f64 / 1000.0);
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    if latencies.is_empty() {
        println!("takeover: no execution was running on a killed worker");
    } else {
        let how = match kill {
            Kill::Reaped => "one host, reaped",
            Kill::Zombie => "one host, a zombie",
            Kill::OtherHosts => "as across hosts",
        };
        println!(
            "takeover, {how} ({} kills, {} executions taken over, lease {} ms): kill to next step elsewhere p50 {:.0} ms, p99 {:.0} ms",
            kills.len(),
            latencies.len(),
            args.lease_ms,
            percentile(&latencies, 0.5),
            percentile(&latencies, 0.99)
        );
    }
    drop(client);
    drop_schema(&args.url, &schema).await;
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if args.worker {
        return run_worker(&args).await;
    }
    dispatch(&args, args.executions, false).await;
    dispatch(&args, (args.executions / 10).max(1), true).await;
    for kill in [Kill::Reaped, Kill::Zombie, Kill::OtherHosts] {
        takeover(&args, kill).await;
    }
    ExitCode::SUCCESS
}
