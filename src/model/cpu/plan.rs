//! Which precision each class of an int8 model's linear layers runs in, chosen
//! per CPU by what is fast on it (and within the accuracy gates), not by
//! whether it has AMX.
//!
//! Q/K/V and the FFN input layer always run int8. The two layers that write
//! into the residual stream (attention output, FFN output) lose the most
//! accuracy in int8 (see [`super::CpuModel::load`]), so by default they run
//! bf16, int16 or f32, whichever is fastest here:
//! - AMX: bf16 (`TDPBF16PS` is several times f32's rate; measured on Sapphire Rapids);
//! - otherwise, where the CPU has AVX512-BF16 or AVX-512 VNNI: **measured at
//!   load**. `VDPBF16PS` retires at f32-FMA rate on AMD Zen 4/5 (bf16 ≈
//!   1.7–1.8× f32 there) but at half that rate on Intel (bf16 slower than
//!   f32), and no CPUID bit says which; a rule by vendor and family would go
//!   stale with the next CPU, a measurement does not. VNNI's `vpdpwssd`
//!   (int16, [`crate::model::kernels::i16`]) does twice an FMA's work per
//!   instruction on Intel (Ice Lake and Cascade Lake have it but no
//!   AVX512-BF16). It times the model's own int16, bf16 and f32 paths on the
//!   FFN-output shape (~2 GFLOP each, ~50–80 ms in all, once per process) and
//!   takes the fastest that is at least [`BF16_MARGIN`] times f32's speed;
//! - anything else (AVX2, portable kernels): f32, always faster.
//!
//! `RERANK_I8_RESIDUAL` forces a choice (`int8`, `int16`, `bf16`, `f32`;
//! `auto` or unset: as above). `int8` quantizes all four classes: the
//! fastest, and outside the random-weight gate (see README "Dtypes"), hence
//! never chosen by itself.

use std::fmt;
use std::sync::Mutex;

use super::ceiling::Operands;
use crate::model::kernels::{Bf16Kernel, I16Kernel, Kernels};
use crate::model::Dtype;

/// How much faster than f32 a measured bf16 or int16 product must be to be chosen.
pub(crate) const BF16_MARGIN: f64 = 1.25;

/// The precision of an int8 model's attention-output and FFN-output layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Residual {
    /// int8 like the other two classes (outside the gates; only when forced).
    Int8,
    /// 16-bit integers, `vpdpwssd` ([`crate::model::kernels::i16`]).
    Int16,
    Bf16,
    F32,
}

impl Residual {
    /// What a bf16 or f32 model's residual layers are (their dtype's).
    pub fn of(dtype: Dtype) -> Residual {
        match dtype {
            Dtype::Int8 => Residual::Int8,
            Dtype::Bf16 => Residual::Bf16,
            Dtype::F32 | Dtype::F16 => Residual::F32,
        }
    }
}

/// `int8`, `int16`, `bf16`, `f32` (the switch's words; also in cache keys).
impl fmt::Display for Residual {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Residual::Int8 => "int8",
            Residual::Int16 => "int16",
            Residual::Bf16 => "bf16",
            Residual::F32 => "f32",
        })
    }
}

/// The env switch that forces [`ResidualPlan::precision`].
pub const RESIDUAL_SWITCH: (&str, &str, &str) = (
    "RERANK_I8_RESIDUAL",
    "auto, int8, int16, bf16, f32",
    "int8 models: the precision of the attention-output and FFN-output layers; \
     auto (or unset): bf16 on AMX, else int16, bf16 or f32, whichever measures fastest on this CPU",
);

/// How an int8 model runs its attention-output and FFN-output layers, and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResidualPlan {
    pub precision: Residual,
    /// Why this precision.
    pub reason: Reason,
}

/// Why [`ResidualPlan::precision`] was chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// `RERANK_I8_RESIDUAL` named it.
    Forced,
    /// The bf16 kernel is AMX.
    Amx,
    /// Timed at load: GFLOP/s of the bf16 and the f32 path on the FFN-output shape.
    Measured { bf16: f64, f32: f64 },
    /// Timed at load (the residual layers): GFLOP/s of each path this CPU
    /// has a fast kernel for, on the FFN-output shape.
    Timed {
        int16: Option<f64>,
        bf16: Option<f64>,
        f32: f64,
    },
    /// The bf16 kernel is a portable one (slower than f32 everywhere).
    NoFastBf16,
    /// Neither a fast bf16 nor a fast int16 kernel (no AVX512-BF16, no VNNI).
    NoFastKernel,
}

