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

/// An error answer: `{"error": message, "error_type": kind}` with its status.
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

/// The JSON body of every error.
#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: String,
    pub error_type: &'static str,
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::Empty(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
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
        let body = ErrorBody {
            error: self.to_string(),
            error_type: self.kind(),
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
        serde_json::from_str(text)
            .map(ApiJson)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
    }
}
