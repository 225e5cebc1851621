//! The [`Store`] trait — what every store does — and the types of its operations.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::failure::Failure;
use crate::journal::{JournalEntry, JournalEvent};
use crate::queue::{Queue, QueueStatus};
use crate::time::Timestamp;

/// A boxed future returned by [`Store`] methods.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store of executions and journals.
///
/// Implementations: [`SqliteStore`](crate::SqliteStore) (one file, the default) and [`MemoryStore`](crate::MemoryStore) (tests;
/// nothing survives the process). Writes of one execution must be applied in the order
/// [`Store::append`] is called.
pub(crate) trait Store: Send + Sync + 'static {
    /// A short description for logs and the helper binary: `memory`, `sqlite:/path`, ...
    fn describe(&self) -> String;

    /// Creates an execution, owned by `new.owner` with epoch 1, unless one with the same id
    /// exists — then returns that one and changes nothing. Resolves once the execution is
    /// durable.
    fn create_execution(&self, new: NewExecution) -> StoreAck<CreateOutcome>;

    /// Appends journal entries and applies a state change, atomically.
    ///
    /// The write is *submitted* when this method returns: it is applied (in call order) even if
    /// the returned [`WriteAck`] is dropped unawaited. The ack resolves once the write is as
    /// durable as the store promises (for [`WriteMode::Lazy`] writes, possibly later than
    /// other writes; they are committed no later than the next durable write).
    fn append(&self, batch: AppendBatch) -> WriteAck;

    /// The execution with this id.
    fn execution<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Option<ExecutionRecord>>;

    /// The execution's journal, in order.
    fn journal<'a>(&'a self, id: &'a ExecutionId) -> StoreFuture<'a, Vec<JournalEntry>>;

    /// Executions matching `query`, newest first; a row that does not decode is reported in
    /// the list's `damaged`, and the others are listed.
    fn list_executions<'a>(&'a self, query: &'a ExecutionQuery) -> StoreFuture<'a, ExecutionList>;

    /// Takes over up to `limit` executions that need an engine: active ones (`pending`,
    /// `running`, `compensating`) that have no owner or whose owner's lease expired before
    /// `now`, `waiting` ones whose wake-up time is due (they become `running`), and — unless
    /// the claim is for one execution — `queued` ones their queue's stored limits admit now
    /// (see `store::queues`: they become `running`, or `pending` if they have
    /// an exclusive key; their start time is recorded for the rate limit). Sets their owner and
    /// lease, increments their epoch, and returns them. A claim with `unblock` set takes
    /// `blocked` executions instead (see [`Claim::unblock`]): they become `running`.
    fn claim_orphans<'a>(&'a self, claim: &'a Claim) -> StoreFuture<'a, Vec<ExecutionRecord>>;

    /// Extends the leases of the executions the engine drives (`renewal.held`: each still
    /// active and held by `renewal.owner` at the epoch given) to `renewal.lease_until` — never
    /// shortening a later one —, and returns them. Nothing else the owner holds is renewed: a
    /// row that this engine does not drive (a write whose acknowledgement was lost, a claim
    /// that failed at its commit) expires and is taken over. A store that cannot lock a row
    /// without waiting (PostgreSQL) may answer it as busy: neither renewed nor lost.
    fn renew_leases<'a>(&'a self, renewal: &'a Renewal) -> StoreFuture<'a, Renewals>;

    /// Gives up ownership of `owner`'s active executions, so another engine can take them
    /// over at once. Returns how many were released.
    fn release<'a>(&'a self, owner: &'a str) -> StoreFuture<'a, u64>;

    /// The owners of active executions, with how many each holds and until when their leases
    /// run (the latest).
    fn owners(&self) -> StoreFuture<'_, Vec<OwnerLeases>>;

    /// Gives up ownership of one execution, if it is still held at `epoch`. Returns whether
    /// it was released.
    fn release_execution<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool>;

    /// Marks an active or waiting execution's cancellation as requested (a waiting one is
    /// woken, so that an engine takes it over and cancels it; a `blocked` one becomes
    /// `running` with no owner, so that the next claim takes it and compensates it without
    /// running its body); a `queued` one, which never started, ends `cancelled` at once, kept
    /// until `retain_until`. Returns false if it is finished or unknown.
    fn request_cancel<'a>(&'a self, id: &'a ExecutionId, retain_until: Timestamp) -> StoreFuture<'a, bool>;

    /// Moves a `pending` execution (held at `epoch`) to `running` if it is the oldest one
    /// waiting for its exclusive key and no other execution holding the key is active.
    /// Returns whether it did.
    fn acquire<'a>(&'a self, id: &'a ExecutionId, epoch: u64) -> StoreFuture<'a, bool>;

    /// Deletes up to `purge.limit` finished executions (and their journals and inboxes) that
    /// `purge` selects. Returns how many.
    fn purge<'a>(&'a self, purge: &'a Purge) -> StoreFuture<'a, u64>;

    /// Delivers an external completion or event into an execution's inbox, where it stays
    /// until the execution consumes it; counts a wake-up, and wakes the execution if it was
    /// `waiting` (it is due now: the next claim takes it over). A delivery at or after the
    /// execution's deadline is refused.
    fn deliver<'a>(&'a self, delivery: &'a Delivery) -> StoreFuture<'a, Delivered>;

    /// The first inbox entry of `kind` and `name` at `position` (from 0) or later, if any.
    fn inbox<'a>(
        &'a self,
        id: &'a ExecutionId,
        kind: InboxKind,
        name: &'a str,
        position: u64,
    ) -> StoreFuture<'a, Option<InboxEntry>>;

    /// Suspends an execution held at `epoch`: `waiting` until `wake_at` (if any) or a
    /// delivery, unowned — unless a delivery arrived since the engine last looked (its
    /// wake-up count is no longer `observed_wakeups`) or its cancellation was requested.
    fn suspend<'a>(&'a self, suspend: &'a Suspend) -> StoreFuture<'a, Suspended>;

    /// The earliest wake-up time of the `waiting` executions, if any has one, or the earliest
    /// time a rate-limited queue with queued executions may start one again, if earlier.
    fn next_wake(&self) -> StoreFuture<'_, Option<Timestamp>>;

    /// Stores the limits of these queues (replacing what was stored for the same names):
    /// every engine admits executions by the stored limits.
    fn define_queues<'a>(&'a self, queues: &'a [Queue]) -> StoreFuture<'a, ()>;

    /// Every queue that is defined or named by an execution, by name, as it stands at `now`.
    fn queues(&self, now: Timestamp) -> StoreFuture<'_, Vec<QueueStatus>>;

    /// The stored state of the schedules named, in that order; a schedule not stored yet is
    /// stored first, handled up to `now` (the ticks before its first sight are not owed).
    fn schedules<'a>(&'a self, names: &'a [String], now: Timestamp) -> StoreFuture<'a, Vec<ScheduleState>>;

    /// Every stored schedule, by name: those of workflows no process has any more too (a
    /// scheduled workflow removed or renamed).
    fn stored_schedules(&self) -> StoreFuture<'_, Vec<ScheduleState>>;

    /// Records that schedule `advance.name`'s ticks up to `advance.to` were taken care of (and
    /// its latest run, if one started), if its ticks were handled up to `advance.from` — the
    /// compare-and-set that lets racing processes agree. Returns whether it did.
    fn advance_schedule<'a>(&'a self, advance: &'a ScheduleAdvance) -> StoreFuture<'a, bool>;

    /// Pauses or resumes a stored schedule. Returns false if no schedule has that name.
    fn pause_schedule<'a>(&'a self, name: &'a str, paused: bool) -> StoreFuture<'a, bool>;

    /// Records an event durably, to be dispatched; false if an event with its id exists (then
    /// nothing changes: an id is an event's deduplication key).
    fn record_event(&self, event: NewEvent) -> StoreFuture<'_, bool>;

    /// Up to `limit` events not dispatched yet, oldest first.
    fn undispatched_events(&self, limit: usize) -> StoreFuture<'_, Vec<NewEvent>>;

    /// Marks these events dispatched: the executions of their subscribers exist, or their
    /// failures are recorded (see [`Store::record_undelivered`]).
    fn mark_dispatched<'a>(&'a self, ids: &'a [String]) -> StoreFuture<'a, ()>;

    /// Deletes up to `limit` dispatched events emitted before `before`, oldest first (their ids
    /// deduplicate no more). Returns how many.
    fn purge_events(&self, before: Timestamp, limit: usize) -> StoreFuture<'_, u64>;

    /// Records (or updates) an event one subscriber's execution could not be started for,
    /// keyed by the event and the subscriber.
    fn record_undelivered<'a>(&'a self, undelivered: &'a Undelivered) -> StoreFuture<'a, ()>;

    /// The undelivered events: with `due`, up to `limit` of those whose next try is due by then
    /// (soonest first); without, up to `limit` of them all, the latest failure first.
    fn undelivered(&self, due: Option<Timestamp>, limit: usize) -> StoreFuture<'_, Vec<Undelivered>>;

    /// Forgets the undelivered event `event` (for `subscriber` only, if given): delivered, or
    /// dropped by an operator. Returns how many records it deleted.
    fn forget_undelivered<'a>(&'a self, event: &'a str, subscriber: Option<&'a str>) -> StoreFuture<'a, u64>;

    /// The key completion tokens are signed with: one per store, made with it, the same for
    /// every process that uses it.
    fn token_key(&self) -> StoreFuture<'_, [u8; 32]>;

    /// Checks that everything stored reads back intact (for file stores: the file, and every
    /// row against its checksum); `full` asks for the most thorough check the store has.
    // Called by the `workflows check` command (and the tests).
    #[cfg_attr(not(feature = "cli"), allow(dead_code))]
    fn check(&self, full: bool) -> StoreFuture<'_, CheckReport>;

    /// Takes a `completed` execution (a child whose parent compensates) — or, for an
    /// operator, a `failed`, `paused` or `blocked` one — into `compensating`, owned by
    /// `reopen.owner` with a new epoch, and returns it; or takes over one already
    /// `compensating` whose owner is gone. For an operator's retry, takes a `paused` execution
    /// into `running` instead (see [`Reopening`]).
    fn reopen<'a>(&'a self, reopen: &'a Reopen) -> StoreFuture<'a, Reopened>;

    /// What other processes sharing the store did that this engine should react to at once
    /// (see [`Notice`]), for stores that can say so (PostgreSQL: `LISTEN/NOTIFY`). `None`:
    /// the engine finds out by polling (at its next claim, its next look at the store).
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<Notice>> {
        None
    }

    /// The PostgreSQL schema of a PostgreSQL store (for writes made in the application's own
    /// transactions: `Engine::emit_in_transaction`); `None` for other stores.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    fn postgres_schema(&self) -> Option<&str> {
        None
    }
}

