#!/bin/bash
# Run 3 of 2026-11-27 (first device session, a short final check), as run on the device machine:
# binaries built on the CPU VM with bench/build-cuda.sh from commit abec0b1 and unpacked from
# .gpu/*.xz; $OUT is this folder.
# device-side final check of the committed code: CUDA golden tests (f32, f16, bf16), demo, bf16 bench
cd "$(dirname "$0")/.."
for f in rerank engine; do xz -dc .gpu/$f.xz > /tmp/$f && chmod +x /tmp/$f; done
mkdir -p /work /work/target-cuda/release
[ -e /work/main ] || ln -sfn "$PWD" /work/main
cp /tmp/rerank /work/target-cuda/release/rerank
libdirs=$(find /usr/local/cuda* /opt/torch/.venv \( -name 'libcublas.so.13' -o -name 'libcublasLt.so.13' -o -name 'libnvrtc.so.13' -o -name 'libcurand.so.10' -o -name 'libcudart.so.13' \) 2>/dev/null | grep -v compat | xargs -n1 dirname | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH=$libdirs${LD_LIBRARY_PATH:-}
cd /work/main
timeout 120 /tmp/engine cuda --test-threads 1 --nocapture 2>&1 | tee $OUT/tests.log
timeout 30 /tmp/rerank demo --model tests/fixtures/tiny --device cuda --dtype bf16 2>&1 | tee $OUT/demo-bf16.log
timeout 30 /tmp/rerank demo --model tests/fixtures/tiny --device cuda:7 2>&1 | tee $OUT/bad-device.log
timeout 150 /tmp/rerank bench --synthetic --device cuda --dtype bf16 -w rag-50 -w seed-512x10 --runs 3 2>&1 | tee $OUT/bench-bf16.log
