//! Scheduled workflows through the public API, on a simulated clock: the engines are built with
//! `run_schedules(false)` and the tests drive their passes with `run_schedules_at(now)` — a
//! year in a second, no real waiting. (The cron and time-zone rules, daylight-saving changes
//! in Paris, New York and Lord Howe included, are tested beside `CronSchedule`.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{CronSchedule, ExecutionQuery, ExecutionState, MemoryStore, Tick, Timestamp};
use workflows_tests::{Gate, Random, eventually};

/// The ticks each scheduled step saw, by schedule.
#[derive(Default)]
struct Seen(Mutex<BTreeMap<String, Vec<Timestamp>>>);

#[step]
async fn record_tick(ctx: &StepContext, tick: Tick) -> Result<(), StepError> {
    if let Ok(seen) = ctx.resolve::<Arc<Seen>>() {
        seen.0.lock().unwrap().entry(tick.schedule.clone()).or_default().push(tick.at);
    }
    // Held while a test keeps its gate closed.
    if let Ok(gate) = ctx.resolve::<Arc<Gate>>() {
        gate.pass().await;
    }
    Ok(())
}

#[workflow(schedule = "0 * * * *", tz = "Europe/Paris", overlap = "allow", catch_up = "3h", jitter = "20m")]
async fn hourly_report(wf: &Workflow, tick: Tick) -> Result<(), WorkflowError> {
    Ok(record_tick(wf, tick).await?)
}

#[workflow(schedule = "0 0 6 * * *")]
async fn morning_digest(wf: &Workflow, tick: Tick) -> Result<(), WorkflowError> {
    Ok(record_tick(wf, tick).await?)
}

#[workflow(schedule = "30 6 * * *", overlap = "queue_one")]
async fn morning_sync(wf: &Workflow, tick: Tick) -> Result<(), WorkflowError> {
    Ok(record_tick(wf, tick).await?)
}

fn utc(text: &str) -> Timestamp {
    Timestamp::from(humantime::parse_rfc3339(text).unwrap())
}

fn hours(n: u64) -> Duration {
    Duration::from_secs(3600 * n)
}

/// `at` moved back by `by`.
fn before(at: Timestamp, by: Duration) -> Timestamp {
    Timestamp::from_micros(at.as_micros() - by.as_micros() as i64)
}

/// An engine on `store` that runs schedules only when told, with `services`.
async fn engine(store: &Arc<MemoryStore>, services: Container) -> Engine {
    Engine::builder()
        .store(store.clone())
        .container(services)
        .run_schedules(false)
        .lease_duration(Duration::from_millis(300))
        .start()
        .await
        .unwrap()
}

/// The executions of `workflow`, by id.
async fn executions(engine: &Engine, workflow: &str) -> BTreeMap<String, ExecutionState> {
    let query = ExecutionQuery { workflow: Some(workflow.to_owned()), ..Default::default() };
    engine.executions(&query).await.unwrap().into_iter().map(|r| (r.id.to_string(), r.state)).collect()
}

/// A year of an hourly schedule (in Paris, with its two daylight-saving changes; 20 minutes of
/// jitter; a catch-up window of three hours) over three processes sharing one store, each
/// passing at its own moments, restarted now and then, with outages of all three — some
/// shorter than the catch-up window, some longer. Every tick runs exactly once, except the
/// ticks older than the window when an outage ended, which never run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_an_hourly_schedule_over_three_processes_runs_each_tick_once() {
    let store = Arc::new(MemoryStore::new());
    let seen = Arc::new(Seen::default());
    let services = || Container::new().with(seen.clone());
    let mut engines =
        vec![engine(&store, services()).await, engine(&store, services()).await, engine(&store, services()).await];
    let schedule = CronSchedule::parse("0 * * * *", "Europe/Paris").unwrap();
    let spec = *hourly_report::definition().schedule().unwrap();
    let start = utc("2027-01-01T00:00:00Z");
    // First sight: its ticks from here on are owed.
    engines[0].run_schedules_at(start).await.unwrap();
    // A fixed seed: the same year every run.
    let mut random = Random(0x5eed_2027);
    let mut now = start;
    let end = start + hours(24 * 365);
    // When some process passed: the model of what must run.
    let mut passes: Vec<Timestamp> = Vec::new();
    let mut outages = 0;
    while now < end {
        now = now + Duration::from_secs(60 * (5 + random.below(25)));
        match random.below(1000) {
            // An outage of every process: 1 to 8 hours, then a pass by a restarted process.
            0..=2 => {
                now = now + Duration::from_secs(60 * (60 + random.below(7 * 60)));
                outages += 1;
            }
            // A restart of one process.
            3..=12 => {
                let k = random.below(3) as usize;
                engines[k].shutdown().await;
                engines[k] = engine(&store, services()).await;
            }
            _ => {}
        }
        let k = random.below(3) as usize;
        engines[k].run_schedules_at(now).await.unwrap();
        passes.push(now);
    }
    // The model: a tick runs at the first pass at or after its jitter's end, if that pass is
    // within the catch-up window of it; otherwise it is missed.
    let mut expected = BTreeSet::new();
    let mut missed = 0;
    for tick in schedule.ticks_after(start).take_while(|t| *t < now) {
        let ready = tick + spec.delay(tick);
        let Some(first) = passes.iter().find(|p| **p >= ready) else { continue };
        if first.duration_since(tick) < hours(3) {
            expected.insert(tick);
        } else {
            missed += 1;
        }
    }
    let engine = &engines[0];
    eventually(Duration::from_secs(60), || async {
        let runs = executions(engine, "hourly_report").await;
        runs.values().all(|s| *s == ExecutionState::Completed).then_some(())
    })
    .await;
    let status = engine.schedules().await.unwrap().into_iter().find(|s| s.name == "hourly_report").unwrap();
    assert_eq!(status.missed, missed, "the missed ticks are counted in the store");
    let runs = executions(engine, "hourly_report").await;
    let ran: BTreeSet<Timestamp> =
        seen.0.lock().unwrap().get("hourly_report").cloned().unwrap_or_default().into_iter().collect();
    println!("{} ticks ran, {missed} missed in {outages} outages", expected.len());
    assert!(outages >= 10 && missed > 0, "outages longer than the window happened ({outages}, {missed} missed)");
    assert_eq!(runs.len(), expected.len(), "one execution per tick that ran, none for a missed one");
    assert_eq!(ran, expected, "each tick ran, and no other");
    let ids: BTreeSet<String> = expected.iter().map(|t| CronSchedule::tick_id("hourly_report", *t)).collect();
    assert_eq!(runs.keys().cloned().collect::<BTreeSet<_>>(), ids, "each under its tick's id");
    for engine in engines {
        engine.shutdown().await;
    }
}

