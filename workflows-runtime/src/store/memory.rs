//! The in-memory store: for tests and benchmarks. Nothing survives the process.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use serde_json::value::RawValue;

use super::contract::{
    AppendBatch, CheckReport, Claim, CreateOutcome, Delivered, Delivery, ExecutionList, ExecutionQuery, InboxEntry,
    InboxKind, NewEvent, NewExecution, OwnerLeases, Purge, Renewal, Renewals, Renewed, Reopen, Reopened, Reopening,
    ScheduleAdvance, ScheduleState, StepEvent, Store, StoreAck, StoreError, StoreFuture, Suspend, Suspended,
    Undelivered, WriteAck,
};
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::Failure;
use crate::journal::JournalEntry;
use crate::queue::{Queue, QueueStatus};
use crate::store::queues;
use crate::time::Timestamp;

/// A store that keeps everything in the process's memory.
///
/// Several engines in one process can share one `MemoryStore` (wrap it in an `Arc`), which is
/// how tests show an execution resuming on a new engine.
pub struct MemoryStore {
    executions: Mutex<Executions>,
    /// The queues' stored limits, by name.
    queues: Mutex<std::collections::BTreeMap<String, Queue>>,
    /// The schedules' states, by name.
    schedules: Mutex<HashMap<String, ScheduleState>>,
    /// The events emitted, in order.
    events: Mutex<Vec<KeptEvent>>,
    /// The events not delivered to a subscriber, by (event, subscriber).
    undelivered: Mutex<std::collections::BTreeMap<(String, String), Undelivered>>,
    /// The key completion tokens are signed with.
    token_key: [u8; 32],
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self {
            executions: Mutex::default(),
            queues: Mutex::default(),
            schedules: Mutex::default(),
            events: Mutex::default(),
            undelivered: Mutex::default(),
            token_key: super::contract::random_token_key(),
        }
    }
}

/// An event as kept here: whether it was dispatched, and the execution that holds it until it
/// completes (see [`AppendBatch::events`]).
struct KeptEvent {
    event: NewEvent,
    dispatched: bool,
    held_by: Option<ExecutionId>,
}

/// Entries are boxed: the table then holds 32 bytes per execution, so its spare capacity and
/// its regrowth copies stay small however many finished executions are retained.
type Executions = HashMap<ExecutionId, Box<Entry>, foldhash::fast::RandomState>;

/// An execution as kept here: names borrowed from the registry and the owner shared, so
/// creating one allocates little; [`ExecutionRecord`]s are built when asked for.
struct Entry {
    workflow: Cow<'static, str>,
    fingerprint: Cow<'static, str>,
    version: u32,
    input: Box<RawValue>,
    state: ExecutionState,
    result: Option<Box<RawValue>>,
    failure: Option<Failure>,
    created_at: Timestamp,
    updated_at: Timestamp,
    owner: Option<Arc<str>>,
    lease_until: Option<Timestamp>,
    epoch: u64,
    exclusive_key: Option<String>,
    queue: Option<String>,
    /// When its queue admitted it (for the queue's rate limit).
    admitted_at: Option<Timestamp>,
    rerun_of: Option<ExecutionId>,
    cancel_requested: bool,
    retain_until: Option<Timestamp>,
    wake_at: Option<Timestamp>,
    wakeups: u64,
    parent: Option<(ExecutionId, String)>,
    deadline: Option<Timestamp>,
    /// The builds that could not replay it (see [`ExecutionRecord::blocked_by`]).
    blocked_by: Vec<String>,
    journal: Vec<JournalEntry>,
    /// The epoch a write failed at: later writes at that epoch are refused (see
    /// [`StoreError::earlier_write_failed`]).
    failed_at: Option<u64>,
    /// Deliveries by (kind, name), in delivery order.
    inbox: HashMap<(InboxKind, String), Vec<InboxEntry>>,
}

