//! The HTTP service behind `rerank serve` (cargo feature `server`).
//!
//! Routes: text-embeddings-inference's `POST /rerank` (which also takes a
//! Cohere body, as Infinity's and vLLM's do), the Cohere/Jina `POST /v1/rerank`
//! and `/v2/rerank`, NVIDIA NIM's `POST /v1/ranking`, the model lookups
//! `GET /v1/models`, `/v1/models/{id}` and `/v1/cluster/auth` (OpenAI-style
//! and Xinference clients), the probes `GET /health`, `/live` and `/ready`,
//! `GET /info`, `/metrics` (Prometheus), `/openapi.json`, and the playground
//! page at `GET /` (unless [`ServerConfig::playground`] is off).
//!
//! A request is validated, admitted under the queue's reservation limit
//! (429 otherwise), tokenized on a blocking thread, then its pairs go to the
//! [`Scheduler`], which batches pairs across requests for the model thread.
//! The probes never wait for the model: they read what the model thread
//! publishes (see [`Scheduler::health`]).
//! [`run`] takes a bound listener and a shutdown future, so tests bind
//! `127.0.0.1:0`; the binary only parses flags and calls it. It serves
//! HTTP/1 connections itself (hyper, with a header read timeout) and drains
//! on shutdown: new rerank requests get 503 while those in flight finish.
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
mod playground;
mod routes;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

pub use error::{ApiError, ApiJson, ErrorBody};
pub use metrics::Metrics;
pub use routes::router;

use crate::backend::Backend;
use crate::cache::ScoreCache;
use crate::chunk::{ChunkParams, Chunked, LongDocuments};
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

    /// Each passage as the windows chunking scores ([`PairEncoder::encode_chunked`]),
    /// or without `chunking` as one pair, the passage first cut to
    /// `max_passage_tokens` (Cohere's `max_tokens_per_doc`).
    fn encode_chunked_passages(
        &self,
        query: &str,
        passages: &[String],
        truncation: &TruncationParams,
        chunking: Option<&ChunkParams>,
        max_passage_tokens: Option<usize>,
    ) -> Result<Vec<Chunked>>;
}

