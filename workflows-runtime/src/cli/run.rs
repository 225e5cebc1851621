//! Commands that run workflows here: `run`, `rerun`, `worker`, and the deliveries and
//! cancellations that continue an execution in this process (`complete`, `fail`,
//! `send-event`, `cancel`).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::common::{CliError, Context, EXIT_OK, EXIT_WAITING, EXIT_WORKFLOW_FAILED, stop_signal};
use super::output::{duration, json_arg, note, out, print_json, truncate};
use super::pending::pending_waits;
use crate::engine::ExecutionHandle;
use crate::events::{EventKind, ExecutionEvent, RecvError, Subscription};
use crate::execution::{ExecutionId, ExecutionRecord, ExecutionState};
use crate::registry::Registry;
use crate::{Engine, RunError, RunOptions, StepError};

/// How often the watcher redraws the progress line and checks whether the engine is idle.
const TICK: Duration = Duration::from_millis(50);

/// How many ticks `watch` waits for the task of an execution this engine claimed to start.
const STARTING_TICKS: u32 = 40;

/// `workflows run NAME --input JSON`.
pub(crate) async fn run(context: Context, name: &str, input: &str, id: Option<String>) -> Result<u8, CliError> {
    // Checked before the store is opened (or created): a typo changes nothing.
    let registry = Registry::global()?;
    let definition = registry.workflow(name).ok_or_else(|| RunError::UnknownWorkflow {
        name: name.to_owned(),
        similar: registry.similar_workflows(name),
    })?;
    let input = json_arg("--input", input, Some(definition.input_type()))?;
    (definition.check_input)(&input).map_err(|source| RunError::InvalidInput {
        workflow: name.to_owned(),
        expected: definition.input_type(),
        source,
    })?;
    let client_only = context.client_only;
    let (engine, json) = context.engine(true).await?;
    let id = id.map(ExecutionId::from).unwrap_or_default();
    let events = engine.subscribe();
    let handle = engine.start_workflow_by_name(name, &*input, RunOptions::new().id(id.clone())).await;
    let outcome = match handle {
        Ok(_) if client_only => return left_to_workers(engine, &id, "started", json).await,
        Ok(handle) => watch(&engine, &id, events, Some(handle)).await,
        Err(error) => Err(error.into()),
    };
    engine.shutdown().await;
    report(&engine, outcome?, json).await
}

/// `workflows rerun ID [--force]`.
pub(crate) async fn rerun(context: Context, id: &str, force: bool) -> Result<u8, CliError> {
    let store = context.store.clone();
    let client_only = context.client_only;
    let (engine, json) = context.engine(false).await?;
    let id = ExecutionId::from(id);
    // A completed execution's steps all ran: running it again repeats their side effects.
    if !force
        && let Some(record) = engine.execution(&id).await?
        && record.state == ExecutionState::Completed
    {
        engine.shutdown().await;
        return Err(CliError::new(format!(
            "execution {id} completed: running it again repeats every side effect of its steps (a payment charged \
             again, say); pass --force to re-run it anyway"
        )));
    }
    let events = engine.subscribe();
    let outcome = match engine.rerun(&id).await {
        Ok(handle) if client_only => {
            let new = handle.id().clone();
            note!("re-running execution {id} as {new}");
            return left_to_workers(engine, &new, "started", json).await;
        }
        Ok(handle) => {
            let new = handle.id().clone();
            note!("re-running execution {id} as {new}, here");
            watch(&engine, &new, events, Some(handle)).await
        }
        Err(error) => Err(super::common::run_error(&store, error)),
    };
    engine.shutdown().await;
    report(&engine, outcome?, json).await
}

/// `workflows cancel ID`.
pub(crate) async fn cancel(context: Context, id: &str) -> Result<u8, CliError> {
    act(context, id, "cancellation requested for", |engine, id| async move { engine.cancel(&id).await }).await
}

/// `workflows retry-step ID KEY`: the execution resumes here (or, `--client-only`, in a worker).
pub(crate) async fn retry_step(context: Context, id: &str, key: &str) -> Result<u8, CliError> {
    act(context, id, "step retried for", |engine, id| async move { engine.retry_step(&id, key).await }).await
}

