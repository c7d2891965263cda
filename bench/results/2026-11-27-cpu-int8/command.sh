#!/usr/bin/env bash
# 2026-11-27 (first session), the 2-core development VM, commit 8491205 (int8 with the
# attention-output and FFN-output projections in bf16). Part 1 was a script copied into the
# results folder and run from there (../../reference_onnx.py, outputs without $OUT/); its lines
# are bench/cpu.sh's int8 and ONNX Runtime lines.
# Before: cargo build --release; /work/m3 (rerank bench --synthetic --save /work/m3);
# /work/wl (rerank bench --model /work/m3 --runs 0 --dump /work/wl -w ...); /work/venv with
# bench/requirements-onnx.txt.
set -euo pipefail
R=target/release/rerank
PY=/work/venv/bin/python
M=/work/m3
WL=/work/wl
OUT=bench/results/2026-11-27-cpu-int8
# 1. int8 against ONNX Runtime int8 in the same batch
$R bench --model $M --threads 2 -w seed-512x10 -w rag-50 -w seed-1024x20 --runs 3 --dtype int8 --json $OUT/int8-mixed.json 2>&1 | tee $OUT/int8-mixed.txt
$PY bench/reference_onnx.py --model $M --onnx /work/m3-onnx --workloads $WL --names seed-512x10 rag-50 --threads 2 --runs 3 --compare $OUT/int8-mixed.json --json $OUT/ort.json 2>&1 | tee $OUT/ort.txt
# 2. ONNX Runtime int8's error of the <s> hidden state, nothing timed (output, stderr excerpt and
#    the exact lines, run from the results folder, in onnx-hidden-error.txt; the --compare file was
#    ../2026-11-26/ort.json, now bench/results/2026-11-26-cpu-engine/ort.json)
$PY bench/reference_onnx.py --model $M --onnx /work/m3-onnx --workloads $WL --names rag-50 seed-512x10 --threads 2 --hidden-error --compare bench/results/2026-11-26-cpu-engine/ort.json
$PY bench/reference_onnx.py --model $M --onnx /work/m3-onnx --workloads $WL --names rag-50 seed-512x10 --threads 2 --hidden-error --per-channel
# 3. int8 without AMX on the same machine (int8-vnni-no-amx.txt). Only this much was recorded:
#    RERANK_I8_KERNEL=vnni RERANK_BF16_KERNEL=avx512bf16, seed-512x10, 2 threads, --dtype int8;
#    the output has no accuracy line. The full command line was not recorded.
# RERANK_I8_KERNEL=vnni RERANK_BF16_KERNEL=avx512bf16 $R bench --model $M --threads 2 -w seed-512x10 --dtype int8 ...
