//! The router and its handlers. Every rerank API shares [`score`]; the
//! handlers only translate their schema.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::api::{
    ClusterAuth, CohereRequest, CohereResponse, CohereResult, DocumentText, Info, ModelCard,
    ModelList, ModelType, NimRanking, NimRequest, NimResponse, NimTruncate, TeiRank, TeiRequest,
    Usage,
};
use super::error::{from_value, ApiError, ApiJson};
use super::{openapi, unix_now, AppState};
use crate::backend::{rank_scores, ScoreTransform};
use crate::chunk::{best_window, ChunkParams, Chunked, LongDocuments, Window};
use crate::tokenize::Side;

/// The whole HTTP API over `state`.
pub fn router(state: AppState) -> Router {
    let protected = Router::new()
        .route("/rerank", post(rerank))
        .route("/v1/rerank", post(cohere_rerank))
        .route("/v2/rerank", post(cohere_rerank))
        .route("/v1/ranking", post(nim_ranking))
        .route("/v1/models", get(list_models))
        .route("/v1/models/{*id}", get(get_model))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    // The page itself is public, like the probes: it holds no data, and a
    // server with --api-key needs it loaded to type the key in.
    let public = if state.config().playground {
        Router::new().route("/", get(super::playground::page))
    } else {
        Router::new()
    };
    public
        .route("/health", get(health))
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/v1/cluster/auth", get(cluster_auth))
        .merge(protected)
        .route_layer(middleware::from_fn_with_state(state.clone(), track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config().payload_limit,
        ))
        .with_state(state)
}

/// Counts every routed request by route and status.
async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let start = Instant::now();
    let response = next.run(req).await;
    state
        .metrics()
        .observe_request(&route, response.status().as_u16(), start.elapsed());
    response
}

