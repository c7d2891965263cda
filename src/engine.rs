//! [`Reranker`]: load a model directory, then score or rank pairs.
//!
//! Pairs are tokenized, sorted by length, cut into batches of at most
//! `batch_size` pairs and `max_batch_tokens` padded tokens, run through the
//! model and put back in input order.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{
    CpuModel, Model, PackedBatch, Precision, WeightSource, XlmRobertaForSequenceClassification,
};
use crate::tokenize::{EncodedPair, PairEncoder, Side, Truncation, TruncationParams};

/// Where the forward pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` cargo feature).
    Cuda(usize),
}

impl FromStr for DeviceKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(Self::Cuda(n)),
                _ => Err(Error::InvalidOption(format!(
                    "unknown device {s:?}; use cpu, cuda or cuda:N"
                ))),
            },
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Numeric type of weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    /// int8 weights and activations in the encoder's linear layers (CPU only).
    Int8,
}

impl FromStr for Dtype {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "f16" | "float16" | "fp16" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "int8" | "i8" | "qint8" => Ok(Self::Int8),
            _ => Err(Error::InvalidOption(format!(
                "unknown dtype {s:?}; use f32, f16, bf16 or int8"
            ))),
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        })
    }
}

impl Dtype {
    /// f16 on a GPU (what the seed's `use_fp16` means), f32 on a CPU.
    pub fn default_for(device: DeviceKind) -> Self {
        match device {
            DeviceKind::Cpu => Self::F32,
            DeviceKind::Cuda(_) => Self::F16,
        }
    }

    /// candle's dtype; int8 has none (it runs only in the CPU model).
    pub(crate) fn candle(self) -> Result<DType> {
        match self {
            Self::F32 => Ok(DType::F32),
            Self::F16 => Ok(DType::F16),
            Self::Bf16 => Ok(DType::BF16),
            Self::Int8 => Err(Error::Unavailable(
                "int8 runs only on CPU from model.safetensors; use --device cpu, or --dtype f16 on CUDA".into(),
            )),
        }
    }

    /// The hand-written CPU model's precision for this dtype, if it has one.
    pub fn cpu_precision(self) -> Option<Precision> {
        match self {
            Self::F32 => Some(Precision::F32),
            Self::Bf16 => Some(Precision::Bf16),
            Self::Int8 => Some(Precision::Int8),
            Self::F16 => None,
        }
    }
}

/// Settings users know from the reference tools. `Default` gives
/// bge-reranker-v2-m3's: max_length 8192, batch_size 16, longest-first, sigmoid scores.
#[derive(Debug, Clone)]
pub struct RerankerOptions {
    /// Most tokens per pair, special tokens included. `None`: 8192, or the
    /// model's limit when that is lower; a larger explicit value is an error.
    pub max_length: Option<usize>,
    /// Most pairs per forward pass.
    pub batch_size: usize,
    /// Most padded tokens (pairs × longest pair) per forward pass; bounds memory.
    pub max_batch_tokens: usize,
    pub truncation: Truncation,
    /// Query budget for [`Truncation::OnlySecond`]; default 3/4 of `max_length`.
    pub query_max_length: Option<usize>,
    /// Which end of a text is cut.
    pub truncation_side: Side,
    /// Raw logits instead of sigmoid scores from [`Reranker::score`] and [`Reranker::rank`].
    pub raw_scores: bool,
    pub device: DeviceKind,
    /// `None`: [`Dtype::default_for`] the device.
    pub dtype: Option<Dtype>,
    /// Use the portable candle implementation even on CPU in f32, where the
    /// hand-written one would run (for comparisons and tests).
    pub portable: bool,
}

/// Default `max_length`: the model's full context.
pub const DEFAULT_MAX_LENGTH: usize = 8192;
/// Default `batch_size`, as in the reference tools.
pub const DEFAULT_BATCH_SIZE: usize = 16;
/// Default padded-token budget per forward pass (16 pairs of 512 tokens).
pub const DEFAULT_MAX_BATCH_TOKENS: usize = 8192;

