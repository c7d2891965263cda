//! f32 `y = x·Wᵀ` for a few rows, reading the weights as stored (out × in,
//! row-major) without packing them.
//!
//! Replaces `gemm::gemm` for few rows ([`pays_off`]) on AVX-512 CPUs. `gemm`
//! packs the weight matrix on every call; with few rows that packing costs
//! more than the arithmetic (`perf` on single ~60-token pairs: 46 % of the
//! time in `gemm`'s packing, 37 % in its microkernel), which made a one-pair
//! f32 request ~2× slower than PyTorch's. Here each output is a dot product of
//! a weight row and an activation row, 4 rows × 6 outputs at a time in 24
//! AVX-512 accumulators; the 6 weight rows (24 KiB at in = 1024) stay in L1
//! while every activation row block passes, so the weights are read from
//! memory once per call.
//!
//! With many rows `gemm` wins again (its packing is then amortized, first on
//! the layers that widen, 1024 → 3072/4096), hence [`pays_off`]. Results
//! differ from `gemm`'s only in summation order, and do not depend on how
//! many rows a call has. Callers check [`Kernels::small_f32`](super::Kernels::small_f32)
//! (which `RERANK_SMALL_F32=0` turns off) and [`pays_off`].

use rayon::prelude::*;

use super::SharedMut;

/// Whether this kernel beats `gemm` for `rows` rows of an `in_dim → out_dim`
/// layer, as measured on the encoder's shapes: up to 64 rows always, up to
/// 128 when the layer does not widen (1024 → 1024, 4096 → 1024).
pub fn pays_off(rows: usize, out_dim: usize, in_dim: usize) -> bool {
    rows <= 64 || (rows <= 128 && out_dim <= in_dim)
}
/// Activation rows per block.
const RB: usize = 4;
/// Output channels per block.
const OB: usize = 6;
/// Output channels per parallel task.
const TASK_OUTS: usize = 8 * OB;
/// Inputs per pass: 6 weight rows of 1024 floats (24 KiB) stay in L1 while
/// the activation blocks go by; a 4096-input layer runs in 4 passes, adding
/// to what the first wrote (measured at 70 rows, 4096 → 1024: 3.70 → 3.04 ms).
const KC: usize = 1024;

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
    let dst = SharedMut(dst.as_mut_ptr());
    (0..out_dim.div_ceil(TASK_OUTS))
        .into_par_iter()
        .for_each(|task| {
            let end = ((task + 1) * TASK_OUTS).min(out_dim);
            for k0 in (0..in_dim.max(1)).step_by(KC) {
                let k = KC.min(in_dim - k0);
                for o in (task * TASK_OUTS..end).step_by(OB) {
                    for r in (0..rows).step_by(RB) {
                        // SAFETY: AVX-512 F is asserted above; rows r..r+nr of
                        // x and dst, inputs k0..k0+k and weight rows o..o+no
                        // lie within the asserted bounds; tasks write
                        // disjoint output columns.
                        #[cfg(target_arch = "x86_64")]
                        unsafe {
                            block(
                                x.as_ptr().add(r * x_rs + k0),
                                x_rs,
                                RB.min(rows - r),
                                w.as_ptr().add(o * in_dim + k0),
                                in_dim,
                                k,
                                OB.min(end - o),
                                dst.ptr().add(r * dst_rs + o),
                                dst_rs,
                                accumulate || k0 > 0,
                            )
                        }
                    }
                }
            }
        });
}

/// One block: `nr` ≤ [`RB`] activation rows (`x_rs` apart) × `no` ≤ [`OB`]
/// weight rows (`w_rs` apart), `k` inputs each. Missing rows repeat the last
/// real one (computed, never written).
///
/// Written with separate scalar arguments and plain index loops on purpose:
/// with the row sets passed as tuples, LLVM stored every accumulator to the
/// stack after each FMA in the hot loop (measured 1.4–2× slower).
///
/// # Safety
/// AVX-512 F must be present; both row sets must hold `k` readable floats
/// per row, `dst` `nr` rows of `no` writable floats `dst_rs` apart.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
unsafe fn block(
    x: *const f32,
    x_rs: usize,
    nr: usize,
    w: *const f32,
    w_rs: usize,
    k: usize,
    no: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
) {
    use std::arch::x86_64::*;
    let mut xr = [x; RB];
    for i in 0..RB {
        xr[i] = x.add(i.min(nr - 1) * x_rs);
    }
    let mut wr = [w; OB];
    for i in 0..OB {
        wr[i] = w.add(i.min(no - 1) * w_rs);
    }
    let mut acc = [[_mm512_setzero_ps(); OB]; RB];
    let full = k / 16;
    for c in 0..full {
        let off = c * 16;
        let mut xv = [_mm512_setzero_ps(); RB];
        for r in 0..RB {
            xv[r] = _mm512_loadu_ps(xr[r].add(off));
        }
        for o in 0..OB {
            let wv = _mm512_loadu_ps(wr[o].add(off));
            for r in 0..RB {
                acc[r][o] = _mm512_fmadd_ps(xv[r], wv, acc[r][o]);
            }
        }
    }
    let rest = k - full * 16;
    if rest > 0 {
        // The rest of a row whose length is no multiple of 16, read through
        // a mask (zeros past the end).
        let mask = ((1u32 << rest) - 1) as __mmask16;
        let off = full * 16;
        let mut xv = [_mm512_setzero_ps(); RB];
        for r in 0..RB {
            xv[r] = _mm512_maskz_loadu_ps(mask, xr[r].add(off));
        }
        for o in 0..OB {
            let wv = _mm512_maskz_loadu_ps(mask, wr[o].add(off));
            for r in 0..RB {
                acc[r][o] = _mm512_fmadd_ps(xv[r], wv, acc[r][o]);
            }
        }
    }
    for r in 0..nr {
        let d = dst.add(r * dst_rs);
        for o in 0..no {
            let s = _mm512_reduce_add_ps(acc[r][o]);
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
                // 1030: two passes of KC inputs, the second with a tail.
                for in_dim in [1, 15, 16, 17, 40, 1030] {
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
        assert_eq!(checked, 5 * 6 * 6 * 2);
    }
}
