//! [`matmul`]: the checks, the activation conversion and the parallel tiles
//! that run one kernel.

use rayon::prelude::*;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
use super::amx;
#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::pack::pack_activations;
use super::{portable, Bf16Kernel, Ctx, PackedBf16};
use crate::model::kernels::{post_block, AlignedBytes, RowPost, SharedMut};

/// Rows of the packed activation buffer are padded to a multiple of 32.
const ROW_ALIGN: usize = 32;
/// Columns are processed in panels of 32 (two packed blocks of 16).
const COL_PANEL: usize = 32;

/// `dst[r*dst_rs + o] = (accumulate ? dst[..] : 0) + sum_k bf16(x[r*x_rs+k]) * bf16(w[o][k])`
/// accumulated in f32, for `r < rows`, `o < out_dim`.
///
/// Activations are converted to bf16 (round to nearest even) into a packed,
/// reused thread-local buffer, in parallel per row block. The product is parallel
/// with rayon over (row block, column block) tiles when the work is large, using
/// the current rayon pool (`rayon::current_num_threads()`).
///
/// Panics if `kernel` is not available on this machine (see
/// [`Bf16Kernel::is_available`]), if `x_rs < in_dim` or `dst_rs < out_dim` (when
/// `rows > 0`) or if `x` / `dst` are too short for `rows` rows with those strides.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    kernel: Bf16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    w: &PackedBf16,
    accumulate: bool,
) {
    run(
        kernel, dst, dst_rs, x, x_rs, rows, w, accumulate, true, None,
    );
}

/// [`matmul`], then `post` on each part of `dst` as its task finishes it (see
/// [`RowPost`]); the same results as running `post` over `dst` afterwards.
#[allow(clippy::too_many_arguments)]
pub fn matmul_then(
    kernel: Bf16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    w: &PackedBf16,
    accumulate: bool,
    post: RowPost,
) {
    run(
        kernel,
        dst,
        dst_rs,
        x,
        x_rs,
        rows,
        w,
        accumulate,
        true,
        Some(post),
    );
}

/// [`matmul`] on the calling thread only: for products inside a loop that is
/// already parallel (attention, per pair and head). Same results bit for bit.
#[allow(clippy::too_many_arguments)]
pub fn matmul_one_thread(
    kernel: Bf16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    w: &PackedBf16,
    accumulate: bool,
) {
    run(
        kernel, dst, dst_rs, x, x_rs, rows, w, accumulate, false, None,
    );
}

