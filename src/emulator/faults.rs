//! Fault rules: the cloud's bad days on demand.
//!
//! A rule matches calls by operation (`ListDevServerJobs`, the SDK's method name
//! `list_dev_server_jobs`, a route `GET /v1/{project_id}/dev-servers/jobs`, or `*`) and
//! optionally by project and access key, and injects an error answer (any status and
//! `error_code`; answers the API itself gives are given exactly as it gives them, headers
//! included), a delay, or a dropped connection: on every match, with a probability, or for
//! the next N matches. A task rule makes a simulated server's tasks fail, hang, or finish
//! late. Rules are tried in the order they were added; the first that fires wins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::http::error::{current_request_id, ApiError};
use crate::wire::ErrorBody;
use crate::worker::{TaskFaults, TaskVerdict};

/// Most rules held at once.
pub const MAX_RULES: usize = 100;

/// What a task rule does to a simulated server's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskFault {
    /// The task ends `FAILED` when its delay has passed.
    Fail,
    /// The task never ends (until the rule goes).
    Hang,
    /// The task ends `delay_ms` later than it would.
    Slow,
}

/// A rule as given: flags of `--fault`, or the JSON of `POST /_litejobs/faults`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Operation name, SDK method name, `METHOD /route/template`, or `*` (every call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key: Option<String>,
    /// HTTP status of the injected answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `error_code` of the injected answer (default: the API's own code for the status).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
    /// `Retry-After` seconds of the injected answer (default: the API's own, for 429/503).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
    /// Delay before the answer (or, for a `slow` task rule, added to the task's time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Close the connection without an answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub drop: bool,
    /// Chance (0 to 1) that a matching call is hit (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// Hit the next N matching calls, then the rule goes (default: every one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub times: Option<u64>,
    /// A task rule: what tasks of `server_id` (of `project_id`, if given) do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_id: Option<String>,
}

