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
#[derive(Clone, Debug, Default)]
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
    /// Rounds `w` (`out_dim × in_dim`, row-major) to bf16 and packs it, in
    /// parallel over blocks of 16 output channels.
    ///
    /// Panics if `w.len() != out_dim * in_dim`.
    pub fn pack(w: &[f32], out_dim: usize, in_dim: usize) -> Self {
        let n = out_dim
            .checked_mul(in_dim)
            .expect("PackedBf16::pack: size overflow");
        assert_eq!(w.len(), n, "PackedBf16::pack: w.len() != out_dim * in_dim");
        let mut packed = Self::default();
        packed.repack(Rows { w, w_rs: in_dim }, out_dim, in_dim, true);
        packed
    }

    /// [`PackedBf16::pack`] of the `out_dim × in_dim` matrix whose row `o`
    /// starts at `w[o * w_rs]`, on this thread, into this value's buffer
    /// (reused: no allocation once it is large enough). For products inside
    /// an already parallel loop (attention's keys).
    ///
    /// Panics if `w_rs < in_dim` or `w` is too short.
    pub fn repack_rows(&mut self, w: &[f32], w_rs: usize, out_dim: usize, in_dim: usize) {
        assert!(w_rs >= in_dim, "PackedBf16::repack_rows: w_rs < in_dim");
        assert!(
            out_dim == 0 || w.len() >= (out_dim - 1) * w_rs + in_dim,
            "PackedBf16::repack_rows: w too short"
        );
        self.repack(Rows { w, w_rs }, out_dim, in_dim, false);
    }

    /// Packs the transpose of the `k_dim × n_dim` matrix whose row `k` starts
    /// at `x[k * x_rs]`: W = xᵀ (`n_dim` output channels, `k_dim` inputs), so
    /// that [`matmul`](super::matmul) computes `a · x`. On this thread, into
    /// this value's buffer (attention's values: P · V).
    ///
    /// Panics if `x_rs < n_dim` or `x` is too short.
    pub fn repack_transposed(&mut self, x: &[f32], x_rs: usize, k_dim: usize, n_dim: usize) {
        assert!(x_rs >= n_dim, "PackedBf16::repack_transposed: x_rs < n_dim");
        assert!(
            k_dim == 0 || x.len() >= (k_dim - 1) * x_rs + n_dim,
            "PackedBf16::repack_transposed: x too short"
        );
        self.repack(Columns { x, x_rs }, n_dim, k_dim, false);
    }

    fn repack(&mut self, src: impl Source, out_dim: usize, in_dim: usize, parallel: bool) {
        let kp = in_dim.div_ceil(2).next_multiple_of(K_PAIRS_ALIGN);
        let nblk = out_dim.div_ceil(16).next_multiple_of(2);
        self.data.reset_zeroed(nblk * kp * 16 * 4);
        (self.out_dim, self.in_dim, self.kp, self.nblk) = (out_dim, in_dim, kp, nblk);
        if kp == 0 {
            return;
        }
        let fill = |(blk, panel): (usize, &mut [u32])| src.fill_block(panel, blk, out_dim, in_dim);
        let data = self.data.as_u32_mut();
        if parallel {
            data.par_chunks_mut(kp * 16).enumerate().for_each(fill);
        } else {
            data.chunks_mut(kp * 16).enumerate().for_each(fill);
        }
    }

    /// Writes the packed layer for the prepared-weights cache.
    pub(crate) fn write_to(
        &self,
        w: &mut crate::model::kernels::stored::Sink,
    ) -> std::io::Result<()> {
        use crate::model::kernels::stored::*;
        write_len(w, self.out_dim)?;
        write_len(w, self.in_dim)?;
        write_bytes(w, &self.data)
    }

    /// Reads what [`PackedBf16::write_to`] wrote for an `out_dim × in_dim`
    /// layer; any other size is an error.
    pub(crate) fn read_from(
        r: &mut crate::model::kernels::stored::Source,
        out_dim: usize,
        in_dim: usize,
    ) -> std::io::Result<Self> {
        use crate::model::kernels::stored::*;
        expect_len(r, out_dim, "a bf16 layer's outputs")?;
        expect_len(r, in_dim, "a bf16 layer's inputs")?;
        let kp = in_dim.div_ceil(2).next_multiple_of(K_PAIRS_ALIGN);
        let nblk = out_dim.div_ceil(16).next_multiple_of(2);
        let data = read_bytes(r, nblk * kp * 16 * 4)?;
        Ok(Self {
            data,
            out_dim,
            in_dim,
            kp,
            nblk,
        })
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

/// Where [`PackedBf16::repack`] reads W from.
trait Source: Sync {
    /// Fills block `blk` (16 output channels × kp pairs, zeroed) of W.
    fn fill_block(&self, panel: &mut [u32], blk: usize, out_dim: usize, in_dim: usize);
}

/// W's rows, `w_rs` apart (a checkpoint's weight, attention's keys).
struct Rows<'a> {
    w: &'a [f32],
    w_rs: usize,
}

