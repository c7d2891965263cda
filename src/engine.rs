//! [`Reranker`]: load a model directory, then score or rank pairs.
//!
//! Pairs are tokenized, sorted by length, cut into batches of at most
//! `batch_size` pairs and `max_batch_tokens` padded tokens, run through the
//! model and put back in input order.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use rayon::prelude::*;

use crate::backend::{check_logits, Backend, BatchBudget, PackedBatch, ScoreTransform, TokenSpace};
pub use crate::backend::{rank_scores, Ranked};
use crate::cache::{Scope, ScoreCache};
use crate::chunk::{best_window, ChunkParams, Chunked, LongDocuments, Window};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{Choice, Model, Weights};
pub use crate::model::{DeviceKind, Dtype};
use crate::tokenize::{EncodedPair, PairEncoder, Side, Truncation, TruncationParams};

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
    /// What happens to a pair longer than `max_length`: truncated (default),
    /// or its passage scored in windows, the best one counting ([`crate::chunk`]).
    pub long_documents: LongDocuments,
    /// The windows of [`LongDocuments::Chunk`].
    pub chunking: ChunkParams,
    /// Most pairs whose logits [`Reranker::score`], [`Reranker::rank`] and
    /// [`Reranker::logits`] keep in a [`ScoreCache`]; 0 (the default): no
    /// cache. See [`Reranker::with_cache`] to share one.
    pub cache_size: usize,
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
            long_documents: LongDocuments::Truncate,
            chunking: ChunkParams::default(),
            cache_size: 0,
        }
    }
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

/// A passage's score and, when it was scored in windows, the one that won.
#[derive(Debug, Clone, PartialEq)]
pub struct DocumentScore {
    pub score: f32,
    /// `None` unless chunking split the passage.
    pub window: Option<Window>,
}

/// A passage of [`Reranker::rank_documents`]: its input position, score and winning window.
#[derive(Debug, Clone, PartialEq)]
pub struct RankedDocument {
    pub index: usize,
    pub score: f32,
    pub window: Option<Window>,
}

/// A loaded cross-encoder.
pub struct Reranker {
    model: Model,
    encoder: PairEncoder,
    config: ModelConfig,
    truncation: TruncationParams,
    options: RerankerOptions,
    dtype: Dtype,
    /// Positions and token types of a pair (from the config and the
    /// tokenizer's pair template), built once.
    space: TokenSpace,
    /// What the score cache's scope names as the model (see [`Reranker::cache_identity`]).
    identity: String,
    cache: Option<(Arc<ScoreCache>, Scope)>,
    /// Batches split after a device out-of-memory error (CUDA only).
    oom_splits: Arc<AtomicU64>,
}

impl Reranker {
    /// Loads a model from a local directory.
    pub fn load(dir: impl AsRef<Path>, options: RerankerOptions) -> Result<Self> {
        Self::load_files(&ModelFiles::in_dir(dir.as_ref())?, options)
    }

    /// Loads a model from explicit files.
    pub fn load_files(files: &ModelFiles, options: RerankerOptions) -> Result<Self> {
        let config = ModelConfig::from_file(&files.config)?;
        let weights = Weights::File(files.weights.clone());
        let choice = Choice::new(options.device, options.dtype, options.portable, &weights)?;
        // The model loads (maps its file, times the kernels, reads or converts
        // its prepared weights) on a thread of its own while this one parses
        // tokenizer.json: 0.23 s for bge-reranker-v2-m3's 5 MB, which an int8
        // start without AMX (2 cores) used to spend before its 0.19 s load.
        // The checks below still report as they did, in the same order; one
        // that fails leaves the load to finish unwatched.
        let loading = {
            let config = config.clone();
            std::thread::Builder::new()
                .name("rerank-load".into())
                .spawn(move || Model::load(weights, &config, choice))
        };
        let encoder = PairEncoder::from_file(&files.tokenizer)?;
        let truncation = truncation_params(&options, &config, &encoder)?;
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
        let model = match loading {
            Ok(thread) => thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?,
            // No thread to be had: load here.
            Err(_) => Model::load(Weights::File(files.weights.clone()), &config, choice)?,
        };
        let dtype = choice.dtype;
        let space = TokenSpace::of(&config).with_template(encoder.template());
        let identity = format!(
            "{} {dtype} {} {}",
            file_identity(&files.weights),
            model.implementation(),
            options.device
        );
        let cache = ScoreCache::new(options.cache_size).map(Arc::new);
        Ok(Self {
            model,
            encoder,
            config,
            truncation,
            options,
            dtype,
            space,
            identity,
            cache: None,
            oom_splits: Arc::default(),
        }
        .with_cache(cache))
    }

