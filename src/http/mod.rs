//! The HTTP API: routes, shared state and the layers every request passes through.
//!
//! Handlers are thin: extract, authorise, call the store, map. Layers, outermost first:
//! request id (and access log), URI size limit, panic catcher; then, on project-scoped
//! routes, authentication.

mod agent;
mod carry;
pub use carry::MAX_ORPHANED_CHANGES;
pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
mod floor;
mod iam;
mod jobs;
pub mod lockout;
mod lookup_cache;
pub mod openapi;
pub mod request_span;
mod send_limit;
pub mod server;
mod templates;
pub mod tls;
mod watch;

use anyhow::Context as _;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tracing::Instrument;

use self::auth::{AuthConfig, Authenticator};
use self::error::{ApiError, ErrorCode, REQUEST_ID};
use self::extract::BodyLimits;
use crate::store::Store;
use crate::templates::TemplateCatalog;

/// Longest request URI accepted.
pub const MAX_URI_BYTES: usize = 32 * 1024;
/// Most headers a request may carry.
pub const MAX_HEADERS: usize = 100;
/// Largest request head (request line and headers). The HTTP parser stops reading a head
/// at this size (a bare 431); one that arrived whole in a single read is refused here.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest page the list answers, and the page size when the client asks for none.
    pub max_page_size: u64,
    /// How long an `X-Client-Token` keeps answering the same job.
    pub idempotency_window: std::time::Duration,
    /// How long a token from `POST /v3/auth/tokens` is valid.
    pub token_ttl: std::time::Duration,
    pub auth: AuthConfig,
    /// Serve the benchmark's floor route (see `floor.rs`).
    pub bench_floor: bool,
    /// A request body must arrive whole within this time.
    pub body_timeout: std::time::Duration,
    /// Bytes of request bodies and large answers held at once, by all requests together.
    pub max_body_memory: usize,
    /// How long an agent's lease of a task lasts unless renewed.
    pub agent_lease: std::time::Duration,
    /// `/metrics` is served on an address of its own (`--metrics-addr`), not the API's.
    pub metrics_elsewhere: bool,
    /// The console's cookies are marked `Secure` (the server speaks TLS).
    pub secure_cookies: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_page_size: 1000,
            idempotency_window: std::time::Duration::from_secs(24 * 3600),
            token_ttl: std::time::Duration::from_secs(24 * 3600),
            auth: AuthConfig {
                rate_limit_per_sec: 1000,
                rate_burst: 2000,
                cache_ttl: auth::DEFAULT_AUTH_CACHE_TTL,
                demo_account: false,
                failures_per_address: lockout::DEFAULT_ADDRESS_FAILURES,
            },
            bench_floor: false,
            body_timeout: std::time::Duration::from_secs(30),
            max_body_memory: 256 * 1024 * 1024,
            agent_lease: std::time::Duration::from_secs(30),
            metrics_elsewhere: false,
            secure_cookies: false,
        }
    }
}

/// State shared by every handler: one `Arc`, so that the clone each extractor and layer
/// makes of it is one counter, not one per part.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl From<Shared> for AppState {
    fn from(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

/// What [`AppState`] holds.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub templates: Arc<TemplateCatalog>,
    pub config: Arc<ApiConfig>,
    pub authenticator: Arc<Authenticator>,
    /// Cancelled when the server shuts down, so long polls end at once.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Opens the sealed secret keys of the store, when there is a master key.
    pub sealer: Option<Arc<crate::secrets::Sealer>>,
    /// How request bodies are read, and large answers held: time and memory limits.
    pub bodies: BodyLimits,
    /// Registered servers and when they were last heard from, between database writes.
    pub fleet: Arc<crate::fleet::Fleet>,
    /// This replica's reader of job events, for the live watch.
    pub watch: Arc<crate::watch::Hub>,
    /// Where audit records go.
    pub audit: Arc<crate::audit::AuditLog>,
    /// The emulator's settings, fault rules and request journal.
    pub emulator: Arc<crate::emulator::Emulator>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, templates: TemplateCatalog, config: ApiConfig) -> Self {
        Shared::new(store, templates, config).into()
    }

    /// The same state, whose long polls and streams end when `shutdown` is cancelled.
    pub fn until(self, shutdown: tokio_util::sync::CancellationToken) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.0);
        shared.watch = crate::watch::Hub::new(shared.store.clone(), shutdown.clone());
        shared.shutdown = shutdown;
        shared.into()
    }
}

