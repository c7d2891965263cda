//! The engine against golden outputs computed by PyTorch
//! (`tests/fixtures/generate.py`), plus invariances and error cases.

use crate::fixtures::{fixture_dir, golden, Case};
use std::collections::BTreeMap;

use rerank::{Error, Reranker, RerankerOptions, Truncation};

const TOL: f32 = 1e-4;

fn options(case: &Case) -> RerankerOptions {
    RerankerOptions {
        max_length: Some(case.max_length),
        truncation: match case.truncation.as_str() {
            "longest_first" => Truncation::LongestFirst,
            "only_second" => Truncation::OnlySecond,
            other => panic!("unknown truncation {other}"),
        },
        query_max_length: if case.query_max_length_is_default == Some(true) {
            None
        } else {
            case.query_max_length
        },
        ..RerankerOptions::default()
    }
}

fn key(o: &RerankerOptions) -> String {
    format!(
        "{:?}/{:?}/{:?}",
        o.max_length, o.truncation, o.query_max_length
    )
}

/// One reranker per distinct option set among the golden cases.
fn rerankers(cases: &[Case], raw: bool) -> BTreeMap<String, Reranker> {
    rerankers_with(cases, raw, false)
}

fn rerankers_with(cases: &[Case], raw: bool, portable: bool) -> BTreeMap<String, Reranker> {
    let mut map = BTreeMap::new();
    for case in cases {
        let mut o = options(case);
        o.raw_scores = raw;
        o.portable = portable;
        map.entry(key(&o))
            .or_insert_with(|| Reranker::load(fixture_dir(), o).expect("tiny model loads"));
    }
    map
}

#[test]
fn token_ids_equal_the_reference() {
    let cases = golden();
    let rr = rerankers(&cases, false);
    for case in &cases {
        let r = &rr[&key(&options(case))];
        let enc = r
            .encode_pairs(&[(case.query.as_str(), case.passage.as_str())])
            .unwrap();
        assert_eq!(enc[0].ids, case.input_ids, "case {}", case.name);
        assert!(enc[0].ids.len() <= case.max_length, "case {}", case.name);
    }
}

#[test]
fn logits_and_scores_match_the_reference_pair_by_pair() {
    let cases = golden();
    let raw = rerankers(&cases, true);
    let sig = rerankers(&cases, false);
    let mut worst = 0f32;
    for case in &cases {
        let k = key(&options(case));
        let pair = [(case.query.as_str(), case.passage.as_str())];
        let logit = raw[&k].score(&pair).unwrap()[0];
        let score = sig[&k].score(&pair).unwrap()[0];
        worst = worst.max((logit - case.logit).abs());
        assert!(
            (logit - case.logit).abs() <= TOL,
            "case {}: logit {logit} vs reference {}",
            case.name,
            case.logit
        );
        assert!(
            (score - case.score).abs() <= TOL,
            "case {}: score {score} vs reference {}",
            case.name,
            case.score
        );
    }
    eprintln!(
        "largest |logit - reference| over {} cases: {worst:e}",
        cases.len()
    );
}

#[test]
fn the_portable_candle_path_matches_the_reference_too() {
    let cases = golden();
    let raw = rerankers_with(&cases, true, true);
    for r in raw.values() {
        assert_eq!(r.implementation(), "candle");
    }
    assert_eq!(
        rerankers(&cases[..1], true)
            .values()
            .next()
            .unwrap()
            .implementation(),
        "cpu-f32"
    );
    for case in &cases {
        let pair = [(case.query.as_str(), case.passage.as_str())];
        let logit = raw[&key(&options(case))].score(&pair).unwrap()[0];
        assert!(
            (logit - case.logit).abs() <= TOL,
            "case {}: candle logit {logit} vs reference {}",
            case.name,
            case.logit
        );
    }
    // All cases of each setting in one call: pairs of different lengths share
    // a forward pass, and their attention runs padded to the longest.
    for (k, r) in &raw {
        let group: Vec<&Case> = cases.iter().filter(|c| key(&options(c)) == *k).collect();
        let pairs: Vec<(&str, &str)> = group
            .iter()
            .map(|c| (c.query.as_str(), c.passage.as_str()))
            .collect();
        for (case, logit) in group.iter().zip(r.score(&pairs).unwrap()) {
            assert!(
                (logit - case.logit).abs() <= TOL,
                "case {} in a batch of {}: candle logit {logit} vs reference {}",
                case.name,
                group.len(),
                case.logit
            );
        }
    }
}

