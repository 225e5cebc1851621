//! Many processes on one PostgreSQL database (`WORKFLOWS_TEST_POSTGRES`, each test in a schema
//! of its own), run for real with the `crash_worker` binary:
//!
//! - **the fleet under SIGKILL**: three workers and a client-only process that starts 500
//!   orders (a three-step saga; every fifth is compensated) for the workers to run, with SIGKILLs of random processes at random
//!   moments (at least 50, and on until nine orders in ten finished, or 200), each restarted. Every step body and compensation records who ran it and
//!   when, outside the store. Every order finishes; a step body runs again only after the
//!   process that ran it was killed; no two processes run one order's bodies at the same time
//!   unless the first was killed; each compensation runs once per step to be undone, by a
//!   process that lived through it, and the journal records each completion once;
//! - **a queue under SIGKILL**: the same fleet runs 200 orders started on a queue of
//!   concurrency 4 while workers are killed: never more than four orders run a body at once;
//! - **a stale worker**: SIGSTOPped past its lease while it waits (a retry's backoff, a durable
//!   sleep, a compensation's backoff) — inside a write transaction or not: the server ends a
//!   transaction left idle, so its row locks do not hold the execution —, two others take the
//!   execution over and finish it, and after SIGCONT the stale worker starts no body and no
//!   compensation, and writes nothing;
//! - **a rolling deploy**: an old build (`crash_worker`, the saga's version 0) and a new one
//!   (`crash_worker_v2`, versions 0 and 1) at once, under SIGKILLs: each order runs on the
//!   version that started it, and the new version's bodies only in the new build.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use workflows_tests::Random;
use workflows_tests::postgres::TestSchema;

const WORKER: &str = env!("CARGO_BIN_EXE_crash_worker");

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A schema, a side-effect log, and the processes run on them.
struct Fleet {
    schema: TestSchema,
    _dir: tempfile::TempDir,
    log: PathBuf,
    lease_ms: u64,
}

impl Fleet {
    fn new(lease_ms: u64) -> Option<Self> {
        let schema = runtime().block_on(TestSchema::new())?;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("effects.log");
        Some(Self { schema, _dir: dir, log, lease_ms })
    }

    fn process(&self, args: &[&str]) -> Child {
        self.process_of(WORKER, args)
    }

