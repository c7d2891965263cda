//! Memory-aware limits: from a memory limit (`--memory-limit`, else the
//! cgroup's) and the model's memory per token, the padded tokens of one
//! forward pass and the pairs the queue may hold, so that a small container
//! neither dies nor needs hand-tuning. And the CUDA out-of-memory fallback:
//! a batch that does not fit is split in halves and retried
//! (FlagEmbedding's behaviour).
//!
//! The plan, [`MemoryPlan::derive`]: of the limit, what is resident once the
//! model has run one pass (measured: the process's RSS, weights included) and
//! a reserve for everything else ([`RESERVE_FRACTION`], at least
//! [`RESERVE_MIN`]) are taken off; of the rest, [`PASS_SHARE`] goes to one
//! forward pass's activations and the remainder to queued pairs.
//! Activations per token are computed from the shapes ([`ActivationModel`]);
//! `bench/memory-limit.sh` checks the result under a real cgroup limit.

use std::path::Path;

use crate::config::ModelConfig;
use crate::error::{Error, Result};

/// What is kept back from the limit besides the resident model: allocator
/// slack, request bodies being read, tokenization, the HTTP runtime.
pub const RESERVE_FRACTION: f64 = 0.05;
/// The least reserve, whatever the limit.
pub const RESERVE_MIN: u64 = 128 << 20;
/// The share of the headroom one forward pass's activations may use; the
/// rest holds queued pairs.
pub const PASS_SHARE: f64 = 0.75;
/// Bytes a queued pair holds per token of `max_length`: its ids (4 bytes), its
/// text (UTF-8, about 3–4 bytes a token) and the answer's copy of it, rounded up.
pub const QUEUED_BYTES_PER_TOKEN: u64 = 16;

/// Where a limit came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LimitSource {
    /// `--memory-limit`.
    Flag,
    /// The cgroup v2 `memory.max` (or v1 `memory.limit_in_bytes`) of this process.
    Cgroup,
}

/// Memory of one forward pass as a function of its shape, computed from the
/// model's config for the implementation that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ActivationModel {
    /// Bytes per token of the batch (padded tokens, where the implementation pads).
    pub bytes_per_token: u64,
    /// Bytes per pair per squared token of its length (attention scores held
    /// whole); 0 where attention is tiled.
    pub bytes_per_pair_token_sq: u64,
    /// Bytes of one pass whatever its size (per-thread attention buffers).
    pub fixed_bytes: u64,
}

impl ActivationModel {
    /// For `implementation` (`cpu-f32`, `cpu-bf16`, `cpu-int8`, `candle`) of
    /// a model with `config`, on `threads` compute threads, pairs of at most
    /// `max_length` tokens, `dtype_bytes` per activation in candle.
    pub fn of(
        config: &ModelConfig,
        implementation: &str,
        dtype_bytes: u64,
        threads: usize,
        max_length: usize,
    ) -> Self {
        let h = config.hidden_size as u64;
        let i = config.intermediate_size as u64;
        let heads = config.num_attention_heads as u64;
        let d = h / heads.max(1);
        if implementation.starts_with("cpu-") {
            // src/model/cpu: packed (no padding), f32 activations in x (H),
            // qkv (3H), ctx (H), mid (H) and ffn (I); int8 and bf16 kernels
            // also convert a layer's input (at most I wide) to their type.
            let convert = match implementation {
                "cpu-int8" => i,
                "cpu-bf16" => 2 * i,
                _ => 0,
            };
            // Attention is tiled (128 × 512 scores) per thread, with the
            // head's K and V gathered: 2 × len × d floats per thread.
            let per_thread = 2 * max_length as u64 * d * 4 + 128 * 512 * 4;
            Self {
                bytes_per_token: (6 * h + i) * 4 + convert,
                bytes_per_pair_token_sq: 0,
                fixed_bytes: threads as u64 * per_thread,
            }
        } else {
            // candle: padded batches; about ten H-wide and two I-wide
            // tensors live per token at a layer's peak (embeddings, qkv and
            // its per-head copies, context, residuals, the FFN and its GELU),
            // and per pair and head the scores, their softmax and the mask
            // broadcast: len² each.
            Self {
                bytes_per_token: (10 * h + 2 * i) * dtype_bytes,
                bytes_per_pair_token_sq: 3 * heads * dtype_bytes,
                fixed_bytes: 0,
            }
        }
    }