/// An operator's action on execution `id`, then (unless `--client-only`: the workers take it,
/// `done` says what was done) the execution followed here until it finishes or waits.
async fn act<F, Fut>(context: Context, id: &str, done: &str, action: F) -> Result<u8, CliError>
where
    F: FnOnce(Engine, ExecutionId) -> Fut,
    Fut: std::future::Future<Output = Result<(), RunError>>,
{
    let store = context.store.clone();
    let client_only = context.client_only;
    let (engine, json) = context.engine(false).await?;
    let id = ExecutionId::from(id);
    let events = engine.subscribe_to(&id);
    let outcome = match action(engine.clone(), id.clone()).await {
        Ok(()) if client_only => return left_to_workers(engine, &id, done, json).await,
        Ok(()) => watch(&engine, &id, events, None).await,
        Err(error) => Err(super::common::run_error(&store, error)),
    };
    engine.shutdown().await;
    report(&engine, outcome?, json).await
}

/// `workflows complete TOKEN --output JSON`.
pub(crate) async fn complete(context: Context, token: &str, output: &str) -> Result<u8, CliError> {
    let output = json_arg("--output", output, None)?;
    deliver(context, execution_of(token), |engine| async move { engine.complete_step(token, &*output).await }).await
}

/// `workflows fail TOKEN --error MESSAGE`.
pub(crate) async fn fail(context: Context, token: &str, error: &str, permanent: bool) -> Result<u8, CliError> {
    let error = if permanent { StepError::permanent(error.to_owned()) } else { StepError::new(error.to_owned()) };
    deliver(context, execution_of(token), |engine| async move { engine.fail_step(token, error).await }).await
}

/// `workflows send-event ID NAME --payload JSON`.
pub(crate) async fn send_event(context: Context, id: &str, name: &str, payload: &str) -> Result<u8, CliError> {
    let payload = json_arg("--payload", payload, None)?;
    let execution = ExecutionId::from(id);
    deliver(context, execution.clone(), |engine| async move { engine.send_event(&execution, name, &*payload).await })
        .await
}

/// The execution a completion token names (the token is checked when it is delivered).
fn execution_of(token: &str) -> ExecutionId {
    crate::engine::token::execution_of(token).unwrap_or_else(|| ExecutionId::from(token))
}

/// Delivers something to execution `id`; if that wakes it here, runs it until it finishes or
/// waits again.
async fn deliver<F: std::future::Future<Output = Result<(), crate::DeliveryError>>>(
    context: Context,
    id: ExecutionId,
    send: impl FnOnce(Engine) -> F,
) -> Result<u8, CliError> {
    let store = context.store.clone();
    let client_only = context.client_only;
    let (engine, json) = context.engine(false).await?;
    let events = engine.subscribe_to(&id);
    let outcome = match send(engine.clone()).await {
        Ok(()) if client_only => return left_to_workers(engine, &id, "delivered to", json).await,
        Ok(()) => {
            note!(
                "delivered to execution {id}; running it here until it finishes or waits (--client-only leaves it to the workers)"
            );
            watch(&engine, &id, events, None).await
        }
        Err(error) => Err(super::common::delivery_error(&store, error)),
    };
    engine.shutdown().await;
    report(&engine, outcome?, json).await
}

/// Says that this process left execution `id` (which it `did`: started, delivered to…) to the
/// workers, and how it stands now; exit code 0.
pub(super) async fn left_to_workers(engine: Engine, id: &ExecutionId, did: &str, json: bool) -> Result<u8, CliError> {
    let record = read(&engine, id).await;
    engine.shutdown().await;
    let record = record?;
    if json {
        print_json(&json!({
            "execution": record.id,
            "workflow": record.workflow,
            "state": record.state,
            "left_to_workers": true,
        }))?;
    } else {
        note!(
            "{did} execution {id} ({}, {}); left to the workers sharing the store — this process runs nothing. \
             `workflows watch {id}` follows it",
            record.workflow,
            record.state
        );
    }
    Ok(EXIT_OK)
}

