//! Every error the HTTP API returns, mapped to a status code in one place, and
//! the JSON body extractor whose rejections take the same shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::AppState;
use crate::scheduler::ScheduleError;

/// Seconds a client is asked to wait after a 429 or 503.
pub const RETRY_AFTER_SECS: u64 = 1;

/// An error answer: `{"error": message, "error_type": kind, "detail": …}`
/// with its status (see [`ErrorBody`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// 400: malformed JSON, wrong types, not UTF-8.
    #[error("{0}")]
    BadRequest(String),
    /// 400: no texts to rank.
    #[error("{0}")]
    Empty(String),
    /// 401: `--api-key` is set and the request lacks it.
    #[error("missing or wrong API key: send the header `Authorization: Bearer <key>`")]
    Unauthorized,
    /// 404: no such route.
    #[error("no route {0}; see GET /openapi.json")]
    NotFound(String),
    /// 404: `/v1/models/{id}` for a model this server does not serve.
    #[error("no model {asked:?} here: this server serves {served:?} (--served-model-name)")]
    UnknownModel { asked: String, served: String },
    /// 405: the route exists with another method.
    #[error("method not allowed; see GET /openapi.json")]
    MethodNotAllowed,
    /// 408: the body did not arrive within `--body-read-timeout`.
    #[error("the request body did not arrive within {0} s (--body-read-timeout); send the whole body at once")]
    BodyTimeout(f32),
    /// 413: body over `--payload-limit`.
    #[error("the request body is larger than the payload limit of {0} bytes (--payload-limit)")]
    PayloadTooLarge(usize),
    /// 422: well-formed but not acceptable (too many documents, too long with truncation off, …).
    #[error("{0}")]
    Validation(String),
    /// 422: the tokenizer failed on an input.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// 429: too much work waiting.
    #[error("{0}")]
    Overloaded(String),
    /// 500: the forward pass failed or panicked.
    #[error("{0}")]
    Backend(String),
    /// 503: not ready (model not computing, or shutting down).
    #[error("{0}")]
    Unhealthy(String),
    /// 504: not answered within `--request-timeout`.
    #[error("{0}")]
    Timeout(String),
}

/// The JSON body of every error: text-embeddings-inference's `error` and
/// `error_type`, and FastAPI's `detail` for the clients of FastAPI servers
/// (Xinference, Jina, Infinity), which read nothing else.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_type: &'static str,
    pub detail: Detail,
}

/// FastAPI's `detail`: the message, except on 422, where FastAPI (and so
/// infinity_client, generated from Infinity's schema) has a list of
/// `{loc, msg, type}`; a string there crashes infinity_client.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Detail {
    Message(String),
    Validation(Vec<ValidationDetail>),
}

#[derive(Debug, Serialize)]
pub struct ValidationDetail {
    pub loc: Vec<&'static str>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Empty(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) | Self::UnknownModel { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Validation(_) | Self::Tokenizer(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Unhealthy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The `error_type` field (text-embeddings-inference's names where it has one).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad_request",
            Self::Empty(_) => "empty",
            Self::Unauthorized => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::UnknownModel { .. } => "model_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTimeout(_) => "request_timeout",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::Validation(_) => "validation",
            Self::Tokenizer(_) => "tokenizer",
            Self::Overloaded(_) => "overloaded",
            Self::Backend(_) => "backend",
            Self::Unhealthy(_) => "unhealthy",
            Self::Timeout(_) => "timeout",
        }
    }
}

impl From<ScheduleError> for ApiError {
    fn from(e: ScheduleError) -> Self {
        match e {
            ScheduleError::Overloaded { .. } => Self::Overloaded(e.to_string()),
            ScheduleError::TooLarge { .. } => Self::Validation(e.to_string()),
            ScheduleError::Closed => Self::Unhealthy("the server is shutting down".into()),
            ScheduleError::Backend(_) => Self::Backend(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // 503 (draining, a failing probe) and 504 are expected states, one per
        // request: at error level they would flood the log while draining.
        if matches!(self, Self::Unhealthy(_) | Self::Timeout(_)) {
            tracing::debug!("{status}: {self}");
        } else if status.is_server_error() {
            tracing::error!("{status}: {self}");
        } else {
            tracing::debug!("{status}: {self}");
        }
        let message = self.to_string();
        let detail = if status == StatusCode::UNPROCESSABLE_ENTITY {
            Detail::Validation(vec![ValidationDetail {
                loc: vec!["body"],
                msg: message.clone(),
                kind: self.kind(),
            }])
        } else {
            Detail::Message(message.clone())
        };
        let body = ErrorBody {
            error: message,
            error_type: self.kind(),
            detail,
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        response
    }
}

/// A JSON body whose every failure is an [`ApiError`]: 413 over the payload
/// limit, 400 for a body that is not UTF-8, not JSON or of the wrong shape.
/// The `Content-Type` is not checked: `curl -d` clients forget it.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let timeout = state.config().body_read_timeout;
        let bytes = tokio::time::timeout(timeout, Bytes::from_request(req, state))
            .await
            .map_err(|_| ApiError::BodyTimeout(timeout.as_secs_f32()))?
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge(state.config().payload_limit)
                } else {
                    ApiError::BadRequest(r.body_text())
                }
            })?;
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            ApiError::BadRequest(format!(
                "the request body is not valid UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ))
        })?;
        parse_body(text).map(ApiJson)
    }
}

/// Deserializes a body, naming the field at fault: `at `top_n`: invalid
/// type: string "2", expected usize at line 1 column 40`.
pub fn parse_body<T: DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(path_error)?;
    de.end()
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// Deserializes an already parsed body (see [`parse_body`]).
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(path_error)
}

fn path_error<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    if path == "." {
        ApiError::BadRequest(format!("invalid JSON body: {}", e.inner()))
    } else {
        ApiError::BadRequest(format!("invalid JSON body: at `{path}`: {}", e.inner()))
    }
}
