//! The emulator: what a test suite needs from litejobs beyond a faithful happy path.
//!
//! - the IAM project listing the SDKs call on their own (`keystone.rs`), so production code
//!   finds its project by region;
//! - the control API under `/_litejobs/` (`control.rs`; only with `--simulate`, for the
//!   administrator): reset, seed and export (`seed.rs`), fault rules (`faults.rs`) and the
//!   request journal (`journal.rs`);
//! - [`intercept`], the layer that applies fault rules and writes the journal;
//! - the settings a caller exports to point the official SDKs here ([`env_lines`]).

pub mod control;
pub mod faults;
pub mod journal;
pub mod keystone;
pub mod ready;
pub mod seed;
pub mod strict;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::http::error::ErrorCode;
use crate::http::AppState;

/// Prefix of the control API: outside the cloud's namespaces (`/v1/`, `/v3/`).
pub const CONTROL_PREFIX: &str = "/_litejobs/";

/// Region the demo project answers for when none is configured.
pub const DEFAULT_REGION: &str = "cn-north-4";

/// What the emulator holds for the HTTP layer.
pub struct Emulator {
    /// The region the demo project answers for in the IAM project listing.
    pub region: String,
    /// The demo account's public credentials are accepted (a simulating server on loopback).
    pub demo_account: bool,
    /// The control API is served, and fault rules apply (`--simulate`).
    pub control: bool,
    /// Answer exactly what the cloud answers (`--strict`).
    pub strict: bool,
    pub faults: faults::Faults,
    pub journal: journal::Journal,
    /// What a reset brings back: the simulated fleet and the seed given at start.
    pub start_state: Option<control::StartState>,
    /// Where the resets erased the job events.
    pub erased: Erased,
}

/// The last job event handed out when a reset erased a project's events (by project id;
/// `""` for every project): a watch resuming from it or before saw the project as it was
/// before the reset, and may have missed changes no longer kept.
#[derive(Default)]
pub struct Erased(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl Erased {
    /// A reset of `project` (or of every one) erased events up to `through`.
    pub fn record(&self, project: Option<&str>, through: i64) {
        let mut erased = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let at = erased.entry(project.unwrap_or("").to_string()).or_default();
        *at = (*at).max(through);
    }

    /// Up to which event `project`'s events were last erased, if they were.
    pub fn through(&self, project: &str) -> Option<i64> {
        let erased = self.0.lock().unwrap_or_else(|e| e.into_inner());
        erased
            .get(project)
            .into_iter()
            .chain(erased.get(""))
            .copied()
            .max()
    }
}

impl Default for Emulator {
    fn default() -> Self {
        Self {
            region: DEFAULT_REGION.to_string(),
            demo_account: false,
            control: false,
            strict: false,
            faults: faults::Faults::default(),
            journal: journal::Journal::new(1000),
            start_state: None,
            erased: Erased::default(),
        }
    }
}

impl Emulator {
    /// The name IAM gives `project`: the demo project answers for the region, as a cloud
    /// project is named after its region.
    pub fn project_name<'a>(&'a self, project: &'a crate::store::ProjectRecord) -> &'a str {
        if self.demo_account && project.id == crate::iam::demo::PROJECT_ID {
            &self.region
        } else {
            &project.name
        }
    }

    /// The project a token's scope names by the name IAM gives it, where that is not its
    /// own: the demo project's id for the region.
    pub fn project_named(&self, scope: &str) -> Option<&'static str> {
        (self.demo_account && scope == self.region).then_some(crate::iam::demo::PROJECT_ID)
    }

    /// The project `named` (an id or a name) means: the store's, else the demo project for
    /// the region name IAM gives it.
    pub async fn find_project(
        &self,
        store: &dyn crate::store::Store,
        named: &str,
    ) -> crate::store::StoreResult<Option<crate::store::ProjectRecord>> {
        if let Some(found) = store.find_project(named).await? {
            return Ok(Some(found));
        }
        match self.project_named(named) {
            Some(demo) => store.find_project(demo).await,
            None => Ok(None),
        }
    }

    /// `seed` with the demo project named by the region name IAM gives it (a grant's, a
    /// server's or a job's `project`) named by its id: unless a project has that name, in
    /// the store or the seed.
    pub async fn resolve_seed(
        &self,
        store: &dyn crate::store::Store,
        seed: &mut seed::Seed,
    ) -> crate::store::StoreResult<()> {
        let Some(demo) = self.project_named(&self.region) else {
            return Ok(());
        };
        let region = self.region.as_str();
        let its_own = |p: &seed::SeedProject| p.name == region || p.id.as_deref() == Some(region);
        if seed.projects.iter().any(its_own) || store.find_project(region).await?.is_some() {
            return Ok(());
        }
        let grants = seed.users.iter_mut().flat_map(|u| u.grants.iter_mut());
        let named = (grants.map(|g| &mut g.project))
            .chain(seed.servers.iter_mut().map(|s| &mut s.project))
            .chain(seed.jobs.iter_mut().map(|j| &mut j.project));
        for project in named.filter(|p| *p == region) {
            *project = demo.to_string();
        }
        Ok(())
    }
}

