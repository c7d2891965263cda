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
#[derive(Default)]
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
                        *s = pack_channel(row, max, &mut q, words, j);
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

    /// Quantizes and packs in place, on the calling thread, reusing this
    /// layer's memory: `out_dim × in_dim` weights, weight `(o, k)` at
    /// `w[o · o_stride + k · k_stride]`. For attention's per-head keys
    /// (`o` a key, strides `(row stride, 1)`) and values (transposed: `o` a
    /// head dimension, strides `(1, row stride)`), straight from the Q/K/V rows.
    ///
    /// Panics if `w` is too short or `in_dim` is over 2 M.
    pub fn requantize(
        &mut self,
        w: &[f32],
        strides: (usize, usize),
        out_dim: usize,
        in_dim: usize,
    ) {
        self.requantize_with(w, strides, out_dim, in_dim, true);
    }

    /// [`PackedI16::requantize`]; `fast`: in AVX-512 where the CPU has it and
    /// one stride is 1 (the same values as the generic loop: tests).
    fn requantize_with(
        &mut self,
        w: &[f32],
        (o_stride, k_stride): (usize, usize),
        out_dim: usize,
        in_dim: usize,
        fast: bool,
    ) {
        assert!(
            in_dim <= MAX_IN_DIM,
            "PackedI16: {in_dim} inputs is too many"
        );
        assert!(
            out_dim == 0
                || in_dim == 0
                || (out_dim - 1) * o_stride + (in_dim - 1) * k_stride < w.len(),
            "PackedI16::requantize: weights too short"
        );
        let (groups, blocks) = (in_dim.div_ceil(2), out_dim.div_ceil(16));
        let max = w_max(in_dim);
        self.data.reset_zeroed(blocks * groups * 64);
        self.scale.clear();
        self.scale.resize(blocks * 16, 0.0);
        (self.out_dim, self.in_dim, self.groups, self.blocks) = (out_dim, in_dim, groups, blocks);
        if groups == 0 {
            return;
        }
        let words = self.data.as_u32_mut();
        #[cfg(target_arch = "x86_64")]
        if fast
            && (o_stride == 1 || k_stride == 1)
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
        {
            let scale = &mut self.scale;
            // SAFETY: AVX-512 F/BW checked; `w` holds every (o, k) (asserted
            // above); `words` and `scale` are sized for `blocks` blocks.
            unsafe {
                if o_stride == 1 {
                    requantize_channels_avx512(w, k_stride, (out_dim, in_dim), max, words, scale)
                } else {
                    requantize_rows_avx512(w, o_stride, (out_dim, in_dim), max, words, scale)
                }
            }
            return;
        }
        let (mut row, mut q) = (vec![0f32; in_dim], vec![0i16; 2 * groups]);
        for o in 0..out_dim {
            for (k, v) in row.iter_mut().enumerate() {
                *v = w[o * o_stride + k * k_stride];
            }
            let (b, j) = (o / 16, o % 16);
            let block = &mut words[b * groups * 16..(b + 1) * groups * 16];
            self.scale[o] = pack_channel(&row, max, &mut q, block, j);
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

/// Quantizes one channel's weights `row` to `±max` into column `j` of a
/// 16-channel block's words (`q`: scratch of `2 · groups` zeros past
/// `row.len()`); returns its scale.
fn pack_channel(row: &[f32], max: i32, q: &mut [i16], words: &mut [u32], j: usize) -> f32 {
    let (sc, inv) = scale_for(abs_max(row), max);
    round_clamped(row, inv, max, &mut q[..row.len()]);
    for (g, pair) in q.chunks_exact(2).enumerate() {
        words[g * 16 + j] = pack_pair(pair[0], pair[1]);
    }
    sc
}

/// How many rows ahead the AVX-512 packers prefetch their strided rows.
#[cfg(target_arch = "x86_64")]
const PF_ROWS: usize = 4;

/// NaN lanes to 0, as `round_clamped` maps them.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn nan_to_zero(v: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    _mm512_maskz_mov_ps(_mm512_cmp_ps_mask::<_CMP_ORD_Q>(v, v), v)
}

/// The largest |v| of `row` (`row.len()` a multiple of 16), NaNs ignored
/// (an infinity is kept: `scale_for` turns it into scale 0).
///
/// # Safety
/// The CPU has AVX-512 F.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn abs_max_avx512(row: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    debug_assert!(row.len().is_multiple_of(16));
    let mut m = _mm512_setzero_ps();
    for t in 0..row.len() / 16 {
        let v = nan_to_zero(_mm512_loadu_ps(row.as_ptr().add(16 * t)));
        m = _mm512_max_ps(m, _mm512_abs_ps(v));
    }
    _mm512_reduce_max_ps(m)
}

