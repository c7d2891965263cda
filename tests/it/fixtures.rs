//! Where the committed fixtures are (`tests/fixtures/generate.py` writes them
//! with the PyTorch reference).

use std::path::{Path, PathBuf};

/// The tiny XLM-RoBERTa cross-encoder (random weights, real tokenizer).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// PyTorch's scores of the tiny model on the golden cases.
pub fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden.json")
}
