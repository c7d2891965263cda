//! Model architectures. One file per architecture; names follow the checkpoints.
//!
//! Two implementations of the same graph: [`XlmRobertaForSequenceClassification`]
//! in candle (every device, f32/f16/bf16) and [`CpuModel`], hand-written for
//! the CPU where it is measurably faster (see `cpu.rs`), with its encoder's
//! linear layers in f32, bf16 or int8 (the kernels are in `kernels/`).

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
pub mod kernels;
mod xlm_roberta;

/// Arithmetic of the encoder's linear layers in [`CpuModel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 weights and activations (the reference's arithmetic).
    F32,
    /// bf16 weights and activations, f32 accumulation.
    Bf16,
    /// int8 weights (symmetric, per output channel), u8 activations
    /// (asymmetric, per row), i32 accumulation.
    Int8,
}

pub use cpu::{CpuModel, WeightSource};
pub use kernels::Kernels;
pub use xlm_roberta::{PackedBatch, XlmRobertaForSequenceClassification};

/// A loaded model, whichever implementation runs it.
pub enum Model {
    Candle(Box<XlmRobertaForSequenceClassification>),
    Cpu(Box<CpuModel>),
}

impl Model {
    /// One raw logit per pair, in batch order.
    pub fn forward(&self, batch: &PackedBatch) -> crate::Result<Vec<f32>> {
        match self {
            Self::Candle(m) => Ok(m.forward(batch)?),
            Self::Cpu(m) => Ok(m.forward(batch)),
        }
    }

    /// The pad token id, needed to build position ids.
    pub fn pad_token_id(&self) -> u32 {
        match self {
            Self::Candle(m) => m.pad_token_id(),
            Self::Cpu(m) => m.pad_token_id(),
        }
    }

    /// Logits and the final `<s>` hidden states (pairs × hidden), for
    /// accuracy checks of the low-precision paths.
    pub fn forward_hidden(&self, batch: &PackedBatch) -> crate::Result<(Vec<f32>, Vec<f32>)> {
        match self {
            Self::Candle(m) => Ok(m.forward_hidden(batch)?),
            Self::Cpu(m) => Ok(m.forward_hidden(batch)),
        }
    }

    /// Which implementation runs, for logs and `/info`.
    pub fn implementation(&self) -> &'static str {
        match self {
            Self::Candle(_) => "candle",
            Self::Cpu(m) => match m.precision() {
                Precision::F32 => "cpu-f32",
                Precision::Bf16 => "cpu-bf16",
                Precision::Int8 => "cpu-int8",
            },
        }
    }
}