impl Entry {
    fn record(&self, id: &ExecutionId) -> ExecutionRecord {
        ExecutionRecord {
            id: id.clone(),
            workflow: self.workflow.to_string(),
            fingerprint: self.fingerprint.to_string(),
            version: self.version,
            input: self.input.clone(),
            state: self.state,
            result: self.result.clone(),
            failure: self.failure.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            owner: self.owner.as_deref().map(str::to_owned),
            lease_until: self.lease_until,
            epoch: self.epoch,
            exclusive_key: self.exclusive_key.clone(),
            queue: self.queue.clone(),
            rerun_of: self.rerun_of.clone(),
            cancel_requested: self.cancel_requested,
            retain_until: self.retain_until,
            wake_at: self.wake_at,
            wakeups: self.wakeups,
            parent: self.parent.clone(),
            deadline: self.deadline,
            blocked_by: self.blocked_by.clone(),
        }
    }

    /// Holds its exclusive key: past the queue and not finished.
    fn holds_key(&self, key: &str) -> bool {
        self.exclusive_key.as_deref() == Some(key)
            && matches!(
                self.state,
                ExecutionState::Running
                    | ExecutionState::Compensating
                    | ExecutionState::Waiting
                    | ExecutionState::Blocked
                    | ExecutionState::Paused
            )
    }

    /// Holds a slot of `queue` (see `store::queues`).
    fn holds_slot(&self, queue: &str) -> bool {
        self.queue.as_deref() == Some(queue)
            && matches!(
                self.state,
                ExecutionState::Pending
                    | ExecutionState::Running
                    | ExecutionState::Waiting
                    | ExecutionState::Compensating
            )
    }

