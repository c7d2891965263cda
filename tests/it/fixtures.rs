//! Where the committed fixtures are (`tests/fixtures/generate.py` writes them
//! with the PyTorch reference).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The tiny XLM-RoBERTa cross-encoder (random weights, real tokenizer).
pub fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny")
}

/// PyTorch's scores of the tiny model on the golden cases.
pub fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden.json")
}

/// One golden case: a pair, the truncation it was encoded with, and what
/// PyTorch computed.
#[derive(Debug, Deserialize)]
pub struct Case {
    pub name: String,
    pub query: String,
    pub passage: String,
    pub max_length: usize,
    pub truncation: String,
    pub query_max_length: Option<usize>,
    /// The reference used its default (3/4 of max_length): we pass None too.
    #[serde(default)]
    pub query_max_length_is_default: Option<bool>,
    pub input_ids: Vec<u32>,
    pub logit: f32,
    pub score: f32,
}

pub fn golden() -> Vec<Case> {
    let path = golden_path();
    let text = std::fs::read_to_string(path).expect("golden.json");
    let cases: Vec<Case> = serde_json::from_str(&text).expect("golden.json parses");
    assert!(cases.len() >= 30, "too few golden cases: {}", cases.len());
    cases
}
