//! The Intel AMX-INT8 kernel ([`I8Kernel::Amx`](super::I8Kernel::Amx)) and its
//! parallel driver.

use rayon::prelude::*;
use std::arch::asm;

use super::super::amx::load_config;
use super::{avx512, PackedI8, QuantRows, Tile, AMX_KG};
use crate::model::kernels::{post_block, RowPost, SharedMut};

/// The AMX path of [`matmul`](super::matmul): (row block × column block) tasks over the
/// rows layout.
///
/// Inside a task the column micro-panels (32 columns, full k: ≤ 32 × 4 KiB for k = 4096)
/// are the outer loop and the rows the inner one, so a weight micro-panel stays in L1/L2
/// while the task's activation block (≤ 512 KiB) streams from L2.
///
/// # Safety
/// Shapes / layouts validated by [`matmul`](super::matmul) (`x` in the rows layout); the CPU supports
/// AMX-INT8 and the OS granted the tile permission.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    rows: usize,
    accumulate: bool,
    parallel: bool,
    post: Option<RowPost>,
) {
    let n = w.out_dim;
    let threads = rayon::current_num_threads();
    let mut mb = ((512 << 10) / x.row_bytes).clamp(32, 512) / 32 * 32;
    let mut nb = 512;
    if parallel {
        while rows.div_ceil(mb) * n.div_ceil(nb) < 3 * threads {
            if mb > 64 {
                mb = (mb / 2).next_multiple_of(32);
            } else if nb > 64 {
                nb /= 2;
            } else {
                break;
            }
        }
    }
    // Even out the blocks (multiples of 32 rows / columns).
    mb = rows.div_ceil(rows.div_ceil(mb)).next_multiple_of(32);
    nb = n.div_ceil(n.div_ceil(nb)).next_multiple_of(32);
    let row_blocks = rows.div_ceil(mb);
    let col_blocks = n.div_ceil(nb);
    let tasks = row_blocks * col_blocks;
    let dptr = SharedMut(dst.as_mut_ptr());
    let task = |t: usize| {
        let r0 = (t / col_blocks) * mb;
        let c0 = (t % col_blocks) * nb;
        let r1 = (r0 + mb).min(rows);
        let c1 = (c0 + nb).min(n);
        // SAFETY: as for this function; tasks write disjoint tiles.
        unsafe { block(dptr, dst_rs, x, w, r0, r1, c0, c1, accumulate) };
        if let Some(post) = post {
            // SAFETY: the task's own tile, inside `dst` (checked by the caller).
            unsafe { post_block(post, dptr, dst_rs, (r0, r1), (c0, c1)) };
        }
    };
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// i32 results of one 32 × 32 micro-tile (row stride 32).
#[repr(C, align(64))]
struct Buf([i32; 32 * 32]);

/// Micro-kernel: up to 32 rows (`R2`: two A tiles) × 32 columns (`C2`: two B tiles)
/// over the full k depth, C tiles tmm0..3 (tmm0: rows 0..16 × columns 0..16, tmm1:
/// columns 16..32, tmm2/3: rows 16..32), A tiles tmm4/5, B tiles tmm6/7. The i32 sums
/// are stored to `out` (row stride 32). `t.x` / `t.x_rs`: first A row and row stride;
/// `t.w` / `t.w_bs`: first B block and block stride; `t.groups`: 64-k steps.
///
/// # Safety
/// Tile configuration loaded; 16 (`R2`: 32) A rows of `64 * t.groups` bytes and 1
/// (`C2`: 2) B blocks of `1024 * t.groups` bytes readable.
#[inline(always)]
unsafe fn micro<const R2: bool, const C2: bool>(t: &Tile, out: *mut i32) {
    let a0 = t.x;
    let a1 = t.x.wrapping_add(16 * t.x_rs);
    let b0 = t.w;
    let b1 = t.w.wrapping_add(t.w_bs);
    let sa = t.x_rs;
    asm!(
        "tilezero tmm0",
        "tilezero tmm1",
        "tilezero tmm2",
        "tilezero tmm3",
        options(nostack, nomem)
    );
    for s in 0..t.groups {
        let (a0, a1) = (a0.wrapping_add(64 * s), a1.wrapping_add(64 * s));
        let (b0, b1) = (b0.wrapping_add(1024 * s), b1.wrapping_add(1024 * s));
        match (R2, C2) {
            (true, true) => asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbusd tmm2, tmm5, tmm6",
                "tdpbusd tmm3, tmm5, tmm7",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                sa = in(reg) sa,
                sb = in(reg) 64usize,
                options(nostack, readonly),
            ),
            (false, true) => asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbusd tmm1, tmm4, tmm7",
                a0 = in(reg) a0,
                b0 = in(reg) b0,
                b1 = in(reg) b1,
                sa = in(reg) sa,
                sb = in(reg) 64usize,
                options(nostack, readonly),
            ),
            (true, false) => asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbusd tmm2, tmm5, tmm6",
                a0 = in(reg) a0,
                a1 = in(reg) a1,
                b0 = in(reg) b0,
                sa = in(reg) sa,
                sb = in(reg) 64usize,
                options(nostack, readonly),
            ),
            (false, false) => asm!(
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbusd tmm0, tmm4, tmm6",
                a0 = in(reg) a0,
                b0 = in(reg) b0,
                sa = in(reg) sa,
                sb = in(reg) 64usize,
                options(nostack, readonly),
            ),
        }
    }
    // Unused C tiles are zero and stored anyway (into the buffer, never read).
    asm!(
        "tilestored [{o0} + {so}*1], tmm0",
        "tilestored [{o1} + {so}*1], tmm1",
        "tilestored [{o2} + {so}*1], tmm2",
        "tilestored [{o3} + {so}*1], tmm3",
        o0 = in(reg) out,
        o1 = in(reg) out.add(16),
        o2 = in(reg) out.add(16 * 32),
        o3 = in(reg) out.add(16 * 32 + 16),
        so = in(reg) 128usize,
        options(nostack),
    );
}

