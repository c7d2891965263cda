//! f32 `y = x·Wᵀ` for a few rows, reading the weights as stored (out × in,
//! row-major) without packing them.
//!
//! Replaces `gemm::gemm` for up to [`MAX_ROWS`] rows on AVX-512 CPUs. `gemm`
//! packs the weight matrix on every call; with few rows that packing costs
//! more than the arithmetic (`perf` on single ~60-token pairs: 46 % of the
//! time in `gemm`'s packing, 37 % in its microkernel), which made a one-pair
//! f32 request ~2× slower than PyTorch's. Here each output is a dot product of
//! a weight row and an activation row, 4 rows × 6 outputs at a time in 24
//! AVX-512 accumulators; the 6 weight rows (24 KiB at in = 1024) stay in L1
//! while every activation row block passes, so the weights are read from
//! memory once per call.
//!
//! Measured on the encoder's shapes (2 threads, Sapphire Rapids-class VM,
//! 24 distinct weight matrices in turn so they come from memory, time per
//! matrix; `gemm` 0.19 with the same strides):
//!
//! | in → out    | rows | `gemm`  | this    | speed-up |
//! |-------------|------|---------|---------|----------|
//! | 1024 → 1024 | 16   | 1.86 ms | 0.34 ms | 5.5×     |
//! | 1024 → 1024 | 64   | 1.81 ms | 0.76 ms | 2.4×     |
//! | 1024 → 1024 | 128  | 2.35 ms | 1.36 ms | 1.7×     |
//! | 1024 → 4096 | 16   | 2.66 ms | 1.22 ms | 2.2×     |
//! | 1024 → 4096 | 64   | 3.72 ms | 2.74 ms | 1.4×     |
//! | 1024 → 4096 | 128  | 5.14 ms | 4.87 ms | 1.05×    |
//! | 4096 → 1024 | 16   | 7.83 ms | 1.25 ms | 6.3×     |
//! | 4096 → 1024 | 64   | 8.50 ms | 3.08 ms | 2.8×     |
//! | 4096 → 1024 | 128  | 8.88 ms | 6.21 ms | 1.4×     |
//!
//! Past ~128 rows `gemm` wins (its packing is then amortized), hence
//! [`MAX_ROWS`]. Results differ from `gemm`'s only in summation order.

use rayon::prelude::*;

/// Row counts up to this take this kernel (see the table above).
pub const MAX_ROWS: usize = 128;
/// Activation rows per block.
const RB: usize = 4;
/// Output channels per block.
const OB: usize = 6;
/// Output channels per parallel task.
const TASK_OUTS: usize = 8 * OB;

/// Whether this CPU can run the kernel (AVX-512 F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A raw pointer that tasks writing disjoint columns of `dst` may share.
#[derive(Clone, Copy)]
struct Dst(*mut f32);
// SAFETY: each task writes only its own output columns.
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

impl Dst {
    /// A method, so closures capture the whole `Send` wrapper, not the field.
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `dst[r·dst_rs + o] (+)= Σ_k x[r·x_rs + k] · w[o·in_dim + k]` for `rows`
/// rows and `out_dim` outputs; with `accumulate`, adds to what `dst` holds.
///
/// Panics if the CPU lacks AVX-512 F (check [`available`]) or an operand is
/// too short for the shapes.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    w: &[f32],
    (out_dim, in_dim): (usize, usize),
    accumulate: bool,
) {
    assert!(available(), "small_f32::matmul needs AVX-512 F");
    if rows == 0 || out_dim == 0 {
        return;
    }
    assert!(w.len() >= out_dim * in_dim, "w too short");
    assert!(x.len() >= (rows - 1) * x_rs + in_dim, "x too short");
    assert!(dst.len() >= (rows - 1) * dst_rs + out_dim, "dst too short");
    let dst = Dst(dst.as_mut_ptr());
    (0..out_dim.div_ceil(TASK_OUTS))
        .into_par_iter()
        .for_each(|task| {
            let end = ((task + 1) * TASK_OUTS).min(out_dim);
            for o in (task * TASK_OUTS..end).step_by(OB) {
                for r in (0..rows).step_by(RB) {
                    // SAFETY: AVX-512 F is asserted above; rows r..r+nr of x
                    // and dst and weight rows o..o+no lie within the asserted
                    // bounds; tasks write disjoint output columns.
                    #[cfg(target_arch = "x86_64")]
                    unsafe {
                        block(
                            x.as_ptr().add(r * x_rs),
                            x_rs,
                            RB.min(rows - r),
                            w.as_ptr().add(o * in_dim),
                            in_dim,
                            OB.min(end - o),
                            dst.ptr().add(r * dst_rs + o),
                            dst_rs,
                            accumulate,
                        )
                    }
                }
            }
        });
}

