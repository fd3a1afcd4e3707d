//! The live watch over Server-Sent Events: the changes of one job, or of the project's jobs
//! that match the list's filters, as they are committed (on any replica).
//!
//! Each event is `event: job`, `id: <seq>`, `data: {"seq", "kind", "job", "task"?}`: `kind`
//! is `created`, `task` (one of its tasks ended: `task` holds it), `finished` (its last task
//! ended) or `deleted`; `job` is the job's list item after the change. A stream opens with
//! one event whose id is where it starts (`snapshot`, the job's detail, for one job; `ready`
//! for the list); a quiet stream carries a `ping` event (no id) every 15 s. A client that
//! reconnects with `Last-Event-ID` (or `?last_event_id=`) gets an opening event with that
//! id, then every change after it (within the day the store keeps them); an id past every
//! event of this history (a database restored, an emulator in memory started again) starts
//! the stream afresh, as one without it. A list stream resuming after changes the store no
//! longer keeps opens with `expired` (`{"after": id}`) instead of `ready`, and goes on
//! from the newest change: the client lists the jobs again. (A job's stream opens with its
//! detail, which is its state whatever was missed.) A stream ends when
//! its caller's credentials no longer hold, checked as often as requests see revocations.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};

use super::auth::Caller;
use super::error::ApiError;
use super::extract::{query_pairs, ApiPath};
use super::openapi::{JobFilterParams, NotFound, ProjectErrors, ProjectPath, ResumeParams};
use super::AppState;
use crate::domain::filter::{JobFilter, ListJobsQuery};
use crate::domain::ids::{holds_nul, lookup};
use crate::domain::{Action, Invalid, ProjectId};
use crate::store::JobEvent;
use crate::watch::Hub;
use crate::wire::JobListItem;

/// Events a stream may have queued for a slow client before it is ended.
const QUEUE: usize = 256;
/// A `ping` event keeps idle streams (and the proxies between) open.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// What a stream keeps.
#[derive(Clone)]
enum Watched {
    Job(String),
    List(JobFilter),
}

impl Watched {
    fn wants(&self, project: &ProjectId, event: &JobEvent) -> bool {
        if event.project_id != project.as_str() {
            return false;
        }
        match self {
            Self::Job(id) => event.job_id == *id,
            Self::List(filter) => serde_json::from_str::<JobListItem>(&event.item)
                .is_ok_and(|item| filter.matches(&item, event.visible)),
        }
    }
}

/// Where a resumed stream starts: `Last-Event-ID`, or `last_event_id` in the query.
fn resume_from(headers: &HeaderMap, pairs: &[(String, String)]) -> Result<Option<i64>, Invalid> {
    let raw = headers
        .get("last-event-id")
        .map(|v| v.to_str().unwrap_or("?").to_string())
        .or_else(|| {
            pairs
                .iter()
                .find(|(k, _)| k == "last_event_id")
                .map(|(_, v)| v.clone())
        });
    match raw.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(Some)
            .ok_or_else(|| Invalid::new("Last-Event-ID must be the id of an event")),
    }
}

fn job_event(event: &JobEvent) -> Event {
    let task = event
        .task
        .as_ref()
        .map_or_else(String::new, |t| format!(",\"task\":{t}"));
    Event::default()
        .event("job")
        .id(event.seq.to_string())
        .data(format!(
            "{{\"seq\":{},\"kind\":\"{}\",\"job\":{}{task}}}",
            event.seq, event.kind, event.item
        ))
}

fn stream(receiver: mpsc::Receiver<Event>) -> Response {
    let events = futures::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|event| (Ok::<_, Infallible>(event), receiver))
    });
    // The keep-alive is an event (`ping`, without an id) rather than a comment, so that
    // clients that see only events can tell a quiet stream from a dead one.
    let ping = Event::default().event("ping").data("{}");
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).event(ping))
        .into_response()
}

/// The event a stream resumes after, when it is one of this history's: an id past every
/// event the store holds (a client of a database since restored, or of an emulator in
/// memory started again) resumes nothing, and the stream starts where the hub stands. (An
/// id past the hub's position alone is another replica's newer event: kept.)
async fn known(state: &AppState, resume: Option<i64>, start: i64) -> Result<Option<i64>, ApiError> {
    match resume {
        Some(after) if after > start && after > state.store.last_job_event().await? => {
            tracing::info!(
                last_event_id = after,
                "a watcher resumes after an event this history never had; starting afresh"
            );
            Ok(None)
        }
        resume => Ok(resume),
    }
}

