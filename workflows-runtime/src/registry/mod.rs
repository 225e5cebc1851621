//! The registry: every `#[step]` and `#[workflow]` linked into the program, collected through
//! `inventory` when the first engine starts.

pub(crate) mod definition;
mod info;

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

pub use definition::{CompensationDefinition, StepDefinition, WorkflowDefinition};
pub(crate) use definition::{CompensationHook, StepRegistration, WorkflowRegistration};
pub use info::{Flow, SourceLocation, WorkflowInfo};

/// All registered workflows and steps, by name.
///
/// Built once per process from the `inventory` registrations the macros emit; see
/// [`Engine::registry`](crate::Engine::registry). A workflow may be linked in several versions
/// side by side (`#[workflow(name = "order", version = 1)]` beside `version = 2`): new
/// executions start on the highest, and each execution resumes on the version that started it.
pub struct Registry {
    /// Each workflow's versions, lowest first.
    workflows: HashMap<&'static str, Vec<&'static WorkflowDefinition>>,
    steps: HashMap<&'static str, &'static StepDefinition>,
}

/// A step call found in a workflow's body, resolved against the registry.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// A registered step.
    Step(&'static StepDefinition),
    /// A registered workflow (run as a child workflow).
    Workflow(&'static WorkflowDefinition),
    /// A function taking the workflow context that is neither (a helper function).
    Other(&'static str),
}

impl Registry {
    /// The registry of this process: every workflow and step linked into it.
    ///
    /// Fails if two workflows, or two steps, share a name.
    pub fn global() -> Result<&'static Registry, RegistryError> {
        static REGISTRY: OnceLock<Result<Registry, RegistryError>> = OnceLock::new();
        REGISTRY.get_or_init(Self::collect).as_ref().map_err(Clone::clone)
    }

    fn collect() -> Result<Registry, RegistryError> {
        Self::build(
            inventory::iter::<WorkflowRegistration>.into_iter().map(|r| r.0),
            inventory::iter::<StepRegistration>.into_iter().map(|r| r.0),
        )
    }

    /// The registry of this process, once an engine started: starting checked it
    /// ([`Registry::global`] failed then, if it had to), so every part of a running engine
    /// reads it from here rather than keeping a reference.
    pub(crate) fn checked() -> &'static Registry {
        Registry::global().expect("an engine starts only once the registry is built without error")
    }

    /// A registry of exactly these definitions (the global one is built from `inventory`).
    pub(crate) fn build(
        workflows: impl IntoIterator<Item = &'static WorkflowDefinition>,
        steps: impl IntoIterator<Item = &'static StepDefinition>,
    ) -> Result<Registry, RegistryError> {
        let mut duplicates = Vec::new();
        let mut workflow_map: HashMap<&'static str, Vec<&'static WorkflowDefinition>> = HashMap::new();
        for workflow in workflows {
            let versions = workflow_map.entry(workflow.name()).or_default();
            if let Some(first) = versions.iter().find(|w| w.version() == workflow.version()) {
                duplicates.push(Duplicate {
                    kind: "workflow",
                    name: workflow.name(),
                    version: Some(workflow.version()),
                    first: first.location(),
                    second: workflow.location(),
                });
            } else {
                versions.push(workflow);
                versions.sort_by_key(|w| w.version());
            }
        }
        let mut step_map: HashMap<&'static str, &'static StepDefinition> = HashMap::new();
        for step in steps {
            if let Some(first) = step_map.insert(step.name(), step) {
                duplicates.push(Duplicate {
                    kind: "step",
                    name: step.name(),
                    version: None,
                    first: first.location(),
                    second: step.location(),
                });
            }
        }
        if !duplicates.is_empty() {
            // Registration order depends on link order: sort for a stable message.
            duplicates.sort_by_key(|d| (d.kind, d.name));
            for d in &mut duplicates {
                if d.second < d.first {
                    std::mem::swap(&mut d.first, &mut d.second);
                }
            }
            return Err(RegistryError { duplicates });
        }
        Ok(Registry { workflows: workflow_map, steps: step_map })
    }

    /// The workflow registered under `name`: its highest version, which new executions run.
    pub fn workflow(&self, name: &str) -> Option<&'static WorkflowDefinition> {
        self.workflows.get(name).and_then(|versions| versions.last().copied())
    }

    /// Version `version` of the workflow registered under `name`, if it is linked here: the
    /// code an execution that started on it resumes on.
    pub fn workflow_version(&self, name: &str, version: u32) -> Option<&'static WorkflowDefinition> {
        self.workflows.get(name)?.iter().find(|w| w.version() == version).copied()
    }

    /// The versions of the workflow registered under `name` linked here, lowest first.
    pub fn versions(&self, name: &str) -> &[&'static WorkflowDefinition] {
        self.workflows.get(name).map_or(&[], Vec::as_slice)
    }

    /// The step registered under `name`.
    pub fn step(&self, name: &str) -> Option<&'static StepDefinition> {
        self.steps.get(name).copied()
    }

    /// All workflows, sorted by name: the highest version of each (what new executions run).
    pub fn workflows(&self) -> Vec<&'static WorkflowDefinition> {
        let mut all: Vec<_> = self.workflows.values().filter_map(|versions| versions.last().copied()).collect();
        all.sort_by_key(|w| w.name());
        all
    }

    /// Every version of every workflow, sorted by name, then version.
    pub fn all_versions(&self) -> Vec<&'static WorkflowDefinition> {
        let mut all: Vec<_> = self.workflows.values().flatten().copied().collect();
        all.sort_by_key(|w| (w.name(), w.version()));
        all
    }

    /// All steps, sorted by name.
    pub fn steps(&self) -> Vec<&'static StepDefinition> {
        let mut all: Vec<_> = self.steps.values().copied().collect();
        all.sort_by_key(|s| s.name());
        all
    }

    /// The calls a workflow's body makes with its context, in source order, matched against
    /// the registered steps and workflows by function name (preferring the workflow's module
    /// when several share a function name).
    pub fn calls(&self, workflow: &WorkflowDefinition) -> Vec<Call> {
        workflow.calls().iter().map(|&callee| self.resolve(workflow, callee)).collect()
    }

    /// What the function `callee`, called in `workflow`'s body, is: a step, a workflow, or
    /// neither (preferring the workflow's module when several share a function name).
    pub fn resolve(&self, workflow: &WorkflowDefinition, callee: &'static str) -> Call {
        let module = workflow.location().module_path;
        let pick = |candidates: Vec<(&'static str, Call)>| {
            candidates.iter().find(|(m, _)| *m == module).or(candidates.first()).map(|(_, c)| *c)
        };
        let steps: Vec<_> = self
            .steps
            .values()
            .filter(|s| s.fn_name() == callee)
            .map(|s| (s.location().module_path, Call::Step(s)))
            .collect();
        let workflows: Vec<_> = self
            .workflows
            .values()
            .flatten()
            .filter(|w| w.fn_name() == callee)
            .map(|w| (w.location().module_path, Call::Workflow(w)))
            .collect();
        pick(steps).or_else(|| pick(workflows)).unwrap_or(Call::Other(callee))
    }

    /// Registered workflow names closest to `name`, best first (for "did you mean" messages).
    pub fn similar_workflows(&self, name: &str) -> Vec<&'static str> {
        let mut scored: Vec<_> = self
            .workflows
            .keys()
            .map(|candidate| (edit_distance(name, candidate), *candidate))
            .filter(|(d, candidate)| *d <= candidate.len().max(name.len()) / 2 || candidate.contains(name))
            .collect();
        scored.sort();
        scored.into_iter().take(3).map(|(_, n)| n).collect()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("workflows", &self.workflows().iter().map(|w| w.name()).collect::<Vec<_>>())
            .field("steps", &self.steps().iter().map(|s| s.name()).collect::<Vec<_>>())
            .finish()
    }
}

