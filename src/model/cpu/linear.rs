//! The CPU model's linear layers (f32 through `gemm` or the few-rows kernel,
//! bf16, int8) and LayerNorm.

use std::io::{self, Read, Write};

use gemm::Parallelism;
use rayon::prelude::*;

use super::weights::{Buf, Tensors};
use crate::error::Result;
use crate::model::checkpoint::{LinearNames, NormNames};
use crate::model::kernels::{self, bf16, i16 as int16, i8 as int8, small_f32, stored, Kernels};
use crate::model::kernels::{I16Kernel, PackedBf16, PackedI16, PackedI8, QuantRows, QuantRows16};
use crate::model::Dtype;

/// `y = x Wᵀ + b` with `W` stored (out × in) as in the checkpoint.
pub(super) struct Linear {
    weight: Buf,
    pub(super) bias: Buf,
    in_dim: usize,
    out_dim: usize,
    /// The weights in the kernel's own format when the layer does not run
    /// in f32 (`weight` is then released).
    packed: Packed,
    /// Whether an f32 product of few rows may take [`small_f32`].
    few_rows_kernel: bool,
    /// The kernels this process chose (see [`Kernels::get`]).
    kernels: Kernels,
    /// Smoothed int8 layers: what each input column is multiplied by as the
    /// activations are quantized (`1 / s_j`, see [`Linear::quantize_best`]).
    smooth: Option<Vec<f32>>,
}

/// Weights converted for a low-precision kernel.
enum Packed {
    F32,
    Bf16(PackedBf16),
    Int8(PackedI8),
    Int16(PackedI16),
}

impl Linear {
    /// An f32 layer on `weight` (out × in) and `bias`, as every layer starts.
    fn f32(weight: Buf, bias: Buf, in_dim: usize, out_dim: usize, kernels: Kernels) -> Self {
        Self {
            weight,
            bias,
            in_dim,
            out_dim,
            packed: Packed::F32,
            few_rows_kernel: true,
            kernels,
            smooth: None,
        }
    }

    pub(super) fn load(t: &Tensors, names: &LinearNames, kernels: Kernels) -> Result<Self> {
        let (in_dim, out_dim) = (names.in_dim, names.out_dim);
        let weight = t.get(&names.weight, &[out_dim, in_dim])?;
        let bias = t.get(&names.bias, &[out_dim])?;
        Ok(Self::f32(weight, bias, in_dim, out_dim, kernels))
    }

    /// A layer from weights in memory (`weight`: out × in), for measurements.
    pub(super) fn from_parts(
        weight: Vec<f32>,
        bias: Vec<f32>,
        in_dim: usize,
        out_dim: usize,
        kernels: Kernels,
    ) -> Self {
        assert_eq!((weight.len(), bias.len()), (in_dim * out_dim, out_dim));
        let (weight, bias) = (Buf::Owned(weight), Buf::Owned(bias));
        Self::f32(weight, bias, in_dim, out_dim, kernels)
    }

    /// Columns of `W` (input features).
    pub(super) fn in_dim(&self) -> usize {
        self.in_dim
    }

    /// Rows of `W` (output features).
    pub(super) fn out_dim(&self) -> usize {
        self.out_dim
    }

    /// Keeps this layer on `gemm` at every row count. For the f32 layers of an
    /// int8 model (CPUs without AMX): their output is quantized next, and the
    /// few-rows kernel's other summation order (last-bit differences) can
    /// flip a quantization step, so a pair would score differently alone and
    /// in a batch (tests/precision.rs catches it with the fallback kernels).
    pub(super) fn gemm_at_any_rows(mut self) -> Self {
        self.few_rows_kernel = false;
        self
    }

    /// Converts the weights for `dtype`'s kernel and releases the f32 ones.
    pub(super) fn pack(mut self, dtype: Dtype) -> Self {
        let w = self.weight.as_slice();
        self.packed = match dtype {
            Dtype::F32 | Dtype::F16 => return self,
            Dtype::Bf16 => Packed::Bf16(PackedBf16::pack(w, self.out_dim, self.in_dim)),
            Dtype::Int8 => Packed::Int8(PackedI8::quantize(w, self.out_dim, self.in_dim)),
        };
        self.weight.release();
        self
    }

