#!/usr/bin/env bash
# The CPU dtypes on CPUs without AMX (AMD Zen 4/5, Intel before Sapphire Rapids) against what
# sentence-transformers users run there (PyTorch fp32, OpenVINO fp32/bf16/static int8) and
# ONNX Runtime int8, on the full-size random-weight model, the same pairs, one run each.
# On an AMX machine it also runs our dtypes with AMX capped off (RERANK_I8_KERNEL=vnni
# RERANK_BF16_KERNEL=avx512bf16), which is what a Zen 4/5 runs, and OpenVINO bf16 / static
# int8 with AMX capped off the same way (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16).
#
#   cargo build --release
#   target/release/rerank bench --synthetic --save /work/m3
#   python3 -m venv /work/venv && /work/venv/bin/pip install -r bench/requirements-onnx.txt
#   python3 -m venv /work/venv-ov && /work/venv-ov/bin/pip install -r bench/requirements.txt \
#     && /work/venv-ov/bin/pip install -r bench/requirements-openvino.txt   # (in turn: it pins an older transformers)
#   bash bench/cpu-noamx.sh bench/results/$(date -u +%F)-cpu-noamx
#
# Ours: the whole `rerank score` process (load, calibration, tokenization, scoring), timed
# from outside by farm-bench. Peers: inside predict() / session.run (their load not counted).
# Environment: RERANK, PYTHON (/work/venv/bin/python), PYTHON_OV (/work/venv-ov/bin/python),
# MODEL (/work/m3), WORKLOADS (/work/wl), ONNX (/work/m3-onnx), OV_CACHE (/work/m3-ov),
# THREADS (2), PEERS (1; 0 skips the Python references), OURS (1; 0 runs only the references),
# NAMES (the workloads).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-bench/results/$(date -u +%F)-cpu-noamx}
R=${RERANK:-$root/target/release/rerank}
PY=${PYTHON:-/work/venv/bin/python}
PYOV=${PYTHON_OV:-/work/venv-ov/bin/python}
M=${MODEL:-/work/m3}
WL=${WORKLOADS:-/work/wl}
T=${THREADS:-2}
NAMES=${NAMES:-seed-512x10 rag-50 seed-8192x1}
mkdir -p "$out"
lscpu > "$out/machine.txt"
"$R" bench --model "$M" -w seed-512x10 -w rag-50 -w seed-8192x1 --runs 0 --dump "$WL" > /dev/null

ours() { # label, workload, env assignments..., -- rerank flags...
    local label=$1 w=$2; shift 2
    local envs=()
    while [ "$1" != "--" ]; do envs+=("$1"); shift; done; shift
    echo "== ours $label $w" | tee -a "$out/ours.txt"
    env "${envs[@]}" RUST_LOG=info farm-bench -n 1 --warmup 0 --timeout 1800 -- \
        sh -c "exec $R score --model $M --threads $T --input $WL/$w.jsonl $* >/dev/null 2>>$out/ours-log.txt" \
        2>&1 | tee -a "$out/ours.txt"
}
noamx=(RERANK_I8_KERNEL=vnni RERANK_BF16_KERNEL=avx512bf16)
# int8 keeps its calibrated, quantized weights in the prepared-weights cache after the first
# start; every int8 run below is a later start (the cache filled first, as a restarted server
# or a second CLI call finds it). PREPARED=off times the conversion instead.
export RERANK_PREPARED_CACHE=${PREPARED:-${TMPDIR:-/tmp}/rerank-prepared-bench}
head -n 1 "$WL/seed-512x10.jsonl" > "$out/one-pair.jsonl"
warm() { env "$@" "$R" score --model "$M" --threads "$T" --dtype int8 --input "$out/one-pair.jsonl" >/dev/null 2>>"$out/ours-log.txt"; }
if [ "${OURS:-1}" = 1 ]; then
    warm "${noamx[@]}"; warm "${noamx[@]}" RERANK_I8_RESIDUAL=int8; warm "${noamx[@]}" RERANK_I8_RESIDUAL=f32
    if grep -q amx_int8 /proc/cpuinfo; then warm RERANK_I8_RESIDUAL=auto; fi
    for w in $NAMES; do
        ours f32 "$w" -- --dtype f32
        ours bf16-noamx "$w" "${noamx[@]}" -- --dtype bf16
        ours int8-noamx "$w" "${noamx[@]}" -- --dtype int8
        # The plan before int16: the residual projections in f32.
        ours int8-f32res-noamx "$w" "${noamx[@]}" RERANK_I8_RESIDUAL=f32 -- --dtype int8
        # All four int8 fails the accuracy gates and is never chosen by itself: short rows only.
        [ "$w" = seed-8192x1 ] || ours int8-all-noamx "$w" "${noamx[@]}" RERANK_I8_RESIDUAL=int8 -- --dtype int8
        if grep -q amx_int8 /proc/cpuinfo; then
            ours bf16-amx "$w" -- --dtype bf16
            ours int8-amx "$w" -- --dtype int8
        fi
    done
fi
[ "${PEERS:-1}" = 0 ] && exit 0
# shellcheck disable=SC2086
"$PYOV" "$root/bench/reference_openvino.py" --model "$M" --workloads "$WL" --names $NAMES \
    --cache "${OV_CACHE:-/work/m3-ov}" --threads "$T" --json "$out/openvino.json" 2>&1 | grep -v -i warn | tee "$out/openvino.txt"
# OpenVINO with its AMX capped off as well: oneDNN (inside OpenVINO's CPU plugin) honours
# ONEDNN_MAX_CPU_ISA; AVX512_CORE_BF16 is the ISA of a Zen 4/5 (AVX-512, VNNI, BF16, no AMX).
# fp32 does not use AMX, so only bf16 and static int8.
if grep -q amx_int8 /proc/cpuinfo; then
    # shellcheck disable=SC2086
    ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 "$PYOV" "$root/bench/reference_openvino.py" --model "$M" \
        --workloads "$WL" --names $NAMES --cache "${OV_CACHE:-/work/m3-ov}" --threads "$T" --modes bf16 int8 \
        --json "$out/openvino-noamx.json" 2>&1 | grep -v -i warn | tee "$out/openvino-noamx.txt"
fi
# shellcheck disable=SC2086
"$PY" "$root/bench/reference.py" --model "$M" --workloads "$WL" --names $NAMES --threads "$T" --runs 1 \
    --json "$out/torch.json" 2>&1 | tee "$out/torch.txt"
"$PY" "$root/bench/reference_onnx.py" --model "$M" --onnx "${ONNX:-/work/m3-onnx}" --workloads "$WL" \
    --names seed-512x10 rag-50 --threads "$T" --runs 1 --per-channel --json "$out/ort.json" 2>&1 | tee "$out/ort.txt"