impl Default for RerankerOptions {
    fn default() -> Self {
        Self {
            max_length: None,
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_tokens: DEFAULT_MAX_BATCH_TOKENS,
            truncation: Truncation::LongestFirst,
            query_max_length: None,
            truncation_side: Side::Right,
            raw_scores: false,
            device: DeviceKind::Cpu,
            dtype: None,
            portable: false,
        }
    }
}

/// One ranked passage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// Position of the passage in the input.
    pub index: usize,
    pub score: f32,
}

/// The files a model directory provides.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    /// `model.safetensors`, or `pytorch_model.bin` when that is all there is.
    pub weights: PathBuf,
}

impl ModelFiles {
    /// Finds the files in a local directory.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                hint: "expected a model directory with config.json, model.safetensors and tokenizer.json".into(),
            });
        }
        let safetensors = dir.join("model.safetensors");
        let pth = dir.join("pytorch_model.bin");
        let weights = if safetensors.exists() || !pth.exists() {
            safetensors
        } else {
            pth
        };
        Ok(Self {
            config: dir.join("config.json"),
            tokenizer: dir.join("tokenizer.json"),
            weights,
        })
    }
}

/// A loaded cross-encoder.
pub struct Reranker {
    model: Model,
    encoder: PairEncoder,
    config: ModelConfig,
    truncation: TruncationParams,
    options: RerankerOptions,
    dtype: Dtype,
}

impl Reranker {
    /// Loads a model from a local directory.
    pub fn load(dir: impl AsRef<Path>, options: RerankerOptions) -> Result<Self> {
        Self::load_files(&ModelFiles::in_dir(dir.as_ref())?, options)
    }

    /// Loads a model from explicit files.
    pub fn load_files(files: &ModelFiles, options: RerankerOptions) -> Result<Self> {
        let config = ModelConfig::from_file(&files.config)?;
        let truncation = truncation_params(&options, &config)?;
        let encoder = PairEncoder::from_file(&files.tokenizer)?;
        if encoder.vocab_size() > config.vocab_size {
            return Err(Error::Weights {
                path: files.tokenizer.clone(),
                reason: format!(
                    "the tokenizer has {} tokens but the model's vocab_size is {}; tokenizer.json belongs to another model",
                    encoder.vocab_size(),
                    config.vocab_size
                ),
            });
        }
        let dtype = options.dtype.unwrap_or(Dtype::default_for(options.device));
        let device = make_device(options.device)?;
        check_dtype(dtype, &device)?;
        if !files.weights.exists() {
            return Err(Error::MissingFile {
                path: files.weights.clone(),
                hint: "no weights (model.safetensors or pytorch_model.bin) in the model directory; download the model with `rerank download MODEL_ID`".into(),
            });
        }
        let is_safetensors = files
            .weights
            .extension()
            .is_some_and(|e| e == "safetensors");
        let cpu_precision = dtype.cpu_precision().filter(|&p| {
            device.is_cpu() && is_safetensors && !(options.portable && p == Precision::F32)
        });
        let model = if let Some(precision) = cpu_precision {
            Model::Cpu(Box::new(CpuModel::load(
                &WeightSource::map(&files.weights)?,
                &config,
                precision,
            )?))
        } else {
            let vb = weights(&files.weights, dtype.candle()?, &device)?;
            Model::Candle(Box::new(
                XlmRobertaForSequenceClassification::load(vb, &config).map_err(|e| {
                    Error::Weights {
                        path: files.weights.clone(),
                        reason: e.to_string(),
                    }
                })?,
            ))
        };
        Ok(Self {
            model,
            encoder,
            config,
            truncation,
            options,
            dtype,
        })
    }

    /// Builds a reranker from parts (e.g. synthetic weights for benchmarks).
    pub fn from_parts(
        model: Model,
        encoder: PairEncoder,
        config: ModelConfig,
        options: RerankerOptions,
    ) -> Result<Self> {
        let truncation = truncation_params(&options, &config)?;
        let dtype = options.dtype.unwrap_or(Dtype::default_for(options.device));
        Ok(Self {
            model,
            encoder,
            config,
            truncation,
            options,
            dtype,
        })
    }

    /// The validated model config.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The options the reranker was loaded with.
    pub fn options(&self) -> &RerankerOptions {
        &self.options
    }

    /// The effective truncation settings (max_length, query budget, …).
    pub fn truncation(&self) -> &TruncationParams {
        &self.truncation
    }