    /// Quantizes the weights to 16-bit integers ([`int16`]) and releases the
    /// f32 ones: an int8 model's residual layers where that measures fastest.
    pub(super) fn pack_int16(mut self) -> Self {
        let w = self.weight.as_slice();
        self.packed = Packed::Int16(PackedI16::quantize(w, self.out_dim, self.in_dim));
        self.weight.release();
        self
    }

    /// Quantizes the weights to int8, with or without SmoothQuant's
    /// per-input-channel factors ([`smoothing_factors`] of the calibration
    /// inputs' and the weights' column maxima; see
    /// `CpuModel::quantize_calibrated`), whichever reproduces this f32 layer's
    /// output on `x` (`rows` calibration rows) better. Smoothed, `W[:, j] · s_j`
    /// is quantized and [`Linear::matmul`] quantizes `x[:, j] / s_j`; powers
    /// of two make both scalings exact, so the product changes only where
    /// quantization rounds. Returns whether smoothing won.
    ///
    /// Measured, not assumed: smoothing halves int8's error on real weights,
    /// whose activations have outlier channels, but on random weights (none)
    /// it only moves rounding around and raised the full-size model's error
    /// (rag-50 `<s>` state 1.84e-2 → 2.25e-2).
    pub(super) fn quantize_best(mut self, x: &[f32], rows: usize, exact: &[f32]) -> (Self, bool) {
        let (n, out) = (self.in_dim, self.out_dim);
        assert_eq!(x.len(), rows * n, "calibration inputs of another layer");
        assert_eq!(
            exact.len(),
            rows * out,
            "calibration products of another layer"
        );
        let w = self.weight.as_slice();
        let column_max = |m: &[f32], stride: usize| {
            let mut max = vec![0f32; n];
            for row in m.chunks_exact(stride) {
                for (c, v) in max.iter_mut().zip(row) {
                    *c = c.max(v.abs());
                }
            }
            max
        };
        let s = smoothing_factors(&column_max(x, n), &column_max(w, n));
        let plain = PackedI8::quantize(w, out, n);
        let mut smoothed = false;
        self.packed = if s.iter().all(|&f| f == 1.0) {
            Packed::Int8(plain)
        } else {
            let mut scaled = vec![0f32; w.len()];
            scaled
                .par_chunks_mut(n)
                .zip(w.par_chunks(n))
                .for_each(|(d, row)| {
                    for ((d, v), s) in d.iter_mut().zip(row).zip(&s) {
                        *d = v * s;
                    }
                });
            let candidate = PackedI8::quantize(&scaled, out, n);
            let col: Vec<f32> = s.iter().map(|s| 1.0 / s).collect();
            let error = |packed: &PackedI8, col: Option<&[f32]>| {
                let mut q = QuantRows::default();
                match col {
                    Some(col) => {
                        int8::quantize_rows_scaled(self.kernels.i8, x, n, rows, col, &mut q)
                    }
                    None => int8::quantize_rows(self.kernels.i8, x, n, rows, n, &mut q),
                }
                let mut y = vec![0f32; rows * out];
                int8::matmul(self.kernels.i8, &mut y, out, &q, packed, rows, false);
                y.iter()
                    .zip(exact)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum::<f64>()
            };
            if error(&candidate, Some(&col)) < error(&plain, None) {
                smoothed = true;
                self.smooth = Some(col);
                Packed::Int8(candidate)
            } else {
                Packed::Int8(plain)
            }
        };
        self.weight.release();
        (self, smoothed)
    }

