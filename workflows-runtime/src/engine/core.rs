//! The engine's data: what an engine holds ([`EngineInner`]) and what it holds for each
//! execution it drives ([`LiveExecution`]).
//!
//! The two refer to each other — an engine tracks the executions it drives, and each of them
//! points back at its engine (its store, its lease clock, its event stream) — so they are
//! declared together here, as plain data. What they do is elsewhere: the engine's bookkeeping
//! in `state.rs`, an execution's in `live.rs`, creating one in `create.rs`.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::task::Waker;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::task::AbortHandle;

use super::lease::{HeldLease, LeaseClock};
use super::token::TokenKey;
use crate::container::Container;
use crate::execution::ExecutionId;
use crate::failure::Failure;
use crate::journal::replay::Progress;
use crate::policy::RetryPolicy;
use crate::registry::WorkflowInfo;
use crate::store::{Store, StoreError, WriteAck};
use crate::time::Timestamp;

/// What an engine holds: shared by its [`Engine`](crate::Engine) handles and by every
/// execution it drives.
pub(crate) struct EngineInner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) container: Container,
    /// The retry policy of steps that set none, if the application chose one (see
    /// [`EngineInner::retry_budget`]).
    pub(crate) default_retry: Option<RetryPolicy>,
    /// How long finished executions of workflows that set no retention are kept.
    pub(crate) retention: Duration,
    /// How long dispatched events are kept (see `EngineBuilder::event_retention`).
    pub(crate) event_retention: Duration,
    /// This engine's owner id in the store: unique per engine instance.
    pub(crate) owner: Arc<str>,
    pub(crate) lease: Duration,
    /// The clock leases are proven by (see [`lease`]).
    pub(crate) lease_clock: LeaseClock,
    /// Under a test clock (see [`EngineInner::poll`]).
    pub(crate) virtual_time: bool,
    /// The steps doubled in this engine (a test's).
    #[cfg(feature = "testing")]
    pub(crate) doubles: super::double::Doubles,
    /// Told of every step body that begins (the crash explorer's check).
    #[cfg(feature = "testing")]
    pub(crate) body_observer: Option<super::double::BodyObserver>,
    /// What completion tokens are signed with (see [`token`]).
    pub(crate) token_key: TokenKey,
    /// Executions this engine is driving.
    pub(crate) live: Mutex<LiveTasks>,
    /// Executions this engine stopped driving after a store error, with their epochs: their
    /// ownership is given up as soon as the store accepts it, so they can be taken over.
    pub(crate) abandoned: Mutex<Vec<(ExecutionId, u64)>>,
    /// The creation time of this engine's latest creation, in microseconds: each creation gets
    /// a later one, so that its owner and creation time name one write (see `create`).
    pub(crate) last_creation: std::sync::atomic::AtomicI64,
    /// Notified when an execution holding an exclusive key ends here, so that the executions
    /// queued for a key retry at once instead of at their next poll.
    pub(crate) key_released: tokio::sync::Notify,
    /// Another process says there is work to take (see `background::spawn_notices`).
    pub(crate) work_available: Arc<tokio::sync::Notify>,
    /// How often finished executions past their retention are purged (zero: never).
    pub(crate) purge_interval: Duration,
    pub(crate) closed: AtomicBool,
    /// Set by [`Engine::drain`]: no more executions are taken over or resumed here.
    pub(crate) draining: AtomicBool,
    /// Wakes the timer scheduler: an execution was suspended until some time.
    pub(crate) timer_changed: tokio::sync::Notify,
    /// The execution event stream (see [`Engine::subscribe`]).
    pub(crate) events: crate::events::EventHub,
    /// The registered schedules, parsed (see `scheduler`); a worker engine runs them unless
    /// built with `run_schedules(false)`.
    pub(crate) scheduled: Vec<super::scheduler::Scheduled>,
    /// The workflows that start on events, by event name (see `dispatch`).
    pub(crate) subscribers: super::dispatch::Subscribers,
    /// Wakes the event dispatcher: an event was recorded (here, or on PostgreSQL elsewhere).
    pub(crate) events_emitted: Arc<tokio::sync::Notify>,
    /// The queues this engine defines, by name (see [`crate::Queue`]).
    pub(crate) queues: HashMap<String, crate::Queue>,
    /// False for a client engine (see [`EngineBuilder::worker`]).
    pub(crate) worker: bool,
    /// Runs nothing: what it starts is left for the workers (see `EngineBuilder::client_only`).
    pub(crate) client_only: bool,
    /// Takes over at once from a gone process on this host (see `EngineBuilder::same_host_takeover`).
    pub(crate) same_host_takeover: bool,
    /// This process as the journal names it (`host:pid`): who ran each attempt.
    pub(crate) process: Arc<str>,
    /// Replays only (see `replay_check`): no step body, compensation or child runs; an
    /// execution that reaches what its journal does not record stops there.
    pub(crate) replay_only: bool,
    /// The build to record and claim blocked executions as, when not this process's own (see
    /// `blocked::this_build` and `EngineBuilder::build_id`).
    pub(crate) build_override: Option<Arc<str>>,
    /// Callers waiting for executions to finish, by execution (see [`handle::wait_for`]).
    pub(crate) watchers: Mutex<HashMap<ExecutionId, Arc<tokio::sync::Notify>, foldhash::fast::RandomState>>,
    /// The runtime the engine started on: an execution run in its caller's task moves here
    /// when the caller stops waiting (see [`inline`]).
    pub(crate) runtime: tokio::runtime::Handle,
}

