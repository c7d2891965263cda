#!/usr/bin/env bash
# rerank f32 against PyTorch f32 on the CPU, the two engines alternated (seed-512x10 three times,
# rag-50 twice; 3 timed runs each after a warm-up) so that the engines' difference is told apart
# from the machine's drift between minutes.
#
#   target/release/rerank bench --model /work/m3 --runs 0 -w seed-512x10 -w rag-50 --dump /work/wl
#   bash bench/cpu-f32-alternate.sh bench/results/$(date -u +%F)-cpu-f32
#
# Environment as in bench/cpu.sh: RERANK, PYTHON, MODEL, WORKLOADS, THREADS.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-bench/results/$(date -u +%F)-cpu-f32}
R=${RERANK:-$root/target/release/rerank}
PY=${PYTHON:-/work/venv/bin/python}
M=${MODEL:-/work/m3}
WL=${WORKLOADS:-/work/wl}
T=${THREADS:-2}
mkdir -p "$out"
for i in 1 2 3; do
    $R bench --model $M --threads $T -w seed-512x10 --runs 3 --json "$out/f32-512-$i.json" 2>&1 | tee "$out/f32-512-$i.txt"
    $PY "$root/bench/reference.py" --model $M --workloads $WL --names seed-512x10 --threads $T --runs 3 --compare "$out/f32-512-$i.json" --json "$out/torch-512-$i.json" 2>&1 | tee "$out/torch-512-$i.txt"
done
for i in 1 2; do
    $R bench --model $M --threads $T -w rag-50 --runs 3 --json "$out/f32-rag50-$i.json" 2>&1 | tee "$out/f32-rag50-$i.txt"
    $PY "$root/bench/reference.py" --model $M --workloads $WL --names rag-50 --threads $T --runs 3 --compare "$out/f32-rag50-$i.json" --json "$out/torch-rag50-$i.json" 2>&1 | tee "$out/torch-rag50-$i.txt"
done
