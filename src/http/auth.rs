//! Who is calling, and what may they do: request authentication and the [`Caller`]
//! extractor every API handler takes.
//!
//! A request is authenticated by an `SDK-HMAC-SHA256` signature (AK/SK, as the vendor's
//! SDKs sign) or by an `X-Auth-Token` from `POST /v3/auth/tokens`. Then the project in the
//! path must be one the caller holds a grant in, and the handler asks [`Caller::require`] for
//! the action it performs. Every authentication failure looks alike to the caller.
//!
//! The access key, token and grant lookups are cached for a few seconds
//! ([`AuthConfig::cache_ttl`]), so a warm request asks the database nothing; revoking a
//! key, a token or a grant takes effect within that time.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::extract::read_body;
use super::lockout::FailureTracker;
use super::lookup_cache::LookupCache;
use super::AppState;
use crate::audit;
use crate::domain::permission::allows;
use crate::domain::{Action, ProjectId};
use crate::metrics::AuthFailure;
use crate::sign::{self, Authorization, RequestParts};

/// Largest `X-Sdk-Date` distance from the server's clock.
pub const MAX_CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(15);

/// The authenticated caller of a project-scoped API request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user_id: String,
    pub user_name: String,
    pub project: ProjectId,
    /// The access key the request was signed with (none for a token).
    pub access_key: Option<String>,
    /// The hash of the token presented (none for a signature).
    token_hash: Option<String>,
    actions: Arc<Vec<String>>,
}

