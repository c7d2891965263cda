//! The score cache in the server: cached pairs skip the queue (the model
//! never sees them again), answers keep their exact scores, and the metrics
//! and `/info` count it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::server_common::*;
use axum::http::StatusCode;
use rerank::backend::Backend;
use rerank::server::{AppState, ServedModel, ServerConfig};
use rerank::{Reranker, RerankerOptions};

/// Runs the model, counting the pairs it is given.
struct Counting {
    inner: Arc<Reranker>,
    pairs: AtomicUsize,
}

impl Backend for Counting {
    fn predict(&self, pairs: &[&[u32]]) -> rerank::Result<Vec<f32>> {
        self.pairs.fetch_add(pairs.len(), Ordering::SeqCst);
        self.inner.forward(pairs)
    }
}

fn cached_state(cache_size: usize) -> (AppState, Arc<Counting>) {
    let rr = tiny(RerankerOptions {
        cache_size,
        ..RerankerOptions::default()
    });
    let counting = Arc::new(Counting {
        inner: rr.clone(),
        pairs: AtomicUsize::new(0),
    });
    let model = ServedModel {
        backend: counting.clone(),
        ..ServedModel::from_reranker("tiny", rr)
    };
    let state = AppState::new(model, ServerConfig::default()).expect("valid state");
    state.check_model().expect("computes");
    (state, counting)
}

async fn cohere(state: &AppState, docs: &[&str]) -> (Vec<(u64, String)>, String) {
    // Raw logits: what the cache holds, unsquashed by the sigmoid.
    let body =
        serde_json::json!({"query": "中国的首都是哪里？", "documents": docs, "raw_scores": true})
            .to_string();
    let a = post(state, "/v1/rerank", body).await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let tokens = a.headers["x-compute-tokens"].to_str().unwrap().to_string();
    // The scores as the JSON carries them: equal text means equal bits.
    let results = a.json()["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["relevance_score"].to_string(),
            )
        })
        .collect();
    (results, tokens)
}

#[tokio::test]
async fn cached_pairs_skip_the_model_and_keep_their_scores() {
    let (state, counting) = cached_state(64);
    let (uncached, _) = cached_state(0);
    let docs = ["北京是中国的政治中心和首都。", "首都机场很大。", "hi"];
    let before = counting.pairs.load(Ordering::SeqCst);
    let (first, tokens) = cohere(&state, &docs).await;
    assert_eq!(counting.pairs.load(Ordering::SeqCst) - before, 3);
    let (second, tokens_again) = cohere(&state, &docs).await;
    assert_eq!(
        counting.pairs.load(Ordering::SeqCst) - before,
        3,
        "the second request reached the model"
    );
    assert_eq!(second, first, "cached scores differ from the computed ones");
    assert_eq!(
        tokens_again, tokens,
        "x-compute-tokens counts cached pairs too"
    );
    assert_eq!(
        cohere(&uncached, &docs).await.0,
        first,
        "the cache changed a score"
    );
    // One new passage among cached ones: only it is computed.
    let mixed = ["hi", "上海是经济中心。", "首都机场很大。"];
    let (got, _) = cohere(&state, &mixed).await;
    assert_eq!(counting.pairs.load(Ordering::SeqCst) - before, 4);
    assert_eq!(got, cohere(&uncached, &mixed).await.0);
    // The TEI route shares the cache (same pairs, same scope).
    let body = serde_json::json!({"query": "中国的首都是哪里？", "texts": docs}).to_string();
    assert_eq!(post(&state, "/rerank", body).await.status, StatusCode::OK);
    assert_eq!(counting.pairs.load(Ordering::SeqCst) - before, 4);

    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    for needle in [
        "rerank_cache_hits_total 8",
        "rerank_cache_misses_total 4",
        "rerank_cache_evictions_total 0",
        "rerank_cache_entries 4",
        &format!("rerank_cache_bytes {}", 4 * rerank::cache::ENTRY_BYTES),
    ] {
        assert!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    // Rendering again adds nothing twice.
    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    assert!(metrics.contains("rerank_cache_hits_total 8"), "{metrics}");
    let info = get(&state, "/info").await.json();
    assert_eq!(
        info["score_cache"],
        serde_json::json!({"capacity": 64, "entries": 4, "bytes": 4 * rerank::cache::ENTRY_BYTES,
            "hits": 8, "misses": 4, "evictions": 0})
    );
    assert_eq!(
        get(&uncached, "/info").await.json()["score_cache"],
        serde_json::Value::Null
    );
}

#[tokio::test]
async fn a_full_cache_evicts_and_a_truncation_side_is_its_own_entry() {
    let (state, counting) = cached_state(2);
    let before = counting.pairs.load(Ordering::SeqCst);
    cohere(&state, &["a", "b", "c"]).await;
    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    assert!(
        metrics.contains("rerank_cache_evictions_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("rerank_cache_entries 2"), "{metrics}");
    // Left truncation of a pair that needs none: other options, another entry.
    let body = |dir: &str| {
        serde_json::json!({"query": "中国的首都是哪里？", "texts": ["c"], "truncation_direction": dir}).to_string()
    };
    post(&state, "/rerank", body("Right")).await;
    assert_eq!(
        counting.pairs.load(Ordering::SeqCst) - before,
        3,
        "c is cached"
    );
    post(&state, "/rerank", body("Left")).await;
    assert_eq!(counting.pairs.load(Ordering::SeqCst) - before, 4);
}
