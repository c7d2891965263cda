//! 16-bit integer matmul (`y = x·Wᵀ`; the caller adds the bias) for the two
//! layers of an int8 model that int8 serves worst (attention output, FFN
//! output), on CPUs where bf16 is not faster than f32.
//!
//! Why: those layers stay out of int8 for accuracy (`cpu/plan.rs`). On Intel
//! without AMX `vdpbf16ps` issues at half the FMA rate, and Ice Lake and
//! Cascade Lake have no AVX512-BF16 at all, so they ran f32. Their AVX-512
//! VNNI also has `vpdpwssd` (i16 × i16 pairs summed into i32), which does
//! twice an FMA's multiply-adds per instruction at the same rate, and 16-bit
//! integers with a scale per row or channel hold those layers' inputs better
//! than bf16 does (`bench/int8_emulation.py`, `EMU_STUDY=i16`: their own
//! error 3.7e-3 relative against bf16's 6.3e-3 on the full-size random model,
//! 3.7e-3 against 2.7e-3 on real MiniLM weights).
//!
//! * Weights ([`PackedI16`]): symmetric per output channel, to ±[`w_max`]`(in_dim)`,
//!   packed per block of 16 channels in pairs of consecutive `k` (64 bytes per
//!   zmm, one `vpdpwssd` operand).
//! * Activations ([`QuantRows16`], [`quantize_rows`]): symmetric per row, to
//!   ±[`X_MAX`], in panels of `MR` rows (4 bytes per row and k pair).
//! * The bounds are chosen so that no i32 sum can overflow: `in_dim · X_MAX ·
//!   w_max ≤ i32::MAX` (at k = 4096 weights get ±512, at k = 1024 ±2050).
//! * Exact i32 sums, then `(sx[r] · sw[o]) · acc` in f32; the AVX-512 and the
//!   portable kernel evaluate that same expression, so they give the same bits.

use rayon::prelude::*;

use super::i8::{abs_max, I8Kernel};
use super::{for_each_block, AlignedBytes, SharedMut};

/// Activations are quantized per row to `-X_MAX..=X_MAX` (11 bits).
pub const X_MAX: i32 = 1023;
/// Rows per register tile and per activation panel.
const MR: usize = 8;
/// 16-column blocks per register tile.
const NB: usize = 2;
/// Rows / columns per parallel task (halved while there are too few tasks).
const MC: usize = 256;
const NC: usize = 256;
/// Below this many multiply-adds the work is done on the calling thread.
const PAR_MIN_MACS: usize = 1 << 21;
/// Software prefetch distance of the weight streams (bytes).
#[cfg(target_arch = "x86_64")]
const PF: usize = 512;
/// The widest layer [`PackedI16::quantize`] takes: beyond it the weights would
/// get fewer than 1 step each side.
const MAX_IN_DIM: usize = (i32::MAX / X_MAX) as usize;

/// The largest weight step for a layer of `in_dim` inputs: the most that
/// keeps `in_dim · X_MAX · w_max` within `i32::MAX` (at most 32767).
pub fn w_max(in_dim: usize) -> i32 {
    let k = in_dim.max(1) as i64;
    (i32::MAX as i64 / (k * X_MAX as i64)).clamp(1, 32767) as i32
}

/// Which kernel runs: VNNI where the int8 kernel is VNNI or AMX (so
/// `RERANK_I8_KERNEL` caps this one too), else the portable one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum I16Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Vnni,
}

impl I16Kernel {
    /// The kernel that goes with `i8`'s.
    pub fn with(i8: I8Kernel) -> Self {
        match i8 {
            #[cfg(target_arch = "x86_64")]
            I8Kernel::Vnni | I8Kernel::Amx => I16Kernel::Vnni,
            _ => I16Kernel::Portable,
        }
    }

    /// `vnni` or `portable`.
    pub fn name(self) -> &'static str {
        match self {
            I16Kernel::Portable => "portable",
            #[cfg(target_arch = "x86_64")]
            I16Kernel::Vnni => "vnni",
        }
    }
}

