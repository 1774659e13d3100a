//! The dashboard on the admin listener: one page, a stylesheet and a
//! script (about 15 KB together, no dependencies, nothing fetched from
//! elsewhere), served from the binary. The script polls
//! `/dashboard/state` and `/metrics` and draws the APIs, targets, plugins,
//! cluster and reloads, with rates and percentiles computed from the
//! difference between two polls. Behind the admin secret like the rest of
//! the admin API (a browser sends it as Basic credentials).

use axum::response::{IntoResponse, Response};
use http::header;

const PAGE: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/app.css");

/// Only this origin's own files and requests: a name or an error message
/// shown on the page can never load or run anything.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