/// e.g. `attn-out/ffn-out bf16 (measured: bf16 612 GFLOP/s, f32 401 GFLOP/s)`.
impl fmt::Display for ResidualPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "attn-out/ffn-out {} (", self.precision)?;
        self.reason.write(f, RESIDUAL_SWITCH.0)?;
        write!(f, ")")
    }
}

impl Reason {
    /// The words inside the parentheses of a plan's display; `switch` is
    /// the variable that forces that plan.
    fn write(&self, f: &mut fmt::Formatter<'_>, switch: &str) -> fmt::Result {
        match *self {
            Reason::Forced => write!(f, "{switch}"),
            Reason::Amx => write!(f, "AMX"),
            Reason::Measured { bf16, f32 } => {
                write!(f, "measured: bf16 {bf16:.0} GFLOP/s, f32 {f32:.0} GFLOP/s")
            }
            Reason::Timed { int16, bf16, f32 } => {
                write!(f, "measured: ")?;
                for (name, g) in [("int16", int16), ("bf16", bf16)] {
                    if let Some(g) = g {
                        write!(f, "{name} {g:.0} GFLOP/s, ")?;
                    }
                }
                write!(f, "f32 {f32:.0} GFLOP/s")
            }
            Reason::NoFastBf16 => write!(f, "no fast bf16 kernel"),
            Reason::NoFastKernel => write!(f, "no fast bf16 or int16 kernel"),
        }
    }
}

/// The env switch that forces [`AttentionPlan`].
pub const ATTENTION_SWITCH: (&str, &str, &str) = (
    "RERANK_ATTENTION",
    "auto, bf16, int16, f32",
    "bf16 and int8 models: the precision of attention's Q·Kᵀ and P·V products; bf16, int16: for every \
     pair; auto (or unset): bf16 for pairs of 256+ tokens where this CPU's bf16 kernel is fast (AMX, \
     or timed faster than f32), else int16 for pairs of 512+ tokens where its int16 kernel is, else f32",
);

/// The kernel of attention's two products where they do not run f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttentionKernel {
    /// bf16 operands, f32 sums ([`crate::model::kernels::bf16`]).
    Bf16(Bf16Kernel),
    /// 16-bit integer operands, exact i32 sums ([`crate::model::kernels::i16`]).
    Int16(I16Kernel),
}

/// How a bf16 or int8 model computes attention's two products (Q·Kᵀ, P·V;
/// the softmax and the sums are always f32), and why. f32 models run them
/// in f32.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionPlan {
    /// The kernel, or `None`: f32 (`gemm`).
    pub kernel: Option<AttentionKernel>,
    /// That kernel only for pairs of at least this many tokens (shorter ones f32).
    pub min_len: usize,
    /// Why.
    pub reason: Reason,
}

/// The shortest pair whose attention runs bf16 by default. Timed with AMX on
/// the model's shapes (16 heads of 64; `rerank bench --ceiling`'s attention
/// line, three readings on 2026-12-02), bf16's time over f32's: 1.07–1.24 at
/// 128 tokens, 0.85–0.93 at 256, 0.74–0.84 at 512, 0.70–0.75 at 1024,
/// 0.55–0.62 at 4096. Short pairs lose: packing each head's K and V and the softmax
/// (f32 in both) cost more there than the products save.
pub const BF16_ATTENTION_MIN_LEN: usize = 256;

/// The same for int16 (`vpdpwssd`), timed the same way on a Sapphire Rapids
/// VM with AMX capped off (2026-12-03, after the AVX-512 packing of keys and
/// values and chunks of 128 keys), int16's time over f32's: 1.30 at 128
/// tokens, 1.14 at 256, 0.89 at 512, 0.81 at 1024, 0.76 at 2048, 0.72 at
/// 4096. Below ~400 tokens packing each head and Q·Kᵀ's short sums (k = 64)
/// cost more than `vpdpwssd`'s 2x over FMAs saves.
pub const INT16_ATTENTION_MIN_LEN: usize = 512;