    /// Builds a reranker from parts (e.g. synthetic weights for benchmarks).
    pub fn from_parts(
        model: Model,
        encoder: PairEncoder,
        config: ModelConfig,
        options: RerankerOptions,
    ) -> Result<Self> {
        let truncation = truncation_params(&options, &config, &encoder)?;
        let dtype = options.dtype.unwrap_or(Dtype::default_for(options.device));
        let space = TokenSpace::of(&config).with_template(encoder.template());
        // Weights from memory have no file to name: each instance is its own model.
        static PARTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let identity = format!(
            "parts#{} {dtype} {} {}",
            PARTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            model.implementation(),
            options.device
        );
        let cache = ScoreCache::new(options.cache_size).map(Arc::new);
        Ok(Self {
            model,
            encoder,
            config,
            truncation,
            options,
            dtype,
            space,
            identity,
            cache: None,
            oom_splits: Arc::default(),
        }
        .with_cache(cache))
    }

    /// Keeps logits in `cache` (which other rerankers may share: entries are
    /// scoped by model and options), or in none.
    pub fn with_cache(mut self, cache: Option<Arc<ScoreCache>>) -> Self {
        self.cache = cache.map(|c| {
            let scope = c.scope(&self.identity, &self.truncation);
            (c, scope)
        });
        self
    }

    /// The score cache, if any.
    pub fn cache(&self) -> Option<&Arc<ScoreCache>> {
        self.cache.as_ref().map(|(c, _)| c)
    }

    /// The model as a score cache's scope names it: the weights file
    /// (canonical path, size, modification time: a hub snapshot's path holds
    /// its revision), dtype, implementation and device.
    pub fn cache_identity(&self) -> &str {
        &self.identity
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

    /// The CPU kernels the hand-written model runs (`None` in candle).
    pub fn kernels(&self) -> Option<crate::model::Kernels> {
        self.model.kernels()
    }

    /// bf16 and int8 on CPU: the precision of each class of linear layers
    /// and of attention's products, and why (see
    /// [`crate::model::Model::layer_precision`]).
    pub fn layer_precision(&self) -> Option<String> {
        self.model.layer_precision()
    }

    /// The dtype in use.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// How a pair's positions and token types are laid out.
    pub fn token_space(&self) -> &TokenSpace {
        &self.space
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
    /// raw logits when `raw_scores` is set. With [`LongDocuments::Chunk`], a
    /// passage too long for its pair scores as its best window.
    pub fn score<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<f32>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        if self.options.long_documents == LongDocuments::Chunk {
            return Ok(self
                .score_documents(pairs)?
                .into_iter()
                .map(|d| d.score)
                .collect());
        }
        let encoded = self.encode_pairs(pairs)?;
        let logits = self.logits(&encoded)?;
        Ok(self.transform().apply_all(logits))
    }

    /// [`Reranker::score`] with the winning window of each chunked passage.
    pub fn score_documents<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<DocumentScore>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        if self.options.long_documents == LongDocuments::Truncate {
            let encoded = self.encode_pairs(pairs)?;
            let scores = self.transform().apply_all(self.logits(&encoded)?);
            return Ok(scores
                .into_iter()
                .map(|score| DocumentScore {
                    score,
                    window: None,
                })
                .collect());
        }
        self.score_chunked(&self.encode_documents(pairs)?)
    }