fn chunk_all(
    encoder: &PairEncoder,
    query: &str,
    passages: &[String],
    truncation: &TruncationParams,
    chunking: Option<&ChunkParams>,
    max_passage_tokens: Option<usize>,
) -> Result<Vec<Chunked>> {
    use rayon::prelude::*;
    let q = encoder.text_ids(query)?;
    passages
        .par_iter()
        .map(|p| match chunking {
            Some(c) => encoder.encode_chunked(&q, p, truncation, c, max_passage_tokens),
            None => {
                let mut ids = encoder.text_ids(p)?;
                ids.truncate(max_passage_tokens.unwrap_or(usize::MAX));
                Ok(Chunked::whole(encoder.join_ids(&q, &ids, truncation), p))
            }
        })
        .collect()
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

    fn encode_chunked_passages(
        &self,
        query: &str,
        passages: &[String],
        truncation: &TruncationParams,
        chunking: Option<&ChunkParams>,
        max_passage_tokens: Option<usize>,
    ) -> Result<Vec<Chunked>> {
        chunk_all(
            self,
            query,
            passages,
            truncation,
            chunking,
            max_passage_tokens,
        )
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

    fn encode_chunked_passages(
        &self,
        query: &str,
        passages: &[String],
        truncation: &TruncationParams,
        chunking: Option<&ChunkParams>,
        max_passage_tokens: Option<usize>,
    ) -> Result<Vec<Chunked>> {
        chunk_all(
            self.encoder(),
            query,
            passages,
            truncation,
            chunking,
            max_passage_tokens,
        )
    }
}

/// The model as the server sees it: a tokenizer, a backend and what `/info` reports.
pub struct ServedModel {
    /// Reported by `/info` and in the Cohere answers' `model`.
    pub name: String,
    /// What the model was loaded from (`--model`: hub id or directory), for
    /// `/info`'s `model_id`; `/v1/models/{id}` answers to it too.
    pub model_id: String,
    pub tokenizer: Arc<dyn PairTokenizer>,
    pub backend: Arc<dyn Backend>,
    /// Default truncation; requests may change the side or turn it off.
    pub truncation: TruncationParams,
    /// Whether long documents are chunked by default (`--long-documents`);
    /// a Cohere request's `max_chunks_per_doc` chunks anyway.
    pub long_documents: LongDocuments,
    /// The windows of chunking (`--chunk-tokens`, `--chunk-overlap`, `--max-chunks-per-doc`).
    pub chunking: ChunkParams,
    pub dtype: Dtype,
    pub device: DeviceKind,
    /// Which implementation runs the forward pass (`cpu-f32`, `candle`, …), for `/info`.
    pub implementation: String,
    /// The CPU kernels in use (`int8=vnni bf16=avx512bf16 …`), for `/info`; `None` off CPU.
    pub kernels: Option<String>,
    /// bf16 and int8 on CPU: each layer class's and attention's precision and why, for `/info`.
    pub layer_precision: Option<String>,
    /// Most pairs per forward pass.
    pub max_batch_pairs: usize,
    /// Most padded tokens per forward pass.
    pub max_batch_tokens: usize,
    /// Logits of pairs already scored: those found skip the queue.
    pub cache: Option<Arc<ScoreCache>>,
    /// The model as the cache's scope names it ([`Reranker::cache_identity`]).
    pub cache_identity: String,
    /// Batches split after a device out-of-memory error ([`Reranker::oom_splits`]).
    pub oom_splits: Option<Arc<std::sync::atomic::AtomicU64>>,
}

impl ServedModel {
    /// Serves a loaded [`Reranker`] with its own options (truncation, batch limits).
    /// `model_id` is the name too; set it to what the model was loaded from.
    pub fn from_reranker(name: impl Into<String>, reranker: Arc<Reranker>) -> Self {
        let options = reranker.options();
        let name = name.into();
        Self {
            model_id: name.clone(),
            name,
            truncation: *reranker.truncation(),
            long_documents: options.long_documents,
            chunking: options.chunking,
            dtype: reranker.dtype(),
            device: options.device,
            implementation: reranker.implementation().to_string(),
            kernels: reranker.kernels().map(|k| k.to_string()),
            layer_precision: reranker.layer_precision(),
            max_batch_pairs: options.batch_size,
            max_batch_tokens: options.max_batch_tokens,
            cache: reranker.cache().cloned(),
            cache_identity: reranker.cache_identity().to_string(),
            oom_splits: Some(reranker.oom_splits().clone()),
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
    /// Require `Authorization: Bearer <key>` on every route but the probes.
    pub api_key: Option<String>,
    /// Default of `raw_scores` on `/rerank`.
    pub raw_scores: bool,
    /// About how long one forward pass may hold the model (see
    /// [`SchedulerConfig::max_pass_time`]); `None`: no time cap.
    pub max_pass_time: Option<Duration>,
    /// A rerank request not answered within this time (from the end of its
    /// body) gets 504 and its queued pairs are dropped; `None`: no deadline.
    pub request_timeout: Option<Duration>,
    /// A connection that sends no complete request head within this time is
    /// closed (also the idle keep-alive timeout).
    pub header_read_timeout: Duration,
    /// A request whose body has not fully arrived within this time gets 408.
    pub body_read_timeout: Duration,
    /// `/live` fails when the model thread has shown no progress for this
    /// long (a forward pass running longer counts as stuck).
    pub liveness_timeout: Duration,
    /// `/ready` and `/health` queue a one-pair forward pass when no pass has
    /// succeeded for this long, at most once per this interval.
    pub probe_interval: Duration,
    /// `/ready` fails while more pairs than this are admitted and unanswered.
    pub ready_max_queued_pairs: Option<usize>,
    /// On shutdown, how long requests in flight may take to finish.
    pub drain_timeout: Duration,
    /// Serve the playground page at `GET /` (`--no-playground`: 404 there).
    pub playground: bool,
    /// The memory limit's plan the batch and queue limits were derived from
    /// (shown by `/info`); applying it is the caller's (see `rerank serve`).
    pub memory: Option<crate::memory::MemoryPlan>,
}

/// Default `max_client_batch_size`.
pub const DEFAULT_MAX_CLIENT_BATCH_SIZE: usize = 1024;
/// Default `max_concurrent_requests` (text-embeddings-inference's).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;
/// Default `max_queued_pairs`.
pub const DEFAULT_MAX_QUEUED_PAIRS: usize = 16384;
/// Default `payload_limit`: 8 MiB.
pub const DEFAULT_PAYLOAD_LIMIT: usize = 8 * 1024 * 1024;
/// Default `max_pass_time`: 0.5 s, so a small request waits about two such
/// passes next to a big one (BENCHMARKS.md has its throughput cost).
pub const DEFAULT_MAX_PASS_TIME: Duration = Duration::from_millis(500);
/// Default `header_read_timeout` and `body_read_timeout`.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `liveness_timeout`: far above the longest single pass measured
/// on a 2-core CPU (one 8192-token pair in f32, about 30 s).
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `probe_interval`.
pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(10);
/// Default `drain_timeout`: Kubernetes' default termination grace period.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
            max_pass_time: Some(DEFAULT_MAX_PASS_TIME),
            request_timeout: None,
            header_read_timeout: DEFAULT_READ_TIMEOUT,
            body_read_timeout: DEFAULT_READ_TIMEOUT,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            probe_interval: DEFAULT_PROBE_INTERVAL,
            ready_max_queued_pairs: None,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            playground: true,
            memory: None,
        }
    }
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

struct Inner {
    name: String,
    model_id: String,
    /// Unix time of the start, seconds (`created` of `/v1/models`).
    started: u64,
    tokenizer: Arc<dyn PairTokenizer>,
    truncation: TruncationParams,
    long_documents: LongDocuments,
    chunking: ChunkParams,
    dtype: Dtype,
    device: DeviceKind,
    implementation: String,
    kernels: Option<String>,
    layer_precision: Option<String>,
    cache: Option<Arc<ScoreCache>>,
    cache_identity: String,
    oom_splits: Option<Arc<std::sync::atomic::AtomicU64>>,
    config: ServerConfig,
    metrics: Arc<Metrics>,
    request_slots: Arc<Semaphore>,
    /// A short pair the probes send through the model when no pass succeeded lately.
    probe: Vec<u32>,
    /// Set on shutdown: new rerank requests get 503, `/ready` fails.
    draining: AtomicBool,
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
        for (name, value) in [
            ("header-read-timeout", Some(config.header_read_timeout)),
            ("body-read-timeout", Some(config.body_read_timeout)),
            ("liveness-timeout", Some(config.liveness_timeout)),
            ("request-timeout", config.request_timeout),
        ] {
            if value == Some(Duration::ZERO) {
                return Err(Error::InvalidOption(format!("{name} must be positive")));
            }
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
                max_pass_time: config.max_pass_time,
            },
            Some(Arc::new(move |b| observer_metrics.observe_batch(b))),
        )?;

        Ok(Self(Arc::new(Inner {
            name: model.name,
            model_id: model.model_id,
            started: unix_now(),
            tokenizer: model.tokenizer,
            truncation: model.truncation,
            long_documents: model.long_documents,
            chunking: model.chunking,
            dtype: model.dtype,
            device: model.device,
            implementation: model.implementation,
            kernels: model.kernels,
            layer_precision: model.layer_precision,
            cache: model.cache,
            cache_identity: model.cache_identity,
            oom_splits: model.oom_splits,
            request_slots: Arc::new(Semaphore::new(config.max_concurrent_requests)),
            config,
            metrics,
            probe,
            draining: AtomicBool::new(false),
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

    /// The score cache, if any.
    pub fn cache(&self) -> Option<&ScoreCache> {
        self.0.cache.as_deref()
    }

    /// Batches split after an out-of-memory error so far.
    pub fn oom_splits(&self) -> u64 {
        self.0
            .oom_splits
            .as_ref()
            .map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// The served model's name.
    pub fn model_name(&self) -> &str {
        &self.0.name
    }

    /// The start-up probe: scores one short pair through the scheduler,
    /// blocking the calling thread until it is done, so that the server
    /// fails at start, not on its first request, if the model cannot
    /// compute. `/ready` and `/health` answer 503 ("starting") until a
    /// forward pass has succeeded: this one, or the background probe the
    /// first of them queues.
    pub fn check_model(&self) -> Result<()> {
        self.0
            .scheduler
            .probe_now(self.0.probe.clone())
            .map_err(|e| {
                crate::error::Error::Unavailable(format!(
                    "the model failed its first forward pass: {e}"
                ))
            })
    }

    /// Refuses new rerank requests (503) and fails `/ready`; requests in
    /// flight go on. [`run`] calls it when its shutdown future resolves.
    pub fn begin_drain(&self) {
        self.0.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`AppState::begin_drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::SeqCst)
    }

    /// Rerank requests being handled (admitted, not yet answered).
    pub fn requests_in_flight(&self) -> usize {
        self.0.config.max_concurrent_requests - self.0.request_slots.available_permits()
    }
}

/// Seconds since the Unix epoch (0 on a clock set before it).
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves until `shutdown` resolves, then drains: new rerank requests get
/// 503 (the listener stays open, so clients get an answer rather than a
/// refused connection) while the requests in flight finish, for at most
/// [`ServerConfig::drain_timeout`]; then it stops accepting, closes the
/// connections once their responses are written, stops the model thread and
/// returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let connections = Connections {
        app: router(state.clone()),
        header_read_timeout: state.config().header_read_timeout,
        graceful: hyper_util::server::graceful::GracefulShutdown::new(),
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => connections.serve(accepted).await,
            () = &mut shutdown => break,
        }
    }

    state.begin_drain();
    let in_flight = state.requests_in_flight();
    tracing::info!("draining: {in_flight} requests in flight; new ones get 503");
    let drain_timeout = state.config().drain_timeout;
    let drained = async {
        while state.requests_in_flight() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let mut drained = std::pin::pin!(drained);
    let mut deadline = std::pin::pin!(tokio::time::sleep(drain_timeout));
    loop {
        tokio::select! {
            accepted = listener.accept() => connections.serve(accepted).await,
            () = &mut drained => break,
            () = &mut deadline => {
                tracing::warn!(
                    "drain timeout ({} s): {} requests still in flight are cut off",
                    drain_timeout.as_secs_f64(),
                    state.requests_in_flight()
                );
                break;
            }
        }
    }
    drop(listener);
    // Idle keep-alive connections close now, busy ones after their response.
    let closing = connections.graceful.shutdown();
    if tokio::time::timeout(Duration::from_secs(5), closing)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close within 5 s of the drain");
    }
    state.scheduler().shutdown();
    Ok(())
}

/// How [`run`] serves each accepted connection.
struct Connections {
    app: axum::Router,
    header_read_timeout: Duration,
    graceful: hyper_util::server::graceful::GracefulShutdown,
}

impl Connections {
    async fn serve(
        &self,
        accepted: std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)>,
    ) {
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!("cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(self.app.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let connection = self.graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!("connection closed: {e}");
            }
        });
    }
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
