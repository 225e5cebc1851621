//! The engine: starts executions, drives their bodies, compensates, and resumes executions
//! whose owner went away.

mod child;
pub(crate) mod child_call;
pub(crate) mod compensation;
mod control;
mod driver;
pub(crate) mod event;
mod handle;
mod inbox;
mod inline;
mod lease;
pub(crate) mod live;
mod options;
mod owner;
pub(crate) mod panic;
mod recovery;
mod step_attempt;
pub(crate) mod step_call;
pub(crate) mod timer;
pub(crate) mod token;
mod wait;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;
use tokio::task::AbortHandle;

pub use handle::ExecutionHandle;
pub use inbox::DeliveryError;

pub use options::RunOptions;

use self::live::LiveExecution;
use crate::container::Container;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::JournalEntry;
use crate::journal::replay::Progress;
use crate::policy::{DEFAULT_RETENTION, RetryPolicy};
use crate::registry::{Registry, RegistryError, WorkflowDefinition};
use crate::store::{
    self, CreateOutcome, ExecutionQuery, MemoryStore, NewExecution, SqliteOptions, SqliteStore, Store, StoreError,
};
use crate::time::Timestamp;
use crate::workflow::{Workflow, WorkflowFn};

/// Runs workflows: the handle an application keeps (cheap to clone) and passes to the
/// generated entry points, `hello_world::run(&engine, input)`.
///
/// ```no_run
/// # use workflows_runtime::prelude::*;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let engine = Engine::builder().sqlite("workflows.db").container(Container::new().with(42u32)).start().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineInner>,
}

pub(crate) struct EngineInner {
    pub store: Arc<dyn Store>,
    pub registry: &'static Registry,
    pub container: Container,
    /// The retry policy of steps that set none, if the application chose one (see
    /// [`EngineInner::retry_budget`]).
    pub default_retry: Option<RetryPolicy>,
    /// How long finished executions of workflows that set no retention are kept.
    pub retention: Duration,
    /// This engine's owner id in the store: unique per engine instance.
    pub owner: Arc<str>,
    pub lease: Duration,
    /// The clock leases are proven by (see [`lease`]).
    pub(crate) lease_clock: lease::LeaseClock,
    /// What completion tokens are signed with (see [`token`]).
    pub(crate) token_key: token::TokenKey,
    /// Executions this engine is driving.
    live: Mutex<LiveTasks>,
    /// Executions this engine stopped driving after a store error, with their epochs: their
    /// ownership is given up as soon as the store accepts it, so they can be taken over.
    abandoned: Mutex<Vec<(ExecutionId, u64)>>,
    /// Notified when an execution holding an exclusive key ends here, so that the executions
    /// queued for a key retry at once instead of at their next poll.
    pub key_released: tokio::sync::Notify,
    /// How often finished executions past their retention are purged (zero: never).
    pub purge_interval: Duration,
    closed: AtomicBool,
    /// Set by [`Engine::drain`]: no more executions are taken over or resumed here.
    draining: AtomicBool,
    /// Wakes the timer scheduler: an execution was suspended until some time.
    timer_changed: tokio::sync::Notify,
    /// The execution event stream (see [`Engine::subscribe`]).
    pub events: crate::events::EventHub,
    /// False for a client engine (see [`EngineBuilder::worker`]).
    worker: bool,
    /// Callers waiting for executions to finish, by execution (see [`handle::wait_for`]).
    watchers: Mutex<HashMap<ExecutionId, Arc<tokio::sync::Notify>, foldhash::fast::RandomState>>,
    /// The runtime the engine started on: an execution run in its caller's task moves here
    /// when the caller stops waiting (see [`inline`]).
    runtime: tokio::runtime::Handle,
}

/// The executions an engine drives, with their tasks' abort handles.
type LiveTasks = HashMap<ExecutionId, LiveTask, foldhash::fast::RandomState>;