    /// Scores passages against one query and returns them best first
    /// (at most `top_k` of them when given). Ties keep input order.
    pub fn rank<S: AsRef<str> + Sync>(
        &self,
        query: &str,
        passages: &[S],
        top_k: Option<usize>,
    ) -> Result<Vec<Ranked>> {
        if self.options.long_documents == LongDocuments::Chunk {
            return Ok(self
                .rank_documents(query, passages, top_k)?
                .into_iter()
                .map(|r| Ranked {
                    index: r.index,
                    score: r.score,
                })
                .collect());
        }
        let encoded = self
            .encoder
            .encode_passages(query, passages, &self.truncation)?;
        let scores = self.transform().apply_all(self.logits(&encoded)?);
        Ok(rank_scores(&scores, top_k))
    }

    /// [`Reranker::rank`] with the winning window of each chunked passage.
    pub fn rank_documents<S: AsRef<str> + Sync>(
        &self,
        query: &str,
        passages: &[S],
        top_k: Option<usize>,
    ) -> Result<Vec<RankedDocument>> {
        let scored = if self.options.long_documents == LongDocuments::Truncate {
            let pairs: Vec<(&str, &str)> = passages.iter().map(|p| (query, p.as_ref())).collect();
            self.score_documents(&pairs)?
        } else {
            let q = self.encoder.text_ids(query)?;
            let chunked: Vec<Chunked> = passages
                .par_iter()
                .map(|p| {
                    self.encoder.encode_chunked(
                        &q,
                        p.as_ref(),
                        &self.truncation,
                        &self.options.chunking,
                        None,
                    )
                })
                .collect::<Result<_>>()?;
            self.score_chunked(&chunked)?
        };
        let scores: Vec<f32> = scored.iter().map(|d| d.score).collect();
        Ok(rank_scores(&scores, top_k)
            .into_iter()
            .map(|r| RankedDocument {
                index: r.index,
                score: r.score,
                window: scored[r.index].window.clone(),
            })
            .collect())
    }

    /// Encodes pairs as [`Reranker::score`] scores them: one window each
    /// when truncating, else [`PairEncoder::encode_chunked`]'s windows.
    pub fn encode_documents<Q, P>(&self, pairs: &[(Q, P)]) -> Result<Vec<Chunked>>
    where
        Q: AsRef<str> + Sync,
        P: AsRef<str> + Sync,
    {
        match self.options.long_documents {
            LongDocuments::Truncate => Ok(self
                .encode_pairs(pairs)?
                .into_iter()
                .zip(pairs)
                .map(|(pair, (_, p))| Chunked::whole(pair, p.as_ref()))
                .collect()),
            LongDocuments::Chunk => pairs
                .par_iter()
                .map(|(q, p)| {
                    let q = self.encoder.text_ids(q.as_ref())?;
                    self.encoder.encode_chunked(
                        &q,
                        p.as_ref(),
                        &self.truncation,
                        &self.options.chunking,
                        None,
                    )
                })
                .collect(),
        }
    }

    /// Scores every window of every passage in the engine's batches; a
    /// passage gets its best window's score.
    pub fn score_chunked(&self, docs: &[Chunked]) -> Result<Vec<DocumentScore>> {
        let flat: Vec<&[u32]> = docs
            .iter()
            .flat_map(|d| d.windows.iter().map(|w| w.ids.as_slice()))
            .collect();
        let logits = self.logits(&flat)?;
        Ok(self.document_scores(docs, &logits))
    }

