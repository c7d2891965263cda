//! The exact bodies real rerank clients send, and the answer fields they
//! parse. Each body is copied from the client's own source (package and
//! version named; examples/clients/CALL-SHAPES.md has the file and line);
//! examples/clients/run.sh runs the real packages against a real server.

use crate::server_common::*;
use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use rerank::server::{AppState, ServedModel, ServerConfig};
use rerank::RerankerOptions;
use serde_json::{json, Value};

const QUERY: &str = "中国的首都是哪里？";
const DOCS: [&str; 4] = [
    "首都机场很大。",
    "北京是中国的政治中心和首都。",
    "hi",
    "what is panda? The giant panda is a bear.",
];

/// The library's scores of `DOCS` (sigmoid, or raw logits).
fn library(raw: bool) -> Vec<f32> {
    let rr = tiny(RerankerOptions {
        raw_scores: raw,
        ..RerankerOptions::default()
    });
    rr.score(&DOCS.iter().map(|d| (QUERY, *d)).collect::<Vec<_>>())
        .unwrap()
}

/// Tokens the model is fed for `DOCS` (special tokens included).
fn tokens() -> usize {
    let rr = tiny(RerankerOptions::default());
    let docs: Vec<String> = DOCS.iter().map(|d| d.to_string()).collect();
    rr.encoder()
        .encode_passages(QUERY, &docs, rr.truncation())
        .unwrap()
        .iter()
        .map(|p| p.ids.len())
        .sum()
}

/// The best `n` indices by `scores`, best first.
fn best(scores: &[f32], n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(n);
    order
}

async fn post_with(state: &AppState, path: &str, auth: Option<&str>, body: &Value) -> Answer {
    let mut req = Request::post(path).header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    send(state, req.body(Body::from(body.to_string())).unwrap()).await
}

async fn get_with(state: &AppState, path: &str, auth: Option<&str>) -> Answer {
    let mut req = Request::get(path);
    if let Some(auth) = auth {
        req = req.header(header::AUTHORIZATION, auth);
    }
    send(state, req.body(Body::empty()).unwrap()).await
}

/// Checks a Cohere-schema answer the way infinity_client 0.0.78 parses it
/// (`ReRankResult.from_dict`: `results`, `model`, `usage.prompt_tokens` and
/// `usage.total_tokens` are KeyError-required, `object` must be "rerank")
/// and litellm 1.110.2 validates it (`index` int, `relevance_score` float),
/// and that it holds the library's best `n` with their scores. Returns the
/// results.
fn check_cohere_answer(a: &Answer, scores: &[f32], n: usize) -> Vec<Value> {
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let j = a.json();
    assert_eq!(j["object"], "rerank", "{j}");
    assert!(j["created"].as_u64().unwrap() > 1_700_000_000, "{j}");
    assert_eq!(j["model"], "tiny", "{j}");
    assert!(!j["id"].as_str().unwrap().is_empty());
    assert_eq!(j["usage"]["prompt_tokens"], tokens(), "{j}");
    assert_eq!(j["usage"]["total_tokens"], tokens(), "{j}");
    let results = j["results"].as_array().unwrap().clone();
    let got: Vec<usize> = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got, best(scores, n), "{j}");
    for r in &results {
        let i = r["index"].as_u64().unwrap() as usize;
        let s = r["relevance_score"].as_f64().unwrap() as f32;
        assert!((s - scores[i]).abs() <= 1e-5, "{j}");
    }
    results
}

