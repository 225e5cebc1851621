//! The examples' workflows tested with the test kit (`workflows_runtime::testing`, the
//! `testing` feature): the approval's two-day deadline and payment timeout under virtual time,
//! the order saga's shipment replaced by a double, and the saga crashed at every durable write.

use std::sync::Arc;
use std::time::Duration;

use workflows_examples::approval::{ApprovalDesk, Decision, PendingOrder, approval};
use workflows_examples::order_saga::{Backends, Order, Reservation, create_shipment, order_saga};
use workflows_runtime::testing::{Double, TestClock, explore_crashes};
use workflows_runtime::{Container, Engine, ExecutionState, StepError};

const HOUR: Duration = Duration::from_secs(3600);

fn pending(id: &str) -> PendingOrder {
    PendingOrder { id: id.into(), sku: "lamp".into(), amount_cents: 4_900, payment_timeout_ms: 24 * 3600 * 1000 }
}

/// The manager never answers: two days later the approval step times out and the reservation is
/// released — in a test that takes milliseconds.
#[tokio::test]
async fn an_approval_nobody_gives_times_out_after_two_days() {
    let clock = TestClock::start();
    clock.auto_skip(false);
    let desk = Arc::new(ApprovalDesk::default());
    let engine = Engine::builder().memory().container(Container::new().with(desk.clone())).start().await.unwrap();
    let order = approval::start(&engine, pending("a-1")).await.unwrap();
    clock.advance(47 * HOUR).await;
    let state = |engine: &Engine| {
        let (engine, id) = (engine.clone(), order.id().clone());
        async move { engine.execution(&id).await.unwrap().unwrap().state }
    };
    assert_eq!(state(&engine).await, ExecutionState::Waiting, "47 hours in, it still waits");
    clock.advance(2 * HOUR).await;
    assert_eq!(state(&engine).await, ExecutionState::Compensated, "past two days, the approval timed out");
    assert!(desk.log.lock().unwrap().contains(&"released reservation-a-1".to_owned()), "{:?}", desk.log);
    engine.shutdown().await;
}

/// Approved at once, then the payment never comes: the one-day payment wait times out.
#[tokio::test]
async fn an_approved_order_without_payment_is_released_after_a_day() {
    let clock = TestClock::start();
    let desk = Arc::new(ApprovalDesk::default());
    let engine = Engine::builder().memory().container(Container::new().with(desk.clone())).start().await.unwrap();
    let order = approval::start(&engine, pending("a-2")).await.unwrap();
    clock.settle().await;
    let token = desk.token_for("a-2").expect("the approval was requested");
    engine.complete_step(&token, Decision { approved: true, by: "maria".into() }).await.unwrap();
    let started = clock.now();
    let error = order.result().await.unwrap_err();
    let waited = clock.now().duration_since(started).unwrap();
    assert!(error.to_string().contains("payment"), "{error}");
    assert!(waited >= 24 * HOUR && waited < 25 * HOUR, "the clock moved {waited:?}");
    assert!(desk.log.lock().unwrap().contains(&"released reservation-a-2".to_owned()));
    engine.shutdown().await;
}

/// The carrier, replaced by a double that is down: the saga refunds and releases, and the real
/// compensations get what the real steps returned.
#[tokio::test]
async fn a_shipment_double_that_fails_rolls_the_saga_back() {
    let carrier_down = Double::of(create_shipment, |reservation: Reservation| {
        Err::<String, _>(StepError::permanent(format!("the carrier refused {}", reservation.id)))
    });
    let world = Container::new().with(Backends::default());
    let engine = Engine::builder().memory().container(world.clone()).double(&carrier_down).start().await.unwrap();
    let order = Order { id: "o-9".into(), sku: "mug".into(), quantity: 1, amount_cents: 900 };
    let error = order_saga::run(&engine, order).await.unwrap_err();
    assert!(error.to_string().contains("the carrier refused res-o-9"), "{error}");
    assert_eq!(carrier_down.calls().len(), 1);
    let log = world.resolve::<Backends>().unwrap().log();
    assert!(log.iter().any(|line| line == "refund_payment: refunded pay-o-9"), "{log:?}");
    assert!(log.iter().any(|line| line == "release_stock: released res-o-9"), "{log:?}");
    engine.shutdown().await;
}

/// The saga, completed and rolled back, survives a crash just before and just after each of its
/// durable writes: same ending, each compensation once, in reverse order.
#[tokio::test]
async fn the_saga_survives_a_crash_at_every_write() {
    for carrier_down in [false, true] {
        let order = Order { id: "o-10".into(), sku: "mug".into(), quantity: 1, amount_cents: 900 };
        let report = explore_crashes::<order_saga>(order)
            .container(move || {
                Container::new().with(if carrier_down { Backends::with_carrier_down() } else { Backends::default() })
            })
            .check(|world, ending| {
                let log = world.resolve::<Backends>().map_err(|e| e.to_string())?.log();
                // A compensation runs at least once: after a crash mid-compensation it runs
                // again (the provider dedupes refunds by payment id).
                let refunded = log.iter().any(|line| line.starts_with("refund_payment"));
                if refunded == (ending.state == ExecutionState::Compensated) {
                    Ok(())
                } else {
                    Err(format!("refunded: {refunded}, for an execution that ended {ending}"))
                }
            })
            .run()
            .await
            .unwrap_or_else(|failure| panic!("{failure}"));
        println!("{report}");
    }
}
