//! Ownership: leases renewed in the background, and executions whose owner is gone resumed.

use std::sync::Arc;

use super::EngineInner;
use super::driver;
use super::live::LiveExecution;
use crate::error::{Failure, FailureKind};
use crate::execution::{ExecutionRecord, ExecutionState};
use crate::journal::replay::Progress;
use crate::store::{Claim, StoreError};
use crate::time::Timestamp;
use crate::workflow::Workflow;

/// How many orphans one claim takes at most.
const CLAIM_BATCH: usize = 100;

impl EngineInner {
    /// Claims orphaned executions and resumes them; returns how many.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<usize, StoreError> {
        let workflows: Vec<String> = self.registry.workflows().iter().map(|w| w.name().to_owned()).collect();
        let mut resumed = 0;
        loop {
            let now = Timestamp::now();
            let claim = Claim {
                owner: self.owner.to_string(),
                now,
                lease_until: now + self.lease,
                limit: CLAIM_BATCH,
                workflows: workflows.clone(),
            };
            let records = self.store.claim_orphans(&claim).await?;
            let count = records.len();
            for record in records {
                self.resume(record).await?;
                resumed += 1;
            }
            if count < CLAIM_BATCH {
                return Ok(resumed);
            }
        }
    }

    /// Resumes a claimed execution: replays its body, or finishes compensating it.
    async fn resume(self: &Arc<Self>, record: ExecutionRecord) -> Result<(), StoreError> {
        // The claim only returns workflows of this registry.
        let Some(definition) = self.registry.workflow(&record.workflow) else { return Ok(()) };
        let (progress, corrupt) = match self.store.journal(&record.id).await {
            Ok(journal) => (Progress::from_journal(journal), None),
            // A journal row that cannot be decoded fails this execution, not the engine.
            Err(StoreError::Corrupt { execution, what, detail }) => {
                let message =
                    format!("execution {execution} cannot be resumed: its {what} cannot be decoded: {detail}");
                (Progress::default(), Some(Failure::new(FailureKind::Decode, message)))
            }
            Err(other) => return Err(other),
        };
        let live = Arc::new(LiveExecution::new(
            record.id.clone(),
            definition,
            self.clone(),
            None,
            record.epoch,
            record.fingerprint.into(),
            progress,
        ));
        if let Some(failure) = corrupt {
            tracing::error!(execution = %record.id, "{}", failure.message);
            driver::fail(&live, failure).await;
            return Ok(());
        }
        tracing::info!(execution = %record.id, workflow = definition.name(), state = %record.state, "resuming execution");
        if record.state == ExecutionState::Compensating {
            let failure = record
                .failure
                .unwrap_or_else(|| Failure::new(FailureKind::Workflow, "failed (no failure was recorded)"));
            self.spawn(record.id, async move {
                driver::compensate(&live, failure, false).await;
            });
            return Ok(());
        }
        let input = record.input;
        self.spawn(record.id, async move {
            let wf = Workflow { live };
            match (definition.entry)(&wf, &input) {
                Ok(mut body) => driver::drive(&wf, body.as_mut(), None).await,
                Err(error) => {
                    let message = format!(
                        "the stored input of execution {} does not decode as `{}`: {error}",
                        wf.live.id,
                        definition.input_type()
                    );
                    driver::fail(&wf.live, Failure::new(FailureKind::Decode, message)).await;
                }
            }
        });
        Ok(())
    }
}

/// Renews this engine's leases every third of the lease, and takes over orphans every half.
pub(super) fn spawn_maintenance(inner: &Arc<EngineInner>) {
    let weak = Arc::downgrade(inner);
    let lease = inner.lease;
    tokio::spawn(async move {
        let mut renew = tokio::time::interval(lease / 3);
        let mut claim = tokio::time::interval(lease / 2);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        claim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let renewing = tokio::select! {
                _ = renew.tick() => true,
                _ = claim.tick() => false,
            };
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_closed() {
                return;
            }
            if renewing {
                inner.release_abandoned().await;
                let until = Timestamp::now() + inner.lease;
                if let Err(error) = inner.store.renew_leases(&inner.owner, until).await {
                    tracing::warn!(%error, "could not renew execution leases");
                }
            } else if let Err(error) = inner.recover().await {
                tracing::warn!(%error, "could not take over orphaned executions");
            }
        }
    });
}