/// True when a stream resuming after `after` would miss changes the store no longer keeps
/// (purged a day after they were made, or erased by an emulator's reset): the project's
/// were erased after it, or the first one it keeps is past the next. (The ids between may also have been holes of rolled-back
/// changes: the client is then only asked to list again for nothing.)
async fn expired(state: &AppState, project: &ProjectId, after: i64) -> Result<bool, ApiError> {
    let erased = state.emulator.erased.through(project.as_str());
    if erased.is_some_and(|through| after <= through) {
        return Ok(true);
    }
    Ok(match state.store.first_job_event().await? {
        Some(first) => after.saturating_add(1) < first,
        None => after < state.store.last_job_event().await?,
    })
}

/// Where a stream's opening event puts the client: after the event it resumes from, or
/// where the hub stands. (Resuming, the missed events follow with their own, larger ids:
/// an opening id past them would have a client cut off there skip them when it resumes.)
fn opening_id(start: i64, resume: Option<i64>) -> i64 {
    resume.unwrap_or(start)
}

/// Feeds a stream: the events missed since `resume` (if any), then those the hub hands out,
/// until the client or the server goes, or the caller may no longer watch (a token revoked
/// or expired, a key deleted, a grant taken away: checked as often as requests see it).
async fn feed(
    state: AppState,
    (caller, action): (Caller, Action),
    watched: Watched,
    (mut live, start, resume): (broadcast::Receiver<Arc<JobEvent>>, i64, Option<i64>),
    out: mpsc::Sender<Event>,
) {
    let hub = state.watch.clone();
    let project = caller.project.clone();
    let mut last = start.max(resume.unwrap_or(0));
    if let Some(after) = resume.filter(|after| *after < start) {
        if !send_history(&hub, &project, &watched, (after, start), &out).await {
            return;
        }
    }
    let every = state.authenticator.recheck_every();
    let mut recheck = tokio::time::Instant::now() + every;
    loop {
        let received = tokio::select! {
            () = state.shutdown.cancelled() => return,
            () = out.closed() => return,
            () = tokio::time::sleep_until(recheck) => {
                // A database that cannot answer now ends no stream; a credential gone does.
                if let Ok(false) = caller.still_allowed(&state, action).await {
                    tracing::info!(
                        user = caller.user_name,
                        "a watcher's credentials no longer hold; ending its stream"
                    );
                    return;
                }
                recheck = tokio::time::Instant::now() + every;
                continue;
            }
            received = live.recv() => received,
        };
        match received {
            Ok(event) => {
                if event.seq <= last {
                    continue;
                }
                last = event.seq;
                if watched.wants(&project, &event) && out.send(job_event(&event)).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // Fell behind the hub: what was dropped is read again from the database.
                let until = match hub.subscribe().await {
                    Ok((fresh, until)) => {
                        live = fresh;
                        until
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "a watcher cannot catch up; ending its stream");
                        return;
                    }
                };
                if !send_history(&hub, &project, &watched, (last, until), &out).await {
                    return;
                }
                last = last.max(until);
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// Sends the project's events in `(after, until]` that `watched` wants; false when the
/// stream is over.
async fn send_history(
    hub: &Hub,
    project: &ProjectId,
    watched: &Watched,
    (after, until): (i64, i64),
    out: &mpsc::Sender<Event>,
) -> bool {
    let mut from = after;
    loop {
        let (missed, more) = match hub.history_batch(project, from, until).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the events a watcher missed");
                return false;
            }
        };
        for event in &missed {
            from = event.seq;
            if watched.wants(project, event) && out.send(job_event(event)).await.is_err() {
                return false;
            }
        }
        if !more {
            break;
        }
    }
    true
}

/// `GET /v1/{project_id}/dev-servers/jobs/events`: changes of the project's jobs that match
/// the list's filters (`id`, `name`, `type`, `status`, `visible`; paging parameters are
/// ignored).
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs/events",
    operation_id = "WatchDevServerJobs",
    tag = "jobs",
    summary = "Watch the job list",
    description = "A Server-Sent Events stream of the changes of the project's jobs that \
        match the filters, as they are committed on any replica. It opens with a `ready` \
        event whose id is where it starts (resuming, the id it resumes after); then one \
        `job` event per change, its data `{\"seq\", \"kind\", \"job\", \"task\"?}` \
        (`kind`: `created`, `task`, `finished` or `deleted`; `job`: the job's list item \
        after the change; `task`: the \
        task that ended); a quiet stream carries a `ping` event every 15 s. Reconnecting \
        with `Last-Event-ID` (or `last_event_id`) first sends every change after that id; \
        an id whose changes are no longer kept (a day) opens the stream with an `expired` \
        event (`{\"after\": id}`, its id the newest change) instead: list the jobs again. \
        Needs `modelarts:devserverJob:list`.",
    params(
        ProjectPath,
        JobFilterParams,
        ResumeParams,
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0,
            description = "The id of the last event received."),
    ),
    responses(
        (status = 200, description = "The stream of events.", content_type = "text/event-stream", body = String),
        ProjectErrors,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn watch_jobs(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Action::ListJobs)?;
    let pairs = query_pairs(raw.as_deref())?;
    let filters: Vec<(String, String)> = pairs
        .iter()
        .filter(|(k, _)| ["id", "name", "type", "status", "visible"].contains(&k.as_str()))
        .cloned()
        .collect();
    let query = ListJobsQuery::parse(&filters, state.config.max_page_size)?;
    let resume = resume_from(&headers, &pairs)?;
    let (live, start) = state.watch.subscribe().await?;
    let resume = known(&state, resume, start).await?;
    let (out, receiver) = mpsc::channel(QUEUE);
    let (ready, resume) = match resume {
        // Changes after it are no longer all kept: the stream starts afresh, and says so.
        Some(after) if expired(&state, &caller.project, after).await? => {
            let data = serde_json::json!({ "after": after }).to_string();
            let expired = Event::default().event("expired").id(start.to_string());
            (expired.data(data), None)
        }
        resume => {
            let ready = Event::default().event("ready");
            (
                ready.id(opening_id(start, resume).to_string()).data("{}"),
                resume,
            )
        }
    };
    // The queue is empty: this cannot fail.
    let _ = out.try_send(ready);
    let watched = Watched::List(query.filter);
    tokio::spawn(feed(
        state,
        (caller, Action::ListJobs),
        watched,
        (live, start, resume),
        out,
    ));
    Ok(stream(receiver))
}

