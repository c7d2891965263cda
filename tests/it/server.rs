//! The HTTP API in process (tower `oneshot`, no socket): every route, every
//! error status, scores equal to the library's.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::server_common::*;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use rerank::server::{AppState, ServedModel, ServerConfig};
use rerank::{RerankerOptions, Side};

const QUERY: &str = "中国的首都是哪里？";
const TEXTS: [&str; 4] = [
    "北京是中国的政治中心和首都。",
    "首都机场很大。",
    "what is panda? The giant panda is a bear.",
    "",
];

/// A passage far over the tiny model's 128 tokens.
fn long_text(words: &str) -> String {
    words.repeat(60)
}

fn library_scores(rr: &rerank::Reranker, query: &str, texts: &[String]) -> Vec<f32> {
    rr.score(
        &texts
            .iter()
            .map(|t| (query, t.as_str()))
            .collect::<Vec<_>>(),
    )
    .expect("library scores")
}

fn texts() -> Vec<String> {
    TEXTS.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn tei_rerank_equals_the_library_sorted_with_timing_headers() {
    let (state, rr) = tiny_state(ServerConfig::default());
    let texts = texts();
    let a = post(
        &state,
        "/rerank",
        serde_json::json!({"query": QUERY, "texts": texts, "return_text": true}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let j = a.json();
    let got = tei_scores(&j, texts.len());
    assert_close(&got, &library_scores(&rr, QUERY, &texts), 1e-5, "sigmoid");
    for item in j.as_array().unwrap() {
        let i = item["index"].as_u64().unwrap() as usize;
        assert_eq!(item["text"], texts[i]);
    }
    for h in [
        "x-compute-type",
        "x-compute-time",
        "x-compute-characters",
        "x-compute-tokens",
        "x-total-time",
        "x-tokenization-time",
        "x-queue-time",
        "x-inference-time",
    ] {
        assert!(a.headers.contains_key(h), "missing header {h}");
    }

    // raw_scores: logits; no text unless asked.
    let raw = tiny(RerankerOptions {
        raw_scores: true,
        ..RerankerOptions::default()
    });
    let a = post(
        &state,
        "/rerank",
        serde_json::json!({"query": QUERY, "texts": texts, "raw_scores": true}).to_string(),
    )
    .await;
    let j = a.json();
    assert!(j[0].get("text").is_none());
    let got = tei_scores(&j, texts.len());
    assert_close(&got, &library_scores(&raw, QUERY, &texts), 1e-5, "raw");
}

#[tokio::test]
async fn truncation_direction_and_truncate_false_follow_tei() {
    let (state, rr) = tiny_state(ServerConfig::default());
    let left = tiny(RerankerOptions {
        truncation_side: Side::Left,
        ..RerankerOptions::default()
    });
    let texts = vec![
        long_text("the giant panda is a bear "),
        format!("{} end", long_text("beijing capital ")),
        "short".to_string(),
    ];
    for (dir, lib) in [
        ("Right", &rr),
        ("right", &rr),
        ("Left", &left),
        ("left", &left),
    ] {
        let a = post(
            &state,
            "/rerank",
            serde_json::json!({"query": QUERY, "texts": texts, "truncation_direction": dir})
                .to_string(),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{dir}");
        let got = tei_scores(&a.json(), texts.len());
        assert_close(&got, &library_scores(lib, QUERY, &texts), 1e-5, dir);
    }
    let right = post(
        &state,
        "/rerank",
        serde_json::json!({"query": QUERY, "texts": texts, "truncation_direction": "Right"})
            .to_string(),
    )
    .await;
    let leftj = post(
        &state,
        "/rerank",
        serde_json::json!({"query": QUERY, "texts": texts, "truncation_direction": "Left"})
            .to_string(),
    )
    .await;
    assert_ne!(
        tei_scores(&right.json(), 3)[1],
        tei_scores(&leftj.json(), 3)[1],
        "the two directions keep different tokens"
    );

    // truncate: false → 422 naming the limit and the length.
    let untruncated = rr
        .encoder()
        .encode(QUERY, &texts[0], rr.truncation())
        .unwrap()
        .untruncated_len;
    let a = post(
        &state,
        "/rerank",
        serde_json::json!({"query": QUERY, "texts": texts, "truncate": false}).to_string(),
    )
    .await;
    let msg = a.error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert!(
        msg.contains("128") && msg.contains(&untruncated.to_string()),
        "{msg}"
    );
    // Short texts pass with truncate: false.
    let a = post(
        &state,
        "/rerank",
        serde_json::json!({"query": QUERY, "texts": ["short"], "truncate": false}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);

    // --auto-truncate false makes it the default; "truncate": true still cuts.
    let (strict, _) = tiny_state(ServerConfig {
        auto_truncate: false,
        ..ServerConfig::default()
    });
    let body = serde_json::json!({"query": QUERY, "texts": texts}).to_string();
    post(&strict, "/rerank", body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let body = serde_json::json!({"query": QUERY, "texts": texts, "truncate": true}).to_string();
    assert_eq!(post(&strict, "/rerank", body).await.status, StatusCode::OK);
    let body = serde_json::json!({"query": QUERY, "documents": texts}).to_string();
    post(&strict, "/v1/rerank", body)
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
}

/// Every route cuts over-long texts on the side the server was configured
/// with (here `Left`), unless a TEI request names its own.
#[tokio::test]
async fn routes_truncate_on_the_configured_side() {
    let rr = tiny(RerankerOptions {
        max_length: Some(16),
        truncation_side: Side::Left,
        ..RerankerOptions::default()
    });
    let state = AppState::new(
        ServedModel::from_reranker("tiny", rr.clone()),
        ServerConfig {
            auto_truncate: true,
            ..ServerConfig::default()
        },
    )
    .unwrap();
    let long = "The giant panda is a bear native to south central China, and it eats bamboo almost exclusively.".to_string();
    let texts = vec![long.clone(), "a panda".to_string()];
    let left = library_scores(&rr, "what is a panda?", &texts);
    let right_rr = tiny(RerankerOptions {
        max_length: Some(16),
        ..RerankerOptions::default()
    });
    let right = library_scores(&right_rr, "what is a panda?", &texts);
    assert!(
        (left[0] - right[0]).abs() > 1e-6,
        "the sides must differ for this test"
    );
    let body = serde_json::json!({"query": "what is a panda?", "documents": texts});
    let j = post(&state, "/v1/rerank", body.to_string()).await.json();
    let first = j["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["index"] == 0)
        .unwrap()["relevance_score"]
        .as_f64()
        .unwrap() as f32;
    assert!(
        (first - left[0]).abs() <= 1e-5,
        "cohere: {first} vs left {}",
        left[0]
    );
    let body = serde_json::json!({"query": "what is a panda?", "texts": texts});
    let got = tei_scores(&post(&state, "/rerank", body.to_string()).await.json(), 2);
    assert_close(&got, &left, 1e-5, "tei default side");
    let body = serde_json::json!({"query": "what is a panda?", "texts": texts, "truncation_direction": "Right"});
    let got = tei_scores(&post(&state, "/rerank", body.to_string()).await.json(), 2);
    assert_close(&got, &right, 1e-5, "tei explicit Right");
}

#[tokio::test]
async fn cohere_routes_equal_the_library_cut_to_top_n() {
    let (state, rr) = tiny_state(ServerConfig::default());
    let texts = texts();
    let lib = library_scores(&rr, QUERY, &texts);
    let tokens: usize = rr
        .encoder()
        .encode_passages(QUERY, &texts, rr.truncation())
        .unwrap()
        .iter()
        .map(|p| p.ids.len())
        .sum();
    let documents = serde_json::json!([texts[0], {"text": texts[1]}, texts[2], {"text": texts[3]}]);
    for path in ["/v1/rerank", "/v2/rerank"] {
        let body = serde_json::json!({"model": "whatever", "query": QUERY, "documents": documents});
        let a = post(&state, path, body.to_string()).await;
        assert_eq!(a.status, StatusCode::OK, "{path}");
        let j = a.json();
        assert!(!j["id"].as_str().unwrap().is_empty());
        assert_eq!(j["model"], "tiny");
        assert_eq!(j["usage"]["total_tokens"], tokens);
        let results = j["results"].as_array().unwrap();
        assert_eq!(results.len(), texts.len());
        let mut previous = f64::INFINITY;
        for r in results {
            let s = r["relevance_score"].as_f64().unwrap();
            assert!(s <= previous);
            previous = s;
            let i = r["index"].as_u64().unwrap() as usize;
            assert!((s as f32 - lib[i]).abs() <= 1e-5);
            assert!(r.get("document").is_none());
        }

        let body = serde_json::json!({"query": QUERY, "documents": documents, "top_n": 2, "return_documents": true});
        let j = post(&state, path, body.to_string()).await.json();
        let results = j["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        let best = rerank::backend::rank_scores(&lib, Some(2));
        for (r, b) in results.iter().zip(&best) {
            assert_eq!(r["index"], b.index);
            assert_eq!(r["document"]["text"], texts[b.index]);
        }
    }
    // top_n larger than the documents: all of them.
    let body = serde_json::json!({"query": QUERY, "documents": texts, "top_n": 100});
    let j = post(&state, "/v1/rerank", body.to_string()).await.json();
    assert_eq!(j["results"].as_array().unwrap().len(), texts.len());
}

#[tokio::test]
async fn health_info_metrics_and_openapi() {
    let (state, _) = tiny_state(ServerConfig::default());
    let a = get(&state, "/health").await;
    assert_eq!(a.status, StatusCode::OK);

    let info = get(&state, "/info").await.json();
    assert_eq!(info["model_id"], "tiny");
    assert_eq!(info["model_dtype"], "f32");
    assert_eq!(info["model_device"], "cpu");
    assert_eq!(info["model_implementation"], "cpu-f32");
    let kernels = info["kernels"].as_str().unwrap();
    assert!(
        kernels.starts_with("int8=")
            && kernels.contains(" bf16=")
            && kernels.contains(" small-f32="),
        "{kernels}"
    );
    assert_eq!(info["max_input_length"], 128);
    assert_eq!(info["max_client_batch_size"], 1024);
    assert_eq!(info["auto_truncate"], true);
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));

    let body = serde_json::json!({"query": "q", "texts": ["a", "b", "c"]}).to_string();
    assert_eq!(post(&state, "/rerank", body).await.status, StatusCode::OK);
    post(&state, "/rerank", "{").await;
    let a = get(&state, "/metrics").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = String::from_utf8(a.body).unwrap();
    for needle in [
        "rerank_requests_total{route=\"/rerank\",status=\"200\"} 1",
        "rerank_requests_total{route=\"/rerank\",status=\"400\"} 1",
        "rerank_requests_total{route=\"/health\",status=\"200\"} 1",
        "rerank_queue_size 0",
        "rerank_batch_pairs_bucket",
        "rerank_batch_tokens_bucket",
        "rerank_batch_padded_tokens_bucket",
        "rerank_tokenization_duration_seconds_bucket",
        "rerank_queue_duration_seconds_bucket",
        "rerank_inference_duration_seconds_bucket",
        "rerank_request_duration_seconds_bucket",
        "rerank_queue_duration_seconds_bucket{docs=\"2-8\"",
        "rerank_model_busy_seconds_total",
        "rerank_probes_total{probe=\"health\",result=\"ok\"} 1",
        "rerank_probe_passes_total{result=\"ok\"} 1",
        "rerank_pass_token_cap ",
        "rerank_model_thread_alive 1",
        "rerank_pass_running_seconds 0",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }

    let spec = get(&state, "/openapi.json").await.json();
    assert_eq!(spec["openapi"], "3.0.3");
    let paths = spec["paths"].as_object().unwrap();
    let routes = [
        ("get", "/"),
        ("post", "/rerank"),
        ("post", "/v1/rerank"),
        ("post", "/v2/rerank"),
        ("post", "/v1/ranking"),
        ("get", "/v1/models"),
        ("get", "/v1/models/{id}"),
        ("get", "/v1/cluster/auth"),
        ("get", "/health"),
        ("get", "/live"),
        ("get", "/ready"),
        ("get", "/info"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
    ];
    assert_eq!(paths.len(), routes.len(), "{:?}", paths.keys());
    for (method, path) in routes {
        assert!(
            paths[path].get(method).is_some(),
            "{method} {path} undocumented"
        );
        // …and routed: the other method on it is a 405, not a 404.
        let other = if method == "get" { "POST" } else { "GET" };
        let a = send(
            &state,
            Request::builder()
                .method(other)
                .uri(path.replace("{id}", "tiny"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        a.error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    }
}

#[tokio::test]
async fn cohere_truncate_false_refuses_an_over_long_pair() {
    // The playground's "refuse" option: `truncate` on the Cohere routes,
    // whatever --auto-truncate says.
    let (state, rr) = tiny_state(ServerConfig {
        auto_truncate: false,
        ..ServerConfig::default()
    });
    let texts = vec![long_text("the giant panda is a bear "), "short".to_string()];
    let body = |truncate: serde_json::Value| {
        serde_json::json!({"query": QUERY, "documents": texts, "truncate": truncate}).to_string()
    };
    let message = post(&state, "/v1/rerank", body(serde_json::json!(false)))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert!(message.contains("input is too long: text 0"), "{message}");
    post(&state, "/v1/rerank", body(serde_json::Value::Null))
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let a = post(&state, "/v1/rerank", body(serde_json::json!("true"))).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let mut got = vec![f32::NAN; texts.len()];
    for r in a.json()["results"].as_array().unwrap() {
        got[r["index"].as_u64().unwrap() as usize] = r["relevance_score"].as_f64().unwrap() as f32;
    }
    assert_close(&got, &library_scores(&rr, QUERY, &texts), 1e-5, "truncated");
}

#[tokio::test]
async fn the_playground_is_served_at_the_root_unless_turned_off() {
    // With a key: the page loads without one (the key is typed into it).
    let (state, _) = tiny_state(ServerConfig {
        api_key: Some("k".into()),
        ..ServerConfig::default()
    });
    let a = get(&state, "/").await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.headers[header::CONTENT_TYPE].to_str().unwrap(),
        "text/html; charset=utf-8"
    );
    let page = String::from_utf8(a.body).unwrap();
    for hook in [
        "id=\"query\"",
        "id=\"passages\"",
        "id=\"rank\"",
        "id=\"results\"",
        "id=\"key\"",
        "\"result\"",
        "\"v1/rerank\"",
        "prefers-color-scheme: dark",
        "name=\"viewport\"",
        "北京是中国的政治中心和首都。",
    ] {
        assert!(page.contains(hook), "the page lacks {hook}");
    }
    // Self-contained: nothing fetched from elsewhere.
    for outside in ["<script src", "<link", "http://", "https://", "@import"] {
        assert!(!page.contains(outside), "the page loads {outside}…");
    }
    let csp = a.headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    // The API it calls still wants the key.
    let body = serde_json::json!({"query": "q", "documents": ["a"]}).to_string();
    post(&state, "/v1/rerank", body)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");

    let (state, _) = tiny_state(ServerConfig {
        playground: false,
        ..ServerConfig::default()
    });
    get(&state, "/")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_requests_are_400_in_the_one_error_shape() {
    let (state, _) = tiny_state(ServerConfig::default());
    post(&state, "/rerank", "{\"query\": ")
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    let msg = post(
        &state,
        "/rerank",
        r#"{"query": "q", "texts": "not a list"}"#,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(msg.contains("texts") || msg.contains("sequence"), "{msg}");
    post(&state, "/rerank", r#"{"texts": ["a"]}"#)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    let msg = post(
        &state,
        "/rerank",
        r#"{"query": "q", "texts": ["a"], "truncation_direction": "up"}"#,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(msg.contains("Left"), "{msg}");
    post(
        &state,
        "/v1/rerank",
        r#"{"query": "q", "documents": [{"title": "x"}]}"#,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    post(
        &state,
        "/v1/rerank",
        r#"{"query": "q", "documents": ["a"], "top_n": -1}"#,
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    let mut bytes = br#"{"query": "q", "texts": [""#.to_vec();
    bytes.extend_from_slice(&[0xff, 0xfe]);
    bytes.extend_from_slice(br#""]}"#);
    let msg = post(&state, "/rerank", bytes)
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(msg.contains("UTF-8"), "{msg}");
    let msg = post(&state, "/rerank", r#"{"query": "q", "texts": []}"#)
        .await
        .error(StatusCode::BAD_REQUEST, "empty");
    assert!(msg.contains("empty"), "{msg}");
    post(&state, "/v1/rerank", r#"{"query": "q", "documents": []}"#)
        .await
        .error(StatusCode::BAD_REQUEST, "empty");
    get(&state, "/nowhere")
        .await
        .error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn api_key_guards_every_route_but_the_probes() {
    let (state, _) = tiny_state(ServerConfig {
        api_key: Some("s3cret".into()),
        ..ServerConfig::default()
    });
    let body = r#"{"query": "q", "texts": ["a"]}"#;
    post(&state, "/rerank", body)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    for path in ["/info", "/metrics", "/openapi.json"] {
        get(&state, path)
            .await
            .error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let with = |key: &str| {
        Request::post("/v1/rerank")
            .header(header::AUTHORIZATION, key)
            .body(Body::from(r#"{"query": "q", "documents": ["a"]}"#))
            .unwrap()
    };
    send(&state, with("Bearer wrong"))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    send(&state, with("s3cret"))
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_eq!(
        send(&state, with("Bearer s3cret")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        send(&state, with("bearer s3cret")).await.status,
        StatusCode::OK
    );
    for path in ["/health", "/live", "/ready"] {
        assert_eq!(get(&state, path).await.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn limits_give_413_422_and_429() {
    let (state, _) = tiny_state(ServerConfig {
        payload_limit: 1000,
        max_client_batch_size: 3,
        max_queued_pairs: 5,
        ..ServerConfig::default()
    });
    let big = serde_json::json!({"query": "q", "texts": ["x".repeat(2000)]}).to_string();
    let msg = post(&state, "/rerank", big)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert!(msg.contains("1000"), "{msg}");

    let msg = post(
        &state,
        "/rerank",
        r#"{"query": "q", "texts": ["a", "b", "c", "d"]}"#,
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert!(msg.contains('4') && msg.contains('3'), "{msg}");
    post(
        &state,
        "/v1/rerank",
        r#"{"query": "q", "documents": ["a"], "top_n": 0}"#,
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");

    // Three of five pairs are taken: a 3-pair request is over the limit.
    let held = state.scheduler().try_reserve(3).unwrap();
    let a = post(
        &state,
        "/rerank",
        r#"{"query": "q", "texts": ["a", "b", "c"]}"#,
    )
    .await;
    a.error(StatusCode::TOO_MANY_REQUESTS, "overloaded");
    assert_eq!(a.headers[header::RETRY_AFTER], "1");
    let a = post(&state, "/rerank", r#"{"query": "q", "texts": ["a", "b"]}"#).await;
    assert_eq!(a.status, StatusCode::OK);
    drop(held);
    let a = post(
        &state,
        "/rerank",
        r#"{"query": "q", "texts": ["a", "b", "c"]}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(state.scheduler().reserved(), 0, "permits come back");
}

#[tokio::test]
async fn too_many_requests_at_once_is_429() {
    let rr = tiny(RerankerOptions::default());
    let (gated, mut gate) = Gated::new(rr);
    let state = state_with_backend(
        gated,
        ServerConfig {
            max_concurrent_requests: 1,
            ..ServerConfig::default()
        },
    );
    let body = r#"{"query": "q", "texts": ["a"]}"#;
    let first = tokio::spawn({
        let state = state.clone();
        async move { post(&state, "/rerank", body).await }
    });
    gate.entered.recv().await.unwrap(); // the first request holds its slot
    let a = post(
        &state,
        "/v1/rerank",
        r#"{"query": "q", "documents": ["a"]}"#,
    )
    .await;
    a.error(StatusCode::TOO_MANY_REQUESTS, "overloaded");
    assert!(a.headers.contains_key(header::RETRY_AFTER));
    gate.go.send(()).unwrap();
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn a_failing_model_is_500_on_rerank_and_503_on_health() {
    let state = state_with_backend(Arc::new(Failing), ServerConfig::default());
    let msg = post(&state, "/rerank", r#"{"query": "q", "texts": ["a"]}"#)
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, "backend");
    assert!(msg.contains("synthetic failure"), "{msg}");
    get(&state, "/health")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
}

#[tokio::test]
async fn a_panic_fails_only_its_batch_and_the_server_keeps_serving() {
    let rr = tiny(RerankerOptions::default());
    let backend = Arc::new(PanicOnce {
        inner: rr.clone(),
        armed: AtomicBool::new(false),
    });
    let state = state_with_backend(backend.clone(), ServerConfig::default());
    backend.arm();
    let msg = post(&state, "/rerank", r#"{"query": "q", "texts": ["a", "b"]}"#)
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, "backend");
    // The panic's own text goes to the log, never to the client.
    assert!(!msg.contains("synthetic panic"), "{msg}");
    assert!(msg.contains("panicked"), "{msg}");
    let texts = texts();
    let a = post(
        &state,
        "/rerank",
        serde_json::json!({"query": QUERY, "texts": texts}).to_string(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let got = tei_scores(&a.json(), texts.len());
    assert_close(
        &got,
        &library_scores(&rr, QUERY, &texts),
        1e-5,
        "after a panic",
    );
    assert_eq!(get(&state, "/health").await.status, StatusCode::OK);
    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("rerank_batch_failures_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn draining_is_503_for_new_work_and_not_ready_but_live() {
    let (state, _) = tiny_state(ServerConfig::default());
    assert_eq!(get(&state, "/ready").await.status, StatusCode::OK);
    state.begin_drain();
    let msg = post(&state, "/rerank", r#"{"query": "q", "texts": ["a"]}"#)
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
    assert!(msg.contains("shutting down"), "{msg}");
    for route in ["/ready", "/health"] {
        let msg = get(&state, route)
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
        assert!(msg.contains("shutting down"), "{route}: {msg}");
    }
    // Still alive: a liveness probe must not restart a draining server.
    assert_eq!(get(&state, "/live").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_stopped_scheduler_is_503_everywhere() {
    let (state, _) = tiny_state(ServerConfig::default());
    state.scheduler().shutdown();
    post(&state, "/rerank", r#"{"query": "q", "texts": ["a"]}"#)
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
    // The model thread exits once its queue is empty.
    while state.scheduler().health().model_thread_alive {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for route in ["/live", "/ready", "/health"] {
        let msg = get(&state, route)
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
        assert!(msg.contains("stopped"), "{route}: {msg}");
    }
}

#[test]
fn inconsistent_limits_are_refused() {
    let rr = tiny(RerankerOptions::default());
    let model = rerank::server::ServedModel::from_reranker("tiny", rr);
    let err = AppState::new(
        model,
        ServerConfig {
            max_client_batch_size: 100,
            max_queued_pairs: 10,
            ..ServerConfig::default()
        },
    )
    .err()
    .expect("refused");
    assert!(err.to_string().contains("max-queued-pairs"), "{err}");
}

#[tokio::test]
async fn int8_and_bf16_models_serve_their_own_scores_and_say_so_in_info() {
    for dtype in [rerank::Dtype::Int8, rerank::Dtype::Bf16] {
        let rr = tiny(RerankerOptions {
            dtype: Some(dtype),
            ..RerankerOptions::default()
        });
        let state = AppState::new(
            rerank::server::ServedModel::from_reranker("tiny", rr.clone()),
            ServerConfig::default(),
        )
        .expect("valid state");
        let info = get(&state, "/info").await.json();
        assert_eq!(info["model_dtype"], dtype.to_string());
        let texts = texts();
        let body = serde_json::json!({"query": QUERY, "texts": texts}).to_string();
        let a = post(&state, "/rerank", body).await;
        assert_eq!(a.status, StatusCode::OK);
        let got = tei_scores(&a.json(), texts.len());
        assert_close(&got, &library_scores(&rr, QUERY, &texts), 1e-5, "sigmoid");
    }
}