#[tokio::test]
async fn cohere_bodies_on_rerank_get_cohere_answers_without_documents() {
    let (state, _) = tiny_state(ServerConfig::default());
    let sigmoid = library(false);
    let bodies = [
        // litellm 1.110.2 `infinity/` and `hosted_vllm/` (the Cohere v1
        // transform, `return_documents` defaults to true); litellm sends
        // `Bearer None` / `Bearer fake-api-key` when it has no key.
        (
            "litellm infinity/, hosted_vllm/",
            Some("Bearer None"),
            json!({"model": "BAAI/bge-reranker-v2-m3", "query": QUERY, "top_n": 2, "documents": DOCS, "return_documents": true}),
            2,
        ),
        // infinity_client 0.0.78 `RerankInput.to_dict()` (also LangChain's
        // InfinityRerank, langchain-community 0.4.2, which sends no top_n).
        (
            "infinity_client",
            None,
            json!({"query": QUERY, "documents": DOCS, "return_documents": false, "raw_scores": false, "model": "default/not-specified"}),
            4,
        ),
        // RAGFlow's OpenAI-API-compatible provider and Dify's
        // openai_api_compatible 0.0.63 with a base URL without /v1.
        (
            "RAGFlow / Dify OpenAI-compatible",
            Some("Bearer "),
            json!({"model": "m", "query": QUERY, "documents": DOCS, "top_n": 3}),
            3,
        ),
        // cohere 5.6.2 (RAGFlow's pin, `urljoin(base + "/", "rerank")`).
        (
            "cohere 5.6.2",
            Some("Bearer k"),
            json!({"model": "m", "query": QUERY, "documents": DOCS, "top_n": 2, "return_documents": false}),
            2,
        ),
    ];
    for (client, auth, body, n) in bodies {
        let a = post_with(&state, "/rerank", auth, &body).await;
        let results = check_cohere_answer(&a, &sigmoid, n);
        // litellm's infinity/ wants a string `document`, hosted_vllm/ an
        // object: on /rerank there is none, which both accept.
        for r in &results {
            assert!(r.get("document").is_none(), "{client}: {r}");
        }
        assert!(a.headers.contains_key("x-compute-tokens"), "{client}");
    }

    // infinity_client's raw_scores: relevance_score is the logit.
    let body = json!({"query": QUERY, "documents": DOCS, "return_documents": false, "raw_scores": true, "model": "default/not-specified", "top_n": 2});
    check_cohere_answer(
        &post(&state, "/rerank", body.to_string()).await,
        &library(true),
        2,
    );
}

#[tokio::test]
async fn rerank_tells_the_two_schemas_apart_by_their_fields() {
    let (state, _) = tiny_state(ServerConfig::default());
    let msg = post(&state, "/rerank", json!({"query": "q"}).to_string())
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(
        msg.contains("`texts`") && msg.contains("`documents`"),
        "{msg}"
    );
    let msg = post(
        &state,
        "/rerank",
        json!({"query": "q", "texts": ["a"], "documents": ["a"]}).to_string(),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(msg.contains("both"), "{msg}");
    post(&state, "/rerank", "[1, 2]")
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    // A wrong field type names the field, in either schema.
    let msg = post(
        &state,
        "/rerank",
        json!({"query": "q", "documents": ["a"], "top_n": "2"}).to_string(),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(msg.contains("`top_n`"), "{msg}");
    let msg = post(
        &state,
        "/rerank",
        json!({"query": "q", "texts": ["a", 3]}).to_string(),
    )
    .await
    .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(msg.contains("`texts[1]`"), "{msg}");
    // Empty lists stay "empty" in both.
    for body in [
        json!({"query": "q", "texts": []}),
        json!({"query": "q", "documents": []}),
    ] {
        post(&state, "/rerank", body.to_string())
            .await
            .error(StatusCode::BAD_REQUEST, "empty");
    }
}

#[tokio::test]
async fn tei_bodies_with_top_n_are_cut_to_it() {
    let (state, _) = tiny_state(ServerConfig::default());
    let sigmoid = library(false);
    // litellm 1.110.2 `huggingface/` (TEI) provider: top_n is sent to TEI.
    let body = json!({"raw_scores": false, "truncation_direction": "Right", "query": QUERY, "top_n": 2, "texts": DOCS, "return_text": true});
    let j = post(&state, "/rerank", body.to_string()).await.json();
    let list = j.as_array().unwrap();
    let got: Vec<usize> = list
        .iter()
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got, best(&sigmoid, 2), "{j}");
    for r in list {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["text"], DOCS[i]);
        assert!((r["score"].as_f64().unwrap() as f32 - sigmoid[i]).abs() <= 1e-5);
    }
    // rerankers 0.10.0 APIRanker("text-embeddings-inference"): top_n = len(docs).
    let body = json!({"model": "BAAI/bge-reranker-base", "query": QUERY, "texts": DOCS, "top_n": DOCS.len(), "return_text": true});
    let j = post(&state, "/rerank", body.to_string()).await.json();
    assert_eq!(tei_scores(&j, DOCS.len()).len(), DOCS.len());
    let msg = post(
        &state,
        "/rerank",
        json!({"query": "q", "texts": ["a"], "top_n": 0}).to_string(),
    )
    .await
    .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    assert!(msg.contains("top_n"), "{msg}");
}