    fn is_orphan(&self, now: Timestamp) -> bool {
        self.state.is_active() && (self.owner.is_none() || self.lease_until.is_none_or(|t| t < now))
            || self.state == ExecutionState::Waiting && self.wake_at.is_some_and(|t| t <= now)
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn apply(&self, batch: AppendBatch) -> Result<(), StoreError> {
        let mut executions = self.executions.lock();
        let entry =
            executions.get_mut(&batch.execution).ok_or_else(|| StoreError::NotFound(batch.execution.clone()))?;
        if entry.epoch != batch.epoch {
            return Err(StoreError::Fenced {
                execution: batch.execution,
                current: entry.epoch,
                attempted: batch.epoch,
            });
        }
        if entry.failed_at == Some(batch.epoch) {
            return Err(StoreError::earlier_write_failed(&batch.execution));
        }
        for (offset, journal_entry) in batch.entries.iter().enumerate() {
            let expected = entry.journal.len() as u64 + offset as u64;
            if journal_entry.index != expected {
                entry.failed_at = Some(batch.epoch);
                return Err(StoreError::OutOfSequence {
                    execution: batch.execution,
                    expected,
                    got: journal_entry.index,
                });
            }
        }
        entry.journal.extend(batch.entries);
        let finished = batch.transition.as_ref().map(|t| t.state).filter(|s| s.is_finished());
        if !batch.events.is_empty() || finished.is_some() {
            let mut events = self.events.lock();
            for StepEvent { event, held } in batch.events {
                if !events.iter().any(|kept| kept.event.id == event.id) {
                    let held_by = held.then(|| batch.execution.clone());
                    events.push(KeptEvent { event, dispatched: false, held_by });
                }
            }
            // Its held events are published if it completed — handed to its parent if it is a
            // child: they belong to the top-level execution —, and dropped otherwise.
            match finished {
                Some(ExecutionState::Completed) => {
                    let parent = entry.parent.as_ref().map(|(parent, _)| parent.clone());
                    for kept in events.iter_mut().filter(|k| k.held_by.as_ref() == Some(&batch.execution)) {
                        kept.held_by = parent.clone();
                    }
                }
                Some(_) => events.retain(|kept| kept.held_by.as_ref() != Some(&batch.execution)),
                None => {}
            }
        }
        if let Some(transition) = batch.transition {
            entry.state = transition.state;
            entry.result = transition.result;
            entry.failure = transition.failure;
            entry.retain_until = transition.retain_until;
            entry.updated_at = Timestamp::now();
            if transition.state == ExecutionState::Blocked {
                entry.blocked_by = transition.blocked_by;
            }
            if transition.state.releases_owner() {
                entry.owner = None;
                entry.lease_until = None;
            }
            if transition.state.is_finished() {
                // Kept until its retention ends: no spare capacity.
                entry.journal.shrink_to_fit();
            }
        }
        if let Some(delivery) = &batch.deliver {
            deliver_into(&mut executions, delivery);
        }
        Ok(())
    }
}

/// Stores a delivery in an execution's inbox (see [`Store::deliver`]).
fn deliver_into(executions: &mut Executions, delivery: &Delivery) -> Delivered {
    let Some(entry) = executions.get_mut(&delivery.execution) else { return Delivered::NotFound };
    if entry.state.is_finished() {
        return Delivered::Finished(entry.state);
    }
    if let Some(deadline) = entry.deadline.filter(|d| *d <= delivery.at) {
        return Delivered::PastDeadline(deadline);
    }
    let mut attempt = None;
    // Every step here started under this store's key: a token without a signature is not one
    // it handed out.
    if delivery.for_async_step && delivery.legacy_token {
        return Delivered::LegacyToken;
    }
    if delivery.for_async_step {
        let latest = entry
            .journal
            .iter()
            .rev()
            .map(|e| &e.event)
            .find(|event| event.kind().starts_with("step_") && event.step().1.to_string() == delivery.name);
        let current = match super::contract::async_step_attempt(latest) {
            Ok(current) => current,
            Err(refused) => return refused,
        };
        let queue = entry.inbox.get(&(delivery.kind, delivery.name.clone())).map(Vec::as_slice).unwrap_or_default();
        // The token's first completion wins, whichever attempt it went to; a failure counts
        // for its attempt (see `contract::refused_by_earlier`).
        if let Some(refused) = super::contract::refused_by_earlier(
            queue.iter().any(|e| e.attempt.is_some() && e.failure.is_none()),
            queue.iter().any(|e| e.attempt == Some(current)),
        ) {
            return refused;
        }
        attempt = Some(current);
    }
    let queue = entry.inbox.entry((delivery.kind, delivery.name.clone())).or_default();
    queue.push(InboxEntry {
        position: queue.len() as u64,
        payload: delivery.payload.clone(),
        failure: delivery.failure.clone(),
        attempt,
    });
    entry.wakeups += 1;
    let woke = entry.state == ExecutionState::Waiting;
    if woke {
        // Due now: the next claim (of any engine that runs the workflow) resumes it.
        entry.wake_at = Some(delivery.at.min(entry.wake_at.unwrap_or(delivery.at)));
    }
    Delivered::Stored { woke }
}

/// Admits up to `left` queued executions, oldest first in each queue, as far as the queues'
/// limits allow now (see `store::queues`).
fn admit<'q>(
    executions: &mut Executions,
    queues: impl Iterator<Item = &'q Queue>,
    claim: &Claim,
    owner: &Arc<str>,
    mut left: usize,
) -> Vec<ExecutionRecord> {
    let mut admitted = Vec::new();
    for queue in queues {
        let name = queue.name();
        let mut waiting: Vec<(Timestamp, ExecutionId)> = executions
            .iter()
            .filter(|(_, e)| e.state == ExecutionState::Queued && e.queue.as_deref() == Some(name))
            .filter(|(_, e)| claim.runs(&e.workflow, e.version))
            .map(|(id, e)| (e.created_at, id.clone()))
            .collect();
        if waiting.is_empty() || left == 0 {
            continue;
        }
        waiting.sort();
        let active = executions.values().filter(|e| e.holds_slot(name)).count() as u64;
        let started = queue.rate.map_or(0, |rate| {
            let since = queues::window_start(rate.per, claim.now);
            executions
                .values()
                .filter(|e| e.queue.as_deref() == Some(name) && e.admitted_at.is_some_and(|at| at > since))
                .count() as u64
        });
        let budget = queues::budget(queue, active, started, left as u64) as usize;
        for (_, id) in waiting.into_iter().take(budget) {
            let Some(e) = executions.get_mut(&id) else { continue };
            e.state = if e.exclusive_key.is_some() { ExecutionState::Pending } else { ExecutionState::Running };
            e.owner = Some(owner.clone());
            e.lease_until = Some(claim.lease_until);
            e.epoch += 1;
            e.admitted_at = Some(claim.now);
            e.updated_at = claim.now;
            admitted.push(e.record(&id));
            left -= 1;
        }
    }
    admitted
}

/// The `n`-th latest start (from 1) of `queue`'s executions.
fn nth_latest_start(executions: &Executions, queue: &str, n: u32) -> Option<Timestamp> {
    let mut starts: Vec<Timestamp> =
        executions.values().filter(|e| e.queue.as_deref() == Some(queue)).filter_map(|e| e.admitted_at).collect();
    starts.sort_unstable_by(|a, b| b.cmp(a));
    starts.get((n as usize).checked_sub(1)?).copied()
}

