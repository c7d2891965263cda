#!/usr/bin/env bash
# 2026-11-27 (second session): f32 after the workspace / bias+GELU change (commit 5aebf43).
# rerank and PyTorch alternated: seed-512x10 three times, rag-50 twice (3 timed runs each
# after a warm-up), to separate the engines' difference from this VM's drift.
set -euo pipefail
cd "$(dirname "$0")"
R=../../../target/release/rerank
PY=/work/venv/bin/python
for i in 1 2 3; do
    $R bench --model /work/m3 --threads 2 -w seed-512x10 --runs 3 --json f32-512-$i.json 2>&1 | tee f32-512-$i.txt
    $PY ../../reference.py --model /work/m3 --workloads /work/wl --names seed-512x10 --threads 2 --runs 3 --compare f32-512-$i.json --json torch-512-$i.json 2>&1 | tee torch-512-$i.txt
done
for i in 1 2; do
    $R bench --model /work/m3 --threads 2 -w rag-50 --runs 3 --json f32-rag50-$i.json 2>&1 | tee f32-rag50-$i.txt
    $PY ../../reference.py --model /work/m3 --workloads /work/wl --names rag-50 --threads 2 --runs 3 --compare f32-rag50-$i.json --json torch-rag50-$i.json 2>&1 | tee torch-rag50-$i.txt
done
