//! CPU kernels of the hand-written model ([`super::CpuModel`]), and the one
//! place that chooses which of them run.
//!
//! # Layout
//! - this file: [`Kernels`], the kernels this process uses (the best the CPU
//!   has, capped by the [`ENV_SWITCHES`], read once and validated); the
//!   pointer type parallel tasks share (`SharedMut`); `multiversion!`, the
//!   macro that compiles one function for several instruction sets;
//! - [`elementwise`]: erf GELU, online softmax, LayerNorm and additions, in place;
//! - [`small_f32`]: f32 products of a few rows against the weights as stored;
//! - [`bf16`]: bf16 matmul, a file per instruction set (portable, AVX-512
//!   `VDPBF16PS`, AMX) plus packing and the parallel driver;
//! - [`i8`](mod@i8): int8 matmul, likewise (portable, AVX-512 VNNI, AMX) plus weight
//!   packing, activation quantization and the parallel driver;
//! - [`i16`](mod@i16): 16-bit integer matmul (AVX-512 VNNI `vpdpwssd`, and a
//!   portable kernel) for an int8 model's residual layers where it is fastest;
//! - `amx`: the AMX set-up both precisions share.
//!
//! No kernel reads the environment: every matmul takes its kernel as an
//! argument, and only [`Kernels::get`] looks at the switches.

use std::fmt;
use std::sync::OnceLock;

