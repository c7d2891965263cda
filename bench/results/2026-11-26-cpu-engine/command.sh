#!/usr/bin/env bash
# 2026-11-26, 23:59-00:25 UTC, on the 2-core development VM (machine.txt). The script was a copy in
# this folder, run from here with relative paths (../../reference.py, lscpu > lscpu.txt, now
# machine.txt); the same commands, from the repository root, are `bash bench/cpu.sh OUT`.
# Before: cargo build --release; target/release/rerank bench --synthetic --save /work/m3;
# /work/venv with bench/requirements-onnx.txt.
set -euo pipefail
R=target/release/rerank
PY=/work/venv/bin/python
M=/work/m3
WL=/work/wl
OUT=bench/results/2026-11-26-cpu-engine
lscpu > $OUT/machine.txt
W="-w seed-512x10 -w rag-50 -w seed-1024x20"
$R bench --model $M --threads 2 $W --runs 3 --ceiling --dump $WL --json $OUT/f32.json 2>&1 | tee $OUT/f32.txt
$PY bench/reference.py --model $M --workloads $WL --names seed-512x10 rag-50 seed-1024x20 --threads 2 --runs 3 --compare $OUT/f32.json --json $OUT/torch.json 2>&1 | tee $OUT/torch.txt
$R bench --model $M --threads 2 $W --runs 3 --dtype int8 --json $OUT/int8.json 2>&1 | tee $OUT/int8.txt
$R bench --model $M --threads 2 $W --runs 3 --dtype bf16 --json $OUT/bf16.json 2>&1 | tee $OUT/bf16.txt
$PY bench/reference_onnx.py --model $M --onnx /work/m3-onnx --workloads $WL --names seed-512x10 rag-50 --threads 2 --runs 3 --compare $OUT/f32.json $OUT/int8.json $OUT/bf16.json --json $OUT/ort.json 2>&1 | tee $OUT/ort.txt