/// e.g. `attention bf16 from 256 tokens (AMX)`.
impl fmt::Display for AttentionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kernel {
            None => "f32",
            Some(AttentionKernel::Bf16(_)) => "bf16",
            Some(AttentionKernel::Int16(_)) => "int16",
        };
        match (self.kernel, self.min_len) {
            (None, _) | (_, 0 | 1) => write!(f, "attention {name} (")?,
            (_, n) => write!(f, "attention {name} from {n} tokens, f32 below (")?,
        }
        self.reason.write(f, ATTENTION_SWITCH.0)?;
        write!(f, ")")
    }
}

/// The attention plan for this process: `RERANK_ATTENTION`, else bf16
/// exactly where [`residual_plan`]'s rule would pick bf16 (the same
/// measurement: a fast bf16 kernel is fast for both), else int16 where its
/// timing says int16 is fast. At 8192 tokens attention is ~57 % of the
/// FLOPs, so this is what makes bf16 and int8 pay off on long pairs.
pub fn attention_plan(kernels: Kernels) -> crate::error::Result<AttentionPlan> {
    let value = std::env::var_os(ATTENTION_SWITCH.0).map(|v| v.to_string_lossy().into_owned());
    let forced = |kernel| AttentionPlan {
        kernel,
        min_len: 0,
        reason: Reason::Forced,
    };
    Ok(match parse(ATTENTION_SWITCH, value.as_deref())? {
        Some("bf16") => forced(Some(AttentionKernel::Bf16(kernels.bf16))),
        Some("int16") => forced(Some(AttentionKernel::Int16(I16Kernel::with(kernels.i8)))),
        Some(_) => forced(None),
        None => attention_automatic(kernels),
    })
}

/// bf16 where the bf16 kernel is AMX or measures at least [`BF16_MARGIN`]
/// times f32's speed; else int16 where that kernel does (the residual
/// layers' timing); else f32.
fn attention_automatic(kernels: Kernels) -> AttentionPlan {
    let off = |reason| AttentionPlan {
        kernel: None,
        min_len: BF16_ATTENTION_MIN_LEN,
        reason,
    };
    if kernels.bf16 == Bf16Kernel::Amx {
        return AttentionPlan {
            kernel: Some(AttentionKernel::Bf16(kernels.bf16)),
            ..off(Reason::Amx)
        };
    }
    let Some(t) = timing(kernels) else {
        return off(Reason::NoFastKernel);
    };
    let reason = Reason::Timed {
        int16: t.int16,
        bf16: t.bf16,
        f32: t.f32,
    };
    let fast = |g: Option<f64>| g.is_some_and(|g| g > BF16_MARGIN * t.f32);
    if fast(t.bf16) {
        AttentionPlan {
            kernel: Some(AttentionKernel::Bf16(kernels.bf16)),
            ..off(reason)
        }
    } else if fast(t.int16) {
        AttentionPlan {
            kernel: Some(AttentionKernel::Int16(I16Kernel::with(kernels.i8))),
            min_len: INT16_ATTENTION_MIN_LEN,
            reason,
        }
    } else {
        off(reason)
    }
}

/// The plan for this process: the switch, else the rule above (measuring at
/// most once per process). An unknown switch value is an
/// [`InvalidOption`](crate::error::Error::InvalidOption).
pub fn residual_plan(kernels: Kernels) -> crate::error::Result<ResidualPlan> {
    let value = std::env::var_os(RESIDUAL_SWITCH.0).map(|v| v.to_string_lossy().into_owned());
    match parse_switch(value.as_deref())? {
        Some(precision) => Ok(ResidualPlan {
            precision,
            reason: Reason::Forced,
        }),
        None => Ok(automatic(kernels)),
    }
}

/// `None`: automatic.
fn parse_switch(value: Option<&str>) -> crate::error::Result<Option<Residual>> {
    Ok(parse(RESIDUAL_SWITCH, value)?.map(|name| match name {
        "int8" => Residual::Int8,
        "int16" => Residual::Int16,
        "bf16" => Residual::Bf16,
        _ => Residual::F32,
    }))
}