#[tokio::test]
async fn info_has_every_tei_field_with_tei_types() {
    let (state, _) = tiny_state(ServerConfig::default());
    let info = get(&state, "/info").await.json();
    // Dify's huggingface_tei 0.1.10 `get_tei_extra_parameter`: `model_type`
    // must be an object whose first key is "reranker".
    assert_eq!(
        info["model_type"],
        json!({"reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}})
    );
    // text-embeddings-inference's `Info` (router/src/lib.rs): names and types.
    type Check = fn(&Value) -> bool;
    let string: Check = |v| v.is_string();
    let int: Check = |v| v.is_u64();
    let nullable_string: Check = |v| v.is_null() || v.is_string();
    let nullable_int: Check = |v| v.is_null() || v.is_u64();
    let boolean: Check = |v| v.is_boolean();
    let fields = [
        ("model_id", string),
        ("model_sha", nullable_string),
        ("model_dtype", string),
        ("served_model_name", string),
        ("max_concurrent_requests", int),
        ("max_input_length", int),
        ("max_batch_tokens", int),
        ("max_batch_requests", nullable_int),
        ("max_client_batch_size", int),
        ("auto_truncate", boolean),
        ("tokenization_workers", int),
        ("version", string),
        ("sha", nullable_string),
        ("docker_label", nullable_string),
    ];
    for (field, ok) in fields {
        assert!(
            info.get(field).is_some_and(ok),
            "{field}: {:?}",
            info.get(field)
        );
    }
    assert_eq!(info["served_model_name"], "tiny");
    assert_eq!(info["max_input_length"], 128);
}

#[tokio::test]
async fn booleans_may_be_strings_and_anything_else_names_the_field() {
    let (state, _) = tiny_state(ServerConfig::default());
    let sigmoid = library(false);
    // RAGFlow's Xinference provider (rag/llm/rerank_model.py XInferenceRerank).
    let body = json!({"model": "tiny", "query": QUERY, "return_documents": "true", "return_len": "true", "documents": DOCS});
    let results = check_cohere_answer(
        &post(&state, "/v1/rerank", body.to_string()).await,
        &sigmoid,
        4,
    );
    for r in &results {
        let i = r["index"].as_u64().unwrap() as usize;
        assert_eq!(r["document"]["text"], DOCS[i], "{r}");
    }
    let body = json!({"query": QUERY, "return_documents": "False", "documents": DOCS});
    let results = check_cohere_answer(
        &post(&state, "/v1/rerank", body.to_string()).await,
        &sigmoid,
        4,
    );
    assert!(results.iter().all(|r| r.get("document").is_none()));
    // TEI's booleans too.
    let body = json!({"query": QUERY, "texts": DOCS, "raw_scores": "true", "return_text": "false"});
    let j = post(&state, "/rerank", body.to_string()).await.json();
    assert_close(
        &tei_scores(&j, 4),
        &library(true),
        1e-5,
        "raw_scores \"true\"",
    );
    assert!(j[0].get("text").is_none());
    let body = json!({"query": QUERY, "texts": ["北京 ".repeat(200)], "truncate": "false"});
    post(&state, "/rerank", body.to_string())
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    for (path, body) in [
        (
            "/v1/rerank",
            json!({"query": "q", "documents": ["a"], "return_documents": "yes"}),
        ),
        (
            "/rerank",
            json!({"query": "q", "texts": ["a"], "raw_scores": 1}),
        ),
    ] {
        let msg = post(&state, path, body.to_string())
            .await
            .error(StatusCode::BAD_REQUEST, "bad_request");
        let field = if path == "/rerank" {
            "`raw_scores`"
        } else {
            "`return_documents`"
        };
        assert!(msg.contains(field) && msg.contains("boolean"), "{msg}");
    }
}

#[tokio::test]
async fn xinference_clients_find_the_model_and_rerank() {
    // Served under a hub id with a slash: xinference-client 4.1.0 puts the
    // uid in the path unquoted (`/v1/models/BAAI/bge-reranker-v2-m3`).
    let rr = tiny(RerankerOptions::default());
    let model = ServedModel {
        model_id: "tests/fixtures/tiny".into(),
        ..ServedModel::from_reranker("BAAI/bge-reranker-v2-m3", rr)
    };
    let state = AppState::new(
        model,
        ServerConfig {
            api_key: Some("k".into()),
            ..ServerConfig::default()
        },
    )
    .unwrap();
    state.check_model().unwrap();

    // `Client(base, api_key)`: GET /v1/cluster/auth with no headers; 200
    // {"auth": true} makes it send the key from then on.
    let a = get_with(&state, "/v1/cluster/auth", None).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"auth": true}));
    // `client.get_model(uid)`: `model_type` picks the handle.
    for uid in ["BAAI/bge-reranker-v2-m3", "tests/fixtures/tiny"] {
        let a = get_with(&state, &format!("/v1/models/{uid}"), Some("Bearer k")).await;
        assert_eq!(a.status, StatusCode::OK, "{uid}");
        let card = a.json();
        assert_eq!(card["model_type"], "rerank");
        assert_eq!(card["model_name"], "BAAI/bge-reranker-v2-m3");
        assert_eq!(card["model_ability"], json!(["rerank"]));
    }
    get_with(&state, "/v1/models/BAAI/bge-reranker-v2-m3", None)
        .await
        .error(StatusCode::UNAUTHORIZED, "unauthorized");
    // A wrong uid: xinference-client shows `detail`.
    let msg = get_with(&state, "/v1/models/bge-reranker-base", Some("Bearer k"))
        .await
        .error(StatusCode::NOT_FOUND, "model_not_found");
    assert!(msg.contains("BAAI/bge-reranker-v2-m3"), "{msg}");

    // `RESTfulRerankModelHandle.rerank` as Dify's xinference 0.0.15 calls it
    // (return_documents=True); nulls and a JSON-string `kwargs` included.
    let body = json!({"model": "BAAI/bge-reranker-v2-m3", "documents": DOCS, "query": QUERY, "top_n": 2, "max_chunks_per_doc": null, "return_documents": true, "return_len": null, "kwargs": "{}"});
    let a = post_with(&state, "/v1/rerank", Some("Bearer k"), &body).await;
    assert_eq!(a.status, StatusCode::OK);
    let j = a.json();
    let sigmoid = library(false);
    let results = j["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    for (r, want) in results.iter().zip(best(&sigmoid, 2)) {
        assert_eq!(r["index"], want);
        // Dify reads results[].document (KeyError if absent).
        assert_eq!(r["document"]["text"], DOCS[want]);
    }
    // The plain client's defaults: return_documents null.
    let body = json!({"model": "BAAI/bge-reranker-v2-m3", "documents": DOCS, "query": QUERY, "top_n": null, "max_chunks_per_doc": null, "return_documents": null, "return_len": null, "kwargs": "{}"});
    let a = post_with(&state, "/v1/rerank", Some("Bearer k"), &body).await;
    assert_eq!(a.json()["results"].as_array().unwrap().len(), 4);

    // Without a server key the cluster says so (and the client sends none).
    let (open, _) = tiny_state(ServerConfig::default());
    assert_eq!(
        get(&open, "/v1/cluster/auth").await.json(),
        json!({"auth": false})
    );
}

