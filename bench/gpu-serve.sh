#!/usr/bin/env bash
# The HTTP service under load on a GPU: `rerank serve --device cuda` (f16, the
# default there) on the full-size random-weight model, driven by `loadgen` on
# the same machine.
#
#   cargo build --release --features cuda     # or: bash bench/build-cuda.sh
#   cargo build --release --example loadgen   # target/release/examples/loadgen
#   bash bench/gpu-serve.sh [OUTDIR]
#
# Environment: RERANK, LOADGEN (the binaries, default target/release/...), MODEL
# (where the random-weight model is written, default /tmp/rerank-m3), DURATION
# (seconds per run, default 10), PORT (default 8097), DTYPE (default f16),
# DEVICE (default cuda; cpu only to try the script without a GPU).
set -u
out=${1:-bench/results/$(date -u +%F)-gpu-serve}
bin=${RERANK:-target/release/rerank}
loadgen=${LOADGEN:-target/release/examples/loadgen}
model=${MODEL:-/tmp/rerank-m3}
dur=${DURATION:-10}
port=${PORT:-8097}
dtype=${DTYPE:-f16}
dev=${DEVICE:-cuda}
url=http://127.0.0.1:$port
mkdir -p "$out"

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; lscpu | grep 'Model name'; } | tee "$out/machine.txt"
[ -f "$model/model.safetensors" ] || "$bin" bench --synthetic --save "$model"

"$bin" serve --model "$model" --device "$dev" --dtype "$dtype" --port "$port" >"$out/serve.log" 2>&1 &
server=$!
for _ in $(seq 300); do
    curl -sf "$url/health" >/dev/null && break
    sleep 0.2
done
curl -s "$url/info"
echo

# Short pairs, one document per request: latency of interactive calls, and
# how cross-request batching scales with clients.
echo "== 1 document of 20-40 words per request"
"$loadgen" --url "$url" --duration "$dur" --warmup 2 --concurrency 1,4,16,64 --docs 1 \
    --words 20,40 | tee "$out/docs1.txt"
# A RAG request: one query and 32 passages of 50-100 words.
echo "== 32 documents of 50-100 words per request"
"$loadgen" --url "$url" --duration "$dur" --warmup 2 --concurrency 1,4,16 --docs 32 \
    --words 50,100 | tee "$out/docs32.txt"
# Cohere-style API, mixed request sizes (loadgen's default 1, 8, 32 documents).
echo "== /v1/rerank, mixed sizes"
"$loadgen" --url "$url" --api cohere --duration "$dur" --warmup 2 --concurrency 16 \
    | tee "$out/cohere-mixed.txt"

curl -s "$url/metrics" | grep -E '^rerank_' >"$out/metrics.txt"
nvidia-smi --query-gpu=memory.used --format=csv,noheader | sed 's/^/GPU memory in use at the end: /'
kill "$server"
wait "$server"
echo "server exit status: $?"
