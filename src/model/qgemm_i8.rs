//! Int8 GEMM for the encoder's linear layers (`y = x·Wᵀ + b` without the bias).
//!
//! Replaces the f32 `gemm` crate call (`gemm::gemm`) used for the encoder linear layers
//! (attention Q/K/V/output projections and the two feed-forward layers) with:
//!
//! * weights quantized once, symmetric int8 per output channel ([`PackedI8`]), packed in the
//!   AVX-512 VNNI layout (per block of 16 output channels, groups of 4 consecutive `k`,
//!   64 bytes per zmm register);
//! * activations quantized per row, asymmetric u8 with a zero point ([`QuantRows`],
//!   [`quantize_rows`]; packed in panels of 8 rows so the kernel reads one stream; quantize
//!   once and reuse for several matmuls with the same input, e.g. Q/K/V);
//! * exact i32 accumulation ([`matmul_i8`]) and a per-element f32 epilogue
//!   `sx[r] * sw[o] * (acc - zx[r] * wsum[o])`.
//!
//! Kernels, selected at run time (cached in a `OnceLock`; `RERANK_I8_KERNEL=amx|vnni|avx2|
//! portable` caps the choice, kernels the CPU lacks are skipped; see [`detected_kernel`]):
//! * Intel AMX-INT8 (`tdpbusd` u8 × i8 → i32; Sapphire Rapids and later, Linux: CPUID
//!   AMX-TILE/AMX-INT8, XCR0 bits 17/18 and `arch_prctl(ARCH_REQ_XCOMP_PERM)`), written with
//!   stable inline `asm!`: 32 × 32 register tiles in tmm0..3 over the full k depth, A tiles
//!   tmm4/5 (16 rows × 64 k, from the row-major AMX activation layout of [`QuantRows`]),
//!   B tiles tmm6/7 (16 consecutive 64-byte groups of the VNNI weight layout, which is
//!   zero-padded to a multiple of 64 k for this); the i32 tiles are stored to a small buffer
//!   and the AVX-512 epilogue (same expression) adds them to `dst`;
//! * AVX-512 VNNI micro-kernel (`vpdpbusd` u8 × i8, register tile 8 rows × 32 columns =
//!   16 zmm accumulators, software prefetch of the weight stream; tasks of 256 × 256 outputs
//!   keep the weight micro-panel in L1/L2);
//! * portable fallback (plain Rust written to auto-vectorize; also compiled with AVX2 enabled
//!   and used on AVX2-only CPUs such as Zen 3; see [`vnni_available`]).
//!
//! Accumulation is exact integer arithmetic and every path evaluates the identical f32
//! epilogue expression (no FMA), so all paths give bit-identical results (tested), also for
//! any rayon pool size.
//!
//! Measured on the 2-core Sapphire Rapids dev VM (shared with other jobs, so absolute
//! numbers vary by about ±2×; the numbers below are from one quiet run, `src/bin/bench.rs`),
//! rows = 2048, GOP/s = 2·rows·in·out / median time of 5, 2 rayon threads, f32 reference =
//! `gemm` 0.19 (`x86-v4`, `Parallelism::Rayon(2)`); "+q" includes [`quantize_rows`]:
//!
//! | in × out    | AMX    | AMX +q | VNNI   | VNNI +q | f32 `gemm` | AMX / VNNI | AMX+q / f32 |
//! |-------------|--------|--------|--------|---------|------------|------------|-------------|
//! | 1024 × 1024 | 3167   | 2414   | 1660   | 1475    | 358        | 1.9×       | 6.7×        |
//! | 1024 × 4096 | 2964   | 2763   | 1551   | 1472    | 414        | 1.9×       | 6.7×        |
//! | 4096 × 1024 | 4833   | 3396   | 1628   | 1365    | 375        | 3.0×       | 9.1×        |
//!
//! (With k = 1024 the AMX path is limited by the per-output epilogue and the f32 `dst` write
//! traffic rather than by `tdpbusd`. The first AMX call after idling runs slower — tile
//! unit power-up — so single short timings can read low. The portable path compiled for
//! AVX2 runs at ≈ 80 GOP/s on 2 threads here, i.e. slower than f32 `gemm`.)

use rayon::prelude::*;
use std::sync::OnceLock;

/// Rows per register tile of the micro-kernel.
const MR: usize = 8;
/// 16-column blocks (zmm registers) per register tile of the micro-kernel.
const NB: usize = 2;
/// Rows per parallel task (multiple of `MR`; halved while there are too few tasks).
const MC: usize = 256;
/// Columns per parallel task (multiple of `16 * NB`; halved while there are too few tasks).
const NC: usize = 256;
// Tasks must start at activation panel boundaries, also after halving `MC`.
const _: () =
    assert!(MC.is_multiple_of(MR) && (MC / MR).is_power_of_two() && NC.is_multiple_of(16 * NB));
/// Below this many multiply-adds the work is done on the calling thread.
const PAR_MIN_MACS: usize = 1 << 21;
/// 4-wide k groups per AMX tile step (64 k: one 16 × 64-byte B tile). Weight blocks are
/// zero-padded to a multiple of this many groups.
const AMX_KG: usize = 16;
/// Rows per activation unit of the AMX layout (the rows of one A tile).
const AMX_ROWS: usize = 16;

/// 64-byte aligned storage unit (keeps packed panels and activation rows cache-line aligned).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct A64([u8; 64]);

/// A growable, 64-byte aligned byte buffer.
#[derive(Default, Clone)]
struct AlignedBytes {
    buf: Vec<A64>,
    len: usize,
}

impl AlignedBytes {
    /// Resizes to `len` bytes, all set to zero.
    fn reset_zeroed(&mut self, len: usize) {
        let units = len.div_ceil(64);
        self.buf.clear();
        self.buf.resize(units, A64([0; 64]));
        self.len = len;
    }

    /// Resizes to `len` bytes; contents unspecified (but initialized).
    fn resize(&mut self, len: usize) {
        let units = len.div_ceil(64);
        if self.buf.len() < units {
            self.buf.resize(units, A64([0; 64]));
        }
        self.len = len;
    }

