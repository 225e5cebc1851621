//! The README's Rust snippets compile as written, so they cannot drift from the API.
//!
//! Each ```rust block of the README is compiled (with trybuild) as a program of its own, in the
//! context its fence names after `rust`:
//! - `with=a,b`: chunks of `tests/readme/context.rs` (the application's own types and
//!   services, which a snippet names without defining), or `#name`: the code of the snippet
//!   fenced `name=...`;
//! - `body` or `body=kind`: the snippet is statements, placed inside the function that chunk
//!   `body=kind` opens (its parameters are the snippet's free variables: `engine`, `wf`...);
//! - `standalone`: the snippet is a whole file (it has its own `main`).
//!
//! Every snippet gets `use workflows_runtime::prelude::*;` — all a user's file needs.

use std::collections::HashMap;
use std::path::PathBuf;

struct Snippet {
    line: usize,
    code: String,
    name: Option<String>,
    with: Vec<String>,
    body: Option<String>,
    standalone: bool,
}

fn snippets(readme: &str) -> Vec<Snippet> {
    let mut found = Vec::new();
    let mut lines = readme.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```rust") else { continue };
        let mut snippet = Snippet {
            line: number + 1,
            code: String::new(),
            name: None,
            with: Vec::new(),
            body: None,
            standalone: false,
        };
        for attribute in info.split_whitespace() {
            match attribute.split_once('=') {
                Some(("name", name)) => snippet.name = Some(name.to_owned()),
                Some(("with", chunks)) => snippet.with = chunks.split(',').map(str::to_owned).collect(),
                Some(("body", kind)) => snippet.body = Some(format!("body={kind}")),
                None if attribute == "body" => snippet.body = Some("body".to_owned()),
                None if attribute == "standalone" => snippet.standalone = true,
                _ => panic!("README line {}: unknown fence attribute `{attribute}`", number + 1),
            }
        }
        for (_, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            snippet.code.push_str(line);
            snippet.code.push('\n');
        }
        found.push(snippet);
    }
    found
}

/// The chunks of the context file, by name.
fn chunks(context: &str) -> HashMap<String, String> {
    let mut chunks = HashMap::new();
    let mut current: Option<(String, String)> = None;
    for line in context.lines() {
        if let Some(name) = line.strip_prefix("// == ") {
            chunks.extend(current.take());
            current = Some((name.trim().to_owned(), String::new()));
        } else if let Some((_, text)) = &mut current {
            text.push_str(line);
            text.push('\n');
        }
    }
    chunks.extend(current);
    chunks
}

#[test]
fn the_readme_snippets_compile_as_written() {
    let readme = include_str!("../../README.md");
    let context = chunks(include_str!("../readme/context.rs"));
    let snippets = snippets(readme);
    assert!(snippets.len() >= 20, "the README's snippets were not found");
    let named: HashMap<&str, &str> =
        snippets.iter().filter_map(|s| Some((s.name.as_deref()?, s.code.as_str()))).collect();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("readme-snippets");
    std::fs::create_dir_all(&dir).unwrap();
    let cases = trybuild::TestCases::new();
    for snippet in &snippets {
        let mut file = format!(
            "// README.md line {}\n#![allow(dead_code, unused_imports, unused_variables, unreachable_code)]\n\
             use workflows_runtime::prelude::*;\n\n",
            snippet.line
        );
        for chunk in &snippet.with {
            let text = match chunk.strip_prefix('#') {
                Some(name) => named.get(name).copied(),
                None => context.get(chunk).map(String::as_str),
            };
            let text = text.unwrap_or_else(|| panic!("README line {}: no chunk `{chunk}`", snippet.line));
            file.push_str(text);
            file.push('\n');
        }
        match &snippet.body {
            Some(kind) => {
                let header = context.get(kind).unwrap_or_else(|| panic!("README line {}: no `{kind}`", snippet.line));
                file.push_str(header);
                file.push_str(&snippet.code);
                file.push_str("    Ok(())\n}\n");
            }
            None => file.push_str(&snippet.code),
        }
        if snippet.standalone {
            // Compiled, not run: its `main` is a real program's (the `workflows` tool's, say).
            file = file.replacen("fn main()", "fn readme_main()", 1);
        }
        file.push_str("\nfn main() {}\n");
        let path = dir.join(format!("readme_line_{}.rs", snippet.line));
        std::fs::write(&path, file).unwrap();
        cases.pass(&path);
    }
}
