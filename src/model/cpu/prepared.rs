//! The prepared-weights cache: a bf16 or int8 model's linear layers as its
//! load left them (int8: calibrated, quantized, smoothed and packed, the
//! residual layers bf16- or int16-packed; bf16: rounded and packed), kept on
//! disk so the next process reads them instead of converting the checkpoint
//! again.
//!
//! Measured, not assumed (BENCHMARKS.md "Load time per dtype", full-size
//! model, whole `rerank score` process on one pair): int8's conversion (an f32
//! calibration pass plus the quantization of 300 M weights) is most of its
//! load, 1.87 s against 0.39 s mapped back (the packed weights used in place,
//! see `stored::Source`); bf16 only rounds and packs, yet mapped back it loads
//! in 0.32 s against 0.97 s converted (AMD Zen 4; f32 0.32 s), so both are
//! cached (bf16's entry is 0.6 GiB, int8's 0.4 GiB).
//!
//! An entry is keyed by everything its contents depend on: the model file
//! (its canonical path, which for a Hugging Face cache is the blob named by
//! its SHA-256, plus size, modification time and inode), the dtype, the
//! residual layers' precision, the kernels (their calibration choices), the
//! model's config and this code's version ([`FORMAT`], the crate version).
//! The key is stored in the file and compared on every read, so a hash
//! collision is a miss, not a wrong model. A file that cannot be read back
//! (truncated, corrupt, another version) is a miss with a warning, and is
//! replaced. Entries are written to a temporary file and renamed, so a
//! process stopped mid-write leaves no half entry; writing an entry removes
//! the older entries of the same model file, dtype and plan.

use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::WeightSource;
use crate::config::ModelConfig;
use crate::model::kernels::{stored, Kernels};
use crate::model::Dtype;

/// Bump when anything that decides the prepared weights changes: packing
/// layouts, quantization, calibration, smoothing, the file layout.
const FORMAT: u32 = 2;
const MAGIC: &[u8; 8] = b"RERANKPW";
/// Smaller checkpoints are not cached: they convert in a fraction of a
/// second, and tests would fill the user's cache with their fixtures.
const MIN_FILE_BYTES: u64 = 256 << 20;
const END: &[u8; 4] = b"END.";

/// The env switch of the cache: (variable, accepted values, meaning).
pub const SWITCH: (&str, &str, &str) = (
    "RERANK_PREPARED_CACHE",
    "a directory, or off",
    "bf16 and int8 models: where the weights converted at load are kept for the next start \
     (bge-reranker-v2-m3: 0.6 GiB bf16, 0.4 GiB int8; checkpoints under 256 MiB are not \
     cached); unset: $XDG_CACHE_HOME/rerank/prepared or ~/.cache/rerank/prepared; off: \
     convert at every load",
);

/// Where the cache is.
pub(super) enum Place {
    /// As [`SWITCH`] says.
    FromEnv,
    /// In this directory, whatever the checkpoint's size (tests).
    #[cfg_attr(not(test), allow(dead_code))]
    Dir(PathBuf),
}

/// One model's entry in the cache.
pub(super) struct Entry {
    path: PathBuf,
    /// Entries of the same model file, dtype and plan start with this.
    family: String,
    key: String,
}

