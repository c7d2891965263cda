//! Element-wise CPU kernels for the f32 fast path: erf GELU, online softmax
//! and LayerNorm, fused and in place.
//!
//! They replace candle's `gelu_erf`, `softmax_last_dim`, `layer_norm` and the
//! separate bias/residual additions, which run single-threaded (`unary_map`,
//! `binary_map`), call scalar `erf`/`exp` per element and allocate a new
//! tensor per step. Here each kernel is one pass over memory, written as
//! branch-free loops over fixed-width lanes that the compiler vectorizes, and
//! compiled by `multiversion!` for the baseline target and with AVX-512 (or
//! AVX2+FMA), picked at run time by the CPU's features.

/// Lanes per accumulator array: one AVX-512 register of f32.
const LANES: usize = 16;

/// exp(x) for x ≤ 0 (softmax inputs after subtracting the row max), about
/// 2 ulp: 2^n · p(r) with n = round(x·log2 e) and a degree-6 polynomial.
///
/// Written with `mul_add` throughout: every caller is compiled with FMA
/// (`multiversion!`'s AVX2 and AVX-512 copies; aarch64 has it natively), and
/// Rust never fuses `a * b + c` by itself, so the plain form cost twice the
/// instructions (softmax was 8 % of an int8 model's time on 512-token pairs).
/// The baseline x86 copy, for CPUs without AVX2, calls libm's `fmaf`: slower,
/// same bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = x.max(-87.0);
    // Round to nearest by the 1.5·2^23 trick: branch-free and vectorizable.
    const MAGIC: f32 = 12582912.0;
    let t = x.mul_add(std::f32::consts::LOG2_E, MAGIC);
    let n = t - MAGIC;
    // r = x - n·ln2, in two parts for precision (Cody–Waite).
    let r = (-n).mul_add(1.428_606_8e-6, (-n).mul_add(0.693_145_75, x));
    let mut p = 0.001_388_89f32;
    for c in [0.008_333_452, 0.041_666_83, 0.166_666_67, 0.5, 1.0, 1.0] {
        p = p.mul_add(r, c);
    }
    // 2^n from t's bits: its low mantissa bits hold n (t = 1.5·2^23 + n), so
    // adding the exponent bias and shifting into the exponent field builds
    // 2^n with integer ops only (x ≥ -87 keeps n + 127 in 1..=127). Replaces
    // `n as i32`, whose saturating conversion LLVM does not vectorize: it
    // made this loop scalar and softmax 30 % of a 4096-token pair's time.
    let scale = f32::from_bits(t.to_bits().wrapping_add(127) << 23);
    p * scale
}

/// erf(x) as a rational function (the float approximation used by Eigen and
/// XLA), within a few ulp on the whole line. `mul_add` as in
/// [`exp_nonpositive`].
#[inline(always)]
fn erf(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    for c in [
        2.770_681_4e-8,
        -2.101_024e-6,
        -5.692_506_4e-5,
        -7.349_906_3e-4,
        -2.954_6e-3,
        -1.609_603_3e-2,
    ] {
        p = p.mul_add(x2, c);
    }
    let mut q = -1.456_607_2e-5_f32;
    for c in [
        -2.133_740_6e-4,
        -1.682_827e-3,
        -7.373_329_4e-3,
        -1.426_474e-2,
    ] {
        q = q.mul_add(x2, c);
    }
    x * p / q
}

multiversion!(
    /// `row = GELU(row + bias)`, the exact erf form.
    pub fn bias_gelu(row: &mut [f32], bias: &[f32]) {
        // GELU(x + b) with GELU(x) = x/2 · (1 + erf(x/√2)), the exact form of
        // `ACT2FN["gelu"]`. Adding the bias here spares the matmul a prefilled
        // destination: one pass over the (tokens × intermediate) buffer less.
        for (x, &b) in row.iter_mut().zip(bias) {
            let v = *x + b;
            *x = 0.5 * v * (1.0 + erf(v * std::f32::consts::FRAC_1_SQRT_2));
        }
    }
);

