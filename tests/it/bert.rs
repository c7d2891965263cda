//! The BERT cross-encoder (`BertForSequenceClassification`, one label)
//! against PyTorch: the tiny random fixture of `tests/fixtures/generate_bert.py`
//! (WordPiece tokenizer, pair template `[CLS] q [SEP] p [SEP]`, token types
//! 0/1, positions from 0, the pooler), on both implementations and every CPU dtype.

use std::path::{Path, PathBuf};

use rerank::backend::PackedBatch;
use rerank::{Dtype, Reranker, RerankerOptions};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    query: String,
    passage: String,
    max_length: usize,
    truncated: bool,
    input_ids: Vec<u32>,
    token_type_ids: Vec<u32>,
    logit: f32,
    score: f32,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-bert")
}

fn golden() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_bert.json");
    let cases: Vec<Case> = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert!(cases.len() >= 20 && cases.iter().any(|c| c.truncated));
    cases
}

fn load(max_length: usize, dtype: Option<Dtype>, portable: bool, raw: bool) -> Reranker {
    Reranker::load(
        dir(),
        RerankerOptions {
            max_length: Some(max_length),
            dtype,
            portable,
            raw_scores: raw,
            ..RerankerOptions::default()
        },
    )
    .expect("the tiny BERT model loads")
}

#[test]
fn token_ids_and_types_equal_the_reference() {
    for case in golden() {
        let rr = load(case.max_length, None, false, false);
        let enc = rr
            .encode_pairs(&[(case.query.as_str(), case.passage.as_str())])
            .unwrap();
        assert_eq!(enc[0].ids, case.input_ids, "case {}", case.name);
        assert_eq!(enc[0].truncated(), case.truncated, "case {}", case.name);
        let batch = PackedBatch::new(&[&enc[0].ids], rr.token_space()).unwrap();
        assert_eq!(batch.types, case.token_type_ids, "case {}", case.name);
        assert_eq!(batch.positions[0], 0, "BERT positions start at 0");
    }
}

#[test]
fn logits_match_pytorch_on_both_implementations_alone_and_batched() {
    let cases = golden();
    for portable in [false, true] {
        let mut worst = 0f32;
        for max_length in [64, 24, 16, 9, 5] {
            let group: Vec<&Case> = cases
                .iter()
                .filter(|c| c.max_length == max_length)
                .collect();
            let rr = load(max_length, None, portable, true);
            assert_eq!(
                rr.implementation(),
                if portable { "candle" } else { "cpu-f32" }
            );
            let pairs: Vec<(&str, &str)> = group
                .iter()
                .map(|c| (c.query.as_str(), c.passage.as_str()))
                .collect();
            let batched = rr.score(&pairs).unwrap();
            for (case, &logit) in group.iter().zip(&batched) {
                let alone = rr
                    .score(&[(case.query.as_str(), case.passage.as_str())])
                    .unwrap()[0];
                worst = worst.max((alone - case.logit).abs());
                assert!(
                    (alone - case.logit).abs() <= 1e-5,
                    "{} case {}: logit {alone} vs PyTorch {}",
                    rr.implementation(),
                    case.name,
                    case.logit
                );
                assert!(
                    (logit - alone).abs() <= 1e-5,
                    "case {}: batched {logit} vs alone {alone}",
                    case.name
                );
            }
        }
        eprintln!("portable={portable}: largest |logit - PyTorch| {worst:e}");
    }
    // Scores: the sigmoid of the logits (no activation_fn in this checkpoint).
    let rr = load(64, None, false, false);
    for case in cases.iter().filter(|c| c.max_length == 64) {
        let s = rr
            .score(&[(case.query.as_str(), case.passage.as_str())])
            .unwrap()[0];
        assert!(
            (s - case.score).abs() <= 1e-5,
            "case {}: {s} vs {}",
            case.name,
            case.score
        );
    }
}

#[test]
fn bf16_and_int8_stay_close_to_pytorch() {
    // The tiny model's random weights say little about accuracy on real
    // weights (see BENCHMARKS.md); this checks the BERT graph in each dtype.
    let cases: Vec<Case> = golden()
        .into_iter()
        .filter(|c| c.max_length == 64)
        .collect();
    let pairs: Vec<(&str, &str)> = cases
        .iter()
        .map(|c| (c.query.as_str(), c.passage.as_str()))
        .collect();
    for (dtype, tol) in [(Dtype::Bf16, 0.1), (Dtype::Int8, 0.25)] {
        let rr = load(64, Some(dtype), false, true);
        for (case, logit) in cases.iter().zip(rr.score(&pairs).unwrap()) {
            assert!(
                (logit - case.logit).abs() <= tol,
                "{dtype} case {}: logit {logit} vs PyTorch {}",
                case.name,
                case.logit
            );
        }
    }
}

#[test]
fn the_checkpoints_activation_fn_decides_the_default_score() {
    let tmp = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(dir().join(f), tmp.path().join(f)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap();
    let case = &golden()[0];
    let pair = [(case.query.as_str(), case.passage.as_str())];
    for (activation, want) in [
        ("torch.nn.modules.linear.Identity", case.logit),
        ("torch.nn.modules.activation.Sigmoid", case.score),
    ] {
        config["sentence_transformers"] =
            serde_json::json!({"activation_fn": activation, "version": "5.0.0"});
        std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
        let rr = Reranker::load(tmp.path(), RerankerOptions::default()).unwrap();
        let got = rr.score(&pair).unwrap()[0];
        assert!((got - want).abs() <= 1e-5, "{activation}: {got} vs {want}");
    }
    config["sentence_transformers"] =
        serde_json::json!({"activation_fn": "torch.nn.modules.activation.Tanh"});
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    let err = Reranker::load(tmp.path(), RerankerOptions::default())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("Tanh") && err.contains("Identity"), "{err}");
    // Or in sentence-transformers' own file next to config.json.
    config
        .as_object_mut()
        .unwrap()
        .remove("sentence_transformers");
    std::fs::write(tmp.path().join("config.json"), config.to_string()).unwrap();
    std::fs::write(
        tmp.path().join("config_sentence_transformers.json"),
        r#"{"activation_fn": "torch.nn.modules.linear.Identity", "version": "5.1.0"}"#,
    )
    .unwrap();
    let rr = Reranker::load(tmp.path(), RerankerOptions::default()).unwrap();
    let got = rr.score(&pair).unwrap()[0];
    assert!((got - case.logit).abs() <= 1e-5, "{got} vs {}", case.logit);
}

#[test]
fn the_length_limit_is_max_position_embeddings() {
    let rr = Reranker::load(dir(), RerankerOptions::default()).unwrap();
    assert_eq!(rr.truncation().max_length, 64);
    let err = Reranker::load(
        dir(),
        RerankerOptions {
            max_length: Some(65),
            ..RerankerOptions::default()
        },
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("64"), "{err}");
}
