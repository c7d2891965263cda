//! Int8 activations: [`QuantRows`], quantized per row on every call by
//! [`quantize_rows`], in the layout of the kernel that reads them.

use rayon::prelude::*;

use super::{I8Kernel, AMX_KG, AMX_ROWS, MR};
use crate::model::kernels::AlignedBytes;

/// Activations quantized per row, asymmetric u8 (row `min..max`, extended to include 0, mapped
/// to `0..255` with a zero point so that 0.0 is exact); a reusable buffer filled by
/// [`quantize_rows`].
///
/// Two layouts (chosen by [`quantize_rows`] for the kernel given; [`matmul`](super::matmul)
/// converts when it runs a kernel that reads the other one):
///
/// * panels (VNNI / portable kernels): panels of `MR` (= 8) rows; within a panel, for each
///   group of 4 consecutive `k`, the 4 bytes of each of the 8 rows (32 bytes per group), so
///   the micro-kernel reads one contiguous stream. `in_dim` is zero-padded to a multiple of 4,
///   rows to a multiple of 8;
/// * rows (AMX kernel): row-major, each row's bytes contiguous (an AMX A tile row), `in_dim`
///   zero-padded to a multiple of 64 plus 64 bytes (so that the 16 rows of an A tile do not
///   alias in the L1 sets), rows zero-padded to a multiple of 16.
///
/// The quantized values, scales and zero points do not depend on the layout.
#[derive(Default)]
pub struct QuantRows {
    pub(super) rows: usize,
    pub(super) in_dim: usize,
    /// Number of 4-wide k groups (`in_dim.div_ceil(4)`).
    pub(super) groups: usize,
    pub(super) layout: Layout,
    /// Row stride in bytes of the rows layout (0 for panels).
    pub(super) row_bytes: usize,
    /// Panels: `rows.div_ceil(MR) × groups × 4·MR` bytes; rows: `rows_pad × row_bytes`.
    pub(super) data: AlignedBytes,
    /// Per-row scale: `x ≈ scale * (q - zero)` (padded with zeros like the rows).
    pub(super) scale: Vec<f32>,
    /// Per-row zero point in `0..=255` (padded with zeros like the rows).
    pub(super) zero: Vec<i32>,
}

/// Byte layout of [`QuantRows`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Layout {
    /// Panels of `MR` rows, 4 bytes per row and k group (VNNI / portable kernels).
    #[default]
    Panels,
    /// Row-major, `row_bytes` per row, rows padded to `AMX_ROWS` (AMX kernel).
    Rows,
}

impl Layout {
    /// `(rows per unit, bytes per unit, row_bytes)` for `groups` k groups; a unit (panel or
    /// row block) is quantized as one piece.
    pub(super) fn unit(self, groups: usize) -> (usize, usize, usize) {
        match self {
            Layout::Panels => (MR, groups * 4 * MR, 0),
            Layout::Rows => {
                let rb = groups.div_ceil(AMX_KG) * 64 + 64;
                (AMX_ROWS, AMX_ROWS * rb, rb)
            }
        }
    }

    /// The layout `kernel` reads.
    pub(super) fn for_kernel(kernel: I8Kernel) -> Layout {
        match kernel {
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Amx => Layout::Rows,
            _ => Layout::Panels,
        }
    }
}

impl QuantRows {
    /// Number of quantized rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of values per row.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Dequantized activation `x[r][k]` (for tests / accuracy checks). Panics if out of range.
    pub fn dequantized(&self, r: usize, k: usize) -> f32 {
        assert!(
            r < self.rows && k < self.in_dim,
            "QuantRows::dequantized: out of range"
        );
        self.scale[r] * (self.q(r, k) as i32 - self.zero[r]) as f32
    }

    /// Byte offset of `q[r][k]` in `data`.
    fn idx(&self, r: usize, k: usize) -> usize {
        match self.layout {
            Layout::Panels => {
                (r / MR) * self.groups * 4 * MR + (k / 4) * 4 * MR + (r % MR) * 4 + (k % 4)
            }
            Layout::Rows => r * self.row_bytes + k,
        }
    }

