#!/usr/bin/env bash
# GPU checks and benchmarks: rerank (built with --features cuda) against
# sentence-transformers CrossEncoder on the same GPU, same model files, same pairs.
#
#   cargo build --release --features cuda
#   bash bench/gpu.sh [OUTDIR]            # needs nvidia-smi, python3 with torch +
#                                         # sentence-transformers (bench/requirements.txt)
#
# Environment: RERANK (the binary, default target/release/rerank), MODEL (where the
# random-weight full-size model is written, default /tmp/rerank-m3), RUNS (default 3).
# GPU memory is the process's total as nvidia-smi reports it (CUDA context included),
# sampled every 20 ms, minus what was in use before the process started: the same
# measure for both engines.
set -u
out=${1:-bench/results/$(date -u +%F)-gpu}
bin=${RERANK:-target/release/rerank}
model=${MODEL:-/tmp/rerank-m3}
runs=${RUNS:-3}
dev=${DEVICE:-cuda}  # DEVICE=cpu only to try the script without a GPU
mkdir -p "$out"
wl="$out/workloads"

gpu_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1; }

# Runs "$@" while sampling GPU memory; prints the peak above the idle level.
with_memory() {
    local name=$1 base peak pid
    shift
    base=$(gpu_mib)
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 20 >"$out/mem-$name.txt" &
    pid=$!
    "$@"
    local rc=$?
    kill $pid 2>/dev/null
    wait $pid 2>/dev/null
    peak=$(sort -n "$out/mem-$name.txt" | tail -1)
    echo "GPU memory $name: peak $((peak - base)) MiB above idle ($base MiB)"
    return $rc
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; lscpu | grep 'Model name'; } | tee "$out/machine.txt"
"$bin" --version

echo "== demo on the GPU (tiny fixture)"
"$bin" demo --model tests/fixtures/tiny --device "$dev"

echo "== full-size random-weight model"
[ -f "$model/model.safetensors" ] || "$bin" bench --synthetic --save "$model"
"$bin" bench --model "$model" --runs 0 -w seed-512x10 -w seed-1024x20 \
    -w seed-8192x5 -w rag-50 --dump "$wl" >/dev/null

for w in seed-512x10 seed-1024x20 seed-8192x5 rag-50; do
    echo "== $w: rerank f16"
    with_memory "rerank-f16-$w" "$bin" bench --model "$model" --device "$dev" --dtype f16 \
        --no-accuracy --runs "$runs" -w "$w" --json "$out/rerank-f16-$w.json"
    echo "== $w: PyTorch fp16"
    with_memory "torch-fp16-$w" python3 bench/reference.py --model "$model" --workloads "$wl" \
        --names "$w" --device "$dev" --fp16 --runs "$runs" --compare "$out/rerank-f16-$w.json" \
        --json "$out/torch-fp16-$w.json"
done

echo "== accuracy of f16 against f32, both on the GPU (rag-50)"
"$bin" bench --model "$model" --device "$dev" --dtype f16 --runs 1 -w rag-50

echo "== rag-50 in f32 on the GPU: rerank vs PyTorch"
"$bin" bench --model "$model" --device "$dev" --dtype f32 --runs "$runs" -w rag-50 \
    --json "$out/rerank-f32-rag-50.json"
python3 bench/reference.py --model "$model" --workloads "$wl" --names rag-50 --device "$dev" \
    --runs "$runs" --compare "$out/rerank-f32-rag-50.json"
