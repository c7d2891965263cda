//! bf16 matmul for the encoder's linear layers (`y = x·Wᵀ`; the caller adds the bias).
//!
//! Replaces the f32 `gemm` crate call (`gemm::gemm` on f32 operands) used for the encoder
//! linear layers: the weights are rounded once to bf16 (round to nearest even) and packed
//! ([`PackedBf16`]), the activations are rounded to bf16 on the fly, and all products are
//! accumulated in f32 ([`matmul`]).
//!
//! Kernels ([`Bf16Kernel`]; [`Kernels::get`](super::Kernels::get) picks one per process):
//! * [`Bf16Kernel::Amx`] (`amx.rs`): Intel AMX `TDPBF16PS` (Sapphire Rapids and later, Linux
//!   only; tile permission is requested with `arch_prctl(ARCH_REQ_XCOMP_PERM)`), 32×32
//!   register-tile microkernel written with stable inline `asm!`.
//! * [`Bf16Kernel::Avx512Bf16`] (`avx512.rs`): `VDPBF16PS` (`_mm512_dpbf16_ps`) microkernel,
//!   8 rows × 32 columns = 16 zmm accumulators, broadcast of a 32-bit pair of activations.
//! * [`Bf16Kernel::Avx2`] / [`Bf16Kernel::Portable`] (`portable.rs`): the same rounded
//!   products computed in f32 (auto-vectorized; the AVX2+FMA build is used on e.g. Zen 3).
//!   Because a bf16×bf16 product is exact in f32, every path computes the same products;
//!   only the summation order (and hence the last bits) may differ.
//!
//! Only AMX beats the f32 `gemm` (several times over, on Sapphire Rapids). There
//! `VDPBF16PS zmm` retires at about half the rate of an f32 FMA, so that kernel is a
//! fallback for AVX512-BF16 CPUs without AMX (e.g. Zen 4), and the portable kernel is
//! correct but slower than f32 `gemm`: callers that care about speed keep f32 without AMX.
//!
//! Files: `pack.rs` (weights → [`PackedBf16`], activations → bf16), `driver.rs`
//! ([`matmul`]: checks, blocking, parallel tiles), a file per instruction set.

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod driver;
mod pack;
mod portable;
#[cfg(test)]
mod tests;

pub use driver::{matmul, matmul_one_thread, matmul_then};
pub use pack::PackedBf16;

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

/// Which implementation [`matmul`] runs.
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
    /// Every kernel, fastest first.
    pub const ALL: [Bf16Kernel; 4] = [
        Bf16Kernel::Amx,
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Avx2,
        Bf16Kernel::Portable,
    ];

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

    /// The name `RERANK_BF16_KERNEL` and [`Kernels`](super::Kernels)' display use.
    pub fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Portable => "portable",
            Bf16Kernel::Avx2 => "avx2",
            Bf16Kernel::Avx512Bf16 => "avx512bf16",
            Bf16Kernel::Amx => "amx",
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

/// AMX-TILE + AMX-BF16 usable; the AMX path also converts activations with AVX-512.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn has_amx() -> bool {
    has_avx512bf16() && super::amx::available(super::amx::AmxFeature::Bf16)
}
#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn has_amx() -> bool {
    false
}

/// What every tile of one [`matmul`] call reads and writes.
struct Ctx<'a> {
    kernel: Bf16Kernel,
    /// Packed activations (see `driver.rs`), row stride `a_rs` u32.
    a: &'a [u32],
    a_rs: usize,
    w: &'a PackedBf16,
    rows: usize,
    dst: super::SharedMut,
    dst_rs: usize,
    accumulate: bool,
}

impl Ctx<'_> {
    /// Writes a tile of results `acc` (row stride `acc_rs`) for output rows
    /// `r..r+nr` and columns `c..c+nc`, clipped to the real matrix.
    #[inline(always)]
    fn write_out(&self, acc: &[f32], acc_rs: usize, r: usize, nr: usize, c: usize, nc: usize) {
        let nr = nr.min(self.rows.saturating_sub(r));
        let nc = nc.min(self.w.out_dim.saturating_sub(c));
        for i in 0..nr {
            let src = &acc[i * acc_rs..i * acc_rs + nc];
            // SAFETY: r+i < rows and c+nc <= out_dim <= dst_rs, so the range lies
            // inside the bounds asserted in `matmul`; tiles are disjoint.
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
