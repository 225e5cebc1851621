#!/usr/bin/env bash
# Runs the anchor harnesses (other engines) and our bench on this machine, one after another,
# and prints the ratios per workload and store.
#
#   examples/compare.sh ANCHORS_DIR [--systems workflows,medusa,dbos,restate]
#                       [--workloads seq-10,concurrent-10,saga-5,parallel-10,long-1000,waiting-10k]
#                       [--scale F] [--out FILE]
#
# ANCHORS_DIR holds medusa/, dbos/ and restate/, each with the harness its README describes
# (here: ../shared/anchors). Every harness prints one JSON line per workload; all lines go to
# FILE (default: a file under the system's temp directory, printed at the end), then a table of
# µs per workflow, steps per second, and how many times faster workflows-rs is:
#   - in memory, against Medusa's in-memory engine (ours on one thread, as Medusa's JavaScript runs,
#     and concurrent-10 also on tokio's multi-threaded runtime over every core);
#   - on SQLite with `Full` durability (an fsync per commit), against DBOS (SQLite and
#     PostgreSQL system databases) and Restate, which also sync their logs before answering;
#   - on PostgreSQL (a throw-away schema on the server $WORKFLOWS_BENCH_POSTGRES, default
#     postgres://postgres@127.0.0.1:5432/test), against DBOS on PostgreSQL (its harness starts
#     its own throw-away PostgreSQL 15 cluster with stock settings: fsync and synchronous_commit on).
# The durable anchors take minutes (DBOS about 100 s, Restate about 20 s at scale 1); pick
# systems and workloads to shorten a run. Needs node/npm (Medusa, Restate) and python3 (DBOS,
# Restate, and this script's table); the anchors' setup scripts install their own packages.
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 64; }
[ $# -ge 1 ] || usage
case "$1" in -h|--help) usage ;; esac
ANCHORS="$(cd "$1" && pwd)" || { echo "compare.sh: no anchors folder at $1" >&2; exit 64; }
shift
SYSTEMS=workflows,medusa,dbos,restate
WORKLOADS=seq-10,concurrent-10,saga-5,parallel-10,long-1000,waiting-10k
SCALE=1
OUT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --systems) SYSTEMS="$2"; shift 2 ;;
    --workloads) WORKLOADS="$2"; shift 2 ;;
    --scale) SCALE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) usage ;;
    *) echo "compare.sh: unknown argument $1" >&2; usage ;;
  esac
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$(mktemp "${TMPDIR:-/tmp}/workflows-compare.XXXXXX.jsonl")}"
: >"$OUT"

has() { [[ ",$1," == *",$2,"* ]]; }
# The workloads of $WORKLOADS that a harness supports (comma-separated), or nothing.
only() {
  local supported="$1" picked=() w
  IFS=, read -r -a ws <<<"$WORKLOADS"
  for w in "${ws[@]}"; do has "$supported" "$w" && picked+=("$w"); done
  (IFS=,; echo "${picked[*]}")
}
note() { echo "== $*" >&2; }

if has "$SYSTEMS" workflows; then
  note "workflows-rs: building the bench (release)"
  (cd "$ROOT" && cargo build --release -q -p workflows-examples --bin bench)
  BENCH="$ROOT/target/release/bench"
  ours="$(only seq-10,concurrent-10,saga-5,parallel-10,long-1000,waiting-10k "")"
  for store in memory sqlite "postgres=${WORKFLOWS_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/test}"; do
    note "workflows-rs, store ${store%%=*}: $ours"
    "$BENCH" --store "$store" --workload "$ours" --scale "$SCALE" | tee -a "$OUT"
  done
  # The runs above use one thread, as Medusa's JavaScript does; concurrent work is also
  # measured on tokio's multi-threaded runtime over both cores, as a service would run it.
  if has "$WORKLOADS" concurrent-10; then
    note "workflows-rs, store memory, multi-threaded runtime: concurrent-10"
    "$BENCH" --store memory --workload concurrent-10 --threads multi --scale "$SCALE" | tee -a "$OUT"
  fi