/// Compiles one function for several instruction sets.
///
/// `multiversion! { VIS mod NAME(ARGS) = BODY; ISA: "features", ... }`
/// defines module `NAME` holding, for each instruction set, an
/// `unsafe fn ISA(ARGS)` that runs `BODY(ARGS)` compiled with those
/// target features (x86-64 only). `BODY` is an `#[inline(always)]` function
/// (a const-generic instance is fine); called directly it is the baseline
/// copy. Callers pick a copy for the kernel they run and vouch that the CPU
/// has its features.
///
/// `multiversion! { VIS fn NAME(ARGS) BLOCK }` defines `NAME` running `BLOCK`
/// compiled for AVX-512 or AVX2+FMA when the CPU has them (checked on each
/// call; std caches the CPUID bits), else for the baseline target: for the
/// element-wise kernels, which no switch caps.
macro_rules! multiversion {
    (
        $(#[$attr:meta])*
        $vis:vis mod $name:ident $args:tt = $body:expr;
        $($isa:ident: $features:literal),+ $(,)?
    ) => {
        $(#[$attr])*
        #[cfg(target_arch = "x86_64")]
        $vis mod $name {
            #[allow(unused_imports)]
            use super::*;
            $(multiversion!(@copy $isa $features $args $body);)+
        }
    };
    (@copy $isa:ident $features:literal ($($arg:ident: $ty:ty),* $(,)?) $body:expr) => {
        #[doc = concat!("Compiled with `", $features, "`.")]
        ///
        /// # Safety
        /// The CPU must have these features; the body's own contract holds as well.
        #[target_feature(enable = $features)]
        #[allow(unused_unsafe)]
        pub(crate) unsafe fn $isa($($arg: $ty),*) {
            unsafe { $body($($arg),*) }
        }
    };
    (
        $(#[$attr:meta])*
        $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block
    ) => {
        $(#[$attr])*
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) { generic($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) { generic($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512dq")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the features were detected above.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the features were detected above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            generic($($arg),*)
        }
    };
}

mod amx;
pub mod bf16;
pub mod elementwise;
pub mod i16;
pub mod i8;
pub mod peak;
pub mod small_f32;
pub(crate) mod stored;

pub use bf16::{Bf16Kernel, PackedBf16};
pub use elementwise::{add_into, bias_gelu, layer_norm, softmax_tile};
pub use i16::{I16Kernel, PackedI16, QuantRows16};
pub use i8::{I8Kernel, PackedI8, QuantRows};

/// 64-byte aligned storage unit (keeps packed panels and activation rows cache-line aligned, as AMX tile
/// loads and AVX-512 loads want: with `Vec`'s 16-byte alignment every 64-byte row
/// would straddle two cache lines).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct A64([u8; 64]);

/// A growable, 64-byte aligned byte buffer, or a read-only view of 64-byte
/// aligned bytes in a mapped file (packed weights read from the
/// prepared-weights cache: used in place, see [`stored::Source`]).
#[derive(Default, Clone)]
pub(crate) struct AlignedBytes {
    buf: Vec<A64>,
    len: usize,
    /// The mapped file and the offset of these bytes in it; `buf` is then empty.
    mapped: Option<(std::sync::Arc<memmap2::Mmap>, usize)>,
}

impl fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlignedBytes")
            .field("len", &self.len)
            .field("mapped", &self.mapped.is_some())
            .finish()
    }
}

impl AlignedBytes {
    /// The `len` bytes at `offset` of `map`, in place.
    ///
    /// Panics unless they lie in the map and start 64-byte aligned.
    pub(crate) fn mapped(map: std::sync::Arc<memmap2::Mmap>, offset: usize, len: usize) -> Self {
        assert!(offset.checked_add(len).is_some_and(|end| end <= map.len()));
        assert!((map.as_ptr() as usize + offset).is_multiple_of(64));
        Self {
            buf: Vec::new(),
            len,
            mapped: Some((map, offset)),
        }
    }

    /// Whether the bytes are a view of a mapped file.
    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        self.mapped.is_some()
    }

    /// Makes a mapped view an owned copy (before any write).
    fn own(&mut self) {
        if self.mapped.is_some() {
            let mut owned = Self::default();
            owned.resize(self.len);
            owned.as_mut_slice().copy_from_slice(self.as_slice());
            *self = owned;
        }
    }

    /// Resizes to `len` bytes, all set to zero.
    pub(crate) fn reset_zeroed(&mut self, len: usize) {
        self.mapped = None;
        let units = len.div_ceil(64);
        self.buf.clear();
        self.buf.resize(units, A64([0; 64]));
        self.len = len;
    }

    /// Resizes to `len` bytes; contents unspecified (but initialized).
    pub(crate) fn resize(&mut self, len: usize) {
        self.own();
        let units = len.div_ceil(64);
        if self.buf.len() < units {
            self.buf.resize(units, A64([0; 64]));
        }
        self.len = len;
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        match &self.mapped {
            // SAFETY: `mapped` checked that the bytes lie in the map, which
            // lives as long as `self` (read-only; the cache replaces entries
            // by renaming, never in place).
            Some((map, offset)) => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*offset), self.len)
            },
            // SAFETY: `A64` is `repr(C)` plain bytes; `len <= 64 * buf.len()`.
            None => unsafe { std::slice::from_raw_parts(self.buf.as_ptr() as *const u8, self.len) },
        }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.own();
        // SAFETY: as above, unique borrow.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut u8, self.len) }
    }

    /// The bytes as `u32`s (`len` must be a multiple of 4).
    pub(crate) fn as_u32(&self) -> &[u32] {
        debug_assert!(self.len.is_multiple_of(4));
        let bytes = self.as_slice();
        // SAFETY: both kinds of storage are 64-byte aligned, which covers
        // u32's; `len / 4` whole u32s lie in them.
        unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const u32, self.len / 4) }
    }

    /// The bytes as mutable `u32`s (`len` must be a multiple of 4).
    pub(crate) fn as_u32_mut(&mut self) -> &mut [u32] {
        debug_assert!(self.len.is_multiple_of(4));
        self.own();
        // SAFETY: as above, unique borrow.
        unsafe { std::slice::from_raw_parts_mut(self.buf.as_mut_ptr() as *mut u32, self.len / 4) }
    }
}

/// What a product does to each part of its output as soon as a parallel task
/// has finished it, while it is still in that core's cache: `post(segment,
/// first column)` on every row segment `dst[r][c0..c1]` of the task. For
/// GELU after the FFN's first layer: a separate pass would read and write the
/// whole (tokens × 4096) output from memory once more.
pub type RowPost<'a> = &'a (dyn Fn(&mut [f32], usize) + Sync);

/// Runs `post` on rows `r0..r1` × columns `c0..c1` of `dst` (row stride `dst_rs`).
///
/// # Safety
/// Those elements lie in `dst`'s buffer, and no other thread reads or writes them now.
pub(crate) unsafe fn post_block(
    post: RowPost,
    dst: SharedMut,
    dst_rs: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
) {
    for r in r0..r1 {
        // SAFETY: as this function's contract.
        let seg = unsafe { std::slice::from_raw_parts_mut(dst.0.add(r * dst_rs + c0), c1 - c0) };
        post(seg, c0);
    }
}

