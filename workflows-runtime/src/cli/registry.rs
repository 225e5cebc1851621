//! `list` and `show`: what is registered in this program.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::args::Format;
use super::common::{CliError, Context, EXIT_OK};
use super::output::{Table, out, print_json};
use crate::execution::ExecutionState;
use crate::policy::Backoff;
use crate::registry::{Call, Flow, Registry, StepDefinition, WorkflowDefinition};
use crate::store::ExecutionQuery;

/// How many unfinished executions `list` reads at most to count them per version.
const IN_FLIGHT_LIMIT: usize = 100_000;

/// The executions not finished yet on the store, per workflow and version; `None` where there
/// is no store yet (nothing ran).
async fn in_flight(context: &Context) -> Result<Option<BTreeMap<(String, u32), u64>>, CliError> {
    let Ok(store) = context.existing_store().await else { return Ok(None) };
    let states = ExecutionState::ALL.into_iter().filter(|s| !s.is_finished()).collect();
    let query = ExecutionQuery { states, limit: Some(IN_FLIGHT_LIMIT), ..Default::default() };
    let mut counts = BTreeMap::new();
    for record in store.list_executions(&query).await?.records {
        *counts.entry((record.workflow, record.version)).or_default() += 1;
    }
    Ok(Some(counts))
}

/// `workflows list`: each workflow's versions linked here (the highest runs new executions),
/// with the executions of each still in flight on the store.
pub(crate) async fn list(context: &Context) -> Result<u8, CliError> {
    let registry = Registry::global()?;
    let in_flight = in_flight(context).await?;
    let count = |w: &WorkflowDefinition| {
        in_flight.as_ref().map(|counts| counts.get(&(w.name().to_owned(), w.version())).copied().unwrap_or(0))
    };
    if context.json {
        let workflows: Vec<Value> = registry
            .all_versions()
            .into_iter()
            .map(|w| {
                let mut json = workflow_json(w);
                json["latest"] = json!(registry.workflow(w.name()).is_some_and(|l| l.version() == w.version()));
                json["in_flight"] = json!(count(w));
                json
            })
            .collect();
        let steps: Vec<Value> = registry.steps().into_iter().map(step_json).collect();
        print_json(&json!({ "workflows": workflows, "steps": steps }))?;
        return Ok(EXIT_OK);
    }
    if registry.workflows().is_empty() {
        out!(
            "no workflows are registered in this program: is the crate that defines them linked in? \
             (add `use my_crate as _;` to the binary)"
        );
        return Ok(EXIT_OK);
    }
    out!("Workflows");
    let mut table = Table::new(&["  NAME", "VERSION", "IN FLIGHT", "INPUT -> OUTPUT", "CALLS", "DEFINED AT"]);
    for workflow in registry.all_versions() {
        let mut calls = workflow.calls().join(", ");
        if calls.is_empty() {
            calls = "-".into();
        }
        let mut types = format!("{} -> {}", workflow.input_type(), workflow.output_type());
        if let Some(timeout) = workflow.timeout() {
            types.push_str(&format!(" (timeout {})", humantime::format_duration(timeout)));
        }
        if let Some(schedule) = workflow.schedule() {
            types.push_str(&format!(" (schedule `{}` {})", schedule.pattern, schedule.zone));
        }
        if let Some(event) = workflow.on_event() {
            types.push_str(&format!(" (on event `{event}`)"));
        }
        let versions = registry.versions(workflow.name()).len();
        let version = match registry.workflow(workflow.name()) {
            Some(latest) if versions > 1 && latest.version() == workflow.version() => {
                format!("{} (new runs)", workflow.version())
            }
            _ => workflow.version().to_string(),
        };
        let running = count(workflow).map_or_else(|| "-".to_owned(), |n| n.to_string());
        table.row(vec![
            format!("  {}", workflow.name()),
            version,
            running,
            types,
            calls,
            location(workflow.location()),
        ]);
    }
    table.print();
    out!("\nSteps");
    let mut table = Table::new(&["  NAME", "POLICIES", "COMPENSATION", "DEFINED AT"]);
    for step in registry.steps() {
        let compensation = step.compensation().map_or("-".to_owned(), |c| c.name().to_owned());
        table.row(vec![format!("  {}", step.name()), policies(step), compensation, location(step.location())]);
    }
    table.print();
    Ok(EXIT_OK)
}

