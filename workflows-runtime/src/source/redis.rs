//! Redis Streams as an event source (feature `redis`): a consumer group reads a stream; each
//! message becomes one event, recorded under the id `redis:<stream>:<message id>` (so a message
//! delivered twice is one event) and acknowledged (`XACK`) only once the event is durably
//! recorded. Messages a dead consumer read and did not acknowledge are claimed by a live one
//! once they have been pending for a while (`XAUTOCLAIM`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::streams::{StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamReadOptions, StreamReadReply};

use std::sync::Weak;

use crate::engine::Engine;
use crate::engine::core::EngineInner;

/// A Redis stream read by a consumer group, each message an event.
///
/// ```no_run
/// # use workflows_runtime::prelude::*;
/// # use workflows_runtime::RedisSource;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let orders = RedisSource::new("redis://127.0.0.1:6379", "orders", "workflows").event_name("order.placed");
/// let engine = Engine::builder().source(orders).start().await?;
/// # Ok(()) }
/// ```
///
/// A message's event name is its `name` field, else the source's [`event_name`](Self::event_name),
/// else the stream's name; its payload is its `payload` field parsed as JSON, else its fields
/// as a JSON object of strings. Every worker engine with the source reads it as a consumer of
/// the group (named after the engine), so the messages are spread over the workers.
#[derive(Clone, Debug)]
pub struct RedisSource {
    url: String,
    stream: String,
    group: String,
    event_name: Option<String>,
    batch: usize,
    block: Duration,
    claim_after: Duration,
}

impl RedisSource {
    /// Stream `stream` on the Redis server at `url`, read by consumer group `group` (created,
    /// with the stream, if missing: from the stream's first message).
    pub fn new(url: impl Into<String>, stream: impl Into<String>, group: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: stream.into(),
            group: group.into(),
            event_name: None,
            batch: 100,
            block: Duration::from_secs(1),
            claim_after: Duration::from_secs(30),
        }
    }

    /// The event name of messages without a `name` field.
    pub fn event_name(mut self, name: impl Into<String>) -> Self {
        self.event_name = Some(name.into());
        self
    }

    /// How long a message read by another consumer stays unacknowledged before this one claims
    /// it (its consumer is taken to be dead): 30 s by default.
    pub fn claim_after(mut self, idle: Duration) -> Self {
        self.claim_after = idle;
        self
    }

    /// The event id of message `id`.
    fn event_id(&self, id: &str) -> String {
        format!("redis:{}:{id}", self.stream)
    }

    /// The event a message becomes: its name and its payload.
    fn event_of(&self, message: &StreamId) -> (String, serde_json::Value) {
        let text = |value: &redis::Value| redis::from_redis_value::<String>(value).ok();
        let name = message
            .map
            .get("name")
            .and_then(text)
            .or_else(|| self.event_name.clone())
            .unwrap_or_else(|| self.stream.clone());
        let payload = match message.map.get("payload").and_then(text) {
            Some(json) => serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json)),
            None => {
                let fields: HashMap<&String, String> =
                    message.map.iter().filter_map(|(k, v)| Some((k, text(v)?))).collect();
                serde_json::to_value(fields).unwrap_or_default()
            }
        };
        (name, payload)
    }

    /// Reads the stream until the engine closes, recording each message as an event and then
    /// acknowledging it; reconnects after an error.
    pub(crate) async fn run(self: Arc<Self>, engine: Weak<EngineInner>, consumer: String) {
        // Doubled after each failure in a row (from 1 s to 30 s), so that a Redis that is down
        // is not asked every second by every worker, nor logged that often.
        let mut pause = Duration::from_secs(1);
        loop {
            if engine.upgrade().is_none_or(|inner| inner.is_closed() || inner.is_draining()) {
                return;
            }
            let began = std::time::Instant::now();
            if let Err(error) = self.consume(&engine, &consumer).await {
                // A source that ran a while before failing starts again from a short pause.
                if began.elapsed() > Duration::from_secs(60) {
                    pause = Duration::from_secs(1);
                }
                tracing::warn!(
                    url = %redact(&self.url),
                    stream = %self.stream,
                    %error,
                    retry_in_s = pause.as_secs(),
                    "the Redis event source failed; connecting again"
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }

    async fn consume(
        &self,
        engine: &Weak<EngineInner>,
        consumer: &str,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let client = redis::Client::open(self.url.as_str())?;
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(self.block + Duration::from_secs(10));
        let mut conn = client.get_multiplexed_async_connection_with_config(&config).await?;
        let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(&self.stream, &self.group, "0").await;
        if let Err(error) = created
            && error.code() != Some("BUSYGROUP")
        {
            return Err(error.into());
        }
        loop {
            // Held for one round only: a source does not keep its engine alive.
            let Some(inner) = engine.upgrade().filter(|inner| !inner.is_closed() && !inner.is_draining()) else {
                return Ok(());
            };
            let engine = &Engine { inner };
            // The messages of consumers that died before acknowledging them.
            let idle = self.claim_after.as_millis() as usize;
            let options = StreamAutoClaimOptions::default().count(self.batch);
            let claimed: StreamAutoClaimReply =
                conn.xautoclaim_options(&self.stream, &self.group, consumer, idle, "0-0", options).await?;
            self.record(engine, &mut conn, &claimed.claimed).await?;
            // New messages.
            let options = StreamReadOptions::default()
                .group(&self.group, consumer)
                .count(self.batch)
                .block(self.block.as_millis() as usize);
            let read: Option<StreamReadReply> = conn.xread_options(&[&self.stream], &[">"], &options).await?;
            for key in read.map(|r| r.keys).unwrap_or_default() {
                self.record(engine, &mut conn, &key.ids).await?;
            }
        }
    }

    /// Records each message as an event, then acknowledges it.
    async fn record(
        &self,
        engine: &Engine,
        conn: &mut redis::aio::MultiplexedConnection,
        messages: &[StreamId],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        for message in messages {
            let (name, payload) = self.event_of(message);
            // Durable before the acknowledgement; a message delivered again is the same event.
            engine.emit_with_id(&self.event_id(&message.id), &name, payload).await?;
            let _: i64 = conn.xack(&self.stream, &self.group, &[&message.id]).await?;
        }
        Ok(())
    }
}

/// A Redis URL without its password, for messages: `redis://user:***@host:6379`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_url_in_a_message_has_no_password() {
        assert_eq!(super::redact("redis://app:secret@cache:6379/0"), "redis://app:***@cache:6379/0");
        assert_eq!(super::redact("redis://:secret@cache"), "redis://:***@cache");
        assert_eq!(super::redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
