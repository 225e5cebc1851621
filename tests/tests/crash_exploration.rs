//! Crash exploration (`workflows_runtime::testing::explore_crashes`): passes on the order saga
//! (completed and compensated), on a workflow with parallel steps, an async step completed
//! from outside and a child; fails — naming the write and the rule — on
//! planted bugs: input taken from randomness or the wall clock outside a step, and a step whose
//! side effect the journal does not cover.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use workflows_examples::order_saga::{Backends, Order, order_saga};
use workflows_runtime::prelude::*;
use workflows_runtime::testing::{CrashReport, When, explore_crashes};

fn order(id: &str) -> Order {
    Order { id: id.into(), sku: "mug".into(), quantity: 2, amount_cents: 1250 }
}

fn print(report: &CrashReport) {
    println!("{report}");
}

#[tokio::test]
async fn the_order_saga_survives_a_crash_at_every_write() {
    let report = explore_crashes::<order_saga>(order("o-1"))
        .container(|| Container::new().with(Backends::default()))
        .check(|world, ending| {
            let log = world.resolve::<Backends>().unwrap().log();
            let charged = log.iter().filter(|line| line.starts_with("charge_payment")).count();
            match charged {
                0 => Err(format!("nothing was charged, yet it ended {ending}")),
                _ => Ok(()),
            }
        })
        .run()
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    print(&report);
    assert!(report.crash_points() >= 8, "{report}");
    assert_eq!(report.bodies()["reserve_stock"].without_crash, 1);
}

#[tokio::test]
async fn the_order_saga_compensates_in_reverse_order_after_a_crash_at_every_write() {
    let report = explore_crashes::<order_saga>(order("o-2"))
        .container(|| Container::new().with(Backends::with_carrier_down()))
        .check(|world, _| {
            let log = world.resolve::<Backends>().unwrap().log();
            let refunded = log.iter().position(|line| line.starts_with("refund_payment"));
            let released = log.iter().rposition(|line| line.starts_with("release_stock"));
            match (refunded, released) {
                (Some(refunded), Some(released)) if refunded < released => Ok(()),
                _ => Err(format!("the payment is refunded, then the stock released: {log:?}")),
            }
        })
        .run()
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    print(&report);
}

// A workflow with parallel steps, an async step completed from outside, and a child.

#[step]
async fn price_of(sku: String) -> Result<u64, StepError> {
    Ok(sku.len() as u64 * 100)
}

#[step]
async fn stock_of(sku: String) -> Result<u32, StepError> {
    Ok(sku.len() as u32)
}

/// Where the async step's requests go: the "manager" answers them from outside.
#[derive(Default)]
struct Inbox(Mutex<Vec<String>>);

#[step(async)]
async fn manager_approves(ctx: &StepContext, cents: u64) -> Result<Completion<bool>, StepError> {
    let _ = cents;
    ctx.resolve::<Inbox>()?.0.lock().unwrap().push(ctx.completion_token().to_owned());
    Ok(Completion::later())
}

#[step]
async fn label_for(sku: String) -> Result<String, StepError> {
    Ok(format!("label-{sku}"))
}

#[workflow]
async fn ship_parcel(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
    Ok(label_for(wf, sku).await?)
}

#[workflow]
async fn approved_order(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
    let (price, stock) = tokio::try_join!(price_of(wf, sku.clone()), stock_of(wf, sku.clone()))?;
    let approved = manager_approves(wf, price * u64::from(stock)).await?;
    if !approved {
        return Err(WorkflowError::new("not approved"));
    }
    let label = ship_parcel(wf, sku).await?;
    Ok(format!("{price}x{stock} {label}"))
}