/// The mask of the first `n` (at most 16) lanes of a 16-lane vector.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn first_lanes(n: usize) -> u16 {
    debug_assert!(n <= 16);
    ((1u32 << n) - 1) as u16
}

/// [`PackedI16::requantize`] for channels that lie next to each other
/// (`o_stride` 1: attention's values, transposed), 16 channels per vector:
/// their 16 maxima, scales and, per k pair, their 16 words are one vector
/// each, so packing is a store per pair instead of the generic loop's
/// strided gather and per-weight stores (which cost twice the int16 P·V
/// products at 512 tokens: perf, 2026-12-03). The generic loop's values:
/// a NaN quantizes to 0, a channel with an infinity gets scale 0.
///
/// # Safety
/// AVX-512 F and BW; `w[o + k · k_stride]` in bounds for every (o, k);
/// `words` and `scale` sized for `out_dim.div_ceil(16)` blocks.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn requantize_channels_avx512(
    w: &[f32],
    k_stride: usize,
    (out_dim, in_dim): (usize, usize),
    max: i32,
    words: &mut [u32],
    scale: &mut [f32],
) {
    use std::arch::x86_64::*;
    let groups = in_dim.div_ceil(2);
    let zero = _mm512_setzero_ps();
    for b in 0..out_dim.div_ceil(16) {
        let mask = first_lanes((out_dim - 16 * b).min(16));
        let p = w.as_ptr().add(16 * b);
        let load = |k: usize| nan_to_zero(_mm512_maskz_loadu_ps(mask, p.add(k * k_stride)));
        let mut m = zero;
        for k in 0..in_dim {
            // Rows `k_stride` apart (attention's values: 16 floats out of each
            // 3H-float row), a stride the hardware prefetchers do not follow.
            _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add((k + PF_ROWS) * k_stride).cast());
            // max_ps returns its second operand where one is NaN (none is).
            m = _mm512_max_ps(_mm512_abs_ps(load(k)), m);
        }
        // `scale_for` per lane: 0 for a zero or infinite maximum.
        let ok = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(m, zero)
            & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(m, _mm512_set1_ps(f32::INFINITY));
        let s = _mm512_maskz_div_ps(ok, m, _mm512_set1_ps(max as f32));
        let inv = _mm512_maskz_div_ps(ok, _mm512_set1_ps(1.0), s);
        _mm512_storeu_ps(scale.as_mut_ptr().add(16 * b), s);
        // |v · inv| ≤ max but for rounding in its last bits: no clamp needed;
        // an infinity times the scale 0 is NaN, hence the second mask.
        let q = |k: usize| {
            if k < in_dim {
                _mm512_cvtps_epi32(nan_to_zero(_mm512_mul_ps(load(k), inv)))
            } else {
                _mm512_setzero_si512()
            }
        };
        let out = words.as_mut_ptr().add(b * groups * 16) as *mut __m512i;
        let low = _mm512_set1_epi32(0xFFFF);
        for g in 0..groups {
            let (lo, hi) = (q(2 * g), q(2 * g + 1));
            let word = _mm512_or_si512(_mm512_and_si512(lo, low), _mm512_slli_epi32::<16>(hi));
            _mm512_storeu_si512(out.add(g), word);
        }
    }
}

