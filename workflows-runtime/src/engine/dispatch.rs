//! Events the application emits, and their dispatch to the workflows that start on them
//! (`#[workflow(on_event = "...")]`): each worker engine reads the events not dispatched yet,
//! starts each subscriber's execution under the id `<workflow>@<event id>` (so that every
//! process starting it creates one execution, and a dispatch interrupted by a crash is done
//! again without a second run), then marks the events dispatched.
//!
//! A subscriber whose execution cannot be started for an event (another execution holds its
//! id with another input, its payload does not decode as the subscriber's input…) fails for
//! that (event, subscriber) alone: the failure is recorded as an undelivered event, tried again
//! with a backoff, then parked for an operator (`workflows events --failed`, `retry`, `drop`),
//! while the other subscribers and the later events go on. Only a store that fails stops a
//! pass, which the next one does again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use super::core::EngineInner;
use super::engine::Engine;
use super::options::RunOptions;
use crate::error::RunError;
use crate::registry::{Registry, WorkflowDefinition};
use crate::store::{NewEvent, Undelivered};
use crate::time::Timestamp;

/// The workflows that start on each event name.
pub(crate) type Subscribers = HashMap<&'static str, Vec<&'static WorkflowDefinition>>;

/// The registry's subscribers, by event name.
pub(crate) fn registered() -> Subscribers {
    let mut subscribers = Subscribers::new();
    for definition in Registry::checked().workflows() {
        if let Some(event) = definition.on_event() {
            subscribers.entry(event).or_default().push(definition);
        }
    }
    subscribers
}

/// How many events one read takes.
const BATCH: usize = 100;

/// How often a dispatcher looks for events recorded by other processes it was not told of (and
/// for undelivered events due to be tried again).
const POLL: Duration = Duration::from_secs(1);

/// How many times a subscriber's execution is tried for an event before the event is parked
/// for it, and the pause before the second try (four times longer before each next one: 1 s,
/// 4 s, 16 s, 64 s).
pub(crate) const DELIVERY_TRIES: u32 = 5;
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// The input of a subscriber's execution, as [`crate::Event`] reads it.
#[derive(Serialize)]
struct EventInput<'a> {
    id: &'a str,
    name: &'a str,
    payload: &'a RawValue,
    emitted_at: Timestamp,
}

