//! The engine's background work: lease renewal (`renew`: proving leases is `lease.rs`), taking over orphaned executions, purging
//! finished ones past their retention, and the timer scheduler that resumes suspended
//! executions when they are due.

use std::sync::Arc;
use std::time::Duration;

use super::core::EngineInner;
use crate::failure::Failure;
use crate::store::{Notice, Renewal, Renewals, Renewed};
use crate::time::Timestamp;
use tokio::sync::broadcast::error::RecvError;

/// The engine's background work, in two tasks so that a claim that hangs (a store that does
/// not answer) never holds up a renewal: one renews the leases of the executions this engine
/// drives (and cancels those whose cancellation another process requested) every third of the
/// lease; the other takes over orphans — at the earliest moment another engine's lease ends,
/// and at least every half lease —, what other processes announce, and purges finished
/// executions past their retention.
pub(super) fn spawn_maintenance(inner: &Arc<EngineInner>) {
    spawn_renewals(inner);
    spawn_claims(inner);
}

fn spawn_renewals(inner: &Arc<EngineInner>) {
    let weak = Arc::downgrade(inner);
    let lease = inner.lease;
    tokio::spawn(async move {
        let mut renew = tokio::time::interval(lease / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            renew.tick().await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_closed() {
                return;
            }
            inner.renew().await;
        }
    });
}

fn spawn_claims(inner: &Arc<EngineInner>) {
    let weak = Arc::downgrade(inner);
    let lease = inner.lease;
    let purge_every = inner.purge_interval;
    let purge_period = inner.poll(if purge_every.is_zero() { Duration::from_secs(3600) } else { purge_every });
    let work = inner.work_available.clone();
    tokio::spawn(async move {
        let mut purge = tokio::time::interval(purge_period);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut next_claim = tokio::time::Instant::now() + lease / 2;
        if let Some(inner) = weak.upgrade().filter(|inner| inner.worker) {
            next_claim = next_claim_at(inner.recover_at_start().await, lease);
        }
        loop {
            let work = tokio::select! {
                () = tokio::time::sleep_until(next_claim) => Work::Claim,
                _ = purge.tick() => Work::Purge,
                () = work.notified() => Work::Notified,
            };
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_closed() {
                return;
            }
            match work {
                Work::Claim if inner.worker => {
                    // Bounded: a store that does not answer delays the next look, nothing else.
                    let looked = tokio::time::timeout(lease, inner.take_over_from_the_gone(false)).await;
                    let earliest = match looked {
                        Ok(Ok(earliest)) => earliest,
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "could not look for executions whose owner is gone");
                            None
                        }
                        Err(_) => {
                            tracing::warn!(
                                "could not look for executions whose owner is gone: the store did not answer"
                            );
                            None
                        }
                    };
                    match tokio::time::timeout(lease, inner.recover()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => tracing::warn!(%error, "could not take over orphaned executions"),
                        Err(_) => tracing::warn!("could not take over orphaned executions: the store did not answer"),
                    }
                    // Blocked executions another build parked since the last look.
                    match tokio::time::timeout(lease, inner.unblock()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(error)) => tracing::warn!(%error, "could not look at blocked executions"),
                        Err(_) => tracing::warn!("could not look at blocked executions: the store did not answer"),
                    }
                    next_claim = next_claim_at(earliest, lease);
                }
                Work::Claim => next_claim = tokio::time::Instant::now() + lease / 2,
                Work::Notified if inner.worker => {
                    if let Err(error) = inner.recover().await {
                        tracing::warn!(%error, "could not take over the executions another process announced");
                    }
                }
                Work::Purge if !purge_every.is_zero() && inner.worker => match inner.purge_due().await {
                    Ok(0) => {}
                    Ok(purged) => tracing::debug!(purged, "purged finished executions past their retention"),
                    Err(error) => tracing::warn!(%error, "could not purge finished executions"),
                },
                Work::Notified | Work::Purge => {}
            }
        }
    });
}

/// When to look for orphans next: just after the earliest lease of another engine ends (if it
/// is gone, its executions are orphans from then on), and at least every half lease.
fn next_claim_at(earliest_lease_end: Option<Timestamp>, lease: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let periodic = now + lease / 2;
    // A lease that ended already was there for the claim that just ran: what it did not take
    // is not this engine's to take (another engine's workflow), and waits for the next period.
    let Some(end) = earliest_lease_end.filter(|end| *end > Timestamp::now()) else { return periodic };
    // A little after it ends: a claim takes leases that ended *before* its time.
    let after_end = end.duration_since(Timestamp::now()) + Duration::from_millis(5);
    periodic.min(now + after_end)
}

/// Reacts to what other processes sharing the store did (see `Store::notices`): work to take
/// makes a worker claim at once (and a queued execution try its key again); a finished
/// execution wakes whoever waits here for its result; after notices were missed, both, for
/// everything.
pub(super) fn spawn_notices(inner: &Arc<EngineInner>, mut notices: tokio::sync::broadcast::Receiver<Notice>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let notice = notices.recv().await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_closed() {
                return;
            }
            match notice {
                Ok(Notice::Work) => inner.work_arrived(),
                Ok(Notice::Finished(id)) => inner.notify_watchers(&id),
                Ok(Notice::Rescan) | Err(RecvError::Lagged(_)) => {
                    inner.work_arrived();
                    inner.notify_all_watchers();
                }
                Err(RecvError::Closed) => return,
            }
        }
    });
}

