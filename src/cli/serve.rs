//! `rerank serve`: the HTTP service (text-embeddings-inference's `/rerank`,
//! Cohere/Jina's `/v1/rerank`), until SIGINT or SIGTERM.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rerank::memory::{self, LimitSource, MemoryPlan};
use rerank::server::{self, AppState, ServedModel, ServerConfig};

use super::ModelArgs;

/// Default `--cache-size`: on, since a cached logit is the computed one to the
/// bit, and small: about 1.3 MiB, under 0.1 % of the f32 model's weights.
pub const DEFAULT_CACHE_SIZE: usize = 16384;

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(
        long,
        env = "RERANK_HOST",
        default_value = "127.0.0.1",
        help_heading = "Server"
    )]
    pub host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(
        long,
        env = "RERANK_PORT",
        default_value_t = 8080,
        help_heading = "Server"
    )]
    pub port: u16,
    /// Name reported by /info and in the Cohere answers' "model" [default: --model].
    #[arg(long, env = "RERANK_SERVED_MODEL_NAME", help_heading = "Server")]
    pub served_model_name: Option<String>,
    /// Most rerank requests handled at once; more get 429 with Retry-After.
    #[arg(long, env = "RERANK_MAX_CONCURRENT_REQUESTS", default_value_t = server::DEFAULT_MAX_CONCURRENT_REQUESTS, help_heading = "Server")]
    pub max_concurrent_requests: usize,
    /// Most pairs admitted and not yet answered across requests; more get 429 with Retry-After.
    #[arg(long, env = "RERANK_MAX_QUEUED_PAIRS", default_value_t = server::DEFAULT_MAX_QUEUED_PAIRS, help_heading = "Server")]
    pub max_queued_pairs: usize,
    /// Most documents in one request; more get 422.
    #[arg(long, env = "RERANK_MAX_CLIENT_BATCH_SIZE", default_value_t = server::DEFAULT_MAX_CLIENT_BATCH_SIZE, help_heading = "Server")]
    pub max_client_batch_size: usize,
    /// Most bytes in a request body; more get 413.
    #[arg(long, env = "RERANK_PAYLOAD_LIMIT", default_value_t = server::DEFAULT_PAYLOAD_LIMIT, help_heading = "Server")]
    pub payload_limit: usize,
    /// Cut over-long pairs by default (a request's "truncate": false still gets 422).
    #[arg(long, env = "RERANK_AUTO_TRUNCATE", default_value_t = true, action = clap::ArgAction::Set, help_heading = "Server")]
    pub auto_truncate: bool,
    /// Require `Authorization: Bearer <KEY>` on every route but the probes (/health, /live, /ready).
    #[arg(
        long,
        env = "RERANK_API_KEY",
        hide_env_values = true,
        help_heading = "Server"
    )]
    pub api_key: Option<String>,
    /// About how long one forward pass may hold the model, in seconds: a pass takes at most
    /// this time's worth of tokens at the measured speed, so small requests are not stuck
    /// behind big ones (0: only --max-batch-tokens bounds a pass).
    #[arg(long, env = "RERANK_MAX_PASS_TIME", value_name = "SECONDS", default_value = "0.5", value_parser = parse_seconds, help_heading = "Load")]
    pub max_pass_time: Duration,
    /// Answer 504 to a rerank request not done within this many seconds, dropping its queued
    /// pairs (0: no deadline).
    #[arg(long, env = "RERANK_REQUEST_TIMEOUT", value_name = "SECONDS", default_value = "0", value_parser = parse_seconds, help_heading = "Load")]
    pub request_timeout: Duration,
    /// Close a connection that sends no complete request head within this many seconds
    /// (also the idle keep-alive timeout).
    #[arg(long, env = "RERANK_HEADER_READ_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = parse_positive_seconds, help_heading = "Load")]
    pub header_read_timeout: Duration,
    /// Answer 408 to a request whose body has not fully arrived within this many seconds.
    #[arg(long, env = "RERANK_BODY_READ_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = parse_positive_seconds, help_heading = "Load")]
    pub body_read_timeout: Duration,
    /// On SIGTERM/SIGINT, seconds the requests in flight may take to finish (new ones get 503).
    #[arg(long, env = "RERANK_DRAIN_TIMEOUT", value_name = "SECONDS", default_value = "30", value_parser = parse_seconds, help_heading = "Probes")]
    pub drain_timeout: Duration,
    /// /live fails when the model thread shows no progress for this many seconds (one forward
    /// pass running longer counts as stuck).
    #[arg(long, env = "RERANK_LIVENESS_TIMEOUT", value_name = "SECONDS", default_value = "300", value_parser = parse_positive_seconds, help_heading = "Probes")]
    pub liveness_timeout: Duration,
    /// /ready and /health run a one-pair forward pass in the background when none has succeeded
    /// for this many seconds, at most once per interval.
    #[arg(long, env = "RERANK_PROBE_INTERVAL", value_name = "SECONDS", default_value = "10", value_parser = parse_seconds, help_heading = "Probes")]
    pub probe_interval: Duration,
    /// /ready fails (so a load balancer sends traffic elsewhere) while more pairs than this are
    /// admitted and unanswered [default: no threshold].
    #[arg(
        long,
        env = "RERANK_READY_MAX_QUEUED_PAIRS",
        value_name = "PAIRS",
        help_heading = "Probes"
    )]
    pub ready_max_queued_pairs: Option<usize>,
    /// Pairs whose logits are kept in the score cache (an LRU, about 83 bytes a pair): a pair
    /// seen again skips the queue and the forward pass, with the same score to the bit
    /// (0: no cache).
    #[arg(long, env = "RERANK_CACHE_SIZE", value_name = "PAIRS", default_value_t = DEFAULT_CACHE_SIZE, help_heading = "Load")]
    pub cache_size: usize,
    /// Memory this server may use, e.g. 3G or 512M (powers of 1024): the padded tokens of a
    /// forward pass and the pairs the queue holds are derived from it and the model's memory
    /// per token, below --max-batch-tokens and --max-queued-pairs; `none`: no limit
    /// [default: the cgroup's memory limit (a container's), when one is set].
    #[arg(long, env = "RERANK_MEMORY_LIMIT", value_name = "SIZE", value_parser = parse_memory_limit, help_heading = "Load")]
    pub memory_limit: Option<MemoryLimit>,
    /// Do not serve the playground page at GET / (it then answers 404).
    #[arg(long, env = "RERANK_NO_PLAYGROUND", help_heading = "Server")]
    pub no_playground: bool,
}

