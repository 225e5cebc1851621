//! [`Engine`]: the handle an application keeps, and what it does — run and start workflows,
//! read executions, subscribe to their events, shut down. Starting one is in `builder.rs`;
//! deliveries in `inbox.rs`; cancelling, re-running and purging in `control.rs`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::value::RawValue;
use tokio::sync::oneshot;

use super::core::{EngineInner, LiveExecution, Stopper};
use super::create::Created;
use super::driver;
use super::handle::{self, ExecutionHandle, Sent, Waiter};
use super::inline;
use super::options::RunOptions;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionRecord};
use crate::journal::JournalEntry;
use crate::registry::Registry;
use crate::store::{ExecutionQuery, StoreError};
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
    pub(crate) inner: Arc<EngineInner>,
}

/// A workflow body on the heap, as [`Engine::drive_new`] runs it.
type BoxedBody<'a, O> = std::pin::Pin<Box<dyn Future<Output = Result<O, crate::WorkflowError>> + Send + 'a>>;

/// The task that drives a just-created execution: it waits for its exclusive key if it is
/// queued, then runs the body `start` makes, and sends the outcome to `sender`.
async fn execution_task<O: serde::Serialize + Send + 'static>(
    live: Arc<LiveExecution>,
    queued: bool,
    start: impl for<'a> FnOnce(&'a Workflow) -> Result<BoxedBody<'a, O>, RunError> + Send + 'static,
    sender: Waiter<O>,
) {
    if queued && let Err(error) = driver::wait_for_key(&live).await {
        drop(sender.send(Sent::Done(Err(error))));
        return;
    }
    let wf = Workflow { live };
    match start(&wf) {
        Ok(body) => driver::drive(&wf, body, Some(sender)).await,
        Err(error) => drop(sender.send(Sent::Done(Err(error)))),
    }
}

/// What [`Engine::create_typed`] found: a new execution (`true` if it waits for its
/// exclusive key), or the one that has the requested id.
enum Begun<O> {
    New(Arc<LiveExecution>, bool),
    Exists(ExecutionHandle<O>),
}

impl Engine {
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
        ExecutionHandle::live(id, receiver, self.inner.clone()).result().await
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
        Ok(match self.inner.create(definition, input_json, options).await? {
            Created::New(live, queued) => Begun::New(live, queued),
            Created::Exists(record) => {
                let same = handle::same_json(input, &record.input);
                Begun::Exists(handle::existing(self.inner.clone(), definition.name(), *record, same).await?)
            }
            Created::ForWorkers(id) => Begun::Exists(ExecutionHandle::attached(id, self.inner.clone())),
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
        let registry = Registry::checked();
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
        let (live, queued) = match self.inner.create(definition, input_json, options).await? {
            Created::New(live, queued) => (live, queued),
            Created::Exists(record) => {
                let same = handle::same_json(&provided, &record.input);
                return handle::existing(self.inner.clone(), definition.name(), *record, same).await;
            }
            Created::ForWorkers(id) => return Ok(ExecutionHandle::attached(id, self.inner.clone())),
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
        ExecutionHandle::live(id, receiver, self.inner.clone())
    }

    /// The registry of workflows and steps this engine runs.
    pub fn registry(&self) -> &'static Registry {
        Registry::checked()
    }

    /// This engine's owner id, as recorded on the executions it drives (the helper binary
    /// tells its own executions from others').
    #[cfg(feature = "cli")]
    pub(crate) fn owner_id(&self) -> &str {
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

    /// Every queue defined on the store or named by an execution: its stored limits, how many
    /// executions wait in it, how many hold its slots, how many started within its rate
    /// window (what `workflows queues` shows).
    pub async fn queues(&self) -> Result<Vec<crate::QueueStatus>, StoreError> {
        self.inner.store.queues(crate::Timestamp::now()).await
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

    /// The build this engine runs: a hash of the process's executable. An execution that this
    /// build's code could not replay is blocked with it in its
    /// [`blocked_by`](crate::ExecutionRecord::blocked_by), and only other builds (a fixed
    /// deploy) take it again.
    pub fn build_id(&self) -> String {
        self.inner.build().to_string()
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

#[cfg(feature = "testing")]
impl Engine {
    /// Stops the engine as a SIGKILL would: its executions' tasks are dropped where they are,
    /// and nothing more is written (not even the release of its leases: they run out). The
    /// crash explorer's crash; the store must refuse what is still under way.
    pub(crate) fn kill(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let running: Vec<Stopper> = self.inner.live.lock().drain().filter_map(|(_, task)| task.handle).collect();
        for task in &running {
            task.abort();
        }
    }
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine").field("store", &self.inner.store.describe()).field("owner", &self.inner.owner).finish()
    }
}