/// `Authorization: Bearer <key>` when `--api-key` is set.
async fn require_key(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if let Some(key) = &state.config().api_key {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), key.as_bytes())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn not_found(uri: Uri) -> ApiError {
    let path = uri.path();
    if path.ends_with("/rerank") || path.ends_with("/ranking") {
        // `/v1/v2/rerank` and the like: a client's base URL with one `/v1` too many.
        return ApiError::NotFound(format!(
            "{path} (the rerank routes are /rerank, /v1/rerank, /v2/rerank and /v1/ranking: set the client's base URL to the server root, http://host:port, or to http://host:port/v1 where its documentation adds only `/rerank`)"
        ));
    }
    ApiError::NotFound(path.to_string())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

/// Per-request options both APIs map onto.
struct ScoreOptions {
    truncate: bool,
    side: Side,
    /// Chunk long texts with these windows (`None`: truncate).
    chunking: Option<ChunkParams>,
    /// Cut each text to its first tokens before pairing (Cohere's `max_tokens_per_doc`).
    max_passage_tokens: Option<usize>,
}

impl ScoreOptions {
    /// The server's defaults: `--auto-truncate`, its side and `--long-documents`.
    fn defaults(state: &AppState) -> Self {
        Self {
            truncate: state.config().auto_truncate,
            side: state.0.truncation.side,
            chunking: (state.0.long_documents == LongDocuments::Chunk).then_some(state.0.chunking),
            max_passage_tokens: None,
        }
    }
}

/// Logits of one query against its texts (a chunked text's best window's),
/// with what the headers report.
struct Scores {
    logits: Vec<f32>,
    /// The winning window of each text that chunking split.
    windows: Vec<Option<Window>>,
    texts: Vec<String>,
    tokens: usize,
    characters: usize,
    tokenization: Duration,
    queue: Duration,
    inference: Duration,
    start: Instant,
}

impl Scores {
    /// text-embeddings-inference's timing headers (milliseconds).
    fn headers(&self, compute_type: &str) -> HeaderMap {
        let ms = |d: Duration| HeaderValue::from(d.as_millis() as u64);
        let mut h = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_str(compute_type) {
            h.insert("x-compute-type", v);
        }
        h.insert(
            "x-compute-time",
            ms(self.tokenization + self.queue + self.inference),
        );
        h.insert("x-compute-characters", HeaderValue::from(self.characters));
        h.insert("x-compute-tokens", HeaderValue::from(self.tokens));
        h.insert("x-total-time", ms(self.start.elapsed()));
        h.insert("x-tokenization-time", ms(self.tokenization));
        h.insert("x-queue-time", ms(self.queue));
        h.insert("x-inference-time", ms(self.inference));
        h
    }
}

/// Validates, admits, tokenizes off the runtime and queues one request,
/// under `--request-timeout` when set (dropping the future withdraws the
/// request's queued pairs).
async fn score(
    state: &AppState,
    field: &str,
    query: String,
    texts: Vec<String>,
    opts: ScoreOptions,
) -> Result<Scores, ApiError> {
    let work = score_now(state, field, query, texts, opts);
    match state.config().request_timeout {
        None => work.await,
        Some(limit) => tokio::time::timeout(limit, work).await.map_err(|_| {
            ApiError::Timeout(format!(
                "the request was not answered within {} s (--request-timeout) and was dropped; retry later or send fewer documents",
                limit.as_secs_f32()
            ))
        })?,
    }
}

async fn score_now(
    state: &AppState,
    field: &str,
    query: String,
    texts: Vec<String>,
    opts: ScoreOptions,
) -> Result<Scores, ApiError> {
    let start = Instant::now();
    let inner = &state.0;
    if state.is_draining() {
        return Err(ApiError::Unhealthy(
            "the server is shutting down and takes no new requests; retry on another replica"
                .into(),
        ));
    }
    if texts.is_empty() {
        return Err(ApiError::Empty(format!(
            "`{field}` is empty: send at least one text to rank"
        )));
    }
    let limit = inner.config.max_client_batch_size;
    if texts.len() > limit {
        return Err(ApiError::Validation(format!(
            "too many {field}: {} sent, at most {limit} per request (--max-client-batch-size)",
            texts.len()
        )));
    }
    // Admission before any work: a slot for the request, room for its pairs.
    let _slot = inner.request_slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::Overloaded(format!(
            "overloaded: {} requests are already being handled (--max-concurrent-requests); retry later",
            inner.config.max_concurrent_requests
        ))
    })?;
    let permit = inner.scheduler.try_reserve(texts.len())?;
    inner.metrics.request_pairs.observe(texts.len() as f64);

    let truncation = crate::tokenize::TruncationParams {
        side: opts.side,
        ..inner.truncation
    };
    let tokenizer = inner.tokenizer.clone();
    let characters = query.chars().count() * texts.len()
        + texts.iter().map(|t| t.chars().count()).sum::<usize>();
    let tokenize_start = Instant::now();
    let (chunking, max_passage_tokens) = (opts.chunking, opts.max_passage_tokens);
    let (encoded, texts) = tokio::task::spawn_blocking(move || {
        let encoded = if chunking.is_none() && max_passage_tokens.is_none() {
            tokenizer
                .encode_passages(&query, &texts, &truncation)
                .map(|pairs| {
                    pairs
                        .into_iter()
                        .map(|pair| Chunked {
                            windows: vec![pair],
                            spans: Vec::new(),
                        })
                        .collect::<Vec<_>>()
                })
        } else {
            tokenizer.encode_chunked_passages(
                &query,
                &texts,
                &truncation,
                chunking.as_ref(),
                max_passage_tokens,
            )
        };
        (encoded, texts)
    })
    .await
    .map_err(|e| ApiError::Backend(format!("tokenization failed: {e}")))?;
    let encoded = encoded.map_err(|e| ApiError::Tokenizer(e.to_string()))?;
    let tokenization = tokenize_start.elapsed();
    inner
        .metrics
        .tokenization_seconds
        .observe(tokenization.as_secs_f64());

    if !opts.truncate {
        let truncated = encoded
            .iter()
            .enumerate()
            .find_map(|(i, doc)| doc.windows.iter().find(|p| p.truncated()).map(|p| (i, p)));
        if let Some((i, pair)) = truncated {
            return Err(ApiError::Validation(format!(
                "input is too long: text {i} with the query is {} tokens but the limit is {} tokens per pair (special tokens included); shorten it or send \"truncate\": true",
                pair.untruncated_len, truncation.max_length
            )));
        }
    }
    let mut ids: Vec<Vec<u32>> = encoded
        .iter()
        .flat_map(|d| d.windows.iter().map(|p| p.ids.clone()))
        .collect();
    let tokens = ids.iter().map(|p| p.len()).sum();
    // Cached pairs (windows) skip the queue; only the others are submitted.
    let cache = inner
        .cache
        .as_deref()
        .map(|c| (c, c.scope(&inner.cache_identity, &truncation)));
    let keys: Vec<crate::cache::Key> = cache.map_or_else(Vec::new, |(c, scope)| {
        ids.iter().map(|p| c.key(scope, p)).collect()
    });
    let mut window_logits: Vec<Option<f32>> = match cache {
        Some((c, _)) => keys.iter().map(|&k| c.get(k)).collect(),
        None => vec![None; ids.len()],
    };
    let misses: Vec<usize> = (0..ids.len())
        .filter(|&i| window_logits[i].is_none())
        .collect();
    let (queue, inference) = if misses.is_empty() {
        (Duration::ZERO, Duration::ZERO)
    } else {
        let missing: Vec<Vec<u32>> = misses
            .iter()
            .map(|&i| std::mem::take(&mut ids[i]))
            .collect();
        // Chunked texts can make more pairs than were admitted: admit them all.
        let permit = if missing.len() > texts.len() {
            drop(permit);
            inner.scheduler.try_reserve(missing.len())?
        } else {
            permit
        };
        let ticket = inner.scheduler.submit(missing, permit)?;
        let scored = ticket.await?;
        inner
            .metrics
            .observe_queue_wait(scored.logits.len(), scored.queue_time);
        for (&i, l) in misses.iter().zip(scored.logits) {
            if let Some((c, _)) = cache {
                c.put(keys[i], l);
            }
            window_logits[i] = Some(l);
        }
        (scored.queue_time, scored.inference_time)
    };
    let window_logits: Vec<f32> = window_logits
        .into_iter()
        .map(|l| l.unwrap_or(f32::NAN))
        .collect();
    let mut at = 0;
    let (mut logits, mut best) = (Vec::with_capacity(texts.len()), Vec::new());
    for doc in &encoded {
        let n = doc.windows.len();
        let (i, logit) = best_window(&window_logits[at..at + n]);
        at += n;
        logits.push(logit);
        best.push(doc.is_split().then(|| Window {
            index: i,
            count: n,
            start: doc.spans[i].start,
            end: doc.spans[i].end,
        }));
    }
    Ok(Scores {
        logits,
        windows: best,
        texts,
        tokens,
        characters,
        tokenization,
        queue,
        inference,
        start,
    })
}