impl Source for Rows<'_> {
    fn fill_block(&self, panel: &mut [u32], blk: usize, out_dim: usize, in_dim: usize) {
        fill_rows(panel, blk, out_dim, in_dim, self.w, self.w_rs)
    }
}

multiversion!(
    /// [`Rows`]' block `blk`: rows `blk*16..` of W rounded to pairs, each row's
    /// pairs at stride 16.
    ///
    /// Compiled for AVX-512 or AVX2 where the CPU has them (`multiversion!`):
    /// without SIMD the rounding stays scalar, and packing attention's keys and
    /// values was 7 % of an int8 model's time on 512-token pairs.
    fn fill_rows(
        panel: &mut [u32],
        blk: usize,
        out_dim: usize,
        in_dim: usize,
        w: &[f32],
        w_rs: usize,
    ) {
        // One row's pairs are made contiguously (a loop that vectorizes),
        // then spread to their stride-16 places.
        let mut pairs = vec![0u32; in_dim.div_ceil(2)];
        for c in 0..16 {
            let o = blk * 16 + c;
            if o >= out_dim {
                break;
            }
            // Attention's keys are 64 floats out of each 3H-float row: a stride
            // the hardware prefetchers do not follow, so each row was a cache
            // miss in turn. Ask for the next rows' lines ahead.
            if w_rs > in_dim {
                for ahead in [2, 3] {
                    if o + ahead < out_dim {
                        crate::model::kernels::prefetch_floats(w, (o + ahead) * w_rs, in_dim);
                    }
                }
            }
            let row = &w[o * w_rs..o * w_rs + in_dim];
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
    }
);

/// W's columns as rows `x_rs` apart: W = xᵀ (attention's values).
struct Columns<'a> {
    x: &'a [f32],
    x_rs: usize,
}

impl Source for Columns<'_> {
    fn fill_block(&self, panel: &mut [u32], blk: usize, out_dim: usize, in_dim: usize) {
        fill_columns(panel, blk, out_dim, in_dim, self.x, self.x_rs)
    }
}

multiversion!(
    /// [`Columns`]' block `blk`: pair p of the block's 16 channels is rows 2p
    /// and 2p+1 of x at columns blk*16.., already side by side: a loop over 16
    /// lanes. Compiled for AVX-512 or AVX2 as [`fill_rows`] is.
    fn fill_columns(
        panel: &mut [u32],
        blk: usize,
        out_dim: usize,
        in_dim: usize,
        x: &[f32],
        x_rs: usize,
    ) {
        let (c0, nc) = (blk * 16, 16.min(out_dim.saturating_sub(blk * 16)));
        if nc == 0 {
            return;
        }
        let row = |k: usize| &x[k * x_rs + c0..k * x_rs + c0 + nc];
        for p in 0..in_dim / 2 {
            // As in `fill_rows`: rows x_rs apart, prefetched a few pairs ahead.
            #[cfg(target_arch = "x86_64")]
            if 2 * p + 9 < in_dim {
                for k in [2 * p + 8, 2 * p + 9] {
                    // SAFETY: prefetching never faults; row k lies in `x`.
                    #[allow(unused_unsafe)]
                    unsafe {
                        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                        _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().wrapping_add(k * x_rs + c0).cast());
                    }
                }
            }
            let (lo, hi) = (row(2 * p), row(2 * p + 1));
            for ((d, &l), &h) in panel[p * 16..p * 16 + nc].iter_mut().zip(lo).zip(hi) {
                *d = f32_to_bf16(l) as u32 | (f32_to_bf16(h) as u32) << 16;
            }
        }
        if in_dim % 2 == 1 {
            let p = in_dim / 2;
            for (d, &l) in panel[p * 16..p * 16 + nc].iter_mut().zip(row(in_dim - 1)) {
                *d = f32_to_bf16(l) as u32;
            }
        }
    }
);

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
