//! The checkpoint's tensor-name map: which tensor of `model.safetensors` holds
//! which weight, with its shape. Both implementations load through it and the
//! synthetic model writer enumerates it, so the three cannot drift; a second
//! architecture is a second constructor of [`Checkpoint`].
//!
//! Names follow `XLMRobertaForSequenceClassification` (and
//! `RobertaForSequenceClassification`, the same graph): `roberta.embeddings.*`,
//! `roberta.encoder.layer.N.*`, `classifier.{dense,out_proj}`; or
//! `BertForSequenceClassification`: `bert.embeddings.*`,
//! `bert.encoder.layer.N.*` (the same layer names), `bert.pooler.dense` and
//! `classifier`. The two heads compute the same thing: dense → tanh → one
//! logit, on the first token.

use crate::config::{Architecture, ModelConfig};

/// A linear layer's tensors: `weight` (out × in, as stored) and `bias` (out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearNames {
    pub weight: String,
    pub bias: String,
    pub in_dim: usize,
    pub out_dim: usize,
}

impl LinearNames {
    fn new(prefix: &str, in_dim: usize, out_dim: usize) -> Self {
        Self {
            weight: format!("{prefix}.weight"),
            bias: format!("{prefix}.bias"),
            in_dim,
            out_dim,
        }
    }
}

/// A LayerNorm's tensors: `weight` and `bias`, both of the hidden size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormNames {
    pub weight: String,
    pub bias: String,
    pub dim: usize,
}

impl NormNames {
    fn new(prefix: &str, dim: usize) -> Self {
        Self {
            weight: format!("{prefix}.weight"),
            bias: format!("{prefix}.bias"),
            dim,
        }
    }
}

/// One post-LayerNorm encoder layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerNames {
    pub query: LinearNames,
    pub key: LinearNames,
    pub value: LinearNames,
    /// Projection of the attention context, added to the residual.
    pub attention_output: LinearNames,
    pub attention_norm: NormNames,
    /// The feed-forward block's widening layer (GELU follows).
    pub intermediate: LinearNames,
    /// The feed-forward block's narrowing layer, added to the residual.
    pub output: LinearNames,
    pub output_norm: NormNames,
}

/// An embedding table: `rows` × hidden.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableNames {
    pub name: String,
    pub rows: usize,
    pub dim: usize,
}

/// What a tensor is, for writers of synthetic weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Embedding tables and linear weights and biases.
    Weight,
    /// LayerNorm scale (initialized to 1).
    NormWeight,
    /// LayerNorm shift (initialized to 0).
    NormBias,
}

/// Every tensor of a cross-encoder checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub word_embeddings: TableNames,
    pub position_embeddings: TableNames,
    /// Indexed by the token type ids (all 0 for RoBERTa, whose table has one row).
    pub token_type_embeddings: TableNames,
    pub embeddings_norm: NormNames,
    pub layers: Vec<LayerNames>,
    /// `RobertaClassificationHead` (dense → tanh → out_proj) or BERT's pooler
    /// (dense → tanh) and classifier, on the first token.
    pub classifier_dense: LinearNames,
    pub classifier_out: LinearNames,
}

impl Checkpoint {
    /// The names of `cfg`'s architecture.
    pub fn for_config(cfg: &ModelConfig) -> Self {
        match cfg.architecture() {
            Architecture::Roberta => Self::xlm_roberta(cfg),
            Architecture::Bert => Self::bert(cfg),
        }
    }

    /// The names of an `XLMRobertaForSequenceClassification` checkpoint with
    /// one label, shaped by `cfg`.
    pub fn xlm_roberta(cfg: &ModelConfig) -> Self {
        let h = cfg.hidden_size;
        let head = (
            LinearNames::new("classifier.dense", h, h),
            LinearNames::new("classifier.out_proj", h, 1),
        );
        Self::with_head("roberta", cfg, head)
    }

    /// The names of a `BertForSequenceClassification` checkpoint with one
    /// label, shaped by `cfg`.
    pub fn bert(cfg: &ModelConfig) -> Self {
        let h = cfg.hidden_size;
        let head = (
            LinearNames::new("bert.pooler.dense", h, h),
            LinearNames::new("classifier", h, 1),
        );
        Self::with_head("bert", cfg, head)
    }