/// Dispatches the events of a worker engine until it closes: at once when this engine (or,
/// on PostgreSQL, another process) records one, and every [`POLL`].
pub(super) fn spawn(inner: &Arc<EngineInner>) {
    if inner.subscribers.is_empty() {
        return;
    }
    let weak = Arc::downgrade(inner);
    let emitted = inner.events_emitted.clone();
    tokio::spawn(async move {
        loop {
            let wake = emitted.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            let poll = {
                let Some(inner) = weak.upgrade() else { return };
                if inner.is_closed() || inner.is_draining() {
                    return;
                }
                if let Err(error) = inner.dispatch_events().await {
                    tracing::warn!(%error, "could not dispatch events; trying again");
                }
                if let Err(error) = inner.retry_undelivered(Timestamp::now()).await {
                    tracing::warn!(%error, "could not try the undelivered events again");
                }
                inner.poll(POLL)
            };
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    });
}

impl EngineInner {
    /// Starts the subscribers of every event not dispatched yet, and marks the events.
    pub(crate) async fn dispatch_events(self: &Arc<Self>) -> Result<usize, RunError> {
        let mut dispatched = 0;
        loop {
            let events = self.store.undispatched_events(BATCH).await?;
            for event in &events {
                self.dispatch(event).await?;
            }
            let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
            if !ids.is_empty() {
                self.store.mark_dispatched(&ids).await?;
            }
            dispatched += ids.len();
            if events.len() < BATCH {
                return Ok(dispatched);
            }
        }
    }

    async fn dispatch(self: &Arc<Self>, event: &NewEvent) -> Result<(), RunError> {
        let Some(subscribers) = self.subscribers.get(event.name.as_str()) else { return Ok(()) };
        for subscriber in subscribers {
            if let Err(error) = self.start_subscriber(subscriber, event).await {
                self.not_delivered(event, subscriber.name(), None, error).await?;
            }
        }
        Ok(())
    }

    /// Starts `subscriber`'s execution for `event` (or finds it started).
    async fn start_subscriber(
        self: &Arc<Self>,
        subscriber: &'static WorkflowDefinition,
        event: &NewEvent,
    ) -> Result<(), RunError> {
        let input = EventInput { id: &event.id, name: &event.name, payload: &event.payload, emitted_at: event.at };
        let id = crate::emitted::handling_id(subscriber.name(), &event.id);
        let engine = Engine { inner: self.clone() };
        engine.start_workflow_by_name(subscriber.name(), &input, RunOptions::new().id(id)).await.map(drop)
    }

    /// Records that `event` was not delivered to `subscriber` (`earlier`: its record from the
    /// tries before): to be tried again after a backoff, or parked — at once for a payload that
    /// does not decode as the subscriber's input (it never will), after [`DELIVERY_TRIES`]
    /// otherwise. A store that fails is the pass's error, not the subscriber's.
    async fn not_delivered(
        &self,
        event: &NewEvent,
        subscriber: &str,
        earlier: Option<&Undelivered>,
        error: RunError,
    ) -> Result<(), RunError> {
        if matches!(error, RunError::Store(_) | RunError::ShutDown) {
            return Err(error);
        }
        let now = Timestamp::now();
        let attempts = earlier.map_or(0, |u| u.attempts) + 1;
        let retry_at = match error {
            RunError::InvalidInput { .. } => None,
            _ if attempts >= DELIVERY_TRIES => None,
            _ => Some(now + FIRST_RETRY * 4u32.pow(attempts - 1)),
        };
        let (level_error, parked) = (error.to_string(), retry_at.is_none());
        if parked {
            tracing::error!(event = %event.id, name = %event.name, subscriber, attempts, error = %level_error,
                "an event could not be delivered to a subscriber: parked (`workflows events --failed`)");
        } else {
            tracing::warn!(event = %event.id, name = %event.name, subscriber, attempts, error = %level_error,
                "an event could not be delivered to a subscriber: trying again later");
        }
        let undelivered = Undelivered {
            event: event.id.clone(),
            name: event.name.clone(),
            payload: event.payload.get().to_owned(),
            emitted_at: event.at,
            subscriber: subscriber.to_owned(),
            attempts,
            error: level_error,
            first_failed_at: earlier.map_or(now, |u| u.first_failed_at),
            last_failed_at: now,
            retry_at,
        };
        self.store.record_undelivered(&undelivered).await?;
        Ok(())
    }

    /// Tries again the undelivered events due by `now` whose subscriber this engine has.
    pub(crate) async fn retry_undelivered(self: &Arc<Self>, now: Timestamp) -> Result<usize, RunError> {
        let due = self.store.undelivered(Some(now), BATCH).await?;
        let mut delivered = 0;
        for undelivered in &due {
            let subscriber = self
                .subscribers
                .get(undelivered.name.as_str())
                .and_then(|subscribers| subscribers.iter().find(|s| s.name() == undelivered.subscriber).copied());
            // Another engine's subscriber (another version of the application): left to it.
            let Some(subscriber) = subscriber else { continue };
            let payload = RawValue::from_string(undelivered.payload.clone()).map_err(|e| {
                RunError::Store(crate::StoreError::Corrupt {
                    execution: crate::ExecutionId::from(undelivered.event.as_str()),
                    what: "an undelivered event's payload".into(),
                    detail: e.to_string(),
                })
            })?;
            let event = NewEvent {
                id: undelivered.event.clone(),
                name: undelivered.name.clone(),
                payload,
                at: undelivered.emitted_at,
            };
            match self.start_subscriber(subscriber, &event).await {
                Ok(()) => {
                    self.store.forget_undelivered(&undelivered.event, Some(&undelivered.subscriber)).await?;
                    tracing::info!(event = %event.id, subscriber = subscriber.name(), "an undelivered event was delivered");
                    delivered += 1;
                }
                Err(error) => self.not_delivered(&event, subscriber.name(), Some(undelivered), error).await?,
            }
        }
        Ok(delivered)
    }
}

impl Engine {
    /// Records event `name` with `payload` durably (returning once it is), and returns its id
    /// (a UUIDv7). Every workflow that starts on it (`#[workflow(on_event = "...")]`) runs
    /// once for it, in whichever worker dispatches it.
    pub async fn emit(&self, name: &str, payload: impl Serialize) -> Result<String, RunError> {
        let id = uuid::Uuid::now_v7().to_string();
        self.emit_with_id(&id, name, payload).await?;
        Ok(id)
    }

    /// [`emit`](Self::emit) under an id of the caller's (a message id, an order number and what
    /// happened to it): an event with this id recorded before is not recorded again (returns
    /// false), so that a retried emit does not run the subscribers twice.
    pub async fn emit_with_id(&self, id: &str, name: &str, payload: impl Serialize) -> Result<bool, RunError> {
        let payload = crate::journal::json::to_raw(&payload)
            .map_err(|source| RunError::Input { workflow: format!("event `{name}`"), source })?;
        let event = NewEvent { id: id.to_owned(), name: name.to_owned(), payload, at: Timestamp::now() };
        let recorded = self.inner.store.record_event(event).await?;
        self.inner.events_emitted.notify_one();
        Ok(recorded)
    }

    /// [`emit`](Self::emit) inside the application's own PostgreSQL transaction `transaction`
    /// (a transactional outbox): the event exists if and only if the transaction commits, with
    /// the business writes it made. The transaction must be on the database of this engine's
    /// PostgreSQL store (its schema is named here); the workers are told of the event when it
    /// commits. Returns the event's id. An engine on another store refuses.
    #[cfg(feature = "postgres")]
    pub async fn emit_in_transaction(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        name: &str,
        payload: impl Serialize,
    ) -> Result<String, RunError> {
        let Some(schema) = self.inner.store.postgres_schema() else {
            return Err(RunError::Store(crate::StoreError::Unavailable(format!(
                "emit_in_transaction writes to a PostgreSQL store's tables, and this engine's store is {}: use `emit`",
                self.inner.store.describe()
            ))));
        };
        let payload = crate::journal::json::to_raw(&payload)
            .map_err(|source| RunError::Input { workflow: format!("event `{name}`"), source })?;
        let id = uuid::Uuid::now_v7().to_string();
        // The schema's name is a checked identifier (see `PostgresOptions::schema`).
        let sql = format!(
            "WITH recorded AS (
                 INSERT INTO {schema}.events (id, name, payload, emitted_at) VALUES ($1, $2, $3, $4) RETURNING 1
             )
             SELECT pg_notify('{schema}', 'work') FROM recorded"
        );
        transaction.execute(&sql, &[&id, &name, &payload.get(), &Timestamp::now().as_micros()]).await.map_err(|e| {
            RunError::Store(crate::StoreError::Backend {
                context: format!("cannot record event `{name}` in the application's transaction"),
                source: Box::new(e),
            })
        })?;
        Ok(id)
    }

    /// The events a subscriber's execution could not be started for, the latest failure
    /// first (at most `limit`): those still tried again (with their next try), and those
    /// parked, which wait for [`retry_undelivered`](Self::retry_undelivered) or
    /// [`drop_undelivered`](Self::drop_undelivered). `workflows events --failed` lists them.
    pub async fn undelivered_events(&self, limit: usize) -> Result<Vec<Undelivered>, RunError> {
        Ok(self.inner.store.undelivered(None, limit).await?)
    }

    /// Tries event `event` again for its subscribers that did not get it (or `subscriber`
    /// alone), at the next dispatch pass of a worker that has them, with a new series of
    /// tries. Returns how many (event, subscriber) pairs it set to be tried.
    pub async fn retry_undelivered(&self, event: &str, subscriber: Option<&str>) -> Result<u64, RunError> {
        let now = Timestamp::now();
        let mut retried = 0;
        for mut undelivered in self.undelivered_of(event, subscriber).await? {
            undelivered.retry_at = Some(now);
            undelivered.attempts = 0;
            self.inner.store.record_undelivered(&undelivered).await?;
            retried += 1;
        }
        self.inner.events_emitted.notify_one();
        Ok(retried)
    }

    /// Gives up on delivering event `event` to the subscribers that did not get it (or to
    /// `subscriber` alone). Returns how many (event, subscriber) pairs it forgot.
    pub async fn drop_undelivered(&self, event: &str, subscriber: Option<&str>) -> Result<u64, RunError> {
        Ok(self.inner.store.forget_undelivered(event, subscriber).await?)
    }

    async fn undelivered_of(&self, event: &str, subscriber: Option<&str>) -> Result<Vec<Undelivered>, RunError> {
        let all = self.inner.store.undelivered(None, usize::MAX >> 1).await?;
        Ok(all.into_iter().filter(|u| u.event == event && subscriber.is_none_or(|s| s == u.subscriber)).collect())
    }

    /// One pass over the undelivered events as if the time were `now`: tries again those due by
    /// then. Worker engines do this by themselves; tests drive it on a simulated clock.
    /// Returns how many were delivered.
    #[doc(hidden)]
    pub async fn retry_undelivered_at(&self, now: Timestamp) -> Result<usize, RunError> {
        self.inner.retry_undelivered(now).await
    }

    /// One dispatch pass: starts the subscribers of the events not dispatched yet. Worker
    /// engines do this by themselves; returns how many events it dispatched.
    #[doc(hidden)]
    pub async fn dispatch_events(&self) -> Result<usize, RunError> {
        self.inner.dispatch_events().await
    }
}