/// Prefetches the `len` floats of `x` from `at` on, one request per cache
/// line (nothing where they pass its end). For rows that lie a stride apart
/// which the hardware prefetchers do not follow: attention's Q, K and V are
/// 64 floats out of each 3H-float row, so each row was a cache miss in turn.
#[inline(always)]
pub(crate) fn prefetch_floats(x: &[f32], at: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if at + len <= x.len() {
        for line in (at..at + len).step_by(16) {
            // SAFETY: prefetching never faults, and the address is in `x`.
            unsafe {
                use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                _mm_prefetch::<_MM_HINT_T0>(x.as_ptr().add(line).cast());
            }
        }
    }
}

/// Runs `block((r0, r1), (c0, c1))` on every task of a grid over `rows` ×
/// `cols` outputs: tasks of `task.0` rows × `task.1` columns, halved (rows
/// first, while above `min.0`; then columns, while above `min.1`) until there
/// are three tasks per thread, so both threads stay busy to the end. In
/// parallel on the caller's rayon pool when `parallel`; else in order on
/// this thread, at full task size. The int8 and int16 matmul drivers' loop.
pub(crate) fn for_each_block(
    (rows, cols): (usize, usize),
    task: (usize, usize),
    min: (usize, usize),
    parallel: bool,
    block: impl Fn((usize, usize), (usize, usize)) + Sync,
) {
    use rayon::prelude::*;
    let (mut mc, mut nc) = task;
    let threads = rayon::current_num_threads();
    if parallel {
        while rows.div_ceil(mc) * cols.div_ceil(nc) < 3 * threads {
            if mc > min.0 {
                mc /= 2;
            } else if nc > min.1 {
                nc /= 2;
            } else {
                break;
            }
        }
    }
    let col_blocks = cols.div_ceil(nc);
    let tasks = rows.div_ceil(mc) * col_blocks;
    let one = |t: usize| {
        let (r0, c0) = ((t / col_blocks) * mc, (t % col_blocks) * nc);
        block((r0, (r0 + mc).min(rows)), (c0, (c0 + nc).min(cols)));
    };
    if parallel && tasks > 1 {
        (0..tasks).into_par_iter().for_each(one);
    } else {
        (0..tasks).for_each(one);
    }
}

/// A raw pointer that parallel tasks writing disjoint parts of one buffer
/// may share.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut(pub(crate) *mut f32);
// SAFETY: every user has each task write a disjoint set of elements, and no
// copy outlives the `&mut [f32]` it was taken from (the attention and the
// small-f32, bf16 and int8 matmul drivers).
unsafe impl Send for SharedMut {}
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// A method, so closures capture the whole `Send` wrapper, not the field.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// The kernels this process uses: the best the CPU has, capped by the env switches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kernels {
    /// The int8 matmul kernel.
    pub i8: I8Kernel,
    /// The bf16 matmul kernel.
    pub bf16: Bf16Kernel,
    /// Whether f32 products of few rows may take [`small_f32`] (AVX-512 CPUs,
    /// unless `RERANK_SMALL_F32=0`).
    pub small_f32: bool,
}

/// `RERANK_I8_KERNEL`'s names, fastest first (also those this target lacks).
const I8_NAMES: [&str; 4] = ["amx", "vnni", "avx2", "portable"];
/// `RERANK_BF16_KERNEL`'s names, fastest first.
const BF16_NAMES: [&str; 4] = ["amx", "avx512bf16", "avx2", "portable"];

