//! The HTTP API (axum): call history and detail, per-call pcap download,
//! per-leg WAV rendered on demand, share links, Prometheus metrics. Every
//! endpoint checks the caller's [`auth::Scope`]: admin tokens see
//! everything, reseller tokens only calls of their domains, share links one
//! call. A call outside the caller's scope answers 404, as if it did not
//! exist.
//!
//! | endpoint | admin | reseller | share link |
//! |---|---|---|---|
//! | `GET /api/calls` | all | its domains | its call |
//! | `GET /api/calls/{id}` | yes | its domains | its call |
//! | `GET /api/calls/{id}/pcap` | yes | its domains | its call |
//! | `GET /api/calls/{id}/legs/{n}.wav` | yes | its domains | its call |
//! | `POST /api/calls/{id}/share` | yes | its domains | no (403) |
//! | `GET /api/whoami` | yes | yes | yes |
//! | `GET /metrics` | yes | no (403) | no (403) |
//! | `GET /`, `/calls/{id}`, `/ui/*` (web UI, no data) | public | public | public |
//!
//! Tokens come in `Authorization: Bearer …` or, for share links opened in a
//! browser, `?token=…`. The clock is injected ([`ApiState::clock`]) so expiry
//! is testable.

pub mod auth;
pub mod ui;

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use crate::sink::sqlite::{CallFilter, CallSort, SqliteSink};
use crate::sink::worker::WorkerStats;
use crate::sink::{CallRow, SinkError};
use auth::{Keyring, Scope};

/// Unix seconds now (injected: the service passes the system clock, tests a
/// fixed value).
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Counters exposed at `/metrics`, updated by the capture pipeline.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Packets handed to the analyser.
    pub packets: AtomicU64,
    /// Frames the decoder could not use (malformed, not IP/UDP/TCP).
    pub frames_dropped: AtomicU64,
    /// SIP messages.
    pub sip_messages: AtomicU64,
    /// Malformed SIP messages (dropped and counted).
    pub sip_malformed: AtomicU64,
    /// RTP packets.
    pub rtp_packets: AtomicU64,
    /// Calls currently open.
    pub calls_active: AtomicU64,
    /// Calls finished.
    pub calls_finished: AtomicU64,
    /// Packets of calls already finished.
    pub late_packets: AtomicU64,
    /// Per-call pcap write errors.
    pub pcap_errors: AtomicU64,
    /// HTTP requests refused for their token (401, 403, out-of-scope 404).
    pub http_denied: AtomicU64,
    /// Calls the analyser holds (open, or finished within the late window).
    pub calls_held: AtomicU64,
    /// Streams the analyser holds.
    pub streams_held: AtomicU64,
    /// New calls refused at `--max-calls`.
    pub calls_dropped: AtomicU64,
    /// New streams refused at `--max-streams`.
    pub streams_dropped: AtomicU64,
    /// Promiscuous capture: frames the kernel rings saw (`tp_packets`).
    pub capture_packets: AtomicU64,
    /// Promiscuous capture: frames dropped by the kernel, ring full (`tp_drops`).
    pub capture_kernel_drops: AtomicU64,
    /// Promiscuous capture: ring queue freezes (`tp_freeze_q_cnt`).
    pub capture_freeze_q: AtomicU64,
    /// Promiscuous capture: frames dropped between the capture threads and
    /// the analyser (hand-off ring full).
    pub capture_handoff_drops: AtomicU64,
}

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The call index.
    pub store: SqliteSink,
    /// Verifies and issues tokens.
    pub keyring: Keyring,
    /// Root of the per-call pcap spool.
    pub pcap_dir: PathBuf,
    /// Unix seconds now.
    pub clock: Clock,
    /// Pipeline counters.
    pub metrics: Arc<Metrics>,
    /// Sink workers' counters, by sink name.
    pub sinks: Vec<(String, Arc<WorkerStats>)>,
    /// Lifetime of share links created without `ttl_secs`, seconds.
    pub share_ttl_secs: u64,
    /// Where offloaded pcaps live (`--s3-endpoint`): a pcap whose local
    /// copy is gone is served from there.
    pub objects: Option<Objects>,
}

/// The object store pcaps are offloaded to, and its uploader's counters.
#[derive(Clone)]
pub struct Objects {
    /// The store.
    pub store: Arc<dyn object_store::ObjectStore>,
    /// The uploader's counters (for `/metrics`).
    pub stats: Arc<crate::offload::OffloadStats>,
}