    /// Q, K and V as one (3H × H) layer: one pass over the input instead of
    /// three, which matters when that pass also converts it (bf16, int8).
    pub(super) fn fused(mut parts: Vec<Linear>, dtype: Dtype) -> Self {
        let (in_dim, out_dim) = (parts[0].in_dim, parts.iter().map(|l| l.out_dim).sum());
        let kernels = parts[0].kernels;
        let cat = |parts: &[Linear], f: fn(&Linear) -> &[f32]| {
            let mut all = Vec::with_capacity(parts.iter().map(|l| f(l).len()).sum());
            parts.iter().for_each(|l| all.extend_from_slice(f(l)));
            all
        };
        let weight = Buf::Owned(cat(&parts, |l| l.weight.as_slice()));
        let bias = Buf::Owned(cat(&parts, |l| l.bias.as_slice()));
        parts.iter_mut().for_each(|l| l.weight.release());
        Self::f32(weight, bias, in_dim, out_dim, kernels).pack(dtype)
    }

    /// `dst[r] (+)= x[r] · Wᵀ` for `rows` rows; `dst` has row stride `dst_rs`
    /// and `x` row stride `x_rs`. With `accumulate`, adds to what `dst` holds.
    pub(super) fn matmul(
        &self,
        dst: &mut [f32],
        dst_rs: usize,
        x: &[f32],
        x_rs: usize,
        rows: usize,
        accumulate: bool,
    ) {
        if rows == 0 {
            return;
        }
        assert!(dst.len() >= (rows - 1) * dst_rs + self.out_dim);
        assert!(x.len() >= (rows - 1) * x_rs + self.in_dim);
        match &self.packed {
            Packed::F32 => {}
            Packed::Bf16(w) => {
                let kernel = self.kernels.bf16;
                return bf16::matmul(kernel, dst, dst_rs, x, x_rs, rows, w, accumulate);
            }
            Packed::Int8(w) => {
                return self.with_quantized(x, x_rs, rows, |q| {
                    int8::matmul(self.kernels.i8, dst, dst_rs, q, w, rows, accumulate)
                });
            }
            Packed::Int16(w) => {
                // One buffer per thread, taken out as for int8 (`with_quantized`).
                let mut q = QUANT_ROWS16.take();
                int16::quantize_rows(x, x_rs, rows, self.in_dim, &mut q);
                let kernel = I16Kernel::with(self.kernels.i8);
                int16::matmul(kernel, dst, dst_rs, &q, w, rows, accumulate);
                QUANT_ROWS16.set(q);
                return;
            }
        }
        let w = self.weight.as_slice();
        if self.few_rows_kernel
            && small_f32::pays_off(rows, self.out_dim, self.in_dim)
            && self.kernels.small_f32
        {
            let shape = (self.out_dim, self.in_dim);
            return small_f32::matmul(dst, dst_rs, x, x_rs, rows, w, shape, accumulate);
        }
        // SAFETY: the bounds of all three operands are asserted above; W is
        // read as the (in × out) matrix Wᵀ through its strides.
        unsafe {
            gemm::gemm(
                rows,
                self.out_dim,
                self.in_dim,
                dst.as_mut_ptr(),
                1,
                dst_rs as isize,
                accumulate,
                x.as_ptr(),
                1,
                x_rs as isize,
                w.as_ptr(),
                self.in_dim as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism(rows * self.out_dim * self.in_dim),
            )
        }
    }

    /// Runs `f` on `rows` rows of `x` quantized for this int8 layer (smoothed
    /// if it is). The quantized rows reuse one buffer per thread instead of a
    /// fresh (up to tokens × 4096 bytes) allocation per layer. Taken out, not
    /// borrowed, so a nested call on this thread (rayon work-stealing) gets
    /// its own.
    fn with_quantized(&self, x: &[f32], x_rs: usize, rows: usize, f: impl FnOnce(&QuantRows)) {
        let mut q = QUANT_ROWS.take();
        match &self.smooth {
            Some(col) => int8::quantize_rows_scaled(self.kernels.i8, x, x_rs, rows, col, &mut q),
            None => int8::quantize_rows(self.kernels.i8, x, x_rs, rows, self.in_dim, &mut q),
        }
        f(&q);
        QUANT_ROWS.set(q);
    }