/// The env switches of the kernel choice: (variable, accepted values, meaning),
/// for `--help` and the README.
pub const ENV_SWITCHES: &[(&str, &str, &str)] = &[
    (
        "RERANK_I8_KERNEL",
        "amx, vnni, avx2, portable",
        "caps the int8 kernel: the one named or the next slower one this CPU has; unset: the best",
    ),
    (
        "RERANK_BF16_KERNEL",
        "amx, avx512bf16, avx2, portable",
        "caps the bf16 kernel: the one named or the next slower one this CPU has; unset: the best",
    ),
    (
        "RERANK_SMALL_F32",
        "1, 0 (on, off)",
        "0 sends f32 products of few rows to `gemm` instead of the few-rows kernel (AVX-512 CPUs); unset: on",
    ),
    crate::model::cpu::plan::RESIDUAL_SWITCH,
    crate::model::cpu::plan::ATTENTION_SWITCH,
    crate::model::cpu::prepared::SWITCH,
];

impl Kernels {
    /// Detected once (CPU features + `RERANK_I8_KERNEL` / `RERANK_BF16_KERNEL` /
    /// `RERANK_SMALL_F32`), then cached.
    ///
    /// An unknown value is an [`InvalidOption`](crate::error::Error::InvalidOption)
    /// naming the variable, the value and the values it accepts.
    pub fn get() -> crate::error::Result<Kernels> {
        static CHOSEN: OnceLock<Result<Kernels, String>> = OnceLock::new();
        CHOSEN
            .get_or_init(|| {
                choose(&Cpu::detect(), |var| {
                    std::env::var_os(var).map(|v| v.to_string_lossy().into_owned())
                })
            })
            .clone()
            .map_err(crate::error::Error::InvalidOption)
    }

    /// Whether the int8 kernel is a fast one (AVX-512 VNNI or AMX). The others
    /// give the same results, slower than f32.
    pub fn fast_i8(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            matches!(self.i8, I8Kernel::Vnni | I8Kernel::Amx)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// For `/info`, logs and `rerank bench`, e.g.
/// `int8=vnni bf16=avx512bf16 small-f32=avx512` (or `small-f32=off`).
impl fmt::Display for Kernels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "int8={} bf16={} small-f32={}",
            self.i8.name(),
            self.bf16.name(),
            if self.small_f32 { "avx512" } else { "off" }
        )
    }
}

/// The kernels a CPU can run, as [`choose`] needs them.
#[derive(Debug, Clone)]
struct Cpu {
    i8: Vec<I8Kernel>,
    bf16: Vec<Bf16Kernel>,
    small_f32: bool,
}

impl Cpu {
    /// This CPU (for AMX this also requests the tile permission from the OS).
    fn detect() -> Cpu {
        Cpu {
            i8: I8Kernel::ALL
                .iter()
                .copied()
                .filter(|k| k.is_available())
                .collect(),
            bf16: Bf16Kernel::ALL
                .iter()
                .copied()
                .filter(|k| k.is_available())
                .collect(),
            small_f32: small_f32::available(),
        }
    }
}

/// The kernels for `cpu` under the switches `env` returns (`None`: unset);
/// the error is the message for the first switch with an unknown value.
fn choose(cpu: &Cpu, env: impl Fn(&str) -> Option<String>) -> Result<Kernels, String> {
    let var = "RERANK_I8_KERNEL";
    let i8 = capped(var, env(var), &I8_NAMES, &cpu.i8, I8Kernel::name)?;
    let var = "RERANK_BF16_KERNEL";
    let bf16 = capped(var, env(var), &BF16_NAMES, &cpu.bf16, Bf16Kernel::name)?;
    let var = "RERANK_SMALL_F32";
    let value = env(var);
    let on = match value
        .as_deref()
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("" | "1" | "on") => true,
        Some("0" | "off") => false,
        Some(_) => {
            return Err(format!(
            "{var}={:?} is not a switch value; use 1 or on (the default), 0 or off, or unset it",
            value.unwrap_or_default()
        ))
        }
    };
    Ok(Kernels {
        i8: i8.unwrap_or(I8Kernel::Scalar),
        bf16: bf16.unwrap_or(Bf16Kernel::Portable),
        small_f32: on && cpu.small_f32,
    })
}

