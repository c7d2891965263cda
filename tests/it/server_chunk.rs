//! Long documents on the HTTP routes: Cohere's `max_chunks_per_doc` and
//! `max_tokens_per_doc`, and `--long-documents chunk` as the server default,
//! on the PyTorch-golden case of `tests/fixtures/golden_chunk.json`.

use std::path::Path;

use crate::server_common::*;
use axum::http::StatusCode;
use rerank::chunk::{ChunkParams, LongDocuments};
use rerank::server::{AppState, ServedModel, ServerConfig};
use rerank::RerankerOptions;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    query: String,
    max_length: usize,
    chunk_tokens: usize,
    needle: String,
    needle_logit: f32,
    needle_start: usize,
    long_passage: String,
    distractor: String,
    distractor_logit: f32,
    truncated_logit: f32,
}

fn golden() -> Golden {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/golden_chunk.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn state(g: &Golden, long_documents: LongDocuments) -> AppState {
    let rr = tiny(RerankerOptions {
        max_length: Some(g.max_length),
        long_documents,
        chunking: ChunkParams {
            chunk_tokens: Some(g.chunk_tokens),
            overlap: 0,
            max_chunks: 10,
        },
        ..RerankerOptions::default()
    });
    AppState::new(
        ServedModel::from_reranker("tiny", rr),
        ServerConfig::default(),
    )
    .unwrap()
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

#[tokio::test]
async fn cohere_max_chunks_per_doc_scores_the_best_window() {
    let g = golden();
    let state = state(&g, LongDocuments::Truncate);
    let docs = [g.long_passage.as_str(), g.distractor.as_str()];
    for path in ["/v1/rerank", "/v2/rerank", "/rerank"] {
        let plain = serde_json::json!({"query": g.query, "documents": docs});
        let j = post(&state, path, plain.to_string()).await.json();
        let r = &j["results"];
        assert_eq!(
            r[0]["index"], 1,
            "{path}: truncated, the distractor wins: {j}"
        );
        let s = r[1]["relevance_score"].as_f64().unwrap() as f32;
        assert!((s - sigmoid(g.truncated_logit)).abs() < 1e-5, "{path}");
        assert!(r[0].get("window").is_none());

        let chunked =
            serde_json::json!({"query": g.query, "documents": docs, "max_chunks_per_doc": 10});
        let a = post(&state, path, chunked.to_string()).await;
        assert_eq!(a.status, StatusCode::OK);
        let j = a.json();
        let r = &j["results"];
        assert_eq!(
            r[0]["index"], 0,
            "{path}: chunked, the long passage wins: {j}"
        );
        let s = r[0]["relevance_score"].as_f64().unwrap() as f32;
        assert!((s - sigmoid(g.needle_logit)).abs() < 1e-5, "{path}: {s}");
        let s = r[1]["relevance_score"].as_f64().unwrap() as f32;
        assert!(
            (s - sigmoid(g.distractor_logit)).abs() < 1e-5,
            "{path}: {s}"
        );
        let w = &r[0]["window"];
        assert_eq!(w["index"], 3, "{j}");
        assert_eq!(w["count"], 4);
        assert_eq!(w["start"], g.needle_start);
        assert_eq!(w["end"], g.needle_start + g.needle.chars().count());
        assert!(
            r[1].get("window").is_none(),
            "a document that fits is not split"
        );
        // Four windows of the long passage and the distractor: five pairs.
        assert!(j["usage"]["total_tokens"].as_u64().unwrap() > 4 * 40);

        // One window: the first part only, as truncation would see (not the needle).
        let one = serde_json::json!({"query": g.query, "documents": docs, "max_chunks_per_doc": 1});
        let j = post(&state, path, one.to_string()).await.json();
        assert_eq!(j["results"][0]["index"], 1, "{path}: {j}");
    }
}

#[tokio::test]
async fn long_documents_chunk_is_the_server_default_on_every_route() {
    let g = golden();
    let state = state(&g, LongDocuments::Chunk);
    let docs = [g.long_passage.as_str(), g.distractor.as_str()];
    let cohere = serde_json::json!({"query": g.query, "documents": docs});
    let j = post(&state, "/v1/rerank", cohere.to_string()).await.json();
    assert_eq!(j["results"][0]["index"], 0, "{j}");
    let tei = serde_json::json!({"query": g.query, "texts": docs, "raw_scores": true});
    let j = post(&state, "/rerank", tei.to_string()).await.json();
    assert_eq!(j[0]["index"], 0, "{j}");
    assert!((j[0]["score"].as_f64().unwrap() as f32 - g.needle_logit).abs() < 1e-4);
}

#[tokio::test]
async fn cohere_max_tokens_per_doc_cuts_each_document() {
    let g = golden();
    let state = state(&g, LongDocuments::Truncate);
    let rr = tiny(RerankerOptions {
        max_length: Some(g.max_length),
        raw_scores: true,
        ..RerankerOptions::default()
    });
    let enc = rr.encoder();
    let q = enc.text_ids(&g.query).unwrap();
    let p = enc.text_ids(&g.distractor).unwrap();
    let cut = enc.join_ids(&q, &p[..3], rr.truncation());
    let want = sigmoid(rr.logits(&[&cut]).unwrap()[0]);
    let body =
        serde_json::json!({"query": g.query, "documents": [g.distractor], "max_tokens_per_doc": 3});
    let j = post(&state, "/v2/rerank", body.to_string()).await.json();
    let got = j["results"][0]["relevance_score"].as_f64().unwrap() as f32;
    assert!((got - want).abs() < 1e-6, "{got} vs {want}");
    assert_eq!(j["usage"]["total_tokens"], cut.ids.len());
}

#[tokio::test]
async fn zero_chunk_fields_are_422() {
    let g = golden();
    let state = state(&g, LongDocuments::Truncate);
    for field in ["max_chunks_per_doc", "max_tokens_per_doc"] {
        let body = serde_json::json!({"query": "q", "documents": ["d"], field: 0});
        let msg = post(&state, "/v1/rerank", body.to_string())
            .await
            .error(StatusCode::UNPROCESSABLE_ENTITY, "validation");
        assert!(msg.contains(field) && msg.contains("at least 1"), "{msg}");
        let body = serde_json::json!({"query": "q", "documents": ["d"], field: "many"});
        let msg = post(&state, "/v1/rerank", body.to_string())
            .await
            .error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(msg.contains(field), "{msg}");
    }
}
