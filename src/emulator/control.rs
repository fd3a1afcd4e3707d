//! The control API of the emulator, under `/_litejobs/` (only with `--simulate`; the
//! administrator's credentials, AK/SK-signed or a token; errors in the API's format):
//!
//! | route | what |
//! |---|---|
//! | `POST /_litejobs/reset` | back to the start state; `{"project_id": …}` for one project |
//! | `POST /_litejobs/seed` | loads a seed document (see `seed.rs`) |
//! | `GET /_litejobs/export` | the current state as a seed document |
//! | `GET`, `POST`, `DELETE /_litejobs/faults` | the fault rules: list, add one, remove all |
//! | `DELETE /_litejobs/faults/{id}` | removes one rule |
//! | `GET`, `DELETE /_litejobs/requests` | the request journal (`?after=SEQ&limit=N`); clears it |

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::faults::RuleSpec;
use super::seed::{self, Seed};
use crate::domain::ProjectId;
use crate::http::auth::authenticate_user;
use crate::http::error::ApiError;
use crate::http::extract::{parse_json, query_pairs, read_body};
use crate::http::AppState;
use crate::iam::demo;
use crate::worker::SimulationConfig;

/// What a reset brings back besides the accounts made at first start.
#[derive(Debug, Clone)]
pub struct StartState {
    pub simulation: SimulationConfig,
    /// The seed given at start (`--seed`).
    pub seed: Option<Seed>,
}

/// The user whose credentials the control API takes.
pub const ADMIN_USER: &str = "admin";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/_litejobs/reset", post(reset))
        .route("/_litejobs/seed", post(load_seed))
        .route("/_litejobs/export", get(export))
        .route(
            "/_litejobs/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_litejobs/faults/{id}", delete(remove_fault))
        .route(
            "/_litejobs/requests",
            get(list_requests).delete(clear_requests),
        )
}

/// The request's parts and body, once its caller proved to be the administrator.
async fn admin(state: &AppState, request: Request) -> Result<(Parts, Bytes), ApiError> {
    let (parts, body) = request.into_parts();
    let (body, _budget) = read_body(body, &state.bodies).await?;
    let user = authenticate_user(state, &parts, &body).await?;
    if user.user_name != ADMIN_USER {
        return Err(ApiError::Forbidden(
            "The emulator's control API is for the administrator.".into(),
        ));
    }
    Ok((parts, body))
}

fn invalid(e: impl std::fmt::Display) -> ApiError {
    ApiError::Invalid(e.to_string())
}

/// A seed's or a store's failure: the seed's own mistakes are the client's.
fn seed_failure(e: anyhow::Error) -> ApiError {
    if let Some(store) = e.downcast_ref::<crate::store::StoreError>() {
        return match store {
            crate::store::StoreError::Conflict(_) | crate::store::StoreError::NotFound(_) => {
                ApiError::Invalid(format!("the seed cannot be loaded: {e}"))
            }
            // The database out of reach or busy: 503, as for any request.
            retryable if retryable.is_retryable() => ApiError::Unavailable(e),
            _ => ApiError::Internal(e),
        };
    }
    if e.downcast_ref::<seed::SeedError>().is_some()
        || e.downcast_ref::<crate::domain::Invalid>().is_some()
    {
        return ApiError::Invalid(e.to_string());
    }
    ApiError::Internal(e)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    #[serde(default)]
    project_id: Option<String>,
}

async fn reset(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (_, body) = admin(&state, request).await?;
    let req: ResetRequest = if body.iter().all(u8::is_ascii_whitespace) {
        ResetRequest::default()
    } else {
        parse_json(&body)?
    };
    // The project named by id or name; its id from here on.
    let project = match req.project_id.as_deref() {
        Some(named) if crate::domain::ids::holds_nul(named) => {
            return Err(ApiError::NotFound(format!("no project {named:?}")))
        }
        Some(named) => match state
            .emulator
            .find_project(state.store.as_ref(), named)
            .await?
        {
            Some(found) => Some(ProjectId::parse(&found.id)?),
            None => return Err(ApiError::NotFound(format!("no project {named}"))),
        },
        None => None,
    };
    let erased = reset_state(&state, project.as_ref())
        .await
        .map_err(seed_failure)?;
    Ok(Json(serde_json::json!({ "erased_jobs": erased })).into_response())
}

