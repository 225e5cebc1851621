//! Cron schedules in an IANA time zone, with an explicit rule for daylight-saving changes —
//! the fire times of scheduled workflows, each tick an instant in UTC (see [`CronSchedule`]).
//!
//! The pattern is matched against the zone's *wall-clock* times (croner parses and matches it;
//! chrono-tz, compiled in, knows the zone's history), and each matching wall-clock time is then
//! placed on the time line by one rule, whatever the pattern:
//!
//! - a wall-clock time that does not exist (the clocks spring forward over it) fires at the
//!   first instant after the gap: `30 2 * * *` in `Europe/Paris` fires at 03:00 on the last
//!   Sunday of March, and the four quarter-hours of `*/15 2 * * *` fire once, together, at 03:00;
//! - a wall-clock time that occurs twice (the clocks fall back over it) fires once, at its first
//!   occurrence: `30 2 * * *` fires at 02:30 summer time on the last Sunday of October, not
//!   again an hour later.
//!
//! Mapping wall-clock times to instants this way never goes backwards, so the ticks come out in
//! order, each instant once.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration as ChronoDuration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use crate::time::Timestamp;

/// A cron pattern in a time zone: `0 * * * *` (minute, hour, day of month, month, day of week),
/// optionally with seconds first (`0 */5 * * * *`), evaluated on the wall clock of an IANA time
/// zone (`Europe/Paris`; `UTC` by default). Extensions: `L` (last), `#` (nth weekday), `W`
/// (nearest weekday), names of months and days, `@hourly`, `@daily`, `@weekly`, `@monthly`,
/// `@yearly`.
///
/// ```
/// use workflows_runtime::{CronSchedule, Timestamp};
/// let hourly = CronSchedule::parse("0 * * * *", "Europe/Paris").unwrap();
/// let next = hourly.next_after(Timestamp::now()).unwrap();
/// assert!(next > Timestamp::now());
/// ```
#[derive(Clone)]
pub struct CronSchedule {
    pattern: String,
    cron: Cron,
    zone: Tz,
}

/// A cron pattern or a time zone that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The pattern does not parse.
    #[error("the cron pattern `{pattern}` is not valid: {reason}")]
    Pattern {
        /// The pattern.
        pattern: String,
        /// Why, as the parser says it.
        reason: String,
    },
    /// The time zone is not an IANA name.
    #[error("`{zone}` is not an IANA time zone name (such as `Europe/Paris`, `America/New_York` or `UTC`)")]
    Zone {
        /// The name given.
        zone: String,
    },
}

impl CronSchedule {
    /// Parses `pattern`, evaluated in time zone `zone` (an IANA name).
    pub fn parse(pattern: &str, zone: &str) -> Result<Self, ScheduleError> {
        let zone = Tz::from_str(zone).map_err(|_| ScheduleError::Zone { zone: zone.to_owned() })?;
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(pattern)
            .map_err(|e| ScheduleError::Pattern { pattern: pattern.to_owned(), reason: e.to_string() })?;
        Ok(Self { pattern: pattern.to_owned(), cron, zone })
    }

    /// The pattern, as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The time zone's IANA name.
    pub fn zone(&self) -> &str {
        self.zone.name()
    }

    /// The first tick strictly after `after`, if the pattern ever fires again.
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.ticks_after(after).next()
    }

    /// The ticks strictly after `after`, in order, each instant once.
    pub fn ticks_after(&self, after: Timestamp) -> Ticks<'_> {
        let local = DateTime::<Utc>::from_timestamp_micros(after.as_micros())
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
            .with_timezone(&self.zone)
            .naive_local();
        // Whole seconds: the pattern's resolution (croner keeps a fraction it starts from).
        let local = local.with_nanosecond(0).unwrap_or(local);
        // From a little earlier on the wall clock: after a fall back, wall-clock times before
        // `after`'s own may map to instants after it (and the ones that do not are skipped).
        Ticks { schedule: self, wall: local - ChronoDuration::hours(3), after, last: None }
    }

    /// The latest tick at or before `at`, if there is one.
    pub fn latest_at_or_before(&self, at: Timestamp) -> Option<Timestamp> {
        let local = DateTime::<Utc>::from_timestamp_micros(at.as_micros())?.with_timezone(&self.zone).naive_local();
        let local = local.with_nanosecond(0).unwrap_or(local);
        // Wall-clock candidates from a little later (a spring forward maps earlier wall-clock
        // times to later instants), backwards until one lands at or before `at`.
        let mut wall = local + ChronoDuration::hours(3);
        loop {
            let previous = self.cron.find_previous_occurrence(&Utc.from_utc_datetime(&wall), false).ok()?;
            wall = previous.naive_utc();
            let instant = instant_of(&self.zone, wall)?;
            if instant <= at {
                return Some(instant);
            }
        }
    }

    /// The tick's execution id for schedule `name`: `name@2026-03-29T01:00:00Z`. Every
    /// process computes the same id for a tick, so racing starts of it create one execution.
    pub fn tick_id(name: &str, tick: Timestamp) -> String {
        let utc = DateTime::<Utc>::from_timestamp_micros(tick.as_micros()).unwrap_or(DateTime::<Utc>::MIN_UTC);
        format!("{name}@{}", utc.format("%Y-%m-%dT%H:%M:%SZ"))
    }
}

