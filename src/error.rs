//! The library's one error type. Every message says what went wrong and, where
//! the user can act, what to do about it.

use std::path::PathBuf;

/// Errors returned by the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file the model needs is not in the model directory.
    #[error("{} not found{}", path.display(), hint_suffix(hint))]
    MissingFile { path: PathBuf, hint: String },

    /// A model file exists but cannot be read or parsed.
    #[error("{} is unreadable or corrupt: {reason}. Re-download the model (e.g. `rerank download`) or replace the file", path.display())]
    CorruptFile { path: PathBuf, reason: String },

    /// The checkpoint is not a model this engine can run.
    #[error("unsupported model in {}: {found}. Supported: {supported}", path.display())]
    UnsupportedModel {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },

    /// A tensor is missing or has the wrong shape.
    #[error("weights in {} do not match config.json: {reason}", path.display())]
    Weights { path: PathBuf, reason: String },

    /// `max_length` above what the model's position embeddings allow.
    #[error("max_length {requested} exceeds this model's limit of {limit} tokens per pair (max_position_embeddings - pad_token_id - 1); use --max-length {limit} or less")]
    MaxLengthTooLarge { requested: usize, limit: usize },

    /// Any other option that makes no sense.
    #[error("invalid option: {0}")]
    InvalidOption(String),

    /// A data file (qrels, run, queries, corpus) that cannot be read as its
    /// format says; the message names the file and line.
    #[error("{0}")]
    InvalidInput(String),

    /// Token ids handed to a forward pass that the model cannot take.
    #[error("invalid batch: {0}")]
    InvalidBatch(String),

    /// A forward pass produced something that is no score (a NaN, a wrong count).
    #[error("invalid model output: {0}")]
    BadOutput(String),

    /// The tokenizer failed on an input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),

    /// The requested device or dtype is not available in this build or machine.
    #[error("{0}")]
    Unavailable(String),

    /// Resolving or downloading a model from the hub failed.
    #[error("{0}")]
    Hub(String),

    /// A model id that is not a local directory, not (completely) in the hub
    /// cache, and could not be downloaded.
    #[error("model {model} is not a local directory and not in the Hugging Face cache ({cache}), and {reason}. Fix: {fix}")]
    ModelNotFound {
        /// The model id as given.
        model: String,
        /// Where the cache was searched and what was missing there.
        cache: String,
        /// Why it was not downloaded.
        reason: String,
        /// What the user can do.
        fix: String,
    },

    /// A failure inside the tensor library (a bug or an exhausted resource).
    #[error("compute error: {}", without_backtrace(.0))]
    Compute(#[from] candle_core::Error),
}

/// candle appends a captured backtrace to its errors when RUST_BACKTRACE is
/// set: a one-line message for users keeps only the error itself.
pub(crate) fn without_backtrace(e: &candle_core::Error) -> String {
    let text = e.to_string();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!(": {hint}")
    }
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_errors_are_one_line_even_with_a_backtrace() {
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(candle_core::Error::Msg("out of memory".into())),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        assert!(
            e.to_string().lines().count() > 1,
            "candle printed no backtrace"
        );
        let msg = Error::Compute(e).to_string();
        assert_eq!(msg, "compute error: out of memory");
    }
}
