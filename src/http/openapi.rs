//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the wire types, served without authentication at `/openapi.json`, with
//! an explorer (Swagger UI, vendored into the binary) at `/docs`.
//!
//! What the annotations share lives here: the path and query parameters the handlers read by
//! hand, the error answers of the error table (`error.rs`) as reusable response sets, and
//! the two security schemes. `docs/openapi.json` is the committed copy; a test fails when
//! it and this document part.

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, SecurityScheme};
use utoipa::openapi::RefOr;
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use self::responses::ERROR_ANSWERS;
pub use self::responses::{
    BodyErrors, Conflict, NotFound, ProjectErrors, RevokeErrors, ServiceErrors, TokenErrors,
};
use super::AppState;
use crate::wire::ErrorBody;

mod responses;

/// Where the document is served.
pub const DOCUMENT_PATH: &str = "/openapi.json";
/// Where the explorer is served.
pub const EXPLORER_PATH: &str = "/docs";
/// The licence and notice of the vendored Swagger UI, served with it at `/docs/LICENSE`.
const SWAGGER_UI_LICENSE: &str = include_str!("openapi/swagger-ui-LICENSE.txt");

/// The name of the AK/SK signature scheme in the document.
pub const AKSK: &str = "AkSkSignature";
/// The name of the IAM token scheme in the document.
pub const TOKEN: &str = "IamToken";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "litejobs",
        description = "A self-hosted implementation of the ModelArts Lite Server job API: \
            jobs, job templates and services under `/v1/{project_id}/dev-servers/jobs`, \
            project-scoped tokens under `/v3/auth/tokens`, the node agents' protocol under \
            `/v1/{project_id}/agent`, and the service's health and metrics.\n\n\
            Every answer carries `X-Request-Id`; every error answer is \
            `{\"error_code\", \"error_msg\", \"request_id\"}`. Calls under `/v1/` are \
            authenticated either by an `SDK-HMAC-SHA256` signature (the cloud SDKs' \
            default) or by an `X-Auth-Token` from `POST /v3/auth/tokens`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::jobs::list_jobs,
        super::jobs::create_job,
        super::jobs::delete_jobs,
        super::jobs::get_job,
        super::watch::watch_jobs,
        super::watch::watch_job,
        super::agent::get_output,
        super::templates::list_templates,
        super::templates::get_template,
        super::templates::get_service,
        super::agent::register_server,
        super::agent::lease_tasks,
        super::agent::heartbeat,
        super::agent::put_output,
        super::agent::report_result,
        super::iam::issue_token,
        super::iam::revoke_token,
        crate::emulator::keystone::list_projects,
        health,
        ready,
        metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Components),
    tags(
        (name = "jobs", description = "Lite Server jobs: list, create, show, delete, and \
            watch them change."),
        (name = "templates", description = "Job templates, and the services jobs deploy."),
        (name = "agent", description = "The node agents' protocol (internal to litejobs; \
            changes together with the agent)."),
        (name = "auth", description = "Project-scoped tokens, in the shape of the cloud's \
            IAM password authentication."),
        (name = "service", description = "Liveness, readiness and metrics."),
    ),
)]
struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc
}

/// The document as the committed `docs/openapi.json` holds it: pretty JSON, newline ended.
pub fn document_json() -> String {
    let mut text = document().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// `/openapi.json` and the explorer under `/docs`; neither needs authentication. A file the
/// explorer does not have is answered as every unknown path is, in the error format.
pub fn routes() -> Router<AppState> {
    Router::new()
        .merge(
            SwaggerUi::new(EXPLORER_PATH)
                .url(DOCUMENT_PATH, document())
                // Its validator badge would send the document's address to swagger.io.
                .config(utoipa_swagger_ui::Config::default().validator_url("none")),
        )
        .route("/docs/LICENSE", get(explorer_license))
        .layer(axum::middleware::map_response(unknown_file))
}

async fn unknown_file(response: axum::response::Response) -> axum::response::Response {
    if response.status() == axum::http::StatusCode::NOT_FOUND {
        super::error::ApiError::NoSuchApi.into_response()
    } else {
        response
    }
}

async fn explorer_license() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        SWAGGER_UI_LICENSE,
    )
}