#[test]
fn the_golden_scores_are_spread_out() {
    // Guards the fixture itself: a degenerate model would let a broken engine pass.
    let cases = golden();
    let min = cases.iter().map(|c| c.score).fold(f32::MAX, f32::min);
    let max = cases.iter().map(|c| c.score).fold(f32::MIN, f32::max);
    assert!(max - min > 0.3, "golden scores span only {min}..{max}");
}

#[test]
fn a_pair_scores_the_same_in_any_batch_as_alone() {
    let cases = golden();
    // All cases with the default settings, scored together in several batchings.
    let picked: Vec<&Case> = cases
        .iter()
        .filter(|c| c.truncation == "longest_first" && c.max_length == 128)
        .collect();
    assert!(picked.len() >= 10);
    let pairs: Vec<(&str, &str)> = picked
        .iter()
        .map(|c| (c.query.as_str(), c.passage.as_str()))
        .collect();
    // The hand-written CPU model, then candle's (whose attention pads the
    // pairs of a batch to the longest).
    for portable in [false, true] {
        let load = |batch_size, max_batch_tokens| {
            Reranker::load(
                fixture_dir(),
                RerankerOptions {
                    max_length: Some(128),
                    batch_size,
                    max_batch_tokens,
                    raw_scores: true,
                    portable,
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let alone = load(1, RerankerOptions::default().max_batch_tokens)
            .score(&pairs)
            .unwrap();
        for (batch_size, max_batch_tokens) in [(16, 16384), (3, 16384), (64, 200), (1000, 1 << 20)]
        {
            let r = load(batch_size, max_batch_tokens);
            let batched = r.score(&pairs).unwrap();
            for (i, (a, b)) in alone.iter().zip(&batched).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5,
                    "pair {i} ({}): alone {a}, batched {b} (batch_size {batch_size}, portable {portable})",
                    picked[i].name
                );
            }
        }
    }
}

#[test]
fn rank_sorts_best_first_and_cuts_to_top_k() {
    let r = Reranker::load(fixture_dir(), RerankerOptions::default()).unwrap();
    let passages = [
        "北京是中国的政治中心和首都。",
        "The giant panda is a bear species endemic to China.",
        "首都机场是中国最繁忙的机场之一。",
        "",
        "東京は日本の首都です。",
    ];
    let query = "中国的首都是哪里？";
    let scores = r
        .score(&passages.iter().map(|p| (query, *p)).collect::<Vec<_>>())
        .unwrap();
    let ranked = r.rank(query, &passages, None).unwrap();
    assert_eq!(ranked.len(), passages.len());
    for w in ranked.windows(2) {
        assert!(w[0].score >= w[1].score);
    }
    for item in &ranked {
        assert!((item.score - scores[item.index]).abs() <= 1e-6);
    }
    let top2 = r.rank(query, &passages, Some(2)).unwrap();
    assert_eq!(top2, ranked[..2].to_vec());
}

#[test]
fn empty_input_gives_empty_output() {
    let r = Reranker::load(fixture_dir(), RerankerOptions::default()).unwrap();
    let none: [(&str, &str); 0] = [];
    assert!(r.score(&none).unwrap().is_empty());
    let no_passages: [&str; 0] = [];
    assert!(r.rank("q", &no_passages, Some(3)).unwrap().is_empty());
}

#[test]
fn max_length_defaults_to_the_model_limit_and_more_is_an_error_stating_it() {
    // The tiny model has 130 positions: 130 - pad(1) - 1 = 128 tokens.
    let r = Reranker::load(fixture_dir(), RerankerOptions::default()).unwrap();
    assert_eq!(r.truncation().max_length, 128);
    for requested in [129, 8192] {
        let err = Reranker::load(
            fixture_dir(),
            RerankerOptions {
                max_length: Some(requested),
                ..Default::default()
            },
        )
        .err();
        match err {
            Some(e @ Error::MaxLengthTooLarge { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("128") && msg.contains(&requested.to_string()),
                    "{msg}"
                );
            }
            other => panic!("expected MaxLengthTooLarge, got {other:?}"),
        }
    }
}

/// The CUDA path (candle on the GPU) against the same PyTorch goldens. Built
/// only with `--features cuda`; needs a GPU to run.
#[cfg(feature = "cuda")]
mod cuda {
    use super::*;
    use rerank::{DeviceKind, Dtype};

    fn on_gpu(case: &Case, dtype: Dtype, batch_size: usize, raw: bool) -> Reranker {
        let mut o = options(case);
        o.raw_scores = raw;
        o.device = DeviceKind::Cuda(0);
        o.dtype = Some(dtype);
        o.batch_size = batch_size;
        let r = Reranker::load(fixture_dir(), o).expect("tiny model loads on the GPU");
        assert_eq!(r.implementation(), "candle");
        r
    }

    /// Largest |logit − reference| (`raw`) or |score − reference| over all
    /// golden cases, each scored alone.
    fn worst_error(dtype: Dtype, raw: bool) -> f32 {
        let cases = golden();
        let mut cache: BTreeMap<String, Reranker> = BTreeMap::new();
        let mut worst = 0f32;
        for case in &cases {
            let r = cache
                .entry(key(&options(case)))
                .or_insert_with(|| on_gpu(case, dtype, 16, raw));
            let got = r
                .score(&[(case.query.as_str(), case.passage.as_str())])
                .unwrap()[0];
            assert!(got.is_finite(), "case {}: {got}", case.name);
            let want = if raw { case.logit } else { case.score };
            worst = worst.max((got - want).abs());
        }
        let what = if raw { "logit" } else { "score" };
        eprintln!(
            "cuda {dtype}: largest |{what} - reference| over {} cases: {worst:e}",
            cases.len()
        );
        worst
    }

    fn worst_logit_error(dtype: Dtype) -> f32 {
        worst_error(dtype, true)
    }

    #[test]
    fn bf16_on_the_gpu_is_close_to_the_reference() {
        // bf16 storage throughout (candle's kernels; the fused ones are f16/f32
        // only): 8-bit mantissa, a stated loose bound on the score.
        let worst = worst_error(Dtype::Bf16, false);
        assert!(worst <= 0.1, "cuda bf16 score off by {worst}");
    }

    #[test]
    fn f32_on_the_gpu_matches_the_reference() {
        let worst = worst_logit_error(Dtype::F32);
        assert!(worst <= TOL, "cuda f32 off by {worst}");
    }

    #[test]
    fn f16_on_the_gpu_is_close_to_the_reference() {
        // fp16 (10-bit mantissa) on this fixture, whose initializer range 0.3
        // amplifies rounding: a stated, looser bound on the logit.
        let worst = worst_logit_error(Dtype::F16);
        assert!(worst <= 0.05, "cuda f16 off by {worst}");
    }

    #[test]
    fn on_the_gpu_a_pair_scores_the_same_in_a_batch_as_alone() {
        let cases = golden();
        let picked: Vec<&Case> = cases
            .iter()
            .filter(|c| c.truncation == "longest_first" && c.max_length == 128)
            .collect();
        let pairs: Vec<(&str, &str)> = picked
            .iter()
            .map(|c| (c.query.as_str(), c.passage.as_str()))
            .collect();
        for (dtype, tol) in [(Dtype::F32, 1e-5f32), (Dtype::F16, 5e-3)] {
            let alone = on_gpu(picked[0], dtype, 1, true).score(&pairs).unwrap();
            let batched = on_gpu(picked[0], dtype, 64, true).score(&pairs).unwrap();
            let worst = alone
                .iter()
                .zip(&batched)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            eprintln!(
                "cuda {dtype}: largest |batched - alone| over {} pairs: {worst:e}",
                pairs.len()
            );
            assert!(
                worst <= tol,
                "cuda {dtype}: batched differs from alone by {worst}"
            );
        }
    }
}

/// The raw-id APIs check what the tokenizer would never produce: an empty
/// pair (a division by zero in the candle path) and an id outside the
/// vocabulary (an out-of-bounds read in the CPU model) are errors, on both
/// implementations, and a valid batch next to them still scores.
#[test]
fn raw_ids_outside_the_vocabulary_or_empty_pairs_are_errors_not_panics() {
    use rerank::Backend;
    for portable in [false, true] {
        let r = Reranker::load(
            fixture_dir(),
            RerankerOptions {
                portable,
                ..RerankerOptions::default()
            },
        )
        .unwrap();
        let vocab = r.config().vocab_size as u32;
        let good = vec![0u32, 5, 2, 2, 7, 2];
        let empty: Vec<u32> = Vec::new();
        let e = r.forward(&[good.clone(), empty]).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidBatch(m) if m.contains("no tokens")),
            "{e}"
        );
        let e = r.predict(&[&good, &[0, vocab, 2]]).unwrap_err();
        assert!(
            matches!(&e, Error::InvalidBatch(m) if m.contains(&vocab.to_string())),
            "{e}"
        );
        let e = r
            .logits(&[vec![0u32, 2, 2], vec![0, u32::MAX, 2]])
            .unwrap_err();
        assert!(matches!(e, Error::InvalidBatch(_)), "{e}");
        assert_eq!(r.forward(&[good]).unwrap().len(), 1);
    }
}