impl Entry {
    /// The entry for these weights, or `None` when the cache is off, the
    /// weights are not a file, or no cache directory is known.
    pub(super) fn locate(
        source: &WeightSource,
        cfg: &ModelConfig,
        (dtype, residual): (Dtype, super::plan::Residual),
        kernels: Kernels,
        place: &Place,
    ) -> Option<Entry> {
        let WeightSource::Mapped { path, .. } = source else {
            return None;
        };
        let dir = match place {
            Place::FromEnv => directory(std::env::var_os(SWITCH.0).as_deref(), |v| {
                std::env::var_os(v)
            })?,
            Place::Dir(dir) => dir.clone(),
        };
        let (model, bytes) = match file_identity(path) {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!("prepared weights: cannot identify {}: {e}", path.display());
                return None;
            }
        };
        if matches!(place, Place::FromEnv) && bytes < MIN_FILE_BYTES {
            return None;
        }
        Some(Self::in_dir(&dir, &model, cfg, (dtype, residual), kernels))
    }

    fn in_dir(
        dir: &Path,
        (model, version): &(String, String),
        cfg: &ModelConfig,
        (dtype, residual): (Dtype, super::plan::Residual),
        kernels: Kernels,
    ) -> Entry {
        let family = format!("{model}\n{dtype} residual {residual} kernels {kernels}");
        let key = format!(
            "rerank {} prepared weights v{FORMAT}\n{family}\nfile {version}\nconfig {cfg:?}",
            env!("CARGO_PKG_VERSION")
        );
        let family = format!("{:016x}-{dtype}", fnv1a(&family));
        let path = dir.join(format!("{family}-{:016x}.bin", fnv1a(&key)));
        Entry { path, family, key }
    }

    /// Reads the entry with `read` (which must consume exactly what the
    /// writer wrote) from the file mapped in memory: packed weights stay in
    /// the map, used in place. `None` when there is none, or with a warning
    /// when it cannot be read back.
    pub(super) fn read<T>(
        &self,
        read: impl FnOnce(&mut stored::Source) -> io::Result<T>,
    ) -> Option<T> {
        let started = Instant::now();
        let file = match fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("prepared weights {}: {e}; converting", self.path.display());
                return None;
            }
        };
        let body = || -> io::Result<Option<T>> {
            // SAFETY: entries are written to a temporary file and renamed,
            // never changed in place, so the mapped file does not change
            // under the model (a replaced entry keeps its old inode mapped).
            let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
            let mut r = stored::Source::new(std::sync::Arc::new(map));
            let mut magic = [0u8; 8];
            r.read_exact(&mut magic)?;
            if &magic != MAGIC {
                return Err(stored::invalid("not a prepared-weights file"));
            }
            let key = read_string(&mut r)?;
            if key != self.key {
                return Ok(None);
            }
            let value = read(&mut r)?;
            let mut end = [0u8; 4];
            r.read_exact(&mut end)?;
            if &end != END || !r.at_end() {
                return Err(stored::invalid("data past the last layer"));
            }
            Ok(Some(value))
        };
        match body() {
            Ok(Some(value)) => {
                tracing::info!(
                    "prepared weights read from {} in {:.2} s",
                    self.path.display(),
                    started.elapsed().as_secs_f64()
                );
                Some(value)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(
                    "prepared weights {} unreadable ({e}); converting again and replacing it",
                    self.path.display()
                );
                None
            }
        }
    }

    /// Writes the entry with `write`, atomically, and removes older entries
    /// of the same family. Failures (read-only or full disk) are warnings:
    /// the model is loaded either way.
    pub(super) fn write(&self, write: impl FnOnce(&mut stored::Sink) -> io::Result<()>) {
        let started = Instant::now();
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let result = (|| -> io::Result<u64> {
            if let Some(dir) = self.path.parent() {
                fs::create_dir_all(dir)?;
            }
            let mut file = BufWriter::with_capacity(1 << 20, fs::File::create(&tmp)?);
            let mut w = stored::Sink::new(&mut file);
            w.write_all(MAGIC)?;
            write_string(&mut w, &self.key)?;
            write(&mut w)?;
            w.write_all(END)?;
            let file = file.into_inner().map_err(|e| e.into_error())?;
            let bytes = file.metadata()?.len();
            fs::rename(&tmp, &self.path)?;
            Ok(bytes)
        })();
        match result {
            Ok(bytes) => {
                tracing::info!(
                    "prepared weights written to {} ({:.0} MiB, {:.2} s); later loads read them (RERANK_PREPARED_CACHE=off: never)",
                    self.path.display(),
                    bytes as f64 / (1 << 20) as f64,
                    started.elapsed().as_secs_f64()
                );
                self.remove_older();
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                tracing::warn!(
                    "prepared weights not cached at {} ({e}); set {} to a writable directory, or off",
                    self.path.display(),
                    SWITCH.0
                );
            }
        }
    }

    /// Removes the family's other entries: the same model file, dtype and
    /// plan before the file, the config or this code changed.
    fn remove_older(&self) {
        let (Some(dir), Some(own)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let n = name.to_string_lossy();
            if name != own && n.starts_with(&format!("{}-", self.family)) && n.ends_with(".bin") {
                match fs::remove_file(e.path()) {
                    Ok(()) => tracing::info!("prepared weights: removed the older {n}"),
                    Err(err) => tracing::debug!("prepared weights: cannot remove {n}: {err}"),
                }
            }
        }
    }
}