/// How a watched execution stood when the command stopped watching it.
pub(super) enum Outcome {
    /// It finished.
    Finished(ExecutionRecord),
    /// It is suspended until a delivery or a timer.
    Waiting(ExecutionRecord),
    /// Another process drives it (or nobody does yet).
    Elsewhere(ExecutionRecord),
}

/// Shows the events of execution `id` (and its children) while this engine drives it, until
/// it finishes, suspends, or is not driven here.
pub(super) async fn watch(
    engine: &Engine,
    id: &ExecutionId,
    mut events: Subscription,
    handle: Option<ExecutionHandle<Box<RawValue>>>,
) -> Result<Outcome, CliError> {
    let mut progress = Progress::new(id.clone(), engine);
    let mut result = std::pin::pin!(async move {
        match handle {
            Some(handle) => Some(handle.result().await),
            None => std::future::pending().await,
        }
    });
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Ticks spent on an execution claimed here whose task has not started yet.
    let mut starting = 0;
    loop {
        tokio::select! {
            biased;
            event = events.recv() => match event {
                Ok(event) => progress.event(&event),
                Err(RecvError::Lagged(missed)) => progress.line(&format!("({missed} events not shown)")),
                Err(RecvError::Closed) => {}
            },
            outcome = &mut result => {
                // Print the events published before the result came back.
                while let Some(Ok(event)) = events.try_recv() {
                    progress.event(&event);
                }
                progress.clear();
                if let Some(Err(error @ (RunError::Interrupted { .. } | RunError::Store(_)))) = outcome {
                    return Err(error.into());
                }
                let record = read(engine, id).await?;
                return Ok(if record.state.is_finished() { Outcome::Finished(record) } else { Outcome::Waiting(record) });
            }
            _ = tick.tick() => {
                progress.redraw();
                if engine.running() > 0 {
                    continue;
                }
                let record = read(engine, id).await?;
                // Claimed by this engine, its task about to start (it reads the journal first):
                // give it a moment. Unowned (started for the workers): this engine, a worker,
                // takes it.
                let ours = record.state.is_active() && record.owner.as_deref() == Some(engine.owner_id());
                let unowned = record.state.is_active() && record.owner.is_none();
                if (ours || unowned) && starting < STARTING_TICKS {
                    if unowned {
                        let _ = engine.recover().await;
                    }
                    starting += 1;
                    continue;
                }
                while let Some(Ok(event)) = events.try_recv() {
                    progress.event(&event);
                }
                progress.clear();
                return Ok(match record.state {
                    state if state.is_finished() => Outcome::Finished(record),
                    ExecutionState::Waiting => Outcome::Waiting(record),
                    _ => Outcome::Elsewhere(record),
                });
            }
        }
    }
}

async fn read(engine: &Engine, id: &ExecutionId) -> Result<ExecutionRecord, CliError> {
    engine.execution(id).await?.ok_or_else(|| CliError::new(format!("execution {id} is no longer in the store")))
}

