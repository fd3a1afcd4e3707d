//! Handlers of the job API: list, create, show and delete Lite Server jobs.

use std::collections::HashSet;
use std::io::Write as _;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{parse_json, query_pairs, ApiPath};
use super::openapi::{
    BodyErrors, Conflict, JobFilterParams, NotFound, PageParams, ProjectErrors, ProjectPath,
};
use super::AppState;
use crate::audit::Resources;
use crate::domain::filter::ListJobsQuery;
use crate::domain::ids::{bounded, holds_nul, lookup, new_id, simple_name};
use crate::domain::{now_ms, Action, Invalid, MAX_SERVERS_PER_JOB};
use crate::store::{IdempotencyKey, NewJob};
use crate::wire::{DeleteJobsRequest, JobCreateRequest, JobDetail, JobListItem, Page};

/// Most items one job may carry.
pub const MAX_ITEMS_PER_JOB: usize = 100;
/// Most job ids one delete may name.
pub const MAX_IDS_PER_DELETE: usize = 1000;

/// `GET /v1/{project_id}/dev-servers/jobs`: the project's jobs, newest first, filtered by
/// `id`, `name`, `type`, `status` and `visible`, with an exact total.
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs",
    operation_id = "ListDevServerJobs",
    tag = "jobs",
    summary = "List jobs",
    description = "The project's jobs, newest first unless `sort_key`/`sort_dir` say \
        otherwise, filtered by `id`, `name`, `type`, `status` and `visible`, with an exact \
        `total`. Without `limit` one page holds every matching job (up to the maximum page \
        size). Deleted jobs stay listed as `DELETED` until retention purges them. Needs \
        `modelarts:devserverJob:list`.",
    params(ProjectPath, JobFilterParams, PageParams),
    responses(
        (status = 200, description = "The page of matching jobs.", body = Page<JobListItem>),
        ProjectErrors,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Action::ListJobs)?;
    let max = state.config.max_page_size;
    let pairs =
        crate::emulator::strict::list_pairs(state.emulator.strict, query_pairs(raw.as_deref())?);
    let query = ListJobsQuery::parse(&pairs, max)?;
    let page = state.store.list_jobs(&caller.project, &query, max).await?;
    let n = query.page.numbers(page.total, max);
    // The store wrote the items' JSON; the page wraps it as `Page<JobListItem>` would.
    let mut body = Vec::with_capacity(page.data.len() + 100);
    // Writing to a Vec cannot fail.
    let _ = write!(body, "{{\"current\":{},\"data\":", n.current);
    body.extend_from_slice(&page.data);
    let _ = write!(
        body,
        ",\"pages\":{},\"size\":{},\"total\":{}}}",
        n.pages, n.size, page.total
    );
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response())
}

fn validate_create(req: &JobCreateRequest) -> Result<(), Invalid> {
    simple_name("name", &req.name)?;
    if let Some(d) = &req.description {
        simple_name("description", d)?;
    }
    simple_name("type", &req.job_type)?;
    if req.server_ids.is_empty() || req.server_ids.len() > MAX_SERVERS_PER_JOB {
        return Err(Invalid(format!(
            "server_ids must name 1 to {MAX_SERVERS_PER_JOB} servers"
        )));
    }
    let mut seen = HashSet::new();
    for id in &req.server_ids {
        bounded("server_ids[]", id)?;
        if !seen.insert(id) {
            return Err(Invalid(format!("server_ids names {id} more than once")));
        }
    }
    if req.items.is_empty() || req.items.len() > MAX_ITEMS_PER_JOB {
        return Err(Invalid(format!(
            "items must hold 1 to {MAX_ITEMS_PER_JOB} items"
        )));
    }
    for item in &req.items {
        simple_name("items[].type", &item.item_type)?;
        // Each entry is passed to the task's command as an environment variable: a name
        // holds no `=`, and neither a name nor a value a NUL.
        for (key, value) in item.spec.iter().flatten() {
            bounded("items[].spec key", key)?;
            if key.contains('=') {
                return Err(Invalid(format!("items[].spec key {key} holds '='")));
            }
            if value.contains('\0') {
                return Err(Invalid(format!(
                    "items[].spec.{key} holds a NUL character, which no command can be given"
                )));
            }
        }
    }
    Ok(())
}

