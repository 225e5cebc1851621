//! Observability: the execution event stream (`Engine::subscribe`). The tracing spans are
//! tested in `tracing_spans.rs`.

use workflows_runtime::prelude::*;
use workflows_runtime::{EventKind, ExecutionEvent, ExecutionState};

mod observed;

use observed::observed_saga;

/// Events until the execution finishes, as `name key` lines.
async fn until_finished(events: &mut workflows_runtime::Subscription) -> Vec<ExecutionEvent> {
    let mut seen = Vec::new();
    loop {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv())
            .await
            .expect("events keep coming")
            .expect("no event is missed");
        let finished = matches!(event.kind, EventKind::Finished { .. });
        seen.push(event);
        if finished {
            return seen;
        }
    }
}

fn describe(event: &ExecutionEvent) -> String {
    let key = match &event.kind {
        EventKind::StepStarted { key, .. }
        | EventKind::StepCompleted { key, .. }
        | EventKind::StepFailed { key, .. }
        | EventKind::CompensationStarted { key }
        | EventKind::CompensationCompleted { key } => format!(" {key}"),
        EventKind::Finished { state, .. } => format!(" {state}"),
        _ => String::new(),
    };
    format!("{}{key}", event.kind.name())
}

#[tokio::test]
async fn a_compensating_saga_publishes_its_events_in_order() {
    let engine = Engine::builder().memory().start().await.unwrap();
    let mut events = engine.subscribe_to(&ExecutionId::from("saga-1"));
    let mut everything = engine.subscribe();
    // Another execution at the same time: the per-execution subscription does not see it.
    let other = observed_saga::start_with(&engine, 3, RunOptions::new().id("other")).await.unwrap();
    let error = observed_saga::run_with(&engine, 0, RunOptions::new().id("saga-1")).await.unwrap_err();
    assert!(matches!(error, RunError::Compensated { .. }), "{error}");
    assert_eq!(other.result().await.unwrap(), 30);

    let seen = until_finished(&mut events).await;
    assert!(seen.iter().all(|e| e.execution.as_str() == "saga-1" && e.workflow == "observed_saga"));
    let names: Vec<String> = seen.iter().map(describe).collect();
    assert_eq!(
        names,
        [
            "started",
            "step_started book#1",
            "step_completed book#1",
            "step_started pay#1",
            "step_completed pay#1",
            "step_started ship#1",
            "step_failed ship#1",
            "compensating",
            "compensation_started pay#1",
            "compensation_completed pay#1",
            "compensation_started book#1",
            "compensation_completed book#1",
            "finished compensated",
        ]
    );
    assert!(seen.windows(2).all(|w| w[0].at <= w[1].at), "times never go back");
    match &seen[2].kind {
        EventKind::StepCompleted { attempt, output, .. } => {
            assert_eq!(*attempt, 1);
            assert_eq!(output.get(), "0");
        }
        other => panic!("{other:?}"),
    }
    match &seen[6].kind {
        EventKind::StepFailed { error, retry_at, .. } => {
            assert_eq!(error.message, "nothing to ship");
            assert!(retry_at.is_none());
        }
        other => panic!("{other:?}"),
    }

    // The JSON shape scripts see.
    let json = serde_json::to_value(&seen[2]).unwrap();
    assert_eq!(json["event"], "step_completed");
    assert_eq!(json["execution"], "saga-1");
    assert_eq!(json["key"], "book#1");
    assert_eq!(json["output"], 0);
    let finished = serde_json::to_value(seen.last().unwrap()).unwrap();
    assert_eq!(finished["state"], "compensated");
    assert_eq!(finished["failure"]["message"], "nothing to ship");

    // The subscription to everything saw both executions.
    let mut executions = std::collections::BTreeSet::new();
    while let Some(Ok(event)) = everything.try_recv() {
        executions.insert(event.execution.to_string());
    }
    assert_eq!(executions.into_iter().collect::<Vec<_>>(), ["other", "saga-1"]);
}

#[tokio::test]
async fn an_engine_without_subscribers_publishes_nothing_and_late_subscribers_see_new_events() {
    let engine = Engine::builder().memory().start().await.unwrap();
    assert_eq!(observed_saga::run(&engine, 1).await.unwrap(), 10);
    let mut events = engine.subscribe();
    assert!(events.try_recv().is_none(), "nothing was buffered for subscribers that did not exist");
    observed_saga::run_with(&engine, 2, RunOptions::new().id("late")).await.unwrap();
    let seen = until_finished(&mut events).await;
    assert_eq!(seen.first().map(describe).as_deref(), Some("started"));
    assert!(matches!(seen.last().unwrap().kind, EventKind::Finished { state: ExecutionState::Completed, .. }));
}