struct LiveTask {
    execution: Arc<LiveExecution>,
    /// Filled in once the task is spawned.
    handle: Option<Stopper>,
}

/// Stops an execution's task where it stands.
enum Stopper {
    /// A spawned task.
    Task(AbortHandle),
    /// A task its caller polls (see [`inline`]), or that moved to a task of its own since.
    Inline(futures_util::future::AbortHandle),
}

impl Stopper {
    fn abort(&self) {
        match self {
            Self::Task(handle) => handle.abort(),
            Self::Inline(handle) => handle.abort(),
        }
    }
}

/// Configures and starts an [`Engine`].
#[must_use = "call .start().await to get an engine"]
pub struct EngineBuilder {
    store: StoreChoice,
    container: Container,
    lease: Duration,
    default_retry: Option<RetryPolicy>,
    retention: Duration,
    purge_interval: Duration,
    worker: bool,
}

/// Which store the engine will use; file stores are opened by `start`.
enum StoreChoice {
    /// `$WORKFLOWS_STORE`, or `sqlite:workflows.db`.
    Default,
    Url(String),
    Sqlite(PathBuf, SqliteOptions),
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
}

impl Default for EngineBuilder {
    fn default() -> Self {
        Self {
            store: StoreChoice::Default,
            container: Container::new(),
            lease: Duration::from_secs(30),
            default_retry: None,
            retention: DEFAULT_RETENTION,
            purge_interval: Duration::from_secs(60),
            worker: true,
        }
    }
}

impl EngineBuilder {
    /// Keeps executions in `store`.
    ///
    /// Without a store, the engine uses the one `$WORKFLOWS_STORE` names (`sqlite:PATH` or
    /// `memory`), or else the SQLite file `workflows.db` in the working directory.
    pub fn store(mut self, store: impl Store) -> Self {
        self.store = StoreChoice::Given(Arc::new(store));
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

    /// Keeps executions in the store a URL names: `sqlite:PATH` or `memory`.
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

    /// How often the engine purges finished executions past their retention (default every
    /// minute, in batches of 500). `Duration::ZERO` turns the background purge off.
    pub fn purge_interval(mut self, interval: Duration) -> Self {
        self.purge_interval = interval;
        self
    }

    /// How long this engine's ownership of an execution lasts without renewal (default 30 s).
    /// The engine renews its leases every third of it; when a process dies, another engine on
    /// the same store takes its executions over once their leases expire.
    pub fn lease_duration(mut self, lease: Duration) -> Self {
        self.lease = lease.max(Duration::from_millis(30));
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

    /// Builds the registry (failing on duplicate names), then (for a worker) resumes the
    /// executions on the store that have no live owner, and starts renewing leases in the
    /// background.
    ///
    /// Must be called inside a Tokio runtime.
    pub async fn start(self) -> Result<Engine, EngineError> {
        let registry = Registry::global()?;
        let store = match self.store {
            StoreChoice::Given(store) => store,
            StoreChoice::Default => open_blocking(move || store::open_url(&store::default_url())).await?,
            StoreChoice::Url(url) => open_blocking(move || store::open_url(&url)).await?,
            StoreChoice::Sqlite(path, options) => {
                open_blocking(move || Ok(Arc::new(SqliteStore::open_with(path, options)?) as Arc<dyn Store>)).await?
            }
        };
        let owner = Arc::from(owner::new_owner_id());
        let token_key = token::TokenKey::new(store.token_key().await?);
        let inner = Arc::new(EngineInner {
            store,
            registry,
            container: self.container,
            default_retry: self.default_retry,
            retention: self.retention,
            owner,
            lease: self.lease,
            lease_clock: lease::LeaseClock::new(self.lease),
            token_key,
            live: Mutex::new(HashMap::default()),
            abandoned: Mutex::new(Vec::new()),
            key_released: tokio::sync::Notify::new(),
            purge_interval: self.purge_interval,
            closed: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            timer_changed: tokio::sync::Notify::new(),
            events: crate::events::EventHub::new(),
            worker: self.worker,
            watchers: Mutex::new(HashMap::default()),
            runtime: tokio::runtime::Handle::current(),
        });
        if inner.worker {
            inner.take_over_from_the_gone(true).await?;
            inner.recover().await?;
            recovery::spawn_scheduler(&inner);
        }
        recovery::spawn_maintenance(&inner);
        Ok(Engine { inner })
    }
}

/// A workflow body on the heap, as [`Engine::drive_new`] runs it.
type BoxedBody<'a, O> = std::pin::Pin<Box<dyn Future<Output = Result<O, crate::WorkflowError>> + Send + 'a>>;

/// The task that drives a just-created execution: it waits for its exclusive key if it is
/// queued, then runs the body `start` makes, and sends the outcome to `sender`.
async fn execution_task<O: serde::Serialize + Send + 'static>(
    live: Arc<LiveExecution>,
    queued: bool,
    start: impl for<'a> FnOnce(&'a Workflow) -> Result<BoxedBody<'a, O>, RunError> + Send + 'static,
    sender: driver::Waiter<O>,
) {
    if queued && let Err(error) = driver::wait_for_key(&live).await {
        drop(sender.send(driver::Sent::Done(Err(error))));
        return;
    }
    let wf = Workflow { live };
    match start(&wf) {
        Ok(body) => driver::drive(&wf, body, Some(sender)).await,
        Err(error) => drop(sender.send(driver::Sent::Done(Err(error)))),
    }
}

