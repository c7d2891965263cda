//! Hand-written CPU forward pass of `XLMRobertaForSequenceClassification`.
//!
//! In f32 it computes exactly what [`super::XlmRobertaForSequenceClassification`]
//! (candle) computes, and replaces it on CPU because it is measurably
//! faster and leaner (see BENCHMARKS.md); with [`Precision::Bf16`] or
//! [`Precision::Int8`] only the encoder's linear layers change (see
//! `kernels/bf16/`, `kernels/i8/`), Q/K/V then fused into one layer so the
//! input is converted once. [`Precision::Int8`] quantizes the layers that read
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
//! - GELU, softmax and LayerNorm are the vectorized kernels of
//!   [`super::kernels`], in place.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use gemm::Parallelism;
use rayon::prelude::*;

use super::kernels::{self, bf16, i8, small_f32, Bf16Kernel, Kernels, SharedMut};
use super::kernels::{PackedBf16, PackedI8, QuantRows};
use super::{PackedBatch, Precision};
use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// Query rows × keys per attention tile: 128 × 512 scores = 256 KiB, half a
/// core's L2 here, so scores are written, exponentiated and read back from
/// cache; longer pairs go through several key tiles with an online softmax
/// (flash-attention style), so memory does not grow with len².
const ROW_BLOCK: usize = 128;
const KEY_BLOCK: usize = 512;

/// f32 data either borrowed from the mapped file or owned.
enum Buf {
    Mapped {
        map: Arc<memmap2::Mmap>,
        offset: usize,
        len: usize,
    },
    Owned(Vec<f32>),
}

impl Buf {
    /// Gives the data back: owned memory is freed, mapped pages are dropped
    /// from this process's resident set (the file stays mapped).
    fn release(&mut self) {
        if let Self::Mapped { map, offset, len } = self {
            // Whole pages inside the tensor only: neighbours stay untouched.
            let page = 4096;
            let start = offset.next_multiple_of(page);
            let end = (*offset + *len * 4) / page * page;
            if end > start {
                // SAFETY: a read-only file mapping; dropped pages are read
                // from the file again if anything touches them, and nothing
                // reads this tensor once it is packed.
                let _ = unsafe {
                    map.unchecked_advise_range(
                        memmap2::UncheckedAdvice::DontNeed,
                        start,
                        end - start,
                    )
                };
            }
        }
        *self = Self::Owned(Vec::new());
    }

    fn as_slice(&self) -> &[f32] {
        match self {
            // SAFETY: offset and len were checked against the map and for
            // 4-byte alignment when the tensor was found.
            Self::Mapped { map, offset, len } => unsafe {
                std::slice::from_raw_parts(map.as_ptr().add(*offset) as *const f32, *len)
            },
            Self::Owned(v) => v,
        }
    }
}

/// Where weights come from: a safetensors file, or tensors in memory.
pub enum WeightSource {
    /// A memory-mapped `model.safetensors`.
    Mapped {
        path: std::path::PathBuf,
        map: Arc<memmap2::Mmap>,
    },
    /// f32 tensors by name (synthetic models).
    Memory(HashMap<String, (Vec<usize>, Vec<f32>)>),
}

impl WeightSource {
    /// Maps a safetensors file.
    pub fn map(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        // SAFETY: read-only map; like every mmap user we assume the file is
        // not truncated by another process while we run.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(Self::Mapped {
            path: path.to_path_buf(),
            map: Arc::new(map),
        })
    }

    fn tensors(&self) -> Result<Tensors<'_>> {
        match self {
            Self::Mapped { path, map } => {
                let st =
                    safetensors::SafeTensors::deserialize(map).map_err(|e| Error::CorruptFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Tensors::Mapped { path, map, st })
            }
            Self::Memory(m) => Ok(Tensors::Memory(m)),
        }
    }
}

