//! Recorded journals as regression fixtures: production executions, exported with
//! `workflows export`, replayed against the code under test.

use std::fmt;
use std::path::Path;

use crate::engine::{EngineError, ExportedExecution, LoadError, ReplayReport, ReplayVerdict, replay_check};

/// Replays the executions exported at `path` (a file `workflows export ID > FILE` wrote, or a
/// directory of them) against the workflows linked in this test, without running any step
/// body, compensation or child — the check `workflows replay-check` runs before a deploy. Ok
/// with one report per execution if this code replays every journal; an error naming each
/// execution it would block (and where its code departs from the journal), or whose version it
/// no longer links.
///
/// ```no_run
/// # async fn demo() {
/// // tests/fixtures/orders/: journals exported from production, kept in the repository.
/// workflows_runtime::testing::replay_fixture("tests/fixtures/orders").await.unwrap();
/// # }
/// ```
pub async fn replay_fixture(path: impl AsRef<Path>) -> Result<Vec<ReplayReport>, FixtureError> {
    let executions = ExportedExecution::load(path.as_ref()).map_err(FixtureError::Load)?;
    let reports = replay_check(executions).await.map_err(FixtureError::Engine)?;
    if reports.iter().any(|report| !matches!(report.verdict, ReplayVerdict::Replays)) {
        return Err(FixtureError::Diverges(reports));
    }
    Ok(reports)
}

/// A fixture that does not replay.
#[derive(Debug)]
#[non_exhaustive]
pub enum FixtureError {
    /// The fixture could not be read.
    Load(LoadError),
    /// The replay engine could not start.
    Engine(EngineError),
    /// Some executions do not replay against this code (all reports, the failing ones first in
    /// the message).
    Diverges(Vec<ReplayReport>),
}

impl fmt::Display for FixtureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Load(error) => write!(f, "{error}"),
            Self::Engine(error) => write!(f, "cannot replay the fixture: {error}"),
            Self::Diverges(reports) => {
                let failing: Vec<&ReplayReport> =
                    reports.iter().filter(|r| !matches!(r.verdict, ReplayVerdict::Replays)).collect();
                write!(
                    f,
                    "{} of {} recorded executions do not replay against this code:",
                    failing.len(),
                    reports.len()
                )?;
                for report in failing {
                    let why = match &report.verdict {
                        ReplayVerdict::Diverges(failure) => format!("would block: {}", failure.message),
                        ReplayVerdict::NotLinked => format!("version {} is not linked in this code", report.version),
                        ReplayVerdict::Replays => unreachable!("only failing reports are listed"),
                    };
                    write!(
                        f,
                        "\n  - {} ({} v{}, {}): {why}",
                        report.execution, report.workflow, report.version, report.state
                    )?;
                }
                write!(f, "\nkeep the step sequence these journals recorded, or branch with `wf.patched(..)`")
            }
        }
    }
}

impl std::error::Error for FixtureError {}