/// `POST /rerank`: text-embeddings-inference's schema (`texts`), or a Cohere
/// body (`documents`) as Infinity and vLLM serve it on this path (litellm's
/// `infinity/` and `hosted_vllm/` providers, infinity_client, RAGFlow and Dify
/// with a base URL without `/v1` post it here).
async fn rerank(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<serde_json::Value>,
) -> Result<Response, ApiError> {
    let has = |field| body.get(field).is_some();
    match (has("texts"), has("documents")) {
        (true, true) => Err(ApiError::BadRequest(
            "the body has both `texts` (text-embeddings-inference schema) and `documents` (Cohere schema): send one of them".into(),
        )),
        (false, true) => {
            let req = from_value(body)?;
            let answer = cohere_answer(&state, req, Documents::Omitted).await?;
            Ok(answer.into_response())
        }
        (false, false) if body.is_object() => Err(ApiError::BadRequest(
            "invalid JSON body: missing field `texts` (text-embeddings-inference schema) or `documents` (Cohere schema)".into(),
        )),
        _ => Ok(tei_answer(&state, from_value(body)?).await?.into_response()),
    }
}

/// `top_n: 0` is a mistake, not a request for nothing.
fn check_top_n(top_n: Option<usize>) -> Result<(), ApiError> {
    if top_n == Some(0) {
        return Err(ApiError::Validation(
            "top_n must be at least 1 (leave it out for all results)".into(),
        ));
    }
    Ok(())
}

