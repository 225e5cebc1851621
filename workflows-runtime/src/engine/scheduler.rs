//! Scheduled workflows (`#[workflow(schedule = "...")]`): each worker engine starts the runs its
//! schedules owe, exactly once per tick across every process sharing the store.
//!
//! A tick's execution id derives from the schedule and the tick's instant
//! ([`CronSchedule::tick_id`]), so processes racing to start a tick create one execution. The
//! store keeps, per schedule, up to which instant its ticks were taken care of (started,
//! skipped, or missed): each pass reads it, starts what the catch-up policy owes since, then
//! moves it forward with a compare-and-set. A process that dies between starting a tick and
//! moving the mark leaves the mark behind; the next pass (its own or another's) computes the
//! same ticks and their creations find the executions there.

use std::sync::Arc;
use std::time::Duration;

use super::core::EngineInner;
use super::engine::Engine;
use super::options::RunOptions;
use crate::error::RunError;
use crate::execution::{ExecutionId, ExecutionState};
use crate::registry::{Registry, WorkflowDefinition};
use crate::schedule::{CronSchedule, Overlap, ScheduleSpec, Tick};
use crate::store::{ScheduleAdvance, ScheduleState};
use crate::time::Timestamp;

/// A registered schedule, parsed.
pub(crate) struct Scheduled {
    pub(crate) definition: &'static WorkflowDefinition,
    pub(crate) spec: ScheduleSpec,
    pub(crate) cron: CronSchedule,
}

impl Scheduled {
    /// The schedule's name: its workflow's.
    pub(crate) fn name(&self) -> &'static str {
        self.definition.name()
    }
}

/// Missed ticks are counted one by one up to this many per pass (a schedule of every second
/// stopped for a year would otherwise take seconds to count).
const MISSED_COUNT_LIMIT: usize = 100_000;

/// How long the schedule loop sleeps at most between passes (the next tick is usually sooner).
const RECHECK: Duration = Duration::from_secs(30);

/// The registry's schedules, parsed; an error names the workflow whose pattern or time zone
/// cannot be used.
pub(crate) fn registered() -> Result<Vec<Scheduled>, String> {
    let mut scheduled = Vec::new();
    for definition in Registry::checked().workflows() {
        let Some(spec) = definition.schedule().copied() else { continue };
        let cron = CronSchedule::parse(spec.pattern, spec.zone)
            .map_err(|e| format!("the schedule of workflow `{}` cannot be used: {e}", definition.name()))?;
        scheduled.push(Scheduled { definition, spec, cron });
    }
    Ok(scheduled)
}

/// Says, once at the start of a worker engine, which stored schedules no workflow of this
/// program has (a scheduled workflow removed or renamed): their rows look active, and no
/// process runs their ticks.
pub(super) fn spawn_unknown_check(inner: &Arc<EngineInner>) {
    let inner = inner.clone();
    tokio::spawn(async move {
        match inner.unknown_schedules().await {
            Ok(unknown) => {
                for schedule in unknown {
                    tracing::warn!(
                        schedule = %schedule.name,
                        last_run = ?schedule.last_run.as_ref().map(ExecutionId::as_str),
                        "a stored schedule has no workflow in this program (removed or renamed, or only another \
                         program links it): its ticks do not run here; `workflows schedules` lists it"
                    );
                }
            }
            Err(error) => tracing::warn!(%error, "could not read the stored schedules"),
        }
    });
}

/// Runs the schedules of a worker engine until it closes: a pass at each tick (its jitter
/// included), and at least every [`RECHECK`].
pub(super) fn spawn(inner: &Arc<EngineInner>) {
    if inner.scheduled.is_empty() {
        return;
    }
    let weak = Arc::downgrade(inner);
    tokio::spawn(async move {
        loop {
            let Some(inner) = weak.upgrade() else { return };
            if inner.is_closed() || inner.is_draining() {
                return;
            }
            let now = Timestamp::now();
            let next = match inner.run_schedules(now).await {
                Ok(next) => next,
                Err(error) => {
                    tracing::warn!(%error, "could not start the runs the schedules owe; trying again");
                    Some(now + Duration::from_secs(1))
                }
            };
            let recheck = inner.poll(RECHECK);
            drop(inner);
            let pause = next.map_or(recheck, |at| at.duration_since(Timestamp::now()).min(recheck));
            tokio::time::sleep(pause).await;
        }
    });
}