/// An event the application emitted (see [`Store::record_event`]).
#[derive(Clone, Debug)]
pub struct NewEvent {
    /// Its id: unique, and its deduplication key.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its payload, as JSON.
    pub payload: Box<RawValue>,
    /// When it was emitted.
    pub at: Timestamp,
}

/// An event one subscriber's execution could not be started for: tried again with a backoff,
/// then parked until an operator retries or drops it
/// ([`Engine::undelivered_events`](crate::Engine::undelivered_events), `workflows events
/// --failed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undelivered {
    /// The event's id.
    pub event: String,
    /// The event's name.
    pub name: String,
    /// Its payload, as emitted (kept here: the event itself may be purged meanwhile).
    pub payload: String,
    /// When it was emitted.
    pub emitted_at: Timestamp,
    /// The subscribing workflow it was not delivered to.
    pub subscriber: String,
    /// How many tries failed.
    pub attempts: u32,
    /// Why the last one failed.
    pub error: String,
    /// When the first try failed.
    pub first_failed_at: Timestamp,
    /// When the last one did.
    pub last_failed_at: Timestamp,
    /// When it is tried again; `None`: parked (given up on until an operator retries it).
    pub retry_at: Option<Timestamp>,
}

/// A schedule as the store keeps it (see [`Store::schedules`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleState {
    /// The schedule's name (its workflow's).
    pub name: String,
    /// When a process first saw it.
    pub since: Timestamp,
    /// Its ticks up to this instant were taken care of: started, skipped or missed.
    pub handled: Timestamp,
    /// Paused: its ticks are skipped.
    pub paused: bool,
    /// The execution of the latest tick that started, if one did.
    pub last_run: Option<ExecutionId>,
    /// How many of its ticks were missed (older than its catch-up window when a process ran
    /// the schedule again), and the latest of them.
    pub missed: u64,
    /// The latest missed tick, if one was.
    pub last_missed: Option<Timestamp>,
}

