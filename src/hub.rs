//! Resolve a model given as a local directory or a Hugging Face model id to
//! its files: an existing directory, else the standard Hugging Face cache
//! (shared with Python's `huggingface_hub`, `transformers`, …), else a
//! download into that cache with the `hf-hub` crate (unless offline).
//!
//! The cache layout is the hub's: `CACHE/models--ORG--NAME/refs/REVISION`
//! holds a commit hash, `CACHE/models--ORG--NAME/snapshots/COMMIT/FILE` the
//! files (usually links into `blobs/`). The environment variables are the ones
//! Python's tools read: `HF_HUB_CACHE`, `HF_HOME`, `XDG_CACHE_HOME`,
//! `HF_ENDPOINT`, `HF_TOKEN`, `HF_TOKEN_PATH` and `HF_HUB_OFFLINE`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::{Cache, Repo, RepoType};

use crate::engine::ModelFiles;
use crate::error::{Error, Result};

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "BAAI/bge-reranker-v2-m3";
/// The hub used when `HF_ENDPOINT` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// The revision used when none is named.
pub const DEFAULT_REVISION: &str = "main";

/// The files fetched besides the weights.
const CONFIG: &str = "config.json";
const TOKENIZER: &str = "tokenizer.json";
const ST_CONFIG: &str = "config_sentence_transformers.json";
/// Weights, in order of preference.
const SAFETENSORS: &str = "model.safetensors";
const PYTORCH: &str = "pytorch_model.bin";

/// What to fix when a model cannot be found, for every error that says so.
const FIX_DIR: &str = "put config.json, model.safetensors and tokenizer.json in a directory and pass it with --model DIR";

/// Where the hub and its cache are, and whether to use the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubConfig {
    /// The hub cache directory, holding `models--ORG--NAME/` folders.
    pub cache_dir: PathBuf,
    /// Base URL of the hub or of a mirror, without a trailing slash.
    pub endpoint: String,
    /// Access token for gated or private models.
    pub token: Option<String>,
    /// Never download; use only directories and the cache.
    pub offline: bool,
}

impl HubConfig {
    /// Reads the environment as Python's `huggingface_hub` does:
    /// cache `HF_HUB_CACHE`, else `HF_HOME/hub`, else
    /// `XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`;
    /// endpoint `HF_ENDPOINT`; token `HF_TOKEN`, else the file `HF_TOKEN_PATH`
    /// or `HF_HOME/token`; `HF_HUB_OFFLINE=1` (or true/yes/on) disables downloads.
    pub fn from_env() -> Result<Self> {
        let hf_home = env("HF_HOME")
            .map(PathBuf::from)
            .or_else(|| env("XDG_CACHE_HOME").map(|x| PathBuf::from(x).join("huggingface")))
            .or_else(|| home_dir().map(|h| h.join(".cache").join("huggingface")));
        let cache_dir = env("HF_HUB_CACHE")
            .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
            .map(PathBuf::from)
            .or_else(|| hf_home.as_ref().map(|h| h.join("hub")))
            .ok_or_else(|| {
                Error::Hub(
                    "cannot locate the Hugging Face cache: no home directory; set HF_HOME".into(),
                )
            })?;
        let token = env("HF_TOKEN")
            .or_else(|| env("HUGGING_FACE_HUB_TOKEN"))
            .or_else(|| {
                let path = env("HF_TOKEN_PATH")
                    .map(PathBuf::from)
                    .or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
                let token = std::fs::read_to_string(path).ok()?;
                Some(token.trim().to_string()).filter(|t| !t.is_empty())
            });
        let endpoint = env("HF_ENDPOINT")
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
            .trim_end_matches('/')
            .to_string();
        let offline = env("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
        });
        Ok(Self {
            cache_dir,
            endpoint,
            token,
            offline,
        })
    }

    /// The cache folder of a model: `CACHE/models--ORG--NAME`.
    pub fn repo_dir(&self, model_id: &str) -> PathBuf {
        self.cache_dir
            .join(format!("models--{}", model_id.replace('/', "--")))
    }
}

/// A non-empty environment variable.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn home_dir() -> Option<PathBuf> {
    env("HOME")
        .or_else(|| env("USERPROFILE"))
        .map(PathBuf::from)
}

/// Where a model's files were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The model argument was a local directory.
    Directory,
    /// The files were already in the hub cache.
    Cache,
    /// The files (some or all) were downloaded just now.
    Download,
}

/// A model argument resolved to files.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub files: ModelFiles,
    pub source: Source,
}

