#!/bin/bash
# Run 5 of 2026-11-27 (second device session, first run), as run on the device machine: binaries
# built on the CPU VM with bench/build-cuda.sh (candle path of the first session, before d99ec30;
# the exact commit was not recorded) and unpacked from .gpu/*.xz; $OUT is this folder. tests.log
# was not kept; serve.txt is bench/gpu-serve.sh's output, gpu.log bench/gpu.sh's, the JSON files
# came from /tmp/gpu.
# device-side (2026-11-27, second session): CUDA golden tests, the HTTP service under load, bench medians of 5
cd "$(dirname "$0")/.."
root=$PWD
for f in rerank engine loadgen; do xz -dc .gpu/$f.xz > /tmp/$f && chmod +x /tmp/$f; done
mkdir -p /work /work/target-cuda/release
[ -e /work/main ] || ln -sfn "$root" /work/main
cp /tmp/rerank /work/target-cuda/release/rerank
libdirs=$(find /usr/local/cuda* /opt/torch/.venv /usr/local/nvidia \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' -o -name 'libnvrtc.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \) 2>/dev/null | grep -v compat | xargs -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:-}
nvidia-smi --query-gpu=name,driver_version --format=csv | tee $OUT/machine.txt
lscpu | grep 'Model name' | tee -a $OUT/machine.txt
cd /work/main
date +%T
timeout 120 /tmp/engine cuda --test-threads 1 --nocapture > $OUT/tests.log 2>&1; echo "tests rc=$?"; grep -E "test result|largest|worst" $OUT/tests.log
date +%T
RERANK=/tmp/rerank LOADGEN=/tmp/loadgen MODEL=/tmp/rerank-m3 DURATION=8 timeout 220 bash bench/gpu-serve.sh $OUT/serve > $OUT/serve.txt 2>&1; echo "serve rc=$?"
tail -40 $OUT/serve.txt
date +%T
RERANK=/tmp/rerank MODEL=/tmp/rerank-m3 RUNS=5 timeout 200 bash bench/gpu.sh /tmp/gpu 2>&1 | grep -v 'Loading weights' > $OUT/gpu.log; echo "gpu.sh rc=$?"
grep -E "^(==|workload|seed|rag|GPU memory|  +rerank)" $OUT/gpu.log | tail -40
cp /tmp/gpu/*.json $OUT/ 2>/dev/null
date +%T