/// The API's routes over `state`.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/calls", get(list_calls))
        .route("/api/calls/{id}", get(call_detail))
        .route("/api/calls/{id}/pcap", get(call_pcap))
        .route("/api/calls/{id}/legs/{leg}", get(call_leg_wav))
        .route("/api/calls/{id}/share", post(share_call))
        .route("/api/whoami", get(whoami))
        .route("/metrics", get(metrics))
        .route("/", get(ui::page))
        .route("/calls/{id}", get(ui::page))
        .route("/ui/app.js", get(ui::app_js))
        .route("/ui/app.css", get(ui::app_css))
        .with_state(state)
}

/// An API failure and its status.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// No token, or a token that does not verify (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A valid token without the right to this endpoint (403).
    #[error("forbidden")]
    Forbidden,
    /// Unknown, or outside the caller's scope (404).
    #[error("not found")]
    NotFound,
    /// The request cannot be served as asked (409), e.g. audio not kept.
    #[error("{0}")]
    Conflict(String),
    /// A backend (the object store) is unreachable now (503).
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bad parameter (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The store or the spool failed (500).
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<SinkError> for ApiError {
    fn from(e: SinkError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let mut resp = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

/// Query parameters of `GET /api/calls` (and `token` everywhere).
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    /// Calling or called number contains this.
    pub number: Option<String>,
    /// Request, From or To host.
    pub domain: Option<String>,
    /// Started at or after (Unix seconds).
    pub since: Option<u64>,
    /// Started before (Unix seconds).
    pub until: Option<u64>,
    /// MOS at least.
    pub min_mos: Option<f64>,
    /// MOS at most.
    pub max_mos: Option<f64>,
    /// At most this many calls (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Skip this many calls first (pagination, at most 1,000,000).
    pub offset: Option<u32>,
    /// Sort column: `start` (default), `from`, `to`, `domain`, `mos`,
    /// `streams`, `final_status`, `reason`.
    pub sort: Option<CallSort>,
    /// `asc` or `desc` (default).
    pub order: Option<SortOrder>,
    /// A token, for links opened without an `Authorization` header.
    pub token: Option<String>,
}

/// Sort direction of `GET /api/calls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Smallest first.
    Asc,
    /// Largest (newest) first.
    Desc,
}

/// A call in the history list.
#[derive(Debug, Serialize)]
pub struct CallSummary {
    /// SIP Call-ID.
    pub call_id: String,
    /// Calling number (user part of From).
    pub from: String,
    /// Called number (user part of To).
    pub to: String,
    /// The call's domain (Request-URI host, else To host).
    pub domain: String,
    /// Start, Unix seconds (fractional).
    pub start: f64,
    /// Lowest MOS over the call's legs (0 without media).
    pub mos: f64,
    /// Number of RTP legs.
    pub streams: u32,
    /// Final status of the INVITE (0 if none).
    pub final_status: u16,
    /// Why the call finished.
    pub reason: String,
}

impl From<&CallRow> for CallSummary {
    fn from(c: &CallRow) -> Self {
        Self {
            call_id: c.call_id.clone(),
            from: c.from_user.clone(),
            to: c.to_user.clone(),
            domain: c.domain.clone(),
            start: c.start_ns as f64 / 1e9,
            mos: c.mos,
            streams: c.streams,
            final_status: c.final_status,
            reason: c.reason.clone(),
        }
    }
}

/// Body of `POST /api/calls/{id}/share`.
#[derive(Debug, Default, Deserialize)]
pub struct ShareRequest {
    /// Lifetime of the link, seconds (default [`ApiState::share_ttl_secs`]).
    pub ttl_secs: Option<u64>,
}

/// Answer of `POST /api/calls/{id}/share`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShareLink {
    /// Path of the call's detail (JSON API) with the share token.
    pub link: String,
    /// Path of the call's web page with the share token (what to send to
    /// a person).
    pub page: String,
    /// The token alone (for `Authorization: Bearer`).
    pub token: String,
    /// Expiry, Unix seconds.
    pub expires: u64,
}

#[derive(Debug, Default, Deserialize)]
struct TokenParam {
    token: Option<String>,
}

