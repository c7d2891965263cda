//! `XLMRobertaForSequenceClassification` (and `RobertaForSequenceClassification`,
//! the same graph) as a cross-encoder: one logit per pair.
//!
//! Reference: `transformers/models/xlm_roberta/modeling_xlm_roberta.py`.
//! Struct and `vb.pp` names follow the checkpoint's tensor names, so a
//! missing tensor names itself in the error.
//!
//! Unlike the reference, a batch is *packed*: the pairs' tokens are laid end to
//! end, so the linear layers (nearly all of the work) never see a padding
//! token and need no attention mask; attention runs per pair. This removes the
//! padding waste of length-mixed batches and makes a pair's score independent
//! of the batch it is in.

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::VarBuilder;

use crate::config::ModelConfig;

/// Most attention-score elements (heads × query rows × keys) held at once:
/// 32 Mi elements = 128 MiB in f32. Long pairs are processed in blocks of
/// query rows so an 8192-token pair never materializes all heads'
/// 8192×8192 score matrices (16 × 256 MiB).
const ATTENTION_BLOCK_ELEMENTS: usize = 32 << 20;

/// Pairs up to this many tokens have their attention computed together,
/// padded to the longest (see [`AttentionPlan`]); longer pairs one by
/// one. Measured on an H200 in f16: with pairs of ~80–160 tokens the padded
/// path served 3.5–4× the pairs/s; with every pair padded (seed-512x10,
/// seed-1024x20, rag-50) it was 1.2–2.5× slower than pair by pair, because the
/// gather, the masked broadcast add and the unpad copies grow with len².
const PADDED_ATTENTION_MAX_LEN: usize = 256;

/// Pairs laid end to end, ready for [`XlmRobertaForSequenceClassification::forward`].
#[derive(Debug, Clone)]
pub struct PackedBatch {
    /// All token ids, pair after pair.
    pub ids: Vec<u32>,
    /// Position ids: `pad_token_id + 1 + i` within each pair.
    pub positions: Vec<u32>,
    /// Start of each pair in `ids`, plus the total length at the end.
    pub offsets: Vec<usize>,
}

impl PackedBatch {
    /// Packs pairs of token ids. Position ids follow
    /// `create_position_ids_from_input_ids`: real tokens get `pad + 1 + index`.
    pub fn new<S: AsRef<[u32]>>(pairs: &[S], pad_token_id: u32) -> Self {
        let total = pairs.iter().map(|p| p.as_ref().len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        let mut offsets = Vec::with_capacity(pairs.len() + 1);
        for p in pairs {
            let p = p.as_ref();
            offsets.push(ids.len());
            ids.extend_from_slice(p);
            positions.extend((0..p.len() as u32).map(|i| pad_token_id + 1 + i));
        }
        offsets.push(ids.len());
        Self {
            ids,
            positions,
            offsets,
        }
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the batch holds no pair.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn pair(&self, i: usize) -> (usize, usize) {
        (self.offsets[i], self.offsets[i + 1] - self.offsets[i])
    }
}

/// `y = x Wᵀ + b` on 2-D activations.
#[derive(Debug, Clone)]
struct Linear {
    weight: Tensor,
    bias: Tensor,
}

impl Linear {
    fn load(vb: VarBuilder, in_dim: usize, out_dim: usize) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((out_dim, in_dim), "weight")?,
            bias: vb.get(out_dim, "bias")?,
        })
    }
}

/// What follows a linear layer's matmul (fused into one pass on CUDA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Epilogue {
    /// `x + bias`
    Bias,
    /// `gelu_erf(x + bias)`: exact erf GELU, as `ACT2FN["gelu"]`
    BiasGelu,
    /// `x + bias + residual`
    BiasResidual,
}

