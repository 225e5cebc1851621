//! The test clock: virtual time for the engines of one test.

use std::sync::mpsc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

use crate::time::Timestamp;
use crate::time::virtual_clock::{self, VirtualClock};

/// Virtual time for a test: the clock of the current Tokio runtime, paused, and followed by
/// every engine started in that runtime afterwards — durable sleeps, step and workflow
/// timeouts, retry backoffs, schedule ticks and their catch-up windows, deadlines of async
/// steps and event waits, leases, retention.
///
/// Time moves in two ways:
///
/// - **auto-skip** (on unless turned off): whenever everything waits — every execution is
///   parked on a timer, a backoff or a deadline, and no step body or store write is under
///   way —, the clock jumps to the next instant something is due. A workflow that sleeps 30
///   days completes in milliseconds;
/// - [`advance`](TestClock::advance): moves the clock forward, running in order everything that
///   becomes due on the way, and returns once it has all run.
///
/// Works with the memory and SQLite stores (the SQLite store's writes hold the clock while they
/// commit); an engine on PostgreSQL refuses to start under it. Needs Tokio's current-thread
/// runtime (`#[tokio::test]`'s default). Step bodies that wait on the real world (a socket, a
/// child process) see the clock jump while they wait: replace them with
/// [`Double`](super::Double)s.
///
/// ```
/// use std::time::Duration;
/// use workflows_runtime::prelude::*;
/// use workflows_runtime::testing::TestClock;
///
/// #[workflow]
/// async fn remind_in_a_month(wf: &Workflow, customer: String) -> Result<String, WorkflowError> {
///     wf.sleep(Duration::from_secs(30 * 24 * 3600)).await;
///     Ok(format!("reminded {customer}"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = TestClock::start();
/// let engine = Engine::builder().memory().start().await?;
/// let started = clock.now();
/// let reminded = remind_in_a_month::run(&engine, "ada".to_owned()).await?;
/// assert_eq!(reminded, "reminded ada");
/// assert!(clock.now().duration_since(started)? >= Duration::from_secs(30 * 24 * 3600));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct TestClock {
    clock: VirtualClock,
    /// Held while auto-skip is off: a blocking task keeps Tokio from moving the clock.
    hold: Mutex<Option<Hold>>,
}

impl TestClock {
    /// Pauses the current runtime's clock at the current wall-clock time, with auto-skip on.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, or in a multi-thread runtime (Tokio pauses only a
    /// current-thread runtime's clock).
    pub fn start() -> Self {
        Self::start_at(SystemTime::now())
    }

    /// Pauses the current runtime's clock, which then reads `at` (a fixed date makes schedules
    /// and calendar-dependent code reproducible), with auto-skip on.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start).
    pub fn start_at(at: SystemTime) -> Self {
        let runtime = tokio::runtime::Handle::try_current()
            .expect("TestClock::start must be called inside a Tokio runtime (e.g. in a #[tokio::test])");
        assert!(
            runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread,
            "the test clock needs Tokio's current-thread runtime (`#[tokio::test]`, not `flavor = \"multi_thread\"`): \
             only its clock can be paused"
        );
        if !paused() {
            tokio::time::pause();
        }
        let clock = VirtualClock::starting_at(Timestamp::from(at));
        virtual_clock::install(clock.clone());
        Self { clock, hold: Mutex::new(None) }
    }

    /// Turns auto-skip on (the default) or off. Off, the clock moves only through
    /// [`advance`](Self::advance) and [`advance_to`](Self::advance_to): a test can look at what
    /// waits before its deadline passes.
    pub fn auto_skip(&self, on: bool) {
        let mut hold = self.hold.lock();
        if on {
            hold.take();
        } else if hold.is_none() {
            *hold = Some(Hold::new());
        }
    }

    /// The clock's time.
    pub fn now(&self) -> SystemTime {
        self.clock.now().into()
    }

    /// Moves the clock forward by `by`, running in order everything that becomes due on the way
    /// (each wake-up at its own instant), and returns once everything due has run to where it
    /// waits again. The clock then reads `by` later, and at most a millisecond more: Tokio's
    /// timers count milliseconds, and the last one is how the clock learns that nothing due is
    /// left to run.
    pub async fn advance(&self, by: Duration) {
        let held = self.hold.lock().take().is_some();
        tokio::time::sleep(by).await;
        Self::settle_unheld().await;
        if held {
            *self.hold.lock() = Some(Hold::new());
        }
    }

    /// Moves the clock forward to `at` (not back: a time already passed only settles), as
    /// [`advance`](Self::advance) does.
    pub async fn advance_to(&self, at: SystemTime) {
        self.advance(at.duration_since(self.now()).unwrap_or_default()).await;
    }

    /// Runs what is due now until it waits again (a millisecond of the clock's time at most).
    pub async fn settle(&self) {
        self.advance(Duration::ZERO).await;
    }

    async fn settle_unheld() {
        // The runtime moves a paused clock only when it has nothing to run and no blocking task
        // (a store write) is under way: this sleep ends only then.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// True if the current runtime's clock is paused already (`#[tokio::test(start_paused = true)]`,
/// or another test clock): a paused clock does not move while the thread sleeps.
fn paused() -> bool {
    let before = tokio::time::Instant::now();
    std::thread::sleep(Duration::from_micros(50));
    tokio::time::Instant::now() == before
}

/// A blocking task that keeps Tokio from moving the paused clock until dropped.
#[derive(Debug)]
struct Hold {
    release: mpsc::Sender<()>,
}

impl Hold {
    fn new() -> Self {
        let (release, released) = mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            // Ends when the sender is sent to or dropped.
            let _ = released.recv();
        });
        Self { release }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let _ = self.release.send(());
    }
}

impl Drop for TestClock {
    fn drop(&mut self) {
        // The runtime waits for its blocking tasks when it shuts down.
        self.hold.lock().take();
    }
}
