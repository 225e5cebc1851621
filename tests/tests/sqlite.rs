//! The SQLite store through the public API: schema versions, corrupted rows, a locked file, a
//! full disk, and many concurrent executions through the group-committing writer. (The rules
//! every store keeps, fencing among them, are the runtime's conformance suite.)

use std::sync::Arc;
use std::time::Duration;

use workflows_runtime::prelude::*;
use workflows_runtime::{ExecutionQuery, ExecutionState, FailureKind, SqliteOptions, SqliteStore, StoreError};
use workflows_tests::{Gate, Log, eventually};

#[step]
async fn add(n: u32, m: u32) -> Result<u32, StepError> {
    Ok(n + m)
}

#[step]
async fn held(ctx: &StepContext, n: u32) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Gate>>()?.pass().await;
    Ok(n)
}

#[workflow]
async fn sum_then_hold(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let a = add(wf, n, 1).await?;
    let b = add(wf, a, 1).await?;
    Ok(held(wf, b).await?)
}

fn header(path: &std::path::Path) -> (i64, i32) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let version = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
    let application_id = conn.query_row("PRAGMA application_id", [], |r| r.get(0)).unwrap();
    (version, application_id)
}

#[tokio::test]
async fn a_fresh_file_gets_the_schema_and_reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    let engine = Engine::builder().sqlite(&path).container(Container::new().with(Arc::new(Gate::opened()))).start();
    let engine = engine.await.unwrap();
    assert_eq!(sum_then_hold::run_with(&engine, 1, RunOptions::new().id("kept")).await.unwrap(), 3);
    drop(engine);
    assert_eq!(header(&path), (SqliteStore::SCHEMA_VERSION, 0x5746_4c57));

    let reopened = reader(&path).await;
    let record = reopened.execution(&"kept".into()).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Completed);
    assert_eq!(record.result.unwrap().get(), "3");
    assert_eq!(record.fingerprint, sum_then_hold::definition().fingerprint());
    let journal = reopened.journal(&"kept".into()).await.unwrap();
    assert_eq!(journal.len(), 3);
    assert_eq!(journal[0].event.kind(), "step_completed");
}

/// An engine that only reads the file (it takes over nothing).
async fn reader(path: &std::path::Path) -> Engine {
    Engine::builder().sqlite(path).worker(false).start().await.unwrap()
}

#[tokio::test]
async fn a_store_written_by_a_newer_schema_is_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("newer.db");
    drop(SqliteStore::open(&path).unwrap());
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();

    let error = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(error, StoreError::NewerSchema { found: 99, .. }), "{error}");
    let message = error.to_string();
    let expected = format!("schema version 99, newer than this build supports ({})", SqliteStore::SCHEMA_VERSION);
    assert!(message.contains(&expected), "{message}");
    assert!(message.contains("upgrade workflows-runtime"), "{message}");
    assert_eq!(header(&path).0, 99, "nothing was changed");

    let engine = Engine::builder().sqlite(&path).start().await.expect_err("refused");
    assert!(engine.to_string().contains("schema version 99"), "{engine}");
}

#[test]
fn a_sqlite_file_of_another_application_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("other.db");
    rusqlite::Connection::open(&path).unwrap().execute_batch("CREATE TABLE customers (id INTEGER)").unwrap();
    let error = SqliteStore::open(&path).err().expect("refused");
    assert!(matches!(error, StoreError::NotAStore { .. }), "{error}");
    assert!(error.to_string().contains("is not a workflows store"), "{error}");
}

/// Two executions held at their third step, then the engine stops.
async fn two_held_executions(path: &std::path::Path) {
    let gate = Arc::new(Gate::default());
    let engine = Engine::builder().sqlite(path).container(Container::new().with(gate.clone())).start().await.unwrap();
    sum_then_hold::start_with(&engine, 10, RunOptions::new().id("damaged")).await.unwrap();
    sum_then_hold::start_with(&engine, 20, RunOptions::new().id("healthy")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() == 2).then_some(()) }).await;
    engine.shutdown().await;
}