/// The cache directory: the switch's value, `off` for none, unset (or empty)
/// for `$XDG_CACHE_HOME/rerank/prepared`, else `$HOME/.cache/rerank/prepared`.
fn directory(
    value: Option<&std::ffi::OsStr>,
    env: impl Fn(&str) -> Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    let set = |v: Option<std::ffi::OsString>| v.filter(|v| !v.is_empty());
    match value.map(|v| v.to_string_lossy().trim().to_ascii_lowercase()) {
        Some(v) if ["off", "0", "false", "no", "none"].contains(&v.as_str()) => None,
        Some(v) if !v.is_empty() => value.map(PathBuf::from),
        _ => set(env("XDG_CACHE_HOME"))
            .map(PathBuf::from)
            .or_else(|| set(env("HOME")).map(|h| Path::new(&h).join(".cache")))
            .map(|base| base.join("rerank").join("prepared")),
    }
}

/// ((the file's canonical path, its size, modification time and inode), its
/// size in bytes). The path names the entry's family; the rest its version.
fn file_identity(path: &Path) -> io::Result<((String, String), u64)> {
    let canonical = fs::canonicalize(path)?;
    let meta = fs::metadata(&canonical)?;
    let mtime = meta
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0u64;
    let version = format!("{} bytes, modified {mtime} ns, inode {inode}", meta.len());
    Ok(((canonical.display().to_string(), version), meta.len()))
}

/// 64-bit FNV-1a: stable across processes and Rust versions (std's hasher
/// promises neither), for file names only (the key itself is compared).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

fn write_string(w: &mut dyn Write, s: &str) -> io::Result<()> {
    stored::write_len(w, s.len())?;
    w.write_all(s.as_bytes())
}