async fn tei_answer(
    state: &AppState,
    req: TeiRequest,
) -> Result<(HeaderMap, Json<Vec<TeiRank>>), ApiError> {
    check_top_n(req.top_n)?;
    let defaults = ScoreOptions::defaults(state);
    let opts = ScoreOptions {
        truncate: req.truncate.unwrap_or(defaults.truncate),
        side: req.truncation_direction.map_or(defaults.side, Side::from),
        ..defaults
    };
    let raw = req.raw_scores.unwrap_or(state.config().raw_scores);
    let return_text = req.return_text.unwrap_or(false);
    let scores = score(state, "texts", req.query, req.texts, opts).await?;
    let values = ScoreTransform::raw_if(raw).apply_all(scores.logits.clone());
    let ranked = rank_scores(&values, req.top_n)
        .into_iter()
        .map(|r| TeiRank {
            index: r.index,
            score: r.score,
            text: return_text.then(|| scores.texts[r.index].clone()),
        })
        .collect();
    Ok((scores.headers(&state.0.device.to_string()), Json(ranked)))
}

/// Whether a Cohere-schema answer may carry the documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Documents {
    /// `/v1/rerank`, `/v2/rerank`: `document: {text}` when `return_documents`.
    AsObjects,
    /// `/rerank`: never, whatever `return_documents` says. Infinity answers a
    /// string there and vLLM an object, and their clients (litellm's
    /// `infinity/` and `hosted_vllm/`) post identical bodies yet each crashes
    /// on the other's; both accept none.
    Omitted,
}

/// `POST /v1/rerank`, `/v2/rerank`: the Cohere/Jina schema.
async fn cohere_rerank(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<CohereRequest>,
) -> Result<(HeaderMap, Json<CohereResponse>), ApiError> {
    cohere_answer(&state, req, Documents::AsObjects).await
}

async fn cohere_answer(
    state: &AppState,
    req: CohereRequest,
    documents: Documents,
) -> Result<(HeaderMap, Json<CohereResponse>), ApiError> {
    check_top_n(req.top_n)?;
    let defaults = ScoreOptions::defaults(state);
    let chunking = match req.max_chunks_per_doc {
        Some(0) => {
            return Err(ApiError::Validation(
                "max_chunks_per_doc must be at least 1 (leave it out for the server's default)"
                    .into(),
            ))
        }
        Some(n) => Some(ChunkParams {
            max_chunks: n,
            ..state.0.chunking
        }),
        None => defaults.chunking,
    };
    if req.max_tokens_per_doc == Some(0) {
        return Err(ApiError::Validation(
            "max_tokens_per_doc must be at least 1 (leave it out for no limit)".into(),
        ));
    }
    let opts = ScoreOptions {
        chunking,
        max_passage_tokens: req.max_tokens_per_doc,
        truncate: req.truncate.unwrap_or(state.config().auto_truncate),
        ..defaults
    };
    let texts = req.documents.into_iter().map(|d| d.into_text()).collect();
    let scores = score(state, "documents", req.query, texts, opts).await?;
    let raw = req.raw_scores.unwrap_or(false);
    let values = ScoreTransform::raw_if(raw).apply_all(scores.logits.clone());
    let return_documents =
        documents == Documents::AsObjects && req.return_documents.unwrap_or(false);
    let results = rank_scores(&values, req.top_n)
        .into_iter()
        .map(|r| CohereResult {
            index: r.index,
            relevance_score: r.score,
            document: return_documents.then(|| DocumentText {
                text: scores.texts[r.index].clone(),
            }),
            window: scores.windows[r.index].clone(),
        })
        .collect();
    let response = CohereResponse {
        id: uuid::Uuid::new_v4().to_string(),
        object: "rerank".into(),
        created: unix_now(),
        model: state.model_name().to_string(),
        results,
        usage: Usage::of(scores.tokens),
    };
    Ok((scores.headers(&state.0.device.to_string()), Json(response)))
}