multiversion!(
    /// One key block of an online softmax over `row`, in place (see the body).
    pub fn softmax_tile(row: &mut [f32], state: &mut [f32]) {
        // One key block of an online softmax. state = [running max, running
        // sum, correction]: exponentiates the row against the new max, rescales
        // the sum, and leaves in state[2] the factor exp(old max - new max) by
        // which what earlier blocks produced must be multiplied.
        let mut maxes = [f32::NEG_INFINITY; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (m, &v) in maxes.iter_mut().zip(c) {
                *m = m.max(v);
            }
        }
        let mut max = chunks.remainder().iter().fold(state[0], |a, &b| a.max(b));
        max = maxes.iter().fold(max, |a, &b| a.max(b));
        let mut sums = [0f32; LANES];
        let mut chunks = row.chunks_exact_mut(LANES);
        for c in &mut chunks {
            for (s, v) in sums.iter_mut().zip(c.iter_mut()) {
                *v = exp_nonpositive(*v - max);
                *s += *v;
            }
        }
        let mut sum = 0f32;
        for v in chunks.into_remainder() {
            *v = exp_nonpositive(*v - max);
            sum += *v;
        }
        sum += sums.iter().sum::<f32>();
        let correction = if state[0] == f32::NEG_INFINITY {
            0.0
        } else {
            exp_nonpositive(state[0] - max)
        };
        state[0] = max;
        state[1] = state[1] * correction + sum;
        state[2] = correction;
    }
);

multiversion!(
    /// LayerNorm of `row` in place: `(row - mean) / √(var + eps) · weight + bias`.
    pub fn layer_norm(row: &mut [f32], weight: &[f32], bias: &[f32], eps: f32) {
        let n = row.len() as f32;
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += v;
            }
        }
        let mean = (acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()) / n;
        let mut acc = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for c in &mut chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                let d = v - mean;
                *a += d * d;
            }
        }
        let rem: f32 = chunks
            .remainder()
            .iter()
            .map(|&v| (v - mean) * (v - mean))
            .sum();
        let var = (acc.iter().sum::<f32>() + rem) / n;
        let rstd = 1.0 / (var + eps).sqrt();
        for ((v, &w), &b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * rstd * w + b;
        }
    }
);

multiversion!(
    /// `dst = a + b`, element by element.
    pub fn add_into(dst: &mut [f32], a: &[f32], b: &[f32]) {
        for ((d, &x), &y) in dst.iter_mut().zip(a).zip(b) {
            *d = x + y;
        }
    }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_a_reference_implementation() {
        let mut worst = 0f32;
        for i in -6000..=6000 {
            let x = i as f32 * 1e-3;
            let want = candle_core::cpu::erf::erf_f64(x as f64) as f32;
            worst = worst.max((erf(x) - want).abs());
        }
        assert!(worst < 5e-7, "max |erf error| {worst}");
    }

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f32;
        for i in 0..=90000 {
            let x = -(i as f32) * 1e-3;
            let want = x.exp();
            worst = worst.max(((exp_nonpositive(x) - want) / want.max(1e-30)).abs());
        }
        assert!(worst < 1e-6, "max relative exp error {worst}");
    }

    #[test]
    fn softmax_and_layer_norm_match_plain_formulas() {
        let row: Vec<f32> = (0..37)
            .map(|i| ((i * 7) % 11) as f32 * 0.37 - 2.0)
            .collect();
        // One tile from a fresh state is the plain softmax, up to the sum.
        let mut s = row.clone();
        let mut state = [f32::NEG_INFINITY, 0.0, 0.0];
        softmax_tile(&mut s, &mut state);
        s.iter_mut().for_each(|v| *v /= state[1]);
        let max = row.iter().cloned().fold(f32::MIN, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        for (a, v) in s.iter().zip(&row) {
            assert!((a - (v - max).exp() / sum).abs() < 1e-6);
        }
        let w: Vec<f32> = (0..37).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..37).map(|i| i as f32 * -0.02).collect();
        let mut l = row.clone();
        layer_norm(&mut l, &w, &b, 1e-5);
        let mean = row.iter().sum::<f32>() / 37.0;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / 37.0;
        for i in 0..37 {
            let want = (row[i] - mean) / (var + 1e-5).sqrt() * w[i] + b[i];
            assert!((l[i] - want).abs() < 1e-5, "{i}: {} vs {want}", l[i]);
        }
        let mut g = vec![-3.0f32, -0.5, 0.0, 0.7, 2.5];
        let b = [0.25f32, -0.5, 1.0, 0.0, -1.5];
        let orig = g.clone();
        bias_gelu(&mut g, &b);
        for ((y, x), bias) in g.iter().zip(orig).zip(b) {
            let x = x + bias;
            let want =
                0.5 * x * (1.0 + candle_core::cpu::erf::erf_f64(x as f64 / 2f64.sqrt()) as f32);
            assert!((y - want).abs() < 1e-6);
        }
    }
}
