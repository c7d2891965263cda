//! `rerank bench`: named workloads against a model directory or a synthetic
//! random-weight model with bge-reranker-v2-m3's shapes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rerank::synthetic::{self, SplitMix64};
use rerank::{ModelConfig, Reranker};

use super::ModelArgs;

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Use random weights with bge-reranker-v2-m3's exact shapes, built in memory (no download).
    #[arg(long)]
    pub synthetic: bool,
    /// With --synthetic: write the model in Hugging Face format to DIR and exit.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,
    /// Workloads to run: seed-512x10, seed-1024x20, seed-8192x5, seed-8192x1, rag-50 [default: all but seed-8192x5].
    #[arg(long = "workload", short = 'w', value_name = "NAME")]
    pub workloads: Vec<String>,
    /// Timed runs per workload (the median is reported), after one warm-up run.
    /// 0: only write the workloads (with --dump), score nothing.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Skip the accuracy check against f32 that non-f32 dtypes get (it loads a
    /// second, f32 copy of the model: skip it when measuring memory).
    #[arg(long)]
    pub no_accuracy: bool,
    /// Skip the warm-up run.
    #[arg(long)]
    pub no_warmup: bool,
    /// Write each workload's pairs as JSONL ({"query", "passage"}) into DIR, for the reference script.
    #[arg(long, value_name = "DIR")]
    pub dump: Option<PathBuf>,
    /// Write results (timings and every score) as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Also measure a plain f32 matmul (5120×1024 · 1024×4096) as the ceiling.
    #[arg(long)]
    pub ceiling: bool,
}

/// A named benchmark workload: `count` pairs whose token lengths (specials
/// included) are drawn from `min_len..=max_len`.
struct Workload {
    name: &'static str,
    count: usize,
    min_len: usize,
    max_len: usize,
}

const WORKLOADS: [Workload; 5] = [
    Workload {
        name: "seed-512x10",
        count: 10,
        min_len: 512,
        max_len: 512,
    },
    Workload {
        name: "seed-1024x20",
        count: 20,
        min_len: 1024,
        max_len: 1024,
    },
    Workload {
        name: "seed-8192x5",
        count: 5,
        min_len: 8192,
        max_len: 8192,
    },
    Workload {
        name: "seed-8192x1",
        count: 1,
        min_len: 8192,
        max_len: 8192,
    },
    Workload {
        name: "rag-50",
        count: 50,
        min_len: 64,
        max_len: 512,
    },
];

/// Query length in tokens for every workload (a typical search query).
const QUERY_TOKENS: usize = 16;

