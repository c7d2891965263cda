// Fused element-wise kernels for the CUDA path (src/model/cuda.rs), compiled to
// PTX by build.rs with the `cuda` feature. They replace candle's generic
// kernels where Nsight Compute showed them far below memory bandwidth on an
// H200 (BENCHMARKS.md "GPU"): softmax_f16 with one warp per row (337 us per
// 256x8192x16 block, ~400 GB/s), the strided broadcast add of the bias
// (badd_f16, ~15x below bandwidth), and the separate GELU / residual passes.
// All arithmetic is in f32; T is the storage type (__half or float).
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }

// Reduces (max, sum of exp(x - max)) pairs across a block of `blockDim.x`
// threads (a multiple of 32, at most 1024).
__device__ __forceinline__ void combine(float &m, float &s, float m2, float s2) {
  float mx = fmaxf(m, m2);
  s = (m == -INFINITY ? 0.f : s * __expf(m - mx)) + (m2 == -INFINITY ? 0.f : s2 * __expf(m2 - mx));
  m = mx;
}

__device__ void block_max_sum(float &m, float &s) {
  __shared__ float sm[32], ss[32];
  for (int o = 16; o > 0; o >>= 1) {
    float m2 = __shfl_xor_sync(0xffffffff, m, o);
    float s2 = __shfl_xor_sync(0xffffffff, s, o);
    combine(m, s, m2, s2);
  }
  int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (lane == 0) {
    sm[warp] = m;
    ss[warp] = s;
  }
  __syncthreads();
  if (warp == 0) {
    m = lane < warps ? sm[lane] : -INFINITY;
    s = lane < warps ? ss[lane] : 0.f;
    for (int o = 16; o > 0; o >>= 1) {
      float m2 = __shfl_xor_sync(0xffffffff, m, o);
      float s2 = __shfl_xor_sync(0xffffffff, s, o);
      combine(m, s, m2, s2);
    }
    if (lane == 0) {
      sm[0] = m;
      ss[0] = s;
    }
  }
  __syncthreads();
  m = sm[0];
  s = ss[0];
}

// Softmax over the last dimension: one block per row, an online max/sum pass
// then one write pass (2 reads + 1 write of the row).
template <typename T>
__device__ void softmax_rows(const T *x, T *y, int ncols) {
  const T *row = x + (size_t)blockIdx.x * ncols;
  T *out = y + (size_t)blockIdx.x * ncols;
  float m = -INFINITY, s = 0.f;
  for (int c = threadIdx.x; c < ncols; c += blockDim.x) {
    float v = to_f(row[c]);
    if (v > m) {
      s = (m == -INFINITY ? 0.f : s * __expf(m - v)) + 1.f;
      m = v;
    } else {
      s += __expf(v - m);
    }
  }
  block_max_sum(m, s);
  float inv = 1.f / s;
  for (int c = threadIdx.x; c < ncols; c += blockDim.x) {
    out[c] = from_f<T>(__expf(to_f(row[c]) - m) * inv);
  }
}

// y = act(x + bias[col] (+ residual)) on a contiguous (rows, ncols) matrix.
// act: 0 = none, 1 = exact erf GELU (as transformers' ACT2FN["gelu"]).
// `residual` is read only when has_residual is set.
template <typename T>
__device__ void bias_act(const T *x, const T *bias, const T *residual, T *y, size_t n, int ncols,
                         int act, int has_residual) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    float v = to_f(x[i]) + to_f(bias[i % ncols]);
    if (has_residual) v += to_f(residual[i]);
    if (act == 1) v = 0.5f * v * (1.f + erff(v * 0.70710678118654752f));
    y[i] = from_f<T>(v);
  }
}

// (len, 3, heads, hd) -> (3, heads, len, hd): the fused QKV projection split
// into per-head Q, K and V.
template <typename T>
__device__ void split_heads(const T *x, T *y, int len, int heads, int hd) {
  size_t n = (size_t)len * 3 * heads * hd;
  for (size_t o = (size_t)blockIdx.x * blockDim.x + threadIdx.x; o < n;
       o += (size_t)gridDim.x * blockDim.x) {
    int d = o % hd;
    size_t r = o / hd;
    int t = r % len;
    r /= len;
    int h = r % heads;
    int which = r / heads;
    y[o] = x[(((size_t)t * 3 + which) * heads + h) * hd + d];
  }
}

#define INSTANTIATE(T, S)                                                                        \
  extern "C" __global__ void softmax_rows_##S(const T *x, T *y, int ncols) {                     \
    softmax_rows<T>(x, y, ncols);                                                                \
  }                                                                                              \
  extern "C" __global__ void bias_act_##S(const T *x, const T *bias, const T *residual, T *y,   \
                                          size_t n, int ncols, int act, int has_residual) {      \
    bias_act<T>(x, bias, residual, y, n, ncols, act, has_residual);                              \
  }                                                                                              \
  extern "C" __global__ void split_heads_##S(const T *x, T *y, int len, int heads, int hd) {     \
    split_heads<T>(x, y, len, heads, hd);                                                        \
  }

INSTANTIATE(float, f32)
INSTANTIATE(__half, f16)