/// `skip` (the default): a tick that comes while the previous run still goes does not run;
/// the one after it does, once that run finished. Pausing skips ticks until resumed; a trigger
/// runs at once; a backfill runs past ticks once, however often it is asked.
#[tokio::test]
async fn overlapping_ticks_are_skipped_and_schedules_pause_trigger_and_backfill() {
    let store = Arc::new(MemoryStore::new());
    let gate = Arc::new(Gate::default());
    let engine = engine(&store, Container::new().with(gate.clone())).await;
    let day = |d: u32| utc(&format!("2027-03-{d:02}T06:00:00Z"));
    engine.run_schedules_at(before(day(1), hours(1))).await.unwrap();
    engine.run_schedules_at(day(1)).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() >= 1).then_some(()) }).await;
    engine.run_schedules_at(day(2)).await.unwrap();
    let id = |d: u32| CronSchedule::tick_id("morning_digest", day(d));
    assert_eq!(executions(&engine, "morning_digest").await.into_keys().collect::<Vec<_>>(), [id(1)], "day 2 skipped");
    gate.open();
    eventually(Duration::from_secs(5), || async {
        (executions(&engine, "morning_digest").await.get(&id(1)) == Some(&ExecutionState::Completed)).then_some(())
    })
    .await;
    engine.run_schedules_at(day(3)).await.unwrap();
    eventually(Duration::from_secs(5), || async {
        (executions(&engine, "morning_digest").await.get(&id(3)) == Some(&ExecutionState::Completed)).then_some(())
    })
    .await;

    engine.pause_schedule("morning_digest").await.unwrap();
    engine.run_schedules_at(day(4)).await.unwrap();
    let status = engine.schedules().await.unwrap().into_iter().find(|s| s.name == "morning_digest").unwrap();
    assert!(status.paused);
    engine.resume_schedule("morning_digest").await.unwrap();
    engine.run_schedules_at(day(5)).await.unwrap();
    let runs = executions(&engine, "morning_digest").await;
    assert!(!runs.contains_key(&id(4)) && runs.contains_key(&id(5)), "paused on day 4, resumed by day 5: {runs:?}");

    let filled = engine.backfill_schedule("morning_digest", day(2), day(4)).await.unwrap();
    let again = engine.backfill_schedule("morning_digest", day(1), day(4)).await.unwrap();
    assert_eq!(filled.len(), 3);
    assert_eq!(again.len(), 4);
    let runs = executions(&engine, "morning_digest").await;
    assert_eq!(runs.keys().cloned().collect::<Vec<_>>(), (1..=5).map(id).collect::<Vec<_>>(), "each tick once");

    // Two triggers at once (the same second): two runs.
    let triggered = engine.trigger_schedule("morning_digest").await.unwrap();
    let again = engine.trigger_schedule("morning_digest").await.unwrap();
    assert!(triggered.id().as_str().starts_with("morning_digest@manual:"), "{}", triggered.id());
    assert_ne!(triggered.id(), again.id(), "each trigger is a run of its own");
    triggered.await.unwrap();
    again.await.unwrap();
    let error = engine.trigger_schedule("nightly").await.unwrap_err();
    assert!(error.to_string().contains("no workflow named `nightly` has a schedule"), "{error}");
}