/// [`PackedI16::requantize`] for channels whose weights lie next to each
/// other (`k_stride` 1: attention's keys): a channel's maximum and words in
/// vectors of 16 weights; the words then go to their places in the packed
/// block (16 apart) one by one. Same values as the generic loop.
///
/// # Safety
/// As [`requantize_channels_avx512`], with `w[o · o_stride + k]` in bounds.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn requantize_rows_avx512(
    w: &[f32],
    o_stride: usize,
    (out_dim, in_dim): (usize, usize),
    max: i32,
    words: &mut [u32],
    scale: &mut [f32],
) {
    use std::arch::x86_64::*;
    let groups = in_dim.div_ceil(2);
    let pieces = in_dim.div_ceil(16);
    for (o, s) in scale[..out_dim].iter_mut().enumerate() {
        let p = w.as_ptr().add(o * o_stride);
        let load = |t: usize| {
            let mask = first_lanes((in_dim - 16 * t).min(16));
            nan_to_zero(_mm512_maskz_loadu_ps(mask, p.add(16 * t)))
        };
        // As for the values: a later key's row.
        super::prefetch_floats(w, (o + PF_ROWS) * o_stride, in_dim);
        let mut m = _mm512_setzero_ps();
        for t in 0..pieces {
            m = _mm512_max_ps(_mm512_abs_ps(load(t)), m);
        }
        let (sc, inv) = scale_for(_mm512_reduce_max_ps(m), max);
        *s = sc;
        let inv = _mm512_set1_ps(inv);
        let block = words.as_mut_ptr().add((o / 16) * groups * 16 + o % 16);
        let mut pairs = [0u32; 8];
        for t in 0..pieces {
            let q = _mm512_cvtps_epi32(nan_to_zero(_mm512_mul_ps(load(t), inv)));
            // |q| ≤ max ≤ 32767: the truncating narrowing is exact.
            _mm256_storeu_si256(pairs.as_mut_ptr() as *mut __m256i, _mm512_cvtepi32_epi16(q));
            for (i, &word) in pairs.iter().enumerate().take(groups - 8 * t) {
                *block.add((8 * t + i) * 16) = word;
            }
        }
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
/// filled by [`quantize_rows`] or [`quantize_rows_flat`]. Panels of `MR`
/// rows (per k pair, 4 bytes per row: 32 per pair; rows zero-padded to a
/// multiple of `MR`), or flat: row after row, `groups` k pairs each.
#[derive(Default)]
pub struct QuantRows16 {
    rows: usize,
    in_dim: usize,
    groups: usize,
    /// Row after row instead of panels.
    flat: bool,
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
        let (base, rs, gs) = self.strides(r);
        let word = self.data.as_u32()[base + (r % MR) * rs + (k / 2) * gs];
        half(word, k % 2 == 1) as f32 * self.scale[r]
    }

    /// For the `MR` rows from `r / MR · MR` on: the u32 index of their first
    /// word, and the u32s between rows and between k pairs.
    fn strides(&self, r: usize) -> (usize, usize, usize) {
        let r0 = r / MR * MR;
        if self.flat {
            (r0 * self.groups, self.groups, 1)
        } else {
            (r0 * self.groups, 1, MR)
        }
    }

    /// Checks that `x` (row stride `x_rs`) holds `rows × in_dim` and sizes
    /// the buffer for them (contents unspecified).
    fn shape(&mut self, (x, x_rs): (&[f32], usize), rows: usize, in_dim: usize, flat: bool) {
        assert!(
            rows == 0 || (rows - 1) * x_rs + in_dim <= x.len(),
            "i16::quantize_rows: x too short"
        );
        self.rows = rows;
        self.in_dim = in_dim;
        self.groups = in_dim.div_ceil(2);
        self.flat = flat;
        let padded = rows.div_ceil(MR) * MR;
        self.data.resize(padded * self.groups * 4);
        self.scale.resize(padded, 0.0);
    }
}

/// [`quantize_rows`] into the flat layout, on the calling thread: cheaper
/// for short rows (the stores are contiguous, so the loops vectorize). For
/// attention's P·V, where every score of a pair is quantized once. The
/// padding rows of the last panel are not written: the kernel reads them,
/// but only for rows whose results it does not store.
pub fn quantize_rows_flat(x: &[f32], x_rs: usize, rows: usize, in_dim: usize, q: &mut QuantRows16) {
    q.shape((x, x_rs), rows, in_dim, true);
    let groups = q.groups;
    let (words, scale) = (q.data.as_u32_mut(), &mut q.scale);
    #[cfg(target_arch = "x86_64")]
    if in_dim.is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx512bw") {
        for r in 0..rows {
            let row = &x[r * x_rs..r * x_rs + in_dim];
            // SAFETY: AVX-512 F/BW checked; `words` holds `groups` per row.
            unsafe { quantize_flat_row_avx512(row, &mut words[r * groups..], &mut scale[r]) };
        }
        return;
    }
    quantize_flat(x, x_rs, rows, in_dim, groups, words, scale);
}