/// `--memory-limit`: a size, or `none`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryLimit {
    Bytes(u64),
    Unlimited,
}

fn parse_memory_limit(s: &str) -> Result<MemoryLimit, String> {
    Ok(memory::parse_size(s)?.map_or(MemoryLimit::Unlimited, MemoryLimit::Bytes))
}

/// Seconds as a decimal number (`0.5`, `30`).
fn parse_seconds(s: &str) -> Result<Duration, String> {
    let value: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds (e.g. 0.5 or 30)"))?;
    Duration::try_from_secs_f64(value)
        .map_err(|_| format!("`{s}`: seconds must be a finite number, 0 or more"))
}

fn parse_positive_seconds(s: &str) -> Result<Duration, String> {
    let d = parse_seconds(s)?;
    if d.is_zero() {
        return Err(format!("`{s}`: must be more than 0 seconds"));
    }
    Ok(d)
}

/// Zero means "off".
fn nonzero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl ServeArgs {
    fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_client_batch_size: self.max_client_batch_size,
            max_concurrent_requests: self.max_concurrent_requests,
            max_queued_pairs: self.max_queued_pairs,
            payload_limit: self.payload_limit,
            auto_truncate: self.auto_truncate,
            api_key: self.api_key.clone().filter(|k| !k.is_empty()),
            raw_scores: self.model.raw,
            max_pass_time: nonzero(self.max_pass_time),
            request_timeout: nonzero(self.request_timeout),
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            liveness_timeout: self.liveness_timeout,
            probe_interval: self.probe_interval,
            ready_max_queued_pairs: self.ready_max_queued_pairs,
            drain_timeout: self.drain_timeout,
            playground: !self.no_playground,
            memory: None,
        }
    }
}