/// `queue_one`: a tick that comes while the previous run goes waits for it; a third tick that
/// finds one already waiting does not run.
#[tokio::test]
async fn queue_one_keeps_one_tick_waiting_behind_a_run() {
    let store = Arc::new(MemoryStore::new());
    let gate = Arc::new(Gate::default());
    let engine = engine(&store, Container::new().with(gate.clone())).await;
    let day = |d: u32| utc(&format!("2027-04-{d:02}T06:30:00Z"));
    let id = |d: u32| CronSchedule::tick_id("morning_sync", day(d));
    engine.run_schedules_at(before(day(1), hours(1))).await.unwrap();
    engine.run_schedules_at(day(1)).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() >= 1).then_some(()) }).await;
    engine.run_schedules_at(day(2)).await.unwrap();
    engine.run_schedules_at(day(3)).await.unwrap();
    let runs = executions(&engine, "morning_sync").await;
    assert_eq!(runs.keys().cloned().collect::<Vec<_>>(), [id(1), id(2)], "day 3 found day 2 waiting");
    assert_eq!(runs[&id(2)], ExecutionState::Pending, "waiting for day 1's run");
    gate.open();
    eventually(Duration::from_secs(5), || async {
        let runs = executions(&engine, "morning_sync").await;
        runs.values().all(|s| *s == ExecutionState::Completed).then_some(())
    })
    .await;
}

/// Three engines on one store pass at the same simulated moments, concurrently, for two days
/// of ticks: each tick is started once, whoever wins the race.
async fn racing_passes_start_each_tick_once(build: impl Fn() -> workflows_runtime::EngineBuilder) {
    let seen = Arc::new(Seen::default());
    let mut engines = Vec::new();
    for _ in 0..3 {
        let builder = build().container(Container::new().with(seen.clone())).run_schedules(false);
        engines.push(builder.lease_duration(Duration::from_secs(2)).start().await.unwrap());
    }
    let start = utc("2027-06-01T00:00:00Z");
    engines[0].run_schedules_at(start).await.unwrap();
    let mut now = start;
    for _ in 0..96 {
        now = now + Duration::from_secs(30 * 60);
        let passes = engines.iter().map(|engine| engine.run_schedules_at(now));
        for pass in futures_util::future::join_all(passes).await {
            pass.unwrap();
        }
    }
    // Two days of hourly ticks, those whose jitter had passed by the last pass.
    let spec = *hourly_report::definition().schedule().unwrap();
    let schedule = CronSchedule::parse(spec.pattern, spec.zone).unwrap();
    let expected = schedule.ticks_after(start).take_while(|t| *t + spec.delay(*t) <= now).count();
    assert!(expected >= 47);
    let engine = &engines[0];
    eventually(Duration::from_secs(60), || async {
        let runs = executions(engine, "hourly_report").await;
        (runs.len() == expected && runs.values().all(|s| *s == ExecutionState::Completed)).then_some(())
    })
    .await;
    let ticks = seen.0.lock().unwrap().get("hourly_report").cloned().unwrap_or_default();
    let distinct: BTreeSet<Timestamp> = ticks.iter().copied().collect();
    assert_eq!(distinct.len(), expected, "each tick ran");
    assert_eq!(ticks.len(), expected, "and none twice");
    for engine in engines {
        engine.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_passes_on_one_sqlite_file_start_each_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.db");
    racing_passes_start_each_tick_once(|| Engine::builder().sqlite(&path)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_passes_on_one_postgres_schema_start_each_tick_once() {
    let Some(schema) = workflows_tests::postgres::TestSchema::new().await else { return };
    let options = || workflows_runtime::PostgresOptions::new().pool_size(3);
    racing_passes_start_each_tick_once(|| Engine::builder().postgres_with(schema.url(), options())).await;
}

/// A schedule stored by a workflow this program no longer has (removed or renamed) is listed
/// as unknown, with its last run: nothing here runs its ticks, and it says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_schedule_without_a_workflow_is_listed_as_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedules.db");
    drop(Engine::builder().sqlite(&path).run_schedules(false).start().await.unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.execute(
        "INSERT INTO schedules (name, since, handled, paused, last_run) VALUES ('gone_report', 1, 2, 0, 'gone_report@x')",
        [],
    )
    .unwrap();
    let engine = Engine::builder().sqlite(&path).run_schedules(false).start().await.unwrap();
    let unknown = engine.unknown_schedules().await.unwrap();
    assert_eq!(unknown.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["gone_report"]);
    assert_eq!(unknown[0].last_run.as_ref().map(|id| id.as_str()), Some("gone_report@x"));
    // The registered ones are not unknown, stored or not.
    engine.run_schedules_at(utc("2027-01-01T00:00:00Z")).await.unwrap();
    assert_eq!(engine.unknown_schedules().await.unwrap().len(), 1);
}
