//! The AVX-512 `VDPBF16PS` kernel ([`Bf16Kernel::Avx512Bf16`](super::Bf16Kernel::Avx512Bf16)),
//! and the AVX-512 activation rounding it and the AMX kernel share.

use std::arch::x86_64::*;

use super::Ctx;

const MR: usize = 8;

#[inline(always)]
fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are plain 512-bit vectors.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// VDPBF16PS tile: 8 rows × 32 columns (16 zmm accumulators) per microkernel.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
pub(super) fn tile(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
    let kp = ctx.w.kp;
    let r1 = r1.min(ctx.rows);
    let mut out = [0f32; MR * 32];
    for c in (c0..c1).step_by(32) {
        if c >= ctx.w.out_dim {
            break;
        }
        let b0 = ctx.w.block(c / 16);
        let b1 = ctx.w.block(c / 16 + 1);
        let mut r = r0;
        while r < r1 {
            // Rows r..r+8 exist in the padded buffer (rows_pad is a multiple of 32).
            let a = &ctx.a[r * ctx.a_rs..(r + MR - 1) * ctx.a_rs + kp];
            let mut acc = [[_mm512_setzero_ps(); 2]; MR];
            let ap = a.as_ptr();
            for p in 0..kp {
                // SAFETY: p < kp; block slices hold kp*16 u32; row i+p < a.len().
                unsafe {
                    let w0 = bh(_mm512_loadu_si512(b0.as_ptr().add(p * 16).cast()));
                    let w1 = bh(_mm512_loadu_si512(b1.as_ptr().add(p * 16).cast()));
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let av = bh(_mm512_set1_epi32(*ap.add(i * ctx.a_rs + p) as i32));
                        acc[0] = _mm512_dpbf16_ps(acc[0], av, w0);
                        acc[1] = _mm512_dpbf16_ps(acc[1], av, w1);
                    }
                }
            }
            for (i, acc) in acc.iter().enumerate() {
                // SAFETY: out holds MR*32 f32.
                unsafe {
                    _mm512_storeu_ps(out.as_mut_ptr().add(i * 32), acc[0]);
                    _mm512_storeu_ps(out.as_mut_ptr().add(i * 32 + 16), acc[1]);
                }
            }
            ctx.write_out(&out, 32, r, MR, c, 32);
            r += MR;
        }
    }
}

/// Rounds one row to bf16 pairs (the layout the AVX-512 and AMX kernels read) and
/// zero-fills the rest of `out` (padding); bit-identical to the scalar rounding
/// [`f32_to_bf16`](super::f32_to_bf16) (same integer operations).
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) fn convert_row(out: &mut [u32], xr: &[f32]) {
    let n = xr.len();
    assert!(out.len() * 2 >= n);
    let out16 = out.as_mut_ptr().cast::<u16>();
    let mut k = 0;
    while k < n {
        let m: __mmask16 = if n - k >= 16 {
            0xffff
        } else {
            (1u16 << (n - k)) - 1
        };
        // SAFETY: the mask limits the load to xr[k..n] and the store to
        // out16[k..n], which lies inside `out` (asserted above).
        unsafe {
            let v = _mm512_maskz_loadu_epi32(m, xr.as_ptr().add(k).cast());
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
            let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
            let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(v, bias));
            let abs = _mm512_and_si512(v, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
            let q = _mm512_or_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(0x40));
            let r = _mm512_mask_mov_epi32(r, nan, q);
            _mm512_mask_cvtepi32_storeu_epi16(out16.add(k).cast(), m, r);
        }
        k += 16;
    }
    let used = n.div_ceil(2);
    if n % 2 == 1 {
        // Clear the upper half of the last pair.
        out[used - 1] &= 0xffff;
    }
    out[used..].fill(0);
}

#[cfg(test)]
mod tests {
    use super::super::{f32_to_bf16, Bf16Kernel};
    use crate::model::kernels::Rng;

    /// Rounds one row to bf16 pairs and zero-fills the rest of `out` (padding);
    /// scalar reference for [`super::convert_row`].
    fn convert_row(out: &mut [u32], xr: &[f32]) {
        let mut pairs = xr.chunks_exact(2);
        for (o, p) in out.iter_mut().zip(&mut pairs) {
            *o = f32_to_bf16(p[0]) as u32 | ((f32_to_bf16(p[1]) as u32) << 16);
        }
        let mut n = xr.len() / 2;
        if let [last] = pairs.remainder() {
            out[n] = f32_to_bf16(*last) as u32;
            n += 1;
        }
        out[n..].fill(0);
    }

    #[test]
    fn simd_activation_conversion_matches_scalar() {
        if !Bf16Kernel::Avx512Bf16.is_available() {
            return;
        }
        let mut rng = Rng(5);
        let mut xs = rng.uniform_vec(200);
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            f32::MAX,
            -0.0,
            1e-40,
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x7f80_0001),
        ]);
        for len in [0usize, 1, 15, 16, 17, 33, xs.len()] {
            let mut a = vec![0xdead_beefu32; len.div_ceil(2) + 20];
            let mut b = a.clone();
            convert_row(&mut a, &xs[..len]);
            // SAFETY: AVX-512F/BW checked above.
            unsafe { super::convert_row(&mut b, &xs[..len]) };
            assert_eq!(a, b, "len {len}");
        }
    }
}
