//! Events and the workflows that start on them (`#[workflow(on_event = "...")]`), through the
//! public API: every (event, subscriber) pair handled once to completion, under the id
//! `<workflow>@<event id>`, by one engine or by several racing on one store; an id emitted
//! twice is one event; a payload a subscriber cannot read is skipped for it alone.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{ExecutionQuery, ExecutionState, Timestamp};
use workflows_tests::eventually;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OrderPlaced {
    order: u32,
}

/// What the subscribers did, by (subscriber, order).
#[derive(Default)]
struct Handled(Mutex<BTreeMap<(String, u32), u32>>);

impl Handled {
    fn count(&self, who: &str, order: u32) {
        *self.0.lock().unwrap().entry((who.to_owned(), order)).or_default() += 1;
    }
}

#[step]
async fn send_confirmation(ctx: &StepContext, order: u32) -> Result<(), StepError> {
    ctx.resolve::<Arc<Handled>>()?.count("confirm", order);
    Ok(())
}

#[step]
async fn reserve_stock(ctx: &StepContext, order: u32) -> Result<(), StepError> {
    ctx.resolve::<Arc<Handled>>()?.count("reserve", order);
    Ok(())
}

#[workflow(on_event = "order.placed")]
async fn confirm_order(wf: &Workflow, event: Event<OrderPlaced>) -> Result<(), WorkflowError> {
    Ok(send_confirmation(wf, event.payload.order).await?)
}

#[workflow(on_event = "order.placed")]
async fn reserve_order(wf: &Workflow, event: Event<OrderPlaced>) -> Result<(), WorkflowError> {
    Ok(reserve_stock(wf, event.payload.order).await?)
}

async fn completed(engine: &Engine, workflow: &str) -> usize {
    let query = ExecutionQuery { workflow: Some(workflow.to_owned()), ..Default::default() };
    let runs = engine.executions(&query).await.unwrap();
    runs.iter().filter(|r| r.state == ExecutionState::Completed).count()
}

