//! Who is calling, and what may they do: request authentication and the [`Caller`]
//! extractor every API handler takes.
//!
//! A request is authenticated by an `SDK-HMAC-SHA256` signature (AK/SK, as the vendor's
//! SDKs sign) or by an `X-Auth-Token` from `POST /v3/auth/tokens`. Then the project in the
//! path must be one the caller holds a grant in, and the handler asks [`Caller::require`] for
//! the action it performs. Every authentication failure looks alike to the caller.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::AppState;
use crate::domain::permission::allows;
use crate::domain::{Action, ProjectId};
use crate::sign::{self, Authorization, RequestParts};

/// Largest request body accepted (the real gateway's limit for signed bodies).
pub const MAX_BODY_BYTES: usize = 12 * 1024 * 1024;
/// Largest `X-Sdk-Date` distance from the server's clock.
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);
/// Failed attempts after which a key is locked, and for how long.
const LOCK_AFTER_FAILURES: u32 = 5;
const LOCK_FOR: Duration = Duration::from_secs(300);
/// At most this many keys are tracked for failures; beyond it the oldest entries go.
const MAX_TRACKED_FAILURES: usize = 100_000;

/// The authenticated caller of a project-scoped API request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub user_name: String,
    pub project: ProjectId,
    actions: Arc<Vec<String>>,
}

impl Caller {
    /// Fails with 403 unless the caller's policies in this project grant `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if allows(&self.actions, action) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "Policy doesn't allow {} to be performed.",
                action.as_str()
            )))
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthenticated)
    }
}

/// Tuning of authentication and abuse limits.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// Requests per second allowed to one access key or user; 0 turns the limit off.
    pub rate_limit_per_sec: u32,
    /// Requests one key may send in a burst above the rate.
    pub rate_burst: u32,
}

struct Failures {
    count: u32,
    first: Instant,
    locked_until: Option<Instant>,
}

/// Shared state of authentication: rate limiters and failed-attempt counters.
pub struct Authenticator {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    failures: DashMap<String, Failures>,
    /// Secret used to spend the same effort on unknown keys as on known ones.
    decoy_secret: String,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit_per_sec).map(|rate| {
            let burst = NonZeroU32::new(config.rate_burst.max(config.rate_limit_per_sec))
                .unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            failures: DashMap::new(),
            decoy_secret: crate::domain::ids::new_id(),
        }
    }

    fn is_locked(&self, key: &str) -> bool {
        self.failures
            .get(key)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| until > Instant::now())
    }

    /// Counts a failed attempt; the fifth within the lock period locks the key.
    pub fn record_failure(&self, key: &str) {
        if self.failures.len() >= MAX_TRACKED_FAILURES {
            let now = Instant::now();
            self.failures
                .retain(|_, f| now.duration_since(f.first) < LOCK_FOR || f.locked_until.is_some_and(|u| u > now));
        }
        let now = Instant::now();
        let mut entry = self.failures.entry(key.to_string()).or_insert(Failures {
            count: 0,
            first: now,
            locked_until: None,
        });
        if now.duration_since(entry.first) > LOCK_FOR {
            entry.count = 0;
            entry.first = now;
            entry.locked_until = None;
        }
        entry.count += 1;
        if entry.count >= LOCK_AFTER_FAILURES {
            entry.locked_until = Some(now + LOCK_FOR);
        }
    }

    fn clear_failures(&self, key: &str) {
        self.failures.remove(key);
    }

    /// Fails with 429 when `key` is over its rate.
    pub fn check_rate(&self, key: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError::Throttled {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            }
        })
    }

    /// True while `key` is locked out after repeated failures.
    pub fn locked(&self, key: &str) -> bool {
        self.is_locked(key)
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.clear_failures(key);
    }
}

/// An authenticated identity before its project is checked.
struct Identity {
    user_id: String,
    user_name: String,
    /// The project a token is scoped to; AK/SK is not scoped.
    token_project: Option<String>,
    /// Rate-limit key.
    limit_key: String,
}