    /// Quantized activation `q[r][k]`.
    pub(super) fn q(&self, r: usize, k: usize) -> u8 {
        self.data.as_slice()[self.idx(r, k)]
    }

    /// Sets the shape and layout and resizes the buffers (contents unspecified); returns
    /// `(rows per unit, bytes per unit)`.
    fn shape(&mut self, rows: usize, in_dim: usize, layout: Layout) -> (usize, usize) {
        let groups = in_dim.div_ceil(4);
        let (unit_rows, unit_bytes, row_bytes) = layout.unit(groups);
        let units = rows.div_ceil(unit_rows);
        self.rows = rows;
        self.in_dim = in_dim;
        self.groups = groups;
        self.layout = layout;
        self.row_bytes = row_bytes;
        self.data.resize(units * unit_bytes);
        self.scale.resize(units * unit_rows, 0.0);
        self.zero.resize(units * unit_rows, 0);
        (unit_rows, unit_bytes)
    }

    /// A copy in `layout` (same values; used when a kernel needs the other layout).
    pub(super) fn relayout(&self, layout: Layout) -> QuantRows {
        let mut q = QuantRows::default();
        q.shape(self.rows, self.in_dim, layout);
        q.data.reset_zeroed(q.data.len);
        q.scale.fill(0.0);
        q.zero.fill(0);
        q.scale[..self.rows].copy_from_slice(&self.scale[..self.rows]);
        q.zero[..self.rows].copy_from_slice(&self.zero[..self.rows]);
        for r in 0..self.rows {
            for k in 0..self.in_dim {
                let i = q.idx(r, k);
                q.data.as_mut_slice()[i] = self.q(r, k);
            }
        }
        q
    }
}

/// Min and max of a slice (NaNs ignored); written so that it auto-vectorizes.
#[inline(always)]
fn min_max(x: &[f32]) -> (f32, f32) {
    // 64 independent lanes (4 zmm) so the min/max dependency chains do not serialize.
    let mut mn = [f32::INFINITY; 64];
    let mut mx = [f32::NEG_INFINITY; 64];
    let mut chunks = x.chunks_exact(64);
    for c in &mut chunks {
        for i in 0..64 {
            mn[i] = if c[i] < mn[i] { c[i] } else { mn[i] };
            mx[i] = if c[i] > mx[i] { c[i] } else { mx[i] };
        }
    }
    let mut a = f32::INFINITY;
    let mut b = f32::NEG_INFINITY;
    for &v in chunks.remainder().iter().chain(mn.iter()) {
        a = if v < a { v } else { a };
    }
    for &v in chunks.remainder().iter().chain(mx.iter()) {
        b = if v > b { v } else { b };
    }
    (a, b)
}

/// Min and max of `x[k] * col[k]` (NaNs ignored).
#[inline(always)]
fn scaled_min_max(x: &[f32], col: &[f32]) -> (f32, f32) {
    let mut mn = [f32::INFINITY; 64];
    let mut mx = [f32::NEG_INFINITY; 64];
    let mut chunks = x.chunks_exact(64).zip(col.chunks_exact(64));
    for (c, s) in &mut chunks {
        for i in 0..64 {
            let v = c[i] * s[i];
            mn[i] = if v < mn[i] { v } else { mn[i] };
            mx[i] = if v > mx[i] { v } else { mx[i] };
        }
    }
    let tail = x.len() / 64 * 64;
    let rest = x[tail..].iter().zip(&col[tail..]).map(|(a, b)| a * b);
    let mut a = f32::INFINITY;
    let mut b = f32::NEG_INFINITY;
    for v in rest.clone().chain(mn.iter().copied()) {
        a = if v < a { v } else { a };
    }
    for v in rest.chain(mx.iter().copied()) {
        b = if v > b { v } else { b };
    }
    (a, b)
}

