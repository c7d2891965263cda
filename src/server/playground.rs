//! `GET /`: the playground, one self-contained page (no CDN, no build step)
//! compiled into the binary. It calls the public `POST /v1/rerank` like any
//! client, so it needs no route of its own and doubles as a live example.
//! `--no-playground` leaves `/` unrouted (404).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The page; its stable hooks (`#query`, `#passages`, `#rank`, `#results`,
/// `.result`) are what tests/browser/ drives.
pub const PAGE: &str = include_str!("playground.html");

/// The page allows itself inline script and style and talks only to its own
/// origin, so a passage that looks like markup stays text and nothing leaves
/// the server's origin (the API key typed in stays in the page).
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub async fn page() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        PAGE,
    )
        .into_response()
}
