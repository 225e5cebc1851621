//! Crash exploration: a workflow run once to count its durable writes, then once per write and
//! side of it with a crash there — the engine killed with nothing more written, as SIGKILL
//! would —, a restart, and checks that the execution ended as the run without a crash did,
//! that nothing was journaled or compensated twice, and that no step body began once its
//! completion had landed. What at-least-once means for each step shows in the report.

mod store;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use self::store::{CrashPoint, When};
use self::store::{CrashStore, Scenario, Switch};
use crate::container::Container;
use crate::engine::double::BodyObserver;
use crate::engine::{Engine, EngineBuilder, RunOptions};
use crate::execution::{ExecutionId, ExecutionState};
use crate::journal::{CallKey, JournalEntry, JournalEvent};
use crate::store::{MemoryStore, Store};
use crate::testing::TestClock;
use crate::workflow::WorkflowFn;

/// How long (of the test clock's time) a restarted execution may take to end.
const RESTART_LIMIT: Duration = Duration::from_secs(400 * 24 * 3600);

/// Explores crashes at every durable write of workflow `W` run with `input`: see
/// [`CrashExploration`].
///
/// ```
/// use workflows_runtime::prelude::*;
/// use workflows_runtime::testing::explore_crashes;
///
/// #[step]
/// async fn reserve_for_doc(sku: String) -> Result<String, StepError> {
///     Ok(format!("reservation of {sku}"))
/// }
///
/// #[workflow]
/// async fn order_for_doc(wf: &Workflow, sku: String) -> Result<String, WorkflowError> {
///     Ok(reserve_for_doc(wf, sku).await?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let report = explore_crashes::<order_for_doc>("sku-1".to_owned()).run().await.unwrap();
/// assert!(report.crash_points() >= 4);
/// println!("{report}");
/// # }
/// ```
pub fn explore_crashes<W: WorkflowFn>(input: W::Input) -> CrashExploration<W> {
    CrashExploration {
        input: serde_json::to_value(&input).expect("a workflow's input encodes as JSON"),
        world: Box::new(Container::new),
        configure: Box::new(|builder| builder),
        check: None,
        outside: None,
        workflow: PhantomData,
    }
}

/// The world outside the engine, acting on it: see [`CrashExploration::outside`].
type Outside = dyn Fn(Engine, Container) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// The services of a scenario, and how its execution ended.
type Check = dyn Fn(&Container, &Ending) -> Result<(), String>;

/// A crash exploration of one workflow and input, configured, then [`run`](Self::run).
///
/// The run without a crash goes first, on a fresh store, and counts the execution's durable
/// writes (creating it, each journal append, suspending, claiming it back, delivering). Then,
/// for every write *k* and each side of it, a fresh store and a fresh [`container`](Self::container)
/// (the world the steps act on), an engine that runs the workflow and is killed just before
/// write *k* lands (or just after it lands, its answer lost), and a second engine that starts
/// on the same store and the same world, asks for the execution again with the same id (as a
/// caller that retries would) and lets it end. For each, it checks:
///
/// 1. the execution ends in the same state, with the same output, as without a crash;
/// 2. no step's output is journaled twice, no compensation completes twice, and compensations
///    run in the reverse order of their steps' completions;
/// 3. no step body begins after its completion was committed (a replay must not run it);
/// 4. the [`check`](Self::check) given, on the scenario's world and ending (e.g. "one email
///    was sent").
///
/// The first violation fails the exploration, naming the write, its side, and the rule. The
/// report counts every step body run over all scenarios: a step whose body ran twice in a
/// scenario did its side effect twice, unless it is idempotent (see
/// [`StepContext::idempotency_key`](crate::StepContext::idempotency_key)).
///
/// Runs under the test clock (it starts one if the runtime has none), in process, on the
/// memory store: deterministic, each scenario in milliseconds. Needs Tokio's current-thread
/// runtime, as [`TestClock`] does.
pub struct CrashExploration<W> {
    input: Value,
    world: Box<dyn Fn() -> Container>,
    configure: Box<dyn Fn(EngineBuilder) -> EngineBuilder>,
    check: Option<Box<Check>>,
    outside: Option<Box<Outside>>,
    workflow: PhantomData<fn() -> W>,
}

