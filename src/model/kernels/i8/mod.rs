//! Int8 matmul for the encoder's linear layers (`y = x·Wᵀ`; the caller adds the bias).
//!
//! Replaces the f32 `gemm` crate call (`gemm::gemm`) used for the encoder linear layers
//! (attention Q/K/V/output projections and the two feed-forward layers) with:
//!
//! * weights quantized once, symmetric int8 per output channel ([`PackedI8`], `pack.rs`),
//!   packed in the AVX-512 VNNI layout (per block of 16 output channels, groups of 4
//!   consecutive `k`, 64 bytes per zmm register);
//! * activations quantized per row, asymmetric u8 with a zero point ([`QuantRows`],
//!   [`quantize_rows`], `quantize.rs`; packed in panels of 8 rows so the kernel reads one
//!   stream; quantize once and reuse for several matmuls with the same input, e.g. Q/K/V);
//! * exact i32 accumulation ([`matmul`], `driver.rs`) and a per-element f32 epilogue
//!   `sx[r] * sw[o] * (acc - zx[r] * wsum[o])`.
//!
//! Kernels ([`I8Kernel`]; [`Kernels::get`](super::Kernels::get) picks one per process), a
//! file each:
//! * `amx.rs`: Intel AMX-INT8 (`tdpbusd` u8 × i8 → i32; Sapphire Rapids and later, Linux:
//!   CPUID AMX-TILE/AMX-INT8, XCR0 bits 17/18 and `arch_prctl(ARCH_REQ_XCOMP_PERM)`),
//!   written with stable inline `asm!`: 32 × 32 register tiles in tmm0..3 over the full k
//!   depth, A tiles tmm4/5 (16 rows × 64 k, from the row-major AMX activation layout of
//!   [`QuantRows`]), B tiles tmm6/7 (16 consecutive 64-byte groups of the VNNI weight
//!   layout, which is zero-padded to a multiple of 64 k for this); the i32 tiles are stored
//!   to a small buffer and the AVX-512 epilogue (same expression) adds them to `dst`;
//! * `avx512.rs`: AVX-512 VNNI micro-kernel (`vpdpbusd` u8 × i8, register tile 8 rows × 32
//!   columns = 16 zmm accumulators, software prefetch of the weight stream; tasks of
//!   256 × 256 outputs keep the weight micro-panel in L1/L2);
//! * `portable.rs`: portable fallback (plain Rust written to auto-vectorize; also compiled
//!   with AVX2 enabled and used on AVX2-only CPUs such as Zen 3).
//!
//! Accumulation is exact integer arithmetic and every path evaluates the identical f32
//! epilogue expression (no FMA), so all paths give bit-identical results (tested), also for
//! any rayon pool size.
//!
//! On Sapphire Rapids AMX runs about twice VNNI's rate, and either is several times the
//! f32 `gemm`'s, quantization included; with k = 1024 AMX is limited by the per-output
//! epilogue and the f32 `dst` traffic rather than by `tdpbusd`. The portable path, even
//! built for AVX2, is slower than f32 `gemm` ([`Kernels::fast_i8`](super::Kernels::fast_i8)
//! tells callers which case they are in).

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod driver;
mod pack;
mod portable;
mod quantize;
#[cfg(test)]
mod tests;

pub use driver::{matmul, matmul_then};
pub(super) use pack::abs_max;
pub use pack::PackedI8;
pub use quantize::{quantize_rows, quantize_rows_scaled, QuantRows};

/// Rows per register tile of the micro-kernel (and per panel of the activation layout).
const MR: usize = 8;
/// 16-column blocks (zmm registers) per register tile of the micro-kernel.
const NB: usize = 2;
/// 4-wide k groups per AMX tile step (64 k: one 16 × 64-byte B tile). Weight blocks are
/// zero-padded to a multiple of this many groups.
const AMX_KG: usize = 16;
/// Rows per activation unit of the AMX layout (the rows of one A tile).
const AMX_ROWS: usize = 16;

/// Which micro-kernel family [`matmul`] runs (all give bit-identical results).
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
    /// Every kernel this target has, fastest first.
    pub const ALL: &'static [I8Kernel] = &[
        #[cfg(target_arch = "x86_64")]
        I8Kernel::Amx,
        #[cfg(target_arch = "x86_64")]
        I8Kernel::Vnni,
        #[cfg(target_arch = "x86_64")]
        I8Kernel::Avx2,
        I8Kernel::Scalar,
    ];

    /// The name `RERANK_I8_KERNEL` and [`Kernels`](super::Kernels)' display use.
    pub fn name(self) -> &'static str {
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
    has_vnni() && super::amx::available(super::amx::AmxFeature::Int8)
}

/// Arguments of one register tile (raw pointers; validity established by [`matmul`]).
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