impl fmt::Debug for CronSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronSchedule").field("pattern", &self.pattern).field("zone", &self.zone.name()).finish()
    }
}

impl fmt::Display for CronSchedule {
    /// `0 * * * * (Europe/Paris)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.pattern, self.zone.name())
    }
}

/// The ticks of a [`CronSchedule`] after an instant (see [`CronSchedule::ticks_after`]).
pub struct Ticks<'a> {
    schedule: &'a CronSchedule,
    /// The last wall-clock time looked at.
    wall: NaiveDateTime,
    after: Timestamp,
    last: Option<Timestamp>,
}

impl Iterator for Ticks<'_> {
    type Item = Timestamp;

    fn next(&mut self) -> Option<Timestamp> {
        loop {
            // The wall clock as a naive time line: croner matches the pattern on it alone.
            let next = self.schedule.cron.find_next_occurrence(&Utc.from_utc_datetime(&self.wall), false).ok()?;
            self.wall = next.naive_utc();
            let instant = instant_of(&self.schedule.zone, self.wall)?;
            if instant > self.after && Some(instant) != self.last {
                self.last = Some(instant);
                return Some(instant);
            }
        }
    }
}

/// The instant a wall-clock time of `zone` fires at: itself; its first occurrence if the
/// clocks fall back over it; the first instant after the gap if they spring forward over it.
fn instant_of(zone: &Tz, wall: NaiveDateTime) -> Option<Timestamp> {
    let instant = match zone.from_local_datetime(&wall) {
        LocalResult::Single(at) => at.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => gap_end(zone, wall)?,
    };
    Some(Timestamp::from_micros(instant.timestamp_micros()))
}

/// The first instant whose wall-clock time in `zone` is later than `wall`, a time inside a gap:
/// the instant of the transition. Found by bisection, to the second (transitions fall on whole
/// seconds), between the instants `wall` would be at the extreme offsets a zone can have.
fn gap_end(zone: &Tz, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let as_utc = Utc.from_utc_datetime(&wall).timestamp();
    let (mut low, mut high) = (as_utc - 15 * 3600, as_utc + 15 * 3600);
    let later = |seconds: i64| -> Option<bool> {
        Some(Utc.timestamp_opt(seconds, 0).single()?.with_timezone(zone).naive_local() > wall)
    };
    if !later(high)? {
        return None;
    }
    // Invariant: the wall clock at `low` is not later than `wall`; at `high` it is.
    while high - low > 1 {
        let middle = low + (high - low) / 2;
        if later(middle)? {
            high = middle;
        } else {
            low = middle;
        }
    }
    Utc.timestamp_opt(high, 0).single()
}

/// Which ticks a schedule starts after it was stopped (a deploy, an outage): the default runs
/// only the latest missed tick; `Within(window)` runs each tick missed within the window that
/// ends now, oldest first. Older ticks are missed (never run).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CatchUp {
    /// Only the latest tick at or before now.
    #[default]
    Latest,
    /// Every tick within this long before now.
    Within(std::time::Duration),
}

/// What a schedule owes at a moment (see [`CronSchedule::due`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Due {
    /// The ticks to start, oldest first.
    pub run: Vec<Timestamp>,
    /// The first and the last tick that will never run (older than the catch-up allows).
    pub missed: Option<(Timestamp, Timestamp)>,
}