    /// `dst = GELU(x · Wᵀ + b)` for `rows` rows (the FFN's first layer). The
    /// int8 and bf16 kernels add the bias and apply GELU to each part of the
    /// product as soon as its task has made it, while it is in that core's
    /// cache ([`kernels::RowPost`]); f32 in a pass after `gemm`. The same bits
    /// as [`Linear::matmul`] followed by [`kernels::bias_gelu`] on every row.
    pub(super) fn matmul_bias_gelu(
        &self,
        dst: &mut [f32],
        dst_rs: usize,
        x: &[f32],
        x_rs: usize,
        rows: usize,
    ) {
        let (bias, out) = (self.bias.as_slice(), self.out_dim);
        let post = |seg: &mut [f32], c0: usize| kernels::bias_gelu(seg, &bias[c0..c0 + seg.len()]);
        match &self.packed {
            Packed::Bf16(w) if rows > 0 => {
                let kernel = self.kernels.bf16;
                bf16::matmul_then(kernel, dst, dst_rs, x, x_rs, rows, w, false, &post)
            }
            Packed::Int8(w) if rows > 0 => self.with_quantized(x, x_rs, rows, |q| {
                int8::matmul_then(self.kernels.i8, dst, dst_rs, q, w, rows, false, Some(&post))
            }),
            _ => {
                self.matmul(dst, dst_rs, x, x_rs, rows, false);
                dst.par_chunks_mut(dst_rs)
                    .take(rows)
                    .for_each(|row| kernels::bias_gelu(&mut row[..out], bias));
            }
        }
    }

    /// Fills `rows` rows of `dst` (row stride `dst_rs`) with the bias.
    pub(super) fn fill_bias(&self, dst: &mut [f32], dst_rs: usize, rows: usize) {
        let b = self.bias.as_slice();
        dst.par_chunks_mut(dst_rs)
            .take(rows)
            .for_each(|row| row[..self.out_dim].copy_from_slice(b));
    }

    /// Writes this prepared layer for the prepared-weights cache
    /// (`prepared.rs`): its packed weights, bias and smoothing. An f32 layer
    /// writes no weights: they are read from the checkpoint again.
    pub(super) fn write_prepared(&self, w: &mut stored::Sink) -> io::Result<()> {
        match &self.packed {
            Packed::F32 => w.write_all(&[0])?,
            Packed::Bf16(p) => {
                w.write_all(&[1])?;
                p.write_to(w)?;
            }
            Packed::Int8(p) => {
                w.write_all(&[2])?;
                p.write_to(w)?;
            }
            Packed::Int16(p) => {
                w.write_all(&[3])?;
                p.write_to(w)?;
            }
        }
        stored::write_words(w, self.bias.as_slice())?;
        match &self.smooth {
            None => w.write_all(&[0])?,
            Some(col) => {
                w.write_all(&[1])?;
                stored::write_words(w, col)?;
            }
        }
        w.write_all(&[self.few_rows_kernel as u8])
    }

    /// Reads what [`Linear::write_prepared`] wrote for an `out_dim × in_dim`
    /// layer; an f32 one comes from `f32` (the checkpoint). Any other size
    /// or tag is an error.
    pub(super) fn read_prepared(
        r: &mut stored::Source,
        (out_dim, in_dim): (usize, usize),
        kernels: Kernels,
        f32: impl FnOnce() -> Result<Linear>,
    ) -> io::Result<Self> {
        let byte = |r: &mut dyn Read| -> io::Result<u8> {
            let mut b = [0u8];
            r.read_exact(&mut b)?;
            Ok(b[0])
        };
        let mut layer = match byte(r)? {
            0 => f32().map_err(|e| io::Error::other(e.to_string()))?,
            tag @ (1..=3) => {
                let packed = match tag {
                    1 => Packed::Bf16(PackedBf16::read_from(r, out_dim, in_dim)?),
                    2 => Packed::Int8(PackedI8::read_from(r, out_dim, in_dim)?),
                    _ => Packed::Int16(PackedI16::read_from(r, out_dim, in_dim)?),
                };
                let mut layer = Self::f32(
                    Buf::Owned(Vec::new()),
                    Buf::Owned(Vec::new()),
                    in_dim,
                    out_dim,
                    kernels,
                );
                layer.packed = packed;
                layer
            }
            tag => return Err(stored::invalid(format!("a layer tagged {tag}"))),
        };
        if (layer.out_dim, layer.in_dim) != (out_dim, in_dim) {
            return Err(stored::invalid("a layer of another size"));
        }
        let bias = stored::read_words::<f32>(r)?;
        if bias.len() != out_dim {
            return Err(stored::invalid("a bias of the wrong length"));
        }
        layer.bias = Buf::Owned(bias);
        layer.smooth = match byte(r)? {
            0 => None,
            1 => {
                let col = stored::read_words::<f32>(r)?;
                if col.len() != in_dim || !matches!(layer.packed, Packed::Int8(_)) {
                    return Err(stored::invalid(
                        "smoothing factors that do not fit the layer",
                    ));
                }
                Some(col)
            }
            tag => return Err(stored::invalid(format!("a smoothing tag {tag}"))),
        };
        layer.few_rows_kernel = match byte(r)? {
            0 => false,
            1 => true,
            tag => return Err(stored::invalid(format!("a few-rows flag {tag}"))),
        };
        Ok(layer)
    }
}