/// What [`Engine::create_typed`] found: a new execution (`true` if it waits for its
/// exclusive key), or the one that has the requested id.
enum Begun<O> {
    New(Arc<LiveExecution>, bool),
    Exists(ExecutionHandle<O>),
}

/// What [`Engine::create`] found.
pub(crate) enum Created {
    /// A new execution; `true` if it waits for its exclusive key.
    New(Arc<LiveExecution>, bool),
    Exists(Box<ExecutionRecord>),
}

/// Opens a store off the async threads (file stores do blocking I/O).
async fn open_blocking(
    open: impl FnOnce() -> Result<Arc<dyn Store>, StoreError> + Send + 'static,
) -> Result<Arc<dyn Store>, StoreError> {
    tokio::task::spawn_blocking(open)
        .await
        .map_err(|e| StoreError::Unavailable(format!("opening the store was interrupted: {e}")))?
}

impl Engine {
    /// Configures a new engine.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Runs workflow `W` to completion and returns its output.
    /// The generated `name::run` and `name::run_with` call this.
    pub async fn run_workflow<W: WorkflowFn>(
        &self,
        input: W::Input,
        options: RunOptions,
    ) -> Result<W::Output, RunError> {
        let (live, queued) = match self.create_typed::<W>(&input, options).await? {
            Begun::New(live, queued) => (live, queued),
            Begun::Exists(handle) => return handle.result().await,
        };
        // Driven in this task (see `inline`); the body is boxed for the same reason as in
        // `start_workflow`, and so that the task can move if this caller stops waiting.
        let id = live.id.clone();
        let (sender, receiver) = oneshot::channel();
        let task = execution_task(live.clone(), queued, move |wf| Ok(Box::pin(W::call(wf, input))), sender);
        let (task, stopper) = inline::Inline::new(self.inner.track(&live, task), self.inner.runtime.clone());
        self.inner.stop_with(&live, Stopper::Inline(stopper));
        task.await;
        ExecutionHandle::live(id, receiver, self.clone()).result().await
    }