/// The security schemes and the error answers every operation refers to.
struct Components;

impl Modify for Components {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for answer in ERROR_ANSWERS {
            components
                .responses
                .insert(answer.name.to_string(), RefOr::T(answer.response()));
        }
        components.add_security_scheme(
            AKSK,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "An AK/SK signature, as the cloud SDKs send it: `Authorization: \
                 SDK-HMAC-SHA256 Access=<AK>, SignedHeaders=<names>, Signature=<hex>`, with \
                 `X-Sdk-Date` (at most 15 minutes off) and `Host` among the signed headers. \
                 The signature is the HMAC-SHA256, keyed by the SK, of the canonical request \
                 (method, path, sorted query, signed headers, body hash); see docs/api.md. \
                 `X-Project-Id`, when sent, must name the path's project.",
            ))),
        );
        components.add_security_scheme(
            TOKEN,
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-Auth-Token",
                "A project-scoped token from `POST /v3/auth/tokens` (answered in \
                 `X-Subject-Token`), valid 24 hours unless revoked. Used only when the \
                 request carries no `Authorization`.",
            ))),
        );
    }
}

/// The project of a call under `/v1/`.
#[derive(IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ProjectPath {
    /// The project: 1 to 64 letters, digits or hyphens.
    #[param(
        pattern = "^[A-Za-z0-9-]{1,64}$",
        example = "5f3c9e2a7d104b6c8e1f0a2b3c4d5e6f"
    )]
    project_id: String,
}

/// Filters of the job list (and of its live watch): each applies only when given, and
/// they combine with AND. A filter given twice or empty is refused; unknown parameters are
/// ignored.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct JobFilterParams {
    /// Exact job id (1 to 64 characters).
    #[param(min_length = 1, max_length = 64)]
    id: Option<String>,
    /// Case-insensitive substring of the name (1 to 64 characters).
    #[param(min_length = 1, max_length = 64)]
    name: Option<String>,
    /// Exact type.
    #[param(rename = "type", pattern = r"^[-_.a-zA-Z0-9]{1,64}$")]
    job_type: Option<String>,
    #[param(inline)]
    status: Option<crate::wire::JobStatusName>,
    /// `true` or `false`, in any case: jobs created with (or without) `"visible": false`.
    visible: Option<bool>,
}

/// Paging and order of the job list (extensions: the SDK sends none of them).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageParams {
    /// Jobs per page: 1 to the server's maximum page size (`--max-page-size`, 1000 by
    /// default). Without it the page holds every matching job up to that maximum.
    #[param(minimum = 1)]
    limit: Option<u64>,
    /// Jobs to skip (default 0).
    #[param(minimum = 0, maximum = 9_223_372_036_854_775_807_u64)]
    offset: Option<u64>,
    /// `create_at` (default), `update_at` or `name`; ties are broken by id.
    #[param(inline)]
    sort_key: Option<SortKeyName>,
    /// `desc` (default, newest first) or `asc`.
    #[param(inline)]
    sort_dir: Option<SortDirName>,
}

/// The column the list is ordered by.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SortKeyName {
    CreateAt,
    UpdateAt,
    Name,
}

/// The order's direction.
#[derive(utoipa::ToSchema, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[allow(dead_code)]
pub enum SortDirName {
    Asc,
    Desc,
}

/// Filters of the template list; each applies only when given.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TemplateFilterParams {
    /// Exact template id (1 to 64 characters).
    #[param(min_length = 1, max_length = 64)]
    id: Option<String>,
    /// Exact template name (1 to 64 characters).
    #[param(min_length = 1, max_length = 64)]
    name: Option<String>,
    /// Exact type.
    #[param(rename = "type", pattern = r"^[-_.a-zA-Z0-9]{1,64}$")]
    template_type: Option<String>,
}

