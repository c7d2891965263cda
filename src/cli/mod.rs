//! Subcommands of the `rerank` binary, one file each, and the flags they share.

pub mod score;

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rerank::{DeviceKind, Dtype, Reranker, RerankerOptions, Truncation};

/// Flags of every command that loads a model; each also reads an env var.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// Model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long, env = "RERANK_MODEL")]
    pub model: PathBuf,
    /// Most tokens per pair, special tokens included [default: 8192, or the model's limit if lower].
    #[arg(long, env = "RERANK_MAX_LENGTH")]
    pub max_length: Option<usize>,
    /// Most pairs per forward pass.
    #[arg(long, env = "RERANK_BATCH_SIZE", default_value_t = rerank::engine::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Most padded tokens per forward pass (bounds memory).
    #[arg(long, env = "RERANK_MAX_BATCH_TOKENS", default_value_t = rerank::engine::DEFAULT_MAX_BATCH_TOKENS)]
    pub max_batch_tokens: usize,
    /// f32, f16 or bf16 [default: f32 on cpu, f16 on cuda].
    #[arg(long, env = "RERANK_DTYPE", value_parser = parse::<Dtype>)]
    pub dtype: Option<Dtype>,
    /// cpu, cuda or cuda:N.
    #[arg(long, env = "RERANK_DEVICE", default_value = "cpu", value_parser = parse::<DeviceKind>)]
    pub device: DeviceKind,
    /// longest-first (sentence-transformers, TEI) or only-second (FlagEmbedding).
    #[arg(long, env = "RERANK_TRUNCATION", default_value = "longest-first", value_parser = parse::<Truncation>)]
    pub truncation: Truncation,
    /// Query budget for only-second truncation [default: 3/4 of max-length].
    #[arg(long, env = "RERANK_QUERY_MAX_LENGTH")]
    pub query_max_length: Option<usize>,
    /// Print raw logits instead of sigmoid scores.
    #[arg(long, env = "RERANK_RAW")]
    pub raw: bool,
    /// Compute threads [default: all cores].
    #[arg(long, env = "RERANK_THREADS")]
    pub threads: Option<usize>,
}

fn parse<T: std::str::FromStr<Err = rerank::Error>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: rerank::Error| e.to_string())
}

impl ModelArgs {
    /// Engine options from the flags.
    pub fn options(&self) -> RerankerOptions {
        RerankerOptions {
            max_length: self.max_length,
            batch_size: self.batch_size,
            max_batch_tokens: self.max_batch_tokens,
            truncation: self.truncation,
            query_max_length: self.query_max_length,
            raw_scores: self.raw,
            device: self.device,
            dtype: self.dtype,
            ..RerankerOptions::default()
        }
    }

    /// Sets the thread count (before any compute starts) and loads the model.
    pub fn load(&self) -> Result<Reranker> {
        if let Some(n) = self.threads {
            set_threads(n)?;
        }
        Reranker::load(&self.model, self.options())
            .with_context(|| format!("cannot load the model from {}", self.model.display()))
    }
}

/// candle's matmul reads RAYON_NUM_THREADS for its thread count; the global
/// rayon pool (tokenization, elementwise work) is built to match.
pub fn set_threads(n: usize) -> Result<()> {
    anyhow::ensure!(n > 0, "--threads must be at least 1");
    // SAFETY: called from main before any other thread is started.
    unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("cannot configure the thread pool")
}