fn ready<T: Send + 'static>(value: T) -> StoreFuture<'static, T> {
    Box::pin(std::future::ready(Ok(value)))
}

impl Store for MemoryStore {
    fn describe(&self) -> String {
        "memory".to_owned()
    }

    fn create_execution(&self, new: NewExecution) -> StoreAck<CreateOutcome> {
        let mut executions = self.executions.lock();
        if let Some(existing) = executions.get(&new.id) {
            return StoreAck::ready(Ok(CreateOutcome::Exists(Box::new(existing.record(&new.id)))));
        }
        let mut state = ExecutionState::Running;
        if let Some(key) = &new.exclusive_key {
            let holder = executions
                .iter()
                .filter(|(_, e)| e.exclusive_key.as_ref() == Some(key) && e.state.is_active())
                .min_by_key(|(id, e)| (e.created_at, (*id).clone()))
                .map(|(id, _)| id.clone());
            match holder {
                Some(holder) if new.fail_if_held => return StoreAck::ready(Ok(CreateOutcome::KeyHeld(holder))),
                Some(_) => state = ExecutionState::Pending,
                None => {}
            }
        }
        if new.queue.is_some() {
            // Its key is taken once its queue admits it.
            state = ExecutionState::Queued;
        }
        let entry = Entry {
            workflow: Cow::Borrowed(new.workflow),
            fingerprint: Cow::Borrowed(new.fingerprint),
            version: new.version,
            input: new.input,
            state,
            result: None,
            failure: None,
            created_at: new.now,
            updated_at: new.now,
            lease_until: new.owner.as_ref().filter(|_| new.queue.is_none()).map(|_| new.lease_until),
            owner: new.owner.filter(|_| new.queue.is_none()),
            epoch: if new.queue.is_some() { 0 } else { 1 },
            exclusive_key: new.exclusive_key,
            queue: new.queue,
            admitted_at: None,
            rerun_of: new.rerun_of,
            cancel_requested: false,
            retain_until: None,
            wake_at: None,
            wakeups: 0,
            parent: new.parent,
            deadline: new.deadline,
            blocked_by: Vec::new(),
            inbox: HashMap::new(),
            failed_at: None,
            // Sized for the steps the workflow's code calls, so appending them does not regrow
            // (and copy) the journal.
            journal: Vec::with_capacity(new.expected_entries.clamp(1, 64)),
        };
        executions.insert(new.id, Box::new(entry));
        StoreAck::ready(Ok(if state == ExecutionState::Pending {
            CreateOutcome::Queued
        } else {
            CreateOutcome::Created
        }))
    }

    fn append(&self, batch: AppendBatch) -> WriteAck {
        WriteAck::ready(self.apply(batch))
    }

    fn execution<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Option<ExecutionRecord>> {
        ready(self.executions.lock().get(id).map(|e| e.record(id)))
    }

    fn journal<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Vec<JournalEntry>> {
        ready(self.executions.lock().get(id).map(|e| e.journal.clone()).unwrap_or_default())
    }

    fn list_executions<'a>(&'a self, query: &'a ExecutionQuery) -> StoreFuture<'a, ExecutionList> {
        // The state and the workflow first, from the entry: a record (a copy of its input) is
        // made only for the executions a listing may return (the engines' look for blocked
        // executions lists one state of a store that holds many).
        let wanted = |e: &Entry| {
            (query.states.is_empty() || query.states.contains(&e.state))
                && query.workflow.as_deref().is_none_or(|w| *w == *e.workflow)
        };
        let mut records: Vec<_> = self
            .executions
            .lock()
            .iter()
            .filter(|(_, e)| wanted(e))
            .map(|(id, e)| e.record(id))
            .filter(|record| query.matches(record))
            .collect();
        records.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        records.drain(..query.offset.min(records.len()));
        if let Some(limit) = query.limit {
            records.truncate(limit);
        }
        ready(ExecutionList { records, damaged: Vec::new() })
    }