impl RuleSpec {
    /// Parses `key=value,...` (the `--fault` form): `op`, `project`, `key`, `status`,
    /// `code`, `msg`, `retry_after`, `delay` (`500ms`, `2s`), `drop`, `probability`,
    /// `times`, `task` (`fail`, `hang`, `slow`), `server`.
    pub fn parse_flag(raw: &str) -> Result<Self, String> {
        let mut spec = Self::default();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = part.split_once('=').unwrap_or((part, ""));
            let number = |what: &str| {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{what} must be a whole number, not {value:?}"))
            };
            match key {
                "op" | "operation" => spec.operation = Some(value.to_string()),
                "project" | "project_id" => spec.project_id = Some(value.to_string()),
                "key" | "access_key" => spec.access_key = Some(value.to_string()),
                "status" => {
                    spec.status =
                        Some(u16::try_from(number("status")?).map_err(|_| "status is too large")?)
                }
                "code" | "error_code" => spec.error_code = Some(value.to_string()),
                "msg" | "error_msg" => spec.error_msg = Some(value.to_string()),
                "retry_after" => spec.retry_after = Some(number("retry_after")?),
                "delay" => {
                    let d = crate::config::parse_duration(value)?;
                    spec.delay_ms = Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                }
                "drop" => spec.drop = value.is_empty() || value == "true",
                "probability" => {
                    spec.probability = Some(
                        value
                            .parse()
                            .map_err(|_| format!("probability must be a number, not {value:?}"))?,
                    )
                }
                "times" => spec.times = Some(number("times")?),
                "task" => {
                    spec.task = Some(match value {
                        "fail" => TaskFault::Fail,
                        "hang" => TaskFault::Hang,
                        "slow" => TaskFault::Slow,
                        _ => return Err("task is fail, hang or slow".into()),
                    })
                }
                "server" | "server_id" => spec.server_id = Some(value.to_string()),
                _ => return Err(format!("unknown fault setting {key:?}")),
            }
        }
        spec.check()?;
        Ok(spec)
    }

    /// Refuses rules that say nothing, or something impossible.
    pub fn check(&self) -> Result<(), String> {
        if let Some(op) = self.operation.as_deref() {
            // A name that is no operation would match nothing, silently.
            let route = op == "*" || known_route(op);
            let named = super::OPERATIONS.iter().any(|(_, _, name)| names(op, name));
            if !route && !named {
                let names: Vec<&str> = super::OPERATIONS.iter().map(|(_, _, n)| *n).collect();
                return Err(format!(
                    "unknown operation {op:?}: an operation ({}), a route \
                     (`GET /v1/{{project_id}}/dev-servers/jobs`) or *",
                    names.join(", ")
                ));
            }
        }
        if let Some(p) = self.probability {
            if !(0.0..=1.0).contains(&p) {
                return Err("probability must be from 0 to 1".into());
            }
        }
        if self.times == Some(0) {
            return Err("times must be at least 1".into());
        }
        if self.delay_ms.is_some_and(|d| d > 3_600_000) {
            return Err("a delay is at most 1h".into());
        }
        if let Some(code) = &self.error_code {
            let chars = code.chars().count();
            if !(1..=64).contains(&chars) || code.chars().any(char::is_control) {
                return Err("error_code must be 1 to 64 printable characters".into());
            }
        }
        if self
            .error_msg
            .as_ref()
            .is_some_and(|m| m.chars().count() > 1024)
        {
            return Err("error_msg is at most 1024 characters".into());
        }
        if self.task.is_some() {
            if self.server_id.is_none() {
                return Err("a task rule names its server (server_id)".into());
            }
            let answers = self.operation.is_some()
                || self.access_key.is_some()
                || self.status.is_some()
                || self.error_code.is_some()
                || self.error_msg.is_some()
                || self.retry_after.is_some()
                || self.drop;
            if answers {
                return Err(
                    "a task rule takes server_id, project_id, delay (slow), times and \
                     probability; the others are for calls"
                        .into(),
                );
            }
            if self.task == Some(TaskFault::Slow) && self.delay_ms.is_none() {
                return Err("a slow task rule says how much slower (delay)".into());
            }
            if self.task != Some(TaskFault::Slow) && self.delay_ms.is_some() {
                return Err("only a slow task rule takes a delay".into());
            }
            return Ok(());
        }
        match self.status {
            Some(s) if !(400..=599).contains(&s) => {
                return Err("status must be an error status, 400 to 599".into())
            }
            None if !self.drop && self.delay_ms.is_none() => {
                return Err(
                    "a rule injects a status, a delay, a dropped connection or a \
                            task fault"
                        .into(),
                )
            }
            _ => {}
        }
        Ok(())
    }

    fn matches_operation(&self, call: &Call) -> bool {
        let Some(wanted) = self.operation.as_deref() else {
            return true;
        };
        wanted == "*"
            || names(wanted, &call.operation)
            || wanted == format!("{} {}", call.method, call.route)
            || wanted == call.route
    }

    fn matches(&self, call: &Call) -> bool {
        self.task.is_none()
            && self.matches_operation(call)
            && self
                .project_id
                .as_ref()
                .is_none_or(|p| call.project.as_ref() == Some(p))
            && self
                .access_key
                .as_ref()
                .is_none_or(|k| call.access_key.as_ref() == Some(k))
    }
}

/// A rule in force.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub id: u64,
    #[serde(flatten)]
    pub spec: RuleSpec,
    /// Matching calls it hit so far.
    pub hits: u64,
}

/// What a request is, for matching.
#[derive(Debug, Clone)]
pub struct Call {
    pub operation: String,
    pub method: String,
    pub route: String,
    pub project: Option<String>,
    pub access_key: Option<String>,
}

/// An error answer to give.
#[derive(Debug, Clone)]
pub struct FaultAnswer {
    status: u16,
    error_code: Option<String>,
    error_msg: Option<String>,
    retry_after: Option<u64>,
}

/// True when `op` is `METHOD /route` or `/route` of one of the API's routes, as the OpenAPI
/// document writes them (`GET /v1/{project_id}/dev-servers/jobs/{id}`).
fn known_route(op: &str) -> bool {
    let (method, path) = match op.split_once(' ') {
        Some((method, path)) => (Some(method), path),
        None => (None, op),
    };
    let document = crate::http::openapi::document();
    let Some(item) = document.paths.paths.get(path) else {
        return false;
    };
    let has = |method: &str| {
        match method {
            "GET" => &item.get,
            "POST" => &item.post,
            "PUT" => &item.put,
            "DELETE" => &item.delete,
            "PATCH" => &item.patch,
            _ => return false,
        }
        .is_some()
    };
    method.is_none_or(has)
}