/// Where a watch resumes.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ResumeParams {
    /// The id of the last event received: the stream starts with every later change (as
    /// the `Last-Event-ID` header does, which wins when both are sent).
    #[param(minimum = 0)]
    last_event_id: Option<i64>,
}

/// Body of `GET /health` and `GET /ready`.
#[derive(utoipa::ToSchema, serde::Serialize)]
pub struct HealthAnswer {
    /// `ok` (alive) or `ready`.
    #[schema(example = "ok")]
    pub status: String,
    /// `sqlite` or `postgres`.
    #[schema(example = "sqlite")]
    pub backend: String,
}

// The service's own routes, whose handlers (in `mod.rs`) stay free of annotations.

#[utoipa::path(
    get,
    path = "/health",
    operation_id = "Health",
    tag = "service",
    summary = "Liveness",
    description = "200 when the database answers. No authentication.",
    responses(
        (status = 200, description = "Alive.", body = HealthAnswer),
        ServiceErrors,
    ),
)]
#[allow(dead_code)]
fn health() {}

#[utoipa::path(
    get,
    path = "/ready",
    operation_id = "Ready",
    tag = "service",
    summary = "Readiness",
    description = "200 when the database answers and holds every migration of this \
        server; else 503 with the reason. No authentication.",
    responses(
        (status = 200, description = "Ready.", body = HealthAnswer),
        ServiceErrors,
    ),
)]
#[allow(dead_code)]
fn ready() {}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "Metrics",
    tag = "service",
    summary = "Prometheus metrics",
    description = "The service's metrics in Prometheus' text format (on the API's address \
        unless `--metrics-addr` gives them one of their own). No authentication.",
    responses(
        (status = 200, description = "The metrics.", content_type = "text/plain", body = String),
        ServiceErrors,
    ),
)]
#[allow(dead_code)]
fn metrics() {}

#[cfg(test)]
mod tests {
    use super::*;

    fn query_parameters(path: &str, method: &str) -> Vec<String> {
        let doc = serde_json::to_value(document()).expect("the document is JSON");
        let parameters = doc["paths"][path][method]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        parameters
            .iter()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str().map(str::to_string))
            .collect()
    }

    #[test]
    fn the_job_list_documents_every_parameter_it_reads() {
        let mut documented = query_parameters("/v1/{project_id}/dev-servers/jobs", "get");
        documented.sort();
        let mut read: Vec<String> = crate::domain::filter::LIST_JOBS_PARAMETERS
            .iter()
            .map(|p| p.to_string())
            .collect();
        read.sort();
        assert_eq!(documented, read);
    }

    #[test]
    fn the_watch_documents_the_list_filters() {
        let documented = query_parameters("/v1/{project_id}/dev-servers/jobs/events", "get");
        for filter in ["id", "name", "type", "status", "visible", "last_event_id"] {
            assert!(
                documented.iter().any(|p| p == filter),
                "{filter} is missing"
            );
        }
    }

    #[test]
    fn every_operation_names_known_security_schemes() {
        let doc = serde_json::to_value(document()).expect("the document is JSON");
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!(schemes[AKSK]["name"], "Authorization");
        assert_eq!(schemes[TOKEN]["name"], "X-Auth-Token");
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("path item") {
                let names: Vec<&String> = operation["security"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r.as_object().expect("requirement").keys())
                    .collect();
                for name in &names {
                    assert!(
                        schemes.get(name.as_str()).is_some(),
                        "{method} {path} names {name}"
                    );
                }
                if path.starts_with("/v1/") {
                    assert_eq!(names, [AKSK, TOKEN], "{method} {path}");
                }
            }
        }
    }
}