    /// Embeddings and layers under `prefix` (the same names in both
    /// architectures), and the head's (dense, out) layers.
    fn with_head(prefix: &str, cfg: &ModelConfig, head: (LinearNames, LinearNames)) -> Self {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let table = |name: &str, rows| TableNames {
            name: format!("{prefix}.embeddings.{name}.weight"),
            rows,
            dim: h,
        };
        let layers = (0..cfg.num_hidden_layers)
            .map(|n| {
                let p = format!("{prefix}.encoder.layer.{n}");
                let lin = |s: &str, a, b| LinearNames::new(&format!("{p}.{s}"), a, b);
                LayerNames {
                    query: lin("attention.self.query", h, h),
                    key: lin("attention.self.key", h, h),
                    value: lin("attention.self.value", h, h),
                    attention_output: lin("attention.output.dense", h, h),
                    attention_norm: NormNames::new(&format!("{p}.attention.output.LayerNorm"), h),
                    intermediate: lin("intermediate.dense", h, i),
                    output: lin("output.dense", i, h),
                    output_norm: NormNames::new(&format!("{p}.output.LayerNorm"), h),
                }
            })
            .collect();
        Self {
            word_embeddings: table("word_embeddings", cfg.vocab_size),
            position_embeddings: table("position_embeddings", cfg.max_position_embeddings),
            token_type_embeddings: table("token_type_embeddings", cfg.type_vocab_size),
            embeddings_norm: NormNames::new(&format!("{prefix}.embeddings.LayerNorm"), h),
            layers,
            classifier_dense: head.0,
            classifier_out: head.1,
        }
    }

    /// Every tensor as (name, shape, role), in a fixed order.
    pub fn tensors(&self) -> Vec<(String, Vec<usize>, Role)> {
        let mut out = Vec::new();
        let table = |out: &mut Vec<_>, t: &TableNames| {
            out.push((t.name.clone(), vec![t.rows, t.dim], Role::Weight))
        };
        let norm = |out: &mut Vec<_>, n: &NormNames| {
            out.push((n.weight.clone(), vec![n.dim], Role::NormWeight));
            out.push((n.bias.clone(), vec![n.dim], Role::NormBias));
        };
        let linear = |out: &mut Vec<_>, l: &LinearNames| {
            out.push((l.weight.clone(), vec![l.out_dim, l.in_dim], Role::Weight));
            out.push((l.bias.clone(), vec![l.out_dim], Role::Weight));
        };
        table(&mut out, &self.word_embeddings);
        table(&mut out, &self.position_embeddings);
        table(&mut out, &self.token_type_embeddings);
        norm(&mut out, &self.embeddings_norm);
        linear(&mut out, &self.classifier_dense);
        linear(&mut out, &self.classifier_out);
        for l in &self.layers {
            for lin in [&l.query, &l.key, &l.value, &l.attention_output] {
                linear(&mut out, lin);
            }
            linear(&mut out, &l.intermediate);
            linear(&mut out, &l.output);
            norm(&mut out, &l.attention_norm);
            norm(&mut out, &l.output_norm);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the ones in the committed tiny checkpoint, written by
    /// `transformers` (tests/fixtures/generate.py): every tensor there is in
    /// the map with its shape, and nothing else.
    #[test]
    fn the_map_names_every_tensor_of_a_transformers_checkpoint() {
        for fixture in ["tiny", "tiny-bert"] {
            names_every_tensor_of(fixture);
        }
    }

    fn names_every_tensor_of(fixture: &str) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(fixture);
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut want: Vec<(String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            // Saved by transformers but not read by a cross-encoder.
            .filter(|(name, _)| !name.ends_with("position_ids"))
            .collect();
        want.sort();
        let mut got: Vec<(String, Vec<usize>)> = Checkpoint::for_config(&cfg)
            .tensors()
            .into_iter()
            .map(|(name, shape, _)| (name, shape))
            .collect();
        got.sort();
        assert_eq!(got, want, "{fixture}");
    }
}
