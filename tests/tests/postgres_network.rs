//! Lost connections between the engines and PostgreSQL (`WORKFLOWS_TEST_POSTGRES`), made by a
//! TCP proxy inside the test: every connection cut mid-run, several times; and an engine
//! black-holed (no byte through, nothing closed) for longer than its lease while another
//! engine, connected directly, takes its executions over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use workflows_runtime::prelude::*;
use workflows_runtime::{EngineBuilder, ExecutionQuery, ExecutionState, PostgresOptions};
use workflows_tests::eventually;
use workflows_tests::postgres::TestSchema;
use workflows_tests::proxy::Proxy;

/// Who ran which step body, and when (by the test's clock).
#[derive(Default)]
struct Runs(std::sync::Mutex<Vec<(String, String, u32, Instant)>>);

impl Runs {
    fn push(&self, engine: &str, execution: &str, step: u32) {
        self.0.lock().unwrap().push((engine.to_owned(), execution.to_owned(), step, Instant::now()));
    }

    fn all(&self) -> Vec<(String, String, u32, Instant)> {
        self.0.lock().unwrap().clone()
    }
}

/// Which engine a container belongs to.
struct Name(&'static str);

#[step]
async fn slow_step(ctx: &StepContext, execution: String, step: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Runs>>()?.push(ctx.resolve::<Arc<Name>>()?.0, &execution, step);
    tokio::time::sleep(Duration::from_millis(60)).await;
    Ok(step)
}

#[workflow]
async fn six_steps(wf: &Workflow, execution: String) -> Result<u32, WorkflowError> {
    let mut sum = 0;
    for step in 1..=6 {
        sum += slow_step(wf, execution.clone(), step).await?;
    }
    Ok(sum)
}

/// The test server's address, and its URL with the proxy's address in its place.
fn through(schema: &TestSchema, proxy: &Proxy) -> String {
    let url = schema.url();
    let server = server_address(&url);
    url.replacen(&server.to_string(), &proxy.address().to_string(), 1)
}

fn server_address(url: &str) -> SocketAddr {
    let config: tokio_postgres::Config = url.split('?').next().unwrap().parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        other => panic!("the test server must be reached over TCP, not {other:?}"),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}").parse().unwrap_or_else(|_| panic!("{host}:{port} is not an IP address and port"))
}

fn engine(url: &str, name: &'static str, runs: &Arc<Runs>, lease: Duration) -> EngineBuilder {
    Engine::builder()
        .postgres_with(url, PostgresOptions::new().pool_size(3).connect_timeout(Duration::from_secs(2)))
        .container(Container::new().with(runs.clone()).with(Arc::new(Name(name))))
        .lease_duration(lease)
}

