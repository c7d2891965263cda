//! bf16 GEMM for the encoder linear layers (`y = x·Wᵀ + b` without the bias).
//!
//! Replaces the f32 `gemm` crate call (`gemm::gemm` on f32 operands) used for the
//! encoder linear layers: the weights are rounded once to bf16 (round to nearest
//! even) and packed, the activations are rounded to bf16 on the fly, and all
//! products are accumulated in f32.
//!
//! Kernels, picked once at run time (cached):
//! * [`Bf16Kernel::Amx`]: Intel AMX `TDPBF16PS` (Sapphire Rapids and later, Linux
//!   only; tile permission is requested with `arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//!   32×32 register-tile microkernel written with stable inline `asm!`.
//! * [`Bf16Kernel::Avx512Bf16`]: `VDPBF16PS` (`_mm512_dpbf16_ps`) microkernel,
//!   8 rows × 32 columns = 16 zmm accumulators, broadcast of a 32-bit pair of
//!   activations.
//! * [`Bf16Kernel::Avx2`] / [`Bf16Kernel::Portable`]: the same rounded products
//!   computed in f32 (auto-vectorized; the AVX2+FMA build is used on e.g. Zen 3).
//!   Because a bf16×bf16 product is exact in f32, every path computes the same
//!   products; only the summation order (and hence the last bits) may differ.
//!
//! Measured GFLOP/s (Sapphire Rapids-class Xeon VM, rows = 2048, median of 5; f32
//! reference = `gemm` 0.19 with `x86-v4` on the same shapes; the 2 cores were shared
//! with other jobs, so the 1-thread figures are the reliable ones):
//!
//! | in × out    | threads | f32 gemm | bf16 AMX | bf16 VDPBF16PS | portable (AVX2+FMA) |
//! |-------------|---------|----------|----------|----------------|---------------------|
//! | 1024 × 1024 | 1       | 196      | 876      | 115            | 92                  |
//! | 1024 × 4096 | 1       | 204      | 549      | 112            | 91                  |
//! | 4096 × 1024 | 1       | 202      | 563      | 111            | 90                  |
//! | 1024 × 1024 | 2       | 179–335  | 564–1359 | 110–226        | 82–98               |
//! | 1024 × 4096 | 2       | 187–397  | 707–913  | 90–222         | 49–78               |
//! | 4096 × 1024 | 2       | 188–199  | 510–739  | 108–112        | 48–179              |
//!
//! i.e. the AMX path is 2.7–4.5× the f32 `gemm` rate. On this CPU `VDPBF16PS zmm`
//! retires only ~0.5/cycle (measured: 1.3 G instr/s vs 5.5 G/s for
//! `VFMADD231PS zmm`), so the VDPBF16PS kernel is limited to about half the f32 FMA
//! rate and is only a fallback for AVX512-BF16 CPUs without AMX (e.g. Zen 4, where
//! it has not been measured). On CPUs with neither (e.g. Zen 3, AVX2) the portable
//! kernel is correct but about 2× slower than f32 `gemm`; callers that care about
//! speed there should keep the f32 path (see [`detected_kernel`]).

use rayon::prelude::*;
use std::sync::atomic::{AtomicU8, Ordering};

/// k is padded to a multiple of 32 values (16 pairs), the AMX tile depth.
const K_PAIRS_ALIGN: usize = 16;
/// Rows of the packed activation buffer are padded to a multiple of 32.
const ROW_ALIGN: usize = 32;
/// Columns are processed in panels of 32 (two packed blocks of 16).
const COL_PANEL: usize = 32;

/// Rounds an f32 to bf16 (round to nearest even; NaN stays NaN, quieted) and
/// returns the bf16 bit pattern.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    if (b & 0x7fff_ffff) > 0x7f80_0000 {
        ((b >> 16) | 0x40) as u16
    } else {
        (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
    }
}

