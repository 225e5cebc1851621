//! Recovery runs in the background: a worker's `start()` returns while the store still holds
//! its claims, new work runs meanwhile, and the orphans resume once the claims go through.

use std::time::Duration;

use tokio::sync::Semaphore;

use futures_util::future::BoxFuture;

use crate::ExecutionState;
use crate::execution::ExecutionId;
use crate::prelude::*;
use crate::store::hooked::{Hooked, Hooks};
use crate::store::{Claim, Store};
use crate::time::Timestamp;

/// Claims wait for a permit: a store busy with a long recovery.
struct HeldClaims(Semaphore);

impl Hooks for HeldClaims {
    fn before_claim<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            // One execution woken by a delivery is not part of the recovery held here.
            if claim.only.is_none() {
                self.0.acquire().await.expect("open").forget();
            }
        })
    }
}

#[step]
async fn double(n: u32) -> Result<u32, StepError> {
    Ok(n * 2)
}

#[workflow]
async fn doubled(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(double(wf, n).await?)
}

#[tokio::test]
async fn start_returns_while_recovery_waits_and_new_work_runs_meanwhile() {
    let store = Hooked::new(HeldClaims(Semaphore::new(0)));
    // An orphan: created by an engine that is gone (its owner released, nobody drives it).
    let now = Timestamp::now();
    let mut orphan = crate::store::conformance::fixture::new_execution("orphan", "gone", now);
    (orphan.workflow, orphan.fingerprint) = ("doubled", doubled::definition().fingerprint());
    orphan.input = crate::store::conformance::fixture::json(21u32);
    store.create_execution(orphan).await.unwrap();
    store.release("gone").await.unwrap();

    let started = Engine::builder().store_contract(store.clone()).start();
    let engine = tokio::time::timeout(Duration::from_secs(5), started)
        .await
        .expect("start() returns while its recovery waits for the store")
        .unwrap();
    assert_eq!(doubled::run(&engine, 4).await.unwrap(), 8, "new work runs during recovery");
    let orphan_id = ExecutionId::from("orphan");
    assert_eq!(engine.execution(&orphan_id).await.unwrap().unwrap().state, ExecutionState::Running);

    store.hooks.0.add_permits(1000);
    let resumed = async {
        loop {
            let record = engine.execution(&orphan_id).await.unwrap().unwrap();
            if record.state == ExecutionState::Completed {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let record = tokio::time::timeout(Duration::from_secs(5), resumed).await.expect("the orphan resumes");
    assert_eq!(record.result.unwrap().get(), "42");
}
