//! The `workflows` helper binary, run for real: every command against a store prepared by
//! running the example workflows through it, the `--json` shapes parsed back, and the error
//! cases with their messages and exit codes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A store in a temporary directory, and the binary run on it.
struct Cli {
    dir: tempfile::TempDir,
}

/// What a command did.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }

    /// Asserts the exit code, showing the output otherwise.
    fn expect(self, code: i32) -> Ran {
        assert_eq!(self.code, code, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        // Errors are for people: never a panic or a backtrace.
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        assert!(!self.stderr.contains("RUST_BACKTRACE"), "{}", self.stderr);
        self
    }
}

const HELLO: &str = r#"{"name":"John"}"#;
const ORDER: &str = r#"{"id":"1","sku":"tee","quantity":2,"amount_cents":4000}"#;

fn approval_input(id: &str, payment_timeout_ms: u64) -> String {
    format!(r#"{{"id":"{id}","sku":"mug","amount_cents":1200,"payment_timeout_ms":{payment_timeout_ms}}}"#)
}

impl Cli {
    fn new() -> Self {
        Self { dir: tempfile::tempdir().unwrap() }
    }

    fn store(&self) -> PathBuf {
        self.dir.path().join("workflows.db")
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_workflows"));
        // The default store is `workflows.db` in the working directory.
        command.args(args).current_dir(self.dir.path()).env_remove("WORKFLOWS_STORE").env_remove("CARRIER_DOWN");
        command
    }

    fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> Ran {
        let mut command = self.command(args);
        command.envs(env.iter().copied());
        let Output { status, stdout, stderr } = command.output().expect("the binary runs");
        Ran {
            code: status.code().expect("exited"),
            stdout: String::from_utf8(stdout).unwrap(),
            stderr: String::from_utf8(stderr).unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Ran {
        self.run_with(args, &[])
    }

    fn spawn(&self, args: &[&str]) -> Child {
        self.command(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("the binary starts")
    }

    /// The store's executions, newest first.
    fn executions(&self, filters: &[&str]) -> Vec<Value> {
        let mut args = vec!["executions", "--json", "--limit", "100"];
        args.extend_from_slice(filters);
        let listed = self.run(&args).expect(0).json();
        listed["executions"].as_array().unwrap().clone()
    }

    fn inspect(&self, id: &str) -> Value {
        self.run(&["inspect", id, "--json"]).expect(0).json()
    }

    /// The completion token of the async step execution `id` waits for, as `inspect` shows it.
    fn token(&self, id: &str) -> String {
        let inspected = self.inspect(id);
        inspected["waiting_for"][0]["token"].as_str().unwrap_or_else(|| panic!("no token in {inspected}")).to_owned()
    }
}

fn events(inspected: &Value) -> Vec<String> {
    let timeline = inspected["timeline"].as_array().unwrap();
    timeline.iter().map(|row| format!("{} {}", row["event"].as_str().unwrap(), row["key"].as_str().unwrap())).collect()
}

#[test]
fn list_shows_workflows_and_steps_with_locations_and_policies() {
    let cli = Cli::new();
    let text = cli.run(&["list"]).expect(0).stdout;
    for expected in ["hello_world", "order_saga", "approval", "examples/src/hello_world.rs:", "release_stock"] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    assert!(text.contains("async, timeout 2days"), "{text}");

    let listed = cli.run(&["list", "--json"]).expect(0).json();
    let workflows = listed["workflows"].as_array().unwrap();
    let hello = workflows.iter().find(|w| w["name"] == "hello_world").expect("hello_world listed");
    assert_eq!(hello["calls"], serde_json::json!(["step_1", "step_2"]));
    assert_eq!(hello["input"], "HelloInput");
    assert_eq!(hello["output"], "Message");
    assert!(hello["file"].as_str().unwrap().ends_with("hello_world.rs"));
    assert!(hello["line"].as_u64().unwrap() > 0);
    let steps = listed["steps"].as_array().unwrap();
    let reserve = steps.iter().find(|s| s["name"] == "reserve_stock").unwrap();
    assert_eq!(reserve["compensation"], "release_stock");
    assert_eq!(reserve["async"], false);
    assert_eq!(reserve["on_failure"], "fail");
    let approval = steps.iter().find(|s| s["name"] == "approval.request_approval").unwrap();
    assert_eq!(approval["async"], true);
    assert_eq!(approval["timeout_ms"], 2 * 24 * 3600 * 1000);
    // Reading the registry creates no store.
    assert!(!cli.store().exists());
}

#[test]
fn show_draws_a_workflow_as_text_mermaid_dot_and_json() {
    let cli = Cli::new();
    let text = cli.run(&["show", "order_saga"]).expect(0).stdout;
    let order: Vec<usize> =
        ["1. reserve_stock", "2. charge_payment", "3. create_shipment"].iter().map(|s| text.find(s).unwrap()).collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(text.contains("compensated by release_stock"), "{text}");

    let mermaid = cli.run(&["show", "approval", "--format", "mermaid"]).expect(0).stdout;
    assert!(mermaid.starts_with("flowchart TD\n"), "{mermaid}");
    assert!(mermaid.contains(r#"["approval.request_approval"]"#), "{mermaid}");
    assert!(mermaid.contains(r#">"@event:payment"]"#), "{mermaid}");
    assert!(mermaid.contains("-->"), "{mermaid}");

    let dot = cli.run(&["show", "hello_world", "--format", "dot"]).expect(0).stdout;
    assert!(dot.starts_with("digraph \"hello_world\" {"), "{dot}");
    assert!(dot.contains("label=\"step_1\", shape=box"), "{dot}");
    assert!(dot.trim_end().ends_with('}'), "{dot}");

    let shown = cli.run(&["show", "approval", "--json"]).expect(0).json();
    let flow = shown["flow"].as_array().unwrap();
    assert_eq!(flow[0]["call"], "reserve_stock");
    assert_eq!(flow[0]["name"], "approval.reserve_stock");
    assert_eq!(flow[0]["kind"], "step");
    assert_eq!(flow[2]["kind"], "event");
    assert_eq!(shown["workflow"]["name"], "approval");
}

#[test]
fn a_newcomer_runs_a_workflow_inspects_a_failed_one_and_reruns_it() {
    let cli = Cli::new();
    // Run: the result on stdout, the steps on stderr.
    let ran = cli.run(&["run", "hello_world", "--input", HELLO]).expect(0);
    assert_eq!(ran.stdout.trim(), r#"{"message":"Hello John from step two!"}"#);
    for line in ["started hello_world", "step_1#1 started (attempt 1)", "step_2#1 completed in", "finished: completed"]
    {
        assert!(ran.stderr.contains(line), "{line} in:\n{}", ran.stderr);
    }
    // Input from a file.
    std::fs::write(cli.dir.path().join("input.json"), HELLO).unwrap();
    let ran = cli.run(&["run", "hello_world", "--input", "@input.json", "--json"]).expect(0).json();
    assert_eq!(ran["state"], "completed");
    assert_eq!(ran["result"]["message"], "Hello John from step two!");

    // A saga that fails and compensates: exit code 3.
    let failed = cli.run_with(&["run", "order_saga", "--input", ORDER], &[("CARRIER_DOWN", "1")]).expect(3);
    assert!(failed.stderr.contains("ended compensated"), "{}", failed.stderr);
    assert!(failed.stderr.contains("the carrier is unavailable"), "{}", failed.stderr);
    let compensated = cli.executions(&["--state", "compensated"]);
    assert_eq!(compensated.len(), 1);
    let id = compensated[0]["id"].as_str().unwrap().to_owned();

    // Inspect it: every step and compensation, in order, with attempts and durations.
    let text = cli.run(&["inspect", &id]).expect(0).stdout;
    for expected in ["state    compensated", "step failed", "create_shipment#1", "compensation completed", "rerun"] {
        assert!(text.contains(expected), "{expected} in:\n{text}");
    }
    let inspected = cli.inspect(&id);
    assert_eq!(
        events(&inspected),
        [
            "step_completed reserve_stock#1",
            "step_completed charge_payment#1",
            "step_failed create_shipment#1",
            "compensation_started charge_payment#1",
            "compensation_completed charge_payment#1",
            "compensation_started reserve_stock#1",
            "compensation_completed reserve_stock#1",
        ]
    );
    let timeline = inspected["timeline"].as_array().unwrap();
    assert_eq!(timeline[0]["attempt"], 1);
    assert!(timeline[0]["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(timeline[0]["output"]["id"], "res-1");
    assert_eq!(timeline[2]["error"]["message"], "the carrier is unavailable");
    assert_eq!(inspected["execution"]["state"], "compensated");
    assert_eq!(inspected["execution"]["input"]["sku"], "tee");
    assert_eq!(inspected["journal"].as_array().unwrap().len(), 7);

    // The carrier is back: retry it, as a new execution with the same input.
    let retried = cli.run(&["rerun", &id, "--json"]).expect(0).json();
    assert_eq!(retried["state"], "completed");
    assert_eq!(retried["result"]["shipment"], "ship-res-1");
    let new = retried["execution"].as_str().unwrap();
    assert_ne!(new, id);
    let rerun = cli.executions(&["--workflow", "order_saga", "--state", "completed"]);
    assert_eq!(rerun[0]["rerun_of"], id.as_str());

    // Re-running a completed execution repeats its side effects: it takes --force.
    let refused = cli.run(&["rerun", new]).expect(1);
    assert!(refused.stderr.contains(&format!("execution {new} completed")), "{}", refused.stderr);
    assert!(refused.stderr.contains("pass --force"), "{}", refused.stderr);
    assert_eq!(cli.executions(&["--workflow", "order_saga"]).len(), 2, "nothing was started");
    let forced = cli.run(&["rerun", new, "--force", "--json"]).expect(0).json();
    assert_eq!(forced["state"], "completed");
}

#[test]
fn executions_filter_and_page_newest_first() {
    let cli = Cli::new();
    for _ in 0..3 {
        cli.run(&["run", "hello_world", "--input", HELLO]).expect(0);
    }
    cli.run(&["run", "product_count"]).expect(0);
    let all = cli.executions(&[]);
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["workflow"], "product_count", "newest first");
    let created: Vec<&str> = all.iter().map(|e| e["created_at"].as_str().unwrap()).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]), "{created:?}");

    assert_eq!(cli.executions(&["--workflow", "hello_world"]).len(), 3);
    assert_eq!(cli.executions(&["--state", "completed", "--state", "compensated"]).len(), 4);
    assert_eq!(cli.executions(&["--state", "failed"]).len(), 0);
    assert_eq!(cli.executions(&["--since", "1h"]).len(), 4);
    assert_eq!(cli.executions(&["--since", "2999-01-01T00:00:00Z"]).len(), 0);

    let page = |n: &str| cli.run(&["executions", "--json", "--limit", "3", "--page", n]).expect(0).json();
    let (first, second) = (page("1"), page("2"));
    assert_eq!(first["executions"].as_array().unwrap().len(), 3);
    assert_eq!(first["more"], true);
    assert_eq!(second["executions"].as_array().unwrap().len(), 1);
    assert_eq!(second["more"], false);
    assert_eq!(second["executions"][0]["id"], all[3]["id"]);

    // A cursor: the next page starts where the last one ended, at the same cost at any depth.
    assert_eq!(second["next"], Value::Null, "the last page has no next");
    let next = first["next"].as_str().expect("a cursor").to_owned();
    let after = cli.run(&["executions", "--json", "--limit", "3", "--after", &next]).expect(0).json();
    assert_eq!(after["executions"], second["executions"]);
    let bad = cli.run(&["executions", "--after", "page-two"]).expect(2);
    assert!(bad.stderr.contains("is not a page cursor"), "{}", bad.stderr);

    let text = cli.run(&["executions", "--limit", "2"]).expect(0).stdout;
    assert!(text.starts_with("ID"), "{text}");
    let shown = text.lines().last().unwrap().trim_start_matches("(more: --after ").trim_end_matches(')').to_owned();
    let rest = cli.run(&["executions", "--json", "--after", &shown]).expect(0).json();
    assert_eq!(rest["executions"].as_array().unwrap().len(), 2, "{text}");
}

#[test]
fn async_steps_and_events_are_completed_failed_and_sent_from_the_command_line() {
    let cli = Cli::new();
    // The run suspends on the approval: exit code 4, with the commands that continue it.
    let waiting = cli.run(&["run", "approval", "--input", &approval_input("7", 600_000), "--id", "order-7"]).expect(4);
    let token = &cli.token("order-7");
    assert!(token.starts_with("wf1."), "{token}");
    assert!(waiting.stderr.contains(&format!("workflows complete {token} --output JSON")), "{}", waiting.stderr);
    // The form of earlier releases, made up from the execution's id, is refused.
    let forged =
        cli.run(&["complete", "order-7/approval.request_approval#1", "--output", r#"{"approved":true,"by":"x"}"#]);
    assert!(forged.expect(1).stderr.contains("is not a completion token of this store"));
    let inspected = cli.inspect("order-7");
    assert_eq!(inspected["execution"]["state"], "waiting");
    assert_eq!(inspected["waiting_for"][0]["completion"], "approval.request_approval#1");
    let waiting_row = inspected["timeline"].as_array().unwrap().iter().find(|row| row["event"] == "step_waiting");
    assert_eq!(waiting_row.expect("a step_waiting row")["token"], token.as_str());

    // Completing it continues the execution here, until it waits for the payment event.
    // Exit code 4: the execution went on to its next wait.
    let completed = cli.run(&["complete", token, "--output", r#"{"approved":true,"by":"ann"}"#]).expect(4);
    assert!(completed.stderr.contains("workflows send-event order-7 payment"), "{}", completed.stderr);
    let again = cli.run(&["complete", token, "--output", r#"{"approved":true,"by":"ann"}"#]).expect(1);
    assert!(again.stderr.contains("was completed already"), "{}", again.stderr);
    let sent =
        cli.run(&["send-event", "order-7", "payment", "--payload", r#"{"payment_id":"p1","amount_cents":1200}"#]);
    let sent = sent.expect(0);
    assert!(sent.stderr.contains("completed"), "{}", sent.stderr);
    let done = cli.inspect("order-7");
    assert_eq!(done["execution"]["state"], "completed");
    assert_eq!(done["execution"]["result"]["payment_id"], "p1");

    // A permanent failure of the approval compensates the order.
    cli.run(&["run", "approval", "--input", &approval_input("8", 600_000), "--id", "order-8"]).expect(4);
    let failed = cli.run(&["fail", &cli.token("order-8"), "--error", "manager away", "--permanent"]);
    // Exit code 3: the execution ended without completing.
    assert!(failed.expect(3).stderr.contains("ended compensated"));
    let inspected = cli.inspect("order-8");
    assert_eq!(inspected["execution"]["state"], "compensated");
    assert!(events(&inspected).contains(&"compensation_completed approval.reserve_stock#1".to_owned()));

    // A malformed token, an output of the wrong shape, and an event to a finished execution.
    let bad = cli.run(&["complete", "nonsense", "--output", "{}"]).expect(1);
    assert!(bad.stderr.contains("is not a completion token"), "{}", bad.stderr);
    cli.run(&["run", "approval", "--input", &approval_input("9", 600_000), "--id", "order-9"]).expect(4);
    let shape = cli.run(&["complete", &cli.token("order-9"), "--output", r#"{"approved":"yes"}"#]);
    assert!(shape.expect(1).stderr.contains("does not decode as the step's output"));
    let finished = cli.run(&["send-event", "order-7", "payment", "--payload", "{}"]).expect(1);
    assert!(finished.stderr.contains("is completed already"), "{}", finished.stderr);

    // Cancelling the waiting one compensates it.
    let cancelled = cli.run(&["cancel", "order-9"]).expect(3);
    assert!(cancelled.stderr.contains("ended cancelled"), "{}", cancelled.stderr);
    assert_eq!(cli.inspect("order-9")["execution"]["state"], "cancelled");
    let twice = cli.run(&["cancel", "order-9"]).expect(1);
    assert!(twice.stderr.contains("cancelled"), "{}", twice.stderr);
}

#[test]
fn watch_follows_an_execution_that_other_processes_drive() {
    let cli = Cli::new();
    cli.run(&["run", "approval", "--input", &approval_input("w", 600_000), "--id", "order-w"]).expect(4);
    let mut watcher = cli.spawn(&["watch", "order-w", "--every", "50ms"]);
    cli.run(&["complete", &cli.token("order-w"), "--output", r#"{"approved":true,"by":"ann"}"#]).expect(4);
    cli.run(&["send-event", "order-w", "payment", "--payload", r#"{"payment_id":"p9","amount_cents":1200}"#]).expect(0);
    let watched = wait_with_timeout(&mut watcher, Duration::from_secs(30));
    assert_eq!(watched.code, 0, "{}", watched.stderr);
    let text = watched.stdout;
    let order: Vec<usize> = [
        "watching execution order-w (workflow approval), ",
        "approval.reserve_stock#1 step completed (attempt 1)",
        "approval.request_approval#1 step completed (attempt 1)",
        "@event:payment#1 event received",
        "approval.ship#1 step completed (attempt 1)",
        "\ncompleted\n",
    ]
    .iter()
    .map(|line| text.find(line).unwrap_or_else(|| panic!("{line:?} in:\n{text}")))
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");

    // Watched after it finished (as a slow start of the watcher above could): the whole
    // timeline, then the final state.
    let late = cli.run(&["watch", "order-w"]).expect(0).stdout;
    assert!(late.contains("approval.ship#1 step completed") && late.ends_with("\ncompleted\n"), "{late}");

    // A finished execution: its whole timeline as JSON lines, then its summary.
    let json = cli.run(&["watch", "order-w", "--json"]).expect(0);
    let lines: Vec<Value> = json.stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[0]["event"], "step_completed");
    assert_eq!(lines[0]["key"], "approval.reserve_stock#1");
    assert_eq!(lines.last().unwrap()["state"], "completed");
    assert!(cli.run(&["watch", "nope"]).expect(1).stderr.contains("no execution `nope`"));
}

#[test]
fn purge_deletes_finished_executions_older_than_an_age() {
    let cli = Cli::new();
    cli.run(&["run", "hello_world", "--input", HELLO]).expect(0);
    cli.run(&["run", "approval", "--input", &approval_input("1", 600_000)]).expect(4);
    // Nothing is past its retention (7 days).
    assert_eq!(cli.run(&["purge", "--json"]).expect(0).json()["purged"], 0);
    let purged = cli.run(&["purge", "--older-than", "0s", "--json"]).expect(0).json();
    assert_eq!(purged["purged"], 1, "the finished one; never a waiting one");
    let left = cli.executions(&[]);
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["state"], "waiting");
    let text = cli.run(&["purge", "--older-than", "1d"]).expect(0).stdout;
    assert!(text.contains("purged 0 finished executions"), "{text}");
}

#[cfg(unix)]
#[test]
fn a_worker_resumes_due_executions_and_stops_gracefully_on_ctrl_c() {
    let cli = Cli::new();
    // Approved at once; then the payment wait (deadline 2.5 s) suspends it with no process left.
    cli.run(&["run", "approval", "--input", &approval_input("5", 2_500), "--id", "order-5"]).expect(4);
    cli.run(&["complete", &cli.token("order-5"), "--output", r#"{"approved":true,"by":"bo"}"#]).expect(4);
    assert_eq!(cli.inspect("order-5")["execution"]["state"], "waiting");

    let mut worker = cli.spawn(&["worker"]);
    let started = Instant::now();
    loop {
        let state = cli.inspect("order-5")["execution"]["state"].as_str().unwrap().to_owned();
        if state == "compensated" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the worker did not resume it: {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let failure = &cli.inspect("order-5")["execution"]["failure"]["message"];
    assert!(failure.as_str().unwrap().contains("payment"), "{failure}");

    // SIGINT, as Ctrl-C sends: a graceful stop, exit code 0.
    let status = Command::new("kill").args(["-INT", &worker.id().to_string()]).status().unwrap();
    assert!(status.success());
    let output = wait_with_timeout(&mut worker, Duration::from_secs(20));
    assert_eq!(output.code, 0, "{}", output.stderr);
    assert!(output.stderr.contains("stopping: taking no new work"), "{}", output.stderr);
    assert!(output.stderr.contains("stopped; 0 executions were released"), "{}", output.stderr);
    assert!(output.stderr.contains("resumed approval (execution order-5)"), "{}", output.stderr);
}

fn wait_with_timeout(child: &mut Child, limit: Duration) -> Ran {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("the process did not stop within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = std::mem::replace(child, Command::new("true").spawn().unwrap()).wait_with_output().unwrap();
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn errors_say_what_is_wrong_with_exit_codes_and_no_backtrace() {
    let cli = Cli::new();
    // An unknown workflow, with the closest names.
    let unknown = cli.run(&["run", "hello_wrld", "--input", HELLO]).expect(1);
    assert!(unknown.stderr.contains("no workflow is registered as `hello_wrld`"), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("did you mean `hello_world`"), "{}", unknown.stderr);
    assert!(cli.run(&["show", "order_sag"]).expect(1).stderr.contains("did you mean `order_saga`"));

    // Malformed JSON: where, and the expected input type.
    let malformed = cli.run(&["run", "hello_world", "--input", "{\"name\": }"]).expect(1);
    assert!(malformed.stderr.contains("--input is not valid JSON"), "{}", malformed.stderr);
    assert!(malformed.stderr.contains("line 1, column 10"), "{}", malformed.stderr);
    assert!(malformed.stderr.contains("`HelloInput`"), "{}", malformed.stderr);

    // JSON of the wrong shape: serde's message.
    let mismatch = cli.run(&["run", "hello_world", "--input", r#"{"nam":"x"}"#]).expect(1);
    assert!(mismatch.stderr.contains("does not match workflow `hello_world`'s input type `HelloInput`"));
    assert!(mismatch.stderr.contains("missing field `name`"), "{}", mismatch.stderr);
    // None of these created the store.
    assert!(!cli.store().exists());

    // A store that does not exist.
    for args in [&["executions"][..], &["inspect", "x"], &["cancel", "x"], &["purge"]] {
        let missing = cli.run(args).expect(1);
        assert!(missing.stderr.contains("no store at `workflows.db`"), "{args:?}: {}", missing.stderr);
    }
    assert!(!cli.store().exists());

    // An unknown execution.
    cli.run(&["run", "hello_world", "--input", HELLO]).expect(0);
    // One message, whichever command is given the id.
    let unknown = "no execution `nope` in store `sqlite:workflows.db` (it never existed, or it was purged after its \
                   retention); list them with `workflows executions`";
    for args in [
        &["inspect", "nope"][..],
        &["watch", "nope"],
        &["rerun", "nope"],
        &["cancel", "nope"],
        &["send-event", "nope", "payment"],
        &["complete", "nope/approval.request_approval#1", "--output", r#"{"approved":true,"by":"x"}"#],
        &["fail", "nope/approval.request_approval#1", "--error", "no"],
    ] {
        let nothing = cli.run(args).expect(1);
        assert!(nothing.stderr.contains(unknown), "{args:?}: {}", nothing.stderr);
    }

    // A store of a newer version is refused, untouched.
    let newer = cli.dir.path().join("newer.db");
    std::fs::copy(cli.store(), &newer).unwrap();
    rusqlite::Connection::open(&newer).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let store = format!("sqlite:{}", newer.display());
    let refused = cli.run(&["--store", &store, "executions"]).expect(1);
    assert!(refused.stderr.contains("schema version 99, newer than this build supports"), "{}", refused.stderr);
    let version: i64 =
        rusqlite::Connection::open(&newer).unwrap().pragma_query_value(None, "user_version", |r| r.get(0)).unwrap();
    assert_eq!(version, 99);

    // The store from the environment, as documented.
    let listed = cli.run_with(&["executions", "--json"], &[("WORKFLOWS_STORE", &format!("sqlite:{}", path(&cli)))]);
    assert_eq!(listed.expect(0).json()["executions"].as_array().unwrap().len(), 1);

    // Usage errors: exit code 2.
    assert!(cli.run(&["frobnicate"]).expect(2).stderr.contains("unrecognized subcommand"));
    assert!(cli.run(&["executions", "--state", "sleeping"]).expect(2).stderr.contains("unknown execution state"));
    assert!(cli.run(&["--help"]).expect(0).stdout.contains("send-event"));
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    // `workflows list | head -1`: the reader closes the pipe before the tool writes.
    let cli = Cli::new();
    let mut child = cli.spawn(&["list"]);
    drop(child.stdout.take());
    let ran = wait_with_timeout(&mut child, Duration::from_secs(20));
    assert_eq!(ran.stderr, "", "no panic, no message");
    assert_eq!(ran.code, 0);
}

/// `workflows complete … 2>&1 | head -c1`: both outputs close while the command drives the
/// execution it woke. The command must finish that work (a panic would leave the execution
/// `running` until its lease expires) and exit as it would otherwise.
#[test]
fn closed_outputs_never_abort_the_work_a_command_drives() {
    let cli = Cli::new();
    cli.run(&["run", "approval", "--input", &approval_input("c", 600_000), "--id", "order-c"]).expect(4);
    let closed = |args: &[&str]| {
        let mut child = cli.spawn(args);
        drop(child.stdout.take());
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert_ne!(status.code(), Some(101), "{args:?} panicked");
        status.code()
    };
    let token = cli.token("order-c");
    assert_eq!(closed(&["complete", &token, "--output", r#"{"approved":true,"by":"ann"}"#]), Some(4));
    // It drove the execution on to its next wait (the payment), and left it suspended.
    let inspected = cli.inspect("order-c");
    assert_eq!(inspected["execution"]["state"], "waiting");
    assert_eq!(inspected["waiting_for"][0]["event"], "payment");
    let payment = r#"{"payment_id":"p1","amount_cents":1200}"#;
    assert_eq!(closed(&["send-event", "order-c", "payment", "--payload", payment, "--json"]), Some(0));
    let done = cli.inspect("order-c");
    assert_eq!(done["execution"]["state"], "completed", "{done}");
    assert_eq!(done["execution"]["owner"], Value::Null);
}

fn path(cli: &Cli) -> String {
    let store = cli.store();
    let path: &Path = &store;
    path.display().to_string()
}

/// A row damaged on disk (its workflow name is not UTF-8) never hides the others: the listing
/// names it and lists the rest; `inspect` on it says what is damaged.
#[test]
fn a_damaged_row_is_named_and_the_other_executions_are_listed() {
    let cli = Cli::new();
    cli.run(&["run", "hello_world", "--input", HELLO, "--id", "fine"]).expect(0);
    cli.run(&["run", "hello_world", "--input", HELLO, "--id", "rotten"]).expect(0);
    let conn = rusqlite::Connection::open(cli.store()).unwrap();
    conn.execute("UPDATE executions SET workflow = CAST(X'68656cff' AS TEXT) WHERE id = 'rotten'", []).unwrap();

    let listed = cli.run(&["executions"]).expect(0);
    assert!(listed.stdout.contains("fine"), "{}", listed.stdout);
    assert!(
        listed.stderr.contains("execution rotten cannot be decoded (its workflow is not valid UTF-8"),
        "{}",
        listed.stderr
    );
    let json = cli.run(&["executions", "--json"]).expect(0).json();
    assert_eq!(json["executions"].as_array().unwrap().len(), 1);
    assert_eq!(json["damaged"][0]["id"], "rotten");
    let inspected = cli.run(&["inspect", "rotten"]).expect(1);
    assert!(
        inspected.stderr.contains("execution rotten: stored data cannot be decoded (its workflow is not valid UTF-8)"),
        "{}",
        inspected.stderr
    );
}

/// `workflows check`: a clean store passes; damage SQLite cannot see (a journal row removed
/// behind the engine's back) is named, with exit code 1.
#[test]
fn check_names_damaged_executions() {
    let cli = Cli::new();
    cli.run(&["run", "hello_world", "--input", HELLO, "--id", "kept"]).expect(0);
    cli.run(&["run", "hello_world", "--input", HELLO, "--id", "rotted"]).expect(0);
    let clean = cli.run(&["check"]).expect(0);
    assert!(clean.stdout.contains("store file: ok (SQLite quick_check)"), "{}", clean.stdout);
    assert!(clean.stdout.contains("checked 2 executions and 4 journal entries: no damage found"), "{}", clean.stdout);

    let conn = rusqlite::Connection::open(cli.store()).unwrap();
    conn.execute("DELETE FROM journal WHERE execution_id = 'rotted' AND idx = 1", []).unwrap();
    drop(conn);
    let damaged = cli.run(&["check", "--full"]).expect(1);
    assert!(
        damaged.stdout.contains("damaged: execution rotted: its journal: 1 entries are stored where 2 were written"),
        "{}",
        damaged.stdout
    );
    assert!(damaged.stdout.contains("store file: ok (SQLite integrity_check)"), "{}", damaged.stdout);
    let json = cli.run(&["check", "--json"]).expect(1).json();
    assert_eq!(json["clean"], false);
    assert_eq!(json["damaged"][0]["id"], "rotted");
    assert_eq!(json["executions"], 2);
}

/// `events --failed` lists the events a subscriber's execution could not be started for, as
/// text and JSON; `events retry` sets one to be tried again, `events drop` gives it up; an
/// event that is not undelivered is an error that says how to list them.
#[test]
fn undelivered_events_are_listed_retried_and_dropped() {
    let cli = Cli::new();
    cli.run(&["run", "hello_world", "--input", HELLO]).expect(0);
    let conn = rusqlite::Connection::open(cli.store()).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as i64;
    for (event, subscriber, retry_at) in
        [("ev-1", "confirm", None), ("ev-1", "reserve", Some(now + 60_000_000)), ("ev-2", "confirm", None)]
    {
        conn.execute(
            "INSERT INTO undelivered (event_id, subscriber, name, payload, emitted_at, attempts, error, first_failed_at,
                                      last_failed_at, retry_at)
             VALUES (?1, ?2, 'order.placed', '{\"order\":1}', ?3, 5, 'execution confirm@ev-1 exists with another input', ?3, ?3, ?4)",
            rusqlite::params![event, subscriber, now, retry_at],
        )
        .unwrap();
    }
    let text = cli.run(&["events", "--failed"]).expect(0);
    assert!(
        text.stdout.contains("ev-1") && text.stdout.contains("parked") && text.stdout.contains("in "),
        "{}",
        text.stdout
    );
    assert!(text.stderr.contains("workflows events retry EVENT"), "{}", text.stderr);
    let listed = cli.run(&["--json", "events", "--failed"]).expect(0).json();
    let listed = listed["undelivered"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3);
    assert!(listed.iter().all(|u| u["payload"]["order"] == 1 && u["attempts"] == 5), "{listed:?}");
    assert_eq!(listed.iter().filter(|u| u["parked"] == true).count(), 2);

    let retried = cli.run(&["--json", "events", "retry", "ev-1", "--subscriber", "confirm"]).expect(0).json();
    assert_eq!(retried["retry"], 1);
    let dropped = cli.run(&["events", "drop", "ev-2"]).expect(0).stdout;
    assert!(dropped.contains("dropped for 1 subscriber"), "{dropped}");
    let left = cli.run(&["--json", "events", "--failed"]).expect(0).json();
    let left = left["undelivered"].as_array().unwrap().clone();
    assert_eq!(left.len(), 2);
    assert!(left.iter().all(|u| u["event"] == "ev-1" && u["parked"] == false), "{left:?}");

    let missing = cli.run(&["events", "drop", "ev-9"]).expect(1).stderr;
    assert!(missing.contains("is not undelivered") && missing.contains("--failed"), "{missing}");
    let bare = cli.run(&["events"]).expect(2).stderr;
    assert!(bare.contains("--failed"), "{bare}");
}

/// `--client-only` leaves what a command starts to the workers sharing the store, and says so:
/// the execution waits, unowned, until a worker (here a plain `run` of the same id, whose
/// engine is one) takes it and runs it. A worker cannot be client-only.
#[test]
fn client_only_commands_leave_the_work_to_the_workers_and_say_so() {
    let cli = Cli::new();
    let started = cli.run(&["--client-only", "run", "hello_world", "--id", "left-1", "--input", HELLO]).expect(0);
    assert!(started.stderr.contains("left to the workers"), "{}", started.stderr);
    assert!(started.stdout.is_empty(), "no result: it did not run here: {}", started.stdout);
    let json = cli
        .run(&["--json", "--client-only", "run", "hello_world", "--id", "left-2", "--input", HELLO])
        .expect(0)
        .json();
    assert_eq!((json["left_to_workers"].as_bool(), json["state"].as_str()), (Some(true), Some("running")));
    let record = cli.inspect("left-1");
    assert_eq!(record["execution"]["state"], "running");
    assert!(record["execution"]["owner"].is_null(), "nobody runs it yet: {record}");
    // A worker takes it over.
    let ran = cli.run(&["run", "hello_world", "--id", "left-1", "--input", HELLO]).expect(0);
    assert!(ran.stdout.contains("Hello John from step two!"), "{}", ran.stdout);
    let refused = cli.run(&["--client-only", "worker"]).expect(1);
    assert!(refused.stderr.contains("cannot be --client-only"), "{}", refused.stderr);
}

/// `inspect` names the process that ran each attempt and when each began (the first step's
/// start too), in text and in JSON.
#[test]
fn inspect_names_the_process_of_each_attempt_and_its_start() {
    let cli = Cli::new();
    cli.run(&["run", "hello_world", "--id", "seen", "--input", HELLO]).expect(0);
    let inspected = cli.inspect("seen");
    let rows = inspected["timeline"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        let by = row["by"].as_str().unwrap_or_else(|| panic!("no process: {row}"));
        let (host, pid) = by.rsplit_once(':').unwrap();
        assert!(!host.is_empty() && pid.parse::<u32>().is_ok(), "{by}");
        assert!(row["started_at"].as_str().is_some_and(|at| at <= row["at"].as_str().unwrap()), "{row}");
    }
    let text = cli.run(&["inspect", "seen"]).expect(0).stdout;
    assert!(text.contains("STARTED") && text.contains("PROCESS"), "{text}");
    assert!(text.contains(rows[0]["by"].as_str().unwrap()), "{text}");
}

/// On PostgreSQL (`WORKFLOWS_TEST_POSTGRES`), `check` says what it checked — every row read
/// back — and not a SQLite file check it did not run.
#[test]
fn check_on_postgres_says_what_it_checked() {
    let Ok(server) = std::env::var("WORKFLOWS_TEST_POSTGRES") else {
        eprintln!("PostgreSQL test skipped: set WORKFLOWS_TEST_POSTGRES to run it (`.ci/run` does)");
        return;
    };
    let schema = format!("cli_{}", uuid::Uuid::now_v7().simple());
    let separator = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{separator}schema={schema}");
    let cli = Cli::new();
    cli.run(&["--store", &url, "run", "hello_world", "--input", HELLO]).expect(0);
    let checked = cli.run(&["--store", &url, "check"]).expect(0).stdout;
    let json = cli.run(&["--store", &url, "--json", "check"]).expect(0).json();
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
        let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute(&format!("DROP SCHEMA {schema} CASCADE")).await.unwrap();
    });
    assert!(checked.contains("PostgreSQL checks its own pages"), "{checked}");
    assert!(!checked.contains("SQLite"), "{checked}");
    assert!(checked.contains("checked 1 executions and 2 journal entries: no damage found"), "{checked}");
    assert_eq!((json["clean"].as_bool(), json["store_check"].is_null()), (Some(true), true), "{json}");
}

#[test]
fn compensate_reverts_a_completed_execution_after_a_confirmation_and_over_a_filter() {
    let cli = Cli::new();
    let first = cli.run(&["run", "order_saga", "--input", ORDER, "--json"]).expect(0).json();
    let id = first["execution"].as_str().unwrap().to_owned();
    cli.run(&["run", "order_saga", "--input", ORDER]).expect(0);

    // No terminal to confirm on: it says how to go on, and changes nothing.
    let refused = cli.run(&["compensate", &id]).expect(1);
    assert!(refused.stdout.contains("1 execution to compensate"), "{}", refused.stdout);
    assert!(refused.stdout.contains("undo charge_payment#1, reserve_stock#1"), "{}", refused.stdout);
    assert!(refused.stderr.contains("pass --yes"), "{}", refused.stderr);
    assert_eq!(cli.executions(&["--state", "completed"]).len(), 2);

    let done = cli.run(&["compensate", &id, "--yes"]).expect(0);
    assert!(done.stdout.contains(&format!("{id}: compensated")), "{}", done.stdout);
    let inspected = cli.inspect(&id);
    assert_eq!(inspected["execution"]["state"], "compensated");
    assert_eq!(
        events(&inspected)[3..],
        [
            "compensation_started charge_payment#1",
            "compensation_completed charge_payment#1",
            "compensation_started reserve_stock#1",
            "compensation_completed reserve_stock#1",
        ]
    );
    let again = cli.run(&["compensate", &id, "--yes"]).expect(3);
    assert!(again.stdout.contains("compensated already"), "{}", again.stdout);

    // Over a filter: says how many, touches exactly those.
    let bulk =
        cli.run(&["compensate", "--workflow", "order_saga", "--state", "completed", "--yes", "--json"]).expect(0);
    let bulk = bulk.json();
    assert_eq!(bulk["selected"], 1);
    assert_eq!(bulk["outcomes"][0]["compensated"], true);
    assert_eq!(cli.executions(&["--state", "compensated"]).len(), 2);
    let wrong = cli.run(&["compensate", "--state", "running", "--yes"]).expect(1);
    assert!(wrong.stderr.contains("workflows cancel"), "{}", wrong.stderr);

    // `list` shows each workflow's version and its executions in flight.
    let listed = cli.run(&["list", "--json"]).expect(0).json();
    let saga = listed["workflows"].as_array().unwrap().iter().find(|w| w["name"] == "order_saga").unwrap().clone();
    assert_eq!(
        (saga["version"].clone(), saga["in_flight"].clone(), saga["latest"].clone()),
        (0.into(), 0.into(), true.into())
    );
    let text = cli.run(&["list"]).expect(0).stdout;
    assert!(text.contains("VERSION") && text.contains("IN FLIGHT"), "{text}");
}

#[test]
fn export_writes_a_journal_and_replay_check_reports_what_this_code_would_block() {
    let cli = Cli::new();
    let ran = cli.run(&["run", "order_saga", "--input", ORDER, "--json"]).expect(0).json();
    let id = ran["execution"].as_str().unwrap().to_owned();
    let exported = cli.run(&["export", &id]).expect(0);
    let journals = cli.dir.path().join("journals");
    std::fs::create_dir(&journals).unwrap();
    std::fs::write(journals.join("order.json"), &exported.stdout).unwrap();
    // The same journal as another build would have written it: its second step was another.
    let other = exported.stdout.replace("charge_payment#1", "charge_card#1");
    assert_ne!(other, exported.stdout);
    std::fs::write(journals.join("other.json"), other).unwrap();
    std::fs::write(journals.join("notes.txt"), "not a journal").unwrap();

    let dir = journals.to_str().unwrap();
    let checked = cli.run(&["replay-check", "--journals", dir, "--json"]).expect(1).json();
    assert_eq!((checked["checked"].clone(), checked["diverging"].clone()), (2.into(), 1.into()));
    let rows = checked["executions"].as_array().unwrap();
    assert_eq!(rows[0]["verdict"], "replays");
    assert_eq!(rows[1]["verdict"], "diverges");
    let message = rows[1]["failure"]["message"].as_str().unwrap();
    assert!(message.contains("`charge_payment#1` now, but the journal recorded `charge_card#1`"), "{message}");
    let text = cli.run(&["replay-check", "--journals", dir]).expect(1).stdout;
    assert!(text.contains("WOULD BLOCK") && text.contains("1 would be blocked"), "{text}");

    // From the store: what is in flight (nothing here), or the states asked.
    let store = cli.run(&["replay-check", "--state", "completed", "--json"]).expect(0).json();
    assert_eq!((store["checked"].clone(), store["diverging"].clone()), (1.into(), 0.into()));
    std::fs::write(journals.join("broken.json"), "{").unwrap();
    let broken = cli.run(&["replay-check", "--journals", dir]).expect(1);
    assert!(broken.stderr.contains("is not an exported execution"), "{}", broken.stderr);
}
