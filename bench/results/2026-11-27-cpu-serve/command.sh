#!/usr/bin/env bash
# 2026-11-27 (second session): CPU server under load, f32 and int8 (Q/K/V and intermediate int8,
# attention-output and FFN-output bf16), CPU code of 5aebf43 (results committed with 80fad71),
# before small_f32. Server and loadgen share the 2 cores. The script was a copy in this folder,
# run from here; it is now bench/cpu-serve.sh, and these are its commands from the repository
# root (`bash bench/cpu-serve.sh bench/results/2026-11-27-cpu-serve`).
set -u
R=target/release/rerank
L=target/release/loadgen
OUT=bench/results/2026-11-27-cpu-serve
for dt in f32 int8; do
    $R serve --model /work/m3 --dtype $dt --threads 2 --port 8093 > $OUT/serve-$dt.log 2>&1 &
    pid=$!
    for _ in $(seq 300); do curl -sf http://127.0.0.1:8093/health > /dev/null && break; sleep 0.2; done
    $L --url http://127.0.0.1:8093 --duration 15 --warmup 2 --concurrency 1,4,16 --docs 1 --words 20,40 2>&1 | tee $OUT/load-$dt-docs1.txt
    $L --url http://127.0.0.1:8093 --duration 15 --warmup 2 --concurrency 4 --docs 8 --words 50,100 2>&1 | tee $OUT/load-$dt-docs8.txt
    curl -s http://127.0.0.1:8093/metrics | grep -E '^rerank_(batches|pairs|batch)' > $OUT/metrics-$dt.txt
    kill $pid; wait $pid; echo "server exit $?"
done