/// Levenshtein distance, for suggestions.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Two definitions share a name (and, for workflows, a version).
#[derive(Clone, Debug)]
struct Duplicate {
    kind: &'static str,
    name: &'static str,
    version: Option<u32>,
    first: SourceLocation,
    second: SourceLocation,
}

/// The registry could not be built: names must be unique among workflows and among steps.
#[derive(Clone, Debug, thiserror::Error)]
pub struct RegistryError {
    duplicates: Vec<Duplicate>,
}

impl RegistryError {
    /// The duplicated names, as `(kind, name)` with kind `"workflow"` or `"step"`.
    pub fn names(&self) -> Vec<(&'static str, &'static str)> {
        self.duplicates.iter().map(|d| (d.kind, d.name)).collect()
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.duplicates.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match d.version {
                // Versions side by side are fine; the same version twice is not.
                Some(version) => write!(
                    f,
                    "two workflows are registered as `{name}` version {version}: one at {first} and one at \
                     {second}; rename one of them (#[workflow(name = \"...\")]), or, to keep an old body beside \
                     a new one, give them different versions (#[workflow(version = N)]: new executions start on the \
                     highest)",
                    name = d.name,
                    first = d.first,
                    second = d.second,
                )?,
                None => write!(
                    f,
                    "two {kind}s are registered as `{name}`: one at {first} and one at {second}; \
                     rename one of them, or give it another name with #[{kind}(name = \"...\")]",
                    kind = d.kind,
                    name = d.name,
                    first = d.first,
                    second = d.second,
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn distances() {
        assert_eq!(edit_distance("hello_world", "hello_world"), 0);
        assert_eq!(edit_distance("helo_world", "hello_world"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
