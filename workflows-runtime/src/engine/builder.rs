//! Configuring and starting an [`Engine`]: its store, container, policies and lease; at start,
//! it resumes what it should and starts its background work (`background.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use parking_lot::Mutex;

use super::core::EngineInner;
use super::engine::Engine;
use super::{background, lease, owner, token};
use crate::container::Container;
use crate::policy::{DEFAULT_RETENTION, RetryPolicy};
use crate::registry::{Registry, RegistryError};
use crate::store::{self, IntoStore, MemoryStore, SqliteOptions, SqliteStore, Store, StoreError};

impl Engine {
    /// Configures a new engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }
}

/// Configures and starts an [`Engine`]: its store, the application's services, queues,
/// retention, leases.
///
/// ```no_run
/// use std::time::Duration;
/// use workflows_runtime::prelude::*;
/// use workflows_runtime::Queue;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// struct Mailer; // one of the application's services, resolved by steps
///
/// let engine = Engine::builder()
///     .sqlite("workflows.db")                 // or .postgres("postgres://app@db/orders"), .memory()
///     .container(Container::new().with(Mailer))
///     .queue(Queue::new("emails").concurrency(10).rate(100, Duration::from_secs(60)))
///     .retention(Duration::from_secs(30 * 24 * 3600))
///     .start()
///     .await?;
/// # let _ = engine; Ok(()) }
/// ```
#[must_use = "call .start().await to get an engine"]
pub struct EngineBuilder {
    store: StoreChoice,
    container: Container,
    /// `None`: 30 s, or under a test clock an hour (see [`VIRTUAL_LEASE`]).
    lease: Option<Duration>,
    default_retry: Option<RetryPolicy>,
    retention: Duration,
    event_retention: Duration,
    purge_interval: Duration,
    worker: bool,
    client_only: bool,
    queues: Vec<crate::Queue>,
    run_schedules: bool,
    same_host_takeover: bool,
    build_id: Option<String>,
    replay_only: bool,
    #[cfg(feature = "redis")]
    sources: Vec<std::sync::Arc<crate::RedisSource>>,
    #[cfg(feature = "testing")]
    doubles: super::double::Doubles,
    #[cfg(feature = "testing")]
    body_observer: Option<super::double::BodyObserver>,
}

/// Which store the engine will use; file stores are opened by `start`.
enum StoreChoice {
    /// `$WORKFLOWS_STORE`, or `sqlite:workflows.db`.
    Default,
    Url(String),
    Sqlite(PathBuf, SqliteOptions),
    #[cfg(feature = "postgres")]
    Postgres(String, crate::PostgresOptions),
    Given(Arc<dyn Store>),
}

/// The engine could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Two workflows or two steps share a name.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A queue's limits cannot be used (a concurrency or a rate of 0, say).
    #[error("{0}")]
    Queue(String),
    /// A workflow's schedule cannot be used (its cron pattern or time zone).
    #[error("{0}")]
    Schedule(String),
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            store: StoreChoice::Default,
            container: Container::new(),
            lease: None,
            default_retry: None,
            retention: DEFAULT_RETENTION,
            event_retention: DEFAULT_RETENTION,
            purge_interval: Duration::from_secs(60),
            worker: true,
            client_only: false,
            queues: Vec::new(),
            run_schedules: true,
            same_host_takeover: true,
            build_id: None,
            replay_only: false,
            #[cfg(feature = "redis")]
            sources: Vec::new(),
            #[cfg(feature = "testing")]
            doubles: Default::default(),
            #[cfg(feature = "testing")]
            body_observer: None,
        }
    }
}

impl EngineBuilder {
    /// Keeps executions in `store`.
    ///
    /// Without a store, the engine uses the one `$WORKFLOWS_STORE` names (`sqlite:PATH` or
    /// `memory`), or else the SQLite file `workflows.db` in the working directory.
    pub fn store(mut self, store: impl IntoStore) -> Self {
        self.store = StoreChoice::Given(store.into_shared().0);
        self
    }