/// One row of [`quantize_rows_flat`] (`row.len()` a multiple of 16) in
/// AVX-512: the same values as [`quantize_flat`] (a NaN quantizes to 0, a
/// row with an infinity to scale 0; `vcvtps2dq` rounds ties to even like
/// `round_clamped`), 3x faster on attention's rows of 64, where the
/// compiler's version of `abs_max` and the rounding trick was most of the
/// int16 attention's time (perf, 8192 tokens).
///
/// # Safety
/// The CPU has AVX-512 F and BW; `words` holds at least `row.len() / 2`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_flat_row_avx512(row: &[f32], words: &mut [u32], scale: &mut f32) {
    use std::arch::x86_64::*;
    debug_assert!(row.len().is_multiple_of(16) && words.len() * 2 >= row.len());
    let n = row.len() / 16;
    let p = row.as_ptr();
    let load = |i: usize| nan_to_zero(_mm512_loadu_ps(p.add(16 * i)));
    let (sc, inv) = scale_for(abs_max_avx512(row), X_MAX);
    *scale = sc;
    let out = words.as_mut_ptr() as *mut __m256i;
    if sc == 0.0 {
        // All zero, or an infinity (whose product with 0 would be NaN).
        (0..n).for_each(|i| _mm256_storeu_si256(out.add(i), _mm256_setzero_si256()));
        return;
    }
    let inv = _mm512_set1_ps(inv);
    for i in 0..n {
        // |v · inv| <= X_MAX: no clamp needed (and 0 where the scale is 0).
        let q = _mm512_cvtps_epi32(_mm512_mul_ps(load(i), inv));
        _mm256_storeu_si256(out.add(i), _mm512_cvtsepi32_epi16(q));
    }
}

multiversion! {
    /// The loop of [`quantize_rows_flat`], compiled for the CPU at hand
    /// (one dispatch per call, not per row: attention calls it for every 64
    /// keys): `rows` rows of `in_dim` into `words` (`groups` per row) and `scale`.
    fn quantize_flat(
        x: &[f32],
        x_rs: usize,
        rows: usize,
        in_dim: usize,
        groups: usize,
        words: &mut [u32],
        scale: &mut [f32],
    ) {
        for r in 0..rows {
            let row = &x[r * x_rs..r * x_rs + in_dim];
            let words = &mut words[r * groups..(r + 1) * groups];
            let (sc, inv) = scale_for(abs_max(row), X_MAX);
            scale[r] = sc;
            // In pieces of 64 (one attention chunk), through a stack buffer.
            let mut q = [0i16; 64];
            for (piece, words) in row.chunks(64).zip(words.chunks_mut(32)) {
                round_clamped(piece, inv, X_MAX, &mut q[..piece.len()]);
                q[piece.len()..].fill(0);
                for (w, pair) in words.iter_mut().zip(q.chunks_exact(2)) {
                    *w = pack_pair(pair[0], pair[1]);
                }
            }
        }
    }
}

/// Quantizes `rows` rows of `x` (row stride `x_rs`, `in_dim` values each)
/// into `q`. Rows with a non-finite value quantize to scale 0.
pub fn quantize_rows(x: &[f32], x_rs: usize, rows: usize, in_dim: usize, q: &mut QuantRows16) {
    quantize_rows_with(x, x_rs, rows, in_dim, q, true)
}

