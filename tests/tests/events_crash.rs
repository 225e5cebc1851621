//! Events under SIGKILL, with real processes (the `crash_worker` binary) on one SQLite file: a
//! client emits 1,000 events (each under its own id) while three workers dispatch them to a
//! subscribing workflow whose step records, outside the store, who ran it and when; workers
//! (and now and then the client, which then emits the same ids again) are SIGKILLed at random
//! moments and restarted. Every event is handled to completion exactly once: one completed
//! execution per event, and its step ran again only after the process that ran it was killed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use workflows_tests::Random;

const WORKER: &str = env!("CARGO_BIN_EXE_crash_worker");
const EVENTS: u32 = 1000;
const KILLS: usize = 40;

struct Run {
    pid: u32,
    ended: bool,
}

fn process(db: &PathBuf, log: &PathBuf, args: &[&str]) -> Child {
    Command::new(WORKER)
        .arg(db)
        .arg(log)
        .arg("full")
        .args(args)
        .env("CRASH_LEASE_MS", "1000")
        .env_remove("CRASH_BLOCK")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Completed executions of the subscriber, read from the file (another connection: WAL).
fn handled(db: &PathBuf) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else { return 0 };
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(
        "SELECT COUNT(*) FROM executions WHERE workflow = 'on_fleet_order' AND state = 'completed'",
        [],
        |r| r.get(0),
    )
    .unwrap_or(0)
}

#[test]
fn events_under_sigkill_are_each_handled_once_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("events.db"), dir.path().join("effects.log"));
    let seed = std::env::var("EVENTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("EVENTS_SEED={seed}");
    let mut random = Random(seed);
    let count = EVENTS.to_string();
    let start = |slot: usize| match slot {
        0 => process(&db, &log, &["events", "ev", &count]),
        _ => process(&db, &log, &["work", "-"]),
    };
    let mut processes: Vec<Child> = (0..4).map(start).collect();
    let mut killed: HashMap<u32, ()> = HashMap::new();
    let mut kills = 0;
    while kills < KILLS || (handled(&db) < i64::from(EVENTS) * 9 / 10 && kills < 4 * KILLS) {
        std::thread::sleep(Duration::from_millis(20 + random.below(150)));
        let slot = if random.below(8) == 0 { 0 } else { 1 + random.below(3) as usize };
        kills += 1;
        killed.insert(processes[slot].id(), ());
        processes[slot].kill().unwrap();
        processes[slot].wait().unwrap();
        processes[slot] = start(slot);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while handled(&db) < i64::from(EVENTS) {
        assert!(Instant::now() < deadline, "only {} of {EVENTS} events were handled", handled(&db));
        std::thread::sleep(Duration::from_millis(50));
    }
    for mut process in processes {
        let _ = process.kill();
        let _ = process.wait();
    }
    assert_eq!(handled(&db), i64::from(EVENTS), "one completed execution per event");

    // The side effects, outside the store: `body ORDER 1 ATTEMPT PID begin|end MICROS`.
    let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        if let ["body", order, _step, _attempt, pid, what, _at] = parts.as_slice() {
            let pid: u32 = pid.parse().unwrap();
            let order_runs = runs.entry(order.to_string()).or_default();
            if *what == "begin" {
                order_runs.push(Run { pid, ended: false });
            } else if let Some(run) = order_runs.iter_mut().rev().find(|r| r.pid == pid) {
                run.ended = true;
            }
        }
    }
    assert_eq!(runs.len(), EVENTS as usize, "every event's handler ran");
    for (order, order_runs) in &runs {
        // Only the last run may be by a process that lived on; each earlier one's was killed.
        for run in &order_runs[..order_runs.len() - 1] {
            assert!(killed.contains_key(&run.pid), "{order} was handled again after a run by a live process");
        }
        let last = order_runs.last().unwrap();
        assert!(last.ended || killed.contains_key(&last.pid), "{order}'s last run neither ended nor was killed");
    }
    let again: usize = runs.values().map(|r| r.len() - 1).sum();
    println!("{kills} kills; {again} handler runs were runs again after a kill");
    assert!(kills >= KILLS);
}