/// Prints how the execution stands; returns the exit code, which follows the execution for
/// every command that drives one (`run`, `rerun`, `cancel`, `complete`, `fail`, `send-event`):
/// 0 completed (or driven on elsewhere), 3 ended without completing, 4 waiting.
pub(super) async fn report(engine: &Engine, outcome: Outcome, json: bool) -> Result<u8, CliError> {
    let (record, code) = match outcome {
        Outcome::Finished(record) if record.state == ExecutionState::Completed => (record, EXIT_OK),
        Outcome::Finished(record) => (record, EXIT_WORKFLOW_FAILED),
        Outcome::Waiting(record) => (record, EXIT_WAITING),
        Outcome::Elsewhere(record) => (record, EXIT_OK),
    };
    let journal = engine.journal(&record.id).await.unwrap_or_default();
    let waits = pending_waits(&record, &journal, &|key| engine.completion_token(&record.id, key));
    if json {
        let waiting: Vec<Value> = waits.iter().map(|w| w.to_json()).collect();
        print_json(&json!({
            "execution": record.id,
            "workflow": record.workflow,
            "state": record.state,
            "result": record.result,
            "failure": record.failure,
            "waiting_for": waiting,
        }))?;
    } else {
        let took = duration(record.updated_at.duration_since(record.created_at));
        match record.state {
            ExecutionState::Completed => {
                note!("execution {} completed in {took}", record.id);
                out!("{}", record.result.as_ref().map_or("null", |r| r.get()));
            }
            state if state.is_finished() => {
                let why = record.failure.as_ref().map_or(String::new(), |f| format!(": {f}"));
                note!("execution {} ended {state} after {took}{why}", record.id);
                note!("inspect it: workflows inspect {}", record.id);
            }
            ExecutionState::Waiting => {
                note!("execution {} is waiting; it is durable, and nothing runs until it is woken", record.id);
                for wait in &waits {
                    note!("{}", wait.hint(&record.id));
                }
                if let Some(at) = record.wake_at {
                    note!(
                        "at {at} (a timer or a wait's deadline) it wakes by itself, in a running `workflows worker` \
                         or application on this store"
                    );
                }
            }
            state => note!(
                "execution {} is {state}, driven by another process; that process sees a delivery within a \
                 second and a cancellation within a third of its lease (`workflows inspect {}` shows where it is)",
                record.id,
                record.id
            ),
        }
    }
    Ok(code)
}

/// `workflows worker`.
pub(crate) async fn worker(context: Context, grace: Duration) -> Result<u8, CliError> {
    let store = context.store.clone();
    let (engine, json) = context.engine(true).await?;
    let mut events = engine.subscribe();
    let workflows = engine.registry().workflows().len();
    note!(
        "worker {} on {store}: runs {workflows} workflows; {} executions resumed; Ctrl-C stops it",
        engine.owner_id(),
        engine.running()
    );
    let mut progress = Progress::new(ExecutionId::from(""), &engine);
    let stop = std::pin::pin!(stop_signal());
    let mut stop = stop;
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) if json => {
                    out!("{}", serde_json::to_string(&event).unwrap_or_default());
                }
                Ok(event) => progress.event(&event),
                Err(RecvError::Lagged(missed)) => note!("({missed} events not shown)"),
                Err(RecvError::Closed) => break,
            },
            () = &mut stop => break,
        }
    }
    note!(
        "stopping: taking no new work; {} executions in flight may finish or suspend within {} \
         (Ctrl-C again stops at once)",
        engine.running(),
        humantime::format_duration(grace)
    );
    let drained = engine.drain(grace);
    tokio::pin!(drained);
    let left = loop {
        tokio::select! {
            left = &mut drained => break left,
            event = events.recv() => match event {
                Ok(event) if json => out!("{}", serde_json::to_string(&event).unwrap_or_default()),
                Ok(event) => progress.event(&event),
                Err(_) => {}
            },
            () = stop_signal() => {
                let left = engine.running();
                engine.shutdown().await;
                break left;
            }
        }
    };
    note!("stopped; {left} executions were released for other workers to resume");
    Ok(EXIT_OK)
}

/// Prints execution events on stderr: a line per step start and end, and on a terminal a
/// progress line that is redrawn in place.
struct Progress {
    /// The watched execution: events of others (its children) are prefixed with their id.
    root: ExecutionId,
    /// The engine, for the completion tokens it shows.
    engine: Engine,
    terminal: bool,
    shown: bool,
    began: Instant,
    /// When each running step attempt started, by execution and key.
    running: HashMap<(ExecutionId, String), Instant>,
    steps_done: usize,
}

impl Progress {
    fn new(root: ExecutionId, engine: &Engine) -> Self {
        Self {
            root,
            engine: engine.clone(),
            terminal: std::io::stderr().is_terminal(),
            shown: false,
            began: Instant::now(),
            running: HashMap::new(),
            steps_done: 0,
        }
    }

