//! The node agent protocol: an agent registers its Lite Server, long-polls for the server's
//! tasks, renews the leases of those it runs with heartbeats, uploads their output, and
//! reports each result. Every call is signed like any API call and needs the
//! `modelarts:devserverAgent:run` action.
//!
//! A lease is short (`--agent-lease`, 30 s) and renewed by the agent's heartbeats while the command
//! runs; each lease of a task has a greater epoch than the one before, and a heartbeat, an
//! upload or a report under an older epoch is refused (409), so an agent that comes back
//! after its lease was taken over can never overwrite what the new holder did. A waiting
//! lease request is woken when a task is created for its server (`store/wake.rs`) rather
//! than asking the database again and again.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{parse_json, query_pairs, ApiPath};
use super::openapi::{BodyErrors, Conflict, NotFound, ProjectErrors, ProjectPath};
use super::AppState;
use crate::domain::ids::{bounded, holds_nul, lookup};
use crate::domain::{now_ms, Action, Invalid, TaskStatus};
use crate::store::{LeaseState, LeaseTerms, NewServer, TaskLease};
use crate::wire::{
    AgentHeartbeat, AgentLease, AgentRegistration, AgentResult, AgentTask, HeartbeatAnswer,
    LeaseAnswer, TaskOutputAnswer,
};

