//! `POST /v3/auth/tokens` and `DELETE /v3/auth/tokens`: project-scoped tokens in the shape
//! of the cloud's IAM password authentication, answered in `X-Subject-Token`.

use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::auth::{peer_ip, token_hash};
use super::error::ApiError;
use super::extract::{parse_json, read_body};
use super::openapi::{RevokeErrors, TokenErrors};
use super::AppState;
use crate::domain::ids::holds_nul;
use crate::domain::now_ms;
use crate::metrics::AuthFailure;
use crate::store::{ProjectRecord, TokenGrounds, UserRecord};

/// Body of `POST /v3/auth/tokens`: a password authentication scoped to one project.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"auth": {
    "identity": {"methods": ["password"], "password": {"user": {
        "name": "demo", "password": "demo-password", "domain": {"name": "demo"}}}},
    "scope": {"project": {"id": "5f3c9e2a7d104b6c8e1f0a2b3c4d5e6f"}}
}}))]
struct TokenRequest {
    auth: AuthBody,
}

#[derive(Deserialize, ToSchema)]
struct AuthBody {
    identity: Identity,
    /// Required: the project the token is for.
    scope: Option<Scope>,
}

#[derive(Deserialize, ToSchema)]
struct Identity {
    /// Must include `password`.
    methods: Vec<String>,
    /// Required.
    password: Option<PasswordIdentity>,
}

#[derive(Deserialize, ToSchema)]
struct PasswordIdentity {
    user: PasswordUser,
}

/// The user, by `name` or `id`.
#[derive(Deserialize, ToSchema)]
struct PasswordUser {
    name: Option<String>,
    id: Option<String>,
    password: String,
    /// The user's domain: accepted, not checked.
    #[allow(dead_code)]
    #[schema(value_type = Option<serde_json::Value>)]
    domain: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize, ToSchema)]
struct Scope {
    /// Required.
    project: Option<ScopeProject>,
}

/// The project, by `id` or `name`.
#[derive(Deserialize, ToSchema)]
struct ScopeProject {
    id: Option<String>,
    name: Option<String>,
}

/// Answer of `POST /v3/auth/tokens`; the token itself is in `X-Subject-Token`.
#[derive(Serialize, ToSchema)]
struct TokenAnswer {
    token: TokenInfo,
}

#[derive(Serialize, ToSchema)]
struct TokenInfo {
    #[schema(example = json!(["password"]))]
    methods: Vec<String>,
    /// ISO 8601, UTC.
    #[schema(example = "2026-12-06T08:00:00.000000Z")]
    issued_at: String,
    /// ISO 8601, UTC.
    #[schema(example = "2026-12-07T08:00:00.000000Z")]
    expires_at: String,
    user: NamedRef,
    project: NamedRef,
    /// The policies the user holds in the project.
    roles: Vec<PolicyRef>,
}

#[derive(Serialize, ToSchema)]
struct NamedRef {
    id: String,
    name: String,
}