#[tokio::test]
async fn openai_style_model_list_names_the_served_model() {
    let (state, _) = tiny_state(ServerConfig::default());
    let j = get(&state, "/v1/models").await.json();
    assert_eq!(j["object"], "list");
    let data = j["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    // langchain-nvidia-ai-endpoints 1.5.0 picks the first `id` whose `root`
    // is absent or equal to it.
    assert_eq!(data[0]["id"], "tiny");
    assert_eq!(data[0]["object"], "model");
    assert!(data[0].get("root").is_none_or(|r| *r == data[0]["id"]));
}

#[tokio::test]
async fn nvidia_ranking_answers_raw_logits_best_first() {
    let (state, _) = tiny_state(ServerConfig::default());
    let logits = library(true);
    // langchain-nvidia-ai-endpoints 1.5.0 `NVIDIARerank` (reranking.py):
    // one request per batch of 32 passages, no top_n.
    let passages: Vec<Value> = DOCS.iter().map(|d| json!({"text": d})).collect();
    let body = json!({"model": "nvidia/nv-rerankqa-mistral-4b-v3", "query": {"text": QUERY}, "passages": passages});
    let a = post(&state, "/v1/ranking", body.to_string()).await;
    assert_eq!(a.status, StatusCode::OK);
    let j = a.json();
    assert_eq!(j.as_object().unwrap().len(), 1, "{j}");
    let rankings = j["rankings"].as_array().unwrap();
    let got: Vec<usize> = rankings
        .iter()
        .map(|r| r["index"].as_u64().unwrap() as usize)
        .collect();
    assert_eq!(got, best(&logits, 4));
    for r in rankings {
        let i = r["index"].as_u64().unwrap() as usize;
        assert!((r["logit"].as_f64().unwrap() as f32 - logits[i]).abs() <= 1e-5);
    }

    // truncate: "NONE" refuses an over-long pair, "END" cuts it.
    let long = json!([{"text": "北京 ".repeat(200)}]);
    let body =
        json!({"model": "m", "query": {"text": QUERY}, "passages": long, "truncate": "NONE"});
    post(&state, "/v1/ranking", body.to_string())
        .await
        .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
    let body = json!({"model": "m", "query": {"text": QUERY}, "passages": long, "truncate": "END"});
    assert_eq!(
        post(&state, "/v1/ranking", body.to_string()).await.status,
        StatusCode::OK
    );
    let body =
        json!({"model": "m", "query": {"text": QUERY}, "passages": long, "truncate": "MIDDLE"});
    let msg = post(&state, "/v1/ranking", body.to_string())
        .await
        .error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(msg.contains("`truncate`"), "{msg}");
    let body = json!({"model": "m", "query": {"text": QUERY}, "passages": []});
    post(&state, "/v1/ranking", body.to_string())
        .await
        .error(StatusCode::BAD_REQUEST, "empty");
}

#[tokio::test]
async fn errors_carry_fastapi_detail_for_fastapi_clients() {
    // `Answer::error` checks `detail` on every error these tests see; here
    // the shapes two clients parse, end to end.
    let (state, _) = tiny_state(ServerConfig {
        max_client_batch_size: 2,
        ..ServerConfig::default()
    });
    // infinity_client 0.0.78 `HTTPValidationError.from_dict` on a 422:
    // `detail` is a list of {loc, msg, type}.
    let body = json!({"query": "q", "documents": ["a", "b", "c"], "return_documents": false, "raw_scores": false, "model": "default/not-specified"});
    let j = post(&state, "/rerank", body.to_string()).await.json();
    let detail = j["detail"].as_array().expect("a list on 422");
    assert!(
        detail[0]["loc"].is_array()
            && detail[0]["msg"].is_string()
            && detail[0]["type"].is_string()
    );
    // xinference-client 4.1.0 `response.json()["detail"]` on any other error.
    let j = post(&state, "/v1/rerank", "{").await.json();
    assert!(
        j["detail"].as_str().unwrap().contains("invalid JSON"),
        "{j}"
    );
}

#[tokio::test]
async fn a_base_url_with_one_v1_too_many_gets_a_hint() {
    let (state, _) = tiny_state(ServerConfig::default());
    // litellm 1.110.2 `cohere/` with api_base http://h/v1, together 3.1.1
    // with base_url http://h/v1.
    for path in ["/v1/v2/rerank", "/v1/v1/rerank"] {
        let msg = post(&state, path, "{}")
            .await
            .error(StatusCode::NOT_FOUND, "not_found");
        assert!(
            msg.contains("base URL") && msg.contains("/v1/rerank"),
            "{path}: {msg}"
        );
    }
}
