//! Register-only peak loops: what one instruction computes per second on
//! this machine when nothing but that instruction runs, on every thread of
//! the pool at once. The yardstick the kernels' GFLOP/s are quoted against
//! (`rerank bench --ceiling`): a matmul's own speed is no ceiling (on a Zen 5
//! the f32 pipeline ran faster than the f32 "ceiling" matmul did).
//!
//! Each loop keeps 12 independent accumulators (4 AMX tiles) in registers,
//! enough to cover the instruction's latency at its issue rate, with
//! operands that never leave registers, so memory plays no part. Figures are
//! f32-equivalent operations, 2 per multiply-add, as the kernels count them.

use std::time::Instant;

/// One instruction's peak on this machine.
#[derive(Debug, Clone, Copy)]
pub struct Peak {
    /// The instruction, e.g. `vpdpbusd zmm`.
    pub instruction: &'static str,
    /// The kernel family it bounds, e.g. `int8 vnni`.
    pub bounds: &'static str,
    /// Operations per second over all threads, in units of 10⁹.
    pub gflops: f64,
}

/// The peaks of the instructions this CPU has (f32 FMA, VNNI, AVX512-BF16,
/// AMX int8 and bf16), each the best of seven runs of about 30 ms on every
/// thread of rayon's pool at once (a shared VM's noise only slows a run).
pub fn peaks() -> Vec<Peak> {
    loops()
        .iter()
        .map(|l| Peak {
            instruction: l.instruction,
            bounds: l.bounds,
            gflops: (0..7).map(|_| l.gflops_once()).fold(0.0, f64::max),
        })
        .collect()
}

/// One instruction's loop, its iteration count scaled to about 30 ms a run.
pub struct PeakLoop {
    /// As [`Peak::instruction`].
    pub instruction: &'static str,
    /// As [`Peak::bounds`].
    pub bounds: &'static str,
    run: unsafe fn(u64),
    ops_per_iteration: f64,
    iterations: u64,
}

/// The loops of the instructions this CPU has, ready to run.
pub fn loops() -> Vec<PeakLoop> {
    #[allow(unused_mut)]
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    for l in x86::LOOPS {
        if (l.available)() {
            let mut this = PeakLoop {
                instruction: l.instruction,
                bounds: l.bounds,
                run: l.run,
                ops_per_iteration: l.ops_per_iteration,
                iterations: 1 << 12,
            };
            while this.time() < 5e-3 && this.iterations < 1 << 40 {
                this.iterations *= 4;
            }
            this.iterations = ((this.iterations as f64) * 3e-2 / this.time().max(1e-6)) as u64;
            this.iterations = this.iterations.max(1);
            out.push(this);
        }
    }
    out
}

impl PeakLoop {
    /// Seconds of one run on every thread at once.
    fn time(&self) -> f64 {
        let start = Instant::now();
        // SAFETY: a `PeakLoop` exists only for instructions `available` found.
        rayon::broadcast(|_| unsafe { (self.run)(self.iterations) });
        start.elapsed().as_secs_f64()
    }

