//! Errors as HTTP answers: one mapping from the client's typed
//! [`ringkv_client::Error`] to a status code, never from message text.
//!
//! | client error | status | the caller should |
//! |---|---|---|
//! | `Unavailable`, `Connect` | 503 (`Retry-After: 1`) | retry later or at a lower level: nothing was written |
//! | `Indeterminate` | 504 | read before retrying: the write **may have been applied** |
//! | `Timeout` | 504 | retry: a read or scan ran out of time |
//! | `InvalidArgument` | 400 | fix the request |
//! | `RateLimited` (node or gateway) | 429 with `Retry-After` | wait, then retry |
//! | `Unauthenticated` | 401 | send `Authorization: Bearer TOKEN` |
//! | `PermissionDenied` | 403 | use a token whose role allows it |
//! | `Other` | 502 | report it: the node answered something unexpected |
//!
//! The body is JSON: `{"error": kind, "message": ..., "may_have_applied": bool}`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

/// What went wrong with an HTTP request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The cluster, through the client library.
    #[error(transparent)]
    Client(#[from] ringkv_client::Error),
    /// The request itself is malformed: a parameter, a header or the body.
    #[error("{0}")]
    BadRequest(String),
    /// No such route, or no such key.
    #[error("{0}")]
    NotFound(String),
    /// The `Authorization` header is not a bearer token.
    #[error("{0}")]
    Unauthenticated(String),
    /// Over the gateway's own per-client rate limit.
    #[error("over the gateway's rate limit of {limit} for this client; retry after {} ms", retry_after.as_millis())]
    RateLimited {
        /// How long until a request would be admitted.
        retry_after: Duration,
        /// The limit, as configured (`100/s`).
        limit: String,
    },
}

impl ApiError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        use ringkv_client::Error as E;
        match self {
            ApiError::BadRequest(_) | ApiError::Client(E::InvalidArgument { .. }) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthenticated(_) | ApiError::Client(E::Unauthenticated { .. }) => StatusCode::UNAUTHORIZED,
            ApiError::Client(E::PermissionDenied { .. }) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } | ApiError::Client(E::RateLimited { .. }) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Client(E::Unavailable { .. } | E::Connect { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Client(E::Indeterminate { .. } | E::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            // A watch position too old to resume: scan, then watch from now.
            ApiError::Client(E::ResyncRequired(_)) => StatusCode::GONE,
            ApiError::Client(E::Other { .. }) => StatusCode::BAD_GATEWAY,
        }
    }

    /// The short kind in the body (`unavailable`, `indeterminate`, ...).
    pub fn kind(&self) -> &str {
        match self {
            ApiError::Client(e) => e.kind(),
            ApiError::BadRequest(_) => "invalid_argument",
            ApiError::NotFound(_) => "not_found",
            ApiError::Unauthenticated(_) => "unauthenticated",
            ApiError::RateLimited { .. } => "rate_limited",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ApiError::RateLimited { retry_after, .. } | ApiError::Client(ringkv_client::Error::RateLimited { retry_after, .. }) => {
                Some(*retry_after)
            }
            ApiError::Client(ringkv_client::Error::Unavailable { .. } | ringkv_client::Error::Connect { .. }) => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let may_have_applied = matches!(self, ApiError::Client(ringkv_client::Error::Indeterminate { .. }));
        let mut message = self.to_string();
        if may_have_applied {
            message = format!("the write may have been applied: read the key before retrying ({message})");
        }
        let body = json!({ "error": self.kind(), "message": message, "may_have_applied": may_have_applied });
        let mut response = (self.status(), Json(body)).into_response();
        let headers = response.headers_mut();
        if let Some(wait) = self.retry_after() {
            // Retry-After takes whole seconds; round up so a retry at that
            // time is admitted.
            let secs = wait.as_millis().div_ceil(1000).max(1);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs as u64));
        }
        if self.status() == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_client::Error as E;

    #[test]
    fn every_client_error_keeps_its_meaning() {
        let m = || "m".to_string();
        let cases = [
            (E::Unavailable { required: 2, alive: 1, message: m() }, 503),
            (E::Connect { endpoints: "a".into(), message: m() }, 503),
            (E::Indeterminate { message: m() }, 504),
            (E::Timeout { message: m() }, 504),
            (E::InvalidArgument { message: m() }, 400),
            (E::RateLimited { retry_after: Duration::from_millis(10), message: m() }, 429),
            (E::Unauthenticated { message: m() }, 401),
            (E::PermissionDenied { message: m() }, 403),
            (E::ResyncRequired(m()), 410),
            (E::Other { kind: "x".into(), message: m() }, 502),
        ];
        for (e, code) in cases {
            let kind = e.kind().to_string();
            assert_eq!(ApiError::Client(e).status().as_u16(), code, "{kind}");
        }
    }

    #[tokio::test]
    async fn an_indeterminate_write_says_it_may_have_applied_and_429_says_when_to_retry() {
        let r = ApiError::Client(E::Indeterminate { message: "peer n2 did not answer".into() }).into_response();
        assert_eq!(r.status(), 504);
        let body = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["may_have_applied"], true);
        assert!(v["message"].as_str().unwrap().contains("may have been applied"), "{v}");
        let r = ApiError::RateLimited { retry_after: Duration::from_millis(1500), limit: "1/s".into() }.into_response();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2", "rounded up to whole seconds");
    }
}
