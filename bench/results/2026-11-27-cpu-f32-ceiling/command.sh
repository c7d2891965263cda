#!/usr/bin/env bash
# 2026-11-27 ~05:20 UTC (first session), quiet machine: f32 against PyTorch on seed-512x10, 5 runs
# each, with the f32 matmul ceiling measured in the same process. CPU code of 8491205; results
# committed with 937f3b4. The script was a copy in the results folder, run from there
# (../../reference.py, outputs without $OUT/).
set -euo pipefail
R=target/release/rerank
PY=/work/venv/bin/python
OUT=bench/results/2026-11-27-cpu-f32-ceiling
$R bench --model /work/m3 --threads 2 -w seed-512x10 --runs 5 --ceiling --json $OUT/f32.json 2>&1 | tee $OUT/f32.txt
$PY bench/reference.py --model /work/m3 --workloads /work/wl --names seed-512x10 --threads 2 --runs 5 --compare $OUT/f32.json --json $OUT/torch.json 2>&1 | tee $OUT/torch.txt