/// Lowers the pass and queue limits to what the memory plan allows (never
/// raises them), and says so at start.
fn apply_plan(
    plan: &MemoryPlan,
    model: &mut ServedModel,
    config: &mut ServerConfig,
    max_length: usize,
) {
    model.max_batch_tokens = model.max_batch_tokens.min(plan.max_batch_tokens);
    // A full request must stay admissible: the queue holds at least one.
    config.max_queued_pairs = config
        .max_queued_pairs
        .min(plan.max_queued_pairs.max(config.max_client_batch_size));
    config.memory = Some(*plan);
    eprintln!("{}", plan.summary());
    eprintln!(
        "limits in force: --max-batch-tokens {}, --max-queued-pairs {}",
        model.max_batch_tokens, config.max_queued_pairs
    );
    tracing::info!(
        max_batch_tokens = model.max_batch_tokens,
        max_queued_pairs = config.max_queued_pairs,
        "{}",
        plan.summary()
    );
    if plan.longest_pair_that_fits < max_length {
        eprintln!(
            "warning: one pair of {max_length} tokens (--max-length) needs about {} for its forward pass, more than this limit leaves ({}); such a pair still runs, alone, and may exceed the limit: set --max-length {} or less to stay within it",
            memory::human(plan.activations.pass_bytes(max_length, max_length)),
            memory::human(plan.pass_bytes),
            plan.longest_pair_that_fits
        );
    }
    if plan.max_queued_pairs < config.max_client_batch_size {
        eprintln!(
            "warning: the queue holds {} pairs so that one request of --max-client-batch-size {} is admitted; at {max_length} tokens each they may need more than the {} left for it: lower --max-client-batch-size to stay within the limit",
            config.max_queued_pairs,
            config.max_client_batch_size,
            memory::human(plan.queue_bytes)
        );
    }
}

pub fn run(args: &ServeArgs) -> Result<()> {
    // Loads (and sets the thread count) before the async runtime starts threads.
    let cache = rerank::ScoreCache::new(args.cache_size).map(Arc::new);
    let reranker = Arc::new(args.model.load()?.with_cache(cache));
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.model.to_string());
    let limit = match args.memory_limit {
        Some(MemoryLimit::Bytes(b)) => Some((b, LimitSource::Flag)),
        Some(MemoryLimit::Unlimited) => None,
        None => memory::cgroup_limit().map(|b| (b, LimitSource::Cgroup)),
    };
    let plan = limit
        .map(|(bytes, source)| reranker.memory_plan(bytes, source))
        .transpose()?;
    let mut model = ServedModel {
        model_id: args.model.model.to_string(),
        ..ServedModel::from_reranker(name, reranker.clone())
    };
    let mut config = args.server_config();
    if let Some(plan) = plan {
        apply_plan(
            &plan,
            &mut model,
            &mut config,
            reranker.truncation().max_length,
        );
    }
    let state = AppState::new(model, config)?;
    // Fail at start, not on the first request, if the model cannot compute;
    // its success is also what makes /ready answer 200.
    state.check_model()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rerank-http")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        eprintln!("listening on http://{local} (POST /rerank, /v1/rerank, /v1/ranking; GET /health, /live, /ready, /info, /v1/models, /metrics, /openapi.json)");
        if !args.no_playground {
            eprintln!("playground: http://{local}/");
        }
        tracing::info!("listening on http://{local}");
        server::run(listener, state, server::shutdown_signal())
            .await
            .context("server error")
    })?;
    eprintln!("stopped");
    Ok(())
}