/// How a scenario's execution ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Ending {
    /// Its final state.
    pub state: ExecutionState,
    /// Its output, if it completed.
    pub output: Option<Value>,
    /// Its failure's message, if it did not complete.
    pub failure: Option<String>,
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.state)?;
        if let Some(output) = &self.output {
            write!(f, " with {output}")?;
        }
        if let Some(failure) = &self.failure {
            write!(f, " ({failure})")?;
        }
        Ok(())
    }
}

impl<W: WorkflowFn> CrashExploration<W> {
    /// Builds the world of each scenario: the services its steps resolve, fresh for each
    /// scenario and shared by the engine that crashes and the one that restarts (the world
    /// survives a crash). By default an empty container.
    pub fn container(mut self, world: impl Fn() -> Container + 'static) -> Self {
        self.world = Box::new(world);
        self
    }

    /// Configures every engine of the exploration (doubles, a default retry policy, ...).
    pub fn configure(mut self, configure: impl Fn(EngineBuilder) -> EngineBuilder + 'static) -> Self {
        self.configure = Box::new(configure);
        self
    }

    /// Checks each scenario's world and ending (the run without a crash's too): an error
    /// message fails the exploration at that scenario.
    pub fn check(mut self, check: impl Fn(&Container, &Ending) -> Result<(), String> + 'static) -> Self {
        self.check = Some(Box::new(check));
        self
    }

    /// Acts from outside on the engine of each scenario while it runs — completes the async
    /// steps whose tokens the world received, sends events —: `act` is started with each
    /// engine (the one that crashes, then the one that restarts) and the scenario's world, and
    /// dropped with the engine. Whatever it sends may arrive before, between or after any of
    /// the writes explored; sending twice (after the restart) must be harmless, as it is for
    /// a webhook retried by its provider.
    pub fn outside<F>(mut self, act: impl Fn(Engine, Container) -> F + 'static) -> Self
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.outside = Some(Box::new(move |engine, world| Box::pin(act(engine, world))));
        self
    }

    /// Runs the exploration: the report, or the first scenario that broke a rule.
    pub async fn run(self) -> Result<CrashReport, Box<CrashFailure>> {
        let _clock = crate::time::virtual_clock::current().is_none().then(TestClock::start);
        let began = std::time::Instant::now();
        let workflow = W::definition().name().to_owned();
        let baseline = self.scenario(None).await.map_err(|problem| self.failure(None, 0, problem, None))?;
        if let Err(problem) = self.verify(&baseline, &baseline) {
            return Err(self.failure(None, baseline.writes.len(), problem, Some(&baseline)));
        }
        let writes = baseline.writes.clone();
        let mut report = CrashReport {
            workflow,
            writes: writes.clone(),
            scenarios: 0,
            bodies: BTreeMap::new(),
            took: Duration::ZERO,
        };
        report.count(&baseline, true);
        for write in 1..=writes.len() {
            for when in [When::Before, When::After] {
                let point = CrashPoint { write, when };
                let ran = self
                    .scenario(Some(point))
                    .await
                    .map_err(|problem| self.failure(Some((point, &writes)), writes.len(), problem, None))?;
                report.scenarios += 1;
                report.count(&ran, false);
                if let Err(problem) = self.verify(&ran, &baseline) {
                    return Err(self.failure(Some((point, &writes)), writes.len(), problem, Some(&ran)));
                }
            }
        }
        report.took = began.elapsed();
        Ok(report)
    }

    fn failure(
        &self,
        point: Option<(CrashPoint, &[String])>,
        writes: usize,
        problem: String,
        ran: Option<&Ran>,
    ) -> Box<CrashFailure> {
        Box::new(CrashFailure {
            workflow: W::definition().name().to_owned(),
            point: point.map(|(point, _)| point),
            write: point.and_then(|(point, writes)| writes.get(point.write - 1).cloned()),
            writes,
            problem,
            bodies: ran.map(|ran| body_counts(&ran.bodies)).unwrap_or_default(),
        })
    }

