//! The web UI: three static files embedded in the binary with
//! `include_str!` (no build step, no CDN, nothing to deploy beside the
//! binary). The pages are shells without data: they are served to anyone,
//! and everything they show comes from the JSON API under the caller's
//! token, so the API's scope checks are the UI's. The HTML is the same for
//! `/` (call history) and `/calls/{id}` (call detail, the deep link); the
//! script routes on the path.

use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("../../ui/index.html");
const APP_JS: &str = include_str!("../../ui/app.js");
const APP_CSS: &str = include_str!("../../ui/app.css");

/// Same-origin only: no inline script, no third-party anything; audio and
/// downloads are `blob:` URLs made from authenticated fetches.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self' data:; media-src 'self' blob:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str, cache: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ),
        // Share links carry their token in the URL: never leak it.
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    (headers, body).into_response()
}

/// `GET /` and `GET /calls/{id}`: the application shell.
pub async fn page() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML, "no-store")
}

/// `GET /ui/app.js`.
pub async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS, "no-cache")
}

/// `GET /ui/app.css`.
pub async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS, "no-cache")
}
