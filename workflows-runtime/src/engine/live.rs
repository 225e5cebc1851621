//! A live execution: the in-memory state an engine keeps while it drives one execution.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::value::RawValue;

use super::EngineInner;
use crate::container::Container;
use crate::error::{Failure, FailureKind};
use crate::execution::{ExecutionId, ExecutionState};
use crate::journal::replay::{Mismatch, Progress};
use crate::journal::{JournalEntry, JournalEvent};
use crate::registry::WorkflowDefinition;
use crate::store::{AppendBatch, JournalEntries, StoreError, Transition, WriteAck, WriteMode};
use crate::time::Timestamp;

/// Why the engine stops driving an execution's body before it returns.
pub(crate) enum Abort {
    /// The execution fails without compensation.
    Fail(Failure),
    /// A store write failed: the execution stays as stored; another start resumes it.
    Store(StoreError),
}

pub(crate) struct LiveExecution {
    pub id: ExecutionId,
    pub definition: &'static WorkflowDefinition,
    pub engine: Arc<EngineInner>,
    /// The per-run container, consulted before the engine's.
    pub container: Option<Container>,
    /// The lease epoch every write carries.
    pub epoch: u64,
    /// The workflow fingerprint recorded when the execution started.
    pub started_fingerprint: Cow<'static, str>,
    /// Set with `state.abort`, so the driver can check it on every poll without the lock.
    aborted: AtomicBool,
    state: Mutex<State>,
}

struct State {
    progress: Progress,
    abort: Option<Abort>,
}

impl LiveExecution {
    pub fn new(
        id: ExecutionId,
        definition: &'static WorkflowDefinition,
        engine: Arc<EngineInner>,
        container: Option<Container>,
        epoch: u64,
        started_fingerprint: Cow<'static, str>,
        progress: Progress,
    ) -> Self {
        Self {
            id,
            definition,
            engine,
            container,
            epoch,
            started_fingerprint,
            aborted: AtomicBool::new(false),
            state: Mutex::new(State { progress, abort: None }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only touched in short, panic-free sections.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the progress, under the execution's lock (never held across an await).
    pub fn with_progress<R>(&self, f: impl FnOnce(&mut Progress) -> R) -> R {
        f(&mut self.lock().progress)
    }

    /// Stops the body at its next poll. The first reason wins.
    pub fn abort(&self, abort: Abort) {
        let mut state = self.lock();
        if state.abort.is_none() {
            state.abort = Some(abort);
            self.aborted.store(true, Ordering::Release);
        }
    }

    /// The abort reason, if the execution was aborted since the last call.
    pub fn take_abort(&self) -> Option<Abort> {
        if !self.aborted.load(Ordering::Acquire) {
            return None;
        }
        let mut state = self.lock();
        self.aborted.store(false, Ordering::Release);
        state.abort.take()
    }

    /// Aborts with a non-determinism failure that explains whether the code changed.
    pub fn abort_mismatch(&self, mismatch: &Mismatch) {
        self.abort(Abort::Fail(self.non_determinism(mismatch)));
    }

    pub fn non_determinism(&self, mismatch: &Mismatch) -> Failure {
        let current = self.definition.fingerprint();
        let cause = if self.started_fingerprint == current {
            format!(
                "the workflow's code is unchanged since the execution started (fingerprint {current}), so its body \
                 is not deterministic: keep clocks, random values and I/O inside steps"
            )
        } else {
            format!(
                "the workflow's code changed since the execution started (fingerprint {} then, {current} now): \
                 keep the old step sequence for executions started before the change, or let them finish first",
                self.started_fingerprint
            )
        };
        let mut failure = Failure::new(
            FailureKind::NonDeterminism,
            format!(
                "non-determinism in execution {} of workflow `{}`: {}; {cause}",
                self.id,
                self.definition.name(),
                mismatch.describe()
            ),
        );
        let key = mismatch.called.as_ref().map(|(k, _)| k).or(mismatch.recorded.as_ref().map(|(k, _)| k));
        if let Some(key) = key {
            failure.step = Some(key.name().to_owned());
            failure.key = Some(key.to_string());
        }
        failure
    }

    /// Aborts because stored data did not decode.
    pub fn abort_decode(&self, what: String, error: &serde_json::Error) {
        let message = format!("execution {} of workflow `{}`: {what}: {error}", self.id, self.definition.name());
        self.abort(Abort::Fail(Failure::new(FailureKind::Decode, message)));
    }

    /// Appends events (and a state change) to the journal, in order, and updates `progress`
    /// with `update` under the same lock, so the journal order and the in-memory order agree.
    pub fn append(
        &self,
        events: impl IntoIterator<Item = JournalEvent>,
        transition: Option<Transition>,
        mode: WriteMode,
        update: impl FnOnce(&mut Progress),
    ) -> WriteAck {
        let at = Timestamp::now();
        let mut state = self.lock();
        let mut entries = JournalEntries::new();
        for event in events {
            entries.push(JournalEntry { index: state.progress.take_index(), at, event });
        }
        update(&mut state.progress);
        // Submitted under the lock: the store applies one execution's writes in call order.
        self.engine.store.append(AppendBatch {
            execution: self.id.clone(),
            epoch: self.epoch,
            entries,
            transition,
            mode,
        })
    }

    /// Writes a state change with no journal entry.
    pub fn transition(
        &self,
        state: ExecutionState,
        result: Option<Box<RawValue>>,
        failure: Option<Failure>,
    ) -> WriteAck {
        self.append([], Some(Transition { state, result, failure }), WriteMode::Durable, |_| {})
    }
}
