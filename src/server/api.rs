//! Request and response bodies of the two rerank APIs clients already speak:
//! text-embeddings-inference's `/rerank` and the Cohere/Jina `/v1/rerank`.
//! Unknown fields are ignored, so clients that send more still work.

use serde::{Deserialize, Serialize};

use crate::tokenize::Side;

/// `POST /rerank` (text-embeddings-inference).
#[derive(Debug, Clone, Deserialize)]
pub struct TeiRequest {
    pub query: String,
    pub texts: Vec<String>,
    /// Cut over-long pairs to the limit [default: `--auto-truncate`]; `false`
    /// makes an over-long pair a 422.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Which end of a text is cut [default: Right].
    #[serde(default)]
    pub truncation_direction: Option<Direction>,
    /// Raw logits instead of sigmoid scores [default: `--raw`, off].
    #[serde(default)]
    pub raw_scores: Option<bool>,
    /// Echo each text in its result.
    #[serde(default)]
    pub return_text: Option<bool>,
}

/// text-embeddings-inference's `truncation_direction`: `"Left"` or `"Right"`
/// (lowercase accepted too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Direction {
    #[serde(alias = "left", alias = "LEFT")]
    Left,
    #[serde(alias = "right", alias = "RIGHT")]
    Right,
}

impl From<Direction> for Side {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Left => Side::Left,
            Direction::Right => Side::Right,
        }
    }
}

/// One element of the `POST /rerank` answer (sorted by score, best first).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeiRank {
    pub index: usize,
    pub score: f32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub text: Option<String>,
}

/// `POST /v1/rerank` and `/v2/rerank` (Cohere, Jina, vLLM, Infinity).
#[derive(Debug, Clone, Deserialize)]
pub struct CohereRequest {
    /// Echoed back only in spirit: the answer names the model actually served.
    #[serde(default)]
    pub model: Option<String>,
    pub query: String,
    pub documents: Vec<Document>,
    /// Keep the best `top_n` results [default: all].
    #[serde(default)]
    pub top_n: Option<usize>,
    /// Include each document in its result [default: false].
    #[serde(default)]
    pub return_documents: Option<bool>,
}

/// A document: a plain string or an object with a `text` field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(
    untagged,
    expecting = "a document: a string or an object {\"text\": string}"
)]
pub enum Document {
    Text(String),
    Object { text: String },
}

impl Document {
    pub fn into_text(self) -> String {
        match self {
            Self::Text(t) | Self::Object { text: t } => t,
        }
    }
}

/// The answer of `POST /v1/rerank`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereResponse {
    pub id: String,
    pub model: String,
    pub results: Vec<CohereResult>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereResult {
    pub index: usize,
    /// Sigmoid score in (0, 1).
    pub relevance_score: f32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub document: Option<DocumentText>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentText {
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens fed to the model (after truncation, special tokens included).
    pub total_tokens: usize,
}

/// The answer of `GET /info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub model_id: String,
    pub model_type: String,
    pub model_dtype: String,
    pub model_device: String,
    /// Which implementation runs the forward pass: `cpu-f32`, `cpu-bf16`,
    /// `cpu-int8` (the hand-written CPU model) or `candle`.
    pub model_implementation: String,
    /// The CPU kernels in use, e.g. `int8=vnni bf16=avx512bf16 small-f32=avx512`
    /// (chosen from the CPU's features, capped by `RERANK_*_KERNEL`); absent off CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    /// Most tokens per pair, special tokens included.
    pub max_input_length: usize,
    pub max_client_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_batch_pairs: usize,
    pub max_concurrent_requests: usize,
    pub max_queued_pairs: usize,
    pub payload_limit: usize,
    pub auto_truncate: bool,
    pub version: String,
}
