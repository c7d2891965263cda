//! `rerank._native`: the engine for Python. The Python package (`python/rerank/`)
//! gives it sentence-transformers' and FlagEmbedding's signatures; this module
//! only loads a model (resolved exactly as the CLI resolves `--model`) and
//! turns pairs into raw logits, with the GIL released while it tokenizes and
//! runs forward passes.

use std::sync::Mutex;

use pyo3::exceptions::{PyFileNotFoundError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use rerank::backend::BatchBudget;
use rerank::config::Activation;
use rerank::hub::{self, DownloadProgress, HubConfig};
use rerank::tokenize::TruncationParams;
use rerank::{DeviceKind, Dtype, Error, ModelConfig, Reranker, RerankerOptions, Truncation};

/// A library error as the Python exception that fits it, with the library's message.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::MissingFile { .. } | Error::ModelNotFound { .. } => {
            PyFileNotFoundError::new_err(msg)
        }
        Error::InvalidOption(_)
        | Error::MaxLengthTooLarge { .. }
        | Error::UnsupportedModel { .. }
        | Error::InvalidBatch(_)
        | Error::Tokenizer(_) => PyValueError::new_err(msg),
        _ => PyRuntimeError::new_err(msg),
    }
}

/// `cannot load the model X: …`, as the CLI says it, keeping the exception type.
fn load_error(model: &str, e: Error) -> PyErr {
    let err = to_py(e);
    Python::attach(|py| {
        let msg = format!("cannot load the model {model}: {}", err.value(py));
        if err.is_instance_of::<PyFileNotFoundError>(py) {
            PyFileNotFoundError::new_err(msg)
        } else if err.is_instance_of::<PyValueError>(py) {
            PyValueError::new_err(msg)
        } else {
            PyRuntimeError::new_err(msg)
        }
    })
}

/// The thread count this process's compute pool was configured with.
static THREADS: Mutex<Option<usize>> = Mutex::new(None);

/// Sets the compute thread count as the CLI's `--threads` does: candle's
/// matmul reads `RAYON_NUM_THREADS`, and the global rayon pool is built to
/// match. The global pool can be built once per process: the first call
/// wins. Returns the count in force, which differs from `n` when the pool was
/// configured (or already started) earlier.
#[pyfunction]
fn set_threads(n: usize) -> PyResult<Option<usize>> {
    if n == 0 {
        return Err(PyValueError::new_err("threads must be at least 1"));
    }
    let mut configured = THREADS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = *configured {
        return Ok(Some(c));
    }
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => {
            // SAFETY: under the GIL, as Python's own os.environ writes; no
            // thread of this extension reads the environment concurrently
            // (nothing has computed yet: the pool was not started).
            unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
            *configured = Some(n);
            Ok(Some(n))
        }
        // Already started (a model computed before any `threads=`): it keeps
        // its size.
        Err(_) => Ok(Some(rayon::current_num_threads())),
    }
}

/// Threads of the compute pool now.
#[pyfunction]
fn current_threads() -> usize {
    rayon::current_num_threads()
}

/// Download progress on stderr, one line per file (the CLI draws bars).
struct Progress;

impl DownloadProgress for Progress {
    fn start(&mut self, file: &str, size: u64) {
        eprintln!("downloading {file} ({:.1} MB)", size as f64 / 1e6);
    }
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
}

fn parse<T: std::str::FromStr<Err = Error>>(s: &str) -> PyResult<T> {
    s.parse().map_err(to_py)
}

/// A loaded cross-encoder.
#[pyclass(frozen, module = "rerank._native")]
struct Engine {
    inner: Reranker,
    model: String,
}