enum Tensors<'a> {
    Mapped {
        path: &'a Path,
        map: &'a Arc<memmap2::Mmap>,
        st: safetensors::SafeTensors<'a>,
    },
    Memory(&'a HashMap<String, (Vec<usize>, Vec<f32>)>),
}

impl Tensors<'_> {
    fn path(&self) -> &Path {
        match self {
            Self::Mapped { path, .. } => path,
            Self::Memory(_) => Path::new("<memory>"),
        }
    }

    /// The named tensor with the expected shape, as f32.
    fn get(&self, name: &str, shape: &[usize]) -> Result<Buf> {
        let err = |reason: String| Error::Weights {
            path: self.path().to_path_buf(),
            reason,
        };
        match self {
            Self::Memory(m) => {
                let (s, data) = m
                    .get(name)
                    .ok_or_else(|| err(format!("cannot find tensor {name}")))?;
                if s.as_slice() != shape {
                    return Err(err(format!(
                        "tensor {name} has shape {s:?}, expected {shape:?}"
                    )));
                }
                Ok(Buf::Owned(data.clone()))
            }
            Self::Mapped { map, st, .. } => {
                let view = st
                    .tensor(name)
                    .map_err(|_| err(format!("cannot find tensor {name}")))?;
                if view.shape() != shape {
                    return Err(err(format!(
                        "tensor {name} has shape {:?}, expected {shape:?}",
                        view.shape()
                    )));
                }
                let bytes = view.data();
                let len = shape.iter().product::<usize>();
                match view.dtype() {
                    safetensors::Dtype::F32 => {
                        let offset = bytes.as_ptr() as usize - map.as_ptr() as usize;
                        if offset.is_multiple_of(4) && bytes.len() == len * 4 {
                            return Ok(Buf::Mapped {
                                map: Arc::clone(map),
                                offset,
                                len,
                            });
                        }
                        Ok(Buf::Owned(
                            bytes
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                                .collect(),
                        ))
                    }
                    safetensors::Dtype::F16 => Ok(Buf::Owned(
                        bytes
                            .chunks_exact(2)
                            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                            .collect(),
                    )),
                    safetensors::Dtype::BF16 => Ok(Buf::Owned(
                        bytes
                            .chunks_exact(2)
                            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                            .collect(),
                    )),
                    other => Err(err(format!(
                        "tensor {name} has unsupported dtype {other:?}"
                    ))),
                }
            }
        }
    }
}

/// `y = x Wᵀ + b` with `W` stored (out × in) as in the checkpoint.
struct Linear {
    weight: Buf,
    bias: Buf,
    in_dim: usize,
    out_dim: usize,
    /// The weights in the kernel's own format when the layer does not run
    /// in f32 (`weight` is then released).
    packed: Packed,
    /// Whether an f32 product of few rows may take [`small_f32`].
    few_rows_kernel: bool,
}

/// Weights converted for a low-precision kernel.
enum Packed {
    F32,
    Bf16(PackedBf16),
    Int8(PackedI8),
}

impl Linear {
    fn load(t: &Tensors, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        Ok(Self {
            weight: t.get(&format!("{prefix}.weight"), &[out_dim, in_dim])?,
            bias: t.get(&format!("{prefix}.bias"), &[out_dim])?,
            in_dim,
            out_dim,
            packed: Packed::F32,
            few_rows_kernel: true,
        })
    }

    /// Keeps this layer on `gemm` at every row count. For the f32 layers of an
    /// int8 model (CPUs without AMX): their output is quantized next, and the
    /// few-rows kernel's other summation order (last-bit differences) can
    /// flip a quantization step, so a pair would score differently alone and
    /// in a batch (tests/precision.rs catches it with the fallback kernels).
    fn gemm_at_any_rows(mut self) -> Self {
        self.few_rows_kernel = false;
        self
    }