impl crate::worker::TaskFaults for Emulator {
    fn verdict(
        &self,
        project_id: &str,
        server_id: &str,
        task_id: &str,
    ) -> crate::worker::TaskVerdict {
        self.faults.verdict(project_id, server_id, task_id)
    }

    fn due_now(&self, tasks: &std::collections::HashSet<String>) {
        self.faults.due_now(tasks);
    }
}

/// The routes of the emulator: the IAM project listing always, the control API only on a
/// server that serves it (elsewhere its paths are unknown: 404 `APIG.0101`).
pub fn routes(state: &AppState) -> Router<AppState> {
    let router = Router::new().route("/v3/projects", get(keystone::list_projects));
    if state.emulator.control {
        router.merge(control::routes())
    } else {
        router
    }
}

/// The settings that point the official SDKs at `endpoint` for `region`, signing with
/// `access_key`/`secret_key`: the SDKs' own endpoint overrides and credential variables.
pub fn env_lines(
    endpoint: &str,
    region: &str,
    access_key: &str,
    secret_key: &str,
) -> Vec<(String, String)> {
    let region_var = region.replace('-', "_").to_ascii_uppercase();
    vec![
        (
            format!("HUAWEICLOUD_SDK_REGION_MODELARTS_{region_var}"),
            endpoint.to_string(),
        ),
        (
            "HUAWEICLOUD_SDK_IAM_ENDPOINT".to_string(),
            endpoint.to_string(),
        ),
        ("HUAWEICLOUD_SDK_AK".to_string(), access_key.to_string()),
        ("HUAWEICLOUD_SDK_SK".to_string(), secret_key.to_string()),
    ]
}

/// The operations the SDKs call, as they name them, with the method and route of each.
pub const OPERATIONS: [(&str, &str, &str); 10] = [
    (
        "GET",
        "/v1/{project_id}/dev-servers/jobs",
        "ListDevServerJobs",
    ),
    (
        "POST",
        "/v1/{project_id}/dev-servers/jobs",
        "CreateDevServerJob",
    ),
    (
        "DELETE",
        "/v1/{project_id}/dev-servers/jobs",
        "DeleteDevServerJobs",
    ),
    (
        "GET",
        "/v1/{project_id}/dev-servers/jobs/{id}",
        "GetDevServerJob",
    ),
    (
        "GET",
        "/v1/{project_id}/dev-servers/jobs/templates",
        "ListDevServerJobTemplates",
    ),
    (
        "GET",
        "/v1/{project_id}/dev-servers/jobs/templates/{id}",
        "GetDevServerJobTemplate",
    ),
    (
        "GET",
        "/v1/{project_id}/dev-servers/jobs/services/{id}",
        "GetDevServerJobService",
    ),
    ("GET", "/v3/projects", "KeystoneListProjects"),
    (
        "POST",
        "/v3/auth/tokens",
        "KeystoneCreateUserTokenByPassword",
    ),
    ("DELETE", "/v3/auth/tokens", "RevokeToken"),
];

/// The name of the operation a request calls, as the SDKs name it (`ListDevServerJobs`),
/// or `METHOD route` for a route the SDKs do not call.
pub fn operation(method: &str, route: &str) -> String {
    OPERATIONS
        .iter()
        .find(|(m, r, _)| *m == method && *r == route)
        .map_or_else(
            || format!("{method} {route}"),
            |(_, _, name)| (*name).to_string(),
        )
}

/// The project of a `/v1/{project_id}/…` path, as sent.
fn path_project(path: &str) -> Option<String> {
    let raw = path.strip_prefix("/v1/")?.split('/').next()?;
    (!raw.is_empty()).then(|| {
        percent_encoding::percent_decode_str(raw)
            .decode_utf8_lossy()
            .into_owned()
    })
}

/// The access key a request is signed with, if any.
fn signing_key(request: &Request) -> Option<String> {
    let raw = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    crate::sign::Authorization::parse(raw).map(|a| a.access_key)
}