async fn list_calls(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Json<Vec<CallSummary>>, ApiError> {
    let scope = st.scope(&headers, p.token.as_deref())?;
    let mut filter = CallFilter {
        number: p.number,
        domain: p.domain.map(|d| d.to_ascii_lowercase()),
        since_ns: p.since.map(|s| s.saturating_mul(1_000_000_000)),
        until_ns: p.until.map(|s| s.saturating_mul(1_000_000_000)),
        min_mos: p.min_mos,
        max_mos: p.max_mos,
        limit: p.limit.unwrap_or(100).min(1000),
        offset: p.offset.unwrap_or(0).min(1_000_000),
        sort: p.sort.unwrap_or_default(),
        ascending: p.order == Some(SortOrder::Asc),
        scope: None,
    };
    let rows = match &scope {
        Scope::Admin => st.store.list_calls(&filter)?,
        Scope::Reseller { domains } => {
            filter.scope = Some(domains.clone());
            st.store.list_calls(&filter)?
        }
        Scope::Share { call_id, .. } => st
            .store
            .call(call_id)?
            .into_iter()
            .filter(|_| filter.offset == 0)
            .filter(|c| {
                // Apply the filters to the one call too.
                let mut f = filter.clone();
                f.limit = 1000;
                matches_filter(c, &f)
            })
            .collect(),
    };
    Ok(Json(rows.iter().map(CallSummary::from).collect()))
}

async fn call_detail(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(t): Query<TokenParam>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (_, call) = st.authorized_call(&headers, t.token.as_deref(), &id)?;
    let streams = st.store.streams(&id)?;
    let legs: Vec<String> = (0..streams.len())
        .map(|n| format!("/api/calls/{}/legs/{n}.wav", url_escape(&id)))
        .collect();
    Ok(Json(serde_json::json!({
        "call": CallSummary::from(&call),
        "record": call,
        "streams": streams,
        "intervals": st.store.intervals(&id)?,
        "sip": st.store.sip_messages(&id)?,
        "pcap": st.store.pcap(&id)?.map(|p| serde_json::json!({
            "url": format!("/api/calls/{}/pcap", url_escape(&id)),
            "packets": p.packets,
            "bytes": p.bytes,
        })),
        "legs": legs,
    })))
}

async fn call_pcap(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(t): Query<TokenParam>,
) -> Result<Response, ApiError> {
    st.authorized_call(&headers, t.token.as_deref(), &id)?;
    let (path, bytes) = st.pcap_bytes(&id).await?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                "application/vnd.tcpdump.pcap".to_string(),
            ),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{}\"", file_name(&path)),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn call_leg_wav(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlPath((id, leg)): UrlPath<(String, String)>,
    Query(t): Query<TokenParam>,
) -> Result<Response, ApiError> {
    st.authorized_call(&headers, t.token.as_deref(), &id)?;
    let n: usize = leg
        .strip_suffix(".wav")
        .and_then(|n| n.parse().ok())
        .ok_or(ApiError::NotFound)?;
    let (_, pcap) = st.pcap_bytes(&id).await?;
    let wav = tokio::task::spawn_blocking(move || render_leg(&pcap, &id, n))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    Ok(([(header::CONTENT_TYPE, "audio/wav")], wav).into_response())
}

async fn share_call(
    State(st): State<ApiState>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    body: Option<Json<ShareRequest>>,
) -> Result<Json<ShareLink>, ApiError> {
    let (scope, _) = st.authorized_call(&headers, None, &id)?;
    if matches!(scope, Scope::Share { .. }) {
        st.metrics.http_denied.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::Forbidden);
    }
    let ttl = body
        .and_then(|Json(b)| b.ttl_secs)
        .unwrap_or(st.share_ttl_secs)
        .clamp(1, 90 * 86_400);
    let expires = (st.clock)().saturating_add(ttl);
    let token = st.keyring.issue(&Scope::Share {
        call_id: id.clone(),
        expires,
    });
    Ok(Json(ShareLink {
        link: format!("/api/calls/{}?token={token}", url_escape(&id)),
        page: format!("/calls/{}?token={token}", url_escape(&id)),
        token,
        expires,
    }))
}

/// `GET /api/whoami`: the caller's scope (what the UI shows and how it
/// routes: a share link opens its call).
async fn whoami(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Query(t): Query<TokenParam>,
) -> Result<Json<Scope>, ApiError> {
    Ok(Json(st.scope(&headers, t.token.as_deref())?))
}