    /// Converts the weights for `precision`'s kernel and releases the f32 ones.
    fn pack(mut self, precision: Precision) -> Self {
        let w = self.weight.as_slice();
        self.packed = match precision {
            Precision::F32 => return self,
            Precision::Bf16 => Packed::Bf16(PackedBf16::pack(w, self.out_dim, self.in_dim)),
            Precision::Int8 => Packed::Int8(PackedI8::quantize(w, self.out_dim, self.in_dim)),
        };
        self.weight.release();
        self
    }

    /// Q, K and V as one (3H × H) layer: one pass over the input instead of
    /// three, which matters when that pass also converts it (bf16, int8).
    fn fused(mut parts: Vec<Linear>, precision: Precision) -> Self {
        let (in_dim, out_dim) = (parts[0].in_dim, parts.iter().map(|l| l.out_dim).sum());
        let cat = |parts: &[Linear], f: fn(&Linear) -> &[f32]| {
            parts.iter().flat_map(|l| f(l).iter().copied()).collect()
        };
        let weight = Buf::Owned(cat(&parts, |l| l.weight.as_slice()));
        let bias = Buf::Owned(cat(&parts, |l| l.bias.as_slice()));
        parts.iter_mut().for_each(|l| l.weight.release());
        Self {
            weight,
            bias,
            in_dim,
            out_dim,
            packed: Packed::F32,
            few_rows_kernel: true,
        }
        .pack(precision)
    }

    /// `dst[r] (+)= x[r] · Wᵀ` for `rows` rows; `dst` has row stride `dst_rs`
    /// and `x` row stride `x_rs`. With `accumulate`, adds to what `dst` holds.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &self,
        kernels: Kernels,
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
                return bf16::matmul(kernels.bf16, dst, dst_rs, x, x_rs, rows, w, accumulate)
            }
            Packed::Int8(w) => {
                // The quantized rows reuse one buffer per thread instead of a
                // fresh (up to tokens × 4096 bytes) allocation per layer. Taken
                // out, not borrowed, so a nested call on this thread (rayon
                // work-stealing) gets its own.
                let mut q = QUANT_ROWS.take();
                i8::quantize_rows(kernels.i8, x, x_rs, rows, self.in_dim, &mut q);
                i8::matmul(kernels.i8, dst, dst_rs, &q, w, rows, accumulate);
                QUANT_ROWS.set(q);
                return;
            }
        }
        let w = self.weight.as_slice();
        if self.few_rows_kernel
            && small_f32::pays_off(rows, self.out_dim, self.in_dim)
            && kernels.small_f32
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

    /// Fills `rows` rows of `dst` (row stride `dst_rs`) with the bias.
    fn fill_bias(&self, dst: &mut [f32], dst_rs: usize, rows: usize) {
        let b = self.bias.as_slice();
        dst.par_chunks_mut(dst_rs)
            .take(rows)
            .for_each(|row| row[..self.out_dim].copy_from_slice(b));
    }
}

