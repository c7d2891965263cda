#!/usr/bin/env bash
# 2026-11-27 (second session): f32 after the workspace / bias+GELU change (commit 5aebf43); rerank
# and PyTorch alternated: seed-512x10 three times, rag-50 twice (3 timed runs each after a
# warm-up). The script was a copy in this folder, run from here; it is now bench/cpu-f32-alternate.sh,
# and these are its commands from the repository root
# (`bash bench/cpu-f32-alternate.sh bench/results/2026-11-27-cpu-f32`).
set -euo pipefail
R=target/release/rerank
PY=/work/venv/bin/python
OUT=bench/results/2026-11-27-cpu-f32
for i in 1 2 3; do
    $R bench --model /work/m3 --threads 2 -w seed-512x10 --runs 3 --json $OUT/f32-512-$i.json 2>&1 | tee $OUT/f32-512-$i.txt
    $PY bench/reference.py --model /work/m3 --workloads /work/wl --names seed-512x10 --threads 2 --runs 3 --compare $OUT/f32-512-$i.json --json $OUT/torch-512-$i.json 2>&1 | tee $OUT/torch-512-$i.txt
done
for i in 1 2; do
    $R bench --model /work/m3 --threads 2 -w rag-50 --runs 3 --json $OUT/f32-rag50-$i.json 2>&1 | tee $OUT/f32-rag50-$i.txt
    $PY bench/reference.py --model /work/m3 --workloads /work/wl --names rag-50 --threads 2 --runs 3 --compare $OUT/f32-rag50-$i.json --json $OUT/torch-rag50-$i.json 2>&1 | tee $OUT/torch-rag50-$i.txt
done
