#!/usr/bin/env bash
# The HTTP service under load on the CPU: `rerank serve` in f32, then int8, on the full-size
# random-weight model, driven by `loadgen` on the same machine (server and load generator share
# the cores). Default server flags; 15 s per run after 2 s of warm-up.
#
#   cargo build --release --bin rerank --example loadgen   # target/release/{rerank,examples/loadgen}
#   bash bench/cpu-serve.sh bench/results/$(date -u +%F)-cpu-serve
#
# Environment: RERANK, LOADGEN (the binaries, default target/release/...), MODEL (default
# /work/m3, from `rerank bench --synthetic --save`), THREADS (default 2), PORT (default 8093),
# DTYPES (default "f32 int8").
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-bench/results/$(date -u +%F)-cpu-serve}
R=${RERANK:-$root/target/release/rerank}
L=${LOADGEN:-$root/target/release/examples/loadgen}
M=${MODEL:-/work/m3}
T=${THREADS:-2}
port=${PORT:-8093}
url=http://127.0.0.1:$port
mkdir -p "$out"
for dt in ${DTYPES:-f32 int8}; do
    # The score cache off: loadgen repeats its texts, and cached pairs skip the model.
    $R serve --model $M --dtype $dt --threads $T --port $port --cache-size 0 > "$out/serve-$dt.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do curl -sf $url/health > /dev/null && break; sleep 0.2; done
    $L --url $url --duration 15 --warmup 2 --concurrency 1,4,16 --docs 1 --words 20,40 2>&1 | tee "$out/load-$dt-docs1.txt"
    $L --url $url --duration 15 --warmup 2 --concurrency 4 --docs 8 --words 50,100 2>&1 | tee "$out/load-$dt-docs8.txt"
    curl -s $url/metrics | grep -E '^rerank_(batches|pairs|batch)' > "$out/metrics-$dt.txt"
    kill $pid; wait $pid; echo "server exit $?"
done
