//! Model architectures. One file per architecture; names follow the checkpoints.

mod xlm_roberta;

pub use xlm_roberta::{PackedBatch, XlmRobertaForSequenceClassification};
