//! The HTTP API of the recorder: search, download, share links, metrics.
//!
//! Access follows the NQS model and uses its code ([`nqs::api::auth`]): a
//! bearer token (`Authorization: Bearer …` or `?token=…`) signed with the
//! data directory's secret, whose scope is
//! - **admin**: every recording, `/metrics`, share links;
//! - **reseller** (domains): recordings whose domain is one of them, and
//!   share links for those;
//! - **share** (one recording, until it expires): that recording's search
//!   entry and files. For MIS the share scope's `call_id` field holds the
//!   recording id, so a link opens one recording, not every recording of
//!   the call.
//!
//! No token or a bad one: 401; a recording outside the scope: 404 (its
//! existence is not revealed); an endpoint the scope may not use: 403.
//! Without a keyring ([`crate::server::Config::auth`] `None`) everything is
//! served, as before tokens existed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::extract::{Path as UrlPath, Query as UrlQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nqs::api::auth::{Keyring, Scope};

use crate::index::{Entry, Query};
use crate::server::Shared;

/// Share links last this long unless the request says otherwise.
pub const DEFAULT_SHARE_TTL_SECS: u64 = 7 * 86_400;
/// The longest share link.
pub const MAX_SHARE_TTL_SECS: u64 = 90 * 86_400;

#[derive(Clone)]
struct ApiState {
    shared: Arc<Shared>,
    keyring: Option<Keyring>,
    denied: Arc<AtomicU64>,
}

/// The API's routes over the recorder's shared state.
pub(crate) fn router(shared: Arc<Shared>, keyring: Option<Keyring>) -> axum::Router {
    axum::Router::new()
        .route("/api/recordings", get(search))
        .route("/api/recordings/{file}", get(download))
        .route("/api/recordings/{id}/share", post(share))
        .route("/metrics", get(metrics))
        .with_state(ApiState {
            shared,
            keyring,
            denied: Arc::new(AtomicU64::new(0)),
        })
}

/// Unix seconds now (share link expiry).
#[expect(
    clippy::disallowed_methods,
    reason = "the driver is where the clock is read"
)]
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl ApiState {
    /// The caller's scope; `Err` is the response to send.
    fn scope(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Scope, Unauthorized> {
        let Some(keyring) = &self.keyring else {
            return Ok(Scope::Admin);
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let refused = |why: String| {
            self.denied.fetch_add(1, Ordering::Relaxed);
            Unauthorized(why)
        };
        let Some(token) = bearer.or(query) else {
            return Err(refused("no bearer token".into()));
        };
        keyring
            .verify(token, unix_now())
            .map_err(|e| refused(e.to_string()))
    }

    fn forbidden(&self) -> Response {
        self.denied.fetch_add(1, Ordering::Relaxed);
        StatusCode::FORBIDDEN.into_response()
    }

    fn hidden(&self) -> Response {
        self.denied.fetch_add(1, Ordering::Relaxed);
        StatusCode::NOT_FOUND.into_response()
    }
}

/// A 401 and why.
struct Unauthorized(String);

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        (StatusCode::UNAUTHORIZED, self.0).into_response()
    }
}

fn visible(scope: &Scope, e: &Entry) -> bool {
    scope.allows(&e.id, &[e.domain.as_str()])
}

/// `?token=` on every endpoint.
#[derive(Debug, Default, serde::Deserialize)]
struct TokenParam {
    token: Option<String>,
}

/// HTTP query of `GET /api/recordings`: `from`/`to` in Unix seconds.
#[derive(Debug, Default, serde::Deserialize)]
struct SearchParams {
    number: Option<String>,
    domain: Option<String>,
    call_id: Option<String>,
    from: Option<u64>,
    to: Option<u64>,
    min_duration_ms: Option<u64>,
    max_duration_ms: Option<u64>,
    token: Option<String>,
}

async fn search(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlQuery(p): UrlQuery<SearchParams>,
) -> Response {
    let scope = match st.scope(&headers, p.token.as_deref()) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let q = Query {
        number: p.number.filter(|x| !x.is_empty()),
        domain: p.domain.filter(|x| !x.is_empty()),
        call_id: p.call_id.filter(|x| !x.is_empty()),
        from: p.from.map(|t| t.saturating_mul(1_000_000_000)),
        to: p
            .to
            .map(|t| t.saturating_mul(1_000_000_000).saturating_add(999_999_999)),
        min_duration_ms: p.min_duration_ms,
        max_duration_ms: p.max_duration_ms,
    };
    let Ok(idx) = st.shared.index.read() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let hits: Vec<&Entry> = idx
        .search(&q)
        .into_iter()
        .filter(|e| visible(&scope, e))
        .collect();
    Json(serde_json::json!({ "recordings": hits })).into_response()
}

