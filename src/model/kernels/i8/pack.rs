//! Int8 weights: [`PackedI8`], quantized and packed once per layer.

use rayon::prelude::*;

use super::AMX_KG;
use crate::model::kernels::AlignedBytes;

/// Weights of one linear layer `y = x·Wᵀ + b`, `W` stored (out × in) row-major as in a PyTorch
/// checkpoint, quantized symmetric int8 per output channel (`scale = max|w_row| / 127`,
/// `q = round(w / scale)` clamped to `[-127, 127]`), packed for the kernel in the VNNI layout:
/// per block of 16 output channels, groups of 4 consecutive `k`, 64 bytes per zmm
/// (`in_dim` is zero-padded to a multiple of 4, `out_dim` to a multiple of 16). Each block
/// is further zero-padded to a multiple of 16 groups (64 k), so that 16 consecutive groups
/// form one AMX int8 B tile (16 rows × 64 bytes); the VNNI / portable kernels only read the
/// first `groups` groups of each block.
pub struct PackedI8 {
    pub(super) out_dim: usize,
    pub(super) in_dim: usize,
    /// Number of 4-wide k groups (`in_dim.div_ceil(4)`).
    pub(super) groups: usize,
    /// Number of 16-channel blocks (`out_dim.div_ceil(16)`).
    pub(super) blocks: usize,
    /// Bytes per 16-channel block (`groups.div_ceil(AMX_KG) * AMX_KG * 64`).
    pub(super) block_bytes: usize,
    /// `blocks × block_bytes` bytes (i8 values stored as their bit patterns).
    pub(super) data: AlignedBytes,
    /// Per-channel scale, padded with zeros to `16 * blocks`.
    pub(super) scale: Vec<f32>,
    /// Per-channel sum of the int8 weights, padded with zeros to `16 * blocks`.
    pub(super) wsum: Vec<i32>,
}

/// The largest `|v|` of `row`. Sixteen independent lanes, so the loop
/// vectorizes (one running maximum would be a serial chain). Inlined, so
/// that it vectorizes for the instruction set of its caller's copy.
#[inline(always)]
pub(in crate::model::kernels) fn abs_max(row: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(c) {
            *m = m.max(v.abs());
        }
    }
    let tail = chunks.remainder().iter().fold(0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// `q[k] = round(row[k] · inv)` clamped to ±127 (ties to even, as
/// `torch.round`); returns `Σ q`. Written to vectorize: `f32::round` is a
/// libm call per weight on x86-64's baseline, and with the scattered stores
/// of the packed layout it made weight quantization most of an int8 model's
/// load (perf, full-size model: `roundf` and this loop 30 % of 5.4 s).
/// Adding 1.5 · 2²³ to a value under 2²² in magnitude (the clamp sees to
/// it) rounds it to an integer, to nearest even, and leaves that integer in
/// the sum's low mantissa bits, read off with integer arithmetic.
fn quantize_row(row: &[f32], inv: f32, q: &mut [i8]) -> i32 {
    const ROUND: f32 = 12_582_912.0;
    let base = ROUND.to_bits() as i32;
    let mut sum = 0i32;
    for (d, &v) in q.iter_mut().zip(row) {
        let x = v * inv;
        // NaN quantizes to 0, as it did through `f32::round` and `as`.
        let x = if x.is_nan() {
            0.0
        } else {
            x.clamp(-127.0, 127.0)
        };
        let k = (x + ROUND).to_bits() as i32 - base;
        *d = k as i8;
        sum += k;
    }
    sum
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
        let (groups, blocks, block_bytes) = Self::layout(out_dim, in_dim);
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
                    let mut q = vec![0i8; groups * 4];
                    for j in 0..16 {
                        let o = b * 16 + j;
                        if o >= out_dim {
                            break;
                        }
                        let row = &w[o * in_dim..(o + 1) * in_dim];
                        let s = abs_max(row) / 127.0;
                        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
                        sblk[j] = s;
                        wsblk[j] = quantize_row(row, inv, &mut q[..in_dim]);
                        for (g, four) in q.chunks_exact(4).enumerate() {
                            let at = g * 64 + j * 4;
                            let four: [i8; 4] = four.try_into().expect("chunks of 4");
                            dblk[at..at + 4].copy_from_slice(&four.map(|v| v as u8));
                        }
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

    /// (k groups of 4, blocks of 16 channels, bytes per block) of an
    /// `out_dim × in_dim` layer.
    fn layout(out_dim: usize, in_dim: usize) -> (usize, usize, usize) {
        let groups = in_dim.div_ceil(4);
        (
            groups,
            out_dim.div_ceil(16),
            groups.div_ceil(AMX_KG) * AMX_KG * 64,
        )
    }

    /// Writes the packed layer for the prepared-weights cache.
    pub(crate) fn write_to(
        &self,
        w: &mut crate::model::kernels::stored::Sink,
    ) -> std::io::Result<()> {
        use crate::model::kernels::stored::*;
        write_len(w, self.out_dim)?;
        write_len(w, self.in_dim)?;
        write_bytes(w, &self.data)?;
        write_words(w, &self.scale)?;
        write_words(w, &self.wsum)
    }

    /// Reads what [`PackedI8::write_to`] wrote for an `out_dim × in_dim`
    /// layer; any other size is an error.
    pub(crate) fn read_from(
        r: &mut crate::model::kernels::stored::Source,
        out_dim: usize,
        in_dim: usize,
    ) -> std::io::Result<Self> {
        use crate::model::kernels::stored::*;
        expect_len(r, out_dim, "an int8 layer's outputs")?;
        expect_len(r, in_dim, "an int8 layer's inputs")?;
        let (groups, blocks, block_bytes) = Self::layout(out_dim, in_dim);
        let data = read_bytes(r, blocks * block_bytes)?;
        let (scale, wsum) = (read_words::<f32>(r)?, read_words::<i32>(r)?);
        if scale.len() != blocks * 16 || wsum.len() != blocks * 16 {
            return Err(invalid(
                "an int8 layer's scales or sums have the wrong length",
            ));
        }
        Ok(PackedI8 {
            out_dim,
            in_dim,
            groups,
            blocks,
            block_bytes,
            data,
            scale,
            wsum,
        })
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
    pub(super) fn q(&self, o: usize, k: usize) -> i8 {
        let idx = (o / 16) * self.block_bytes + (k / 4) * 64 + (o % 16) * 4 + (k % 4);
        self.data.as_slice()[idx] as i8
    }
}