/// The executions an engine drives, with their tasks' abort handles.
pub(crate) type LiveTasks = HashMap<ExecutionId, LiveTask, foldhash::fast::RandomState>;

pub(crate) struct LiveTask {
    pub(crate) execution: Arc<LiveExecution>,
    /// Filled in once the task is spawned.
    pub(crate) handle: Option<Stopper>,
}

/// Stops an execution's task where it stands.
pub(crate) enum Stopper {
    /// A spawned task.
    Task(AbortHandle),
    /// A task its caller polls (see [`inline`]), or that moved to a task of its own since.
    Inline(futures_util::future::AbortHandle),
}

impl Stopper {
    pub(crate) fn abort(&self) {
        match self {
            Self::Task(handle) => handle.abort(),
            Self::Inline(handle) => handle.abort(),
        }
    }
}

/// Why the engine stops driving an execution's body before it returns.
pub(crate) enum Abort {
    /// The execution fails without compensation.
    Fail(Failure),
    /// The code cannot replay the journal: the execution is parked `blocked` (see
    /// [`super::blocked`]), nothing compensated.
    Block(Failure),
    /// A step failed for good (with `on_failure = "fail"`): compensate.
    Compensate(Failure),
    /// The execution was cancelled or ran out of time: compensate, and end `cancelled` or
    /// `timed_out` (the failure's kind says which).
    Stop(Failure),
    /// A store write failed: the execution stays as stored; another start resumes it.
    Store(StoreError),
    /// A step with `on_failure = "pause"` failed for good: the execution is parked `paused`
    /// (see `blocked::pause`), nothing compensated.
    Pause(Failure),
    /// A replay-only engine reached what the journal does not record: it stops there, writing
    /// nothing (see `replay_check`).
    ReplayEnd,
    /// This engine can no longer prove that it holds the execution's lease (see
    /// [`super::lease`]): it gives the execution up, for whoever owns it now.
    LeaseLost(String),
}