/// A move of a schedule's handled ticks (see [`Store::advance_schedule`]).
#[derive(Clone, Debug)]
pub struct ScheduleAdvance {
    /// The schedule.
    pub name: String,
    /// Where its handled ticks must stand.
    pub from: Timestamp,
    /// Where they move to.
    pub to: Timestamp,
    /// The execution of the latest tick started now, if one was.
    pub last_run: Option<ExecutionId>,
    /// How many ticks this move records as missed, and the latest of them.
    pub missed: u64,
    /// The latest tick missed, if this move records any.
    pub last_missed: Option<Timestamp>,
}

/// What a store tells the engines of other processes (see [`Store::notices`]). Polling stays
/// the safety net: a notice only makes an engine look sooner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// Executions may be there to take: created for the workers by a client-only engine,
    /// released by an engine that stopped, woken by a delivery or a cancellation, or an
    /// exclusive key given back.
    Work,
    /// This execution finished.
    Finished(ExecutionId),
    /// Notices may have been missed (the store's connection was lost and made again): look at
    /// everything again.
    Rescan,
}

/// A request to compensate a completed execution as a unit; see [`Store::reopen`].
#[derive(Clone, Debug)]
pub struct Reopen {
    /// The execution.
    pub execution: ExecutionId,
    /// The engine taking it.
    pub owner: String,
    /// The current time (leases that ended before it are expired).
    pub now: Timestamp,
    /// Its new lease.
    pub lease_until: Timestamp,
    /// Why it is compensated.
    pub failure: Failure,
    /// Who takes it, and into what.
    pub purpose: Reopening,
}

