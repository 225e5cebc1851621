//! Deploying new code while executions are in flight, played in one process: the workflow's
//! body reads which deploy it is (`CODE`), and each deploy's engine names its build. Orders
//! started by v1 wait for an approval; v2 adds a fraud check without a patch and blocks them
//! (nothing compensated, no body run, its lease given up); v2 with the patch resumes them on the
//! old path and runs new orders on the new one; cancelling a blocked order compensates it once.
//! On memory, SQLite and (with `WORKFLOWS_TEST_POSTGRES`) PostgreSQL, one after the other: the
//! deploy is process-wide state.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{
    EngineBuilder, EventKind, ExecutionRecord, ExecutionState, ExportedExecution, MemoryStore, ReplayVerdict,
    replay_check,
};
use workflows_tests::{Log, eventually};

/// Which code the body has: 1 = v1, 2 = v2 without a patch, 3 = v2 with the patch, 4 = the
/// patch retired (`deprecate_patch`).
static CODE: AtomicU8 = AtomicU8::new(1);

#[step(compensate = up_unreserve)]
async fn up_reserve(ctx: &StepContext, order: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("reserve {order}"));
    Ok(order)
}

async fn up_unreserve(ctx: &StepContext, order: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("unreserve {order}"));
    Ok(())
}

#[step(compensate = up_refund)]
async fn up_charge(ctx: &StepContext, order: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("charge {order}"));
    Ok(order)
}

async fn up_refund(ctx: &StepContext, order: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("refund {order}"));
    Ok(())
}

#[step]
async fn up_fraud_check(ctx: &StepContext, order: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("fraud_check {order}"));
    Ok(())
}

#[step]
async fn up_ship(ctx: &StepContext, order: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("ship {order}"));
    Ok(format!("shipped {order}"))
}

#[workflow]
async fn up_order(wf: &Workflow, order: String) -> Result<String, WorkflowError> {
    up_reserve(wf, order.clone()).await?;
    match CODE.load(Ordering::SeqCst) {
        2 => up_fraud_check(wf, order.clone()).await?,
        3 if wf.patched("fraud-check") => up_fraud_check(wf, order.clone()).await?,
        4 => {
            wf.deprecate_patch("fraud-check").await;
            up_fraud_check(wf, order.clone()).await?;
        }
        _ => {}
    }
    up_charge(wf, order.clone()).await?;
    let _approved: bool = wf.wait_for_event("approval").await?;
    Ok(up_ship(wf, order).await?)
}

async fn state(engine: &Engine, id: &str) -> ExecutionRecord {
    engine.execution(&id.into()).await.unwrap().expect("the execution exists")
}

async fn until_state(engine: &Engine, id: &str, wanted: ExecutionState) -> ExecutionRecord {
    eventually(Duration::from_secs(60), || async {
        let record = state(engine, id).await;
        (record.state == wanted).then_some(record)
    })
    .await
}

