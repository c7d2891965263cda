//! `rerank::hub` without the network: resolution order, the Hugging Face
//! cache layout, and the errors. (Downloads from a fake loopback hub are
//! tested through the binary in tests/cli.rs.)

use crate::fixtures::fixture_dir;
use std::path::{Path, PathBuf};

use rerank::hub::{self, CacheMiss, HubConfig, Source};
use rerank::Error;

const SHA: &str = "89abcdef0123456789abcdef0123456789abcdef";

fn offline(cache: &Path) -> HubConfig {
    HubConfig {
        cache_dir: cache.to_path_buf(),
        // Never contacted: offline.
        endpoint: "http://127.0.0.1:9".into(),
        token: None,
        offline: true,
    }
}

/// `cache/models--test--tiny` with `files` in snapshot SHA and `refs/main`.
fn cache_tiny(cache: &Path, files: &[(&str, &str)], main_ref: &str) -> PathBuf {
    let repo = cache.join("models--test--tiny");
    let snapshot = repo.join("snapshots").join(SHA);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    for (from, to) in files {
        std::fs::copy(fixture_dir().join(from), snapshot.join(to)).unwrap();
    }
    std::fs::write(repo.join("refs/main"), main_ref).unwrap();
    snapshot
}

const ALL: [(&str, &str); 3] = [
    ("config.json", "config.json"),
    ("tokenizer.json", "tokenizer.json"),
    ("model.safetensors", "model.safetensors"),
];

#[test]
fn a_directory_is_used_as_is() {
    let cache = tempfile::tempdir().unwrap();
    let dir = fixture_dir().display().to_string();
    let r = hub::resolve(&dir, "main", &offline(cache.path()), &mut ()).unwrap();
    assert_eq!(r.source, Source::Directory);
    assert_eq!(r.files.weights, fixture_dir().join("model.safetensors"));
}

#[test]
fn a_model_id_resolves_to_its_cached_snapshot() {
    let cache = tempfile::tempdir().unwrap();
    // huggingface_hub writes the ref without a newline; tolerate one anyway.
    let snapshot = cache_tiny(cache.path(), &ALL, &format!("{SHA}\n"));
    let r = hub::resolve("test/tiny", "main", &offline(cache.path()), &mut ()).unwrap();
    assert_eq!(r.source, Source::Cache);
    assert_eq!(r.files.config, snapshot.join("config.json"));
    assert_eq!(r.files.weights, snapshot.join("model.safetensors"));
    // The files load.
    rerank::Reranker::load_files(&r.files, Default::default()).unwrap();
    // A commit hash works as a revision without a ref.
    let r = hub::resolve("test/tiny", SHA, &offline(cache.path()), &mut ()).unwrap();
    assert_eq!(r.files.tokenizer, snapshot.join("tokenizer.json"));
}

#[test]
fn pytorch_weights_are_used_when_there_is_no_safetensors() {
    let cache = tempfile::tempdir().unwrap();
    let snapshot = cache_tiny(
        cache.path(),
        &[
            ("config.json", "config.json"),
            ("tokenizer.json", "tokenizer.json"),
            ("model.safetensors", "pytorch_model.bin"),
        ],
        SHA,
    );
    let files = hub::find_cached(&offline(cache.path()), "test/tiny", "main").unwrap();
    assert_eq!(files.weights, snapshot.join("pytorch_model.bin"));
}

#[test]
fn cache_misses_say_what_is_missing_where() {
    let cache = tempfile::tempdir().unwrap();
    let hub = offline(cache.path());
    let repo = cache.path().join("models--test--tiny");
    assert_eq!(
        hub::find_cached(&hub, "test/tiny", "main").unwrap_err(),
        CacheMiss::NoRepo(repo.clone())
    );
    let snapshot = cache_tiny(cache.path(), &ALL[..2], SHA);
    assert_eq!(
        hub::find_cached(&hub, "test/tiny", "main").unwrap_err(),
        CacheMiss::Incomplete {
            snapshot,
            missing: vec!["model.safetensors"]
        }
    );
    let miss = hub::find_cached(&hub, "test/tiny", "v2").unwrap_err();
    assert!(matches!(miss, CacheMiss::NoRevision { .. }), "{miss:?}");
    assert!(miss.to_string().contains("no revision v2"), "{miss}");
}

#[test]
fn offline_and_not_cached_is_a_model_not_found_error() {
    let cache = tempfile::tempdir().unwrap();
    let err = hub::resolve(
        "BAAI/bge-reranker-v2-m3",
        "main",
        &offline(cache.path()),
        &mut (),
    )
    .unwrap_err();
    let Error::ModelNotFound {
        model,
        cache: where_,
        ..
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!(model, "BAAI/bge-reranker-v2-m3");
    assert!(
        where_.contains("models--BAAI--bge-reranker-v2-m3"),
        "{where_}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("HF_HUB_OFFLINE") && msg.contains("--model DIR"),
        "{msg}"
    );
}

#[test]
fn a_path_that_is_not_a_directory_is_missing() {
    let cache = tempfile::tempdir().unwrap();
    for model in ["./no/such/dir", "/no/such/dir", "tests/fixtures/none"] {
        let err = hub::resolve(model, "main", &offline(cache.path()), &mut ()).unwrap_err();
        assert!(matches!(err, Error::MissingFile { .. }), "{model}: {err:?}");
        assert!(err.to_string().contains("no such directory"), "{err}");
    }
    let file = fixture_dir().join("config.json").display().to_string();
    let err = hub::resolve(&file, "main", &offline(cache.path()), &mut ()).unwrap_err();
    assert!(err.to_string().contains("this is a file"), "{err}");
}

#[test]
fn download_refuses_offline() {
    let cache = tempfile::tempdir().unwrap();
    let err = hub::download("test/tiny", "main", &offline(cache.path()), &mut ()).unwrap_err();
    assert!(err.to_string().contains("HF_HUB_OFFLINE"), "{err}");
    assert!(
        std::fs::read_dir(cache.path()).unwrap().next().is_none(),
        "nothing written"
    );
}