#[allow(clippy::too_many_arguments)]
fn run(
    kernel: Bf16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    w: &PackedBf16,
    accumulate: bool,
    may_parallel: bool,
    post: Option<RowPost>,
) {
    assert!(
        kernel.is_available(),
        "bf16::matmul: kernel {kernel:?} not available"
    );
    let (in_dim, out_dim) = (w.in_dim, w.out_dim);
    if rows == 0 || out_dim == 0 {
        return;
    }
    assert!(x_rs >= in_dim, "bf16::matmul: x_rs < in_dim");
    assert!(dst_rs >= out_dim, "bf16::matmul: dst_rs < out_dim");
    let x_need = (rows - 1)
        .checked_mul(x_rs)
        .and_then(|v| v.checked_add(in_dim))
        .expect("bf16::matmul: x size overflow");
    assert!(x.len() >= x_need, "bf16::matmul: x too short");
    let d_need = (rows - 1)
        .checked_mul(dst_rs)
        .and_then(|v| v.checked_add(out_dim))
        .expect("bf16::matmul: dst size overflow");
    assert!(dst.len() >= d_need, "bf16::matmul: dst too short");

    let flops = 2.0 * rows as f64 * in_dim as f64 * out_dim as f64;
    let parallel = may_parallel && rayon::current_num_threads() > 1 && flops >= 8.0e6;

    // Packed activations: rows_pad × a_rs u32 pairs; the extra 16 pairs per row
    // avoid 4 KiB cache-set aliasing between the rows of an AMX A tile.
    let kp = w.kp;
    // The SIMD kernels read bf16 pairs (one u32 per pair); the portable kernels
    // read each rounded activation widened to f32 bits (one u32 per k), so that
    // broadcasting it needs no decoding.
    let widened = matches!(kernel, Bf16Kernel::Portable | Bf16Kernel::Avx2);
    let a_rs = if widened { 2 * kp + 16 } else { kp + 16 };
    let rows_pad = rows.next_multiple_of(ROW_ALIGN);
    let mut abuf = ABUF.with(|c| c.take());
    // Every element is rewritten by pack_activations (padding included). 64-byte
    // aligned like the weights: a_rs is a multiple of 16 u32, so every row starts
    // a cache line.
    abuf.resize(rows_pad * a_rs * 4);
    pack_activations(
        kernel,
        abuf.as_u32_mut(),
        a_rs,
        x,
        x_rs,
        rows,
        in_dim,
        parallel,
    );
    debug_assert!(!widened || a_rs >= 2 * kp);

    let ncols_pad = w.nblk * 16;
    let (mb, nb) = blocking(kernel, kp, rows_pad, ncols_pad);
    let n_rb = rows_pad.div_ceil(mb);
    let n_cb = ncols_pad.div_ceil(nb);
    let ctx = Ctx {
        kernel,
        a: abuf.as_u32(),
        a_rs,
        w,
        rows,
        dst: SharedMut(dst.as_mut_ptr()),
        dst_rs,
        accumulate,
    };
    let tile = |t: usize| {
        let (rb, cb) = (t / n_cb, t % n_cb);
        let r0 = rb * mb;
        let c0 = cb * nb;
        let r1 = (r0 + mb).min(rows_pad);
        let c1 = (c0 + nb).min(ncols_pad);
        ctx.run_tile(r0, r1, c0, c1);
        // Padded rows and columns are not in `dst`.
        let (r1, c1) = (r1.min(rows), c1.min(out_dim));
        if let (Some(post), true) = (post, r0 < r1 && c0 < c1) {
            // SAFETY: the tile's own part of `dst`, inside it (asserted above).
            unsafe { post_block(post, ctx.dst, dst_rs, (r0, r1), (c0, c1)) };
        }
    };
    if parallel && n_rb * n_cb > 1 {
        (0..n_rb * n_cb).into_par_iter().for_each(tile);
    } else {
        (0..n_rb * n_cb).for_each(tile);
    }
    ABUF.with(|c| c.set(abuf));
}

thread_local! {
    /// Reused packed-activation buffer (taken out while in use, so re-entrant calls
    /// on the same thread simply allocate their own).
    static ABUF: std::cell::Cell<AlignedBytes> = std::cell::Cell::new(AlignedBytes::default());
}

/// Returns (row block, column block) sizes of one parallel tile.
///
/// Inside a tile the row strips are the inner loop, so the tile's activation block
/// (mb rows × k) must stay in L2 (512 KiB budget of the 2 MiB on Sapphire Rapids)
/// while each weight panel is read from memory once per tile; a wide tile (nb) then
/// gives many flops per byte fetched from L3/DRAM.
fn blocking(kernel: Bf16Kernel, kp: usize, rows_pad: usize, ncols_pad: usize) -> (usize, usize) {
    let row_bytes = kp.max(16) * 4;
    let (mb, nb): (usize, usize) = match kernel {
        Bf16Kernel::Amx => (((512 << 10) / row_bytes).clamp(32, 512), 512),
        _ => (((256 << 10) / row_bytes).clamp(32, 128), 256),
    };
    let mb = (mb / ROW_ALIGN * ROW_ALIGN).min(rows_pad);
    let nb = nb.next_multiple_of(COL_PANEL).min(ncols_pad);
    (mb, nb)
}

impl Ctx<'_> {
    /// Computes rows `r0..r1` (multiples of 32 except r1 may be rows-rounded) and
    /// padded columns `c0..c1` (multiples of 32).
    fn run_tile(&self, r0: usize, r1: usize, c0: usize, c1: usize) {
        match self.kernel {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            // SAFETY: availability was asserted in `matmul`.
            Bf16Kernel::Amx => unsafe { amx::tile(self, r0, r1, c0, c1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: availability was asserted in `matmul`.
            Bf16Kernel::Avx512Bf16 => unsafe { avx512::tile(self, r0, r1, c0, c1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: availability was asserted in `matmul`.
            Bf16Kernel::Avx2 => unsafe { portable::tile_fma_for::avx2(self, r0, r1, c0, c1) },
            _ => portable::tile(self, r0, r1, c0, c1),
        }
    }
}