#[tokio::test]
async fn a_corrupted_journal_row_fails_that_execution_only_naming_it_and_the_step() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt.db");
    two_held_executions(&path).await;
    let conn = rusqlite::Connection::open(&path).unwrap();
    let changed = conn
        .execute("UPDATE journal SET event = '{\"step_completed\": {\"seq\": 1, ' WHERE execution_id = 'damaged' AND idx = 1", [])
        .unwrap();
    assert_eq!(changed, 1);

    let engine = Engine::builder()
        .sqlite(&path)
        .container(Container::new().with(Arc::new(Gate::opened())))
        .start()
        .await
        .expect("the engine starts despite the damaged row");
    assert_eq!(sum_then_hold::run_with(&engine, 20, RunOptions::new().id("healthy")).await.unwrap(), 22);
    let error = sum_then_hold::run_with(&engine, 10, RunOptions::new().id("damaged")).await.unwrap_err();
    let failure = error.failure().expect("a failure");
    assert_eq!(failure.kind, FailureKind::Decode);
    assert!(failure.message.contains("execution damaged"), "{}", failure.message);
    assert!(failure.message.contains("journal entry 1 (step `add#2`)"), "{}", failure.message);
    // Reading it still names the row.
    let read = engine.journal(&"damaged".into()).await.unwrap_err();
    assert!(read.to_string().contains("journal entry 1 (step `add#2`)"), "{read}");
}

#[tokio::test]
async fn a_corrupted_execution_row_fails_that_execution_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("corrupt-input.db");
    two_held_executions(&path).await;
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute("UPDATE executions SET input = 'not json' WHERE id = 'damaged'", [])
        .unwrap();

    let engine = Engine::builder()
        .sqlite(&path)
        .container(Container::new().with(Arc::new(Gate::opened())))
        .start()
        .await
        .unwrap();
    assert_eq!(sum_then_hold::run_with(&engine, 20, RunOptions::new().id("healthy")).await.unwrap(), 22);
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (state, failure): (String, String) = conn
        .query_row("SELECT state, failure FROM executions WHERE id = 'damaged'", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(state, "failed");
    assert!(failure.contains("execution damaged cannot be resumed: its input is not valid JSON"), "{failure}");
}

#[tokio::test]
async fn a_locked_file_is_an_error_for_the_caller_and_work_resumes_when_it_is_released() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("locked.db");
    let options = SqliteOptions::new().busy_timeout(Duration::from_millis(200));
    let engine = Engine::builder()
        .sqlite_with(&path, options)
        .container(Container::new().with(Arc::new(Gate::opened())))
        .start()
        .await
        .unwrap();

    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let error = sum_then_hold::run(&engine, 1).await.unwrap_err();
    assert!(matches!(error, RunError::Store(_)), "{error}");
    assert!(error.to_string().contains("database is locked"), "{error}");
    blocker.execute_batch("COMMIT").unwrap();

    assert_eq!(sum_then_hold::run(&engine, 1).await.unwrap(), 3);
}

