#!/usr/bin/env bash
# The runs behind BENCHMARKS.md (2026-11-26): full-size random-weight model, 2 threads.
# Needs: cargo build --release; /work/m3 from `rerank bench --synthetic --save /work/m3`;
# /work/venv with bench/requirements-onnx.txt.
set -euo pipefail
cd "$(dirname "$0")"
R=../../../target/release/rerank
PY=/work/venv/bin/python
M=/work/m3
WL=/work/wl
lscpu > lscpu.txt
W="-w seed-512x10 -w rag-50 -w seed-1024x20"
$R bench --model $M --threads 2 $W --runs 3 --ceiling --dump $WL --json f32.json 2>&1 | tee f32.txt
$PY ../../reference.py --model $M --workloads $WL --names seed-512x10 rag-50 seed-1024x20 --threads 2 --runs 3 --compare f32.json --json torch.json 2>&1 | tee torch.txt
$R bench --model $M --threads 2 $W --runs 3 --dtype int8 --json int8.json 2>&1 | tee int8.txt
$R bench --model $M --threads 2 $W --runs 3 --dtype bf16 --json bf16.json 2>&1 | tee bf16.txt
$PY ../../reference_onnx.py --model $M --onnx /work/m3-onnx --workloads $WL --names seed-512x10 rag-50 --threads 2 --runs 3 --compare f32.json int8.json bf16.json --json ort.json 2>&1 | tee ort.txt
