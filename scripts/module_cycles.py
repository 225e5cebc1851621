#!/usr/bin/env python3
"""Module-level import cycles of a crate, from `cargo modules dependencies` (cargo-modules 0.27).

cargo-modules (rust-analyzer underneath) resolves each `use` declaration to the item it names,
through re-exports; its own `--acyclic` check works on items (a type and its method form a
"cycle"), and it does not see paths written inside function bodies (`super::run::stop()`).
This script folds the item graph into a module graph (an item belongs to the closest module
that contains it), adds the paths written in the crate's source outside `use` declarations
(`crate::`, `super::`, `self::`, a child module's name), resolved the same way, and prints each set of modules that
import each other, with the imports that tie it together. Exits 1 if there is a cycle.

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


for a, b in uses:
    add(a, b, b)


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
        for line in file.read_text().split("#[cfg(test)]\nmod tests")[0].splitlines():
            code = line.split("//")[0]
            if code.lstrip().startswith(("use ", "pub use ", "pub(crate) use ")):
                continue
            for m in PATH.finditer(code):
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