    /// Starts workflow `W` and returns a handle to await its result.
    /// The execution is durable once this returns. The generated `name::start` calls this.
    pub async fn start_workflow<W: WorkflowFn>(
        &self,
        input: W::Input,
        options: RunOptions,
    ) -> Result<ExecutionHandle<W::Output>, RunError> {
        let (live, queued) = match self.create_typed::<W>(&input, options).await? {
            Begun::New(live, queued) => (live, queued),
            Begun::Exists(handle) => return Ok(handle),
        };
        // On the heap: the body (with its steps' futures) is most of the task's size, and tokio
        // moves the task several times (spawn, completion); boxed, those moves stay small
        // (-40% instructions per parallel-10 workflow, -5% per seq-10).
        Ok(self.drive_new(live, queued, move |wf| Ok(Box::pin(W::call(wf, input)))))
    }

    /// Creates an execution of `W` with `input`, or finds the one with the requested id.
    async fn create_typed<W: WorkflowFn>(
        &self,
        input: &W::Input,
        options: RunOptions,
    ) -> Result<Begun<W::Output>, RunError> {
        let definition = W::definition();
        let input_json = crate::journal::json::to_raw(input)
            .map_err(|source| RunError::Input { workflow: definition.name().to_owned(), source })?;
        Ok(match self.create(definition, input_json, options).await? {
            Created::New(live, queued) => Begun::New(live, queued),
            Created::Exists(record) => {
                let same = handle::same_json(input, &record.input);
                Begun::Exists(handle::existing(self.clone(), definition.name(), *record, same).await?)
            }
        })
    }

    /// Starts the workflow registered as `name` with a JSON input, for callers that do not
    /// know its types (the helper binary, a generic HTTP endpoint). The output comes back as
    /// JSON. An unknown name is [`RunError::UnknownWorkflow`] (with the closest names); input
    /// that does not match the workflow's input type is [`RunError::InvalidInput`], and
    /// nothing is stored.
    pub async fn start_workflow_by_name(
        &self,
        name: &str,
        input: impl serde::Serialize,
        options: RunOptions,
    ) -> Result<ExecutionHandle<Box<RawValue>>, RunError> {
        let registry = self.inner.registry;
        let definition = registry.workflow(name).ok_or_else(|| RunError::UnknownWorkflow {
            name: name.to_owned(),
            similar: registry.similar_workflows(name),
        })?;
        let input_json = crate::journal::json::to_raw(&input)
            .map_err(|source| RunError::Input { workflow: definition.name().to_owned(), source })?;
        (definition.check_input)(&input_json).map_err(|source| RunError::InvalidInput {
            workflow: definition.name().to_owned(),
            expected: definition.input_type(),
            source,
        })?;
        let provided = input_json.clone();
        let (live, queued) = match self.create(definition, input_json, options).await? {
            Created::New(live, queued) => (live, queued),
            Created::Exists(record) => {
                let same = handle::same_json(&provided, &record.input);
                return handle::existing(self.clone(), definition.name(), *record, same).await;
            }
        };
        Ok(self.drive_new(live, queued, move |wf| {
            // Checked above; a stored input is the one just checked.
            (definition.entry)(wf, &provided).map_err(|source| RunError::InvalidInput {
                workflow: definition.name().to_owned(),
                expected: definition.input_type(),
                source,
            })
        }))
    }