    /// One scenario: run, crash at `point` (if given and reached), restart, let it end.
    async fn scenario(&self, point: Option<CrashPoint>) -> Result<Ran, String> {
        // In memory: its writes complete where they are made, so every scenario runs the same
        // way (a file store's writer thread would let timing choose among them).
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let scenario = Arc::new(Scenario::default());
        let world = (self.world)();
        let id = ExecutionId::from("explored");
        let observed = scenario.clone();
        let observer: BodyObserver = Arc::new(move |execution, key, body| observed.body_began(execution, key, body));
        let engine = |switch: Arc<Switch>| {
            let store = CrashStore { inner: store.clone(), switch, scenario: scenario.clone() };
            let builder = Engine::builder()
                .store_contract(Arc::new(store))
                .container(world.clone())
                .observe_bodies(observer.clone())
                .run_schedules(false);
            (self.configure)(builder).start()
        };
        // Starts the execution (or, after a restart, asks for it again by its id, as a caller
        // that retries would) and waits for it to end.
        let ask = |engine: &Engine| {
            let (engine, id) = (engine.clone(), id.clone());
            let input = serde_json::from_value::<W::Input>(self.input.clone()).map_err(|e| e.to_string());
            async move {
                let handle =
                    engine.start_workflow::<W>(input?, RunOptions::new().id(id)).await.map_err(|e| e.to_string())?;
                let _ = handle.result().await;
                Ok::<(), String>(())
            }
        };

        let outside = |engine: &Engine| {
            self.outside.as_ref().map(|act| AbortOnDrop(tokio::spawn(act(engine.clone(), world.clone()))))
        };
        let switch = Arc::new(Switch::new(point));
        let first = engine(switch.clone()).await.map_err(|e| format!("the engine did not start: {e}"))?;
        let acting = outside(&first);
        let crashed = tokio::select! {
            ran = ask(&first) => { ran?; false }
            () = switch.crash.notified() => true,
        };
        let writes = switch.writes.lock().clone();
        let last = if crashed {
            first.kill();
            drop(acting);
            let second =
                engine(Arc::new(Switch::new(None))).await.map_err(|e| format!("the engine did not restart: {e}"))?;
            let _acting = outside(&second);
            match tokio::time::timeout(RESTART_LIMIT, ask(&second)).await {
                Ok(ended) => {
                    ended.map_err(|e| format!("after the restart, the run could not be asked for again: {e}"))?
                }
                Err(_) => {
                    return Err("after the restart, the execution did not end within 400 days of the test clock".into());
                }
            }
            second
        } else {
            first
        };
        let record =
            last.execution(&id).await.map_err(|e| e.to_string())?.ok_or("the execution is not in the store")?;
        let journal = last.journal(&id).await.map_err(|e| e.to_string())?;
        last.shutdown().await;
        let ending = Ending {
            state: record.state,
            output: record.result.as_ref().and_then(|raw| serde_json::from_str(raw.get()).ok()),
            failure: record.failure.map(|failure| failure.message),
        };
        let bodies = scenario.bodies.lock().clone();
        Ok(Ran { ending, journal, writes, bodies, world })
    }

    /// The rules of a scenario against the run without a crash.
    fn verify(&self, ran: &Ran, baseline: &Ran) -> Result<(), String> {
        if ran.ending != baseline.ending {
            return Err(format!("the execution ended {}, but without a crash it ends {}", ran.ending, baseline.ending));
        }
        journaled_once(&ran.journal)?;
        if let Some((step, key)) = ran.bodies.iter().find_map(|(step, late)| late.as_ref().map(|key| (step, key))) {
            return Err(format!(
                "the body of step `{step}` ({key}) began after its completion was committed: a replay ran it again"
            ));
        }
        if let Some(check) = &self.check {
            check(&ran.world, &ran.ending).map_err(|message| format!("the check failed: {message}"))?;
        }
        Ok(())
    }
}

/// Every step output journaled once, every compensation completed once, compensations in the
/// reverse order of their steps' completions.
fn journaled_once(journal: &[JournalEntry]) -> Result<(), String> {
    let mut completed: HashMap<&CallKey, usize> = HashMap::new();
    let mut compensated: Vec<&CallKey> = Vec::new();
    for entry in journal {
        match &entry.event {
            JournalEvent::StepCompleted { key, .. } if completed.insert(key, entry.index as usize).is_some() => {
                return Err(format!("the output of {key} was journaled twice"));
            }
            JournalEvent::CompensationCompleted { key, .. } => {
                if compensated.contains(&key) {
                    return Err(format!("the compensation of {key} completed twice"));
                }
                compensated.push(key);
            }
            _ => {}
        }
    }
    for pair in compensated.windows(2) {
        let (first, then) = (completed.get(pair[0]), completed.get(pair[1]));
        if let (Some(first), Some(then)) = (first, then)
            && first < then
        {
            return Err(format!(
                "{} was compensated before {}, which completed later: compensations run in reverse completion order",
                pair[0], pair[1]
            ));
        }
    }
    Ok(())
}