impl Linear {
    /// `epilogue(x Wᵀ)`; `residual` is needed by [`Epilogue::BiasResidual`] only.
    fn apply(
        &self,
        x: &Tensor,
        epilogue: Epilogue,
        residual: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        #[cfg(feature = "cuda")]
        if fused_cuda(x) {
            return super::cuda::linear(x, &self.weight, &self.bias, epilogue, residual);
        }
        let y = x.matmul(&self.weight.t()?)?.broadcast_add(&self.bias)?;
        match (epilogue, residual) {
            (Epilogue::Bias, _) => Ok(y),
            (Epilogue::BiasGelu, _) => y.gelu_erf(),
            (Epilogue::BiasResidual, Some(r)) => y + r,
            (Epilogue::BiasResidual, None) => candle_core::bail!("BiasResidual needs a residual"),
        }
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.apply(x, Epilogue::Bias, None)
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn load(vb: VarBuilder, dim: usize, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            bias: vb.get(dim, "bias")?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// `roberta.embeddings`
#[derive(Debug, Clone)]
struct Embeddings {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// Row 0 of `token_type_embeddings`: a cross-encoder of this family
    /// always passes token_type_ids = 0 (type_vocab_size is 1).
    token_type: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: VarBuilder, cfg: &ModelConfig) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        let token_type = vb
            .get((cfg.type_vocab_size, h), "token_type_embeddings.weight")?
            .i(0)?;
        Ok(Self {
            word_embeddings: vb.get((cfg.vocab_size, h), "word_embeddings.weight")?,
            position_embeddings: vb.get(
                (cfg.max_position_embeddings, h),
                "position_embeddings.weight",
            )?,
            token_type,
            layer_norm: LayerNorm::load(vb.pp("LayerNorm"), h, cfg.layer_norm_eps)?,
        })
    }

    fn forward(&self, batch: &PackedBatch, device: &Device) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(batch.ids.as_slice(), device)?;
        let pos = Tensor::new(batch.positions.as_slice(), device)?;
        let x = self.word_embeddings.index_select(&ids, 0)?;
        let x = (x + self.position_embeddings.index_select(&pos, 0)?)?;
        let x = x.broadcast_add(&self.token_type)?;
        self.layer_norm.forward(&x)
    }
}

/// `roberta.encoder.layer.N`: post-LayerNorm attention block and feed-forward block.
#[derive(Debug, Clone)]
struct Layer {
    /// `attention.self.{query,key,value}` fused into one (3H × H) projection;
    /// the query rows are pre-multiplied by 1/√head_dim (the score scale).
    qkv: Linear,
    /// `attention.output.dense`
    attention_output: Linear,
    /// `attention.output.LayerNorm`
    attention_norm: LayerNorm,
    /// `intermediate.dense`
    intermediate: Linear,
    /// `output.dense`
    output: Linear,
    /// `output.LayerNorm`
    output_norm: LayerNorm,
    heads: usize,
    head_dim: usize,
}

