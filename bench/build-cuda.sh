#!/usr/bin/env bash
# Builds `rerank --features cuda` on a machine with no GPU and no CUDA toolkit
# (how the binaries measured in BENCHMARKS.md "GPU" were made). On a machine
# with the CUDA toolkit installed, plain `cargo build --release --features cuda`
# does the same.
#
#   bash bench/build-cuda.sh          # → target-cuda/release/rerank
#
# 1. nvcc 13.0 and the CUDA headers come from NVIDIA's PyPI wheels.
# 2. candle links libcuda, libcublas(Lt), libcurand, libnvrtc and libcudart
#    dynamically; the build machine has no driver, so link-time stubs are made
#    from the symbols the compiled crates import (same sonames as CUDA 13). The
#    real libraries are loaded at run time: on the GPU machine, put the
#    directories holding libcublas.so.13, libcurand.so.10, libnvrtc.so.13 and
#    libcudart.so.13 on LD_LIBRARY_PATH (PyTorch's nvidia-* wheels have them),
#    but not a CUDA "compat" libcuda.so.1: that one fails with "unsupported
#    display driver / cuda driver combination".
# CUDA_COMPUTE_CAP defaults to 90 (H100/H200); the driver must support CUDA 13.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cuda=${CUDA_DIR:-$root/target-cuda/toolkit}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target-cuda}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}

if [ ! -x "$cuda/bin/nvcc" ]; then
    wheels=$(mktemp -d)
    python3 -m pip download -q --no-deps -d "$wheels" "nvidia-cuda-nvcc==13.0.*" \
        "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-crt==13.0.*" \
        "nvidia-nvvm==13.0.*"
    for w in "$wheels"/*.whl; do python3 -m zipfile -e "$w" "$wheels/x"; done
    mkdir -p "$cuda"
    cp -a "$wheels/x/nvidia/cu13/." "$cuda/"
    chmod +x "$cuda"/bin/* "$cuda"/nvvm/bin/*
    rm -rf "$wheels"
fi
export PATH=$cuda/bin:$PATH CUDA_PATH=$cuda CUDA_ROOT=$cuda CUDA_HOME=$cuda

cd "$root"
cargo build --release --features cuda --lib
lib=$cuda/lib
symbols=$(mktemp)
for f in "$CARGO_TARGET_DIR"/release/deps/libcudarc-*.rlib "$CARGO_TARGET_DIR"/release/deps/libcandle_core-*.rlib \
    "$CARGO_TARGET_DIR"/release/build/candle-kernels-*/out/libmoe.a; do
    nm -u "$f" 2>/dev/null || true
done | awk '{print $2}' | sort -u >"$symbols"
stub() { # name soname pattern [exclude]
    local c
    c=$(mktemp --suffix .c)
    grep -E "$3" "$symbols" | { if [ -n "${4:-}" ]; then grep -vE "$4"; else cat; fi; } |
        awk '{print "void "$1"(void){}"}' >"$c"
    cc -shared -fPIC -o "$lib/lib$1.so" -Wl,-soname,"$2" "$c"
    rm -f "$c"
}
stub cuda libcuda.so.1 '^cu[A-Z]'
stub nvrtc libnvrtc.so.13 '^nvrtc'
stub curand libcurand.so.10 '^curand'
stub cublasLt libcublasLt.so.13 '^cublasLt'
stub cublas libcublas.so.13 '^cublas' '^cublasLt'
ln -sf libcudart.so.13 "$lib/libcudart.so"
rm -f "$symbols"
cargo build --release --features cuda --bin rerank --example loadgen
echo "built $CARGO_TARGET_DIR/release/rerank and $CARGO_TARGET_DIR/release/examples/loadgen"
