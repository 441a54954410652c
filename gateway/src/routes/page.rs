//! The cluster page: one HTML file and one script, compiled into the
//! binary (`include_str!`), no build step, nothing fetched from elsewhere.
//! The script polls `/v1/cluster`, `/v1/recent` and `/v1/latency` every
//! second and redraws.

use axum::response::{Html, IntoResponse};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    ([(CACHE_CONTROL, "no-cache")], Html(include_str!("../page/index.html")))
}

/// `GET /app.js`.
pub async fn script() -> impl IntoResponse {
    ([(CONTENT_TYPE, "text/javascript; charset=utf-8"), (CACHE_CONTROL, "no-cache")], include_str!("../page/app.js"))
}