/// `q[k] = round(v[k] · inv)` clamped to `±max` (ties to even, as `torch.round`),
/// vectorizable: see `i8::pack`'s `quantize_row` for the rounding trick
/// (valid for values under 2²² in magnitude, which the clamp ensures).
#[inline(always)]
fn round_clamped(v: &[f32], inv: f32, max: i32, q: &mut [i16]) {
    const ROUND: f32 = 12_582_912.0;
    let base = ROUND.to_bits() as i32;
    let m = max as f32;
    for (d, &x) in q.iter_mut().zip(v) {
        let x = x * inv;
        let x = if x.is_nan() { 0.0 } else { x.clamp(-m, m) };
        *d = ((x + ROUND).to_bits() as i32 - base) as i16;
    }
}

/// The scale and its inverse for values of largest magnitude `m` mapped to
/// `±max`; a zero or non-finite `m` gives scale 0 (all-zero output).
fn scale_for(m: f32, max: i32) -> (f32, f32) {
    if m > 0.0 && m.is_finite() {
        let s = m / max as f32;
        (s, 1.0 / s)
    } else {
        (0.0, 0.0)
    }
}

/// Weights of one linear layer (`W` out × in, row-major as in a checkpoint),
/// quantized symmetric per output channel to `±w_max(in_dim)`, packed: per
/// block of 16 channels, per pair of consecutive `k`, the two i16 of each
/// channel (64 bytes per pair). `in_dim` is zero-padded to even, `out_dim`
/// to a multiple of 16.
pub struct PackedI16 {
    out_dim: usize,
    in_dim: usize,
    /// k pairs (`in_dim.div_ceil(2)`).
    groups: usize,
    /// 16-channel blocks.
    blocks: usize,
    /// `blocks × groups × 64` bytes.
    data: AlignedBytes,
    /// Per channel, padded with zeros to `16 · blocks`.
    scale: Vec<f32>,
}

impl PackedI16 {
    /// Quantizes and packs `w` (`out_dim × in_dim`, row-major).
    ///
    /// Panics if `w.len() != out_dim * in_dim` or `in_dim` is over 2 M.
    pub fn quantize(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        assert_eq!(w.len(), out_dim * in_dim, "PackedI16: bad weight size");
        assert!(
            in_dim <= MAX_IN_DIM,
            "PackedI16: {in_dim} inputs is too many"
        );
        let (groups, blocks) = (in_dim.div_ceil(2), out_dim.div_ceil(16));
        let max = w_max(in_dim);
        let mut data = AlignedBytes::default();
        data.reset_zeroed(blocks * groups * 64);
        let mut scale = vec![0f32; blocks * 16];
        if groups > 0 {
            data.as_u32_mut()
                .par_chunks_mut(groups * 16)
                .zip(scale.par_chunks_mut(16))
                .enumerate()
                .for_each(|(b, (words, sblk))| {
                    let mut q = vec![0i16; 2 * groups];
                    for (j, s) in sblk.iter_mut().enumerate() {
                        let o = b * 16 + j;
                        if o >= out_dim {
                            break;
                        }
                        let row = &w[o * in_dim..(o + 1) * in_dim];
                        let (sc, inv) = scale_for(abs_max(row), max);
                        *s = sc;
                        round_clamped(row, inv, max, &mut q[..in_dim]);
                        for (g, pair) in q.chunks_exact(2).enumerate() {
                            words[g * 16 + j] = pack_pair(pair[0], pair[1]);
                        }
                    }
                });
        }
        PackedI16 {
            out_dim,
            in_dim,
            groups,
            blocks,
            data,
            scale,
        }
    }

    /// Number of output channels.
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Number of inputs.
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// The dequantized weight `w[o][k]` (tests, accuracy checks).
    pub fn dequantized(&self, o: usize, k: usize) -> f32 {
        assert!(
            o < self.out_dim && k < self.in_dim,
            "PackedI16: out of range"
        );
        let word = self.data.as_u32()[(o / 16) * self.groups * 16 + (k / 2) * 16 + o % 16];
        half(word, k % 2 == 1) as f32 * self.scale[o]
    }

    /// Writes the packed layer for the prepared-weights cache.
    pub(crate) fn write_to(&self, w: &mut super::stored::Sink) -> std::io::Result<()> {
        use super::stored::*;
        write_len(w, self.out_dim)?;
        write_len(w, self.in_dim)?;
        write_bytes(w, &self.data)?;
        write_words(w, &self.scale)
    }

