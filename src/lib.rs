//! # rerank
//!
//! A cross-encoder reranking engine for BAAI/bge-reranker-v2-m3 and models of
//! the same family (`XLMRobertaForSequenceClassification` with one label),
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
//! - [`config`]: `config.json` → validated [`ModelConfig`].
//! - [`tokenize`]: pair encoding and the truncation strategies of the reference tools.
//! - [`model`]: the forward pass: candle (every device) and the hand-written CPU model with
//!   f32 / bf16 / int8 linear layers and their kernels (AMX, AVX-512, AVX2, portable); packed
//!   batches without padding.
//! - [`engine`]: [`Reranker`]: load → score / rank; length-sorted batching; score transforms.
//! - [`synthetic`]: random-weight models with real shapes, for benchmarks.
//! - [`hub`]: a model id or directory → files; the Hugging Face cache; downloads.
//! - [`error`]: the library's one error type.
//! - [`scheduler`]: cross-request batching queue under a padded-token budget; the model thread.
//! - `server` (cargo feature `server`, on by default): the HTTP service; routes, request/response types, errors → status codes, metrics.

pub mod backend;
pub mod config;
pub mod engine;
pub mod error;
pub mod hub;
pub mod model;
pub mod scheduler;
#[cfg(feature = "server")]
pub mod server;
pub mod synthetic;
pub mod tokenize;

pub use backend::{Backend, PackedBatch, Ranked, ScoreTransform};
pub use config::ModelConfig;
pub use engine::{Reranker, RerankerOptions};
pub use error::{Error, Result};
pub use model::{DeviceKind, Dtype};
pub use tokenize::{Side, Truncation};