/// `GET /v1/{project_id}/dev-servers/jobs/{id}/events`: the job's changes, after a snapshot
/// of its detail.
#[utoipa::path(
    get,
    path = "/v1/{project_id}/dev-servers/jobs/{id}/events",
    operation_id = "WatchDevServerJob",
    tag = "jobs",
    summary = "Watch a job",
    description = "A Server-Sent Events stream of one job's changes. It opens with a \
        `snapshot` event (the job's detail; its id is where the stream starts, or resumes \
        after), then one `job` event per change as in the list's watch, and `ping` every \
        15 s when quiet. \
        Needs `modelarts:devserverJob:get`.",
    params(
        ProjectPath,
        ("id" = String, Path, min_length = 1, max_length = 64, description = "The job's id."),
        ResumeParams,
        ("Last-Event-ID" = Option<i64>, Header, minimum = 0,
            description = "The id of the last event received."),
    ),
    responses(
        (status = 200, description = "The stream of events.", content_type = "text/event-stream", body = String),
        ProjectErrors,
        NotFound,
    ),
    security(("AkSkSignature" = []), ("IamToken" = [])),
)]
pub async fn watch_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((_, id)): ApiPath<(String, String)>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    caller.require(Action::GetJob)?;
    lookup("id", &id)?;
    let pairs = query_pairs(raw.as_deref())?;
    let resume = resume_from(&headers, &pairs)?;
    let (live, start) = state.watch.subscribe().await?;
    let resume = known(&state, resume, start).await?;
    // Read after subscribing: a change after the snapshot is in the stream. An id holding
    // U+0000 is no job's (and the database would refuse it).
    let found = if holds_nul(&id) {
        None
    } else {
        state.store.get_job(&caller.project, &id).await?
    };
    let Some(job) = found else {
        return Err(ApiError::NotFound(format!("The job {id} does not exist.")));
    };
    let (out, receiver) = mpsc::channel(QUEUE);
    let snapshot = Event::default()
        .event("snapshot")
        .id(opening_id(start, resume).to_string())
        .json_data(&job)
        .map_err(|e| ApiError::Internal(e.into()))?;
    let _ = out.try_send(snapshot);
    tokio::spawn(feed(
        state,
        (caller, Action::GetJob),
        Watched::Job(id),
        (live, start, resume),
        out,
    ));
    Ok(stream(receiver))
}
