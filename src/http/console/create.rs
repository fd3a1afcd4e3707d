//! Creating a job from a template: its type, servers chosen from the project's, the spec
//! fields of the template's parameters; the API's own checks, whose messages are shown next
//! to the fields they are about.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{html, Markup};

use super::page::{self, Section};
use super::session::{given_pairs, Form, Session};
use super::ConsoleError;
use crate::domain::Action;
use crate::http::error::ApiError;
use crate::http::AppState;
use crate::wire::{JobCreateRequest, JobItem, Server, TemplateDetail};

/// What the form holds: as first drawn, or as sent back with the API's complaint.
#[derive(Default)]
struct Draft {
    job_type: String,
    name: String,
    description: String,
    servers: Vec<String>,
    spec: BTreeMap<String, String>,
    visible: bool,
    /// The form's own idempotency token (the API's `X-Client-Token`): the same form sent
    /// twice (a second click, a reload of the answer) makes one job.
    client_token: String,
    /// The field the API's message is about (`name`, `servers`, `spec.cmd`, ...), and it.
    error: Option<(String, String)>,
}

/// `GET /console/jobs/new?type=…`: the form for a template (the first, by type, unless
/// one is asked).
pub async fn form_page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    session.caller.require(Action::CreateJob)?;
    let asked = given_pairs(raw.as_deref())
        .into_iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v);
    let template = pick(&state, asked.as_deref())?;
    let draft = Draft {
        job_type: template.template_type.clone(),
        spec: template
            .params
            .iter()
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect(),
        visible: true,
        client_token: uuid::Uuid::new_v4().simple().to_string(),
        ..Draft::default()
    };
    let servers = state.store.list_servers(&session.caller.project).await?;
    let html = page::shell(
        "New job",
        Some(&session),
        Section::Jobs,
        form_markup(&state, &session, template, &servers, &draft),
    );
    Ok(html.into_response())
}

fn pick<'a>(state: &'a AppState, asked: Option<&str>) -> Result<&'a TemplateDetail, ConsoleError> {
    let catalog = &state.templates;
    match asked {
        Some(t) => catalog
            .by_type(t)
            .ok_or_else(|| ConsoleError::NotFound(format!("There is no template of type {t}."))),
        None => {
            let mut all: Vec<&TemplateDetail> = catalog.all().iter().collect();
            all.sort_by(|a, b| a.template_type.cmp(&b.template_type));
            all.into_iter()
                .next()
                .ok_or_else(|| ConsoleError::NotFound("There is no job template.".into()))
        }
    }
}

/// The field of the form an API message is about, from the field path it starts with.
fn field_of(message: &str) -> String {
    let first = message.split_whitespace().next().unwrap_or("");
    if let Some(rest) = first.strip_prefix("items[0].spec.") {
        return format!("spec.{rest}");
    }
    if first.starts_with("server_ids") || message.starts_with("unknown servers") {
        return "servers".into();
    }
    match first {
        "name" | "description" | "type" => first.into(),
        _ => "form".into(),
    }
}

/// `POST /console/jobs`: creates the job through the API's own checks.
pub async fn create(State(state): State<AppState>, session: Session, body: Body) -> Response {
    let result = create_job(&state, &session, body).await;
    session.answer(result)
}