/// Waits until both subscribers completed `n` executions, then checks each order was handled
/// once by each.
async fn each_handled_once(engine: &Engine, handled: &Handled, n: u32) {
    eventually(Duration::from_secs(60), || async {
        let done = completed(engine, "confirm_order").await + completed(engine, "reserve_order").await;
        (done == 2 * n as usize).then_some(())
    })
    .await;
    let handled = handled.0.lock().unwrap();
    for order in 0..n {
        for who in ["confirm", "reserve"] {
            assert_eq!(handled.get(&(who.to_owned(), order)), Some(&1), "{who} of order {order}");
        }
    }
    assert_eq!(handled.len(), 2 * n as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_handles_every_event_once_under_a_derived_id() {
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder().memory().container(Container::new().with(handled.clone())).start().await.unwrap();
    let mut ids = Vec::new();
    for order in 0..200u32 {
        ids.push(engine.emit("order.placed", OrderPlaced { order }).await.unwrap());
    }
    // An event nobody subscribes to is dispatched to nobody.
    engine.emit("order.shipped", OrderPlaced { order: 1 }).await.unwrap();
    each_handled_once(&engine, &handled, 200).await;
    let record = engine.execution(&format!("confirm_order@{}", ids[7]).into()).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Completed, "under the id <workflow>@<event id>");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_emitted_twice_is_one_event_and_a_bad_payload_is_skipped() {
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder().memory().container(Container::new().with(handled.clone())).start().await.unwrap();
    assert!(engine.emit_with_id("order-1-placed", "order.placed", OrderPlaced { order: 0 }).await.unwrap());
    assert!(!engine.emit_with_id("order-1-placed", "order.placed", OrderPlaced { order: 0 }).await.unwrap());
    // Not an `OrderPlaced`: no subscriber can read it; the events after it still go through.
    engine.emit("order.placed", "not an order").await.unwrap();
    engine.emit("order.placed", OrderPlaced { order: 1 }).await.unwrap();
    each_handled_once(&engine, &handled, 2).await;
}

/// Three engines on one SQLite file dispatch the same events concurrently (a client-only
/// engine emits them): each (event, subscriber) pair runs once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engines_racing_to_dispatch_on_one_store_handle_each_event_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let handled = Arc::new(Handled::default());
    let build = || Engine::builder().sqlite(&path).container(Container::new().with(handled.clone()));
    let client = build().client_only().start().await.unwrap();
    let workers = [build().start().await.unwrap(), build().start().await.unwrap(), build().start().await.unwrap()];
    for order in 0..150u32 {
        client.emit("order.placed", OrderPlaced { order }).await.unwrap();
        if order % 10 == 0 {
            // Everyone at once, as processes woken together would.
            let passes = workers.iter().map(|w| w.dispatch_events());
            for pass in futures_util::future::join_all(passes).await {
                pass.unwrap();
            }
        }
    }
    each_handled_once(&workers[0], &handled, 150).await;
}

/// The attempts of `place_order`'s step, to fail the first of each order.
#[derive(Default)]
struct Attempts(Mutex<BTreeMap<u32, u32>>);

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Placing {
    order: u32,
    /// The order is declined after it was placed: the execution is compensated.
    declined: bool,
}

#[step(retry(max_attempts = 3, backoff = "1ms"))]
async fn record_order(ctx: &StepContext, placing: Placing) -> Result<u32, StepError> {
    // Published when the execution completes; dropped if it is compensated.
    ctx.emit("order.placed", OrderPlaced { order: placing.order })?;
    // Published with the step's completion, whatever comes after.
    ctx.emit_now("order.audit", OrderPlaced { order: placing.order })?;
    let attempts = ctx.resolve::<Arc<Attempts>>()?;
    let attempt = {
        let mut attempts = attempts.0.lock().unwrap();
        let n = attempts.entry(placing.order).or_default();
        *n += 1;
        *n
    };
    if attempt == 1 {
        // This attempt's events are dropped with it.
        return Err(StepError::new("the database blinked"));
    }
    Ok(placing.order)
}

#[step]
async fn charge(_ctx: &StepContext, placing: Placing) -> Result<(), StepError> {
    if placing.declined {
        return Err(StepError::permanent("card declined"));
    }
    Ok(())
}

#[workflow]
async fn place_order(wf: &Workflow, placing: Placing) -> Result<u32, WorkflowError> {
    let order = record_order(wf, placing.clone()).await?;
    charge(wf, placing).await?;
    Ok(order)
}

#[step]
async fn log_audit(ctx: &StepContext, order: u32) -> Result<(), StepError> {
    ctx.resolve::<Arc<Handled>>()?.count("audit", order);
    Ok(())
}

#[workflow(on_event = "order.audit")]
async fn audit_order(wf: &Workflow, event: Event<OrderPlaced>) -> Result<(), WorkflowError> {
    Ok(log_audit(wf, event.payload.order).await?)
}

/// Events from steps: recorded with the completion of the attempt that emitted them (a failed
/// attempt's are dropped), `emit` published once the execution completes and dropped if it is
/// compensated, `emit_now` published at once; each handled once.
#[tokio::test]
async fn events_from_steps_are_published_once_and_only_for_executions_that_complete() {
    let clock = workflows_runtime::testing::TestClock::start();
    let handled = Arc::new(Handled::default());
    let services = Container::new().with(handled.clone()).with(Arc::new(Attempts::default()));
    let engine = Engine::builder().memory().container(services).start().await.unwrap();
    for order in 0..20u32 {
        let placing = Placing { order, declined: order % 4 == 3 };
        let outcome = place_order::run(&engine, placing).await;
        assert_eq!(outcome.is_ok(), order % 4 != 3, "order {order}: {outcome:?}");
    }
    let placed: Vec<u32> = (0..20).filter(|o| o % 4 != 3).collect();
    eventually(Duration::from_secs(30), || async {
        let done = completed(&engine, "confirm_order").await
            + completed(&engine, "reserve_order").await
            + completed(&engine, "audit_order").await;
        (done == 2 * placed.len() + 20).then_some(())
    })
    .await;
    // A day of the test clock: a wrongly published event would have been dispatched.
    clock.advance(Duration::from_secs(24 * 3600)).await;
    let handled = handled.0.lock().unwrap();
    for order in 0..20u32 {
        let expected = if placed.contains(&order) { Some(&1) } else { None };
        assert_eq!(handled.get(&("confirm".to_owned(), order)), expected, "order.placed of order {order}");
        assert_eq!(handled.get(&("reserve".to_owned(), order)), expected, "order.placed of order {order}");
        assert_eq!(handled.get(&("audit".to_owned(), order)), Some(&1), "order.audit of order {order}");
    }
}

/// On PostgreSQL, an event emitted inside the application's own transaction exists if and only
/// if that transaction commits (a transactional outbox).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_emitted_in_the_application_s_transaction_exists_only_if_it_commits() {
    let Some(schema) = workflows_tests::postgres::TestSchema::new().await else { return };
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder()
        .postgres_with(schema.url(), workflows_runtime::PostgresOptions::new().pool_size(3))
        .container(Container::new().with(handled.clone()))
        .start()
        .await
        .unwrap();
    let mut client = schema.connect().await;
    let rolled_back = client.transaction().await.unwrap();
    engine.emit_in_transaction(&rolled_back, "order.placed", OrderPlaced { order: 0 }).await.unwrap();
    rolled_back.rollback().await.unwrap();
    let committed = client.transaction().await.unwrap();
    engine.emit_in_transaction(&committed, "order.placed", OrderPlaced { order: 1 }).await.unwrap();
    committed.commit().await.unwrap();
    eventually(Duration::from_secs(30), || async {
        let handled = handled.0.lock().unwrap();
        (handled.get(&("confirm".to_owned(), 1)) == Some(&1) && handled.get(&("reserve".to_owned(), 1)) == Some(&1))
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = handled.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "only the committed event: {seen:?}");
    engine.shutdown().await;
}

#[step]
async fn record_and_emit(ctx: &StepContext, order: u32) -> Result<u32, StepError> {
    ctx.emit("order.placed", OrderPlaced { order })?;
    Ok(order)
}

#[step]
async fn wait_for_gate(ctx: &StepContext, _: ()) -> Result<(), StepError> {
    ctx.resolve::<Arc<workflows_tests::Gate>>()?.pass().await;
    Ok(())
}

#[workflow]
async fn emit_then_wait(wf: &Workflow, order: u32) -> Result<u32, WorkflowError> {
    let order = record_and_emit(wf, order).await?;
    wait_for_gate(wf, ()).await?;
    Ok(order)
}

/// A step that emitted, replayed on another engine after the first one stopped: the event is
/// published once, when the execution completes there.
#[tokio::test]
async fn an_event_from_a_replayed_step_is_published_once() {
    let clock = workflows_runtime::testing::TestClock::start();
    let store = Arc::new(workflows_runtime::MemoryStore::new());
    let handled = Arc::new(Handled::default());
    let closed = Arc::new(workflows_tests::Gate::default());
    let services = |gate: &Arc<workflows_tests::Gate>| Container::new().with(handled.clone()).with(gate.clone());
    let first = Engine::builder().store(store.clone()).container(services(&closed)).start().await.unwrap();
    let run = emit_then_wait::start_with(&first, 100, RunOptions::new().id("replayed")).await.unwrap();
    eventually(Duration::from_secs(10), || async { (closed.arrived() == 1).then_some(()) }).await;
    first.shutdown().await;
    drop(run);
    assert!(handled.0.lock().unwrap().is_empty(), "held while the execution runs");

    let open = Arc::new(workflows_tests::Gate::opened());
    let second = Engine::builder().store(store).container(services(&open)).start().await.unwrap();
    eventually(Duration::from_secs(30), || async {
        let handled = handled.0.lock().unwrap();
        (handled.get(&("confirm".to_owned(), 100)).is_some() && handled.get(&("reserve".to_owned(), 100)).is_some())
            .then_some(())
    })
    .await;
    clock.advance(Duration::from_secs(24 * 3600)).await;
    let seen = handled.0.lock().unwrap().clone();
    assert_eq!(seen.get(&("confirm".to_owned(), 100)), Some(&1), "{seen:?}");
    assert_eq!(seen.get(&("reserve".to_owned(), 100)), Some(&1), "{seen:?}");
    let record = second.execution(&"replayed".into()).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Completed);
    second.shutdown().await;
}

