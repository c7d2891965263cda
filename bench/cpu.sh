#!/usr/bin/env bash
# The CPU engine against PyTorch and ONNX Runtime: rerank f32, int8 and bf16, sentence-transformers
# CrossEncoder (PyTorch f32) and ONNX Runtime int8 run the fastembed way, on the full-size
# random-weight model, the same model files and the same pairs, one after the other.
#
#   cargo build --release
#   target/release/rerank bench --synthetic --save /work/m3      # model files (2.27 GB)
#   python3 -m venv /work/venv && /work/venv/bin/pip install -r bench/requirements-onnx.txt
#   bash bench/cpu.sh bench/results/$(date -u +%F)-cpu-engine
#
# Environment: RERANK (default target/release/rerank), PYTHON (default /work/venv/bin/python),
# MODEL (default /work/m3), WORKLOADS (where the pairs are dumped, default /work/wl), ONNX
# (exported and quantized model, made on first use and reused, default /work/m3-onnx), THREADS
# (default 2). Writes machine.txt (lscpu) and each engine's output and JSON (every score) to OUTDIR.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-bench/results/$(date -u +%F)-cpu-engine}
R=${RERANK:-$root/target/release/rerank}
PY=${PYTHON:-/work/venv/bin/python}
M=${MODEL:-/work/m3}
WL=${WORKLOADS:-/work/wl}
ONNX=${ONNX:-/work/m3-onnx}
T=${THREADS:-2}
mkdir -p "$out"
lscpu > "$out/machine.txt"
W="-w seed-512x10 -w rag-50 -w seed-1024x20"
$R bench --model $M --threads $T $W --runs 3 --ceiling --dump $WL --json "$out/f32.json" 2>&1 | tee "$out/f32.txt"
$PY "$root/bench/reference.py" --model $M --workloads $WL --names seed-512x10 rag-50 seed-1024x20 --threads $T --runs 3 --compare "$out/f32.json" --json "$out/torch.json" 2>&1 | tee "$out/torch.txt"
$R bench --model $M --threads $T $W --runs 3 --dtype int8 --json "$out/int8.json" 2>&1 | tee "$out/int8.txt"
$R bench --model $M --threads $T $W --runs 3 --dtype bf16 --json "$out/bf16.json" 2>&1 | tee "$out/bf16.txt"
$PY "$root/bench/reference_onnx.py" --model $M --onnx $ONNX --workloads $WL --names seed-512x10 rag-50 --threads $T --runs 3 --compare "$out/f32.json" "$out/int8.json" "$out/bf16.json" --json "$out/ort.json" 2>&1 | tee "$out/ort.txt"
