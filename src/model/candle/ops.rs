//! The candle graph's building blocks: linear layers with their epilogue,
//! LayerNorm, softmax and the head split, each taking the fused kernel of
//! `cuda.rs` on a GPU where it has one.

#[cfg(feature = "cuda")]
use candle_core::DType;
use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

pub(crate) use super::epilogue::Epilogue;
use crate::model::checkpoint::{LinearNames, NormNames};

/// `y = x Wᵀ + b` on 2-D activations.
#[derive(Debug, Clone)]
pub(super) struct Linear {
    pub(super) weight: Tensor,
    pub(super) bias: Tensor,
}

impl Linear {
    pub(super) fn load(vb: &VarBuilder, names: &LinearNames) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get((names.out_dim, names.in_dim), &names.weight)?,
            bias: vb.get(names.out_dim, &names.bias)?,
        })
    }
}

impl Linear {
    /// `epilogue(x Wᵀ)`; `residual` is needed by [`Epilogue::BiasResidual`] only.
    pub(super) fn apply(
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
pub(super) struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    pub(super) fn load(vb: &VarBuilder, names: &NormNames, eps: f64) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get(names.dim, &names.weight)?,
            bias: vb.get(names.dim, &names.bias)?,
            eps: eps as f32,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

/// Whether the fused CUDA kernels of `cuda.rs` handle `x` (f16 or f32 on a
/// GPU); other dtypes (bf16) take candle's own kernels.
#[cfg(feature = "cuda")]
fn fused_cuda(x: &Tensor) -> bool {
    x.device().is_cuda() && matches!(x.dtype(), DType::F16 | DType::F32)
}

/// Softmax over the last dimension: the fused kernel on CUDA (see `cuda.rs`).
pub(super) fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fused_cuda(x) {
        return super::cuda::softmax_last_dim(x);
    }
    candle_nn::ops::softmax_last_dim(x)
}

/// One pair's fused QKV projection `(len, 3·heads·hd)` as per-head Q, K and V:
/// `(len, 3, heads, hd)` → `(3, heads, len, hd)`, the fused kernel on CUDA.
pub(super) fn split_heads(
    qkv: &Tensor,
    heads: usize,
    head_dim: usize,
) -> candle_core::Result<Tensor> {
    #[cfg(feature = "cuda")]
    if fused_cuda(qkv) {
        return super::cuda::split_heads(qkv, heads, head_dim);
    }
    qkv.reshape((qkv.dim(0)?, 3, heads, head_dim))?
        .permute((1, 2, 0, 3))?
        .contiguous()
}
