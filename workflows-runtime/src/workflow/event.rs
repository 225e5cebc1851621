//! Events: `wf.wait_for_event::<T>(name)`, delivered with `engine.send_event(..)`. How the wait
//! runs is in `engine/event.rs`.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use serde::de::DeserializeOwned;

use super::context::Workflow;
use crate::engine::event;
use crate::engine::live::CallGuard;
use crate::journal::CallKey;

/// Why a wait for an event ended without a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// No event arrived within the wait's timeout.
    #[error("no `{event}` event arrived within {}", humantime::format_duration(*timeout))]
    TimedOut {
        /// The event's name.
        event: String,
        /// The wait's timeout.
        timeout: Duration,
    },
    /// The event arrived, but its payload does not decode as the expected type.
    #[error("the `{event}` event's payload does not decode as `{expected}`: {detail}")]
    Payload {
        /// The event's name.
        event: String,
        /// The expected type.
        expected: &'static str,
        /// What serde said.
        detail: String,
    },
}

impl Workflow {
    /// Waits for the event `name` sent to this execution with
    /// [`Engine::send_event`](crate::Engine::send_event), and returns its payload. An event
    /// sent before the workflow waits for it is kept: the n-th wait for `name` gets the n-th
    /// event of that name. While the workflow only waits, it is suspended.
    ///
    /// ```no_run
    /// # use workflows_runtime::prelude::*;
    /// # use std::time::Duration;
    /// # #[derive(Serialize, Deserialize)] struct Paid { amount: u64 }
    /// #[workflow]
    /// async fn checkout(wf: &Workflow, order: u64) -> Result<u64, WorkflowError> {
    ///     let paid: Paid = wf.wait_for_event("payment").timeout(Duration::from_secs(3600)).await?;
    ///     Ok(paid.amount)
    /// }
    /// ```
    pub fn wait_for_event<T: DeserializeOwned + Send + 'static>(&self, name: &str) -> EventWait<'_, T> {
        // The key is assigned at the call, like a step's.
        let (seq, key) = self.live.with_progress(|p| p.next_call(format!("@event:{name}")));
        let guard = CallGuard::new(&self.live, seq);
        EventWait { wf: self, seq, key, event: name.to_owned(), timeout: None, guard, _payload: PhantomData }
    }
}

/// A wait for an event; `.await` it, optionally after setting a [`timeout`](EventWait::timeout).
#[must_use = "a wait does nothing unless awaited"]
pub struct EventWait<'a, T> {
    wf: &'a Workflow,
    seq: u32,
    key: CallKey,
    event: String,
    timeout: Option<Duration>,
    /// Forgets the wait's journaled outcome if it is dropped before taking it.
    guard: CallGuard<'a>,
    _payload: PhantomData<fn() -> T>,
}

impl<T> EventWait<'_, T> {
    /// Gives up after `timeout` (journaled as a deadline: a restart does not extend it) with
    /// [`WaitError::TimedOut`]; with `?` in the workflow body, the workflow fails and
    /// compensates.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<'a, T: DeserializeOwned + Send + 'static> IntoFuture for EventWait<'a, T> {
    type Output = Result<T, WaitError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<T, WaitError>> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

impl<T: DeserializeOwned + Send + 'static> EventWait<'_, T> {
    async fn wait(self) -> Result<T, WaitError> {
        let EventWait { wf, seq, key, event, timeout, guard, .. } = self;
        match event::wait(&wf.live, guard, seq, key, &event, timeout).await {
            Some(payload) => serde_json::from_str::<T>(payload.get()).map_err(|e| WaitError::Payload {
                event,
                expected: std::any::type_name::<T>(),
                detail: e.to_string(),
            }),
            None => Err(WaitError::TimedOut { event, timeout: timeout.unwrap_or_default() }),
        }
    }
}