/// The fastest kernel of `available` at or below the one `value` names
/// (`names`: every name, fastest first; unset or empty: no cap).
fn capped<K: Copy>(
    var: &str,
    value: Option<String>,
    names: &[&str],
    available: &[K],
    name: fn(K) -> &'static str,
) -> Result<Option<K>, String> {
    let cap = match value.as_deref().map(str::trim) {
        None | Some("") => 0,
        Some(v) => names
            .iter()
            .position(|n| n.eq_ignore_ascii_case(v))
            .ok_or_else(|| {
                format!(
                    "{var}={:?} is not a kernel name; use one of {} (it caps the choice: \
                     kernels this CPU lacks are skipped), or unset it",
                    value.as_deref().unwrap_or_default(),
                    names.join(", ")
                )
            })?,
    };
    Ok(names[cap..]
        .iter()
        .find_map(|n| available.iter().copied().find(|&k| name(k) == *n)))
}

/// Deterministic pseudo-random values for the kernel tests (xorshift64*).
#[cfg(test)]
pub(crate) struct Rng(pub(crate) u64);

#[cfg(test)]
impl Rng {
    /// Uniform in [-1, 1), on a grid of 2^-23.
    pub(crate) fn uniform(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
        v as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Gaussian-like (a sum of 4 uniforms, variance ≈ 1).
    pub(crate) fn gauss(&mut self) -> f32 {
        (self.uniform() + self.uniform() + self.uniform() + self.uniform()) * 0.866
    }

    /// `n` uniform values.
    pub(crate) fn uniform_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.uniform()).collect()
    }

    /// `n` Gaussian-like values.
    pub(crate) fn gauss_vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.gauss()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{choose, Bf16Kernel, Cpu, I8Kernel, Kernels, BF16_NAMES, ENV_SWITCHES, I8_NAMES};

    /// A CPU with every kernel.
    fn full() -> Cpu {
        Cpu {
            i8: I8Kernel::ALL.to_vec(),
            bf16: Bf16Kernel::ALL.to_vec(),
            small_f32: true,
        }
    }

    /// The choice on `cpu` with the switches `set` (unset otherwise).
    fn with(cpu: &Cpu, set: &[(&str, &str)]) -> Result<Kernels, String> {
        choose(cpu, |var| {
            set.iter()
                .find(|(k, _)| *k == var)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn unset_picks_the_best() {
        let k = with(&full(), &[]).unwrap();
        assert_eq!(k.bf16, Bf16Kernel::Amx);
        assert!(k.small_f32);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(k.i8, I8Kernel::Amx);
        // Empty counts as unset.
        let empty = [
            ("RERANK_I8_KERNEL", " "),
            ("RERANK_BF16_KERNEL", ""),
            ("RERANK_SMALL_F32", ""),
        ];
        assert_eq!(with(&full(), &empty).unwrap(), k);
        // A CPU with nothing but the portable kernels.
        let bare = Cpu {
            i8: vec![I8Kernel::Scalar],
            bf16: vec![Bf16Kernel::Portable],
            small_f32: false,
        };
        let k = with(&bare, &[]).unwrap();
        assert_eq!(
            (k.i8, k.bf16, k.small_f32),
            (I8Kernel::Scalar, Bf16Kernel::Portable, false)
        );
        assert_eq!(k.to_string(), "int8=portable bf16=portable small-f32=off");
    }

    #[test]
    fn unknown_values_are_errors_naming_variable_value_and_choices() {
        for (var, allowed) in [
            ("RERANK_I8_KERNEL", I8_NAMES.join(", ")),
            ("RERANK_BF16_KERNEL", BF16_NAMES.join(", ")),
            ("RERANK_SMALL_F32", "0 or off".to_string()),
        ] {
            for bad in ["bogus", "vnni2", "yes", "avx512"] {
                let err = with(&full(), &[(var, bad)]).unwrap_err();
                assert!(
                    err.starts_with(&format!("{var}=\"{bad}\" is not a")),
                    "{err}"
                );
                assert!(err.contains(&allowed), "{err}");
                assert!(err.ends_with("or unset it"), "{err}");
            }
        }
        let err = with(&full(), &[("RERANK_I8_KERNEL", "bogus")]).unwrap_err();
        assert_eq!(
            err,
            "RERANK_I8_KERNEL=\"bogus\" is not a kernel name; use one of amx, vnni, avx2, \
             portable (it caps the choice: kernels this CPU lacks are skipped), or unset it"
        );
        // Through `Kernels::get`'s error type the message is unchanged.
        let e = crate::error::Error::InvalidOption(err.clone());
        assert!(e.to_string().ends_with(&err));
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn a_cap_picks_the_named_or_the_next_available_kernel() {
        // An AVX2 machine: no VNNI, no AMX, no AVX512-BF16.
        let avx2 = Cpu {
            i8: vec![I8Kernel::Scalar, I8Kernel::Avx2],
            bf16: vec![Bf16Kernel::Portable, Bf16Kernel::Avx2],
            small_f32: false,
        };
        let i8_for = |cpu: &Cpu, v: &str| with(cpu, &[("RERANK_I8_KERNEL", v)]).unwrap().i8;
        let bf16_for = |cpu: &Cpu, v: &str| with(cpu, &[("RERANK_BF16_KERNEL", v)]).unwrap().bf16;
        assert_eq!(i8_for(&avx2, "amx"), I8Kernel::Avx2);
        assert_eq!(i8_for(&avx2, "vnni"), I8Kernel::Avx2);
        assert_eq!(i8_for(&avx2, "avx2"), I8Kernel::Avx2);
        assert_eq!(i8_for(&avx2, "portable"), I8Kernel::Scalar);
        assert_eq!(bf16_for(&avx2, "avx512bf16"), Bf16Kernel::Avx2);
        assert_eq!(bf16_for(&avx2, "portable"), Bf16Kernel::Portable);
        // Case and surrounding blanks do not matter.
        assert_eq!(i8_for(&full(), " VNNI\n"), I8Kernel::Vnni);
        assert_eq!(bf16_for(&full(), "AVX512BF16"), Bf16Kernel::Avx512Bf16);
        // A gap below the cap: AVX512-BF16 but no AVX2 build is skipped to portable.
        let gap = Cpu {
            i8: vec![I8Kernel::Scalar, I8Kernel::Vnni],
            bf16: vec![Bf16Kernel::Portable, Bf16Kernel::Amx],
            small_f32: true,
        };
        assert_eq!(i8_for(&gap, "amx"), I8Kernel::Vnni);
        assert_eq!(i8_for(&gap, "avx2"), I8Kernel::Scalar);
        assert_eq!(bf16_for(&gap, "avx512bf16"), Bf16Kernel::Portable);
        // The caps are independent of each other.
        let k = with(&full(), &[("RERANK_I8_KERNEL", "avx2")]).unwrap();
        assert_eq!((k.i8, k.bf16), (I8Kernel::Avx2, Bf16Kernel::Amx));
        assert_eq!(k.to_string(), "int8=avx2 bf16=amx small-f32=avx512");
        assert!(!k.fast_i8());
        assert!(with(&full(), &[]).unwrap().fast_i8());
    }

    #[test]
    fn small_f32_switch() {
        let small = |cpu: &Cpu, v: &str| with(cpu, &[("RERANK_SMALL_F32", v)]).unwrap().small_f32;
        for (v, want) in [
            ("0", false),
            ("off", false),
            (" OFF ", false),
            ("1", true),
            ("on", true),
        ] {
            assert_eq!(small(&full(), v), want, "{v:?}");
        }
        // Switching it on does not make a CPU without AVX-512 run it.
        let mut cpu = full();
        cpu.small_f32 = false;
        assert!(!small(&cpu, "1"));
    }

    #[test]
    fn switch_table_lists_the_accepted_names() {
        assert_eq!(ENV_SWITCHES[0].1, I8_NAMES.join(", "));
        assert_eq!(ENV_SWITCHES[1].1, BF16_NAMES.join(", "));
        assert_eq!(ENV_SWITCHES[2].0, "RERANK_SMALL_F32");
        // Every kernel's own name is one the switch accepts.
        for k in I8Kernel::ALL {
            assert!(I8_NAMES.contains(&k.name()), "{k:?}");
        }
        for k in Bf16Kernel::ALL {
            assert!(BF16_NAMES.contains(&k.name()), "{k:?}");
        }
    }

    #[test]
    fn this_process_choice_is_available() {
        // Under whatever switches the test run has (CI sets the kernel caps).
        let k = Kernels::get().expect("the test run's RERANK_* switches are valid");
        assert!(k.i8.is_available() && k.bf16.is_available());
        assert_eq!(Kernels::get().unwrap(), k);
    }
}