fn location(location: crate::registry::SourceLocation) -> String {
    format!("{}:{}", location.file, location.line)
}

/// A step's policies in one line: `async, retry 5x exponential 100ms..10s, timeout 30s`.
fn policies(step: &StepDefinition) -> String {
    let policy = step.policy();
    let mut parts = Vec::new();
    if step.is_async() {
        parts.push("async".to_owned());
    }
    if let Some(retry) = policy.retry {
        parts.push(format!("retry {}x {}", retry.max_attempts(), backoff(retry.backoff())));
    }
    if let Some(timeout) = policy.timeout {
        parts.push(format!("timeout {}", humantime::format_duration(timeout)));
    }
    if policy.on_failure != crate::OnFailure::Fail {
        parts.push(format!("on_failure {}", policy.on_failure.as_str()));
    }
    if parts.is_empty() { "-".to_owned() } else { parts.join(", ") }
}

fn backoff(backoff: Backoff) -> String {
    match backoff {
        Backoff::Fixed(wait) => format!("fixed {}", humantime::format_duration(wait)),
        Backoff::Exponential { initial, factor, max } => format!(
            "exponential {}..{} x{factor}",
            humantime::format_duration(initial),
            humantime::format_duration(max)
        ),
    }
}

fn workflow_json(workflow: &WorkflowDefinition) -> Value {
    json!({
        "name": workflow.name(),
        "function": workflow.fn_name(),
        "module": workflow.location().module_path,
        "file": workflow.location().file,
        "line": workflow.location().line,
        "input": workflow.input_type(),
        "output": workflow.output_type(),
        "version": workflow.version(),
        "fingerprint": workflow.fingerprint(),
        "timeout_ms": workflow.timeout().map(|t| t.as_millis() as u64),
        "retention_ms": workflow.retention().map(|t| t.as_millis() as u64),
        "on_event": workflow.on_event(),
        "schedule": workflow.schedule().map(|s| json!({
            "pattern": s.pattern,
            "tz": s.zone,
            "overlap": s.overlap.as_str(),
            "catch_up_ms": s.catch_up.map(|d| d.as_millis() as u64),
            "jitter_ms": s.jitter.map(|d| d.as_millis() as u64),
        })),
        "calls": workflow.calls(),
    })
}

fn step_json(step: &StepDefinition) -> Value {
    let policy = step.policy();
    let retry = policy.retry.map(|retry| {
        let backoff = match retry.backoff() {
            Backoff::Fixed(wait) => json!({ "fixed_ms": wait.as_millis() as u64 }),
            Backoff::Exponential { initial, factor, max } => json!({
                "initial_ms": initial.as_millis() as u64, "factor": factor, "max_ms": max.as_millis() as u64,
            }),
        };
        json!({ "max_attempts": retry.max_attempts(), "backoff": backoff, "jitter": retry.jitter() })
    });
    json!({
        "name": step.name(),
        "function": step.fn_name(),
        "module": step.location().module_path,
        "file": step.location().file,
        "line": step.location().line,
        "async": step.is_async(),
        "compensation": step.compensation().map(|c| c.name()),
        "retry": retry,
        "timeout_ms": policy.timeout.map(|t| t.as_millis() as u64),
        "on_failure": policy.on_failure.as_str(),
    })
}

/// `workflows show NAME`.
pub(crate) fn show(context: &Context, name: &str, format: Format) -> Result<u8, CliError> {
    let registry = Registry::global()?;
    let workflow = registry.workflow(name).ok_or_else(|| crate::RunError::UnknownWorkflow {
        name: name.to_owned(),
        similar: registry.similar_workflows(name),
    })?;
    if context.json {
        let flow: Vec<Value> = workflow.flow().iter().map(|node| flow_json(registry, workflow, node)).collect();
        print_json(&json!({ "workflow": workflow_json(workflow), "flow": flow }))?;
        return Ok(EXIT_OK);
    }
    let text = match format {
        Format::Text => outline(registry, workflow),
        Format::Mermaid => Graph::build(registry, workflow).mermaid(),
        Format::Dot => Graph::build(registry, workflow).dot(workflow.name()),
    };
    super::output::write_out(format_args!("{text}"), false);
    Ok(EXIT_OK)
}