    /// Reads what [`PackedI16::write_to`] wrote for an `out_dim × in_dim`
    /// layer; any other size is an error.
    pub(crate) fn read_from(
        r: &mut super::stored::Source,
        out_dim: usize,
        in_dim: usize,
    ) -> std::io::Result<Self> {
        use super::stored::*;
        expect_len(r, out_dim, "an int16 layer's outputs")?;
        expect_len(r, in_dim, "an int16 layer's inputs")?;
        let (groups, blocks) = (in_dim.div_ceil(2), out_dim.div_ceil(16));
        let data = read_bytes(r, blocks * groups * 64)?;
        let scale = read_words::<f32>(r)?;
        if scale.len() != blocks * 16 {
            return Err(invalid("an int16 layer's scales have the wrong length"));
        }
        Ok(PackedI16 {
            out_dim,
            in_dim,
            groups,
            blocks,
            data,
            scale,
        })
    }
}

/// Two i16 as one little-endian u32 (`lo` at the lower address).
#[inline(always)]
fn pack_pair(lo: i16, hi: i16) -> u32 {
    (lo as u16 as u32) | ((hi as u16 as u32) << 16)
}

/// The i16 in the upper (`hi`) or lower half of a packed pair.
#[inline(always)]
fn half(word: u32, hi: bool) -> i16 {
    let bits = if hi { word >> 16 } else { word };
    bits as u16 as i16
}

/// Activations quantized per row, symmetric to `±X_MAX`; a reusable buffer
/// filled by [`quantize_rows`]. Panels of `MR` rows: per k pair, 4 bytes per
/// row (32 per pair), rows zero-padded to a multiple of `MR`.
#[derive(Default)]
pub struct QuantRows16 {
    rows: usize,
    in_dim: usize,
    groups: usize,
    data: AlignedBytes,
    /// Per row, padded with zeros to whole panels.
    scale: Vec<f32>,
}

impl QuantRows16 {
    /// The dequantized activation `x[r][k]` (tests).
    pub fn dequantized(&self, r: usize, k: usize) -> f32 {
        assert!(
            r < self.rows && k < self.in_dim,
            "QuantRows16: out of range"
        );
        let word = self.data.as_u32()[(r / MR) * self.groups * MR + (k / 2) * MR + r % MR];
        half(word, k % 2 == 1) as f32 * self.scale[r]
    }
}

/// Quantizes `rows` rows of `x` (row stride `x_rs`, `in_dim` values each)
/// into `q`. Rows with a non-finite value quantize to scale 0.
pub fn quantize_rows(x: &[f32], x_rs: usize, rows: usize, in_dim: usize, q: &mut QuantRows16) {
    assert!(
        rows == 0 || (rows - 1) * x_rs + in_dim <= x.len(),
        "quantize_rows: x too short"
    );
    let groups = in_dim.div_ceil(2);
    let panels = rows.div_ceil(MR);
    q.rows = rows;
    q.in_dim = in_dim;
    q.groups = groups;
    q.data.resize(panels * groups * MR * 4);
    q.scale.resize(panels * MR, 0.0);
    if groups == 0 {
        return;
    }
    let work = |(p, (words, s)): (usize, (&mut [u32], &mut [f32]))| {
        quantize_panel(
            x,
            x_rs,
            p * MR,
            rows.min(p * MR + MR) - p * MR,
            in_dim,
            words,
            s,
        )
    };
    let (words, scale) = (q.data.as_u32_mut(), &mut q.scale);
    if rows * in_dim >= 1 << 16 {
        let chunks = words
            .par_chunks_mut(groups * MR)
            .zip(scale.par_chunks_mut(MR));
        chunks.enumerate().for_each(work);
    } else {
        let chunks = words.chunks_mut(groups * MR).zip(scale.chunks_mut(MR));
        chunks.enumerate().for_each(work);
    }
}

multiversion! {
    /// One panel: rows `r0..r0 + nr` of `x` into `words` (`groups × MR`) and `s`.
    fn quantize_panel(
        x: &[f32],
        x_rs: usize,
        r0: usize,
        nr: usize,
        in_dim: usize,
        words: &mut [u32],
        s: &mut [f32],
    ) {
        let mut v = vec![0i16; in_dim.div_ceil(2) * 2];
        for i in 0..MR {
            if i >= nr {
                s[i] = 0.0;
                for g in 0..v.len() / 2 {
                    words[g * MR + i] = 0;
                }
                continue;
            }
            let row = &x[(r0 + i) * x_rs..(r0 + i) * x_rs + in_dim];
            let (sc, inv) = scale_for(abs_max(row), X_MAX);
            s[i] = sc;
            round_clamped(row, inv, X_MAX, &mut v[..in_dim]);
            for (g, pair) in v.chunks_exact(2).enumerate() {
                words[g * MR + i] = pack_pair(pair[0], pair[1]);
            }
        }
    }
}