/// The whole deploy on one store; `builder(build)` makes an engine of that build on it.
async fn deploy(builder: impl Fn(&str) -> EngineBuilder) {
    let log = Arc::new(Log::default());
    let start = |build: &str| builder(build).container(Container::new().with(log.clone())).start();

    // v1 takes orders up to the approval wait.
    CODE.store(1, Ordering::SeqCst);
    let v1 = start("v1").await.unwrap();
    for id in ["o1", "o2", "o4", "o5"] {
        up_order::start_with(&v1, id.to_owned(), RunOptions::new().id(id)).await.unwrap();
        until_state(&v1, id, ExecutionState::Waiting).await;
    }
    v1.shutdown().await;

    // Before deploying, the replay check says what v2 without the patch would block (and
    // with it, nothing), running no step body.
    let exported: Vec<ExportedExecution> = {
        let mut all = Vec::new();
        for id in ["o1", "o2", "o4", "o5"] {
            all.push(v1.export(&id.into()).await.unwrap().expect("exported"));
        }
        all
    };
    let ran = log.lines().len();
    for (code, diverges) in [(1, false), (2, true), (3, false)] {
        CODE.store(code, Ordering::SeqCst);
        for report in replay_check(exported.clone()).await.unwrap() {
            match (&report.verdict, diverges) {
                (ReplayVerdict::Diverges(failure), true) => {
                    assert!(failure.message.contains("call #1"), "{}", failure.message);
                    assert_eq!(failure.key.as_deref(), Some("up_fraud_check#1"));
                }
                (ReplayVerdict::Replays, false) => {}
                (verdict, _) => panic!("code {code}, {}: {verdict:?}", report.execution),
            }
        }
    }
    assert_eq!(log.lines().len(), ran, "the replay check ran no step body: {:?}", log.lines());

    // v2 without the patch: the approvals wake them, the replay diverges, they are blocked.
    CODE.store(2, Ordering::SeqCst);
    let v2 = start("v2").await.unwrap();
    let mut events = v2.subscribe();
    for id in ["o1", "o2", "o4", "o5"] {
        v2.send_event(&id.into(), "approval", true).await.unwrap();
    }
    for id in ["o1", "o2", "o4", "o5"] {
        let record = until_state(&v2, id, ExecutionState::Blocked).await;
        let failure = record.failure.expect("a blocked execution says why");
        assert!(
            failure.message.contains("`up_fraud_check#1` now, but the journal recorded `up_charge#1`"),
            "{}",
            failure.message
        );
        assert_eq!(failure.key.as_deref(), Some("up_fraud_check#1"));
        assert_eq!(record.blocked_by, ["v2"]);
        assert_eq!((record.owner, record.lease_until), (None, None), "its lease is given up");
        let result = up_order::start_with(&v2, id.to_owned(), RunOptions::new().id(id)).await.unwrap().await;
        assert!(matches!(result, Err(RunError::Blocked { .. })), "a caller hears that it is blocked: {result:?}");
    }
    let blocked = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let event = events.recv().await.unwrap();
            if matches!(event.kind, EventKind::Blocked { .. }) {
                return event;
            }
        }
    })
    .await
    .expect("the stream says it blocked");
    assert!(["o1", "o2", "o4", "o5"].contains(&blocked.execution.as_str()), "{blocked:?}");
    let lines = log.lines();
    assert!(
        !lines.iter().any(|l| l.starts_with("fraud_check") || l.starts_with("ship") || l.starts_with("un")),
        "no body ran and nothing was compensated: {lines:?}"
    );

    // An operator cancels o4: compensated once each, in reverse, without its body.
    v2.cancel(&"o4".into()).await.unwrap();
    until_state(&v2, "o4", ExecutionState::Cancelled).await;
    let undone: Vec<String> = log.lines().into_iter().filter(|l| l.ends_with(" o4")).collect();
    assert_eq!(undone, ["reserve o4", "charge o4", "refund o4", "unreserve o4"]);
    // And compensates o5 by hand: the same, ending `compensated`.
    v2.compensate(&"o5".into()).await.unwrap();
    assert_eq!(state(&v2, "o5").await.state, ExecutionState::Compensated);
    let undone: Vec<String> = log.lines().into_iter().filter(|l| l.ends_with(" o5")).collect();
    assert_eq!(undone, ["reserve o5", "charge o5", "refund o5", "unreserve o5"]);
    let again = v2.compensate(&"o5".into()).await.unwrap_err();
    assert!(again.to_string().contains("it was compensated already: it is compensated"), "{again}");
    v2.shutdown().await;

    // v2 with the patch: takes the blocked orders at start and resumes them on the old path.
    CODE.store(3, Ordering::SeqCst);
    let v3 = start("v3").await.unwrap();
    for id in ["o1", "o2"] {
        let record = until_state(&v3, id, ExecutionState::Completed).await;
        assert_eq!(record.result.map(|r| r.get().to_owned()), Some(format!("\"shipped {id}\"")));
    }
    // A new order takes the new path.
    let o3 = up_order::start_with(&v3, "o3".to_owned(), RunOptions::new().id("o3")).await.unwrap();
    until_state(&v3, "o3", ExecutionState::Waiting).await;
    v3.send_event(&"o3".into(), "approval", true).await.unwrap();
    assert_eq!(o3.await.unwrap(), "shipped o3");
    // A journal that took the patch: the patched code replays it, code without the check
    // (v1) would block it, naming the patch.
    let o3 = v3.export(&"o3".into()).await.unwrap().unwrap();
    let ran = log.lines().len();
    assert!(matches!(replay_check([o3.clone()]).await.unwrap()[0].verdict, ReplayVerdict::Replays));
    CODE.store(1, Ordering::SeqCst);
    let report = replay_check([o3.clone()]).await.unwrap().remove(0);
    let ReplayVerdict::Diverges(failure) = report.verdict else { panic!("{report:?}") };
    assert!(failure.message.contains("took patch `fraud-check` at call #1"), "{}", failure.message);
    // The patch retired: what took it replays; what went past it before it existed would be
    // blocked, with an error that names the execution and the patch.
    CODE.store(4, Ordering::SeqCst);
    assert!(matches!(replay_check([o3]).await.unwrap()[0].verdict, ReplayVerdict::Replays));
    let report = replay_check([exported[0].clone()]).await.unwrap().remove(0);
    let ReplayVerdict::Diverges(failure) = report.verdict else { panic!("{report:?}") };
    assert!(failure.message.contains("went past patch `fraud-check` before the patch existed"), "{}", failure.message);
    assert!(failure.message.contains("execution o1"), "{}", failure.message);
    CODE.store(3, Ordering::SeqCst);
    assert_eq!(log.lines().len(), ran, "the replay check ran no step body");
    for id in ["o1", "o2", "o3"] {
        for step in ["reserve", "charge", "ship"] {
            assert_eq!(log.count(&format!("{step} {id}")), 1, "{step} {id}: {:?}", log.lines());
        }
    }
    assert_eq!(log.count("fraud_check o1") + log.count("fraud_check o2"), 0, "{:?}", log.lines());
    assert_eq!(log.count("fraud_check o3"), 1, "{:?}", log.lines());

    // A completed order reverted by an operator: each compensation once, in reverse.
    v3.compensate(&"o1".into()).await.unwrap();
    assert_eq!(state(&v3, "o1").await.state, ExecutionState::Compensated);
    let undone: Vec<String> =
        log.lines().into_iter().filter(|l| l.ends_with(" o1") && !l.starts_with("reserve")).collect();
    assert_eq!(undone, ["charge o1", "ship o1", "refund o1", "unreserve o1"]);
    let running = up_order::start_with(&v3, "o6".to_owned(), RunOptions::new().id("o6")).await.unwrap();
    until_state(&v3, "o6", ExecutionState::Waiting).await;
    let refused = v3.compensate(running.id()).await.unwrap_err();
    assert!(refused.to_string().contains("cancel it instead"), "{refused}");
    v3.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_blocks_what_it_cannot_replay_and_a_patched_one_resumes_it() {
    // Memory: one store shared by the deploys' engines.
    let store = Arc::new(MemoryStore::new());
    deploy(|build| Engine::builder().store(store.clone()).build_id(build)).await;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgrades.db");
    deploy(|build| Engine::builder().sqlite(&path).build_id(build)).await;

    if let Some(schema) = workflows_tests::postgres::TestSchema::new().await {
        deploy(|build| Engine::builder().postgres(schema.url()).build_id(build)).await;
    }
}

