#!/usr/bin/env bash
# 2026-11-27: int8 with the residual-stream projections (attention output, FFN output) in bf16,
# against ONNX Runtime int8 in the same batch; then the ORT hidden-state error (see onnx-hidden-error.txt).
set -euo pipefail
cd "$(dirname "$0")"
R=../../../target/release/rerank
PY=/work/venv/bin/python
M=/work/m3      # rerank bench --synthetic --save /work/m3
WL=/work/wl     # rerank bench --model /work/m3 --runs 0 --dump /work/wl -w ...
$R bench --model $M --threads 2 -w seed-512x10 -w rag-50 -w seed-1024x20 --runs 3 --dtype int8 --json int8-mixed.json 2>&1 | tee int8-mixed.txt
$PY ../../reference_onnx.py --model $M --onnx /work/m3-onnx --workloads $WL --names seed-512x10 rag-50 --threads 2 --runs 3 --compare int8-mixed.json --json ort.json 2>&1 | tee ort.txt