/// The layer of the emulator: applies the first fault rule a request matches (an error
/// answer, a delay, a dropped connection) and records the request in the journal. Control
/// requests pass untouched and unrecorded. The router installs it only with `--simulate` or
/// `--strict`.
pub async fn intercept(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let emulator = state.emulator.clone();
    let path = request.uri().path().to_string();
    if path.starts_with(CONTROL_PREFIX) {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::metrics::UNMATCHED_ROUTE, |m| m.as_str())
        .to_string();
    if !emulator.control {
        return strictly(&route, &method, request, next).await;
    }
    let call = faults::Call {
        operation: operation(&method, &route),
        method: method.clone(),
        route,
        project: path_project(&path),
        access_key: signing_key(&request),
    };
    let query = request.uri().query().unwrap_or("").to_string();
    let response = match emulator.faults.pick(&call) {
        Some(fault) => apply(fault, request, next, emulator.strict, state.bodies.timeout).await,
        None if emulator.strict => strictly(&call.route, &call.method, request, next).await,
        None => next.run(request).await,
    };
    record(&emulator, call, (path, query), &response, started);
    response
}

/// The request served as the cloud serves it (`--strict`).
async fn strictly(route: &str, method: &str, request: Request, next: Next) -> Response {
    if strict::is_extension_route(route) {
        return crate::http::error::ApiError::NoSuchApi.into_response();
    }
    let response = next.run(request).await;
    strict::trim_answer(&operation(method, route), response).await
}

/// `strict`: whether the server runs `--strict`; `body_timeout`: its body timeout.
async fn apply(
    fault: faults::Injected,
    request: Request,
    next: Next,
    strict: bool,
    body_timeout: std::time::Duration,
) -> Response {
    if let Some(delay) = fault.delay {
        tokio::time::sleep(delay).await;
    }
    match fault.then {
        faults::Then::Answer(answer) => answer.respond(body_timeout),
        faults::Then::Serve if strict => {
            let route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or(crate::metrics::UNMATCHED_ROUTE, |m| m.as_str())
                .to_string();
            let method = request.method().as_str().to_string();
            strictly(&route, &method, request, next).await
        }
        faults::Then::Serve => next.run(request).await,
        faults::Then::Drop => {
            let mut response = ().into_response();
            response
                .extensions_mut()
                .insert(crate::http::server::DropConnection);
            response
        }
    }
}

fn record(
    emulator: &Arc<Emulator>,
    call: faults::Call,
    (path, query): (String, String),
    response: &Response,
    started: Instant,
) {
    let dropped = response
        .extensions()
        .get::<crate::http::server::DropConnection>()
        .is_some();
    let error_code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.to_string())
        .or_else(|| {
            response
                .extensions()
                .get::<faults::InjectedCode>()
                .map(|c| c.0.clone())
        });
    emulator.journal.record(journal::Entry {
        seq: 0,
        at: crate::domain::now_ms(),
        method: call.method,
        path,
        query,
        operation: call.operation,
        route: call.route,
        project_id: call.project,
        access_key: call.access_key,
        status: if dropped {
            0
        } else {
            response.status().as_u16()
        },
        error_code,
        elapsed_ms: started.elapsed().as_secs_f64() * 1000.0,
        request_id: crate::http::error::current_request_id(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_as_the_sdks_name_them() {
        let jobs = "/v1/{project_id}/dev-servers/jobs";
        assert_eq!(operation("GET", jobs), "ListDevServerJobs");
        assert_eq!(operation("POST", jobs), "CreateDevServerJob");
        assert_eq!(operation("DELETE", jobs), "DeleteDevServerJobs");
        assert_eq!(
            operation("GET", "/v1/{project_id}/dev-servers/jobs/{id}"),
            "GetDevServerJob"
        );
        assert_eq!(operation("GET", "/v3/projects"), "KeystoneListProjects");
        assert_eq!(operation("GET", "/health"), "GET /health");
    }

    #[test]
    fn env_lines_use_the_sdks_variables() {
        let lines = env_lines("http://127.0.0.1:1", "cn-north-4", "AK", "SK");
        assert_eq!(
            lines[0],
            (
                "HUAWEICLOUD_SDK_REGION_MODELARTS_CN_NORTH_4".to_string(),
                "http://127.0.0.1:1".to_string()
            )
        );
        assert_eq!(lines[1].0, "HUAWEICLOUD_SDK_IAM_ENDPOINT");
    }
}