/// Quantizes one panel of up to `MR` rows (`nr` rows of `x` at row stride `x_rs`, `in_dim`
/// values each) into `out` (layout of [`QuantRows`]; rows `nr..MR` and k padding are zero),
/// with per-row scales / zero points in `s` / `z`. Rows with non-finite values quantize to
/// scale 0 (all-zero output). Runs the copy compiled for `kernel`'s instruction set
/// (AVX-512, AVX2 or baseline: same IEEE operations, so identical results).
fn quantize_panel(
    kernel: I8Kernel,
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    col: &[f32],
    out: PanelOut,
) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: the CPU supports avx512f/bw (implied by `kernel`, checked available).
        I8Kernel::Vnni | I8Kernel::Amx => {
            return unsafe { quantize_panel_for::avx512(x, x_rs, nr, in_dim, col, out) }
        }
        // SAFETY: the CPU supports avx2 (implied by `kernel`, checked available).
        I8Kernel::Avx2 => {
            return unsafe { quantize_panel_for::avx2(x, x_rs, nr, in_dim, col, out) }
        }
        I8Kernel::Scalar => {}
    }
    quantize_panel_body(x, x_rs, nr, in_dim, col, out)
}

/// Quantizes one block of up to `AMX_ROWS` rows into the rows layout of [`QuantRows`]
/// (row stride `row_bytes`; padding bytes and rows `nr..AMX_ROWS` are zero). Same values as
/// [`quantize_panel`].
#[allow(clippy::too_many_arguments)]
fn quantize_rowblock(
    kernel: I8Kernel,
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    row_bytes: usize,
    col: &[f32],
    out: PanelOut,
) {
    #[cfg(target_arch = "x86_64")]
    match kernel {
        // SAFETY: the CPU supports avx512f/bw (implied by `kernel`, checked available).
        I8Kernel::Vnni | I8Kernel::Amx => {
            return unsafe {
                quantize_rowblock_for::avx512(x, x_rs, nr, in_dim, row_bytes, col, out)
            }
        }
        // SAFETY: the CPU supports avx2 (implied by `kernel`, checked available).
        I8Kernel::Avx2 => {
            return unsafe { quantize_rowblock_for::avx2(x, x_rs, nr, in_dim, row_bytes, col, out) }
        }
        I8Kernel::Scalar => {}
    }
    quantize_rowblock_body(x, x_rs, nr, in_dim, row_bytes, col, out)
}

multiversion! {
    /// [`quantize_rowblock_body`] compiled for the AVX-512 and AVX2 kernels.
    mod quantize_rowblock_for(
        x: &[f32],
        x_rs: usize,
        nr: usize,
        in_dim: usize,
        row_bytes: usize,
        col: &[f32],
        out: PanelOut,
    ) = quantize_rowblock_body;
    avx512: "avx512f,avx512bw",
    avx2: "avx2",
}

/// Body of [`quantize_rowblock`].
#[inline(always)]
fn quantize_rowblock_body(
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    row_bytes: usize,
    col: &[f32],
    out: PanelOut,
) {
    let (out, s, z) = out;
    assert!(nr <= AMX_ROWS && s.len() == AMX_ROWS && z.len() == AMX_ROWS);
    assert!(row_bytes >= in_dim && out.len() == AMX_ROWS * row_bytes);
    assert!(nr == 0 || (nr - 1) * x_rs + in_dim <= x.len());
    for (i, o) in out.chunks_exact_mut(row_bytes).enumerate() {
        if i < nr {
            let xr = &x[i * x_rs..i * x_rs + in_dim];
            let (scale, inv, zero) = row_params(xr, col);
            quantize_values(xr, col, inv, zero, &mut o[..in_dim]);
            o[in_dim..].fill(0);
            s[i] = scale;
            z[i] = zero as i32;
        } else {
            o.fill(0);
            s[i] = 0.0;
            z[i] = 0;
        }
    }
}

/// Output of one activation panel: packed bytes, per-row scales, per-row zero points.
type PanelOut<'a> = (&'a mut [u8], &'a mut [f32], &'a mut [i32]);