/// Back to the start state: one project's jobs (and the start seed's jobs of it), or
/// everything: jobs, projects and users made since, fault rules, the journal, and the
/// authentication's cache and lock-outs.
pub async fn reset_state(state: &AppState, project: Option<&ProjectId>) -> anyhow::Result<u64> {
    let store = state.store.as_ref();
    let start = state.emulator.start_state.clone();
    let seed = start
        .as_ref()
        .and_then(|s| s.seed.clone())
        .unwrap_or_default();
    let fleet = start.as_ref().map(|s| &s.simulation);
    let through = store.last_job_event().await?;
    let erased = store.erase_jobs(project).await?;
    state
        .emulator
        .erased
        .record(project.map(ProjectId::as_str), through);
    match project {
        Some(p) => {
            let mut jobs = Seed::default();
            for job in &seed.jobs {
                let named = store.find_project(&job.project).await?;
                if named.is_some_and(|named| named.id == p.as_str()) {
                    jobs.jobs.push(job.clone());
                }
            }
            seed::load(
                store,
                state.sealer.as_deref(),
                &state.templates,
                &jobs,
                fleet,
            )
            .await?;
        }
        None => {
            let keep_projects: Vec<String> = seed
                .projects
                .iter()
                .flat_map(|p| p.id.iter().chain(std::iter::once(&p.name)).cloned())
                .collect();
            for p in store.list_projects().await? {
                let kept = p.name == "default"
                    || p.id == demo::PROJECT_ID
                    || keep_projects.contains(&p.id)
                    || keep_projects.contains(&p.name);
                if !kept {
                    store.delete_project(&ProjectId::parse(&p.id)?).await?;
                }
            }
            let keep_users: Vec<&str> = seed.users.iter().map(|u| u.name.as_str()).collect();
            for u in store.list_users().await? {
                if u.name != ADMIN_USER
                    && u.name != demo::USER
                    && !keep_users.contains(&u.name.as_str())
                {
                    store.delete_user(&u.id).await?;
                }
            }
            state.emulator.faults.clear();
            state.emulator.journal.clear();
            if state.emulator.demo_account {
                demo::ensure(store, state.sealer.as_deref()).await?;
            }
            seed::load(
                store,
                state.sealer.as_deref(),
                &state.templates,
                &seed,
                fleet,
            )
            .await?;
            // Last: what was looked up before (users and keys now gone, grants now other)
            // is not trusted for the rest of its time, and no lock-out outlives the reset.
            state.authenticator.forget();
        }
    }
    Ok(erased)
}

async fn load_seed(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (_, body) = admin(&state, request).await?;
    let mut seed: Seed = parse_json(&body)?;
    seed.check().map_err(invalid)?;
    state
        .emulator
        .resolve_seed(state.store.as_ref(), &mut seed)
        .await?;
    let start = state.emulator.start_state.as_ref();
    seed::load(
        state.store.as_ref(),
        state.sealer.as_deref(),
        &state.templates,
        &seed,
        start.map(|s| &s.simulation),
    )
    .await
    .map_err(seed_failure)?;
    Ok(Json(serde_json::json!({
        "projects": seed.projects.len(),
        "users": seed.users.len(),
        "servers": seed.servers.len(),
        "jobs": seed.jobs.len(),
    }))
    .into_response())
}

async fn export(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    admin(&state, request).await?;
    let seed = seed::export(state.store.as_ref(), state.sealer.as_deref())
        .await
        .map_err(ApiError::Internal)?;
    Ok(Json(seed).into_response())
}

async fn list_faults(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    admin(&state, request).await?;
    Ok(Json(serde_json::json!({ "faults": state.emulator.faults.list() })).into_response())
}

async fn add_fault(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let (_, body) = admin(&state, request).await?;
    let spec: RuleSpec = parse_json(&body)?;
    let rule = state.emulator.faults.add(spec).map_err(invalid)?;
    Ok((axum::http::StatusCode::CREATED, Json(rule)).into_response())
}

async fn clear_faults(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    admin(&state, request).await?;
    state.emulator.faults.clear();
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

async fn remove_fault(
    State(state): State<AppState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    admin(&state, request).await?;
    let id: u64 = id
        .parse()
        .map_err(|_| ApiError::Invalid("a fault rule's id is a number".into()))?;
    if state.emulator.faults.remove(id) {
        Ok(axum::http::StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::NotFound(format!("no fault rule {id}")))
    }
}

async fn list_requests(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, _) = admin(&state, request).await?;
    let mut after = None;
    let mut limit = usize::MAX;
    for (key, value) in query_pairs(parts.uri.query())? {
        match key.as_str() {
            "after" => {
                after = Some(
                    value
                        .parse()
                        .map_err(|_| invalid("after is a whole number"))?,
                )
            }
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("limit is a whole number of 1 or more"))?
            }
            _ => {}
        }
    }
    let entries = state.emulator.journal.entries(after, limit);
    Ok(Json(serde_json::json!({ "requests": entries })).into_response())
}

async fn clear_requests(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, ApiError> {
    admin(&state, request).await?;
    state.emulator.journal.clear();
    Ok(axum::http::StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    #[test]
    fn a_seed_s_failures_are_sorted_as_any_request_s() {
        let answer = |e: StoreError| seed_failure(anyhow::Error::from(e));
        assert!(matches!(
            answer(StoreError::Unavailable("closed".into())),
            ApiError::Unavailable(_)
        ));
        assert!(matches!(
            answer(StoreError::Conflict("a name".into())),
            ApiError::Invalid(_)
        ));
        assert!(matches!(
            answer(StoreError::internal("a bug")),
            ApiError::Internal(_)
        ));
        let mistake = anyhow::Error::from(seed::SeedError("a bad field".into()));
        assert!(matches!(seed_failure(mistake), ApiError::Invalid(_)));
    }
}
