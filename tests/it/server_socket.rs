//! The server on real loopback sockets: `server::run` on 127.0.0.1:0, 64
//! concurrent clients against the tiny model, a client that hangs up, slow
//! clients cut off by the read timeouts, the drain on shutdown, and the
//! `rerank serve` binary stopping on SIGTERM.

use crate::fixtures::fixture_dir;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::time::Duration;

use crate::server_common::*;
use hyper::StatusCode;
use rerank::server::{self, AppState, ServerConfig};
use rerank::RerankerOptions;
use tokio::sync::oneshot;

/// Serves `state` on 127.0.0.1:0 until the returned sender fires or drops.
async fn start(
    state: AppState,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(server::run(listener, state, async {
        let _ = stopped.await;
    }));
    (addr, stop, handle)
}

/// Polls `cond` every 10 ms, up to about a minute; a bound, not a timing claim.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_on_a_real_socket_and_stops_gracefully() {
    let (state, rr) = tiny_state(ServerConfig::default());
    let (addr, stop, handle) = start(state).await;
    let texts = ["北京是中国的政治中心和首都。", "hi"];
    let body = serde_json::json!({"query": "中国的首都是哪里？", "texts": texts}).to_string();
    let reply = http(addr, "POST", "/rerank", Some(&body)).await;
    assert_eq!(reply.status, StatusCode::OK);
    let got = tei_scores(&reply.json(), 2);
    let want = rr
        .score(&[
            ("中国的首都是哪里？", texts[0]),
            ("中国的首都是哪里？", texts[1]),
        ])
        .unwrap();
    assert_close(&got, &want, 1e-5, "socket");
    assert_eq!(
        http(addr, "GET", "/health", None).await.status,
        StatusCode::OK
    );
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_get_the_library_scores() {
    const CLIENTS: usize = 64;
    const REQUESTS_EACH: usize = 2;
    let (state, rr) = tiny_state(ServerConfig::default());
    let (addr, stop, handle) = start(state.clone()).await;
    const WORDS: [&str; 10] = [
        "panda",
        "bear",
        "北京",
        "首都",
        "capital",
        "人工智能",
        "趋势",
        "🐼",
        "東京",
        "عاصمة",
    ];
    // Mixed sizes: 1 to 24 documents, 0 to ~200 words (over the 128-token limit).
    let make = |client: usize, round: usize| {
        let n_docs = 1 + (client * 7 + round * 13) % 24;
        let query = format!(
            "{} {}",
            WORDS[client % WORDS.len()],
            WORDS[round % WORDS.len()]
        );
        let docs: Vec<String> = (0..n_docs)
            .map(|d| {
                let len = (client * 31 + round * 17 + d * 11) % 200;
                (0..len)
                    .map(|w| WORDS[(w + d + client) % WORDS.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        (query, docs)
    };
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for round in 0..REQUESTS_EACH {
                    let (query, docs) = make(c, round);
                    let cohere = (c + round) % 2 == 1;
                    let (path, body) = if cohere {
                        (
                            "/v1/rerank",
                            serde_json::json!({"query": query, "documents": docs}),
                        )
                    } else {
                        (
                            "/rerank",
                            serde_json::json!({"query": query, "texts": docs}),
                        )
                    };
                    let reply = http(addr, "POST", path, Some(&body.to_string())).await;
                    answers.push((query, docs, cohere, reply));
                }
                answers
            })
        })
        .collect();
    let mut answered = 0;
    for client in clients {
        for (query, docs, cohere, reply) in client.await.unwrap() {
            assert_eq!(
                reply.status,
                StatusCode::OK,
                "{}",
                String::from_utf8_lossy(&reply.body)
            );
            let want = rr
                .score(
                    &docs
                        .iter()
                        .map(|d| (query.as_str(), d.as_str()))
                        .collect::<Vec<_>>(),
                )
                .unwrap();
            let got = if cohere {
                let j = reply.json();
                let tei_like: Vec<serde_json::Value> = j["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(
                        |r| serde_json::json!({"index": r["index"], "score": r["relevance_score"]}),
                    )
                    .collect();
                tei_scores(&serde_json::Value::Array(tei_like), docs.len())
            } else {
                tei_scores(&reply.json(), docs.len())
            };
            assert_close(&got, &want, 1e-5, &query);
            answered += 1;
        }
    }
    assert_eq!(answered, CLIENTS * REQUESTS_EACH, "none lost");
    assert_eq!(state.scheduler().reserved(), 0);
    let metrics =
        String::from_utf8(http(addr, "GET", "/metrics", None).await.body.to_vec()).unwrap();
    let batches: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rerank_batch_pairs_count "))
        .unwrap()
        .parse()
        .unwrap();
    let pairs: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rerank_batch_pairs_sum "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(batches >= 1.0 && pairs >= batches);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disconnected_clients_work_leaves_the_queue_uncomputed() {
    let rr = tiny(RerankerOptions::default());
    let (gated, mut gate) = Gated::new(rr.clone());
    let state = state_with_backend(gated.clone(), ServerConfig::default());
    let (addr, stop, handle) = start(state.clone()).await;

    // A: occupies the model.
    let a = tokio::spawn(async move {
        http(
            addr,
            "POST",
            "/rerank",
            Some(r#"{"query": "a", "texts": ["first"]}"#),
        )
        .await
    });
    gate.entered.recv().await.unwrap();
    // B: queued behind A, then its client hangs up.
    let b_texts: Vec<String> = (0..5).map(|i| format!("gone {i}")).collect();
    let b_body = serde_json::json!({"query": "b", "texts": b_texts}).to_string();
    let mut b = std::net::TcpStream::connect(addr).unwrap();
    let request = format!(
        "POST /rerank HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{b_body}",
        b_body.len()
    );
    b.write_all(request.as_bytes()).unwrap();
    let s = state.clone();
    eventually("B's pairs are queued", move || {
        s.scheduler().queue_size() == 5
    })
    .await;
    drop(b); // the client hangs up
    let s = state.clone();
    eventually("B's pairs leave the queue", move || {
        s.scheduler().queue_size() == 0 && s.scheduler().reserved() == 1
    })
    .await;

    gate.go.send(()).unwrap();
    let a = a.await.unwrap();
    assert_eq!(a.status, StatusCode::OK);
    let b_ids = rr
        .encoder()
        .encode_passages("b", &b_texts, rr.truncation())
        .unwrap();
    let seen = gated.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "only A's pair was computed");
    assert!(b_ids.iter().all(|p| !seen.contains(&p.ids)));
    drop(gate);
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_new_requests_get_503_and_those_in_flight_finish() {
    let rr = tiny(RerankerOptions::default());
    let (gated, mut gate) = Gated::new(rr);
    let state = state_with_backend(gated, ServerConfig::default());
    let (addr, stop, handle) = start(state.clone()).await;
    let inflight = tokio::spawn(async move {
        http(
            addr,
            "POST",
            "/rerank",
            Some(r#"{"query": "q", "texts": ["a", "b"]}"#),
        )
        .await
    });
    gate.entered.recv().await.unwrap();
    stop.send(()).unwrap();
    let s = state.clone();
    eventually("draining", move || s.is_draining()).await;
    // While the request computes, the listener still answers: new work is
    // refused with 503 and Retry-After, the probes tell why.
    let late = http(
        addr,
        "POST",
        "/rerank",
        Some(r#"{"query": "q", "texts": ["late"]}"#),
    )
    .await;
    assert_eq!(late.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(late.headers.contains_key("retry-after"));
    assert!(late.json()["error"]
        .as_str()
        .unwrap()
        .contains("shutting down"));
    assert_eq!(
        http(addr, "GET", "/ready", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        http(addr, "GET", "/live", None).await.status,
        StatusCode::OK
    );
    assert!(!handle.is_finished());
    // …and the request in flight is answered before the server returns.
    gate.go.send(()).unwrap();
    let reply = inflight.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(tei_scores(&reply.json(), 2).len(), 2);
    handle.await.unwrap().unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
}

/// Reads what the server sends until it closes the connection; a bound of
/// 60 s turns "never closes" into a failure.
fn read_to_close(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut got = Vec::new();
    match stream.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server kept the connection open: {e}"),
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hold_a_connection_forever() {
    let (state, _) = tiny_state(ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        body_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    });
    let (addr, stop, handle) = start(state).await;
    let (headers_only, body_short) = tokio::task::spawn_blocking(move || {
        // Headers that never end.
        let mut a = std::net::TcpStream::connect(addr).unwrap();
        a.write_all(b"POST /rerank HTTP/1.1\r\nhost: x\r\ncontent-ty")
            .unwrap();
        let headers_only = read_to_close(&mut a);
        // A body that stops short of its length.
        let mut b = std::net::TcpStream::connect(addr).unwrap();
        b.write_all(
            b"POST /rerank HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"query\": ",
        )
        .unwrap();
        (headers_only, read_to_close(&mut b))
    })
    .await
    .unwrap();
    assert!(!headers_only.contains("200 OK"), "{headers_only}");
    assert!(body_short.starts_with("HTTP/1.1 408"), "{body_short}");
    assert!(
        body_short.contains("\"error_type\":\"request_timeout\""),
        "{body_short}"
    );
    assert!(body_short.contains("--body-read-timeout"), "{body_short}");
    // The server is unharmed.
    assert_eq!(
        http(addr, "GET", "/ready", None).await.status,
        StatusCode::OK
    );
    stop.send(()).unwrap();
    handle.await.unwrap().unwrap();
}

#[cfg(unix)]
#[test]
fn the_binary_serves_and_exits_0_on_sigterm() {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rerank"))
        .args(["serve", "--model"])
        .arg(fixture_dir())
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env_remove("RERANK_API_KEY")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rerank serve starts");
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let addr: SocketAddr = loop {
        line.clear();
        let n = stderr.read_line(&mut line).unwrap();
        assert!(n > 0, "rerank serve exited before listening");
        if let Some(rest) = line.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let reply = rt.block_on(http(
        addr,
        "POST",
        "/v1/rerank",
        Some(r#"{"query": "q", "documents": ["a", {"text": "b"}], "top_n": 1}"#),
    ));
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.json()["results"].as_array().unwrap().len(), 1);
    // `rerank health` (the image's HEALTHCHECK) asks it: 0 on 200, 1 otherwise.
    let health = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rerank"))
            .arg("health")
            .args(args)
            .env_remove("RERANK_PORT")
            .output()
            .unwrap()
    };
    let port = addr.port().to_string();
    for probe in ["health", "live", "ready"] {
        let out = health(&["--port", &port, "--probe", probe]);
        assert!(out.status.success(), "{probe}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("\"status\":\"ok\""));
    }
    let out = health(&["--url", &format!("http://{addr}/nowhere")]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("404"),
        "{out:?}"
    );
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "exit status {exit}");
    // Nobody listens now.
    let out = health(&["--port", &port]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no answer") && stderr.contains("rerank serve"),
        "{stderr}"
    );
}
