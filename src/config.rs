//! `config.json` of a Hugging Face checkpoint → a typed, validated struct.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

/// What this engine can run, for error messages.
pub const SUPPORTED: &str =
    "XLMRobertaForSequenceClassification or RobertaForSequenceClassification \
     with one label (e.g. BAAI/bge-reranker-v2-m3, bge-reranker-base, bge-reranker-large), \
     or BertForSequenceClassification with one label (e.g. cross-encoder/ms-marco-MiniLM-L-6-v2)";

/// The two graphs this engine runs. They differ only in tensor names, where
/// positions start, token types and the length limit; the layers are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// `XLMRobertaForSequenceClassification` / `RobertaForSequenceClassification`:
    /// positions from `pad_token_id + 1`, one token type.
    Roberta,
    /// `BertForSequenceClassification`: positions from 0, token type 1 for the
    /// passage segment, the pooler (dense + tanh on `[CLS]`) then the classifier.
    Bert,
}

/// What turns a logit into a score by default: the checkpoint's
/// sentence-transformers `activation_fn` when it names one, else sigmoid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    Sigmoid,
    Identity,
}

/// `config.json`'s `sentence_transformers` block (written by
/// sentence-transformers' `CrossEncoder.save`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct SentenceTransformersConfig {
    #[serde(default)]
    pub activation_fn: Option<String>,
}

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
    #[serde(default)]
    pub sentence_transformers: Option<SentenceTransformersConfig>,
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
        let mut cfg: Self = serde_json::from_str(&text).map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: format!("not a valid model config ({e})"),
        })?;
        // sentence-transformers may keep the activation in its own file next
        // to config.json instead; config.json's block wins when both have one.
        let st_path = path.with_file_name("config_sentence_transformers.json");
        if cfg
            .sentence_transformers
            .as_ref()
            .is_none_or(|s| s.activation_fn.is_none())
        {
            if let Ok(text) = std::fs::read_to_string(&st_path) {
                let st: SentenceTransformersConfig =
                    serde_json::from_str(&text).map_err(|e| Error::CorruptFile {
                        path: st_path.clone(),
                        reason: format!("not a valid sentence-transformers config ({e})"),
                    })?;
                if st.activation_fn.is_some() {
                    cfg.sentence_transformers = Some(st);
                }
            }
        }
        cfg.validate(path)?;
        Ok(cfg)
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let unsupported = |found: String| Error::UnsupportedModel {
            path: path.to_path_buf(),
            found,
            supported: SUPPORTED,
        };
        if self.find_architecture().is_none() {
            return Err(unsupported(format!(
                "architectures {:?} (model_type {:?})",
                self.architectures, self.model_type
            )));
        }
        if let Err(found) = self.activation() {
            return Err(unsupported(found));
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
        if self.max_position_embeddings <= self.position_offset() as usize + 4 {
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

    fn find_architecture(&self) -> Option<Architecture> {
        self.architectures.iter().find_map(|a| match a.as_str() {
            "XLMRobertaForSequenceClassification" | "RobertaForSequenceClassification" => {
                Some(Architecture::Roberta)
            }
            "BertForSequenceClassification" => Some(Architecture::Bert),
            _ => None,
        })
    }

    /// Which graph the checkpoint is (validated by [`Self::from_file`]).
    pub fn architecture(&self) -> Architecture {
        self.find_architecture().unwrap_or(Architecture::Roberta)
    }

    /// The first position id of a pair: `pad_token_id + 1` for RoBERTa
    /// (`create_position_ids_from_input_ids`), 0 for BERT.
    pub fn position_offset(&self) -> u32 {
        match self.architecture() {
            Architecture::Roberta => self.pad_token_id as u32 + 1,
            Architecture::Bert => 0,
        }
    }

    /// Longest pair (special tokens included) the position embeddings allow.
    pub fn max_tokens(&self) -> usize {
        self.max_position_embeddings - self.position_offset() as usize
    }

    /// The default score of a logit: the checkpoint's
    /// `sentence_transformers.activation_fn` (sigmoid or identity) when set,
    /// else sigmoid; another function is an error naming it.
    pub fn activation(&self) -> std::result::Result<Activation, String> {
        let Some(name) = self
            .sentence_transformers
            .as_ref()
            .and_then(|s| s.activation_fn.as_deref())
        else {
            return Ok(Activation::Sigmoid);
        };
        match name.rsplit('.').next().unwrap_or(name) {
            "Sigmoid" => Ok(Activation::Sigmoid),
            "Identity" => Ok(Activation::Identity),
            _ => Err(format!(
                "sentence_transformers.activation_fn {name:?}; only Sigmoid and Identity are implemented (--raw gives the logits)"
            )),
        }
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
            sentence_transformers: None,
        }
    }
}
