//! Random-weight models with a real checkpoint's shapes, for benchmarks that
//! anyone can run without downloading weights (speed does not depend on the
//! weight values), and a matching tokenizer whose every word `w<N>` is one
//! token, so a text of N words is exactly N tokens for us and for PyTorch.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::checkpoint::{Checkpoint, Role};
use crate::model::{Choice, DeviceKind, Dtype, Model, Weights};
use crate::tokenize::PairEncoder;

/// Ids of the special tokens, as in XLM-R.
const SPECIALS: [&str; 4] = ["<s>", "<pad>", "</s>", "<unk>"];

/// The word that the synthetic tokenizer maps to the single token `4 + n`.
pub fn word(n: usize) -> String {
    format!("w{n}")
}

/// Number of distinct words in the synthetic vocabulary.
pub fn word_count(cfg: &ModelConfig) -> usize {
    cfg.vocab_size - SPECIALS.len() - 1
}

/// `tokenizer.json` text: a Unigram model with XLM-R's special tokens and pair
/// template, a Metaspace pre-tokenizer, and one piece `▁w<N>` per word.
pub fn tokenizer_json(cfg: &ModelConfig) -> String {
    let mask_id = cfg.vocab_size - 1;
    let mut vocab: Vec<serde_json::Value> = SPECIALS
        .iter()
        .map(|s| serde_json::json!([s, 0.0]))
        .collect();
    vocab.extend((0..word_count(cfg)).map(|n| serde_json::json!([format!("▁{}", word(n)), -10.0])));
    vocab.push(serde_json::json!(["<mask>", 0.0]));
    let added = |id: usize, content: &str| {
        serde_json::json!({"id": id, "content": content, "single_word": false,
            "lstrip": content == "<mask>", "rstrip": false, "normalized": false, "special": true})
    };
    let mut added_tokens: Vec<_> = SPECIALS
        .iter()
        .enumerate()
        .map(|(i, s)| added(i, s))
        .collect();
    added_tokens.push(added(mask_id, "<mask>"));
    let special = |s: &str| serde_json::json!({"SpecialToken": {"id": s, "type_id": 0}});
    let seq = |s: &str| serde_json::json!({"Sequence": {"id": s, "type_id": 0}});
    let metaspace = serde_json::json!({"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true});
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_tokens,
        "normalizer": null,
        "pre_tokenizer": metaspace,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [special("<s>"), seq("A"), special("</s>")],
            "pair": [special("<s>"), seq("A"), special("</s>"), special("</s>"), seq("B"), special("</s>")],
            "special_tokens": {
                "<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}
            }
        },
        "decoder": metaspace,
        "model": {"type": "Unigram", "unk_id": 3, "vocab": vocab, "byte_fallback": false}
    })
    .to_string()
}

/// Random tensors with the checkpoint's names and shapes: weights uniform
/// with standard deviation 0.02 (the family's initializer range), LayerNorm
/// weights 1 and biases 0, so activations stay in a realistic range.
pub fn weights(cfg: &ModelConfig, seed: u64) -> Result<HashMap<String, Tensor>> {
    Checkpoint::for_config(cfg)
        .tensors()
        .into_iter()
        .enumerate()
        .map(|(k, (name, shape, role))| {
            let len: usize = shape.iter().product();
            let data = match role {
                Role::NormWeight => vec![1f32; len],
                Role::NormBias => vec![0f32; len],
                Role::Weight => uniform(len, seed.wrapping_add(k as u64 * 0x9E37_79B9), 0.02),
            };
            let t = Tensor::from_vec(data, shape, &Device::Cpu)?;
            Ok((name, t))
        })
        .collect()
}
/// `len` values uniform in ±std·√3 from a counter-based generator
/// (splitmix64), filled in parallel and reproducible for a seed.
fn uniform(len: usize, seed: u64, std: f32) -> Vec<f32> {
    let half_width = std * 3f32.sqrt();
    let mut v = vec![0f32; len];
    v.par_chunks_mut(1 << 16)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = SplitMix64(seed ^ ((c as u64) << 32));
            for x in chunk {
                let unit = (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32; // [0, 1)
                *x = (unit * 2.0 - 1.0) * half_width;
            }
        });
    v
}

/// The splitmix64 generator: tiny, fast and reproducible for a seed, which
/// is all synthetic weights and benchmark workloads need.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A model and tokenizer built in memory, the implementation chosen by the
/// same rules as for a checkpoint ([`Choice::new`]).
pub fn build(
    cfg: &ModelConfig,
    seed: u64,
    dtype: Dtype,
    device: DeviceKind,
) -> Result<(Model, PairEncoder)> {
    let weights = Weights::Tensors(weights(cfg, seed)?);
    let choice = Choice::new(device, Some(dtype), false, &weights)?;
    let model = Model::load(weights, cfg, choice)?;
    let tok = tokenizers::Tokenizer::from_bytes(tokenizer_json(cfg).as_bytes())
        .map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok((
        model,
        PairEncoder::from_tokenizer(tok, Path::new("<synthetic>"))?,
    ))
}

/// Writes a Hugging Face model directory: config.json, model.safetensors,
/// tokenizer.json and a tokenizer_config.json that makes `transformers` load
/// tokenizer.json as it is.
pub fn save(dir: &Path, cfg: &ModelConfig, seed: u64) -> Result<()> {
    let io = |e: std::io::Error| Error::CorruptFile {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    let config = serde_json::json!({
        "architectures": cfg.architectures,
        "model_type": cfg.model_type,
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "intermediate_size": cfg.intermediate_size,
        "hidden_act": cfg.hidden_act,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "layer_norm_eps": cfg.layer_norm_eps,
        "pad_token_id": cfg.pad_token_id,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "position_embedding_type": "absolute",
        "id2label": {"0": "LABEL_0"},
        "label2id": {"LABEL_0": 0},
        "torch_dtype": "float32",
    });
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).map_err(io);
    write(
        "config.json",
        serde_json::to_string_pretty(&config).unwrap_or_default(),
    )?;
    write("tokenizer.json", tokenizer_json(cfg))?;
    write(
        "tokenizer_config.json",
        serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "sep_token": "</s>",
            "cls_token": "<s>", "pad_token": "<pad>", "mask_token": "<mask>",
            "model_max_length": cfg.max_tokens(),
        })
        .to_string(),
    )?;
    let tensors = weights(cfg, seed)?;
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors"))?;
    Ok(())
}