/// What a [`Reopen`] is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reopening {
    /// Its parent compensates: a `completed` child goes `compensating`.
    ParentCompensates,
    /// An operator compensates it (`Engine::compensate`): a `completed`, `failed`, `paused` or
    /// `blocked` execution goes `compensating`.
    OperatorCompensates,
    /// An operator retries its failed step (`Engine::retry_step`): a `paused` execution goes
    /// `running`, its failure cleared.
    OperatorRetries,
}

/// What [`Store::reopen`] did.
#[derive(Clone, Debug)]
pub enum Reopened {
    /// It is `compensating`, owned by the caller: run its compensations.
    Yes(Box<ExecutionRecord>),
    /// It is in this state, and nothing was changed: finished (compensated already, say), or
    /// driven by a live owner.
    No(ExecutionState),
    /// No execution has this id.
    NotFound,
}

/// What kind of delivery an inbox entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InboxKind {
    /// The completion (or failure) of an async step; named by the step's call key; one per step.
    Completion,
    /// An event; named by the event's name; any number, in the order they were sent.
    Event,
}

impl InboxKind {
    /// The kind as stored: `completion` or `event`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completion => "completion",
            Self::Event => "event",
        }
    }
}

/// A delivery into an execution's inbox.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The execution.
    pub execution: ExecutionId,
    /// Completion or event.
    pub kind: InboxKind,
    /// The step's call key (completions) or the event name.
    pub name: String,
    /// The output or payload, as JSON.
    pub payload: Option<Box<RawValue>>,
    /// The failure, for a failed completion.
    pub failure: Option<Failure>,
    /// When it was delivered.
    pub at: Timestamp,
    /// A completion (or failure) of an async step from outside (`Engine::complete_step`,
    /// `Engine::fail_step`): accepted only while an attempt of the step runs or waits and none
    /// was delivered for that attempt yet (see `async_step_attempt`). False for events, and
    /// for the outcome of a child execution, which its parent always takes.
    pub for_async_step: bool,
    /// The completion came with a token of an earlier release (no signature): accepted only
    /// for a step whose attempt started before the store had a token key (it was waiting when
    /// the store was upgraded, and its request carried that form).
    pub legacy_token: bool,
}

/// The attempt of an async step a completion from outside is for, from the step's latest
/// journal entry (`latest`, among its `step_*` entries): the one that runs or waits. Otherwise
/// why nothing may be delivered: the step did not start (or its next attempt did not), it
/// completed, or it failed for good.
pub(crate) fn async_step_attempt(latest: Option<&JournalEvent>) -> Result<u32, Delivered> {
    match latest {
        Some(JournalEvent::StepStarted { attempt, .. } | JournalEvent::StepWaiting { attempt, .. }) => Ok(*attempt),
        Some(JournalEvent::StepCompleted { .. }) => Err(Delivered::AlreadyCompleted),
        Some(JournalEvent::StepFailed { retry_at: None, .. } | JournalEvent::StepSkipped { .. }) => {
            Err(Delivered::AlreadyFailed)
        }
        // Not started, or the attempt failed and the next one has not started.
        _ => Err(Delivered::NotStarted),
    }
}

/// The builds of [`ExecutionRecord::blocked_by`] from their stored text (space-separated).
pub(crate) fn blocked_by_list(text: Option<&str>) -> Vec<String> {
    text.map(|t| t.split_whitespace().map(str::to_owned).collect()).unwrap_or_default()
}

/// The stored text of [`Transition::blocked_by`]: `None` for a transition to another state.
pub(crate) fn blocked_by_text(transition: &Transition) -> Option<String> {
    (transition.state == ExecutionState::Blocked).then(|| transition.blocked_by.join(" "))
}

/// Why a completion from outside is refused for what the step's inbox holds, if it is: the
/// token's first completion wins, whichever attempt it went to (`completed`: one is there —
/// an attempt cut off before it recorded that it waits leaves its completion to the next
/// attempt, which takes it), and an attempt takes one delivery (`this_attempt`: a failure is
/// there for the current attempt).
pub(crate) fn refused_by_earlier(completed: bool, this_attempt: bool) -> Option<Delivered> {
    match (completed, this_attempt) {
        (true, _) => Some(Delivered::AlreadyCompleted),
        (false, true) => Some(Delivered::AlreadyFailed),
        (false, false) => None,
    }
}

