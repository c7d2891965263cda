//! Every way a model directory can be wrong gets an error that names the
//! problem and what to do, never a panic.

use crate::fixtures::fixture_dir;
use std::path::Path;

use rerank::{Error, Reranker, RerankerOptions};

/// A writable copy of the tiny model's three files.
fn copy_model() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture_dir().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> Error {
    match Reranker::load(dir, RerankerOptions::default()) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    }
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn missing_directory() {
    let err = load_err(Path::new("/nonexistent/model-dir"));
    assert!(matches!(err, Error::MissingFile { .. }), "{err:?}");
    assert!(err.to_string().contains("/nonexistent/model-dir"), "{err}");
}

#[test]
fn each_missing_file_is_named() {
    for (file, expect) in [
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("model.safetensors", "model.safetensors"),
    ] {
        let dir = copy_model();
        std::fs::remove_file(dir.path().join(file)).unwrap();
        let err = load_err(dir.path());
        let msg = err.to_string();
        assert!(matches!(err, Error::MissingFile { .. }), "{file}: {err:?}");
        assert!(msg.contains(expect) && msg.contains("not found"), "{msg}");
    }
}

#[test]
fn corrupt_files_are_reported_as_such() {
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let dir = copy_model();
        std::fs::write(dir.path().join(file), b"\x00\x01 this is not the file").unwrap();
        let err = load_err(dir.path());
        assert!(matches!(err, Error::CorruptFile { .. }), "{file}: {err:?}");
        assert!(err.to_string().contains(file), "{err}");
    }
}

#[test]
fn truncated_weights_are_reported() {
    let dir = copy_model();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(err, Error::CorruptFile { .. } | Error::Weights { .. }),
        "{err:?}"
    );
}

#[test]
fn a_missing_tensor_names_itself() {
    let dir = copy_model();
    let path = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &candle_core::Device::Cpu).unwrap();
    let name = "roberta.encoder.layer.1.output.dense.weight";
    assert!(tensors.remove(name).is_some());
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, Error::Weights { .. }), "{err:?}");
    assert!(err.to_string().contains(name), "{err}");
}

#[test]
fn wrong_model_types_are_refused_with_what_is_supported() {
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit); 3] = [
        ("BertForMaskedLM", |v| {
            v["architectures"] = serde_json::json!(["BertForMaskedLM"]);
            v["model_type"] = serde_json::json!("bert");
        }),
        ("2 labels", |v| {
            v["id2label"] = serde_json::json!({"0": "NO", "1": "YES"});
            v["label2id"] = serde_json::json!({"NO": 0, "YES": 1});
        }),
        ("gelu_new", |v| {
            v["hidden_act"] = serde_json::json!("gelu_new")
        }),
    ];
    for (what, edit) in cases {
        let dir = copy_model();
        edit_config(dir.path(), edit);
        let err = load_err(dir.path());
        let msg = err.to_string();
        assert!(
            matches!(err, Error::UnsupportedModel { .. }),
            "{what}: {err:?}"
        );
        assert!(
            msg.contains("XLMRobertaForSequenceClassification"),
            "{what}: {msg}"
        );
    }
}

#[test]
fn weights_that_do_not_match_the_config() {
    let dir = copy_model();
    edit_config(dir.path(), |v| {
        v["hidden_size"] = serde_json::json!(48);
        v["num_attention_heads"] = serde_json::json!(4);
    });
    let err = load_err(dir.path());
    assert!(matches!(err, Error::Weights { .. }), "{err:?}");
}

#[test]
fn a_tokenizer_of_another_model_is_refused() {
    let dir = copy_model();
    edit_config(dir.path(), |v| v["vocab_size"] = serde_json::json!(10));
    let err = load_err(dir.path());
    assert!(err.to_string().contains("tokenizer"), "{err}");
}

#[test]
fn bad_options_are_refused() {
    let bad = [
        RerankerOptions {
            max_length: Some(3),
            ..Default::default()
        },
        RerankerOptions {
            batch_size: 0,
            ..Default::default()
        },
        RerankerOptions {
            max_batch_tokens: 0,
            ..Default::default()
        },
        RerankerOptions {
            max_length: Some(32),
            query_max_length: Some(30),
            truncation: rerank::Truncation::OnlySecond,
            ..Default::default()
        },
        // int8 is CPU-only.
        RerankerOptions {
            dtype: Some(rerank::Dtype::Int8),
            device: rerank::DeviceKind::Cuda(0),
            ..Default::default()
        },
    ];
    for o in bad {
        let desc = format!("{o:?}");
        let err = Reranker::load(fixture_dir(), o).err();
        assert!(err.is_some(), "{desc} should be refused");
    }
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_without_the_feature_says_how_to_get_it() {
    let err = Reranker::load(
        fixture_dir(),
        RerankerOptions {
            device: rerank::DeviceKind::Cuda(0),
            ..Default::default()
        },
    )
    .err()
    .expect("no cuda in this build");
    assert!(err.to_string().contains("--features cuda"), "{err}");
}

#[test]
fn f16_scores_are_close_to_f32() {
    let pairs = [
        ("what is panda?", "The giant panda is a bear."),
        ("中国的首都是哪里？", "北京是中国的政治中心和首都。"),
    ];
    let f32s = Reranker::load(fixture_dir(), RerankerOptions::default())
        .unwrap()
        .score(&pairs)
        .unwrap();
    let f16s = Reranker::load(
        fixture_dir(),
        RerankerOptions {
            dtype: Some(rerank::Dtype::F16),
            ..Default::default()
        },
    )
    .unwrap()
    .score(&pairs)
    .unwrap();
    for (a, b) in f32s.iter().zip(&f16s) {
        assert!((a - b).abs() < 0.02, "f32 {a} vs f16 {b}");
    }
}
