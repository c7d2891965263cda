//! How fast each kernel runs one of the encoder's linear layers here, next
//! to its instruction's register-only peak ([`crate::model::kernels::peak`]):
//! the figures `rerank bench --ceiling` prints, and the timing the int8 plan
//! chooses by ([`super::plan`]).

use std::time::Instant;

use super::attention::attention;
use super::linear::Linear;
use super::plan::AttentionKernel;
use crate::backend::PackedBatch;
use crate::model::kernels::peak::PeakLoop;
use crate::model::kernels::{Bf16Kernel, I16Kernel, I8Kernel, Kernels};
use crate::model::Dtype;

/// A linear layer's shape and deterministic operands of the size real
/// activations and weights have (speed does not depend on their values).
pub(super) struct Operands {
    rows: usize,
    in_dim: usize,
    out_dim: usize,
    weight: Vec<f32>,
    x: Vec<f32>,
}

impl Operands {
    pub(super) fn new(rows: usize, in_dim: usize, out_dim: usize) -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let weight = (0..in_dim * out_dim).map(|_| next() * 0.05).collect();
        let x = (0..rows * in_dim).map(|_| next()).collect();
        Self {
            rows,
            in_dim,
            out_dim,
            weight,
            x,
        }
    }

    /// The layer in `dtype` on `kernels` (int8: plain per-channel weights).
    pub(super) fn layer(&self, kernels: Kernels, dtype: Dtype) -> Linear {
        let bias = vec![0.0; self.out_dim];
        let (i, o) = (self.in_dim, self.out_dim);
        Linear::from_parts(self.weight.clone(), bias, i, o, kernels).pack(dtype)
    }

    /// The layer in int16 ([`crate::model::kernels::i16`]), as an int8
    /// model's residual layers run it.
    pub(super) fn layer_int16(&self, kernels: Kernels) -> Linear {
        let bias = vec![0.0; self.out_dim];
        let (i, o) = (self.in_dim, self.out_dim);
        let layer = Linear::from_parts(self.weight.clone(), bias, i, o, kernels);
        layer.pack_int16().gemm_at_any_rows()
    }

    /// GFLOP/s (2 per multiply-add) of one run of `layer` on these rows,
    /// into `dst` (rows × out, allocated once: fresh pages would be timed).
    pub(super) fn gflops_once(&self, layer: &Linear, dst: &mut [f32]) -> f64 {
        let start = Instant::now();
        layer.matmul(dst, self.out_dim, &self.x, self.in_dim, self.rows, false);
        let flop = 2.0 * (self.rows * self.in_dim * self.out_dim) as f64;
        flop / start.elapsed().as_secs_f64().max(1e-9) / 1e9
    }

    /// GFLOP/s (2 per multiply-add) of each layer on these rows: the best of
    /// three runs each, interleaved after a warm-up, so a busy neighbour
    /// slows them alike.
    pub(super) fn gflops(&self, layers: &[&Linear]) -> Vec<f64> {
        let mut dst = vec![0f32; self.rows * self.out_dim];
        let mut best = vec![0f64; layers.len()];
        for round in 0..4 {
            for (b, layer) in best.iter_mut().zip(layers) {
                let g = self.gflops_once(layer, &mut dst);
                if round > 0 {
                    *b = b.max(g);
                }
            }
        }
        best
    }
}