/// [`async_step_attempt`] from what a database store reads: the step's latest `step_*` journal
/// record (its index, its JSON, when it was written) and, for a completion with an unsigned
/// token (`delivery.legacy_token`), when the store's token key was made.
pub(crate) fn stored_step_attempt(
    delivery: &Delivery,
    latest: Option<(i64, String, i64)>,
    key_made: Option<i64>,
) -> Result<Result<u32, Delivered>, StoreError> {
    // An unsigned token is one an earlier release handed out: only for an attempt that started
    // before this store had a token key.
    if delivery.legacy_token && latest.as_ref().is_none_or(|(_, _, at)| *at >= key_made.unwrap_or(i64::MIN)) {
        return Ok(Err(Delivered::LegacyToken));
    }
    let latest = match latest {
        Some((index, text, _)) => {
            Some(serde_json::from_str::<JournalEvent>(&text).map_err(|e| StoreError::Corrupt {
                execution: delivery.execution.clone(),
                what: format!("journal entry {index} (step `{}`)", delivery.name),
                detail: e.to_string(),
            })?)
        }
        None => None,
    };
    Ok(async_step_attempt(latest.as_ref()))
}

/// What [`Store::deliver`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivered {
    /// Stored; `woke` if the execution was waiting and is now resumable.
    Stored {
        /// The execution was woken.
        woke: bool,
    },
    /// A completion for this step was delivered (or journaled) already.
    AlreadyCompleted,
    /// The completion came with a token of an earlier release for a step whose request carried
    /// a signed token.
    LegacyToken,
    /// The step failed for good, or a failure was delivered for its current attempt already.
    AlreadyFailed,
    /// No attempt of the step runs or waits: it has not started (it may never: the token may
    /// name a call that does not happen), or its next attempt has not.
    NotStarted,
    /// The execution finished already.
    Finished(ExecutionState),
    /// The execution's deadline passed: it is timing out, and nothing it waited for counts.
    PastDeadline(Timestamp),
    /// No execution has this id.
    NotFound,
}

/// An inbox entry.
#[derive(Clone, Debug)]
pub struct InboxEntry {
    /// Its position among the entries of its kind and name.
    pub position: u64,
    /// The output or payload.
    pub payload: Option<Box<RawValue>>,
    /// The failure, for a failed completion.
    pub failure: Option<Failure>,
    /// For a completion of an async step from outside: the attempt it was delivered to.
    pub attempt: Option<u32>,
}

/// A request to suspend an execution.
#[derive(Clone, Debug)]
pub struct Suspend {
    /// The execution.
    pub execution: ExecutionId,
    /// The suspending engine's epoch.
    pub epoch: u64,
    /// When a timer (or a wait's deadline) wakes it, if one does.
    pub wake_at: Option<Timestamp>,
    /// The wake-up count the engine saw last.
    pub observed_wakeups: u64,
}

/// What [`Store::suspend`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Suspended {
    /// The execution is `waiting`.
    Yes,
    /// Not suspended: deliveries arrived; the wake-up count is now this.
    Woken(u64),
    /// Not suspended: its cancellation was requested.
    Cancelled,
}

/// Which finished executions [`Store::purge`] deletes: those matching either condition.
#[derive(Clone, Debug)]
pub struct Purge {
    /// Those whose retention ended at or before this time.
    pub retained_before: Option<Timestamp>,
    /// Those that finished (last changed) before this time, whatever their retention.
    pub finished_before: Option<Timestamp>,
    /// At most this many in one call.
    pub limit: usize,
}

/// A new key for signing completion tokens (see [`Store::token_key`]).
pub(crate) fn random_token_key() -> [u8; 32] {
    let mut key = [0; 32];
    // The operating system's generator does not fail on the platforms the store runs on; if
    // it ever did, a fixed key would make tokens forgeable, so do not go on.
    getrandom::fill(&mut key).expect("the operating system's random generator");
    key
}

/// What a durable store promises once a write is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit reaches the disk (fsync) before it is acknowledged: an acknowledged step
    /// survives a crash of the process, of the operating system, and a power loss.
    #[default]
    Full,
    /// Commits are handed to the operating system but not synced: an acknowledged step
    /// survives a crash of the process, but a power loss or kernel crash may lose the last
    /// commits (never corrupting the store). Much faster on disks with slow syncs.
    Process,
}

/// A new execution.
///
/// New executions always come from registered definitions, so their names are `'static`.
#[derive(Clone, Debug)]
pub struct NewExecution {
    /// Its id.
    pub id: ExecutionId,
    /// The workflow's registered name.
    pub workflow: &'static str,
    /// The workflow's code fingerprint.
    pub fingerprint: &'static str,
    /// The workflow's declared version.
    pub version: u32,
    /// The input, as JSON.
    pub input: Box<RawValue>,
    /// The owning engine; `None` for an execution started by a client-only engine, which any
    /// worker's next claim takes at once (its lease is then unset).
    pub owner: Option<Arc<str>>,
    /// Until when the owner's lease holds.
    pub lease_until: Timestamp,
    /// Creation time.
    pub now: Timestamp,
    /// The exclusive key to hold while running, if any.
    pub exclusive_key: Option<String>,
    /// The queue it starts on, if any: it is created `queued`, at epoch 0, with no owner (a
    /// claim admits it; see [`Store::claim_orphans`]).
    pub queue: Option<String>,
    /// With an exclusive key: refuse to create the execution if the key is held, instead of
    /// queueing it (`pending`) behind the holder.
    pub fail_if_held: bool,
    /// The execution this one re-runs.
    pub rerun_of: Option<ExecutionId>,
    /// The parent execution and the parent's key for this child, for child workflows.
    pub parent: Option<(ExecutionId, String)>,
    /// When it times out, if its workflow has a timeout.
    pub deadline: Option<Timestamp>,
    /// How many journal entries the execution will probably write (the step calls in the
    /// workflow's code): a hint for stores that preallocate.
    pub expected_entries: usize,
}