#[tokio::test]
async fn a_full_disk_is_an_error_for_the_caller_and_leaves_no_half_written_execution() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let gate = Arc::new(Gate::opened());
    // Room for the schema (a page per table and index) and a few executions.
    let options = SqliteOptions::new().max_size(192 * 1024);
    let engine =
        Engine::builder().sqlite_with(&path, options).container(Container::new().with(gate.clone())).start().await;
    let engine = engine.unwrap();
    let mut error = None;
    for n in 0..2000 {
        if let Err(e) = sum_then_hold::run_with(&engine, n, RunOptions::new().id(format!("fill-{n}"))).await {
            error = Some(e);
            break;
        }
    }
    let error = error.expect("the store filled up");
    assert!(error.to_string().contains("full"), "{error}");
    engine.shutdown().await;
    drop(engine);

    // With room again, every execution that exists is complete or finishes now: each write
    // was all or nothing.
    let engine = Engine::builder().sqlite(&path).container(Container::new().with(gate)).start().await.unwrap();
    let all = engine.executions(&Default::default()).await.unwrap();
    assert!(!all.is_empty());
    for record in all {
        let n: u32 = record.id.as_str().trim_start_matches("fill-").parse().unwrap();
        let output = sum_then_hold::run_with(&engine, n, RunOptions::new().id(&record.id)).await.unwrap();
        assert_eq!(output, n + 2, "{}", record.id);
        let journal = engine.journal(&record.id).await.unwrap();
        assert!(journal.iter().enumerate().all(|(i, e)| e.index == i as u64), "{}: {journal:?}", record.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_executions_go_through_the_group_commit_intact() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .sqlite(dir.path().join("busy.db"))
        .container(Container::new().with(Arc::new(Gate::opened())))
        .start()
        .await
        .unwrap();
    let runs = (0..300u32).map(|n| {
        let engine = engine.clone();
        tokio::spawn(async move { sum_then_hold::run_with(&engine, n, RunOptions::new().id(format!("c-{n}"))).await })
    });
    for (n, run) in runs.collect::<Vec<_>>().into_iter().enumerate() {
        assert_eq!(run.await.unwrap().unwrap(), n as u32 + 2);
    }
    let completed = engine
        .executions(&ExecutionQuery { states: vec![ExecutionState::Completed], ..Default::default() })
        .await
        .unwrap();
    assert_eq!(completed.len(), 300);
    for record in completed.iter().take(20) {
        let journal = engine.journal(&record.id).await.unwrap();
        assert_eq!(journal.len(), 3, "{}", record.id);
    }
}

#[workflow]
async fn hold_nothing(_wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(n)
}

#[tokio::test]
async fn store_urls_name_sqlite_files_and_memory_and_refuse_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("by-url.db");
    let url = format!("sqlite:{}", path.display());
    let engine = Engine::builder().store_url(url).start().await.unwrap();
    assert_eq!(hold_nothing::run(&engine, 1).await.unwrap(), 1);
    assert!(path.exists());
    let engine = Engine::builder().store_url("memory").start().await.unwrap();
    assert_eq!(hold_nothing::run(&engine, 2).await.unwrap(), 2);
    let Err(error) = Engine::builder().store_url("mysql://localhost/db").start().await else { panic!("refused") };
    assert!(error.to_string().contains("use `sqlite:PATH`"), "{error}");
    let Err(error) = Engine::builder().store_url("sqlite:").start().await else { panic!("refused") };
    assert!(error.to_string().contains("needs a file path"), "{error}");
}

#[tokio::test]
async fn an_execution_stopped_by_a_store_error_is_taken_over_once_the_store_works_again() {
    // The 300 ms lease is the test clock's: a slow commit on a loaded machine does not outlast it.
    let _clock = workflows_runtime::testing::TestClock::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flaky.db");
    let gate = Arc::new(Gate::default());
    let engine = Engine::builder()
        .sqlite_with(&path, SqliteOptions::new().busy_timeout(Duration::from_millis(100)))
        .container(Container::new().with(gate.clone()))
        .lease_duration(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let handle = sum_then_hold::start_with(&engine, 1, RunOptions::new().id("flaky")).await.unwrap();
    eventually(Duration::from_secs(5), || async { (gate.arrived() == 1).then_some(()) }).await;

    // The held step finishes while another process holds the file: its completion cannot be written.
    let blocker = rusqlite::Connection::open(&path).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    gate.open();
    let error = handle.await.unwrap_err();
    assert!(matches!(error, RunError::Interrupted { .. }), "{error}");
    assert!(error.to_string().contains("database is locked"), "{error}");
    blocker.execute_batch("COMMIT").unwrap();

    // The engine gave the execution up and takes it over again: it finishes.
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        sum_then_hold::run_with(&engine, 1, RunOptions::new().id("flaky")),
    )
    .await
    .expect("taken over within the lease")
    .unwrap();
    assert_eq!(output, 3);
    assert_eq!(gate.arrived(), 2, "the step whose completion was lost ran again");
}

