//! Hand-written CPU forward pass of `XLMRobertaForSequenceClassification`.
//!
//! In f32 it computes exactly what [`crate::model::candle::XlmRobertaForSequenceClassification`]
//! computes, and replaces it on CPU because it is measurably faster and
//! leaner (see BENCHMARKS.md); in [`Dtype::Bf16`] or [`Dtype::Int8`] only the
//! encoder's linear layers change (see `linear.rs`), Q/K/V then fused into one
//! layer so the input is converted once. [`Dtype::Int8`] quantizes the layers that read
//! a LayerNorm output (Q/K/V, intermediate: 7/12 of the FLOPs) and keeps the
//! two that write into the residual stream (attention output, FFN output) in
//! bf16 (f32 without AMX); see [`CpuModel::load`] for why.
//!
//! Techniques:
//! - weights stay in the memory-mapped safetensors file (no copy: fast start,
//!   RSS = the pages touched), read in place by the `gemm` crate (the same
//!   matmul kernels candle uses) through strides, so no weight is transposed
//!   or concatenated;
//! - the residual (plus bias) is pre-filled into the attention-output and
//!   FFN-output matmuls' destination and the product accumulated on top
//!   (`gemm`'s `read_dst`), likewise the Q/K/V biases; the intermediate
//!   layer's bias is added by the GELU pass instead;
//! - activation buffers are kept from one forward pass to the next;
//! - each head's context is written straight into its columns of the
//!   context buffer: no permute or concat copies;
//! - attention runs per (pair, head) in parallel, flash-attention style:
//!   tiles of 128 query rows × 512 keys (256 KiB of scores, in L2) with an
//!   online softmax across key tiles, so an 8192-token pair needs a few
//!   hundred KiB of scores per thread instead of 4 GiB;
//! - GELU, softmax and LayerNorm are the vectorized element-wise kernels, in place.
//!
//! Files: `weights.rs` (mapped or in-memory tensors), `linear.rs` (linear
//! layers in each dtype, LayerNorm), `attention.rs`, this file (the layer stack).

mod attention;
pub mod ceiling;
mod linear;
pub mod plan;
pub mod prepared;
mod weights;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rayon::prelude::*;

use self::attention::attention;
use self::linear::{LayerNorm, Linear};
use self::weights::Buf;
pub use self::weights::WeightSource;
use crate::backend::PackedBatch;
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::checkpoint::{Checkpoint, LinearNames, TableNames};
use crate::model::kernels::{self, stored, Kernels};
use crate::model::Dtype;

/// `roberta.encoder.layer.N`
struct Layer {
    /// Q, K, V as three f32 layers writing side by side...
    qkv_parts: Vec<Linear>,
    /// ...or as one fused low-precision layer.
    qkv: Option<Linear>,
    attention_output: Linear,
    attention_norm: LayerNorm,
    intermediate: Linear,
    output: Linear,
    output_norm: LayerNorm,
}

/// The whole cross-encoder on CPU in f32.
pub struct CpuModel {
    word_embeddings: Buf,
    position_embeddings: Buf,
    /// `token_type_embeddings`, indexed by the batch's token types.
    token_type: Buf,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    classifier_dense: Linear,
    classifier_out: Linear,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    eps: f32,
    dtype: Dtype,
    kernels: Kernels,
    residual_plan: Option<plan::ResidualPlan>,
    /// bf16 and int8 models: attention's products in bf16 or f32.
    attention_plan: Option<plan::AttentionPlan>,
    /// Whether the linear layers were read from the prepared-weights cache.
    from_cache: bool,
    workspace: Mutex<Workspace>,
}

/// Activation buffers of a forward pass, kept for the next one. Fresh
/// allocations of this size (tokens × 9 × hidden floats: ~170 MiB for 16
/// pairs of 288 tokens, at most ~300 MiB under the default 8192-token batch
/// budget) come straight from mmap, so every pass paid page faults and the
/// kernel's page zeroing: ~1.5 % of a rag-50 run in `perf`. The price is that
/// an idle engine keeps the largest batch's buffers (the process's peak
/// anyway). Every buffer is fully written before it is read in a pass, so
/// stale contents never leak into results.
#[derive(Default)]
struct Workspace {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    mid: Vec<f32>,
    ffn: Vec<f32>,
}