/// Longest a lease request waits for work.
const MAX_WAIT: Duration = Duration::from_secs(20);
/// Time a task may run past its template's timeout before the server ends it (the agent
/// ends it at the timeout itself; this is the backstop for an agent that cannot).
const RUN_GRACE: Duration = Duration::from_secs(60);
use crate::wire::MAX_OUTPUT_BYTES;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `PUT /v1/{project_id}/agent/servers/{server_id}`: registers (or updates) the agent's server.
#[utoipa::path(
    put,
    path = "/v1/{project_id}/agent/servers/{server_id}",
    operation_id = "RegisterAgentServer",
    tag = "agent",
    summary = "Register a server",
    description = "Registers (or updates) the server an agent runs on, in the project; \
        a simulated server of that id is refused (409). \
        Needs `modelarts:devserverAgent:run`.",
    params(ProjectPath,
        ("server_id" = String, Path, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,64}$",
            description = "The server: 1 to 64 characters, none a control character.",
            example = "sim-server-01"),
    ),
    request_body = AgentRegistration,
    responses(
        (status = 204, description = "Registered."),
        ProjectErrors,
        BodyErrors,
        Conflict,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
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
    crate::wire::check_cloud_server(&registration.cloud_server)?;
    let registered = state
        .store
        .register_agent_server(
            &caller.project,
            NewServer {
                id: server_id.clone(),
                name,
                kind: "agent".into(),
                sim_outcome: None,
                cloud_server: registration.cloud_server,
                now_ms: now_ms(),
            },
        )
        .await?;
    if !registered {
        // A simulated server is the operator's: its tasks are not an agent's to take.
        return Err(ApiError::Conflict(format!(
            "server {server_id} is not a server agents serve (it is simulated); \
             an administrator can remove it first (`litejobs servers remove`)"
        )));
    }
    state.fleet.forget(&caller.project, &server_id);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/agent/servers/{server_id}/lease?wait=SECONDS&max=N`: the server's runnable tasks,
/// waiting up to `wait` seconds (at most 20) for some to appear.
#[utoipa::path(
    post,
    path = "/v1/{project_id}/agent/servers/{server_id}/lease",
    operation_id = "LeaseAgentTasks",
    tag = "agent",
    summary = "Lease a server's tasks",
    description = "Leases the server's runnable tasks, waiting up to `wait` seconds for \
        some to appear; each lease lasts `--agent-lease` unless renewed by a heartbeat \
        (with `renews=true`). \
        Needs `modelarts:devserverAgent:run`.",
    params(ProjectPath,
        ("server_id" = String, Path, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,64}$",
            description = "The server: 1 to 64 characters, none a control character.",
            example = "sim-server-01"),
        ("wait" = Option<u64>, Query, minimum = 0, example = 0,
            description = "Seconds to wait for work (at most 20 are waited; default 0)."),
        ("max" = Option<i64>, Query, minimum = 1, maximum = 64, example = 4,
            description = "Most tasks to lease (default 4)."),
        ("renews" = Option<bool>, Query, example = true,
            description = "The agent renews its leases with heartbeats (`litejobs agent` \
                does): each lease lasts `--agent-lease`. Without it (agents before \
                heartbeats) a lease lasts the task's whole run time."),
    ),
    responses(
        (status = 200, description = "The tasks leased (none when the wait ended first).", body = AgentLease),
        ProjectErrors,
        NotFound,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn lease_tasks(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, server_id)): ApiPath<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<AgentLease>, ApiError> {
    caller.require(Action::RunAgent)?;
    bounded("server_id", &server_id)?;
    let (mut wait, mut max, mut renews) = (Duration::ZERO, 4_i64, false);
    for (key, value) in query_pairs(raw.as_deref())? {
        match key.as_str() {
            "renews" => renews = crate::domain::filter::parse_bool("renews", &value)?,
            "wait" => {
                // A whole number of seconds that fits an int64, as the document says.
                let secs = value
                    .parse::<i64>()
                    .ok()
                    .and_then(|s| u64::try_from(s).ok())
                    .ok_or_else(|| Invalid::new("wait must be a number of seconds"))?;
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
    let project = &caller.project;
    let store = state.store.as_ref();
    if !state
        .fleet
        .heard_from(store, project, &server_id, now_ms())
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "The server {server_id} is not registered in this project."
        )));
    }
    let run_time = |job_type: &str| {
        let timeout = state
            .templates
            .by_type(job_type)
            .and_then(|t| t.timeout.parse::<u64>().ok())
            .unwrap_or(3600);
        ms(Duration::from_secs(timeout) + RUN_GRACE)
    };
    let slot = state.store.wakeups().slot(project.as_str(), &server_id);
    let deadline = tokio::time::Instant::now() + wait;
    let mut waited = false;
    loop {
        let generation = slot.generation();
        let now = now_ms();
        if !slot.known_idle(now) {
            // After a wait the caller's credentials are asked again, as a request would ask
            // them: a key deleted or a token revoked meanwhile leases nothing.
            if waited {
                caller.recheck(&state, Action::RunAgent).await?;
            }
            let terms = LeaseTerms {
                now_ms: now,
                until: now + ms(state.config.agent_lease),
                renews,
                run_time_ms: &run_time,
            };
            let leased = store
                .lease_tasks(project, &server_id, &caller.user_id, terms, max)
                .await?;
            if !leased.tasks.is_empty() {
                let tasks = leased
                    .tasks
                    .into_iter()
                    .map(|t| agent_task(&state, t))
                    .collect();
                return Ok(Json(AgentLease { tasks }));
            }
            let recheck = now + ms(crate::store::wake::IDLE_RECHECK);
            let until = leased.next_expiry.map_or(recheck, |at| at.min(recheck));
            slot.mark_idle(generation, until);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(Json(AgentLease { tasks: Vec::new() }));
        }
        // Woken by a new task, or when a lease may have lapsed, or at the deadline.
        let idle_ends = slot.idle_until().map_or(Duration::ZERO, |until| {
            Duration::from_millis(u64::try_from(until - now_ms()).unwrap_or(0))
        });
        tokio::select! {
            _ = state.shutdown.cancelled() => return Ok(Json(AgentLease { tasks: Vec::new() })),
            () = slot.woken_after(generation) => {}
            () = tokio::time::sleep_until(deadline.min(now + idle_ends)) => {}
        }
        waited = true;
    }
}

/// A leased task with what the agent needs to run it.
fn agent_task(state: &AppState, t: crate::store::LeasedTask) -> AgentTask {
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
        lease_epoch: t.lease_epoch,
    }
}

/// Largest number of leases one heartbeat may name.
const MAX_HELD: usize = 1024;

/// `POST …/agent/servers/{server_id}/heartbeat` with the leases the agent holds: renews
/// them, and says which of their tasks ended (a deleted job's are cancelled) or were taken
/// over, so that the agent stops running those.
#[utoipa::path(
    post,
    path = "/v1/{project_id}/agent/servers/{server_id}/heartbeat",
    operation_id = "AgentHeartbeat",
    tag = "agent",
    summary = "Renew leases",
    description = "Marks the server as heard from, renews the leases the agent holds, and \
        says which of their tasks ended or were leased again (stop those). The body may \
        be empty. Needs `modelarts:devserverAgent:run`.",
    params(ProjectPath,
        ("server_id" = String, Path, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,64}$",
            description = "The server: 1 to 64 characters, none a control character.",
            example = "sim-server-01"),
    ),
    request_body(content = Option<AgentHeartbeat>, description = "The leases held (optional)."),
    responses(
        (status = 200, description = "Where each lease stands.", body = HeartbeatAnswer),
        ProjectErrors,
        BodyErrors,
        NotFound,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, server_id)): ApiPath<(String, String)>,
    body: Bytes,
) -> Result<Json<HeartbeatAnswer>, ApiError> {
    caller.require(Action::RunAgent)?;
    bounded("server_id", &server_id)?;
    let beat: AgentHeartbeat = if body.iter().all(u8::is_ascii_whitespace) {
        AgentHeartbeat::default()
    } else {
        parse_json(&body)?
    };
    if beat.tasks.len() > MAX_HELD {
        return Err(Invalid(format!("a heartbeat names at most {MAX_HELD} leases")).into());
    }
    for held in &beat.tasks {
        bounded("tasks[].task_id", &held.task_id)?;
    }
    let now = now_ms();
    let store = state.store.as_ref();
    if !state
        .fleet
        .heard_from(store, &caller.project, &server_id, now)
        .await?
    {
        return Err(ApiError::NotFound(format!(
            "The server {server_id} is not registered in this project."
        )));
    }
    let held: Vec<(String, i64)> = beat
        .tasks
        .iter()
        .map(|h| (h.task_id.clone(), h.lease_epoch))
        .collect();
    let until = now + ms(state.config.agent_lease);
    let states = store
        .renew_leases(&caller.project, &server_id, &caller.user_id, &held, until)
        .await?;
    let tasks = held
        .into_iter()
        .zip(states)
        .map(|((task_id, _), state)| match state {
            LeaseState::Held { .. } => LeaseAnswer {
                task_id,
                state: "held".into(),
                status: None,
                message: None,
            },
            LeaseState::Ended { status, message } => LeaseAnswer {
                task_id,
                state: "ended".into(),
                status: Some(status),
                message: Some(message),
            },
            LeaseState::Lost => LeaseAnswer {
                task_id,
                state: "lost".into(),
                status: None,
                message: None,
            },
        })
        .collect();
    Ok(Json(HeartbeatAnswer {
        lease_until: until,
        tasks,
    }))
}

/// The `lease_epoch` a call names in its query, if it does.
fn epoch_of(raw: Option<&str>) -> Result<Option<i64>, Invalid> {
    query_pairs(raw)
        .map_err(|e| Invalid(e.to_string()))?
        .into_iter()
        .find(|(k, _)| k == "lease_epoch")
        .map(|(_, v)| {
            v.parse::<i64>()
                .map_err(|_| Invalid::new("lease_epoch must be a whole number"))
        })
        .transpose()
}

/// Keeps the last `max` bytes of `text`, cut at a character boundary.
fn tail(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = text.len() - max;
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        text = text.split_off(cut);
    }
    text
}

/// Text as the database can hold it: a NUL byte (which PostgreSQL's text cannot hold)
/// becomes U+FFFD.
fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

/// `PUT …/agent/servers/{server_id}/tasks/{task_id}/output?lease_epoch=N`: the tail of the
/// task's output so far (text; its last 1 MiB is kept).
#[utoipa::path(
    put,
    path = "/v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/output",
    operation_id = "PutAgentTaskOutput",
    tag = "agent",
    summary = "Upload a task's output",
    description = "Replaces the task's output with the body (text; its last 1 MiB is \
        kept), while the task runs under the agent's lease. Needs \
        `modelarts:devserverAgent:run`.",
    params(ProjectPath,
        ("server_id" = String, Path, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,64}$",
            description = "The server: 1 to 64 characters, none a control character.",
            example = "sim-server-01"),
        ("task_id" = String, Path, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,64}$",
            description = "The task."),
        ("lease_epoch" = Option<i64>, Query,
            description = "The epoch of the lease the task runs under."),
    ),
    request_body(content = String, content_type = "text/plain", description = "The output so far."),
    responses(
        (status = 204, description = "Kept."),
        ProjectErrors,
        BodyErrors,
        Conflict,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn put_output(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, server_id, task_id)): ApiPath<(String, String, String)>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    caller.require(Action::RunAgent)?;
    bounded("server_id", &server_id)?;
    bounded("task_id", &task_id)?;
    let epoch = epoch_of(raw.as_deref())?;
    let text = storable(tail(
        String::from_utf8_lossy(&body).into_owned(),
        MAX_OUTPUT_BYTES,
    ));
    let lease = TaskLease {
        server_id: &server_id,
        owner: &caller.user_id,
        epoch,
    };
    let kept = state
        .store
        .put_task_output(&caller.project, &task_id, lease, &text, now_ms())
        .await?;
    if kept {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_under_lease(&task_id, &server_id))
    }
}

fn not_under_lease(task_id: &str, server_id: &str) -> ApiError {
    ApiError::Conflict(format!(
        "The task {task_id} is not running under this lease on server {server_id} (it \
         ended, was cancelled, was leased again, or does not exist)."
    ))
}

/// `POST …/agent/servers/{server_id}/tasks/{task_id}/result`: ends a task `SUCCESS` or
/// `FAILED`. A task that already ended, was cancelled or was leased again answers 409.
#[utoipa::path(
    post,
    path = "/v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/result",
    operation_id = "ReportAgentTaskResult",
    tag = "agent",
    summary = "Report a task's result",
    description = "Ends the task `SUCCESS` or `FAILED`. A task that already ended, was \
        cancelled or was leased again answers 409. Needs `modelarts:devserverAgent:run`.",
    params(ProjectPath,
        ("server_id" = String, Path, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,64}$",
            description = "The server: 1 to 64 characters, none a control character.",
            example = "sim-server-01"),
        ("task_id" = String, Path, pattern = r"^[^\u0000-\u001F\u007F-\u009F]{1,64}$",
            description = "The task."),
    ),
    request_body = AgentResult,
    responses(
        (status = 204, description = "The task ended."),
        ProjectErrors,
        BodyErrors,
        Conflict,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
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
    // The stored summary stays bounded: its last 64 KiB.
    let message = storable(tail(result.message, 65_536));
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
                epoch: result.lease_epoch,
            }),
        )
        .await?;
    if ended {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_under_lease(&task_id, &server_id))
    }
}

/// `GET /v1/{project_id}/dev-servers/jobs/{id}/tasks/{task_id}/output`: the tail of a task's
/// output as its agent last uploaded it (the job's `get` permission).
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs/{id}/tasks/{task_id}/output",
    operation_id = "GetDevServerJobTaskOutput",
    tag = "jobs",
    summary = "Show a task's output",
    description = "The tail of a task's output, as its agent last uploaded it (simulated \
        servers upload none). Needs `modelarts:devserverJob:get`.",
    params(ProjectPath,
        ("id" = String, Path, min_length = 1, max_length = 64, description = "The job's id."),
        ("task_id" = String, Path, min_length = 1, max_length = 64, description = "The task's id."),
    ),
    responses(
        (status = 200, description = "The output.", body = TaskOutputAnswer),
        ProjectErrors,
        NotFound,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn get_output(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, job_id, task_id)): ApiPath<(String, String, String)>,
) -> Result<Json<TaskOutputAnswer>, ApiError> {
    caller.require(Action::GetJob)?;
    lookup("id", &job_id)?;
    lookup("task_id", &task_id)?;
    let found = if holds_nul(&job_id) || holds_nul(&task_id) {
        None
    } else {
        state
            .store
            .task_output(&caller.project, &job_id, &task_id)
            .await?
    };
    let output = found.ok_or_else(|| {
        ApiError::NotFound(format!(
            "The task {task_id} of job {job_id} has no output (yet)."
        ))
    })?;
    Ok(Json(TaskOutputAnswer {
        task_id: output.task_id,
        output: output.output,
        update_at: output.update_at,
    }))
}
