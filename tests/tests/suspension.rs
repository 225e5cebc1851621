//! Suspension holds no task and almost no memory: 10,000 executions wait on async steps; once
//! they are all suspended the engine drives none of them (no task, no future) and the Rust heap
//! holds under 512 bytes per execution (asserted; the RSS is printed); then all of them are
//! completed from outside and every result is checked. The figures are printed
//! (`cargo test --test suspension -- --nocapture`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use workflows_runtime::ExecutionQuery;
use workflows_runtime::prelude::*;
use workflows_runtime::{CallKey, Durability, ExecutionState, SqliteOptions};

const EXECUTIONS: usize = 10_000;

/// Counts the bytes Rust code holds on the heap (SQLite's own allocations are not counted:
/// they show in the RSS).
struct Counting;

static HEAP: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn heap_bytes() -> i64 {
    HEAP.load(Ordering::Relaxed) as i64
}

#[step(async)]
async fn approval(ctx: &StepContext, n: u64) -> Result<Completion<u64>, StepError> {
    // The request would carry `ctx.completion_token()`; the test derives the tokens itself.
    let _ = (ctx, n);
    Ok(Completion::later())
}

#[workflow]
async fn wait_for_approval(wf: &Workflow, n: u64) -> Result<u64, WorkflowError> {
    let approved = approval(wf, n).await?;
    Ok(n + approved)
}

/// The process's resident memory, from `/proc/self/status`.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kb * 1024
}

/// Gives memory freed by the allocator back to the system, so that RSS shows what is held.
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

async fn count(engine: &Engine, state: ExecutionState) -> usize {
    let query = ExecutionQuery { states: vec![state], ..ExecutionQuery::default() };
    engine.executions(&query).await.unwrap().len()
}

async fn wait_until_count(engine: &Engine, state: ExecutionState, wanted: usize) {
    let deadline = Instant::now() + Duration::from_secs(600);
    while count(engine, state).await < wanted {
        assert!(Instant::now() < deadline, "timed out waiting for {wanted} {state} executions");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_suspended_executions_hold_no_task_and_under_512_heap_bytes_each_then_all_complete() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions::new().durability(Durability::Process);
    let engine = Engine::builder().sqlite_with(dir.path().join("waiting.db"), options).start().await.unwrap();
    // Warm up (allocator arenas, statement caches), then measure the idle baseline.
    for n in 0..100 {
        let id = format!("warm-{n}");
        wait_for_approval::start_with(&engine, n, RunOptions::new().id(&id)).await.unwrap();
        // Accepted once the step runs (a completion for a step that has not started is refused).
        loop {
            let token = engine.completion_token(&ExecutionId::from(id.as_str()), &CallKey::new("approval", 1));
            match engine.complete_step(&token, 0).await {
                Ok(()) => break,
                Err(workflows_runtime::DeliveryError::NotStarted { .. }) => tokio::task::yield_now().await,
                Err(error) => panic!("{error}"),
            }
        }
    }
    wait_until_count(&engine, ExecutionState::Completed, 100).await;
    trim();
    let before = rss_bytes();
    let heap_before = heap_bytes();

    let started = Instant::now();
    let mut starts = tokio::task::JoinSet::new();
    for n in 0..EXECUTIONS as u64 {
        let engine = engine.clone();
        starts.spawn(async move {
            // The handle is dropped: the result is read from the store below.
            wait_for_approval::start_with(&engine, n, RunOptions::new().id(format!("wait-{n}"))).await.map(drop)
        });
    }
    while let Some(started) = starts.join_next().await {
        started.unwrap().unwrap();
    }
    wait_until_count(&engine, ExecutionState::Waiting, EXECUTIONS).await;
    let suspended_in = started.elapsed();
    // Idle: every execution is suspended; the engine drives none.
    let deadline = Instant::now() + Duration::from_secs(60);
    while engine.running() > 0 {
        assert!(Instant::now() < deadline, "{} executions still have a task", engine.running());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(engine.running(), 0);
    let untrimmed = rss_bytes();
    trim();
    let idle = rss_bytes();
    let heap_idle = heap_bytes();
    let per_execution = idle.saturating_sub(before) as f64 / EXECUTIONS as f64;
    let heap_per_execution = (heap_idle - heap_before) as f64 / EXECUTIONS as f64;
    // The bound that makes suspension worth having: a suspended execution keeps no future and
    // no live state (those take kilobytes), only its entry in the engine's indexes. The Rust
    // heap is counted by the allocator above, so this holds on any machine; RSS (SQLite's page
    // cache included) is printed below, not asserted.
    assert!(
        heap_per_execution < 512.0,
        "{heap_per_execution:.0} bytes of Rust heap per suspended execution (bound: 512)"
    );

    let completing = Instant::now();
    let mut completions = tokio::task::JoinSet::new();
    for n in 0..EXECUTIONS as u64 {
        let engine = engine.clone();
        let token = engine.completion_token(&ExecutionId::from(format!("wait-{n}")), &CallKey::new("approval", 1));
        completions.spawn(async move { engine.complete_step(&token, 1_000_000).await });
    }
    while let Some(done) = completions.join_next().await {
        done.unwrap().unwrap();
    }
    let delivered_in = completing.elapsed();
    wait_until_count(&engine, ExecutionState::Completed, EXECUTIONS + 100).await;
    let finished_in = completing.elapsed();

    let query = ExecutionQuery { workflow: Some("wait_for_approval".into()), ..ExecutionQuery::default() };
    let records = engine.executions(&query).await.unwrap();
    let mut checked = 0;
    for record in records.iter().filter(|r| r.id.as_str().starts_with("wait-")) {
        let n: u64 = record.id.as_str()["wait-".len()..].parse().unwrap();
        assert_eq!(record.state, ExecutionState::Completed, "{}", record.id);
        let result: u64 = serde_json::from_str(record.result.as_ref().unwrap().get()).unwrap();
        assert_eq!(result, n + 1_000_000, "{}", record.id);
        checked += 1;
    }
    assert_eq!(checked, EXECUTIONS);

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "waiting executions: {EXECUTIONS}, all suspended {:.2} s after the first start",
        suspended_in.as_secs_f64()
    );
    println!(
        "RSS idle before: {:.1} MiB; with {EXECUTIONS} suspended: {:.1} MiB ({:.1} MiB before trimming the allocator)",
        mib(before),
        mib(idle),
        mib(untrimmed)
    );
    println!(
        "memory per waiting execution: {per_execution:.0} bytes of RSS (delta / {EXECUTIONS}, SQLite's page cache \
         included); {heap_per_execution:.0} bytes of Rust heap"
    );
    println!(
        "completions: {EXECUTIONS} delivered in {:.2} s ({:.0}/s); all finished in {:.2} s ({:.0} executions/s)",
        delivered_in.as_secs_f64(),
        EXECUTIONS as f64 / delivered_in.as_secs_f64(),
        finished_in.as_secs_f64(),
        EXECUTIONS as f64 / finished_in.as_secs_f64()
    );
}