impl Caller {
    /// True while what let the caller in still holds: its token (not revoked or expired) or
    /// its access key, and a grant of `action` in its project; looked up as a request's are
    /// (through the lookup cache). For a request that goes on, such as a live watch.
    pub async fn still_allowed(&self, state: &AppState, action: Action) -> Result<bool, ApiError> {
        match self.recheck(state, action).await {
            Ok(()) => Ok(true),
            Err(ApiError::Unauthenticated | ApiError::Forbidden(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// [`Caller::still_allowed`] as a request's answer would say it: 401 when its token or
    /// key no longer holds, 403 when its grant of `action` is gone.
    pub async fn recheck(&self, state: &AppState, action: Action) -> Result<(), ApiError> {
        let store = state.store.as_ref();
        let cache = &state.authenticator.cache;
        let holds = match (&self.token_hash, &self.access_key) {
            (Some(hash), _) => cache
                .token(store, hash, crate::domain::now_ms())
                .await?
                .is_some_and(|t| {
                    t.user_id == self.user_id && t.project_id == self.project.as_str()
                }),
            (None, Some(key)) => cache
                .access_key(store, key)
                .await?
                .is_some_and(|k| k.user_id == self.user_id),
            (None, None) => false,
        };
        if !holds {
            return Err(ApiError::Unauthenticated);
        }
        let actions = cache
            .project_actions(store, &self.user_id, self.project.as_str())
            .await?;
        if actions.is_some_and(|a| allows(&a, action)) {
            Ok(())
        } else {
            Err(not_allowed(action))
        }
    }

    /// Fails with 403 unless the caller's policies in this project grant `action`.
    pub fn require(&self, action: Action) -> Result<(), ApiError> {
        if allows(&self.actions, action) {
            Ok(())
        } else {
            Err(not_allowed(action))
        }
    }
}

/// The 403 of a caller whose policies do not grant `action`.
fn not_allowed(action: Action) -> ApiError {
    ApiError::Forbidden(format!(
        "Policy doesn't allow {} to be performed.",
        action.as_str()
    ))
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
    /// How long a looked-up access key, token or grant is reused without asking the
    /// database again; zero asks every time. A revoked key, token or grant keeps working for
    /// at most this long.
    pub cache_ttl: Duration,
    /// Accept the public demo credentials of `serve --simulate` (its access key, and tokens of
    /// its user in its project): only a simulating server on a loopback address does.
    pub demo_account: bool,
    /// Failed attempts from one address (any credential) within five minutes after which
    /// that address is refused for the rest of them; 0 turns the limit off.
    pub failures_per_address: u32,
}

impl Authenticator {
    /// How often a request that goes on (a live watch) checks its caller again: as often as
    /// a revocation reaches new requests, and at most once a second.
    pub fn recheck_every(&self) -> Duration {
        self.cache.ttl().max(Duration::from_secs(1))
    }
}

/// Default of [`AuthConfig::cache_ttl`].
pub const DEFAULT_AUTH_CACHE_TTL: Duration = Duration::from_secs(5);
/// Shared state of authentication: rate limiters, failed-attempt counters and the lookup
/// cache.
pub struct Authenticator {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    /// Failed attempts per credential and address, and per address.
    pub failures: FailureTracker,
    /// Secret used to spend the same effort on unknown keys as on known ones.
    decoy_secret: String,
    cache: LookupCache,
    demo_account: bool,
}

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Self {
        let limiter = NonZeroU32::new(config.rate_limit_per_sec).map(|rate| {
            let burst =
                NonZeroU32::new(config.rate_burst.max(config.rate_limit_per_sec)).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limiter,
            failures: FailureTracker::new(config.failures_per_address),
            decoy_secret: crate::domain::ids::new_id(),
            cache: LookupCache::new(config.cache_ttl),
            demo_account: config.demo_account,
        }
    }

    /// Forgets what was looked up and every failure and lock: an emulator's reset, after
    /// which users, keys and grants are those of the start state, and a suite's tests of
    /// wrong credentials have left nothing behind.
    pub fn forget(&self) {
        self.cache.clear();
        self.failures.clear();
    }

    /// True for the public demo credentials on a server that does not accept them (another
    /// replica on the same database may be a simulating one on loopback).
    fn refuses_demo(&self, access_key: Option<&str>, user_project: Option<(&str, &str)>) -> bool {
        use crate::iam::demo;
        !self.demo_account
            && (access_key == Some(demo::ACCESS_KEY)
                || user_project == Some((demo::USER, demo::PROJECT_ID)))
    }

    /// True for the demo user's public password on a server that does not accept the demo
    /// credentials, whatever project it asks a token for.
    pub fn refuses_demo_password(&self, user_name: &str, password: &str) -> bool {
        use crate::iam::demo;
        !self.demo_account && user_name == demo::USER && password == demo::PASSWORD
    }

    /// Fails with 429 when `key` is over its rate.
    pub fn check_rate(&self, key: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&key.to_string()).map_err(|not_until| {
            crate::metrics::rate_limited();
            self.failures
                .counters
                .throttled
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let wait = not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ));
            ApiError::Throttled {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            }
        })
    }

    /// True while `credential` is locked out at `addr` after repeated failures (or `addr`
    /// failed too often).
    pub fn locked(&self, credential: &str, addr: IpAddr) -> bool {
        let locked = self.failures.locked(credential, addr);
        if locked {
            crate::metrics::auth_lockout();
        }
        locked
    }

    /// Counts a failed attempt (of `kind`) with `credential` from `addr`.
    pub fn record_failure(&self, kind: AuthFailure, credential: &str, addr: IpAddr) {
        crate::metrics::auth_failure(kind);
        self.failures.failed(credential, addr);
    }

    /// Forgets the failures of `credential` from `addr` after a success there.
    pub fn succeeded(&self, credential: &str, addr: IpAddr) {
        self.failures.succeeded(credential, addr);
    }

    /// Drops a revoked token from this server's cache, so it is refused at once here
    /// (other replicas refuse it within the cache's TTL).
    pub fn forget_token(&self, token_hash: &str) {
        self.cache.forget_token(token_hash);
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
    /// The access key a signature was made with.
    access_key: Option<String>,
    /// The hash of the token presented.
    token_hash: Option<String>,
}

/// The request's headers as text: borrowed, but for a value that is not UTF-8 (whose
/// replacement characters then fail the signature).
fn header_texts(parts: &Parts) -> Vec<(&str, Cow<'_, str>)> {
    parts
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v.as_bytes())))
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
    let authn = &state.authenticator;
    let peer = peer_ip(parts);
    let Some(auth) = Authorization::parse(raw_auth) else {
        authn.record_failure(AuthFailure::Malformed, "", peer);
        return Err(ApiError::Unauthenticated);
    };
    if authn.locked(&auth.access_key, peer) || authn.refuses_demo(Some(&auth.access_key), None) {
        return Err(ApiError::Unauthenticated);
    }
    let fail = || {
        authn.record_failure(AuthFailure::Signature, &auth.access_key, peer);
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
    let key = authn
        .cache
        .access_key(state.store.as_ref(), &auth.access_key)
        .await?;
    let texts = header_texts(parts);
    let headers: Vec<(&str, &str)> = texts.iter().map(|(n, v)| (*n, v.as_ref())).collect();
    let request = RequestParts {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &headers,
        body,
    };
    // An unknown key costs the same work as a known one and fails the same way.
    let opened = key.as_ref().map(|k| match &state.sealer {
        Some(sealer) => sealer.open(&k.access_key, &k.secret_key),
        None => crate::secrets::open_unsealed(&k.access_key, &k.secret_key),
    });
    let secret = match &opened {
        Some(Ok(secret)) => secret.as_str(),
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot open a stored secret key");
            authn.decoy_secret.as_str()
        }
        None => authn.decoy_secret.as_str(),
    };
    // A derived key is made for one service: this one.
    let scoped_here = auth.scope.as_deref().is_none_or(sign::scope_serves);
    let valid =
        scoped_here && sign::verify(&request, &auth, secret) && matches!(opened, Some(Ok(_)));
    match key {
        Some(key) if valid => {
            authn.succeeded(&auth.access_key, peer);
            Ok(Identity {
                user_id: key.user_id,
                user_name: key.user_name,
                token_project: None,
                limit_key: format!("ak:{}", key.access_key),
                access_key: Some(key.access_key),
                token_hash: None,
            })
        }
        _ => Err(fail()),
    }
}