#[pymethods]
impl Engine {
    /// Resolves `model` (a directory, else the Hugging Face cache, else a
    /// download into it; HF_HOME, HF_HUB_CACHE, HF_ENDPOINT, HF_TOKEN and
    /// HF_HUB_OFFLINE as for the CLI) and loads it. `clamp_max_length`: a
    /// `max_length` above the model's limit becomes the limit instead of an error.
    #[new]
    #[pyo3(signature = (model, revision=None, max_length=None, batch_size=None, max_batch_tokens=None, dtype=None, device=None, truncation=None, query_max_length=None, clamp_max_length=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        model: String,
        revision: Option<String>,
        max_length: Option<usize>,
        batch_size: Option<usize>,
        max_batch_tokens: Option<usize>,
        dtype: Option<&str>,
        device: Option<&str>,
        truncation: Option<&str>,
        query_max_length: Option<usize>,
        clamp_max_length: bool,
    ) -> PyResult<Self> {
        let defaults = RerankerOptions::default();
        let options = RerankerOptions {
            max_length,
            batch_size: batch_size.unwrap_or(defaults.batch_size),
            max_batch_tokens: max_batch_tokens.unwrap_or(defaults.max_batch_tokens),
            truncation: truncation
                .map(parse::<Truncation>)
                .transpose()?
                .unwrap_or(defaults.truncation),
            query_max_length,
            device: device
                .map(parse::<DeviceKind>)
                .transpose()?
                .unwrap_or(DeviceKind::Cpu),
            dtype: dtype.map(parse::<Dtype>).transpose()?,
            ..defaults
        };
        let revision = revision.unwrap_or_else(|| hub::DEFAULT_REVISION.to_string());
        let resolved = py
            .detach(|| {
                let hub = HubConfig::from_env()?;
                let resolved = hub::resolve(&model, &revision, &hub, &mut Progress)?;
                if resolved.source == hub::Source::Download {
                    eprintln!("downloaded {model} into {}", hub.cache_dir.display());
                }
                Ok(resolved)
            })
            .map_err(to_py)?;
        let mut options = options;
        if clamp_max_length {
            // a max_length above the model's limit becomes the limit (the
            // Python classes warn); an unreadable config fails in the load
            if let (Some(m), Ok(config)) = (
                options.max_length,
                ModelConfig::from_file(&resolved.files.config),
            ) {
                options.max_length = Some(m.min(config.max_tokens()));
            }
        }
        let inner = py
            .detach(|| Reranker::load_files(&resolved.files, options))
            .map_err(|e| load_error(&model, e))?;
        Ok(Self { inner, model })
    }

    /// Raw logits of `(query, passage)` pairs, in input order. Batches hold at
    /// most `batch_size` pairs (and the engine's padded-token budget);
    /// `progress(n)` is called after each batch of `n` pairs. `max_length`,
    /// `query_max_length` and `truncation` override the engine's for this call.
    #[pyo3(signature = (pairs, batch_size=None, max_length=None, query_max_length=None, truncation=None, progress=None))]
    #[allow(clippy::too_many_arguments)]
    fn logits(
        &self,
        py: Python<'_>,
        pairs: Vec<(String, String)>,
        batch_size: Option<usize>,
        max_length: Option<usize>,
        query_max_length: Option<usize>,
        truncation: Option<&str>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Vec<f32>> {
        if batch_size == Some(0) {
            return Err(PyValueError::new_err(
                "batch_size must be a positive integer, got 0",
            ));
        }
        let truncation = truncation.map(parse::<Truncation>).transpose()?;
        let params = self.params(max_length, query_max_length, truncation)?;
        let budget = BatchBudget {
            max_pairs: batch_size.unwrap_or(self.inner.options().batch_size),
            max_tokens: self.inner.options().max_batch_tokens,
        };
        py.detach(|| -> PyResult<Vec<f32>> {
            let encoded = self
                .inner
                .encoder()
                .encode_pairs(&pairs, &params)
                .map_err(to_py)?;
            let lens: Vec<usize> = encoded.iter().map(|p| p.ids.len()).collect();
            let mut out = vec![0f32; encoded.len()];
            for batch in budget.plan(&lens) {
                let ids: Vec<&[u32]> = batch.iter().map(|&i| encoded[i].ids.as_slice()).collect();
                let logits = self.inner.forward(&ids).map_err(to_py)?;
                for (&i, l) in batch.iter().zip(logits) {
                    out[i] = l;
                }
                // Ctrl-C between batches raises KeyboardInterrupt
                Python::attach(|py| -> PyResult<()> {
                    py.check_signals()?;
                    if let Some(progress) = &progress {
                        progress.call1(py, (batch.len(),))?;
                    }
                    Ok(())
                })?;
            }
            Ok(out)
        })
    }

    /// The checkpoint's activation: "sigmoid", or "identity" when its
    /// config_sentence_transformers.json says so.
    #[getter]
    fn activation(&self) -> &'static str {
        match self.inner.config().activation() {
            Ok(Activation::Identity) => "identity",
            _ => "sigmoid",
        }
    }

    /// Most tokens per pair this engine was loaded with.
    #[getter]
    fn max_length(&self) -> usize {
        self.inner.truncation().max_length
    }

    /// The model's own limit of tokens per pair.
    #[getter]
    fn model_max_length(&self) -> usize {
        self.inner.config().max_tokens()
    }

    #[getter]
    fn num_labels(&self) -> usize {
        self.inner.config().labels()
    }

    #[getter]
    fn dtype(&self) -> String {
        format!("{:?}", self.inner.dtype()).to_lowercase()
    }

    #[getter]
    fn device(&self) -> String {
        match self.inner.options().device {
            DeviceKind::Cpu => "cpu".into(),
            DeviceKind::Cuda(n) => format!("cuda:{n}"),
        }
    }

    #[getter]
    fn implementation(&self) -> &'static str {
        self.inner.implementation()
    }

    #[getter]
    fn model(&self) -> &str {
        &self.model
    }

    fn __repr__(&self) -> String {
        format!(
            "Engine(model={:?}, device={:?}, dtype={:?}, max_length={})",
            self.model,
            self.device(),
            self.dtype(),
            self.max_length()
        )
    }
}