    fn claim_orphans<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<ExecutionRecord>> {
        let mut executions = self.executions.lock();
        let claimable = |(_, e): &(&ExecutionId, &mut Box<Entry>)| {
            let wanted = match &claim.unblock {
                Some(build) => e.state == ExecutionState::Blocked && !e.blocked_by.contains(build),
                None => e.is_orphan(claim.now),
            };
            wanted && claim.runs(&e.workflow, e.version)
        };
        // One execution (a wake-up, a cancellation) is looked up, not searched for.
        let mut orphans: Vec<(&ExecutionId, &mut Box<Entry>)> = match &claim.only {
            Some(only) => executions.get_mut(only).map(|e| (only, e)).into_iter().filter(claimable).collect(),
            None => executions.iter_mut().filter(claimable).collect(),
        };
        orphans.sort_by_key(|(_, e)| e.created_at);
        let owner: Arc<str> = Arc::from(claim.owner.as_str());
        let mut claimed: Vec<ExecutionRecord> = orphans
            .into_iter()
            .take(claim.limit)
            .map(|(id, e)| {
                e.owner = Some(owner.clone());
                e.lease_until = Some(claim.lease_until);
                e.epoch += 1;
                if e.state == ExecutionState::Waiting {
                    e.state = ExecutionState::Running;
                    e.wake_at = None;
                }
                if e.state == ExecutionState::Blocked {
                    e.state = ExecutionState::Running;
                }
                e.record(id)
            })
            .collect();
        if claim.only.is_none() && claim.unblock.is_none() && claimed.len() < claim.limit {
            let queues = self.queues.lock().clone();
            let left = claim.limit - claimed.len();
            claimed.extend(admit(&mut executions, queues.values(), claim, &owner, left));
        }
        ready(claimed)
    }

    fn renew_leases<'a>(&'a self, renewal: &'a Renewal) -> StoreFuture<'a, Renewals> {
        let mut renewed = Vec::new();
        let mut executions = self.executions.lock();
        for (id, epoch) in &renewal.held {
            let Some(entry) = executions.get_mut(id) else { continue };
            if entry.owner.as_deref() == Some(renewal.owner.as_str())
                && entry.epoch == *epoch
                && entry.state.is_active()
            {
                entry.lease_until = entry.lease_until.max(Some(renewal.lease_until));
                renewed.push(Renewed {
                    execution: id.clone(),
                    epoch: entry.epoch,
                    cancel_requested: entry.cancel_requested,
                });
            }
        }
        ready(Renewals { renewed, busy: Vec::new() })
    }

    fn release<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64> {
        let mut released = 0;
        for entry in self.executions.lock().values_mut() {
            if entry.owner.as_deref() == Some(owner) && entry.state.is_active() {
                entry.owner = None;
                entry.lease_until = None;
                released += 1;
            }
        }
        ready(released)
    }

