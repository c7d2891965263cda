//! The portable bf16 kernels: plain Rust written to auto-vectorize, built for the
//! baseline target ([`Bf16Kernel::Portable`](super::Bf16Kernel::Portable)) and with
//! AVX2+FMA ([`Bf16Kernel::Avx2`](super::Bf16Kernel::Avx2)).

use super::Ctx;

/// Portable tile: 4 rows × 16 columns register tile, the same rounded products
/// as VDPBF16PS (odd k then even k of each pair) accumulated in f32. With
/// `FMA = true` the update uses fused multiply-add, which gives identical results
/// because a bf16×bf16 product is exact in f32.
#[inline(always)]
fn portable_tile_impl<const FMA: bool>(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
    const MR: usize = 4;
    let kp = ctx.w.kp;
    let r1 = r1.min(ctx.rows);
    for blk in c0 / 16..c1 / 16 {
        if blk * 16 >= ctx.w.out_dim {
            break;
        }
        let b = ctx.w.block(blk);
        for r in (r0..r1).step_by(MR) {
            // Rows r..r+MR exist in the padded buffer (rows_pad is a multiple of 32).
            let mut acc = [[0f32; 16]; MR];
            let a: [&[u32]; MR] =
                std::array::from_fn(|i| &ctx.a[(r + i) * ctx.a_rs..(r + i) * ctx.a_rs + 2 * kp]);
            for (p, wp) in b.chunks_exact(16).enumerate() {
                let wp: &[u32; 16] = wp.try_into().unwrap();
                let wl: [f32; 16] = std::array::from_fn(|c| f32::from_bits(wp[c] << 16));
                let wh: [f32; 16] = std::array::from_fn(|c| f32::from_bits(wp[c] & 0xffff_0000));
                for i in 0..MR {
                    let al = f32::from_bits(a[i][2 * p]);
                    let ah = f32::from_bits(a[i][2 * p + 1]);
                    for c in 0..16 {
                        acc[i][c] = if FMA {
                            al.mul_add(wl[c], ah.mul_add(wh[c], acc[i][c]))
                        } else {
                            (acc[i][c] + ah * wh[c]) + al * wl[c]
                        };
                    }
                }
            }
            ctx.write_out(acc.as_flattened(), 16, r, MR, blk * 16, 16);
        }
    }
}

/// The baseline build ([`Bf16Kernel::Portable`](super::Bf16Kernel::Portable)).
pub(super) fn tile(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
    portable_tile_impl::<false>(ctx, r0, r1, c0, c1)
}

multiversion! {
    /// The AVX2+FMA build ([`Bf16Kernel::Avx2`](super::Bf16Kernel::Avx2)), with fused
    /// multiply-adds.
    pub(super) mod tile_fma_for(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize)
        = portable_tile_impl::<true>;
    avx2: "avx2,fma",
}