/// What a called name is, for people and for JSON.
fn kind(registry: &Registry, workflow: &WorkflowDefinition, name: &'static str) -> (&'static str, String) {
    if name == "@sleep" {
        return ("sleep", "durable timer".to_owned());
    }
    if let Some(event) = name.strip_prefix("@event:") {
        return ("event", format!("waits for event `{event}`"));
    }
    match registry.resolve(workflow, name) {
        Call::Step(step) => {
            let mut detail = format!("step `{}`", step.name());
            let policies = policies(step);
            if policies != "-" {
                detail.push_str(&format!(", {policies}"));
            }
            if let Some(compensation) = step.compensation() {
                detail.push_str(&format!(", compensated by {}", compensation.name()));
            }
            ("step", detail)
        }
        Call::Workflow(child) => ("workflow", format!("child workflow `{}`", child.name())),
        Call::Other(_) => ("function", "helper function (its steps are not shown)".to_owned()),
    }
}

fn flow_json(registry: &Registry, workflow: &WorkflowDefinition, node: &Flow) -> Value {
    let lane = |lane: &[Flow]| -> Value { lane.iter().map(|n| flow_json(registry, workflow, n)).collect() };
    match *node {
        Flow::Call(name) => {
            let (kind, _) = kind(registry, workflow, name);
            let registered = match registry.resolve(workflow, name) {
                Call::Step(step) => Some(step.name()),
                Call::Workflow(child) => Some(child.name()),
                Call::Other(_) => None,
            };
            json!({ "call": name, "kind": kind, "name": registered })
        }
        Flow::Branch(lanes) => json!({ "branch": lanes.iter().map(|l| lane(l)).collect::<Vec<_>>() }),
        Flow::Parallel(lanes) => json!({ "parallel": lanes.iter().map(|l| lane(l)).collect::<Vec<_>>() }),
        Flow::Loop(body) => json!({ "loop": lane(body) }),
        Flow::FanOut(body) => json!({ "fan_out": lane(body) }),
    }
}

/// The text outline of `show`.
fn outline(registry: &Registry, workflow: &WorkflowDefinition) -> String {
    let mut out = format!(
        "workflow {} ({}:{})\n  input {} -> output {}\n",
        workflow.name(),
        workflow.location().file,
        workflow.location().line,
        workflow.input_type(),
        workflow.output_type()
    );
    if let Some(schedule) = workflow.schedule() {
        let catch_up =
            schedule.catch_up.map_or_else(|| "latest".to_owned(), |d| humantime::format_duration(d).to_string());
        out.push_str(&format!(
            "  schedule `{}` ({}), overlap {}, catch-up {catch_up}\n",
            schedule.pattern,
            schedule.zone,
            schedule.overlap.as_str()
        ));
    }
    if let Some(event) = workflow.on_event() {
        out.push_str(&format!("  starts on event `{event}`\n"));
    }
    if workflow.flow().is_empty() {
        out.push_str("  (no step calls found in its body)\n");
    }
    let mut number = 0;
    write_lane(&mut out, registry, workflow, workflow.flow(), 1, &mut number);
    out
}

fn write_lane(
    out: &mut String,
    registry: &Registry,
    workflow: &WorkflowDefinition,
    lane: &[Flow],
    depth: usize,
    number: &mut usize,
) {
    let indent = "  ".repeat(depth);
    for node in lane {
        match *node {
            Flow::Call(name) => {
                *number += 1;
                let (_, detail) = kind(registry, workflow, name);
                out.push_str(&format!("{indent}{number}. {name}  ({detail})\n"));
            }
            Flow::Branch(lanes) | Flow::Parallel(lanes) => {
                let (title, each) = match node {
                    Flow::Branch(_) => ("one of:", "branch"),
                    _ => ("in parallel:", "lane"),
                };
                out.push_str(&format!("{indent}{title}\n"));
                for (i, inner) in lanes.iter().enumerate() {
                    if inner.is_empty() {
                        out.push_str(&format!("{indent}  {each} {}: (nothing)\n", i + 1));
                        continue;
                    }
                    out.push_str(&format!("{indent}  {each} {}:\n", i + 1));
                    write_lane(out, registry, workflow, inner, depth + 2, number);
                }
            }
            Flow::Loop(body) => {
                out.push_str(&format!("{indent}repeated:\n"));
                write_lane(out, registry, workflow, body, depth + 1, number);
            }
            Flow::FanOut(body) => {
                out.push_str(&format!("{indent}for each item, concurrently (fan_out):\n"));
                write_lane(out, registry, workflow, body, depth + 1, number);
            }
        }
    }
}