impl Layer {
    fn load(vb: VarBuilder, cfg: &ModelConfig) -> candle_core::Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let sa = vb.pp("attention.self");
        let q = Linear::load(sa.pp("query"), h, h)?;
        let k = Linear::load(sa.pp("key"), h, h)?;
        let v = Linear::load(sa.pp("value"), h, h)?;
        let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
        let qkv = Linear {
            weight: Tensor::cat(&[(q.weight * scale)?, k.weight, v.weight], 0)?,
            bias: Tensor::cat(&[(q.bias * scale)?, k.bias, v.bias], 0)?,
        };
        Ok(Self {
            qkv,
            attention_output: Linear::load(vb.pp("attention.output.dense"), h, h)?,
            attention_norm: LayerNorm::load(
                vb.pp("attention.output.LayerNorm"),
                h,
                cfg.layer_norm_eps,
            )?,
            intermediate: Linear::load(vb.pp("intermediate.dense"), h, i)?,
            output: Linear::load(vb.pp("output.dense"), i, h)?,
            output_norm: LayerNorm::load(vb.pp("output.LayerNorm"), h, cfg.layer_norm_eps)?,
            heads: cfg.num_attention_heads,
            head_dim: cfg.head_dim(),
        })
    }

    /// `x`: (tokens, H). With `plan.first_only`, only the first token of each
    /// pair is computed (keys and values still see every token) and the result
    /// has one row per pair: all the classification head needs from the last
    /// layer.
    fn forward(
        &self,
        x: &Tensor,
        batch: &PackedBatch,
        plan: &AttentionPlan,
    ) -> candle_core::Result<Tensor> {
        let first_only = plan.first_only;
        let qkv = self.qkv.forward(x)?;
        let mut outs = Vec::with_capacity(plan.groups.len());
        for group in &plan.groups {
            outs.push(match group {
                Group::Alone(i) => {
                    let (start, len) = batch.pair(*i);
                    let rows = if first_only { 1 } else { len };
                    self.attention(&qkv.narrow(0, start, len)?, rows)?
                }
                Group::Padded(padded) => self.attention_padded(&qkv, padded, first_only)?,
            });
        }
        let context = Tensor::cat(&outs, 0)?;
        let residual = if first_only {
            x.index_select(&first_rows(batch, x.device())?, 0)?
        } else {
            x.clone()
        };
        let x = self.attention_norm.forward(&self.attention_output.apply(
            &context,
            Epilogue::BiasResidual,
            Some(&residual),
        )?)?;
        let hidden = self.intermediate.apply(&x, Epilogue::BiasGelu, None)?;
        self.output_norm.forward(
            &self
                .output
                .apply(&hidden, Epilogue::BiasResidual, Some(&x))?,
        )
    }

    /// Self-attention of a group of pairs at once, each padded to the longest
    /// with masked keys: one gather, one batched matmul / softmax / matmul and
    /// one scatter for all of them, where [`Self::attention`] launches that
    /// sequence per pair (on a GPU, short pairs were bound by those launches).
    /// `qkv`: (tokens, 3H) of the whole batch; returns the pairs' rows of the
    /// context, (their tokens, H), or (pairs, H) with `first_only`.
    fn attention_padded(
        &self,
        qkv: &Tensor,
        padded: &Padded,
        first_only: bool,
    ) -> candle_core::Result<Tensor> {
        let (nh, hd) = (self.heads, self.head_dim);
        let (n, longest) = (padded.pairs, padded.longest);
        let qkv = split_heads(&qkv.index_select(&padded.gather, 0)?, nh, hd)?; // (3, heads, n·longest, hd)
        let part = |i: usize| qkv.i(i)?.reshape((nh, n, longest, hd));
        let rows = if first_only { 1 } else { longest };
        let q = part(0)?.narrow(2, 0, rows)?.contiguous()?;
        let scores = q.matmul(&part(1)?.t()?)?.broadcast_add(&padded.mask)?;
        let context = softmax_last_dim(&scores)?.matmul(&part(2)?)?; // (heads, n, rows, hd)
        let context = context
            .permute((1, 2, 0, 3))?
            .reshape((n * rows, nh * hd))?;
        match &padded.keep {
            Some(keep) => context.index_select(keep, 0),
            None => Ok(context),
        }
    }

    /// Self-attention of one pair. `qkv`: (len, 3H); returns (rows, H) for the
    /// first `rows` query positions. Softmax over all `len` keys: no mask is
    /// needed because a packed pair has no padding.
    fn attention(&self, qkv: &Tensor, rows: usize) -> candle_core::Result<Tensor> {
        let len = qkv.dim(0)?;
        let (nh, hd) = (self.heads, self.head_dim);
        let qkv = split_heads(qkv, nh, hd)?;
        let q = qkv.i(0)?.narrow(1, 0, rows)?;
        let kt = qkv.i(1)?.t()?; // (heads, hd, len)
        let v = qkv.i(2)?;
        let block = (ATTENTION_BLOCK_ELEMENTS / (nh * len)).max(1);
        let mut parts = Vec::with_capacity(rows.div_ceil(block));
        let mut start = 0;
        while start < rows {
            let n = block.min(rows - start);
            let scores = q.narrow(1, start, n)?.contiguous()?.matmul(&kt)?;
            let probs = softmax_last_dim(&scores)?;
            parts.push(probs.matmul(&v)?); // (heads, n, hd)
            start += n;
        }
        let context = if parts.len() == 1 {
            parts.pop().expect("one part")
        } else {
            Tensor::cat(&parts, 1)?
        };
        context.transpose(0, 1)?.reshape((rows, nh * hd))
    }
}