    /// GFLOP/s of one run, over all threads.
    pub fn gflops_once(&self) -> f64 {
        let threads = rayon::current_num_threads() as f64;
        threads * self.iterations as f64 * self.ops_per_iteration / self.time() / 1e9
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;

    /// A peak loop and when it may run.
    pub(super) struct Loop {
        pub instruction: &'static str,
        pub bounds: &'static str,
        pub available: fn() -> bool,
        pub run: unsafe fn(u64),
        /// f32-equivalent operations per iteration (2 per multiply-add).
        pub ops_per_iteration: f64,
    }

    fn avx512() -> bool {
        is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw")
    }

    pub(super) const LOOPS: &[Loop] = &[
        Loop {
            instruction: "vfmadd231ps zmm",
            bounds: "f32",
            available: avx512,
            run: fma,
            // 12 × 16 lanes × 2.
            ops_per_iteration: 384.0,
        },
        Loop {
            instruction: "vfmadd231ps ymm",
            bounds: "f32 (AVX2)",
            available: || !avx512() && is_x86_feature_detected!("fma"),
            run: fma_ymm,
            // 12 × 8 lanes × 2.
            ops_per_iteration: 192.0,
        },
        Loop {
            instruction: "vpdpbusd zmm",
            bounds: "int8 vnni",
            available: || super::super::I8Kernel::Vnni.is_available(),
            run: vnni,
            // 12 × 16 lanes × 4 products × 2.
            ops_per_iteration: 1536.0,
        },
        Loop {
            instruction: "vpdpwssd zmm",
            bounds: "int16 vnni",
            available: || super::super::I8Kernel::Vnni.is_available(),
            run: vnni16,
            // 12 × 16 lanes × 2 products × 2.
            ops_per_iteration: 768.0,
        },
        Loop {
            instruction: "vdpbf16ps zmm",
            bounds: "bf16 avx512bf16",
            available: || super::super::Bf16Kernel::Avx512Bf16.is_available(),
            run: dpbf16,
            // 12 × 16 lanes × 2 products × 2.
            ops_per_iteration: 768.0,
        },
        Loop {
            instruction: "tdpbusd (AMX)",
            bounds: "int8 amx",
            available: || super::super::I8Kernel::Amx.is_available(),
            run: amx_int8,
            // 4 tiles × 16 rows × 16 columns × 64 products × 2.
            ops_per_iteration: 131072.0,
        },
        Loop {
            instruction: "tdpbf16ps (AMX)",
            bounds: "bf16 amx",
            available: || super::super::Bf16Kernel::Amx.is_available(),
            run: amx_bf16,
            // 4 tiles × 16 rows × 16 columns × 32 products × 2.
            ops_per_iteration: 65536.0,
        },
    ];

    /// Twelve copies of one instruction on accumulators 0..11, operands in
    /// registers 30 and 31 (xmm, ymm or zmm by `$reg`), `$n` times.
    macro_rules! twelve {
        ($n:expr, $op:literal, $reg:literal) => {
            asm!(
                concat!("vpxord ", "zmm30, zmm30, zmm30"),
                concat!("vpxord ", "zmm31, zmm31, zmm31"),
                "2:",
                concat!($op, " ", $reg, "0, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "1, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "2, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "3, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "4, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "5, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "6, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "7, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "8, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "9, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "10, ", $reg, "30, ", $reg, "31"),
                concat!($op, " ", $reg, "11, ", $reg, "30, ", $reg, "31"),
                "dec {n}",
                "jnz 2b",
                n = inout(reg) $n => _,
                out("zmm0") _, out("zmm1") _, out("zmm2") _, out("zmm3") _,
                out("zmm4") _, out("zmm5") _, out("zmm6") _, out("zmm7") _,
                out("zmm8") _, out("zmm9") _, out("zmm10") _, out("zmm11") _,
                out("zmm30") _, out("zmm31") _,
                options(nostack, nomem),
            )
        };
    }

    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    unsafe fn fma(n: u64) {
        twelve!(n.max(1), "vfmadd231ps", "zmm");
    }

    /// # Safety
    /// FMA and AVX2 must be available (registers 0..11, 14, 15: no AVX-512).
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma_ymm(n: u64) {
        asm!(
            "vpxor ymm14, ymm14, ymm14",
            "vpxor ymm15, ymm15, ymm15",
            "2:",
            "vfmadd231ps ymm0, ymm14, ymm15",
            "vfmadd231ps ymm1, ymm14, ymm15",
            "vfmadd231ps ymm2, ymm14, ymm15",
            "vfmadd231ps ymm3, ymm14, ymm15",
            "vfmadd231ps ymm4, ymm14, ymm15",
            "vfmadd231ps ymm5, ymm14, ymm15",
            "vfmadd231ps ymm6, ymm14, ymm15",
            "vfmadd231ps ymm7, ymm14, ymm15",
            "vfmadd231ps ymm8, ymm14, ymm15",
            "vfmadd231ps ymm9, ymm14, ymm15",
            "vfmadd231ps ymm10, ymm14, ymm15",
            "vfmadd231ps ymm11, ymm14, ymm15",
            "dec {n}",
            "jnz 2b",
            n = inout(reg) n.max(1) => _,
            out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
            out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm14") _, out("ymm15") _,
            options(nostack, nomem),
        );
    }

    /// # Safety
    /// AVX-512F/BW and AVX512-VNNI must be available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni(n: u64) {
        twelve!(n.max(1), "vpdpbusd", "zmm");
    }

    /// # Safety
    /// AVX-512F/BW and AVX512-VNNI must be available.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni16(n: u64) {
        twelve!(n.max(1), "vpdpwssd", "zmm");
    }

    /// # Safety
    /// AVX-512F/BW and AVX512-BF16 must be available.
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn dpbf16(n: u64) {
        twelve!(n.max(1), "vdpbf16ps", "zmm");
    }

    /// Four independent tile products an iteration, as the kernels' 2 × 2
    /// register block issues them: accumulators tmm0..3, sources tmm4..7.
    macro_rules! amx_loop {
        ($n:expr, $op:literal) => {{
            super::super::amx::load_config();
            asm!(
                "tilezero tmm0", "tilezero tmm1", "tilezero tmm2", "tilezero tmm3",
                "tilezero tmm4", "tilezero tmm5", "tilezero tmm6", "tilezero tmm7",
                "2:",
                concat!($op, " tmm0, tmm4, tmm6"),
                concat!($op, " tmm1, tmm4, tmm7"),
                concat!($op, " tmm2, tmm5, tmm6"),
                concat!($op, " tmm3, tmm5, tmm7"),
                "dec {n}",
                "jnz 2b",
                "tilerelease",
                n = inout(reg) $n => _,
                options(nostack, nomem),
            );
        }};
    }

    /// # Safety
    /// AMX-INT8 must be available (tile permission granted).
    unsafe fn amx_int8(n: u64) {
        amx_loop!(n.max(1), "tdpbusd");
    }

    /// # Safety
    /// AMX-BF16 must be available (tile permission granted).
    unsafe fn amx_bf16(n: u64) {
        amx_loop!(n.max(1), "tdpbf16ps");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every loop this CPU has runs (the AMX ones configure and release
    /// their tiles; a wrong instruction would be SIGILL) and yields a finite,
    /// positive figure. Speeds themselves are a benchmark's business.
    #[test]
    fn every_peak_loop_runs() {
        let peaks = peaks();
        for p in &peaks {
            eprintln!("{}: {:.0} GFLOP/s", p.instruction, p.gflops);
            assert!(p.gflops.is_finite() && p.gflops > 0.0, "{p:?}");
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") {
            assert!(!peaks.is_empty(), "an AVX2 CPU has an f32 FMA loop");
        }
    }
}
