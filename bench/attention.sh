#!/usr/bin/env bash
# Attention's two products (Q·Kᵀ, P·V) in bf16 against f32, in bf16 and int8 models:
# `rerank bench` of each dtype with RERANK_ATTENTION=f32 and with the default (auto: bf16
# where the bf16 kernel is fast), and of f32, on the full-size random-weight model. The
# auto runs also print their accuracy against f32 (`<s>` state, scores). Long pairs gain
# most: at 8192 tokens attention is ~57 % of the FLOPs.
#
#   cargo build --release
#   target/release/rerank bench --synthetic --save /work/m3
#   bash bench/attention.sh bench/results/$(date -u +%F)-attention
#
# Environment: RERANK, MODEL (/work/m3), THREADS (2), NAMES (the workloads; default
# seed-8192x1 seed-1024x20 seed-512x10 rag-50), RUNS (timed runs per workload after one
# warm-up; default 3, and 1 without warm-up for seed-8192x*), DTYPES (bf16 int8).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-bench/results/$(date -u +%F)-attention}
R=${RERANK:-$root/target/release/rerank}
M=${MODEL:-/work/m3}
T=${THREADS:-2}
NAMES=${NAMES:-seed-8192x1 seed-1024x20 seed-512x10 rag-50}
DTYPES=${DTYPES:-bf16 int8}
mkdir -p "$out"
lscpu > "$out/machine.txt"
git -C "$root" rev-parse HEAD > "$out/commit.txt"

run() { # label, workload, env assignments..., -- bench flags...
    local label=$1 w=$2; shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
    local runs=(--runs "${RUNS:-3}")
    case $w in seed-8192x*) runs=(--runs "${RUNS:-1}" --no-warmup) ;; esac
    echo "== $label $w" | tee -a "$out/summary.txt"
    env "${envs[@]}" "$R" bench --model "$M" --threads "$T" -w "$w" "${runs[@]}" "$@" \
        --json "$out/$label-$w.json" 2>&1 | tee "$out/$label-$w.txt" |
        grep -E "^(seed|rag)-|layer precision|vs f32" | tee -a "$out/summary.txt"
}
for w in $NAMES; do
    run f32 "$w" -- --dtype f32
    for d in $DTYPES; do
        run "$d-attention-f32" "$w" RERANK_ATTENTION=f32 -- --dtype "$d" --no-accuracy
        run "$d-attention-auto" "$w" -- --dtype "$d"
    done
done