/// True when a rule's `operation` names `operation`: as it is, or as the SDK's method name
/// (`list_dev_server_jobs`), in any case.
fn names(wanted: &str, operation: &str) -> bool {
    wanted.eq_ignore_ascii_case(operation)
        || wanted.replace('_', "").eq_ignore_ascii_case(operation)
}

/// The `error_code` of an injected answer whose code the API itself never gives.
#[derive(Debug, Clone)]
pub struct InjectedCode(pub String);

/// What the layer does to a request.
#[derive(Debug)]
pub struct Injected {
    pub delay: Option<Duration>,
    pub then: Then,
}

#[derive(Debug)]
pub enum Then {
    Answer(FaultAnswer),
    Drop,
    /// The request goes on as usual (after the delay).
    Serve,
}

/// The API's own answer for `status`, when it has one (`body_timeout`: the server's, which
/// its 408 names).
fn api_error(status: u16, retry_after: Option<u64>, body_timeout: Duration) -> Option<ApiError> {
    Some(match status {
        401 => ApiError::Unauthenticated,
        408 => ApiError::BodyTimeout(body_timeout),
        413 => ApiError::BodyTooLarge,
        414 => ApiError::UriTooLong,
        431 => ApiError::HeadersTooLarge,
        403 => ApiError::Forbidden("The caller has no access to this project.".into()),
        400 => ApiError::Invalid("The request is invalid.".into()),
        404 => ApiError::NotFound("The resource does not exist.".into()),
        409 => ApiError::Conflict("The request conflicts with the current state.".into()),
        429 => ApiError::Throttled {
            retry_after_secs: retry_after.unwrap_or(1),
        },
        500 => ApiError::Internal(anyhow::anyhow!("an injected fault")),
        503 => ApiError::Unavailable(anyhow::anyhow!("an injected fault")),
        _ => return None,
    })
}