async fn verify_token(state: &AppState, token: &str, peer: IpAddr) -> Result<Identity, ApiError> {
    let hash = token_hash(token);
    let authn = &state.authenticator;
    if authn.locked(&hash, peer) {
        return Err(ApiError::Unauthenticated);
    }
    match authn
        .cache
        .token(state.store.as_ref(), &hash, crate::domain::now_ms())
        .await?
    {
        Some(t) if authn.refuses_demo(None, Some((&t.user_name, &t.project_id))) => {
            Err(ApiError::Unauthenticated)
        }
        Some(t) => Ok(Identity {
            limit_key: format!("user:{}", t.user_id),
            user_id: t.user_id,
            user_name: t.user_name,
            token_project: Some(t.project_id),
            access_key: None,
            token_hash: Some(hash),
        }),
        None => {
            authn.record_failure(AuthFailure::Token, &hash, peer);
            Err(ApiError::Unauthenticated)
        }
    }
}

/// The address the request came from (the TCP peer), or the unspecified address when the
/// request did not come through a listener (a test calling the router).
pub fn peer_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |ConnectInfo(addr)| addr.ip())
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

/// Who signed or presented a token for the request.
async fn identify(state: &AppState, parts: &Parts, body: &[u8]) -> Result<Identity, ApiError> {
    if let Some(raw) = parts.headers.get(axum::http::header::AUTHORIZATION) {
        let raw = raw.to_str().map_err(|_| ApiError::Unauthenticated)?;
        verify_signature(state, parts, body, raw).await
    } else if let Some(token) = parts.headers.get("x-auth-token") {
        let token = token.to_str().map_err(|_| ApiError::Unauthenticated)?;
        verify_token(state, token.trim(), peer_ip(parts)).await
    } else {
        state
            .authenticator
            .record_failure(AuthFailure::Missing, "", peer_ip(parts));
        Err(ApiError::Unauthenticated)
    }
}

