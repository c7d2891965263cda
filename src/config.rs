//! `config.json` of a Hugging Face checkpoint → a typed, validated struct.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// What this engine can run, for error messages.
pub const SUPPORTED: &str =
    "XLMRobertaForSequenceClassification or RobertaForSequenceClassification \
     with one label (e.g. BAAI/bge-reranker-v2-m3, bge-reranker-base, bge-reranker-large)";

/// The architecture fields of `config.json` that the forward pass needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    #[serde(default)]
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    pub max_position_embeddings: usize,
    #[serde(default = "one")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "one")]
    pub pad_token_id: usize,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
    #[serde(default)]
    pub num_labels: Option<usize>,
    #[serde(default)]
    pub id2label: Option<serde_json::Map<String, serde_json::Value>>,
}

fn default_act() -> String {
    "gelu".into()
}
fn one() -> usize {
    1
}
fn default_eps() -> f64 {
    1e-12
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingFile {
                    path: path.to_path_buf(),
                    hint: "a model directory needs config.json, model.safetensors and tokenizer.json (download them with `rerank download MODEL_ID`)".into(),
                }
            } else {
                Error::CorruptFile {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                }
            }
        })?;
        let cfg: Self = serde_json::from_str(&text).map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: format!("not a valid model config ({e})"),
        })?;
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let unsupported = |found: String| Error::UnsupportedModel {
            path: path.to_path_buf(),
            found,
            supported: SUPPORTED,
        };
        let arch_ok = self.architectures.iter().any(|a| {
            a == "XLMRobertaForSequenceClassification" || a == "RobertaForSequenceClassification"
        });
        if !arch_ok {
            return Err(unsupported(format!(
                "architectures {:?} (model_type {:?})",
                self.architectures, self.model_type
            )));
        }
        if self.labels() != 1 {
            return Err(unsupported(format!(
                "a classifier with {} labels; a reranker has exactly one",
                self.labels()
            )));
        }
        if self.hidden_act != "gelu" {
            return Err(unsupported(format!(
                "hidden_act {:?}; only \"gelu\" (erf) is implemented",
                self.hidden_act
            )));
        }
        if let Some(kind) = &self.position_embedding_type {
            if kind != "absolute" {
                return Err(unsupported(format!("position_embedding_type {kind:?}")));
            }
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return Err(unsupported(format!(
                "hidden_size {} not divisible by num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.max_position_embeddings <= self.pad_token_id + 1 + 4 {
            return Err(unsupported(format!(
                "max_position_embeddings {} leaves no room for a pair",
                self.max_position_embeddings
            )));
        }
        Ok(())
    }

    /// Number of output labels (`num_labels`, else the size of `id2label`, else 2 as in transformers).
    pub fn labels(&self) -> usize {
        self.num_labels
            .or_else(|| self.id2label.as_ref().map(|m| m.len()))
            .unwrap_or(2)
    }

    /// Longest pair (special tokens included) the position embeddings allow:
    /// positions start at `pad_token_id + 1` (RoBERTa's offset).
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.pad_token_id - 1
    }

    /// Size of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The exact shapes of BAAI/bge-reranker-v2-m3 (for synthetic benchmarks).
    pub fn bge_reranker_v2_m3() -> Self {
        Self {
            architectures: vec!["XLMRobertaForSequenceClassification".into()],
            model_type: "xlm-roberta".into(),
            vocab_size: 250002,
            hidden_size: 1024,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            intermediate_size: 4096,
            hidden_act: "gelu".into(),
            max_position_embeddings: 8194,
            type_vocab_size: 1,
            layer_norm_eps: 1e-5,
            pad_token_id: 1,
            position_embedding_type: Some("absolute".into()),
            num_labels: None,
            id2label: Some(serde_json::Map::from_iter([(
                "0".to_string(),
                serde_json::Value::String("LABEL_0".into()),
            )])),
        }
    }
}