impl FaultAnswer {
    /// The answer, as the API gives it where the API has one of `status` (`body_timeout`:
    /// the server's, which a 408 names).
    pub fn respond(self, body_timeout: Duration) -> Response {
        // Logged as what it is: a 500 or 503 of the API's own logs a failure at ERROR.
        tracing::info!(status = self.status, "a fault rule answered the request");
        let api = api_error(self.status, self.retry_after, body_timeout);
        let ends_connection = api.as_ref().is_some_and(ApiError::ends_connection);
        let own = api.filter(|e| {
            self.error_code.is_none() || self.error_code.as_deref() == Some(e.status_and_code().1)
        });
        let mut response = match (own, &self.error_msg) {
            // An answer the API gives: given exactly as the API gives it.
            (Some(e), None) => e.into_unlogged_response(),
            (own, _) => {
                let code = self
                    .error_code
                    .clone()
                    .or_else(|| own.as_ref().map(|e| e.status_and_code().1.to_string()))
                    .unwrap_or_else(|| format!("ModelArts.{:04}", self.status));
                let body = ErrorBody {
                    error_code: code.clone(),
                    error_msg: self
                        .error_msg
                        .clone()
                        .or_else(|| own.as_ref().map(ToString::to_string))
                        .unwrap_or_else(|| "An injected fault.".to_string()),
                    request_id: current_request_id(),
                };
                let status =
                    StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                let mut response = (status, axum::Json(body)).into_response();
                response.extensions_mut().insert(InjectedCode(code));
                if matches!(self.status, 429 | 503) {
                    response
                        .headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
                }
                // As the API's own answer of the status (408, 413) ends it.
                if ends_connection {
                    response
                        .headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                response
            }
        };
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// The rules in force, and the tasks the task rules took.
#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    next_id: std::sync::atomic::AtomicU64,
    /// Each task a hang or slow rule holds back: the rule's id, and since when.
    taken: Mutex<HashMap<String, (u64, Instant)>>,
}

impl Faults {
    /// Adds a rule; answers it.
    pub fn add(&self, spec: RuleSpec) -> Result<Rule, String> {
        spec.check()?;
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if rules.len() >= MAX_RULES {
            return Err(format!("at most {MAX_RULES} fault rules"));
        }
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let rule = Rule { id, spec, hits: 0 };
        rules.push(rule.clone());
        Ok(rule)
    }

    pub fn list(&self) -> Vec<Rule> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Removes one rule; false when there was none of that id. The tasks it held back end
    /// as the simulation says when next asked about (not taken by another rule: each task
    /// is taken once).
    pub fn remove(&self, id: u64) -> bool {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let before = rules.len();
        rules.retain(|r| r.id != id);
        rules.len() != before
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.taken.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The fault the first firing rule injects into `call`, if any.
    pub fn pick(&self, call: &Call) -> Option<Injected> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if rules.is_empty() {
            return None;
        }
        let index = rules.iter().position(|rule| {
            rule.spec.matches(call)
                && rule
                    .spec
                    .probability
                    .is_none_or(|p| rand::thread_rng().gen_bool(p.clamp(0.0, 1.0)))
        })?;
        let rule = &mut rules[index];
        rule.hits += 1;
        let spec = rule.spec.clone();
        if spec.times.is_some_and(|n| rule.hits >= n) {
            rules.remove(index);
        }
        let then = match spec.status {
            Some(status) => Then::Answer(FaultAnswer {
                status,
                error_code: spec.error_code,
                error_msg: spec.error_msg,
                retry_after: spec.retry_after,
            }),
            None if spec.drop => Then::Drop,
            None => Then::Serve,
        };
        Some(Injected {
            delay: spec.delay_ms.map(Duration::from_millis),
            then,
        })
    }
}

impl TaskFaults for Faults {
    /// A rule whose `times` tasks are all gone goes.
    fn due_now(&self, tasks: &std::collections::HashSet<String>) {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        taken.retain(|task, _| tasks.contains(task));
        rules.retain(|r| !spent(r, &taken));
    }

    /// A task is taken by the first task rule of its server that fires (its probability,
    /// and `times` tasks at most), once: a hang or slow rule holds it back until the rule
    /// goes or the delay has passed. A rule that took its `times` tasks goes once it holds
    /// none back.
    fn verdict(&self, project_id: &str, server_id: &str, task_id: &str) -> TaskVerdict {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = self.taken.lock().unwrap_or_else(|e| e.into_inner());
        let index = match taken.get(task_id) {
            Some((id, _)) => match rules.iter().position(|r| r.id == *id) {
                Some(index) => index,
                None => {
                    taken.remove(task_id);
                    return TaskVerdict::AsSimulated;
                }
            },
            None => {
                let fires = |r: &Rule| {
                    r.spec.task.is_some()
                        && r.spec.server_id.as_deref() == Some(server_id)
                        && r.spec.project_id.as_ref().is_none_or(|p| p == project_id)
                        && r.spec.times.is_none_or(|n| r.hits < n)
                        && r.spec
                            .probability
                            .is_none_or(|p| rand::thread_rng().gen_bool(p.clamp(0.0, 1.0)))
                };
                let Some(index) = rules.iter().position(fires) else {
                    return TaskVerdict::AsSimulated;
                };
                rules[index].hits += 1;
                taken.insert(task_id.to_string(), (rules[index].id, Instant::now()));
                index
            }
        };
        let rule = &rules[index];
        let verdict = match rule.spec.task {
            Some(TaskFault::Hang) => TaskVerdict::Wait,
            Some(TaskFault::Slow) => {
                let extra = Duration::from_millis(rule.spec.delay_ms.unwrap_or(0));
                let since = taken.get(task_id).map_or_else(Instant::now, |(_, at)| *at);
                if since.elapsed() < extra {
                    TaskVerdict::Wait
                } else {
                    TaskVerdict::AsSimulated
                }
            }
            Some(TaskFault::Fail) => TaskVerdict::Fail,
            None => TaskVerdict::AsSimulated,
        };
        if verdict != TaskVerdict::Wait {
            taken.remove(task_id);
            if spent(rule, &taken) {
                rules.remove(index);
            }
        }
        verdict
    }
}

/// True for a task rule that took its `times` tasks and holds none of them back: it goes.
fn spent(rule: &Rule, taken: &HashMap<String, (u64, Instant)>) -> bool {
    rule.spec.task.is_some()
        && rule.spec.times.is_some_and(|n| rule.hits >= n)
        && !taken.values().any(|(held_by, _)| *held_by == rule.id)
}

#[cfg(test)]
mod tests;