/// Per input channel, SmoothQuant's `sqrt(x_max / w_max)` (α = 0.5) relative
/// to its median over the channels, where it is above 1, as the nearest power
/// of two in `1..=2^16`; 1 for dead or non-finite channels. Relative to the
/// median and only above it: a common factor changes nothing (per-row and
/// per-channel scales absorb it), and only the outlier channels need shrinking.
fn smoothing_factors(x_max: &[f32], w_max: &[f32]) -> Vec<f32> {
    let ratio: Vec<f32> = x_max
        .iter()
        .zip(w_max)
        .map(|(&x, &w)| {
            let r = x / w;
            if x > 0.0 && w > 0.0 && r.is_finite() && r > 0.0 {
                r
            } else {
                f32::NAN
            }
        })
        .collect();
    let mut valid: Vec<f32> = ratio.iter().copied().filter(|r| !r.is_nan()).collect();
    if valid.is_empty() {
        return vec![1.0; ratio.len()];
    }
    let mid = valid.len() / 2;
    let median = *valid.select_nth_unstable_by(mid, f32::total_cmp).1;
    ratio
        .iter()
        .map(|&r| {
            let rel = r / median;
            if rel.is_nan() || rel <= 1.0 {
                return 1.0;
            }
            let exp = (0.5 * rel.log2()).round().clamp(0.0, 16.0);
            2f32.powi(exp as i32)
        })
        .collect()
}

thread_local! {
    /// Activation buffer of the int8 layers, see [`Linear::matmul`].
    static QUANT_ROWS: std::cell::Cell<QuantRows> = std::cell::Cell::new(QuantRows::default());
    /// Activation buffer of the int16 layers.
    static QUANT_ROWS16: std::cell::Cell<QuantRows16> = std::cell::Cell::new(QuantRows16::default());
}