    fn as_slice(&self) -> &[u8] {
        // SAFETY: `A64` is `repr(C)` plain bytes; `len <= 64 * buf.len()`.
        unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.len) }
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, unique borrow.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut u8, self.len) }
    }
}

/// Weights of one linear layer `y = x·Wᵀ + b`, `W` stored (out × in) row-major as in a PyTorch
/// checkpoint, quantized symmetric int8 per output channel (`scale = max|w_row| / 127`,
/// `q = round(w / scale)` clamped to `[-127, 127]`), packed for the kernel in the VNNI layout:
/// per block of 16 output channels, groups of 4 consecutive `k`, 64 bytes per zmm
/// (`in_dim` is zero-padded to a multiple of 4, `out_dim` to a multiple of 16). Each block
/// is further zero-padded to a multiple of 16 groups (64 k), so that 16 consecutive groups
/// form one AMX int8 B tile (16 rows × 64 bytes); the VNNI / portable kernels only read the
/// first `groups` groups of each block.
pub struct PackedI8 {
    out_dim: usize,
    in_dim: usize,
    /// Number of 4-wide k groups (`in_dim.div_ceil(4)`).
    groups: usize,
    /// Number of 16-channel blocks (`out_dim.div_ceil(16)`).
    blocks: usize,
    /// Bytes per 16-channel block (`groups.div_ceil(AMX_KG) * AMX_KG * 64`).
    block_bytes: usize,
    /// `blocks × block_bytes` bytes (i8 values stored as their bit patterns).
    data: AlignedBytes,
    /// Per-channel scale, padded with zeros to `16 * blocks`.
    scale: Vec<f32>,
    /// Per-channel sum of the int8 weights, padded with zeros to `16 * blocks`.
    wsum: Vec<i32>,
}

impl PackedI8 {
    /// Quantizes and packs `w` (`out_dim × in_dim`, row-major).
    ///
    /// Panics if `w.len() != out_dim * in_dim`.
    pub fn quantize(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(
            w.len(),
            out_dim * in_dim,
            "PackedI8::quantize: bad weight size"
        );
        let groups = in_dim.div_ceil(4);
        let blocks = out_dim.div_ceil(16);
        let block_bytes = groups.div_ceil(AMX_KG) * AMX_KG * 64;
        let mut data = AlignedBytes::default();
        data.reset_zeroed(blocks * block_bytes);
        let mut scale = vec![0f32; blocks * 16];
        let mut wsum = vec![0i32; blocks * 16];
        if block_bytes > 0 {
            data.as_mut_slice()
                .par_chunks_mut(block_bytes)
                .zip(scale.par_chunks_mut(16))
                .zip(wsum.par_chunks_mut(16))
                .enumerate()
                .for_each(|(b, ((dblk, sblk), wsblk))| {
                    for j in 0..16 {
                        let o = b * 16 + j;
                        if o >= out_dim {
                            break;
                        }
                        let row = &w[o * in_dim..(o + 1) * in_dim];
                        let amax = row.iter().fold(0f32, |m, &v| m.max(v.abs()));
                        let s = amax / 127.0;
                        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                        let mut sum = 0i32;
                        for (k, &v) in row.iter().enumerate() {
                            let q = (v * inv).round().clamp(-127.0, 127.0) as i32;
                            sum += q;
                            dblk[(k / 4) * 64 + j * 4 + (k % 4)] = q as i8 as u8;
                        }
                        sblk[j] = s;
                        wsblk[j] = sum;
                    }
                });
        }
        PackedI8 {
            out_dim,
            in_dim,
            groups,
            blocks,
            block_bytes,
            data,
            scale,
            wsum,
        }
    }

    /// Number of output channels (rows of `W`).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Number of input features (columns of `W`).
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Dequantized weight `w[o][k]` (for tests / accuracy checks). Panics if out of range.
    pub fn dequantized(&self, o: usize, k: usize) -> f32 {
        assert!(
            o < self.out_dim && k < self.in_dim,
            "PackedI8::dequantized: out of range"
        );
        self.q(o, k) as f32 * self.scale[o]
    }

    /// Quantized weight `q[o][k]`.
    fn q(&self, o: usize, k: usize) -> i8 {
        let idx = (o / 16) * self.block_bytes + (k / 4) * 64 + (o % 16) * 4 + (k % 4);
        self.data.as_slice()[idx] as i8
    }
}

/// Activations quantized per row, asymmetric u8 (row `min..max`, extended to include 0, mapped
/// to `0..255` with a zero point so that 0.0 is exact); a reusable buffer filled by
/// [`quantize_rows`].
///
/// Two layouts (chosen by [`quantize_rows`] for the kernel [`matmul_i8`] will run;
/// [`matmul_i8_with`] converts when they do not match):
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
    rows: usize,
    in_dim: usize,
    /// Number of 4-wide k groups (`in_dim.div_ceil(4)`).
    groups: usize,
    layout: Layout,
    /// Row stride in bytes of the rows layout (0 for panels).
    row_bytes: usize,
    /// Panels: `rows.div_ceil(MR) × groups × 4·MR` bytes; rows: `rows_pad × row_bytes`.
    data: AlignedBytes,
    /// Per-row scale: `x ≈ scale * (q - zero)` (padded with zeros like the rows).
    scale: Vec<f32>,
    /// Per-row zero point in `0..=255` (padded with zeros like the rows).
    zero: Vec<i32>,
}

/// Byte layout of [`QuantRows`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Layout {
    /// Panels of `MR` rows, 4 bytes per row and k group (VNNI / portable kernels).
    #[default]
    Panels,
    /// Row-major, `row_bytes` per row, rows padded to `AMX_ROWS` (AMX kernel).
    Rows,
}

