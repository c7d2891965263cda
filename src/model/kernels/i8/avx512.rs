//! The AVX-512 VNNI kernel ([`I8Kernel::Vnni`](super::I8Kernel::Vnni)), and the
//! AVX-512 epilogue the AMX kernel shares.

use std::arch::x86_64::*;

use super::{Tile, MR};

/// Software prefetch distance for the weight streams (bytes = 8 k-groups ahead).
const PF: usize = 512;

/// VNNI register tile: `R` rows × `B` blocks of 16 columns.
///
/// # Safety
/// CPU must support avx512f/bw/vnni; `t` must describe valid memory for `R` rows and `B`
/// 16-column blocks (weights / per-channel vectors padded to 16; `dst` writes are masked
/// to `t.ncols`).
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // explicit indices read best for a register tile
pub(super) unsafe fn tile<const R: usize, const B: usize>(t: &Tile) {
    let mut acc = [[_mm512_setzero_si512(); B]; R];
    let mut x = t.x;
    let mut w = t.w;
    for _ in 0..t.groups {
        let mut wv = [_mm512_setzero_si512(); B];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_load_si512(w.add(j * t.w_bs) as *const _);
            // Prefetch never faults; `wrapping_add` keeps the address computation defined
            // past the end of the panel.
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(j * t.w_bs + PF) as *const i8);
        }
        for i in 0..R {
            let a = _mm512_set1_epi32((x.add(i * 4) as *const i32).read_unaligned());
            for j in 0..B {
                acc[i][j] = _mm512_dpbusd_epi32(acc[i][j], a, wv[j]);
            }
        }
        w = w.add(64);
        x = x.add(4 * MR);
    }
    // Epilogue: identical operation order to `super::epilogue`.
    let mut masks = [0u16; B];
    let mut wsum = [_mm512_setzero_si512(); B];
    let mut sw = [_mm512_setzero_ps(); B];
    for j in 0..B {
        let valid = t.ncols.saturating_sub(j * 16).min(16);
        masks[j] = if valid >= 16 {
            0xffff
        } else {
            ((1u32 << valid) - 1) as u16
        };
        wsum[j] = _mm512_loadu_si512(t.wsum.add(j * 16) as *const _);
        sw[j] = _mm512_loadu_ps(t.sw.add(j * 16));
    }
    for i in 0..R {
        let zx = _mm512_set1_epi32(*t.zx.add(i));
        let sx = _mm512_set1_ps(*t.sx.add(i));
        let d = t.dst.add(i * t.dst_rs);
        for j in 0..B {
            let v = _mm512_sub_epi32(acc[i][j], _mm512_mullo_epi32(zx, wsum[j]));
            let y = _mm512_mul_ps(_mm512_mul_ps(sx, sw[j]), _mm512_cvtepi32_ps(v));
            let p = d.add(j * 16);
            let y = if t.accumulate {
                _mm512_add_ps(_mm512_maskz_loadu_ps(masks[j], p), y)
            } else {
                y
            };
            _mm512_mask_storeu_ps(p, masks[j], y);
        }
    }
}

/// The shared epilogue for `nr` rows × `t.ncols` (<= 32) columns of i32 sums `acc`
/// (row stride `acc_rs`), written to `t.dst` (same operations as [`tile`] and
/// `super::epilogue`).
///
/// # Safety
/// CPU must support avx512f; `t` describes valid memory for `nr` rows (per-row vectors)
/// and `t.ncols` columns (per-channel vectors, `dst`); `acc` holds `nr` rows of
/// `16 * t.ncols.div_ceil(16)` values.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn epilogue_block(t: &Tile, acc: *const i32, acc_rs: usize, nr: usize) {
    for j in 0..t.ncols.div_ceil(16) {
        let valid = (t.ncols - j * 16).min(16);
        let mask = if valid >= 16 {
            0xffff
        } else {
            ((1u32 << valid) - 1) as u16
        };
        let wsum = _mm512_maskz_loadu_epi32(mask, t.wsum.add(j * 16) as *const _);
        let sw = _mm512_maskz_loadu_ps(mask, t.sw.add(j * 16));
        for i in 0..nr {
            let zx = _mm512_set1_epi32(*t.zx.add(i));
            let sx = _mm512_set1_ps(*t.sx.add(i));
            let a = _mm512_loadu_si512(acc.add(i * acc_rs + j * 16) as *const _);
            let v = _mm512_sub_epi32(a, _mm512_mullo_epi32(zx, wsum));
            let y = _mm512_mul_ps(_mm512_mul_ps(sx, sw), _mm512_cvtepi32_ps(v));
            let p = t.dst.add(i * t.dst_rs + j * 16);
            let y = if t.accumulate {
                _mm512_add_ps(_mm512_maskz_loadu_ps(mask, p), y)
            } else {
                y
            };
            _mm512_mask_storeu_ps(p, mask, y);
        }
    }
}

/// Dispatches a (possibly partial) tile of `r <= 8` rows × `b <= 4` blocks.
///
/// # Safety
/// As [`tile`].
pub(super) unsafe fn tile_dyn(t: &Tile, r: usize, b: usize) {
    macro_rules! arms {
        ($($r:literal),*) => {
            match (r, b) {
                $(
                    ($r, 1) => tile::<$r, 1>(t),
                    ($r, 2) => tile::<$r, 2>(t),
                    ($r, 3) => tile::<$r, 3>(t),
                    ($r, 4) => tile::<$r, 4>(t),
                )*
                _ => unreachable!("tile_dyn: bad tile {r}x{b}"),
            }
        };
    }
    arms!(1, 2, 3, 4, 5, 6, 7, 8)
}
