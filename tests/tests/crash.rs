//! Crash tests with real processes: `crash_worker` runs a workflow on a SQLite file and is
//! killed with SIGKILL inside a step body, right after a step's completion was committed,
//! during compensation, and at random moments; a new process on the same file must finish
//! the execution, never re-run a step whose completion was committed, and run every
//! compensation to completion exactly once. Every scenario runs with both durability levels.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const WORKER: &str = env!("CARGO_BIN_EXE_crash_worker");
/// The same program after a deploy that reordered the `evolving` workflow's steps.
const WORKER_V2: &str = env!("CARGO_BIN_EXE_crash_worker_v2");
const WORKER_V3: &str = env!("CARGO_BIN_EXE_crash_worker_v3");
const DURABILITIES: [&str; 2] = ["full", "process"];

/// One store file and side-effect log, and the processes run on them.
struct Scenario {
    _dir: tempfile::TempDir,
    db: PathBuf,
    log: PathBuf,
    durability: &'static str,
}

impl Scenario {
    fn new(durability: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store.db");
        let log = dir.path().join("effects.log");
        Self { _dir: dir, db, log, durability }
    }

    fn worker(&self, args: &[&str]) -> Command {
        self.program(WORKER, args)
    }

    fn program(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new(program);
        command
            .arg(&self.db)
            .arg(&self.log)
            .arg(self.durability)
            .args(args)
            .env("CRASH_LEASE_MS", "250")
            .env_remove("CRASH_BLOCK")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Starts a new execution in a child process.
    fn start(&self, id: &str, plan: &serde_json::Value, block: Option<&str>) -> Child {
        let mut command = self.worker(&["start", id, &plan.to_string()]);
        if let Some(block) = block {
            command.env("CRASH_BLOCK", block);
        }
        command.spawn().unwrap()
    }

    /// Starts a process that takes the execution over and waits until it finished.
    fn resume(&self, id: &str) -> String {
        finish(self.worker(&["resume", id]).spawn().unwrap())
    }

    fn log(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn count(&self, line: &str) -> usize {
        self.log().iter().filter(|l| *l == line).count()
    }

    fn count_prefix(&self, prefix: &str) -> usize {
        self.log().iter().filter(|l| l.starts_with(prefix)).count()
    }

    fn wait_for_log(&self, line: &str) {
        wait_until(&format!("`{line}` in the side-effect log"), || self.count(line) > 0);
    }

    /// The journal as (kind, step key) pairs, read from the file like any other process would.
    fn journal(&self, id: &str) -> Vec<(String, String)> {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        let Ok(conn) = rusqlite::Connection::open_with_flags(&self.db, flags) else { return Vec::new() };
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        let Ok(mut statement) = conn.prepare("SELECT kind, call_key FROM journal WHERE execution_id = ?1 ORDER BY idx")
        else {
            return Vec::new();
        };
        statement.query_map([id], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
    }

    fn journal_has(&self, id: &str, kind: &str, key: &str) -> bool {
        self.journal(id).iter().any(|(k, s)| k == kind && s == key)
    }

    fn wait_for_journal(&self, id: &str, kind: &str, key: &str) {
        wait_until(&format!("{kind} {key} in the journal"), || self.journal_has(id, kind, key));
    }

    /// How many times the journal records `kind` for `key`.
    fn journal_count(&self, id: &str, kind: &str, key: &str) -> usize {
        self.journal(id).iter().filter(|(k, s)| k == kind && s == key).count()
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits for a worker and returns its stdout; fails the test with its stderr if it failed.
fn finish(mut child: Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stdout = String::new();
            let mut stderr = String::new();
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

/// SIGKILL: no destructor, no flush, no lease released.
fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn plan(steps: u32, fail_at: Option<u32>, jitter_ms: u64, seed: u64) -> serde_json::Value {
    json!({ "steps": steps, "fail_at": fail_at, "jitter_ms": jitter_ms, "seed": seed })
}

fn key(k: u32) -> String {
    format!("act#{k}")
}

#[test]
fn killed_inside_a_step_body_the_attempt_is_retried_and_completed_steps_are_not() {
    for durability in DURABILITIES {
        let s = Scenario::new(durability);
        let child = s.start("inside", &plan(5, None, 0, 0), Some("step:3"));
        s.wait_for_log("step:3 blocked");
        // The suspended attempt is journaled (lazily, within milliseconds): wait for it, so the
        // attempt number must continue after the restart.
        s.wait_for_journal("inside", "step_started", &key(3));
        kill(child);

        assert_eq!(s.resume("inside").trim(), "STATE completed", "{durability}");
        for k in [1, 2, 4, 5] {
            assert_eq!(
                s.count_prefix(&format!("step {k} begin")),
                1,
                "{durability}: step {k} ran again: {:?}",
                s.log()
            );
        }
        assert_eq!(s.count("step 3 begin 1"), 1, "{durability}");
        assert_eq!(s.count("step 3 begin 2"), 1, "{durability}: the attempt number continues");
        for k in 1..=5 {
            assert_eq!(s.journal_count("inside", "step_completed", &key(k)), 1, "{durability}");
        }
    }
}

#[test]
fn killed_right_after_a_completion_was_committed_that_step_is_not_run_again() {
    for durability in DURABILITIES {
        let s = Scenario::new(durability);
        // Step 4 holds the process; step 3's completion is committed before step 4 may start.
        let child = s.start("after-commit", &plan(5, None, 0, 0), Some("step:4"));
        s.wait_for_journal("after-commit", "step_completed", &key(3));
        s.wait_for_log("step:4 blocked");
        kill(child);

        assert_eq!(s.resume("after-commit").trim(), "STATE completed", "{durability}");
        for k in 1..=3 {
            assert_eq!(
                s.count_prefix(&format!("step {k} begin")),
                1,
                "{durability}: step {k} ran again: {:?}",
                s.log()
            );
        }
        assert_eq!(s.count_prefix("step 4 begin"), 2, "{durability}");
        assert_eq!(s.count("step 5 end"), 1, "{durability}");
    }
}

#[test]
fn killed_during_compensation_every_compensation_completes_exactly_once() {
    for durability in DURABILITIES {
        let s = Scenario::new(durability);
        let child = s.start("compensating", &plan(5, Some(5), 0, 0), Some("comp:3"));
        s.wait_for_log("comp:3 blocked");
        kill(child);
        assert!(s.journal_has("compensating", "compensation_completed", &key(4)));

        assert_eq!(s.resume("compensating").trim(), "STATE compensated", "{durability}");
        for k in 1..=5 {
            assert_eq!(s.count_prefix(&format!("step {k} begin")), 1, "{durability}: step {k} ran again");
        }
        assert_eq!(s.count("comp 4 begin"), 1, "{durability}: a completed compensation ran again");
        assert_eq!(s.count("comp 3 begin"), 2, "{durability}: the interrupted compensation runs again");
        let ends: Vec<String> = s.log().into_iter().filter(|l| l.ends_with(" end") && l.starts_with("comp")).collect();
        assert_eq!(ends, ["comp 4 end", "comp 3 end", "comp 2 end", "comp 1 end"], "{durability}");
        for k in 1..=4 {
            assert_eq!(s.journal_count("compensating", "compensation_completed", &key(k)), 1, "{durability}");
        }
    }
}

/// A step with `retry(max_attempts = 3)` killed during its third attempt: the attempt counts,
/// so no fourth one starts after the restart; the step fails for good and the workflow
/// compensates.
#[test]
fn killed_during_the_last_attempt_the_step_fails_for_good_without_a_further_attempt() {
    for durability in DURABILITIES {
        let s = Scenario::new(durability);
        // A lease of 250 ms can run out on a loaded machine between attempts; the engine then
        // (rightly) counts the attempt it had journaled but not run, and attempt 2 never runs.
        // This test is about a kill, so the lease outlasts any stall here.
        let mut start = s.worker(&["start", "budget", "budget"]);
        let child = start.env("CRASH_LEASE_MS", "1500").env("CRASH_BLOCK", "charge:3").spawn().unwrap();
        s.wait_for_log("charge:3 blocked");
        kill(child);

        assert_eq!(s.resume("budget").trim(), "STATE compensated", "{durability}: {:?}", s.log());
        for attempt in 1..=3 {
            assert_eq!(s.count(&format!("charge begin {attempt}")), 1, "{durability}: {:?}", s.log());
        }
        assert_eq!(s.count_prefix("charge begin"), 3, "{durability}: a fourth attempt ran: {:?}", s.log());
        assert_eq!(s.count("charge end"), 0, "{durability}");
        assert_eq!(s.count("release"), 1, "{durability}: the seat is released once");
        assert_eq!(s.journal_count("budget", "step_started", "flaky_charge#1"), 3, "{durability}");
        assert_eq!(s.journal_count("budget", "step_failed", "flaky_charge#1"), 3, "{durability}");
        let conn = rusqlite::Connection::open(&s.db).unwrap();
        let failure: String =
            conn.query_row("SELECT failure FROM executions WHERE id = 'budget'", [], |r| r.get(0)).unwrap();
        assert!(failure.contains("attempt 3 of 3 was interrupted"), "{failure}");
    }
}

/// xorshift64*: enough randomness for kill times, reproducible from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// Where a kill landed, from what the dead process left: its side-effect log and the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// No step had begun.
    BeforeTheFirstStep,
    /// A step body was running (it had begun and not ended or failed).
    InsideABody,
    /// At least one completion was committed and no body or compensation was running.
    AfterACommit,
    /// A compensation had begun.
    DuringCompensation,
    /// The execution did not exist yet.
    BeforeTheExecutionExisted,
}

fn phase_of(log: &[String], journal: &[(String, String)]) -> Phase {
    if log.iter().any(|l| l.starts_with("comp ")) || journal.iter().any(|(k, _)| k.starts_with("compensation")) {
        return Phase::DuringCompensation;
    }
    // The last line about each step says whether its body was running.
    let mut last: BTreeMap<&str, &str> = BTreeMap::new();
    for line in log {
        if let Some(rest) = line.strip_prefix("step ") {
            let mut words = rest.split(' ');
            if let (Some(k), Some(what)) = (words.next(), words.next()) {
                last.insert(k, what);
            }
        }
    }
    if last.values().any(|what| *what == "begin") {
        Phase::InsideABody
    } else if journal.iter().any(|(k, _)| k == "step_completed") {
        Phase::AfterACommit
    } else {
        Phase::BeforeTheFirstStep
    }
}

#[test]
fn killed_at_random_moments_the_invariants_hold() {
    let seed = std::env::var("CRASH_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    println!("random crash test: CRASH_SEED={seed}");
    let mut rng = Rng(seed);
    // Where the kills landed: the test asserts at the end that they covered every phase.
    let mut landed: BTreeMap<Phase, usize> = BTreeMap::new();
    for iteration in 0..32 {
        let durability = DURABILITIES[iteration % 2];
        let steps = 6;
        // Each iteration aims at a phase in turn (a step chosen at random), or kills at a random
        // moment; where it landed is read from what the process left, not assumed.
        let aim = iteration / 2 % 4;
        let fail_at = match aim {
            2 => Some(steps),
            3 => rng.next().is_multiple_of(2).then_some(steps),
            _ => None,
        };
        let block = match aim {
            0 => Some(format!("step:{}", 1 + rng.next() % u64::from(steps))),
            2 => Some(format!("comp:{}", 1 + rng.next() % u64::from(steps - 1))),
            _ => None,
        };
        let context = format!("CRASH_SEED={seed} iteration {iteration} ({durability}, fail_at {fail_at:?}, {block:?})");
        let s = Scenario::new(durability);
        let id = format!("random-{iteration}");
        let child = s.start(&id, &plan(steps, fail_at, 30, rng.next()), block.as_deref());
        match (aim, &block) {
            (_, Some(point)) => s.wait_for_log(&format!("{point} blocked")),
            // Right after the last step's completion committed: no body can begin after it.
            (1, None) => {
                s.wait_for_journal(&id, "step_completed", &key(steps));
                std::thread::sleep(Duration::from_millis(rng.next() % 5));
            }
            _ => std::thread::sleep(Duration::from_millis(rng.next() % 200)),
        }
        kill(child);

        println!("{context}");
        // What was durable when the process died.
        let committed: Vec<u32> = (1..=steps).filter(|k| s.journal_has(&id, "step_completed", &key(*k))).collect();
        let phase = phase_of(&s.log(), &s.journal(&id));
        let outcome = s.resume(&id);
        let phase = if outcome.trim() == "STATE none" { Phase::BeforeTheExecutionExisted } else { phase };
        println!("{context}: killed {phase:?}");
        *landed.entry(phase).or_default() += 1;
        if outcome.trim() == "STATE none" {
            // Killed before the execution was created: no step may have run.
            assert!(s.log().is_empty(), "{context}: side effects without an execution: {:?}", s.log());
            continue;
        }
        let expected = if fail_at.is_some() { "STATE compensated" } else { "STATE completed" };
        assert_eq!(outcome.trim(), expected, "{context}");

        let completing = fail_at.map_or(steps, |f| f - 1);
        for k in 1..=completing {
            assert_eq!(s.journal_count(&id, "step_completed", &key(k)), 1, "{context}: step {k} completions");
            let begins = s.count_prefix(&format!("step {k} begin"));
            if committed.contains(&k) {
                assert_eq!(begins, 1, "{context}: step {k} ran again after its completion was committed");
            } else {
                assert!((1..=2).contains(&begins), "{context}: step {k} began {begins} times");
            }
        }
        if fail_at.is_some() {
            let order: Vec<String> = s
                .journal(&id)
                .into_iter()
                .filter(|(kind, _)| kind == "compensation_completed")
                .map(|(_, key)| key)
                .collect();
            let expected_order: Vec<String> = (1..=completing).rev().map(key).collect();
            assert_eq!(order, expected_order, "{context}: compensations");
            let mut ends = BTreeMap::new();
            for line in s.log() {
                if let Some(k) = line.strip_prefix("comp ").and_then(|l| l.strip_suffix(" end")) {
                    *ends.entry(k.to_owned()).or_insert(0) += 1;
                }
            }
            assert_eq!(ends.len(), completing as usize, "{context}: {ends:?}");
            assert!(ends.values().all(|n| *n == 1), "{context}: {ends:?}");
        }
    }
    println!("kills landed: {landed:?}");
    for phase in [Phase::InsideABody, Phase::AfterACommit, Phase::DuringCompensation] {
        assert!(landed.contains_key(&phase), "CRASH_SEED={seed}: no kill landed {phase:?}: {landed:?}");
    }
}

#[test]
fn a_live_owner_keeps_its_execution_until_it_dies() {
    let s = Scenario::new("full");
    // A lease of a second: 250 ms can run out between two renewals on a loaded machine (the
    // renewal is a durable write), and then the takeover would be right. Two leases pass below.
    let mut start = s.worker(&["start", "shared", &plan(3, None, 0, 0).to_string()]);
    let owner = start.env("CRASH_LEASE_MS", "1000").env("CRASH_BLOCK", "step:2").spawn().unwrap();
    s.wait_for_log("step:2 blocked");
    // A second process on the same file: the first one renews its lease, so nothing moves.
    let second = s.worker(&["resume", "shared"]).env("CRASH_LEASE_MS", "1000").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(2200));
    assert_eq!(s.count_prefix("step 2 begin"), 1, "the second process took over a live execution: {:?}", s.log());
    kill(owner);
    assert_eq!(finish(second).trim(), "STATE completed");
    assert_eq!(s.count("step 2 begin 2"), 1);
    assert_eq!(s.count_prefix("step 1 begin"), 1);
}

#[test]
fn a_deploy_that_changes_the_step_sequence_blocks_old_executions_and_the_old_build_resumes_them() {
    let s = Scenario::new("full");
    let v1 = s.worker(&["start", "before-deploy", "evolving"]).env("CRASH_BLOCK", "part:b").spawn().unwrap();
    s.wait_for_log("part:b blocked");
    s.wait_for_journal("before-deploy", "step_started", "part#2");
    kill(v1);

    // The new build resumes it: its body calls `part("c")` where the journal has `part("b")`.
    let outcome = finish(s.program(WORKER_V2, &["resume", "before-deploy"]).spawn().unwrap());
    assert_eq!(outcome.trim(), "STATE blocked");
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let (failure, fingerprint, owner, blocked_by): (String, String, Option<String>, String) = conn
        .query_row(
            "SELECT failure, fingerprint, owner, blocked_by FROM executions WHERE id = 'before-deploy'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(owner, None, "its lease is given up");
    assert_eq!(blocked_by.split(' ').count(), 1, "blocked by the new build: {blocked_by}");
    let failure: serde_json::Value = serde_json::from_str(&failure).unwrap();
    let message = failure["message"].as_str().unwrap();
    assert_eq!(failure["kind"], "non_determinism");
    assert!(message.contains("step `part#2` (call #1) is called with a different input"), "{message}");
    assert!(
        message.contains(&format!("code changed since the execution started (fingerprint {fingerprint} then, ")),
        "{message}"
    );
    assert_eq!(s.count("part c begin 1"), 0, "nothing runs with the wrong data: {:?}", s.log());
    assert_eq!(s.count_prefix("part a begin"), 1);
    drop(conn);

    // The old build linked again (a rollback of the deploy) takes it over and completes it,
    // on the old path; the new build never ran a body of it.
    assert_eq!(s.resume("before-deploy").trim(), "STATE completed");
    assert_eq!(s.log(), ["part a begin 1", "part b begin 1", "part:b blocked", "part b begin 2", "part c begin 1"]);

    // The same build resumes an interrupted execution of the same code without complaint.
    let v1 = s.worker(&["start", "same-build", "evolving"]).env("CRASH_BLOCK", "part:b").spawn().unwrap();
    wait_until("the second execution to block", || s.count("part:b blocked") == 2);
    kill(v1);
    assert_eq!(s.resume("same-build").trim(), "STATE completed");
}

/// Two versions of a workflow side by side: the old build (version 0 only) and the new one
/// (versions 0 and 1) on one store, each killed mid-step. New executions start on the highest
/// version; each resumes on the version that started it; the old build never takes an
/// execution of the version it lacks, the new one resumes both.
#[test]
fn versions_side_by_side_each_execution_resumes_on_its_own_and_old_workers_leave_the_new_one() {
    let s = Scenario::new("full");
    // Both running at once (neither takes the other's execution over: its owner is alive).
    let old = s.worker(&["start", "old", "versioned"]).env("CRASH_BLOCK", "part:v1-b").spawn().unwrap();
    s.wait_for_log("part:v1-b blocked");
    let new = s.program(WORKER_V2, &["start", "new", "versioned"]).env("CRASH_BLOCK", "part:v2-b").spawn().unwrap();
    s.wait_for_log("part:v2-b blocked");
    kill(old);
    kill(new);
    let row = |id: &str| -> (i64, i64) {
        let conn = rusqlite::Connection::open(&s.db).unwrap();
        conn.query_row("SELECT version, epoch FROM executions WHERE id = ?1", [id], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
    };
    assert_eq!((row("old").0, row("new").0), (0, 1), "a new execution starts on the highest version");

    // The old build takes `old` over; `new`, an orphan in the same claim, stays one.
    assert_eq!(s.resume("old").trim(), "STATE completed");
    assert_eq!(row("new").1, 1, "never claimed by a build without its version");
    assert_eq!(s.count_prefix("part v2-"), 2, "{:?}", s.log());

    // The new build resumes an execution of the old version on the old code, and `new` on its.
    let old_too = s.worker(&["start", "old-too", "versioned"]).env("CRASH_BLOCK", "part:v1-b").spawn().unwrap();
    wait_until("the second old execution to block", || s.count("part:v1-b blocked") == 2);
    kill(old_too);
    assert_eq!(finish(s.program(WORKER_V2, &["resume", "old-too"]).spawn().unwrap()).trim(), "STATE completed");
    assert_eq!(finish(s.program(WORKER_V2, &["resume", "new"]).spawn().unwrap()).trim(), "STATE completed");
    for (id, result) in [("old", "v1-av1-b"), ("old-too", "v1-av1-b"), ("new", "v2-av2-b")] {
        assert_eq!(stored_result(&s, id).as_deref(), Some(format!("\"{result}\"").as_str()), "{id}: {:?}", s.log());
    }
}

/// A step with `on_failure = "pause"` fails for good: the execution is paused, nothing
/// compensated. An operator retries the step; the worker running the retry is killed mid-step;
/// another takes the execution over and the step completes within its fresh budget.
#[test]
fn a_paused_step_retried_by_an_operator_survives_a_sigkill_and_completes() {
    let s = Scenario::new("full");
    assert_eq!(finish(s.worker(&["start", "p1", "pausing"]).spawn().unwrap()).trim(), "STATE paused");
    assert_eq!(s.log(), ["part before begin 1", "flaky begin 1", "flaky begin 2"]);
    let retry =
        s.worker(&["retry", "p1", "flaky#1"]).env("CRASH_FLAKY_OK", "1").env("CRASH_BLOCK", "flaky").spawn().unwrap();
    s.wait_for_log("flaky blocked");
    kill(retry);
    let resumed = finish(s.worker(&["resume", "p1"]).env("CRASH_FLAKY_OK", "1").spawn().unwrap());
    assert_eq!(resumed.trim(), "STATE completed");
    assert_eq!(
        s.log(),
        [
            "part before begin 1",
            "flaky begin 1",
            "flaky begin 2",
            "flaky begin 3",
            "flaky blocked",
            "flaky begin 4",
            "flaky end 4"
        ]
    );
}

/// The newcomer's deploy, process by process: v1 runs an execution into its second step and is
/// killed; v2 (a step moved, no patch) blocks it, running nothing; v3 (the same change behind
/// `wf.patched`) resumes it on the old path — b before c —, and runs a new execution on the
/// new one.
#[test]
fn a_patched_deploy_resumes_what_the_unpatched_one_blocked_on_the_old_path() {
    let s = Scenario::new("full");
    let v1 = s.worker(&["start", "before-deploy", "evolving"]).env("CRASH_BLOCK", "part:b").spawn().unwrap();
    s.wait_for_log("part:b blocked");
    // Its start journaled: the execution went past the patch's point before the patch existed.
    s.wait_for_journal("before-deploy", "step_started", "part#2");
    kill(v1);
    assert_eq!(finish(s.program(WORKER_V2, &["resume", "before-deploy"]).spawn().unwrap()).trim(), "STATE blocked");
    assert_eq!(s.log(), ["part a begin 1", "part b begin 1", "part:b blocked"], "v2 ran nothing");

    assert_eq!(finish(s.program(WORKER_V3, &["resume", "before-deploy"]).spawn().unwrap()).trim(), "STATE completed");
    assert_eq!(stored_result(&s, "before-deploy").as_deref(), Some("\"abc\""), "the old path: {:?}", s.log());
    let after = finish(s.program(WORKER_V3, &["start", "after-deploy", "evolving"]).spawn().unwrap());
    assert_eq!(after.trim(), "STATE completed");
    assert_eq!(stored_result(&s, "after-deploy").as_deref(), Some("\"acb\""), "the new path: {:?}", s.log());
}

/// The stored result of an execution, read from the file.
fn stored_result(s: &Scenario, id: &str) -> Option<String> {
    let conn = rusqlite::Connection::open_with_flags(&s.db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row("SELECT result FROM executions WHERE id = ?1", [id], |r| r.get(0)).unwrap()
}

#[test]
fn an_async_step_is_completed_by_another_process_after_the_first_one_exited() {
    for durability in DURABILITIES {
        let s = Scenario::new(durability);
        // The first process starts the workflow, whose async step sends its token out; the
        // execution is suspended and the process exits.
        let first = finish(s.worker(&["start", "approval", "approval"]).spawn().unwrap());
        assert_eq!(first.trim(), "STATE waiting", "{durability}");
        let token = s.log().iter().find_map(|l| l.strip_prefix("token ").map(str::to_owned)).expect("a token");
        assert!(token.starts_with("wf1."), "a signed token: {token}");

        // Another process completes it, takes the execution over, and finishes it.
        let second = finish(s.worker(&["complete", "approval", &token, "true"]).spawn().unwrap());
        assert_eq!(second.trim(), "STATE completed", "{durability}");
        assert_eq!(stored_result(&s, "approval").as_deref(), Some(r#""order 7 approved""#));
        // The step body (which sends the request) ran once.
        assert_eq!(s.count_prefix("token "), 1, "{durability}");

        // A second completion changes nothing.
        let again = s.worker(&["complete", "approval", &token, "false"]).output().unwrap();
        assert!(!again.status.success());
        let stderr = String::from_utf8_lossy(&again.stderr);
        assert!(stderr.contains("is completed already") || stderr.contains("completed already"), "{stderr}");
        assert_eq!(stored_result(&s, "approval").as_deref(), Some(r#""order 7 approved""#));
    }
}

/// Waits for a process for up to `within`; kills it if it is still running then.
fn finish_within(mut child: Child, within: Duration) -> Option<std::process::Output> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return Some(child.wait_with_output().unwrap());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    kill(child);
    None
}

/// Attempt 1 of an async step sends its request and is killed before it records that it
/// waits; the completion that answers it is accepted, and attempt 2 (after a takeover) takes
/// it. A second completion of the same token — while attempt 2 runs, killed in its turn — is
/// refused with a clear error, not stored where nothing would take it: the token's first
/// completion wins, across attempts. Attempt 3 completes the step with the first one.
#[test]
fn a_second_completion_of_an_async_step_is_refused_across_attempts() {
    let s = Scenario::new("full");
    let first = s.worker(&["start", "approval", "approval"]).env("CRASH_BLOCK", "approval:1").spawn().unwrap();
    s.wait_for_log("approval:1 blocked");
    kill(first);
    let token = s.log().iter().find_map(|l| l.strip_prefix("token ").map(str::to_owned)).expect("a token");

    // Accepted for attempt 1; this process then takes the execution over, and its attempt 2
    // stops before it records that it waits.
    let second = s.worker(&["complete", "approval", &token, "true"]).env("CRASH_BLOCK", "approval:2").spawn().unwrap();
    s.wait_for_log("approval:2 blocked");
    let mut again = s.worker(&["complete", "approval", &token, "false"]);
    let again =
        finish_within(again.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap(), Duration::from_secs(20));
    kill(second);
    let again = again.expect("a second completion was accepted: its caller waits for a result that ignores it");
    assert!(!again.status.success(), "a second completion was accepted");
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(stderr.contains("completed already"), "{stderr}");

    assert_eq!(s.resume("approval").trim(), "STATE completed");
    assert_eq!(stored_result(&s, "approval").as_deref(), Some(r#""order 7 approved""#), "the first completion won");
    assert_eq!(s.count_prefix("token "), 3, "three attempts sent the request: {:?}", s.log());
}

#[test]
fn a_fan_out_killed_midway_replays_deterministically_and_runs_completed_items_once() {
    for durability in DURABILITIES {
        let s = Scenario::new(durability);
        let child = s.worker(&["start", "fan", "fan:8"]).env("CRASH_BLOCK", "item:6").spawn().unwrap();
        s.wait_for_log("item:6 blocked");
        // Let the items running beside item 6 finish and be committed.
        std::thread::sleep(Duration::from_millis(150));
        kill(child);
        let completed_before: Vec<u32> =
            (1..=8).filter(|k| s.journal_has("fan", "step_completed", &format!("item#{k}"))).collect();
        assert!(completed_before.len() >= 3, "{durability}: {completed_before:?}");

        assert_eq!(s.resume("fan").trim(), "STATE completed", "{durability}: {:?}", s.log());
        // 1² + ... + 8²
        assert_eq!(stored_result(&s, "fan").as_deref(), Some("204"));
        for k in 1..=8 {
            let key = format!("item#{k}");
            assert_eq!(s.journal_count("fan", "step_completed", &key), 1, "{durability}: {key}");
            if completed_before.contains(&k) {
                assert_eq!(s.count(&format!("item {k} end")), 1, "{durability}: item {k} ran again");
            }
        }
    }
}

/// A store written by an earlier release (schema version 3: `tests/fixtures/schema-v3.db`,
/// made by the crash worker of that release) opens with this build, which migrates it, and
/// its executions go on: the interrupted one resumes where it was, the waiting one takes its
/// completion, the finished ones read back unchanged.
#[test]
fn a_store_of_an_earlier_schema_is_migrated_and_its_executions_go_on() {
    let s = Scenario::new("full");
    std::fs::copy(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/schema-v3.db"), &s.db).unwrap();
    // Written on one day in the past: moved to today, so that its finished executions are as
    // young as they were when it was written (a fixture of fixed dates ages past the retention).
    move_fixture_to_now(&s.db);

    assert_eq!(s.resume("interrupted").trim(), "STATE completed");
    // Step 1 completed under the old release: it does not run again; step 2 was under way.
    assert_eq!(s.count_prefix("step 1 begin"), 0, "{:?}", s.log());
    assert_eq!(s.count("step 2 begin 2"), 1, "{:?}", s.log());
    assert_eq!(s.count("step 3 end"), 1, "{:?}", s.log());

    // Its request went out before the upgrade, with a token of that release's form: accepted.
    let completed = finish(s.worker(&["complete", "waiting", "waiting/request_approval#1", "true"]).spawn().unwrap());
    assert_eq!(completed.trim(), "STATE completed");
    assert_eq!(stored_result(&s, "waiting").as_deref(), Some(r#""order 7 approved""#));

    assert_eq!(s.resume("done").trim(), "STATE completed");
    assert_eq!(stored_result(&s, "done").as_deref(), Some("6"));
    assert_eq!(s.resume("compensated").trim(), "STATE compensated");
    assert_eq!(s.journal_count("compensated", "compensation_completed", &key(1)), 1);
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    assert_eq!(version, workflows_runtime::SqliteStore::SCHEMA_VERSION);
    // Schema 8 renamed the journal's `step_key` column `call_key`: the entries the old release
    // wrote keep their keys under the new name.
    let columns: Vec<String> = conn
        .prepare("SELECT name FROM pragma_table_info('journal')")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(columns.contains(&"call_key".to_owned()) && !columns.contains(&"step_key".to_owned()), "{columns:?}");
    assert!(s.journal_has("done", "step_completed", &key(1)), "{:?}", s.journal("done"));
}

/// Shifts every instant stored in a schema-3 fixture by one offset, so that its latest
/// `updated_at` becomes now: the ages of its rows, their leases and retentions relative to
/// the moment it was written are kept, whatever today's date.
fn move_fixture_to_now(db: &std::path::Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let written: i64 = conn.query_row("SELECT MAX(updated_at) FROM executions", [], |r| r.get(0)).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    let shift = now - written;
    let columns = [
        ("executions", "created_at"),
        ("executions", "updated_at"),
        ("executions", "lease_until"),
        ("executions", "retain_until"),
        ("executions", "wake_at"),
        ("journal", "at"),
        ("inbox", "at"),
    ];
    for (table, column) in columns {
        conn.execute(&format!("UPDATE {table} SET {column} = {column} + ?1 WHERE {column} IS NOT NULL"), [shift])
            .unwrap();
    }
}

/// Sends a signal to a process with `kill(1)`.
fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -{signal} failed");
}

/// Stops `worker` (SIGSTOP) at a moment it holds no write transaction on the store: a process
/// stopped inside one keeps the file locked, and no other process could write at all.
fn stop_outside_a_transaction(s: &Scenario, worker: &Child) {
    for _ in 0..100 {
        signal(worker, "STOP");
        let conn = rusqlite::Connection::open(&s.db).unwrap();
        conn.busy_timeout(Duration::from_millis(20)).unwrap();
        if conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
            return;
        }
        signal(worker, "CONT");
        std::thread::sleep(Duration::from_millis(3));
    }
    panic!("the worker always held the store's write lock");
}

/// Three workers on one file: the one driving the execution is stopped (SIGSTOP) for about
/// four leases while it waits — in a retry's backoff, in a durable sleep, or between two
/// attempts of a compensation —, the two others take the execution over and finish it, then
/// the stopped one continues (SIGCONT). Its writes would be fenced; its side effects must not
/// happen at all: it starts no step body and no compensation once it cannot prove its lease.
#[test]
fn a_stalled_worker_starts_no_body_and_no_compensation_after_losing_its_lease() {
    for (pause, marker, wait_for, outcome) in [
        ("Backoff", "pay begin 1", Some(("step_failed", "pay_later#1")), "STATE completed"),
        ("Sleep", "reserve", Some(("timer_started", "@sleep#1")), "STATE completed"),
        ("Compensation", "unhold begin 1", None, "STATE compensated"),
    ] {
        let s = Scenario::new("full");
        let id = format!("stale-{pause}");
        let stale = s.worker(&["start", &id, &format!("stale:{pause}")]).spawn().unwrap();
        wait_until(&format!("{pause}: `{marker}`"), || s.log().iter().any(|l| l.starts_with(marker)));
        if let Some((kind, key)) = wait_for {
            s.wait_for_journal(&id, kind, key);
        }
        stop_outside_a_transaction(&s, &stale);
        let stopped_at = std::time::Instant::now();
        let stale_pid = stale.id().to_string();
        let before: Vec<String> = s.log();

        let others = [s.worker(&["resume", &id]).spawn().unwrap(), s.worker(&["resume", &id]).spawn().unwrap()];
        for other in others {
            assert_eq!(finish(other).trim(), outcome, "{pause}: {:?}", s.log());
        }
        // Stopped for at least four leases (250 ms each) in all.
        std::thread::sleep(Duration::from_millis(1000).saturating_sub(stopped_at.elapsed()));
        signal(&stale, "CONT");
        let stale_out = finish(stale);
        assert_eq!(stale_out.trim(), outcome, "{pause}");

        let after = s.log();
        let by_stale = |lines: &[String]| lines.iter().filter(|l| l.ends_with(&format!(" {stale_pid}"))).count();
        assert_eq!(
            by_stale(&after),
            by_stale(&before),
            "{pause}: the stale worker ran a body or a compensation after losing its lease: {after:?}"
        );
        match pause {
            "Backoff" => assert_eq!(s.count_prefix("pay begin 2"), 1, "{after:?}"),
            "Sleep" => assert_eq!(s.count_prefix("after sleep"), 1, "{after:?}"),
            _ => assert_eq!(s.count("release"), 1, "{after:?}"),
        }
    }
}

/// A process killed with SIGKILL leaves the store marked open: the next process that opens it
/// alone checks its integrity in the background (and names what is damaged); after a clean
/// close, nothing is checked.
#[test]
fn a_store_opened_after_an_unclean_shutdown_is_checked() {
    let s = Scenario::new("full");
    let child = s.start("killed", &plan(3, None, 0, 0), Some("step:2"));
    s.wait_for_log("step:2 blocked");
    kill(child);
    // Damage one row behind the engine's back, as bit rot would.
    let conn = rusqlite::Connection::open(&s.db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(conn.execute("DELETE FROM journal WHERE execution_id = 'killed' AND idx = 0", []).unwrap(), 1);
    drop(conn);

    let store = workflows_runtime::SqliteStore::open(&s.db).unwrap();
    let report = store.startup_check().expect("checked after the unclean shutdown").unwrap();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(report.damaged[0].id.as_str(), "killed");
    assert!(report.damaged[0].problem.contains("its journal"), "{report:?}");
    store.close();
    drop(store);

    // Closed cleanly this time: the next open checks nothing.
    let store = workflows_runtime::SqliteStore::open(&s.db).unwrap();
    assert!(store.startup_check().is_none());
}

/// After a SIGKILL, a new process on the same host takes the execution over at once — it can
/// tell that the owner's process is gone — rather than when the lease expires (ten minutes
/// here). Prints how long the restart took to resume the step.
#[test]
fn a_restart_on_the_same_host_resumes_at_once_without_waiting_for_the_lease() {
    for reaped in [true, false] {
        restart_on_the_same_host(reaped);
    }
}

/// A worker killed (and reaped by its parent, or left a zombie, as under a PID 1 that reaps
/// slowly or in a container without an init), then a new worker on the same host: it takes the
/// dead one's execution over at once, not after its ten-minute lease.
fn restart_on_the_same_host(reaped: bool) {
    let s = Scenario::new("full");
    let mut start = s.worker(&["start", "quick", &plan(3, None, 0, 0).to_string()]);
    let mut child = start.env("CRASH_LEASE_MS", "600000").env("CRASH_BLOCK", "step:2").spawn().unwrap();
    s.wait_for_log("step:2 blocked");
    s.wait_for_journal("quick", "step_started", &key(2));
    child.kill().unwrap();
    // Not waited for: a zombie until the end of this test.
    let zombie = match reaped {
        true => {
            child.wait().unwrap();
            None
        }
        false => Some(child),
    };

    let restarted = Instant::now();
    let resume = s.worker(&["resume", "quick"]).env("CRASH_LEASE_MS", "600000").spawn().unwrap();
    wait_until("the step to run again", || s.count("step 2 begin 2") == 1);
    let resumed_in = restarted.elapsed();
    assert_eq!(finish(resume).trim(), "STATE completed");
    println!(
        "restart to resume ({}): {:.1} ms (the process start included)",
        if reaped { "reaped" } else { "a zombie" },
        resumed_in.as_secs_f64() * 1000.0
    );
    assert_eq!(s.count_prefix("step 1 begin"), 1);
    if let Some(mut zombie) = zombie {
        zombie.wait().unwrap();
    }
}