/// The first `n` elements of `v`, growing it (never shrinking) as needed.
fn grown(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

impl CpuModel {
    /// Loads the weights named by [`Checkpoint::xlm_roberta`]. The encoder's
    /// linear layers run in `dtype` (f32, bf16 or int8); embeddings,
    /// LayerNorm, attention and the classification head always run in f32.
    pub fn load(source: &WeightSource, cfg: &ModelConfig, dtype: Dtype) -> Result<Self> {
        if dtype == Dtype::F16 {
            return Err(Error::Unavailable(
                "the CPU model runs f32, bf16 or int8; f16 runs in candle (--dtype f16 on CUDA)"
                    .into(),
            ));
        }
        let kernels = Kernels::get()?;
        let residual_plan = match dtype {
            Dtype::Int8 => Some(plan::residual_plan(kernels)?),
            _ => None,
        };
        let attention_plan = match dtype {
            Dtype::Int8 | Dtype::Bf16 => Some(plan::attention_plan(kernels)?),
            _ => None,
        };
        Self::load_with(source, cfg, dtype, kernels, residual_plan, attention_plan)
    }

    /// [`CpuModel::load`] with the kernels, (int8) the residual layers' plan
    /// and (bf16, int8) the attention's given instead of chosen: for tests of
    /// each choice in one process. Without an attention plan attention runs
    /// f32.
    pub fn load_with(
        source: &WeightSource,
        cfg: &ModelConfig,
        dtype: Dtype,
        kernels: Kernels,
        residual_plan: Option<plan::ResidualPlan>,
        attention_plan: Option<plan::AttentionPlan>,
    ) -> Result<Self> {
        let plans = (residual_plan, attention_plan);
        Self::load_from(
            source,
            cfg,
            dtype,
            kernels,
            plans,
            &prepared::Place::FromEnv,
        )
    }

    /// [`CpuModel::load_with`], its prepared-weights cache in `place`.
    fn load_from(
        source: &WeightSource,
        cfg: &ModelConfig,
        dtype: Dtype,
        kernels: Kernels,
        (residual_plan, attention_plan): (Option<plan::ResidualPlan>, Option<plan::AttentionPlan>),
        place: &prepared::Place,
    ) -> Result<Self> {
        // int8 on the attention output and FFN output projections costs more
        // accuracy than on the other two: their inputs (attention context,
        // GELU output) have heavy-tailed rows that per-row u8 quantization
        // serves badly, and their error goes straight into the residual stream.
        // Measured on the full-size random model, rag-50 (max rel. L2 of the
        // `<s>` hidden state vs f32): all four int8 2.64e-2; these two in bf16
        // 1.84e-2 (the gate is 2e-2) for ~10 % more time; Q/K/V +
        // attention output in bf16 2.05e-2; intermediate + output 1.72e-2 at
        // ~18 %. bf16 or f32 for them: whichever is faster here (`plan.rs`).
        match dtype {
            Dtype::Int8 if !kernels.fast_i8() => tracing::warn!(
                "this CPU has no AVX512-VNNI: int8 runs a portable kernel that is slower than f32"
            ),
            Dtype::Bf16 => match plan::bf16_speed(kernels) {
                plan::Reason::Measured { bf16, f32 } if bf16 < plan::BF16_MARGIN * f32 => tracing::warn!(
                    "bf16 runs the {:?} kernel at {bf16:.0} GFLOP/s, f32 at {f32:.0} here: \
                     f32 is likely faster on this CPU (bf16 pays off without AMX where it \
                     measures clearly faster, as on AMD Zen 4/5)",
                    kernels.bf16
                ),
                plan::Reason::NoFastBf16 => tracing::warn!(
                    "this CPU has no AMX or AVX512-BF16: bf16 runs the {:?} kernel, slower than f32",
                    kernels.bf16
                ),
                _ => {}
            },
            _ => {}
        }
        if let Some(plan) = &residual_plan {
            tracing::info!("int8 plan: q/k/v, ffn-in int8; {plan}");
        }
        let attention_plan = attention_plan.filter(|_| dtype != Dtype::F32);
        if let Some(plan) = &attention_plan {
            tracing::info!("{dtype} plan: {plan}");
        }
        let t = source.tensors()?;
        let names = Checkpoint::for_config(cfg);
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let residual_dtype = match (dtype, residual_plan) {
            (Dtype::Int8, Some(p)) => p.precision,
            // Without a plan int8 keeps them in f32, which every CPU runs.
            (Dtype::Int8, None) => plan::Residual::F32,
            (other, _) => plan::Residual::of(other),
        };
        let residual_plan = residual_plan.filter(|_| dtype == Dtype::Int8);
        // int8 layers are built in f32 and quantized after a calibration pass
        // ([`CpuModel::quantize_calibrated`]); bf16 ones are packed right away.
        let build_dtype = if dtype == Dtype::Int8 {
            Dtype::F32
        } else {
            dtype
        };
        let residual = |layer: Linear| {
            let layer = layer.pack(build_dtype);
            if dtype == Dtype::F32 {
                layer
            } else {
                layer.gemm_at_any_rows()
            }
        };
        // bf16 and int8: the layers as an earlier load prepared them, if cached.
        let cache = match dtype {
            Dtype::F32 => None,
            _ => prepared::Entry::locate(source, cfg, (dtype, residual_dtype), kernels, place),
        };
        let cached = cache
            .as_ref()
            .and_then(|entry| entry.read(|r| read_layers(r, &t, &names, cfg, kernels)));
        let from_cache = cached.is_some();
        let layers = match cached {
            Some(layers) => layers,
            None => names
                .layers
                .iter()
                .map(|l| {
                    let qkv_parts = [&l.query, &l.key, &l.value]
                        .into_iter()
                        .map(|names| Linear::load(&t, names, kernels))
                        .collect::<Result<Vec<_>>>()?;
                    let (qkv_parts, qkv) = match build_dtype {
                        Dtype::F32 => (qkv_parts, None),
                        _ => (Vec::new(), Some(Linear::fused(qkv_parts, dtype))),
                    };
                    Ok(Layer {
                        qkv_parts,
                        qkv,
                        attention_output: residual(Linear::load(&t, &l.attention_output, kernels)?),
                        attention_norm: LayerNorm::load(&t, &l.attention_norm)?,
                        intermediate: Linear::load(&t, &l.intermediate, kernels)?.pack(build_dtype),
                        output: residual(Linear::load(&t, &l.output, kernels)?),
                        output_norm: LayerNorm::load(&t, &l.output_norm)?,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
        };
        let table = |n: &TableNames| t.get(&n.name, &[n.rows, n.dim]);
        let mut model = Self {
            word_embeddings: table(&names.word_embeddings)?,
            position_embeddings: table(&names.position_embeddings)?,
            token_type: table(&names.token_type_embeddings)?,
            embeddings_norm: LayerNorm::load(&t, &names.embeddings_norm)?,
            layers,
            classifier_dense: Linear::load(&t, &names.classifier_dense, kernels)?,
            classifier_out: Linear::load(&t, &names.classifier_out, kernels)?,
            hidden: h,
            intermediate: i,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps as f32,
            dtype,
            kernels,
            residual_plan,
            attention_plan,
            from_cache,
            workspace: Mutex::default(),
        };
        if dtype == Dtype::Int8 && !from_cache {
            model.quantize_calibrated(cfg, residual_dtype);
        }
        if let (Some(entry), false) = (&cache, from_cache) {
            entry.write(|w| {
                stored::write_len(w, model.layers.len())?;
                model.layers.iter().try_for_each(|l| {
                    let qkv = l.qkv.as_ref().expect("bf16 and int8 fuse Q/K/V");
                    [qkv, &l.attention_output, &l.intermediate, &l.output]
                        .into_iter()
                        .try_for_each(|lin| lin.write_prepared(w))
                })
            });
        }
        Ok(model)
    }

    /// Quantizes the f32 layers of an int8 model, each int8 layer with or
    /// without SmoothQuant's smoothing of its input (Xiao et al. 2023), as
    /// measured better on a calibration pass ([`Linear::quantize_best`]).
    /// Activation outliers sit in a few channels of trained models (LayerNorm
    /// outputs above all); per-row quantization spends its 255 steps on them,
    /// and smoothing hands part of that range to the weights, which have
    /// precision to spare. The pass runs f32 over [`calibration_batch`], layer
    /// by layer: each layer is quantized right after its pass, so its f32
    /// pages are released before the next layer's are read.
    ///
    /// On all-MiniLM-L6-v2's real weights this halves int8's error
    /// (BENCHMARKS.md "BERT on real weights"). The factors are powers of two
    /// from seeded inputs: a model quantizes to the same weights in every
    /// process, and the scaling itself rounds nothing.
    fn quantize_calibrated(&mut self, cfg: &ModelConfig, residual_dtype: plan::Residual) {
        let batch = calibration_batch(cfg);
        // The pass is the f32 model whose products the int8 layers must
        // reproduce, attention included.
        let dims = Dims {
            attention_fast: None,
            ..self.dims()
        };
        let tokens = batch.ids.len();
        let (h, inter) = (self.hidden, self.intermediate);
        let mut x = self.embed(&batch);
        let (mut qkv, mut ctx, mut mid, mut ffn) = (
            vec![0f32; tokens * 3 * h],
            vec![0f32; tokens * h],
            vec![0f32; tokens * h],
            vec![0f32; tokens * inter],
        );
        let layers = std::mem::take(&mut self.layers);
        let (mut pass_time, mut quantize_time) = (Duration::ZERO, Duration::ZERO);
        for mut layer in layers {
            let started = Instant::now();
            // Fused first, so the pass records the product its int8 twin makes.
            let parts = std::mem::take(&mut layer.qkv_parts);
            layer.qkv = Some(Linear::fused(parts, Dtype::F32));
            let mut stats = LayerInputs::default();
            let bufs = (&mut qkv[..], &mut ctx[..], &mut mid[..], &mut ffn[..]);
            layer_pass(&layer, dims, &batch, &mut x, bufs, false, Some(&mut stats));
            pass_time += started.elapsed();
            let started = Instant::now();
            let Layer {
                qkv_parts: _,
                qkv: fused,
                attention_output,
                attention_norm,
                intermediate,
                output,
                output_norm,
            } = layer;
            let fused = fused.expect("fused above");
            let mut smoothed = 0;
            let mut best = |l: Linear, r: &Recorded| {
                let (l, s) = l.quantize_best(&r.x, r.rows, &r.y);
                smoothed += s as usize;
                l
            };
            let qkv = best(fused, &stats.qkv);
            let intermediate = best(intermediate, &stats.intermediate);
            let (attention_output, output) = match residual_dtype {
                plan::Residual::Int8 => (
                    best(attention_output, &stats.attention_output),
                    best(output, &stats.output),
                ),
                plan::Residual::Int16 => (attention_output.pack_int16(), output.pack_int16()),
                plan::Residual::Bf16 => {
                    (attention_output.pack(Dtype::Bf16), output.pack(Dtype::Bf16))
                }
                plan::Residual::F32 => (attention_output, output),
            };
            quantize_time += started.elapsed();
            tracing::debug!(
                "int8 layer {}: {smoothed} linear layers smoothed",
                self.layers.len()
            );
            self.layers.push(Layer {
                qkv_parts: Vec::new(),
                qkv: Some(qkv),
                attention_output: attention_output.gemm_at_any_rows(),
                attention_norm,
                intermediate,
                output: output.gemm_at_any_rows(),
                output_norm,
            });
        }
        tracing::debug!(
            "int8 calibration: f32 pass {:.2} s, quantization {:.2} s",
            pass_time.as_secs_f64(),
            quantize_time.as_secs_f64()
        );
    }

    fn dims(&self) -> Dims {
        Dims {
            hidden: self.hidden,
            intermediate: self.intermediate,
            heads: self.heads,
            eps: self.eps,
            attention_fast: self
                .attention_plan
                .and_then(|p| p.kernel.map(|k| (k, p.min_len))),
        }
    }

    /// The arithmetic of the encoder's linear layers.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The CPU kernels the linear layers run.
    pub fn kernels(&self) -> Kernels {
        self.kernels
    }

    /// int8 models: the precision of the attention-output and FFN-output
    /// layers, and why (see `plan.rs`).
    pub fn residual_plan(&self) -> Option<plan::ResidualPlan> {
        self.residual_plan
    }

    /// Whether the linear layers were read from the prepared-weights cache
    /// (`prepared.rs`) instead of converted from the checkpoint.
    pub fn weights_from_cache(&self) -> bool {
        self.from_cache
    }

    /// bf16 and int8 models: the precision of attention's products, and why
    /// (see `plan.rs`).
    pub fn attention_plan(&self) -> Option<plan::AttentionPlan> {
        self.attention_plan
    }

    /// One raw logit per pair, in batch order.
    pub fn forward(&self, batch: &PackedBatch) -> Vec<f32> {
        self.forward_hidden(batch).0
    }

    /// One raw logit per pair, and the final hidden state of each pair's
    /// `<s>` token (pairs × hidden, what the classification head reads), in
    /// batch order.
    pub fn forward_hidden(&self, batch: &PackedBatch) -> (Vec<f32>, Vec<f32>) {
        let pairs = batch.len();
        if pairs == 0 {
            return (Vec::new(), Vec::new());
        }
        let (h, inter) = (self.hidden, self.intermediate);
        let tokens = batch.ids.len();
        let mut x = self.embed(batch);
        // Taken out of the lock, so a concurrent pass (if any) allocates its
        // own instead of waiting; a poisoned lock just means fresh buffers.
        let mut ws = self
            .workspace
            .lock()
            .map(|mut w| std::mem::take(&mut *w))
            .unwrap_or_default();
        let qkv = grown(&mut ws.qkv, tokens * 3 * h);
        let ctx = grown(&mut ws.ctx, tokens * h);
        let mid = grown(&mut ws.mid, tokens * h);
        let ffn = grown(&mut ws.ffn, tokens * inter);
        let last = self.layers.len().saturating_sub(1);
        for (n, layer) in self.layers.iter().enumerate() {
            // The last layer only needs the `<s>` row of each pair.
            let bufs = (&mut *qkv, &mut *ctx, &mut *mid, &mut *ffn);
            layer_pass(layer, self.dims(), batch, &mut x, bufs, n == last, None);
        }
        if let Ok(mut w) = self.workspace.lock() {
            *w = ws;
        }
        if self.layers.is_empty() {
            x = batch.offsets[..pairs]
                .iter()
                .flat_map(|&o| x[o * h..(o + 1) * h].iter().copied())
                .collect();
        }
        // Classification head on the `<s>` rows: dense → tanh → out_proj.
        let mut dense = vec![0f32; pairs * h];
        self.classifier_dense.fill_bias(&mut dense, h, pairs);
        self.classifier_dense
            .matmul(&mut dense, h, &x, h, pairs, true);
        dense.iter_mut().for_each(|v| *v = v.tanh());
        let mut logits = vec![0f32; pairs];
        self.classifier_out.fill_bias(&mut logits, 1, pairs);
        self.classifier_out
            .matmul(&mut logits, 1, &dense, h, pairs, true);
        x.truncate(pairs * h);
        (logits, x)
    }

    /// word + position + token type embeddings, then LayerNorm.
    fn embed(&self, batch: &PackedBatch) -> Vec<f32> {
        let h = self.hidden;
        let (word, pos, types) = (
            self.word_embeddings.as_slice(),
            self.position_embeddings.as_slice(),
            self.token_type.as_slice(),
        );
        let type_rows = types.len() / h;
        let mut x = vec![0f32; batch.ids.len() * h];
        x.par_chunks_mut(h).enumerate().for_each(|(t, row)| {
            let (id, p) = (batch.ids[t] as usize, batch.positions[t] as usize);
            // A type the table lacks (a RoBERTa table has one row) reads row 0.
            let tt = (batch.types[t] as usize).min(type_rows - 1);
            kernels::add_into(row, &word[id * h..(id + 1) * h], &pos[p * h..(p + 1) * h]);
            for (v, &e) in row.iter_mut().zip(&types[tt * h..(tt + 1) * h]) {
                *v += e;
            }
        });
        self.embeddings_norm.apply(&mut x, h, self.eps);
        x
    }
}

/// The encoder layers of a prepared-weights entry ([`prepared`]): the linear
/// layers as written after an earlier load, the LayerNorms (and any f32
/// residual layer) from the checkpoint.
fn read_layers(
    r: &mut stored::Source,
    t: &weights::Tensors,
    names: &Checkpoint,
    cfg: &ModelConfig,
    kernels: Kernels,
) -> std::io::Result<Vec<Layer>> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    stored::expect_len(r, names.layers.len(), "the number of layers")?;
    let io = |e: Error| std::io::Error::other(e.to_string());
    let packed_only = || {
        Err(Error::Unavailable(
            "an f32 layer where bf16 or int8 is expected".into(),
        ))
    };
    let from_checkpoint = |n: &LinearNames| Ok(Linear::load(t, n, kernels)?.gemm_at_any_rows());
    names
        .layers
        .iter()
        .map(|l| {
            Ok(Layer {
                qkv_parts: Vec::new(),
                qkv: Some(Linear::read_prepared(r, (3 * h, h), kernels, packed_only)?),
                attention_output: Linear::read_prepared(r, (h, h), kernels, || {
                    from_checkpoint(&l.attention_output)
                })?,
                attention_norm: LayerNorm::load(t, &l.attention_norm).map_err(io)?,
                intermediate: Linear::read_prepared(r, (i, h), kernels, packed_only)?,
                output: Linear::read_prepared(r, (h, i), kernels, || from_checkpoint(&l.output))?,
                output_norm: LayerNorm::load(t, &l.output_norm).map_err(io)?,
            })
        })
        .collect()
}

/// Dimensions a layer pass needs.
#[derive(Clone, Copy)]
struct Dims {
    hidden: usize,
    intermediate: usize,
    heads: usize,
    eps: f32,
    /// Attention's products in bf16 or int16 on this kernel for pairs of at
    /// least this many tokens, else f32.
    attention_fast: Option<(plan::AttentionKernel, usize)>,
}

/// What each of a layer's four linear layers read and computed in a
/// calibration pass.
#[derive(Default)]
struct LayerInputs {
    qkv: Recorded,
    attention_output: Recorded,
    intermediate: Recorded,
    output: Recorded,
}

/// One linear layer's product in a calibration pass: its input `x` (`rows`
/// rows) and `y = x · Wᵀ` in f32, without bias. `y` is the reference the
/// layer's int8 candidates are judged by ([`Linear::quantize_best`]);
/// keeping it spares a second f32 product per layer at load.
#[derive(Default)]
struct Recorded {
    x: Vec<f32>,
    rows: usize,
    y: Vec<f32>,
}

/// `dst (+)= x · Wᵀ` for `rows` rows, as [`Linear::matmul`]. With `record`
/// (a calibration pass) the product is made alone, kept with its input, and
/// then added to `dst` (`accumulate`) or written there.
#[allow(clippy::too_many_arguments)]
fn product(
    lin: &Linear,
    dst: &mut [f32],
    dst_rs: usize,
    x: &[f32],
    x_rs: usize,
    rows: usize,
    accumulate: bool,
    record: Option<&mut Recorded>,
) {
    let Some(rec) = record else {
        return lin.matmul(dst, dst_rs, x, x_rs, rows, accumulate);
    };
    let (n, out) = (lin.in_dim(), lin.out_dim());
    let mut y = vec![0f32; rows * out];
    lin.matmul(&mut y, out, x, x_rs, rows, false);
    dst.par_chunks_mut(dst_rs)
        .zip(y.par_chunks(out))
        .for_each(|(d, p)| match accumulate {
            true => d[..out].iter_mut().zip(p).for_each(|(d, p)| *d += p),
            false => d[..out].copy_from_slice(p),
        });
    let x = (0..rows).flat_map(|r| &x[r * x_rs..r * x_rs + n]).copied();
    *rec = Recorded {
        x: x.collect(),
        rows,
        y,
    };
}

/// Buffers of a layer pass: Q/K/V (tokens × 3H), context, attention output,
/// FFN activations.
type LayerBufs<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// One encoder layer on `x` (tokens × H) in place; with `first_only` (the
/// last layer) only each pair's `<s>` row is computed past attention. With
/// `stats`, records the inputs of the four linear layers (calibration).
fn layer_pass(
    layer: &Layer,
    dims: Dims,
    batch: &PackedBatch,
    x: &mut [f32],
    (qkv, ctx, mid, ffn): LayerBufs,
    first_only: bool,
    mut stats: Option<&mut LayerInputs>,
) {
    let (h, inter) = (dims.hidden, dims.intermediate);
    let (tokens, pairs) = (batch.ids.len(), batch.len());
    let rows = if first_only { pairs } else { tokens };
    // Q, K, V for every token, side by side in one (tokens × 3H) buffer.
    if let Some(lin) = &layer.qkv {
        lin.fill_bias(qkv, 3 * h, tokens);
        let rec = stats.as_deref_mut().map(|s| &mut s.qkv);
        product(lin, qkv, 3 * h, x, h, tokens, true, rec);
    }
    for (k, lin) in layer.qkv_parts.iter().enumerate() {
        lin.fill_bias(&mut qkv[k * h..], 3 * h, tokens);
        lin.matmul(&mut qkv[k * h..], 3 * h, x, h, tokens, true);
    }
    let heads = (h, dims.heads);
    attention(qkv, ctx, batch, heads, first_only, dims.attention_fast);
    // mid = LayerNorm(x + bias + ctx · Woᵀ)
    let residual: Vec<f32>;
    let x_rows: &[f32] = if first_only {
        residual = batch.offsets[..pairs]
            .iter()
            .flat_map(|&o| x[o * h..(o + 1) * h].iter().copied())
            .collect();
        &residual
    } else {
        x
    };
    let bias = layer.attention_output.bias.as_slice();
    mid[..rows * h]
        .par_chunks_mut(h)
        .zip(x_rows.par_chunks(h))
        .for_each(|(m, r)| kernels::add_into(m, r, bias));
    let rec = stats.as_deref_mut().map(|s| &mut s.attention_output);
    product(&layer.attention_output, mid, h, ctx, h, rows, true, rec);
    layer
        .attention_norm
        .apply(&mut mid[..rows * h], h, dims.eps);
    // ffn = GELU(mid · Wiᵀ + bi): the bias is added with GELU.
    match stats.as_deref_mut() {
        Some(s) => {
            let rec = Some(&mut s.intermediate);
            product(&layer.intermediate, ffn, inter, mid, h, rows, false, rec);
            let bias = layer.intermediate.bias.as_slice();
            ffn[..rows * inter]
                .par_chunks_mut(inter)
                .for_each(|row| kernels::bias_gelu(row, bias));
        }
        None => layer
            .intermediate
            .matmul_bias_gelu(ffn, inter, mid, h, rows),
    }
    // x = LayerNorm(mid + bo + ffn · Wo2ᵀ)
    let bias = layer.output.bias.as_slice();
    x[..rows * h]
        .par_chunks_mut(h)
        .zip(mid.par_chunks(h))
        .for_each(|(d, m)| kernels::add_into(d, m, bias));
    let rec = stats.map(|s| &mut s.output);
    product(&layer.output, x, h, ffn, inter, rows, true, rec);
    layer.output_norm.apply(&mut x[..rows * h], h, dims.eps);
}

/// What [`CpuModel::quantize_calibrated`] measures activations on: 2
/// sequences of 64 random ids (fewer where the model allows fewer), seeded.
/// Random ids, not text: the channels whose activations are outliers are a
/// property of the trained weights (LayerNorm gains above all), which any
/// input shows; on all-MiniLM-L6-v2 random ids and English sentences gave
/// factors of the same accuracy. Seeded, so a model loads to the same
/// weights in every process.
///
/// Two, not four: the f32 pass over them is most of an int8 model's load
/// (full-size model, 2 cores: 1.8 s for 256 tokens, 1.0 s for 128), and
/// halving them moved the real-weights error about as much as changing the
/// weights' rounding from ties-away to ties-to-even did (`tests/it/real_bert.rs`: [CLS] 2.23e-2 → 2.31e-2, score 3.25e-2 →
/// 3.67e-2; rag-50 `<s>` 1.84e-2, inside its 2e-2 gate).
fn calibration_batch(cfg: &ModelConfig) -> PackedBatch {
    let space = crate::backend::TokenSpace::of(cfg);
    let len = space.max_tokens.min(64);
    let first = 5.min(space.vocab_size - 1) as u64;
    let mut rng = crate::synthetic::SplitMix64(0x5eed);
    let pairs: Vec<Vec<u32>> = (0..2)
        .map(|_| {
            (0..len)
                .map(|_| {
                    (first + rng.below((space.vocab_size as u64 - first) as usize) as u64) as u32
                })
                .collect()
        })
        .collect();
    PackedBatch::new(&pairs, &space).expect("calibration ids are within the model's limits")
}
