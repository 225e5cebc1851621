//! `workflows events`: the events a subscriber's execution could not be started for (tried
//! again later, or parked), and an operator's retry or drop of one.

use serde_json::{Value, json};

use super::args::EventsCommand;
use super::common::{CliError, Context, EXIT_OK, EXIT_USAGE};
use super::output::{Table, duration, note, out, print_json};
use crate::time::Timestamp;

/// How many undelivered events `--failed` lists at most.
const LISTED: usize = 1000;

/// `workflows events --failed`, `workflows events retry|drop EVENT`.
pub(crate) async fn run(context: Context, failed: bool, action: Option<EventsCommand>) -> Result<u8, CliError> {
    let Some(action) = action else {
        if !failed {
            note!(
                "say what to show: `workflows events --failed` lists the events not delivered to a subscriber; \
                 `workflows events retry EVENT` and `workflows events drop EVENT` act on one"
            );
            return Ok(EXIT_USAGE);
        }
        return list(context).await;
    };
    let (engine, json) = context.engine(false).await?;
    let (verb, event, subscriber) = match &action {
        EventsCommand::Retry { event, subscriber } => ("retry", event, subscriber),
        EventsCommand::Drop { event, subscriber } => ("drop", event, subscriber),
    };
    let touched = match action {
        EventsCommand::Retry { .. } => engine.retry_undelivered(event, subscriber.as_deref()).await,
        EventsCommand::Drop { .. } => engine.drop_undelivered(event, subscriber.as_deref()).await,
    };
    engine.shutdown().await;
    let touched = touched?;
    if json {
        print_json(&json!({ "event": event, "subscriber": subscriber, verb: touched }))?;
    } else if touched == 0 {
        return Err(CliError::new(format!(
            "event `{event}` is not undelivered{}: list them with `workflows events --failed`",
            subscriber.as_deref().map(|s| format!(" to `{s}`")).unwrap_or_default()
        )));
    } else if verb == "retry" {
        out!("event {event}: to be tried again for {touched} subscriber(s) by the next worker that has them");
    } else {
        out!("event {event}: dropped for {touched} subscriber(s)");
    }
    Ok(EXIT_OK)
}

async fn list(context: Context) -> Result<u8, CliError> {
    let store = context.existing_store().await?;
    let undelivered = store.undelivered(None, LISTED).await?;
    let now = Timestamp::now();
    if context.json {
        let listed: Vec<Value> = undelivered
            .iter()
            .map(|u| {
                json!({
                    "event": u.event,
                    "name": u.name,
                    "subscriber": u.subscriber,
                    "attempts": u.attempts,
                    "error": u.error,
                    "emitted_at": u.emitted_at.to_string(),
                    "first_failed_at": u.first_failed_at.to_string(),
                    "last_failed_at": u.last_failed_at.to_string(),
                    "retry_at": u.retry_at.map(|t| t.to_string()),
                    "parked": u.retry_at.is_none(),
                    "payload": serde_json::from_str::<Value>(&u.payload).unwrap_or(Value::String(u.payload.clone())),
                })
            })
            .collect();
        print_json(&json!({ "undelivered": listed }))?;
        return Ok(EXIT_OK);
    }
    if undelivered.is_empty() {
        out!("every event reached its subscribers");
        return Ok(EXIT_OK);
    }
    let mut table = Table::new(&["EVENT", "NAME", "SUBSCRIBER", "TRIES", "NEXT TRY", "LAST FAILED", "ERROR"]);
    for u in &undelivered {
        table.row(vec![
            u.event.clone(),
            u.name.clone(),
            u.subscriber.clone(),
            u.attempts.to_string(),
            match u.retry_at {
                Some(at) if at > now => format!("in {}", duration(at.duration_since(now))),
                Some(_) => "due".to_owned(),
                None => "parked".to_owned(),
            },
            format!("{} ago", duration(now.duration_since(u.last_failed_at))),
            u.error.clone(),
        ]);
    }
    table.print();
    if undelivered.iter().any(|u| u.retry_at.is_none()) {
        note!(
            "a parked event waits for you: fix its cause, then `workflows events retry EVENT`, or give it up with \
             `workflows events drop EVENT` (`--subscriber NAME` for one subscriber)"
        );
    }
    Ok(EXIT_OK)
}