/// Whether the fused CUDA kernels of `cuda.rs` handle `x` (f16 or f32 on a
/// GPU); other dtypes (bf16) take candle's own kernels.
#[cfg(feature = "cuda")]
fn fused_cuda(x: &Tensor) -> bool {
    x.device().is_cuda() && matches!(x.dtype(), DType::F16 | DType::F32)
}

/// Softmax over the last dimension: the fused kernel on CUDA (see `cuda.rs`).
fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fused_cuda(x) {
        return super::cuda::softmax_last_dim(x);
    }
    candle_nn::ops::softmax_last_dim(x)
}

/// One pair's fused QKV projection `(len, 3·heads·hd)` as per-head Q, K and V:
/// `(len, 3, heads, hd)` → `(3, heads, len, hd)`, the fused kernel on CUDA.
fn split_heads(qkv: &Tensor, heads: usize, head_dim: usize) -> candle_core::Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fused_cuda(qkv) {
        return super::cuda::split_heads(qkv, heads, head_dim);
    }
    qkv.reshape((qkv.dim(0)?, 3, heads, head_dim))?
        .permute((1, 2, 0, 3))?
        .contiguous()
}

/// Row index of each pair's `<s>` token in a packed batch.
fn first_rows(batch: &PackedBatch, device: &Device) -> candle_core::Result<Tensor> {
    let firsts: Vec<u32> = batch.offsets[..batch.len()]
        .iter()
        .map(|&o| o as u32)
        .collect();
    Tensor::new(firsts.as_slice(), device)
}

/// Which pairs of a batch go through attention together: the same in every
/// layer, so the groups and their index and mask tensors are built (and
/// uploaded to the device) once per forward pass, not once per layer.
struct AttentionPlan {
    groups: Vec<Group>,
    /// Only each pair's `<s>` row is computed (the last layer).
    first_only: bool,
}

enum Group {
    /// Pair `i` of the batch, attended alone.
    Alone(usize),
    /// Consecutive pairs padded to the longest (`Layer::attention_padded`).
    Padded(Padded),
}

struct Padded {
    pairs: usize,
    longest: usize,
    /// Row p·longest + t is token t of pair p; padding repeats the pair's
    /// first token.
    gather: Tensor,
    /// (1, pairs, 1, longest): 0 for real keys, -inf for padding.
    mask: Tensor,
    /// The real rows of the padded context, when some pair is shorter (and
    /// every row is computed).
    keep: Option<Tensor>,
}

impl AttentionPlan {
    /// Groups consecutive pairs of up to [`PADDED_ATTENTION_MAX_LEN`] tokens
    /// as long as their padded scores fit one block of
    /// [`ATTENTION_BLOCK_ELEMENTS`]; every other pair goes alone.
    fn new(
        batch: &PackedBatch,
        heads: usize,
        first_only: bool,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let rows = |len: usize| if first_only { 1 } else { len };
        let mut groups = Vec::new();
        let mut i = 0;
        while i < batch.len() {
            let mut longest = batch.pair(i).1;
            let mut end = i + 1;
            while end < batch.len() {
                let l = longest.max(batch.pair(end).1);
                if l > PADDED_ATTENTION_MAX_LEN
                    || (end + 1 - i) * heads * rows(l) * l > ATTENTION_BLOCK_ELEMENTS
                {
                    break;
                }
                longest = l;
                end += 1;
            }
            groups.push(if end - i == 1 {
                Group::Alone(i)
            } else {
                let rows = i..end;
                Group::Padded(Padded::new(
                    batch, rows, longest, first_only, dtype, device,
                )?)
            });
            i = end;
        }
        Ok(Self { groups, first_only })
    }
}