    /// Keeps executions in any implementation of the store contract (the crate's own tests
    /// wrap a store to hold or fail its operations).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn store_contract(mut self, store: Arc<dyn Store>) -> Self {
        self.store = StoreChoice::Given(store);
        self
    }

    /// Keeps executions in the SQLite file at `path` (created if missing), fsyncing every
    /// commit ([`Durability::Full`](crate::Durability::Full)).
    pub fn sqlite(self, path: impl Into<PathBuf>) -> Self {
        self.sqlite_with(path, SqliteOptions::default())
    }

    /// Keeps executions in the SQLite file at `path`, with options (such as the durability).
    pub fn sqlite_with(mut self, path: impl Into<PathBuf>, options: SqliteOptions) -> Self {
        self.store = StoreChoice::Sqlite(path.into(), options);
        self
    }

    /// Keeps executions in the PostgreSQL database `url` names (`postgres://user@host/db`;
    /// `?schema=NAME` picks the PostgreSQL schema, `workflows` by default): every process
    /// connected to it shares the work. `start()` connects, and fails with a message naming the
    /// URL (its password hidden) if the database cannot be reached.
    #[cfg(feature = "postgres")]
    pub fn postgres(self, url: impl Into<String>) -> Self {
        self.postgres_with(url, crate::PostgresOptions::default())
    }

    /// Keeps executions in PostgreSQL, with options (the schema, the pool size).
    #[cfg(feature = "postgres")]
    pub fn postgres_with(mut self, url: impl Into<String>, options: crate::PostgresOptions) -> Self {
        self.store = StoreChoice::Postgres(url.into(), options);
        self
    }

    /// Keeps executions in the store a URL names: `sqlite:PATH`, `postgres://…` (with the
    /// `postgres` feature) or `memory`.
    pub fn store_url(mut self, url: impl Into<String>) -> Self {
        self.store = StoreChoice::Url(url.into());
        self
    }

    /// Keeps executions in memory: nothing survives the process (tests, benchmarks).
    pub fn memory(self) -> Self {
        self.store(MemoryStore::new())
    }

    /// The services steps can [`resolve`](crate::StepContext::resolve).
    pub fn container(mut self, container: Container) -> Self {
        self.container = container;
        self
    }

    /// The retry policy of steps without `#[step(retry(...))]`. Without it, a step that fails
    /// is not retried (retrying is a decision about the step's side effects), and an attempt a
    /// crash interrupted runs again after the restart. With it, as with a step's own policy,
    /// `max_attempts` bounds the attempts that start, interrupted ones included.
    pub fn default_retry(mut self, policy: RetryPolicy) -> Self {
        self.default_retry = Some(policy);
        self
    }

    /// How long finished executions of workflows without `#[workflow(retention = "...")]` are
    /// kept before they are purged (default 7 days).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// How long dispatched events are kept (default 7 days): an event's id deduplicates its
    /// emits for this long (an `emit_with_id` of an id whose event was purged records a new
    /// event — whose subscribers do not run again while their executions for it are kept).
    /// Events not dispatched yet, held by a running execution, or undelivered to a subscriber
    /// are kept.
    pub fn event_retention(mut self, retention: Duration) -> Self {
        self.event_retention = retention;
        self
    }

    /// How often the engine purges finished executions and dispatched events past their
    /// retention (default every minute, in small batches). `Duration::ZERO` turns the
    /// background purge off.
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = interval;
        self
    }

    /// How long this engine's ownership of an execution lasts without renewal (default 30 s).
    /// The engine renews its leases every third of it; when a process dies, another engine on
    /// the same store takes its executions over once their leases expire.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease = Some(lease.max(Duration::from_millis(30)));
        self
    }

    /// Whether this engine is a worker (the default): one that takes over the executions on
    /// the store whose owner is gone, at start and periodically, and resumes suspended
    /// executions when their timers are due.
    ///
    /// `worker(false)` makes a *client* engine, for a command-line tool or an admin endpoint:
    /// it drives only the executions it starts, the ones it wakes by a delivery
    /// ([`Engine::complete_step`], [`Engine::send_event`]) and the ones it cancels, and leaves
    /// the rest to the workers.
    pub fn worker(mut self, worker: bool) -> Self {
        self.worker = worker;
        self
    }

    /// Makes a *client-only* engine, for the processes of a fleet that start work but do not
    /// run it (an API server beside its workers): the executions it starts are left, unowned,
    /// for the workers sharing its store, which take them at once (on PostgreSQL they are
    /// woken by `LISTEN/NOTIFY`; otherwise at their next claim, every half lease); `run` and
    /// [`ExecutionHandle::result`](crate::ExecutionHandle::result) wait for the result in the
    /// store. It runs no workflow body, takes nothing over, and leaves what its deliveries
    /// and cancellations wake to the workers. Without a worker on its store, nothing it starts
    /// runs.
    pub fn client_only(mut self) -> Self {
        self.client_only = true;
        self.worker = false;
        self
    }

    /// Defines a queue that runs can be started on ([`RunOptions::queue`](crate::RunOptions::queue)).
    /// Its limits are stored when the engine starts, replacing the stored ones, and hold for
    /// every engine sharing the store: define a queue the same way in every process (a client
    /// may also start runs on a queue that only its workers define).
    pub fn queue(mut self, queue: crate::Queue) -> Self {
        self.queues.retain(|q| q.name != queue.name);
        self.queues.push(queue);
        self
    }

    /// Records the messages of a Redis stream as events (see [`crate::RedisSource`]), when this
    /// engine is a worker.
    #[cfg(feature = "redis")]
    pub fn source(mut self, source: crate::RedisSource) -> Self {
        self.sources.push(std::sync::Arc::new(source));
        self
    }

    /// Whether this engine starts the runs of the registered schedules
    /// (`#[workflow(schedule = "...")]`), when it is a worker: true by default. Every process
    /// that does takes part (each tick still runs once); turn it off where another process
    /// owns the schedules.
    pub fn run_schedules(mut self, run: bool) -> Self {
        self.run_schedules = run;
        self
    }

    /// Whether this engine takes over at once the executions of an engine whose process on
    /// the same host is gone (true by default), rather than when its lease ends. Off, it
    /// behaves as if every other engine ran on another host: for benchmarks and tests of
    /// takeovers across machines.
    #[doc(hidden)]
    pub fn same_host_takeover(mut self, on: bool) -> Self {
        self.same_host_takeover = on;
        self
    }

    /// The build this engine records when it blocks an execution, and claims blocked
    /// executions as (see [`Engine::build_id`]): by default a hash of the process's executable.
    /// For tests that play two deploys in one process.
    #[doc(hidden)]
    pub fn build_id(mut self, build: impl Into<String>) -> Self {
        self.build_id = Some(build.into());
        self
    }

    /// An engine that replays journals and runs nothing else (see `replay_check`).
    pub(crate) fn replay_only(mut self) -> Self {
        self.replay_only = true;
        self
    }

    /// Runs `double` instead of its step's body (and compensation, if the double has one) in
    /// this engine: a test's (the `testing` feature; see [`crate::testing::Double`]). A second
    /// double of the same step replaces the first.
    #[cfg(feature = "testing")]
    pub fn double<I, O, C>(mut self, double: &crate::testing::Double<I, O, C>) -> Self
    where
        I: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
        O: Send + 'static,
        C: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
    {
        double.register(&mut self.doubles);
        self
    }

    /// Tells `observer` of every step body that begins (the crash explorer's check).
    #[cfg(feature = "testing")]
    pub(crate) fn observe_bodies(mut self, observer: super::double::BodyObserver) -> Self {
        self.body_observer = Some(observer);
        self
    }

    /// Builds the registry (failing on duplicate names) and opens the store; then (for a
    /// worker) starts resuming, in the background, the executions on the store that have no
    /// live owner, and renewing leases. Returns without waiting for the recovery (its progress
    /// is logged: `tracing`, target `workflows_runtime`).
    ///
    /// Must be called inside a Tokio runtime.
    pub async fn start(self) -> Result<Engine, EngineError> {
        Registry::global()?;
        if let Some(why) = self.queues.iter().find_map(crate::Queue::invalid) {
            return Err(EngineError::Queue(why));
        }
        let scheduled = super::scheduler::registered().map_err(EngineError::Schedule)?;
        let store = match self.store {
            StoreChoice::Given(store) => store,
            StoreChoice::Default => store::open_url(&store::default_url()).await?,
            StoreChoice::Url(url) => store::open_url(&url).await?,
            #[cfg(feature = "postgres")]
            StoreChoice::Postgres(url, options) => Arc::new(crate::PostgresStore::connect_with(&url, options).await?),
            StoreChoice::Sqlite(path, options) => {
                open_blocking(move || Ok(Arc::new(SqliteStore::open_with(path, options)?) as Arc<dyn Store>)).await?
            }
        };
        let virtual_time = under_test_clock(&*store)?;
        let lease = self.lease.unwrap_or(if virtual_time { VIRTUAL_LEASE } else { DEFAULT_LEASE });
        let owner = Arc::from(owner::new_owner_id());
        let token_key = token::TokenKey::new(store.token_key().await?);
        if !self.queues.is_empty() {
            store.define_queues(&self.queues).await?;
        }
        let inner = Arc::new(EngineInner {
            store,
            container: self.container,
            default_retry: self.default_retry,
            retention: self.retention,
            event_retention: self.event_retention,
            owner,
            lease,
            lease_clock: lease::LeaseClock::new(lease),
            virtual_time,
            #[cfg(feature = "testing")]
            doubles: self.doubles,
            #[cfg(feature = "testing")]
            body_observer: self.body_observer,
            token_key,
            live: Mutex::new(HashMap::default()),
            abandoned: Mutex::new(Vec::new()),
            last_creation: std::sync::atomic::AtomicI64::new(0),
            key_released: tokio::sync::Notify::new(),
            work_available: Arc::new(tokio::sync::Notify::new()),
            purge_interval: self.purge_interval,
            closed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            timer_changed: tokio::sync::Notify::new(),
            events: crate::events::EventHub::new(),
            worker: self.worker,
            client_only: self.client_only,
            same_host_takeover: self.same_host_takeover,
            process: super::owner::process_label(),
            build_override: self.build_id.map(Arc::from),
            replay_only: self.replay_only,
            queues: self.queues.into_iter().map(|q| (q.name.clone(), q)).collect(),
            scheduled,
            subscribers: super::dispatch::registered(),
            events_emitted: Arc::new(tokio::sync::Notify::new()),
            watchers: Mutex::new(HashMap::default()),
            runtime: tokio::runtime::Handle::current(),
        });
        if inner.worker {
            background::spawn_scheduler(&inner);
            if self.run_schedules {
                super::scheduler::spawn(&inner);
                super::scheduler::spawn_unknown_check(&inner);
            }
            super::dispatch::spawn(&inner);
            #[cfg(feature = "redis")]
            for source in self.sources {
                tokio::spawn(source.run(Arc::downgrade(&inner), inner.owner.to_string()));
            }
        }
        // In the background (a worker's first claim is its recovery at start): new work runs
        // while the executions left by others are taken over, however many there are.
        background::spawn_maintenance(&inner);
        if let Some(notices) = inner.store.notices() {
            background::spawn_notices(&inner, notices);
        }
        Ok(Engine { inner })
    }
}

