//! `rerank serve`: the HTTP service (text-embeddings-inference's `/rerank`,
//! Cohere/Jina's `/v1/rerank`), until SIGINT or SIGTERM.

use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Args;
use rerank::server::{self, AppState, ServedModel, ServerConfig};

use super::ModelArgs;

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
    /// Require `Authorization: Bearer <KEY>` on every route but /health.
    #[arg(
        long,
        env = "RERANK_API_KEY",
        hide_env_values = true,
        help_heading = "Server"
    )]
    pub api_key: Option<String>,
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
        }
    }
}

pub fn run(args: &ServeArgs) -> Result<()> {
    // Loads (and sets the thread count) before the async runtime starts threads.
    let reranker = Arc::new(args.model.load()?);
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| args.model.model.to_string());
    // Fail at start, not on the first request, if the model cannot compute.
    let probe = reranker.encode_pairs(&[("health", "check")])?;
    reranker
        .forward(&[&probe[0].ids])
        .context("the model failed its first forward pass")?;
    let state = AppState::new(
        ServedModel::from_reranker(name, reranker),
        args.server_config(),
    )?;

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
        eprintln!("listening on http://{local} (POST /rerank, /v1/rerank; GET /health, /info, /metrics, /openapi.json)");
        tracing::info!("listening on http://{local}");
        server::run(listener, state, server::shutdown_signal())
            .await
            .context("server error")
    })?;
    eprintln!("stopped");
    Ok(())
}