    /// Bytes of one pass of `tokens` padded tokens in pairs of `len` tokens.
    pub fn pass_bytes(&self, tokens: usize, len: usize) -> u64 {
        let pairs = tokens.div_ceil(len.max(1)) as u64;
        self.fixed_bytes
            + tokens as u64 * self.bytes_per_token
            + pairs * (len as u64).pow(2) * self.bytes_per_pair_token_sq
    }
}

/// The limits derived from a memory limit; `/info` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryPlan {
    pub limit_bytes: u64,
    pub source: LimitSource,
    /// Measured when the plan was made: the process's resident set once the
    /// model had run a pass (its weights touched), plus the word-embedding
    /// table, which one pass barely touches (see [`crate::Reranker::memory_plan`]).
    pub resident_bytes: u64,
    pub reserve_bytes: u64,
    /// For one forward pass's activations.
    pub pass_bytes: u64,
    /// For queued pairs.
    pub queue_bytes: u64,
    pub activations: ActivationModel,
    /// Most padded tokens per forward pass that fit `pass_bytes` in pairs of
    /// `max_length` (the worst case); at least 1: a pair longer than this
    /// still runs, alone.
    pub max_batch_tokens: usize,
    /// Most pairs admitted at once that fit `queue_bytes` at `max_length`
    /// tokens each.
    pub max_queued_pairs: usize,
    /// The longest pair whose pass fits `pass_bytes`; below the configured
    /// max_length, a pair that long may exceed the limit.
    pub longest_pair_that_fits: usize,
}

impl MemoryPlan {
    /// Derives the limits; `Err` when the limit leaves no headroom at all.
    pub fn derive(
        limit_bytes: u64,
        source: LimitSource,
        resident_bytes: u64,
        activations: ActivationModel,
        max_length: usize,
    ) -> Result<Self> {
        let reserve_bytes = ((limit_bytes as f64 * RESERVE_FRACTION) as u64).max(RESERVE_MIN);
        let Some(headroom) = limit_bytes
            .checked_sub(resident_bytes)
            .and_then(|h| h.checked_sub(reserve_bytes))
            .filter(|&h| h > 0)
        else {
            return Err(Error::InvalidOption(format!(
                "the memory limit of {} ({}) leaves nothing for computing: the loaded model already uses {} and {} is kept in reserve; raise the limit (--memory-limit or the container's) or use a smaller dtype (--dtype int8 holds about a quarter of f32's weights)",
                human(limit_bytes),
                source.describe(),
                human(resident_bytes),
                human(reserve_bytes)
            )));
        };
        let pass_bytes = (headroom as f64 * PASS_SHARE) as u64;
        let queue_bytes = headroom - pass_bytes;
        let len = max_length.max(1);
        let per_token =
            activations.bytes_per_token + len as u64 * activations.bytes_per_pair_token_sq;
        let usable = pass_bytes.saturating_sub(activations.fixed_bytes);
        let max_batch_tokens = ((usable / per_token.max(1)) as usize).max(1);
        let max_queued_pairs =
            ((queue_bytes / (len as u64 * QUEUED_BYTES_PER_TOKEN)) as usize).max(1);
        // The longest single pair whose pass fits (pass_bytes grows with len).
        let (mut lo, mut hi) = (0usize, len);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if activations.pass_bytes(mid, mid) <= pass_bytes {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        Ok(Self {
            limit_bytes,
            source,
            resident_bytes,
            reserve_bytes,
            pass_bytes,
            queue_bytes,
            activations,
            max_batch_tokens,
            max_queued_pairs,
            longest_pair_that_fits: lo,
        })
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        format!(
            "memory limit {} ({}): {} resident after loading, {} reserve; {} for a forward pass ({} per token) → at most {} padded tokens per pass; {} for the queue → at most {} queued pairs",
            human(self.limit_bytes),
            self.source.describe(),
            human(self.resident_bytes),
            human(self.reserve_bytes),
            human(self.pass_bytes),
            human(self.activations.bytes_per_token),
            self.max_batch_tokens,
            human(self.queue_bytes),
            self.max_queued_pairs
        )
    }
}

impl LimitSource {
    fn describe(self) -> &'static str {
        match self {
            Self::Flag => "--memory-limit",
            Self::Cgroup => "the cgroup's memory limit",
        }
    }
}