impl Workload {
    /// Texts of synthetic words, each one token with the synthetic tokenizer.
    fn pairs(&self, words: usize) -> Vec<(String, String)> {
        let mut rng = SplitMix64(0x5EED ^ self.count as u64 ^ (self.max_len as u64) << 20);
        let text = |n: usize, rng: &mut SplitMix64| {
            (0..n)
                .map(|_| synthetic::word(rng.below(words)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        (0..self.count)
            .map(|_| {
                let len = self.min_len + rng.below(self.max_len - self.min_len + 1);
                let q = text(QUERY_TOKENS, &mut rng);
                let p = text(
                    len - QUERY_TOKENS - rerank::tokenize::SPECIAL_TOKENS_PER_PAIR,
                    &mut rng,
                );
                (q, p)
            })
            .collect()
    }
}

/// Floating-point operations of one pair of `n` tokens: the linear layers
/// (2·params per token) plus attention's two n×n products per layer.
fn flops(cfg: &ModelConfig, n: usize) -> f64 {
    let (h, i, l) = (
        cfg.hidden_size as f64,
        cfg.intermediate_size as f64,
        cfg.num_hidden_layers as f64,
    );
    let n = n as f64;
    let linear = 2.0 * (4.0 * h * h + 2.0 * h * i) * l * n;
    let attention = 4.0 * n * n * h * l;
    linear + attention
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Peak resident set (VmHWM) in bytes, from /proc.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Resets VmHWM to the current RSS so each workload reports its own peak.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

pub fn run(args: &BenchArgs) -> Result<()> {
    // `ModelArgs::load` sets the thread count itself; the synthetic path must do it here.
    if let (true, Some(n)) = (args.synthetic, args.model.threads) {
        super::set_threads(n)?;
    }
    let start = Instant::now();
    let cfg = ModelConfig::bge_reranker_v2_m3();
    if let Some(dir) = &args.save {
        if !args.synthetic {
            bail!("--save writes a synthetic model: add --synthetic");
        }
        synthetic::save(dir, &cfg, 42)?;
        eprintln!(
            "wrote a random-weight bge-reranker-v2-m3 to {} in {:.1?}",
            dir.display(),
            start.elapsed()
        );
        return Ok(());
    }
    let reranker = if args.synthetic {
        let options = args.model.options();
        let dtype = options
            .dtype
            .unwrap_or(rerank::Dtype::default_for(options.device));
        let (model, encoder) = synthetic::build(&cfg, 42, dtype, options.device)?;
        Reranker::from_parts(model, encoder, cfg.clone(), options)?
    } else {
        args.model.load()?
    };
    let load_time = start.elapsed();
    // bf16 / int8 are checked against f32 on the same weights and pairs.
    let f32_reference =
        if reranker.dtype() == rerank::Dtype::F32 || args.no_accuracy || args.runs == 0 {
            None
        } else if args.synthetic {
            let mut options = args.model.options();
            let (model, encoder) = synthetic::build(&cfg, 42, rerank::Dtype::F32, options.device)?;
            options.dtype = Some(rerank::Dtype::F32);
            Some(Reranker::from_parts(model, encoder, cfg.clone(), options)?)
        } else {
            Some(args.model.load_with_dtype(rerank::Dtype::F32)?)
        };
    let threads = candle_core::utils::get_num_threads();
    let cfg = reranker.config().clone();
    let kernels = reranker
        .kernels()
        .map_or_else(|| "-".to_string(), |k| k.to_string());
    println!(
        "model: {}  dtype: {}  implementation: {}  kernels: {kernels}  threads: {threads}  load: {:.2} s  batch_size: {}  max_batch_tokens: {}",
        if args.synthetic { "synthetic bge-reranker-v2-m3 (random weights)".to_string() } else { format!("{:?}", args.model.model) },
        reranker.dtype(),
        reranker.implementation(),
        load_time.as_secs_f64(),
        reranker.options().batch_size,
        reranker.options().max_batch_tokens,
    );
    if let Some(plan) = reranker.layer_precision() {
        println!("layer precision: {plan}");
    }
    let ceiling = if args.ceiling {
        let gflops = matmul_ceiling()?;
        println!("f32 matmul ceiling (5120x1024 · 1024x4096, candle/gemm): {gflops:.1} GFLOP/s");
        Some(print_kernel_ceilings(gflops)?)
    } else {
        None
    };
    let names: Vec<String> = if args.workloads.is_empty() {
        ["seed-512x10", "seed-1024x20", "rag-50"]
            .map(String::from)
            .to_vec()
    } else {
        args.workloads.clone()
    };
    println!(
        "{:<14} {:>6} {:>8} {:>10} {:>9} {:>10} {:>9} {:>10}",
        "workload", "pairs", "tokens", "median s", "pairs/s", "tokens/s", "GFLOP/s", "peak GiB"
    );
    let words = synthetic::word_count(&cfg);
    let mut results = Vec::new();
    for name in &names {
        let Some(w) = WORKLOADS.iter().find(|w| w.name == name) else {
            bail!(
                "unknown workload {name:?}; known: {}",
                WORKLOADS.map(|w| w.name).join(", ")
            );
        };
        let pairs = w.pairs(words);
        if let Some(dir) = &args.dump {
            std::fs::create_dir_all(dir)?;
            let path = dir.join(format!("{}.jsonl", w.name));
            let lines: Vec<String> = pairs
                .iter()
                .map(|(q, p)| serde_json::json!({"query": q, "passage": p}).to_string())
                .collect();
            std::fs::write(&path, lines.join("\n") + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if args.runs == 0 {
            continue;
        }
        let lens: Vec<usize> = reranker
            .encode_pairs(&pairs)?
            .iter()
            .map(|e| e.ids.len())
            .collect();
        let tokens: usize = lens.iter().sum();
        let total_flops: f64 = lens.iter().map(|&n| flops(&cfg, n)).sum();
        reset_peak_rss();
        if !args.no_warmup {
            reranker.score(&pairs)?;
        }
        let mut times = Vec::new();
        let mut scores = Vec::new();
        for _ in 0..args.runs {
            let t = Instant::now();
            scores = reranker.score(&pairs)?;
            times.push(t.elapsed());
        }
        let med = median(times.clone()).as_secs_f64();
        let peak = peak_rss().unwrap_or(0);
        let accuracy = match &f32_reference {
            Some(f32_model) => Some(accuracy(&reranker, f32_model, &pairs)?),
            None => None,
        };
        println!(
            "{:<14} {:>6} {:>8} {:>10.3} {:>9.2} {:>10.0} {:>9.1} {:>10.2}",
            w.name,
            pairs.len(),
            tokens,
            med,
            pairs.len() as f64 / med,
            tokens as f64 / med,
            total_flops / med / 1e9,
            gib(peak)
        );
        if let Some(a) = &accuracy {
            println!(
                "{:<14} vs f32: max relative L2 error of the <s> hidden state {:.2e} (mean {:.2e}), max |score - f32 score| {:.2e}",
                "", a.max_rel_l2, a.mean_rel_l2, a.max_score_diff
            );
        }
        results.push(serde_json::json!({
            "accuracy_vs_f32": accuracy.as_ref().map(|a| serde_json::json!({
                "max_rel_l2_hidden": a.max_rel_l2, "mean_rel_l2_hidden": a.mean_rel_l2,
                "max_abs_score_diff": a.max_score_diff,
            })),
            "workload": w.name, "pairs": pairs.len(), "tokens": tokens,
            "runs_s": times.iter().map(|t| t.as_secs_f64()).collect::<Vec<_>>(),
            "median_s": med, "pairs_per_s": pairs.len() as f64 / med,
            "tokens_per_s": tokens as f64 / med, "gflops": total_flops / med / 1e9,
            "peak_rss_bytes": peak, "scores": scores,
        }));
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "threads": threads, "dtype": reranker.dtype().to_string(),
            "implementation": reranker.implementation(), "kernels": kernels,
            "layer_precision": reranker.layer_precision(),
            "load_s": load_time.as_secs_f64(), "results": results,
            "ceiling": ceiling,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
    }
    Ok(())
}

/// How far a bf16/int8 model is from the f32 one on the same pairs.
struct Accuracy {
    /// Relative L2 error of each pair's final `<s>` hidden state: max and mean over pairs.
    max_rel_l2: f64,
    mean_rel_l2: f64,
    /// Largest |sigmoid score − f32 sigmoid score|.
    max_score_diff: f64,
}

fn accuracy(
    model: &Reranker,
    f32_model: &Reranker,
    pairs: &[(String, String)],
) -> Result<Accuracy> {
    let encoded = model.encode_pairs(pairs)?;
    let (logits, hidden) = model.logits_and_hidden(&encoded)?;
    let (logits_ref, hidden_ref) = f32_model.logits_and_hidden(&encoded)?;
    let rel: Vec<f64> = hidden
        .iter()
        .zip(&hidden_ref)
        .map(|(h, r)| {
            let err: f64 = h.iter().zip(r).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
            let norm: f64 = r.iter().map(|b| (*b as f64).powi(2)).sum();
            (err / norm.max(f64::MIN_POSITIVE)).sqrt()
        })
        .collect();
    let max_score_diff = logits
        .iter()
        .zip(&logits_ref)
        .map(|(a, b)| (rerank::backend::sigmoid(*a) - rerank::backend::sigmoid(*b)).abs() as f64)
        .fold(0.0, f64::max);
    Ok(Accuracy {
        max_rel_l2: rel.iter().cloned().fold(0.0, f64::max),
        mean_rel_l2: rel.iter().sum::<f64>() / rel.len().max(1) as f64,
        max_score_diff,
    })
}

/// Prints each instruction's register-only peak and each kernel's GFLOP/s on
/// the encoder's FFN shapes as a share of it (issue 16's yardstick), and
/// returns them for `--json`.
fn print_kernel_ceilings(candle_f32: f64) -> Result<serde_json::Value> {
    use rerank::model::cpu::ceiling;
    use rerank::model::cpu::plan::AttentionKernel;
    use rerank::model::kernels::I16Kernel;
    let threads = candle_core::utils::get_num_threads();
    let peaks = rerank::model::kernels::peak::peaks();
    let list: Vec<String> = peaks
        .iter()
        .map(|p| format!("{} {:.0}", p.instruction, p.gflops))
        .collect();
    println!(
        "instruction peaks (register-only loops, {threads} threads, GFLOP/s f32-equivalent): {}",
        list.join(", ")
    );
    let kernels = rerank::model::Kernels::get()?;
    const ROWS: usize = 2048;
    let loops = rerank::model::kernels::peak::loops();
    let speeds = ceiling::kernel_speeds(kernels, ROWS, &loops);
    println!(
        "{:<16} {:<17} {:>22} {:>22}",
        "kernel",
        "peak of",
        format!("{ROWS}x1024->4096"),
        format!("{ROWS}x4096->1024")
    );
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let names: Vec<&str> = speeds
        .iter()
        .map(|s| s.kernel.as_str())
        .fold(Vec::new(), |mut v, n| {
            if !v.contains(&n) {
                v.push(n)
            }
            v
        });
    for name in names {
        let cells: Vec<_> = speeds.iter().filter(|s| s.kernel == name).collect();
        let cell = |s: &ceiling::KernelSpeed| match s.of_peak {
            Some((_, share)) => format!("{:.0} ({:.0} % of peak)", s.gflops, 100.0 * share),
            None => format!("{:.0}", s.gflops),
        };
        let vs = cells.first().and_then(|s| s.of_peak).map_or("-", |p| p.0);
        println!(
            "{:<16} {:<17} {:>22} {:>22}",
            name,
            vs,
            cells.first().map(|s| cell(s)).unwrap_or_default(),
            cells.get(1).map(|s| cell(s)).unwrap_or_default()
        );
        for s in cells {
            rows.push(serde_json::json!({
                "kernel": s.kernel, "shape": [s.shape.0, s.shape.1, s.shape.2],
                "gflops": s.gflops, "peak_instruction": s.of_peak.map(|p| p.0),
                "share_of_peak": s.of_peak.map(|p| p.1),
            }));
        }
    }
    // Attention: bf16 (and int16 where the int8 kernel has VNNI) against f32
    // by pair length, on the process's kernels.
    let lens = [128, 256, 512, 1024, 2048, 4096];
    let mut attention = vec![(
        "bf16",
        kernels.bf16.name(),
        ceiling::attention_over_f32(AttentionKernel::Bf16(kernels.bf16), &lens),
    )];
    let i16 = I16Kernel::with(kernels.i8);
    if i16 != I16Kernel::Portable {
        let ratios = ceiling::attention_over_f32(AttentionKernel::Int16(i16), &lens);
        attention.push(("int16", i16.name(), ratios));
    }
    for (precision, kernel, ratios) in &attention {
        let cells: Vec<String> = ratios
            .iter()
            .map(|(len, r)| format!("{len}: {r:.2}"))
            .collect();
        println!(
            "attention, {precision} {kernel} time / f32 time by pair length (16 heads of 64): {}",
            cells.join(", ")
        );
    }
    Ok(serde_json::json!({
        "attention_over_f32": attention.iter().flat_map(|(precision, kernel, ratios)| {
            ratios.iter().map(move |(len, r)| serde_json::json!({
                "pair_tokens": len, "precision": precision, "kernel": kernel, "time_ratio": r,
            }))
        }).collect::<Vec<_>>(),
        "candle_f32_gflops": candle_f32,
        "peaks": peaks.iter().map(|p| serde_json::json!({
            "instruction": p.instruction, "bounds": p.bounds, "gflops": p.gflops,
        })).collect::<Vec<_>>(),
        "kernels": rows,
    }))
}

/// GFLOP/s of candle's f32 matmul on the encoder's largest shape (median of 5).
fn matmul_ceiling() -> Result<f64> {
    use candle_core::{Device, Tensor};
    let (m, k, n) = (5120, 1024, 4096);
    let a = Tensor::ones((m, k), candle_core::DType::F32, &Device::Cpu)?;
    let b = Tensor::ones((n, k), candle_core::DType::F32, &Device::Cpu)?;
    let bt = b.t()?;
    a.matmul(&bt)?;
    let times: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            a.matmul(&bt).map(|_| t.elapsed())
        })
        .collect::<candle_core::Result<_>>()?;
    Ok(2.0 * (m * k * n) as f64 / median(times).as_secs_f64() / 1e9)
}