/// Whether `op_flaky` succeeds.
#[derive(Default)]
struct Service(std::sync::atomic::AtomicBool);

#[step(compensate = op_unreserve)]
async fn op_reserve(ctx: &StepContext, order: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("reserve {order}"));
    Ok(order)
}

async fn op_unreserve(ctx: &StepContext, order: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("unreserve {order}"));
    Ok(())
}

#[step(retry(max_attempts = 2, backoff = "1ms"), on_failure = "pause")]
async fn op_flaky(ctx: &StepContext, order: String) -> Result<String, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(format!("flaky {order} attempt {}", ctx.attempt()));
    if !ctx.resolve::<Arc<Service>>()?.0.load(Ordering::SeqCst) {
        return Err(StepError::new("the carrier is down"));
    }
    Ok(order)
}

#[workflow]
async fn op_order(wf: &Workflow, order: String) -> Result<String, WorkflowError> {
    op_reserve(wf, order.clone()).await?;
    let shipped = op_flaky(wf, order).await?;
    Ok(format!("shipped {shipped}"))
}

async fn pause_and_retry(builder: EngineBuilder) {
    let (log, service) = (Arc::new(Log::default()), Arc::new(Service::default()));
    let engine = builder.container(Container::new().with(log.clone()).with(service.clone())).start().await.unwrap();
    let error = op_order::run_with(&engine, "p1".to_owned(), RunOptions::new().id("p1")).await.unwrap_err();
    assert!(matches!(error, RunError::Paused { .. }), "{error}");
    let record = state(&engine, "p1").await;
    assert_eq!((record.state, record.owner.clone()), (ExecutionState::Paused, None));
    assert_eq!(record.failure.and_then(|f| f.key).as_deref(), Some("op_flaky#1"));
    assert_eq!(log.lines(), ["reserve p1", "flaky p1 attempt 1", "flaky p1 attempt 2"], "nothing compensated");

    // A key that did not fail, an execution that is not paused: refused, nothing changes.
    let wrong = engine.retry_step(&"p1".into(), "op_reserve#1").await.unwrap_err();
    assert!(wrong.to_string().contains("the steps that did: op_flaky#1"), "{wrong}");

    // Retried while the carrier is still down: a fresh budget of two attempts, then paused again.
    engine.retry_step(&"p1".into(), "op_flaky#1").await.unwrap();
    until_state(&engine, "p1", ExecutionState::Paused).await;
    let attempts = |log: &Log| log.lines().iter().filter(|l| l.starts_with("flaky p1")).count();
    eventually(Duration::from_secs(30), || async { (attempts(&log) == 4).then_some(()) }).await;
    // Back up: the retry completes it, with the step's other attempts' history kept.
    service.0.store(true, Ordering::SeqCst);
    engine.retry_step(&"p1".into(), "op_flaky#1").await.unwrap();
    let done = until_state(&engine, "p1", ExecutionState::Completed).await;
    assert_eq!(done.result.map(|r| r.get().to_owned()).as_deref(), Some("\"shipped p1\""));
    assert_eq!(log.lines().last().map(String::as_str), Some("flaky p1 attempt 5"));
    assert_eq!(log.count("unreserve p1"), 0);
    let refused = engine.retry_step(&"p1".into(), "op_flaky#1").await.unwrap_err();
    assert!(refused.to_string().contains("only a paused execution"), "{refused}");

    // Given up on: compensated once.
    service.0.store(false, Ordering::SeqCst);
    op_order::run_with(&engine, "p2".to_owned(), RunOptions::new().id("p2")).await.unwrap_err();
    engine.compensate(&"p2".into()).await.unwrap();
    assert_eq!(state(&engine, "p2").await.state, ExecutionState::Compensated);
    assert_eq!(log.count("unreserve p2"), 1);
    engine.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_pauses_is_retried_with_a_fresh_budget_or_compensated() {
    pause_and_retry(Engine::builder().memory()).await;
    let dir = tempfile::tempdir().unwrap();
    pause_and_retry(Engine::builder().sqlite(dir.path().join("pause.db"))).await;
    if let Some(schema) = workflows_tests::postgres::TestSchema::new().await {
        pause_and_retry(Engine::builder().postgres(schema.url())).await;
    }
}
