//! `workflows queues`: each queue's limits and how full it is.

use serde_json::{Value, json};

use super::common::{CliError, Context, EXIT_OK};
use super::output::{Table, duration, note, out, print_json};
use crate::time::Timestamp;

/// `workflows queues`.
pub(crate) async fn list(context: &Context) -> Result<u8, CliError> {
    let store = context.existing_store().await?;
    let now = Timestamp::now();
    let queues = store.queues(now).await?;
    if context.json {
        let listed: Vec<Value> = queues
            .iter()
            .map(|q| {
                let limits = q.limits.as_ref();
                json!({
                    "name": q.name,
                    "defined": limits.is_some(),
                    "concurrency": limits.and_then(|l| l.concurrency_limit()),
                    "rate": limits.and_then(|l| l.rate_limit()).map(|r| json!({
                        "starts": r.starts, "per_ms": r.per.as_millis() as u64,
                    })),
                    "queued": q.queued,
                    "active": q.active,
                    "started_in_window": q.started_in_window,
                    "oldest_queued": q.oldest_queued.map(|t| t.to_string()),
                })
            })
            .collect();
        print_json(&json!({ "queues": listed }))?;
        return Ok(EXIT_OK);
    }
    if queues.is_empty() {
        out!("no queues: define one with `Engine::builder().queue(Queue::new(\"emails\").concurrency(10))`");
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(&["QUEUE", "LIMITS", "QUEUED", "ACTIVE", "STARTED IN WINDOW", "OLDEST QUEUED"]);
    for queue in &queues {
        let active = match queue.limits.as_ref().and_then(|l| l.concurrency_limit()) {
            Some(max) => format!("{}/{max}", queue.active),
            None => queue.active.to_string(),
        };
        let started = match (queue.started_in_window, queue.limits.as_ref().and_then(|l| l.rate_limit())) {
            (Some(started), Some(rate)) => format!("{started}/{}", rate.starts),
            _ => "-".to_owned(),
        };
        table.row(vec![
            queue.name.clone(),
            queue.limits.as_ref().map_or_else(|| "not defined".to_owned(), ToString::to_string),
            queue.queued.to_string(),
            active,
            started,
            queue
                .oldest_queued
                .map_or_else(|| "-".to_owned(), |at| format!("{} ago", duration(now.duration_since(at)))),
        ]);
    }
    table.print();
    for queue in queues.iter().filter(|q| q.limits.is_none()) {
        note!(
            "queue `{}` is named by executions but no engine defined it: they stay queued until an engine starts \
             with `.queue(Queue::new(\"{}\")...)`",
            queue.name,
            queue.name
        );
    }
    Ok(EXIT_OK)
}
