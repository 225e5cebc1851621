//! Helpers shared by the integration tests: services that record what steps did, gates that
//! hold a step until the test opens them, polling with a deadline, and PostgreSQL schemas for
//! the tests that need a server, and a TCP proxy that cuts or black-holes their connections.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

pub mod postgres;
pub mod proxy;

/// An append-only log of what steps and compensations did, for order checks.
#[derive(Default)]
pub struct Log(Mutex<Vec<String>>);

impl Log {
    /// Appends a line.
    pub fn push(&self, line: impl Into<String>) {
        self.0.lock().unwrap().push(line.into());
    }

    /// All lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    /// How many lines equal `line`.
    pub fn count(&self, line: &str) -> usize {
        self.0.lock().unwrap().iter().filter(|l| *l == line).count()
    }
}

/// Holds the steps that pass through it until opened.
#[derive(Default)]
pub struct Gate {
    open: AtomicBool,
    notify: Notify,
    /// How many times a step arrived at the gate.
    pub arrivals: AtomicU32,
}

impl Gate {
    /// A gate that is open from the start.
    pub fn opened() -> Self {
        let gate = Self::default();
        gate.open();
        gate
    }

    /// Lets every waiting and future step through.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Waits until the gate is open.
    pub async fn pass(&self) {
        self.arrivals.fetch_add(1, Ordering::SeqCst);
        loop {
            let notified = self.notify.notified();
            if self.open.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }

    /// How many steps arrived so far.
    pub fn arrived(&self) -> u32 {
        self.arrivals.load(Ordering::SeqCst)
    }
}

/// Polls `check` every few milliseconds until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {within:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A little pseudo-random generator (xorshift): tests that kill or schedule at random print
/// their seed, or fix it, so that a run can be replayed.
pub struct Random(pub u64);

impl Random {
    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}