multiversion! {
    /// [`quantize_panel_body`] compiled for the AVX-512 and AVX2 kernels.
    mod quantize_panel_for(
        x: &[f32],
        x_rs: usize,
        nr: usize,
        in_dim: usize,
        col: &[f32],
        out: PanelOut,
    ) = quantize_panel_body;
    avx512: "avx512f,avx512bw",
    avx2: "avx2",
}

/// Per-row quantization parameters `(scale, 1/scale, zero point)` (plain IEEE f32) of
/// `xr`, or with `col` non-empty of `xr[k] * col[k]`.
#[inline(always)]
fn row_params(xr: &[f32], col: &[f32]) -> (f32, f32, f32) {
    let (mn, mx) = if col.is_empty() {
        min_max(xr)
    } else {
        scaled_min_max(xr, col)
    };
    let mn = if mn < 0.0 { mn } else { 0.0 };
    let mx = if mx > 0.0 { mx } else { 0.0 };
    let range = mx - mn;
    // `range` is NaN-free (NaNs are ignored by `min_max`) but may be infinite.
    let (scale, inv) = if range > 0.0 && range.is_finite() {
        (range / 255.0, 255.0 / range)
    } else {
        (0.0, 0.0)
    };
    let zero = (-mn * inv).round().clamp(0.0, 255.0);
    (scale, inv, zero)
}

/// `q = clamp(round_half_even(v * inv + zero), 0, 255)` for each value (no fused
/// operations), `v` being `xs[k]`, or with `col` non-empty `xs[k] * col[k]`.
#[inline(always)]
fn quantize_values(xs: &[f32], col: &[f32], inv: f32, zero: f32, out: &mut [u8]) {
    if !col.is_empty() {
        const MAGIC: f32 = 8_388_608.0;
        for ((q, &v), &c) in out.iter_mut().zip(xs).zip(col) {
            let t = (v * c) * inv + zero;
            let t = if t > 0.0 { t } else { 0.0 };
            let t = if t < 255.0 { t } else { 255.0 };
            *q = (t + MAGIC).to_bits() as u8;
        }
        return;
    }
    // Round-to-nearest-even via the 2^23 trick: for 0 <= v <= 255, the low mantissa bits of
    // `v + 2^23` are `round(v)`. Branch-free so that it vectorizes.
    const MAGIC: f32 = 8_388_608.0;
    for (q, &v) in out.iter_mut().zip(xs) {
        let t = v * inv + zero;
        let t = if t > 0.0 { t } else { 0.0 };
        let t = if t < 255.0 { t } else { 255.0 };
        *q = (t + MAGIC).to_bits() as u8;
    }
}

/// Body of [`quantize_panel`]: row parameters first, then chunks of `KC` values of all rows
/// are quantized into an L1-resident scratch and interleaved (4 bytes per row and k group).
#[inline(always)]
fn quantize_panel_body(
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    col: &[f32],
    out: PanelOut,
) {
    const KC: usize = 256;
    let (out, s, z) = out;
    let kp = in_dim.div_ceil(4) * 4;
    assert!(nr <= MR && s.len() == MR && z.len() == MR && out.len() == kp * MR);
    assert!(nr == 0 || (nr - 1) * x_rs + in_dim <= x.len());
    let mut inv = [0f32; MR];
    let mut zero = [0f32; MR];
    for i in 0..MR {
        (s[i], inv[i], zero[i]) = if i < nr {
            row_params(&x[i * x_rs..i * x_rs + in_dim], col)
        } else {
            (0.0, 0.0, 0.0)
        };
        z[i] = zero[i] as i32;
    }
    let mut tmp = [[0u8; KC]; MR];
    for k0 in (0..kp).step_by(KC) {
        let kc = (kp - k0).min(KC);
        let valid = in_dim.min(k0 + kc) - k0; // k0 < in_dim since kp - in_dim < 4
        for (i, t) in tmp.iter_mut().enumerate() {
            if i < nr {
                let xs = &x[i * x_rs + k0..i * x_rs + k0 + valid];
                let cs = if col.is_empty() {
                    col
                } else {
                    &col[k0..k0 + valid]
                };
                quantize_values(xs, cs, inv[i], zero[i], &mut t[..valid]);
                t[valid..kc].fill(0);
            } else {
                t[..kc].fill(0);
            }
        }
        let dst = &mut out[k0 * MR..(k0 + kc) * MR];
        // (constant loop bounds let the compiler drop the bounds checks)
        for (g, d) in (0..KC / 4).zip(dst.chunks_exact_mut(4 * MR)) {
            for (di, t) in d.chunks_exact_mut(4).zip(&tmp) {
                di.copy_from_slice(&t[4 * g..4 * g + 4]);
            }
        }
    }
}