/// A child's step that emits an event held until the execution completes.
#[step]
async fn reserve_items(ctx: &StepContext, order: u32) -> Result<u32, StepError> {
    ctx.emit("stock.reserved", OrderPlaced { order })?;
    Ok(order)
}

#[workflow]
async fn reserve_child(wf: &Workflow, order: u32) -> Result<u32, WorkflowError> {
    Ok(reserve_items(wf, order).await?)
}

#[step]
async fn take_payment(placing: Placing) -> Result<(), StepError> {
    if placing.declined {
        return Err(StepError::permanent("card declined"));
    }
    Ok(())
}

/// The child completes (its event is emitted), then the parent's payment is declined: the
/// parent, and its child with it, is rolled back.
#[workflow]
async fn checkout_with_child(wf: &Workflow, placing: Placing) -> Result<u32, WorkflowError> {
    let order = reserve_child(wf, placing.order).await?;
    take_payment(wf, placing).await?;
    Ok(order)
}

#[step]
async fn notify_warehouse(ctx: &StepContext, order: u32) -> Result<(), StepError> {
    ctx.resolve::<Arc<Handled>>()?.count("warehouse", order);
    Ok(())
}

#[workflow(on_event = "stock.reserved")]
async fn on_stock_reserved(wf: &Workflow, event: Event<OrderPlaced>) -> Result<(), WorkflowError> {
    Ok(notify_warehouse(wf, event.payload.order).await?)
}