impl Shared {
    pub fn new(store: Arc<dyn Store>, templates: TemplateCatalog, config: ApiConfig) -> Self {
        let shutdown = tokio_util::sync::CancellationToken::new();
        Self {
            authenticator: Arc::new(Authenticator::new(&config.auth)),
            bodies: BodyLimits::new(config.body_timeout, config.max_body_memory),
            fleet: Arc::default(),
            watch: crate::watch::Hub::new(store.clone(), shutdown.clone()),
            audit: crate::audit::AuditLog::start(store.clone()).0,
            store,
            templates: Arc::new(templates),
            config: Arc::new(config),
            shutdown,
            sealer: None,
            emulator: Arc::default(),
        }
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    // Installed before the first request, so that nothing counted is lost.
    let _ = crate::metrics::handle();
    let project_api = Router::new()
        .route(
            "/v1/{project_id}/dev-servers/jobs",
            get(jobs::list_jobs)
                .post(jobs::create_job)
                .delete(jobs::delete_jobs),
        )
        .route("/v1/{project_id}/dev-servers/jobs/{id}", get(jobs::get_job))
        .route(
            "/v1/{project_id}/dev-servers/jobs/events",
            get(watch::watch_jobs),
        )
        .route(
            "/v1/{project_id}/dev-servers/jobs/{id}/events",
            get(watch::watch_job),
        )
        .route(
            "/v1/{project_id}/dev-servers/jobs/templates",
            get(templates::list_templates),
        )
        .route(
            "/v1/{project_id}/dev-servers/jobs/templates/{id}",
            get(templates::get_template),
        )
        .route(
            "/v1/{project_id}/dev-servers/jobs/services/{id}",
            get(templates::get_service),
        )
        .route(
            "/v1/{project_id}/agent/servers/{server_id}",
            axum::routing::put(agent::register_server),
        )
        .route(
            "/v1/{project_id}/agent/servers/{server_id}/lease",
            post(agent::lease_tasks),
        )
        .route(
            "/v1/{project_id}/agent/servers/{server_id}/heartbeat",
            post(agent::heartbeat),
        )
        .route(
            "/v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/output",
            axum::routing::put(agent::put_output),
        )
        .route(
            "/v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/result",
            post(agent::report_result),
        )
        .route(
            "/v1/{project_id}/dev-servers/jobs/{id}/tasks/{task_id}/output",
            get(agent::get_output),
        )
        .merge(floor::routes(&state.config))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));

    let app = Router::new()
        .merge(project_api)
        .route(
            "/v3/auth/tokens",
            post(iam::issue_token).delete(iam::revoke_token),
        )
        .route("/health", get(health))
        .route("/ready", get(ready))
        .merge(metrics_route(&state.config))
        .merge(openapi::routes())
        .merge(crate::emulator::routes(&state))
        .merge(console::routes(&state))
        .fallback(no_such_api)
        .method_not_allowed_fallback(no_such_api);
    // The emulator's faults, journal and strict mode, only where one of them is on: a layer
    // costs every request.
    let app = if state.emulator.control || state.emulator.strict {
        app.layer(middleware::from_fn_with_state(
            state.clone(),
            crate::emulator::intercept,
        ))
    } else {
        app
    };
    // Bodies are read (and limited to `MAX_BODY_BYTES`, answered in the API's error format)
    // before the handlers; the extractors' own 2 MB limit would answer bodies between the
    // two in plain text.
    app.layer(axum::extract::DefaultBodyLimit::disable())
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            request_context,
        ))
        .layer(middleware::from_fn(carry::carried_through))
        .with_state(state)
}

