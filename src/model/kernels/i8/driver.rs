//! [`matmul`]: the checks and the parallel tasks that run one kernel (AMX has
//! its own task loop, in `amx.rs`).

use super::quantize::Layout;
#[cfg(target_arch = "x86_64")]
use super::{amx, avx512};
use super::{portable, I8Kernel, PackedI8, QuantRows, Tile, AMX_KG, MR, NB};
use crate::model::kernels::{for_each_block, post_block, RowPost, SharedMut};

/// Rows per parallel task (multiple of `MR`; halved while there are too few tasks).
const MC: usize = 256;
/// Columns per parallel task (multiple of `16 * NB`; halved while there are too few tasks).
const NC: usize = 256;
// Tasks must start at activation panel boundaries, also after halving `MC`.
const _: () =
    assert!(MC.is_multiple_of(MR) && (MC / MR).is_power_of_two() && NC.is_multiple_of(16 * NB));
/// Below this many multiply-adds the work is done on the calling thread.
const PAR_MIN_MACS: usize = 1 << 21;
/// `dst[r*dst_rs + o] = (accumulate ? dst[..] : 0) + dequant(sum_k xq[r][k] * wq[o][k])` for
/// `r < rows`, `o < w.out_dim()`.
///
/// Integer accumulation in i32; dequantization `sx[r] * sw[o] * (acc - zx[r] * wsum[o])`
/// (`wsum` = per-channel sum of the int8 weights), as f32. Parallel with rayon over
/// (row block, column block) tiles when the work is large (uses the caller's pool).
///
/// `x` is converted first if it was quantized for a kernel with another layout (see
/// [`quantize_rows`](super::quantize_rows)); the result bits do not depend on the kernel.
///
/// Panics if `kernel` is not available on this machine, `x.in_dim() != w.in_dim()`,
/// `rows > x.rows()`, `dst_rs < w.out_dim()` (with `rows > 1`) or `dst` is too short.
pub fn matmul(
    kernel: I8Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    rows: usize,
    accumulate: bool,
) {
    matmul_then(kernel, dst, dst_rs, x, w, rows, accumulate, None);
}

/// [`matmul`], then `post` on each part of `dst` as its task finishes it (see
/// [`RowPost`]); the same results as running `post` over `dst` afterwards.
#[allow(clippy::too_many_arguments)]
pub fn matmul_then(
    kernel: I8Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    rows: usize,
    accumulate: bool,
    post: Option<RowPost>,
) {
    assert!(
        kernel.is_available(),
        "i8::matmul: {kernel:?} not available"
    );
    assert_eq!(x.in_dim, w.in_dim, "matmul_i8: in_dim mismatch");
    assert!(rows <= x.rows, "matmul_i8: more rows than quantized");
    let n = w.out_dim;
    if rows == 0 || n == 0 {
        return;
    }
    assert!(
        rows == 1 || dst_rs >= n,
        "matmul_i8: dst row stride < out_dim"
    );
    assert!(
        (rows - 1) * dst_rs + n <= dst.len(),
        "matmul_i8: dst too short"
    );
    let layout = Layout::for_kernel(kernel);
    if x.layout != layout {
        let x = x.relayout(layout);
        return matmul_then(kernel, dst, dst_rs, &x, w, rows, accumulate, post);
    }
    // Internal layout invariants (guarantee the raw-pointer accesses below stay in bounds).
    assert_eq!(x.groups, w.groups);
    let (unit_rows, unit_bytes, row_bytes) = layout.unit(x.groups);
    let units = x.rows.div_ceil(unit_rows);
    assert!(x.data.len == units * unit_bytes && x.row_bytes == row_bytes);
    assert!(x.scale.len() == units * unit_rows && x.zero.len() == units * unit_rows);
    assert!(w.block_bytes >= w.groups * 64 && w.block_bytes.is_multiple_of(AMX_KG * 64));
    assert_eq!(w.data.len, w.blocks * w.block_bytes);
    assert!(w.scale.len() == w.blocks * 16 && w.wsum.len() == w.blocks * 16);

    let macs = rows * n * x.groups * 4;
    let threads = rayon::current_num_threads();
    let parallel = macs >= PAR_MIN_MACS && threads > 1;
    #[cfg(target_arch = "x86_64")]
    if kernel == I8Kernel::Amx {
        // SAFETY: shapes and layouts validated above, AMX availability asserted.
        unsafe { amx::matmul(dst, dst_rs, x, w, rows, accumulate, parallel, post) };
        return;
    }
    // Task size: MC × NC by default (weight panel reused across MC rows from L1/L2),
    // shrunk until there are a few tasks per thread.
    let dptr = SharedMut(dst.as_mut_ptr());
    for_each_block(
        (rows, n),
        (MC, NC),
        (4 * MR, 32 * NB),
        parallel,
        |(r0, r1), (c0, c1)| {
            // SAFETY: bounds asserted above; tiles are disjoint between tasks.
            unsafe { run_block(dptr, dst_rs, x, w, r0, r1, c0, c1, accumulate, kernel) };
            if let Some(post) = post {
                // SAFETY: the task's own tile, inside `dst` (asserted above).
                unsafe { post_block(post, dptr, dst_rs, (r0, r1), (c0, c1)) };
            }
        },
    );
}

/// Computes rows `r0..r1` × columns `c0..c1` (`c0` a multiple of 16).
///
/// # Safety
/// Shapes validated by [`matmul`]; no other thread writes this block.
#[allow(clippy::too_many_arguments)]
unsafe fn run_block(
    dst: SharedMut,
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
    accumulate: bool,
    kernel: I8Kernel,
) {
    assert!(
        r0.is_multiple_of(MR),
        "run_block: row block not panel aligned"
    );
    let wblock = w.block_bytes;
    let xd = x.data.as_slice().as_ptr();
    let wd = w.data.as_slice().as_ptr();
    let mut c = c0;
    while c < c1 {
        let ncols = (c1 - c).min(16 * NB);
        let nb = ncols.div_ceil(16);
        let mut r = r0;
        while r < r1 {
            let nr = (r1 - r).min(MR);
            let t = Tile {
                // `r` is a multiple of MR (tasks start at multiples of mc, a multiple of MR).
                x: xd.add((r / MR) * x.groups * 4 * MR),
                x_rs: 0,
                w: wd.add((c / 16) * wblock),
                w_bs: wblock,
                groups: w.groups,
                sx: x.scale.as_ptr().add(r),
                zx: x.zero.as_ptr().add(r),
                sw: w.scale.as_ptr().add(c),
                wsum: w.wsum.as_ptr().add(c),
                dst: dst.0.add(r * dst_rs + c),
                dst_rs,
                ncols,
                accumulate,
            };
            match kernel {
                I8Kernel::Scalar => portable::scalar_tile(&t, nr, nb),
                #[cfg(target_arch = "x86_64")]
                I8Kernel::Avx2 => portable::scalar_tile_for::avx2(&t, nr, nb),
                #[cfg(target_arch = "x86_64")]
                I8Kernel::Vnni => avx512::tile_dyn(&t, nr, nb),
                #[cfg(target_arch = "x86_64")]
                I8Kernel::Amx => unreachable!("run_block: AMX has its own driver"),
            }
            r += nr;
        }
        c += ncols;
    }
}