/// [`quantize_rows`], in AVX-512 where `fast` and the CPU and `in_dim`
/// allow ([`quantize_panel_avx512`]), else in the generic loop (the tests
/// compare the two).
fn quantize_rows_with(
    x: &[f32],
    x_rs: usize,
    rows: usize,
    in_dim: usize,
    q: &mut QuantRows16,
    fast: bool,
) {
    q.shape((x, x_rs), rows, in_dim, false);
    let groups = q.groups;
    if groups == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    let fast = fast && in_dim.is_multiple_of(32) && std::arch::is_x86_feature_detected!("avx512bw");
    let work = |(p, (words, s)): (usize, (&mut [u32], &mut [f32]))| {
        let (r0, nr) = (p * MR, rows.min(p * MR + MR) - p * MR);
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: AVX-512 F/BW checked; the panel's rows are in `x`
            // (`shape`), `words` holds `groups × MR`, `in_dim` % 32 == 0.
            return unsafe { quantize_panel_avx512(&x[r0 * x_rs..], x_rs, nr, in_dim, words, s) };
        }
        quantize_panel(x, x_rs, r0, nr, in_dim, words, s)
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

/// One panel of [`quantize_rows`] in AVX-512: the generic loop's values (a
/// NaN quantizes to 0, a row with an infinity to scale 0; `vcvtps2dq` rounds
/// ties to even like `round_clamped`). The generic loop stores each word
/// alone, `MR` words apart (the panel's row interleave): perf put it at
/// 5.5 % of an int8 `rerank score` without AMX (seed-512x10), as much as
/// the residual projections' quantization should cost in all. Here 32
/// values of each of the 8 rows become one vector of 16 words, and three
/// rounds of two-source permutes transpose the 8 vectors into the panel's
/// order, stored whole.
///
/// # Safety
/// The CPU has AVX-512 F and BW; `x` holds `nr <= MR` rows of `in_dim`
/// (a multiple of 32) at row stride `x_rs`; `words` holds
/// `in_dim / 2 · MR` and `s` `MR`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_panel_avx512(
    x: &[f32],
    x_rs: usize,
    nr: usize,
    in_dim: usize,
    words: &mut [u32],
    s: &mut [f32],
) {
    use std::arch::x86_64::*;
    debug_assert!(nr <= MR && in_dim.is_multiple_of(32) && words.len() >= in_dim / 2 * MR);
    debug_assert!(nr == 0 || (nr - 1) * x_rs + in_dim <= x.len());
    let row = |i: usize| x.as_ptr().add(i * x_rs);
    let mut inv = [_mm512_setzero_ps(); MR];
    for i in 0..MR {
        let (sc, iv) = if i < nr {
            scale_for(abs_max_avx512(&x[i * x_rs..i * x_rs + in_dim]), X_MAX)
        } else {
            (0.0, 0.0)
        };
        s[i] = sc;
        inv[i] = _mm512_set1_ps(iv);
    }
    // 16 values of row i at k0 as 16 i16 (|v · inv| <= X_MAX but for
    // rounding in the last bits: no clamp; an infinity times the scale 0 is
    // NaN, hence the second mask).
    let half = |i: usize, k0: usize| {
        let v = _mm512_loadu_ps(row(i).add(k0));
        // A NaN stays NaN through the product, and is masked to 0 there.
        let q = _mm512_cvtps_epi32(nan_to_zero(_mm512_mul_ps(v, inv[i])));
        _mm512_cvtsepi32_epi16(q)
    };
    // Source lanes of each permute round (`b` + 16 or + 8: the second source).
    let pairs_lo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let pairs_hi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
    let quads_lo = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
    let quads_hi = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
    let octs_lo = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
    let octs_hi = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
    let out = words.as_mut_ptr() as *mut __m512i;
    for b in 0..in_dim / 32 {
        // v[i]: row i's words of k pairs 16b..16b + 16 (rows past nr: 0).
        let mut v = [_mm512_setzero_si512(); MR];
        for (i, v) in v.iter_mut().enumerate().take(nr) {
            let (lo, hi) = (half(i, 32 * b), half(i, 32 * b + 16));
            *v = _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi);
        }
        // Round 1: rows 2j, 2j+1 interleaved word by word: 64-bit lanes
        // (row 2j, row 2j+1) of pairs 0..8 (t[2j]) and 8..16 (t[2j + 1]).
        let mut t = [_mm512_setzero_si512(); MR];
        for j in 0..MR / 2 {
            t[2 * j] = _mm512_permutex2var_epi32(v[2 * j], pairs_lo, v[2 * j + 1]);
            t[2 * j + 1] = _mm512_permutex2var_epi32(v[2 * j], pairs_hi, v[2 * j + 1]);
        }
        // Round 2: 128-bit lanes of rows 4j..4j + 4, 4 pairs each.
        let mut u = [_mm512_setzero_si512(); MR];
        for j in 0..2 {
            for h in 0..2 {
                let (a, c) = (t[4 * j + h], t[4 * j + 2 + h]);
                u[4 * j + 2 * h] = _mm512_permutex2var_epi64(a, quads_lo, c);
                u[4 * j + 2 * h + 1] = _mm512_permutex2var_epi64(a, quads_hi, c);
            }
        }
        // Round 3: all 8 rows of two pairs per vector, pairs in order.
        for q in 0..4 {
            let (a, c) = (u[q], u[4 + q]);
            _mm512_storeu_si512(
                out.add(8 * b + 2 * q),
                _mm512_permutex2var_epi64(a, octs_lo, c),
            );
            _mm512_storeu_si512(
                out.add(8 * b + 2 * q + 1),
                _mm512_permutex2var_epi64(a, octs_hi, c),
            );
        }
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
        // Attention quantizes many short panels (64 wide): no allocation there.
        let (mut stack, mut heap) = ([0i16; 256], Vec::new());
        let n = in_dim.div_ceil(2) * 2;
        let v = if n <= stack.len() {
            &mut stack[..n]
        } else {
            heap.resize(n, 0);
            &mut heap[..]
        };
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
    /// The tile's first row's first k pair, and the u32s between rows and
    /// between k pairs.
    x: *const u32,
    x_rs: usize,
    x_gs: usize,
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
    run(kernel, dst, dst_rs, x, w, rows, accumulate, true)
}