/// Reports download progress; the CLI draws progress bars with it.
pub trait DownloadProgress {
    /// A file's download starts, `size` bytes in all. Called again for the
    /// same file when a dropped download resumes (then `advance` is called
    /// with the bytes already on disk).
    fn start(&mut self, file: &str, size: u64);
    /// `bytes` more bytes arrived.
    fn advance(&mut self, bytes: u64);
    /// The file is complete.
    fn finish(&mut self);
    /// A needed file was already in the cache and is not fetched again.
    fn cached(&mut self, _file: &str, _path: &Path) {}
}

/// No progress reporting.
impl DownloadProgress for () {
    fn start(&mut self, _file: &str, _size: u64) {}
    fn advance(&mut self, _bytes: u64) {}
    fn finish(&mut self) {}
}

/// Adapts [`DownloadProgress`] to `hf-hub`'s progress trait.
struct Adapter<'a>(&'a mut dyn DownloadProgress);

impl hf_hub::api::Progress for Adapter<'_> {
    fn init(&mut self, size: usize, filename: &str) {
        self.0.start(filename, size as u64);
    }
    fn update(&mut self, size: usize) {
        self.0.advance(size as u64);
    }
    fn finish(&mut self) {
        self.0.finish();
    }
}

/// Whether `s` has the shape of a hub repository id (`NAME` or `ORG/NAME`,
/// letters, digits, `-`, `_`, `.`), as `huggingface_hub` validates it.
pub fn is_repo_id(s: &str) -> bool {
    let parts: Vec<&str> = s.split('/').collect();
    s.len() <= 96
        && parts.len() <= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && !p.contains("--")
                && !p.contains("..")
                && !p.starts_with(['-', '.'])
                && !p.ends_with(['-', '.'])
        })
}

/// Resolves `model` (a directory or a hub model id) to files, in this order:
/// an existing directory; the files of `revision` in the hub cache; a
/// download into the cache (unless `hub.offline`). Every failure says what
/// was looked for, where, and how to fix it.
pub fn resolve(
    model: &str,
    revision: &str,
    hub: &HubConfig,
    progress: &mut dyn DownloadProgress,
) -> Result<ResolvedModel> {
    let path = Path::new(model);
    if path.is_dir() {
        return Ok(ResolvedModel {
            files: ModelFiles::in_dir(path)?,
            source: Source::Directory,
        });
    }
    if !is_repo_id(model) {
        let hint = if path.exists() {
            "this is a file; expected a model directory with config.json, model.safetensors and tokenizer.json, or a hub model id such as BAAI/bge-reranker-v2-m3"
        } else {
            "no such directory; pass a model directory with config.json, model.safetensors and tokenizer.json, or a hub model id such as BAAI/bge-reranker-v2-m3"
        };
        return Err(Error::MissingFile {
            path: path.to_path_buf(),
            hint: hint.into(),
        });
    }
    let miss = match find_cached(hub, model, revision) {
        Ok(files) => {
            tracing::info!(model, revision, config = %files.config.display(), "model found in the hub cache");
            return Ok(ResolvedModel {
                files,
                source: Source::Cache,
            });
        }
        Err(miss) => miss,
    };
    let not_found = |reason: String, fix: String| Error::ModelNotFound {
        model: model.to_string(),
        cache: miss.to_string(),
        reason,
        fix,
    };
    if hub.offline {
        return Err(not_found(
            "HF_HUB_OFFLINE is set, so it was not downloaded".into(),
            format!("{FIX_DIR}, or unset HF_HUB_OFFLINE to download it into the cache (HF_ENDPOINT selects a mirror)"),
        ));
    }
    tracing::info!(model, revision, endpoint = %hub.endpoint, "downloading the model");
    match fetch(model, revision, hub, progress) {
        Ok(files) => Ok(ResolvedModel {
            files,
            source: Source::Download,
        }),
        Err(failure) => Err(not_found(
            format!(
                "downloading it from {} failed: {}",
                hub.endpoint, failure.reason
            ),
            failure.fix,
        )),
    }
}

/// Why a model is not (completely) in the cache, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheMiss {
    /// No `models--ORG--NAME` folder.
    NoRepo(PathBuf),
    /// The folder has no `refs/REVISION` and no `snapshots/REVISION`.
    NoRevision { repo: PathBuf, revision: String },
    /// The snapshot lacks some of the needed files.
    Incomplete {
        snapshot: PathBuf,
        missing: Vec<&'static str>,
    },
}