/// The precision a `switch` names, as one of the words its `.1` lists;
/// `None` for automatic.
fn parse<'a>(
    switch: (&str, &'a str, &str),
    value: Option<&str>,
) -> crate::error::Result<Option<&'a str>> {
    let v = value.map(|v| v.trim().to_ascii_lowercase());
    let named = |name: &str| switch.1.split(", ").find(|a| *a == name && *a != "auto");
    Ok(match v.as_deref() {
        None | Some("" | "auto") => None,
        Some(name) if named(name).is_some() => named(name),
        Some(_) => {
            return Err(crate::error::Error::InvalidOption(format!(
                "{}={:?} is not a precision; use one of {}, or unset it",
                switch.0,
                value.unwrap_or_default(),
                switch.1
            )))
        }
    })
}

fn automatic(kernels: Kernels) -> ResidualPlan {
    let (precision, reason) = match kernels.bf16 {
        Bf16Kernel::Amx => (Residual::Bf16, Reason::Amx),
        _ => match timing(kernels) {
            None => (Residual::F32, Reason::NoFastKernel),
            Some(t) => {
                // A margin, because one 256-row product flatters the others
                // against f32: on a Sapphire Rapids VM with AMX capped off it
                // timed bf16 at 109 GFLOP/s against f32's 108, yet the whole
                // model ran 1.5x slower in bf16 than in f32 (f32 `gemm` gains
                // more from the pipeline's larger products). Zen 4/5, where
                // bf16 runs at FMA rate, clear it by far (1.7-1.8x f32 measured).
                let fast =
                    |g: Option<f64>, p| g.filter(|g| *g > BF16_MARGIN * t.f32).map(|g| (g, p));
                let best = [fast(t.int16, Residual::Int16), fast(t.bf16, Residual::Bf16)]
                    .into_iter()
                    .flatten()
                    .max_by(|a, b| a.0.total_cmp(&b.0));
                let reason = Reason::Timed {
                    int16: t.int16,
                    bf16: t.bf16,
                    f32: t.f32,
                };
                (best.map_or(Residual::F32, |b| b.1), reason)
            }
        },
    };
    ResidualPlan { precision, reason }
}

/// How this process's bf16 kernel compares with f32: [`Reason::Amx`],
/// [`Reason::NoFastBf16`], or for AVX512-BF16 [`Reason::Measured`] (timed
/// once per process and set of kernels; every model loaded later reuses it).
pub fn bf16_speed(kernels: Kernels) -> Reason {
    match kernels.bf16 {
        Bf16Kernel::Amx => Reason::Amx,
        Bf16Kernel::Avx512Bf16 => match timing(kernels) {
            Some(Timing {
                bf16: Some(bf16),
                f32,
                ..
            }) => Reason::Measured { bf16, f32 },
            _ => unreachable!("AVX512-BF16 is always timed"),
        },
        Bf16Kernel::Portable | Bf16Kernel::Avx2 => Reason::NoFastBf16,
    }
}

/// GFLOP/s of the paths [`timing`] measured (`None`: no fast kernel for it).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Timing {
    int16: Option<f64>,
    bf16: Option<f64>,
    f32: f64,
}