thread_local! {
    /// Activation buffer of the int8 layers, see [`Linear::matmul`].
    static QUANT_ROWS: std::cell::Cell<QuantRows> = std::cell::Cell::new(QuantRows::default());
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

struct LayerNorm {
    weight: Buf,
    bias: Buf,
}

impl LayerNorm {
    fn load(t: &Tensors, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            weight: t.get(&format!("{prefix}.weight"), &[dim])?,
            bias: t.get(&format!("{prefix}.bias"), &[dim])?,
        })
    }

    fn apply(&self, x: &mut [f32], dim: usize, eps: f32) {
        let (w, b) = (self.weight.as_slice(), self.bias.as_slice());
        x.par_chunks_mut(dim)
            .for_each(|row| kernels::layer_norm(row, w, b, eps));
    }
}

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
    token_type: Vec<f32>,
    embeddings_norm: LayerNorm,
    layers: Vec<Layer>,
    classifier_dense: Linear,
    classifier_out: Linear,
    hidden: usize,
    intermediate: usize,
    heads: usize,
    eps: f32,
    pad_token_id: u32,
    precision: Precision,
    kernels: Kernels,
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
    /// Loads the weights (tensor names as in the checkpoint).
    /// The encoder's linear layers run in `precision`; embeddings, LayerNorm,
    /// attention and the classification head always run in f32.
    pub fn load(source: &WeightSource, cfg: &ModelConfig, precision: Precision) -> Result<Self> {
        let kernels = Kernels::get()?;
        match precision {
            Precision::Int8 if !kernels.fast_i8() => tracing::warn!(
                "this CPU has no AVX512-VNNI: int8 runs a portable kernel that is slower than f32"
            ),
            Precision::Bf16 if kernels.bf16 != Bf16Kernel::Amx => {
                tracing::warn!(
                    "this CPU has no AMX (or the kernel refused it): bf16 runs the {:?} kernel, slower than f32",
                    kernels.bf16
                )
            }
            _ => {}
        }
        let t = source.tensors()?;
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        // int8 on the attention output and FFN output projections alone costs
        // more accuracy than on the other two: their inputs (attention context,
        // GELU output) have heavy-tailed rows that per-row u8 quantization
        // serves badly, and their error goes straight into the residual stream.
        // Measured on the full-size random model, rag-50 (max rel. L2 of the
        // `<s>` hidden state vs f32): all four int8 2.64e-2; these two in bf16
        // 1.84e-2 (the gate is 2e-2) for ~10 % more time; Q/K/V +
        // attention output in bf16 2.05e-2; intermediate + output 1.72e-2 at
        // ~18 %. Without AMX, bf16 is slower than f32 there, so f32 is used.
        let residual_precision = match precision {
            Precision::Int8 if kernels.bf16 == Bf16Kernel::Amx => Precision::Bf16,
            Precision::Int8 => Precision::F32,
            other => other,
        };
        let residual = |layer: Linear| {
            let layer = layer.pack(residual_precision);
            if precision == Precision::F32 {
                layer
            } else {
                layer.gemm_at_any_rows()
            }
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|n| {
                let p = format!("roberta.encoder.layer.{n}");
                let qkv_parts = ["query", "key", "value"]
                    .iter()
                    .map(|n| Linear::load(&t, &format!("{p}.attention.self.{n}"), h, h))
                    .collect::<Result<Vec<_>>>()?;
                let (qkv_parts, qkv) = match precision {
                    Precision::F32 => (qkv_parts, None),
                    _ => (Vec::new(), Some(Linear::fused(qkv_parts, precision))),
                };
                Ok(Layer {
                    qkv_parts,
                    qkv,
                    attention_output: residual(Linear::load(
                        &t,
                        &format!("{p}.attention.output.dense"),
                        h,
                        h,
                    )?),
                    attention_norm: LayerNorm::load(
                        &t,
                        &format!("{p}.attention.output.LayerNorm"),
                        h,
                    )?,
                    intermediate: Linear::load(&t, &format!("{p}.intermediate.dense"), h, i)?
                        .pack(precision),
                    output: residual(Linear::load(&t, &format!("{p}.output.dense"), i, h)?),
                    output_norm: LayerNorm::load(&t, &format!("{p}.output.LayerNorm"), h)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_type = t.get(
            "roberta.embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        Ok(Self {
            word_embeddings: t.get(
                "roberta.embeddings.word_embeddings.weight",
                &[cfg.vocab_size, h],
            )?,
            position_embeddings: t.get(
                "roberta.embeddings.position_embeddings.weight",
                &[cfg.max_position_embeddings, h],
            )?,
            token_type: token_type.as_slice()[..h].to_vec(),
            embeddings_norm: LayerNorm::load(&t, "roberta.embeddings.LayerNorm", h)?,
            layers,
            classifier_dense: Linear::load(&t, "classifier.dense", h, h)?,
            classifier_out: Linear::load(&t, "classifier.out_proj", h, 1)?,
            hidden: h,
            intermediate: i,
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps as f32,
            pad_token_id: cfg.pad_token_id as u32,
            precision,
            kernels,
            workspace: Mutex::default(),
        })
    }

    /// The arithmetic of the encoder's linear layers.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The pad token id, needed to build position ids.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
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
            let first_only = n == last;
            let rows = if first_only { pairs } else { tokens };
            // Q, K, V for every token, side by side in one (tokens × 3H) buffer.
            if let Some(lin) = &layer.qkv {
                lin.fill_bias(qkv, 3 * h, tokens);
                lin.matmul(self.kernels, qkv, 3 * h, &x, h, tokens, true);
            }
            for (k, lin) in layer.qkv_parts.iter().enumerate() {
                lin.fill_bias(&mut qkv[k * h..], 3 * h, tokens);
                lin.matmul(self.kernels, &mut qkv[k * h..], 3 * h, &x, h, tokens, true);
            }
            self.attention(qkv, ctx, batch, first_only);
            // mid = LayerNorm(x + bias + ctx · Woᵀ)
            let residual: Vec<f32>;
            let x_rows: &[f32] = if first_only {
                residual = batch.offsets[..pairs]
                    .iter()
                    .flat_map(|&o| x[o * h..(o + 1) * h].iter().copied())
                    .collect();
                &residual
            } else {
                &x
            };
            let bias = layer.attention_output.bias.as_slice();
            mid[..rows * h]
                .par_chunks_mut(h)
                .zip(x_rows.par_chunks(h))
                .for_each(|(m, r)| kernels::add_into(m, r, bias));
            layer
                .attention_output
                .matmul(self.kernels, mid, h, ctx, h, rows, true);
            layer
                .attention_norm
                .apply(&mut mid[..rows * h], h, self.eps);
            // ffn = GELU(mid · Wiᵀ + bi): the bias is added by the GELU pass.
            layer
                .intermediate
                .matmul(self.kernels, ffn, inter, mid, h, rows, false);
            let bias = layer.intermediate.bias.as_slice();
            ffn[..rows * inter]
                .par_chunks_mut(inter)
                .for_each(|row| kernels::bias_gelu(row, bias));
            // x = LayerNorm(mid + bo + ffn · Wo2ᵀ)
            let bias = layer.output.bias.as_slice();
            x[..rows * h]
                .par_chunks_mut(h)
                .zip(mid.par_chunks(h))
                .for_each(|(d, m)| kernels::add_into(d, m, bias));
            layer
                .output
                .matmul(self.kernels, &mut x, h, ffn, inter, rows, true);
            layer.output_norm.apply(&mut x[..rows * h], h, self.eps);
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
            .matmul(self.kernels, &mut dense, h, &x, h, pairs, true);
        dense.iter_mut().for_each(|v| *v = v.tanh());
        let mut logits = vec![0f32; pairs];
        self.classifier_out.fill_bias(&mut logits, 1, pairs);
        self.classifier_out
            .matmul(self.kernels, &mut logits, 1, &dense, h, pairs, true);
        x.truncate(pairs * h);
        (logits, x)
    }

    /// word + position + token type embeddings, then LayerNorm.
    fn embed(&self, batch: &PackedBatch) -> Vec<f32> {
        let h = self.hidden;
        let (word, pos) = (
            self.word_embeddings.as_slice(),
            self.position_embeddings.as_slice(),
        );
        let mut x = vec![0f32; batch.ids.len() * h];
        x.par_chunks_mut(h).enumerate().for_each(|(t, row)| {
            let (id, p) = (batch.ids[t] as usize, batch.positions[t] as usize);
            kernels::add_into(row, &word[id * h..(id + 1) * h], &pos[p * h..(p + 1) * h]);
            for (v, &tt) in row.iter_mut().zip(&self.token_type) {
                *v += tt;
            }
        });
        self.embeddings_norm.apply(&mut x, h, self.eps);
        x
    }

    /// Self-attention of every pair: `ctx` row r (or, with `first_only`,
    /// row i = pair i's `<s>`) gets softmax(q·kᵀ/√d)·v for every head.
    fn attention(&self, qkv: &[f32], ctx: &mut [f32], batch: &PackedBatch, first_only: bool) {
        let h = self.hidden;
        let d = h / self.heads;
        let scale = 1.0 / (d as f32).sqrt();
        assert!(qkv.len() >= batch.ids.len() * 3 * h);
        let out_rows = if first_only {
            batch.len()
        } else {
            batch.ids.len()
        };
        assert!(ctx.len() >= out_rows * h);
        let out = SharedMut(ctx.as_mut_ptr());
        let tasks: Vec<(usize, usize)> = (0..batch.len())
            .flat_map(|pair| (0..self.heads).map(move |head| (pair, head)))
            .collect();
        // Per thread: this head's K and V made contiguous (len × d), and a score block.
        let init = || (Vec::<f32>::new(), Vec::<f32>::new(), Scratch::default());
        tasks
            .into_par_iter()
            .for_each_init(init, |(k, v, scratch), (pair, head)| {
                let start = batch.offsets[pair];
                let len = batch.offsets[pair + 1] - start;
                let rows = if first_only { 1 } else { len };
                let pair_qkv = &qkv[start * 3 * h..(start + len) * 3 * h];
                // Gathering K and V once per head makes every block's matmul
                // read dense memory instead of 64 floats out of each 3H row.
                k.clear();
                v.clear();
                for row in pair_qkv.chunks_exact(3 * h) {
                    k.extend_from_slice(&row[h + head * d..h + (head + 1) * d]);
                    v.extend_from_slice(&row[2 * h + head * d..2 * h + (head + 1) * d]);
                }
                let out_row = if first_only { pair } else { start };
                // SAFETY: Q rows 0..rows of this pair lie in `pair_qkv` (row
                // stride 3H); each task writes only its own rows and its
                // head's columns of `ctx` (asserted large enough above), so
                // writes never overlap.
                unsafe {
                    head_attention(
                        HeadInput {
                            q: pair_qkv.as_ptr().add(head * d),
                            q_rs: 3 * h,
                            k,
                            v,
                            rows,
                            d,
                            scale,
                        },
                        out.ptr().add(out_row * h + head * d),
                        h,
                        scratch,
                        (ROW_BLOCK, KEY_BLOCK),
                    );
                }
            });
    }
}

/// One head of one pair, for [`head_attention`].
struct HeadInput<'a> {
    /// Query row 0, element 0; rows `q_rs` floats apart.
    q: *const f32,
    q_rs: usize,
    /// Keys and values, contiguous (len × d).
    k: &'a [f32],
    v: &'a [f32],
    /// Query rows to compute.
    rows: usize,
    d: usize,
    scale: f32,
}