impl Padded {
    fn new(
        batch: &PackedBatch,
        pairs: std::ops::Range<usize>,
        longest: usize,
        first_only: bool,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let spans: Vec<(usize, usize)> = pairs.map(|i| batch.pair(i)).collect();
        let n = spans.len();
        let mut gather = Vec::with_capacity(n * longest);
        let mut mask = Vec::with_capacity(n * longest);
        for &(start, len) in &spans {
            for t in 0..longest {
                gather.push((start + if t < len { t } else { 0 }) as u32);
                mask.push(if t < len { 0f32 } else { f32::NEG_INFINITY });
            }
        }
        let keep = if first_only || spans.iter().all(|&(_, len)| len == longest) {
            None
        } else {
            let keep: Vec<u32> = spans
                .iter()
                .enumerate()
                .flat_map(|(p, &(_, len))| (0..len).map(move |t| (p * longest + t) as u32))
                .collect();
            Some(Tensor::new(keep.as_slice(), device)?)
        };
        Ok(Self {
            pairs: n,
            longest,
            gather: Tensor::new(gather.as_slice(), device)?,
            mask: Tensor::from_vec(mask, (1, n, 1, longest), device)?.to_dtype(dtype)?,
            keep,
        })
    }
}

/// `classifier`: `RobertaClassificationHead` (dense → tanh → out_proj) on `<s>`.
#[derive(Debug, Clone)]
struct ClassificationHead {
    dense: Linear,
    out_proj: Linear,
}

impl ClassificationHead {
    fn load(vb: VarBuilder, cfg: &ModelConfig) -> candle_core::Result<Self> {
        let h = cfg.hidden_size;
        Ok(Self {
            dense: Linear::load(vb.pp("dense"), h, h)?,
            out_proj: Linear::load(vb.pp("out_proj"), h, 1)?,
        })
    }
}

/// The whole cross-encoder.
#[derive(Debug, Clone)]
pub struct XlmRobertaForSequenceClassification {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    classifier: ClassificationHead,
    pad_token_id: u32,
    device: Device,
    dtype: DType,
}

impl XlmRobertaForSequenceClassification {
    /// Loads from a `VarBuilder` rooted at the checkpoint (tensors `roberta.*`, `classifier.*`).
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> candle_core::Result<Self> {
        let roberta = vb.pp("roberta");
        let layers = (0..cfg.num_hidden_layers)
            .map(|n| Layer::load(roberta.pp(format!("encoder.layer.{n}")), cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(roberta.pp("embeddings"), cfg)?,
            layers,
            classifier: ClassificationHead::load(vb.pp("classifier"), cfg)?,
            pad_token_id: cfg.pad_token_id as u32,
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// The pad token id, needed to build position ids.
    pub fn pad_token_id(&self) -> u32 {
        self.pad_token_id
    }

    /// The dtype the weights were loaded in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// One raw logit per pair, in batch order.
    pub fn forward(&self, batch: &PackedBatch) -> candle_core::Result<Vec<f32>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        Self::to_f32_vec(&self.logits(&self.first_tokens(batch)?)?)
    }

    /// Logits and the final `<s>` hidden states (pairs × hidden, row-major),
    /// in f32 whatever the model's dtype: for accuracy checks of f16/bf16.
    pub fn forward_hidden(&self, batch: &PackedBatch) -> candle_core::Result<(Vec<f32>, Vec<f32>)> {
        if batch.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let first = self.first_tokens(batch)?;
        let logits = Self::to_f32_vec(&self.logits(&first)?)?;
        let hidden = first
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok((logits, hidden))
    }

    /// The encoder's output at each pair's `<s>`: (pairs, H).
    fn first_tokens(&self, batch: &PackedBatch) -> candle_core::Result<Tensor> {
        let mut x = self.embeddings.forward(batch, &self.device)?;
        let Some(heads) = self.layers.first().map(|l| l.heads) else {
            return x.index_select(&first_rows(batch, &self.device)?, 0);
        };
        let plan =
            |first_only| AttentionPlan::new(batch, heads, first_only, self.dtype, &self.device);
        let (every_row, last_rows) = (plan(false)?, plan(true)?);
        let last = self.layers.len() - 1;
        for (n, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, batch, if n == last { &last_rows } else { &every_row })?;
        }
        Ok(x)
    }

    /// The classification head on the `<s>` rows: (pairs, 1).
    fn logits(&self, first: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.classifier.dense.forward(first)?.tanh()?;
        self.classifier.out_proj.forward(&h)
    }

    fn to_f32_vec(logits: &Tensor) -> candle_core::Result<Vec<f32>> {
        logits
            .squeeze(D::Minus1)?
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()
    }
}
