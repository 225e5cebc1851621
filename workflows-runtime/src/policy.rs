//! Step and workflow policies: retries with backoff, timeouts, what a permanent failure does.
//!
//! Set per step with `#[step(retry(...), timeout = "30s", on_failure = "continue")]`, per
//! workflow with `#[workflow(timeout = "5m", retention = "30d")]`, and engine-wide defaults on
//! the [`EngineBuilder`](crate::EngineBuilder).

use std::time::Duration;

/// How often a failing step is tried, and how long to wait between attempts.
///
/// ```
/// use std::time::Duration;
/// use workflows_runtime::{Backoff, RetryPolicy};
///
/// // 5 attempts: waits of about 100 ms, 200 ms, 400 ms, 800 ms (±20 %).
/// let policy = RetryPolicy::new(5, Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(10)))
///     .with_jitter(0.2);
/// assert_eq!(policy.max_attempts(), 5);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: Backoff,
    jitter: f64,
}

/// The wait before the next attempt.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Backoff {
    /// The same wait every time.
    Fixed(Duration),
    /// `initial`, then multiplied by `factor` after each attempt, never more than `max`.
    Exponential {
        /// The first wait.
        initial: Duration,
        /// The multiplier (at least 1).
        factor: f64,
        /// The longest wait.
        max: Duration,
    },
}

impl Backoff {
    /// An exponential backoff from `initial`, multiplied by `factor`, capped at `max`.
    pub const fn exponential(initial: Duration, factor: f64, max: Duration) -> Self {
        Self::Exponential { initial, factor, max }
    }

    /// The wait after attempt `attempt` (1 for the first) failed, before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        match *self {
            Self::Fixed(delay) => delay,
            Self::Exponential { initial, factor, max } => {
                let scaled = initial.as_secs_f64() * factor.powi(attempt.saturating_sub(1).min(1000) as i32);
                if !scaled.is_finite() || scaled >= max.as_secs_f64() { max } else { Duration::from_secs_f64(scaled) }
            }
        }
    }
}

impl RetryPolicy {
    /// No retries: one attempt. The engine's default unless configured otherwise.
    pub const NONE: RetryPolicy = RetryPolicy { max_attempts: 1, backoff: Backoff::Fixed(Duration::ZERO), jitter: 0.0 };

    /// `max_attempts` attempts in all (at least 1), waiting `backoff` between them, no jitter.
    pub const fn new(max_attempts: u32, backoff: Backoff) -> Self {
        Self { max_attempts: if max_attempts == 0 { 1 } else { max_attempts }, backoff, jitter: 0.0 }
    }

    /// Each wait is multiplied by a random factor in `[1 - jitter, 1 + jitter]` (`jitter` in
    /// `0..=1`), so that many failing executions do not retry in lockstep.
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter < 0.0 {
            0.0
        } else if jitter > 1.0 {
            1.0
        } else {
            jitter
        };
        self
    }

    /// Attempts in all, including the first.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff between attempts.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// The jitter fraction.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// The wait after attempt `attempt` failed, with jitter drawn from `random` (in `0..1`).
    pub fn delay(&self, attempt: u32, random: f64) -> Duration {
        let base = self.backoff.delay(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        let factor = 1.0 + self.jitter * (2.0 * random.clamp(0.0, 1.0) - 1.0);
        base.mul_f64(factor.max(0.0))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self::NONE
    }
}

/// What a step's permanent failure (after its last attempt) does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnFailure {
    /// The workflow fails and its completed steps are compensated, whatever the body does
    /// with the error: a failure cannot be swallowed by accident. The default.
    #[default]
    Fail,
    /// The workflow receives the error as a value (`Err(StepError)`) and decides.
    Continue,
    /// The step is recorded as skipped and the call returns `Ok(None)`.
    Skip,
    /// The execution parks `paused`: nothing compensated, nobody drives it, until an operator
    /// retries the step with a fresh attempt budget ([`Engine::retry_step`](crate::Engine::retry_step),
    /// `workflows retry-step`) or gives up on it (`workflows compensate`).
    Pause,
}

impl OnFailure {
    /// The policy's name as written in `#[step(on_failure = "...")]`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Continue => "continue",
            Self::Skip => "skip",
            Self::Pause => "pause",
        }
    }
}

/// A step's policies, as its `#[step(...)]` options set them.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepPolicy {
    /// Its retry policy; `None` uses the engine's default.
    pub retry: Option<RetryPolicy>,
    /// How long one attempt may run; `None` is unlimited.
    pub timeout: Option<Duration>,
    /// What a permanent failure does.
    pub on_failure: OnFailure,
}

impl StepPolicy {
    /// No options: the engine's retry default, no timeout, failures fail the workflow.
    pub const DEFAULT: StepPolicy = StepPolicy { retry: None, timeout: None, on_failure: OnFailure::Fail };
}

/// The default retention of finished executions: 7 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_grows_and_is_capped() {
        let backoff = Backoff::exponential(Duration::from_millis(100), 2.0, Duration::from_secs(1));
        let delays: Vec<u128> = (1..=6).map(|a| backoff.delay(a).as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
        assert_eq!(Backoff::Fixed(Duration::from_secs(3)).delay(9), Duration::from_secs(3));
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let policy = RetryPolicy::new(3, Backoff::Fixed(Duration::from_secs(10))).with_jitter(0.2);
        assert_eq!(policy.delay(1, 0.0), Duration::from_secs(8));
        assert_eq!(policy.delay(1, 1.0), Duration::from_secs(12));
        assert_eq!(policy.delay(1, 0.5), Duration::from_secs(10));
        assert_eq!(RetryPolicy::new(0, Backoff::Fixed(Duration::ZERO)).max_attempts(), 1);
    }
}