    /// A process of `program` (a build of the crash worker) on the fleet's schema.
    fn process_of(&self, program: &str, args: &[&str]) -> Child {
        Command::new(program)
            .arg(self.schema.url())
            .arg(&self.log)
            .arg("full")
            .args(args)
            .env("CRASH_LEASE_MS", self.lease_ms.to_string())
            .env_remove("CRASH_BLOCK")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Runs a query on the test's schema.
    fn query(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        runtime().block_on(async {
            let client = self.schema.connect().await;
            client.batch_execute(&format!("SET search_path TO {}", self.schema.name())).await.unwrap();
            client.query(sql, &[]).await.unwrap_or_default()
        })
    }

    /// The journal of `id` as (kind, call key) pairs.
    fn journal(&self, id: &str) -> Vec<(String, String)> {
        let sql = format!("SELECT kind, call_key FROM journal WHERE execution_id = '{id}' ORDER BY idx");
        self.query(&sql).iter().map(|r| (r.get(0), r.get(1))).collect()
    }
}

fn wait_until(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// Waits for a process and returns its stdout; fails the test with its stderr if it failed.
fn finish(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (mut stdout, mut stderr) = (String::new(), String::new());
            child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            assert!(status.success(), "worker failed ({status}): {stderr}");
            return stdout;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("worker did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One run of a step body or a compensation, from the side-effect log.
#[derive(Debug, Clone)]
struct Run {
    pid: u32,
    begin: i64,
    /// When it ended (completed or failed), if it did.
    end: Option<i64>,
}

/// The runs of step bodies and of compensations in the side-effect log, by (order, step).
type Runs = BTreeMap<(String, u32), Vec<Run>>;

fn runs(log: &[String]) -> (Runs, Runs) {
    let mut bodies = Runs::new();
    let mut compensations = Runs::new();
    for line in log {
        let parts: Vec<&str> = line.split(' ').collect();
        let (runs, pid, what, at) = match parts.as_slice() {
            ["body", order, step, _attempt, pid, what, at] => {
                (bodies.entry((order.to_string(), step.parse().unwrap())).or_default(), pid, what, at)
            }
            ["comp", order, step, pid, what, at] => {
                (compensations.entry((order.to_string(), step.parse().unwrap())).or_default(), pid, what, at)
            }
            _ => continue,
        };
        let (pid, at): (u32, i64) = (pid.parse().unwrap(), at.parse().unwrap());
        if *what == "begin" {
            runs.push(Run { pid, begin: at, end: None });
        } else {
            runs.iter_mut().rev().find(|r| r.pid == pid).expect("a begin before its end").end = Some(at);
        }
    }
    (bodies, compensations)
}

/// Kills a random worker (slots 1..=3 of `processes`; slot 0, the client, one time in ten if
/// `client_too`) every 20–140 ms and restarts it, at least `least` times and on until nine
/// orders in ten finished (or four times `least`). Returns when each killed process was
/// killed (by the system clock the side-effect log uses), by pid, and how many kills.
fn kill_randomly(
    fleet: &Fleet,
    processes: &mut [Child],
    start: impl Fn(usize) -> Child,
    random: &mut Random,
    orders: u32,
    least: usize,
    client_too: bool,
) -> (HashMap<u32, i64>, usize) {
    let mut killed: HashMap<u32, i64> = HashMap::new();
    let mut kills = 0;
    while kills < least || (finished(fleet) < i64::from(orders) * 9 / 10 && kills < 4 * least) {
        std::thread::sleep(Duration::from_millis(20 + random.below(120)));
        // The client (if it may be killed) starts the orders again from the first when
        // restarted (those that exist are skipped), and must get through them.
        let slot = if client_too && random.below(10) == 0 { 0 } else { 1 + random.below(3) as usize };
        kills += 1;
        // Noted before the kill: the process is gone no earlier than this.
        killed.insert(processes[slot].id(), workflows_runtime::Timestamp::now().as_micros());
        processes[slot].kill().unwrap();
        processes[slot].wait().unwrap();
        processes[slot] = start(slot);
    }
    (killed, kills)
}

/// How many executions finished.
fn finished(fleet: &Fleet) -> i64 {
    let sql = "SELECT COUNT(*) FROM executions WHERE state IN ('completed', 'compensated')";
    fleet.query(sql).first().map_or(0, |r| r.get::<_, i64>(0))
}

/// A seeded generator: `FLEET_SEED` replays a run, otherwise the time seeds it (printed).
fn seeded() -> Random {
    let seed = std::env::var("FLEET_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("FLEET_SEED={seed}");
    Random(seed)
}

const ORDERS: u32 = 500;
const KILLS: usize = 50;

#[test]
fn a_fleet_under_sigkill_finishes_every_order_and_runs_nothing_twice() {
    let Some(fleet) = Fleet::new(1000) else { return };
    let mut random = seeded();
    let orders = ORDERS.to_string();
    let start = |slot: usize| match slot {
        0 => fleet.process(&["orders", "order", &orders]),
        _ => fleet.process(&["work", "-"]),
    };
    // Slot 0 is the client; 1..=3 the workers.
    let mut processes: Vec<Child> = (0..4).map(start).collect();
    // At least KILLS kills, and on until most orders finished, so that kills land all along.
    let (killed, kills) = kill_randomly(&fleet, &mut processes, start, &mut random, ORDERS, KILLS, true);
    let killed_while_running = finished(&fleet);
    wait_until("every order to finish", Duration::from_secs(120), || finished(&fleet) == i64::from(ORDERS));
    for mut process in processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    println!("{kills} kills, {killed_while_running} of {ORDERS} orders had finished by the last one");

    let (bodies, compensations) = runs(&fleet.log());

    let was_killed = |pid: u32| killed.contains_key(&pid);
    for ((order, step), runs) in &bodies {
        // Only the last run may be by a process that lived on: each earlier one's process was
        // killed (a completed body whose completion was committed never runs again).
        for run in &runs[..runs.len() - 1] {
            assert!(was_killed(run.pid), "{order} step {step} ran again after a run by a live process: {runs:?}");
        }
        let last = runs.last().unwrap();
        assert!(last.end.is_some() || was_killed(last.pid), "{order} step {step} never ended: {runs:?}");
    }
    // No two processes run one order's bodies at the same time, unless the first was killed
    // before the second began.
    let mut by_order: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
    for ((order, _), runs) in &bodies {
        by_order.entry(order).or_default().extend(runs.iter());
    }
    for (order, mut runs) in by_order {
        runs.sort_by_key(|r| r.begin);
        for pair in runs.windows(2) {
            let (first, second) = (pair[0], pair[1]);
            if first.pid == second.pid {
                continue;
            }
            let stopped = first.end.or_else(|| killed.get(&first.pid).copied()).unwrap_or(i64::MAX);
            assert!(stopped <= second.begin, "{order}: bodies of two processes overlapped: {first:?} and {second:?}");
        }
    }
    // Each order that fails is compensated: steps 1 and 2 undone, each by one run of a process
    // that lived through it (runs by killed processes may have been cut short and redone).
    for k in (4..ORDERS).step_by(5) {
        let order = format!("order-{k}");
        for step in 1..=2 {
            let runs = compensations.get(&(order.clone(), step)).unwrap_or_else(|| panic!("{order} {step} undone"));
            let completed_by_survivors = runs.iter().filter(|r| r.end.is_some() && !was_killed(r.pid)).count();
            assert!(completed_by_survivors <= 1, "{order} step {step} compensated twice: {runs:?}");
            assert!(runs.iter().any(|r| r.end.is_some()), "{order} step {step} never compensated: {runs:?}");
        }
        assert!(!compensations.contains_key(&(order.clone(), 3)), "the failed step is not compensated");
    }
    // The journal records each completion and each compensation once.
    let counts = fleet.query(
        "SELECT kind, COUNT(*) FROM journal WHERE kind IN ('step_completed', 'compensation_completed') GROUP BY kind",
    );
    let count = |kind: &str| counts.iter().find(|r| r.get::<_, String>(0) == kind).map_or(0, |r| r.get::<_, i64>(1));
    let failing = i64::from(ORDERS / 5);
    assert_eq!(count("step_completed"), (i64::from(ORDERS) - failing) * 3 + failing * 2);
    assert_eq!(count("compensation_completed"), failing * 2);
    let duplicates = fleet.query(
        "SELECT execution_id, call_key FROM journal WHERE kind = 'step_completed'
         GROUP BY execution_id, call_key HAVING COUNT(*) > 1",
    );
    assert!(duplicates.is_empty(), "a step completed twice in a journal");
    let states = fleet.query("SELECT state, COUNT(*) FROM executions GROUP BY state ORDER BY state");
    let states: Vec<(String, i64)> = states.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(states, [("compensated".to_owned(), failing), ("completed".to_owned(), i64::from(ORDERS) - failing)]);
    let runners: HashSet<u32> = bodies.values().flatten().map(|r| r.pid).collect();
    let cut = bodies.values().flatten().filter(|r| r.end.is_none()).count();
    let again = bodies.values().map(|runs| runs.len() - 1).sum::<usize>();
    println!(
        "{} processes ran bodies; {cut} bodies were cut by a kill, {again} step runs were runs again",
        runners.len()
    );
    assert!(cut > 0 && again > 0, "the kills landed inside bodies");
}

const QUEUED_ORDERS: u32 = 200;
const QUEUE_KILLS: usize = 20;
/// The concurrency of the `fleet` queue, as `crash_worker` defines it.
const QUEUE_CONCURRENCY: usize = 4;

/// Three workers and a client-only process that starts 200 orders on a queue of concurrency 4,
/// with SIGKILLs of random workers (at least 20), each restarted: every order finishes, and
/// at no moment do more than four orders run a step body — a body cut by a kill counts as
/// running until its process was killed.
#[test]
fn a_queue_s_concurrency_holds_across_a_fleet_under_sigkill() {
    let Some(fleet) = Fleet::new(1000) else { return };
    let mut random = seeded();
    let orders = QUEUED_ORDERS.to_string();
    let start = |slot: usize| match slot {
        0 => fleet.process(&["queued", "mail", &orders]),
        _ => fleet.process(&["work", "-"]),
    };
    let mut processes: Vec<Child> = (0..4).map(start).collect();
    let (killed, kills) = kill_randomly(&fleet, &mut processes, start, &mut random, QUEUED_ORDERS, QUEUE_KILLS, false);
    wait_until("every queued order to finish", Duration::from_secs(120), || {
        finished(&fleet) == i64::from(QUEUED_ORDERS)
    });
    for mut process in processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    let (bodies, _) = runs(&fleet.log());
    assert_eq!(bodies.keys().map(|(order, _)| order).collect::<HashSet<_>>().len(), QUEUED_ORDERS as usize);
    // Each body runs from its begin to its end, or to its process's death.
    let mut changes: Vec<(i64, i32)> = Vec::new();
    for run in bodies.values().flatten() {
        let end = run.end.or_else(|| killed.get(&run.pid).copied());
        let end = end.unwrap_or_else(|| panic!("a body neither ended nor was killed: {run:?}"));
        changes.push((run.begin, 1));
        changes.push((end, -1));
    }
    // At one instant, an end before a begin.
    changes.sort();
    let (mut running, mut most) = (0, 0);
    for (_, change) in changes {
        running += change;
        most = most.max(running);
    }
    println!("{kills} kills; at most {most} orders ran a step body at once (the queue allows {QUEUE_CONCURRENCY})");
    assert!(most <= QUEUE_CONCURRENCY as i32, "the queue's concurrency was exceeded: {most} at once");
    assert!(most >= 2, "the queue ran orders side by side");
    let queued = fleet.query("SELECT COUNT(*) FROM executions WHERE queue = 'fleet' AND admitted_at IS NOT NULL");
    assert_eq!(
        queued.first().map(|r| r.get::<_, i64>(0)),
        Some(i64::from(QUEUED_ORDERS)),
        "all went through the queue"
    );
}

/// Three workers on one schema: the one driving the execution is stopped (SIGSTOP) for about
/// four leases while it waits, the two others take the execution over and finish it, then the
/// stopped one continues (SIGCONT): it starts no step body and no compensation once it cannot
/// prove its lease, and its writes are refused.
#[test]
fn a_stalled_worker_starts_no_body_and_no_compensation_after_losing_its_lease() {
    for (pause, marker, wait_for, outcome) in [
        ("Backoff", "pay begin 1", Some(("step_failed", "pay_later#1")), "STATE completed"),
        ("Sleep", "reserve", Some(("timer_started", "@sleep#1")), "STATE completed"),
        ("Compensation", "unhold begin 1", None, "STATE compensated"),
    ] {
        let Some(fleet) = Fleet::new(250) else { return };
        let id = format!("stale-{pause}");
        let stale = fleet.process(&["start", &id, &format!("stale:{pause}")]);
        wait_until(&format!("{pause}: `{marker}`"), Duration::from_secs(20), || {
            fleet.log().iter().any(|l| l.starts_with(marker))
        });
        if let Some((kind, key)) = wait_for {
            wait_until(&format!("{kind} {key}"), Duration::from_secs(20), || {
                fleet.journal(&id).iter().any(|(k, c)| k == kind && c == key)
            });
        }
        // Anywhere: inside a write transaction too (the server ends it once it sits idle).
        signal(&stale, "STOP");
        let stopped_at = Instant::now();
        let stale_pid = stale.id().to_string();
        let before = fleet.log();
        let journal_before = fleet.journal(&id).len();

        let others = [fleet.process(&["resume", &id]), fleet.process(&["resume", &id])];
        for other in others {
            assert_eq!(finish(other).trim(), outcome, "{pause}: {:?}", fleet.log());
        }
        let journal_after = fleet.journal(&id);
        // Stopped for at least four leases (250 ms each) in all.
        std::thread::sleep(Duration::from_millis(1000).saturating_sub(stopped_at.elapsed()));
        signal(&stale, "CONT");
        let stale_out = finish(stale);
        assert_eq!(stale_out.trim(), outcome, "{pause}");

        let after = fleet.log();
        let by_stale = |lines: &[String]| lines.iter().filter(|l| l.ends_with(&format!(" {stale_pid}"))).count();
        assert_eq!(
            by_stale(&after),
            by_stale(&before),
            "{pause}: the stale worker ran a body or a compensation after losing its lease: {after:?}"
        );
        assert!(journal_after.len() > journal_before, "{pause}: the others wrote");
        assert_eq!(fleet.journal(&id), journal_after, "{pause}: nothing the stale worker wrote landed");
        match pause {
            "Backoff" => assert_eq!(after.iter().filter(|l| l.starts_with("pay begin 2")).count(), 1, "{after:?}"),
            "Sleep" => assert_eq!(after.iter().filter(|l| l.starts_with("after sleep")).count(), 1, "{after:?}"),
            _ => assert_eq!(after.iter().filter(|l| *l == "release").count(), 1, "{after:?}"),
        }
    }
}

const WORKER_V2: &str = env!("CARGO_BIN_EXE_crash_worker_v2");
const DEPLOY_ORDERS: u32 = 80;
const DEPLOY_KILLS: usize = 12;

/// A rolling deploy: an old worker (the saga's version zero only) and a new one (versions zero
/// and one) on one schema at once, orders of both versions in flight (an old client starts
/// version zero orders, a new one version one orders), SIGKILLs of random processes, each
/// restarted as the same build: every order completes (or is compensated), each ran only the
/// steps of the version that started it, and no body or compensation of the new version ran
/// in an old worker.
#[test]
fn a_rolling_deploy_runs_each_execution_on_its_version_and_only_where_it_is_linked() {
    let Some(fleet) = Fleet::new(1000) else { return };
    let mut random = seeded();
    let orders = DEPLOY_ORDERS.to_string();
    let new_build = std::cell::RefCell::new(HashSet::new());
    let start = |slot: usize| {
        let (program, args): (&str, [&str; 3]) = match slot {
            0 => (WORKER, ["orders", "old", &orders]),
            1 => (WORKER, ["work", "-", ""]),
            2 => (WORKER_V2, ["work", "-", ""]),
            _ => (WORKER_V2, ["orders", "new", &orders]),
        };
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        let child = fleet.process_of(program, &args);
        if program == WORKER_V2 {
            new_build.borrow_mut().insert(child.id());
        }
        child
    };
    let mut processes: Vec<Child> = (0..4).map(start).collect();
    let total = i64::from(DEPLOY_ORDERS) * 2;
    let (_killed, kills) =
        kill_randomly(&fleet, &mut processes, start, &mut random, DEPLOY_ORDERS * 2, DEPLOY_KILLS, true);
    wait_until("every order to finish", Duration::from_secs(120), || finished(&fleet) == total);
    for mut process in processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    println!("{kills} kills");

    let versions = fleet.query("SELECT version, COUNT(*) FROM executions GROUP BY version ORDER BY version");
    let versions: Vec<(i64, i64)> = versions.iter().map(|r| (r.get(0), r.get(1))).collect();
    let per_version = i64::from(DEPLOY_ORDERS);
    assert_eq!(versions, [(0, per_version), (1, per_version)], "old orders on version 0, new ones on 1");
    let new_build = new_build.into_inner();
    let (bodies, compensations) = runs(&fleet.log());
    for ((order, step), runs) in bodies.iter().chain(&compensations) {
        let new_version = *step > 10;
        assert_eq!(new_version, order.starts_with("new-"), "{order} ran step {step} of the other version");
        if new_version {
            for run in runs {
                assert!(new_build.contains(&run.pid), "{order} step {step} ran in an old worker: {run:?}");
            }
        }
    }
    assert!(bodies.keys().any(|(order, _)| order.starts_with("new-")), "new orders ran");
    let duplicates = fleet.query(
        "SELECT execution_id, call_key FROM journal WHERE kind = 'step_completed'
         GROUP BY execution_id, call_key HAVING COUNT(*) > 1",
    );
    assert!(duplicates.is_empty(), "a step completed twice in a journal");
    let states = fleet.query("SELECT state, COUNT(*) FROM executions GROUP BY state ORDER BY state");
    let states: Vec<(String, i64)> = states.iter().map(|r| (r.get(0), r.get(1))).collect();
    let failing = i64::from(DEPLOY_ORDERS / 5) * 2;
    assert_eq!(states, [("compensated".to_owned(), failing), ("completed".to_owned(), total - failing)]);
}