/// `3.0 GiB`, `512.0 MiB`, `40.0 KiB`, `12 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A size: bytes, or a number with a binary unit: `3G`, `3GiB`, `512M`,
/// `512Mi`, `1.5g` (K, M, G, T; `B`, `iB`, `i` optional; powers of 1024, as
/// cgroups and Kubernetes' `Gi` count). `none`, `max` and `0`: no limit.
pub fn parse_size(s: &str) -> std::result::Result<Option<u64>, String> {
    let t = s.trim();
    if ["none", "max", "0", "off"].contains(&t.to_ascii_lowercase().as_str()) {
        return Ok(None);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad = || {
        format!("`{s}` is not a memory size: give bytes or a number with K, M, G or T (powers of 1024), e.g. 3G or 512M; `none` for no limit")
    };
    let value: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_lowercase();
    let unit = unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .or_else(|| unit.strip_suffix('i'))
        .unwrap_or(&unit);
    let scale: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(bad()),
    };
    let bytes = value * scale as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(Some(bytes as u64))
}

/// This process's cgroup memory limit: the tightest `memory.max` (v2) or
/// `memory.limit_in_bytes` (v1) from its cgroup up to the root, `None` when
/// unlimited or unreadable.
pub fn cgroup_limit() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    cgroup_limit_at(&own, Path::new("/sys/fs/cgroup"))
}

/// [`cgroup_limit`] from `/proc/self/cgroup`'s text and the cgroup mount
/// root, for tests.
pub fn cgroup_limit_at(proc_self_cgroup: &str, root: &Path) -> Option<u64> {
    let mut limits = Vec::new();
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':').skip(1);
        let (Some(controllers), Some(path)) = (parts.next(), parts.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        // v2: "0::/path"; v1: "N:memory:/path" (possibly with other controllers).
        let (base, file) = if controllers.is_empty() {
            (root.to_path_buf(), "memory.max")
        } else if controllers.split(',').any(|c| c == "memory") {
            (root.join("memory"), "memory.limit_in_bytes")
        } else {
            continue;
        };
        let mut dir = base.join(path);
        loop {
            if let Some(limit) = read_limit(&dir.join(file)) {
                limits.push(limit);
            }
            if dir == base || !dir.pop() {
                break;
            }
        }
    }
    limits.into_iter().min()
}

/// A limit file's value; `max` and v1's "no limit" (a page-rounded
/// `i64::MAX`, or anything above 2⁶² bytes) are none.
fn read_limit(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let value: u64 = text.trim().parse().ok()?;
    (value < 1 << 62).then_some(value)
}

/// The resident set of this process (`VmRSS` of `/proc/self/status`), in bytes.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Whether an error is a device out-of-memory (CUDA's, through candle).
pub fn is_out_of_memory(e: &Error) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    matches!(e, Error::Compute(_))
        && (text.contains("out of memory") || text.contains("out_of_memory"))
}

