//! Tests of the int8 matmul: every kernel against an f64 reference on the
//! dequantized operands, and bit for bit against each other.

use super::quantize::{quantize_rows_impl, Layout};
use super::{matmul, quantize_rows, I8Kernel, PackedI8, QuantRows};
use crate::model::kernels::{Kernels, Rng};

/// Every kernel this CPU can run (the scalar fallback always).
fn kernels() -> Vec<I8Kernel> {
    I8Kernel::ALL
        .iter()
        .rev()
        .copied()
        .filter(|k| k.is_available())
        .collect()
}

/// The kernel this process uses.
fn best() -> I8Kernel {
    Kernels::get().unwrap().i8
}

/// Quantizes in both layouts and checks that they hold the same values.
fn quantize_both(x: &[f32], x_rs: usize, rows: usize, in_dim: usize) -> [QuantRows; 2] {
    let mut p = QuantRows::default();
    let mut r = QuantRows::default();
    quantize_rows_impl(best(), x, x_rs, rows, in_dim, &[], &mut p, Layout::Panels);
    quantize_rows_impl(best(), x, x_rs, rows, in_dim, &[], &mut r, Layout::Rows);
    assert_eq!((p.layout, r.layout), (Layout::Panels, Layout::Rows));
    for row in 0..rows {
        assert_eq!(p.scale[row].to_bits(), r.scale[row].to_bits());
        assert_eq!(p.zero[row], r.zero[row]);
        for k in 0..in_dim {
            assert_eq!(p.q(row, k), r.q(row, k), "layouts differ at [{row},{k}]");
        }
    }
    [p, r]
}

/// The quantized activations in the layout `kern` reads.
fn for_kernel(qs: &[QuantRows; 2], kern: I8Kernel) -> &QuantRows {
    &qs[(Layout::for_kernel(kern) == Layout::Rows) as usize]
}