/// Per-thread buffers of the attention.
#[derive(Default)]
struct Scratch {
    scores: Vec<f32>,
    /// Per query row of a tile: running max, running sum, correction.
    stats: Vec<f32>,
}

/// softmax(scale · q kᵀ) v for `rows` query rows, written to `out` (row
/// stride `out_rs`), tile by tile: for each block of query rows, key blocks
/// in turn with an online softmax that rescales what earlier key blocks
/// added. With one key block this is the plain softmax.
///
/// # Safety
/// `input.q` must point to `rows` rows of `d` floats `q_rs` apart, and `out`
/// to `rows` rows of `d` writable floats `out_rs` apart that nobody else
/// touches meanwhile.
unsafe fn head_attention(
    input: HeadInput,
    out: *mut f32,
    out_rs: usize,
    scratch: &mut Scratch,
    (row_block, key_block): (usize, usize),
) {
    let HeadInput {
        q,
        q_rs,
        k,
        v,
        rows,
        d,
        scale,
    } = input;
    let len = k.len() / d;
    let mut r0 = 0;
    while r0 < rows {
        let n = row_block.min(rows - r0);
        let q = q.add(r0 * q_rs);
        let out = out.add(r0 * out_rs);
        scratch.stats.clear();
        scratch
            .stats
            .extend((0..n).flat_map(|_| [f32::NEG_INFINITY, 0.0, 0.0]));
        let mut c0 = 0;
        while c0 < len {
            let c = key_block.min(len - c0);
            scratch.scores.resize(n * c, 0.0);
            // scores (n × c) = scale · Q (n × d) · K[c0..c0+c]ᵀ (d × c)
            gemm::gemm(
                n,
                c,
                d,
                scratch.scores.as_mut_ptr(),
                1,
                c as isize,
                false,
                q,
                1,
                q_rs as isize,
                k.as_ptr().add(c0 * d),
                d as isize,
                1,
                0.0,
                scale,
                false,
                false,
                false,
                Parallelism::None,
            );
            for (row, st) in scratch
                .scores
                .chunks_exact_mut(c)
                .zip(scratch.stats.chunks_exact_mut(3))
            {
                kernels::softmax_tile(row, st);
            }
            if c0 > 0 {
                // Earlier key blocks were normalized to an older max.
                for (i, st) in scratch.stats.chunks_exact(3).enumerate() {
                    let row = std::slice::from_raw_parts_mut(out.add(i * out_rs), d);
                    row.iter_mut().for_each(|o| *o *= st[2]);
                }
            }
            // out (n × d) (+)= P (n × c) · V[c0..c0+c] (c × d)
            gemm::gemm(
                n,
                d,
                c,
                out,
                1,
                out_rs as isize,
                c0 > 0,
                scratch.scores.as_ptr(),
                1,
                c as isize,
                v.as_ptr().add(c0 * d),
                1,
                d as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            );
            c0 += c;
        }
        for (i, st) in scratch.stats.chunks_exact(3).enumerate() {
            let row = std::slice::from_raw_parts_mut(out.add(i * out_rs), d);
            let inv = 1.0 / st[1];
            row.iter_mut().for_each(|o| *o *= inv);
        }
        r0 += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiled attention with several key blocks equals one plain softmax pass.
    #[test]
    fn tiled_attention_equals_the_plain_formula() {
        let (len, d, rows) = (150, 8, 37);
        let mut rng = crate::synthetic::SplitMix64(7);
        let mut rand = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| (rng.below(2001) as f32 - 1000.0) / 250.0)
                .collect()
        };
        let (q, k, v) = (rand(rows * d), rand(len * d), rand(len * d));
        let scale = 0.35;
        let mut want = vec![0f32; rows * d];
        for r in 0..rows {
            let s: Vec<f32> = (0..len)
                .map(|j| scale * (0..d).map(|c| q[r * d + c] * k[j * d + c]).sum::<f32>())
                .collect();
            let m = s.iter().cloned().fold(f32::MIN, f32::max);
            let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
            let z: f32 = e.iter().sum();
            for c in 0..d {
                want[r * d + c] = (0..len).map(|j| e[j] * v[j * d + c]).sum::<f32>() / z;
            }
        }
        for blocks in [(rows, len), (16, 40), (5, 7), (64, 1)] {
            let mut got = vec![0f32; rows * d];
            let input = HeadInput {
                q: q.as_ptr(),
                q_rs: d,
                k: &k,
                v: &v,
                rows,
                d,
                scale,
            };
            // SAFETY: q, got are rows × d, k and v len × d.
            unsafe { head_attention(input, got.as_mut_ptr(), d, &mut Scratch::default(), blocks) };
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (a - b).abs() < 1e-4,
                    "blocks {blocks:?}, element {i}: {a} vs {b}"
                );
            }
        }
    }
}
