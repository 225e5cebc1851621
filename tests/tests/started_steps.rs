//! A step that started is never abandoned silently: when its call is dropped while the body
//! runs — a `try_join!` sibling failed, the workflow was cancelled, a `select!` took another
//! branch — the body runs to its end, its outcome is journaled, and if it completed it is
//! compensated with the other completed steps. Replay of such an execution does not wait for
//! the outcome of a call whose future was dropped.

use std::sync::Arc;
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{ExecutionState, JournalEvent, MemoryStore};
use workflows_tests::{Gate, Log, eventually};

#[derive(Default)]
struct Card {
    log: Log,
    gate: Gate,
}

/// Charges a card: takes a while (the network), and does not stop halfway when the workflow is
/// cancelled (the charge is under way at the provider): it finishes, and reports what it did.
#[step(compensate = refund)]
async fn charge(ctx: &StepContext, cents: u32) -> Result<String, StepError> {
    let card = ctx.resolve::<Arc<Card>>()?;
    card.log.push(format!("charge {cents} begin"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    if ctx.is_cancelled() {
        card.log.push("charge saw the cancellation");
    }
    card.log.push(format!("charge {cents} end"));
    Ok(format!("receipt-{cents}"))
}

async fn refund(ctx: &StepContext, receipt: String) -> Result<(), StepError> {
    ctx.resolve::<Arc<Card>>()?.log.push(format!("refund {receipt}"));
    Ok(())
}

#[step]
async fn check_fraud(ctx: &StepContext, cents: u32) -> Result<(), StepError> {
    ctx.resolve::<Arc<Card>>()?.log.push("fraud check refuses");
    let _ = cents;
    Err(StepError::permanent("fraud suspected"))
}

#[step(on_failure = "continue")]
async fn check_fraud_softly(ctx: &StepContext, cents: u32) -> Result<(), StepError> {
    ctx.resolve::<Arc<Card>>()?.log.push("fraud check refuses");
    let _ = cents;
    Err(StepError::permanent("fraud suspected"))
}

#[workflow]
async fn pay_and_check(wf: &Workflow, cents: u32) -> Result<String, WorkflowError> {
    let (receipt, ()) = tokio::try_join!(charge(wf, cents), check_fraud(wf, cents))?;
    Ok(receipt)
}

#[workflow]
async fn pay_and_check_softly(wf: &Workflow, cents: u32) -> Result<String, WorkflowError> {
    // `try_join!` returns the fraud check's error at once and drops the charge's call.
    let (receipt, ()) = tokio::try_join!(charge(wf, cents), check_fraud_softly(wf, cents))?;
    Ok(receipt)
}

fn engine(card: &Arc<Card>) -> workflows_runtime::EngineBuilder {
    Engine::builder().memory().container(Container::new().with(card.clone()))
}

async fn journal_kinds(engine: &Engine, id: &ExecutionId) -> Vec<String> {
    let journal = engine.journal(id).await.unwrap();
    journal.iter().map(|e| format!("{} {}", e.event.kind(), e.event.step().1)).collect()
}

/// A sibling fails for good while the charge runs: the charge finishes, is journaled, and is
/// refunded with the compensation — whether the failure stops the workflow at once
/// (`on_failure = "fail"`) or reaches it as an error that `try_join!` returns.
#[tokio::test]
async fn a_step_running_beside_a_failed_sibling_finishes_and_is_compensated() {
    for soft in [false, true] {
        let card = Arc::new(Card::default());
        let engine = engine(&card).start().await.unwrap();
        let started = if soft {
            pay_and_check_softly::start(&engine, 500).await.unwrap()
        } else {
            pay_and_check::start(&engine, 500).await.unwrap()
        };
        let id = started.id().clone();
        let error = started.await.unwrap_err();
        assert!(matches!(error, RunError::Compensated { .. }), "soft {soft}: {error}");
        assert_eq!(
            card.log.lines(),
            ["charge 500 begin", "fraud check refuses", "charge 500 end", "refund receipt-500"],
            "soft {soft}"
        );
        let kinds = journal_kinds(&engine, &id).await;
        assert!(kinds.contains(&"step_completed charge#1".to_owned()), "soft {soft}: {kinds:?}");
        assert!(kinds.contains(&"compensation_completed charge#1".to_owned()), "soft {soft}: {kinds:?}");
    }
}

#[workflow]
async fn pay_then_wait(wf: &Workflow, cents: u32) -> Result<String, WorkflowError> {
    let receipt = charge(wf, cents).await?;
    Ok(receipt)
}

/// Cancelled while the charge runs: the charge sees the cancellation, finishes (it cannot stop
/// halfway), and is refunded; the execution ends `cancelled`.
#[tokio::test]
async fn a_step_running_when_the_workflow_is_cancelled_finishes_and_is_compensated() {
    let card = Arc::new(Card::default());
    let engine = engine(&card).start().await.unwrap();
    let handle = pay_then_wait::start(&engine, 700).await.unwrap();
    let id = handle.id().clone();
    eventually(Duration::from_secs(5), || async { (card.log.count("charge 700 begin") == 1).then_some(()) }).await;
    engine.cancel(&id).await.unwrap();
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Cancelled { .. }), "{error}");
    assert_eq!(
        card.log.lines(),
        ["charge 700 begin", "charge saw the cancellation", "charge 700 end", "refund receipt-700"]
    );
    assert_eq!(engine.execution(&id).await.unwrap().unwrap().state, ExecutionState::Cancelled);
}