/// A flowchart of a workflow's body: nodes and edges, drawn as Mermaid or DOT.
struct Graph {
    nodes: Vec<(Shape, String)>,
    edges: Vec<(usize, usize, Option<&'static str>)>,
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Terminal,
    Step,
    Child,
    Wait,
    Decision,
    Fork,
}

impl Graph {
    fn build(registry: &Registry, workflow: &WorkflowDefinition) -> Graph {
        let mut graph = Graph { nodes: Vec::new(), edges: Vec::new() };
        let start = graph.node(Shape::Terminal, "start".to_owned());
        let exits = graph.lane(registry, workflow, workflow.flow(), vec![start]);
        let end = graph.node(Shape::Terminal, "end".to_owned());
        graph.connect(&exits, end, None);
        graph
    }

    fn node(&mut self, shape: Shape, label: String) -> usize {
        self.nodes.push((shape, label));
        self.nodes.len() - 1
    }

    fn connect(&mut self, from: &[usize], to: usize, label: Option<&'static str>) {
        for &from in from {
            self.edges.push((from, to, label));
        }
    }

    /// Adds `lane` after the nodes `entries`; returns the nodes the lane ends at.
    fn lane(
        &mut self,
        registry: &Registry,
        workflow: &WorkflowDefinition,
        lane: &[Flow],
        mut entries: Vec<usize>,
    ) -> Vec<usize> {
        for node in lane {
            entries = match *node {
                Flow::Call(name) => {
                    let (shape, label) = match registry.resolve(workflow, name) {
                        Call::Step(step) => (Shape::Step, step.name()),
                        Call::Workflow(child) => (Shape::Child, child.name()),
                        Call::Other(_) if name.starts_with('@') => (Shape::Wait, name),
                        Call::Other(_) => (Shape::Step, name),
                    };
                    let id = self.node(shape, label.to_owned());
                    self.connect(&entries, id, None);
                    vec![id]
                }
                Flow::Branch(lanes) => {
                    let decision = self.node(Shape::Decision, "branch".to_owned());
                    self.connect(&entries, decision, None);
                    let mut exits = Vec::new();
                    for inner in lanes {
                        if inner.is_empty() {
                            exits.push(decision);
                        } else {
                            exits.extend(self.lane(registry, workflow, inner, vec![decision]));
                        }
                    }
                    exits
                }
                Flow::Parallel(lanes) => {
                    let fork = self.node(Shape::Fork, "parallel".to_owned());
                    self.connect(&entries, fork, None);
                    let mut exits = Vec::new();
                    for inner in lanes {
                        exits.extend(self.lane(registry, workflow, inner, vec![fork]));
                    }
                    let join = self.node(Shape::Fork, "join".to_owned());
                    self.connect(&exits, join, None);
                    vec![join]
                }
                Flow::Loop(body) => {
                    let head = self.node(Shape::Decision, "loop".to_owned());
                    self.connect(&entries, head, None);
                    let exits = self.lane(registry, workflow, body, vec![head]);
                    self.connect(&exits, head, Some("again"));
                    vec![head]
                }
                Flow::FanOut(body) => {
                    let fork = self.node(Shape::Fork, "fan_out: each item".to_owned());
                    self.connect(&entries, fork, None);
                    let exits = self.lane(registry, workflow, body, vec![fork]);
                    let join = self.node(Shape::Fork, "all items".to_owned());
                    self.connect(&exits, join, None);
                    vec![join]
                }
            };
        }
        entries
    }

    fn mermaid(&self) -> String {
        let mut out = String::from("flowchart TD\n");
        for (id, (shape, label)) in self.nodes.iter().enumerate() {
            let label = label.replace('"', "#quot;");
            let node = match shape {
                Shape::Terminal => format!("n{id}([\"{label}\"])"),
                Shape::Step => format!("n{id}[\"{label}\"]"),
                Shape::Child => format!("n{id}[[\"{label}\"]]"),
                Shape::Wait => format!("n{id}>\"{label}\"]"),
                Shape::Decision => format!("n{id}{{\"{label}\"}}"),
                Shape::Fork => format!("n{id}{{{{\"{label}\"}}}}"),
            };
            out.push_str(&format!("    {node}\n"));
        }
        for (from, to, label) in &self.edges {
            match label {
                Some(label) => out.push_str(&format!("    n{from} -. {label} .-> n{to}\n")),
                None => out.push_str(&format!("    n{from} --> n{to}\n")),
            }
        }
        out
    }