async fn create_job(
    state: &AppState,
    session: &Session,
    body: Body,
) -> Result<Response, ConsoleError> {
    let form = Form::read(state, body).await?;
    session.check_csrf(&form)?;
    session.caller.require(Action::CreateJob)?;
    let template = pick(state, form.get("type"))?;
    let mut draft = Draft {
        job_type: template.template_type.clone(),
        name: form.get("name").unwrap_or("").trim().to_string(),
        description: form.get("description").unwrap_or("").trim().to_string(),
        servers: form.all("server"),
        spec: template
            .params
            .iter()
            .map(|p| {
                let field = format!("spec.{}", p.name);
                (p.name.clone(), form.get(&field).unwrap_or("").to_string())
            })
            .collect(),
        visible: form.get("visible") == Some("true"),
        client_token: form
            .get("client_token")
            .filter(|t| t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
            .unwrap_or("")
            .to_string(),
        error: None,
    };
    let request = JobCreateRequest {
        name: draft.name.clone(),
        description: Some(draft.description.clone()).filter(|d| !d.is_empty()),
        server_ids: draft.servers.clone(),
        job_type: draft.job_type.clone(),
        is_reboot: None,
        items: vec![JobItem {
            item_type: draft.job_type.clone(),
            spec: Some(draft.spec.clone()).filter(|s| !s.is_empty()),
        }],
        visible: Some(draft.visible),
    };
    // The token holds letters and digits only (checked above): always a header value.
    let mut headers = HeaderMap::new();
    if !draft.client_token.is_empty() {
        let token = format!("console-{}", draft.client_token);
        if let Ok(token) = HeaderValue::try_from(token) {
            headers.insert("x-client-token", token);
        }
    }
    match crate::http::jobs::create(state, &session.caller, request, &headers).await {
        Ok(job) => {
            // The new job's page, or, for a user who may not see it, the list showing it, or
            // (who may not list either) a page saying it was made.
            let id = page::encode(&job.id);
            let mut response = if session.may(Action::GetJob) {
                Redirect::to(&format!("/console/jobs/{id}")).into_response()
            } else if session.may(Action::ListJobs) {
                Redirect::to(&format!("/console/jobs?id={id}")).into_response()
            } else {
                let body = html! {
                    h1 { "Job created" }
                    p.notice role="status" { "Job " (job.name) " was created: " code { (job.id) } }
                };
                page::shell("Job created", Some(session), Section::Jobs, body).into_response()
            };
            response
                .extensions_mut()
                .insert(crate::audit::Resources(vec![job.id]));
            Ok(response)
        }
        Err(e @ (ApiError::Invalid(_) | ApiError::Conflict(_))) => {
            let status = e.status_and_code().0;
            draft.error = Some(match e {
                ApiError::Invalid(message) => (field_of(&message), message),
                _ => (
                    "form".into(),
                    "This form already created a job with other values: open New job for \
                     another one."
                        .into(),
                ),
            });
            let servers = state.store.list_servers(&session.caller.project).await?;
            let html = page::shell(
                "New job",
                Some(session),
                Section::Jobs,
                form_markup(state, session, template, &servers, &draft),
            );
            Ok((status, html).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// The error message about `field`, tied to its input by id.
fn error_for(draft: &Draft, field: &str) -> Option<(String, String)> {
    draft
        .error
        .as_ref()
        .filter(|(f, _)| f == field)
        .map(|(f, m)| (format!("err-{}", f.replace('.', "-")), m.clone()))
}

fn field_error(draft: &Draft, field: &str) -> Markup {
    html! {
        @if let Some((id, message)) = error_for(draft, field) {
            p.field-error id=(id) role="alert" { (message) }
        }
    }
}

fn described_by(draft: &Draft, field: &str) -> Option<String> {
    error_for(draft, field).map(|(id, _)| id)
}

fn form_markup(
    state: &AppState,
    session: &Session,
    template: &TemplateDetail,
    servers: &[Server],
    draft: &Draft,
) -> Markup {
    let mut types: Vec<&TemplateDetail> = state.templates.all().iter().collect();
    types.sort_by(|a, b| a.template_type.cmp(&b.template_type));
    html! {
        h1 { "New job" }
        form.choose method="get" action="/console/jobs/new" aria-label="Choose a template" {
            label for="template" { "Template" }
            select id="template" name="type" {
                @for t in &types {
                    option value=(t.template_type) selected[t.template_type == draft.job_type] {
                        (t.template_type) " — " (t.name)
                    }
                }
            }
            button type="submit" id="choose-template" { "Use this template" }
        }
        p.hint { (template.description) }
        @if let Some((field, message)) = &draft.error {
            @if field == "form" || field == "type" {
                p.error role="alert" { (message) }
            }
        }
        form.create method="post" action="/console/jobs" novalidate {
            input type="hidden" name="csrf" value=(session.csrf);
            input type="hidden" name="type" value=(draft.job_type);
            input type="hidden" name="client_token" value=(draft.client_token);
            label for="name" { "Name" }
            input id="name" name="name" type="text" value=(draft.name)
                aria-invalid=[error_for(draft, "name").map(|_| "true")]
                aria-describedby=[described_by(draft, "name")];
            (field_error(draft, "name"))
            label for="description" { "Description " span.hint { "(optional)" } }
            input id="description" name="description" type="text" value=(draft.description)
                aria-invalid=[error_for(draft, "description").map(|_| "true")]
                aria-describedby=[described_by(draft, "description")];
            (field_error(draft, "description"))
            fieldset id="servers" aria-describedby=[described_by(draft, "servers")] {
                legend { "Servers" }
                @if servers.is_empty() {
                    p { "This project has no servers yet." }
                }
                @for s in servers {
                    div.check {
                        input type="checkbox" name="server" value=(s.id)
                            id={ "server-" (s.id) } checked[draft.servers.contains(&s.id)];
                        label for={ "server-" (s.id) } {
                            (s.name)
                            span.hint { @if s.online { " online" } @else { " offline" } }
                        }
                    }
                }
                (field_error(draft, "servers"))
            }
            @for param in &template.params {
                @let field = format!("spec.{}", param.name);
                @let id = format!("spec-{}", param.name);
                label for=(id) { (param.name) " " span.hint { (param.description) } }
                input id=(id) name=(field) type="text"
                    value=(draft.spec.get(&param.name).map_or("", String::as_str))
                    aria-invalid=[error_for(draft, &field).map(|_| "true")]
                    aria-describedby=[described_by(draft, &field)];
                (field_error(draft, &field))
            }
            // (In strict mode a create's `visible` is ignored, as the cloud ignores it.)
            @if !state.emulator.strict {
                div.check {
                    input type="checkbox" id="visible" name="visible" value="true"
                        checked[draft.visible];
                    label for="visible" { "Visible in lists" }
                }
            }
            button type="submit" id="create-job" { "Create job" }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::field_of;

    #[test]
    fn api_messages_go_next_to_the_field_they_name() {
        let cases = [
            ("name must match ^[-_.a-zA-Z0-9]{1,64}$", "name"),
            (
                "description must match ^[-_.a-zA-Z0-9]{1,64}$",
                "description",
            ),
            ("server_ids must name 1 to 1000 servers", "servers"),
            ("server_ids[] must be 1 to 64 characters", "servers"),
            ("unknown servers in this project: x", "servers"),
            (
                "items[0].spec.cmd (0 characters) does not match",
                "spec.cmd",
            ),
            ("type X names no job template", "type"),
            ("invalid request body", "form"),
        ];
        for (message, field) in cases {
            assert_eq!(field_of(message), field, "{message}");
        }
    }
}
