//! The job list: the API's five filters, paging and sort in the URL (a GET form), the exact
//! total, status colours and each job's `abnormal_count`.

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::page::{self, Section};
use super::session::{given_pairs, Session};
use super::ConsoleError;
use crate::domain::filter::{ListJobsQuery, SortDir, SortKey};
use crate::domain::Action;
use crate::http::AppState;
use crate::wire::JobListItem;

/// Jobs on one page unless the URL asks for another size (or the server allows fewer).
pub const PAGE_SIZE: u64 = 20;
const SIZES: [u64; 4] = [10, 20, 50, 100];
const FILTERS: [&str; 5] = ["id", "name", "type", "status", "visible"];

/// The page size of a list whose URL names none, on a server whose largest page is `max`.
fn default_size(max: u64) -> u64 {
    PAGE_SIZE.min(max)
}

/// The page sizes the form offers: the usual ones the server allows (its largest page when
/// it allows none of them), and the size the URL asks for.
fn sizes(max: u64, asked: &str) -> Vec<u64> {
    let mut sizes: Vec<u64> = SIZES.into_iter().filter(|n| *n <= max).collect();
    if sizes.is_empty() {
        sizes.push(max);
    }
    if let Ok(n) = asked.parse::<u64>() {
        if (1..=max).contains(&n) && !sizes.contains(&n) {
            sizes.push(n);
            sizes.sort_unstable();
        }
    }
    sizes
}

/// The list's parameters as the URL gives them, to draw the form and the links.
struct View {
    pairs: Vec<(String, String)>,
}

impl View {
    fn get(&self, name: &str) -> String {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map_or_else(String::new, |(_, v)| v.clone())
    }

    /// A link to this list with `changes` made (an empty value removes the parameter).
    fn link(&self, changes: &[(&str, String)]) -> String {
        let names = FILTERS
            .iter()
            .chain(&["limit", "offset", "sort_key", "sort_dir"]);
        let pairs: Vec<(&str, String)> = names
            .map(|name| {
                let value = changes
                    .iter()
                    .find(|(k, _)| k == name)
                    .map_or_else(|| self.get(name), |(_, v)| v.clone());
                (*name, value)
            })
            .collect();
        format!("/console/jobs{}", page::query(&pairs))
    }
}

/// `GET /console/jobs`: the list.
pub async fn list_page(
    State(state): State<AppState>,
    session: Session,
    RawQuery(raw): RawQuery,
) -> Result<Response, ConsoleError> {
    session.caller.require(Action::ListJobs)?;
    let view = View {
        pairs: given_pairs(raw.as_deref()),
    };
    let max = state.config.max_page_size;
    let mut pairs = view.pairs.clone();
    if !pairs.iter().any(|(k, _)| k == "limit") {
        pairs.push(("limit".into(), default_size(max).to_string()));
    }
    let query = match ListJobsQuery::parse(&pairs, max) {
        Ok(query) => query,
        Err(invalid) => {
            let body = list_body(&state, &session, &view, Err(&invalid.0));
            let html = page::shell("Jobs", Some(&session), Section::Jobs, body);
            return Ok((StatusCode::BAD_REQUEST, html).into_response());
        }
    };
    let found = state
        .store
        .list_jobs(&session.caller.project, &query, max)
        .await?;
    let jobs: Vec<JobListItem> = if found.data.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&found.data).map_err(crate::http::error::ApiError::internal)?
    };
    let listed = Listed {
        query: &query,
        total: found.total,
        jobs: &jobs,
    };
    let body = list_body(&state, &session, &view, Ok(listed));
    Ok(page::shell("Jobs", Some(&session), Section::Jobs, body).into_response())
}

struct Listed<'a> {
    query: &'a ListJobsQuery,
    total: u64,
    jobs: &'a [JobListItem],
}

fn list_body(
    state: &AppState,
    session: &Session,
    view: &View,
    listed: Result<Listed<'_>, &str>,
) -> Markup {
    html! {
        div.heading {
            h1 { "Jobs" }
            @if session.may(Action::CreateJob) {
                a.button id="new-job" href="/console/jobs/new" { "New job" }
            }
        }
        (filter_form(state, view))
        @match listed {
            Err(message) => p.error id="filter-error" role="alert" { (message) },
            Ok(listed) => (table(view, &listed, session.may(Action::GetJob))),
        }
    }
}

