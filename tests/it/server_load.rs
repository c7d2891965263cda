//! The service under load, in process with slow or failing fake backends:
//! probes that answer while the model is held, liveness that tells busy from
//! stuck, readiness that follows the model and the queue, probe floods that
//! cost at most one forward pass, and request deadlines.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::server_common::*;
use hyper::StatusCode;
use rerank::backend::Backend;
use rerank::server::{AppState, ServerConfig};
use rerank::RerankerOptions;

/// A bound for "answers at once": a probe that waited for the model would
/// hang on the closed gate instead, so this only turns a hang into a failure.
const AT_ONCE: Duration = Duration::from_secs(30);

async fn probe(state: &AppState, route: &str) -> Answer {
    tokio::time::timeout(AT_ONCE, get(state, route))
        .await
        .unwrap_or_else(|_| panic!("{route} waited for the model"))
}

/// Polls `route` until it answers 200, up to about a minute.
async fn until_ok(state: &AppState, route: &str) {
    for _ in 0..6000 {
        if get(state, route).await.status == StatusCode::OK {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{route} never answered 200");
}

/// A [`Gated`] state whose start-up probe has gone through the gate.
async fn gated_state(config: ServerConfig) -> (AppState, Arc<Gated>, Gate) {
    let (gated, mut gate) = Gated::new(tiny(RerankerOptions::default()));
    let state = state_with_backend(gated.clone(), config);
    let s = state.clone();
    let check = tokio::task::spawn_blocking(move || s.check_model());
    gate.entered.recv().await.unwrap();
    gate.go.send(()).unwrap();
    check.await.unwrap().expect("the start-up probe succeeds");
    gated.seen.lock().unwrap().clear();
    (state, gated, gate)
}

fn spawn_post(state: &AppState, body: &str) -> tokio::task::JoinHandle<Answer> {
    let (state, body) = (state.clone(), body.to_string());
    tokio::spawn(async move { post(&state, "/rerank", body).await })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_answer_at_once_while_a_pass_holds_the_model() {
    let (state, _, mut gate) = gated_state(ServerConfig::default()).await;
    let a = spawn_post(&state, r#"{"query": "q", "texts": ["a", "b"]}"#);
    gate.entered.recv().await.unwrap(); // the model is held
    for route in ["/live", "/ready", "/health"] {
        let reply = probe(&state, route).await;
        assert_eq!(reply.status, StatusCode::OK, "{route}");
        let j = reply.json();
        assert_eq!(j["status"], "ok");
        assert_eq!(j["model_thread"], "busy", "{route}: {j}");
        assert!(j["pass_running_ms"].is_u64(), "{j}");
    }
    gate.go.send(()).unwrap();
    assert_eq!(a.await.unwrap().status, StatusCode::OK);
    assert_eq!(probe(&state, "/live").await.json()["model_thread"], "idle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pass_running_past_the_liveness_timeout_fails_live_until_it_ends() {
    let (state, _, mut gate) = gated_state(ServerConfig {
        liveness_timeout: Duration::from_millis(50),
        ..ServerConfig::default()
    })
    .await;
    let a = spawn_post(&state, r#"{"query": "q", "texts": ["a"]}"#);
    gate.entered.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let msg = probe(&state, "/live")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
    assert!(
        msg.contains("no progress") && msg.contains("--liveness-timeout"),
        "{msg}"
    );
    probe(&state, "/ready")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
    gate.go.send(()).unwrap();
    assert_eq!(a.await.unwrap().status, StatusCode::OK);
    assert_eq!(probe(&state, "/live").await.status, StatusCode::OK);
}

/// Runs the model, or fails while `failing` is set; counts its passes.
struct Flaky {
    inner: Arc<rerank::Reranker>,
    failing: AtomicBool,
    passes: AtomicUsize,
}

impl Backend for Flaky {
    fn predict(&self, pairs: &[&[u32]]) -> rerank::Result<Vec<f32>> {
        self.passes.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(rerank::Error::InvalidOption("synthetic failure".into()));
        }
        self.inner.forward(pairs)
    }
}

fn flaky() -> Arc<Flaky> {
    Arc::new(Flaky {
        inner: tiny(RerankerOptions::default()),
        failing: AtomicBool::new(false),
        passes: AtomicUsize::new(0),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_last_pass_and_a_background_probe_restores_it() {
    let backend = flaky();
    let state = state_with_backend(
        backend.clone(),
        ServerConfig {
            probe_interval: Duration::ZERO,
            ..ServerConfig::default()
        },
    );
    state.check_model().unwrap();
    assert_eq!(probe(&state, "/ready").await.status, StatusCode::OK);
    backend.failing.store(true, Ordering::SeqCst);
    post(&state, "/rerank", r#"{"query": "q", "texts": ["a"]}"#)
        .await
        .error(StatusCode::INTERNAL_SERVER_ERROR, "backend");
    for route in ["/ready", "/health"] {
        let msg = probe(&state, route)
            .await
            .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
        assert!(msg.contains("last forward pass failed"), "{route}: {msg}");
    }
    // Not a reason to restart the process.
    assert_eq!(probe(&state, "/live").await.status, StatusCode::OK);
    // The probes' background pass retries, and fails while the model does.
    let failed_probe = "rerank_probe_passes_total{result=\"failed\"}";
    for _ in 0..6000 {
        let _ = get(&state, "/ready").await;
        let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
        if metrics.contains(failed_probe) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    backend.failing.store(false, Ordering::SeqCst);
    // No request comes: the probes' own forward pass finds the model well.
    until_ok(&state, "/ready").await;
    let metrics = String::from_utf8(get(&state, "/metrics").await.body).unwrap();
    for needle in [
        "rerank_probe_passes_total{result=\"ok\"}",
        failed_probe,
        "rerank_probes_total{probe=\"ready\",result=\"failed\"}",
        "rerank_probes_total{probe=\"live\",result=\"ok\"}",
    ] {
        assert!(metrics.contains(needle), "no {needle}:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_flood_costs_at_most_one_forward_pass() {
    // Recently successful: no probe computes anything.
    let backend = flaky();
    let state = state_with_backend(backend.clone(), ServerConfig::default());
    state.check_model().unwrap();
    let flood = |state: &AppState| {
        let tasks: Vec<_> = (0..300)
            .map(|i| {
                let s = state.clone();
                let route = ["/health", "/live", "/ready"][i % 3];
                tokio::spawn(async move { get(&s, route).await.status })
            })
            .collect();
        async move {
            let mut statuses = Vec::new();
            for t in tasks {
                statuses.push(t.await.unwrap());
            }
            statuses
        }
    };
    let statuses = flood(&state).await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    assert_eq!(
        backend.passes.load(Ordering::SeqCst),
        1,
        "only the start-up probe"
    );

    // Never probed: the flood queues one background pass, not 200.
    let backend = flaky();
    let state = state_with_backend(
        backend.clone(),
        ServerConfig {
            probe_interval: Duration::from_secs(3600),
            ..ServerConfig::default()
        },
    );
    let msg = probe(&state, "/ready")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
    assert!(msg.contains("starting"), "{msg}");
    flood(&state).await;
    until_ok(&state, "/ready").await;
    flood(&state).await;
    assert_eq!(backend.passes.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_fails_over_the_queue_threshold_while_health_stays_ok() {
    let (state, _, mut gate) = gated_state(ServerConfig {
        ready_max_queued_pairs: Some(3),
        ..ServerConfig::default()
    })
    .await;
    let a = spawn_post(&state, r#"{"query": "q", "texts": ["a"]}"#);
    gate.entered.recv().await.unwrap();
    let b = spawn_post(
        &state,
        r#"{"query": "q", "texts": ["1", "2", "3", "4", "5"]}"#,
    );
    while state.scheduler().queue_size() < 5 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let msg = probe(&state, "/ready")
        .await
        .error(StatusCode::SERVICE_UNAVAILABLE, "unhealthy");
    assert!(
        msg.contains("6 pairs") && msg.contains("--ready-max-queued-pairs 3"),
        "{msg}"
    );
    assert_eq!(probe(&state, "/health").await.status, StatusCode::OK);
    drop(gate); // every pass goes through
    assert_eq!(a.await.unwrap().status, StatusCode::OK);
    assert_eq!(b.await.unwrap().status, StatusCode::OK);
    assert_eq!(probe(&state, "/ready").await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_504_and_its_pairs_are_never_computed() {
    let (state, gated, mut gate) = gated_state(ServerConfig {
        request_timeout: Some(Duration::from_millis(200)),
        ..ServerConfig::default()
    })
    .await;
    let a = spawn_post(&state, r#"{"query": "q", "texts": ["a"]}"#);
    gate.entered.recv().await.unwrap();
    let b = post(
        &state,
        "/rerank",
        r#"{"query": "q", "texts": ["late 1", "late 2"]}"#,
    )
    .await;
    let msg = b.error(StatusCode::GATEWAY_TIMEOUT, "timeout");
    assert!(msg.contains("--request-timeout"), "{msg}");
    assert_eq!(state.scheduler().queue_size(), 0, "B's pairs were dropped");
    // A is stuck in its pass past the deadline too.
    a.await
        .unwrap()
        .error(StatusCode::GATEWAY_TIMEOUT, "timeout");
    drop(gate);
    let c = post(&state, "/rerank", r#"{"query": "q", "texts": ["c"]}"#).await;
    assert_eq!(c.status, StatusCode::OK);
    let seen = gated.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "A's pair and C's, never B's: {seen:?}");
    assert_eq!(state.scheduler().reserved(), 0);
}
