#!/usr/bin/env bash
# Instructions per workflow, counted by callgrind (stable on a noisy machine, unlike time):
# runs the in-memory bench for a workload at two scales on one thread and divides the
# difference in instructions by the difference in workflows, so start-up cancels out.
#
#   examples/instructions.sh [WORKLOAD ...]        # default: seq-10 parallel-10
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 1; }
cargo build -q --release -p workflows-examples --bin bench
bench=${CARGO_TARGET_DIR:-target}/release/bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
count() { # workload scale -> instructions
    valgrind --tool=callgrind --callgrind-out-file="$out/cg" "$bench" --workload "$1" --store memory \
        --threads current --scale "$2" >/dev/null 2>"$out/log"
    grep -o 'Collected : [0-9]*' "$out/log" | grep -o '[0-9]*'
}
for workload in "${@:-seq-10 parallel-10}"; do
    for w in $workload; do
        # 2,000 runs and 200 warm-up runs at scale 1 (see the bench's plans).
        small=$(count "$w" 0.05) large=$(count "$w" 0.15)
        workflows=$(( (300 + 30) - (100 + 10) ))
        echo "$w: $(( (large - small) / workflows )) instructions per workflow"
    done
done