    /// Which implementation runs the forward pass (`cpu-f32` or `candle`).
    pub fn implementation(&self) -> &'static str {
        self.model.implementation()
    }

    /// The dtype in use.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// The tokenizer and pair template.
    pub fn encoder(&self) -> &PairEncoder {
        &self.encoder
    }

    /// Tokenizes pairs with the configured truncation.
    pub fn encode_pairs<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<EncodedPair>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        self.encoder.encode_pairs(pairs, &self.truncation)
    }

    /// Scores `(query, passage)` pairs, in input order: sigmoid scores, or
    /// raw logits when `raw_scores` is set.
    pub fn score<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<f32>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        let encoded = self.encode_pairs(pairs)?;
        let logits = self.logits(&encoded)?;
        Ok(self.transform(logits))
    }

    /// Scores passages against one query and returns them best first
    /// (at most `top_k` of them when given). Ties keep input order.
    pub fn rank<S: AsRef<str> + Sync>(
        &self,
        query: &str,
        passages: &[S],
        top_k: Option<usize>,
    ) -> Result<Vec<Ranked>> {
        let encoded = self
            .encoder
            .encode_passages(query, passages, &self.truncation)?;
        let scores = self.transform(self.logits(&encoded)?);
        Ok(rank_scores(&scores, top_k))
    }

    /// Raw logits of already-encoded pairs, in input order.
    pub fn logits<P: AsRef<[u32]> + Sync>(&self, pairs: &[P]) -> Result<Vec<f32>> {
        let lens: Vec<usize> = pairs.iter().map(|p| p.as_ref().len()).collect();
        let mut out = vec![0f32; pairs.len()];
        for batch in plan_batches(
            &lens,
            self.options.batch_size,
            self.options.max_batch_tokens,
        ) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| pairs[i].as_ref()).collect();
            let logits = self.forward(&ids)?;
            for (&i, l) in batch.iter().zip(logits) {
                out[i] = l;
            }
        }
        Ok(out)
    }

    /// One forward pass over the given pairs, no further batching.
    pub fn forward<P: AsRef<[u32]>>(&self, pairs: &[P]) -> Result<Vec<f32>> {
        self.model.forward(&self.pack(pairs)?)
    }

    /// The pairs as one packed batch, once each is checked against the
    /// model's position limit.
    fn pack<P: AsRef<[u32]>>(&self, pairs: &[P]) -> Result<PackedBatch> {
        let limit = self.config.max_tokens();
        if let Some(p) = pairs.iter().find(|p| p.as_ref().len() > limit) {
            return Err(Error::MaxLengthTooLarge {
                requested: p.as_ref().len(),
                limit,
            });
        }
        Ok(PackedBatch::new(pairs, self.model.pad_token_id()))
    }

    /// Raw logits and each pair's final `<s>` hidden state (what the
    /// classification head reads), in input order; batched as
    /// [`Reranker::logits`]. For accuracy checks of bf16/int8 against f32;
    /// only the hand-written CPU model exposes hidden states.
    pub fn logits_and_hidden<P: AsRef<[u32]> + Sync>(
        &self,
        pairs: &[P],
    ) -> Result<(Vec<f32>, Vec<Vec<f32>>)> {
        let lens: Vec<usize> = pairs.iter().map(|p| p.as_ref().len()).collect();
        let (mut logits, mut hidden) = (vec![0f32; pairs.len()], vec![Vec::new(); pairs.len()]);
        let h = self.config.hidden_size;
        for batch in plan_batches(
            &lens,
            self.options.batch_size,
            self.options.max_batch_tokens,
        ) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| pairs[i].as_ref()).collect();
            let (l, states) = self.model.forward_hidden(&self.pack(&ids)?)?;
            for ((&i, l), state) in batch.iter().zip(l).zip(states.chunks_exact(h)) {
                logits[i] = l;
                hidden[i] = state.to_vec();
            }
        }
        Ok((logits, hidden))
    }

    fn transform(&self, mut logits: Vec<f32>) -> Vec<f32> {
        if !self.options.raw_scores {
            logits.iter_mut().for_each(|x| *x = sigmoid(*x));
        }
        logits
    }
}

