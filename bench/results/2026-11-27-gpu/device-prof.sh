#!/bin/bash
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