    /// Scores of passages from the logits of all their windows, in order
    /// (`logits` as long as all the windows together).
    pub fn document_scores(&self, docs: &[Chunked], logits: &[f32]) -> Vec<DocumentScore> {
        let transform = self.transform();
        let mut at = 0;
        docs.iter()
            .map(|d| {
                let n = d.windows.len();
                let (best, logit) = best_window(&logits[at..at + n]);
                at += n;
                DocumentScore {
                    score: transform.apply(logit),
                    window: d.is_split().then(|| Window {
                        index: best,
                        count: n,
                        start: d.spans[best].start,
                        end: d.spans[best].end,
                    }),
                }
            })
            .collect()
    }

    /// Raw logits of already-encoded pairs, in input order; pairs in the
    /// score cache skip the forward pass.
    pub fn logits<P: AsRef<[u32]> + Sync>(&self, pairs: &[P]) -> Result<Vec<f32>> {
        let Some((cache, scope)) = &self.cache else {
            return self.compute_logits(pairs);
        };
        let (found, misses) = cache.get_all(*scope, pairs);
        let missing: Vec<&[u32]> = misses.iter().map(|&i| pairs[i].as_ref()).collect();
        let computed = self.compute_logits(&missing)?;
        let mut out: Vec<f32> = found.into_iter().map(|l| l.unwrap_or(0.0)).collect();
        for (&i, l) in misses.iter().zip(computed) {
            cache.put(cache.key(*scope, pairs[i].as_ref()), l);
            out[i] = l;
        }
        Ok(out)
    }

    fn compute_logits<P: AsRef<[u32]> + Sync>(&self, pairs: &[P]) -> Result<Vec<f32>> {
        let lens: Vec<usize> = pairs.iter().map(|p| p.as_ref().len()).collect();
        let mut out = vec![0f32; pairs.len()];
        for batch in self.budget().plan(&lens) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| pairs[i].as_ref()).collect();
            let logits = self.forward(&ids)?;
            for (&i, l) in batch.iter().zip(logits) {
                out[i] = l;
            }
        }
        Ok(out)
    }

    /// One forward pass over the given pairs, no further batching. Each pair
    /// must be non-empty, within the model's position limit and its
    /// vocabulary (else an error); every logit returned is finite. On CUDA,
    /// a batch that runs out of device memory is split in halves and retried
    /// ([`crate::memory::split_on_oom`], counted in [`Reranker::oom_splits`]).
    pub fn forward<P: AsRef<[u32]>>(&self, pairs: &[P]) -> Result<Vec<f32>> {
        let once = |pairs: &[P]| -> Result<Vec<f32>> {
            let logits = self.model.forward(&self.pack(pairs)?)?;
            check_logits(&logits, pairs.len())?;
            Ok(logits)
        };
        if cfg!(feature = "cuda") && matches!(self.options.device, DeviceKind::Cuda(_)) {
            crate::memory::split_on_oom(pairs, &once, &self.oom_splits)
        } else {
            once(pairs)
        }
    }

    /// Batches split after an out-of-memory error so far (shared with metrics).
    pub fn oom_splits(&self) -> &Arc<AtomicU64> {
        &self.oom_splits
    }

    /// Memory of one forward pass by its shape, for this model, implementation
    /// and dtype, on the current thread pool.
    pub fn activation_model(&self) -> crate::memory::ActivationModel {
        if self.options.device != DeviceKind::Cpu {
            // Activations live on the device: a host limit does not bound them.
            return crate::memory::ActivationModel {
                bytes_per_token: 0,
                bytes_per_pair_token_sq: 0,
                fixed_bytes: 0,
            };
        }
        let dtype_bytes = match self.dtype {
            Dtype::F32 => 4,
            _ => 2,
        };
        crate::memory::ActivationModel::of(
            &self.config,
            self.implementation(),
            dtype_bytes,
            rayon::current_num_threads(),
            self.truncation.max_length,
        )
    }

    /// The limits that fit `limit_bytes`: runs one short pair first, so the
    /// resident set measured holds the weights a pass touches, and adds the
    /// whole word-embedding table (f32), which that pass barely touched.
    pub fn memory_plan(
        &self,
        limit_bytes: u64,
        source: crate::memory::LimitSource,
    ) -> Result<crate::memory::MemoryPlan> {
        let warm = self
            .encoder
            .encode_passages("memory", &["check"], &self.truncation)?;
        self.forward(&[warm[0].ids.as_slice()])?;
        // The word-embedding table is read a row per token id: the short
        // pair touched a few rows of it, traffic touches more (and mapped
        // pages count against a cgroup's limit), so count it whole.
        let embeddings = (self.config.vocab_size * self.config.hidden_size * 4) as u64;
        let resident = crate::memory::resident_bytes().ok_or_else(|| {
            Error::Unavailable(
                "cannot read this process's resident memory (/proc/self/status) to plan for the memory limit; run without --memory-limit (--memory-limit none)".into(),
            )
        })?;
        crate::memory::MemoryPlan::derive(
            limit_bytes,
            source,
            resident + embeddings,
            self.activation_model(),
            self.truncation.max_length,
        )
    }

    /// The limits of one forward pass, from the options.
    pub fn budget(&self) -> BatchBudget {
        BatchBudget {
            max_pairs: self.options.batch_size,
            max_tokens: self.options.max_batch_tokens,
        }
    }

    /// How logits become scores: raw logits with `raw_scores`, else the
    /// checkpoint's activation (sentence-transformers' `activation_fn`:
    /// sigmoid unless it says identity).
    pub fn transform(&self) -> ScoreTransform {
        let identity = self.config.activation() == Ok(crate::config::Activation::Identity);
        ScoreTransform::raw_if(self.options.raw_scores || identity)
    }

    fn pack<P: AsRef<[u32]>>(&self, pairs: &[P]) -> Result<PackedBatch> {
        PackedBatch::new(pairs, &self.space)
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
        for batch in self.budget().plan(&lens) {
            let ids: Vec<&[u32]> = batch.iter().map(|&i| pairs[i].as_ref()).collect();
            let (l, states) = self.model.forward_hidden(&self.pack(&ids)?)?;
            check_logits(&l, ids.len())?;
            for ((&i, l), state) in batch.iter().zip(l).zip(states.chunks_exact(h)) {
                logits[i] = l;
                hidden[i] = state.to_vec();
            }
        }
        Ok((logits, hidden))
    }
}