/// Quantizes `rows` rows of `x` (row stride `x_rs`, `in_dim` values per row) into `q`
/// (resizing it), in the layout `kernel` reads, with code compiled for `kernel`'s
/// instruction set (any layout works with any kernel, a mismatch costs a conversion).
/// Parallel over rows with rayon when large.
///
/// Panics if `kernel` is not available on this machine, if `x` is too short for the given
/// shape or `x_rs < in_dim` (with `rows > 1`).
pub fn quantize_rows(
    kernel: I8Kernel,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    in_dim: usize,
    q: &mut QuantRows,
) {
    assert!(
        kernel.is_available(),
        "quantize_rows: {kernel:?} not available"
    );
    quantize_rows_impl(
        kernel,
        x,
        x_rs,
        rows,
        in_dim,
        &[],
        q,
        Layout::for_kernel(kernel),
    );
}

/// [`quantize_rows`] of `x[r][k] * col[k]` (`col.len() == in_dim`): the activations
/// of a layer whose weights' input columns were multiplied by `1 / col[k]`
/// (SmoothQuant's migration of activation outliers into the weights), without a
/// pass to scale them first.
pub fn quantize_rows_scaled(
    kernel: I8Kernel,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    col: &[f32],
    q: &mut QuantRows,
) {
    assert!(
        kernel.is_available(),
        "quantize_rows: {kernel:?} not available"
    );
    let in_dim = col.len();
    quantize_rows_impl(
        kernel,
        x,
        x_rs,
        rows,
        in_dim,
        col,
        q,
        Layout::for_kernel(kernel),
    );
}

