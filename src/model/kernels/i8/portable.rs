//! The portable int8 kernel: plain Rust written to auto-vectorize, built for the
//! baseline target ([`I8Kernel::Scalar`](super::I8Kernel::Scalar)) and with AVX2
//! ([`I8Kernel::Avx2`](super::I8Kernel::Avx2)).

use super::{epilogue, Tile, MR};

/// Portable tile of `r` rows × `nb` 16-column blocks (baseline target features).
///
/// # Safety
/// `t` must describe valid memory for `r` rows and `nb` blocks.
pub(super) unsafe fn scalar_tile(t: &Tile, r: usize, nb: usize) {
    scalar_tile_body(t, r, nb)
}

multiversion! {
    /// [`scalar_tile_body`] compiled with AVX2 enabled (auto-vectorized). Integer arithmetic
    /// plus the shared epilogue expression, so the results are identical to [`scalar_tile`].
    /// Safety as [`scalar_tile`].
    pub(super) mod scalar_tile_for(t: &Tile, r: usize, nb: usize) = scalar_tile_body;
    avx2: "avx2",
}

/// Body of the portable tile, written to auto-vectorize: 64 i32 lanes per 16-channel block
/// (channel × k-in-group), reduced over the 4 k lanes at the end. `u8 × i8` products fit in
/// i16 (`255 · 127 < 2^15`).
///
/// # Safety
/// As [`scalar_tile`].
#[inline(always)]
unsafe fn scalar_tile_body(t: &Tile, r: usize, nb: usize) {
    let xlen = t.groups * 4 * MR;
    let wlen = t.groups * 64;
    let xp = std::slice::from_raw_parts(t.x, xlen);
    for i in 0..r {
        let sx = *t.sx.add(i);
        let zx = *t.zx.add(i);
        for b in 0..nb {
            let wb = std::slice::from_raw_parts(t.w.add(b * t.w_bs) as *const i8, wlen);
            let mut acc = [0i32; 64];
            for (xpg, wg) in xp.chunks_exact(4 * MR).zip(wb.chunks_exact(64)) {
                let xg = &xpg[4 * i..4 * i + 4];
                let mut xv = [0i16; 16];
                for (m, v) in xv.iter_mut().enumerate() {
                    *v = xg[m & 3] as i16;
                }
                for (ac, wc) in acc.chunks_exact_mut(16).zip(wg.chunks_exact(16)) {
                    for m in 0..16 {
                        ac[m] += (xv[m] * wc[m] as i16) as i32;
                    }
                }
            }
            let valid = t.ncols.saturating_sub(b * 16).min(16);
            let d = t.dst.add(i * t.dst_rs + b * 16);
            for j in 0..valid {
                let a = acc[4 * j] + acc[4 * j + 1] + acc[4 * j + 2] + acc[4 * j + 3];
                let c = b * 16 + j;
                let y = epilogue(a, zx, *t.wsum.add(c), sx, *t.sw.add(c));
                let p = d.add(j);
                *p = if t.accumulate { *p + y } else { y };
            }
        }
    }
}
