//! Schedules over three real processes (`crash_worker schedules -`) on one SQLite file, on a
//! simulated clock: the test feeds each process the instants of its passes and reads back when
//! each is done. Two months of an hourly schedule (Paris time, a catch-up window of three
//! hours), processes SIGKILLed and restarted between passes, and outages of all three, some
//! longer than the window: every tick runs exactly once (one execution under its tick's id, its
//! step recorded outside the store), except the ticks older than the window when an outage
//! ended, which never run.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use workflows_runtime::{CronSchedule, Timestamp};
use workflows_tests::Random;

const WORKER: &str = env!("CARGO_BIN_EXE_crash_worker");
const HOUR: i64 = 3_600_000_000;

/// A process running schedules passes on request.
struct Driver {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Where the process writes its errors (shown when a pass fails).
    stderr: PathBuf,
}

impl Driver {
    fn start(db: &Path, log: &Path) -> Self {
        let stderr = db.with_extension(format!("{}.err", uuid::Uuid::now_v7().simple()));
        let mut child = Command::new(WORKER)
            .arg(db)
            .arg(log)
            .arg("process")
            .args(["schedules", "-"])
            .env_remove("CRASH_BLOCK")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self { child, stdin, stdout, stderr }
    }

    /// A pass at `at` (microseconds), done when this returns.
    fn pass(&mut self, at: i64) {
        writeln!(self.stdin, "{at}").unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        if line.trim() != "ok" {
            let _ = self.child.wait();
            let errors = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            panic!("the pass at {at} failed: {line:?}; the process said:\n{errors}");
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The executions of the hourly workflow, completed and all.
fn executions(db: &PathBuf) -> (i64, i64) {
    let Ok(conn) = rusqlite::Connection::open(db) else { return (0, 0) };
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let count = |sql: &str| conn.query_row(sql, [], |r| r.get(0)).unwrap_or(0);
    (
        count("SELECT COUNT(*) FROM executions WHERE workflow = 'fleet_hourly' AND state = 'completed'"),
        count("SELECT COUNT(*) FROM executions WHERE workflow = 'fleet_hourly'"),
    )
}

#[test]
fn two_months_of_an_hourly_schedule_over_three_processes_killed_and_restarted_run_each_tick_once() {
    let dir = tempfile::tempdir().unwrap();
    let (db, log) = (dir.path().join("schedules.db"), dir.path().join("effects.log"));
    let mut random = Random(0x5c4e_d01e);
    let mut drivers: Vec<Driver> = (0..3).map(|_| Driver::start(&db, &log)).collect();
    // 2027-01-01T00:00:00Z: first sight; its ticks from here on are owed.
    let start = 1_798_761_600_000_000_i64;
    drivers[0].pass(start);
    let end = start + 61 * 24 * HOUR;
    let (mut now, mut passes, mut restarts, mut outages) = (start, Vec::new(), 0, 0);
    while now < end {
        now += 60_000_000 * (5 + random.below(25) as i64);
        match random.below(100) {
            // An outage of every process: 1 to 8 hours.
            0 => {
                now += 60_000_000 * (60 + random.below(7 * 60) as i64);
                outages += 1;
            }
            // A process SIGKILLed (between passes) and started again.
            1 => {
                let k = random.below(3) as usize;
                let restarted = Driver::start(&db, &log);
                std::mem::replace(&mut drivers[k], restarted).kill();
                restarts += 1;
            }
            _ => {}
        }
        drivers[random.below(3) as usize].pass(now);
        passes.push(now);
    }
    // The model: a tick runs at the first pass at or after it, if that pass is within three
    // hours of it; otherwise it is missed.
    let schedule = CronSchedule::parse("0 * * * *", "Europe/Paris").unwrap();
    let mut expected = BTreeSet::new();
    let mut missed = 0;
    for tick in schedule.ticks_after(Timestamp::from_micros(start)).take_while(|t| t.as_micros() <= now) {
        let Some(first) = passes.iter().find(|p| **p >= tick.as_micros()) else { continue };
        if first - tick.as_micros() < 3 * HOUR {
            expected.insert(tick.as_micros());
        } else {
            missed += 1;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while executions(&db).0 < expected.len() as i64 {
        assert!(Instant::now() < deadline, "{:?} of {} ticks' executions completed", executions(&db), expected.len());
        std::thread::sleep(Duration::from_millis(50));
    }
    for driver in drivers {
        driver.kill();
    }
    println!("{} ticks ran, {missed} missed; {outages} outages, {restarts} restarts", expected.len());
    assert!(outages > 3 && restarts > 3 && missed > 0, "the run had outages and restarts");
    assert_eq!(executions(&db).1, expected.len() as i64, "one execution per tick that ran, none for a missed one");
    let ran: BTreeSet<i64> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter_map(|line| line.strip_prefix("tick ")?.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(ran, expected, "each tick's step ran, and no other tick's");
}
