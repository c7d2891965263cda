#!/usr/bin/env bash
# 2026-11-27: rag-50 f32, rerank then PyTorch (3 timed runs each after a warm-up).
set -euo pipefail
cd "$(dirname "$0")"
R=../../../target/release/rerank
PY=/work/venv/bin/python
$R bench --model /work/m3 --threads 2 -w rag-50 --runs 3 --json f32-rag50.json 2>&1 | tee f32-rag50.txt
$PY ../../reference.py --model /work/m3 --workloads /work/wl --names rag-50 --threads 2 --runs 3 --compare f32-rag50.json --json torch-rag50.json 2>&1 | tee torch-rag50.txt