impl Backend for Reranker {
    fn predict(&self, pairs: &[&[u32]]) -> Result<Vec<f32>> {
        self.forward(pairs)
    }
}

/// A weights file as the cache names it; a file that cannot be inspected
/// is named by its path alone.
fn file_identity(path: &Path) -> String {
    let canonical = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(path).ok();
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!(
        "{} {} {modified}",
        canonical.display(),
        meta.map_or(0, |m| m.len())
    )
}

fn truncation_params(
    options: &RerankerOptions,
    config: &ModelConfig,
    encoder: &PairEncoder,
) -> Result<TruncationParams> {
    let limit = config.max_tokens();
    let max_length = options.max_length.unwrap_or(DEFAULT_MAX_LENGTH.min(limit));
    if max_length > limit {
        return Err(Error::MaxLengthTooLarge {
            requested: max_length,
            limit,
        });
    }
    let min = encoder.template().special_tokens();
    if max_length < min {
        return Err(Error::InvalidOption(format!(
            "max_length {max_length} is too small: a pair needs at least {min} special tokens"
        )));
    }
    if options.batch_size == 0 {
        return Err(Error::InvalidOption("batch_size must be at least 1".into()));
    }
    if options.long_documents == LongDocuments::Chunk {
        options.chunking.check()?;
    }
    if options.max_batch_tokens == 0 {
        return Err(Error::InvalidOption(
            "max_batch_tokens must be at least 1".into(),
        ));
    }
    // FlagReranker's default (3/4 of max_length), kept below the room a
    // passage needs for tiny max_length; a value given is checked as is.
    let query_max_length = options
        .query_max_length
        .unwrap_or((max_length * 3 / 4).min(max_length - min));
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
