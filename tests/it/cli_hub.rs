//! The `rerank` binary's model resolution (directory → Hugging Face cache →
//! download) and `rerank download`, against a fake hub on 127.0.0.1: no test
//! reaches beyond the loopback interface.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use assert_cmd::Command;
use predicates::prelude::*;
use serde_json::Value;
use tempfile::TempDir;

use crate::cli::*;
use crate::fixtures::fixture_dir;

// ------------------------------------------------------- model resolution

/// Lays out `models--test--tiny` in `HF_HOME/hub` as huggingface_hub does:
/// blobs, a snapshot of links to them, and `refs/main`.
fn cache_tiny(hf_home: &Path, files: &[&str]) -> PathBuf {
    let repo = hf_home.join("hub/models--test--tiny");
    let snapshot = repo.join("snapshots").join(SHA);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    for f in files {
        let blob = repo.join("blobs").join(format!("blob-{f}"));
        std::fs::copy(fixture_dir().join(f), &blob).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(format!("blob-{f}")),
            snapshot.join(f),
        )
        .unwrap();
        #[cfg(not(unix))]
        std::fs::copy(&blob, snapshot.join(f)).unwrap();
    }
    std::fs::write(repo.join("refs/main"), SHA).unwrap();
    snapshot
}

/// `rerank rank --json` with `model_args`, parsed.
fn rank_json(cmd: &mut Command, model_args: &[&str]) -> Value {
    let out = cmd
        .args(["rank", "--json", "-q", QUERY])
        .args(model_args)
        .args(PASSAGES)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn a_model_id_is_found_in_the_hf_cache() {
    let home = TempDir::new().unwrap();
    cache_tiny(home.path(), &MODEL_FILES);
    let reference = rank_json(&mut rerank(home.path()), &["--model", &fixture()]);
    // By --model, by RERANK_MODEL, offline or not (the hub is unreachable).
    assert_eq!(
        rank_json(&mut rerank(home.path()), &["--model", "test/tiny"]),
        reference
    );
    assert_eq!(
        rank_json(
            rerank(home.path())
                .env("RERANK_MODEL", "test/tiny")
                .env("HF_HUB_OFFLINE", "1"),
            &[]
        ),
        reference
    );
    // A commit hash as --revision finds its snapshot without a ref.
    assert_eq!(
        rank_json(
            rerank(home.path()).env("HF_HUB_OFFLINE", "1"),
            &["--model", "test/tiny", "--revision", SHA]
        ),
        reference
    );
    // HF_HUB_CACHE takes precedence over HF_HOME.
    let other = TempDir::new().unwrap();
    assert_eq!(
        rank_json(
            rerank(other.path())
                .env("HF_HUB_CACHE", home.path().join("hub"))
                .env("HF_HUB_OFFLINE", "1"),
            &["--model", "test/tiny"]
        ),
        reference
    );
}

#[test]
fn a_local_directory_wins_over_the_cache() {
    let home = TempDir::new().unwrap();
    cache_tiny(home.path(), &MODEL_FILES);
    // ./test/tiny exists (without a tokenizer): it is used, not the cache.
    let cwd = TempDir::new().unwrap();
    let local = cwd.path().join("test/tiny");
    std::fs::create_dir_all(&local).unwrap();
    std::fs::copy(fixture_dir().join("config.json"), local.join("config.json")).unwrap();
    expect_error(
        rerank(home.path()).current_dir(cwd.path()).args([
            "rank",
            "--model",
            "test/tiny",
            "-q",
            "q",
            "p",
        ]),
        &["test/tiny/tokenizer.json not found"],
    );
}

#[test]
fn offline_without_the_model_says_where_it_looked_and_what_to_do() {
    let home = TempDir::new().unwrap();
    let err = expect_error(
        rerank(home.path())
            .env("HF_HUB_OFFLINE", "1")
            .args(["rank", "-q", "q", "p"]),
        &[
            "BAAI/bge-reranker-v2-m3",
            "models--BAAI--bge-reranker-v2-m3",
            "HF_HUB_OFFLINE",
            "--model DIR",
        ],
    );
    assert!(
        err.contains(&home.path().join("hub").display().to_string()),
        "{err}"
    );
    // An incomplete snapshot names the missing file.
    cache_tiny(home.path(), &["config.json", "tokenizer.json"]);
    expect_error(
        rerank(home.path()).env("HF_HUB_OFFLINE", "1").args([
            "rank",
            "--model",
            "test/tiny",
            "-q",
            "q",
            "p",
        ]),
        &[SHA, "model.safetensors missing", "--model DIR"],
    );
}

#[test]
fn an_unreachable_hub_says_where_it_looked_and_what_to_do() {
    let home = TempDir::new().unwrap();
    expect_error(
        rerank(home.path()).args(["rank", "--model", "test/absent", "-q", "q", "p"]),
        &[
            "model test/absent",
            "models--test--absent: not there",
            UNREACHABLE,
            "--model DIR",
            "HF_ENDPOINT",
        ],
    );
    // `download` says what it is doing first, then fails the same way.
    rerank(home.path())
        .args(["download", "test/absent"])
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "\nerror: cannot download test/absent (revision main)",
        ))
        .stderr(predicate::str::contains(UNREACHABLE))
        .stderr(predicate::str::contains("HF_ENDPOINT"))
        .stderr(predicate::str::contains("panicked").not());
    expect_error(
        rerank(home.path())
            .env("HF_HUB_OFFLINE", "1")
            .args(["download", "test/absent"]),
        &["HF_HUB_OFFLINE"],
    );
}

