//! Request and response bodies of the rerank APIs clients already speak:
//! text-embeddings-inference's `/rerank`, the Cohere/Jina/Infinity/vLLM
//! `/v1/rerank` (also a Cohere body on `/rerank`), NVIDIA NIM's `/v1/ranking`,
//! and the model lookups of OpenAI-style and Xinference clients.
//! Unknown fields are ignored, so clients that send more still work, and
//! every boolean also accepts the strings `"true"` and `"false"` (RAGFlow's
//! Xinference provider sends `"return_documents": "true"`).

use serde::{Deserialize, Deserializer, Serialize};

use crate::tokenize::Side;

/// A boolean field: `true`, `false`, `null`, or the strings `"true"` and
/// `"false"` in any case, as Xinference's own server (pydantic) accepts.
fn flexible_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(
        untagged,
        expecting = "a boolean: true or false (or the strings \"true\", \"false\")"
    )]
    enum Flexible {
        Bool(bool),
        Text(String),
    }
    match Option::<Flexible>::deserialize(d)? {
        None => Ok(None),
        Some(Flexible::Bool(b)) => Ok(Some(b)),
        Some(Flexible::Text(t)) if t.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Flexible::Text(t)) if t.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(Flexible::Text(t)) => Err(serde::de::Error::custom(format!(
            "expected a boolean: true or false (or the strings \"true\", \"false\"), got the string {t:?}"
        ))),
    }
}

/// `POST /rerank` (text-embeddings-inference).
#[derive(Debug, Clone, Deserialize)]
pub struct TeiRequest {
    pub query: String,
    pub texts: Vec<String>,
    /// Cut over-long pairs to the limit [default: `--auto-truncate`]; `false`
    /// makes an over-long pair a 422.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub truncate: Option<bool>,
    /// Which end of a text is cut [default: Right].
    #[serde(default)]
    pub truncation_direction: Option<Direction>,
    /// Raw logits instead of sigmoid scores [default: `--raw`, off].
    #[serde(default, deserialize_with = "flexible_bool")]
    pub raw_scores: Option<bool>,
    /// Echo each text in its result.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub return_text: Option<bool>,
    /// Keep the best `top_n` [default: all]. An extension: text-embeddings-inference
    /// ignores it, litellm's `huggingface/` provider sends it.
    #[serde(default)]
    pub top_n: Option<usize>,
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

/// `POST /v1/rerank` and `/v2/rerank` (Cohere, Jina, vLLM, Infinity), and
/// `POST /rerank` when the body has `documents` (Infinity's and vLLM's route).
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
    /// Include each document in its result [default: false]; ignored on
    /// `/rerank`, where Infinity answers a string and vLLM an object.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub return_documents: Option<bool>,
    /// Raw logits as `relevance_score` instead of sigmoid scores [default: off]
    /// (Infinity's field; infinity_client always sends it).
    #[serde(default, deserialize_with = "flexible_bool")]
    pub raw_scores: Option<bool>,
    /// Cohere v2: each document is cut to its first `max_tokens_per_doc`
    /// tokens before it is paired with the query [default: no limit].
    #[serde(default)]
    pub max_tokens_per_doc: Option<usize>,
    /// Cohere v1: chunk documents too long for a pair into at most this many
    /// windows and score each by its best [default: `--long-documents`,
    /// `--max-chunks-per-doc`].
    #[serde(default)]
    pub max_chunks_per_doc: Option<usize>,
    /// Cut over-long pairs (`false`: an over-long pair is a 422) [default:
    /// `--auto-truncate`]; text-embeddings-inference's field, an extension here.
    #[serde(default, deserialize_with = "flexible_bool")]
    pub truncate: Option<bool>,
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

/// The answer of `POST /v1/rerank` (and of a Cohere body on `/rerank`):
/// Cohere's fields, with Infinity's and Together's `object`, `created` and
/// `usage.prompt_tokens` (infinity_client requires them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CohereResponse {
    pub id: String,
    /// Always `"rerank"`.
    pub object: String,
    /// Unix time of the answer, in seconds.
    pub created: u64,
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
    /// An extension, present only when chunking split the document: the
    /// window that gave the score (`start`, `end` in characters of the document).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window: Option<crate::chunk::Window>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentText {
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens fed to the model (after truncation, special tokens included);
    /// equal to `total_tokens`, as nothing is generated.
    pub prompt_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn of(tokens: usize) -> Self {
        Self {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }
    }
}