/// One kernel on one of the encoder's shapes.
#[derive(Debug, Clone)]
pub struct KernelSpeed {
    /// `f32 gemm`, `bf16 amx`, `int8 vnni`, …
    pub kernel: String,
    /// The layer: rows × in → out.
    pub shape: (usize, usize, usize),
    /// GFLOP/s, f32-equivalent (2 per multiply-add; int8 and int16 include
    /// quantizing the activations, as the model runs it): the median of
    /// five runs.
    pub gflops: f64,
    /// The instruction this kernel is built on, and the kernel's share of
    /// its register-only peak: the median over five rounds of the kernel's
    /// speed over the peak loop's, run back to back, so that the machine's
    /// drift (±20 % within seconds on a shared VM) cancels.
    pub of_peak: Option<(&'static str, f64)>,
}

/// Every bf16 and int8 kernel at or below `kernels`' choice (so the
/// `RERANK_*_KERNEL` caps hold), the portable ones left out, int16 where the
/// int8 kernel is VNNI or AMX, and f32, on
/// bge-reranker-v2-m3's FFN shapes (1024 → 4096 and 4096 → 1024) with
/// `rows` rows, each beside its instruction's peak loop among `loops`
/// ([`peak::loops`]).
pub fn kernel_speeds(kernels: Kernels, rows: usize, loops: &[PeakLoop]) -> Vec<KernelSpeed> {
    let loop_of = |bounds: &str| loops.iter().find(|p| p.bounds.starts_with(bounds));
    // `None`: int16 (an int8 model's residual layers where that is fastest).
    let mut variants: Vec<(String, Kernels, Option<Dtype>, Option<&PeakLoop>)> =
        vec![("f32 gemm".into(), kernels, Some(Dtype::F32), loop_of("f32"))];
    for b in from(&Bf16Kernel::ALL, kernels.bf16) {
        if b != Bf16Kernel::Portable && b.is_available() {
            let name = format!("bf16 {}", b.name());
            let peak = loop_of(&name).or_else(|| loop_of("f32"));
            variants.push((
                name,
                Kernels { bf16: b, ..kernels },
                Some(Dtype::Bf16),
                peak,
            ));
        }
    }
    for k in from(I8Kernel::ALL, kernels.i8) {
        if k != I8Kernel::Scalar && k.is_available() {
            let name = format!("int8 {}", k.name());
            let peak = loop_of(&name).or_else(|| loop_of("f32"));
            variants.push((name, Kernels { i8: k, ..kernels }, Some(Dtype::Int8), peak));
        }
    }
    if I16Kernel::with(kernels.i8) != I16Kernel::Portable {
        let name = "int16 vnni".to_string();
        let peak = loop_of(&name);
        variants.push((name, kernels, None, peak));
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut out = Vec::new();
    for (i, o) in [(1024, 4096), (4096, 1024)] {
        let ops = Operands::new(rows, i, o);
        for (name, k, d, peak) in &variants {
            let layer = match d {
                Some(d) => ops.layer(*k, *d),
                None => ops.layer_int16(*k),
            };
            let mut dst = vec![0f32; rows * o];
            ops.gflops_once(&layer, &mut dst);
            let (mut speed, mut share) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let p = peak.map(|p| p.gflops_once());
                let g = ops.gflops_once(&layer, &mut dst);
                speed.push(g);
                share.extend(p.map(|p| g / p));
            }
            out.push(KernelSpeed {
                kernel: name.clone(),
                shape: (rows, i, o),
                gflops: median(speed),
                of_peak: peak.map(|p| (p.instruction, median(share))),
            });
        }
    }
    out
}

/// `chosen` and the kernels after it in `all` (fastest first): those a cap
/// to `chosen` allows.
fn from<T: PartialEq + Copy>(all: &[T], chosen: T) -> impl Iterator<Item = T> + '_ {
    all.iter().copied().skip_while(move |k| *k != chosen)
}

/// Attention's time on `kernel` (bf16 or int16) over f32's (below 1: faster),
/// for pairs of each length in `lens`: bge-reranker-v2-m3's 16 heads of 64,
/// as many pairs as fill 8192 tokens, the median of 5 interleaved runs each
/// after a warm-up. What `plan::BF16_ATTENTION_MIN_LEN` and
/// `plan::INT16_ATTENTION_MIN_LEN` are set by.
pub fn attention_over_f32(kernel: AttentionKernel, lens: &[usize]) -> Vec<(usize, f64)> {
    let (h, heads) = (1024, 16);
    lens.iter()
        .map(|&len| {
            let pairs = (8192 / len).max(1);
            let tokens = pairs * len;
            let qkv = Operands::new(tokens, 3 * h, 0).x;
            let batch = PackedBatch {
                ids: vec![0; tokens],
                positions: vec![0; tokens],
                types: vec![0; tokens],
                offsets: (0..=pairs).map(|p| p * len).collect(),
            };
            let mut ctx = vec![0f32; tokens * h];
            let mut run = |fast: Option<(AttentionKernel, usize)>| {
                let start = Instant::now();
                attention(&qkv, &mut ctx, &batch, (h, heads), false, fast);
                start.elapsed().as_secs_f64()
            };
            run(None);
            run(Some((kernel, 0)));
            let mut ratios: Vec<f64> = (0..5)
                .map(|_| {
                    let f = run(None);
                    run(Some((kernel, 0))) / f
                })
                .collect();
            ratios.sort_by(f64::total_cmp);
            (len, ratios[2])
        })
        .collect()
}
