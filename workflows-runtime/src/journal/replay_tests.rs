//! Replay of journals that other code wrote: an older build's journal, forged in the store,
//! meets today's workflow. Changed inputs and calls the body no longer makes are
//! non-determinism: the execution is blocked (never failed, nothing compensated), naming the
//! key and the code change; an undecodable stored output fails that execution only; an
//! unchanged journal resumes where it was.
//!
//! In the crate: forging a journal takes the store contract, which is not public.

use std::sync::Arc;

use crate::prelude::*;
use crate::store::Store;
use crate::store::conformance::fixture;
use crate::{CallKey, ExecutionState, FailureKind, JournalEntry, JournalEvent, MemoryStore, Timestamp};

use super::input_hash;

#[step]
async fn echo(n: u32) -> Result<u32, StepError> {
    Ok(n)
}

#[workflow]
async fn echo_twice(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    let a = echo(wf, n).await?;
    let b = echo(wf, a + 1).await?;
    Ok(b)
}

/// Writes an execution of `echo_twice` as an older build with other code would have left it.
async fn forge(store: &MemoryStore, id: &str, fingerprint: &'static str, events: Vec<JournalEvent>) {
    forge_of(store, "echo_twice", id, fingerprint, events).await;
}

/// Writes an execution of `workflow` with the journal `events`, owned by nobody.
async fn forge_of(
    store: &MemoryStore,
    workflow: &'static str,
    id: &str,
    fingerprint: &'static str,
    events: Vec<JournalEvent>,
) {
    let now = Timestamp::now();
    let mut new = fixture::new_execution(id, "old-build", now);
    (new.workflow, new.fingerprint, new.input) = (workflow, fingerprint, fixture::json(5u32));
    store.create_execution(new).await.unwrap();
    let entries = events.into_iter().enumerate().map(|(i, event)| JournalEntry { index: i as u64, at: now, event });
    store.append(fixture::write(id, 1, entries, None)).await.unwrap();
    store.release("old-build").await.unwrap();
}

fn completed(seq: u32, name: &'static str, input_hash: u64, output: &str) -> [JournalEvent; 1] {
    [JournalEvent::StepCompleted {
        seq,
        key: CallKey::new(name, seq + 1),
        attempt: 1,
        input_hash,
        started_at: Timestamp::now(),
        output: serde_json::value::RawValue::from_string(output.into()).unwrap(),
        compensation: None,
        by: None,
    }]
}

#[tokio::test]
async fn a_changed_input_is_detected_and_blamed_on_the_code_change() {
    let store = Arc::new(MemoryStore::new());
    let input_hash = input_hash(&(99u32,));
    forge(&store, "changed", "0123456789abcdef", completed(0, "echo", input_hash, "99").into()).await;

    let engine = Engine::builder().store(store.clone()).start().await.unwrap();
    let error = echo_twice::run_with(&engine, 5, RunOptions::new().id("changed")).await.unwrap_err();
    assert!(matches!(error, RunError::Blocked { .. }), "{error}");
    let failure = error.failure().expect("a failure");
    assert_eq!(failure.kind, FailureKind::NonDeterminism);
    assert!(
        failure.message.contains("step `echo#1` (call #0) is called with a different input"),
        "{}",
        failure.message
    );
    let current = echo_twice::definition().fingerprint();
    assert!(
        failure.message.contains(&format!(
            "code changed since the execution started (fingerprint 0123456789abcdef then, {current} now)"
        )),
        "{}",
        failure.message
    );
    assert_eq!(failure.key.as_deref(), Some("echo#1"));
}