/// A task stopped when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one scenario left.
struct Ran {
    ending: Ending,
    journal: Vec<JournalEntry>,
    /// The counted writes of its first engine.
    writes: Vec<String>,
    /// Step bodies begun, in order (with the call if it began after its completion landed).
    bodies: Vec<(String, Option<CallKey>)>,
    world: Container,
}

fn body_counts(bodies: &[(String, Option<CallKey>)]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (step, _) in bodies {
        *counts.entry(step.clone()).or_insert(0) += 1;
    }
    counts
}

/// What a crash exploration found: every scenario ended as the run without a crash did.
#[derive(Clone, Debug)]
pub struct CrashReport {
    workflow: String,
    writes: Vec<String>,
    scenarios: usize,
    bodies: BTreeMap<String, BodyRuns>,
    took: Duration,
}

/// How often one step's body ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BodyRuns {
    /// In the run without a crash.
    pub without_crash: usize,
    /// In the scenario that ran it most.
    pub most_in_a_scenario: usize,
    /// Over every crash scenario.
    pub total: usize,
}

impl CrashReport {
    /// The durable writes of the run without a crash, described, in order.
    pub fn writes(&self) -> &[String] {
        &self.writes
    }

    /// How many crash scenarios ran (two per write).
    pub fn crash_points(&self) -> usize {
        self.scenarios
    }

    /// How often each step's body ran, by step name.
    pub fn bodies(&self) -> &BTreeMap<String, BodyRuns> {
        &self.bodies
    }

    fn count(&mut self, ran: &Ran, baseline: bool) {
        for (step, count) in body_counts(&ran.bodies) {
            let runs = self.bodies.entry(step).or_default();
            if baseline {
                runs.without_crash = count;
            } else {
                runs.total += count;
                runs.most_in_a_scenario = runs.most_in_a_scenario.max(count);
            }
        }
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "crash exploration of `{}`: {} durable writes, {} crash scenarios (just before and just after each), all ended as the run without a crash ({:.0?})",
            self.workflow,
            self.writes.len(),
            self.scenarios,
            self.took
        )?;
        writeln!(
            f,
            "step bodies and compensations run: without a crash / at most in one scenario / over all scenarios"
        )?;
        for (step, runs) in &self.bodies {
            let repeated = if runs.most_in_a_scenario > runs.without_crash {
                "  (at least once: repeated after some crashes)"
            } else {
                ""
            };
            writeln!(f, "  {step}: {} / {} / {}{repeated}", runs.without_crash, runs.most_in_a_scenario, runs.total)?;
        }
        Ok(())
    }
}

/// A crash scenario that broke a rule: where it crashed, which rule, and what ran.
#[derive(Clone, Debug)]
pub struct CrashFailure {
    workflow: String,
    /// The crash point (`None`: the run without a crash failed).
    pub point: Option<CrashPoint>,
    /// The write the crash fell next to, described.
    pub write: Option<String>,
    writes: usize,
    /// The rule broken, and how.
    pub problem: String,
    /// How often each step's body ran in that scenario.
    pub bodies: BTreeMap<String, usize>,
}

impl fmt::Display for CrashFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.point, &self.write) {
            (Some(point), Some(write)) => {
                let side = match point.when {
                    When::Before => "just before",
                    When::After => "just after",
                };
                write!(
                    f,
                    "`{}` crashed {side} write {} of {} ({write}): {}",
                    self.workflow, point.write, self.writes, self.problem
                )?;
            }
            _ => write!(f, "`{}` without a crash: {}", self.workflow, self.problem)?,
        }
        if !self.bodies.is_empty() {
            let bodies: Vec<String> = self.bodies.iter().map(|(step, n)| format!("{step} ×{n}")).collect();
            write!(f, "\n  step bodies and compensations run in this scenario: {}", bodies.join(", "))?;
        }
        Ok(())
    }
}

impl std::error::Error for CrashFailure {}
