//! The HTTP service behind `rerank serve` (cargo feature `server`).
//!
//! Routes: text-embeddings-inference's `POST /rerank`, the Cohere/Jina
//! `POST /v1/rerank` and `/v2/rerank`, `GET /health`, `/info`, `/metrics`
//! (Prometheus) and `/openapi.json`.
//!
//! A request is validated, admitted under the queue's reservation limit
//! (429 otherwise), tokenized on a blocking thread, then its pairs go to the
//! [`Scheduler`], which batches pairs across requests for the model thread.
//! [`run`] takes a bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0`; the binary only parses flags and calls it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::sync::Arc;
//! use rerank::server::{self, AppState, ServedModel, ServerConfig};
//! use rerank::{Reranker, RerankerOptions};
//!
//! let reranker = Arc::new(Reranker::load("models/bge-reranker-v2-m3", RerankerOptions::default())?);
//! let state = AppState::new(ServedModel::from_reranker("bge-reranker-v2-m3", reranker), ServerConfig::default())?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server::run(listener, state, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```

pub mod api;
mod error;
mod metrics;
mod openapi;
mod routes;

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;

pub use error::{ApiError, ApiJson, ErrorBody};
pub use metrics::Metrics;
pub use routes::router;

use crate::backend::Backend;
use crate::engine::Reranker;
use crate::error::Result;
use crate::model::{DeviceKind, Dtype};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::tokenize::{EncodedPair, PairEncoder, TruncationParams};

/// Tokenization of one query against many texts: what the server needs
/// besides the [`Backend`].
pub trait PairTokenizer: Send + Sync + 'static {
    fn encode_passages(
        &self,
        query: &str,
        passages: &[String],
        truncation: &TruncationParams,
    ) -> Result<Vec<EncodedPair>>;
}

impl PairTokenizer for PairEncoder {
    fn encode_passages(
        &self,
        query: &str,
        passages: &[String],
        truncation: &TruncationParams,
    ) -> Result<Vec<EncodedPair>> {
        PairEncoder::encode_passages(self, query, passages, truncation)
    }
}

impl PairTokenizer for Reranker {
    fn encode_passages(
        &self,
        query: &str,
        passages: &[String],
        truncation: &TruncationParams,
    ) -> Result<Vec<EncodedPair>> {
        self.encoder().encode_passages(query, passages, truncation)
    }
}

/// The model as the server sees it: a tokenizer, a backend and what `/info` reports.
pub struct ServedModel {
    /// Reported by `/info` and in the Cohere answers' `model`.
    pub name: String,
    pub tokenizer: Arc<dyn PairTokenizer>,
    pub backend: Arc<dyn Backend>,
    /// Default truncation; requests may change the side or turn it off.
    pub truncation: TruncationParams,
    pub dtype: Dtype,
    pub device: DeviceKind,
    /// Which implementation runs the forward pass (`cpu-f32`, `candle`, …), for `/info`.
    pub implementation: String,
    /// The CPU kernels in use (`int8=vnni bf16=avx512bf16 …`), for `/info`; `None` off CPU.
    pub kernels: Option<String>,
    /// Most pairs per forward pass.
    pub max_batch_pairs: usize,
    /// Most padded tokens per forward pass.
    pub max_batch_tokens: usize,
}

impl ServedModel {
    /// Serves a loaded [`Reranker`] with its own options (truncation, batch limits).
    pub fn from_reranker(name: impl Into<String>, reranker: Arc<Reranker>) -> Self {
        let options = reranker.options();
        Self {
            name: name.into(),
            truncation: *reranker.truncation(),
            dtype: reranker.dtype(),
            device: options.device,
            implementation: reranker.implementation().to_string(),
            kernels: reranker.kernels().map(|k| k.to_string()),
            max_batch_pairs: options.batch_size,
            max_batch_tokens: options.max_batch_tokens,
            tokenizer: reranker.clone(),
            backend: reranker,
        }
    }
}

/// Limits and behaviour of the HTTP layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Most documents in one request (422 above).
    pub max_client_batch_size: usize,
    /// Most rerank requests being handled at once (429 above).
    pub max_concurrent_requests: usize,
    /// Most pairs admitted and not yet answered, across requests (429 above).
    pub max_queued_pairs: usize,
    /// Most bytes in a request body (413 above).
    pub payload_limit: usize,
    /// Default of `truncate`: cut over-long pairs instead of answering 422.
    pub auto_truncate: bool,
    /// Require `Authorization: Bearer <key>` on every route but `/health`.
    pub api_key: Option<String>,
    /// Default of `raw_scores` on `/rerank`.
    pub raw_scores: bool,
}

/// Default `max_client_batch_size`.
pub const DEFAULT_MAX_CLIENT_BATCH_SIZE: usize = 1024;
/// Default `max_concurrent_requests` (text-embeddings-inference's).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;
/// Default `max_queued_pairs`.
pub const DEFAULT_MAX_QUEUED_PAIRS: usize = 16384;
/// Default `payload_limit`: 8 MiB.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 8 * 1024 * 1024;

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_client_batch_size: DEFAULT_MAX_CLIENT_BATCH_SIZE,
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_queued_pairs: DEFAULT_MAX_QUEUED_PAIRS,
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
            auto_truncate: true,
            api_key: None,
            raw_scores: false,
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    name: String,
    tokenizer: Arc<dyn PairTokenizer>,
    truncation: TruncationParams,
    dtype: Dtype,
    device: DeviceKind,
    implementation: String,
    kernels: Option<String>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    request_slots: Arc<Semaphore>,
    /// A short pair the health check sends through the model.
    probe: Vec<u32>,
    // Last: dropping it waits for the model thread.
    scheduler: Scheduler,
}

impl AppState {
    /// Starts the model thread. Fails if the limits make no sense.
    pub fn new(model: ServedModel, config: ServerConfig) -> Result<Self> {
        use crate::error::Error;
        if config.max_client_batch_size == 0 || config.max_concurrent_requests == 0 {
            return Err(Error::InvalidOption(
                "max-client-batch-size and max-concurrent-requests must be at least 1".into(),
            ));
        }
        if config.max_queued_pairs < config.max_client_batch_size {
            return Err(Error::InvalidOption(format!(
                "max-queued-pairs ({}) must be at least max-client-batch-size ({}), or a full request could never be admitted",
                config.max_queued_pairs, config.max_client_batch_size
            )));
        }
        let probe = model
            .tokenizer
            .encode_passages("health", &["check".to_string()], &model.truncation)?
            .remove(0)
            .ids;
        let metrics = Arc::new(Metrics::new());
        let observer_metrics = Arc::clone(&metrics);
        let scheduler = Scheduler::new(
            model.backend,
            SchedulerConfig {
                max_batch_tokens: model.max_batch_tokens,
                max_batch_pairs: model.max_batch_pairs,
                max_queued_pairs: config.max_queued_pairs,
            },
            Some(Arc::new(move |b| observer_metrics.observe_batch(b))),
        )?;
        Ok(Self(Arc::new(Inner {
            name: model.name,
            tokenizer: model.tokenizer,
            truncation: model.truncation,
            dtype: model.dtype,
            device: model.device,
            implementation: model.implementation,
            kernels: model.kernels,
            request_slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            metrics,
            probe,
            scheduler,
        })))
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.config
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.0.scheduler
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    /// The served model's name.
    pub fn model_name(&self) -> &str {
        &self.0.name
    }
}

/// Serves until `shutdown` resolves, then stops accepting connections,
/// finishes the requests in flight and returns. The model thread stops when
/// the last clone of `state` is dropped.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    state.scheduler().shutdown();
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}