#[tokio::test]
async fn an_unchanged_journal_resumes_from_where_it_was() {
    let store = Arc::new(MemoryStore::new());
    let fingerprint = echo_twice::definition().fingerprint();
    let input_hash = input_hash(&(5u32,));
    forge(&store, "same", fingerprint, completed(0, "echo", input_hash, "5").into()).await;

    let engine = Engine::builder().store(store.clone()).start().await.unwrap();
    assert_eq!(echo_twice::run_with(&engine, 5, RunOptions::new().id("same")).await.unwrap(), 6);
    let journal = store.journal(&"same".into()).await.unwrap();
    assert_eq!(journal.len(), 2, "one replayed step, one new: {journal:?}");
}

#[tokio::test]
async fn a_journal_step_the_body_never_reaches_is_non_determinism() {
    let store = Arc::new(MemoryStore::new());
    let fingerprint = echo_twice::definition().fingerprint();
    let mut events: Vec<JournalEvent> = completed(0, "echo", input_hash(&(5u32,)), "5").into();
    events.extend(completed(1, "echo", input_hash(&(6u32,)), "6"));
    events.extend(completed(2, "echo", 0, "7"));
    forge(&store, "extra", fingerprint, events).await;

    let engine = Engine::builder().store(store.clone()).start().await.unwrap();
    let error = echo_twice::run_with(&engine, 5, RunOptions::new().id("extra")).await.unwrap_err();
    let failure = error.failure().expect("a failure");
    assert_eq!(failure.kind, FailureKind::NonDeterminism);
    assert!(failure.message.contains("finished without calling step `echo#3`"), "{}", failure.message);
}

#[workflow]
async fn echo_once(wf: &Workflow, n: u32) -> Result<u32, WorkflowError> {
    Ok(echo(wf, n).await?)
}

/// A crash left the journal with `echo#2` under way (started, no outcome); the new code
/// no longer calls it. The execution must not complete as if the step never began.
#[tokio::test]
async fn a_step_under_way_that_the_body_no_longer_calls_is_non_determinism() {
    let store = Arc::new(MemoryStore::new());
    let fingerprint = echo_once::definition().fingerprint();
    let mut events: Vec<JournalEvent> = completed(0, "echo", input_hash(&(5u32,)), "5").into();
    events.push(JournalEvent::StepStarted {
        seq: 1,
        key: CallKey::new("echo", 2),
        attempt: 1,
        input_hash: input_hash(&(6u32,)),
        by: None,
    });
    forge_of(&store, "echo_once", "in-flight", fingerprint, events).await;

    let engine = Engine::builder().store(store.clone()).start().await.unwrap();
    let error = echo_once::run_with(&engine, 5, RunOptions::new().id("in-flight")).await.unwrap_err();
    let failure = error.failure().expect("a failure");
    assert_eq!(failure.kind, FailureKind::NonDeterminism, "{error}");
    assert!(failure.message.contains("finished without calling step `echo#2` (call #1)"), "{}", failure.message);
    let record = store.execution(&"in-flight".into()).await.unwrap().unwrap();
    assert_eq!(record.state, ExecutionState::Blocked);
    assert!(record.result.is_none());
    assert_eq!((record.owner, record.lease_until), (None, None), "its lease is given up");
}

#[tokio::test]
async fn undecodable_stored_output_fails_that_execution_only() {
    let store = Arc::new(MemoryStore::new());
    let fingerprint = echo_twice::definition().fingerprint();
    let input_hash = input_hash(&(5u32,));
    forge(&store, "corrupt", fingerprint, completed(0, "echo", input_hash, "\"not a number\"").into()).await;

    let engine = Engine::builder().store(store.clone()).start().await.unwrap();
    let error = echo_twice::run_with(&engine, 5, RunOptions::new().id("corrupt")).await.unwrap_err();
    let failure = error.failure().expect("a failure");
    assert_eq!(failure.kind, FailureKind::Decode);
    assert!(
        failure.message.contains("execution corrupt") && failure.message.contains("`echo#1`"),
        "{}",
        failure.message
    );
    // The engine itself is fine.
    assert_eq!(echo_twice::run(&engine, 1).await.unwrap(), 2);
}