/// Events a child's steps emit belong to the top-level execution: a child that completes hands
/// them to its parent, and they are published when the parent completes and dropped when it
/// is rolled back (the child is compensated with it) — never delivered for an order that was
/// undone. The events that were dropped are gone from the store: nothing can deliver them
/// later.
async fn a_child_s_events_are_published_only_when_its_parent_completes(engine: Engine, handled: Arc<Handled>) {
    for order in 0..12u32 {
        let placing = Placing { order, declined: order % 3 == 2 };
        let outcome = checkout_with_child::run(&engine, placing).await;
        assert_eq!(outcome.is_ok(), order % 3 != 2, "order {order}: {outcome:?}");
    }
    let placed: Vec<u32> = (0..12).filter(|o| o % 3 != 2).collect();
    eventually(Duration::from_secs(30), || async {
        (completed(&engine, "on_stock_reserved").await == placed.len()).then_some(())
    })
    .await;
    let handled = handled.0.lock().unwrap();
    for order in 0..12u32 {
        let expected = if placed.contains(&order) { Some(&1) } else { None };
        assert_eq!(handled.get(&("warehouse".to_owned(), order)), expected, "stock.reserved of order {order}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_s_events_follow_its_parent_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let handled = Arc::new(Handled::default());
    let engine =
        Engine::builder().sqlite(&path).container(Container::new().with(handled.clone())).start().await.unwrap();
    a_child_s_events_are_published_only_when_its_parent_completes(engine.clone(), handled).await;
    engine.shutdown().await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    assert_eq!(count("SELECT COUNT(*) FROM events WHERE name = 'stock.reserved'"), 8, "the undone orders' are gone");
    assert_eq!(count("SELECT COUNT(*) FROM events WHERE held_by IS NOT NULL"), 0, "none is left held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_s_events_follow_its_parent_on_postgres() {
    let Some(schema) = workflows_tests::postgres::TestSchema::new().await else { return };
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder()
        .postgres(schema.url())
        .container(Container::new().with(handled.clone()))
        .start()
        .await
        .unwrap();
    a_child_s_events_are_published_only_when_its_parent_completes(engine.clone(), handled).await;
    engine.shutdown().await;
    let client = schema.connect().await;
    let count = |sql: String| {
        let client = &client;
        async move { client.query_one(&sql, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let name = schema.name();
    assert_eq!(count(format!("SELECT COUNT(*) FROM {name}.events WHERE name = 'stock.reserved'")).await, 8);
    assert_eq!(count(format!("SELECT COUNT(*) FROM {name}.events WHERE held_by IS NOT NULL")).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_s_events_follow_its_parent_in_memory() {
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder().memory().container(Container::new().with(handled.clone())).start().await.unwrap();
    a_child_s_events_are_published_only_when_its_parent_completes(engine, handled).await;
}

/// One subscriber that cannot start for an event (an execution holds its id with another
/// input) fails for that event alone: the other subscriber and the later events go on; the
/// failure is tried again with a backoff, then parked and listed; an operator who removed the
/// cause retries it, and it is delivered. A payload no subscriber can read is parked for each
/// at once, and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_cannot_start_fails_alone_is_retried_parked_and_retried_by_hand() {
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder().memory().container(Container::new().with(handled.clone())).start().await.unwrap();
    // The id the dispatch of event `ev-1` to `confirm_order` would take, held with another input.
    let other = Event {
        id: "other".into(),
        name: "order.placed".into(),
        payload: OrderPlaced { order: 99 },
        emitted_at: Timestamp::now(),
    };
    confirm_order::run_with(&engine, other, RunOptions::new().id("confirm_order@ev-1")).await.unwrap();
    for order in 1..=5u32 {
        engine.emit_with_id(&format!("ev-{order}"), "order.placed", OrderPlaced { order }).await.unwrap();
    }
    eventually(Duration::from_secs(30), || async {
        let handled = handled.0.lock().unwrap();
        let reserved = (1..=5).all(|o| handled.contains_key(&("reserve".to_owned(), o)));
        let confirmed = (2..=5).all(|o| handled.contains_key(&("confirm".to_owned(), o)));
        (reserved && confirmed).then_some(())
    })
    .await;
    let failed = engine.undelivered_events(10).await.unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let failure = &failed[0];
    assert_eq!((failure.event.as_str(), failure.subscriber.as_str()), ("ev-1", "confirm_order"));
    assert!(failure.error.contains("confirm_order@ev-1"), "{}", failure.error);
    assert!(failure.retry_at.is_some(), "tried again later");

    // Tried again at each due time (a simulated clock: an hour on), until it is parked.
    let mut passes = 0;
    while engine.undelivered_events(10).await.unwrap()[0].retry_at.is_some() {
        engine.retry_undelivered_at(Timestamp::now() + Duration::from_secs(3600)).await.unwrap();
        passes += 1;
        assert!(passes <= 10, "never parked");
    }
    let parked = engine.undelivered_events(10).await.unwrap().remove(0);
    assert_eq!((parked.attempts, parked.retry_at), (5, None), "{parked:?}");
    assert!(!handled.0.lock().unwrap().contains_key(&("confirm".to_owned(), 1)));

    // The operator removes what held the id, and retries it.
    engine.purge_finished_before(Timestamp::now() + Duration::from_secs(3600)).await.unwrap();
    assert_eq!(engine.retry_undelivered("ev-1", None).await.unwrap(), 1);
    eventually(Duration::from_secs(30), || async {
        let done = handled.0.lock().unwrap().contains_key(&("confirm".to_owned(), 1));
        (done && engine.undelivered_events(10).await.ok()?.is_empty()).then_some(())
    })
    .await;

    // No subscriber can read this payload: parked for both at once, then dropped.
    engine.emit_with_id("garbled", "order.placed", "not an order").await.unwrap();
    let parked = eventually(Duration::from_secs(30), || async {
        let failed = engine.undelivered_events(10).await.ok()?;
        (failed.len() == 2).then_some(failed)
    })
    .await;
    assert!(parked.iter().all(|u| u.event == "garbled" && u.attempts == 1 && u.retry_at.is_none()), "{parked:?}");
    assert!(parked.iter().all(|u| u.error.contains("does not")), "{parked:?}");
    assert_eq!(engine.drop_undelivered("garbled", Some("confirm_order")).await.unwrap(), 1);
    assert_eq!(engine.drop_undelivered("garbled", None).await.unwrap(), 1);
    assert!(engine.undelivered_events(10).await.unwrap().is_empty());
}

/// Dispatched events are purged after their retention; an id emitted again after its event
/// was purged is a new event, whose subscribers do not run again while their executions for
/// it are kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dispatched_events_are_purged_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.db");
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder()
        .sqlite(&path)
        .container(Container::new().with(handled.clone()))
        .event_retention(Duration::ZERO)
        .purge_interval(Duration::ZERO)
        .start()
        .await
        .unwrap();
    for order in 0..30u32 {
        engine.emit_with_id(&format!("placed-{order}"), "order.placed", OrderPlaced { order }).await.unwrap();
    }
    each_handled_once(&engine, &handled, 30).await;
    let events = || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    assert_eq!(events(), 30);
    engine.purge_due().await.unwrap();
    assert_eq!(events(), 0, "dispatched and past their retention");
    assert!(engine.emit_with_id("placed-3", "order.placed", OrderPlaced { order: 3 }).await.unwrap(), "a new event");
    engine.dispatch_events().await.unwrap();
    let handled = handled.0.lock().unwrap();
    assert_eq!(
        handled.get(&("confirm".to_owned(), 3)),
        Some(&1),
        "its subscribers' executions are kept: not run again"
    );
}