/// Computes rows `r0..r1` × columns `c0..c1` (`r0`, `c0` multiples of 32): AMX integer
/// sums, then the shared epilogue (AVX-512, same expression as the other kernels).
///
/// # Safety
/// As [`matmul`]; no other thread writes this block.
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    dst: SharedMut,
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
    accumulate: bool,
) {
    assert!(r0.is_multiple_of(32) && c0.is_multiple_of(32) && r1 <= x.rows);
    assert!(c1 <= w.out_dim && w.block_bytes.is_multiple_of(AMX_KG * 64));
    // Every A tile read stays in its row (`row_bytes >= 64 * steps`) and in the padded
    // rows (multiple of 16); B reads stay in the block.
    let steps = w.block_bytes / (AMX_KG * 64);
    assert!(x.row_bytes >= 64 * steps && x.data.len >= x.rows.next_multiple_of(16) * x.row_bytes);
    let mut buf = Buf([0; 32 * 32]);
    let xd = x.data.as_slice().as_ptr();
    let wd = w.data.as_slice().as_ptr();
    load_config();
    for c in (c0..c1).step_by(32) {
        let ncols = (c1 - c).min(32);
        for r in (r0..r1).step_by(32) {
            let nr = (r1 - r).min(32);
            let t = Tile {
                x: xd.add(r * x.row_bytes),
                x_rs: x.row_bytes,
                w: wd.add((c / 16) * w.block_bytes),
                w_bs: w.block_bytes,
                groups: steps,
                sx: x.scale.as_ptr().add(r),
                zx: x.zero.as_ptr().add(r),
                sw: w.scale.as_ptr().add(c),
                wsum: w.wsum.as_ptr().add(c),
                dst: dst.0.add(r * dst_rs + c),
                dst_rs,
                ncols,
                accumulate,
            };
            let o = buf.0.as_mut_ptr();
            match (nr > 16, ncols > 16) {
                (true, true) => micro::<true, true>(&t, o),
                (false, true) => micro::<false, true>(&t, o),
                (true, false) => micro::<true, false>(&t, o),
                (false, false) => micro::<false, false>(&t, o),
            }
            avx512::epilogue_block(&t, buf.0.as_ptr(), 32, nr);
        }
    }
    asm!("tilerelease", options(nostack, nomem));
}