impl std::fmt::Display for CacheMiss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoRepo(repo) => write!(f, "looked in {}: not there", repo.display()),
            Self::NoRevision { repo, revision } => write!(
                f,
                "looked in {}: no revision {revision} (no refs/{revision} or snapshots/{revision})",
                repo.display()
            ),
            Self::Incomplete { snapshot, missing } => write!(
                f,
                "looked in {}: {} missing",
                snapshot.display(),
                missing.join(", ")
            ),
        }
    }
}

/// The files of `model_id` at `revision` (a branch, tag or commit hash) in
/// the hub cache, if all of them are there.
pub fn find_cached(
    hub: &HubConfig,
    model_id: &str,
    revision: &str,
) -> std::result::Result<ModelFiles, CacheMiss> {
    let repo = hub.repo_dir(model_id);
    if !repo.is_dir() {
        return Err(CacheMiss::NoRepo(repo));
    }
    let commit = std::fs::read_to_string(repo.join("refs").join(revision))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| revision.to_string());
    let snapshot = repo.join("snapshots").join(&commit);
    if commit.is_empty() || !snapshot.is_dir() {
        return Err(CacheMiss::NoRevision {
            repo,
            revision: revision.to_string(),
        });
    }
    let weights = [SAFETENSORS, PYTORCH]
        .iter()
        .map(|w| snapshot.join(w))
        .find(|p| p.exists())
        .unwrap_or_else(|| snapshot.join(SAFETENSORS));
    let files = ModelFiles {
        config: snapshot.join(CONFIG),
        tokenizer: snapshot.join(TOKENIZER),
        weights,
    };
    let missing: Vec<&'static str> = [
        (&files.config, CONFIG),
        (&files.tokenizer, TOKENIZER),
        (&files.weights, SAFETENSORS),
    ]
    .into_iter()
    .filter(|(p, _)| !p.exists())
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        Ok(files)
    } else {
        Err(CacheMiss::Incomplete { snapshot, missing })
    }
}

/// Downloads config.json, tokenizer.json and the weights (model.safetensors,
/// or pytorch_model.bin when the repository has no safetensors) of
/// `model_id` at `revision` into the hub cache; files already there are not
/// fetched again. Fails when `hub.offline` is set.
pub fn download(
    model_id: &str,
    revision: &str,
    hub: &HubConfig,
    progress: &mut dyn DownloadProgress,
) -> Result<ModelFiles> {
    if hub.offline {
        return Err(Error::Hub(format!(
            "cannot download {model_id}: HF_HUB_OFFLINE is set; unset it to download"
        )));
    }
    if !is_repo_id(model_id) {
        return Err(Error::Hub(format!(
            "{model_id:?} is not a hub model id (expected ORG/NAME, e.g. {DEFAULT_MODEL})"
        )));
    }
    fetch(model_id, revision, hub, progress).map_err(|f| {
        Error::Hub(format!(
            "cannot download {model_id} (revision {revision}) from {}: {}. Fix: {}",
            hub.endpoint, f.reason, f.fix
        ))
    })
}

/// Why a download failed and what would fix it.
struct Failure {
    reason: String,
    fix: String,
}

