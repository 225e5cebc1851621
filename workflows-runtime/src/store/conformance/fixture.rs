//! What the conformance cases (and other tests that write to a store directly) build their
//! requests from: one workflow name, an owner per
//! engine, and writes of numbered journal entries.

use std::sync::Arc;
use std::time::Duration;

use serde_json::value::{RawValue, to_raw_value};

use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::journal::{CallKey, JournalEntry, JournalEvent};
use crate::store::contract::{
    AppendBatch, Claim, Delivery, InboxKind, NewExecution, Renewal, Store, Transition, WriteMode,
};
use crate::time::Timestamp;

/// The workflow every case's executions belong to (claims name it).
pub(crate) const WORKFLOW: &str = "conformance";

/// A lease long enough to hold through any case.
pub(crate) const LEASE: Duration = Duration::from_secs(60);

/// How long the cases keep finished executions.
pub(crate) const RETAIN: Duration = Duration::from_secs(86_400);

pub(crate) fn json(value: impl serde::Serialize) -> Box<RawValue> {
    to_raw_value(&value).expect("JSON")
}

/// A new execution of [`WORKFLOW`], owned by `owner` from `now` for [`LEASE`].
pub(crate) fn new_execution(id: &str, owner: &str, now: Timestamp) -> NewExecution {
    NewExecution {
        id: id.into(),
        workflow: WORKFLOW,
        fingerprint: "0000000000000000",
        version: 0,
        input: json(id),
        owner: Some(Arc::from(owner)),
        lease_until: now + LEASE,
        now,
        exclusive_key: None,
        queue: None,
        fail_if_held: false,
        rerun_of: None,
        parent: None,
        deadline: None,
        expected_entries: 4,
    }
}

/// Creates the execution and returns its record.
pub(crate) async fn create(store: &dyn Store, new: NewExecution) -> ExecutionRecord {
    let id = new.id.clone();
    store.create_execution(new).await.expect("created");
    record(store, &id).await
}

pub(crate) async fn record(store: &dyn Store, id: &ExecutionId) -> ExecutionRecord {
    store.execution(id).await.expect("read").expect("the execution exists")
}

/// A claim by `owner` at `now` of up to 100 executions of [`WORKFLOW`].
pub(crate) fn claim(owner: &str, now: Timestamp) -> Claim {
    Claim {
        owner: owner.into(),
        now,
        lease_until: now + LEASE,
        limit: 100,
        workflows: vec![Claim::workflow_key(WORKFLOW, 0)],
        only: None,
        unblock: None,
    }
}

/// A move to `blocked` by the builds `by` (the last one blocking it now).
pub(crate) fn to_blocked(by: &[&str]) -> Transition {
    Transition {
        state: ExecutionState::Blocked,
        result: None,
        failure: Some(crate::failure::Failure::new(crate::failure::FailureKind::NonDeterminism, "diverged")),
        retain_until: None,
        blocked_by: by.iter().map(|b| (*b).to_owned()).collect(),
    }
}

/// The ids a claim took, sorted.
pub(crate) async fn claimed(store: &dyn Store, claim: &Claim) -> Vec<String> {
    let mut ids: Vec<String> =
        store.claim_orphans(claim).await.expect("claim").into_iter().map(|r| r.id.to_string()).collect();
    ids.sort();
    ids
}

/// Renews `owner`'s leases of `held` (each at its epoch) until `until`: what was renewed, as
/// (id, epoch, cancellation requested), by id.
pub(crate) async fn renew(
    store: &dyn Store,
    owner: &str,
    held: &[(&str, u64)],
    until: Timestamp,
) -> Vec<(String, u64, bool)> {
    let renewal = Renewal {
        owner: owner.into(),
        held: held.iter().map(|(id, epoch)| (ExecutionId::from(*id), *epoch)).collect(),
        lease_until: until,
    };
    let renewals = store.renew_leases(&renewal).await.expect("renewal");
    assert!(renewals.busy.is_empty(), "nothing else holds these rows: {:?}", renewals.busy);
    let mut renewed: Vec<(String, u64, bool)> =
        renewals.renewed.into_iter().map(|r| (r.execution.to_string(), r.epoch, r.cancel_requested)).collect();
    renewed.sort();
    renewed
}

/// Journal entry `index`: the start of step call `index`.
pub(crate) fn started(index: u64) -> JournalEntry {
    let seq = index as u32;
    JournalEntry {
        index,
        at: Timestamp::now(),
        event: JournalEvent::StepStarted {
            seq,
            key: CallKey::new("charge", seq + 1),
            attempt: 1,
            input_hash: 7,
            by: None,
        },
    }
}

/// A durable write of `entries` at `epoch`, with an optional state change.
pub(crate) fn write(
    id: &str,
    epoch: u64,
    entries: impl IntoIterator<Item = JournalEntry>,
    transition: Option<Transition>,
) -> AppendBatch {
    AppendBatch {
        execution: id.into(),
        epoch,
        entries: entries.into_iter().collect(),
        transition,
        mode: WriteMode::Durable,
        deliver: None,
        events: Vec::new(),
    }
}

/// A change to `state` (with a result when completed), retained until `retain_until`.
pub(crate) fn to_state(state: ExecutionState, retain_until: Option<Timestamp>) -> Transition {
    Transition {
        state,
        result: (state == ExecutionState::Completed).then(|| json("done")),
        failure: None,
        retain_until,
        blocked_by: Vec::new(),
    }
}

/// Ends the execution (held at `epoch`, with `entries` journal entries so far) in `state`.
pub(crate) async fn finish(store: &dyn Store, id: &str, epoch: u64, entries: u64, state: ExecutionState) {
    finish_retained(store, id, epoch, entries, state, None).await;
}

pub(crate) async fn finish_retained(
    store: &dyn Store,
    id: &str,
    epoch: u64,
    entries: u64,
    state: ExecutionState,
    retain_until: Option<Timestamp>,
) {
    store.append(write(id, epoch, [started(entries)], Some(to_state(state, retain_until)))).await.expect("finished");
}

/// An event named `name` for execution `id`, sent at `at`.
pub(crate) fn event(id: &str, name: &str, payload: u32, at: Timestamp) -> Delivery {
    Delivery {
        execution: id.into(),
        kind: InboxKind::Event,
        name: name.into(),
        payload: Some(json(payload)),
        failure: None,
        at,
        for_async_step: false,
        legacy_token: false,
    }
}