    /// Spawns the task that drives a just-created execution (see [`execution_task`]).
    fn drive_new<O: serde::Serialize + Send + 'static>(
        &self,
        live: Arc<LiveExecution>,
        queued: bool,
        start: impl for<'a> FnOnce(&'a Workflow) -> Result<BoxedBody<'a, O>, RunError> + Send + 'static,
    ) -> ExecutionHandle<O> {
        let id = live.id.clone();
        let (sender, receiver) = oneshot::channel();
        self.inner.spawn(&live.clone(), execution_task(live, queued, start, sender));
        ExecutionHandle::live(id, receiver, self.clone())
    }

    /// Creates a new execution of `definition`, or finds the one with the requested id.
    pub(crate) async fn create(
        &self,
        definition: &'static WorkflowDefinition,
        input: Box<RawValue>,
        options: RunOptions,
    ) -> Result<Created, RunError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(RunError::ShutDown);
        }
        let id = options.id.unwrap_or_default();
        // Before the write that grants the lease: the lease is provable from here.
        let lease_from = std::time::Instant::now();
        let now = Timestamp::now();
        let deadline = definition.timeout().map(|timeout| now + timeout);
        let new = NewExecution {
            id: id.clone(),
            workflow: definition.name(),
            fingerprint: definition.fingerprint(),
            version: definition.version(),
            input,
            owner: inner.owner.clone(),
            lease_until: now + inner.lease,
            now,
            exclusive_key: options.exclusive_key.clone(),
            fail_if_held: options.fail_if_held,
            rerun_of: options.rerun_of,
            parent: options.parent.clone(),
            deadline,
            expected_entries: definition.calls().len(),
        };
        let queued = match inner.store.create_execution(new).await? {
            CreateOutcome::Created => false,
            CreateOutcome::Queued => true,
            CreateOutcome::Exists(record) => return Ok(Created::Exists(record)),
            CreateOutcome::KeyHeld(holder) => {
                return Err(RunError::KeyHeld { key: options.exclusive_key.unwrap_or_default(), holder });
            }
        };
        let setup = live::Setup {
            container: options.container,
            epoch: 1,
            lease_from,
            started_fingerprint: definition.fingerprint().into(),
            deadline,
            exclusive_key: options.exclusive_key,
            parent: options.parent,
            wakeups: 0,
        };
        let live = LiveExecution::new(id, definition, inner.clone(), Progress::new(definition.calls().len()), setup);
        Ok(Created::New(Arc::new(live), queued))
    }

    /// The registry of workflows and steps this engine runs.
    pub fn registry(&self) -> &'static Registry {
        self.inner.registry
    }

    /// The store this engine uses.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// This engine's owner id, as recorded on the executions it drives.
    pub fn owner_id(&self) -> &str {
        &self.inner.owner
    }

    /// The stored record of an execution.
    pub async fn execution(&self, id: &ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        self.inner.store.execution(id).await
    }

    /// The journal of an execution.
    pub async fn journal(&self, id: &ExecutionId) -> Result<Vec<JournalEntry>, StoreError> {
        self.inner.store.journal(id).await
    }

    /// Executions matching `query`, newest first. A stored execution that cannot be decoded
    /// (a damaged row) is left out and logged, naming it; the helper binary lists such rows.
    pub async fn executions(&self, query: &ExecutionQuery) -> Result<Vec<ExecutionRecord>, StoreError> {
        let list = self.inner.store.list_executions(query).await?;
        for damaged in &list.damaged {
            tracing::error!(execution = %damaged.id, problem = %damaged.problem, "a stored execution cannot be decoded");
        }
        Ok(list.records)
    }

    /// Takes over and resumes the executions on the store whose owner is gone (its lease
    /// expired, or it shut down). The engine does this at start and periodically; call it to
    /// do it now. Returns how many executions it resumed.
    pub async fn recover(&self) -> Result<usize, StoreError> {
        self.inner.recover().await
    }

    /// Subscribes to the events of every execution this engine drives: started, step
    /// started/completed/failed/waiting, compensation started/completed, finished, ... (see
    /// [`EventKind`](crate::EventKind)). Only executions driven in this process are seen; the
    /// journal ([`Engine::journal`]) has the durable history of any execution.
    ///
    /// ```no_run
    /// # use workflows_runtime::prelude::*;
    /// # async fn demo(engine: Engine) {
    /// let mut events = engine.subscribe();
    /// while let Ok(event) = events.recv().await {
    ///     println!("{} {}: {}", event.at, event.execution, event.kind.name());
    /// }
    /// # }
    /// ```
    pub fn subscribe(&self) -> crate::events::Subscription {
        self.inner.events.subscribe(None)
    }

    /// Subscribes to the events of one execution (subscribe before starting it, with a chosen
    /// id, to see it start: [`RunOptions::id`]).
    pub fn subscribe_to(&self, id: &ExecutionId) -> crate::events::Subscription {
        self.inner.events.subscribe(Some(id.clone()))
    }

    /// How many executions this engine is driving right now.
    pub fn running(&self) -> usize {
        self.inner.live.lock().len()
    }

    /// Stops the engine gracefully: it takes over and resumes no more executions, lets the
    /// ones it drives finish or suspend for up to `grace`, then [shuts down](Engine::shutdown),
    /// releasing the ones still running for other engines to resume at once. Meanwhile its
    /// leases are renewed and its executions may still start child workflows. Returns how
    /// many executions were still running when the grace period ended.
    pub async fn drain(&self, grace: Duration) -> usize {
        self.inner.draining.store(true, Ordering::Release);
        let deadline = tokio::time::Instant::now() + grace;
        let mut pause = Duration::from_millis(1);
        while self.running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(pause.min(deadline.saturating_duration_since(tokio::time::Instant::now()))).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
        let left = self.running();
        self.shutdown().await;
        left
    }

    /// Stops the engine: new runs are refused, running executions stop where they are (their
    /// callers get [`RunError::Interrupted`]), and their ownership is released so that another
    /// engine on the same store resumes them at once.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let running: Vec<Stopper> = self.inner.live.lock().drain().filter_map(|(_, task)| task.handle).collect();
        for task in &running {
            task.abort();
        }
        // Tasks stop at their next await; fencing refuses any write they still submit after
        // another engine took over.
        if let Err(error) = self.inner.store.release(&self.inner.owner).await {
            tracing::warn!(%error, "could not release executions at shutdown; they resume when their leases expire");
        }
    }
}

