//! A renewal that answers while an execution's creation is still under way does not list it,
//! and the engine must not take that for a lost lease: it gives an execution up only when the
//! write that granted or last renewed its lease had returned before the renewal began.

use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::Semaphore;

use crate::execution::ExecutionId;
use crate::prelude::*;
use crate::store::hooked::{Hooked, Hooks};
use crate::store::{NewExecution, Renewed};

/// Holds the creation of `raced` until a renewal has answered, and that renewal's answer until
/// the creation returned (and the engine had time to take the execution in): the renewal
/// began after the creation's write, and its answer does not list the execution.
struct Race {
    creating: Semaphore,
    go: Semaphore,
    created: Semaphore,
}

impl Hooks for Race {
    fn before_create<'a>(&'a self, new: &'a NewExecution) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if new.id.as_str() == "raced" {
                self.creating.add_permits(1);
                self.go.acquire().await.expect("open").forget();
            }
        })
    }
    fn after_create<'a>(&'a self, id: &'a ExecutionId) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if id.as_str() == "raced" {
                self.created.add_permits(1);
            }
        })
    }
    fn after_renew<'a>(&'a self, renewed: &'a [Renewed]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Ok(waiting) = self.creating.try_acquire() else { return };
            waiting.forget();
            assert!(renewed.iter().all(|r| r.execution.as_str() != "raced"), "answered before the creation");
            self.go.add_permits(1);
            self.created.acquire().await.expect("open").forget();
            // The engine registers the execution right after its creation returns.
            tokio::time::sleep(Duration::from_millis(50)).await;
        })
    }
}

/// Still running when the renewal's answer is looked at.
#[step]
async fn add_two(n: u32) -> Result<u32, StepError> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(n + 2)
}

#[workflow]
async fn raced(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(add_two(wf, n).await?)
}

#[tokio::test]
async fn an_execution_created_while_a_renewal_answered_keeps_its_lease() {
    let store = Hooked::new(Race { creating: Semaphore::new(0), go: Semaphore::new(0), created: Semaphore::new(0) });
    let engine = Engine::builder()
        .store_contract(store.clone())
        .lease_duration(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    // Driven while `raced` is created: the renewal has a lease to renew.
    let beside = raced::start_with(&engine, 0, RunOptions::new().id("beside")).await.unwrap();
    let run = raced::run_with(&engine, 40, RunOptions::new().id("raced"));
    let result = tokio::time::timeout(Duration::from_secs(10), run).await.expect("the run ends");
    assert_eq!(result.unwrap(), 42, "the renewal that did not list it gave it up");
    assert_eq!(beside.await.unwrap(), 2);
    assert_eq!(store.hooks.created.available_permits(), 0, "the race took place");
    assert_eq!(store.hooks.creating.available_permits(), 0, "a renewal answered while it was created");
}

/// A claim that never returns (a store that stopped answering one connection) once armed.
struct HungClaims {
    armed: std::sync::atomic::AtomicBool,
    hung: Semaphore,
}

impl Hooks for HungClaims {
    fn before_claim<'a>(&'a self, _claim: &'a crate::store::Claim) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if self.armed.load(std::sync::atomic::Ordering::SeqCst) {
                self.hung.add_permits(1);
                std::future::pending::<()>().await;
            }
        })
    }
}

/// Half a lease.
#[step]
async fn half_a_lease(n: u32) -> Result<u32, StepError> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(n + 1)
}

/// Eight steps over four leases: each starts only if the engine can prove its lease then.
#[workflow]
async fn long_held(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let mut n = n;
    for _ in 0..8 {
        n = half_a_lease(wf, n).await?;
    }
    Ok(n)
}

#[tokio::test]
async fn a_claim_that_hangs_does_not_stop_the_renewals() {
    let store = Hooked::new(HungClaims { armed: false.into(), hung: Semaphore::new(0) });
    let engine =
        Engine::builder().store_contract(store.clone()).lease_duration(Duration::from_secs(1)).start().await.unwrap();
    let run = long_held::start_with(&engine, 0, RunOptions::new().id("long")).await.unwrap();
    store.hooks.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let result = tokio::time::timeout(Duration::from_secs(30), run).await.expect("the run ends");
    assert_eq!(result.unwrap(), 8, "its lease ran out while a claim hung");
    assert!(store.hooks.hung.available_permits() > 0, "a claim hung meanwhile");
}
