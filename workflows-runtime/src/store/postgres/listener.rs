//! `LISTEN/NOTIFY`: the store's writers tell every engine on the same schema what happened
//! (`work`: executions to take; `finished ID`), and each store listens on a connection of its
//! own, so a worker takes new work within milliseconds, not at its next poll. After a lost
//! connection it connects again, listens again, and says `Rescan`: notices may have been
//! missed meanwhile, and polling stays the safety net.

use std::time::Duration;

use tokio::sync::broadcast;
use tokio_postgres::{AsyncMessage, Config, NoTls};

use crate::execution::ExecutionId;
use crate::store::Notice;

/// How many notices an engine may fall behind (it then rescans).
pub(super) const CAPACITY: usize = 1024;

/// Between two attempts to connect.
const RECONNECT: Duration = Duration::from_secs(1);

/// A notice as the writers send it.
pub(super) fn parse(payload: &str) -> Option<Notice> {
    match payload.split_once(' ') {
        Some(("finished", id)) => Some(Notice::Finished(ExecutionId::from(id))),
        None if payload == "work" => Some(Notice::Work),
        _ => None,
    }
}

/// Listens on `channel` (the store's schema) until the store is dropped (the task is aborted).
pub(super) async fn listen(config: Config, channel: String, notices: broadcast::Sender<Notice>) {
    let mut first = true;
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let (forward, mut received) = tokio::sync::mpsc::unbounded_channel();
            // The connection delivers notifications only to whoever polls it.
            let driver = tokio::spawn(async move {
                while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    match message {
                        Ok(AsyncMessage::Notification(notification)) => {
                            if forward.send(notification.payload().to_owned()).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
            if client.batch_execute(&format!("LISTEN {channel}")).await.is_ok() {
                if !first {
                    let _ = notices.send(Notice::Rescan);
                }
                first = false;
                while let Some(payload) = received.recv().await {
                    if let Some(notice) = parse(&payload) {
                        let _ = notices.send(notice);
                    }
                }
                tracing::warn!(channel, "lost the connection that listens for notices; connecting again");
            }
            driver.abort();
        }
        tokio::time::sleep(RECONNECT).await;
    }
}

/// Aborts a task when dropped: the listener lives as long as its store.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_read_back_as_they_were_sent() {
        assert_eq!(parse("work"), Some(Notice::Work));
        assert_eq!(parse("finished order-7"), Some(Notice::Finished("order-7".into())));
        assert_eq!(parse("finished a b"), Some(Notice::Finished("a b".into())));
        assert_eq!(parse("something else"), None);
    }
}