impl CronSchedule {
    /// The ticks owed at `now` by a schedule whose ticks up to `handled` were taken care of
    /// (started, skipped or missed), under the `catch_up` policy. Costs one step per tick to run
    /// plus two per missed range, however long the schedule was stopped.
    pub fn due(&self, handled: Timestamp, now: Timestamp, catch_up: CatchUp) -> Due {
        let Some(latest) = self.latest_at_or_before(now).filter(|latest| *latest > handled) else {
            return Due::default();
        };
        let run: Vec<Timestamp> = match catch_up {
            CatchUp::Latest => vec![latest],
            CatchUp::Within(window) => {
                let since = Timestamp::from_micros(now.as_micros().saturating_sub(window.as_micros() as i64));
                let from = since.max(handled);
                self.ticks_after(from).take_while(|t| *t <= now).collect()
            }
        };
        let first_run = run.first().copied().unwrap_or(latest);
        let missed = self.next_after(handled).filter(|first| *first < first_run).and_then(|first| {
            let before_run = Timestamp::from_micros(first_run.as_micros() - 1);
            Some((first, self.latest_at_or_before(before_run)?))
        });
        Due { run, missed }
    }
}

/// What a scheduled workflow does when a tick comes while the run of the previous tick is
/// still going (`#[workflow(schedule = "...", overlap = "...")]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Overlap {
    /// The tick does not run (`skip`, the default).
    #[default]
    Skip,
    /// The tick runs beside it (`allow`).
    Allow,
    /// The tick runs once the previous run finished; a tick that finds one run already waiting
    /// so does not run (`queue_one`).
    QueueOne,
}

impl Overlap {
    /// The policy as written in the attribute: `skip`, `allow`, `queue_one`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::Allow => "allow",
            Self::QueueOne => "queue_one",
        }
    }
}

/// The input of a scheduled run: which schedule, and the tick's instant (UTC).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tick {
    /// The schedule's name: its workflow's name.
    pub schedule: String,
    /// The tick's instant (for a run triggered by hand: when it was triggered).
    pub at: Timestamp,
}

/// The input types a scheduled workflow may take: [`Tick`], or `()`.
#[diagnostic::on_unimplemented(
    message = "a scheduled workflow takes the tick (`workflows_runtime::Tick`) or nothing (`()`) as its input, not `{Self}`",
    label = "the input of a `#[workflow(schedule = ...)]` fn"
)]
pub trait FromTick: Sized {
    /// The input for a run at `tick`.
    fn from_tick(tick: &Tick) -> Self;
}

impl FromTick for Tick {
    fn from_tick(tick: &Tick) -> Self {
        tick.clone()
    }
}

impl FromTick for () {
    fn from_tick(_: &Tick) -> Self {}
}

/// Makes a scheduled run's input, as JSON.
pub type TickInput = fn(&Tick) -> Result<Box<serde_json::value::RawValue>, serde_json::Error>;

/// A workflow's schedule as `#[workflow(schedule = ...)]` declares it.
#[derive(Clone, Copy, Debug)]
pub struct ScheduleSpec {
    /// The cron pattern.
    pub pattern: &'static str,
    /// The IANA time zone (`tz = "..."`; `UTC` by default).
    pub zone: &'static str,
    /// `overlap = "..."`.
    pub overlap: Overlap,
    /// `catch_up = "1h"`: run each tick missed within this window; by default only the latest.
    pub catch_up: Option<std::time::Duration>,
    /// `jitter = "10s"`: each tick starts up to this much later (the same delay for a tick in
    /// every process).
    pub jitter: Option<std::time::Duration>,
    /// The input of a run.
    pub input: TickInput,
}

impl ScheduleSpec {
    /// The catch-up policy.
    pub fn catch_up(&self) -> CatchUp {
        self.catch_up.map_or(CatchUp::Latest, CatchUp::Within)
    }

    /// How much later than the tick a run of it starts: a hash of the tick within the jitter,
    /// so that every process waits the same.
    pub fn delay(&self, tick: Timestamp) -> std::time::Duration {
        let Some(jitter) = self.jitter.filter(|j| !j.is_zero()) else { return std::time::Duration::ZERO };
        let hash = xxhash_rust::xxh3::xxh3_64(&tick.as_micros().to_le_bytes());
        std::time::Duration::from_micros(hash % (jitter.as_micros() as u64).max(1))
    }
}