/// The caller `identity` is in the request's project, within its rate.
async fn authorize(
    state: &AppState,
    parts: &Parts,
    identity: Identity,
) -> Result<Caller, ApiError> {
    state.authenticator.check_rate(&identity.limit_key)?;

    let project = path_project(parts.uri.path())?;
    let no_access =
        || ApiError::Forbidden(format!("The caller has no access to project {project}."));
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
    caller_in(state, identity, project).await
}

/// The caller `identity` with the actions it holds in `project`, or 403 without a grant there.
async fn caller_in(
    state: &AppState,
    identity: Identity,
    project: ProjectId,
) -> Result<Caller, ApiError> {
    let no_access =
        || ApiError::Forbidden(format!("The caller has no access to project {project}."));
    let actions = state
        .authenticator
        .cache
        .project_actions(state.store.as_ref(), &identity.user_id, project.as_str())
        .await?
        .ok_or_else(no_access)?;
    Ok(Caller {
        user_id: identity.user_id,
        user_name: identity.user_name,
        project,
        access_key: identity.access_key,
        token_hash: identity.token_hash,
        actions,
    })
}

/// A user authenticated for a request that names no project (the IAM calls the SDKs
/// make on their own), within the user's rate.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: String,
    pub user_name: String,
    /// The project a token is scoped to; AK/SK is not scoped.
    pub token_project: Option<String>,
}

/// Authenticates a request that names no project, as [`authenticate`] does the others.
pub async fn authenticate_user(
    state: &AppState,
    parts: &Parts,
    body: &[u8],
) -> Result<User, ApiError> {
    let identity = identify(state, parts, body).await?;
    state.authenticator.check_rate(&identity.limit_key)?;
    Ok(User {
        user_id: identity.user_id,
        user_name: identity.user_name,
        token_project: identity.token_project,
    })
}

/// The caller presenting `token` (a console session's), in the project it is scoped to,
/// authenticated and rate-limited as an `X-Auth-Token` request is.
pub async fn token_caller(state: &AppState, token: &str, peer: IpAddr) -> Result<Caller, ApiError> {
    let identity = verify_token(state, token, peer).await?;
    state.authenticator.check_rate(&identity.limit_key)?;
    let project = identity
        .token_project
        .as_deref()
        .map(ProjectId::parse)
        .ok_or(ApiError::Unauthenticated)??;
    caller_in(state, identity, project).await
}

/// The access key named by a request's `Authorization` header, if any (its id only).
fn presented_key(parts: &Parts) -> Option<String> {
    let raw = parts.headers.get(axum::http::header::AUTHORIZATION)?;
    Authorization::parse(raw.to_str().ok()?).map(|a| a.access_key)
}

/// Middleware of every project-scoped API route: buffers the body (it is signed), checks the
/// caller, and hands the [`Caller`] to the handler.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    // The body's share of the memory budget is held until the answer is made.
    let (body, _budget) = match read_body(body, &state.bodies).await {
        Ok(read) => read,
        Err(e) => return e.into_response(),
    };
    let identity = match identify(&state, &parts, &body).await {
        Ok(identity) => identity,
        Err(e) => {
            let mut response = e.into_response();
            response.extensions_mut().insert(audit::Identity {
                project_id: path_project(parts.uri.path()).ok().map(|p| p.to_string()),
                access_key: presented_key(&parts),
                ..audit::Identity::default()
            });
            return response;
        }
    };
    // Who asked, for the audit trail: made only for the routes it records.
    let audited = parts
        .extensions
        .get::<MatchedPath>()
        .and_then(|route| audit::action_of(parts.method.as_str(), route.as_str()))
        .is_some();
    let known = audited.then(|| audit::Identity {
        user_id: Some(identity.user_id.clone()),
        user_name: Some(identity.user_name.clone()),
        project_id: path_project(parts.uri.path()).ok().map(|p| p.to_string()),
        access_key: identity.access_key.clone(),
    });
    let mut response = match authorize(&state, &parts, identity).await {
        Ok(caller) => {
            parts.extensions.insert(caller);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(e) => e.into_response(),
    };
    if let Some(known) = known {
        response.extensions_mut().insert(known);
    }
    response
}
