#!/bin/bash
# Run 1 of 2026-11-27 (first device session), as run on the device machine: binaries built on the
# CPU VM with bench/build-cuda.sh (results committed with 524c3b2) and unpacked from .gpu/*.xz;
# $OUT is this folder. Part 1 wrote tests.log and gpu.log (bench/gpu.sh); the JSON files and the
# memory samples behind gpu-memory-peaks.txt came back in gpu.tgz (/tmp/gpu). Part 2 (the second
# script of that session, device-prof.sh) wrote the Nsight Compute output in ncu-summary-*.txt;
# whether both parts ran on the same machine is not recorded.
# device-side: unpack binaries, put them where the test binaries expect them, run checks
set -x
cd "$(dirname "$0")/.."
root=$PWD
for f in rerank engine precision; do xz -dc .gpu/$f.xz > /tmp/$f && chmod +x /tmp/$f; done
mkdir -p /work /work/target-cuda/release
[ -e /work/main ] || ln -sfn "$root" /work/main
cp /tmp/rerank /work/target-cuda/release/rerank
libdirs=$(find /usr/local/cuda* /opt/torch/.venv /usr/local/nvidia \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' -o -name 'libnvrtc.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \) 2>/dev/null | grep -v compat | xargs -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:-}
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
ldd /tmp/rerank | grep -E 'cu|nvrtc'
nvidia-smi
python3 -c "import torch, transformers, sentence_transformers as st; print(torch.__version__, transformers.__version__, st.__version__, torch.cuda.get_device_name())"
lscpu | grep 'Model name'
cd /work/main
timeout 120 /tmp/engine cuda --test-threads 1 --nocapture 2>&1 | tee $OUT/tests.log
timeout 60 /tmp/precision 2>&1 | tail -5 | tee -a $OUT/tests.log
RERANK=/tmp/rerank MODEL=/tmp/rerank-m3 timeout ${BENCH_TIMEOUT:-400} bash bench/gpu.sh /tmp/gpu 2>&1 | grep -v 'Loading weights' | tee $OUT/gpu.log
tar czf $OUT/gpu.tgz --exclude workloads -C /tmp gpu

# ---- part 2: device-prof.sh
cd "$(dirname "$0")/.."
xz -dc .gpu/rerank.xz > /tmp/rerank && chmod +x /tmp/rerank
libdirs=$(find /usr/local/cuda* /opt/torch/.venv \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' -o -name 'libnvrtc.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \) 2>/dev/null | grep -v compat | xargs -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:-}
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
echo "ncu: $NCU"
/tmp/rerank bench --synthetic --save /tmp/m3 >/dev/null 2>&1
for w in seed-8192x1 seed-1024x20; do
  echo "=== $w wall"
  /tmp/rerank bench --model /tmp/m3 --device cuda --no-accuracy --runs 3 -w $w
  echo "=== $w kernels (launches 200..700 after warm-up skipped)"
  timeout 150 $NCU --clock-control none --metrics gpu__time_duration.sum --launch-skip 200 --launch-count 500 --print-summary per-kernel \
    /tmp/rerank bench --model /tmp/m3 --device cuda --no-accuracy --runs 1 --no-warmup -w $w > /tmp/ncu-$w.txt 2>&1
  grep -E "^  [a-zA-Z_].*\(|gpu__time_duration.sum|Invocations" /tmp/ncu-$w.txt | head -0
  cp /tmp/ncu-$w.txt $OUT/
done