    fn dot(&self, name: &str) -> String {
        let mut out = format!("digraph \"{}\" {{\n    rankdir=TB;\n", name.replace('"', "\\\""));
        for (id, (shape, label)) in self.nodes.iter().enumerate() {
            let shape = match shape {
                Shape::Terminal => "oval",
                Shape::Step => "box",
                Shape::Child => "box3d",
                Shape::Wait => "cds",
                Shape::Decision => "diamond",
                Shape::Fork => "hexagon",
            };
            out.push_str(&format!("    n{id} [label=\"{}\", shape={shape}];\n", label.replace('"', "\\\"")));
        }
        for (from, to, label) in &self.edges {
            match label {
                Some(label) => out.push_str(&format!("    n{from} -> n{to} [label=\"{label}\", style=dashed];\n")),
                None => out.push_str(&format!("    n{from} -> n{to};\n")),
            }
        }
        out.push_str("}\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::SourceLocation;

    type Body<'a> = std::pin::Pin<
        Box<
            dyn std::future::Future<Output = Result<Box<serde_json::value::RawValue>, crate::WorkflowError>>
                + Send
                + 'a,
        >,
    >;

    fn entry<'a>(_: &'a crate::Workflow, _: &serde_json::value::RawValue) -> Result<Body<'a>, serde_json::Error> {
        unreachable!("never run")
    }

    fn check(_: &serde_json::value::RawValue) -> Result<(), serde_json::Error> {
        Ok(())
    }

    /// `a; if .. { b } else {}; loop { c }; join!(d, e); fan_out(f); @sleep`
    static FLOW: &[Flow] = &[
        Flow::Call("a"),
        Flow::Branch(&[&[Flow::Call("b")], &[]]),
        Flow::Loop(&[Flow::Call("c")]),
        Flow::Parallel(&[&[Flow::Call("d")], &[Flow::Call("e")]]),
        Flow::FanOut(&[Flow::Call("f")]),
        Flow::Call("@sleep"),
    ];

    static DEFINITION: WorkflowDefinition = crate::__private::workflow_definition(crate::__private::WorkflowParts {
        name: "shapes",
        fn_name: "shapes",
        location: SourceLocation { module_path: "m", file: "m.rs", line: 1 },
        fingerprint: "0",
        version: 0,
        input_type: "u32",
        output_type: "u32",
        calls: &["a", "b", "c", "d", "e", "f"],
        flow: FLOW,
        entry,
        check_input: check,
        timeout: None,
        retention: None,
        schedule: None,
        on_event: None,
    });

    #[test]
    fn branches_loops_lanes_and_fan_outs_are_drawn() {
        let registry = Registry::build([&DEFINITION], []).unwrap();
        let text = outline(&registry, &DEFINITION);
        for expected in [
            "  1. a  (helper function",
            "  one of:\n    branch 1:\n      2. b",
            "    branch 2: (nothing)",
            "  repeated:\n    3. c",
            "  in parallel:\n    lane 1:\n      4. d",
            "    lane 2:\n      5. e",
            "  for each item, concurrently (fan_out):\n    6. f",
            "  7. @sleep  (durable timer)",
        ] {
            assert!(text.contains(expected), "{expected:?} in:\n{text}");
        }

        let graph = Graph::build(&registry, &DEFINITION);
        let mermaid = graph.mermaid();
        // start -> a -> branch; branch -> b and branch (empty lane) both -> loop.
        for expected in [
            "n0([\"start\"])",
            "n1[\"a\"]",
            "n2{\"branch\"}",
            "n0 --> n1",
            "n1 --> n2",
            "n2 --> n3",
            "n3 --> n4",
            "n2 --> n4",
            "n5 -. again .-> n4",
            "n6{{\"parallel\"}}",
            "n9{{\"join\"}}",
            "n13>\"@sleep\"]",
            "n13 --> n14",
        ] {
            assert!(mermaid.contains(expected), "{expected:?} in:\n{mermaid}");
        }
        let dot = graph.dot("shapes");
        assert!(dot.contains("n5 -> n4 [label=\"again\", style=dashed];"), "{dot}");
        assert!(dot.contains("shape=diamond"), "{dot}");
        assert_eq!(dot.matches(" -> ").count(), graph.edges.len());
    }
}
