//! The project's servers (online or not, last seen, running tasks) and the job templates.

use axum::extract::State;
use axum::response::Html;
use maud::html;

use super::page::{self, Section};
use super::session::Session;
use super::ConsoleError;
use crate::domain::Action;
use crate::http::AppState;

/// `GET /console/servers`: who may list the project's jobs may see the servers they run on.
pub async fn servers_page(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    session.caller.require(Action::ListJobs)?;
    let project = &session.caller.project;
    let servers = state.store.list_servers(project).await?;
    let running = state.store.running_tasks(project).await?;
    let running_on = |id: &str| running.iter().find(|(s, _)| s == id).map_or(0, |(_, n)| *n);
    let online = servers.iter().filter(|s| s.online).count();
    let body = html! {
        h1 { "Servers" }
        p.total id="servers-total" role="status" {
            (servers.len()) " servers, " (online) " online"
        }
        div.scroll {
            table.servers id="servers" {
                thead {
                    tr {
                        th scope="col" { "Server" }
                        th scope="col" { "Kind" }
                        th scope="col" { "State" }
                        th scope="col" { "Last seen" }
                        th scope="col" { "Running tasks" }
                        th scope="col" { "Registered" }
                    }
                }
                tbody {
                    @for s in &servers {
                        tr data-server=(s.id) {
                            td { (s.name) @if s.name != s.id { div.id { (s.id) } } }
                            td { (s.kind) }
                            td {
                                @if s.online {
                                    span.st.st-ok { "online" }
                                } @else {
                                    span.st.st-gone { "offline" }
                                }
                            }
                            td {
                                @match s.last_seen_at {
                                    Some(at) => (page::time(at)),
                                    None if s.kind == "simulated" => "always (simulated)",
                                    None => "never",
                                }
                            }
                            td.num.running { (running_on(&s.id)) }
                            td { (page::time(s.create_at)) }
                        }
                    }
                    @if servers.is_empty() {
                        tr { td colspan="6" { "This project has no servers yet." } }
                    }
                }
            }
        }
    };
    Ok(page::shell(
        "Servers",
        Some(&session),
        Section::Servers,
        body,
    ))
}

/// `GET /console/templates`: the templates jobs are made from, with their parameters.
pub async fn templates_page(
    State(state): State<AppState>,
    session: Session,
) -> Result<Html<String>, ConsoleError> {
    session.caller.require(Action::ListTemplates)?;
    let mut templates: Vec<_> = state.templates.all().iter().collect();
    templates.sort_by(|a, b| a.template_type.cmp(&b.template_type));
    let can_create = session.may(Action::CreateJob);
    let body = html! {
        h1 { "Templates" }
        @for t in &templates {
            section.template id={ "template-" (t.template_type) } aria-labelledby={ "t-" (t.id) } {
                h2 id={ "t-" (t.id) } { (t.template_type) " " span.hint { (t.name) } }
                p { (t.description) }
                dl.facts {
                    dt { "Command" } dd { code { (t.cmd) } }
                    dt { "Timeout" } dd { (t.timeout) " s" }
                    dt { "Flavor" } dd { (t.flavor_type) }
                }
                @if !t.params.is_empty() {
                    div.scroll {
                        table {
                            caption { "Parameters of " (t.template_type) }
                            thead {
                                tr {
                                    th scope="col" { "Name" }
                                    th scope="col" { "Description" }
                                    th scope="col" { "Default" }
                                    th scope="col" { "Rule" }
                                }
                            }
                            tbody {
                                @for p in &t.params {
                                    tr {
                                        td { code { (p.name) } }
                                        td { (p.description) }
                                        td { code { (p.value) } }
                                        td { code { (p.regex) } }
                                    }
                                }
                            }
                        }
                    }
                }
                @if can_create {
                    p {
                        a href={ "/console/jobs/new?type=" (page::encode(&t.template_type)) } {
                            "New " (t.template_type) " job"
                        }
                    }
                }
            }
        }
    };
    Ok(page::shell(
        "Templates",
        Some(&session),
        Section::Templates,
        body,
    ))
}