fn client_token(headers: &HeaderMap) -> Result<Option<String>, Invalid> {
    let Some(raw) = headers.get("x-client-token") else {
        return Ok(None);
    };
    let token = raw
        .to_str()
        .ok()
        .filter(|t| (1..=64).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| {
            Invalid::new("X-Client-Token must be 1 to 64 visible ASCII characters (no spaces)")
        })?;
    Ok(Some(token.to_string()))
}

/// `POST /v1/{project_id}/dev-servers/jobs`: creates a job with one task per server.
/// With `X-Client-Token`, repeating the same request answers the same job for 24 hours.
#[utoipa::path(
    post,
    path = "/v1/{project_id}/dev-servers/jobs",
    operation_id = "CreateDevServerJob",
    tag = "jobs",
    summary = "Create a job",
    description = "Creates a job of the template of its `type`, with one task per server \
        (every server must be known in the project; each item's `spec` must satisfy the \
        template's parameters). The job starts `PROCESSING` and becomes `FINISHED` when \
        every task ended. Nothing is created when the request is refused. Needs \
        `modelarts:devserverJob:create`.",
    params(
        ProjectPath,
        ("X-Client-Token" = Option<String>, Header, pattern = "^[!-~]{1,64}$",
            description = "Makes the creation idempotent for 24 hours: the same token with \
                the same body answers the same job; with another body, 409."),
    ),
    request_body = JobCreateRequest,
    responses(
        (status = 200, description = "The job, as created.", body = JobDetail),
        ProjectErrors,
        BodyErrors,
        Conflict,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn create_job(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(Extension<Resources>, Json<JobDetail>), ApiError> {
    caller.require(Action::CreateJob)?;
    let req: JobCreateRequest = if state.emulator.strict {
        without_visible(&body)?
    } else {
        parse_json(&body)?
    };
    let detail = create(&state, &caller, req, &headers).await?;
    Ok((Extension(Resources(vec![detail.id.clone()])), Json(detail)))
}

/// A create body read in strict mode: `visible` is no field of the cloud's request, so it
/// is ignored whatever it holds, as every unknown field is.
fn without_visible(body: &[u8]) -> Result<JobCreateRequest, ApiError> {
    let mut value: serde_json::Value = parse_json(body)?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("visible");
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::Invalid(format!("invalid request body: {e}")))
}

/// Creates the job `req` describes in the caller's project, after the checks of the API
/// (the console creates through it too); `headers` may carry `X-Client-Token`.
pub async fn create(
    state: &AppState,
    caller: &Caller,
    req: JobCreateRequest,
    headers: &HeaderMap,
) -> Result<JobDetail, ApiError> {
    caller.require(Action::CreateJob)?;
    validate_create(&req)?;
    let template = state.templates.by_type(&req.job_type).ok_or_else(|| {
        ApiError::Invalid(format!(
            "type {} names no job template; see GET .../dev-servers/jobs/templates",
            req.job_type
        ))
    })?;
    for (index, item) in req.items.iter().enumerate() {
        state
            .templates
            .check_spec(template, index, item.spec.as_ref())
            .map_err(ApiError::Internal)??;
    }
    let now = now_ms();
    let idempotency = client_token(headers)?.map(|token| {
        // Writing a request of strings and maps cannot fail.
        let request = serde_json::to_vec(&req).unwrap_or_default();
        IdempotencyKey {
            token,
            // Hash of the caller and the parsed request (formatting differences do not count
            // as another body): a token is its user's, and another user's create with it is
            // another request, answered as one (409), whatever its body: never with the job
            // of the user who made it, which that user may not be allowed to see.
            body_hash: request_hash(&caller.user_id, &request),
            earlier_hash: Some(crate::sign::sha256_hex(&request)),
            not_before_ms: now - state.config.idempotency_window.as_millis() as i64,
        }
    });
    let job = NewJob {
        id: new_id(),
        name: req.name,
        description: req.description,
        job_type: req.job_type,
        template_id: Some(template.id.clone()),
        user_name: caller.user_name.clone(),
        // Strict mode: `visible` is no field of the cloud's request, so it changes nothing.
        visible: state.emulator.strict || req.visible.unwrap_or(true),
        is_reboot: req.is_reboot.unwrap_or(false),
        items: req.items,
        server_ids: req.server_ids,
        now_ms: now,
    };
    Ok(state
        .store
        .create_job(&caller.project, job, idempotency)
        .await?)
}

/// The hash an idempotency key keeps of its request (as JSON): the user's id, then the
/// request.
fn request_hash(user_id: &str, request: &[u8]) -> String {
    let mut text = user_id.as_bytes().to_vec();
    text.push(0);
    text.extend_from_slice(request);
    crate::sign::sha256_hex(&text)
}

/// `GET /v1/{project_id}/dev-servers/jobs/{id}`: one job with its items and tasks.
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs/{id}",
    operation_id = "GetDevServerJob",
    tag = "jobs",
    summary = "Show a job",
    description = "One job with its items and one task per server (a deleted job too, \
        until retention purges it). Needs `modelarts:devserverJob:get`.",
    params(
        ProjectPath,
        ("id" = String, Path, min_length = 1, max_length = 64, description = "The job's id."),
    ),
    responses(
        (status = 200, description = "The job.", body = JobDetail),
        ProjectErrors,
        NotFound,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, id)): ApiPath<(String, String)>,
) -> Result<Response, ApiError> {
    caller.require(Action::GetJob)?;
    lookup("id", &id)?;
    if holds_nul(&id) {
        return Err(ApiError::NotFound(format!("The job {id} does not exist.")));
    }
    // A job on a thousand servers, whose tasks printed much, has a detail of tens of MB.
    let _turn = state.bodies.building().await;
    let found = state.store.get_job(&caller.project, &id).await?;
    let detail =
        found.ok_or_else(|| ApiError::NotFound(format!("The job {id} does not exist.")))?;
    let body = serde_json::to_vec(&detail).map_err(|e| ApiError::Internal(e.into()))?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `DELETE /v1/{project_id}/dev-servers/jobs` with `{"job_ids": [...]}`: soft-deletes the
/// jobs, cancelling their running tasks, and answers them (now `DELETED`).
#[utoipa::path(
    delete,
    path = "/v1/{project_id}/dev-servers/jobs",
    operation_id = "DeleteDevServerJobs",
    tag = "jobs",
    summary = "Delete jobs",
    description = "Soft-deletes the named jobs of the project: their running tasks are \
        cancelled (`SKIPPED`) and they stay listed as `DELETED`. Unknown ids are ignored. \
        Answers the page of the jobs deleted. Needs `modelarts:devserverJob:delete`.",
    params(ProjectPath),
    request_body = DeleteJobsRequest,
    responses(
        (status = 200, description = "The jobs deleted, now `DELETED`.", body = Page<JobListItem>),
        ProjectErrors,
        BodyErrors,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn delete_jobs(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> Result<(Extension<Resources>, Json<Page<JobListItem>>), ApiError> {
    caller.require(Action::DeleteJobs)?;
    let req: DeleteJobsRequest = parse_json(&body)?;
    if req.job_ids.is_empty() || req.job_ids.len() > MAX_IDS_PER_DELETE {
        return Err(ApiError::Invalid(format!(
            "job_ids must name 1 to {MAX_IDS_PER_DELETE} jobs"
        )));
    }
    for id in &req.job_ids {
        lookup("job_ids[]", id)?;
    }
    // Unknown ids are ignored, and one holding U+0000 is known to none.
    let mut ids: Vec<String> = req
        .job_ids
        .into_iter()
        .filter(|id| !holds_nul(id))
        .collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        return Ok((
            Extension(Resources::default()),
            Json(Page::whole(Vec::new())),
        ));
    }
    let deleted = state
        .store
        .delete_jobs(&caller.project, &ids, now_ms())
        .await?;
    let found = Resources(deleted.iter().map(|j| j.id.clone()).collect());
    Ok((Extension(found), Json(Page::whole(deleted))))
}
