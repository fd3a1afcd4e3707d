//! The node agent protocol: an agent registers its Lite Server, long-polls for the server's
//! tasks (each leased to it for the template's timeout) and reports each result. Every call
//! is signed like any API call and needs the `modelarts:devserverAgent:run` action.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{parse_json, query_pairs, ApiPath};
use super::AppState;
use crate::domain::ids::bounded;
use crate::domain::{now_ms, Action, Invalid, TaskStatus};
use crate::store::{NewServer, TaskLease};
use crate::wire::{AgentLease, AgentRegistration, AgentResult, AgentTask};

/// Longest a lease request waits for work.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// How often a waiting lease request looks for new tasks.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// Time an agent has beyond the template's timeout to report.
const LEASE_GRACE_SECS: u64 = 60;

/// `PUT /v1/{project_id}/agent/servers/{server_id}`: registers (or updates) the agent's server.
pub async fn register_server(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, server_id)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::RunAgent)?;
    bounded("server_id", &server_id)?;
    let registration: AgentRegistration = parse_json(&body)?;
    let name = if registration.name.is_empty() {
        server_id.clone()
    } else {
        registration.name
    };
    bounded("name", &name)?;
    state
        .store
        .upsert_server(
            &caller.project,
            NewServer {
                id: server_id,
                name,
                kind: "agent".into(),
                sim_outcome: None,
                cloud_server: registration.cloud_server,
                now_ms: now_ms(),
            },
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/agent/servers/{server_id}/lease?wait=SECONDS&max=N`: the server's runnable tasks,
/// waiting up to `wait` seconds (at most 20) for some to appear.
pub async fn lease_tasks(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, server_id)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AgentLease>, ApiError> {
    caller.require(Action::RunAgent)?;
    bounded("server_id", &server_id)?;
    let (mut wait, mut max) = (Duration::ZERO, 4_i64);
    for (key, value) in query_pairs(raw.as_deref()) {
        match key.as_str() {
            "wait" => {
                let secs: u64 = value
                    .parse()
                    .map_err(|_| Invalid::new("wait must be a number of seconds"))?;
                wait = Duration::from_secs(secs).min(MAX_WAIT);
            }
            "max" => {
                max = value
                    .parse::<i64>()
                    .ok()
                    .filter(|m| (1..=64).contains(m))
                    .ok_or_else(|| Invalid::new("max must be between 1 and 64"))?;
            }
            _ => {}
        }
    }
    if !state
        .store
        .touch_server(&caller.project, &server_id, now_ms())
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "The server {server_id} is not registered in this project."
        )));
    }
    // A lease covers the longest template timeout; each task's own timeout is in it.
    let longest = state
        .templates
        .all()
        .iter()
        .filter_map(|t| t.timeout.parse::<u64>().ok())
        .max()
        .unwrap_or(3600);
    let lease_ms = i64::try_from(
        longest
            .saturating_add(LEASE_GRACE_SECS)
            .saturating_mul(1000),
    )
    .unwrap_or(i64::MAX / 2);
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now = now_ms();
        let until = now + lease_ms;
        let leased = state
            .store
            .lease_tasks(
                &caller.project,
                &server_id,
                &caller.user_id,
                now,
                until,
                max,
            )
            .await?;
        if !leased.is_empty() {
            let tasks = leased
                .into_iter()
                .map(|t| {
                    let template = state.templates.by_type(&t.job_type);
                    AgentTask {
                        command: template.map(|t| t.cmd.clone()).unwrap_or_default(),
                        params: template
                            .map(|t| {
                                t.params
                                    .iter()
                                    .map(|p| (p.name.clone(), p.value.clone()))
                                    .collect()
                            })
                            .unwrap_or_default(),
                        timeout_secs: template
                            .and_then(|t| t.timeout.parse().ok())
                            .unwrap_or(3600),
                        task_id: t.task_id,
                        job_id: t.job_id,
                        job_type: t.job_type,
                        items: t.items,
                        lease_until: t.lease_until,
                    }
                })
                .collect();
            return Ok(Json(AgentLease { tasks }));
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(Json(AgentLease { tasks: Vec::new() }));
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(Json(AgentLease { tasks: Vec::new() })),
            _ = tokio::time::sleep(POLL_EVERY) => {}
        }
    }
}

/// `POST …/agent/servers/{server_id}/tasks/{task_id}/result`: ends a task `SUCCESS` or
/// `FAILED`. A task that already ended (or was cancelled) answers 409.
pub async fn report_result(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, server_id, task_id)): ApiPath<(String, String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::RunAgent)?;
    bounded("server_id", &server_id)?;
    bounded("task_id", &task_id)?;
    let result: AgentResult = parse_json(&body)?;
    let status = match TaskStatus::parse(&result.status)? {
        s @ (TaskStatus::Success | TaskStatus::Failed) => s,
        _ => return Err(Invalid::new("status must be SUCCESS or FAILED").into()),
    };
    // A command's output may hold NUL bytes, which PostgreSQL's text cannot: each is kept
    // as U+FFFD. The stored output stays bounded: its last 64 KiB.
    let mut message = if result.message.contains('\0') {
        result.message.replace('\0', "\u{FFFD}")
    } else {
        result.message
    };
    if message.len() > 65_536 {
        let mut cut = message.len() - 65_536;
        while !message.is_char_boundary(cut) {
            cut += 1;
        }
        message = message.split_off(cut);
    }
    let ended = state
        .store
        .complete_task(
            &caller.project,
            &task_id,
            status,
            &message,
            now_ms(),
            Some(TaskLease {
                server_id: &server_id,
                owner: &caller.user_id,
                until: result.lease_until,
            }),
        )
        .await?;
    if ended {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::Conflict(format!(
            "The task {task_id} is not running under this lease on server {server_id} (it \
             ended, was cancelled, was leased again, or does not exist)."
        )))
    }
}