    fn event(&mut self, event: &ExecutionEvent) {
        let who = if event.execution == self.root {
            String::new()
        } else {
            format!("[{} {}] ", event.workflow, event.execution)
        };
        let line = match &event.kind {
            EventKind::Started => format!("started {} (execution {})", event.workflow, event.execution),
            EventKind::Resumed => format!("resumed {} (execution {})", event.workflow, event.execution),
            EventKind::StepStarted { key, attempt, double } => {
                self.running.insert((event.execution.clone(), key.to_string()), Instant::now());
                if self.terminal {
                    self.redraw();
                    return;
                }
                let double = if *double { ", a test's double" } else { "" };
                format!("{key} started (attempt {attempt}{double})")
            }
            EventKind::StepCompleted { key, output, .. } => {
                self.steps_done += 1;
                let took = self.took(&event.execution, &key.to_string());
                format!("{key} completed{took}: {}", truncate(output.get(), 100))
            }
            EventKind::StepFailed { key, attempt, error, retry_at } => {
                let took = self.took(&event.execution, &key.to_string());
                let next = match retry_at {
                    Some(at) => format!("; retry at {at}"),
                    None => String::new(),
                };
                format!("{key} failed (attempt {attempt}){took}: {}{next}", error.message)
            }
            EventKind::StepSkipped { key } => format!("{key} skipped"),
            EventKind::StepWaiting { key, .. } => {
                let token = self.engine.completion_token(&event.execution, key);
                format!("{key} waits for its completion (token {token})")
            }
            EventKind::TimerStarted { key, wake_at } => format!("{key} sleeps until {wake_at}"),
            EventKind::TimerFired { key } => format!("{key} woke up"),
            EventKind::Blocked { failure } => format!("blocked: {}", failure.message),
            EventKind::Paused { failure } => format!("paused: {}", failure.message),
            EventKind::StepRetried { key } => format!("{key} retried by an operator"),
            EventKind::EventAwaited { key } => format!("{key} waits for the event"),
            EventKind::EventReceived { key } => format!("{key} received the event"),
            EventKind::WaitTimedOut { key } => format!("{key} timed out"),
            EventKind::ChildStarted { key, child } => format!("{key} started child execution {child}"),
            EventKind::ChildCompleted { key } => format!("{key} completed"),
            EventKind::ChildFailed { key, error } => format!("{key} failed: {error}"),
            EventKind::Compensating { failure } => format!("compensating: {failure}"),
            EventKind::CompensationStarted { key } => {
                self.running.insert((event.execution.clone(), format!("undo {key}")), Instant::now());
                if self.terminal {
                    self.redraw();
                    return;
                }
                format!("{key} compensation started")
            }
            EventKind::CompensationCompleted { key } => {
                let took = self.took(&event.execution, &format!("undo {key}"));
                format!("{key} compensated{took}")
            }
            EventKind::CompensationFailed { key, error } => {
                let took = self.took(&event.execution, &format!("undo {key}"));
                format!("{key} compensation failed{took}: {}", error.message)
            }
            EventKind::Suspended { .. } => "suspended: waiting durably".to_owned(),
            EventKind::Finished { state, .. } => format!("finished: {state}"),
        };
        self.line(&format!("{who}{line}"));
    }

    /// ` in 1.2ms` for an attempt that was seen starting.
    fn took(&mut self, execution: &ExecutionId, key: &str) -> String {
        self.running
            .remove(&(execution.clone(), key.to_owned()))
            .map_or(String::new(), |at| format!(" in {}", duration(at.elapsed())))
    }

    /// Prints a line (above the progress line, on a terminal).
    fn line(&mut self, line: &str) {
        self.clear();
        note!("{line}");
        self.redraw();
    }

    /// Draws the progress line: what runs now, and for how long.
    fn redraw(&mut self) {
        if !self.terminal {
            return;
        }
        let mut running: Vec<&String> = self.running.keys().map(|(_, key)| key).collect();
        running.sort();
        let now = match running.as_slice() {
            [] => "between steps".to_owned(),
            [one] => format!("running {one}"),
            [first, rest @ ..] => format!("running {first} and {} more", rest.len()),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r\x1b[2K… {now} · {} steps done · {:.1}s",
            self.steps_done,
            self.began.elapsed().as_secs_f64()
        );
        let _ = stderr.flush();
        self.shown = true;
    }

    /// Erases the progress line.
    fn clear(&mut self) {
        if self.shown {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
            self.shown = false;
        }
    }
}
