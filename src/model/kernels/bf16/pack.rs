//! bf16 operands: the weights rounded and packed once ([`PackedBf16`]), the
//! activations rounded on every call ([`pack_activations`]) into the layout
//! the kernel reads.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::avx512;
use super::{f32_to_bf16, Bf16Kernel};
use crate::model::kernels::AlignedBytes;

/// k is padded to a multiple of 32 values (16 pairs), the AMX tile depth.
const K_PAIRS_ALIGN: usize = 16;

/// Weights of one linear layer y = x·Wᵀ + b, W stored (out × in) row-major as in a
/// PyTorch checkpoint, rounded to bf16 (round to nearest even) and packed for
/// VDPBF16PS (per block of 16 output channels, pairs of consecutive k).
///
/// Layout: `data[(blk * kp + p) * 16 + c]` is a `u32` holding
/// `bf16(W[blk*16+c][2p])` in the low half and `bf16(W[blk*16+c][2p+1])` in the high
/// half; channels past `out_dim` and k past `in_dim` are zero, `kp` is a multiple of
/// 16 and the number of blocks is even. One block of 16 pairs (1 KiB) is exactly an
/// AMX B tile.
#[derive(Clone, Debug)]
pub struct PackedBf16 {
    /// 64-byte aligned, so each 16-column row of a block is one cache line.
    data: AlignedBytes,
    pub(super) out_dim: usize,
    pub(super) in_dim: usize,
    /// Padded number of k pairs.
    pub(super) kp: usize,
    /// Number of 16-channel blocks (even).
    pub(super) nblk: usize,
}

impl PackedBf16 {
    /// Rounds `w` (`out_dim × in_dim`, row-major) to bf16 and packs it.
    ///
    /// Panics if `w.len() != out_dim * in_dim`.
    pub fn pack(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        let n = out_dim
            .checked_mul(in_dim)
            .expect("PackedBf16::pack: size overflow");
        assert_eq!(w.len(), n, "PackedBf16::pack: w.len() != out_dim * in_dim");
        let kp = in_dim.div_ceil(2).next_multiple_of(K_PAIRS_ALIGN);
        let nblk = out_dim.div_ceil(16).next_multiple_of(2);
        let mut data = AlignedBytes::default();
        data.reset_zeroed(nblk * kp * 16 * 4);
        if kp > 0 {
            data.as_u32_mut()
                .par_chunks_mut(kp * 16)
                .enumerate()
                .for_each(|(blk, panel)| {
                    // One row's pairs are made contiguously (a loop that
                    // vectorizes), then spread to their stride-16 places.
                    let mut pairs = vec![0u32; in_dim.div_ceil(2)];
                    for c in 0..16 {
                        let o = blk * 16 + c;
                        if o >= out_dim {
                            break;
                        }
                        let row = &w[o * in_dim..(o + 1) * in_dim];
                        let mut chunks = row.chunks_exact(2);
                        for (d, pair) in pairs.iter_mut().zip(&mut chunks) {
                            let (lo, hi) = (f32_to_bf16(pair[0]), f32_to_bf16(pair[1]));
                            *d = lo as u32 | (hi as u32) << 16;
                        }
                        if let [last] = chunks.remainder() {
                            pairs[in_dim / 2] = f32_to_bf16(*last) as u32;
                        }
                        for (p, &v) in pairs.iter().enumerate() {
                            panel[p * 16 + c] = v;
                        }
                    }
                });
        }
        Self {
            data,
            out_dim,
            in_dim,
            kp,
            nblk,
        }
    }

    /// Number of output channels (rows of W).
    pub fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Number of input features (columns of W).
    pub fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Packed `u32` pairs of block `blk` (16 output channels × `kp` pairs).
    #[inline(always)]
    pub(super) fn block(&self, blk: usize) -> &[u32] {
        &self.data.as_u32()[blk * self.kp * 16..(blk + 1) * self.kp * 16]
    }
}

/// Converts `rows` rows of `x` to bf16 pairs in `abuf` (row stride `a_rs` u32).
#[allow(clippy::too_many_arguments)]
pub(super) fn pack_activations(
    kernel: Bf16Kernel,
    abuf: &mut [u32],
    a_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    in_dim: usize,
    parallel: bool,
) {
    let conv = |(r, out): (usize, &mut [u32])| {
        if r < rows {
            let xr = &x[r * x_rs..r * x_rs + in_dim];
            match kernel {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX-512F/BW are implied by both kernels (asserted available).
                Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16 => unsafe { avx512::convert_row(out, xr) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 asserted available.
                Bf16Kernel::Avx2 => unsafe { convert_row_widened_for::avx2(out, xr) },
                _ => convert_row_widened(out, xr),
            }
        } else {
            out.fill(0);
        }
    };
    if parallel {
        abuf.par_chunks_mut(a_rs * 16)
            .enumerate()
            .for_each(|(blk, chunk)| {
                chunk
                    .chunks_mut(a_rs)
                    .enumerate()
                    .for_each(|(i, out)| conv((blk * 16 + i, out)))
            });
    } else {
        abuf.chunks_mut(a_rs).enumerate().for_each(conv);
    }
}

/// Rounds one row to bf16, each value widened back to f32 bits (one u32 per k),
/// and zero-fills the rest of `out` (portable kernels).
#[inline(always)]
fn convert_row_widened(out: &mut [u32], xr: &[f32]) {
    for (o, &v) in out.iter_mut().zip(xr) {
        *o = (f32_to_bf16(v) as u32) << 16;
    }
    out[xr.len()..].fill(0);
}

multiversion! {
    /// [`convert_row_widened`] compiled for the AVX2 kernel.
    mod convert_row_widened_for(out: &mut [u32], xr: &[f32]) = convert_row_widened;
    avx2: "avx2,fma",
}