/// Widens a bf16 bit pattern to f32 (exact).
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

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
    data: Vec<u32>,
    out_dim: usize,
    in_dim: usize,
    /// Padded number of k pairs.
    kp: usize,
    /// Number of 16-channel blocks (even).
    nblk: usize,
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
        let mut data = vec![0u32; nblk * kp * 16];
        if kp > 0 {
            data.par_chunks_mut(kp * 16)
                .enumerate()
                .for_each(|(blk, panel)| {
                    for c in 0..16 {
                        let o = blk * 16 + c;
                        if o >= out_dim {
                            break;
                        }
                        let row = &w[o * in_dim..(o + 1) * in_dim];
                        for (p, pair) in row.chunks(2).enumerate() {
                            let lo = f32_to_bf16(pair[0]) as u32;
                            let hi = pair.get(1).map_or(0, |&v| f32_to_bf16(v) as u32);
                            panel[p * 16 + c] = lo | (hi << 16);
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
    fn block(&self, blk: usize) -> &[u32] {
        &self.data[blk * self.kp * 16..(blk + 1) * self.kp * 16]
    }
}

/// Which implementation [`matmul_bf16_with`] runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// Plain Rust, compiled for the baseline target.
    Portable,
    /// The portable code compiled with AVX2+FMA enabled (x86-64 only).
    Avx2,
    /// `VDPBF16PS` microkernel (AVX-512F/BW + AVX512-BF16).
    Avx512Bf16,
    /// Intel AMX `TDPBF16PS` microkernel (AMX-TILE + AMX-BF16, Linux x86-64).
    Amx,
}

impl Bf16Kernel {
    fn to_u8(self) -> u8 {
        match self {
            Bf16Kernel::Portable => 1,
            Bf16Kernel::Avx2 => 2,
            Bf16Kernel::Avx512Bf16 => 3,
            Bf16Kernel::Amx => 4,
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            2 => Bf16Kernel::Avx2,
            3 => Bf16Kernel::Avx512Bf16,
            4 => Bf16Kernel::Amx,
            _ => Bf16Kernel::Portable,
        }
    }

    /// Whether this kernel can run on the current machine (for `Amx` this also
    /// requests the tile-data permission from the OS on first use).
    pub fn is_available(self) -> bool {
        match self {
            Bf16Kernel::Portable => true,
            Bf16Kernel::Avx2 => has_avx2(),
            Bf16Kernel::Avx512Bf16 => has_avx512bf16(),
            Bf16Kernel::Amx => has_amx(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx512bf16() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512bf16")
}
#[cfg(not(target_arch = "x86_64"))]
fn has_avx512bf16() -> bool {
    false
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn has_amx() -> bool {
    static AMX: AtomicU8 = AtomicU8::new(0);
    match AMX.load(Ordering::Relaxed) {
        1 => false,
        2 => true,
        _ => {
            let ok = has_avx512bf16() && amx::detect_and_enable();
            AMX.store(if ok { 2 } else { 1 }, Ordering::Relaxed);
            ok
        }
    }
}
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn has_amx() -> bool {
    false
}

/// The kernel [`matmul_bf16`] uses on this machine (detected once, then cached).
pub fn detected_kernel() -> Bf16Kernel {
    static KERNEL: AtomicU8 = AtomicU8::new(0);
    let v = KERNEL.load(Ordering::Relaxed);
    if v != 0 {
        return Bf16Kernel::from_u8(v);
    }
    // RERANK_BF16_KERNEL=amx|avx512bf16|avx2|portable caps the choice (for
    // comparisons); kernels this CPU lacks are skipped.
    let all = [
        Bf16Kernel::Amx,
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Avx2,
        Bf16Kernel::Portable,
    ];
    let first = std::env::var("RERANK_BF16_KERNEL")
        .ok()
        .and_then(|v| {
            all.iter()
                .position(|k| format!("{k:?}").eq_ignore_ascii_case(&v))
        })
        .unwrap_or(0);
    let k = all[first..]
        .iter()
        .copied()
        .find(|k| k.is_available())
        .unwrap_or(Bf16Kernel::Portable);
    KERNEL.store(k.to_u8(), Ordering::Relaxed);
    k
}

/// `dst[r*dst_rs + o] = (accumulate ? dst[..] : 0) + sum_k bf16(x[r*x_rs+k]) * bf16(w[o][k])`
/// accumulated in f32, for `r < rows`, `o < out_dim`.
///
/// Activations are converted to bf16 (round to nearest even) into a packed,
/// reused thread-local buffer, in parallel per row block. The product is parallel
/// with rayon over (row block, column block) tiles when the work is large, using
/// the current rayon pool (`rayon::current_num_threads()`).
///
/// Panics if `x_rs < in_dim` or `dst_rs < out_dim` (when `rows > 0`) or if `x` /
/// `dst` are too short for `rows` rows with those strides.
pub fn matmul_bf16(
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    w: &PackedBf16,
    accumulate: bool,
) {
    matmul_bf16_with(detected_kernel(), dst, dst_rs, x, x_rs, rows, w, accumulate)
}

/// [`matmul_bf16`] with an explicit kernel (for tests and benchmarks).
///
/// Panics if `kernel` is not available on this machine (see
/// [`Bf16Kernel::is_available`]) or on the same bad sizes as [`matmul_bf16`].
#[allow(clippy::too_many_arguments)]
pub fn matmul_bf16_with(
    kernel: Bf16Kernel,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    w: &PackedBf16,
    accumulate: bool,
) {
    assert!(
        kernel.is_available(),
        "matmul_bf16: kernel {kernel:?} not available"
    );
    let (in_dim, out_dim) = (w.in_dim, w.out_dim);
    if rows == 0 || out_dim == 0 {
        return;
    }
    assert!(x_rs >= in_dim, "matmul_bf16: x_rs < in_dim");
    assert!(dst_rs >= out_dim, "matmul_bf16: dst_rs < out_dim");
    let x_need = (rows - 1)
        .checked_mul(x_rs)
        .and_then(|v| v.checked_add(in_dim))
        .expect("matmul_bf16: x size overflow");
    assert!(x.len() >= x_need, "matmul_bf16: x too short");
    let d_need = (rows - 1)
        .checked_mul(dst_rs)
        .and_then(|v| v.checked_add(out_dim))
        .expect("matmul_bf16: dst size overflow");
    assert!(dst.len() >= d_need, "matmul_bf16: dst too short");

    let flops = 2.0 * rows as f64 * in_dim as f64 * out_dim as f64;
    let parallel = rayon::current_num_threads() > 1 && flops >= 8.0e6;

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
    // Every element is rewritten by pack_activations (padding included).
    abuf.resize(rows_pad * a_rs, 0);
    pack_activations(kernel, &mut abuf, a_rs, x, x_rs, rows, in_dim, parallel);
    debug_assert!(!widened || a_rs >= 2 * kp);

    let ncols_pad = w.nblk * 16;
    let (mb, nb) = blocking(kernel, kp, rows_pad, ncols_pad);
    let n_rb = rows_pad.div_ceil(mb);
    let n_cb = ncols_pad.div_ceil(nb);
    let ctx = Ctx {
        kernel,
        a: &abuf,
        a_rs,
        w,
        rows,
        dst: DstPtr(dst.as_mut_ptr()),
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
    static ABUF: std::cell::Cell<Vec<u32>> = const { std::cell::Cell::new(Vec::new()) };
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

#[derive(Clone, Copy)]
struct DstPtr(*mut f32);
// SAFETY: tiles write disjoint (row range × column range) parts of dst, and the
// pointer does not outlive the `&mut [f32]` borrowed by `matmul_bf16_with`.
unsafe impl Send for DstPtr {}
unsafe impl Sync for DstPtr {}

struct Ctx<'a> {
    kernel: Bf16Kernel,
    a: &'a [u32],
    a_rs: usize,
    w: &'a PackedBf16,
    rows: usize,
    dst: DstPtr,
    dst_rs: usize,
    accumulate: bool,
}

impl Ctx<'_> {
    /// Computes rows `r0..r1` (multiples of 32 except r1 may be rows-rounded) and
    /// padded columns `c0..c1` (multiples of 32).
    fn run_tile(&self, r0: usize, r1: usize, c0: usize, c1: usize) {
        match self.kernel {
            #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
            // SAFETY: availability was asserted in matmul_bf16_with.
            Bf16Kernel::Amx => unsafe { amx::tile(self, r0, r1, c0, c1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: availability was asserted in matmul_bf16_with.
            Bf16Kernel::Avx512Bf16 => unsafe { avx512::tile(self, r0, r1, c0, c1) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: availability was asserted in matmul_bf16_with.
            Bf16Kernel::Avx2 => unsafe { portable_tile_avx2(self, r0, r1, c0, c1) },
            _ => portable_tile(self, r0, r1, c0, c1),
        }
    }

    /// Writes a tile of results `acc` (row stride `acc_rs`) for output rows
    /// `r..r+nr` and columns `c..c+nc`, clipped to the real matrix.
    #[inline(always)]
    fn write_out(&self, acc: &[f32], acc_rs: usize, r: usize, nr: usize, c: usize, nc: usize) {
        let nr = nr.min(self.rows.saturating_sub(r));
        let nc = nc.min(self.w.out_dim.saturating_sub(c));
        for i in 0..nr {
            let src = &acc[i * acc_rs..i * acc_rs + nc];
            // SAFETY: r+i < rows and c+nc <= out_dim <= dst_rs, so the range lies
            // inside the bounds asserted in matmul_bf16_with; tiles are disjoint.
            let d = unsafe {
                std::slice::from_raw_parts_mut(self.dst.0.add((r + i) * self.dst_rs + c), nc)
            };
            if self.accumulate {
                d.iter_mut().zip(src).for_each(|(d, s)| *d += s);
            } else {
                d.copy_from_slice(src);
            }
        }
    }
}

/// Converts `rows` rows of `x` to bf16 pairs in `abuf` (row stride `a_rs` u32).
#[allow(clippy::too_many_arguments)]
fn pack_activations(
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
                Bf16Kernel::Amx | Bf16Kernel::Avx512Bf16 => unsafe { convert_row_avx512(out, xr) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: AVX2 asserted available.
                Bf16Kernel::Avx2 => unsafe { convert_row_widened_avx2(out, xr) },
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

/// Rounds one row to bf16 pairs and zero-fills the rest of `out` (padding);
/// scalar reference for [`convert_row_avx512`].
#[cfg(all(test, target_arch = "x86_64"))]
fn convert_row(out: &mut [u32], xr: &[f32]) {
    let mut pairs = xr.chunks_exact(2);
    for (o, p) in out.iter_mut().zip(&mut pairs) {
        *o = f32_to_bf16(p[0]) as u32 | ((f32_to_bf16(p[1]) as u32) << 16);
    }
    let mut n = xr.len() / 2;
    if let [last] = pairs.remainder() {
        out[n] = f32_to_bf16(*last) as u32;
        n += 1;
    }
    out[n..].fill(0);
}

/// AVX-512 version of [`convert_row`], bit-identical (same integer rounding).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
fn convert_row_avx512(out: &mut [u32], xr: &[f32]) {
    use std::arch::x86_64::*;
    let n = xr.len();
    assert!(out.len() * 2 >= n);
    let out16 = out.as_mut_ptr().cast::<u16>();
    let mut k = 0;
    while k < n {
        let m: __mmask16 = if n - k >= 16 {
            0xffff
        } else {
            (1u16 << (n - k)) - 1
        };
        // SAFETY: the mask limits the load to xr[k..n] and the store to
        // out16[k..n], which lies inside `out` (asserted above).
        unsafe {
            let v = _mm512_maskz_loadu_epi32(m, xr.as_ptr().add(k).cast());
            let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(1));
            let bias = _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff));
            let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(v, bias));
            let abs = _mm512_and_si512(v, _mm512_set1_epi32(0x7fff_ffff));
            let nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
            let q = _mm512_or_si512(_mm512_srli_epi32::<16>(v), _mm512_set1_epi32(0x40));
            let r = _mm512_mask_mov_epi32(r, nan, q);
            _mm512_mask_cvtepi32_storeu_epi16(out16.add(k).cast(), m, r);
        }
        k += 16;
    }
    let used = n.div_ceil(2);
    if n % 2 == 1 {
        // Clear the upper half of the last pair.
        out[used - 1] &= 0xffff;
    }
    out[used..].fill(0);
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn convert_row_widened_avx2(out: &mut [u32], xr: &[f32]) {
    convert_row_widened(out, xr)
}

/// Portable tile: 4 rows × 16 columns register tile, the same rounded products
/// as VDPBF16PS (odd k then even k of each pair) accumulated in f32. With
/// `FMA = true` the update uses fused multiply-add, which gives identical results
/// because a bf16×bf16 product is exact in f32.
#[inline(always)]
fn portable_tile_impl<const FMA: bool>(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
    const MR: usize = 4;
    let kp = ctx.w.kp;
    let r1 = r1.min(ctx.rows);
    for blk in c0 / 16..c1 / 16 {
        if blk * 16 >= ctx.w.out_dim {
            break;
        }
        let b = ctx.w.block(blk);
        for r in (r0..r1).step_by(MR) {
            // Rows r..r+MR exist in the padded buffer (rows_pad is a multiple of 32).
            let mut acc = [[0f32; 16]; MR];
            let a: [&[u32]; MR] =
                std::array::from_fn(|i| &ctx.a[(r + i) * ctx.a_rs..(r + i) * ctx.a_rs + 2 * kp]);
            for (p, wp) in b.chunks_exact(16).enumerate() {
                let wp: &[u32; 16] = wp.try_into().unwrap();
                let wl: [f32; 16] = std::array::from_fn(|c| f32::from_bits(wp[c] << 16));
                let wh: [f32; 16] = std::array::from_fn(|c| f32::from_bits(wp[c] & 0xffff_0000));
                for i in 0..MR {
                    let al = f32::from_bits(a[i][2 * p]);
                    let ah = f32::from_bits(a[i][2 * p + 1]);
                    for c in 0..16 {
                        acc[i][c] = if FMA {
                            al.mul_add(wl[c], ah.mul_add(wh[c], acc[i][c]))
                        } else {
                            (acc[i][c] + ah * wh[c]) + al * wl[c]
                        };
                    }
                }
            }
            ctx.write_out(acc.as_flattened(), 16, r, MR, blk * 16, 16);
        }
    }
}

fn portable_tile(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
    portable_tile_impl::<false>(ctx, r0, r1, c0, c1)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn portable_tile_avx2(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
    portable_tile_impl::<true>(ctx, r0, r1, c0, c1)
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::Ctx;
    use std::arch::x86_64::*;

    const MR: usize = 8;

    #[inline(always)]
    fn bh(v: __m512i) -> __m512bh {
        // SAFETY: both are plain 512-bit vectors.
        unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
    }

    /// VDPBF16PS tile: 8 rows × 32 columns (16 zmm accumulators) per microkernel.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) fn tile(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
        let kp = ctx.w.kp;
        let r1 = r1.min(ctx.rows);
        let mut out = [0f32; MR * 32];
        for c in (c0..c1).step_by(32) {
            if c >= ctx.w.out_dim {
                break;
            }
            let b0 = ctx.w.block(c / 16);
            let b1 = ctx.w.block(c / 16 + 1);
            let mut r = r0;
            while r < r1 {
                // Rows r..r+8 exist in the padded buffer (rows_pad is a multiple of 32).
                let a = &ctx.a[r * ctx.a_rs..(r + MR - 1) * ctx.a_rs + kp];
                let mut acc = [[_mm512_setzero_ps(); 2]; MR];
                let ap = a.as_ptr();
                for p in 0..kp {
                    // SAFETY: p < kp; block slices hold kp*16 u32; row i+p < a.len().
                    unsafe {
                        let w0 = bh(_mm512_loadu_si512(b0.as_ptr().add(p * 16).cast()));
                        let w1 = bh(_mm512_loadu_si512(b1.as_ptr().add(p * 16).cast()));
                        for (i, acc) in acc.iter_mut().enumerate() {
                            let av = bh(_mm512_set1_epi32(*ap.add(i * ctx.a_rs + p) as i32));
                            acc[0] = _mm512_dpbf16_ps(acc[0], av, w0);
                            acc[1] = _mm512_dpbf16_ps(acc[1], av, w1);
                        }
                    }
                }
                for (i, acc) in acc.iter().enumerate() {
                    // SAFETY: out holds MR*32 f32.
                    unsafe {
                        _mm512_storeu_ps(out.as_mut_ptr().add(i * 32), acc[0]);
                        _mm512_storeu_ps(out.as_mut_ptr().add(i * 32 + 16), acc[1]);
                    }
                }
                ctx.write_out(&out, 32, r, MR, c, 32);
                r += MR;
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use super::Ctx;
    use std::arch::asm;

    pub(super) fn detect_and_enable() -> bool {
        crate::model::amx::detect_and_enable(crate::model::amx::AmxFeature::Bf16)
    }

    use crate::model::amx::load_config;

    /// AMX tile. Microkernel: 32 rows × 32 columns held in C tiles tmm0..3 over the
    /// full k depth, A tiles tmm4/5 (16 rows × 32 k), B tiles tmm6/7 (16 k pairs ×
    /// 16 columns). Full 32×32 blocks are loaded from / stored to `dst` directly;
    /// edge blocks go through a small buffer.
    pub(super) unsafe fn tile(ctx: &Ctx, r0: usize, r1: usize, c0: usize, c1: usize) {
        let steps = ctx.w.kp / 16;
        let sa = ctx.a_rs * 4;
        let r1 = r1.min(ctx.rows);
        #[repr(C, align(64))]
        struct Buf([f32; 32 * 32]);
        let mut buf = Buf([0.0; 32 * 32]);
        load_config();
        for c in (c0..c1).step_by(32) {
            if c >= ctx.w.out_dim {
                break;
            }
            let b0 = ctx.w.block(c / 16).as_ptr();
            let b1 = ctx.w.block(c / 16 + 1).as_ptr();
            for r in (r0..r1).step_by(32) {
                // Rows r..r+32 exist in the padded buffer (rows_pad is a multiple of
                // 32), each with at least kp pairs.
                assert!((r + 32) * ctx.a_rs <= ctx.a.len());
                let a0 = ctx.a.as_ptr().add(r * ctx.a_rs);
                let a1 = a0.add(16 * ctx.a_rs);
                // Stored straight into dst only for whole blocks without
                // accumulation. With accumulation the products are summed from
                // zero and added to dst afterwards (as the other kernels do), so
                // a row's result never depends on which block it falls in, i.e.
                // on the batch: loading dst into the tile would change the
                // rounding order, and bf16 rounding of the next layer's input
                // can turn such last-bit differences into visible ones.
                let direct = r + 32 <= ctx.rows && c + 32 <= ctx.w.out_dim && !ctx.accumulate;
                // C tile origin and row stride in bytes: dst itself for direct
                // blocks (inside the asserted bounds: rows r..r+32, columns c..c+32).
                let (o, so) = if direct {
                    (ctx.dst.0.add(r * ctx.dst_rs + c), ctx.dst_rs * 4)
                } else {
                    (buf.0.as_mut_ptr(), 32 * 4)
                };
                let o1 = o.byte_add(16 * so);
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for s in 0..steps {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(s * 16),
                        a1 = in(reg) a1.add(s * 16),
                        b0 = in(reg) b0.add(s * 256),
                        b1 = in(reg) b1.add(s * 256),
                        sa = in(reg) sa,
                        sb = in(reg) 64usize,
                        options(nostack, readonly),
                    );
                }
                asm!(
                    "tilestored [{o0} + {so}*1], tmm0",
                    "tilestored [{o1} + {so}*1], tmm1",
                    "tilestored [{o2} + {so}*1], tmm2",
                    "tilestored [{o3} + {so}*1], tmm3",
                    o0 = in(reg) o,
                    o1 = in(reg) o.add(16),
                    o2 = in(reg) o1,
                    o3 = in(reg) o1.add(16),
                    so = in(reg) so,
                    options(nostack),
                );
                if !direct {
                    ctx.write_out(&buf.0, 32, r, 32, c, 32);
                }
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small deterministic PRNG (xorshift64*), values in [-1, 1).
    struct Rng(u64);
    impl Rng {
        fn next_f32(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            v as f32 / (1u64 << 23) as f32 - 1.0
        }
        fn vec(&mut self, n: usize) -> Vec<f32> {
            (0..n).map(|_| self.next_f32()).collect()
        }
    }

    fn kernels() -> Vec<Bf16Kernel> {
        [
            Bf16Kernel::Portable,
            Bf16Kernel::Avx2,
            Bf16Kernel::Avx512Bf16,
            Bf16Kernel::Amx,
        ]
        .into_iter()
        .filter(|k| k.is_available())
        .collect()
    }

    fn bf(v: f32) -> f64 {
        bf16_to_f32(f32_to_bf16(v)) as f64
    }

    /// f64 reference on the bf16-rounded operands; returns (value, sum |x w|).
    fn reference(
        x: &[f32],
        x_rs: usize,
        rows: usize,
        w: &[f32],
        out: usize,
        inp: usize,
    ) -> Vec<(f64, f64)> {
        let mut y = vec![(0.0, 0.0); rows * out];
        for r in 0..rows {
            for o in 0..out {
                let (mut s, mut a) = (0.0, 0.0);
                for k in 0..inp {
                    let p = bf(x[r * x_rs + k]) * bf(w[o * inp + k]);
                    s += p;
                    a += p.abs();
                }
                y[r * out + o] = (s, a);
            }
        }
        y
    }

    #[allow(clippy::too_many_arguments)]
    fn check_shape(
        kernel: Bf16Kernel,
        rows: usize,
        inp: usize,
        out: usize,
        x_pad: usize,
        d_pad: usize,
        accumulate: bool,
        rng: &mut Rng,
    ) {
        let (x_rs, d_rs) = (inp + x_pad, out + d_pad);
        let x = rng.vec(rows * x_rs);
        let w = rng.vec(out * inp);
        let packed = PackedBf16::pack(&w, out, inp);
        assert_eq!((packed.out_dim(), packed.in_dim()), (out, inp));
        let init = rng.vec(rows * d_rs);
        let mut dst = init.clone();
        matmul_bf16_with(kernel, &mut dst, d_rs, &x, x_rs, rows, &packed, accumulate);
        let want = reference(&x, x_rs, rows, &w, out, inp);
        for r in 0..rows {
            for c in 0..d_rs {
                let i = r * d_rs + c;
                if c >= out {
                    assert_eq!(dst[i].to_bits(), init[i].to_bits(), "padding touched");
                    continue;
                }
                let (v, scale) = want[r * out + c];
                let base = if accumulate { init[i] as f64 } else { 0.0 };
                let err = (dst[i] as f64 - (base + v)).abs();
                let tol = 1e-6 * (scale + base.abs()) + 1e-30;
                assert!(
                    err <= tol,
                    "{kernel:?} rows={rows} in={inp} out={out} acc={accumulate} \
                     r={r} c={c}: got {} want {} (err {err:e}, tol {tol:e})",
                    dst[i],
                    base + v
                );
            }
        }
    }

    #[test]
    fn matches_reference_all_shapes() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for kernel in kernels() {
            for &rows in &[0usize, 1, 3, 17, 130] {
                for &inp in &[32usize, 37, 64, 1024] {
                    for &out in &[1usize, 16, 37, 64, 1024] {
                        if rows * inp * out > 40_000_000 {
                            continue;
                        }
                        let acc = (rows + inp + out) % 2 == 0;
                        check_shape(kernel, rows, inp, out, 0, 0, acc, &mut rng);
                    }
                }
            }
        }
    }

    #[test]
    fn strides_and_accumulate() {
        let mut rng = Rng(42);
        for kernel in kernels() {
            for &(rows, inp, out) in &[(5, 37, 37), (33, 64, 48), (70, 100, 33), (3, 1, 1)] {
                for accumulate in [false, true] {
                    check_shape(kernel, rows, inp, out, 7, 5, accumulate, &mut rng);
                    check_shape(kernel, rows, inp, out, 0, 0, accumulate, &mut rng);
                }
            }
        }
    }

    #[test]
    fn large_parallel_shape() {
        // Big enough to take the parallel path with several tiles in each direction.
        let mut rng = Rng(7);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        pool.install(|| {
            for kernel in kernels() {
                check_shape(kernel, 300, 256, 700, 3, 9, true, &mut rng);
            }
        });
    }

    #[test]
    fn simd_agrees_with_fallback() {
        let mut rng = Rng(99);
        let (rows, inp, out) = (97, 1000, 200);
        let x = rng.vec(rows * inp);
        let w = rng.vec(out * inp);
        let packed = PackedBf16::pack(&w, out, inp);
        let mut base = vec![0f32; rows * out];
        matmul_bf16_with(
            Bf16Kernel::Portable,
            &mut base,
            out,
            &x,
            inp,
            rows,
            &packed,
            false,
        );
        let want = reference(&x, inp, rows, &w, out, inp);
        for kernel in kernels() {
            let mut got = vec![0f32; rows * out];
            matmul_bf16_with(kernel, &mut got, out, &x, inp, rows, &packed, false);
            for i in 0..rows * out {
                let tol = 1e-5 * want[i].1 + 1e-30;
                assert!(
                    (got[i] - base[i]).abs() as f64 <= tol,
                    "{kernel:?} vs portable at {i}: {} vs {}",
                    got[i],
                    base[i]
                );
            }
        }
        // The auto-vectorized builds compute exactly the same sums as the portable one.
        if Bf16Kernel::Avx2.is_available() {
            let mut got = vec![0f32; rows * out];
            matmul_bf16_with(
                Bf16Kernel::Avx2,
                &mut got,
                out,
                &x,
                inp,
                rows,
                &packed,
                false,
            );
            assert_eq!(got, base);
        }
    }

    #[test]
    fn bf16_rounding_is_nearest_even() {
        // 1.0 = 0x3f80_0000 -> 0x3f80.
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        // 1 + 2^-8 is exactly half way between 0x3f80 and 0x3f81: ties to even (down).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 0x3f81_8000 is half way between 0x3f81 and 0x3f82: ties to even (up).
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_8000)), 0x3f82);
        // Just above / below the halfway point.
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(f32_to_bf16(f32::from_bits(0x3f81_7fff)), 0x3f81);
        // pi = 0x4049_0fdb -> 0x4049 (round down); -pi -> 0xc049.
        assert_eq!(f32_to_bf16(std::f32::consts::PI), 0x4049);
        assert_eq!(f32_to_bf16(-std::f32::consts::PI), 0xc049);
        // 1/3 = 0x3eaa_aaab -> 0x3eab (round up).
        assert_eq!(f32_to_bf16(1.0 / 3.0), 0x3eab);
        // Largest finite f32 rounds to +inf; inf and NaN are preserved.
        assert_eq!(f32_to_bf16(f32::MAX), 0x7f80);
        assert_eq!(f32_to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(f32_to_bf16(f32::NEG_INFINITY), 0xff80);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
        // A NaN whose payload is only in the low bits must not become inf.
        assert!(bf16_to_f32(f32_to_bf16(f32::from_bits(0x7f80_0001))).is_nan());
        assert_eq!(f32_to_bf16(-0.0), 0x8000);
        // Exhaustive property on a slice of the space: nearest, ties to even.
        for hi in (0u32..0x10000).step_by(97) {
            for lo in [0u32, 1, 0x7fff, 0x8000, 0x8001, 0xffff] {
                let b = (hi << 16) | lo;
                let v = f32::from_bits(b);
                if !v.is_finite() {
                    continue;
                }
                let r = f32_to_bf16(v);
                let d = (bf16_to_f32(r) as f64 - v as f64).abs();
                let down = f32::from_bits(b & 0xffff_0000) as f64;
                let up = f32::from_bits((b & 0xffff_0000).wrapping_add(0x1_0000)) as f64;
                let best = (v as f64 - down).abs().min((up - v as f64).abs());
                if bf16_to_f32(r).is_finite() {
                    assert!(d <= best, "{b:#x}");
                }
                if lo == 0x8000 {
                    assert_eq!(r & 1, 0, "tie not to even for {b:#x}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn simd_activation_conversion_matches_scalar() {
        if !Bf16Kernel::Avx512Bf16.is_available() {
            return;
        }
        let mut rng = Rng(5);
        let mut xs = rng.vec(200);
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            -f32::INFINITY,
            f32::MAX,
            -0.0,
            1e-40,
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x7f80_0001),
        ]);
        for len in [0usize, 1, 15, 16, 17, 33, xs.len()] {
            let mut a = vec![0xdead_beefu32; len.div_ceil(2) + 20];
            let mut b = a.clone();
            convert_row(&mut a, &xs[..len]);
            // SAFETY: AVX-512F/BW checked above.
            unsafe { convert_row_avx512(&mut b, &xs[..len]) };
            assert_eq!(a, b, "len {len}");
        }
    }

    #[test]
    fn packing_and_activation_rounding_used() {
        // Operands that are not bf16-representable: the result must equal the
        // product of the rounded values, not of the f32 values.
        let x = [1.0 + 3.0 / 1024.0, 0.0, 1.0];
        let w = [1.0 + 1.0 / 512.0 + 1.0 / 1024.0, 5.0, 0.0];
        let packed = PackedBf16::pack(&w, 1, 3);
        for kernel in kernels() {
            let mut y = [0f32];
            matmul_bf16_with(kernel, &mut y, 1, &x, 3, 1, &packed, false);
            let want = bf16_to_f32(f32_to_bf16(x[0])) * bf16_to_f32(f32_to_bf16(w[0]));
            assert_eq!(y[0], want, "{kernel:?}");
            assert_ne!(y[0], x[0] * w[0]);
        }
    }

    #[test]
    fn error_vs_exact_f32_is_small() {
        let mut rng = Rng(2024);
        let (rows, inp, out) = (64, 768, 96);
        let x = rng.vec(rows * inp);
        let w = rng.vec(out * inp);
        let packed = PackedBf16::pack(&w, out, inp);
        let mut y = vec![0f32; rows * out];
        matmul_bf16(&mut y, out, &x, inp, rows, &packed, false);
        let (mut num, mut den) = (0f64, 0f64);
        for r in 0..rows {
            for o in 0..out {
                let e: f64 = (0..inp)
                    .map(|k| x[r * inp + k] as f64 * w[o * inp + k] as f64)
                    .sum();
                num += (y[r * out + o] as f64 - e).powi(2);
                den += e * e;
            }
        }
        let rel = (num / den).sqrt();
        assert!(rel < 1e-2, "relative L2 error {rel}");
        assert!(
            rel > 1e-5,
            "suspiciously exact: bf16 rounding not applied? {rel}"
        );
    }

    #[test]
    #[should_panic(expected = "x too short")]
    fn short_x_panics() {
        let p = PackedBf16::pack(&[0.0; 6], 2, 3);
        let mut d = [0f32; 4];
        matmul_bf16(&mut d, 2, &[0.0; 5], 3, 2, &p, false);
    }

    #[test]
    #[should_panic(expected = "dst too short")]
    fn short_dst_panics() {
        let p = PackedBf16::pack(&[0.0; 6], 2, 3);
        let mut d = [0f32; 3];
        matmul_bf16(&mut d, 2, &[0.0; 6], 3, 2, &p, false);
    }

    #[test]
    #[should_panic(expected = "x_rs < in_dim")]
    fn bad_stride_panics() {
        let p = PackedBf16::pack(&[0.0; 6], 2, 3);
        let mut d = [0f32; 4];
        matmul_bf16(&mut d, 2, &[0.0; 6], 2, 2, &p, false);
    }

    #[test]
    #[should_panic(expected = "out_dim * in_dim")]
    fn bad_weight_len_panics() {
        PackedBf16::pack(&[0.0; 5], 2, 3);
    }

    #[test]
    fn zero_in_dim_and_zero_rows() {
        let p = PackedBf16::pack(&[], 3, 0);
        let mut d = [1f32; 6];
        matmul_bf16(&mut d, 3, &[], 0, 2, &p, true);
        assert_eq!(d, [1.0; 6]);
        matmul_bf16(&mut d, 3, &[], 0, 2, &p, false);
        assert_eq!(d, [0.0; 6]);
        let p = PackedBf16::pack(&[1.0; 6], 3, 2);
        matmul_bf16(&mut [], 3, &[], 2, 0, &p, false);
    }
}