/// `POST /v1/ranking` (NVIDIA NIM's text reranking API).
#[derive(Debug, Clone, Deserialize)]
pub struct NimRequest {
    /// Ignored: the served model answers.
    #[serde(default)]
    pub model: Option<String>,
    pub query: NimText,
    pub passages: Vec<NimText>,
    /// `"NONE"` (an over-long pair is a 422) or `"END"` (cut the passage's
    /// end) [default: `--auto-truncate`].
    #[serde(default)]
    pub truncate: Option<NimTruncate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct NimText {
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum NimTruncate {
    #[serde(rename = "NONE", alias = "none")]
    None,
    #[serde(rename = "END", alias = "end")]
    End,
}

/// The answer of `POST /v1/ranking`: raw logits, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NimResponse {
    pub rankings: Vec<NimRanking>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NimRanking {
    pub index: usize,
    pub logit: f32,
}

/// `GET /v1/models`: the OpenAI-style list (NVIDIA's client picks its model
/// from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    /// Always `"list"`.
    pub object: String,
    pub data: Vec<ModelCard>,
}

/// One served model, in the shape OpenAI-style and Xinference clients read:
/// `GET /v1/models/{id}` answers it alone. No `root` field: NVIDIA's client
/// skips a model whose `root` differs from its `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    /// Always `"model"`.
    pub object: String,
    /// Unix time the server started, in seconds.
    pub created: u64,
    pub owned_by: String,
    /// Xinference's fields: `"rerank"`, the name, `["rerank"]`.
    pub model_type: String,
    pub model_name: String,
    pub model_uid: String,
    pub model_ability: Vec<String>,
    /// Most tokens per pair, special tokens included.
    pub max_input_length: usize,
}

/// `GET /v1/cluster/auth` (Xinference): whether rerank calls need the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAuth {
    pub auth: bool,
}

/// text-embeddings-inference's `model_type` for a reranker, an externally
/// tagged object: `{"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}}`
/// (Dify's TEI provider reads its first key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelType {
    Reranker(ClassifierLabels),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassifierLabels {
    pub id2label: std::collections::BTreeMap<String, String>,
    pub label2id: std::collections::BTreeMap<String, usize>,
}

impl ModelType {
    /// A reranker with one output label, as text-embeddings-inference reports it.
    pub fn single_label_reranker() -> Self {
        Self::Reranker(ClassifierLabels {
            id2label: [("0".to_string(), "LABEL_0".to_string())].into(),
            label2id: [("LABEL_0".to_string(), 0)].into(),
        })
    }
}

/// The answer of `GET /info`: text-embeddings-inference's `Info` fields
/// (same names and types), then this server's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// The model as given to `--model` (hub id or directory).
    pub model_id: String,
    /// The Hugging Face revision, when known; always `null` here for now.
    pub model_sha: Option<String>,
    pub model_dtype: String,
    /// The name answers carry (`--served-model-name`, default `--model`).
    pub served_model_name: String,
    pub model_type: ModelType,
    pub model_device: String,
    /// Which implementation runs the forward pass: `cpu-f32`, `cpu-bf16`,
    /// `cpu-int8` (the hand-written CPU model) or `candle`.
    pub model_implementation: String,
    /// The CPU kernels in use, e.g. `int8=vnni bf16=avx512bf16 small-f32=avx512`
    /// (chosen from the CPU's features, capped by `RERANK_*_KERNEL`); absent off CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<String>,
    /// bf16 and int8 on CPU: which precision each class of linear layers and
    /// attention's products run in and why, e.g. `q/k/v, ffn-in int8; attn-out/ffn-out bf16 (AMX); attention bf16 (AMX)`;
    /// absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_precision: Option<String>,
    /// Most tokens per pair, special tokens included.
    pub max_input_length: usize,
    pub max_client_batch_size: usize,
    pub max_batch_tokens: usize,
    pub max_batch_pairs: usize,
    pub max_concurrent_requests: usize,
    pub max_queued_pairs: usize,
    pub payload_limit: usize,
    pub auto_truncate: bool,
    /// Most requests per forward pass: `null`, pairs of any number of
    /// requests share a pass (bounded by `max_batch_pairs` and `max_batch_tokens`).
    pub max_batch_requests: Option<usize>,
    /// Threads that tokenize (the engine's thread pool).
    pub tokenization_workers: usize,
    pub version: String,
    /// The git commit of the build, when built with `RERANK_GIT_SHA` set.
    pub sha: Option<String>,
    /// The container image label, when built with `DOCKER_LABEL` set.
    pub docker_label: Option<String>,
    /// The score cache (`--cache-size`): capacity, entries, estimated bytes,
    /// hits, misses, evictions; `null` when off.
    pub score_cache: Option<crate::cache::CacheStats>,
    /// The memory limit and what was derived from it (`--memory-limit`, or
    /// the cgroup's); `null` without a limit.
    pub memory: Option<crate::memory::MemoryPlan>,
}