/// Runs `forward` on `pairs`; when it fails with an out-of-memory error and
/// the batch has more than one pair, runs each half the same way (so down to
/// single pairs), counting every split in `splits`. Other errors, and an
/// out-of-memory error of a single pair, are returned as they are.
pub fn split_on_oom<P, F>(
    pairs: &[P],
    forward: &F,
    splits: &std::sync::atomic::AtomicU64,
) -> Result<Vec<f32>>
where
    F: Fn(&[P]) -> Result<Vec<f32>>,
{
    match forward(pairs) {
        Err(e) if pairs.len() > 1 && is_out_of_memory(&e) => {
            splits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                "out of device memory on a batch of {} pairs: splitting it in two and retrying",
                pairs.len()
            );
            let (a, b) = pairs.split_at(pairs.len() / 2);
            let mut out = split_on_oom(a, forward, splits)?;
            out.extend(split_on_oom(b, forward, splits)?);
            Ok(out)
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    fn bge_m3() -> ModelConfig {
        // BAAI/bge-reranker-v2-m3's shapes (XLM-RoBERTa large).
        serde_json::from_value(serde_json::json!({
            "architectures": ["XLMRobertaForSequenceClassification"],
            "model_type": "xlm-roberta", "vocab_size": 250002, "hidden_size": 1024,
            "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096,
            "hidden_act": "gelu", "max_position_embeddings": 8194, "type_vocab_size": 1,
            "layer_norm_eps": 1e-5, "pad_token_id": 1
        }))
        .expect("a config")
    }

    #[test]
    fn sizes_parse_in_binary_units_and_bad_ones_say_what_to_write() {
        assert_eq!(parse_size("3G"), Ok(Some(3 << 30)));
        assert_eq!(parse_size("3GiB"), Ok(Some(3 << 30)));
        assert_eq!(parse_size("3Gi"), Ok(Some(3 << 30)));
        assert_eq!(parse_size(" 512m "), Ok(Some(512 << 20)));
        assert_eq!(parse_size("1.5g"), Ok(Some(3 << 29)));
        assert_eq!(parse_size("4096"), Ok(Some(4096)));
        assert_eq!(parse_size("none"), Ok(None));
        assert_eq!(parse_size("max"), Ok(None));
        for bad in ["", "3X", "-1G", "G", "1e400", "3 GG", "0.1"] {
            let e = parse_size(bad).unwrap_err();
            assert!(e.contains("e.g. 3G"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cgroup_limit_is_the_tightest_on_the_way_to_the_root() {
        let root = tempfile::tempdir().unwrap();
        let scope = root.path().join("user.slice/run-1.scope");
        std::fs::create_dir_all(&scope).unwrap();
        std::fs::write(root.path().join("memory.max"), "max\n").unwrap();
        std::fs::write(root.path().join("user.slice/memory.max"), "8589934592\n").unwrap();
        std::fs::write(scope.join("memory.max"), "3221225472\n").unwrap();
        let v2 = "0::/user.slice/run-1.scope\n";
        assert_eq!(cgroup_limit_at(v2, root.path()), Some(3 << 30));
        std::fs::write(scope.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit_at(v2, root.path()), Some(8 << 30));
        std::fs::write(root.path().join("user.slice/memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit_at(v2, root.path()), None);
        // v1: the memory controller's hierarchy; its "unlimited" is a huge number.
        let v1_dir = root.path().join("memory/docker/abc");
        std::fs::create_dir_all(&v1_dir).unwrap();
        std::fs::write(v1_dir.join("memory.limit_in_bytes"), "2147483648\n").unwrap();
        std::fs::write(
            root.path().join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        let v1 = "12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n";
        assert_eq!(cgroup_limit_at(v1, root.path()), Some(2 << 30));
        assert_eq!(cgroup_limit_at("garbage", root.path()), None);
        assert_eq!(
            cgroup_limit_at(&format!("garbage\n{v1}"), root.path()),
            Some(2 << 30)
        );
    }

    #[test]
    fn the_cpu_model_needs_40_kib_per_token_in_f32() {
        // x, qkv, ctx, mid: 6 × 1024 floats; ffn: 4096 floats.
        let a = ActivationModel::of(&bge_m3(), "cpu-f32", 4, 2, 8192);
        assert_eq!(a.bytes_per_token, 40 * 1024);
        assert_eq!(a.bytes_per_pair_token_sq, 0);
        assert_eq!(a.fixed_bytes, 2 * (2 * 8192 * 64 * 4 + 256 * 1024));
        // An 8192-token pair: 320 MiB and the two threads' 4.25 MiB each.
        assert_eq!(
            a.pass_bytes(8192, 8192),
            (320 << 20) + 2 * (4 << 20) + (512 << 10)
        );
        let c = ActivationModel::of(&bge_m3(), "candle", 2, 2, 8192);
        // Attention scores held whole: 3 × 16 heads × 8192² × 2 bytes = 6 GiB for one pair.
        assert_eq!(c.pass_bytes(8192, 8192) - 8192 * c.bytes_per_token, 6 << 30);
    }

    #[test]
    fn a_3_gib_limit_on_the_f32_model_bounds_the_pass_and_the_queue() {
        let a = ActivationModel::of(&bge_m3(), "cpu-f32", 4, 2, 8192);
        let limit = 3u64 << 30;
        // A tight resident set: 2.27 GB of weights and 0.53 GB of the rest.
        let resident = 2_800_000_000;
        let plan = MemoryPlan::derive(limit, LimitSource::Cgroup, resident, a, 8192).unwrap();
        // By hand: reserve 5 % = 161061273; headroom 260164199; 3/4 of it
        // 195123149 for the pass, less 8912896 fixed, over 40960 a token.
        assert_eq!(plan.reserve_bytes, 161_061_273);
        assert_eq!(
            (plan.pass_bytes, plan.queue_bytes),
            (195_123_149, 65_041_050)
        );
        assert_eq!(plan.max_batch_tokens, (195_123_149 - 8_912_896) / 40_960);
        assert_eq!(plan.max_batch_tokens, 4546);
        // 65041050 / (8192 × 16)
        assert_eq!(plan.max_queued_pairs, 496);
        assert_eq!(plan.longest_pair_that_fits, 4546);
        assert!(a.pass_bytes(4546, 4546) <= plan.pass_bytes);
        assert!(a.pass_bytes(4547, 4547) > plan.pass_bytes);
        // More room: more of both, and an 8192-token pair fits.
        let big = MemoryPlan::derive(6 << 30, LimitSource::Flag, resident, a, 8192).unwrap();
        assert!(big.max_batch_tokens > 8 * plan.max_batch_tokens, "{big:?}");
        assert!(big.max_queued_pairs > 8 * plan.max_queued_pairs, "{big:?}");
        assert_eq!(big.longest_pair_that_fits, 8192);
        // The reserve's floor on a small limit.
        let small = MemoryPlan::derive(1 << 30, LimitSource::Flag, 512 << 20, a, 512).unwrap();
        assert_eq!(small.reserve_bytes, RESERVE_MIN);
        // Nothing left: a clear error.
        let e =
            MemoryPlan::derive(limit, LimitSource::Flag, limit - (100 << 20), a, 8192).unwrap_err();
        assert!(
            e.to_string().contains("leaves nothing for computing"),
            "{e}"
        );
        assert!(e.to_string().contains("--dtype int8"), "{e}");
    }

    #[test]
    fn an_oom_splits_the_batch_until_it_fits() {
        let oom = || {
            Error::Compute(candle_core::Error::Msg(
                "CUDA_ERROR_OUT_OF_MEMORY: out of memory".into(),
            ))
        };
        let calls = std::sync::Mutex::new(Vec::new());
        // Fits at most 2 pairs; returns each pair's id as its logit.
        let forward = |p: &[u32]| {
            calls.lock().unwrap().push(p.len());
            if p.len() > 2 {
                Err(oom())
            } else {
                Ok(p.iter().map(|&x| x as f32).collect())
            }
        };
        let splits = AtomicU64::new(0);
        let got = split_on_oom(&[0u32, 1, 2, 3, 4, 5, 6], &forward, &splits).unwrap();
        assert_eq!(got, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        // 7 → 3 + 4; 3 → 1 + 2; 4 → 2 + 2.
        assert_eq!(splits.load(std::sync::atomic::Ordering::Relaxed), 3);
        assert_eq!(*calls.lock().unwrap(), vec![7, 3, 1, 2, 4, 2, 2]);
        // A single pair out of memory, and other errors, come back as they are.
        let always = |_: &[u32]| -> Result<Vec<f32>> { Err(oom()) };
        assert!(is_out_of_memory(
            &split_on_oom(&[1u32], &always, &splits).unwrap_err()
        ));
        let other = |_: &[u32]| -> Result<Vec<f32>> { Err(Error::InvalidOption("bad".into())) };
        assert!(!is_out_of_memory(
            &split_on_oom(&[1u32, 2], &other, &splits).unwrap_err()
        ));
        assert_eq!(splits.load(std::sync::atomic::Ordering::Relaxed), 3);
    }
}
