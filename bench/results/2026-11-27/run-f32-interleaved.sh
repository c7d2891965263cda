#!/usr/bin/env bash
# 2026-11-27: seed-512x10 f32, rerank and PyTorch alternated three times (3 timed runs each after a
# warm-up), to separate the engines' difference from this VM's drift.
set -euo pipefail
cd "$(dirname "$0")"
R=../../../target/release/rerank
PY=/work/venv/bin/python
for i in 1 2 3; do
    $R bench --model /work/m3 --threads 2 -w seed-512x10 --runs 3 --json f32-i$i.json 2>&1 | tee f32-i$i.txt
    $PY ../../reference.py --model /work/m3 --workloads /work/wl --names seed-512x10 --threads 2 --runs 3 --compare f32-i$i.json --json torch-i$i.json 2>&1 | tee torch-i$i.txt
done
