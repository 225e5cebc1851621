//! Shared helpers of the commands: reading JSON arguments, printing JSON and durations.

use std::io::Read;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;

use super::common::CliError;

/// Reads a JSON argument: JSON text, `@FILE`, or `@-` for standard input. `what` names the
/// option in messages; `expects` names the type it must decode as, if known.
pub(crate) fn json_arg(what: &str, text: &str, expects: Option<&str>) -> Result<Box<RawValue>, CliError> {
    let text = match text.strip_prefix('@') {
        Some("-") => {
            let mut buffer = String::new();
            std::io::stdin()
                .read_to_string(&mut buffer)
                .map_err(|e| CliError::new(format!("cannot read {what} from standard input: {e}")))?;
            buffer
        }
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| CliError::new(format!("cannot read {what} from `{path}`: {e}")))?,
        None => text.to_owned(),
    };
    serde_json::from_str::<Box<RawValue>>(&text).map_err(|e| {
        let expected = expects.map(|t| format!("; it must be a JSON `{t}`")).unwrap_or_default();
        CliError::new(format!(
            "{what} is not valid JSON: {} at line {}, column {}{expected}",
            describe(&e),
            e.line(),
            e.column()
        ))
    })
}

/// serde_json's message without its own " at line L column C" suffix.
fn describe(error: &serde_json::Error) -> String {
    let message = error.to_string();
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message,
    }
}

/// Prints a line on stdout.
///
/// A reader that went away (`workflows executions | head`, a closed terminal) never ends the
/// command: the command may be driving an execution it woke, which would otherwise stay
/// `running` until its lease expires. Later output is dropped; the work goes on.
macro_rules! out {
    () => {
        $crate::cli::output::write_out(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::cli::output::write_out(format_args!($($arg)*), true)
    };
}
pub(crate) use out;

/// Prints a line on stderr (progress, notes, errors for people). A closed stderr is ignored,
/// as for [`out!`].
macro_rules! note {
    ($($arg:tt)*) => {
        $crate::cli::output::write_err(format_args!($($arg)*))
    };
}
pub(crate) use note;

/// Set once standard output could not be written: later output is skipped.
static STDOUT_GONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// [`out!`] without the newline.
pub(crate) fn write_out(args: std::fmt::Arguments<'_>, newline: bool) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    let written = if newline { writeln!(stdout, "{args}") } else { write!(stdout, "{args}") };
    if let Err(error) = written.and_then(|()| stdout.flush()) {
        STDOUT_GONE.store(true, Ordering::Relaxed);
        if error.kind() != std::io::ErrorKind::BrokenPipe {
            note!("error: cannot write to standard output: {error}");
        }
    }
}

/// [`note!`]: one line on stderr, or nothing if stderr is closed.
pub(crate) fn write_err(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "{args}").and_then(|()| stderr.flush());
}

/// Prints `value` as one JSON document on stdout.
pub(crate) fn print_json(value: &impl Serialize) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::new(format!("cannot print JSON: {e}")))?;
    out!("{text}");
    Ok(())
}

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

/// A duration for people: `850µs`, `12.3ms`, `4.20s`, `3m05s`, `2h10m`, `3d4h`.
pub(crate) fn duration(d: Duration) -> String {
    let micros = d.as_micros();
    match micros {
        0..1_000 => format!("{micros}µs"),
        1_000..1_000_000 => format!("{:.1}ms", micros as f64 / 1e3),
        1_000_000..60_000_000 => format!("{:.2}s", micros as f64 / 1e6),
        _ => {
            let secs = d.as_secs();
            match secs {
                0..3600 => format!("{}m{:02}s", secs / 60, secs % 60),
                3600..86_400 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
                _ => format!("{}d{}h", secs / 86_400, secs % 86_400 / 3600),
            }
        }
    }
}

/// Milliseconds as a JSON number with microsecond precision.
pub(crate) fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1e3
}

/// An age (`1h`, `30d`) or a time (RFC 3339) as a timestamp: that long ago, or that time.
pub(crate) fn time_arg(what: &str, text: &str) -> Result<crate::Timestamp, CliError> {
    if let Ok(age) = humantime::parse_duration(text) {
        return Ok(crate::Timestamp::from_micros(crate::Timestamp::now().as_micros() - age.as_micros() as i64));
    }
    humantime::parse_rfc3339_weak(text).map(crate::Timestamp::from).map_err(|_| {
        CliError::new(format!(
            "{what} `{text}` is neither an age (`90s`, `1h`, `7d`) nor a time (`2026-11-27T08:00:00Z`)"
        ))
    })
}

/// A table with left-aligned columns, for people.
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self { rows: vec![header.iter().map(|h| (*h).to_owned()).collect()] }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn print(&self) {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| self.rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            out!("{}", line.trim_end());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_truncation() {
        assert_eq!(duration(Duration::from_micros(850)), "850µs");
        assert_eq!(duration(Duration::from_micros(12_345)), "12.3ms");
        assert_eq!(duration(Duration::from_millis(4_200)), "4.20s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(3 * 86_400 + 4 * 3600)), "3d4h");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn json_arguments_say_where_they_are_wrong() {
        let error = json_arg("--input", "{\"name\": }", Some("HelloInput")).unwrap_err().to_string();
        assert!(error.contains("line 1, column 10"), "{error}");
        assert!(error.contains("`HelloInput`"), "{error}");
        assert_eq!(json_arg("--input", " [1, 2] ", None).unwrap().get(), "[1, 2]");
    }
}