async fn download(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlPath(file): UrlPath<String>,
    UrlQuery(t): UrlQuery<TokenParam>,
) -> Response {
    let scope = match st.scope(&headers, t.token.as_deref()) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let (id, mono) = if let Some(id) = file.strip_suffix(".mono.wav") {
        (id, true)
    } else if let Some(id) = file.strip_suffix(".wav") {
        (id, false)
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    // Only files the index names are served (no path from the URL).
    let name = {
        let Ok(idx) = st.shared.index.read() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        let Some(e) = idx.get(id) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        if !visible(&scope, e) {
            return st.hidden();
        }
        if e.offloaded {
            return (
                StatusCode::GONE,
                "retention removed the local copy; the recording is in S3",
            )
                .into_response();
        }
        let name = if mono {
            e.mono.as_ref()
        } else {
            e.stereo.as_ref().or(e.mono.as_ref())
        };
        match name {
            Some(n) => n.clone(),
            None => return StatusCode::NOT_FOUND.into_response(),
        }
    };
    match tokio::fs::read(st.shared.dirs.recordings.join(&name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, "audio/wav")], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Body of `POST /api/recordings/{id}/share` (optional).
#[derive(Debug, Default, serde::Deserialize)]
struct ShareRequest {
    ttl_secs: Option<u64>,
}

async fn share(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<ShareRequest>>,
) -> Response {
    let scope = match st.scope(&headers, None) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let Some(keyring) = &st.keyring else {
        // No secret to sign with: share links need tokens switched on.
        return StatusCode::NOT_IMPLEMENTED.into_response();
    };
    {
        let Ok(idx) = st.shared.index.read() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        match idx.get(&id) {
            Some(e) if visible(&scope, e) => {}
            _ => return st.hidden(),
        }
    }
    if matches!(scope, Scope::Share { .. }) {
        return st.forbidden();
    }
    let ttl = body
        .and_then(|Json(b)| b.ttl_secs)
        .unwrap_or(DEFAULT_SHARE_TTL_SECS)
        .clamp(1, MAX_SHARE_TTL_SECS);
    let expires = unix_now().saturating_add(ttl);
    let token = keyring.issue(&Scope::Share {
        call_id: id.clone(),
        expires,
    });
    Json(serde_json::json!({
        "link": format!("/api/recordings/{id}.wav?token={token}"),
        "token": token,
        "expires": expires,
    }))
    .into_response()
}

async fn metrics(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlQuery(t): UrlQuery<TokenParam>,
) -> Response {
    match st.scope(&headers, t.token.as_deref()) {
        Ok(Scope::Admin) => {}
        Ok(_) => return st.forbidden(),
        Err(r) => return r.into_response(),
    }
    let s = &st.shared;
    let stats = s.stats.lock().map(|g| *g).unwrap_or_default();
    let recordings = s.index.read().map(|i| i.len()).unwrap_or(0);
    let mut out = String::new();
    for (name, v) in [
        ("media_packets_total", stats.media),
        ("dropped_malformed_total", stats.malformed),
        ("dropped_unknown_session_total", stats.unknown_session),
        ("dropped_after_stop_total", stats.after_stop),
        ("dropped_unknown_leg_total", stats.unknown_leg),
        ("rejected_control_total", stats.rejected_control),
        ("duplicates_total", stats.duplicates),
        ("late_packets_total", stats.late),
        ("unsupported_payload_total", stats.unsupported_payload),
        ("sessions_started_total", stats.started),
        ("sessions_stopped_total", stats.stopped),
        ("sessions_timed_out_total", stats.timed_out),
        ("recordings_indexed", recordings as u64),
        ("s3_uploads_total", s.uploads.load(Ordering::Relaxed)),
        (
            "s3_upload_failures_total",
            s.upload_failures.load(Ordering::Relaxed),
        ),
        ("s3_outbox", s.outbox.load(Ordering::Relaxed)),
        ("http_denied_total", st.denied.load(Ordering::Relaxed)),
        (
            "retention_deleted_total",
            s.retention_deleted.load(Ordering::Relaxed),
        ),
    ] {
        out.push_str(&format!("voxplane_mis_{name} {v}\n"));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