/// Arguments of one register tile (raw pointers, validated by [`matmul`]).
#[derive(Clone, Copy)]
struct Tile {
    /// The tile rows' activation panel.
    x: *const u32,
    /// The tile's first weight block, and the u32s between blocks.
    w: *const u32,
    w_bs: usize,
    groups: usize,
    sx: *const f32,
    sw: *const f32,
    dst: *mut f32,
    dst_rs: usize,
    /// Valid columns (`<= 16 · NB`).
    ncols: usize,
    accumulate: bool,
}

/// `dst[r·dst_rs + o] (+)= dequant(Σ_k xq[r][k]·wq[o][k])` for `r < rows`,
/// `o < w.out_dim()`, parallel over tasks of rows × columns on the caller's
/// rayon pool when the work is large. Every kernel gives the same bits.
///
/// Panics if `x.in_dim != w.in_dim`, `rows > x.rows`, `dst_rs < out_dim`
/// (with `rows > 1`) or `dst` is too short.
#[allow(clippy::too_many_arguments)]
pub fn matmul(
    kernel: I16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows16,
    w: &PackedI16,
    rows: usize,
    accumulate: bool,
) {
    assert_eq!(x.in_dim, w.in_dim, "i16::matmul: in_dim mismatch");
    assert!(rows <= x.rows, "i16::matmul: more rows than quantized");
    let n = w.out_dim;
    if rows == 0 || n == 0 {
        return;
    }
    assert!(
        rows == 1 || dst_rs >= n,
        "i16::matmul: dst row stride < out_dim"
    );
    assert!(
        (rows - 1) * dst_rs + n <= dst.len(),
        "i16::matmul: dst too short"
    );
    assert!(x.groups == w.groups && x.data.len == x.rows.div_ceil(MR) * x.groups * MR * 4);
    assert!(w.data.len == w.blocks * w.groups * 64 && w.scale.len() == w.blocks * 16);
    #[cfg(target_arch = "x86_64")]
    if kernel == I16Kernel::Vnni {
        assert!(
            I8Kernel::Vnni.is_available(),
            "i16::matmul: no AVX-512 VNNI here"
        );
    }
    let parallel = rows * n * w.in_dim >= PAR_MIN_MACS && rayon::current_num_threads() > 1;
    let dptr = SharedMut(dst.as_mut_ptr());
    let grid = ((rows, n), (MC, NC), (4 * MR, 32 * NB));
    for_each_block(grid.0, grid.1, grid.2, parallel, |rs, cs| {
        // SAFETY: bounds asserted above; tasks write disjoint blocks.
        unsafe { run_block(kernel, dptr, dst_rs, x, w, rs, cs, accumulate) };
    });
}

/// Rows `r0..r1` × columns `c0..c1` (`r0` a multiple of `MR`, `c0` of 16).
///
/// # Safety
/// Shapes validated by [`matmul`]; no other thread writes this block.
#[allow(clippy::too_many_arguments)]
unsafe fn run_block(
    kernel: I16Kernel,
    dst: SharedMut,
    dst_rs: usize,
    x: &QuantRows16,
    w: &PackedI16,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    accumulate: bool,
) {
    let (xd, wd) = (x.data.as_u32().as_ptr(), w.data.as_u32().as_ptr());
    let mut c = c0;
    while c < c1 {
        let ncols = (c1 - c).min(16 * NB);
        let mut r = r0;
        while r < r1 {
            let nr = (r1 - r).min(MR);
            let t = Tile {
                x: xd.add((r / MR) * x.groups * MR),
                w: wd.add((c / 16) * w.groups * 16),
                w_bs: w.groups * 16,
                groups: w.groups,
                sx: x.scale.as_ptr().add(r),
                sw: w.scale.as_ptr().add(c),
                dst: dst.ptr().add(r * dst_rs + c),
                dst_rs,
                ncols,
                accumulate,
            };
            match kernel {
                I16Kernel::Portable => portable_tile(&t, nr),
                #[cfg(target_arch = "x86_64")]
                I16Kernel::Vnni => vnni_tile_dyn(&t, nr, ncols.div_ceil(16)),
            }
            r += nr;
        }
        c += ncols;
    }
}

