#!/bin/bash
# Run 2 of 2026-11-27 (first device session), as run on the device machine: binaries built on the
# CPU VM with bench/build-cuda.sh from commit 27190a2 (fused kernels) and unpacked from .gpu/*.xz;
# $OUT is this folder. It wrote tests.log, gpu.log (bench/gpu.sh) and ncu-*.txt (kept as
# ncu-summary-*.txt); the JSON files and the memory samples behind gpu-memory-peaks.txt came back
# in gpu.tgz (/tmp/gpu).
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
NCU=$(command -v ncu || echo /usr/local/cuda/bin/ncu)
for w in seed-8192x1 seed-1024x20; do
  timeout 90 $NCU --clock-control none --metrics gpu__time_duration.sum -k regex:'softmax|bias_act|split_heads|layernorm|nvjet|badd|ucopy|gelu' --launch-count 300 --print-summary per-kernel \
    /tmp/rerank bench --model /tmp/rerank-m3 --device cuda --no-accuracy --runs 1 --no-warmup -w $w > $OUT/ncu-$w.txt 2>&1
done