async fn metrics(
    State(st): State<ApiState>,
    headers: HeaderMap,
    Query(t): Query<TokenParam>,
) -> Result<Response, ApiError> {
    if st.scope(&headers, t.token.as_deref())? != Scope::Admin {
        st.metrics.http_denied.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::Forbidden);
    }
    let m = &st.metrics;
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, kind: &str, v: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
        );
    };
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        "nqs_packets_total",
        "Packets handed to the analyser.",
        "counter",
        load(&m.packets),
    );
    counter(
        "nqs_frames_dropped_total",
        "Captured frames the decoder dropped.",
        "counter",
        load(&m.frames_dropped),
    );
    counter(
        "nqs_sip_messages_total",
        "SIP messages seen.",
        "counter",
        load(&m.sip_messages),
    );
    counter(
        "nqs_sip_malformed_total",
        "Malformed SIP messages dropped.",
        "counter",
        load(&m.sip_malformed),
    );
    counter(
        "nqs_rtp_packets_total",
        "RTP packets analysed.",
        "counter",
        load(&m.rtp_packets),
    );
    counter(
        "nqs_calls_active",
        "Calls open now.",
        "gauge",
        load(&m.calls_active),
    );
    counter(
        "nqs_calls_finished_total",
        "Calls finished.",
        "counter",
        load(&m.calls_finished),
    );
    counter(
        "nqs_late_packets_total",
        "Packets of calls already finished.",
        "counter",
        load(&m.late_packets),
    );
    counter(
        "nqs_pcap_errors_total",
        "Per-call pcap write errors.",
        "counter",
        load(&m.pcap_errors),
    );
    counter(
        "nqs_http_denied_total",
        "HTTP requests refused for their token.",
        "counter",
        load(&m.http_denied),
    );
    if let Some(o) = &st.objects {
        let s = &o.stats;
        counter(
            "nqs_pcap_offload_uploaded_total",
            "Per-call pcaps uploaded to the object store.",
            "counter",
            load(&s.uploaded),
        );
        counter(
            "nqs_pcap_offload_failures_total",
            "Failed pcap upload attempts (retried).",
            "counter",
            load(&s.failures),
        );
        counter(
            "nqs_pcap_offload_missing_total",
            "Pcaps whose local file was gone before upload.",
            "counter",
            load(&s.missing),
        );
        counter(
            "nqs_pcap_offload_pending",
            "Pcaps waiting for upload.",
            "gauge",
            load(&s.pending),
        );
    }
    for (name, help, kind, v) in [
        (
            "nqs_calls_held",
            "Calls the analyser holds (open or within the late window).",
            "gauge",
            &m.calls_held,
        ),
        (
            "nqs_streams_held",
            "Streams the analyser holds.",
            "gauge",
            &m.streams_held,
        ),
        (
            "nqs_calls_dropped_total",
            "New calls not analysed: --max-calls reached.",
            "counter",
            &m.calls_dropped,
        ),
        (
            "nqs_streams_dropped_total",
            "New streams not analysed: --max-streams reached.",
            "counter",
            &m.streams_dropped,
        ),
        (
            "nqs_capture_packets_total",
            "Frames the AF_PACKET rings saw (tp_packets).",
            "counter",
            &m.capture_packets,
        ),
        (
            "nqs_capture_kernel_drops_total",
            "Frames the kernel dropped, capture ring full (tp_drops).",
            "counter",
            &m.capture_kernel_drops,
        ),
        (
            "nqs_capture_freeze_q_total",
            "Capture ring queue freezes (tp_freeze_q_cnt).",
            "counter",
            &m.capture_freeze_q,
        ),
        (
            "nqs_capture_handoff_drops_total",
            "Captured frames dropped before analysis (hand-off ring full).",
            "counter",
            &m.capture_handoff_drops,
        ),
    ] {
        counter(name, help, kind, load(v));
    }
    for (name, s) in &st.sinks {
        let _ = writeln!(
            out,
            "nqs_sink_rows_written_total{{sink=\"{name}\"}} {}\nnqs_sink_rows_spooled_total{{sink=\"{name}\"}} {}\nnqs_sink_write_errors_total{{sink=\"{name}\"}} {}\nnqs_sink_spooled_batches{{sink=\"{name}\"}} {}",
            load(&s.rows_written),
            load(&s.rows_spooled),
            load(&s.write_errors),
            load(&s.spooled_batches),
        );
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

impl ApiState {
    /// The caller's scope, from `Authorization: Bearer` or `?token=`.
    fn scope(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Scope, ApiError> {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = bearer.or(query) else {
            self.metrics.http_denied.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::Unauthorized("no bearer token".into()));
        };
        self.keyring.verify(token, (self.clock)()).map_err(|e| {
            self.metrics.http_denied.fetch_add(1, Ordering::Relaxed);
            ApiError::Unauthorized(e.to_string())
        })
    }

    /// The call `id` if the caller may see it; 404 otherwise.
    fn authorized_call(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        id: &str,
    ) -> Result<(Scope, CallRow), ApiError> {
        let scope = self.scope(headers, query)?;
        let call = self.store.call(id)?.ok_or(ApiError::NotFound)?;
        let domains = [
            call.domain.as_str(),
            call.from_domain.as_str(),
            call.to_domain.as_str(),
        ];
        if !scope.allows(&call.call_id, &domains) {
            self.metrics.http_denied.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::NotFound);
        }
        Ok((scope, call))
    }

    /// The call's pcap: the local file, else (retention removed it) the
    /// offloaded object. Returns the local path (for the file name) too.
    async fn pcap_bytes(&self, id: &str) -> Result<(PathBuf, Vec<u8>), ApiError> {
        let path = self.pcap_path(id)?;
        if let Ok(bytes) = tokio::fs::read(&path).await {
            return Ok((path, bytes));
        }
        let Some(objects) = &self.objects else {
            return Err(ApiError::NotFound);
        };
        let object = self
            .store
            .pcap_object(id)?
            .filter(|o| !o.is_empty())
            .ok_or(ApiError::NotFound)?;
        let bytes = crate::offload::fetch(objects.store.as_ref(), &object)
            .await
            .map_err(|e| match e {
                object_store::Error::NotFound { .. } => ApiError::NotFound,
                e => ApiError::Unavailable(e.to_string()),
            })?;
        Ok((path, bytes))
    }

    /// The call's pcap file, refusing index paths that would leave the spool.
    fn pcap_path(&self, id: &str) -> Result<PathBuf, ApiError> {
        let row = self.store.pcap(id)?.ok_or(ApiError::NotFound)?;
        let rel = Path::new(&row.path);
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(ApiError::NotFound);
        }
        Ok(self.pcap_dir.join(rel))
    }
}