fi

if has "$SYSTEMS" medusa; then
  w="$(only seq-10,concurrent-10,saga-5,parallel-10)"
  if [ -n "$w" ]; then
    note "Medusa (in memory): $w"
    (cd "$ANCHORS/medusa" && { [ -d node_modules ] || npm ci --no-audit --no-fund --loglevel=error >&2; } \
      && node bench.mjs --only "$w" --scale "$SCALE") | tee -a "$OUT"
  fi
fi

if has "$SYSTEMS" dbos; then
  w="$(only seq-10,concurrent-10,saga-5)"
  if [ -n "$w" ]; then
    note "DBOS (SQLite, PostgreSQL): $w"
    "$ANCHORS/dbos/run.sh" --scale "$SCALE" --workloads "$w" | tee -a "$OUT"
  fi
fi

if has "$SYSTEMS" restate; then
  w="$(only seq-10,concurrent-10,saga-5)"
  if [ -n "$w" ]; then
    note "Restate: $w"
    "$ANCHORS/restate/run.sh" --scale "$SCALE" --workloads "$w" | tee -a "$OUT"
  fi
fi

note "results: $OUT"
python3 - "$OUT" <<'PY'
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip().startswith("{")]
def key(r):
    system = r["system"]
    store = r.get("store") or "memory"
    if system == "medusa-inmemory":
        store = "memory"
    if r.get("threads") == "multi":
        store += ", 2 threads"
    return system, store, r["workload"]
by = {key(r): r for r in rows}
ours = {k: r for k, r in by.items() if k[0] == "workflows-rs"}
# Which of our stores each anchor is compared with.
pairs = [
    ("medusa-inmemory", "memory", "memory"),
    ("medusa-inmemory", "memory", "memory, 2 threads"),
    ("dbos-python", "sqlite", "sqlite"),
    ("dbos-python", "postgres", "sqlite"),
    ("dbos-python", "postgres", "postgres"),
    ("restate-python", "restate", "sqlite"),
]
print()
print(f"{'workload':<15}{'anchor':<26}{'their µs/wf':>13}{'our µs/wf':>12}{'faster':>10}{'their steps/s':>15}{'our steps/s':>13}")
for workload in ["seq-10", "concurrent-10", "saga-5", "parallel-10"]:
    for system, store, our_store in pairs:
        theirs, mine = by.get((system, store, workload)), ours.get(("workflows-rs", our_store, workload))
        if not theirs or not mine:
            continue
        ratio = theirs["us_per_workflow"] / mine["us_per_workflow"]
        anchor = f"{system} ({store})"
        print(f"{workload:<15}{anchor:<26}{theirs['us_per_workflow']:>13.1f}{mine['us_per_workflow']:>12.1f}"
              f"{ratio:>9.0f}×{theirs['steps_per_s']:>15.0f}{mine['steps_per_s']:>13.0f}   (ours: {our_store})")
print()
for (system, store, workload), r in sorted(ours.items()):
    if workload in ("long-1000",) or workload.startswith("waiting"):
        extra = {k: r[k] for k in ("us_per_step", "bytes_per_waiting", "completed_per_s") if k in r}
        print(f"workflows-rs {store} {workload}: {r['us_per_workflow']} µs/workflow {extra}")
    if store == "postgres" and workload == "seq-10" and "commit_us" in r:
        print(f"workflows-rs postgres seq-10: {r['us_per_workflow']} µs = "
              f"{r['us_per_workflow'] / (11 * r['commit_us']):.2f} × eleven commits of {r['commit_us']} µs")
    if store == "sqlite" and workload == "seq-10" and "fsync_us" in r:
        print(f"workflows-rs sqlite seq-10: {r['us_per_workflow']} µs = "
              f"{r['us_per_workflow'] / (10 * r['fsync_us']):.2f} × ten fsyncs of {r['fsync_us']} µs")
PY