/// The int16 (VNNI), bf16 (AVX512-BF16) and f32 paths of [`Linear`] on
/// bge-reranker-v2-m3's FFN-output shape (4096 → 1024) with 256 rows, on
/// one thread, the best of three runs each, interleaved after a warm-up so
/// a busy neighbour slows them alike; once per process and set of kernels. `None` where
/// `kernels` has neither a fast int16 nor a fast bf16 kernel (or AMX).
fn timing(kernels: Kernels) -> Option<Timing> {
    let int16 = I16Kernel::with(kernels.i8) != I16Kernel::Portable;
    let bf16 = kernels.bf16 == Bf16Kernel::Avx512Bf16;
    if !int16 && !bf16 {
        return None;
    }
    static TIMED: Mutex<Vec<(Kernels, Timing)>> = Mutex::new(Vec::new());
    let mut timed = TIMED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, t)) = timed.iter().find(|(k, _)| *k == kernels) {
        return Some(*t);
    }
    let measure = || {
        let ops = Operands::new(256, 4096, 1024);
        // As an int8 model's f32 residual layers run.
        let mut layers = vec![ops.layer(kernels, Dtype::F32).gemm_at_any_rows()];
        if int16 {
            layers.push(ops.layer_int16(kernels));
        }
        if bf16 {
            layers.push(ops.layer(kernels, Dtype::Bf16));
        }
        ops.gflops(&layers.iter().collect::<Vec<_>>())
    };
    // On one thread: the choice compares the kernels' rates per core, which
    // do not depend on the pool's size, and the other cores stay free for
    // what runs meanwhile (the tokenizer's parse, `Reranker::load_files`).
    let g = match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
        Ok(one) => one.install(measure),
        Err(_) => measure(),
    };
    let t = Timing {
        f32: g[0],
        int16: int16.then(|| g[1]),
        bf16: bf16.then(|| g[g.len() - 1]),
    };
    timed.push((kernels, t));
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cpu::{CpuModel, WeightSource};
    use crate::model::kernels::I8Kernel;
    use crate::model::Model;
    use crate::synthetic::{self, SplitMix64};
    use crate::{DeviceKind, ModelConfig, Reranker, RerankerOptions};

    /// tests/it/precision.rs's realistic model: 4 layers, hidden 256, the
    /// checkpoints' initializer range.
    fn config() -> ModelConfig {
        ModelConfig {
            vocab_size: 2000,
            hidden_size: 256,
            num_hidden_layers: 4,
            num_attention_heads: 4,
            intermediate_size: 1024,
            max_position_embeddings: 514,
            ..ModelConfig::bge_reranker_v2_m3()
        }
    }

    fn reranker(cfg: &ModelConfig, model: CpuModel, dtype: Dtype) -> Reranker {
        let (_, encoder) = synthetic::build(cfg, 7, Dtype::F32, DeviceKind::Cpu).unwrap();
        let options = RerankerOptions {
            dtype: Some(dtype),
            raw_scores: true,
            ..RerankerOptions::default()
        };
        Reranker::from_parts(Model::Cpu(Box::new(model)), encoder, cfg.clone(), options).unwrap()
    }

    fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
        let err: f64 = got
            .iter()
            .zip(want)
            .map(|(a, b)| ((a - b) as f64).powi(2))
            .sum();
        let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
        (err / norm).sqrt()
    }

    /// Texts of random words of `cfg`'s vocabulary, `n` words each, from `seed`.
    fn texts(cfg: &ModelConfig, seed: u64) -> impl FnMut(usize) -> String {
        let mut rng = SplitMix64(seed);
        let words = synthetic::word_count(cfg);
        move |n| {
            (0..n)
                .map(|_| synthetic::word(rng.below(words)))
                .collect::<Vec<_>>()
                .join(" ")
        }
    }

    /// The largest relative L2 error of the `<s>` states and the largest
    /// |score − reference score| of a run (logits, states) against the reference's.
    fn worst(run: &(Vec<f32>, Vec<Vec<f32>>), reference: &(Vec<f32>, Vec<Vec<f32>>)) -> (f64, f32) {
        let sig = crate::backend::sigmoid;
        let rel = run
            .1
            .iter()
            .zip(&reference.1)
            .map(|(a, b)| rel_l2(a, b))
            .fold(0.0, f64::max);
        let score = run
            .0
            .iter()
            .zip(&reference.0)
            .map(|(a, b)| (sig(*a) - sig(*b)).abs())
            .fold(0.0, f32::max);
        (rel, score)
    }

    /// Every residual precision, on the process's kernels and on VNNI +
    /// AVX512-BF16 (what CPUs without AMX run) where this CPU has them:
    /// within the int8 gates of f32 (`<s>` hidden state ≤ 2e-2 relative,
    /// |score − f32| ≤ 0.01; all-int8 within its own stated 3e-2 and 0.015),
    /// and each pair scored alone equal to it scored in a batch.
    #[test]
    fn every_choice_stays_within_the_gates_and_is_batch_invariant() {
        let cfg = config();
        let source = WeightSource::from_tensors(synthetic::weights(&cfg, 7).unwrap()).unwrap();
        let kernels = Kernels::get().unwrap();
        let reference = reranker(
            &cfg,
            CpuModel::load_with(&source, &cfg, Dtype::F32, kernels, None, None).unwrap(),
            Dtype::F32,
        );
        let mut text = texts(&cfg, 11);
        let pairs: Vec<(String, String)> = (0..16)
            .map(|k| (text(4 + k % 12), text(16 + (k * 37) % 300)))
            .collect();
        let encoded = reference.encode_pairs(&pairs).unwrap();
        let expected = reference.logits_and_hidden(&encoded).unwrap();
        // The process's kernels; VNNI + AVX512-BF16 (what CPUs without AMX
        // run); and the portable int8 kernel (so int16 runs its portable one).
        let mut kernel_sets = vec![kernels];
        if I8Kernel::Vnni.is_available() && Bf16Kernel::Avx512Bf16.is_available() {
            kernel_sets.push(Kernels {
                i8: I8Kernel::Vnni,
                bf16: Bf16Kernel::Avx512Bf16,
                ..kernels
            });
        }
        if kernels.i8 != I8Kernel::Scalar {
            kernel_sets.push(Kernels {
                i8: I8Kernel::Scalar,
                ..kernels
            });
        }
        let all = [
            Residual::Bf16,
            Residual::F32,
            Residual::Int16,
            Residual::Int8,
        ];
        for k in kernel_sets {
            let mut errors = Vec::new();
            for precision in all {
                let plan = ResidualPlan {
                    precision,
                    reason: Reason::Forced,
                };
                let model =
                    CpuModel::load_with(&source, &cfg, Dtype::Int8, k, Some(plan), None).unwrap();
                assert_eq!(model.residual_plan(), Some(plan));
                let rr = reranker(&cfg, model, Dtype::Int8);
                let run = rr.logits_and_hidden(&encoded).unwrap();
                let (max_rel, max_score) = worst(&run, &expected);
                let (logits, hidden) = run;
                let what = format!("{k} residual={precision}");
                eprintln!("{what}: rel L2 {max_rel:.2e}, |score diff| {max_score:.2e}");
                let (gate_rel, gate_score) = match precision {
                    Residual::Int8 => (3e-2, 0.015),
                    _ => (2e-2, 0.01),
                };
                assert!(max_rel <= gate_rel, "{what}: rel L2 {max_rel}");
                assert!(max_score <= gate_score, "{what}: score diff {max_score}");
                assert!(max_rel > 1e-5, "{what}: no rounding at all?");
                errors.push((precision, max_rel, hidden));
                for (p, pair) in encoded.iter().enumerate().step_by(3) {
                    let alone = rr.logits_and_hidden(std::slice::from_ref(pair)).unwrap().0[0];
                    assert!(
                        (alone - logits[p]).abs() <= 1e-5,
                        "{what}: pair {p} alone {alone}, in a batch {}",
                        logits[p]
                    );
                }
            }
            // Each plan really ran its precision: no two give the same
            // states, and all-int8 is the least accurate.
            for (i, a) in errors.iter().enumerate() {
                for b in &errors[i + 1..] {
                    assert!(a.2 != b.2, "{k}: {} and {} give the same states", a.0, b.0);
                }
            }
            let int8 = errors[3].1;
            assert!(
                errors[..3].iter().all(|e| e.1 < int8),
                "{k}: {:?}",
                errors.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>()
            );
        }
    }

    /// bf16 and int8 models with attention's products in bf16 (on every
    /// bf16 kernel this CPU has) and in int16 (on every int16 kernel),
    /// against the same model with f32 attention and against f32: within
    /// the dtype's gates (bf16: `<s>` ≤ 1e-2 relative, |score − f32| ≤
    /// 0.005; int8: 2e-2, 0.01), each pair alone equal to it in a batch, and
    /// different from f32 attention (it ran).
    #[test]
    fn fast_attention_stays_within_the_gates_and_is_batch_invariant() {
        let cfg = config();
        let source = WeightSource::from_tensors(synthetic::weights(&cfg, 7).unwrap()).unwrap();
        let kernels = Kernels::get().unwrap();
        let load = |dtype, k: Kernels, attention: Option<AttentionKernel>, min_len| {
            let residual = (dtype == Dtype::Int8).then_some(ResidualPlan {
                precision: Residual::Bf16,
                reason: Reason::Forced,
            });
            let plan = AttentionPlan {
                kernel: attention,
                min_len,
                reason: Reason::Forced,
            };
            let model = CpuModel::load_with(&source, &cfg, dtype, k, residual, Some(plan)).unwrap();
            assert_eq!(model.attention_plan(), Some(plan));
            reranker(&cfg, model, dtype)
        };
        let reference = reranker(
            &cfg,
            CpuModel::load_with(&source, &cfg, Dtype::F32, kernels, None, None).unwrap(),
            Dtype::F32,
        );
        let mut text = texts(&cfg, 13);
        let pairs: Vec<(String, String)> = (0..12)
            .map(|k| (text(4 + k % 9), text(20 + (k * 53) % 400)))
            .collect();
        let encoded = reference.encode_pairs(&pairs).unwrap();
        let expected = reference.logits_and_hidden(&encoded).unwrap();
        let mut choices: Vec<(Kernels, AttentionKernel)> = Bf16Kernel::ALL
            .into_iter()
            .filter(|k| k.is_available())
            .map(|bf16| (Kernels { bf16, ..kernels }, AttentionKernel::Bf16(bf16)))
            .collect();
        let int16 = [I16Kernel::Portable, I16Kernel::with(kernels.i8)];
        for i16 in int16
            .into_iter()
            .take(if int16[0] == int16[1] { 1 } else { 2 })
        {
            choices.push((kernels, AttentionKernel::Int16(i16)));
        }
        for (k, attention) in choices {
            for (dtype, gate_rel, gate_score) in
                [(Dtype::Bf16, 1e-2, 0.005), (Dtype::Int8, 2e-2, 0.01)]
            {
                let what = format!("{dtype}, {k}, attention {attention:?}");
                let f32_attention = load(dtype, k, None, 0).logits_and_hidden(&encoded).unwrap();
                // Pairs shorter than the plan's minimum keep f32 attention.
                let all_short = load(dtype, k, Some(attention), 100_000);
                let short = all_short.logits_and_hidden(&encoded).unwrap();
                assert!(short.1 == f32_attention.1, "{what}: under min_len");
                let rr = load(dtype, k, Some(attention), 0);
                let run = rr.logits_and_hidden(&encoded).unwrap();
                let (max_rel, max_score) = worst(&run, &expected);
                let against_f32_attention = worst(&run, &f32_attention).0;
                let (logits, hidden) = run;
                eprintln!(
                    "{what}: rel L2 {max_rel:.2e}, |score diff| {max_score:.2e}; \
                     {against_f32_attention:.2e} from f32 attention"
                );
                assert!(max_rel <= gate_rel, "{what}: rel L2 {max_rel}");
                assert!(max_score <= gate_score, "{what}: score diff {max_score}");
                assert!(
                    hidden != f32_attention.1,
                    "{what}: same states as f32 attention"
                );
                for (p, pair) in encoded.iter().enumerate().step_by(4) {
                    let alone = rr.logits_and_hidden(std::slice::from_ref(pair)).unwrap().0[0];
                    assert!(
                        (alone - logits[p]).abs() <= 1e-5,
                        "{what}: pair {p} alone {alone}, in a batch {}",
                        logits[p]
                    );
                }
            }
        }
    }

    #[test]
    fn switch_values() {
        assert_eq!(parse_switch(None).unwrap(), None);
        assert_eq!(parse_switch(Some(" Auto ")).unwrap(), None);
        assert_eq!(parse_switch(Some("")).unwrap(), None);
        assert_eq!(parse_switch(Some("INT8")).unwrap(), Some(Residual::Int8));
        assert_eq!(parse_switch(Some("int16")).unwrap(), Some(Residual::Int16));
        assert_eq!(parse_switch(Some("bf16")).unwrap(), Some(Residual::Bf16));
        assert_eq!(parse_switch(Some("f32\n")).unwrap(), Some(Residual::F32));
        assert!(parse_switch(Some("auto,")).is_err());
        let err = parse_switch(Some("fp16")).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "RERANK_I8_RESIDUAL=\"fp16\" is not a precision; use one of auto, int8, int16, bf16, \
                 f32, or unset it"
            ),
            "{err}"
        );
    }

    #[test]
    fn attention_switch_values() {
        assert_eq!(parse(ATTENTION_SWITCH, Some("BF16")).unwrap(), Some("bf16"));
        assert_eq!(parse(ATTENTION_SWITCH, Some("f32")).unwrap(), Some("f32"));
        assert_eq!(
            parse(ATTENTION_SWITCH, Some("Int16")).unwrap(),
            Some("int16")
        );
        assert_eq!(parse(ATTENTION_SWITCH, Some("auto")).unwrap(), None);
        let err = parse(ATTENTION_SWITCH, Some("int8"))
            .unwrap_err()
            .to_string();
        assert!(
            err.ends_with(
                "RERANK_ATTENTION=\"int8\" is not a precision; use one of auto, bf16, int16, f32, or \
                 unset it"
            ),
            "{err}"
        );
    }

    /// AMX: bf16 untimed. Otherwise the fastest timed path at least
    /// `BF16_MARGIN` times f32 (int16 where the int8 kernel is VNNI or AMX,
    /// bf16 where it is AVX512-BF16), else f32; f32 untimed without either.
    /// Attention takes bf16 by the bf16 timing, else int16 by the int16
    /// timing, else f32.
    #[test]
    fn rule_by_kernel() {
        let k = Kernels::get().unwrap();
        let i8s = [k.i8, I8Kernel::Scalar];
        for (bf16, i8) in Bf16Kernel::ALL
            .into_iter()
            .flat_map(|b| i8s.map(|i| (b, i)))
        {
            if !bf16.is_available() {
                continue;
            }
            let kernels = Kernels { bf16, i8, ..k };
            let plan = automatic(kernels);
            let attention = attention_automatic(kernels);
            let what = format!("{kernels}: {plan}; {attention}");
            let fast_int16 = I16Kernel::with(i8) != I16Kernel::Portable;
            match (bf16, plan.reason) {
                (Bf16Kernel::Amx, reason) => {
                    assert_eq!(
                        (plan.precision, reason),
                        (Residual::Bf16, Reason::Amx),
                        "{what}"
                    );
                    assert_eq!(
                        (attention.kernel, attention.reason),
                        (Some(AttentionKernel::Bf16(bf16)), Reason::Amx)
                    );
                    assert_eq!(attention.min_len, BF16_ATTENTION_MIN_LEN);
                    assert!(attention
                        .to_string()
                        .starts_with("attention bf16 from 256 tokens"));
                }
                (
                    _,
                    Reason::Timed {
                        int16,
                        bf16: b,
                        f32,
                    },
                ) => {
                    let avx512bf16 = bf16 == Bf16Kernel::Avx512Bf16;
                    assert_eq!(
                        (int16.is_some(), b.is_some()),
                        (fast_int16, avx512bf16),
                        "{what}"
                    );
                    assert!(f32 > 0.0 && int16.unwrap_or(1.0) > 0.0 && b.unwrap_or(1.0) > 0.0);
                    let over = |g: Option<f64>| g.filter(|g| *g > BF16_MARGIN * f32);
                    let want = match (over(int16), over(b)) {
                        (Some(i), Some(b)) if b > i => Residual::Bf16,
                        (Some(_), _) => Residual::Int16,
                        (None, Some(_)) => Residual::Bf16,
                        (None, None) => Residual::F32,
                    };
                    assert_eq!(plan.precision, want, "{what}");
                    assert!(plan.to_string().contains("measured: "), "{what}");
                    let (kernel, min_len) = match (over(b), over(int16)) {
                        (Some(_), _) => (Some(AttentionKernel::Bf16(bf16)), BF16_ATTENTION_MIN_LEN),
                        (None, Some(_)) => (
                            Some(AttentionKernel::Int16(I16Kernel::with(i8))),
                            INT16_ATTENTION_MIN_LEN,
                        ),
                        (None, None) => (None, BF16_ATTENTION_MIN_LEN),
                    };
                    assert_eq!(
                        (attention.kernel, attention.min_len),
                        (kernel, min_len),
                        "{what}"
                    );
                    assert_eq!(attention.reason, plan.reason, "{what}");
                }
                (_, reason) => {
                    assert!(!fast_int16 && bf16 != Bf16Kernel::Avx512Bf16, "{what}");
                    assert_eq!(
                        (plan.precision, reason),
                        (Residual::F32, Reason::NoFastKernel)
                    );
                    assert_eq!(
                        (attention.kernel, attention.reason),
                        (None, Reason::NoFastKernel),
                        "{what}"
                    );
                }
            }
        }
    }
}
