#!/usr/bin/env python3
"""Module-level import cycles of a crate: the modules each module's source file imports.

A module imports another when its file names an item defined there: in a `use` declaration
or in a path written in the code (`crate::`, `super::`, `self::`, a child module's name). The
items, the modules and the re-exports come from `cargo modules dependencies` (cargo-modules
0.27, rust-analyzer underneath), which resolves names through re-exports; the paths are read
from the source, so that an `impl` block counts for the file it is written in. (cargo-modules'
own `--acyclic` works on items — a type and its method form a "cycle" — and counts a method
for its type's module, wherever it is written.) Prints each set of modules that import each
other, with the imports that tie it together. Exits 1 if there is a cycle. An inline module
(`mod sealed { .. }`) is read as part of its file's module, so write `crate::` paths in one,
not `super::`.

    cargo modules dependencies -p workflows-runtime --lib --features cli --no-externs --no-sysroot \\
        | scripts/module_cycles.py workflows-runtime/src
"""
import pathlib
import re
import sys
from collections import defaultdict

NODE = re.compile(r'^\s*"([^"]+)" \[label="([^|"]*)\|')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')
PATH = re.compile(r"(?<![\w:])([a-z_][a-z0-9_]*)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")

modules, items, uses = set(), set(), []
for line in sys.stdin:
    if m := NODE.match(line):
        items.add(m.group(1))
        if m.group(2).split()[-1] in ("mod", "crate"):
            modules.add(m.group(1))
    elif m := EDGE.match(line):
        uses.append((m.group(1), m.group(2)))
root = min(modules, key=len)


def module_of(path):
    while path not in modules and "::" in path:
        path = path.rsplit("::", 1)[0]
    return path


# What each module re-exports (`pub use`): name -> the item's own path.
reexports = defaultdict(dict)
for a, b in uses:
    if a in modules:
        reexports[a][b.rsplit("::", 1)[-1]] = b

graph, why = defaultdict(set), defaultdict(set)


def add(a, b, item):
    ma, mb = module_of(a), module_of(b)
    if ma != mb:
        graph[ma].add(mb)
        why[(ma, mb)].add(item.rsplit("::", 1)[-1])


def use_paths(tree):
    """The paths a `use` tree names: `a::{b, c::{d, e as f}}` -> a::b, a::c::d, a::c::e."""
    return _paths(re.sub(r"\s+", "", re.sub(r"\s+as\s+\w+", "", tree)))


def _paths(tree):
    if "{" not in tree:
        return [tree]
    i = tree.index("{")
    prefix, inner = tree[:i], tree[i + 1 : tree.rindex("}")]
    depth, parts, start = 0, [], 0
    for j, c in enumerate(inner):
        depth += c == "{"
        depth -= c == "}"
        if c == "," and depth == 0:
            parts.append(inner[start:j])
            start = j + 1
    parts.append(inner[start:])
    return [prefix.rstrip(":") if p == "self" else prefix + p for part in filter(None, parts) for p in _paths(part)]


def resolve(module, segments):
    """The item `segments` names from `module` (modules walked, re-exports followed)."""
    for i, name in enumerate(segments):
        child = f"{module}::{name}"
        if child in modules:
            module = child
            continue
        if child in items:
            return child
        if name in reexports[module]:
            return reexports[module][name]
        return module
    return module


if len(sys.argv) > 1:
    src = pathlib.Path(sys.argv[1])
    for file in sorted(src.rglob("*.rs")):
        rel = file.relative_to(src).with_suffix("")
        parts = [p for p in rel.parts if p not in ("lib", "mod", "main")]
        module = "::".join([root, *parts])
        if module not in modules:
            continue  # not compiled with these features
        text = file.read_text().split("#[cfg(test)]\nmod tests")[0]
        code = "\n".join(line.split("//")[0] for line in text.splitlines())
        uses_here = re.findall(r"(?:^|\n)\s*(?:pub(?:\([\w:]+\))?\s+)?use\s+([^;]+);", code)
        code = re.sub(r"(?:^|\n)\s*(?:pub(?:\([\w:]+\))?\s+)?use\s+[^;]+;", "\n", code)
        for tree in uses_here:
            for path in use_paths(tree):
                code += "\n" + path.replace("*", "").rstrip(":") + "::__"
        for line in code.splitlines():
            for m in PATH.finditer(line):
                first, rest = m.group(1), m.group(2).split("::")[1:]
                bases = {"crate": root, "self": module, "super": module.rsplit("::", 1)[0]}
                if first in bases:
                    base = bases[first]
                elif f"{module}::{first}" in modules:  # a child module: `driver::drive(..)`
                    base, rest = f"{module}::{first}", rest
                else:
                    continue  # another crate, a type's associated item, a local `use` alias
                target = resolve(base, rest)
                add(module, target, target)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in sorted(graph[v]):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        scc = []
        while True:
            w = stack.pop()
            on.discard(w)
            scc.append(w)
            if w == v:
                break
        if len(scc) > 1:
            sccs.append(sorted(scc))


sys.setrecursionlimit(10000)
for v in sorted(modules):
    if v not in index:
        visit(v)

short = lambda m: m[len(root) + 2:] or root  # noqa: E731
print(f"{len(modules)} modules, {sum(len(t) for t in graph.values())} imports between modules")
for scc in sccs:
    print(f"cycle among {len(scc)} modules:")
    for a in scc:
        for b in sorted(graph[a] & set(scc)):
            names = sorted(why[(a, b)])
            print(f"  {short(a)} -> {short(b)}: {', '.join(names[:4])}{' …' if len(names) > 4 else ''}")
if not sccs:
    print("no cycle")
sys.exit(1 if sccs else 0)