impl Layout {
    /// `(rows per unit, bytes per unit, row_bytes)` for `groups` k groups; a unit (panel or
    /// row block) is quantized as one piece.
    fn unit(self, groups: usize) -> (usize, usize, usize) {
        match self {
            Layout::Panels => (MR, groups * 4 * MR, 0),
            Layout::Rows => {
                let rb = groups.div_ceil(AMX_KG) * 64 + 64;
                (AMX_ROWS, AMX_ROWS * rb, rb)
            }
        }
    }

    /// The layout `kernel` reads.
    fn for_kernel(kernel: I8Kernel) -> Layout {
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
    fn q(&self, r: usize, k: usize) -> u8 {
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
    fn relayout(&self, layout: Layout) -> QuantRows {
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

/// Quantizes one panel of up to `MR` rows (`nr` rows of `x` at row stride `x_rs`, `in_dim`
/// values each) into `out` (layout of [`QuantRows`]; rows `nr..MR` and k padding are zero),
/// with per-row scales / zero points in `s` / `z`. Rows with non-finite values quantize to
/// scale 0 (all-zero output). Dispatches to a copy compiled for AVX-512 / AVX2 when available
/// (same IEEE operations, so identical results).
fn quantize_panel(x: &[f32], x_rs: usize, nr: usize, in_dim: usize, out: PanelOut) {
    #[cfg(target_arch = "x86_64")]
    match best_kernel() {
        // SAFETY: the CPU supports avx512f/bw (checked by `best_kernel`).
        I8Kernel::Vnni | I8Kernel::Amx => {
            return unsafe { quantize_panel_avx512(x, x_rs, nr, in_dim, out) }
        }
        // SAFETY: the CPU supports avx2 (checked by `best_kernel`).
        I8Kernel::Avx2 => return unsafe { quantize_panel_avx2(x, x_rs, nr, in_dim, out) },
        I8Kernel::Scalar => {}
    }
    quantize_panel_body(x, x_rs, nr, in_dim, out)
}

/// Quantizes one block of up to `AMX_ROWS` rows into the rows layout of [`QuantRows`]
/// (row stride `row_bytes`; padding bytes and rows `nr..AMX_ROWS` are zero). Same values as
/// [`quantize_panel`].
fn quantize_rowblock(
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    row_bytes: usize,
    out: PanelOut,
) {
    #[cfg(target_arch = "x86_64")]
    match best_kernel() {
        // SAFETY: the CPU supports avx512f/bw (checked by `best_kernel`).
        I8Kernel::Vnni | I8Kernel::Amx => {
            return unsafe { quantize_rowblock_avx512(x, x_rs, nr, in_dim, row_bytes, out) }
        }
        // SAFETY: the CPU supports avx2 (checked by `best_kernel`).
        I8Kernel::Avx2 => {
            return unsafe { quantize_rowblock_avx2(x, x_rs, nr, in_dim, row_bytes, out) }
        }
        I8Kernel::Scalar => {}
    }
    quantize_rowblock_body(x, x_rs, nr, in_dim, row_bytes, out)
}

/// [`quantize_rowblock_body`] compiled with AVX-512 enabled.
///
/// # Safety
/// The CPU must support avx512f and avx512bw.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_rowblock_avx512(
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    row_bytes: usize,
    out: PanelOut,
) {
    quantize_rowblock_body(x, x_rs, nr, in_dim, row_bytes, out)
}

/// [`quantize_rowblock_body`] compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support avx2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_rowblock_avx2(
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    row_bytes: usize,
    out: PanelOut,
) {
    quantize_rowblock_body(x, x_rs, nr, in_dim, row_bytes, out)
}

/// Body of [`quantize_rowblock`].
#[inline(always)]
fn quantize_rowblock_body(
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    row_bytes: usize,
    out: PanelOut,
) {
    let (out, s, z) = out;
    assert!(nr <= AMX_ROWS && s.len() == AMX_ROWS && z.len() == AMX_ROWS);
    assert!(row_bytes >= in_dim && out.len() == AMX_ROWS * row_bytes);
    assert!(nr == 0 || (nr - 1) * x_rs + in_dim <= x.len());
    for (i, o) in out.chunks_exact_mut(row_bytes).enumerate() {
        if i < nr {
            let xr = &x[i * x_rs..i * x_rs + in_dim];
            let (scale, inv, zero) = row_params(xr);
            quantize_values(xr, inv, zero, &mut o[..in_dim]);
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

/// [`quantize_panel_body`] compiled with AVX-512 enabled.
///
/// # Safety
/// The CPU must support avx512f and avx512bw.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_panel_avx512(x: &[f32], x_rs: usize, nr: usize, in_dim: usize, out: PanelOut) {
    quantize_panel_body(x, x_rs, nr, in_dim, out)
}

/// [`quantize_panel_body`] compiled with AVX2 enabled.
///
/// # Safety
/// The CPU must support avx2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantize_panel_avx2(x: &[f32], x_rs: usize, nr: usize, in_dim: usize, out: PanelOut) {
    quantize_panel_body(x, x_rs, nr, in_dim, out)
}

/// Per-row quantization parameters `(scale, 1/scale, zero point)` (plain IEEE f32).
#[inline(always)]
fn row_params(xr: &[f32]) -> (f32, f32, f32) {
    let (mn, mx) = min_max(xr);
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

/// `q = clamp(round_half_even(v * inv + zero), 0, 255)` for each value (no fused operations).
#[inline(always)]
fn quantize_values(xs: &[f32], inv: f32, zero: f32, out: &mut [u8]) {
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
fn quantize_panel_body(x: &[f32], x_rs: usize, nr: usize, in_dim: usize, out: PanelOut) {
    const KC: usize = 256;
    let (out, s, z) = out;
    let kp = in_dim.div_ceil(4) * 4;
    assert!(nr <= MR && s.len() == MR && z.len() == MR && out.len() == kp * MR);
    assert!(nr == 0 || (nr - 1) * x_rs + in_dim <= x.len());
    let mut inv = [0f32; MR];
    let mut zero = [0f32; MR];
    for i in 0..MR {
        (s[i], inv[i], zero[i]) = if i < nr {
            row_params(&x[i * x_rs..i * x_rs + in_dim])
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
                quantize_values(xs, inv[i], zero[i], &mut t[..valid]);
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
/// (resizing it), in the layout of the kernel [`matmul_i8`] runs. Parallel over rows with
/// rayon when large.
///
/// Panics if `x` is too short for the given shape or `x_rs < in_dim` (with `rows > 1`).
pub fn quantize_rows(x: &[f32], x_rs: usize, rows: usize, in_dim: usize, q: &mut QuantRows) {
    quantize_rows_impl(x, x_rs, rows, in_dim, q, Layout::for_kernel(best_kernel()));
}

/// [`quantize_rows`] in the layout of `kernel` (for [`matmul_i8_with`]; any layout works
/// with any kernel, a mismatch costs a conversion).
pub fn quantize_rows_for(
    kernel: I8Kernel,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    in_dim: usize,
    q: &mut QuantRows,
) {
    quantize_rows_impl(x, x_rs, rows, in_dim, q, Layout::for_kernel(kernel));
}

fn quantize_rows_impl(
    x: &[f32],
    x_rs: usize,
    rows: usize,
    in_dim: usize,
    q: &mut QuantRows,
    layout: Layout,
) {
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
            Layout::Panels => quantize_panel(xs, x_rs, nr, in_dim, (out, s, z)),
            Layout::Rows => quantize_rowblock(xs, x_rs, nr, in_dim, row_bytes, (out, s, z)),
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

/// Which micro-kernel family [`matmul_i8`] runs (all give bit-identical results).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I8Kernel {
    /// Portable code (baseline target features).
    Scalar,
    /// The portable code compiled with AVX2 enabled (auto-vectorized).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 VNNI (`vpdpbusd`).
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// Intel AMX-INT8 (`tdpbusd`; Sapphire Rapids and later, Linux only: the tile data
    /// permission is requested with `arch_prctl(ARCH_REQ_XCOMP_PERM)`).
    #[cfg(target_arch = "x86_64")]
    Amx,
}

impl I8Kernel {
    /// All kernels, fastest first.
    fn all() -> &'static [I8Kernel] {
        &[
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Amx,
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Vnni,
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx2,
            I8Kernel::Scalar,
        ]
    }

    /// Name used by `RERANK_I8_KERNEL`.
    fn name(self) -> &'static str {
        match self {
            I8Kernel::Scalar => "portable",
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Vnni => "vnni",
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Amx => "amx",
        }
    }

    /// Whether this kernel can run on this machine (for `Amx` this also requests the tile
    /// data permission from the OS on first use).
    pub fn is_available(self) -> bool {
        match self {
            I8Kernel::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Avx2 => is_x86_feature_detected!("avx2"),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Vnni => has_vnni(),
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Amx => has_amx(),
        }
    }
}

/// AVX-512 F/BW/VNNI support.
#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vnni")
}

/// AMX-TILE + AMX-INT8 usable (CPUID, XCR0, OS permission granted; detected once). The
/// AMX path also uses AVX-512 (epilogue, quantization), so that is required too.
#[cfg(target_arch = "x86_64")]
fn has_amx() -> bool {
    static AMX: OnceLock<bool> = OnceLock::new();
    *AMX.get_or_init(|| {
        #[cfg(target_os = "linux")]
        {
            has_vnni() && amx::detect_and_enable()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    })
}

/// The kernel [`matmul_i8`] uses on this machine (detected once, then cached).
///
/// `RERANK_I8_KERNEL=amx|vnni|avx2|portable` caps the choice (for comparisons); kernels
/// this CPU lacks are skipped.
pub fn detected_kernel() -> I8Kernel {
    best_kernel()
}

/// The best kernel for this CPU, capped by `RERANK_I8_KERNEL` (detected once).
fn best_kernel() -> I8Kernel {
    static K: OnceLock<I8Kernel> = OnceLock::new();
    *K.get_or_init(|| {
        let all = I8Kernel::all();
        let first = std::env::var("RERANK_I8_KERNEL")
            .ok()
            .and_then(|v| {
                all.iter()
                    .position(|k| k.name().eq_ignore_ascii_case(v.trim()))
            })
            .unwrap_or(0);
        all[first..]
            .iter()
            .copied()
            .find(|k| k.is_available())
            .unwrap_or(I8Kernel::Scalar)
    })
}

/// Whether [`matmul_i8`] runs a fast int8 kernel (AVX-512 VNNI or AMX) on this CPU.
///
/// Without it the portable (auto-vectorized AVX2 or scalar) path is used, which gives the
/// same results but is slower than an f32 GEMM; callers may prefer f32 there.
pub fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        matches!(best_kernel(), I8Kernel::Vnni | I8Kernel::Amx)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Arguments of one register tile (raw pointers; validity established by `matmul_impl`).
#[derive(Clone, Copy)]
struct Tile {
    /// Activation panel of the tile's rows (panels layout of [`QuantRows`]: `4 * MR` bytes
    /// per k group, row `i` at byte offset `4 * i`; AMX: first row of the rows layout).
    x: *const u8,
    /// Row stride in bytes of the rows layout (AMX only; 0 otherwise).
    x_rs: usize,
    /// First packed weight block of the tile.
    w: *const u8,
    /// Bytes between consecutive 16-channel weight blocks.
    w_bs: usize,
    /// Number of 4-wide k groups (AMX: number of 64-k tile steps).
    groups: usize,
    /// Per-row scale / zero point of the tile's first row.
    sx: *const f32,
    zx: *const i32,
    /// Per-channel scale / weight sum of the tile's first column (padded to 16).
    sw: *const f32,
    wsum: *const i32,
    /// Destination of element (tile row 0, tile column 0).
    dst: *mut f32,
    dst_rs: usize,
    /// Valid columns in this tile (`<= 16 * nb`).
    ncols: usize,
    accumulate: bool,
}

/// The epilogue, shared (as an expression) by every kernel:
/// `(sx * sw) * (acc - zx * wsum) as f32`, then optionally `dst + y`.
#[inline(always)]
fn epilogue(acc: i32, zx: i32, ws: i32, sx: f32, sw: f32) -> f32 {
    let v = acc.wrapping_sub(zx.wrapping_mul(ws)) as f32;
    (sx * sw) * v
}

/// Portable tile of `r` rows × `nb` 16-column blocks (baseline target features).
///
/// # Safety
/// `t` must describe valid memory for `r` rows and `nb` blocks.
unsafe fn scalar_tile(t: &Tile, r: usize, nb: usize) {
    scalar_tile_body(t, r, nb)
}

/// [`scalar_tile_body`] compiled with AVX2 enabled (auto-vectorized). Integer arithmetic plus
/// the shared epilogue expression, so the results are identical to [`scalar_tile`].
///
/// # Safety
/// As [`scalar_tile`]; the CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scalar_tile_avx2(t: &Tile, r: usize, nb: usize) {
    scalar_tile_body(t, r, nb)
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

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{Tile, MR};
    use std::arch::x86_64::*;
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
}

/// Raw destination pointer shared between rayon tasks that write disjoint tiles.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: tasks write disjoint (row, column) tiles of the destination.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

/// `dst[r*dst_rs + o] = (accumulate ? dst[..] : 0) + dequant(sum_k xq[r][k] * wq[o][k])` for
/// `r < rows`, `o < w.out_dim()`.
///
/// Integer accumulation in i32; dequantization `sx[r] * sw[o] * (acc - zx[r] * wsum[o])`
/// (`wsum` = per-channel sum of the int8 weights), as f32. Parallel with rayon over
/// (row block, column block) tiles when the work is large (uses the caller's pool).
///
/// Panics if `x.in_dim() != w.in_dim()`, `rows > x.rows()`, `dst_rs < w.out_dim()` (with
/// `rows > 1`) or `dst` is too short.
pub fn matmul_i8(
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    rows: usize,
    accumulate: bool,
) {
    matmul_impl(dst, dst_rs, x, w, rows, accumulate, best_kernel());
}

/// [`matmul_i8`] with an explicit kernel (for comparisons; the result bits are the same).
/// `x` is converted first if it was quantized for a kernel with another layout (see
/// [`quantize_rows_for`]).
///
/// Panics as [`matmul_i8`], and if `kernel` is not available on this machine.
pub fn matmul_i8_with(
    kernel: I8Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    rows: usize,
    accumulate: bool,
) {
    assert!(
        kernel.is_available(),
        "matmul_i8_with: {kernel:?} not available"
    );
    matmul_impl(dst, dst_rs, x, w, rows, accumulate, kernel);
}

/// [`matmul_i8`] with an explicit kernel choice (tests force the scalar fallback with it).
pub(crate) fn matmul_impl(
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    rows: usize,
    accumulate: bool,
    kernel: I8Kernel,
) {
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
        return matmul_impl(dst, dst_rs, &x, w, rows, accumulate, kernel);
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
        // SAFETY: shapes and layouts validated above; AMX availability is checked by the
        // callers (`best_kernel` / `matmul_i8_with` / tests).
        unsafe { amx_matmul(dst, dst_rs, x, w, rows, accumulate, parallel) };
        return;
    }
    // Task size: MC × NC by default (weight panel reused across MC rows from L1/L2); shrink
    // it until there are a few tasks per thread.
    let (mut mc, mut nc) = (MC, NC);
    if parallel {
        while rows.div_ceil(mc) * n.div_ceil(nc) < 3 * threads {
            if mc > 4 * MR {
                mc /= 2;
            } else if nc > 32 * NB {
                nc /= 2;
            } else {
                break;
            }
        }
    }
    let row_blocks = rows.div_ceil(mc);
    let col_blocks = n.div_ceil(nc);
    let tasks = row_blocks * col_blocks;
    let dptr = SendPtr(dst.as_mut_ptr());
    let task = |t: usize| {
        let rb = t / col_blocks;
        let cb = t % col_blocks;
        let r0 = rb * mc;
        let r1 = (r0 + mc).min(rows);
        let c0 = cb * nc;
        let c1 = (c0 + nc).min(n);
        // SAFETY: bounds asserted above; tiles are disjoint between tasks.
        unsafe { run_block(dptr, dst_rs, x, w, r0, r1, c0, c1, accumulate, kernel) };
    };
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Computes rows `r0..r1` × columns `c0..c1` (`c0` a multiple of 16).
///
/// # Safety
/// Shapes validated by `matmul_impl`; no other thread writes this block.
#[allow(clippy::too_many_arguments)]
unsafe fn run_block(
    dst: SendPtr,
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
                I8Kernel::Scalar => scalar_tile(&t, nr, nb),
                #[cfg(target_arch = "x86_64")]
                I8Kernel::Avx2 => scalar_tile_avx2(&t, nr, nb),
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

/// The AMX path of `matmul_impl`: (row block × column block) tasks over the rows layout.
///
/// Inside a task the column micro-panels (32 columns, full k: ≤ 32 × 4 KiB for k = 4096)
/// are the outer loop and the rows the inner one, so a weight micro-panel stays in L1/L2
/// while the task's activation block (≤ 512 KiB) streams from L2.
///
/// # Safety
/// Shapes / layouts validated by `matmul_impl` (`x` in the rows layout); the CPU supports
/// AMX-INT8 and the OS granted the tile permission.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn amx_matmul(
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows,
    w: &PackedI8,
    rows: usize,
    accumulate: bool,
    parallel: bool,
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
    let dptr = SendPtr(dst.as_mut_ptr());
    let task = |t: usize| {
        let r0 = (t / col_blocks) * mb;
        let c0 = (t % col_blocks) * nb;
        let r1 = (r0 + mb).min(rows);
        let c1 = (c0 + nb).min(n);
        // SAFETY: as for `amx_matmul`; tasks write disjoint tiles.
        unsafe { amx::block(dptr, dst_rs, x, w, r0, r1, c0, c1, accumulate) };
    };
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

#[cfg(target_arch = "x86_64")]
mod amx {
    use super::{avx512, PackedI8, QuantRows, SendPtr, Tile, AMX_KG};
    use std::arch::asm;

    #[cfg(target_os = "linux")]
    pub(super) fn detect_and_enable() -> bool {
        crate::model::amx::detect_and_enable(crate::model::amx::AmxFeature::Int8)
    }

    use crate::model::amx::load_config;

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
    /// As `super::amx_matmul`; no other thread writes this block.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn block(
        dst: SendPtr,
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
        assert!(
            x.row_bytes >= 64 * steps && x.data.len >= x.rows.next_multiple_of(16) * x.row_bytes
        );
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random generator (xorshift64*), Gaussian-like via sum of uniforms.
    struct Rng(u64);
    impl Rng {
        fn uniform(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d);
            ((v >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
        fn gauss(&mut self) -> f32 {
            (self.uniform() + self.uniform() + self.uniform() + self.uniform()) * 0.866
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.gauss()).collect()
        }
    }

    /// Every kernel this CPU can run (the scalar fallback always).
    fn kernels() -> Vec<I8Kernel> {
        let mut k = vec![I8Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                k.push(I8Kernel::Avx2);
            }
            if has_vnni() {
                k.push(I8Kernel::Vnni);
            }
            if has_amx() {
                k.push(I8Kernel::Amx);
            }
        }
        k
    }

    /// Quantizes in both layouts and checks that they hold the same values.
    fn quantize_both(x: &[f32], x_rs: usize, rows: usize, in_dim: usize) -> [QuantRows; 2] {
        let mut p = QuantRows::default();
        let mut r = QuantRows::default();
        quantize_rows_impl(x, x_rs, rows, in_dim, &mut p, Layout::Panels);
        quantize_rows_impl(x, x_rs, rows, in_dim, &mut r, Layout::Rows);
        assert_eq!((p.layout, r.layout), (Layout::Panels, Layout::Rows));
        for row in 0..rows {
            assert_eq!(p.scale[row].to_bits(), r.scale[row].to_bits());
            assert_eq!(p.zero[row], r.zero[row]);
            for k in 0..in_dim {
                assert_eq!(p.q(row, k), r.q(row, k), "layouts differ at [{row},{k}]");
            }
        }
        [p, r]
    }

    /// The quantized activations in the layout `kern` reads.
    fn for_kernel(qs: &[QuantRows; 2], kern: I8Kernel) -> &QuantRows {
        &qs[(Layout::for_kernel(kern) == Layout::Rows) as usize]
    }

    /// Checks `matmul_impl` against an f64 reference on the dequantized operands, for every
    /// available kernel (each on its own activation layout, plus the portable kernel on the
    /// AMX layout through the conversion), with and without accumulation, and checks that
    /// all kernels agree bit for bit.
    fn check(rows: usize, in_dim: usize, out: usize, x_rs: usize, dst_rs: usize, seed: u64) {
        let mut rng = Rng(seed | 1);
        let x = rng.vec(rows.saturating_sub(1) * x_rs + in_dim);
        let wf = rng.vec(out * in_dim);
        let w = PackedI8::quantize(&wf, out, in_dim);
        let qs = quantize_both(&x, x_rs, rows, in_dim);
        let q = &qs[0];
        let dlen = if rows == 0 {
            0
        } else {
            (rows - 1) * dst_rs + out
        };
        let init: Vec<f32> = rng.vec(dlen);
        let xd: Vec<f64> = (0..rows * in_dim)
            .map(|i| {
                let (r, k) = (i / in_dim, i % in_dim);
                let qv = q.q(r, k) as f64;
                q.scale[r] as f64 * (qv - q.zero[r] as f64)
            })
            .collect();
        let wdq: Vec<f64> = (0..out * in_dim)
            .map(|i| {
                let (o, k) = (i / in_dim, i % in_dim);
                w.q(o, k) as f64 * w.scale[o] as f64
            })
            .collect();
        let reference: Vec<f64> = (0..rows * out)
            .map(|i| {
                let (xr, wr) = (&xd[(i / out) * in_dim..], &wdq[(i % out) * in_dim..]);
                xr[..in_dim]
                    .iter()
                    .zip(&wr[..in_dim])
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect();
        let mut runs: Vec<(I8Kernel, &QuantRows)> = kernels()
            .into_iter()
            .map(|k| (k, for_kernel(&qs, k)))
            .collect();
        runs.push((I8Kernel::Scalar, &qs[1]));
        for acc in [false, true] {
            let mut results = Vec::new();
            for &(kern, q) in &runs {
                let mut dst = init.clone();
                matmul_impl(&mut dst, dst_rs, q, &w, rows, acc, kern);
                for r in 0..rows {
                    for o in 0..out {
                        let s = reference[r * out + o];
                        let base = if acc {
                            init[r * dst_rs + o] as f64
                        } else {
                            0.0
                        };
                        let want = base + s;
                        let got = dst[r * dst_rs + o] as f64;
                        let tol = 1e-6 * (s.abs() + base.abs()) + 1e-12;
                        assert!(
                            (got - want).abs() <= tol,
                            "{kern:?} rows {rows} in {in_dim} out {out} acc {acc}: [{r},{o}] got {got} want {want}"
                        );
                    }
                    // Padding between rows must be untouched.
                    for o in out..dst_rs {
                        if r + 1 < rows {
                            assert_eq!(
                                dst[r * dst_rs + o].to_bits(),
                                init[r * dst_rs + o].to_bits()
                            );
                        }
                    }
                }
                // Nothing after the last row is written.
                assert!(dst[dlen..]
                    .iter()
                    .zip(&init[dlen..])
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
                results.push((kern, dst));
            }
            for (kern, r) in &results[1..] {
                let same = r
                    .iter()
                    .zip(&results[0].1)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "{kern:?} differs from portable: rows {rows} in {in_dim} out {out} acc {acc}"
                );
            }
        }
    }

    #[test]
    fn shapes_vs_reference() {
        let mut seed = 1;
        for &rows in &[0usize, 1, 3, 17, 33, 130] {
            for &in_dim in &[32usize, 37, 64, 1024] {
                for &out in &[1usize, 16, 37, 64, 1024] {
                    seed += 1;
                    // Skip the largest combination in the full cross product (kept below).
                    if rows == 130 && in_dim == 1024 && out == 1024 {
                        continue;
                    }
                    check(rows, in_dim, out, in_dim, out, seed);
                }
            }
        }
    }

    #[test]
    fn large_shape() {
        check(130, 1024, 1024, 1024, 1024, 99);
    }

    #[test]
    fn strides_and_accumulate() {
        for (i, &(rows, in_dim, out)) in [
            (17, 37, 37),
            (9, 64, 33),
            (130, 100, 300),
            (1, 5, 1),
            (11, 20, 31),
            (9, 3, 47),
            (33, 128, 96),
            (40, 200, 70),
            (3, 0, 5),
        ]
        .iter()
        .enumerate()
        {
            check(rows, in_dim, out, in_dim + 7, out + 5, 1000 + i as u64);
            check(rows, in_dim, out, in_dim + 64, out + 33, 2000 + i as u64);
        }
    }

    #[test]
    fn amx_detected_when_cpu_has_it() {
        // Guards against the AMX tests silently skipping on an AMX machine (the kernel
        // list above only contains the kernels detected as usable).
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
            let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
            let has = |f: &str| flags.split_whitespace().any(|w| w == f);
            // A kernel that refuses the tile permission is a supported setup (the
            // fallbacks run), so this only reports; RERANK_EXPECT_AMX=1 makes it fail.
            if has("amx_tile") && has("amx_int8") && has("avx512_vnni") && !has_amx() {
                eprintln!("warning: cpuinfo lists AMX-INT8 but it could not be enabled");
                assert!(std::env::var_os("RERANK_EXPECT_AMX").is_none());
            }
        }
    }

    #[test]
    fn batch_invariance() {
        // Each row computed on its own (quantized alone, rows = 1) gives the same bits as
        // the whole batch, for every kernel (also through the parallel path).
        let mut rng = Rng(21);
        for &(rows, in_dim, out) in &[(37usize, 64usize, 37usize), (70, 1024, 200), (5, 37, 96)] {
            let x = rng.vec(rows * in_dim);
            let w = PackedI8::quantize(&rng.vec(out * in_dim), out, in_dim);
            let init = rng.vec(rows * out);
            for kern in kernels() {
                let mut q = QuantRows::default();
                quantize_rows_for(kern, &x, in_dim, rows, in_dim, &mut q);
                for acc in [false, true] {
                    let mut all = init.clone();
                    matmul_impl(&mut all, out, &q, &w, rows, acc, kern);
                    let mut one = init.clone();
                    let mut q1 = QuantRows::default();
                    for r in 0..rows {
                        quantize_rows_for(kern, &x[r * in_dim..], in_dim, 1, in_dim, &mut q1);
                        matmul_impl(&mut one[r * out..], out, &q1, &w, 1, acc, kern);
                    }
                    let same = all
                        .iter()
                        .zip(&one)
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{kern:?} not batch invariant: {rows}x{in_dim}x{out}");
                }
            }
        }
    }

    #[test]
    fn bit_identical_large_parallel() {
        // Large enough to go through the rayon path with partial row/column blocks.
        let (rows, in_dim, out) = (200, 300, 530);
        let mut rng = Rng(7);
        let x = rng.vec(rows * in_dim);
        let w = PackedI8::quantize(&rng.vec(out * in_dim), out, in_dim);
        let mut q = QuantRows::default();
        quantize_rows(&x, in_dim, rows, in_dim, &mut q);
        let init = rng.vec(rows * out);
        let mut a = init.clone();
        matmul_i8(&mut a, out, &q, &w, rows, true);
        for kern in kernels() {
            let mut b = init.clone();
            matmul_impl(&mut b, out, &q, &w, rows, true, kern);
            let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "{kern:?} differs from matmul_i8");
        }
        // A single-thread pool (serial path) gives the same bits as the parallel path.
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let mut c = init.clone();
        pool.install(|| matmul_i8(&mut c, out, &q, &w, rows, true));
        assert!(a.iter().zip(&c).all(|(p, q)| p.to_bits() == q.to_bits()));
    }

    #[test]
    fn quant_rows_buffer_reuse() {
        // Reusing a QuantRows (larger, then smaller, then larger shape) gives the same bits as
        // a fresh buffer; the stale contents must not leak into padding.
        let mut rng = Rng(5);
        let w = PackedI8::quantize(&rng.vec(37 * 21), 37, 21);
        let big = rng.vec(130 * 300);
        let small = rng.vec(13 * 21);
        for layout in [Layout::Panels, Layout::Rows] {
            let mut reused = QuantRows::default();
            quantize_rows_impl(&big, 300, 130, 100, &mut reused, layout);
            quantize_rows_impl(&small, 21, 13, 21, &mut reused, layout);
            let mut fresh = QuantRows::default();
            quantize_rows_impl(&small, 21, 13, 21, &mut fresh, layout);
            assert_eq!(reused.data.as_slice(), fresh.data.as_slice());
            assert_eq!(reused.scale, fresh.scale);
            assert_eq!(reused.zero, fresh.zero);
        }
        let mut reused = QuantRows::default();
        quantize_rows(&big, 300, 130, 100, &mut reused);
        quantize_rows(&small, 21, 13, 21, &mut reused);
        let mut fresh = QuantRows::default();
        quantize_rows(&small, 21, 13, 21, &mut fresh);
        assert_eq!(reused.data.as_slice(), fresh.data.as_slice());
        let (mut a, mut b) = (vec![0f32; 13 * 37], vec![0f32; 13 * 37]);
        matmul_i8(&mut a, 37, &reused, &w, 13, false);
        matmul_i8(&mut b, 37, &fresh, &w, 13, false);
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        // Exercise the scalar-threshold and the rayon path of quantize_rows alike.
        let mut r2 = QuantRows::default();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        pool.install(|| quantize_rows(&big, 300, 130, 300, &mut r2));
        quantize_rows(&big, 300, 130, 300, &mut reused);
        assert_eq!(reused.data.as_slice(), r2.data.as_slice());
        assert_eq!(reused.scale, r2.scale);
        assert_eq!(reused.zero, r2.zero);
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
            let mut x = rng.vec(nr * x_rs);
            if n > 3 {
                // Exact zero, a zero point on a tie (range 4 -> 127.5 -> 128), a NaN.
                x[0] = 0.0;
                x[1] = 2.0;
                x[2] = -2.0;
                x[3] = f32::NAN;
            }
            let len = n.div_ceil(4) * 4 * MR;
            let (mut want, mut ws, mut wz) = (vec![0u8; len], [0f32; MR], [0i32; MR]);
            quantize_panel_body(&x, x_rs, nr, n, (&mut want, &mut ws, &mut wz));
            #[cfg(target_arch = "x86_64")]
            for variant in 0..2 {
                let (mut got, mut gs, mut gz) = (vec![7u8; len], [1f32; MR], [1i32; MR]);
                let out = (&mut got[..], &mut gs[..], &mut gz[..]);
                if variant == 0 && is_x86_feature_detected!("avx2") {
                    // SAFETY: feature checked.
                    unsafe { quantize_panel_avx2(&x, x_rs, nr, n, out) };
                } else if variant == 1 && has_vnni() {
                    // SAFETY: feature checked.
                    unsafe { quantize_panel_avx512(&x, x_rs, nr, n, out) };
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
                    0 => quantize_rowblock_body(&x, x_rs, nr, n, rb, out),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: feature checked.
                    1 if is_x86_feature_detected!("avx2") => unsafe {
                        quantize_rowblock_avx2(&x, x_rs, nr, n, rb, out)
                    },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: feature checked.
                    2 if has_vnni() => unsafe {
                        quantize_rowblock_avx512(&x, x_rs, nr, n, rb, out)
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

    #[test]
    fn quantization_error_small() {
        let (rows, in_dim, out) = (64, 768, 96);
        let mut rng = Rng(42);
        let x = rng.vec(rows * in_dim);
        let wf: Vec<f32> = rng.vec(out * in_dim).iter().map(|v| v * 0.05).collect();
        let w = PackedI8::quantize(&wf, out, in_dim);
        let mut q = QuantRows::default();
        quantize_rows(&x, in_dim, rows, in_dim, &mut q);
        let mut y = vec![0f32; rows * out];
        matmul_i8(&mut y, out, &q, &w, rows, false);
        let (mut num, mut den) = (0f64, 0f64);
        for r in 0..rows {
            for o in 0..out {
                let mut s = 0f64;
                for k in 0..in_dim {
                    s += x[r * in_dim + k] as f64 * wf[o * in_dim + k] as f64;
                }
                num += (y[r * out + o] as f64 - s).powi(2);
                den += s * s;
            }
        }
        let rel = (num / den).sqrt();
        assert!(rel < 2e-2, "relative L2 error {rel}");
        assert!(rel > 0.0);
    }

    #[test]
    fn quantization_details() {
        // Zero is exact, zero rows give zero output, extremes map to 0 / 255.
        let x = [0.0f32, -1.0, 3.0, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0];
        let mut q = QuantRows::default();
        quantize_rows(&x, 5, 2, 5, &mut q);
        assert_eq!(q.dequantized(0, 0), 0.0);
        assert_eq!(q.dequantized(1, 0), 0.0);
        assert_eq!(q.q(0, 1), 0);
        assert_eq!(q.q(0, 2), 255);
        assert!((q.dequantized(0, 2) - 3.0).abs() < 0.01);
        assert!((q.dequantized(1, 3) - 2.0).abs() < 1e-6);
        #[rustfmt::skip]
        let wf = [
            0.0, 0.0, 0.0, 0.0, 0.0,
            1.0, -2.0, 0.0, 0.0, 0.0,
            0.5, 0.25, 0.0, 0.0, 1.0,
        ];
        let w = PackedI8::quantize(&wf, 3, 5);
        assert_eq!(w.dequantized(0, 0), 0.0);
        assert_eq!(w.dequantized(1, 1), -2.0);
        assert_eq!(w.q(1, 1), -127);
        assert!(matches!(w.q(1, 0), 63 | 64));
        assert_eq!(w.wsum[1], w.q(1, 0) as i32 - 127);
        let mut y = vec![1.0f32; 6];
        matmul_i8(&mut y, 3, &q, &w, 2, false);
        assert_eq!(&y[3..5], &[0.0, 0.0]);
        assert!((y[5] - 2.0).abs() < 0.02, "{}", y[5]);
        // An all-zero row quantizes to scale 0 and gives exact zeros.
        quantize_rows(&[0.0; 5], 5, 1, 5, &mut q);
        matmul_i8(&mut y, 3, &q, &w, 1, false);
        assert_eq!(&y[..3], &[0.0, 0.0, 0.0]);
    }

    #[test]
    #[should_panic(expected = "dst too short")]
    fn dst_bounds_checked() {
        let w = PackedI8::quantize(&[1.0; 8], 2, 4);
        let mut q = QuantRows::default();
        quantize_rows(&[1.0; 12], 4, 3, 4, &mut q);
        let mut y = vec![0f32; 5];
        matmul_i8(&mut y, 2, &q, &w, 3, false);
    }

    #[test]
    #[should_panic(expected = "in_dim mismatch")]
    fn in_dim_checked() {
        let w = PackedI8::quantize(&[1.0; 8], 2, 4);
        let mut q = QuantRows::default();
        quantize_rows(&[1.0; 12], 3, 4, 3, &mut q);
        let mut y = vec![0f32; 8];
        matmul_i8(&mut y, 2, &q, &w, 4, false);
    }
}