/// The lease of an engine that is not told one.
const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The lease of an engine under a test clock that is not told one: an hour of the test's time
/// (which costs no real time), so that skipping a month renews a few hundred times, not a
/// quarter of a million.
const VIRTUAL_LEASE: Duration = Duration::from_secs(3600);

/// True if the engine starts under a test clock (the `testing` feature's `TestClock`); an error
/// if its store cannot follow one.
fn under_test_clock(store: &dyn Store) -> Result<bool, EngineError> {
    #[cfg(feature = "testing")]
    if crate::time::virtual_clock::current().is_some() {
        if store.postgres_schema().is_some() {
            return Err(EngineError::Store(StoreError::Unavailable(format!(
                "the test clock works with the memory and SQLite stores, not with {}: a round trip to a \
                 server lets Tokio's paused clock jump ahead; test on `.memory()` or `.sqlite(..)`",
                store.describe()
            ))));
        }
        return Ok(true);
    }
    let _ = store;
    Ok(false)
}

/// Opens a store off the async threads (file stores do blocking I/O).
async fn open_blocking(
    open: impl FnOnce() -> Result<Arc<dyn Store>, StoreError> + Send + 'static,
) -> Result<Arc<dyn Store>, StoreError> {
    tokio::task::spawn_blocking(crate::time::on_this_clock(open))
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the store was interrupted: {e}")))?
}