pin_project_lite::pin_project! {
    /// An execution's task, in its tracing span. A struct rather than an `async` wrapper (or
    /// `Instrument`), which would store or move the execution's large future once more.
    struct Tracked<F> {
        #[pin]
        task: F,
        span: tracing::Span,
        _guard: Untrack,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.task.poll(cx)
    }
}

/// Removes an execution from the engine's live set when its task ends or is aborted, and
/// wakes the callers waiting for it to finish.
struct Untrack {
    engine: Arc<EngineInner>,
    execution: std::sync::Weak<LiveExecution>,
    id: ExecutionId,
}

impl Drop for Untrack {
    fn drop(&mut self) {
        // A task stopped where it stood (a shutdown) leaves no detached step body behind: it
        // would keep the execution alive (it holds a reference to it) and never run.
        if let Some(live) = self.execution.upgrade() {
            live.tear_down();
        }
        self.engine.untrack(&self.id, self.execution.as_ptr());
        self.engine.notify_watchers(&self.id);
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("store", &self.inner.store.describe()).field("owner", &self.inner.owner).finish()
    }
}

impl EngineInner {
    /// Spawns the task driving execution `id` and tracks it until it ends.
    fn spawn(self: &Arc<Self>, live: &Arc<LiveExecution>, task: impl Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(self.track(live, task));
        self.stop_with(live, Stopper::Task(handle.abort_handle()));
    }

    /// Counts `live` as driven here until `task` (which drives it) ends or is dropped, and
    /// runs the task in the execution's tracing span.
    fn track<F: Future>(self: &Arc<Self>, live: &Arc<LiveExecution>, task: F) -> Tracked<F> {
        // The entry exists before the task can end, so the task's guard always finds it; the
        // stopper is filled in afterwards (`stop_with`), unless the task already ended.
        let id = live.id.clone();
        self.live.lock().insert(id.clone(), LiveTask { execution: live.clone(), handle: None });
        let span = tracing::info_span!("execution", execution = %id, workflow = live.definition.name());
        let guard = Untrack { engine: self.clone(), execution: Arc::downgrade(live), id };
        Tracked { task, span, _guard: guard }
    }