fn fetch(
    model_id: &str,
    revision: &str,
    hub: &HubConfig,
    progress: &mut dyn DownloadProgress,
) -> std::result::Result<ModelFiles, Failure> {
    let api = ApiBuilder::from_cache(Cache::new(hub.cache_dir.clone()))
        .with_endpoint(hub.endpoint.clone())
        .with_token(hub.token.clone())
        .with_progress(false)
        .with_retries(3)
        .with_user_agent(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| api_failure(e, hub))?;
    let repo = api.repo(Repo::with_revision(
        model_id.to_string(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info = repo.info().map_err(|e| api_failure(e, hub))?;
    let listed: HashSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let weights = if listed.contains(SAFETENSORS) {
        SAFETENSORS
    } else if listed.contains(PYTORCH) {
        PYTORCH
    } else {
        return Err(Failure {
            reason: format!("the repository has no {SAFETENSORS} or {PYTORCH}"),
            fix: "check the model id; this engine runs XLMRobertaForSequenceClassification checkpoints such as BAAI/bge-reranker-v2-m3 and BertForSequenceClassification ones such as cross-encoder/ms-marco-MiniLM-L-6-v2".into(),
        });
    };
    if let Some(absent) = [CONFIG, TOKENIZER]
        .into_iter()
        .find(|f| !listed.contains(f))
    {
        return Err(Failure {
            reason: format!("the repository has no {absent}"),
            fix: format!("{FIX_DIR} (a slow tokenizer can be converted with transformers: AutoTokenizer.from_pretrained(ID).save_pretrained(DIR))"),
        });
    }
    let snapshot = hub.repo_dir(model_id).join("snapshots").join(&info.sha);
    let mut paths = Vec::with_capacity(3);
    for file in [CONFIG, TOKENIZER, weights] {
        let local = snapshot.join(file);
        if local.exists() {
            progress.cached(file, &local);
            paths.push(local);
        } else {
            let path = repo
                .download_with_progress(file, Adapter(progress))
                .map_err(|e| api_failure(e, hub))?;
            paths.push(path);
        }
    }
    // sentence-transformers' own config may name the score activation
    // (read next to config.json by `ModelConfig::from_file`).
    if listed.contains(ST_CONFIG) && !snapshot.join(ST_CONFIG).exists() {
        repo.download_with_progress(ST_CONFIG, Adapter(progress))
            .map_err(|e| api_failure(e, hub))?;
    }
    // Record which commit the revision names, so that later (offline)
    // lookups find these files, as huggingface_hub does.
    if revision != info.sha {
        let refs = hub.repo_dir(model_id).join("refs").join(revision);
        let written = refs
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&refs, &info.sha));
        if let Err(e) = written {
            return Err(Failure {
                reason: format!("cannot write {}: {e}", refs.display()),
                fix: "make the Hugging Face cache writable, or point HF_HOME elsewhere".into(),
            });
        }
    }
    let mut paths = paths.into_iter();
    let (Some(config), Some(tokenizer), Some(weights)) = (paths.next(), paths.next(), paths.next())
    else {
        unreachable!("three files were fetched");
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        weights,
    })
}

fn api_failure(e: ApiError, hub: &HubConfig) -> Failure {
    let mirror = "set HF_ENDPOINT to a reachable hub or mirror (e.g. https://hf-mirror.com)";
    match e {
        ApiError::RequestError(err) => match *err {
            ureq::Error::Status(code @ (401 | 403), _) => Failure {
                reason: format!(
                    "access refused (HTTP {code}): the model id or revision is wrong, or the model is private or gated"
                ),
                fix: format!("check the model id; for a gated model accept its terms on the model page and set HF_TOKEN; or {FIX_DIR}"),
            },
            ureq::Error::Status(404, _) => Failure {
                reason: "not found (HTTP 404)".into(),
                fix: format!("check the model id and --revision; or {FIX_DIR}"),
            },
            ureq::Error::Status(code, _) => Failure {
                reason: format!("the hub answered HTTP {code}"),
                fix: format!("try again later, or {mirror}, or {FIX_DIR}"),
            },
            ureq::Error::Transport(t) => Failure {
                reason: transport_reason(&t),
                fix: format!("{FIX_DIR}, or {mirror}"),
            },
        },
        ApiError::IoError(io) => Failure {
            reason: format!("cannot write to the cache {}: {io}", hub.cache_dir.display()),
            fix: "make the Hugging Face cache writable, or point HF_HOME elsewhere".into(),
        },
        other => Failure {
            reason: other.to_string(),
            fix: format!("{FIX_DIR}, or {mirror}"),
        },
    }
}

/// A transport error without the URL ureq puts in front (the endpoint is
/// named separately).
pub fn transport_reason(t: &ureq::Transport) -> String {
    let mut s = t.kind().to_string();
    if let Some(m) = t.message() {
        s.push_str(": ");
        s.push_str(m);
    }
    if let Some(src) = std::error::Error::source(t) {
        s.push_str(&format!(": {src}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        for ok in ["BAAI/bge-reranker-v2-m3", "gpt2", "test/tiny", "a.b_c/d-e"] {
            assert!(is_repo_id(ok), "{ok}");
        }
        for bad in [
            "tests/fixtures/tiny",
            "/abs/path",
            "./rel",
            "../up",
            "a//b",
            "",
            "a--b/c",
            "~/models/x",
            "C:\\models",
        ] {
            assert!(!is_repo_id(bad), "{bad}");
        }
    }

    #[test]
    fn repo_dir_layout() {
        let hub = HubConfig {
            cache_dir: "/c/hub".into(),
            endpoint: DEFAULT_ENDPOINT.into(),
            token: None,
            offline: true,
        };
        assert_eq!(
            hub.repo_dir("BAAI/bge-reranker-v2-m3"),
            Path::new("/c/hub/models--BAAI--bge-reranker-v2-m3")
        );
    }
}
