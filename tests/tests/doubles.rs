//! Step doubles (`workflows_runtime::testing::Double`): a step's body, and its compensation,
//! replaced in one test engine, journaled like the real step, their calls recorded; on the
//! memory and SQLite stores.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use workflows_runtime::prelude::*;
use workflows_runtime::testing::{Double, DoubleCall};
use workflows_runtime::{EngineBuilder, EventKind, JournalEvent};

/// What the real compensation was given.
static REFUNDED: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[step(compensate = refund_card, retry(max_attempts = 3, backoff = "1s", jitter = 0.0))]
async fn charge_card(customer: String, cents: u64) -> Result<String, StepError> {
    panic!("the real payment provider must not be called in a test ({customer}, {cents})")
}

async fn refund_card(_ctx: &StepContext, receipt: String) -> Result<(), StepError> {
    REFUNDED.lock().unwrap().push(receipt);
    Ok(())
}

#[step]
async fn ship(customer: String) -> Result<String, StepError> {
    if customer.starts_with("nowhere") {
        return Err(StepError::permanent(format!("cannot ship to {customer}")));
    }
    Ok(format!("parcel for {customer}"))
}

#[workflow]
async fn checkout(wf: &Workflow, customer: String) -> Result<String, WorkflowError> {
    let receipt = charge_card(wf, customer.clone(), 1250).await?;
    let parcel = ship(wf, customer).await?;
    Ok(format!("{receipt} / {parcel}"))
}

async fn each_store(test: impl AsyncFn(EngineBuilder)) {
    test(Engine::builder().memory()).await;
    let dir = tempfile::tempdir().unwrap();
    test(Engine::builder().sqlite(dir.path().join("doubles.db"))).await;
}

#[tokio::test]
async fn a_double_runs_instead_of_the_step_and_is_journaled_like_it() {
    each_store(async |builder: EngineBuilder| {
        let charge = Double::of(charge_card, |customer: String, cents: u64| Ok(format!("receipt-{customer}-{cents}")));
        let engine = builder.double(&charge).start().await.unwrap();
        let mut events = engine.subscribe();
        let handle = checkout::start(&engine, "ada".to_owned()).await.unwrap();
        let id = handle.id().clone();
        assert_eq!(handle.result().await.unwrap(), "receipt-ada-1250 / parcel for ada");
        // The event stream tells the double from the real step.
        let mut started = Vec::new();
        while let Some(Ok(event)) = events.try_recv() {
            if let EventKind::StepStarted { key, double, .. } = event.kind {
                started.push((key.to_string(), double));
            }
        }
        assert_eq!(started, [("charge_card#1".to_owned(), true), ("ship#1".to_owned(), false)]);
        assert_eq!(charge.calls(), vec![DoubleCall { input: ("ada".to_owned(), 1250), attempt: 1 }]);
        // Journaled as the step's output: a replay reads it from there.
        let journal = engine.journal(&id).await.unwrap();
        let completed = journal.iter().find_map(|entry| match &entry.event {
            JournalEvent::StepCompleted { key, output, .. } if key.name() == "charge_card" => {
                Some(output.get().to_owned())
            }
            _ => None,
        });
        assert_eq!(completed.as_deref(), Some("\"receipt-ada-1250\""));
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_failing_double_is_retried_with_the_step_s_policy() {
    let tries = Arc::new(AtomicU32::new(0));
    let counted = tries.clone();
    let charge = Double::of(charge_card, move |customer: String, _cents: u64| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            return Err(StepError::new("the provider timed out"));
        }
        Ok(format!("receipt-{customer}"))
    });
    let _clock = workflows_runtime::testing::TestClock::start();
    let engine = Engine::builder().memory().double(&charge).start().await.unwrap();
    assert_eq!(checkout::run(&engine, "grace".to_owned()).await.unwrap(), "receipt-grace / parcel for grace");
    let attempts: Vec<u32> = charge.calls().iter().map(|call| call.attempt).collect();
    assert_eq!(attempts, [1, 2]);
    engine.shutdown().await;
}

#[tokio::test]
async fn a_doubled_step_is_compensated_with_the_double_s_output() {
    each_store(async |builder: EngineBuilder| {
        let charge = Double::returning(charge_card, "receipt-fixed".to_owned());
        let engine = builder.double(&charge).start().await.unwrap();
        let error = checkout::run(&engine, "nowhere-1".to_owned()).await.unwrap_err();
        assert!(error.to_string().contains("cannot ship"), "{error}");
        assert!(
            REFUNDED.lock().unwrap().contains(&"receipt-fixed".to_owned()),
            "the real compensation got the double's output"
        );
        engine.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn a_compensation_can_be_doubled_too() {
    each_store(async |builder: EngineBuilder| {
        let charge = Double::of(charge_card, |customer: String, cents: u64| Ok(format!("r-{customer}-{cents}")))
            .compensate_with(|receipt: String| {
                assert!(receipt.starts_with("r-nowhere-2"));
                Ok(())
            });
        let engine = builder.double(&charge).start().await.unwrap();
        let before = REFUNDED.lock().unwrap().len();
        checkout::run(&engine, "nowhere-2".to_owned()).await.unwrap_err();
        assert_eq!(charge.compensations(), vec!["r-nowhere-2-1250".to_owned()]);
        let refunded = REFUNDED.lock().unwrap().clone();
        assert!(!refunded[before..].iter().any(|r| r.starts_with("r-nowhere-2")), "the real compensation did not run");
        engine.shutdown().await;
    })
    .await;
}
