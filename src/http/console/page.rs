//! The console's page shell (header, navigation, project switch, sign-out) and the small
//! pieces every page draws: status badges, times, links that keep a query.

use axum::response::Html;
use maud::{html, Markup, DOCTYPE};

use super::session::Session;

/// Which section of the navigation a page belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Jobs,
    Servers,
    Templates,
    None,
}

/// A whole page: `title`, the navigation for `session` (when signed in), and `main`.
pub fn shell(
    title: &str,
    session: Option<&Session>,
    section: Section,
    main: Markup,
) -> Html<String> {
    let nav_link = |href: &str, label: &str, this: Section| {
        html! {
            @if section == this {
                a href=(href) aria-current="page" { (label) }
            } @else {
                a href=(href) { (label) }
            }
        }
    };
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · litejobs console" }
                link rel="icon" href="/console/static/icon.svg" type="image/svg+xml";
                link rel="stylesheet" href="/console/static/console.css";
                script src="/console/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/console/jobs" { "litejobs" }
                    @if let Some(session) = session {
                        // Only the pages the user may see.
                        nav aria-label="Main" {
                            @if session.may(crate::domain::Action::ListJobs) {
                                (nav_link("/console/jobs", "Jobs", Section::Jobs))
                                (nav_link("/console/servers", "Servers", Section::Servers))
                            }
                            @if session.may(crate::domain::Action::ListTemplates) {
                                (nav_link("/console/templates", "Templates", Section::Templates))
                            }
                        }
                        div.who {
                            (project_switch(session))
                            form method="post" action="/console/logout" {
                                input type="hidden" name="csrf" value=(session.csrf);
                                button type="submit" id="sign-out" {
                                    "Sign out " span.user { (session.caller.user_name) }
                                }
                            }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    (main)
                }
            }
        }
    };
    Html(markup.into_string())
}

/// The project the session is in, and a form to move to another the user holds a grant in.
fn project_switch(session: &Session) -> Markup {
    let current = session.caller.project.as_str();
    html! {
        @if session.projects.len() > 1 {
            form.project method="post" action="/console/project" {
                input type="hidden" name="csrf" value=(session.csrf);
                label for="project-select" { "Project" }
                select id="project-select" name="project" {
                    @for (id, name) in &session.projects {
                        option value=(id) selected[id == current] { (name) }
                    }
                }
                button type="submit" { "Switch" }
            }
        } @else {
            span.project id="project" {
                "Project "
                strong { (session.project_name()) }
            }
        }
    }
}

/// A page that says what went wrong, with a way back (and, in a session, the navigation,
/// the project switch and the sign-out of every page).
pub fn error_page(title: &str, message: &str, session: Option<&Session>) -> Html<String> {
    shell(
        title,
        session,
        Section::None,
        html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/console/jobs" { "Back to the jobs" } }
        },
    )
}

/// A job's or task's status as a coloured badge (the colour is also said in words).
pub fn status(status: &str) -> Markup {
    let class = match status {
        "PROCESSING" | "RUNNING" => "st st-running",
        "FINISHED" | "SUCCESS" => "st st-ok",
        "FAILED" => "st st-failed",
        "DELETED" | "SKIPPED" => "st st-gone",
        _ => "st",
    };
    html! { span class=(class) data-status=(status) { (status) } }
}

/// A job's status: as [`status`], but a job that finished with failed tasks is marked
/// apart from one that finished cleanly.
pub fn job_status(status_text: &str, abnormal: i64) -> Markup {
    if status_text == "FINISHED" && abnormal > 0 {
        html! {
            span class="st st-warn" data-status=(status_text) {
                (status_text) span.sr { ", with failed tasks" }
            }
        }
    } else {
        status(status_text)
    }
}

/// An epoch-millisecond time, readable and machine-readable, in UTC and saying so (the
/// pages run no script that could show a reader's own zone).
pub fn time(ms: i64) -> Markup {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(at) => html! {
            time datetime=(at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)) {
                (at.format("%Y-%m-%d %H:%M:%S UTC"))
            }
        },
        None => html! { "—" },
    }
}

/// A task's time, which the wire carries as a decimal string of epoch milliseconds.
pub fn time_text(ms: &str) -> Markup {
    ms.parse::<i64>().map_or_else(|_| html! { (ms) }, time)
}

/// What [`encode`] escapes: all but the characters URLs leave alone everywhere.
const COMPONENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encodes a query or path component.
pub fn encode(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, COMPONENT).to_string()
}

/// A query string (with its `?`, or empty) of the pairs with a value.
pub fn query(pairs: &[(&str, String)]) -> String {
    let kept: Vec<String> = pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect();
    if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    }
}