fn read_string(r: &mut dyn Read) -> io::Result<String> {
    let n = stored::read_len(r)?;
    if n > 1 << 16 {
        return Err(stored::invalid("a key longer than 64 KiB"));
    }
    let mut b = vec![0u8; n];
    r.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|_| stored::invalid("a key that is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::{OsStr, OsString};

    #[test]
    fn directory_from_the_switch_and_the_environment() {
        let env = |xdg: Option<&str>, home: Option<&str>| {
            let (xdg, home) = (xdg.map(OsString::from), home.map(OsString::from));
            move |v: &str| match v {
                "XDG_CACHE_HOME" => xdg.clone(),
                "HOME" => home.clone(),
                _ => None,
            }
        };
        let some = |p: &str| Some(PathBuf::from(p));
        assert_eq!(
            directory(Some(OsStr::new("OFF")), env(None, Some("/h"))),
            None
        );
        assert_eq!(
            directory(Some(OsStr::new("0")), env(None, Some("/h"))),
            None
        );
        assert_eq!(
            directory(Some(OsStr::new("/c/p")), env(None, None)),
            some("/c/p")
        );
        assert_eq!(
            directory(None, env(Some("/x"), Some("/h"))),
            some("/x/rerank/prepared")
        );
        assert_eq!(
            directory(Some(OsStr::new("")), env(Some(""), Some("/h"))),
            some("/h/.cache/rerank/prepared")
        );
        assert_eq!(directory(None, env(None, None)), None);
    }

    /// bf16 and int8 models (int8 with bf16, f32 and int16 residual layers)
    /// loaded from their cache entry score bit for bit as when converted;
    /// a truncated, a foreign and a stale entry are misses that convert
    /// again and replace the entry.
    #[test]
    fn cached_models_score_as_converted_ones_and_bad_entries_are_replaced() {
        use crate::model::cpu::plan::{Reason, Residual, ResidualPlan};
        use crate::model::cpu::CpuModel;
        use crate::model::Model;
        use crate::{synthetic, DeviceKind, Reranker, RerankerOptions};
        let cfg = ModelConfig {
            vocab_size: 500,
            hidden_size: 64,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 256,
            max_position_embeddings: 130,
            ..ModelConfig::bge_reranker_v2_m3()
        };
        let tmp = tempfile::tempdir().unwrap();
        let model_dir = tmp.path().join("model");
        synthetic::save(&model_dir, &cfg, 3).unwrap();
        let file = model_dir.join("model.safetensors");
        let place = Place::Dir(tmp.path().join("cache"));
        let kernels = Kernels::get().unwrap();
        let pairs: Vec<(String, String)> = (0..5)
            .map(|k| {
                (
                    "w1 w2 w3".to_string(),
                    (0..10 + 9 * k)
                        .map(synthetic::word)
                        .collect::<Vec<_>>()
                        .join(" "),
                )
            })
            .collect();
        let score = |model: CpuModel, dtype| {
            let options = RerankerOptions {
                dtype: Some(dtype),
                raw_scores: true,
                ..RerankerOptions::default()
            };
            let (_, encoder) = synthetic::build(&cfg, 3, Dtype::F32, DeviceKind::Cpu).unwrap();
            let rr =
                Reranker::from_parts(Model::Cpu(Box::new(model)), encoder, cfg.clone(), options)
                    .unwrap();
            let encoded = rr.encode_pairs(&pairs).unwrap();
            let logits = rr.logits_and_hidden(&encoded).unwrap().0;
            logits.into_iter().map(f32::to_bits).collect::<Vec<_>>()
        };
        for (dtype, residual) in [
            (Dtype::Bf16, Residual::Bf16),
            (Dtype::Int8, Residual::Bf16),
            (Dtype::Int8, Residual::F32),
            (Dtype::Int8, Residual::Int16),
        ] {
            let what = format!("{dtype}, residual {residual}");
            let plan = (dtype == Dtype::Int8).then_some(ResidualPlan {
                precision: residual,
                reason: Reason::Forced,
            });
            let load = || {
                let source = WeightSource::map(&file).unwrap();
                CpuModel::load_from(&source, &cfg, dtype, kernels, (plan, None), &place).unwrap()
            };
            let entry = || {
                let source = WeightSource::map(&file).unwrap();
                Entry::locate(&source, &cfg, (dtype, residual), kernels, &place).unwrap()
            };
            let converted = load();
            assert!(
                !converted.weights_from_cache(),
                "{what}: nothing cached yet"
            );
            let want = score(converted, dtype);
            let path = entry().path;
            let size = fs::metadata(&path).unwrap().len();
            let cached = load();
            assert!(cached.weights_from_cache(), "{what}: second load");
            assert_eq!(score(cached, dtype), want, "{what}: cached scores");
            // Truncated, then not a cache file at all: converted again, replaced.
            let bytes = fs::read(&path).unwrap();
            for bad in [&bytes[..bytes.len() / 2], b"not a prepared-weights file"] {
                fs::write(&path, bad).unwrap();
                let model = load();
                assert!(!model.weights_from_cache(), "{what}: bad entry used");
                assert_eq!(score(model, dtype), want, "{what}: after a bad entry");
                assert_eq!(
                    fs::metadata(&path).unwrap().len(),
                    size,
                    "{what}: not replaced"
                );
                assert!(load().weights_from_cache(), "{what}: the replaced entry");
            }
        }
        // The model file changes (a new modification time): a new entry,
        // and the older ones of each family are removed.
        let entries = |dir: &Path| {
            let mut names: Vec<_> = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let Place::Dir(dir) = &place else {
            unreachable!()
        };
        let before = entries(dir);
        assert_eq!(before.len(), 4, "{before:?}");
        let f = fs::File::options().write(true).open(&file).unwrap();
        f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        drop(f);
        let source = WeightSource::map(&file).unwrap();
        let model =
            CpuModel::load_from(&source, &cfg, Dtype::Bf16, kernels, (None, None), &place).unwrap();
        assert!(
            !model.weights_from_cache(),
            "a changed file's old entry was used"
        );
        let after = entries(dir);
        assert_eq!(after.len(), 4, "{after:?}");
        assert_eq!(
            after.iter().filter(|n| !before.contains(n)).count(),
            1,
            "{before:?} → {after:?}"
        );
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // Test vectors of the FNV reference (draft-eastlake-fnv).
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
    }
}
