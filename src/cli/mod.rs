//! Subcommands of the `rerank` binary, one file each, and the flags they share.

pub mod bench;
pub mod demo;
pub mod download;
pub mod eval;
pub mod health;
pub mod rank;
pub mod score;
#[cfg(feature = "server")]
pub mod serve;
pub mod trec;

use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rerank::hub::{self, HubConfig, ResolvedModel};
use rerank::{
    ChunkParams, DeviceKind, Dtype, LongDocuments, Reranker, RerankerOptions, Truncation,
};

/// Flags of every command that loads a model; each also reads an env var.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Model")]
pub struct ModelArgs {
    /// Model: a directory with config.json, model.safetensors and tokenizer.json, or a
    /// Hugging Face model id, looked up in the Hugging Face cache (HF_HOME) and downloaded
    /// there when missing (HF_ENDPOINT selects a mirror, HF_TOKEN authenticates,
    /// HF_HUB_OFFLINE=1 forbids downloads).
    #[arg(long, env = "RERANK_MODEL", default_value = hub::DEFAULT_MODEL)]
    pub model: String,
    /// Hub revision (branch, tag or commit hash) when --model is a model id.
    #[arg(long, env = "RERANK_REVISION", default_value = hub::DEFAULT_REVISION)]
    pub revision: String,
    /// Most tokens per pair, special tokens included [default: 8192, or the model's limit if lower].
    #[arg(long, env = "RERANK_MAX_LENGTH")]
    pub max_length: Option<usize>,
    /// Most pairs per forward pass.
    #[arg(long, env = "RERANK_BATCH_SIZE", default_value_t = rerank::engine::DEFAULT_BATCH_SIZE)]
    pub batch_size: usize,
    /// Most padded tokens per forward pass (bounds memory).
    #[arg(long, env = "RERANK_MAX_BATCH_TOKENS", default_value_t = rerank::engine::DEFAULT_MAX_BATCH_TOKENS)]
    pub max_batch_tokens: usize,
    /// f32, f16, bf16 or int8 (CPU only) [default: f32 on cpu, f16 on cuda].
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
    /// Print raw logits instead of sigmoid scores (score bars then show sigmoid(logit)).
    #[arg(long, env = "RERANK_RAW")]
    pub raw: bool,
    /// What to do with a passage whose pair is longer than --max-length: truncate it,
    /// or chunk it into overlapping windows scored one by one, the best window's
    /// score counting (pairs that fit are scored as with truncate).
    #[arg(long, env = "RERANK_LONG_DOCUMENTS", default_value = "truncate", value_parser = parse::<LongDocuments>)]
    pub long_documents: LongDocuments,
    /// Passage tokens per window with --long-documents chunk [default: what --max-length
    /// leaves after the query and the special tokens; never more].
    #[arg(long, env = "RERANK_CHUNK_TOKENS", value_parser = clap::value_parser!(u64).range(1..))]
    pub chunk_tokens: Option<u64>,
    /// Tokens neighbouring windows share (at most half a window is used).
    #[arg(long, env = "RERANK_CHUNK_OVERLAP", default_value_t = rerank::chunk::DEFAULT_OVERLAP)]
    pub chunk_overlap: usize,
    /// Most windows per passage; the rest of a longer passage is not scored (bounds
    /// the work per passage).
    #[arg(long, env = "RERANK_MAX_CHUNKS_PER_DOC", default_value_t = rerank::chunk::DEFAULT_MAX_CHUNKS, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_chunks_per_doc: usize,
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
            long_documents: self.long_documents,
            chunking: ChunkParams {
                chunk_tokens: self.chunk_tokens.map(|c| c as usize),
                overlap: self.chunk_overlap,
                max_chunks: self.max_chunks_per_doc,
            },
            ..RerankerOptions::default()
        }
    }

    /// Finds the model's files: the directory given, else the Hugging Face
    /// cache, else a download into the cache (with progress on stderr).
    pub fn resolve(&self) -> Result<ResolvedModel> {
        let hub = HubConfig::from_env()?;
        let mut progress = download::Progress::new();
        let resolved = hub::resolve(&self.model, &self.revision, &hub, &mut progress)?;
        if resolved.source == hub::Source::Download {
            eprintln!("downloaded {} into {}", self.model, hub.cache_dir.display());
        }
        Ok(resolved)
    }

    /// Sets the thread count (before any compute starts), finds the model's
    /// files and loads it.
    pub fn load(&self) -> Result<Reranker> {
        if let Some(n) = self.threads {
            set_threads(n)?;
        }
        let resolved = self.resolve()?;
        Reranker::load_files(&resolved.files, self.options())
            .with_context(|| format!("cannot load the model {}", self.model))
    }

    /// [`ModelArgs::load`] with another dtype (e.g. an f32 baseline).
    pub fn load_with_dtype(&self, dtype: Dtype) -> Result<Reranker> {
        let resolved = self.resolve()?;
        let options = RerankerOptions {
            dtype: Some(dtype),
            ..self.options()
        };
        Reranker::load_files(&resolved.files, options)
            .with_context(|| format!("cannot load the model {}", self.model))
    }
}

/// Treats a closed standard output (`rerank rank … | head -1`) as a normal end.
pub fn ignore_broken_pipe(result: Result<()>) -> Result<()> {
    match result {
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Width of the score bars, in terminal cells.
pub const BAR_WIDTH: usize = 20;

/// A bar of `width` cells filled in proportion to `fraction` (clamped to
/// 0..=1), in eighths of a cell.
pub fn bar(fraction: f32, width: usize) -> String {
    const PARTIAL: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    let eighths = (fraction.clamp(0.0, 1.0) * (width * 8) as f32).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if eighths / 8 < width {
        s.push(PARTIAL[eighths % 8]);
        s.push_str(&" ".repeat(width - eighths / 8 - 1));
    }
    s
}

/// One ranked line: `[0.9213] ██████████████████▍  passage`. With raw logits
/// the number is the logit and the bar shows sigmoid(logit).
pub fn ranked_line(score: f32, raw: bool, text: &str) -> String {
    let (shown, fill) = if raw {
        (format!("{score:+.4}"), rerank::backend::sigmoid(score))
    } else {
        (format!("{score:.4}"), score)
    };
    // Keep one passage on one line.
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("[{shown}] {} {text}", bar(fill, BAR_WIDTH))
}

/// `12.3 ms` or `4.56 s`.
pub fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        format!("{:.1} ms", secs * 1e3)
    } else {
        format!("{secs:.2} s")
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