/// [`quantize_rows`] into `layout`, with code compiled for `kernel` (available).
#[allow(clippy::too_many_arguments)]
pub(super) fn quantize_rows_impl(
    kernel: I8Kernel,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    in_dim: usize,
    col: &[f32],
    q: &mut QuantRows,
    layout: Layout,
) {
    assert!(
        col.is_empty() || col.len() == in_dim,
        "quantize_rows: column scales"
    );
    if rows > 0 {
        assert!(
            rows == 1 || x_rs >= in_dim,
            "quantize_rows: row stride < in_dim"
        );
        assert!(
            (rows - 1) * x_rs + in_dim <= x.len(),
            "quantize_rows: input slice too short"
        );
    }
    let (unit_rows, unit_bytes) = q.shape(rows, in_dim, layout);
    let row_bytes = q.row_bytes;
    if rows == 0 {
        return;
    }
    if in_dim == 0 {
        q.data.as_mut_slice().fill(0);
        q.scale.fill(0.0);
        q.zero.fill(0);
        return;
    }
    type Unit<'a> = (usize, ((&'a mut [u8], &'a mut [f32]), &'a mut [i32]));
    let unit = |(p, ((out, s), z)): Unit| {
        let r0 = p * unit_rows;
        let nr = (rows - r0).min(unit_rows);
        let xs = &x[r0 * x_rs..];
        match layout {
            Layout::Panels => quantize_panel(kernel, xs, x_rs, nr, in_dim, col, (out, s, z)),
            Layout::Rows => {
                quantize_rowblock(kernel, xs, x_rs, nr, in_dim, row_bytes, col, (out, s, z))
            }
        }
    };
    let data = q.data.as_mut_slice();
    if rows * in_dim >= 1 << 15 && rayon::current_num_threads() > 1 {
        data.par_chunks_mut(unit_bytes)
            .zip(q.scale.par_chunks_mut(unit_rows))
            .zip(q.zero.par_chunks_mut(unit_rows))
            .enumerate()
            .for_each(unit);
    } else {
        data.chunks_mut(unit_bytes)
            .zip(q.scale.chunks_mut(unit_rows))
            .zip(q.zero.chunks_mut(unit_rows))
            .enumerate()
            .for_each(unit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::i8::{matmul, PackedI8};
    use crate::model::kernels::{Kernels, Rng};

    /// The kernel this process uses.
    fn best() -> I8Kernel {
        Kernels::get().unwrap().i8
    }

    #[test]
    fn quant_rows_buffer_reuse() {
        // Reusing a QuantRows (larger, then smaller, then larger shape) gives the same bits as
        // a fresh buffer; the stale contents must not leak into padding.
        let mut rng = Rng(5);
        let w = PackedI8::quantize(&rng.gauss_vec(37 * 21), 37, 21);
        let big = rng.gauss_vec(130 * 300);
        let small = rng.gauss_vec(13 * 21);
        for layout in [Layout::Panels, Layout::Rows] {
            let mut reused = QuantRows::default();
            quantize_rows_impl(best(), &big, 300, 130, 100, &[], &mut reused, layout);
            quantize_rows_impl(best(), &small, 21, 13, 21, &[], &mut reused, layout);
            let mut fresh = QuantRows::default();
            quantize_rows_impl(best(), &small, 21, 13, 21, &[], &mut fresh, layout);
            assert_eq!(reused.data.as_slice(), fresh.data.as_slice());
            assert_eq!(reused.scale, fresh.scale);
            assert_eq!(reused.zero, fresh.zero);
        }
        let mut reused = QuantRows::default();
        quantize_rows(best(), &big, 300, 130, 100, &mut reused);
        quantize_rows(best(), &small, 21, 13, 21, &mut reused);
        let mut fresh = QuantRows::default();
        quantize_rows(best(), &small, 21, 13, 21, &mut fresh);
        assert_eq!(reused.data.as_slice(), fresh.data.as_slice());
        let (mut a, mut b) = (vec![0f32; 13 * 37], vec![0f32; 13 * 37]);
        matmul(best(), &mut a, 37, &reused, &w, 13, false);
        matmul(best(), &mut b, 37, &fresh, &w, 13, false);
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        // Exercise the scalar-threshold and the rayon path of quantize_rows alike.
        let mut r2 = QuantRows::default();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| quantize_rows(best(), &big, 300, 130, 300, &mut r2));
        quantize_rows(best(), &big, 300, 130, 300, &mut reused);
        assert_eq!(reused.data.as_slice(), r2.data.as_slice());
        assert_eq!(reused.scale, r2.scale);
        assert_eq!(reused.zero, r2.zero);
    }

    #[test]
    fn column_scaled_rows_equal_the_rows_scaled_first() {
        // What the smoothed int8 layers rely on: quantizing `x[r][k] * col[k]` on the fly
        // gives the bits of quantizing the product, for every kernel this CPU has, both
        // layouts, odd widths (the 64-lane tails) and a NaN.
        let mut rng = Rng(23);
        for (rows, in_dim) in [(1usize, 5usize), (9, 70), (17, 200), (3, 1024)] {
            let x_rs = in_dim + 2;
            let mut x = rng.gauss_vec(rows * x_rs);
            x[1] = f32::NAN;
            let col: Vec<f32> = (0..in_dim)
                .map(|_| 0.25 + rng.uniform().abs() * 4.0)
                .collect();
            let mut scaled = x.clone();
            for r in 0..rows {
                for k in 0..in_dim {
                    scaled[r * x_rs + k] = x[r * x_rs + k] * col[k];
                }
            }
            for &kernel in I8Kernel::ALL.iter().filter(|k| k.is_available()) {
                let (mut want, mut got) = (QuantRows::default(), QuantRows::default());
                quantize_rows(kernel, &scaled, x_rs, rows, in_dim, &mut want);
                quantize_rows_scaled(kernel, &x, x_rs, rows, &col, &mut got);
                assert_eq!(
                    got.data.as_slice(),
                    want.data.as_slice(),
                    "{kernel:?} {in_dim}"
                );
                assert_eq!(got.scale, want.scale, "{kernel:?}");
                assert_eq!(got.zero, want.zero, "{kernel:?}");
                // ... and not those of the unscaled rows.
                let mut plain = QuantRows::default();
                quantize_rows(kernel, &x, x_rs, rows, in_dim, &mut plain);
                assert_ne!(plain.data.as_slice(), got.data.as_slice());
            }
        }
    }

    #[test]
    fn quantize_panel_variants_identical() {
        let mut rng = Rng(11);
        for (nr, n) in [
            (1usize, 1usize),
            (3, 3),
            (8, 16),
            (5, 37),
            (8, 300),
            (2, 1000),
        ] {
            let x_rs = n + 3;
            let mut x = rng.gauss_vec(nr * x_rs);
            if n > 3 {
                // Exact zero, a zero point on a tie (range 4 -> 127.5 -> 128), a NaN.
                x[0] = 0.0;
                x[1] = 2.0;
                x[2] = -2.0;
                x[3] = f32::NAN;
            }
            let len = n.div_ceil(4) * 4 * MR;
            let (mut want, mut ws, mut wz) = (vec![0u8; len], [0f32; MR], [0i32; MR]);
            quantize_panel_body(&x, x_rs, nr, n, &[], (&mut want, &mut ws, &mut wz));
            #[cfg(target_arch = "x86_64")]
            for variant in 0..2 {
                let (mut got, mut gs, mut gz) = (vec![7u8; len], [1f32; MR], [1i32; MR]);
                let out = (&mut got[..], &mut gs[..], &mut gz[..]);
                if variant == 0 && is_x86_feature_detected!("avx2") {
                    // SAFETY: feature checked.
                    unsafe { quantize_panel_for::avx2(&x, x_rs, nr, n, &[], out) };
                } else if variant == 1 && I8Kernel::Vnni.is_available() {
                    // SAFETY: feature checked.
                    unsafe { quantize_panel_for::avx512(&x, x_rs, nr, n, &[], out) };
                } else {
                    continue;
                }
                assert_eq!(got, want);
                assert_eq!(gs.map(f32::to_bits), ws.map(f32::to_bits));
                assert_eq!(gz, wz);
            }
            // The rows layout (every compiled variant) holds the same values, zero padded.
            let kp = n.div_ceil(4) * 4;
            let rb = n.div_ceil(4).div_ceil(AMX_KG) * 64 + 64;
            for variant in 0..3 {
                let (mut got, mut gs, mut gz) =
                    (vec![7u8; AMX_ROWS * rb], [1f32; AMX_ROWS], [1i32; AMX_ROWS]);
                let out = (&mut got[..], &mut gs[..], &mut gz[..]);
                match variant {
                    0 => quantize_rowblock_body(&x, x_rs, nr, n, rb, &[], out),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: feature checked.
                    1 if is_x86_feature_detected!("avx2") => unsafe {
                        quantize_rowblock_for::avx2(&x, x_rs, nr, n, rb, &[], out)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: feature checked.
                    2 if I8Kernel::Vnni.is_available() => unsafe {
                        quantize_rowblock_for::avx512(&x, x_rs, nr, n, rb, &[], out)
                    },
                    _ => continue,
                }
                for i in 0..AMX_ROWS {
                    for k in 0..rb {
                        let v = if i < MR && k < kp {
                            want[(k / 4) * 4 * MR + i * 4 + k % 4]
                        } else {
                            0
                        };
                        assert_eq!(got[i * rb + k], v, "variant {variant} [{i},{k}]");
                    }
                    let (s, z) = if i < MR { (ws[i], wz[i]) } else { (0.0, 0) };
                    assert_eq!((gs[i].to_bits(), gz[i]), (s.to_bits(), z));
                }
            }
        }
    }
}