async fn no_such_api() -> ApiError {
    ApiError::NoSuchApi
}

fn on_panic(cause: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = cause
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| cause.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    ApiError::Internal(anyhow::anyhow!("handler panicked: {what}")).into_response()
}

/// Liveness and readiness: answers 200 when the database answers.
async fn health(State(state): State<AppState>) -> Response {
    match probe(state.store.ping()).await {
        Ok(()) => Json(serde_json::json!({"status": "ok", "backend": state.store.backend()}))
            .into_response(),
        Err(e) => ApiError::Unavailable(e).into_response(),
    }
}

/// Longest wait of `/health` and `/ready` for the database: one that stopped answering (a
/// network that drops its packets) is reported, not waited for until TCP gives up.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The database's answer to a probe, within [`PROBE_TIMEOUT`].
async fn probe<T>(
    asked: impl std::future::Future<Output = crate::store::StoreResult<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(PROBE_TIMEOUT, asked).await {
        Ok(answer) => answer.context("the database does not answer"),
        Err(_) => Err(anyhow::anyhow!(
            "the database did not answer within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// `/metrics` on the API's address, unless it has an address of its own.
fn metrics_route(config: &ApiConfig) -> Router<AppState> {
    if config.metrics_elsewhere {
        Router::new()
    } else {
        Router::new().route("/metrics", get(metrics))
    }
}

/// Readiness: 200 when the database answers and holds every migration of this server;
/// else 503 with the reason.
async fn ready(State(state): State<AppState>) -> Response {
    match probe(state.store.readiness()).await {
        Ok(None) => Json(serde_json::json!({"status": "ready", "backend": state.store.backend()}))
            .into_response(),
        Ok(Some(reason)) => ApiError::NotReady(reason).into_response(),
        Err(e) => ApiError::NotReady(format!("{e:#}")).into_response(),
    }
}

/// Prometheus metrics, in its text format.
pub async fn metrics() -> Response {
    match crate::metrics::render() {
        Some(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        None => ApiError::NoSuchApi.into_response(),
    }
}

/// Gives every request an id (answered in `X-Request-Id`, and in error bodies, and carried
/// by every log line the request causes), refuses oversized URIs, counts the request in the
/// metrics by its route template, records it in the audit trail when it changed something
/// or failed to authenticate, and logs one line per request.
async fn request_context(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let started = Instant::now();
    let method = request.method().clone();
    // Clones share the request's bytes: nothing is copied unless it is logged or audited.
    let uri = request.uri().clone();
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .cloned();
    let route = matched
        .as_ref()
        .map_or(crate::metrics::UNMATCHED_ROUTE, |m| m.as_str());
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let headers = request.headers().len();
    let uri_len = uri_length(&uri);
    let head_len = uri_len + head_length(request.headers());
    let span = request_span::request_span(&id, &method, route);
    let bodies = state.bodies.clone();
    let mut response = REQUEST_ID
        .scope(
            id.clone(),
            async move {
                if uri_len > MAX_URI_BYTES {
                    ApiError::UriTooLong.into_response()
                } else if headers > MAX_HEADERS {
                    ApiError::TooManyHeaders.into_response()
                } else if head_len > MAX_HEAD_BYTES {
                    ApiError::HeadersTooLarge.into_response()
                } else {
                    let safe = matches!(
                        request.method(),
                        &axum::http::Method::GET | &axum::http::Method::HEAD
                    );
                    let response = next.run(request).await;
                    bodies.hold_for_answer(response, safe).await
                }
            }
            .instrument(span.clone()),
        )
        .await;
    span.record("http.response.status_code", response.status().as_u16());
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    let status = response.status();
    let elapsed = started.elapsed();
    crate::metrics::http_request(route, &method, status.as_u16(), elapsed);
    let error_code = response.extensions().get::<ErrorCode>().map(|c| c.0);
    let path = uri.path();
    audit_request(
        &state,
        &response,
        (&method, route, path),
        (&id, peer, error_code),
    );
    let path = logged_path(path);
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    // 401 and 429 are summarised by `serve` (counted in the authenticator), not logged one by
    // one: a flood of them must not flood the log.
    let summarised = status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS;
    let status = status.as_u16();
    // Written as the request's own lines are (in its span, which carries its id).
    let _in_request = span.enter();
    REQUEST_ID.sync_scope(id, || {
        if status >= 500 {
            tracing::warn!(%method, route, %path, status, error_code, elapsed_ms, "request");
        } else if status >= 400 && !summarised {
            tracing::info!(%method, route, %path, status, error_code, elapsed_ms, "request");
        } else {
            tracing::debug!(%method, route, %path, status, elapsed_ms, "request");
        }
    });
    drop(_in_request);
    response
}

/// Bytes of a request's path its log line keeps: a path the API serves is shorter; a longer
/// one (an unknown route's, up to the URI's 32 KB) is cut, and says how long it was, so
/// that a client cannot write a request's size into the log with each request.
const LOGGED_PATH_BYTES: usize = 256;

/// A request's path as its log line shows it.
fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= LOGGED_PATH_BYTES {
        return path.into();
    }
    let mut end = LOGGED_PATH_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &path[..end], path.len()).into()
}

/// The bytes of a request's headers as sent (`name: value` and a line end each), with
/// room for the request line's method and version.
fn head_length(headers: &axum::http::HeaderMap) -> usize {
    let request_line = "OPTIONS  HTTP/1.1\r\n".len();
    request_line
        + headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + ": \r\n".len())
            .sum::<usize>()
}

/// The length of a request's URI as written on its request line.
fn uri_length(uri: &axum::http::Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + "://".len());
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let query = uri.query().map_or(0, |q| q.len() + 1);
    scheme + authority + uri.path().len() + query
}

/// Records the request in the audit trail when its action changes something, or when its
/// authentication failed.
fn audit_request(
    state: &AppState,
    response: &Response,
    (method, route, path): (&axum::http::Method, &str, &str),
    (request_id, peer, error_code): (&str, Option<std::net::IpAddr>, Option<&'static str>),
) {
    let status = response.status().as_u16();
    let action = match crate::audit::action_of(method.as_str(), route) {
        Some(action) => action,
        None if status == 401 => "authenticate",
        None => return,
    };
    let who = response
        .extensions()
        .get::<crate::audit::Identity>()
        .cloned()
        .unwrap_or_default();
    let mut resources = crate::audit::path_ids(route, path);
    if let Some(found) = response.extensions().get::<crate::audit::Resources>() {
        resources.extend(found.0.iter().cloned());
    }
    let resources = resources.into_iter().map(crate::audit::clipped).collect();
    let unknown = || crate::audit::UNKNOWN.to_string();
    let record = crate::store::AuditRecord {
        at: crate::domain::now_ms(),
        project_id: who.project_id,
        user_id: who.user_id.unwrap_or_else(unknown),
        user_name: who.user_name.unwrap_or_else(unknown),
        access_key: who.access_key.map(crate::audit::clipped),
        action: action.to_string(),
        resources,
        source: peer.map_or_else(String::new, |ip| ip.to_string()),
        request_id: request_id.to_string(),
        outcome: crate::audit::outcome(status).to_string(),
        status,
        error_code: error_code.map(str::to_string),
    };
    if let Some(also) = response.extensions().get::<crate::audit::AlsoDone>() {
        state.audit.record(crate::store::AuditRecord {
            action: also.action.to_string(),
            project_id: also.project_id.clone(),
            ..record.clone()
        });
    }
    state.audit.record(record);
}