impl Engine {
    /// The engine's truncation with this call's overrides, checked as the
    /// engine checks its options.
    fn params(
        &self,
        max_length: Option<usize>,
        query_max_length: Option<usize>,
        strategy: Option<Truncation>,
    ) -> PyResult<TruncationParams> {
        let base = *self.inner.truncation();
        if max_length.is_none() && query_max_length.is_none() && strategy.is_none() {
            return Ok(base);
        }
        let limit = self.inner.config().max_tokens();
        let max_length = max_length.unwrap_or(base.max_length);
        if max_length > limit {
            return Err(to_py(Error::MaxLengthTooLarge {
                requested: max_length,
                limit,
            }));
        }
        let min = self.inner.encoder().template().special_tokens();
        if max_length < min {
            return Err(to_py(Error::InvalidOption(format!(
                "max_length {max_length} is too small: a pair needs at least {min} special tokens"
            ))));
        }
        let query_max_length =
            query_max_length.unwrap_or((max_length * 3 / 4).min(max_length - min));
        if query_max_length > max_length - min {
            return Err(to_py(Error::InvalidOption(format!(
                "query_max_length {query_max_length} leaves no room for the passage: it must be at most max_length - {min} = {}",
                max_length - min
            ))));
        }
        Ok(TruncationParams {
            max_length,
            strategy: strategy.unwrap_or(base.strategy),
            query_max_length,
            side: base.side,
        })
    }
}

/// Whether this build has candle's CUDA backend.
#[pyfunction]
fn cuda_built() -> bool {
    cfg!(feature = "cuda")
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Engine>()?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    m.add_function(wrap_pyfunction!(current_threads, m)?)?;
    m.add_function(wrap_pyfunction!(cuda_built, m)?)?;
    m.add("DEFAULT_MODEL", hub::DEFAULT_MODEL)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
