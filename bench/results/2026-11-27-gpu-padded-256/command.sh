#!/bin/bash
# Run 7 of 2026-11-27 (second device session, third run), as run on the device machine: binaries
# built on the CPU VM with bench/build-cuda.sh from commit 00ce810 (padded attention for pairs up
# to 256 tokens) and unpacked from .gpu/*.xz; $OUT is this folder.
# device-side (2026-11-27, second session, run 3: padded attention only for pairs <= 256 tokens): short checks
cd "$(dirname "$0")/.."
root=$PWD
for f in rerank engine loadgen; do xz -dc .gpu/$f.xz > /tmp/$f && chmod +x /tmp/$f; done
mkdir -p /work /work/target-cuda/release
[ -e /work/main ] || ln -sfn "$root" /work/main
libdirs=$(find /usr/local/cuda* /opt/torch/.venv /usr/local/nvidia \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' -o -name 'libnvrtc.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \) 2>/dev/null | grep -v compat | xargs -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:-}
cd /work/main
timeout 60 /tmp/engine cuda --test-threads 1 --nocapture > $OUT/tests.log 2>&1; echo "tests rc=$?"; grep -E "test result|largest" $OUT/tests.log
M=/tmp/rerank-m3; /tmp/rerank bench --synthetic --save $M 2>&1 | tail -1
/tmp/rerank bench --model $M --runs 0 -w seed-512x10 -w rag-50 --dump /tmp/wl > /dev/null
for w in seed-512x10 rag-50; do
  timeout 40 /tmp/rerank bench --model $M --device cuda --dtype f16 --no-accuracy --runs 5 -w $w --json /tmp/r-$w.json 2>&1 | grep -E "^$w"
  timeout 60 python3 bench/reference.py --model $M --workloads /tmp/wl --names $w --device cuda --fp16 --runs 5 --compare /tmp/r-$w.json 2>&1 | grep -E "^$w|speed-up"
done > $OUT/bench.txt; cat $OUT/bench.txt
/tmp/rerank serve --model $M --device cuda --port 8097 > /tmp/serve.log 2>&1 &
for i in $(seq 300); do curl -sf localhost:8097/health >/dev/null && break; sleep 0.2; done
{ timeout 30 /tmp/loadgen --url http://127.0.0.1:8097 --duration 5 --warmup 1 --concurrency 1,16 --docs 32 --words 50,100
  timeout 20 /tmp/loadgen --url http://127.0.0.1:8097 --duration 5 --warmup 1 --concurrency 16 --docs 1 --words 20,40; } > $OUT/serve.txt 2>&1; cat $OUT/serve.txt
kill %1
