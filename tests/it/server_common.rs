//! Helpers shared by the server tests: the tiny fixture model, fake
//! backends, and a minimal HTTP/1 client for tests on a real socket.

#![allow(dead_code)]

use crate::fixtures::fixture_dir;
use std::net::SocketAddr;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use axum::body::Body;
use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{HeaderMap, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rerank::backend::Backend;
use rerank::server::{router, AppState, ServedModel, ServerConfig};
use rerank::{Reranker, RerankerOptions};
use tower::ServiceExt;

pub fn tiny(options: RerankerOptions) -> Arc<Reranker> {
    Arc::new(Reranker::load(fixture_dir(), options).expect("tiny model loads"))
}

/// The tiny model served as is, its start-up probe done (ready).
pub fn tiny_state(config: ServerConfig) -> (AppState, Arc<Reranker>) {
    let rr = tiny(RerankerOptions::default());
    let state =
        AppState::new(ServedModel::from_reranker("tiny", rr.clone()), config).expect("valid state");
    state.check_model().expect("the tiny model computes");
    (state, rr)
}

/// The tiny model's tokenizer in front of another backend.
pub fn state_with_backend(backend: Arc<dyn Backend>, config: ServerConfig) -> AppState {
    let rr = tiny(RerankerOptions::default());
    let model = ServedModel {
        backend,
        ..ServedModel::from_reranker("tiny", rr)
    };
    AppState::new(model, config).expect("valid state")
}

/// Always fails.
pub struct Failing;

impl Backend for Failing {
    fn predict(&self, _: &[&[u32]]) -> rerank::Result<Vec<f32>> {
        Err(rerank::Error::InvalidOption("synthetic failure".into()))
    }
}

/// Panics on the first forward pass after [`PanicOnce::arm`], else runs the model.
pub struct PanicOnce {
    pub inner: Arc<Reranker>,
    pub armed: AtomicBool,
}

impl PanicOnce {
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }
}

impl Backend for PanicOnce {
    fn predict(&self, pairs: &[&[u32]]) -> rerank::Result<Vec<f32>> {
        if self.armed.swap(false, Ordering::SeqCst) {
            panic!("synthetic panic in a forward pass");
        }
        self.inner.forward(pairs)
    }
}

/// Runs the model, but each forward pass first reports itself and then
/// waits for a go: a model as slow as the test wants.
pub struct Gated {
    pub inner: Arc<Reranker>,
    entered: tokio::sync::mpsc::UnboundedSender<usize>,
    go: Mutex<mpsc::Receiver<()>>,
    /// Every pair the model computed.
    pub seen: Mutex<Vec<Vec<u32>>>,
}

/// The test's side of a [`Gated`] backend.
pub struct Gate {
    pub entered: tokio::sync::mpsc::UnboundedReceiver<usize>,
    pub go: mpsc::Sender<()>,
}

impl Gated {
    pub fn new(inner: Arc<Reranker>) -> (Arc<Self>, Gate) {
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let (go, go_rx) = mpsc::channel();
        let gated = Arc::new(Self {
            inner,
            entered: entered_tx,
            go: Mutex::new(go_rx),
            seen: Mutex::new(Vec::new()),
        });
        (gated, Gate { entered, go })
    }
}

impl Backend for Gated {
    fn predict(&self, pairs: &[&[u32]]) -> rerank::Result<Vec<f32>> {
        let _ = self.entered.send(pairs.len());
        // A closed gate (test over) lets everything through.
        let _ = self.go.lock().unwrap().recv();
        self.seen
            .lock()
            .unwrap()
            .extend(pairs.iter().map(|p| p.to_vec()));
        self.inner.forward(pairs)
    }
}

/// A response read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One request on a fresh connection.
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: Option<&str>) -> Reply {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.unwrap_or("").to_string())))
        .expect("request");
    let response = sender.send_request(req).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

/// Scores by index from a `/rerank` answer, checking it is sorted best first
/// and names every index once.
pub fn tei_scores(answer: &serde_json::Value, n: usize) -> Vec<f32> {
    let list = answer.as_array().expect("a list");
    assert_eq!(list.len(), n, "one result per text: {answer}");
    let mut scores = vec![f32::NAN; n];
    let mut previous = f32::INFINITY;
    for item in list {
        let index = item["index"].as_u64().expect("index") as usize;
        let score = item["score"].as_f64().expect("score") as f32;
        assert!(score <= previous, "not sorted best first: {answer}");
        previous = score;
        assert!(scores[index].is_nan(), "index {index} twice");
        scores[index] = score;
    }
    scores
}

/// Asserts two score lists agree within `tol`.
pub fn assert_close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}: text {i}: server {g}, library {w}"
        );
    }
}

/// One request through the router in process (tower `oneshot`, no socket).
pub struct Answer {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the one error shape and returns the message.
    pub fn error(&self, status: StatusCode, error_type: &str) -> String {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        let j = self.json();
        assert_eq!(j["error_type"], error_type, "{j}");
        assert_eq!(
            j.as_object().unwrap().len(),
            3,
            "only error, error_type and detail: {j}"
        );
        let message = j["error"].as_str().expect("error message").to_string();
        // FastAPI's `detail`: the message, or on 422 the list of one {loc, msg, type}.
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            assert_eq!(
                j["detail"],
                serde_json::json!([{"loc": ["body"], "msg": message, "type": error_type}]),
                "{j}"
            );
        } else {
            assert_eq!(j["detail"], message, "{j}");
        }
        message
    }
}

pub async fn send(state: &AppState, req: axum::http::Request<Body>) -> Answer {
    let response = router(state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body")
        .to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

pub async fn post(state: &AppState, path: &str, body: impl Into<Body>) -> Answer {
    let req = axum::http::Request::post(path)
        .header(axum::http::header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
    send(state, req).await
}

pub async fn get(state: &AppState, path: &str) -> Answer {
    send(
        state,
        axum::http::Request::get(path).body(Body::empty()).unwrap(),
    )
    .await
}