/// Checks [`matmul`] against an f64 reference on the dequantized operands, for every
/// available kernel (each on its own activation layout, plus the portable kernel on the
/// AMX layout through the conversion), with and without accumulation, and checks that
/// all kernels agree bit for bit.
fn check(rows: usize, in_dim: usize, out: usize, x_rs: usize, dst_rs: usize, seed: u64) {
    let mut rng = Rng(seed | 1);
    let x = rng.gauss_vec(rows.saturating_sub(1) * x_rs + in_dim);
    let wf = rng.gauss_vec(out * in_dim);
    let w = PackedI8::quantize(&wf, out, in_dim);
    let qs = quantize_both(&x, x_rs, rows, in_dim);
    let q = &qs[0];
    let dlen = if rows == 0 {
        0
    } else {
        (rows - 1) * dst_rs + out
    };
    let init: Vec<f32> = rng.gauss_vec(dlen);
    let xd: Vec<f64> = (0..rows * in_dim)
        .map(|i| {
            let (r, k) = (i / in_dim, i % in_dim);
            let qv = q.q(r, k) as f64;
            q.scale[r] as f64 * (qv - q.zero[r] as f64)
        })
        .collect();
    let wdq: Vec<f64> = (0..out * in_dim)
        .map(|i| {
            let (o, k) = (i / in_dim, i % in_dim);
            w.q(o, k) as f64 * w.scale[o] as f64
        })
        .collect();
    let reference: Vec<f64> = (0..rows * out)
        .map(|i| {
            let (xr, wr) = (&xd[(i / out) * in_dim..], &wdq[(i % out) * in_dim..]);
            xr[..in_dim]
                .iter()
                .zip(&wr[..in_dim])
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect();
    let mut runs: Vec<(I8Kernel, &QuantRows)> = kernels()
        .into_iter()
        .map(|k| (k, for_kernel(&qs, k)))
        .collect();
    runs.push((I8Kernel::Scalar, &qs[1]));
    for acc in [false, true] {
        let mut results = Vec::new();
        for &(kern, q) in &runs {
            let mut dst = init.clone();
            matmul(kern, &mut dst, dst_rs, q, &w, rows, acc);
            for r in 0..rows {
                for o in 0..out {
                    let s = reference[r * out + o];
                    let base = if acc {
                        init[r * dst_rs + o] as f64
                    } else {
                        0.0
                    };
                    let want = base + s;
                    let got = dst[r * dst_rs + o] as f64;
                    let tol = 1e-6 * (s.abs() + base.abs()) + 1e-12;
                    assert!(
                        (got - want).abs() <= tol,
                        "{kern:?} rows {rows} in {in_dim} out {out} acc {acc}: [{r},{o}] got {got} want {want}"
                    );
                }
                // Padding between rows must be untouched.
                for o in out..dst_rs {
                    if r + 1 < rows {
                        assert_eq!(
                            dst[r * dst_rs + o].to_bits(),
                            init[r * dst_rs + o].to_bits()
                        );
                    }
                }
            }
            // Nothing after the last row is written.
            assert!(dst[dlen..]
                .iter()
                .zip(&init[dlen..])
                .all(|(a, b)| a.to_bits() == b.to_bits()));
            results.push((kern, dst));
        }
        for (kern, r) in &results[1..] {
            let same = r
                .iter()
                .zip(&results[0].1)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(
                same,
                "{kern:?} differs from portable: rows {rows} in {in_dim} out {out} acc {acc}"
            );
        }
    }
}

#[test]
fn shapes_vs_reference() {
    let mut seed = 1;
    for &rows in &[0usize, 1, 3, 17, 33, 130] {
        for &in_dim in &[32usize, 37, 64, 1024] {
            for &out in &[1usize, 16, 37, 64, 1024] {
                seed += 1;
                // Skip the largest combination in the full cross product (kept below).
                if rows == 130 && in_dim == 1024 && out == 1024 {
                    continue;
                }
                check(rows, in_dim, out, in_dim, out, seed);
            }
        }
    }
}

#[test]
fn large_shape() {
    check(130, 1024, 1024, 1024, 1024, 99);
}

#[test]
fn strides_and_accumulate() {
    for (i, &(rows, in_dim, out)) in [
        (17, 37, 37),
        (9, 64, 33),
        (130, 100, 300),
        (1, 5, 1),
        (11, 20, 31),
        (9, 3, 47),
        (33, 128, 96),
        (40, 200, 70),
        (3, 0, 5),
    ]
    .iter()
    .enumerate()
    {
        check(rows, in_dim, out, in_dim + 7, out + 5, 1000 + i as u64);
        check(rows, in_dim, out, in_dim + 64, out + 33, 2000 + i as u64);
    }
}

#[test]
fn amx_detected_when_cpu_has_it() {
    // Guards against the AMX tests silently skipping on an AMX machine (the kernel
    // list above only contains the kernels detected as usable).
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") {
        let flags = info.lines().find(|l| l.starts_with("flags")).unwrap_or("");
        let has = |f: &str| flags.split_whitespace().any(|w| w == f);
        // A kernel that refuses the tile permission is a supported setup (the
        // fallbacks run), so this only reports; RERANK_EXPECT_AMX=1 makes it fail.
        if has("amx_tile") && has("amx_int8") && has("avx512_vnni") && !I8Kernel::Amx.is_available()
        {
            eprintln!("warning: cpuinfo lists AMX-INT8 but it could not be enabled");
            assert!(std::env::var_os("RERANK_EXPECT_AMX").is_none());
        }
    }
}

#[test]
fn batch_invariance() {
    // Each row computed on its own (quantized alone, rows = 1) gives the same bits as
    // the whole batch, for every kernel (also through the parallel path).
    let mut rng = Rng(21);
    for &(rows, in_dim, out) in &[(37usize, 64usize, 37usize), (70, 1024, 200), (5, 37, 96)] {
        let x = rng.gauss_vec(rows * in_dim);
        let w = PackedI8::quantize(&rng.gauss_vec(out * in_dim), out, in_dim);
        let init = rng.gauss_vec(rows * out);
        for kern in kernels() {
            let mut q = QuantRows::default();
            quantize_rows(kern, &x, in_dim, rows, in_dim, &mut q);
            for acc in [false, true] {
                let mut all = init.clone();
                matmul(kern, &mut all, out, &q, &w, rows, acc);
                let mut one = init.clone();
                let mut q1 = QuantRows::default();
                for r in 0..rows {
                    quantize_rows(kern, &x[r * in_dim..], in_dim, 1, in_dim, &mut q1);
                    matmul(kern, &mut one[r * out..], out, &q1, &w, 1, acc);
                }
                let same = all
                    .iter()
                    .zip(&one)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{kern:?} not batch invariant: {rows}x{in_dim}x{out}");
            }
        }
    }
}

#[test]
fn bit_identical_large_parallel() {
    // Large enough to go through the rayon path with partial row/column blocks.
    let (rows, in_dim, out) = (200, 300, 530);
    let mut rng = Rng(7);
    let x = rng.gauss_vec(rows * in_dim);
    let w = PackedI8::quantize(&rng.gauss_vec(out * in_dim), out, in_dim);
    let mut q = QuantRows::default();
    quantize_rows(best(), &x, in_dim, rows, in_dim, &mut q);
    let init = rng.gauss_vec(rows * out);
    let mut a = init.clone();
    matmul(best(), &mut a, out, &q, &w, rows, true);
    for kern in kernels() {
        let mut b = init.clone();
        matmul(kern, &mut b, out, &q, &w, rows, true);
        let same = a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(same, "{kern:?} differs from the default kernel");
    }
    // A single-thread pool (serial path) gives the same bits as the parallel path.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let mut c = init.clone();
    pool.install(|| matmul(best(), &mut c, out, &q, &w, rows, true));
    assert!(a.iter().zip(&c).all(|(p, q)| p.to_bits() == q.to_bits()));
}

#[test]
fn quantization_error_small() {
    let (rows, in_dim, out) = (64, 768, 96);
    let mut rng = Rng(42);
    let x = rng.gauss_vec(rows * in_dim);
    let wf: Vec<f32> = rng
        .gauss_vec(out * in_dim)
        .iter()
        .map(|v| v * 0.05)
        .collect();
    let w = PackedI8::quantize(&wf, out, in_dim);
    let mut q = QuantRows::default();
    quantize_rows(best(), &x, in_dim, rows, in_dim, &mut q);
    let mut y = vec![0f32; rows * out];
    matmul(best(), &mut y, out, &q, &w, rows, false);
    let (mut num, mut den) = (0f64, 0f64);
    for r in 0..rows {
        for o in 0..out {
            let mut s = 0f64;
            for k in 0..in_dim {
                s += x[r * in_dim + k] as f64 * wf[o * in_dim + k] as f64;
            }
            num += (y[r * out + o] as f64 - s).powi(2);
            den += s * s;
        }
    }
    let rel = (num / den).sqrt();
    assert!(rel < 2e-2, "relative L2 error {rel}");
    assert!(rel > 0.0);
}

#[test]
fn quantization_details() {
    // Zero is exact, zero rows give zero output, extremes map to 0 / 255.
    let x = [0.0f32, -1.0, 3.0, 0.5, 0.0, 0.0, 0.0, 0.0, 2.0, 2.0];
    let mut q = QuantRows::default();
    quantize_rows(best(), &x, 5, 2, 5, &mut q);
    assert_eq!(q.dequantized(0, 0), 0.0);
    assert_eq!(q.dequantized(1, 0), 0.0);
    assert_eq!(q.q(0, 1), 0);
    assert_eq!(q.q(0, 2), 255);
    assert!((q.dequantized(0, 2) - 3.0).abs() < 0.01);
    assert!((q.dequantized(1, 3) - 2.0).abs() < 1e-6);
    #[rustfmt::skip]
    let wf = [
        0.0, 0.0, 0.0, 0.0, 0.0,
        1.0, -2.0, 0.0, 0.0, 0.0,
        0.5, 0.25, 0.0, 0.0, 1.0,
    ];
    let w = PackedI8::quantize(&wf, 3, 5);
    assert_eq!(w.dequantized(0, 0), 0.0);
    assert_eq!(w.dequantized(1, 1), -2.0);
    assert_eq!(w.q(1, 1), -127);
    assert!(matches!(w.q(1, 0), 63 | 64));
    assert_eq!(w.wsum[1], w.q(1, 0) as i32 - 127);
    let mut y = vec![1.0f32; 6];
    matmul(best(), &mut y, 3, &q, &w, 2, false);
    assert_eq!(&y[3..5], &[0.0, 0.0]);
    assert!((y[5] - 2.0).abs() < 0.02, "{}", y[5]);
    // An all-zero row quantizes to scale 0 and gives exact zeros.
    quantize_rows(best(), &[0.0; 5], 5, 1, 5, &mut q);
    matmul(best(), &mut y, 3, &q, &w, 1, false);
    assert_eq!(&y[..3], &[0.0, 0.0, 0.0]);
}

#[test]
#[should_panic(expected = "dst too short")]
fn dst_bounds_checked() {
    let w = PackedI8::quantize(&[1.0; 8], 2, 4);
    let mut q = QuantRows::default();
    quantize_rows(best(), &[1.0; 12], 4, 3, 4, &mut q);
    let mut y = vec![0f32; 5];
    matmul(best(), &mut y, 2, &q, &w, 3, false);
}

#[test]
#[should_panic(expected = "in_dim mismatch")]
fn in_dim_checked() {
    let w = PackedI8::quantize(&[1.0; 8], 2, 4);
    let mut q = QuantRows::default();
    quantize_rows(best(), &[1.0; 12], 3, 4, 3, &mut q);
    let mut y = vec![0f32; 8];
    matmul(best(), &mut y, 2, &q, &w, 4, false);
}

/// Weight quantization is `round_ties_even(w / scale)` clamped to ±127 (as
/// `torch.round`), NaN quantizes to 0, and every value lands in its packed
/// place, for a row length that is no multiple of 4 or of the 64-k tile.
#[test]
fn weight_quantization_rounds_ties_to_even_and_packs_every_value() {
    let (out, inp) = (19, 70);
    let mut rng = Rng(11);
    let mut w: Vec<f32> = rng.gauss_vec(out * inp);
    // Row 0: max 127, so the scale is 1 and ties are exact: 0.5 → 0,
    // 1.5 → 2, 2.5 → 2, -0.5 → 0, -1.5 → -2, -126.5 → -126.
    let ties = [127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -126.5, f32::NAN];
    w[..ties.len()].copy_from_slice(&ties);
    let packed = PackedI8::quantize(&w, out, inp);
    let expect = [127, 0, 2, 2, 0, -2, -126, 0];
    for (k, &e) in expect.iter().enumerate() {
        assert_eq!(packed.q(0, k), e, "w[0][{k}] = {}", ties[k]);
    }
    for o in 0..out {
        let row = &w[o * inp..(o + 1) * inp];
        let scale = row.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
        assert_eq!(packed.scale[o], scale);
        let mut sum = 0;
        for (k, &v) in row.iter().enumerate() {
            let q = (v * (1.0 / scale)).round_ties_even().clamp(-127.0, 127.0) as i8;
            assert_eq!(packed.q(o, k), q, "w[{o}][{k}]");
            sum += q as i32;
        }
        assert_eq!(packed.wsum[o], sum, "row {o}");
    }
}
