//! Queues: named limits on how many executions run at once and how many start per period,
//! held across every engine that shares a store (see [`Queue`]).

use std::fmt;
use std::time::Duration;

use crate::time::Timestamp;

/// A named queue: executions started on it ([`RunOptions::queue`](crate::RunOptions::queue))
/// wait, `queued`, until its limits let them start, first in first out, across every engine
/// sharing the store.
///
/// ```no_run
/// # use workflows_runtime::prelude::*;
/// # use std::time::Duration;
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let emails = Queue::new("emails").concurrency(10).rate(100, Duration::from_secs(60));
/// let engine = Engine::builder().queue(emails).start().await?;
/// # Ok(()) }
/// ```
///
/// - **Concurrency**: at most this many executions of the queue are started and not finished
///   at any moment — running, waiting (suspended on a timer or an event), compensating, or
///   waiting for an exclusive key. An execution whose worker dies keeps its place until another
///   worker takes it over and finishes it, so the limit holds through crashes.
/// - **Rate**: at most this many executions of the queue start within any window of `per`.
/// - **Order**: the oldest queued execution starts first.
///
/// The limits are stored: every engine that defines the queue writes its limits when it starts
/// (the last one wins), and every engine admits executions by the stored limits, so that the
/// whole fleet keeps one budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Queue {
    pub(crate) name: String,
    pub(crate) concurrency: Option<u32>,
    pub(crate) rate: Option<Rate>,
}

/// A queue's rate limit: at most `starts` executions start within any window of `per`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// How many starts a window allows.
    pub starts: u32,
    /// The window.
    pub per: Duration,
}

impl Queue {
    /// A queue with no limit yet: add [`concurrency`](Self::concurrency) or
    /// [`rate`](Self::rate) (a queue with neither still starts its executions in order).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), concurrency: None, rate: None }
    }

    /// At most `max` executions of the queue run at once, across every engine.
    pub fn concurrency(mut self, max: u32) -> Self {
        self.concurrency = Some(max);
        self
    }

    /// At most `starts` executions of the queue start within any window of `per`, across
    /// every engine: `rate(100, Duration::from_secs(60))` is 100 a minute.
    pub fn rate(mut self, starts: u32, per: Duration) -> Self {
        self.rate = Some(Rate { starts, per });
        self
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its concurrency limit, if it has one.
    pub fn concurrency_limit(&self) -> Option<u32> {
        self.concurrency
    }

    /// Its rate limit, if it has one.
    pub fn rate_limit(&self) -> Option<Rate> {
        self.rate
    }

    /// Why these limits cannot be used, if they cannot.
    pub(crate) fn invalid(&self) -> Option<String> {
        let name = &self.name;
        if name.is_empty() {
            return Some("a queue needs a name: Queue::new(\"emails\")".to_owned());
        }
        if self.concurrency == Some(0) {
            return Some(format!("queue `{name}` has concurrency 0: nothing would ever start; use 1 or more"));
        }
        match self.rate {
            Some(Rate { starts: 0, .. }) => {
                Some(format!("queue `{name}` allows 0 starts per window: nothing would ever start; use 1 or more"))
            }
            Some(Rate { per, .. }) if per < Duration::from_millis(1) => {
                Some(format!("queue `{name}` has a rate window shorter than a millisecond; use a longer one"))
            }
            _ => None,
        }
    }
}

impl fmt::Display for Queue {
    /// The limits as the helper binary shows them: `concurrency 10, 100 per 60s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(max) = self.concurrency {
            parts.push(format!("concurrency {max}"));
        }
        if let Some(Rate { starts, per }) = self.rate {
            parts.push(format!("{starts} per {}", window(per)));
        }
        if parts.is_empty() { f.write_str("no limit") } else { f.write_str(&parts.join(", ")) }
    }
}

/// A queue as the store sees it now (see [`Engine::queues`](crate::Engine::queues)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueStatus {
    /// The queue's name.
    pub name: String,
    /// Its stored limits; `None` if executions name it but no engine defined it (they stay
    /// queued until one does).
    pub limits: Option<Queue>,
    /// Executions waiting to start.
    pub queued: u64,
    /// Executions started and not finished: what counts against the concurrency limit.
    pub active: u64,
    /// Executions started within the current rate window, if the queue has a rate limit.
    pub started_in_window: Option<u64>,
    /// When the oldest queued execution was started (created).
    pub oldest_queued: Option<Timestamp>,
}

/// A rate window as people write it: `1h`, `1m`, `30s`, `250ms`.
fn window(per: Duration) -> String {
    let millis = per.as_millis();
    match millis {
        m if m % 3_600_000 == 0 => format!("{}h", m / 3_600_000),
        m if m % 60_000 == 0 => format!("{}m", m / 60_000),
        m if m % 1_000 == 0 => format!("{}s", m / 1_000),
        m => format!("{m}ms"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_show_as_written_and_bad_ones_are_named() {
        let emails = Queue::new("emails").concurrency(10).rate(100, Duration::from_secs(60));
        assert_eq!(emails.to_string(), "concurrency 10, 100 per 1m");
        assert_eq!(Queue::new("q").to_string(), "no limit");
        assert_eq!(Queue::new("q").rate(5, Duration::from_millis(1500)).to_string(), "5 per 1500ms");
        assert!(emails.invalid().is_none());
        assert!(Queue::new("q").concurrency(0).invalid().unwrap().contains("concurrency 0"));
        assert!(Queue::new("q").rate(0, Duration::from_secs(1)).invalid().unwrap().contains("0 starts"));
        assert!(Queue::new("").invalid().unwrap().contains("needs a name"));
    }
}
