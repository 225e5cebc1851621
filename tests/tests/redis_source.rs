//! The Redis Streams event source, on the server `WORKFLOWS_TEST_REDIS` names (`.ci/run` sets
//! it; with it set, an unreachable server fails the tests; without it they pass at once and say
//! so): messages published while no consumer runs are consumed later; a consumer that read
//! messages and died before acknowledging them loses none and duplicates none; every message
//! is acknowledged once recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands;
use workflows_runtime::prelude::*;
use workflows_runtime::{MemoryStore, RedisSource};
use workflows_tests::eventually;

const ENV: &str = "WORKFLOWS_TEST_REDIS";

/// The server, or `None` (said once) when the variable is not set; panics if it is set and the
/// server does not answer.
async fn server() -> Option<(String, redis::aio::MultiplexedConnection)> {
    static SAID: std::sync::Once = std::sync::Once::new();
    let url = match std::env::var(ENV) {
        Ok(url) if !url.trim().is_empty() => url,
        _ => {
            SAID.call_once(|| {
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "Redis tests skipped: set {ENV}=redis://HOST:PORT to run them (`.ci/run` does)"
                );
            });
            return None;
        }
    };
    let client = redis::Client::open(url.as_str()).unwrap_or_else(|e| panic!("{ENV} is set, and is not a URL: {e}"));
    let conn = client
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("{ENV} is set, and the Redis server cannot be reached: {e}"));
    Some((url, conn))
}

/// How often each order was handled.
#[derive(Default)]
struct Handled(Mutex<BTreeMap<u64, u32>>);

#[step]
async fn handle_redis_order(ctx: &StepContext, order: u64) -> Result<(), StepError> {
    *ctx.resolve::<Arc<Handled>>()?.0.lock().unwrap().entry(order).or_default() += 1;
    Ok(())
}

#[workflow(on_event = "redis.order")]
async fn on_redis_order(wf: &Workflow, event: Event<serde_json::Value>) -> Result<(), WorkflowError> {
    let order = event.payload["order"].as_u64().unwrap_or(u64::MAX);
    Ok(handle_redis_order(wf, order).await?)
}

/// Publishes orders `range` on `stream`.
async fn publish(
    conn: &mut redis::aio::MultiplexedConnection,
    stream: &str,
    range: std::ops::Range<u64>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for order in range {
        let payload = format!("{{\"order\":{order}}}");
        let id: String =
            conn.xadd(stream, "*", &[("name", "redis.order"), ("payload", payload.as_str())]).await.unwrap();
        ids.push(id);
    }
    ids
}

/// Waits until orders `0..n` were each handled once, and nothing else was.
async fn each_handled_once(handled: &Handled, n: u64) {
    eventually(Duration::from_secs(30), || async { (handled.0.lock().unwrap().len() as u64 == n).then_some(()) }).await;
    // A duplicate would come soon after.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let handled = handled.0.lock().unwrap();
    assert_eq!(handled.len() as u64, n, "{handled:?}");
    assert!(handled.values().all(|count| *count == 1), "each once: {handled:?}");
}

/// Messages the group has not acknowledged.
async fn pending(conn: &mut redis::aio::MultiplexedConnection, stream: &str, group: &str) -> i64 {
    let summary: redis::Value = redis::cmd("XPENDING").arg(stream).arg(group).query_async(conn).await.unwrap();
    match summary {
        redis::Value::Array(parts) => parts.first().and_then(|v| redis::from_redis_value::<i64>(v).ok()).unwrap_or(0),
        _ => 0,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_no_consumer_runs_are_consumed_later() {
    let Some((url, mut conn)) = server().await else { return };
    let stream = format!("test-{}", uuid_like());
    publish(&mut conn, &stream, 0..50).await;
    let handled = Arc::new(Handled::default());
    let engine = Engine::builder()
        .memory()
        .container(Container::new().with(handled.clone()))
        .source(RedisSource::new(&url, &stream, "workflows"))
        .start()
        .await
        .unwrap();
    each_handled_once(&handled, 50).await;
    eventually(Duration::from_secs(10), || async {
        (pending(&mut conn.clone(), &stream, "workflows").await == 0).then_some(())
    })
    .await;
    engine.shutdown().await;
    let _: () = conn.del(&stream).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_died_before_acknowledging_loses_and_duplicates_nothing() {
    let Some((url, mut conn)) = server().await else { return };
    let stream = format!("test-{}", uuid_like());
    let ids = publish(&mut conn, &stream, 0..20).await;
    // A consumer reads all twenty, records the first five as events, and dies before
    // acknowledging any.
    let _: () = conn.xgroup_create_mkstream(&stream, "workflows", "0").await.unwrap();
    let options = redis::streams::StreamReadOptions::default().group("workflows", "dead").count(100);
    let _: redis::streams::StreamReadReply = conn.xread_options(&[&stream], &[">"], &options).await.unwrap();
    let store = Arc::new(MemoryStore::new());
    let handled = Arc::new(Handled::default());
    let services = || Container::new().with(handled.clone());
    let recorder = Engine::builder().store(store.clone()).container(services()).start().await.unwrap();
    for (order, id) in ids.iter().enumerate().take(5) {
        let event = serde_json::json!({ "order": order });
        assert!(recorder.emit_with_id(&format!("redis:{stream}:{id}"), "redis.order", event).await.unwrap());
    }
    // A live consumer claims them once they have been pending long enough.
    let source = RedisSource::new(&url, &stream, "workflows").claim_after(Duration::from_millis(200));
    let engine = Engine::builder().store(store).container(services()).source(source).start().await.unwrap();
    each_handled_once(&handled, 20).await;
    eventually(Duration::from_secs(10), || async {
        (pending(&mut conn.clone(), &stream, "workflows").await == 0).then_some(())
    })
    .await;
    engine.shutdown().await;
    recorder.shutdown().await;
    let _: () = conn.del(&stream).await.unwrap();
}

/// A name unique to this run.
fn uuid_like() -> String {
    format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos())
}
