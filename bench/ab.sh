#!/usr/bin/env bash
# Two rerank binaries against each other (e.g. before and after a refactor), alternated
# A, B, A, B per dtype so that the machine's drift between minutes shows as noise, not as a
# difference. Each invocation: the full-size random-weight model from MODEL (written once by
# `rerank bench --synthetic --save DIR`; memory-mapped as a real checkpoint is), one warm-up
# and RUNS timed runs per workload, median reported.
#
#   git worktree add /tmp/old OLD_COMMIT && (cd /tmp/old && cargo build --release --bin rerank)
#   cargo build --release --bin rerank
#   target/release/rerank bench --synthetic --save /tmp/m3
#   MODEL=/tmp/m3 A=/tmp/old/target/release/rerank B=target/release/rerank bash bench/ab.sh bench/results/$(date -u +%F)-ab
#
# Environment: A, B (the binaries), MODEL (the model directory), DTYPES (default "f32 bf16 int8"), WORKLOADS (default
# "seed-512x10 rag-50"), ROUNDS (default 2), RUNS (default 2), THREADS (default 2).
set -euo pipefail
out=${1:-bench/results/$(date -u +%F)-ab}
A=${A:?set A to the first binary}
B=${B:?set B to the second binary}
model=${MODEL:?set MODEL to a model directory (rerank bench --synthetic --save DIR)}
dtypes=${DTYPES:-f32 bf16 int8}
workloads=${WORKLOADS:-seed-512x10 rag-50}
rounds=${ROUNDS:-2}
runs=${RUNS:-2}
threads=${THREADS:-2}
mkdir -p "$out"
{ lscpu | grep 'Model name'; nproc; } > "$out/machine.txt"
w=()
for name in $workloads; do w+=(-w "$name"); done
for dtype in $dtypes; do
    for round in $(seq "$rounds"); do
        for side in A B; do
            bin=${!side}
            "$bin" bench --model "$model" --dtype "$dtype" --threads "$threads" --runs "$runs" --no-accuracy \
                "${w[@]}" --json "$out/$side-$dtype-$round.json" 2>&1 | tee "$out/$side-$dtype-$round.txt"
        done
    done
done
# Medians per (side, dtype, workload) over the rounds' medians.
python3 - "$out" <<'PY'
import json, sys, glob, statistics, collections
out = sys.argv[1]
t = collections.defaultdict(list)
for f in sorted(glob.glob(f"{out}/[AB]-*.json")):
    side, dtype, _ = f.split("/")[-1][:-5].split("-")
    for r in json.load(open(f))["results"]:
        t[(dtype, r["workload"], side)].append(r["median_s"])
print("| dtype | workload | A median s (rounds) | B median s (rounds) | B / A |")
print("|---|---|---|---|---|")
for (dtype, name) in sorted({(d, n) for d, n, _ in t}):
    a, b = t[(dtype, name, "A")], t[(dtype, name, "B")]
    ma, mb = statistics.median(a), statistics.median(b)
    fmt = lambda v: " / ".join(f"{x:.3f}" for x in v)
    print(f"| {dtype} | {name} | {ma:.3f} ({fmt(a)}) | {mb:.3f} ({fmt(b)}) | {mb/ma:.3f} |")
PY
