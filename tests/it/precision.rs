//! bf16 and int8 (`--dtype bf16|int8`) against f32 and against the PyTorch
//! golden outputs.
//!
//! The accuracy gates (relative L2 error of the final `<s>` hidden
//! state and |score − f32 score|; int8 ≤ 2e-2 and ≤ 0.01, bf16 ≤ 1e-2 and
//! ≤ 0.005) are asserted on a random model with the family's initializer
//! range (0.02, as the real checkpoints), built in memory. The golden tiny
//! fixture uses a 15× larger initializer range so that its scores spread out;
//! that amplifies every rounding, so against it we assert looser, stated bounds.

use crate::fixtures::{fixture_dir, golden, Case};

use rerank::synthetic::{self, SplitMix64};
use rerank::{Dtype, ModelConfig, Reranker, RerankerOptions};

/// Relative L2 error of `got` against `want`.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let err: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (err / norm).sqrt()
}

/// A mid-size model with realistic weights: 4 layers, hidden 256, 4 heads.
fn realistic_config() -> ModelConfig {
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

fn synthetic_reranker(cfg: &ModelConfig, dtype: Dtype) -> Reranker {
    let (model, encoder) =
        synthetic::build(cfg, 7, dtype, rerank::DeviceKind::Cpu).expect("synthetic model");
    let options = RerankerOptions {
        dtype: Some(dtype),
        ..RerankerOptions::default()
    };
    Reranker::from_parts(model, encoder, cfg.clone(), options).expect("reranker")
}

/// Pairs of synthetic words, 20 to 400 tokens long.
fn synthetic_pairs(cfg: &ModelConfig, count: usize) -> Vec<(String, String)> {
    let mut rng = SplitMix64(11);
    let words = synthetic::word_count(cfg);
    let mut text = |n: usize| {
        (0..n)
            .map(|_| synthetic::word(rng.below(words)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    (0..count)
        .map(|k| (text(4 + k % 12), text(16 + (k * 37) % 380)))
        .collect()
}

struct Gap {
    max_rel_l2: f64,
    max_score_diff: f32,
}

fn gap(model: &Reranker, reference: &Reranker, pairs: &[(String, String)]) -> Gap {
    let encoded = reference.encode_pairs(pairs).unwrap();
    let (logits, hidden) = model.logits_and_hidden(&encoded).unwrap();
    let (ref_logits, ref_hidden) = reference.logits_and_hidden(&encoded).unwrap();
    let sig = rerank::backend::sigmoid;
    Gap {
        max_rel_l2: hidden
            .iter()
            .zip(&ref_hidden)
            .map(|(h, r)| rel_l2(h, r))
            .fold(0.0, f64::max),
        max_score_diff: logits
            .iter()
            .zip(&ref_logits)
            .map(|(a, b)| (sig(*a) - sig(*b)).abs())
            .fold(0.0, f32::max),
    }
}

#[test]
fn low_precision_stays_within_the_gates_on_a_realistic_model() {
    let cfg = realistic_config();
    let pairs = synthetic_pairs(&cfg, 24);
    let f32_model = synthetic_reranker(&cfg, Dtype::F32);
    for (dtype, max_rel, max_score) in [(Dtype::Int8, 2e-2, 0.01), (Dtype::Bf16, 1e-2, 0.005)] {
        let model = synthetic_reranker(&cfg, dtype);
        assert_eq!(model.implementation(), format!("cpu-{dtype}"));
        let g = gap(&model, &f32_model, &pairs);
        eprintln!(
            "{dtype}: max relative L2 of <s> hidden {:.2e}, max |score diff| {:.2e}",
            g.max_rel_l2, g.max_score_diff
        );
        assert!(
            g.max_rel_l2 <= max_rel,
            "{dtype}: relative L2 error {} > {max_rel}",
            g.max_rel_l2
        );
        assert!(
            g.max_score_diff <= max_score,
            "{dtype}: score diff {} > {max_score}",
            g.max_score_diff
        );
        // A change that made the low-precision path run f32 would pass the
        // gates above: the error must be there, of the expected order.
        assert!(g.max_rel_l2 > 1e-5, "{dtype}: no rounding at all?");
    }
}

#[test]
fn f16_through_candle_reports_its_gap_to_f32() {
    // f16 runs candle's implementation (the CUDA path's, here on CPU): its
    // hidden states must come out of `logits_and_hidden` too, within the bf16 gates.
    let cfg = realistic_config();
    let pairs = synthetic_pairs(&cfg, 6);
    let f32_model = synthetic_reranker(&cfg, Dtype::F32);
    let model = synthetic_reranker(&cfg, Dtype::F16);
    assert_eq!(model.implementation(), "candle");
    let g = gap(&model, &f32_model, &pairs);
    eprintln!(
        "f16: max relative L2 of <s> hidden {:.2e}, max |score diff| {:.2e}",
        g.max_rel_l2, g.max_score_diff
    );
    assert!(
        g.max_rel_l2 <= 1e-2,
        "f16: relative L2 error {}",
        g.max_rel_l2
    );
    assert!(
        g.max_score_diff <= 0.005,
        "f16: score diff {}",
        g.max_score_diff
    );
    assert!(g.max_rel_l2 > 1e-6, "f16: no rounding at all?");
}

/// The golden longest-first cases at max_length 128 (the model's limit).
fn golden_longest_first_128() -> Vec<Case> {
    golden()
        .into_iter()
        .filter(|c| c.truncation == "longest_first" && c.max_length == 128)
        .collect()
}

#[test]
fn low_precision_follows_the_pytorch_golden_scores_on_the_tiny_fixture() {
    let cases = golden_longest_first_128();
    assert!(cases.len() >= 20, "only {} golden cases", cases.len());
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .map(|c| (c.query.as_str(), c.passage.as_str()))
        .collect();
    // Bounds for this fixture (initializer range 0.3, see the module docs).
    for (dtype, max_score_diff) in [(Dtype::Int8, 0.1f32), (Dtype::Bf16, 0.03)] {
        let options = RerankerOptions {
            dtype: Some(dtype),
            raw_scores: true,
            ..RerankerOptions::default()
        };
        let model = Reranker::load(fixture_dir(), options).unwrap();
        let logits = model.score(&pairs).unwrap();
        let mut worst = 0f32;
        for (case, logit) in cases.iter().zip(&logits) {
            let d = (rerank::backend::sigmoid(*logit) - rerank::backend::sigmoid(case.logit)).abs();
            worst = worst.max(d);
            assert!(
                d <= max_score_diff,
                "{dtype} {}: score off by {d}",
                case.name
            );
        }
        eprintln!("{dtype}: largest |score - PyTorch f32 score| {worst:.2e}");
    }
}

#[test]
fn low_precision_scores_a_pair_the_same_in_any_batch_as_alone() {
    let cases = golden();
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .map(|c| (c.query.as_str(), c.passage.as_str()))
        .collect();
    for dtype in [Dtype::Int8, Dtype::Bf16] {
        let load = |batch_size| {
            let options = RerankerOptions {
                dtype: Some(dtype),
                batch_size,
                raw_scores: true,
                ..RerankerOptions::default()
            };
            Reranker::load(fixture_dir(), options).unwrap()
        };
        let batched = load(16).score(&pairs).unwrap();
        let alone = load(1);
        for (k, pair) in pairs.iter().enumerate() {
            let single = alone.score(&[*pair]).unwrap()[0];
            assert!(
                (single - batched[k]).abs() <= 1e-5,
                "{dtype} {}: {single} alone vs {} in a batch",
                cases[k].name,
                batched[k]
            );
        }
    }
}

#[test]
fn int8_is_refused_on_cuda_with_a_hint() {
    let options = RerankerOptions {
        dtype: Some(Dtype::Int8),
        device: rerank::DeviceKind::Cuda(0),
        ..RerankerOptions::default()
    };
    let err = Reranker::load(fixture_dir(), options)
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("CUDA") || msg.contains("cpu"), "{msg}");
}