/// The logistic function that turns a logit into a score in (0, 1).
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// Indices sorted by score, best first, ties in input order, cut to `top_k`.
pub fn rank_scores(scores: &[f32], top_k: Option<usize>) -> Vec<Ranked> {
    let mut ranked: Vec<Ranked> = scores
        .iter()
        .enumerate()
        .map(|(index, &score)| Ranked { index, score })
        .collect();
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    ranked.truncate(top_k.unwrap_or(usize::MAX));
    ranked
}

/// Groups pair indices into batches: longest pairs first, at most
/// `batch_size` pairs and at most `max_batch_tokens` padded tokens
/// (pairs × longest) each; a pair longer than the budget goes alone.
pub fn plan_batches(lens: &[usize], batch_size: usize, max_batch_tokens: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lens.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(lens[i]));
    let mut batches = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for i in order {
        // Sorted descending: the first pair of a batch is its longest.
        let longest = current.first().map_or(lens[i], |&f| lens[f]);
        if !current.is_empty()
            && (current.len() >= batch_size.max(1)
                || (current.len() + 1) * longest > max_batch_tokens)
        {
            batches.push(std::mem::take(&mut current));
        }
        current.push(i);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

fn truncation_params(options: &RerankerOptions, config: &ModelConfig) -> Result<TruncationParams> {
    let limit = config.max_tokens();
    let max_length = options.max_length.unwrap_or(DEFAULT_MAX_LENGTH.min(limit));
    if max_length > limit {
        return Err(Error::MaxLengthTooLarge {
            requested: max_length,
            limit,
        });
    }
    let min = crate::tokenize::SPECIAL_TOKENS_PER_PAIR;
    if max_length < min {
        return Err(Error::InvalidOption(format!(
            "max_length {max_length} is too small: a pair needs at least {min} special tokens"
        )));
    }
    if options.batch_size == 0 {
        return Err(Error::InvalidOption("batch_size must be at least 1".into()));
    }
    let query_max_length = options.query_max_length.unwrap_or(max_length * 3 / 4);
    if query_max_length > max_length - min {
        return Err(Error::InvalidOption(format!(
            "query_max_length {query_max_length} leaves no room for the passage: it must be at most max_length - {min} = {}",
            max_length - min
        )));
    }
    Ok(TruncationParams {
        max_length,
        strategy: options.truncation,
        query_max_length,
        side: options.truncation_side,
    })
}

pub(crate) fn make_device(kind: DeviceKind) -> Result<Device> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda(n) => {
            if !cfg!(feature = "cuda") {
                return Err(Error::Unavailable(
                    "this build has no CUDA support; rebuild with `cargo build --release --features cuda` (needs the CUDA toolkit) or use --device cpu".into(),
                ));
            }
            Device::new_cuda(n).map_err(|e| {
                Error::Unavailable(format!(
                    "cannot open CUDA device {n}: {}; check that `nvidia-smi` lists it and that \
                     the driver supports the CUDA version this binary was built with (or use --device cpu)",
                    crate::error::without_backtrace(&e)
                ))
            })
        }
    }
}

pub(crate) fn check_dtype(dtype: Dtype, device: &Device) -> Result<()> {
    if !device.is_cpu() && dtype == Dtype::Int8 {
        return Err(Error::Unavailable(
            "int8 runs only on CPU; use --device cpu, or --dtype f16 on CUDA".into(),
        ));
    }
    Ok(())
}

fn weights<'a>(path: &Path, dtype: DType, device: &'a Device) -> Result<VarBuilder<'a>> {
    let corrupt = |e: candle_core::Error| Error::CorruptFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if path.extension().is_some_and(|e| e == "bin") {
        // PyTorch pickle checkpoints: candle reads the common (zip) layout.
        return VarBuilder::from_pth(path, dtype, device).map_err(|e| Error::CorruptFile {
            path: path.to_path_buf(),
            reason: format!("{e}; convert it to model.safetensors (e.g. `model.save_pretrained(dir, safe_serialization=True)` in Python)"),
        });
    }
    // SAFETY: the file is memory-mapped read-only; like every mmap user we
    // assume it is not truncated by another process while we run.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], dtype, device) }.map_err(corrupt)
}