    /// Records how to stop the task driving `live`.
    fn stop_with(&self, live: &LiveExecution, stopper: Stopper) {
        {
            let mut tasks = self.live.lock();
            let Some(entry) = tasks.get_mut(&live.id) else { return };
            if !self.is_closed() {
                entry.handle = Some(stopper);
                return;
            }
        }
        // Started while the engine shut down (past `shutdown`'s sweep): stop it too (outside
        // the lock: a stopped task untracks itself).
        stopper.abort();
    }

    /// The execution this engine drives under `id`, if it does.
    pub(crate) fn live_execution(&self, id: &ExecutionId) -> Option<Arc<LiveExecution>> {
        self.live.lock().get(id).map(|task| task.execution.clone())
    }

    /// Every execution this engine drives.
    pub(crate) fn live_executions(&self) -> Vec<Arc<LiveExecution>> {
        self.live.lock().values().map(|task| task.execution.clone()).collect()
    }

    /// Marks an execution this engine stopped driving, to release it (see `abandoned`).
    pub(crate) fn abandon(&self, id: ExecutionId, epoch: u64) {
        self.abandoned.lock().push((id, epoch));
    }

    /// Releases the abandoned executions the store accepts to release now.
    pub(crate) async fn release_abandoned(&self) {
        let pending = std::mem::take(&mut *self.abandoned.lock());
        for (id, epoch) in pending {
            if let Err(error) = self.store.release_execution(&id, epoch).await {
                tracing::warn!(execution = %id, %error, "could not release an execution yet; retrying");
                self.abandon(id, epoch);
            }
        }
    }

    /// Stops counting execution `id` as driven here, if `execution` is the one driven under it
    /// (a suspended execution may be resumed by a new task before the old one is gone).
    pub(crate) fn untrack(&self, id: &ExecutionId, execution: *const LiveExecution) {
        let mut live = self.live.lock();
        if live.get(id).is_some_and(|task| std::ptr::eq(Arc::as_ptr(&task.execution), execution)) {
            live.remove(id);
        }
    }

    /// Wakes the timer scheduler: an execution was suspended until some time, which may be
    /// earlier than the one it sleeps until.
    pub(crate) fn timer_set(&self) {
        self.timer_changed.notify_one();
    }

    /// The signal for callers waiting for execution `id` to finish (see [`handle::wait_for`]).
    pub(crate) fn watch(&self, id: &ExecutionId) -> Arc<tokio::sync::Notify> {
        let mut watchers = self.watchers.lock();
        watchers.entry(id.clone()).or_default().clone()
    }

    /// Forgets the signal of a caller that stopped waiting, if nobody else waits.
    pub(crate) fn unwatch(&self, id: &ExecutionId, watch: Arc<tokio::sync::Notify>) {
        let mut watchers = self.watchers.lock();
        // The map's reference and `watch`: nobody else holds it.
        if watchers.get(id).is_some_and(|known| Arc::ptr_eq(known, &watch) && Arc::strong_count(&watch) == 2) {
            watchers.remove(id);
        }
    }

    /// Wakes the callers waiting for execution `id`: its task ended here.
    fn notify_watchers(&self, id: &ExecutionId) {
        let watch = self.watchers.lock().remove(id);
        if let Some(watch) = watch {
            watch.notify_waiters();
        }
    }

    /// The attempt budget of a step: its own retry policy, or the engine's default if the
    /// application set one. A budget counts every attempt that started, also one a crash
    /// interrupted; `None` (no policy anywhere) means one attempt per failure — a failed
    /// attempt is not retried — while an attempt a crash interrupted runs again.
    pub(crate) fn retry_budget(&self, step: &crate::registry::StepDefinition) -> Option<RetryPolicy> {
        step.policy.retry.or(self.default_retry)
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// True once [`Engine::drain`] began: no execution is taken over or resumed here.
    fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}