/// What [`Store::create_execution`] did.
#[derive(Debug)]
pub enum CreateOutcome {
    /// The execution was created, `running`.
    Created,
    /// The execution was created `pending`: another active execution holds its exclusive key.
    Queued,
    /// Not created: `fail_if_held` was set and this execution holds the exclusive key.
    KeyHeld(ExecutionId),
    /// An execution with this id existed; here it is, unchanged.
    Exists(Box<ExecutionRecord>),
}

/// How durable a write must be before its [`WriteAck`] resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteMode {
    /// As durable as the store's durability setting promises, before the ack resolves.
    Durable,
    /// May wait for the next durable write (or a short timer): for records whose loss in a
    /// crash is harmless, such as "attempt 1 started".
    Lazy,
}

/// The entries of one write: usually one, kept inline to spare an allocation per step.
pub type JournalEntries = smallvec::SmallVec<[JournalEntry; 1]>;

/// A state change written together with journal entries.
#[derive(Clone, Debug)]
pub struct Transition {
    /// The new state.
    pub state: ExecutionState,
    /// The output, when completing.
    pub result: Option<Box<RawValue>>,
    /// The failure, when failing.
    pub failure: Option<Failure>,
    /// When a finished execution may be purged.
    pub retain_until: Option<Timestamp>,
    /// For a move to `blocked`: every build that could not replay the execution, this one
    /// included (stored as [`ExecutionRecord::blocked_by`]; ignored for other states).
    pub blocked_by: Vec<String>,
}

/// Journal entries and an optional state change of one execution, written atomically.
#[derive(Debug)]
pub struct AppendBatch {
    /// The execution.
    pub execution: ExecutionId,
    /// The writer's lease epoch; the store refuses the write if the execution's epoch differs.
    pub epoch: u64,
    /// Entries to append, with consecutive indexes following the journal's last one.
    pub entries: JournalEntries,
    /// A state change, if any.
    pub transition: Option<Transition>,
    /// How durable it must be before the ack resolves.
    pub mode: WriteMode,
    /// A delivery to another execution, made in the same write: a child's final state and
    /// its result in the parent's inbox are stored together.
    pub deliver: Option<Box<Delivery>>,
    /// Events a step emitted, recorded with its completion (this write). A held one is
    /// dispatched only once the execution completes, and deleted if it finishes any other
    /// way: a write that ends the execution releases or deletes its held events.
    pub events: Vec<StepEvent>,
}

/// An event a step emitted (see [`AppendBatch::events`]).
#[derive(Clone, Debug)]
pub struct StepEvent {
    /// The event.
    pub event: NewEvent,
    /// Published only once the execution completes.
    pub held: bool,
}

/// The acknowledgement of a submitted write: resolves when the write is durable.
///
/// A concrete type rather than a boxed future: writes are on the per-step path.
#[must_use = "an ack does nothing unless awaited; the write itself is already submitted"]
pub struct StoreAck<T>(AckInner<T>);

/// The acknowledgement of a journal write.
pub type WriteAck = StoreAck<()>;

enum AckInner<T> {
    // Boxed: a store error is large and rare, and acks are part of every step's future.
    Ready(Option<Result<T, Box<StoreError>>>),
    Pending(oneshot::Receiver<Result<T, StoreError>>),
}

impl<T> StoreAck<T> {
    /// An ack that is already resolved (for stores that apply writes synchronously).
    pub fn ready(result: Result<T, StoreError>) -> Self {
        Self(AckInner::Ready(Some(result.map_err(Box::new))))
    }

    /// True if it resolved already, successfully (a write a synchronous store applied).
    pub(crate) fn is_ready_ok(&self) -> bool {
        matches!(self.0, AckInner::Ready(Some(Ok(_))))
    }

    /// An ack resolved by the store's writer through a oneshot channel.
    pub fn pending(receiver: oneshot::Receiver<Result<T, StoreError>>) -> Self {
        Self(AckInner::Pending(receiver))
    }
}

