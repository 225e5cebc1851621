//! What the engine logs when something needs an operator, seen by a `tracing` subscriber: a
//! client-only engine whose execution no worker takes says so once, with how many engines hold
//! executions on its store; a Redis source that cannot connect names the URL (without its
//! password) and waits longer after each failure.
//!
//! Alone in its test binary: the subscriber is the process's global one.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_tests::eventually;

/// The events logged at `warn` or above: their message and fields, as text.
#[derive(Default)]
struct Logged(Mutex<Vec<String>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

struct Capture(Arc<Logged>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
        *metadata.level() <= tracing::Level::WARN
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = Fields(String::new());
        event.record(&mut fields);
        self.0.0.lock().unwrap().push(fields.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

fn logged() -> &'static Arc<Logged> {
    static LOGGED: OnceLock<Arc<Logged>> = OnceLock::new();
    LOGGED.get_or_init(|| {
        let logged = Arc::new(Logged::default());
        tracing::subscriber::set_global_default(Capture(logged.clone())).expect("the only subscriber");
        logged
    })
}

fn lines_with(text: &str) -> Vec<String> {
    logged().0.lock().unwrap().iter().filter(|line| line.contains(text)).cloned().collect()
}

#[step]
async fn greet(name: String) -> Result<String, StepError> {
    Ok(format!("hello {name}"))
}

#[workflow]
async fn lonely(wf: &Workflow, name: String) -> Result<String, WorkflowError> {
    Ok(greet(wf, name).await?)
}

/// A client-only engine's execution that no worker takes: after a lease, one warning naming
/// it and the number of engines holding executions on the store (none); a worker then runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_only_engine_says_when_no_worker_takes_its_execution() {
    logged();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lonely.db");
    let client = Engine::builder().sqlite(&path).client_only().lease_duration(Duration::from_millis(500));
    let client = client.start().await.unwrap();
    let handle = lonely::start_with(&client, "ann".into(), RunOptions::new().id("lonely-1")).await.unwrap();
    let waiting = tokio::spawn(handle.result());
    let warned = eventually(Duration::from_secs(30), || async {
        let lines = lines_with("lonely-1");
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(warned[0].contains("no worker has taken this execution"), "{warned:?}");
    assert!(warned[0].contains("workers_holding_executions=0"), "{warned:?}");
    let _worker = Engine::builder().sqlite(&path).start().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap(), "hello ann");
    assert_eq!(lines_with("lonely-1").len(), 1, "said once");
}

/// A Redis source whose server cannot be reached names its URL, without the password, and
/// waits longer after each failure in a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_source_that_cannot_connect_names_its_url_and_backs_off() {
    logged();
    // Nothing listens on port 1.
    let source = workflows_runtime::RedisSource::new("redis://app:secret@127.0.0.1:1", "orders", "workers");
    let engine = Engine::builder().memory().source(source).start().await.unwrap();
    let failures = eventually(Duration::from_secs(30), || async {
        let lines = lines_with("Redis event source failed");
        (lines.len() >= 2).then_some(lines)
    })
    .await;
    engine.shutdown().await;
    assert!(failures.iter().all(|l| l.contains("url=redis://app:***@127.0.0.1:1")), "{failures:?}");
    assert!(failures.iter().all(|l| !l.contains("secret")), "{failures:?}");
    assert!(failures[0].contains("retry_in_s=1") && failures[1].contains("retry_in_s=2"), "{failures:?}");
}

/// A worker engine that starts on a store holding a schedule no workflow of its program has
/// (removed or renamed) warns, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_warns_of_a_stored_schedule_it_has_no_workflow_for() {
    logged();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.db");
    drop(Engine::builder().sqlite(&path).run_schedules(false).start().await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute("INSERT INTO schedules (name, since, handled, paused) VALUES ('removed_report', 1, 2, 0)", [])
        .unwrap();
    let _engine = Engine::builder().sqlite(&path).start().await.unwrap();
    let warned = eventually(Duration::from_secs(30), || async {
        let lines = lines_with("removed_report");
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert!(warned[0].contains("has no workflow in this program"), "{warned:?}");
}

/// Which code `drifting` has: a deploy that adds a step before `tally`.
static DRIFTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[step]
async fn tally(n: u32) -> Result<u32, StepError> {
    Ok(n)
}

#[step]
async fn audit(n: u32) -> Result<u32, StepError> {
    Ok(n)
}

#[workflow]
async fn drifting(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    if DRIFTED.load(std::sync::atomic::Ordering::SeqCst) {
        audit(wf, n).await?;
    }
    let total = tally(wf, n).await?;
    let _go: bool = wf.wait_for_event("go").await?;
    Ok(total)
}

/// A worker that starts on a store with blocked executions says so once, with their counts per
/// workflow and version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_counts_the_blocked_executions_at_start() {
    logged();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drift.db");
    let before = Engine::builder().sqlite(&path).build_id("before").start().await.unwrap();
    for id in ["d-1", "d-2"] {
        drifting::start_with(&before, 1, RunOptions::new().id(id)).await.unwrap();
    }
    let waiting = |engine: Engine| async move {
        let query = workflows_runtime::ExecutionQuery {
            states: vec![workflows_runtime::ExecutionState::Waiting],
            ..Default::default()
        };
        engine.executions(&query).await.unwrap().len()
    };
    eventually(Duration::from_secs(30), || {
        let engine = before.clone();
        async move { (waiting(engine).await == 2).then_some(()) }
    })
    .await;
    before.shutdown().await;

    DRIFTED.store(true, std::sync::atomic::Ordering::SeqCst);
    let after = Engine::builder().sqlite(&path).build_id("after").start().await.unwrap();
    for id in ["d-1", "d-2"] {
        let result = drifting::run_with(&after, 1, RunOptions::new().id(id));
        after.send_event(&id.into(), "go", true).await.unwrap();
        assert!(matches!(result.await, Err(RunError::Blocked { .. })));
    }
    after.shutdown().await;

    // The same build starts again: it does not take them, and says how many there are.
    let again = Engine::builder().sqlite(&path).build_id("after").start().await.unwrap();
    let warned = eventually(Duration::from_secs(30), || async {
        let lines = lines_with("executions are blocked");
        (!lines.is_empty()).then_some(lines)
    })
    .await;
    assert!(warned[0].contains("2 executions are blocked (drifting v0: 2)"), "{warned:?}");
    again.shutdown().await;
}