fn filter_form(state: &AppState, view: &View) -> Markup {
    let mut types: Vec<&str> = state
        .templates
        .all()
        .iter()
        .map(|t| t.template_type.as_str())
        .collect();
    types.sort_unstable();
    let chosen_type = view.get("type");
    let status = view.get("status");
    let visible = view.get("visible").to_ascii_lowercase();
    let limit = view.get("limit");
    let max = state.config.max_page_size;
    html! {
        // The fields show the URL's view, not what the browser kept of an earlier search
        // when it goes back to this page.
        form.filters method="get" action="/console/jobs" role="search" aria-label="Filter jobs" autocomplete="off" {
            div.field {
                label for="f-name" { "Name contains" }
                input id="f-name" name="name" type="search" value=(view.get("name"));
            }
            div.field {
                label for="f-id" { "Job id" }
                input id="f-id" name="id" type="search" value=(view.get("id"));
            }
            div.field {
                label for="f-type" { "Type" }
                select id="f-type" name="type" {
                    option value="" { "Any" }
                    @if !chosen_type.is_empty() && !types.contains(&chosen_type.as_str()) {
                        option value=(chosen_type) selected { (chosen_type) }
                    }
                    @for t in &types {
                        option value=(t) selected[chosen_type == *t] { (t) }
                    }
                }
            }
            div.field {
                label for="f-status" { "Status" }
                select id="f-status" name="status" {
                    option value="" { "Any" }
                    @for s in ["PROCESSING", "FINISHED", "DELETED"] {
                        option value=(s) selected[status == s] { (s) }
                    }
                }
            }
            div.field {
                label for="f-visible" { "Visible" }
                select id="f-visible" name="visible" {
                    option value="" { "Any" }
                    option value="true" selected[visible == "true"] { "Visible" }
                    option value="false" selected[visible == "false"] { "Hidden" }
                }
            }
            div.field {
                label for="f-limit" { "Per page" }
                select id="f-limit" name="limit" {
                    @for n in sizes(max, &limit) {
                        option value=(n) selected[limit == n.to_string()
                            || (limit.is_empty() && n == default_size(max))] { (n) }
                    }
                }
            }
            input type="hidden" name="sort_key" value=(view.get("sort_key"));
            input type="hidden" name="sort_dir" value=(view.get("sort_dir"));
            div.actions {
                button type="submit" id="apply-filters" { "Apply" }
                a href="/console/jobs" { "Clear" }
            }
        }
    }
}

fn key_name(key: SortKey) -> &'static str {
    match key {
        SortKey::CreateAt => "create_at",
        SortKey::UpdateAt => "update_at",
        SortKey::Name => "name",
    }
}

/// A column heading that sorts by `key`, first in `first` direction, then the other way.
fn sort_heading(view: &View, query: &ListJobsQuery, key: SortKey, label: &str) -> Markup {
    let sorted = query.page.sort_key == key;
    let dir = query.page.sort_dir;
    let next = match (sorted, dir) {
        (true, SortDir::Desc) => "asc",
        (true, SortDir::Asc) => "desc",
        (false, _) if key == SortKey::Name => "asc",
        (false, _) => "desc",
    };
    let aria = match (sorted, dir) {
        (false, _) => "none",
        (true, SortDir::Asc) => "ascending",
        (true, SortDir::Desc) => "descending",
    };
    let href = view.link(&[
        ("sort_key", key_name(key).to_string()),
        ("sort_dir", next.to_string()),
        ("offset", String::new()),
    ]);
    html! {
        th scope="col" aria-sort=(aria) {
            a href=(href) data-sort=(key_name(key)) {
                (label)
                @if sorted {
                    span aria-hidden="true" { @if dir == SortDir::Asc { " ▲" } @else { " ▼" } }
                }
            }
        }
    }
}

/// The page of jobs; each job's name links to its page when `linked` (the user may see it).
fn table(view: &View, listed: &Listed<'_>, linked: bool) -> Markup {
    let query = listed.query;
    let numbers = query.page.numbers(listed.total, u64::MAX);
    // (The list always names its limit: the URL's, or the default.)
    let limit = query.page.limit.unwrap_or(PAGE_SIZE);
    let offset = query.page.offset;
    let first = offset + 1;
    let last = offset + listed.jobs.len() as u64;
    html! {
        p.total id="total" role="status" {
            @if listed.total == 1 { "1 job" } @else { (listed.total) " jobs" }
            @if !listed.jobs.is_empty() {
                ", showing " (first) "–" (last)
            }
        }
        div.scroll {
            table.jobs id="jobs" {
                caption.sr { "Jobs, " (listed.total) " in all" }
                thead {
                    tr {
                        (sort_heading(view, query, SortKey::Name, "Name"))
                        th scope="col" { "Type" }
                        th scope="col" { "Status" }
                        th scope="col" { abbr title="Failed tasks" { "Abnormal" } }
                        th scope="col" { "User" }
                        (sort_heading(view, query, SortKey::CreateAt, "Created"))
                        (sort_heading(view, query, SortKey::UpdateAt, "Updated"))
                    }
                }
                tbody {
                    @for job in listed.jobs {
                        tr data-job=(job.id) {
                            td {
                                @if linked {
                                    a href={ "/console/jobs/" (page::encode(&job.id)) } { (job.name) }
                                } @else {
                                    span.name { (job.name) }
                                }
                                div.id { (job.id) }
                            }
                            td { (job.job_type) }
                            td { (page::job_status(&job.status, job.abnormal_count)) }
                            td.num.abnormal[job.abnormal_count > 0] { (job.abnormal_count) }
                            td { (job.user_name) }
                            td { (page::time(job.create_at)) }
                            td { (page::time(job.update_at)) }
                        }
                    }
                    @if listed.jobs.is_empty() {
                        tr { td colspan="7" { "No job matches." } }
                    }
                }
            }
        }
        nav.pager aria-label="Pages" {
            @if offset > 0 {
                a rel="prev" id="prev-page"
                    href=(view.link(&[("offset", offset.saturating_sub(limit).to_string())])) {
                    "Previous"
                }
            }
            span id="page-of" { "Page " (numbers.current) " of " (numbers.pages.max(1)) }
            @if last < listed.total {
                a rel="next" id="next-page"
                    href=(view.link(&[("offset", (offset + limit).to_string())])) { "Next" }
            }
        }
    }
}