impl EngineInner {
    /// One pass over the schedules at `now`: starts the runs they owe, records what was taken
    /// care of, and returns when the next tick is due.
    pub(crate) async fn run_schedules(self: &Arc<Self>, now: Timestamp) -> Result<Option<Timestamp>, RunError> {
        if self.scheduled.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = self.scheduled.iter().map(|s| s.name().to_owned()).collect();
        let states = self.store.schedules(&names, now).await?;
        let mut next: Option<Timestamp> = None;
        for (scheduled, state) in self.scheduled.iter().zip(states) {
            let handled = self.run_schedule(scheduled, &state, now).await?;
            if let Some(tick) = scheduled.cron.next_after(handled) {
                let at = tick + scheduled.spec.delay(tick);
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(next)
    }

    /// The pass of one schedule; returns up to which instant its ticks are taken care of.
    async fn run_schedule(
        self: &Arc<Self>,
        scheduled: &Scheduled,
        state: &ScheduleState,
        now: Timestamp,
    ) -> Result<Timestamp, RunError> {
        let name = scheduled.name();
        let due = scheduled.cron.due(state.handled, now, scheduled.spec.catch_up());
        // A tick is ready once its jitter has passed (every process computes the same delay).
        let ready: Vec<Timestamp> =
            due.run.iter().copied().take_while(|tick| *tick + scheduled.spec.delay(*tick) <= now).collect();
        let handled_to = match (ready.last(), due.missed) {
            (Some(last), _) => *last,
            (None, Some((_, last_missed))) => last_missed,
            (None, None) => return Ok(state.handled),
        };
        // Counted (up to a bound, however long the schedule was stopped) and stored.
        let missed = due.missed.map_or(0, |(first, last)| {
            let before = Timestamp::from_micros(first.as_micros() - 1);
            scheduled.cron.ticks_after(before).take_while(|t| *t <= last).take(MISSED_COUNT_LIMIT).count() as u64
        });
        if let Some((first, last)) = due.missed {
            tracing::warn!(
                missed,
                schedule = name,
                first = %first,
                last = %last,
                "scheduled ticks missed while no process ran the schedule (older than its catch-up window)"
            );
        }
        let mut last_run = state.last_run.clone();
        let mut started = None;
        if !state.paused {
            for tick in ready {
                if let Some(id) = self.start_tick(scheduled, tick, last_run.as_ref()).await? {
                    last_run = Some(id.clone());
                    started = Some(id);
                }
            }
        }
        let advance = ScheduleAdvance {
            name: name.to_owned(),
            from: state.handled,
            to: handled_to,
            last_run: started,
            missed,
            last_missed: due.missed.map(|(_, last)| last),
        };
        // Another process may have moved the mark meanwhile: it computed the same ticks.
        self.store.advance_schedule(&advance).await?;
        Ok(handled_to)
    }

    /// Starts the run of `tick`, unless the overlap policy says not to; returns its id if it
    /// started (or had started).
    async fn start_tick(
        self: &Arc<Self>,
        scheduled: &Scheduled,
        tick: Timestamp,
        previous: Option<&ExecutionId>,
    ) -> Result<Option<ExecutionId>, RunError> {
        let name = scheduled.name();
        let id = ExecutionId::from(CronSchedule::tick_id(name, tick));
        let mut options = RunOptions::new().id(id.clone());
        let previous_state = match (scheduled.spec.overlap, previous) {
            (Overlap::Allow, _) | (_, None) => None,
            (_, Some(previous)) if *previous == id => None,
            (_, Some(previous)) => self.store.execution(previous).await?.map(|record| record.state),
        };
        match (scheduled.spec.overlap, previous_state) {
            (Overlap::Skip, Some(state)) if !state.is_finished() => {
                tracing::info!(schedule = name, tick = %tick, "skipped a tick: the previous run is still going");
                return Ok(None);
            }
            (Overlap::QueueOne, Some(ExecutionState::Pending)) => {
                tracing::info!(schedule = name, tick = %tick, "skipped a tick: a run already waits for the previous one");
                return Ok(None);
            }
            (Overlap::QueueOne, _) => options = options.exclusive_key(format!("schedule:{name}")),
            _ => {}
        }
        self.start_scheduled(scheduled, Tick { schedule: name.to_owned(), at: tick }, options).await?;
        Ok(Some(id))
    }

    /// Starts a run of the scheduled workflow with the tick as its input.
    pub(crate) async fn start_scheduled(
        self: &Arc<Self>,
        scheduled: &Scheduled,
        tick: Tick,
        options: RunOptions,
    ) -> Result<crate::ExecutionHandle<Box<serde_json::value::RawValue>>, RunError> {
        let input = (scheduled.spec.input)(&tick)
            .map_err(|source| RunError::Input { workflow: scheduled.name().to_owned(), source })?;
        let engine = Engine { inner: self.clone() };
        engine.start_workflow_by_name(scheduled.name(), &*input, options).await
    }

    /// The stored schedules that no workflow of this program has.
    pub(crate) async fn unknown_schedules(&self) -> Result<Vec<UnknownSchedule>, RunError> {
        let registry = Registry::checked();
        let stored = self.store.stored_schedules().await?;
        Ok(stored
            .into_iter()
            .filter(|state| registry.workflow(&state.name).and_then(|w| w.schedule()).is_none())
            .map(|state| UnknownSchedule {
                name: state.name,
                since: state.since,
                handled: state.handled,
                paused: state.paused,
                last_run: state.last_run,
            })
            .collect())
    }

    /// The registered schedule `name`.
    pub(crate) fn schedule(&self, name: &str) -> Result<&Scheduled, RunError> {
        self.scheduled.iter().find(|s| s.name() == name).ok_or_else(|| RunError::UnknownSchedule {
            schedule: name.to_owned(),
            scheduled: self.scheduled.iter().map(|s| s.name().to_owned()).collect(),
        })
    }
}

/// A schedule as [`Engine::schedules`] shows it.
#[derive(Clone, Debug)]
pub struct ScheduleStatus {
    /// Its name: its workflow's.
    pub name: String,
    /// The cron pattern and its time zone.
    pub schedule: CronSchedule,
    /// Its overlap policy.
    pub overlap: Overlap,
    /// Its catch-up policy.
    pub catch_up: crate::schedule::CatchUp,
    /// Paused: its ticks are skipped.
    pub paused: bool,
    /// Its ticks up to this instant were taken care of.
    pub handled: Timestamp,
    /// Its next three ticks (each starts up to its jitter later).
    pub next: Vec<Timestamp>,
    /// Its latest run, if one started.
    pub last_run: Option<crate::ExecutionRecord>,
    /// How many of its ticks were missed (older than its catch-up window when a process ran
    /// it again; counted up to 100,000 per stop).
    pub missed: u64,
    /// The latest missed tick, if one was.
    pub last_missed: Option<Timestamp>,
}

/// A schedule the store keeps that no workflow of this program has (see
/// [`Engine::unknown_schedules`]).
#[derive(Clone, Debug)]
pub struct UnknownSchedule {
    /// Its name: the workflow's that had it.
    pub name: String,
    /// When a process first saw it.
    pub since: Timestamp,
    /// Its ticks up to this instant were taken care of (by a process that had it).
    pub handled: Timestamp,
    /// Paused.
    pub paused: bool,
    /// Its latest run, if one started.
    pub last_run: Option<ExecutionId>,
}

impl Engine {
    /// The schedules the store keeps that no workflow of this program has: a scheduled
    /// workflow removed or renamed (or one only another program links). No process of this
    /// program runs their ticks. `workflows schedules` lists them; worker engines warn at
    /// start.
    pub async fn unknown_schedules(&self) -> Result<Vec<UnknownSchedule>, RunError> {
        self.inner.unknown_schedules().await
    }

    /// The workflows with a schedule: their patterns and policies, whether they are paused,
    /// their next ticks and their latest run (what `workflows schedules` shows).
    pub async fn schedules(&self) -> Result<Vec<ScheduleStatus>, RunError> {
        let inner = &self.inner;
        let now = Timestamp::now();
        let names: Vec<String> = inner.scheduled.iter().map(|s| s.name().to_owned()).collect();
        let states = inner.store.schedules(&names, now).await?;
        let mut statuses = Vec::with_capacity(states.len());
        for (scheduled, state) in inner.scheduled.iter().zip(states) {
            let last_run = match &state.last_run {
                Some(id) => inner.store.execution(id).await?,
                None => None,
            };
            statuses.push(ScheduleStatus {
                name: state.name,
                schedule: scheduled.cron.clone(),
                overlap: scheduled.spec.overlap,
                catch_up: scheduled.spec.catch_up(),
                paused: state.paused,
                handled: state.handled,
                next: scheduled.cron.ticks_after(state.handled.max(now)).take(3).collect(),
                last_run,
                missed: state.missed,
                last_missed: state.last_missed,
            });
        }
        Ok(statuses)
    }

    /// Pauses schedule `name` across every process: its ticks are skipped (not caught up on
    /// resuming) until [`resume_schedule`](Self::resume_schedule).
    pub async fn pause_schedule(&self, name: &str) -> Result<(), RunError> {
        self.set_paused(name, true).await
    }

    /// Resumes a paused schedule from its next tick.
    pub async fn resume_schedule(&self, name: &str) -> Result<(), RunError> {
        self.set_paused(name, false).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<(), RunError> {
        let scheduled = self.inner.schedule(name)?;
        // Stored first if no process has run it yet.
        self.inner.store.schedules(&[scheduled.name().to_owned()], Timestamp::now()).await?;
        self.inner.store.pause_schedule(name, paused).await?;
        Ok(())
    }

    /// Starts a run of schedule `name` now, outside its ticks, paused or not. Each trigger is a
    /// run of its own, under the id `name@manual:<UUIDv7>` (never a tick's); the tick's instant
    /// is now.
    pub async fn trigger_schedule(
        &self,
        name: &str,
    ) -> Result<crate::ExecutionHandle<Box<serde_json::value::RawValue>>, RunError> {
        let scheduled = self.inner.schedule(name)?;
        let options = RunOptions::new().id(format!("{name}@manual:{}", uuid::Uuid::now_v7()));
        let tick = Tick { schedule: name.to_owned(), at: Timestamp::now() };
        self.inner.start_scheduled(scheduled, tick, options).await
    }

    /// Starts the runs of schedule `name`'s ticks from `from` to `until` (both included), each
    /// under its tick's id: a tick that ran already is not run again. Returns their ids.
    pub async fn backfill_schedule(
        &self,
        name: &str,
        from: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ExecutionId>, RunError> {
        let scheduled = self.inner.schedule(name)?;
        let before = Timestamp::from_micros(from.as_micros().saturating_sub(1));
        let mut ids = Vec::new();
        for tick in scheduled.cron.ticks_after(before).take_while(|tick| *tick <= until) {
            let id = ExecutionId::from(CronSchedule::tick_id(name, tick));
            let tick = Tick { schedule: name.to_owned(), at: tick };
            self.inner.start_scheduled(scheduled, tick, RunOptions::new().id(id.clone())).await?;
            ids.push(id);
        }
        Ok(ids)
    }

    /// One pass of the schedules as if the time were `now`: starts what they owe. The engine
    /// does this itself (unless built with `run_schedules(false)`); tests drive it with a
    /// simulated clock.
    #[doc(hidden)]
    pub async fn run_schedules_at(&self, now: Timestamp) -> Result<Option<Timestamp>, RunError> {
        self.inner.run_schedules(now).await
    }
}
