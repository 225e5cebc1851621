#!/usr/bin/env python3
"""Module-level import cycles of a crate, from `cargo modules dependencies` (cargo-modules 0.27).

cargo-modules draws `use` edges between items; its own `--acyclic` check works on items (a type
and its method form a "cycle"). This folds the item graph into a module graph (an item belongs to
the closest module that contains it) and prints each strongly connected set of modules, with the
imports that tie it together. Exits 1 if there is a cycle.

    cargo modules dependencies -p workflows-runtime --lib --no-externs --no-sysroot \
        | scripts/module_cycles.py
"""
import re
import sys
from collections import defaultdict

NODE = re.compile(r'^\s*"([^"]+)" \[label="([^|"]*)\|')
EDGE = re.compile(r'^\s*"([^"]+)" -> "([^"]+)" \[label="uses"')

modules, edges = set(), []
for line in sys.stdin:
    if m := NODE.match(line):
        if m.group(2).split()[-1] in ("mod", "crate"):
            modules.add(m.group(1))
    elif m := EDGE.match(line):
        edges.append((m.group(1), m.group(2)))


def module_of(path):
    while path not in modules and "::" in path:
        path = path.rsplit("::", 1)[0]
    return path


graph, why = defaultdict(set), defaultdict(list)
for a, b in edges:
    ma, mb = module_of(a), module_of(b)
    if ma != mb:
        graph[ma].add(mb)
        why[(ma, mb)].append(b)

# Tarjan's strongly connected components.
index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]


def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph[v]:
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

print(f"{len(modules)} modules, {sum(len(t) for t in graph.values())} module imports")
for scc in sccs:
    print(f"cycle among {len(scc)} modules:")
    for a in scc:
        for b in sorted(graph[a] & set(scc)):
            items = sorted(set(why[(a, b)]))
            print(f"  {a} -> {b}: {', '.join(i.rsplit('::', 1)[-1] for i in items[:4])}{' …' if len(items) > 4 else ''}")
sys.exit(1 if sccs else 0)