/// `POST /v1/ranking`: NVIDIA NIM's schema (langchain-nvidia-ai-endpoints,
/// RAGFlow's NVIDIA provider): raw logits, best first.
async fn nim_ranking(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<NimRequest>,
) -> Result<(HeaderMap, Json<NimResponse>), ApiError> {
    let defaults = ScoreOptions::defaults(&state);
    let opts = match req.truncate {
        None => defaults,
        Some(NimTruncate::None) => ScoreOptions {
            truncate: false,
            ..defaults
        },
        Some(NimTruncate::End) => ScoreOptions {
            truncate: true,
            side: Side::Right,
            ..defaults
        },
    };
    let texts = req.passages.into_iter().map(|p| p.text).collect();
    let scores = score(&state, "passages", req.query.text, texts, opts).await?;
    let rankings = rank_scores(&scores.logits, None)
        .into_iter()
        .map(|r| NimRanking {
            index: r.index,
            logit: r.score,
        })
        .collect();
    Ok((
        scores.headers(&state.0.device.to_string()),
        Json(NimResponse { rankings }),
    ))
}

/// The served model as OpenAI-style and Xinference clients look it up.
fn model_card(state: &AppState) -> ModelCard {
    let inner = &state.0;
    ModelCard {
        id: inner.name.clone(),
        object: "model".into(),
        created: inner.started,
        owned_by: "rerank".into(),
        model_type: "rerank".into(),
        model_name: inner.name.clone(),
        model_uid: inner.name.clone(),
        model_ability: vec!["rerank".into()],
        max_input_length: inner.truncation.max_length,
    }
}

/// `GET /v1/models`: the one served model, OpenAI-style.
async fn list_models(State(state): State<AppState>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![model_card(&state)],
    })
}

/// `GET /v1/models/{id}`: the served model under its served name or its
/// `--model` id (Xinference clients check `model_type` before reranking;
/// they do not URL-encode the id, hence the wildcard), else 404.
async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<ModelCard>, ApiError> {
    let inner = &state.0;
    if id == inner.name || id == inner.model_id {
        Ok(Json(model_card(&state)))
    } else {
        Err(ApiError::UnknownModel {
            asked: id,
            served: inner.name.clone(),
        })
    }
}

/// `GET /v1/cluster/auth` (Xinference): whether the key is needed. Open, as
/// Xinference's is: its client asks before it sends any key.
async fn cluster_auth(State(state): State<AppState>) -> Json<ClusterAuth> {
    Json(ClusterAuth {
        auth: state.config().api_key.is_some(),
    })
}

/// Which probe answers: they share one rule, [`probe_verdict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// The process and the model thread are alive and not stuck.
    Live,
    /// Live, the model computes, not draining, the queue under its threshold.
    Ready,
    /// text-embeddings-inference's: live, the model computes, not draining.
    Health,
}

impl Probe {
    fn name(self) -> &'static str {
        match self {
            Probe::Live => "live",
            Probe::Ready => "ready",
            Probe::Health => "health",
        }
    }
}

