//! `GET /v3/projects`: the IAM (Keystone) project listing the official SDKs call on their own
//! when `BasicCredentials` carry no project id: `?name=<region>` finds the caller's project
//! of that region. Answers the caller's projects (those it holds a grant in) in Keystone's
//! shape; the demo project answers under the configured region's name.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use crate::http::auth::authenticate_user;
use crate::http::error::ApiError;
use crate::http::extract::{query_pairs, read_body};
use crate::http::openapi::TokenErrors;
use crate::http::AppState;

/// The one domain (account) every project of this service belongs to.
pub const DOMAIN_ID: &str = "1a7e5e2c9d3f4b8a9c0d1e2f3a4b5c6d";

#[derive(Serialize, utoipa::ToSchema)]
struct Links {
    #[serde(rename = "self")]
    this: String,
    previous: Option<String>,
    next: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
struct SelfLink {
    #[serde(rename = "self")]
    this: String,
}

#[derive(Serialize, utoipa::ToSchema)]
struct KeystoneProject {
    id: String,
    name: String,
    domain_id: &'static str,
    parent_id: &'static str,
    description: String,
    enabled: bool,
    is_domain: bool,
    links: SelfLink,
}

#[derive(Serialize, utoipa::ToSchema)]
struct ProjectList {
    projects: Vec<KeystoneProject>,
    links: Links,
}

/// `GET /v3/projects[?name=…]`, AK/SK-signed or with a token.
#[utoipa::path(
    get,
    path = "/v3/projects",
    operation_id = "KeystoneListProjects",
    tag = "auth",
    summary = "List the caller's projects",
    description = "The IAM (Keystone) project listing the official SDKs call on their own \
        when their credentials carry no project id: `?name=<region>` finds the caller's \
        project of that region. Answers the projects the caller holds a grant in.",
    params(
        ("name" = Option<String>, Query, description = "Only the projects of this name (a region, e.g. `cn-north-4`)."),
        ("enabled" = Option<bool>, Query, description = "Only enabled (`true`) or disabled projects; every project is enabled."),
    ),
    responses(
        (status = 200, description = "The caller's projects, in Keystone's shape.", body = ProjectList),
        TokenErrors,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn list_projects(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let (body, _budget) = read_body(body, &state.bodies).await?;
    let user = authenticate_user(&state, &parts, &body).await?;
    let mut name = None;
    let mut enabled = None;
    for (key, value) in query_pairs(parts.uri.query())? {
        match key.as_str() {
            "name" => name = Some(value),
            "enabled" => enabled = Some(crate::domain::filter::parse_bool("enabled", &value)?),
            // Keystone's other filters (domain_id, parent_id, is_domain, paging) narrow
            // nothing here: every project is enabled and in the one domain.
            _ => {}
        }
    }
    let host = parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let base = format!("http://{host}/v3/projects");
    let mut seen = std::collections::BTreeSet::new();
    let mut projects = Vec::new();
    for (project_id, _policy) in state.store.list_grants(&user.user_id).await? {
        if !seen.insert(project_id.clone()) {
            continue;
        }
        if user
            .token_project
            .as_ref()
            .is_some_and(|p| *p != project_id)
        {
            continue;
        }
        let Some(project) = state.store.find_project(&project_id).await? else {
            continue;
        };
        let shown = state.emulator.project_name(&project).to_string();
        if name.as_ref().is_some_and(|n| *n != shown) || enabled == Some(false) {
            continue;
        }
        projects.push(KeystoneProject {
            links: SelfLink {
                this: format!("{base}/{}", project.id),
            },
            id: project.id,
            name: shown,
            domain_id: DOMAIN_ID,
            parent_id: DOMAIN_ID,
            description: String::new(),
            enabled: true,
            is_domain: false,
        });
    }
    let this = match parts.uri.query() {
        Some(q) => format!("{base}?{q}"),
        None => base,
    };
    let mut response = Json(ProjectList {
        projects,
        links: Links {
            this,
            previous: None,
            next: None,
        },
    })
    .into_response();
    let trace = crate::http::error::current_request_id();
    if let Ok(value) = axum::http::HeaderValue::from_str(&trace) {
        response.headers_mut().insert("x-iam-trace-id", value);
    }
    Ok(response)
}