#[step]
async fn quick(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Card>>()?.log.push("quick");
    Ok(1)
}

#[step]
async fn then_hold(ctx: &StepContext) -> Result<u32, StepError> {
    let card = ctx.resolve::<Arc<Card>>()?;
    card.log.push(format!("then_hold attempt {}", ctx.attempt()));
    card.gate.pass().await;
    Ok(2)
}

/// `select!` takes the quick step; the charge's call is dropped while its body runs.
#[workflow]
async fn race(wf: &Workflow, cents: u32) -> Result<u32, WorkflowError> {
    // Polled in order: the charge starts (and waits on the network), then the quick step wins.
    let first = tokio::select! {
        biased;
        receipt = charge(wf, cents) => receipt.map(|_| 0)?,
        quick = quick(wf) => quick?,
    };
    Ok(first + then_hold(wf).await?)
}

/// The losing branch of a `select!` finishes and is journaled; after a restart, replay does not
/// wait for the dropped call's outcome, and nothing runs twice.
#[tokio::test]
async fn a_step_dropped_by_select_finishes_and_replay_does_not_wait_for_it() {
    let store = Arc::new(MemoryStore::new());
    let card = Arc::new(Card::default());
    let builder = || Engine::builder().store(store.clone()).container(Container::new().with(card.clone()));
    let first = builder().start().await.unwrap();
    let handle = race::start_with(&first, 900, RunOptions::new().id("race")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (card.gate.arrived() == 1).then_some(()) }).await;
    // The charge went on beside the held step, and was journaled.
    let id = ExecutionId::from("race");
    eventually(Duration::from_secs(5), || async {
        journal_kinds(&first, &id).await.contains(&"step_completed charge#1".to_owned()).then_some(())
    })
    .await;
    first.shutdown().await;
    assert!(matches!(handle.await.unwrap_err(), RunError::Interrupted { .. }));

    card.gate.open();
    let second = builder().start().await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(5), race::run_with(&second, 900, RunOptions::new().id(&id)))
        .await
        .expect("replay does not wait for the dropped call")
        .unwrap();
    assert_eq!(output, 3);
    assert_eq!(card.log.count("charge 900 begin"), 1, "{:?}", card.log.lines());
    assert_eq!(card.log.count("quick"), 1, "{:?}", card.log.lines());
    assert_eq!(card.log.lines().iter().filter(|l| l.starts_with("then_hold")).count(), 2);
    let journal = second.journal(&id).await.unwrap();
    let completions = journal.iter().filter(|e| matches!(e.event, JournalEvent::StepCompleted { .. })).count();
    assert_eq!(completions, 3, "{journal:?}");
}