/// The answer of one probe: `Ok(details)` or why not. Reads only what the
/// model thread publishes, so it never waits; may queue one background
/// forward pass when no pass has succeeded within `--probe-interval`.
fn probe_verdict(state: &AppState, probe: Probe) -> Result<serde_json::Value, String> {
    let inner = &state.0;
    let config = &inner.config;
    let h = inner.scheduler.health();
    let millis = |d: std::time::Duration| d.as_millis() as u64;
    if !h.model_thread_alive {
        return Err(if h.closed {
            "the model thread has stopped: the server is shutting down".into()
        } else {
            "the model thread has died; the process must be restarted".into()
        });
    }
    if !h.is_live(config.liveness_timeout) {
        return Err(format!(
            "the model thread shows no progress for {} s (a forward pass running longer than --liveness-timeout {} s counts as stuck)",
            h.since_beat.as_secs(),
            config.liveness_timeout.as_secs()
        ));
    }
    let details = serde_json::json!({
        "status": "ok",
        "model_thread": if h.busy_for.is_some() { "busy" } else { "idle" },
        "pass_running_ms": h.busy_for.map(millis),
        "last_success_ms_ago": h.since_success.map(millis),
        "queued_pairs": h.queued_pairs,
        "reserved_pairs": h.reserved_pairs,
    });
    if probe == Probe::Live {
        return Ok(details);
    }
    if state.is_draining() {
        return Err("the server is shutting down (draining requests in flight)".into());
    }
    // No success lately (idle, or failing): check the model for real, in the
    // background, at most once per interval and one at a time.
    if h.since_success.is_none_or(|d| d > config.probe_interval) {
        inner
            .scheduler
            .probe(inner.probe.clone(), config.probe_interval);
    }
    match h.last_pass_ok {
        None => return Err("starting: no forward pass has finished yet".into()),
        Some(false) => {
            return Err(
                "the last forward pass failed (see the server log); a one-pair probe retries it at most once per --probe-interval"
                    .into(),
            )
        }
        Some(true) => {}
    }
    if probe == Probe::Ready {
        if let Some(limit) = config.ready_max_queued_pairs {
            if h.reserved_pairs > limit {
                return Err(format!(
                    "busy: {} pairs are admitted and unanswered, above --ready-max-queued-pairs {limit}",
                    h.reserved_pairs
                ));
            }
        }
    }
    Ok(details)
}

async fn answer_probe(state: &AppState, probe: Probe) -> Result<Json<serde_json::Value>, ApiError> {
    let verdict = probe_verdict(state, probe);
    state.metrics().observe_probe(probe.name(), verdict.is_ok());
    verdict
        .map(Json)
        .map_err(|e| ApiError::Unhealthy(format!("unhealthy: {e}")))
}

/// `GET /health`: 200 while the model computes (its last forward pass
/// succeeded) and the server is not shutting down, 503 otherwise; answered
/// at once, never behind the queue.
async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    answer_probe(&state, Probe::Health).await
}

/// `GET /live`: 200 while the model thread is alive and not stuck (for a
/// Kubernetes liveness probe: failing it means "restart me").
async fn live(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    answer_probe(&state, Probe::Live).await
}

/// `GET /ready`: 200 while this replica should get traffic: live, the model
/// computes, not draining, and the queue under `--ready-max-queued-pairs`.
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    answer_probe(&state, Probe::Ready).await
}

/// `GET /info`.
async fn info(State(state): State<AppState>) -> Json<Info> {
    let inner = &state.0;
    let c = &inner.config;
    let s = inner.scheduler.config();
    Json(Info {
        model_id: inner.model_id.clone(),
        model_sha: None,
        model_dtype: inner.dtype.to_string(),
        served_model_name: inner.name.clone(),
        model_type: ModelType::single_label_reranker(),
        model_device: inner.device.to_string(),
        model_implementation: inner.implementation.clone(),
        kernels: inner.kernels.clone(),
        layer_precision: inner.layer_precision.clone(),
        max_input_length: inner.truncation.max_length,
        max_client_batch_size: c.max_client_batch_size,
        max_batch_tokens: s.max_batch_tokens,
        max_batch_pairs: s.max_batch_pairs,
        max_concurrent_requests: c.max_concurrent_requests,
        max_queued_pairs: s.max_queued_pairs,
        payload_limit: c.payload_limit,
        auto_truncate: c.auto_truncate,
        max_batch_requests: None,
        tokenization_workers: rayon::current_num_threads(),
        version: env!("CARGO_PKG_VERSION").into(),
        sha: option_env!("RERANK_GIT_SHA").map(String::from),
        docker_label: option_env!("DOCKER_LABEL").map(String::from),
        score_cache: inner.cache.as_ref().map(|c| c.stats()),
        memory: c.memory,
    })
}

/// `GET /metrics`: Prometheus text format.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state
            .metrics()
            .render(state.scheduler(), state.cache(), state.oom_splits()),
    )
}

/// `GET /openapi.json`.
async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::spec())
}