// ------------------------------------------------ downloads from a fake hub

#[derive(Debug, Clone)]
struct Logged {
    path: String,
    headers: HashMap<String, String>,
}

/// A minimal Hugging Face hub on 127.0.0.1 serving `test/tiny` at `main`
/// (commit SHA): the repo info API and `resolve` with Range requests.
struct FakeHub {
    url: String,
    log: Arc<Mutex<Vec<Logged>>>,
}

impl FakeHub {
    fn start(files: Vec<(&'static str, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let served = log.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                serve(stream, &files, &served);
            }
        });
        Self { url, log }
    }

    fn requests(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(mut stream: TcpStream, files: &[(&'static str, Vec<u8>)], log: &Mutex<Vec<Logged>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    log.lock().unwrap().push(Logged {
        path: path.clone(),
        headers: headers.clone(),
    });
    let respond = |stream: &mut TcpStream, status: &str, extra: &[String], body: &[u8]| {
        let mut head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for h in extra {
            head.push_str(h);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(body);
        let _ = stream.flush();
    };
    if path == "/api/models/test/tiny/revision/main" {
        let siblings: Vec<Value> = files
            .iter()
            .map(|(name, _)| serde_json::json!({ "rfilename": name }))
            .collect();
        let body = serde_json::json!({"sha": SHA, "siblings": siblings}).to_string();
        respond(&mut stream, "200 OK", &[], body.as_bytes());
        return;
    }
    let file = path
        .strip_prefix("/test/tiny/resolve/main/")
        .and_then(|name| files.iter().find(|(n, _)| *n == name));
    let Some((name, bytes)) = file else {
        respond(&mut stream, "404 Not Found", &[], b"Entry not found");
        return;
    };
    let size = bytes.len();
    let (start, end) = headers
        .get("range")
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| {
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                size - 1
            } else {
                b.parse().unwrap()
            };
            (a, b.min(size - 1))
        })
        .unwrap_or((0, size - 1));
    let extra = [
        format!("Content-Range: bytes {start}-{end}/{size}"),
        format!("X-Repo-Commit: {SHA}"),
        format!("ETag: \"etag-{}\"", name.replace('.', "-")),
    ];
    respond(
        &mut stream,
        "206 Partial Content",
        &extra,
        &bytes[start..=end],
    );
}

fn tiny_files() -> Vec<(&'static str, Vec<u8>)> {
    MODEL_FILES
        .iter()
        .map(|f| (*f, std::fs::read(fixture_dir().join(f)).unwrap()))
        .chain([("tokenizer_config.json", b"{}".to_vec())])
        .collect()
}