fn parallelism(work: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    // Small products are faster on one thread than split.
    if threads > 1 && work >= 1 << 18 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

pub(super) struct LayerNorm {
    weight: Buf,
    pub(super) bias: Buf,
}

impl LayerNorm {
    pub(super) fn load(t: &Tensors, names: &NormNames) -> Result<Self> {
        Ok(Self {
            weight: t.get(&names.weight, &[names.dim])?,
            bias: t.get(&names.bias, &[names.dim])?,
        })
    }

    pub(super) fn apply(&self, x: &mut [f32], dim: usize, eps: f32) {
        let (w, b) = (self.weight.as_slice(), self.bias.as_slice());
        x.par_chunks_mut(dim)
            .for_each(|row| kernels::layer_norm(row, w, b, eps));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::Rng;

    #[test]
    fn smoothing_factors_shrink_only_outlier_channels() {
        // Ratios under 2x the median (the first that rounds to a factor of 2): nothing to smooth.
        let w_max = vec![0.05f32; 8];
        let x_max = [1.0f32, 1.5, 0.7, 2.0, 1.1, 0.9, 2.1, 1.0].map(|x| x * 0.05);
        assert_eq!(smoothing_factors(&x_max, &w_max), vec![1.0; 8]);
        // A channel 100x the median: sqrt(100) = 10 -> 2^3; 1000x: 31.6 -> 2^5.
        let mut x = vec![1.0f32; 8];
        x[2] = 100.0;
        x[5] = 1000.0;
        let s = smoothing_factors(&x, &[1.0; 8]);
        assert_eq!(s, vec![1.0, 1.0, 8.0, 1.0, 1.0, 32.0, 1.0, 1.0]);
        // Dead, infinite and NaN channels keep 1; all dead: all 1.
        let x = [0.0, f32::INFINITY, f32::NAN, 1.0, 1.0, 1.0, 400.0];
        let s = smoothing_factors(&x, &[1.0; 7]);
        assert_eq!(s, vec![1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 16.0]);
        assert_eq!(smoothing_factors(&[0.0; 3], &[0.0; 3]), vec![1.0; 3]);
    }

    /// GELU fused into the product gives the bits of the product followed by
    /// the GELU pass, for every kernel this CPU has, in parallel tasks and
    /// on rows and columns that fill no tile.
    #[test]
    fn gelu_applied_as_tasks_finish_equals_a_pass_afterwards() {
        let base = Kernels::get().unwrap();
        let mut rng = Rng(11);
        for (rows, n, out) in [(1, 64, 40), (37, 96, 100), (300, 256, 520)] {
            let w = rng
                .gauss_vec(out * n)
                .iter()
                .map(|v| v * 0.1)
                .collect::<Vec<_>>();
            let bias = rng.gauss_vec(out);
            let x = rng.gauss_vec(rows * n);
            let mut kinds = vec![("f32".to_string(), Dtype::F32, base)];
            for &k in int8::I8Kernel::ALL.iter().filter(|k| k.is_available()) {
                let kernels = Kernels { i8: k, ..base };
                kinds.push((format!("int8 {k:?}"), Dtype::Int8, kernels));
            }
            for k in bf16::Bf16Kernel::ALL
                .into_iter()
                .filter(|k| k.is_available())
            {
                let kernels = Kernels { bf16: k, ..base };
                kinds.push((format!("bf16 {k:?}"), Dtype::Bf16, kernels));
            }
            for (what, dtype, kernels) in kinds {
                let l = Linear::from_parts(w.clone(), bias.clone(), n, out, kernels).pack(dtype);
                let mut fused = vec![f32::NAN; rows * out];
                l.matmul_bias_gelu(&mut fused, out, &x, n, rows);
                let mut apart = vec![0f32; rows * out];
                l.matmul(&mut apart, out, &x, n, rows, false);
                apart
                    .chunks_mut(out)
                    .for_each(|row| kernels::bias_gelu(row, &bias));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&fused), bits(&apart), "{what}, {rows} x {n} -> {out}");
            }
        }
    }

    /// Smoothing is exact algebra plus better rounding: on activations with an
    /// outlier channel (as LayerNorm outputs of trained models have), the
    /// smoothed int8 product is much closer to f32 than the plain one, and
    /// without outliers it is the plain one, bit for bit.
    #[test]
    fn smoothing_cuts_the_error_an_outlier_channel_causes() {
        let kernels = Kernels::get().unwrap();
        let (rows, n, out) = (24, 256, 64);
        let mut rng = Rng(3);
        let w = rng
            .gauss_vec(out * n)
            .iter()
            .map(|v| v * 0.05)
            .collect::<Vec<_>>();
        let mut x = rng.gauss_vec(rows * n);
        let layer = |w: &[f32]| Linear::from_parts(w.to_vec(), vec![0.0; out], n, out, kernels);
        let product = |l: &Linear, x: &[f32]| {
            let mut y = vec![0f32; rows * out];
            l.matmul(&mut y, out, x, n, rows, false);
            y
        };
        // No outliers: no smoothing.
        let plain = layer(&w).pack(Dtype::Int8);
        let exact = product(&layer(&w), &x);
        let (same, smoothed) = layer(&w).quantize_best(&x, rows, &exact);
        assert!(!smoothed && same.smooth.is_none());
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(product(&plain, &x)), bits(product(&same, &x)));
        // Channel 7 is 60x the others.
        for row in x.chunks_mut(n) {
            row[7] *= 60.0;
        }
        let exact = product(&layer(&w), &x);
        let err = |y: Vec<f32>| {
            let e: f64 = y
                .iter()
                .zip(&exact)
                .map(|(a, b)| ((a - b) as f64).powi(2))
                .sum();
            let s: f64 = exact.iter().map(|b| (*b as f64).powi(2)).sum();
            (e / s).sqrt()
        };
        let plain = err(product(&layer(&w).pack(Dtype::Int8), &x));
        let (smoothed_layer, smoothed) = layer(&w).quantize_best(&x, rows, &exact);
        assert!(smoothed);
        assert_eq!(smoothed_layer.smooth.as_ref().unwrap()[7], 1.0 / 8.0);
        let smoothed = err(product(&smoothed_layer, &x));
        eprintln!("relative error: plain {plain:.2e}, smoothed {smoothed:.2e}");
        assert!(
            smoothed < plain / 2.0,
            "plain {plain:.2e}, smoothed {smoothed:.2e}"
        );
    }

    /// Every kind of prepared layer (bf16; int8 plain and smoothed; f32 from
    /// the checkpoint) written for the cache and read back computes the same
    /// product bit for bit; a wrong size, a truncated record and a bad tag
    /// are errors.
    #[test]
    fn prepared_layers_read_back_bit_for_bit() {
        let kernels = Kernels::get().unwrap();
        let (rows, n, out) = (9, 72, 40);
        let mut rng = Rng(5);
        let w: Vec<f32> = rng.gauss_vec(out * n).iter().map(|v| v * 0.05).collect();
        let bias: Vec<f32> = rng.gauss_vec(out);
        let mut x = rng.gauss_vec(rows * n);
        for row in x.chunks_mut(n) {
            row[3] *= 80.0;
        }
        let layer = || Linear::from_parts(w.clone(), bias.clone(), n, out, kernels);
        let product = |l: &Linear| {
            let mut y = vec![0f32; rows * out];
            l.fill_bias(&mut y, out, rows);
            l.matmul(&mut y, out, &x, n, rows, true);
            y.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        let exact = {
            let mut y = vec![0f32; rows * out];
            layer().matmul(&mut y, out, &x, n, rows, false);
            y
        };
        let (smoothed, did) = layer().quantize_best(&x, rows, &exact);
        assert!(did, "the outlier channel is smoothed");
        let kinds = [
            ("bf16", layer().pack(Dtype::Bf16)),
            ("int8", layer().pack(Dtype::Int8)),
            ("int8 smoothed", smoothed),
            ("f32", layer().gemm_at_any_rows()),
        ];
        for (what, l) in kinds {
            let mut bytes = Vec::new();
            l.write_prepared(&mut stored::Sink::new(&mut bytes))
                .unwrap();
            let read = |bytes: &[u8], dims| {
                Linear::read_prepared(&mut stored::Source::copy_of(bytes), dims, kernels, || {
                    Ok(layer())
                })
            };
            let back = read(&bytes, (out, n)).unwrap();
            assert_eq!(product(&back), product(&l), "{what}");
            assert_eq!(back.smooth, l.smooth, "{what}");
            assert_eq!(back.few_rows_kernel, l.few_rows_kernel, "{what}");
            let wrong = Linear::read_prepared(
                &mut stored::Source::copy_of(&bytes),
                (out, n + 1),
                kernels,
                || {
                    Ok(Linear::from_parts(
                        vec![0.0; out * (n + 1)],
                        vec![0.0; out],
                        n + 1,
                        out,
                        kernels,
                    ))
                },
            );
            // (An f32 layer's weights come from the checkpoint, whose shapes are checked.)
            assert!(
                wrong.is_err() || what == "f32",
                "{what}: read as another size"
            );
            let cut = &bytes[..bytes.len() - 2];
            assert!(read(cut, (out, n)).is_err(), "{what}: truncated");
        }
        let err = Linear::read_prepared(
            &mut stored::Source::copy_of(&[7u8]),
            (out, n),
            kernels,
            || Ok(layer()),
        );
        assert!(err.err().unwrap().to_string().contains("tagged 7"));
    }
}