impl<T: Unpin> Future for StoreAck<T> {
    type Output = Result<T, StoreError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.0 {
            AckInner::Ready(result) => Poll::Ready(match result.take() {
                Some(result) => result.map_err(|error| *error),
                None => Err(StoreError::Unavailable("a store acknowledgement was polled after it resolved".into())),
            }),
            AckInner::Pending(receiver) => Pin::new(receiver)
                .poll(cx)
                .map(|r| r.unwrap_or_else(|_| Err(StoreError::Unavailable("the store's writer stopped".into())))),
        }
    }
}

/// An owner of active executions, as [`Store::owners`] lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerLeases {
    /// The owning engine's id.
    pub owner: String,
    /// How many active executions it holds.
    pub executions: u64,
    /// The latest end of their leases.
    pub lease_until: Option<Timestamp>,
    /// The earliest end of their leases: from then on, if the owner is gone, one of them is
    /// an orphan.
    pub earliest_lease_until: Option<Timestamp>,
}

/// A renewal of the leases one engine holds (see [`Store::renew_leases`]).
#[derive(Clone, Debug)]
pub struct Renewal {
    /// The renewing engine.
    pub owner: String,
    /// The executions it drives, with the epoch it holds each at.
    pub held: Vec<(ExecutionId, u64)>,
    /// The new end of their leases.
    pub lease_until: Timestamp,
}

/// What [`Store::renew_leases`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Renewals {
    /// The executions whose lease it extended.
    pub renewed: Vec<Renewed>,
    /// The executions it could not lock without waiting (another transaction held their row
    /// all along): still held by this engine as far as the store knew, their leases unchanged.
    pub busy: Vec<ExecutionId>,
}

/// An execution whose lease [`Store::renew_leases`] extended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Renewed {
    /// The execution.
    pub execution: ExecutionId,
    /// Its lease epoch.
    pub epoch: u64,
    /// Its cancellation was requested.
    pub cancel_requested: bool,
}

/// A request to take over orphaned executions.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The claiming engine.
    pub owner: String,
    /// The current time: leases that ended before it are expired.
    pub now: Timestamp,
    /// The new lease's end.
    pub lease_until: Timestamp,
    /// At most this many.
    pub limit: usize,
    /// Only executions of these workflows, each `name@version` (see [`Claim::workflow_key`]):
    /// the versions the claiming engine has the code of. An execution of a version the engine
    /// lacks is left for a worker that has it (a rolling deploy: old workers never take what
    /// new ones started).
    pub workflows: Vec<String>,
    /// Only this execution, if set.
    pub only: Option<ExecutionId>,
    /// Set (to the claiming engine's build, see [`ExecutionRecord::blocked_by`]): take only
    /// `blocked` executions that this build has not blocked — its code may replay them — and
    /// nothing else.
    pub unblock: Option<String>,
}

impl Claim {
    /// How [`Claim::workflows`] names version `version` of workflow `name`.
    pub fn workflow_key(name: &str, version: u32) -> String {
        format!("{name}@{version}")
    }

    /// True if the claim is for executions of version `version` of workflow `name`.
    pub fn runs(&self, name: &str, version: u32) -> bool {
        self.workflows
            .iter()
            .any(|key| key.rsplit_once('@').is_some_and(|(n, v)| n == name && v.parse::<u32>().ok() == Some(version)))
    }
}

/// What [`Store::list_executions`] found: the executions, and the rows that could not be
/// decoded (damaged: hand-edited, bit rot), each named, never failing the whole listing.
#[derive(Debug, Default)]
pub struct ExecutionList {
    /// The executions, newest first.
    pub records: Vec<ExecutionRecord>,
    /// The rows that matched but could not be decoded.
    pub damaged: Vec<DamagedExecution>,
}

/// What a store's integrity check found ([`SqliteStore::check`](crate::SqliteStore::check),
/// `workflows check`).
#[derive(Debug, Default, Clone)]
pub struct CheckReport {
    /// What the store's own check of its file found (SQLite's `quick_check` or
    /// `integrity_check`); empty when it found nothing.
    pub store_problems: Vec<String>,
    /// The executions whose data is damaged, and what is damaged.
    pub damaged: Vec<DamagedExecution>,
    /// How many executions were read.
    pub executions: u64,
    /// How many journal entries were read (of the executions that are not damaged).
    pub journal_entries: u64,
    /// The store's own check of its storage, if it ran one (`SQLite quick_check`); `None`
    /// where the store has none to run (PostgreSQL checks its own pages; memory).
    pub store_check: Option<String>,
}

impl CheckReport {
    /// True if nothing is damaged.
    pub fn is_clean(&self) -> bool {
        self.store_problems.is_empty() && self.damaged.is_empty()
    }
}

/// A stored execution that could not be decoded.
#[derive(Debug, Clone)]
pub struct DamagedExecution {
    /// Its id (with any bytes that are not UTF-8 replaced).
    pub id: ExecutionId,
    /// What is damaged.
    pub problem: String,
}