/// [`matmul`] on the calling thread, however large: for products inside a
/// parallel task (attention's, per pair and head).
pub fn matmul_one_thread(
    kernel: I16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows16,
    w: &PackedI16,
    rows: usize,
    accumulate: bool,
) {
    run(kernel, dst, dst_rs, x, w, rows, accumulate, false)
}

#[allow(clippy::too_many_arguments)]
fn run(
    kernel: I16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &QuantRows16,
    w: &PackedI16,
    rows: usize,
    accumulate: bool,
    may_parallel: bool,
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
    assert!(x.groups == w.groups && x.data.len >= x.rows.div_ceil(MR) * x.groups * MR * 4);
    assert!(w.data.len == w.blocks * w.groups * 64 && w.scale.len() == w.blocks * 16);
    #[cfg(target_arch = "x86_64")]
    if kernel == I16Kernel::Vnni {
        assert!(
            I8Kernel::Vnni.is_available(),
            "i16::matmul: no AVX-512 VNNI here"
        );
    }
    let parallel =
        may_parallel && rows * n * w.in_dim >= PAR_MIN_MACS && rayon::current_num_threads() > 1;
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
            let (base, x_rs, x_gs) = x.strides(r);
            let t = Tile {
                x: xd.add(base),
                x_rs,
                x_gs,
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
    let half = |v: u32, hi: bool| half(v, hi) as i32;
    for i in 0..nr {
        let sx = *t.sx.add(i);
        for j in 0..t.ncols {
            let wb = std::slice::from_raw_parts(t.w.add((j / 16) * t.w_bs), t.groups * 16);
            let mut acc = 0i32;
            for g in 0..t.groups {
                let (a, b) = (*t.x.add(i * t.x_rs + g * t.x_gs), wb[g * 16 + j % 16]);
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
unsafe fn vnni_tile<const R: usize, const B: usize, const FLAT: bool>(t: &Tile) {
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
            // Panels: rows adjacent, constant offsets (the fast path of the
            // linear layers); flat: rows `x_rs` apart.
            let a = _mm512_set1_epi32(*x.add(if FLAT { i * t.x_rs } else { i }) as i32);
            for j in 0..B {
                acc[i][j] = dpwssd(acc[i][j], a, wv[j]);
            }
        }
        w = w.add(16);
        x = x.add(if FLAT { 1 } else { MR });
    }
    for j in 0..B {
        let mask = first_lanes(t.ncols.saturating_sub(j * 16).min(16));
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

/// `acc + Σ pairs a·b` (`vpdpwssd`), as inline assembly: LLVM rewrites
/// `_mm512_dpwssd_epi32` into `vpmaddwd` + `vpaddd` where its scheduling
/// model thinks that shortens a dependency chain (objdump: most instances of
/// [`vnni_tile`] had some of it), two instructions where one does.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn dpwssd(
    acc: std::arch::x86_64::__m512i,
    a: std::arch::x86_64::__m512i,
    b: std::arch::x86_64::__m512i,
) -> std::arch::x86_64::__m512i {
    let mut acc = acc;
    std::arch::asm!(
        "vpdpwssd {acc}, {a}, {b}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// [`vnni_tile`] for `r <= MR` rows × `b <= NB` blocks.
///
/// # Safety
/// As [`vnni_tile`].
#[cfg(target_arch = "x86_64")]
unsafe fn vnni_tile_dyn(t: &Tile, r: usize, b: usize) {
    macro_rules! arms {
        ($($r:literal),*) => {
            match (r, b, t.x_gs == 1) {
                $(
                    ($r, 1, false) => vnni_tile::<$r, 1, false>(t),
                    ($r, 2, false) => vnni_tile::<$r, 2, false>(t),
                    ($r, 1, true) => vnni_tile::<$r, 1, true>(t),
                    ($r, 2, true) => vnni_tile::<$r, 2, true>(t),
                )*
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

    /// The flat layout's AVX-512 row quantizer (what attention runs) and the
    /// compiler's generic loop give the same words and scales, NaN and
    /// infinity rows included, and the dequantized values are the inputs
    /// to within half an 11-bit step.
    #[test]
    fn flat_rows_quantize_alike_on_both_paths() {
        let (rows, in_dim) = (11, 64);
        let mut x = values(rows * in_dim, 8, 3.0);
        x[5] = f32::NAN;
        x[in_dim + 9] = f32::INFINITY;
        x[2 * in_dim..3 * in_dim].fill(0.0);
        let mut q = QuantRows16::default();
        quantize_rows_flat(&x, in_dim, rows, in_dim, &mut q);
        let groups = in_dim / 2;
        let (mut words, mut scale) = (vec![0u32; rows * groups], vec![0f32; rows]);
        quantize_flat(&x, in_dim, rows, in_dim, groups, &mut words, &mut scale);
        assert_eq!(&q.data.as_u32()[..rows * groups], &words[..]);
        assert_eq!(&q.scale[..rows], &scale[..]);
        assert!((0..in_dim).all(|k| (q.dequantized(0, k) == 0.0) == (k == 5 || x[k] == 0.0)));
        assert!((1..3).all(|r| (0..in_dim).all(|k| q.dequantized(r, k) == 0.0)));
        for r in 3..rows {
            for k in 0..in_dim {
                let v = x[r * in_dim + k];
                assert!(
                    (q.dequantized(r, k) - v).abs() <= 0.5001 * q.scale[r],
                    "({r},{k})"
                );
            }
        }
    }

    /// The panel quantizer in AVX-512 (the residual projections' and Q's
    /// rows) gives the generic loop's words and scales: whole and partial
    /// panels, rows of 32 to 4096, NaN, infinity and zero rows; and the
    /// values are the inputs to within half a step.
    #[test]
    fn panels_quantize_alike_on_both_paths() {
        for (rows, in_dim) in [(11, 64), (8, 1024), (3, 4096), (17, 32), (24, 96)] {
            let mut x = values(rows * in_dim, 5, 4.0);
            x[7] = f32::NAN;
            x[in_dim + 3] = f32::INFINITY;
            x[2 * in_dim..3 * in_dim].fill(0.0);
            let (mut fast, mut slow) = (QuantRows16::default(), QuantRows16::default());
            quantize_rows_with(&x, in_dim, rows, in_dim, &mut fast, true);
            quantize_rows_with(&x, in_dim, rows, in_dim, &mut slow, false);
            let what = format!("{rows}×{in_dim}");
            assert_eq!(fast.data.as_u32(), slow.data.as_u32(), "{what}");
            assert_eq!(fast.scale, slow.scale, "{what}");
            // The NaN to 0, the infinite row and the zero row all 0.
            assert_eq!(fast.dequantized(0, 7), 0.0, "{what}");
            assert!((1..3).all(|r| (0..in_dim).all(|k| fast.dequantized(r, k) == 0.0)));
            assert!(fast.scale[0] > 0.0 && fast.scale[1] == 0.0 && fast.scale[2] == 0.0);
            for r in (0..rows).filter(|r| !(1..3).contains(r)) {
                for k in (0..in_dim).filter(|&k| (r, k) != (0, 7)) {
                    let v = x[r * in_dim + k];
                    assert!(
                        (fast.dequantized(r, k) - v).abs() <= 0.5001 * fast.scale[r],
                        "{what} ({r},{k})"
                    );
                }
            }
        }
    }

    /// Attention's per-head packing in AVX-512 (keys: rows of `k`; values:
    /// transposed, 16 channels a vector) gives the generic loop's words and
    /// scales, on full and partial 16-channel blocks, odd `in_dim`, and
    /// channels with a NaN, an infinity or only zeros; and the values are
    /// the weights to within half a step.
    #[test]
    fn attention_packing_is_the_same_on_both_paths() {
        let rs = 100;
        let mut w = values(80 * rs, 21, 5.0);
        w[3 * rs + 2] = f32::NAN;
        w[5 * rs + 7] = f32::INFINITY;
        w[9 * rs..10 * rs].fill(0.0);
        for (out_dim, in_dim) in [(64, 64), (24, 24), (17, 7), (16, 1), (40, 64), (64, 33)] {
            for strides in [(rs, 1), (1, rs)] {
                let (mut fast, mut slow) = (PackedI16::default(), PackedI16::default());
                fast.requantize_with(&w, strides, out_dim, in_dim, true);
                slow.requantize_with(&w, strides, out_dim, in_dim, false);
                let what = format!("{out_dim}×{in_dim}, strides {strides:?}");
                assert_eq!(fast.data.as_u32(), slow.data.as_u32(), "{what}");
                assert_eq!(fast.scale, slow.scale, "{what}");
                let at = |o: usize, k: usize| w[o * strides.0 + k * strides.1];
                let mut checked = 0;
                for o in 0..out_dim {
                    let row: Vec<f32> = (0..in_dim).map(|k| at(o, k)).collect();
                    if row.iter().any(|v| !v.is_finite()) {
                        continue;
                    }
                    for (k, v) in row.iter().enumerate() {
                        let step = fast.scale[o];
                        assert!(
                            (fast.dequantized(o, k) - v).abs() <= 0.51 * step,
                            "{what} ({o},{k})"
                        );
                        checked += usize::from(step > 0.0);
                    }
                }
                assert!(checked > out_dim * in_dim / 2, "{what}");
            }
        }
        // The NaN weight quantizes to 0, the infinite one's channel is all 0.
        let mut p = PackedI16::default();
        p.requantize(&w, (rs, 1), 16, 16);
        assert_eq!(p.dequantized(3, 2), 0.0);
        assert!(p.dequantized(3, 3) != 0.0);
        assert!(p.scale[5] == 0.0 && (0..16).all(|k| p.dequantized(5, k) == 0.0));
    }
}
