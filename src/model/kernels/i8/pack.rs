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
    pub(super) fn q(&self, o: usize, k: usize) -> i8 {
        let idx = (o / 16) * self.block_bytes + (k / 4) * 64 + (o % 16) * 4 + (k % 4);
        self.data.as_slice()[idx] as i8
    }
}