/// The timer scheduler: sleeps until the earliest wake-up time of a suspended execution (an
/// indexed lookup, not a scan), then claims the due executions. Suspensions in this engine
/// wake it early; timers set by other processes are seen within `TIMER_RECHECK`.
pub(super) fn spawn_scheduler(inner: &Arc<EngineInner>) {
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        // The wake-up this scheduler last slept until: due once that time has come, even if
        // the store no longer lists it (a queue's rate window has room again from that time on,
        // and the store lists only the times a full window opens up).
        let mut slept_until: Option<Timestamp> = None;
        loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_closed() {
                return;
            }
            // Registered before looking, so a suspension meanwhile is not missed.
            let changed = inner.timer_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let slept = slept_until.take();
            let next = inner.store.next_wake().await.map(|next| next.into_iter().chain(slept).min());
            let recheck = inner.poll(TIMER_RECHECK);
            let pause = match next {
                Ok(Some(at)) if at <= Timestamp::now() => match inner.recover().await {
                    // Some were resumed: look again at once.
                    Ok(resumed) if resumed > 0 => continue,
                    // Due but not claimable here (another engine's workflow, or a store error).
                    Ok(_) => recheck,
                    Err(error) => {
                        tracing::warn!(%error, "could not resume suspended executions that are due");
                        recheck
                    }
                },
                Ok(Some(at)) => {
                    let pause = at.duration_since(Timestamp::now());
                    if pause <= recheck {
                        slept_until = Some(at);
                    }
                    pause.min(recheck)
                }
                Ok(None) => recheck,
                Err(error) => {
                    tracing::warn!(%error, "could not read the next wake-up time");
                    recheck
                }
            };
            tokio::select! {
                () = changed => {}
                () = tokio::time::sleep(pause) => {}
            }
        }
    });
}

/// How often the scheduler looks for wake-up times set by other processes.
const TIMER_RECHECK: Duration = Duration::from_secs(1);

enum Work {
    Claim,
    /// Another process said there is work: claim it (the periodic claim also looks for
    /// owners that are gone).
    Notified,
    Purge,
}

impl EngineInner {
    /// Renews this engine's leases, cancels its executions whose cancellation was requested
    /// from elsewhere, and gives up the ones whose lease it can no longer prove (see
    /// [`super::lease`]).
    async fn renew(&self) {
        self.release_abandoned().await;
        let live = self.live_executions();
        // Only what this engine drives: a row it holds but does not drive (a creation or a
        // claim whose answer was lost) expires, and is taken over.
        let renewal = Renewal {
            owner: self.owner.to_string(),
            held: live.iter().map(|live| (live.id.clone(), live.epoch)).collect(),
            lease_until: Timestamp::now() + self.lease,
        };
        // Before the write: the renewed leases are provable from here.
        let began = tokio::time::Instant::now();
        // A store that does not answer (a network partition) must not hold up the check below:
        // after a third of the lease the executions whose proof ran out are given up anyway.
        // The renewal may still land later; it then holds those leases one lease longer.
        let renewal = if renewal.held.is_empty() {
            Ok(Renewals::default())
        } else {
            let renewed = tokio::time::timeout(self.lease / 3, self.store.renew_leases(&renewal)).await;
            renewed.unwrap_or_else(|_| {
                Err(crate::store::StoreError::Unavailable(
                    "the store did not answer within a third of the lease".into(),
                ))
            })
        };
        match renewal {
            Ok(Renewals { renewed, busy }) => {
                let mut answered = std::collections::HashSet::with_capacity(renewed.len() + busy.len());
                for Renewed { execution, epoch, cancel_requested } in renewed {
                    let Some(live) = self.live_execution(&execution) else { continue };
                    if live.epoch != epoch {
                        continue;
                    }
                    live.lease_renewed(began);
                    if cancel_requested {
                        live.request_stop(Failure::cancellation(), true);
                    }
                    answered.insert(execution);
                }
                // Locked by another transaction all along: still this engine's, not renewed
                // (its proof runs on from the last renewal).
                answered.extend(busy);
                // Granted or renewed by a write that returned before this renewal began, and not
                // renewed: another engine owns it now (or it is no longer active).
                for live in live {
                    if !answered.contains(&live.id) && live.lease_confirmed_before(began) {
                        live.give_up("the store no longer lists this engine as its owner");
                    }
                }
            }
            Err(error) => tracing::warn!(%error, "could not renew execution leases"),
        }
        for live in self.live_executions() {
            if !live.holds_lease() {
                live.give_up("this engine could not renew its lease in time (it stalled, or the store did not answer)");
            }
        }
    }
}

impl EngineInner {
    /// Takes over, once, what the store holds for no live engine at start: executions of
    /// processes on this host that are gone, and orphans (see `recovery`), in batches, logging
    /// its progress. A failure is logged; the periodic claim tries again. Returns the earliest
    /// end of another engine's lease.
    async fn recover_at_start(self: &Arc<Self>) -> Option<Timestamp> {
        let started = std::time::Instant::now();
        let (earliest, recovered) = match self.take_over_from_the_gone(true).await {
            Ok(earliest) => (earliest, self.recover().await),
            Err(error) => (None, Err(error)),
        };
        match recovered {
            Ok(0) => {}
            Ok(resumed) => {
                tracing::info!(resumed, took_ms = started.elapsed().as_millis() as u64, "recovery at start: done")
            }
            Err(error) => tracing::warn!(%error, "recovery at start stopped; the periodic claim goes on"),
        }
        if let Err(error) = self.report_blocked().await {
            tracing::warn!(%error, "could not count the blocked executions");
        }
        if let Err(error) = self.report_unlinked_versions().await {
            tracing::warn!(%error, "could not count the executions of versions not linked here");
        }
        match self.unblock().await {
            Ok(0) => {}
            Ok(resumed) => tracing::info!(resumed, "blocked executions this build may replay: taken over"),
            Err(error) => tracing::warn!(%error, "could not take over blocked executions; the periodic claim goes on"),
        }
        earliest
    }
}