pub(crate) struct LiveExecution {
    pub(crate) id: ExecutionId,
    pub(crate) definition: &'static WorkflowInfo,
    pub(crate) engine: Arc<EngineInner>,
    /// The per-run container, consulted before the engine's.
    pub(crate) container: Option<Container>,
    /// The lease epoch every write carries.
    pub(crate) epoch: u64,
    /// How long this engine can prove it holds the lease.
    pub(crate) lease: HeldLease,
    /// Notified when the lease is lost: a compensation under way stops at once.
    pub(crate) lease_lost: tokio::sync::Notify,
    /// The workflow fingerprint recorded when the execution started.
    pub(crate) started_fingerprint: Cow<'static, str>,
    /// The builds that could not replay it before (see `blocked`).
    pub(crate) blocked_by: Vec<String>,
    /// Set with `state.abort`, so the driver can check it on every poll without the lock.
    pub(crate) aborted: AtomicBool,
    /// True while journaled outcomes remain to be replayed (see [`LiveExecution::turn`]).
    pub(crate) replaying: AtomicBool,
    pub(crate) state: Mutex<State>,
    /// Durable writes submitted and not yet confirmed (see [`LiveExecution::defer`]).
    pub(crate) unconfirmed: Mutex<Unconfirmed>,
    /// Why the execution must stop (cancelled, timed out), once it must.
    pub(crate) stopping: Mutex<Option<Failure>>,
    /// Set with `stopping`, for lock-free checks.
    pub(crate) stop_requested: AtomicBool,
    /// Wakes step bodies waiting on [`crate::StepContext::cancelled`].
    pub(crate) stop_signal: tokio::sync::Notify,
    /// Step attempts running now: a timed-out workflow lets them finish.
    pub(crate) running_steps: AtomicU32,
    /// Branches doing something other than a durable wait (about to run a step body, starting
    /// a child): the execution is not suspended while any is.
    pub(crate) busy: AtomicU32,
    /// The driver's waker, to stop a body that is idle.
    pub(crate) waker: Mutex<Option<Waker>>,
    /// When the execution times out.
    pub(crate) deadline: Option<Timestamp>,
    /// The exclusive key it holds (or waits for).
    pub(crate) exclusive_key: Option<String>,
    /// It holds a slot of a queue until it finishes.
    pub(crate) in_queue: bool,
    /// For a child execution: the parent and the parent's key for it.
    pub(crate) parent: Option<(ExecutionId, String)>,
    /// The branches waiting on something durable (see [`LiveExecution::wait`]).
    pub(crate) waits: Mutex<Vec<Wait>>,
    /// Events the step bodies under way emitted (see [`crate::StepContext::emit`]), recorded
    /// with the completion of the attempt that emitted them.
    pub(crate) step_events: Mutex<Vec<PendingEvent>>,
    /// A step body of this execution emitted an event here: its completions look for them, and
    /// its end wakes the dispatcher (most executions emit none, and pay neither).
    pub(crate) emitted: AtomicBool,
    /// How many deliveries the store had counted when this engine last looked.
    pub(crate) observed_wakeups: std::sync::atomic::AtomicU64,
    /// Wakes the waits to look at the inbox again.
    pub(crate) inbox_signal: tokio::sync::Notify,
    /// Step bodies whose calls were dropped while they ran, running to their end (see
    /// [`LiveExecution::detach`]); polled by the driver.
    pub(crate) detached: Mutex<FuturesUnordered<DetachedBody>>,
    /// Set while `detached` may hold something, for lock-free checks on every poll.
    pub(crate) has_detached: AtomicBool,
    /// Set when the execution is being given up (a store error, a lost lease): bodies whose
    /// calls are dropped then are dropped too, not finished.
    pub(crate) tearing_down: AtomicBool,
}

/// A step body running to its end after its call was dropped, with the journaling of its
/// outcome.
pub(crate) type DetachedBody = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A branch in a durable wait.
pub(crate) struct Wait {
    pub(crate) seq: u32,
    /// When it ends by itself (a timer's wake time, a wait's deadline).
    pub(crate) until: Option<Timestamp>,
    /// For waits on the inbox: the wake-up count when it last looked (`None`: a timer).
    pub(crate) checked: Option<u64>,
}

/// Acks of durable writes, in submission order.
#[derive(Default)]
pub(crate) struct Unconfirmed {
    pub(crate) acks: VecDeque<WriteAck>,
    /// The wakers of the barriers waiting for the oldest ack: every one is woken when it
    /// resolves (branches of a fan-out have wakers of their own).
    pub(crate) waiting: Arc<BarrierWakers>,
    /// How many durable writes were submitted.
    pub(crate) submitted: u64,
    /// How many of them are confirmed durable (or failed).
    pub(crate) confirmed: u64,
    /// Why a durable write failed, once one did: every barrier from then on fails too, so
    /// that no side effect happens behind a write that did not land, whichever branch of the
    /// workflow heard of the failure first.
    pub(crate) failed: Option<String>,
}

pub(crate) struct State {
    pub(crate) progress: Progress,
    pub(crate) abort: Option<Abort>,
}

/// The wakers of the barriers waiting for the oldest durable write (see `live.rs`).
#[derive(Default)]
pub(crate) struct BarrierWakers(pub(crate) Mutex<Vec<Waker>>);

impl std::task::Wake for BarrierWakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let wakers = std::mem::take(&mut *self.0.lock());
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// An event a step body emitted, until its attempt's completion is journaled.
pub(crate) struct PendingEvent {
    pub(crate) key: crate::journal::CallKey,
    pub(crate) attempt: u32,
    pub(crate) name: String,
    pub(crate) payload: Box<serde_json::value::RawValue>,
    /// Published only once the execution completes.
    pub(crate) held: bool,
}