/// Every step of every execution completed once in its journal.
async fn journals_complete(engine: &Engine, ids: &[String]) {
    for id in ids {
        let journal = engine.journal(&id.as_str().into()).await.unwrap();
        let completed = journal.iter().filter(|e| e.event.kind() == "step_completed").count();
        assert_eq!(completed, 6, "{id}: {journal:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_mid_run_lose_nothing_and_complete_every_step_once() {
    let Some(schema) = TestSchema::new().await else { return };
    let proxy = Proxy::start(server_address(&schema.url())).await;
    let runs = Arc::new(Runs::default());
    let engine = engine(&through(&schema, &proxy), "cut", &runs, Duration::from_secs(2)).start().await.unwrap();
    let ids: Vec<String> = (0..30).map(|n| format!("cut-{n}")).collect();
    for id in &ids {
        six_steps::start_with(&engine, id.clone(), RunOptions::new().id(id)).await.unwrap();
    }
    let connections = proxy.accepted();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        proxy.cut();
    }
    // Executions whose writes were cut are given up, and taken over again once the store
    // answers (their leases end: a couple of seconds).
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    eventually(Duration::from_secs(60), || async {
        let done = engine.executions(&completed).await.ok()?;
        (done.len() == ids.len()).then_some(())
    })
    .await;
    assert!(proxy.accepted() > connections, "the engine connected again");
    journals_complete(&engine, &ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_cut_off_longer_than_its_lease_stops_and_another_takes_over() {
    let Some(schema) = TestSchema::new().await else { return };
    let proxy = Proxy::start(server_address(&schema.url())).await;
    let runs = Arc::new(Runs::default());
    let lease = Duration::from_secs(1);
    let cut_off = engine(&through(&schema, &proxy), "cut-off", &runs, lease).start().await.unwrap();
    let ids: Vec<String> = (0..5).map(|n| format!("held-{n}")).collect();
    for id in &ids {
        six_steps::start_with(&cut_off, id.clone(), RunOptions::new().id(id)).await.unwrap();
    }
    // Some steps ran on the engine that is about to be cut off.
    eventually(Duration::from_secs(20), || async { (runs.all().len() >= 10).then_some(()) }).await;
    proxy.black_hole(true);
    let hole = Instant::now();
    let other = engine(&schema.url(), "other", &runs, lease).start().await.unwrap();
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    eventually(Duration::from_secs(60), || async {
        let done = other.executions(&completed).await.ok()?;
        (done.len() == ids.len()).then_some(())
    })
    .await;
    // Held for longer than the lease in all, then the bytes it held go through.
    tokio::time::sleep((lease * 3).saturating_sub(hole.elapsed())).await;
    proxy.black_hole(false);
    tokio::time::sleep(lease).await;

    let all = runs.all();
    // The cut-off engine counts on its lease for four fifths of it from its last renewal,
    // which began before the hole: it started no body after that.
    let provable = hole + lease * 4 / 5;
    let late: Vec<_> = all.iter().filter(|(engine, _, _, at)| engine == "cut-off" && *at >= provable).collect();
    assert!(late.is_empty(), "bodies started by the cut-off engine after its lease ran out: {late:?}");
    assert!(all.iter().any(|(engine, ..)| engine == "other"), "the other engine took over");
    // What the cut-off engine wrote once its bytes went through was refused: each step
    // completed once, the executions stay completed.
    journals_complete(&other, &ids).await;
    for id in &ids {
        let record = other.execution(&id.as_str().into()).await.unwrap().unwrap();
        assert_eq!((record.state, record.result.unwrap().get()), (ExecutionState::Completed, "21"), "{id}");
    }
}

/// Each execution's steps ran once each: no step body ran twice.
fn each_step_ran_once(runs: &Runs, ids: &[String]) {
    let all = runs.all();
    for id in ids {
        let mut steps: Vec<u32> =
            all.iter().filter(|(_, execution, ..)| execution == id).map(|(_, _, s, _)| *s).collect();
        steps.sort();
        assert_eq!(steps, (1..=6).collect::<Vec<_>>(), "{id}: the step bodies that ran");
    }
}

/// A creation the server committed whose reply never reached the engine: the engine does not
/// take it for failed (its row would stay `running`, held by a live engine that never drives
/// it). It writes the creation again, recognises its own first write, and runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_creation_whose_reply_was_lost_after_the_commit_runs_and_answers() {
    let Some(schema) = TestSchema::new().await else { return };
    let proxy = Proxy::start(server_address(&schema.url())).await;
    let runs = Arc::new(Runs::default());
    let engine = engine(&through(&schema, &proxy), "lost", &runs, Duration::from_secs(2)).start().await.unwrap();
    let id = "lost-creation".to_owned();
    proxy.lose_replies(&id, 1);
    let run = six_steps::run_with(&engine, id.clone(), RunOptions::new().id(&id));
    let result = tokio::time::timeout(Duration::from_secs(60), run).await.expect("the run ends");
    assert_eq!(result.unwrap(), 21);
    assert_eq!(proxy.lost(), 1, "the creation's reply was lost");
    journals_complete(&engine, std::slice::from_ref(&id)).await;
    each_step_ran_once(&runs, std::slice::from_ref(&id));
}

/// A claim the server committed whose reply never reached the worker: what it took is read
/// back and driven, not left held (and renewed) by a worker that does not drive it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_claimed_by_a_commit_whose_reply_was_lost_still_run() {
    let Some(schema) = TestSchema::new().await else { return };
    let proxy = Proxy::start(server_address(&schema.url())).await;
    let runs = Arc::new(Runs::default());
    let lease = Duration::from_secs(2);
    let client = engine(&schema.url(), "client", &runs, lease).client_only().start().await.unwrap();
    let ids: Vec<String> = (0..5).map(|n| format!("claimed-{n}")).collect();
    for id in &ids {
        six_steps::start_with(&client, id.clone(), RunOptions::new().id(id)).await.unwrap();
    }
    // A claim names the workflows it can run among its parameters: the worker's first claim
    // (its recovery at start) takes all five, and its commit goes unanswered.
    proxy.lose_commit_replies("six_steps", 1);
    let worker = engine(&through(&schema, &proxy), "worker", &runs, lease).start().await.unwrap();
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    eventually(Duration::from_secs(60), || async {
        let done = client.executions(&completed).await.ok()?;
        (done.len() == ids.len()).then_some(())
    })
    .await;
    assert_eq!(proxy.lost(), 1, "a claim's reply was lost");
    journals_complete(&client, &ids).await;
    each_step_ran_once(&runs, &ids);
    drop(worker);
}

/// Journal writes committed by the server whose replies were lost, three batches in a row
/// while thirty executions run: the executions whose writes went unanswered are given up and
/// taken over again (their leases end: this engine renews only what it drives), and every step
/// completes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journal_writes_whose_replies_were_lost_are_resumed_from_what_landed() {
    let Some(schema) = TestSchema::new().await else { return };
    let proxy = Proxy::start(server_address(&schema.url())).await;
    let runs = Arc::new(Runs::default());
    let engine = engine(&through(&schema, &proxy), "lossy", &runs, Duration::from_secs(2)).start().await.unwrap();
    let ids: Vec<String> = (0..30).map(|n| format!("lossy-{n}")).collect();
    for id in &ids {
        six_steps::start_with(&engine, id.clone(), RunOptions::new().id(id)).await.unwrap();
    }
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        proxy.lose_replies("COMMIT", 1);
    }
    let completed = ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() };
    eventually(Duration::from_secs(90), || async {
        let done = engine.executions(&completed).await.ok()?;
        (done.len() == ids.len()).then_some(())
    })
    .await;
    assert!(proxy.lost() >= 1, "replies were lost");
    journals_complete(&engine, &ids).await;
}

/// A read through a network that lost every packet fails within the operation timeout, rather
/// than hanging the caller (and a worker's claims) until the connection is found dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_the_server_never_answers_fails_within_the_operation_timeout() {
    let Some(schema) = TestSchema::new().await else { return };
    let proxy = Proxy::start(server_address(&schema.url())).await;
    let runs = Arc::new(Runs::default());
    let options = PostgresOptions::new().pool_size(3).operation_timeout(Duration::from_secs(1));
    let client = Engine::builder()
        .postgres_with(through(&schema, &proxy), options)
        .container(Container::new().with(runs.clone()).with(Arc::new(Name("client"))))
        .client_only()
        .start()
        .await
        .unwrap();
    assert!(client.execution(&"nobody".into()).await.unwrap().is_none());
    proxy.black_hole(true);
    let began = Instant::now();
    let read = tokio::time::timeout(Duration::from_secs(60), client.execution(&"nobody".into())).await;
    let error = read.expect("the read gave up by itself").unwrap_err();
    assert!(error.to_string().contains("did not answer within 1s"), "{error}");
    assert!(began.elapsed() < Duration::from_secs(30), "{:?}", began.elapsed());
    proxy.black_hole(false);
}
