//! The one error type of the HTTP API: a status and a Matrix `errcode`, as JSON.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
    /// For 429: how long to wait, sent as `retry_after_ms` (and `Retry-After`).
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self { status, errcode, message: message.into(), retry_after_ms: None }
    }

    /// 429 `M_LIMIT_EXCEEDED`, to be tried again after `wait`.
    pub fn rate_limited(wait: std::time::Duration) -> Self {
        let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
        Self {
            retry_after_ms: Some(ms),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", "too many requests; wait and try again")
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "M_UNAUTHORIZED", "missing hs_token (Authorization: Bearer …)")
    }

    pub fn forbidden() -> Self {
        Self::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "wrong hs_token")
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", message)
    }

    pub fn unrecognized(status: StatusCode) -> Self {
        Self::new(status, "M_UNRECOGNIZED", "unrecognized request")
    }

    /// A body that could not be read: over its route's limit (413 `M_TOO_LARGE`, saying what the
    /// limit is about), or cut off (400 `errcode`).
    pub fn body_rejected(e: &axum::extract::rejection::BytesRejection, too_large: &str, errcode: &'static str) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::new(StatusCode::PAYLOAD_TOO_LARGE, "M_TOO_LARGE", too_large)
        } else {
            Self::new(StatusCode::BAD_REQUEST, errcode, format!("cannot read the body: {e}"))
        }
    }

    /// An internal failure: the details go to the log, the caller gets a generic message.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", format!("{context}; see the agent's log"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_client_error() {
            tracing::debug!(status = %self.status, errcode = self.errcode, "request refused");
        }
        let mut body = serde_json::json!({ "errcode": self.errcode, "error": self.message });
        let Some(ms) = self.retry_after_ms else { return (self.status, Json(body)).into_response() };
        body["retry_after_ms"] = ms.into();
        let seconds = ms.div_ceil(1000).to_string();
        (self.status, [(axum::http::header::RETRY_AFTER, seconds)], Json(body)).into_response()
    }
}