/// One block: `nr` ≤ [`RB`] activation rows × `no` ≤ [`OB`] weight rows.
/// Missing rows repeat the last real one (computed, never written).
///
/// # Safety
/// AVX-512 F must be present; `x` must hold `nr` rows of `k` floats `x_rs`
/// apart, `w` `no` rows of `k` floats, `dst` `nr` rows of `no` writable
/// floats `dst_rs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    x: *const f32,
    x_rs: usize,
    nr: usize,
    w: *const f32,
    k: usize,
    no: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let xr: [*const f32; RB] = std::array::from_fn(|i| x.add(i.min(nr - 1) * x_rs));
    let wr: [*const f32; OB] = std::array::from_fn(|i| w.add(i.min(no - 1) * k));
    let mut acc = [[_mm512_setzero_ps(); OB]; RB];
    let full = k - k % 16;
    for off in (0..full).step_by(16) {
        let xv: [__m512; RB] = std::array::from_fn(|r| _mm512_loadu_ps(xr[r].add(off)));
        for (o, &wp) in wr.iter().enumerate() {
            let wv = _mm512_loadu_ps(wp.add(off));
            for r in 0..RB {
                acc[r][o] = _mm512_fmadd_ps(xv[r], wv, acc[r][o]);
            }
        }
    }
    if full < k {
        // The rest of a row whose length is no multiple of 16, read through
        // a mask (zeros past the end).
        let mask = ((1u32 << (k - full)) - 1) as __mmask16;
        let xv: [__m512; RB] =
            std::array::from_fn(|r| _mm512_maskz_loadu_ps(mask, xr[r].add(full)));
        for (o, &wp) in wr.iter().enumerate() {
            let wv = _mm512_maskz_loadu_ps(mask, wp.add(full));
            for r in 0..RB {
                acc[r][o] = _mm512_fmadd_ps(xv[r], wv, acc[r][o]);
            }
        }
    }
    for (r, acc) in acc.iter().enumerate().take(nr) {
        let d = dst.add(r * dst_rs);
        for (o, &a) in acc.iter().enumerate().take(no) {
            let s = _mm512_reduce_add_ps(a);
            *d.add(o) = if accumulate { *d.add(o) + s } else { s };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 2003) as f32 / 1001.5 - 1.0)
            .collect()
    }

    #[test]
    fn matches_the_plain_formula_on_every_edge_shape() {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512 F");
            return;
        }
        let mut checked = 0;
        for rows in [1, 3, 4, 5, 9] {
            for out_dim in [1, 5, 6, 7, 13, 50] {
                for in_dim in [1, 15, 16, 17, 40] {
                    for accumulate in [false, true] {
                        let (x_rs, dst_rs) = (in_dim + 3, out_dim + 2);
                        let x = values((rows - 1) * x_rs + in_dim, 1);
                        let w = values(out_dim * in_dim, 2);
                        let start = values((rows - 1) * dst_rs + out_dim, 3);
                        let mut dst = start.clone();
                        matmul(
                            &mut dst,
                            dst_rs,
                            &x,
                            x_rs,
                            rows,
                            &w,
                            (out_dim, in_dim),
                            accumulate,
                        );
                        for r in 0..rows {
                            for o in 0..out_dim {
                                let dot: f64 = (0..in_dim)
                                    .map(|k| x[r * x_rs + k] as f64 * w[o * in_dim + k] as f64)
                                    .sum();
                                let want = dot
                                    + if accumulate {
                                        start[r * dst_rs + o] as f64
                                    } else {
                                        0.0
                                    };
                                let got = dst[r * dst_rs + o] as f64;
                                assert!(
                                    (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                    "rows {rows} out {out_dim} in {in_dim} acc {accumulate}: [{r}][{o}] {got} vs {want}"
                                );
                            }
                            // The gap between rows (stride padding) is untouched.
                            if r + 1 < rows {
                                assert_eq!(
                                    dst[r * dst_rs + out_dim..(r + 1) * dst_rs],
                                    start[r * dst_rs + out_dim..(r + 1) * dst_rs]
                                );
                            }
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 5 * 6 * 5 * 2);
    }
}