/// Holds the store file's write lock, as another process would, from inside a step.
struct Blocker {
    path: std::path::PathBuf,
    held: std::sync::Mutex<Option<rusqlite::Connection>>,
}

impl Blocker {
    fn lock(&self) {
        let conn = rusqlite::Connection::open(&self.path).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        *self.held.lock().unwrap() = Some(conn);
    }

    fn release(&self) {
        if let Some(conn) = self.held.lock().unwrap().take() {
            conn.execute_batch("COMMIT").unwrap();
        }
    }
}

/// Completes at once; the first time, it leaves the file locked by "another process", so that
/// its own completion cannot be committed.
#[step]
async fn locks_the_file(ctx: &StepContext) -> Result<u32, StepError> {
    let log = ctx.resolve::<Arc<Log>>()?;
    log.push("a1");
    if log.count("a1") == 1 {
        ctx.resolve::<Arc<Blocker>>()?.lock();
    }
    Ok(1)
}

#[step]
async fn after_a_pause(ctx: &StepContext) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Log>>()?.push("b1");
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(2)
}

#[step]
async fn depends(ctx: &StepContext, name: String) -> Result<u32, StepError> {
    ctx.resolve::<Arc<Log>>()?.push(name);
    Ok(3)
}

/// Two chains in parallel, polled in a fixed order (`b` first): `a1`'s completion is written
/// first, `b1`'s after its pause; neither can be committed.
#[workflow]
async fn two_chains_on_a_locked_file(wf: &Workflow, _input: ()) -> Result<u32, WorkflowError> {
    let (b, a) = futures_util::future::try_join(
        async {
            let b1 = after_a_pause(wf).await?;
            Ok::<_, StepError>(b1 + depends(wf, "b2".into()).await?)
        },
        async {
            let a1 = locks_the_file(wf).await?;
            Ok(a1 + depends(wf, "a2".into()).await?)
        },
    )
    .await?;
    Ok(a + b)
}

/// Every step waiting behind a write that failed sees the failure: `a2` (behind `a1`'s
/// completion) and `b2` (behind both completions) never start while those completions are
/// not durable, whichever of them hears of the failure first.
#[tokio::test]
async fn no_step_starts_behind_a_write_that_failed() {
    // The 300 ms lease is the test clock's: a slow commit on a loaded machine does not outlast it.
    let _clock = workflows_runtime::testing::TestClock::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("failed-write.db");
    let log = Arc::new(Log::default());
    let blocker = Arc::new(Blocker { path: path.clone(), held: Default::default() });
    let engine = Engine::builder()
        .sqlite_with(&path, SqliteOptions::new().busy_timeout(Duration::from_millis(100)))
        .container(Container::new().with(log.clone()).with(blocker.clone()))
        .lease_duration(Duration::from_millis(300))
        .start()
        .await
        .unwrap();
    let error = two_chains_on_a_locked_file::run_with(&engine, (), RunOptions::new().id("locked")).await.unwrap_err();
    assert!(matches!(error, RunError::Interrupted { .. }), "{error}");
    let lines = log.lines();
    assert!(!lines.iter().any(|l| l == "a2" || l == "b2"), "a step started behind a failed write: {lines:?}");

    // Once the file is free again, the execution is taken over and finishes; the steps whose
    // completions were lost ran again, the others once.
    blocker.release();
    let output = tokio::time::timeout(
        Duration::from_secs(10),
        two_chains_on_a_locked_file::run_with(&engine, (), RunOptions::new().id("locked")),
    )
    .await
    .expect("taken over within the lease")
    .unwrap();
    assert_eq!(output, 9);
    assert_eq!((log.count("a1"), log.count("b1")), (2, 2), "{:?}", log.lines());
    assert_eq!((log.count("a2"), log.count("b2")), (1, 1), "{:?}", log.lines());
}

