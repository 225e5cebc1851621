//! Wall-clock timestamps as stored in the journal.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// A point in wall-clock time, in microseconds since the Unix epoch (UTC).
///
/// Stored as a plain integer so that every store can index and compare it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The current wall-clock time: the system's, or under a test clock (the `testing`
    /// feature's `TestClock`) the test clock's.
    pub fn now() -> Self {
        #[cfg(feature = "testing")]
        if let Some(now) = virtual_clock::now() {
            return now;
        }
        Self::from(SystemTime::now())
    }

    /// A timestamp from microseconds since the Unix epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_micros(u64::try_from(self.0 - earlier.0).unwrap_or(0))
    }
}

impl std::ops::Add<Duration> for Timestamp {
    type Output = Timestamp;

    /// This timestamp moved forward by `duration` (saturating).
    fn add(self, duration: Duration) -> Self {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_add(micros))
    }
}

impl std::ops::Sub<Duration> for Timestamp {
    type Output = Timestamp;

    /// This timestamp moved back by `duration` (saturating).
    fn sub(self, duration: Duration) -> Self {
        let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
        Self(self.0.saturating_sub(micros))
    }
}

impl From<SystemTime> for Timestamp {
    fn from(time: SystemTime) -> Self {
        match time.duration_since(UNIX_EPOCH) {
            Ok(d) => Self(i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            Err(e) => Self(-i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX)),
        }
    }
}

impl From<Timestamp> for SystemTime {
    fn from(t: Timestamp) -> Self {
        if t.0 >= 0 {
            UNIX_EPOCH + Duration::from_micros(t.0 as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(t.0.unsigned_abs())
        }
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-27T02:19:48.123Z`; a time
    /// RFC 3339 cannot write (before 1970 or after 9999: only a damaged or saturated value)
    /// as its microseconds.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The first instant of the year 10000, where RFC 3339 ends.
        const END: i64 = 253_402_300_800 * 1_000_000;
        if (0..END).contains(&self.0) {
            write!(f, "{}", humantime::format_rfc3339_millis(SystemTime::from(*self)))
        } else {
            write!(f, "{} µs since 1970-01-01T00:00:00Z", self.0)
        }
    }
}

/// `work`, to run on another thread, made to follow the clock the current thread follows (the
/// system's, or a test clock: see [`virtual_clock`]).
pub(crate) fn on_this_clock<R>(work: impl FnOnce() -> R + Send) -> impl FnOnce() -> R + Send {
    #[cfg(feature = "testing")]
    let clock = virtual_clock::current();
    move || {
        #[cfg(feature = "testing")]
        let _clock = virtual_clock::enter(clock);
        work()
    }
}

/// Time under a test clock: the wall-clock time follows the paused clock of one Tokio runtime,
/// for the threads that work for that runtime (its own, the SQLite store's writer, the blocking
/// reads), and only for them: the other tests of the same process keep the system's time.
#[cfg(feature = "testing")]
pub(crate) mod virtual_clock {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::Timestamp;

    /// A runtime whose Tokio clock is paused, and the wall-clock time its instants count from.
    #[derive(Clone, Debug)]
    pub(crate) struct VirtualClock {
        runtime: tokio::runtime::Handle,
        wall: Timestamp,
        instant: tokio::time::Instant,
    }

    impl VirtualClock {
        /// A clock that reads `wall` now and moves with the current runtime's (paused) clock.
        pub(crate) fn starting_at(wall: Timestamp) -> Self {
            Self { runtime: tokio::runtime::Handle::current(), wall, instant: tokio::time::Instant::now() }
        }

        /// The runtime's instant now (read from any thread).
        pub(crate) fn instant(&self) -> tokio::time::Instant {
            let _runtime = self.runtime.enter();
            tokio::time::Instant::now()
        }

        /// The clock's wall-clock time.
        pub(crate) fn now(&self) -> Timestamp {
            self.wall + self.instant().duration_since(self.instant)
        }
    }

    /// False until a test clock was first installed: the system's time costs one load.
    static IN_USE: AtomicBool = AtomicBool::new(false);

    thread_local! {
        static CURRENT: RefCell<Option<VirtualClock>> = const { RefCell::new(None) };
    }

    /// The test clock the current thread follows, if any.
    pub(crate) fn current() -> Option<VirtualClock> {
        if !IN_USE.load(Ordering::Relaxed) {
            return None;
        }
        CURRENT.with(|current| current.borrow().clone())
    }

    /// The test clock's time, if the current thread follows one.
    pub(crate) fn now() -> Option<Timestamp> {
        current().map(|clock| clock.now())
    }

    /// Makes the current thread follow `clock` (or the system's time) until the guard drops.
    pub(crate) fn enter(clock: Option<VirtualClock>) -> Entered {
        if clock.is_some() {
            IN_USE.store(true, Ordering::Relaxed);
        }
        Entered(CURRENT.with(|current| current.replace(clock)))
    }

    /// Makes the current thread follow `clock` for good (the thread of a test's runtime).
    pub(crate) fn install(clock: VirtualClock) {
        std::mem::forget(enter(Some(clock)));
    }

    /// Restores what the thread followed before [`enter`].
    #[must_use = "the thread follows the clock until this guard drops"]
    pub(crate) struct Entered(Option<VirtualClock>);

    impl Drop for Entered {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT.with(|current| *current.borrow_mut() = previous);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::from_micros(0).to_string(), "1970-01-01T00:00:00.000Z");
        // 2026-11-27T02:19:48.123Z
        let t = Timestamp::from_micros(1_795_745_988_123_456);
        assert_eq!(t.to_string(), "2026-11-27T02:19:48.123Z");
        assert_eq!(Timestamp::from_micros(951_782_400_000_000).to_string(), "2000-02-29T00:00:00.000Z");
        assert_eq!(Timestamp::from_micros(i64::MAX).to_string(), format!("{} µs since 1970-01-01T00:00:00Z", i64::MAX));
        assert_eq!(Timestamp::from_micros(-1).to_string(), "-1 µs since 1970-01-01T00:00:00Z");
    }

    #[test]
    fn now_agrees_with_system_time() {
        let before = Timestamp::from(SystemTime::now());
        let now = Timestamp::now();
        let after = Timestamp::from(SystemTime::now());
        assert!(before <= now && now <= after, "{before:?} {now:?} {after:?}");
    }

    #[test]
    fn round_trips_system_time() {
        let now = SystemTime::now();
        let t = Timestamp::from(now);
        let back = SystemTime::from(t);
        let diff = now.duration_since(back).unwrap_or_default();
        assert!(diff < Duration::from_micros(1));
    }
}
