//! `XLMRobertaForSequenceClassification` (and `RobertaForSequenceClassification`,
//! the same graph) as a cross-encoder: one logit per pair.
//!
//! Reference: `transformers/models/xlm_roberta/modeling_xlm_roberta.py`.
//! Tensors are found through the name map of [`crate::model::checkpoint`]; a
//! missing tensor names itself in the error.
//!
//! Unlike the reference, a batch is *packed*: the pairs' tokens are laid end to
//! end, so the linear layers (nearly all of the work) never see a padding
//! token and need no attention mask; attention runs per pair. This removes the
//! padding waste of length-mixed batches and makes a pair's score independent
//! of the batch it is in.

use candle_core::{DType, Device, IndexOp, Module, Tensor, D};
use candle_nn::VarBuilder;

mod attention;
#[cfg(feature = "cuda")]
mod cuda;
mod epilogue;
mod ops;

use self::attention::{first_rows, AttentionPlan, Group, Padded, ATTENTION_BLOCK_ELEMENTS};
use self::ops::{softmax_last_dim, split_heads, Epilogue, LayerNorm, Linear};
use crate::backend::PackedBatch;
use crate::config::ModelConfig;
use crate::model::checkpoint::{Checkpoint, LayerNames};

/// `roberta.embeddings`
#[derive(Debug, Clone)]
struct Embeddings {
    word_embeddings: Tensor,
    position_embeddings: Tensor,
    /// `token_type_embeddings`, indexed by the batch's token types.
    token_type: Tensor,
    layer_norm: LayerNorm,
}

impl Embeddings {
    fn load(vb: &VarBuilder, names: &Checkpoint, eps: f64) -> candle_core::Result<Self> {
        let table = |t: &crate::model::checkpoint::TableNames| vb.get((t.rows, t.dim), &t.name);
        Ok(Self {
            word_embeddings: table(&names.word_embeddings)?,
            position_embeddings: table(&names.position_embeddings)?,
            token_type: table(&names.token_type_embeddings)?,
            layer_norm: LayerNorm::load(vb, &names.embeddings_norm, eps)?,
        })
    }

    fn forward(&self, batch: &PackedBatch, device: &Device) -> candle_core::Result<Tensor> {
        let ids = Tensor::new(batch.ids.as_slice(), device)?;
        let pos = Tensor::new(batch.positions.as_slice(), device)?;
        let x = self.word_embeddings.index_select(&ids, 0)?;
        let x = (x + self.position_embeddings.index_select(&pos, 0)?)?;
        // A type the table lacks (a RoBERTa table has one row) reads row 0.
        let rows = self.token_type.dim(0)? as u32;
        let types: Vec<u32> = batch.types.iter().map(|&t| t.min(rows - 1)).collect();
        let types = Tensor::new(types.as_slice(), device)?;
        let x = (x + self.token_type.index_select(&types, 0)?)?;
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
    fn load(vb: &VarBuilder, names: &LayerNames, cfg: &ModelConfig) -> candle_core::Result<Self> {
        let eps = cfg.layer_norm_eps;
        let q = Linear::load(vb, &names.query)?;
        let k = Linear::load(vb, &names.key)?;
        let v = Linear::load(vb, &names.value)?;
        let scale = 1.0 / (cfg.head_dim() as f64).sqrt();
        let qkv = Linear {
            weight: Tensor::cat(&[(q.weight * scale)?, k.weight, v.weight], 0)?,
            bias: Tensor::cat(&[(q.bias * scale)?, k.bias, v.bias], 0)?,
        };
        Ok(Self {
            qkv,
            attention_output: Linear::load(vb, &names.attention_output)?,
            attention_norm: LayerNorm::load(vb, &names.attention_norm, eps)?,
            intermediate: Linear::load(vb, &names.intermediate)?,
            output: Linear::load(vb, &names.output)?,
            output_norm: LayerNorm::load(vb, &names.output_norm, eps)?,
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

/// `classifier`: `RobertaClassificationHead` (dense → tanh → out_proj) on `<s>`.
#[derive(Debug, Clone)]
struct ClassificationHead {
    dense: Linear,
    out_proj: Linear,
}

/// The whole cross-encoder.
#[derive(Debug, Clone)]
pub struct XlmRobertaForSequenceClassification {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    classifier: ClassificationHead,
    device: Device,
    dtype: DType,
}

impl XlmRobertaForSequenceClassification {
    /// Loads from a `VarBuilder` rooted at the checkpoint, tensors named by
    /// [`Checkpoint::xlm_roberta`].
    pub fn load(vb: VarBuilder, cfg: &ModelConfig) -> candle_core::Result<Self> {
        let names = Checkpoint::for_config(cfg);
        let layers = names
            .layers
            .iter()
            .map(|l| Layer::load(&vb, l, cfg))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            embeddings: Embeddings::load(&vb, &names, cfg.layer_norm_eps)?,
            layers,
            classifier: ClassificationHead {
                dense: Linear::load(&vb, &names.classifier_dense)?,
                out_proj: Linear::load(&vb, &names.classifier_out)?,
            },
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
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