/// Rows whose text columns are not valid UTF-8 (bit rot, a bad hand edit): each fails its own
/// execution, named, with its data left as stored; the engine starts, and everything else is
/// served.
#[tokio::test]
async fn rows_that_are_not_utf8_fail_their_own_execution_and_nothing_else() {
    for column in ["input", "fingerprint", "workflow"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("not-utf8.db");
        two_held_executions(&path).await;
        let conn = rusqlite::Connection::open(&path).unwrap();
        // 0xff never appears in UTF-8.
        let damage = format!("UPDATE executions SET {column} = CAST(X'7b22ff7d' AS TEXT) WHERE id = 'damaged'");
        assert_eq!(conn.execute(&damage, []).unwrap(), 1);
        let stored: Vec<u8> = conn
            .query_row(&format!("SELECT CAST({column} AS BLOB) FROM executions WHERE id = 'damaged'"), [], |r| r.get(0))
            .unwrap();

        let engine = Engine::builder()
            .sqlite(&path)
            .container(Container::new().with(Arc::new(Gate::opened())))
            .start()
            .await
            .unwrap_or_else(|e| panic!("{column}: the engine starts despite the damaged row: {e}"));
        assert_eq!(sum_then_hold::run_with(&engine, 20, RunOptions::new().id("healthy")).await.unwrap(), 22);

        // Listing serves every other execution; the check names the damaged one.
        let listed = engine.executions(&ExecutionQuery::default()).await.unwrap();
        assert_eq!(listed.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["healthy"], "{column}");
        let report = SqliteStore::open(&path).unwrap().check(false).unwrap();
        assert_eq!(report.damaged.len(), 1, "{column}");
        assert_eq!(report.damaged[0].id.as_str(), "damaged");
        assert!(report.damaged[0].problem.contains(&format!("its {column} is not valid UTF-8")), "{report:?}");
        let read = engine.execution(&"damaged".into()).await.unwrap_err();
        assert!(read.to_string().contains("execution damaged"), "{read}");

        // The damaged execution itself: failed if it could be claimed (its workflow is known),
        // and its data left exactly as stored.
        let (state, kept): (String, Vec<u8>) = conn
            .query_row(&format!("SELECT state, CAST({column} AS BLOB) FROM executions WHERE id = 'damaged'"), [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!(kept, stored, "{column}: the damaged value is left as stored");
        if column != "workflow" {
            assert_eq!(state, "failed", "{column}");
            let failure: String =
                conn.query_row("SELECT failure FROM executions WHERE id = 'damaged'", [], |r| r.get(0)).unwrap();
            assert!(failure.contains(&format!("execution damaged cannot be resumed: its {column} is not valid UTF-8")));
        }
    }
}

#[step]
async fn note(text: String) -> Result<String, StepError> {
    Ok(text)
}

/// Eighteen steps, each output carrying `marker` (to find the bytes on disk).
#[workflow]
async fn eighteen(wf: &Workflow, marker: String) -> Result<u32, WorkflowError> {
    for n in 0..18 {
        note(wf, format!("{marker}-{n:02}")).await?;
    }
    Ok(18)
}

/// Flips one bit of the byte `from_end` bytes before the end of the first occurrence of
/// `needle` in the file, once its write-ahead log is merged into it.
fn flip_on_disk(path: &std::path::Path, needle: &str, from_end: usize) {
    rusqlite::Connection::open(path).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_bytes()).expect("the bytes are in the file");
    bytes[at + needle.len() - 1 - from_end] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

/// Damage that SQLite cannot see — rows lost from a journal, a bit flipped inside a stored
/// value — is detected when the data is read (an error naming the execution and what is
/// damaged, nothing replayed from it) and by the integrity check, which names every damaged
/// execution; the rest is served.
#[tokio::test]
async fn silent_damage_is_detected_on_read_and_by_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rot.db");
    {
        let engine = Engine::builder().sqlite(&path).start().await.unwrap();
        for id in ["lost-rows", "flipped-entry", "flipped-input", "intact"] {
            eighteen::run_with(&engine, format!("marker-{id}"), RunOptions::new().id(id)).await.unwrap();
        }
        engine.shutdown().await;
        let clean = SqliteStore::open(&path).unwrap().check(true).unwrap();
        assert!(clean.is_clean(), "{clean:?}");
        assert_eq!((clean.executions, clean.journal_entries), (4, 72));
    }
    // 13 of the 18 entries vanish (as if a page were lost); SQLite sees nothing wrong.
    let conn = rusqlite::Connection::open(&path).unwrap();
    assert_eq!(conn.execute("DELETE FROM journal WHERE execution_id = 'lost-rows' AND idx >= 5", []).unwrap(), 13);
    drop(conn);
    // Bits flipped inside values, on disk.
    // An output's last digit (valid JSON still), and the input's last letter: only the input
    // ends in `input"` (the outputs end in `input-NN"`).
    flip_on_disk(&path, "marker-flipped-entry-07", 0);
    flip_on_disk(&path, "marker-flipped-input\"", 1);

    let store = reader(&path).await;
    let lost = store.journal(&"lost-rows".into()).await.unwrap_err();
    assert!(lost.to_string().contains("5 entries are stored where 18 were written"), "{lost}");
    let flipped = store.journal(&"flipped-entry".into()).await.unwrap_err();
    assert!(flipped.to_string().contains("journal entry 7 (step `note#8`)"), "{flipped}");
    assert!(flipped.to_string().contains("does not match its checksum"), "{flipped}");
    let input = store.execution(&"flipped-input".into()).await.unwrap_err();
    assert!(input.to_string().contains("execution flipped-input"), "{input}");
    assert!(input.to_string().contains("does not match its checksum"), "{input}");
    assert_eq!(store.journal(&"intact".into()).await.unwrap().len(), 18);

    let report = SqliteStore::open(&path).unwrap().check(false).unwrap();
    assert!(report.store_problems.is_empty(), "SQLite sees nothing: {report:?}");
    let mut damaged: Vec<&str> = report.damaged.iter().map(|d| d.id.as_str()).collect();
    damaged.sort_unstable();
    assert_eq!(damaged, ["flipped-entry", "flipped-input", "lost-rows"], "{report:?}");
    assert_eq!(report.executions, 4);
}

#[tokio::test]
async fn a_client_only_engine_leaves_what_it_starts_to_the_workers() {
    let clock = workflows_runtime::testing::TestClock::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("fleet.db")).unwrap());
    let gate = Arc::new(Gate::opened());
    // A worker polls every half lease: 200 ms of the test clock.
    let engine = || {
        Engine::builder()
            .store(store.clone())
            .container(Container::new().with(gate.clone()))
            .lease_duration(Duration::from_millis(400))
    };
    let client = engine().client_only().start().await.unwrap();
    let handle = sum_then_hold::start_with(&client, 5, RunOptions::new().id("queued-for-workers")).await.unwrap();
    let record = client.execution(handle.id()).await.unwrap().unwrap();
    assert_eq!((record.state, record.owner), (ExecutionState::Running, None), "nobody holds it");
    clock.advance(Duration::from_secs(3600)).await;
    assert_eq!(gate.arrived(), 0, "the client runs nothing");

    let _worker = engine().start().await.unwrap();
    let output = tokio::time::timeout(Duration::from_secs(30), handle.result()).await.expect("a worker ran it");
    assert_eq!(output.unwrap(), 7);
    assert_eq!(gate.arrived(), 1);
}