/// The JSON input of a run of workflow `W` at a tick.
pub fn tick_input<W: crate::WorkflowFn>(tick: &Tick) -> Result<Box<serde_json::value::RawValue>, serde_json::Error>
where
    W::Input: FromTick,
{
    serde_json::value::to_raw_value(&W::Input::from_tick(tick))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An instant from UTC calendar fields.
    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> Timestamp {
        Timestamp::from_micros(Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap().timestamp_micros())
    }

    /// The ticks in `[from, until)`, as UTC `HH:MM` on their day.
    fn ticks(schedule: &CronSchedule, from: Timestamp, until: Timestamp) -> Vec<String> {
        let start = Timestamp::from_micros(from.as_micros() - 1);
        schedule
            .ticks_after(start)
            .take_while(|t| *t < until)
            .map(|t| DateTime::<Utc>::from_timestamp_micros(t.as_micros()).unwrap().format("%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn paris_spring_forward_fires_a_skipped_time_at_the_end_of_the_gap_once() {
        // 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC).
        let daily = CronSchedule::parse("30 2 * * *", "Europe/Paris").unwrap();
        assert_eq!(ticks(&daily, utc(2026, 3, 28, 0, 0), utc(2026, 3, 31, 0, 0)), ["28 01:30", "29 01:00", "30 00:30"]);
        let quarters = CronSchedule::parse("*/15 1-3 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            ticks(&quarters, utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 2, 0)),
            // 01:00–01:45 CET, then 02:xx does not exist: one tick at 03:00 CEST, then 03:15...
            ["29 00:00", "29 00:15", "29 00:30", "29 00:45", "29 01:00", "29 01:15", "29 01:30", "29 01:45"]
        );
    }

    #[test]
    fn paris_fall_back_fires_a_repeated_time_once_at_its_first_occurrence() {
        // 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC); 02:xx happens twice.
        let daily = CronSchedule::parse("30 2 * * *", "Europe/Paris").unwrap();
        assert_eq!(
            ticks(&daily, utc(2026, 10, 24, 0, 0), utc(2026, 10, 27, 0, 0)),
            ["24 00:30", "25 00:30", "26 01:30"]
        );
        let hourly = CronSchedule::parse("0 * * * *", "Europe/Paris").unwrap();
        // 01:00 CEST (23:00 UTC), 02:00 CEST (00:00 UTC), [02:00 CET skipped], 03:00 CET (02:00 UTC).
        assert_eq!(
            ticks(&hourly, utc(2026, 10, 24, 23, 0), utc(2026, 10, 25, 3, 0)),
            ["24 23:00", "25 00:00", "25 02:00"]
        );
    }

    #[test]
    fn new_york_changes_at_two_in_the_morning() {
        // 2026-03-08 spring forward at 02:00 EST (07:00 UTC); 2026-11-01 fall back at 02:00 EDT.
        let daily = CronSchedule::parse("30 2 * * *", "America/New_York").unwrap();
        assert_eq!(ticks(&daily, utc(2026, 3, 7, 0, 0), utc(2026, 3, 10, 0, 0)), ["07 07:30", "08 07:00", "09 06:30"]);
        let daily = CronSchedule::parse("30 1 * * *", "America/New_York").unwrap();
        // 01:30 occurs at 05:30 UTC (EDT) and 06:30 UTC (EST): once, the first.
        assert_eq!(
            ticks(&daily, utc(2026, 10, 31, 0, 0), utc(2026, 11, 3, 0, 0)),
            ["31 05:30", "01 05:30", "02 06:30"]
        );
    }

    #[test]
    fn lord_howe_shifts_by_half_an_hour() {
        // Australia/Lord_Howe: +10:30 standard, +11:00 summer. 2026-10-04 02:00 → 02:30 (15:30 UTC
        // the day before); 2026-04-05 02:00 → 01:30 (14:30 UTC the day before).
        let quarter = CronSchedule::parse("*/15 2 * * *", "Australia/Lord_Howe").unwrap();
        // 02:00 and 02:15 do not exist: both fire at 02:30 (+11:00) = 15:30 UTC; then 02:30, 02:45.
        assert_eq!(ticks(&quarter, utc(2026, 10, 3, 15, 0), utc(2026, 10, 3, 17, 0)), ["03 15:30", "03 15:45"]);
        let half = CronSchedule::parse("45 1 * * *", "Australia/Lord_Howe").unwrap();
        // 01:45 occurs at 14:45 UTC (+11:00) and 15:15 UTC (+10:30): once, the first.
        assert_eq!(ticks(&half, utc(2026, 4, 4, 0, 0), utc(2026, 4, 6, 0, 0)), ["04 14:45", "05 15:15"]);
    }

    #[test]
    fn a_year_of_an_hourly_schedule_has_one_tick_per_hour_of_the_wall_clock_that_exists() {
        let hourly = CronSchedule::parse("0 * * * *", "Europe/Paris").unwrap();
        let (start, end) = (utc(2025, 12, 31, 23, 0), utc(2026, 12, 31, 23, 0));
        let all: Vec<Timestamp> =
            hourly.ticks_after(Timestamp::from_micros(start.as_micros() - 1)).take_while(|t| *t < end).collect();
        // 2026 in Paris, midnight to midnight: 8,760 wall-clock hours; the one skipped in March
        // fires at 03:00 as 03:00 itself does (one tick), the one repeated in October fires once.
        assert_eq!(all.len(), 8760 - 1);
        assert!(all.windows(2).all(|w| w[0] < w[1]), "in order, each instant once");
    }

    #[test]
    fn the_latest_tick_and_tick_ids() {
        let hourly = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(hourly.latest_at_or_before(utc(2026, 11, 29, 14, 59)), Some(utc(2026, 11, 29, 14, 0)));
        assert_eq!(hourly.latest_at_or_before(utc(2026, 11, 29, 14, 0)), Some(utc(2026, 11, 29, 14, 0)));
        let paris = CronSchedule::parse("30 2 * * *", "Europe/Paris").unwrap();
        assert_eq!(paris.latest_at_or_before(utc(2026, 3, 29, 1, 30)), Some(utc(2026, 3, 29, 1, 0)), "the gap's end");
        assert_eq!(CronSchedule::tick_id("report", utc(2026, 3, 29, 1, 0)), "report@2026-03-29T01:00:00Z");
        let seconds = CronSchedule::parse("0 */5 * * * *", "UTC").unwrap();
        assert_eq!(seconds.next_after(utc(2026, 1, 1, 0, 1)), Some(utc(2026, 1, 1, 0, 5)));
    }

    #[test]
    fn after_a_stop_the_latest_tick_runs_or_those_within_the_catch_up_window() {
        let hourly = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        // Last handled 09:00; stopped until 14:30.
        let (handled, now) = (utc(2026, 11, 29, 9, 0), utc(2026, 11, 29, 14, 30));
        let hours = |hours: &[u32]| hours.iter().map(|h| utc(2026, 11, 29, *h, 0)).collect::<Vec<_>>();
        let due = hourly.due(handled, now, CatchUp::Latest);
        assert_eq!(due.run, hours(&[14]));
        assert_eq!(due.missed, Some((utc(2026, 11, 29, 10, 0), utc(2026, 11, 29, 13, 0))));
        let three_hours = CatchUp::Within(std::time::Duration::from_secs(3 * 3600));
        let due = hourly.due(handled, now, three_hours);
        assert_eq!(due.run, hours(&[12, 13, 14]));
        assert_eq!(due.missed, Some((utc(2026, 11, 29, 10, 0), utc(2026, 11, 29, 11, 0))));
        let a_day = CatchUp::Within(std::time::Duration::from_secs(86_400));
        assert_eq!(hourly.due(handled, now, a_day), Due { run: hours(&[10, 11, 12, 13, 14]), missed: None });
        // Running on time: the tick just come, nothing missed; nothing more until the next.
        assert_eq!(hourly.due(utc(2026, 11, 29, 13, 0), now, CatchUp::Latest), Due { run: hours(&[14]), missed: None });
        assert_eq!(hourly.due(utc(2026, 11, 29, 14, 0), now, three_hours), Due::default());
    }

    #[test]
    fn bad_patterns_and_zones_say_what_is_wrong() {
        let error = CronSchedule::parse("0 * * *", "UTC").unwrap_err();
        assert!(error.to_string().starts_with("the cron pattern `0 * * *` is not valid: "), "{error}");
        let error = CronSchedule::parse("0 * * * *", "Europe/Pariss").unwrap_err();
        assert_eq!(
            error.to_string(),
            "`Europe/Pariss` is not an IANA time zone name (such as `Europe/Paris`, `America/New_York` or `UTC`)"
        );
    }
}