#[test]
fn download_fills_the_standard_cache_and_is_reused() {
    let hub = FakeHub::start(tiny_files());
    let home = TempDir::new().unwrap();
    let out = rerank(home.path())
        .env("HF_ENDPOINT", &hub.url)
        .env("HF_TOKEN", "hf_test_token")
        .args(["download", "test/tiny"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let snapshot = home
        .path()
        .join("hub/models--test--tiny/snapshots")
        .join(SHA);
    assert_eq!(stdout(&out).trim(), snapshot.display().to_string());
    for f in MODEL_FILES {
        assert_eq!(
            std::fs::read(snapshot.join(f)).unwrap(),
            std::fs::read(fixture_dir().join(f)).unwrap(),
            "{f}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(home.path().join("hub/models--test--tiny/refs/main")).unwrap(),
        SHA
    );
    // Only the needed files; the token is sent.
    let requests = hub.requests();
    assert!(requests
        .iter()
        .all(|r| !r.path.contains("tokenizer_config")));
    assert!(requests.iter().all(
        |r| r.headers.get("authorization").map(String::as_str) == Some("Bearer hf_test_token")
    ));
    // The cached model is used offline, and a second download fetches nothing.
    let reference = rank_json(&mut rerank(home.path()), &["--model", &fixture()]);
    assert_eq!(
        rank_json(
            rerank(home.path()).env("HF_HUB_OFFLINE", "1"),
            &["--model", "test/tiny"]
        ),
        reference
    );
    let before = hub.requests().len();
    rerank(home.path())
        .env("HF_ENDPOINT", &hub.url)
        .args(["download", "test/tiny"])
        .assert()
        .success()
        .stderr(predicate::str::contains("already in the cache"));
    let fetched: Vec<String> = hub.requests()[before..]
        .iter()
        .map(|r| r.path.clone())
        .filter(|p| p.contains("/resolve/"))
        .collect();
    assert!(fetched.is_empty(), "{fetched:?}");
}

#[test]
fn a_model_id_not_in_the_cache_is_downloaded_then_used() {
    let hub = FakeHub::start(tiny_files());
    let home = TempDir::new().unwrap();
    let reference = rank_json(&mut rerank(home.path()), &["--model", &fixture()]);
    assert_eq!(
        rank_json(
            rerank(home.path()).env("HF_ENDPOINT", &hub.url),
            &["--model", "test/tiny"]
        ),
        reference
    );
    assert!(home
        .path()
        .join("hub/models--test--tiny/snapshots")
        .join(SHA)
        .join("model.safetensors")
        .exists());
}

#[test]
fn download_falls_back_to_pytorch_weights() {
    let files = vec![
        (
            "config.json",
            std::fs::read(fixture_dir().join("config.json")).unwrap(),
        ),
        (
            "tokenizer.json",
            std::fs::read(fixture_dir().join("tokenizer.json")).unwrap(),
        ),
        ("pytorch_model.bin", b"not really a checkpoint".to_vec()),
    ];
    let hub = FakeHub::start(files);
    let home = TempDir::new().unwrap();
    rerank(home.path())
        .env("HF_ENDPOINT", &hub.url)
        .args(["download", "test/tiny"])
        .assert()
        .success();
    let snapshot = home
        .path()
        .join("hub/models--test--tiny/snapshots")
        .join(SHA);
    assert!(snapshot.join("pytorch_model.bin").exists());
    assert!(hub
        .requests()
        .iter()
        .all(|r| !r.path.contains("model.safetensors")));
}

#[test]
fn a_model_the_hub_does_not_have_is_reported() {
    let hub = FakeHub::start(tiny_files());
    let home = TempDir::new().unwrap();
    expect_error(
        rerank(home.path()).env("HF_ENDPOINT", &hub.url).args([
            "rank",
            "--model",
            "test/other",
            "-q",
            "q",
            "p",
        ]),
        &["model test/other", "HTTP 404", "check the model id"],
    );
}