fn header_pairs(parts: &Parts) -> Vec<(String, String)> {
    parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// SHA-256 hex of a token, the form tokens are stored in.
pub fn token_hash(token: &str) -> String {
    sign::sha256_hex(token.as_bytes())
}

async fn verify_signature(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
    raw_auth: &str,
) -> Result<Identity, ApiError> {
    let Some(auth) = Authorization::parse(raw_auth) else {
        return Err(ApiError::Unauthenticated);
    };
    let authn = &state.authenticator;
    if authn.locked(&auth.access_key) {
        return Err(ApiError::Unauthenticated);
    }
    let fail = || {
        authn.record_failure(&auth.access_key);
        ApiError::Unauthenticated
    };
    let signed = |h: &str| auth.signed_headers.iter().any(|s| s == h);
    if !signed(sign::DATE_HEADER) || !signed("host") || signed("x-security-token") {
        return Err(fail());
    }
    let date = parts
        .headers
        .get(sign::DATE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(sign::parse_sdk_date)
        .ok_or_else(fail)?;
    if (chrono::Utc::now() - date).abs() > MAX_CLOCK_SKEW {
        return Err(fail());
    }
    let key = state.store.find_access_key(&auth.access_key).await?;
    let headers = header_pairs(parts);
    let request = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body,
    };
    // An unknown key costs the same work as a known one and fails the same way.
    let secret = key
        .as_ref()
        .map_or(authn.decoy_secret.as_str(), |k| k.secret_key.as_str());
    let valid = sign::verify(&request, &auth, secret);
    match key {
        Some(key) if valid => {
            authn.succeeded(&auth.access_key);
            Ok(Identity {
                user_id: key.user_id,
                user_name: key.user_name,
                token_project: None,
                limit_key: format!("ak:{}", key.access_key),
            })
        }
        _ => Err(fail()),
    }
}

async fn verify_token(state: &AppState, token: &str) -> Result<Identity, ApiError> {
    let hash = token_hash(token);
    let authn = &state.authenticator;
    if authn.locked(&hash) {
        return Err(ApiError::Unauthenticated);
    }
    match state
        .store
        .find_token(&hash, crate::domain::now_ms())
        .await?
    {
        Some(t) => Ok(Identity {
            limit_key: format!("user:{}", t.user_id),
            user_id: t.user_id,
            user_name: t.user_name,
            token_project: Some(t.project_id),
        }),
        None => {
            authn.record_failure(&hash);
            Err(ApiError::Unauthenticated)
        }
    }
}

/// The project id of a `/v1/{project_id}/…` path, decoded.
fn path_project(path: &str) -> Result<ProjectId, ApiError> {
    let raw = path
        .strip_prefix("/v1/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("");
    let decoded = percent_decode_str(raw).decode_utf8_lossy();
    Ok(ProjectId::parse(&decoded)?)
}

/// Reads a body, refusing more than [`MAX_BODY_BYTES`].
pub async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match http_body_util::Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::BodyTooLarge),
        Err(_) => Err(ApiError::Invalid("the request body could not be read".into())),
    }
}

async fn authenticate_parts(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
) -> Result<Caller, ApiError> {
    let identity = if let Some(raw) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let raw = raw.to_str().map_err(|_| ApiError::Unauthenticated)?;
        verify_signature(state, parts, body, raw).await?
    } else if let Some(token) = parts.headers.get("x-auth-token") {
        let token = token.to_str().map_err(|_| ApiError::Unauthenticated)?;
        verify_token(state, token.trim()).await?
    } else {
        return Err(ApiError::Unauthenticated);
    };
    state.authenticator.check_rate(&identity.limit_key)?;

    let project = path_project(parts.uri.path())?;
    let no_access = || {
        ApiError::Forbidden(format!(
            "The caller has no access to project {project}."
        ))
    };
    if let Some(header) = parts.headers.get("x-project-id") {
        let same: bool = header.as_bytes().ct_eq(project.as_str().as_bytes()).into();
        if !same {
            return Err(no_access());
        }
    }
    if identity
        .token_project
        .as_ref()
        .is_some_and(|p| p != project.as_str())
    {
        return Err(no_access());
    }
    let actions = state
        .store
        .project_actions(&identity.user_id, project.as_str())
        .await?
        .ok_or_else(no_access)?;
    Ok(Caller {
        user_id: identity.user_id,
        user_name: identity.user_name,
        project,
        actions: Arc::new(actions),
    })
}

/// Middleware of every project-scoped API route: buffers the body (it is signed), checks the
/// caller, and hands the [`Caller`] to the handler.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    match authenticate_parts(&state, &parts, &body).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => e.into_response(),
    }
}