/// The portable tile: `nr` rows × `t.ncols` columns, in plain integer
/// arithmetic and the same epilogue expression as the VNNI tile.
///
/// # Safety
/// `t` describes valid memory for `nr` rows and `t.ncols` columns.
unsafe fn portable_tile(t: &Tile, nr: usize) {
    let xp = std::slice::from_raw_parts(t.x, t.groups * MR);
    let half = |v: u32, hi: bool| half(v, hi) as i32;
    for i in 0..nr {
        let sx = *t.sx.add(i);
        for j in 0..t.ncols {
            let wb = std::slice::from_raw_parts(t.w.add((j / 16) * t.w_bs), t.groups * 16);
            let mut acc = 0i32;
            for g in 0..t.groups {
                let (a, b) = (xp[g * MR + i], wb[g * 16 + j % 16]);
                acc += half(a, false) * half(b, false) + half(a, true) * half(b, true);
            }
            let y = (sx * *t.sw.add(j)) * acc as f32;
            let p = t.dst.add(i * t.dst_rs + j);
            *p = if t.accumulate { *p + y } else { y };
        }
    }
}

/// The VNNI register tile: `R` rows × `B` blocks of 16 columns, 16 zmm
/// accumulators, one `vpdpwssd` per row, block and k pair.
///
/// # Safety
/// The CPU has avx512f/bw/vnni; `t` describes valid memory for `R` rows and
/// `B` blocks (weights and scales padded to 16 columns; stores are masked).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::needless_range_loop)] // explicit indices read best for a register tile
unsafe fn vnni_tile<const R: usize, const B: usize>(t: &Tile) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_si512(); B]; R];
    let (mut x, mut w) = (t.x, t.w);
    for _ in 0..t.groups {
        let mut wv = [_mm512_setzero_si512(); B];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm512_load_si512(w.add(j * t.w_bs) as *const _);
            // Prefetch never faults; `wrapping_add` keeps the address defined.
            _mm_prefetch::<_MM_HINT_T0>((w.wrapping_add(j * t.w_bs) as *const i8).wrapping_add(PF));
        }
        for i in 0..R {
            let a = _mm512_set1_epi32(*x.add(i) as i32);
            for j in 0..B {
                acc[i][j] = _mm512_dpwssd_epi32(acc[i][j], a, wv[j]);
            }
        }
        w = w.add(16);
        x = x.add(MR);
    }
    for j in 0..B {
        let valid = t.ncols.saturating_sub(j * 16).min(16);
        let mask = if valid >= 16 {
            0xffff
        } else {
            ((1u32 << valid) - 1) as u16
        };
        let sw = _mm512_maskz_loadu_ps(mask, t.sw.add(j * 16));
        for i in 0..R {
            let sx = _mm512_set1_ps(*t.sx.add(i));
            let y = _mm512_mul_ps(_mm512_mul_ps(sx, sw), _mm512_cvtepi32_ps(acc[i][j]));
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

/// [`vnni_tile`] for `r <= MR` rows × `b <= NB` blocks.
///
/// # Safety
/// As [`vnni_tile`].
#[cfg(target_arch = "x86_64")]
unsafe fn vnni_tile_dyn(t: &Tile, r: usize, b: usize) {
    macro_rules! arms {
        ($($r:literal),*) => {
            match (r, b) {
                $(($r, 1) => vnni_tile::<$r, 1>(t), ($r, 2) => vnni_tile::<$r, 2>(t),)*
                _ => unreachable!("vnni_tile_dyn: bad tile {r}x{b}"),
            }
        };
    }
    arms!(1, 2, 3, 4, 5, 6, 7, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
            })
            .collect()
    }

    fn kernels() -> Vec<I16Kernel> {
        let mut k = vec![I16Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        if I8Kernel::Vnni.is_available() {
            k.push(I16Kernel::Vnni);
        }
        k
    }

    /// Against f64 sums of the dequantized operands (exact up to f32's last
    /// bits), and against the f32 product within what 11- and 10-bit steps
    /// allow; every kernel gives the same bits, on edge shapes, with and
    /// without accumulation, on one thread and on several.
    #[test]
    fn every_kernel_equals_the_dequantized_product_bit_for_bit_across_kernels() {
        for &(rows, in_dim, out_dim) in &[
            (1, 1, 1),
            (3, 7, 17),
            (9, 64, 33),
            (8, 1024, 48),
            (37, 4096, 40),
            (300, 130, 600),
        ] {
            let w = values(out_dim * in_dim, 1, 0.1);
            let x = values(rows * in_dim, 2, 4.0);
            let packed = PackedI16::quantize(&w, out_dim, in_dim);
            let mut q = QuantRows16::default();
            quantize_rows(&x, in_dim, rows, in_dim, &mut q);
            let mut results = Vec::new();
            for kernel in kernels() {
                for accumulate in [false, true] {
                    let mut dst = vec![1.5f32; rows * out_dim];
                    matmul(kernel, &mut dst, out_dim, &q, &packed, rows, accumulate);
                    results.push(((kernel, accumulate), dst));
                }
            }
            let (_, first) = &results[0];
            for (what, got) in &results {
                let base = if what.1 { 1.5 } else { 0.0 };
                for r in 0..rows {
                    for o in 0..out_dim {
                        let deq: f64 = (0..in_dim)
                            .map(|k| q.dequantized(r, k) as f64 * packed.dequantized(o, k) as f64)
                            .sum();
                        let exact: f64 = (0..in_dim)
                            .map(|k| x[r * in_dim + k] as f64 * w[o * in_dim + k] as f64)
                            .sum();
                        let g = got[r * out_dim + o] as f64 - base;
                        let norm: f64 = (0..in_dim)
                            .map(|k| (x[r * in_dim + k] * 0.05) as f64)
                            .map(f64::abs)
                            .sum();
                        assert!(
                            (g - deq).abs() <= 1e-5 * norm.max(1e-3),
                            "{what:?} {rows}x{in_dim}x{out_dim} ({r},{o}): {g} vs {deq}"
                        );
                        assert!(
                            (g - exact).abs() <= 3e-3 * norm.max(1e-3),
                            "{what:?} ({r},{o}): {g} vs exact {exact}"
                        );
                    }
                }
                if what.1 == results[0].0 .1 {
                    assert!(got == first, "{what:?} differs from the portable kernel");
                }
            }
            for (what, got) in results.iter().filter(|(w, _)| w.1) {
                let plain = &results
                    .iter()
                    .find(|(w, _)| w.0 == what.0 && !w.1)
                    .unwrap()
                    .1;
                assert!(
                    got.iter().zip(plain).all(|(a, b)| *a == 1.5 + b),
                    "{what:?}: accumulate"
                );
            }
        }
    }

    /// The largest sums the bounds allow do not overflow: every activation
    /// at +X_MAX and every weight at +w_max over k = 4096 and k = 1024.
    #[test]
    fn the_largest_sums_do_not_overflow() {
        for in_dim in [1024, 4096, 3072] {
            let (rows, out_dim) = (9, 20);
            let packed = PackedI16::quantize(&vec![1.0; out_dim * in_dim], out_dim, in_dim);
            let mut q = QuantRows16::default();
            quantize_rows(&vec![2.0; rows * in_dim], in_dim, rows, in_dim, &mut q);
            let bound = in_dim as i64 * X_MAX as i64 * w_max(in_dim) as i64;
            assert!(
                bound <= i32::MAX as i64 && bound > i32::MAX as i64 / 2,
                "{in_dim}: {bound}"
            );
            for kernel in kernels() {
                let mut dst = vec![0f32; rows * out_dim];
                matmul(kernel, &mut dst, out_dim, &q, &packed, rows, false);
                let want = 2.0 * in_dim as f32;
                assert!(
                    dst.iter().all(|v| (v - want).abs() <= want * 1e-6),
                    "{kernel:?} {in_dim}: {}",
                    dst[0]
                );
            }
        }
    }

    #[test]
    fn non_finite_rows_and_zero_rows_quantize_to_zero() {
        let in_dim = 10;
        let mut x = values(3 * in_dim, 5, 1.0);
        x[3] = f32::NAN;
        x[in_dim + 2] = f32::INFINITY;
        x[2 * in_dim..].fill(0.0);
        let mut q = QuantRows16::default();
        quantize_rows(&x, in_dim, 3, in_dim, &mut q);
        // A NaN is 0 (the row keeps its scale), an infinity zeroes its row.
        assert!((0..in_dim).all(|k| (q.dequantized(0, k) == 0.0) == (k == 3)));
        assert!((1..3).all(|r| (0..in_dim).all(|k| q.dequantized(r, k) == 0.0)));
        assert_eq!(w_max(4096), 512);
        assert_eq!(w_max(1024), 2050);
    }
}
