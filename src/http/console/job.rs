//! One job: its items, one row per task, the state kept live while it runs (the API's SSE
//! watch tells the page when to fetch the fragment again), a task's output, and delete with
//! a confirmation.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::page::{self, Section};
use super::session::{Form, Session};
use super::ConsoleError;
use crate::domain::ids::{holds_nul, lookup};
use crate::domain::{now_ms, Action};
use crate::http::extract::ApiPath;
use crate::http::AppState;
use crate::wire::JobDetail;

/// The job `id` of the session's project, or 404.
async fn find(state: &AppState, session: &Session, id: &str) -> Result<JobDetail, ConsoleError> {
    session.caller.require(Action::GetJob)?;
    lookup("id", id)?;
    let found = if holds_nul(id) {
        None
    } else {
        state.store.get_job(&session.caller.project, id).await?
    };
    found.ok_or_else(|| ConsoleError::NotFound(format!("The job {id} does not exist.")))
}

fn job_href(id: &str) -> String {
    format!("/console/jobs/{}", page::encode(id))
}

/// `GET /console/jobs/{id}`.
pub async fn job_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    let job = find(&state, &session, &id).await?;
    let can_delete = session.may(Action::DeleteJobs) && job.status != "DELETED";
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" { a href="/console/jobs" { "Jobs" } " / " (job.name) }
        div.heading {
            h1 { (job.name) }
            @if can_delete {
                a.button.danger id="delete-job" href={ (job_href(&job.id)) "/delete" } {
                    "Delete…"
                }
            }
        }
        dl.facts {
            dt { "Id" } dd id="job-id" { (job.id) }
            dt { "Type" } dd { (job.job_type) }
            dt { "User" } dd { (job.user_name) }
            @if let Some(d) = &job.description { dt { "Description" } dd { (d) } }
            dt { "Visible" } dd { @if job.visible != Some(false) { "yes" } @else { "no" } }
            dt { "Created" } dd { (page::time(job.create_at)) }
        }
        h2 { "Items" }
        div.scroll {
            table.items {
                thead { tr { th scope="col" { "Type" } th scope="col" { "Spec" } } }
                tbody {
                    @for item in &job.items {
                        tr {
                            td { (item.item_type) }
                            td {
                                @if let Some(spec) = &item.spec {
                                    dl.spec {
                                        @for (k, v) in spec { dt { (k) } dd { code { (v) } } }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        div id="live" data-job=(job.id) data-status=(job.status)
            data-live={ (job_href(&job.id)) "/live" } data-events={ (job_href(&job.id)) "/events" } {
            (live(&job))
        }
    };
    Ok(page::shell(&job.name, Some(&session), Section::Jobs, body))
}

/// The part of a job's page that changes while it runs: its state and its tasks.
fn live(job: &JobDetail) -> Markup {
    html! {
        div.state aria-live="polite" {
            span { "Status " } (page::job_status(&job.status, job.abnormal_count))
            span.abn { " Abnormal tasks " strong id="abnormal-count" { (job.abnormal_count) } }
            span { " Updated " (page::time(job.update_at)) }
        }
        h2 { "Tasks" }
        div.scroll {
            table.tasks id="tasks" {
                thead {
                    tr {
                        th scope="col" { "Server" }
                        th scope="col" { "Status" }
                        th scope="col" { "Message" }
                        th scope="col" { "Started" }
                        th scope="col" { "Updated" }
                        th scope="col" { span.sr { "Details" } }
                    }
                }
                tbody {
                    @for task in &job.tasks {
                        tr data-task=(task.id) data-server=(task.server_id) {
                            td {
                                (task.server_name)
                                @if task.server_name != task.server_id { div.id { (task.server_id) } }
                            }
                            td { (page::status(&task.status)) }
                            td.message { (task.message) }
                            td { (page::time_text(&task.create_at)) }
                            td { (page::time_text(&task.update_at)) }
                            td {
                                a href={ (job_href(&job.id)) "/tasks/" (page::encode(&task.id)) } {
                                    "Open" span.sr { " the task on " (task.server_name) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `GET /console/jobs/{id}/live`: the changing part of the job's page, for its script.
pub async fn live_fragment(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Response, ConsoleError> {
    let job = find(&state, &session, &id).await?;
    let mut response = Html(live(&job).into_string()).into_response();
    if let Ok(value) = job.status.parse() {
        response.headers_mut().insert("x-job-status", value);
    }
    Ok(response)
}

/// `GET /console/jobs/{id}/events`: the API's live watch of the job, for the session.
pub async fn events(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    let project = session.caller.project.to_string();
    Ok(crate::http::watch::watch_job(
        State(state),
        session.caller,
        ApiPath((project, id)),
        headers,
        RawQuery(raw),
    )
    .await?)
}

/// `GET /console/jobs/{id}/tasks/{task_id}`: a task and the output its agent sent.
pub async fn task_page(
    State(state): State<AppState>,
    session: Session,
    Path((id, task_id)): Path<(String, String)>,
) -> Result<Html<String>, ConsoleError> {
    let job = find(&state, &session, &id).await?;
    let task = job
        .tasks
        .iter()
        .find(|t| t.id == task_id)
        .ok_or_else(|| ConsoleError::NotFound(format!("The job has no task {task_id}.")))?;
    let output = state
        .store
        .task_output(&session.caller.project, &job.id, &task.id)
        .await?;
    let body = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href="/console/jobs" { "Jobs" } " / "
            a href=(job_href(&job.id)) { (job.name) } " / " (task.server_name)
        }
        h1 { "Task on " (task.server_name) }
        dl.facts {
            dt { "Status" } dd id="task-status" { (page::status(&task.status)) }
            dt { "Message" } dd id="task-message" { (task.message) }
            dt { "Server" } dd { (task.server_name) " (" (task.server_id) ")" }
            @if let Some(online) = task.server_online {
                dt { "Server online" } dd { @if online { "yes" } @else { "no" } }
            }
            dt { "Started" } dd { (page::time_text(&task.create_at)) }
            dt { "Updated" } dd { (page::time_text(&task.update_at)) }
            dt { "Task id" } dd { (task.id) }
        }
        h2 { "Output" }
        @match &output {
            Some(out) => {
                p { "Sent by the agent at " (page::time(out.update_at)) }
                pre.output id="task-output" tabindex="0" aria-label="Task output" { (out.output) }
            },
            None => p id="task-output" { "The agent sent no output for this task." },
        }
    };
    let title = format!("Task on {}", task.server_name);
    Ok(page::shell(&title, Some(&session), Section::Jobs, body))
}

/// `GET /console/jobs/{id}/delete`: asks to confirm.
pub async fn confirm_delete(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Result<Html<String>, ConsoleError> {
    session.caller.require(Action::DeleteJobs)?;
    let job = find(&state, &session, &id).await?;
    if job.status == "DELETED" {
        let body = html! {
            h1 { "Job " (job.name) " is deleted" }
            p.notice role="status" { "It was deleted already: there is nothing more to delete." }
            p { a href=(job_href(&job.id)) { "Back to the job" } }
        };
        return Ok(page::shell(
            "Job deleted",
            Some(&session),
            Section::Jobs,
            body,
        ));
    }
    let body = html! {
        h1 { "Delete job " (job.name) "?" }
        p {
            "The job is marked DELETED; its tasks still running are cancelled (SKIPPED). "
            "This cannot be undone."
        }
        form method="post" action={ (job_href(&job.id)) "/delete" } {
            input type="hidden" name="csrf" value=(session.csrf);
            button.danger type="submit" id="confirm-delete" { "Delete job" }
            " "
            a href=(job_href(&job.id)) { "Cancel" }
        }
    };
    Ok(page::shell(
        "Delete job",
        Some(&session),
        Section::Jobs,
        body,
    ))
}

/// `POST /console/jobs/{id}/delete`: deletes the job as `DELETE .../jobs` does.
pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
    body: Body,
) -> Response {
    let result = delete_job(&state, &session, &id, body).await;
    session.answer(result)
}

async fn delete_job(
    state: &AppState,
    session: &Session,
    id: &str,
    body: Body,
) -> Result<Response, ConsoleError> {
    let form = Form::read(state, body).await?;
    session.check_csrf(&form)?;
    session.caller.require(Action::DeleteJobs)?;
    let job = find(state, session, id).await?;
    state
        .store
        .delete_jobs(
            &session.caller.project,
            std::slice::from_ref(&job.id),
            now_ms(),
        )
        .await?;
    Ok(Redirect::to(&job_href(&job.id)).into_response())
}
