//! Events the application emits, and their dispatch to the workflows that start on them
//! (`#[workflow(on_event = "...")]`): each worker engine reads the events not dispatched yet,
//! starts each subscriber's execution under the id `<workflow>@<event id>` (so that every
//! process starting it creates one execution, and a dispatch interrupted by a crash is done
//! again without a second run), then marks the events dispatched.

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
use crate::store::NewEvent;
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

/// How often a dispatcher looks for events recorded by other processes it was not told of.
const POLL: Duration = Duration::from_secs(1);

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
            {
                let Some(inner) = weak.upgrade() else { return };
                if inner.is_closed() || inner.is_draining() {
                    return;
                }
                if let Err(error) = inner.dispatch_events().await {
                    tracing::warn!(%error, "could not dispatch events; trying again");
                }
            }
            tokio::select! {
                () = wake => {}
                () = tokio::time::sleep(POLL) => {}
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
        let input = EventInput { id: &event.id, name: &event.name, payload: &event.payload, emitted_at: event.at };
        let engine = Engine { inner: self.clone() };
        for subscriber in subscribers {
            let id = crate::emitted::handling_id(subscriber.name(), &event.id);
            match engine.start_workflow_by_name(subscriber.name(), &input, RunOptions::new().id(id)).await {
                Ok(_) => {}
                // A payload the subscriber cannot read would fail every time: it is skipped, loudly.
                Err(error @ RunError::InvalidInput { .. }) => tracing::error!(
                    event = %event.id,
                    name = %event.name,
                    subscriber = subscriber.name(),
                    %error,
                    "an event's payload does not decode as its subscriber's input: not dispatched to it"
                ),
                Err(other) => return Err(other),
            }
        }
        Ok(())
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

    /// One dispatch pass: starts the subscribers of the events not dispatched yet. Worker
    /// engines do this by themselves; returns how many events it dispatched.
    #[doc(hidden)]
    pub async fn dispatch_events(&self) -> Result<usize, RunError> {
        self.inner.dispatch_events().await
    }
}