#[derive(Serialize, ToSchema)]
struct PolicyRef {
    #[schema(example = "ModelArts FullAccess")]
    name: String,
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// Issues a token for a user's password, scoped to one project the user holds a grant in.
#[utoipa::path(
    post,
    path = "/v3/auth/tokens",
    operation_id = "KeystoneCreateUserTokenByPassword",
    tag = "auth",
    summary = "Get a token",
    description = "Issues a project-scoped token for a user's password, in the shape of \
        the cloud's IAM password authentication; the token is answered in \
        `X-Subject-Token` and is valid 24 hours. Repeated failures for one name lock it out \
        for a while. No authentication.",
    request_body = TokenRequest,
    responses(
        (status = 201, description = "The token's details.", body = TokenAnswer,
            headers(("X-Subject-Token" = String, description = "The token, for `X-Auth-Token`."))),
        TokenErrors,
    ),
)]
pub async fn issue_token(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let peer = peer_ip(&parts);
    let (body, _budget) = read_body(body, &state.bodies).await?;
    let req: TokenRequest = parse_json(&body)?;
    let auth = req.auth;
    if !auth.identity.methods.iter().any(|m| m == "password") {
        return Err(ApiError::Invalid(
            "auth.identity.methods must include \"password\"".into(),
        ));
    }
    let password = auth
        .identity
        .password
        .ok_or_else(|| ApiError::Invalid("auth.identity.password is required".into()))?;
    let user_ref = password.user.id.or(password.user.name).ok_or_else(|| {
        ApiError::Invalid("auth.identity.password.user needs a name or id".into())
    })?;
    let scope = auth
        .scope
        .and_then(|s| s.project)
        .and_then(|p| p.id.or(p.name))
        .ok_or_else(|| {
            ApiError::Invalid("auth.scope.project with an id or a name is required".into())
        })?;

    let user = password_user(&state, &user_ref, &password.user.password, peer).await?;
    let project = granted_project(&state, &user, &scope).await?;
    let (token, issued, expires) =
        new_token(&state, &user, &project, password_grounds(&user)?).await?;
    let roles = state
        .store
        .list_grants(&user.id)
        .await?
        .into_iter()
        .filter(|(p, _)| *p == project.id)
        .map(|(_, name)| PolicyRef { name })
        .collect();
    let body = TokenAnswer {
        token: TokenInfo {
            methods: vec!["password".into()],
            issued_at: iso(issued),
            expires_at: iso(expires),
            user: NamedRef {
                id: user.id.clone(),
                name: user.name.clone(),
            },
            project: NamedRef {
                id: project.id.clone(),
                name: state.emulator.project_name(&project).to_string(),
            },
            roles,
        },
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    let value = HeaderValue::from_str(&token).map_err(ApiError::internal)?;
    response.headers_mut().insert("x-subject-token", value);
    response.extensions_mut().insert(crate::audit::Identity {
        user_id: Some(user.id.clone()),
        user_name: Some(user.name.clone()),
        project_id: Some(project.id.clone()),
        access_key: None,
    });
    Ok(response)
}

/// The user named (or identified) by `user_ref` when `password` is theirs; else 401, counted
/// as a failed attempt from `peer` (and refused while locked out).
pub async fn password_user(
    state: &AppState,
    user_ref: &str,
    password: &str,
    peer: std::net::IpAddr,
) -> Result<UserRecord, ApiError> {
    let authn = &state.authenticator;
    // A name holding U+0000 is no user's (nor any project's below).
    let user = if holds_nul(user_ref) {
        None
    } else {
        state.store.find_user(user_ref).await?
    };
    // A user's failures count together whether they were named by name or by id.
    let limit_key = match &user {
        Some(u) => format!("password:{}", u.id),
        None => format!("password:{user_ref}"),
    };
    if authn.locked(&limit_key, peer) {
        return Err(ApiError::Unauthenticated);
    }
    // An unknown user (or one without a password) is checked against a decoy hash: the
    // answer takes as long as a wrong password's.
    let hash = user.as_ref().and_then(|u| u.password_hash.clone());
    let checked = hash.is_some();
    let pw = password.to_string();
    let matched = tokio::task::spawn_blocking(move || {
        let hash = hash
            .as_deref()
            .unwrap_or_else(|| crate::iam::decoy_password_hash());
        crate::iam::verify_password(&pw, hash)
    })
    .await
    .map_err(ApiError::internal)?;
    let verified = checked && matched;
    let public = user
        .as_ref()
        .is_some_and(|u| authn.refuses_demo_password(&u.name, password));
    let Some(user) = user.filter(|_| verified && !public) else {
        authn.record_failure(AuthFailure::Password, &limit_key, peer);
        return Err(ApiError::Unauthenticated);
    };
    authn.succeeded(&limit_key, peer);
    Ok(user)
}

/// The project named (or identified) by `scope` when `user` holds a grant in it; else 403.
/// A name is the project's own, or the one IAM gives it (the region, for the emulator's
/// demo project).
pub async fn granted_project(
    state: &AppState,
    user: &UserRecord,
    scope: &str,
) -> Result<ProjectRecord, ApiError> {
    if let Some(id) = state.emulator.project_named(scope) {
        if state.store.project_actions(&user.id, id).await?.is_some() {
            if let Some(project) = state.store.find_project(id).await? {
                return Ok(project);
            }
        }
    }
    let project = if holds_nul(scope) {
        None
    } else {
        state.store.find_project(scope).await?
    };
    let granted = match &project {
        Some(p) => state
            .store
            .project_actions(&user.id, &p.id)
            .await?
            .is_some(),
        None => false,
    };
    project
        .filter(|_| granted)
        .ok_or_else(|| ApiError::Forbidden(format!("The user has no access to project {scope}.")))
}

/// A new token of `user` scoped to `project`: the token, when it was issued and when it
/// expires (epoch ms). It is issued on `grounds` (a password checked, or another token) and
/// refused (401) when they no longer hold: the password changed, or the token was revoked,
/// meanwhile.
pub async fn new_token(
    state: &AppState,
    user: &UserRecord,
    project: &ProjectRecord,
    grounds: TokenGrounds<'_>,
) -> Result<(String, i64, i64), ApiError> {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!(
        "MIIlj{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let issued = now_ms();
    let expires = issued + state.config.token_ttl.as_millis() as i64;
    let stored = state
        .store
        .insert_token(
            (&token_hash(&token), &user.id, &project.id),
            (issued, expires),
            grounds,
        )
        .await?;
    if !stored {
        return Err(ApiError::Unauthenticated);
    }
    Ok((token, issued, expires))
}

/// The grounds of a token issued to `user`, whose password was just checked.
pub fn password_grounds(user: &UserRecord) -> Result<TokenGrounds<'_>, ApiError> {
    user.password_hash
        .as_deref()
        .map(TokenGrounds::Password)
        .ok_or(ApiError::Unauthenticated)
}

/// Revokes a token at once on this server (other replicas refuse it within their cache's
/// time); false when it was not a live token.
pub async fn end_token(state: &AppState, token: &str) -> Result<bool, ApiError> {
    let hash = token_hash(token);
    let revoked = state.store.revoke_token(&hash, now_ms()).await?;
    state.authenticator.forget_token(&hash);
    Ok(revoked)
}

/// Revokes the token in `X-Subject-Token`; the caller proves it holds it by sending it as
/// `X-Auth-Token` too.
#[utoipa::path(
    delete,
    path = "/v3/auth/tokens",
    operation_id = "RevokeToken",
    tag = "auth",
    summary = "Revoke a token",
    description = "Revokes the token named in `X-Subject-Token`; the caller proves it holds \
        it by sending the same token as `X-Auth-Token` (403 when the two differ).",
    params(
        ("X-Subject-Token" = String, Header, description = "The token to revoke."),
    ),
    responses(
        (status = 204, description = "Revoked."),
        RevokeErrors,
    ),
    security(("IamToken" = [])),
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    parts: Parts,
) -> Result<Response, ApiError> {
    let headers = &parts.headers;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (Some(auth), Some(subject)) = (header("x-auth-token"), header("x-subject-token")) else {
        return Err(ApiError::Unauthenticated);
    };
    if auth != subject {
        return Err(ApiError::Forbidden(
            "A token can only be revoked by presenting it.".into(),
        ));
    }
    let hash = token_hash(subject);
    // Refused unchecked where the token, or the address, is locked out, as the token's
    // every other use is: else a locked-out address could go on trying tokens here.
    let peer = peer_ip(&parts);
    if state.authenticator.locked(&hash, peer) {
        return Err(ApiError::Unauthenticated);
    }
    let Some(token) = state.store.find_token(&hash, now_ms()).await? else {
        state
            .authenticator
            .record_failure(AuthFailure::Token, &hash, peer);
        return Err(ApiError::Unauthenticated);
    };
    state.store.revoke_token(&hash, now_ms()).await?;
    state.authenticator.forget_token(&hash);
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.extensions_mut().insert(crate::audit::Identity {
        user_id: Some(token.user_id),
        user_name: Some(token.user_name),
        project_id: Some(token.project_id),
        access_key: None,
    });
    Ok(response)
}
