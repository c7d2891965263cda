//! Tests of the bf16 matmul: every kernel against an f64 reference on the
//! bf16-rounded operands, and against each other.

use super::{bf16_to_f32, f32_to_bf16, matmul, Bf16Kernel, PackedBf16};
use crate::model::kernels::{Kernels, Rng};

/// The kernel this process uses.
fn best() -> Bf16Kernel {
    Kernels::get().unwrap().bf16
}

/// Every kernel this CPU can run.
fn kernels() -> Vec<Bf16Kernel> {
    Bf16Kernel::ALL
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
    let x = rng.uniform_vec(rows * x_rs);
    let w = rng.uniform_vec(out * inp);
    let packed = PackedBf16::pack(&w, out, inp);
    assert_eq!((packed.out_dim(), packed.in_dim()), (out, inp));
    let init = rng.uniform_vec(rows * d_rs);
    let mut dst = init.clone();
    matmul(kernel, &mut dst, d_rs, &x, x_rs, rows, &packed, accumulate);
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
    let x = rng.uniform_vec(rows * inp);
    let w = rng.uniform_vec(out * inp);
    let packed = PackedBf16::pack(&w, out, inp);
    let mut base = vec![0f32; rows * out];
    matmul(
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
        matmul(kernel, &mut got, out, &x, inp, rows, &packed, false);
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
        matmul(
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

#[test]
fn packing_and_activation_rounding_used() {
    // Operands that are not bf16-representable: the result must equal the
    // product of the rounded values, not of the f32 values.
    let x = [1.0 + 3.0 / 1024.0, 0.0, 1.0];
    let w = [1.0 + 1.0 / 512.0 + 1.0 / 1024.0, 5.0, 0.0];
    let packed = PackedBf16::pack(&w, 1, 3);
    for kernel in kernels() {
        let mut y = [0f32];
        matmul(kernel, &mut y, 1, &x, 3, 1, &packed, false);
        let want = bf16_to_f32(f32_to_bf16(x[0])) * bf16_to_f32(f32_to_bf16(w[0]));
        assert_eq!(y[0], want, "{kernel:?}");
        assert_ne!(y[0], x[0] * w[0]);
    }
}

#[test]
fn error_vs_exact_f32_is_small() {
    let mut rng = Rng(2024);
    let (rows, inp, out) = (64, 768, 96);
    let x = rng.uniform_vec(rows * inp);
    let w = rng.uniform_vec(out * inp);
    let packed = PackedBf16::pack(&w, out, inp);
    let mut y = vec![0f32; rows * out];
    matmul(best(), &mut y, out, &x, inp, rows, &packed, false);
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
    matmul(best(), &mut d, 2, &[0.0; 5], 3, 2, &p, false);
}

#[test]
#[should_panic(expected = "dst too short")]
fn short_dst_panics() {
    let p = PackedBf16::pack(&[0.0; 6], 2, 3);
    let mut d = [0f32; 3];
    matmul(best(), &mut d, 2, &[0.0; 6], 3, 2, &p, false);
}

#[test]
#[should_panic(expected = "x_rs < in_dim")]
fn bad_stride_panics() {
    let p = PackedBf16::pack(&[0.0; 6], 2, 3);
    let mut d = [0f32; 4];
    matmul(best(), &mut d, 2, &[0.0; 6], 2, 2, &p, false);
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
    matmul(best(), &mut d, 3, &[], 0, 2, &p, true);
    assert_eq!(d, [1.0; 6]);
    matmul(best(), &mut d, 3, &[], 0, 2, &p, false);
    assert_eq!(d, [0.0; 6]);
    let p = PackedBf16::pack(&[1.0; 6], 3, 2);
    matmul(best(), &mut [], 3, &[], 2, 0, &p, false);
}
