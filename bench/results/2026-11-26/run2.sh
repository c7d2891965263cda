#!/usr/bin/env bash
# Second batch (after the AMX int8 kernel and the vectorized softmax exp), 2026-11-26 ~01:00 UTC.
set -euo pipefail
cd "$(dirname "$0")"
R=../../../target/release/rerank
PY=/work/venv/bin/python
M=/work/m3
WL=/work/wl
$R bench --model $M --threads 2 -w seed-512x10 -w rag-50 -w seed-1024x20 --runs 3 --dtype int8 --json int8-amx.json 2>&1 | tee int8-amx.txt
$PY ../../reference_onnx.py --model $M --onnx /work/m3-onnx --workloads $WL --names seed-512x10 rag-50 --threads 2 --runs 3 --compare int8-amx.json --json ort2.json 2>&1 | tee ort2.txt
$R bench --model $M --threads 2 -w seed-8192x5 --runs 1 --no-warmup --dump $WL --json f32-8192x5.json 2>&1 | tee f32-8192x5.txt
$PY ../../reference.py --model $M --workloads $WL --names seed-8192x5 --threads 2 --runs 1 --compare f32-8192x5.json --json torch-8192x5.json 2>&1 | tee torch-8192x5.txt
