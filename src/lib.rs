//! # rerank
//!
//! A cross-encoder reranking engine for BAAI/bge-reranker-v2-m3 and models of
//! the same family (`XLMRobertaForSequenceClassification` with one label) and
//! BERT cross-encoders (`BertForSequenceClassification` with one label),
//! scoring `(query, passage)` pairs exactly as the PyTorch reference does.
//!
//! ```no_run
//! use rerank::{Reranker, RerankerOptions};
//!
//! let reranker = Reranker::load("models/bge-reranker-v2-m3", RerankerOptions::default())?;
//! // Sigmoid scores in input order.
//! let scores = reranker.score(&[("what is panda?", "The giant panda is a bear.")])?;
//! assert_eq!(scores.len(), 1);
//! // Passages best first, at most two of them.
//! let ranked = reranker.rank(
//!     "中国的首都是哪里？",
//!     &["北京是中国的政治中心和首都。", "首都机场很大。", "上海是经济中心。"],
//!     Some(2),
//! )?;
//! println!("best: passage {} ({:.4})", ranked[0].index, ranked[0].score);
//! # Ok::<(), rerank::Error>(())
//! ```
//!
//! # Layout
//! Each layer reads only the ones below it.
//! - `server` (cargo feature `server`, on by default): the HTTP service; routes,
//!   request/response types, errors → status codes, metrics.
//! - [`scheduler`]: cross-request batching queue under a padded-token budget; the model thread.
//! - [`backend`]: **the contract**: [`PackedBatch`] (checked when built), the
//!   [`Backend`] trait, the one batch planner ([`backend::BatchBudget`]), the score
//!   transform ([`ScoreTransform`]) and ranking.
//! - [`engine`]: [`Reranker`]: load → score / rank; implements [`Backend`].
//! - [`cache`]: [`ScoreCache`], the LRU of logits of pairs already scored
//!   (the engine's and the server's), scoped by model and options.
//! - [`model`]: the forward pass and the one place that decides which implementation
//!   runs it ([`model::Choice`], [`model::Model::load`]):
//!   - `model/checkpoint.rs`: the checkpoint's tensor-name map (both implementations
//!     and [`synthetic`] use it);
//!   - `model/candle/`: the graph in candle on every device (`ops.rs`, `attention.rs`,
//!     `cuda.rs` + `kernels.cu` for the fused GPU kernels);
//!   - `model/cpu/`: the hand-written CPU model (`weights.rs`, `linear.rs`, `attention.rs`);
//!   - `model/kernels/`: CPU kernels and their choice ([`model::Kernels`], the
//!     `RERANK_*_KERNEL` switches): `elementwise.rs`, `small_f32.rs`, `bf16/`, `i8/`
//!     (a file per instruction set: portable, AVX-512, AMX), `amx.rs`.
//! - [`chunk`]: long documents: windows of a passage, scored by the best one.
//! - [`tokenize`]: pair encoding and the truncation strategies of the reference tools.
//! - [`config`]: `config.json` → validated [`ModelConfig`].
//! - [`hub`]: a model id or directory → files; the Hugging Face cache; downloads.
//! - [`memory`]: a memory limit (flag or cgroup) → the token budget of a pass and
//!   the queue's bound ([`memory::MemoryPlan`]); out-of-memory batch splitting.
//! - [`synthetic`]: random-weight models with real shapes, for benchmarks.
//! - [`eval`]: retrieval evaluation (qrels + TREC runs → trec_eval's measures, paired t-test).
//! - [`error`]: the library's one error type.

// serde_json's `json!` recurses once per token; the OpenAPI document is one large literal.
#![recursion_limit = "256"]

pub mod backend;
pub mod cache;
pub mod chunk;
pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
pub mod hub;
pub mod memory;
pub mod model;
pub mod scheduler;
#[cfg(feature = "server")]
pub mod server;
pub mod synthetic;
pub mod tokenize;

pub use backend::{Backend, PackedBatch, Ranked, ScoreTransform};
pub use cache::ScoreCache;
pub use chunk::{ChunkParams, LongDocuments};
pub use config::ModelConfig;
pub use engine::{Reranker, RerankerOptions};
pub use error::{Error, Result};
pub use model::{DeviceKind, Dtype};
pub use tokenize::{Side, Truncation};