/// A filter for [`Engine::executions`](crate::Engine::executions).
#[derive(Clone, Debug, Default)]
pub struct ExecutionQuery {
    /// Only executions in one of these states (all when empty).
    pub states: Vec<ExecutionState>,
    /// Only executions of this workflow.
    pub workflow: Option<String>,
    /// Only executions created at or after this time.
    pub since: Option<Timestamp>,
    /// Only executions created before this time (for paging, newest first).
    pub before: Option<Timestamp>,
    /// Only executions listed after this one, newest first: the next page, at the same cost
    /// however deep (an offset costs what it skips).
    pub after: Option<PageCursor>,
    /// At most this many (all when `None`).
    pub limit: Option<usize>,
    /// Skip this many first (for paging; prefer `after`).
    pub offset: usize,
}

impl ExecutionQuery {
    /// True if `record` passes the filter (ignoring the limit).
    pub fn matches(&self, record: &ExecutionRecord) -> bool {
        (self.states.is_empty() || self.states.contains(&record.state))
            && self.workflow.as_deref().is_none_or(|w| w == record.workflow)
            && self.since.is_none_or(|t| record.created_at >= t)
            && self.before.is_none_or(|t| record.created_at < t)
            && self.after.as_ref().is_none_or(|after| after.is_before(record))
    }
}

/// Where a page of a listing ends: the last execution listed (listings are newest first, ties
/// by id). `Display` and `FromStr` give its text form, `<created_at in µs>.<id>`, which the
/// `workflows executions` command prints and takes (`--after`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCursor {
    /// When the last execution listed was created.
    pub created_at: Timestamp,
    /// Its id.
    pub id: ExecutionId,
}

impl PageCursor {
    /// The cursor after `record`.
    pub fn after(record: &ExecutionRecord) -> Self {
        Self { created_at: record.created_at, id: record.id.clone() }
    }

    /// True if `record` comes after the cursor, newest first.
    fn is_before(&self, record: &ExecutionRecord) -> bool {
        (record.created_at, record.id.as_str()) < (self.created_at, self.id.as_str())
    }
}

impl std::fmt::Display for PageCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at.as_micros(), self.id)
    }
}

impl std::str::FromStr for PageCursor {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}` is not a page cursor: pass the `next` value a listing printed");
        let (micros, id) = text.split_once('.').ok_or_else(invalid)?;
        let micros: i64 = micros.parse().map_err(|_| invalid())?;
        if id.is_empty() {
            return Err(invalid());
        }
        Ok(Self { created_at: Timestamp::from_micros(micros), id: ExecutionId::from(id) })
    }
}

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write carried an older lease epoch than the execution's: another engine owns it now.
    #[error(
        "execution {execution} is owned by another engine now (lease epoch {current}, this write had {attempted}); \
         this engine stopped driving it"
    )]
    Fenced {
        /// The execution.
        execution: ExecutionId,
        /// The epoch in the store.
        current: u64,
        /// The epoch of the refused write.
        attempted: u64,
    },
    /// The write's journal index does not follow the journal's last entry.
    #[error("journal of execution {execution} is out of sequence: expected index {expected}, got {got}")]
    OutOfSequence {
        /// The execution.
        execution: ExecutionId,
        /// The next index the store expected.
        expected: u64,
        /// The index written.
        got: u64,
    },
    /// The execution does not exist.
    #[error("execution {0} does not exist in the store")]
    NotFound(ExecutionId),
    /// A stored row could not be decoded.
    #[error("execution {execution}: stored data cannot be decoded ({what}): {detail}")]
    Corrupt {
        /// The execution.
        execution: ExecutionId,
        /// Which row or field.
        what: String,
        /// The decoder's message.
        detail: String,
    },
    /// The store was written by a newer version of the schema than this build knows.
    #[error(
        "the workflows store {} has schema version {found}, newer than this build supports ({supported}); \
         upgrade workflows-runtime to open it (nothing was changed)",
        path.display()
    )]
    NewerSchema {
        /// The store's file.
        path: std::path::PathBuf,
        /// The version in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// The file is not a workflows store.
    #[error("{} is not a workflows store: {detail}", path.display())]
    NotAStore {
        /// The file.
        path: std::path::PathBuf,
        /// What was found.
        detail: String,
    },
    /// The store cannot be used (closed, stopped, unreachable).
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// The store's backend reported an error.
    #[error("{context}: {source}")]
    Backend {
        /// What the store was doing.
        context: String,
        /// The backend's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    /// The refusal of a write behind one of the same execution and epoch that failed: an
    /// execution's writes land in order or not at all, so a state change submitted before an
    /// earlier write's failure was known never lands without it. A takeover writes at a new
    /// epoch.
    pub(crate) fn earlier_write_failed(execution: &ExecutionId) -> Self {
        Self::Unavailable(format!(
            "an earlier write of execution {execution} failed, so this later one is refused; the execution resumes \
             from what is stored"
        ))
    }
}
