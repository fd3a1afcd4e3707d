//! Handlers of the job template API, and of job services.

use axum::extract::{RawQuery, State};
use axum::Json;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{query_pairs, ApiPath};
use super::openapi::{NotFound, ProjectErrors, ProjectPath, TemplateFilterParams};
use super::AppState;
use crate::domain::ids::{lookup, simple_name};
use crate::domain::{Action, Invalid};
use crate::wire::{Page, TemplateDetail, TemplateListItem};

/// `GET /v1/{project_id}/dev-servers/jobs/templates`, filtered by `id`, `name` and `type`.
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs/templates",
    operation_id = "ListDevServerJobTemplates",
    tag = "templates",
    summary = "List job templates",
    description = "The job templates (built in, and the operator's), filtered by `id`, \
        `name` and `type`, in one page. Needs `modelarts:devserverJobTemplate:list`.",
    params(ProjectPath, TemplateFilterParams),
    responses(
        (status = 200, description = "The matching templates.", body = Page<TemplateListItem>),
        ProjectErrors,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn list_templates(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<Page<TemplateListItem>>, ApiError> {
    caller.require(Action::ListTemplates)?;
    let (mut id, mut name, mut ty) = (None, None, None);
    for (key, value) in query_pairs(raw.as_deref())? {
        let slot = match key.as_str() {
            "id" => &mut id,
            "name" => &mut name,
            "type" => &mut ty,
            _ => continue,
        };
        if value.is_empty() {
            return Err(Invalid(format!("{key} must not be empty")).into());
        }
        if slot.replace(value).is_some() {
            return Err(Invalid(format!("{key} is given more than once")).into());
        }
    }
    if let Some(v) = &id {
        lookup("id", v)?;
    }
    if let Some(v) = &name {
        lookup("name", v)?;
    }
    if let Some(v) = &ty {
        simple_name("type", v)?;
    }
    let items = state
        .templates
        .filter(id.as_deref(), name.as_deref(), ty.as_deref());
    Ok(Json(Page::whole(items)))
}

/// `GET /v1/{project_id}/dev-servers/jobs/templates/{id}`.
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs/templates/{id}",
    operation_id = "GetDevServerJobTemplate",
    tag = "templates",
    summary = "Show a job template",
    description = "One template in full. Needs `modelarts:devserverJobTemplate:get`.",
    params(
        ProjectPath,
        ("id" = String, Path, description = "The template's id.",
            example = "6f1d0c5e-4a1b-4c55-9a0e-000000000001"),
    ),
    responses(
        (status = 200, description = "The template.", body = TemplateDetail),
        ProjectErrors,
        NotFound,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn get_template(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<TemplateDetail>, ApiError> {
    caller.require(Action::GetTemplate)?;
    state
        .templates
        .by_id(&id)
        .cloned()
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("The template {id} does not exist.")))
}

/// `GET /v1/{project_id}/dev-servers/jobs/services/{id}`. No built-in template deploys
/// services, so no service exists and every id is unknown.
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs/services/{id}",
    operation_id = "GetDevServerJobService",
    tag = "templates",
    summary = "Show a job service",
    description = "A service deployed by a job. No built-in template deploys services, so \
        every id answers 404. Needs `modelarts:devserverJob:get`.",
    params(
        ProjectPath,
        ("id" = String, Path, description = "The service's id."),
    ),
    responses(ProjectErrors, NotFound),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn get_service(
    caller: Caller,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller.require(Action::GetJob)?;
    Err(ApiError::NotFound(format!(
        "The service {id} does not exist."
    )))
}
