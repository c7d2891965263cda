//! What follows a linear layer's matmul: shared by the graph ([`super::ops`])
//! and, on a GPU, the fused kernels of `cuda.rs` that run it in one pass.

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
