//! Intel AMX set-up shared by the bf16 and int8 kernels: feature detection and
//! the Linux permission to use the tile registers (once per feature, cached),
//! and the tile configuration both kernels use.

use std::sync::OnceLock;

/// Which AMX compute extension a kernel needs (its bit in CPUID.(EAX=7,ECX=0):EDX).
#[derive(Clone, Copy)]
pub(crate) enum AmxFeature {
    Bf16 = 22,
    Int8 = 25,
}

/// Whether AMX-TILE and `feature` are usable here: detected, and permitted by
/// the OS, on the first call for each feature; cached after.
pub(crate) fn available(feature: AmxFeature) -> bool {
    static BF16: OnceLock<bool> = OnceLock::new();
    static INT8: OnceLock<bool> = OnceLock::new();
    let cached = match feature {
        AmxFeature::Bf16 => &BF16,
        AmxFeature::Int8 => &INT8,
    };
    *cached.get_or_init(|| detect_and_enable(feature))
}

/// Checks CPUID / XCR0 for AMX-TILE and `feature`, and asks Linux for
/// permission to use the tile data state (`arch_prctl(ARCH_REQ_XCOMP_PERM,
/// XFEATURE_XTILEDATA)`; the permission is per process and granting it twice
/// is harmless). False on other systems.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect_and_enable(feature: AmxFeature) -> bool {
    use std::arch::asm;
    use std::arch::x86_64::{__cpuid_count, _xgetbv};
    let l0 = __cpuid_count(0, 0);
    if l0.eax < 7 {
        return false;
    }
    let l7 = __cpuid_count(7, 0);
    let compute = (l7.edx >> feature as u32) & 1 == 1;
    let amx_tile = (l7.edx >> 24) & 1 == 1;
    let osxsave = (__cpuid_count(1, 0).ecx >> 27) & 1 == 1;
    if !(compute && amx_tile && osxsave) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled.
    let xcr0 = unsafe { _xgetbv(0) };
    // XTILECFG (bit 17) and XTILEDATA (bit 18) enabled by the OS.
    if xcr0 & (0b11 << 17) != (0b11 << 17) {
        return false;
    }
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: plain Linux syscall with integer arguments; rcx/r11 are clobbered.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect_and_enable(_feature: AmxFeature) -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
#[repr(C, align(64))]
struct TileCfg([u8; 64]);

/// Loads palette 1 with tmm0..tmm7 all 16 rows × 64 bytes (what both kernels use).
///
/// # Safety
/// AMX must be [`available`] on this machine.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn load_config() {
    let mut cfg = TileCfg([0; 64]);
    cfg.0[0] = 1;
    for t in 0..8 {
        cfg.0[16 + 2 * t] = 64;
        cfg.0[48 + t] = 16;
    }
    std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
}