fn matches_filter(c: &CallRow, f: &CallFilter) -> bool {
    let number_ok = f
        .number
        .as_ref()
        .is_none_or(|n| c.from_user.contains(n.as_str()) || c.to_user.contains(n.as_str()));
    let domain_ok = f.domain.as_ref().is_none_or(|d| {
        [&c.domain, &c.from_domain, &c.to_domain]
            .iter()
            .any(|x| x.eq_ignore_ascii_case(d))
    });
    number_ok
        && domain_ok
        && f.since_ns.is_none_or(|t| c.start_ns >= t)
        && f.until_ns.is_none_or(|t| c.start_ns < t)
        && f.min_mos.is_none_or(|m| c.mos >= m)
        && f.max_mos.is_none_or(|m| c.mos <= m)
}

/// Re-analyses the call's pcap keeping audio, and renders its `n`th leg
/// (the call's streams in order of first packet) as 8 kHz 16-bit WAV.
fn render_leg(pcap: &[u8], call_id: &str, n: usize) -> Result<Vec<u8>, ApiError> {
    use wire::capture::{Decoder, FileReader};
    let mut reader = FileReader::new(pcap).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut decoder = Decoder::new();
    let mut analyzer = crate::analyzer::Analyzer::new(crate::analyzer::AnalyzerConfig {
        keep_audio: true,
        orphan_streams: false,
        keep_intervals: true,
        ..Default::default()
    });
    while let Some(frame) = reader.next_frame() {
        let frame = frame.map_err(|e| ApiError::Internal(e.to_string()))?;
        if let Some(packet) = decoder.decode(&frame) {
            let _ = analyzer.handle_packet(&packet);
        }
    }
    let stream = analyzer
        .stream_ids()
        .filter(|&id| {
            analyzer
                .stream_summary(id)
                .is_some_and(|s| s.call_id.as_deref() == Some(call_id))
        })
        .nth(n)
        .ok_or(ApiError::NotFound)?;
    let audio = analyzer
        .kept_audio(stream)
        .filter(|a| a.iter().any(|(_, _, p)| !p.is_empty()))
        .ok_or_else(|| {
            ApiError::Conflict(
                "no G.711 payload kept for this leg (header-only capture or another codec)".into(),
            )
        })?;
    let pcm = crate::render::render_g711(audio);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::new());
    let mut w =
        hound::WavWriter::new(&mut out, spec).map_err(|e| ApiError::Internal(e.to_string()))?;
    for s in pcm {
        w.write_sample(s)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
    }
    w.finalize()
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(out.into_inner())
}

/// Percent-encodes what may not appear raw in a path segment.
fn url_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().replace('"', "_"))
        .unwrap_or_else(|| "call.pcap".into())
}