    fn owners(&self) -> StoreFuture<'_, Vec<OwnerLeases>> {
        let mut owners: Vec<OwnerLeases> = Vec::new();
        for entry in self.executions.lock().values().filter(|e| e.state.is_active()) {
            let Some(owner) = entry.owner.as_deref() else { continue };
            match owners.iter_mut().find(|o| o.owner == owner) {
                Some(known) => {
                    known.executions += 1;
                    known.lease_until = known.lease_until.max(entry.lease_until);
                    known.earliest_lease_until = match (known.earliest_lease_until, entry.lease_until) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                }
                None => owners.push(OwnerLeases {
                    owner: owner.to_owned(),
                    executions: 1,
                    lease_until: entry.lease_until,
                    earliest_lease_until: entry.lease_until,
                }),
            }
        }
        ready(owners)
    }

    fn request_cancel<'a>(&'a self, id: &'a ExecutionId, retain_until: Timestamp) -> StoreFuture<'a, bool> {
        let mut executions = self.executions.lock();
        let requested = match executions.get_mut(id) {
            // Never started: nothing to compensate.
            Some(entry) if entry.state == ExecutionState::Queued => {
                entry.state = ExecutionState::Cancelled;
                entry.cancel_requested = true;
                entry.updated_at = Timestamp::now();
                entry.retain_until = Some(retain_until);
                true
            }
            // Becomes an orphan: the next claim takes it and compensates it, without replaying
            // its body (which this code could not).
            Some(entry) if matches!(entry.state, ExecutionState::Blocked | ExecutionState::Paused) => {
                entry.state = ExecutionState::Running;
                entry.cancel_requested = true;
                entry.owner = None;
                entry.lease_until = None;
                entry.updated_at = Timestamp::now();
                true
            }
            Some(entry) if entry.state.is_active() || entry.state == ExecutionState::Waiting => {
                entry.cancel_requested = true;
                // A waiting execution is woken, so that an engine takes it over and cancels it.
                if entry.state == ExecutionState::Waiting {
                    entry.wake_at = Some(Timestamp::now());
                }
                true
            }
            _ => false,
        };
        ready(requested)
    }

    fn acquire<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        let mut executions = self.executions.lock();
        let Some(entry) = executions.get(id) else { return ready(false) };
        let (Some(key), true) =
            (entry.exclusive_key.clone(), entry.epoch == epoch && entry.state == ExecutionState::Pending)
        else {
            return ready(false);
        };
        let held = executions.values().any(|e| e.holds_key(&key));
        let first = executions
            .iter()
            .filter(|(_, e)| e.exclusive_key.as_ref() == Some(&key) && e.state == ExecutionState::Pending)
            .min_by_key(|(other, e)| (e.created_at, (*other).clone()))
            .is_some_and(|(first, _)| first == id);
        if held || !first {
            return ready(false);
        }
        if let Some(entry) = executions.get_mut(id) {
            entry.state = ExecutionState::Running;
            entry.updated_at = Timestamp::now();
        }
        ready(true)
    }

    fn purge<'a>(&'a self, purge: &'a Purge) -> StoreFuture<'a, u64> {
        let mut executions = self.executions.lock();
        let due: Vec<ExecutionId> = executions
            .iter()
            .filter(|(_, e)| {
                e.state.is_finished()
                    && (purge.retained_before.is_some_and(|t| e.retain_until.is_some_and(|r| r <= t))
                        || purge.finished_before.is_some_and(|t| e.updated_at < t))
            })
            .take(purge.limit)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &due {
            executions.remove(id);
        }
        ready(due.len() as u64)
    }

    fn release_execution<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool> {
        let mut executions = self.executions.lock();
        let released = match executions.get_mut(id) {
            Some(entry) if entry.epoch == epoch && entry.state.is_active() => {
                entry.owner = None;
                entry.lease_until = None;
                true
            }
            _ => false,
        };
        ready(released)
    }

    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> StoreFuture<'a, Delivered> {
        ready(deliver_into(&mut self.executions.lock(), delivery))
    }

    fn inbox<'a>(
        &'a self,
        id: &'a ExecutionId,
        kind: InboxKind,
        name: &'a str,
        position: u64,
    ) -> StoreFuture<'a, Option<InboxEntry>> {
        let executions = self.executions.lock();
        let entry = executions
            .get(id)
            .and_then(|e| e.inbox.get(&(kind, name.to_owned())))
            .and_then(|queue| queue.iter().find(|e| e.position >= position))
            .cloned();
        ready(entry)
    }

    fn suspend<'a>(&'a self, suspend: &'a Suspend) -> StoreFuture<'a, Suspended> {
        let mut executions = self.executions.lock();
        let Some(entry) = executions.get_mut(&suspend.execution) else {
            return Box::pin(std::future::ready(Err(StoreError::NotFound(suspend.execution.clone()))));
        };
        if entry.epoch != suspend.epoch {
            let error = StoreError::Fenced {
                execution: suspend.execution.clone(),
                current: entry.epoch,
                attempted: suspend.epoch,
            };
            return Box::pin(std::future::ready(Err(error)));
        }
        if entry.cancel_requested {
            return ready(Suspended::Cancelled);
        }
        if entry.wakeups != suspend.observed_wakeups {
            return ready(Suspended::Woken(entry.wakeups));
        }
        entry.state = ExecutionState::Waiting;
        entry.wake_at = suspend.wake_at;
        entry.owner = None;
        entry.lease_until = None;
        entry.updated_at = Timestamp::now();
        ready(Suspended::Yes)
    }

    fn reopen<'a>(&'a self, reopen: &'a Reopen) -> StoreFuture<'a, Reopened> {
        let mut executions = self.executions.lock();
        let Some(entry) = executions.get_mut(&reopen.execution) else { return ready(Reopened::NotFound) };
        let orphaned = entry.owner.is_none() || entry.lease_until.is_none_or(|t| t < reopen.now);
        let operator = reopen.purpose == Reopening::OperatorCompensates;
        match entry.state {
            ExecutionState::Paused if reopen.purpose == Reopening::OperatorRetries => {
                entry.state = ExecutionState::Running;
                entry.failure = None;
            }
            state if reopen.purpose == Reopening::OperatorRetries => return ready(Reopened::No(state)),
            ExecutionState::Completed => {
                entry.state = ExecutionState::Compensating;
                entry.failure = Some(reopen.failure.clone());
                entry.retain_until = None;
            }
            ExecutionState::Failed | ExecutionState::Blocked | ExecutionState::Paused if operator => {
                entry.state = ExecutionState::Compensating;
                entry.failure = Some(reopen.failure.clone());
                entry.retain_until = None;
            }
            ExecutionState::Compensating if orphaned => {}
            state => return ready(Reopened::No(state)),
        }
        entry.owner = Some(Arc::from(reopen.owner.as_str()));
        entry.lease_until = Some(reopen.lease_until);
        entry.epoch += 1;
        entry.updated_at = Timestamp::now();
        ready(Reopened::Yes(Box::new(entry.record(&reopen.execution))))
    }

    fn token_key(&self) -> StoreFuture<'_, [u8; 32]> {
        ready(self.token_key)
    }

    fn check(&self, _full: bool) -> StoreFuture<'_, CheckReport> {
        // Nothing is read back from a medium: what is kept is what was written.
        let executions = self.executions.lock();
        let journal_entries = executions.values().map(|e| e.journal.len() as u64).sum();
        ready(CheckReport { executions: executions.len() as u64, journal_entries, ..CheckReport::default() })
    }

    fn next_wake(&self) -> StoreFuture<'_, Option<Timestamp>> {
        let queues = self.queues.lock().clone();
        let executions = self.executions.lock();
        let timers = executions.values().filter(|e| e.state == ExecutionState::Waiting).filter_map(|e| e.wake_at);
        let now = Timestamp::now();
        let reopening = queues.values().filter_map(|queue| {
            let rate = queue.rate?;
            let queued = executions
                .values()
                .any(|e| e.state == ExecutionState::Queued && e.queue.as_deref() == Some(queue.name()));
            let nth = if queued { nth_latest_start(&executions, queue.name(), rate.starts) } else { None };
            queues::reopens_at(rate.per, nth, now)
        });
        ready(timers.chain(reopening).min())
    }

    fn schedules<'a>(&'a self, names: &'a [String], now: Timestamp) -> StoreFuture<'a, Vec<ScheduleState>> {
        let mut stored = self.schedules.lock();
        let states = names
            .iter()
            .map(|name| {
                let new = || ScheduleState {
                    name: name.clone(),
                    since: now,
                    handled: now,
                    paused: false,
                    last_run: None,
                    missed: 0,
                    last_missed: None,
                };
                stored.entry(name.clone()).or_insert_with(new).clone()
            })
            .collect();
        ready(states)
    }

    fn stored_schedules(&self) -> StoreFuture<'_, Vec<ScheduleState>> {
        let mut states: Vec<ScheduleState> = self.schedules.lock().values().cloned().collect();
        states.sort_by(|a, b| a.name.cmp(&b.name));
        ready(states)
    }

    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool> {
        let mut stored = self.schedules.lock();
        let moved = match stored.get_mut(&advance.name) {
            Some(state) if state.handled == advance.from => {
                state.handled = advance.to;
                if advance.last_run.is_some() {
                    state.last_run = advance.last_run.clone();
                }
                state.missed += advance.missed;
                state.last_missed = advance.last_missed.or(state.last_missed);
                true
            }
            _ => false,
        };
        ready(moved)
    }

    fn record_event(&self, event: NewEvent) -> StoreFuture<'_, bool> {
        let mut events = self.events.lock();
        let new = !events.iter().any(|kept| kept.event.id == event.id);
        if new {
            events.push(KeptEvent { event, dispatched: false, held_by: None });
        }
        ready(new)
    }

    fn undispatched_events(&self, limit: usize) -> StoreFuture<'_, Vec<NewEvent>> {
        let events = self.events.lock();
        let mut due: Vec<&NewEvent> =
            events.iter().filter(|k| !k.dispatched && k.held_by.is_none()).map(|k| &k.event).collect();
        // Oldest first, as the other stores read their index.
        due.sort_by(|a, b| (a.at, &a.id).cmp(&(b.at, &b.id)));
        ready(due.into_iter().take(limit).cloned().collect())
    }

    fn mark_dispatched<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()> {
        for kept in self.events.lock().iter_mut() {
            if ids.contains(&kept.event.id) {
                kept.dispatched = true;
            }
        }
        ready(())
    }

    fn purge_events(&self, before: Timestamp, limit: usize) -> StoreFuture<'_, u64> {
        let mut events = self.events.lock();
        let mut due: Vec<(Timestamp, String)> = events
            .iter()
            .filter(|k| k.dispatched && k.held_by.is_none() && k.event.at < before)
            .map(|k| (k.event.at, k.event.id.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        let due: std::collections::HashSet<String> = due.into_iter().map(|(_, id)| id).collect();
        events.retain(|k| !due.contains(&k.event.id));
        ready(due.len() as u64)
    }

    fn record_undelivered<'a>(&'a self, undelivered: &'a Undelivered) -> StoreFuture<'a, ()> {
        let key = (undelivered.event.clone(), undelivered.subscriber.clone());
        self.undelivered.lock().insert(key, undelivered.clone());
        ready(())
    }

    fn undelivered(&self, due: Option<Timestamp>, limit: usize) -> StoreFuture<'_, Vec<Undelivered>> {
        let kept = self.undelivered.lock();
        let mut found: Vec<Undelivered> = match due {
            Some(due) => kept.values().filter(|u| u.retry_at.is_some_and(|at| at <= due)).cloned().collect(),
            None => kept.values().cloned().collect(),
        };
        match due {
            Some(_) => found.sort_by(|a, b| (a.retry_at, &a.event).cmp(&(b.retry_at, &b.event))),
            None => found.sort_by(|a, b| (b.last_failed_at, &b.event).cmp(&(a.last_failed_at, &a.event))),
        }
        found.truncate(limit);
        ready(found)
    }

    fn forget_undelivered<'a>(&'a self, event: &'a str, subscriber: Option<&'a str>) -> StoreFuture<'a, u64> {
        let mut kept = self.undelivered.lock();
        let before = kept.len();
        kept.retain(|(e, s), _| !(e == event && subscriber.is_none_or(|wanted| wanted == s)));
        ready((before - kept.len()) as u64)
    }

    fn pause_schedule<'a>(&'a self, name: &'a str, paused: bool) -> StoreFuture<'a, bool> {
        let found = self.schedules.lock().get_mut(name).map(|state| state.paused = paused).is_some();
        ready(found)
    }

    fn define_queues<'a>(&'a self, queues: &'a [Queue]) -> StoreFuture<'a, ()> {
        let mut stored = self.queues.lock();
        for queue in queues {
            stored.insert(queue.name.clone(), queue.clone());
        }
        ready(())
    }

    fn queues(&self, now: Timestamp) -> StoreFuture<'_, Vec<QueueStatus>> {
        let defined = self.queues.lock().clone();
        let executions = self.executions.lock();
        let mut names: std::collections::BTreeSet<String> = defined.keys().cloned().collect();
        names.extend(executions.values().filter_map(|e| e.queue.clone()));
        let statuses = names
            .into_iter()
            .map(|name| {
                let limits = defined.get(&name).cloned();
                let members = || executions.values().filter(|e| e.queue.as_deref() == Some(name.as_str()));
                let queued = || members().filter(|e| e.state == ExecutionState::Queued);
                let started_in_window = limits.as_ref().and_then(|q| q.rate).map(|rate| {
                    let since = queues::window_start(rate.per, now);
                    members().filter(|e| e.admitted_at.is_some_and(|at| at > since)).count() as u64
                });
                QueueStatus {
                    queued: queued().count() as u64,
                    active: members().filter(|e| e.holds_slot(&name)).count() as u64,
                    started_in_window,
                    oldest_queued: queued().map(|e| e.created_at).min(),
                    limits,
                    name,
                }
            })
            .collect();
        ready(statuses)
    }
}
