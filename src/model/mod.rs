//! Model architectures. One file per architecture; names follow the checkpoints.
//!
//! Two implementations of the same graph: [`XlmRobertaForSequenceClassification`]
//! in candle (every device and dtype) and [`CpuF32Model`], hand-written for
//! f32 on CPU where it is measurably faster (see `cpu_f32.rs`).

mod cpu_f32;
mod kernels;
mod xlm_roberta;

pub use cpu_f32::{CpuF32Model, WeightSource};
pub use xlm_roberta::{PackedBatch, XlmRobertaForSequenceClassification};

/// A loaded model, whichever implementation runs it.
pub enum Model {
    Candle(Box<XlmRobertaForSequenceClassification>),
    CpuF32(Box<CpuF32Model>),
}

impl Model {
    /// One raw logit per pair, in batch order.
    pub fn forward(&self, batch: &PackedBatch) -> crate::Result<Vec<f32>> {
        match self {
            Self::Candle(m) => Ok(m.forward(batch)?),
            Self::CpuF32(m) => Ok(m.forward(batch)),
        }
    }

    /// The pad token id, needed to build position ids.
    pub fn pad_token_id(&self) -> u32 {
        match self {
            Self::Candle(m) => m.pad_token_id(),
            Self::CpuF32(m) => m.pad_token_id(),
        }
    }

    /// Which implementation runs, for logs and `/info`.
    pub fn implementation(&self) -> &'static str {
        match self {
            Self::Candle(_) => "candle",
            Self::CpuF32(_) => "cpu-f32",
        }
    }
}
