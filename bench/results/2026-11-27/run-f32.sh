#!/usr/bin/env bash
# 2026-11-27 ~05:20 UTC, quiet machine: f32 against PyTorch on seed-512x10 (5 runs each).
set -euo pipefail
cd "$(dirname "$0")"
R=../../../target/release/rerank
PY=/work/venv/bin/python
$R bench --model /work/m3 --threads 2 -w seed-512x10 --runs 5 --ceiling --json f32.json 2>&1 | tee f32.txt
$PY ../../reference.py --model /work/m3 --workloads /work/wl --names seed-512x10 --threads 2 --runs 5 --compare f32.json --json torch.json 2>&1 | tee torch.txt