#[tokio::test]
async fn parallel_steps_an_async_step_and_a_child_survive_a_crash_at_every_write() {
    let report = explore_crashes::<approved_order>("teapot".to_owned())
        .container(|| Container::new().with(Inbox::default()))
        .outside(|engine, world| async move {
            // The manager answers every request in the inbox, again after a restart.
            let mut answered = HashSet::new();
            loop {
                let tokens = world.resolve::<Inbox>().unwrap().0.lock().unwrap().clone();
                for token in tokens {
                    if answered.insert(token.clone()) {
                        let _ = engine.complete_step(&token, true).await;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        })
        .run()
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    print(&report);
    assert!(
        report.writes().iter().any(|write| write.contains("ship_parcel")),
        "the child's writes are explored: {report}"
    );
}

// Planted bugs.

#[step]
async fn record_nonce(nonce: u64) -> Result<u64, StepError> {
    Ok(nonce)
}

#[step]
async fn confirm(nonce: u64) -> Result<String, StepError> {
    Ok(format!("confirmed {nonce}"))
}

/// Takes a random number outside a step: a replay after a restart takes another one.
#[workflow]
async fn random_outside_a_step(wf: &Workflow, order: u32) -> Result<String, WorkflowError> {
    let nonce = RandomState::new().hash_one(order);
    let recorded = record_nonce(wf, nonce).await?;
    Ok(confirm(wf, recorded).await?)
}

/// Reads the wall clock outside a step.
#[workflow]
async fn clock_outside_a_step(wf: &Workflow, order: u32) -> Result<String, WorkflowError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let recorded = record_nonce(wf, now + u64::from(order)).await?;
    Ok(confirm(wf, recorded).await?)
}

#[tokio::test]
async fn randomness_outside_a_step_fails_the_exploration_naming_the_write() {
    let failure = explore_crashes::<random_outside_a_step>(1).run().await.unwrap_err();
    println!("{failure}");
    let point = failure.point.expect("a crash scenario failed");
    assert!(failure.to_string().contains(&format!("write {}", point.write)), "{failure}");
    assert!(failure.problem.contains("without a crash it ends completed"), "{failure}");
    assert!(failure.write.is_some(), "the write is named: {failure}");
}

#[tokio::test]
async fn the_wall_clock_outside_a_step_fails_the_exploration() {
    let failure = explore_crashes::<clock_outside_a_step>(2).run().await.unwrap_err();
    println!("{failure}");
    assert!(failure.problem.contains("without a crash it ends completed"), "{failure}");
}

/// A mail provider that counts what it sent; `dedupe` makes it honour idempotency keys.
#[derive(Default)]
struct Mailer {
    sent: Mutex<Vec<String>>,
    dedupe: bool,
}

#[step]
async fn send_receipt(ctx: &StepContext, to: String) -> Result<(), StepError> {
    let mailer = ctx.resolve::<Mailer>()?;
    let mut sent = mailer.sent.lock().unwrap();
    let key = ctx.idempotency_key().to_owned();
    if !(mailer.dedupe && sent.contains(&key)) {
        sent.push(key);
    }
    let _ = to;
    Ok(())
}

#[workflow]
async fn receipt_by_mail(wf: &Workflow, to: String) -> Result<(), WorkflowError> {
    Ok(send_receipt(wf, to).await?)
}

fn one_mail(world: &Container, _: &workflows_runtime::testing::Ending) -> Result<(), String> {
    let sent = world.resolve::<Mailer>().unwrap().sent.lock().unwrap().len();
    if sent == 1 { Ok(()) } else { Err(format!("{sent} receipts were mailed")) }
}

#[tokio::test]
async fn a_side_effect_the_journal_does_not_cover_shows_twice() {
    let failure = explore_crashes::<receipt_by_mail>("ada@example.com".to_owned())
        .container(|| Container::new().with(Mailer::default()))
        .check(one_mail)
        .run()
        .await
        .unwrap_err();
    println!("{failure}");
    assert_eq!(failure.point.map(|p| p.when), Some(When::Before), "{failure}");
    assert!(failure.write.as_deref().unwrap().contains("step_completed send_receipt#1"), "{failure}");
    assert!(failure.problem.contains("2 receipts were mailed"), "{failure}");
    assert_eq!(failure.bodies["send_receipt"], 2, "{failure}");
    // With the idempotency key honoured, the same exploration passes.
    let report = explore_crashes::<receipt_by_mail>("ada@example.com".to_owned())
        .container(|| Container::new().with(Mailer { dedupe: true, ..Mailer::default() }))
        .check(one_mail)
        .run()
        .await
        .unwrap_or_else(|failure| panic!("{failure}"));
    print(&report);
    assert!(report.bodies()["send_receipt"].most_in_a_scenario >= 2, "{report}");
}
