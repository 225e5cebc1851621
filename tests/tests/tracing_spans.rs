//! The tracing spans of executions, steps and compensations, seen by a subscriber.
//!
//! Alone in its test binary: `tracing` caches per call site whether anyone listens, and a test
//! running in parallel that reaches the call sites first, with no subscriber, could race with
//! the thread-local subscriber installed here.

use std::sync::{Arc, Mutex};

use workflows_runtime::prelude::*;

mod observed;

use observed::observed_saga;

/// Records the spans created and their fields.
#[derive(Default, Clone)]
struct Spans(Arc<Mutex<Vec<(String, String)>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push_str(&format!("{}={:?} ", field.name(), value));
    }
}

impl tracing::Subscriber for Spans {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        let mut fields = Fields(String::new());
        span.record(&mut fields);
        let mut spans = self.0.lock().unwrap();
        spans.push((span.metadata().name().to_owned(), fields.0.trim_end().replace('"', "")));
        tracing::span::Id::from_u64(spans.len() as u64)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, _: &tracing::Event<'_>) {}
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[tokio::test]
async fn executions_steps_and_compensations_have_tracing_spans() {
    let spans = Spans::default();
    // Current-thread runtime: the engine's tasks run on this thread, under this subscriber.
    let _guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(spans.clone()));
    let engine = Engine::builder().memory().start().await.unwrap();
    observed_saga::run_with(&engine, 0, RunOptions::new().id("traced")).await.unwrap_err();
    let recorded = spans.0.lock().unwrap().clone();
    let find = |name: &str, fields: &str| {
        assert!(recorded.iter().any(|(n, f)| n == name && f == fields), "span {name} {{{fields}}} in {recorded:#?}");
    };
    find("execution", "execution=traced workflow=observed_saga");
    find("step", "step=book key=book#1 attempt=1");
    find("step", "step=ship key=ship#1 attempt=1");
    find("compensation", "key=pay#1 attempt=1");
}
