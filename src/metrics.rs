//! Prometheus metrics: the process-wide recorder behind `/metrics`, the names of every
//! metric the service keeps, and the small functions the rest of the code counts through.
//!
//! Labels come from bounded sets only: route templates (never raw paths), methods, status
//! codes, kinds of failure, task statuses, project ids.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// HTTP requests answered, by route template, method and status.
pub const HTTP_REQUESTS: &str = "litejobs_http_requests_total";
/// Their latency, by route template and method.
pub const HTTP_DURATION: &str = "litejobs_http_request_duration_seconds";
/// Failed authentications, by kind (`missing`, `malformed`, `signature`, `token`,
/// `password`).
pub const AUTH_FAILURES: &str = "litejobs_auth_failures_total";
/// Attempts refused because their credential or address is locked out.
pub const AUTH_LOCKOUTS: &str = "litejobs_auth_lockouts_total";
/// Requests answered 429 by the rate limit.
pub const RATE_LIMITED: &str = "litejobs_rate_limited_total";
/// Jobs created, finished (every task ended) and deleted.
pub const JOBS_CREATED: &str = "litejobs_jobs_created_total";
pub const JOBS_FINISHED: &str = "litejobs_jobs_finished_total";
pub const JOBS_DELETED: &str = "litejobs_jobs_deleted_total";
/// Tasks ended, by status (`SUCCESS`, `FAILED`, `SKIPPED`).
pub const TASKS_ENDED: &str = "litejobs_tasks_ended_total";
/// Running tasks (`PROCESSING`), by state: `waiting` for an agent, `leased` by one, or
/// `simulated`.
pub const TASKS_RUNNING: &str = "litejobs_tasks_running";
/// Agents heard from within the last minute, by project.
pub const AGENTS_ONLINE: &str = "litejobs_agents_online";
/// Database connections of the server, by pool and state (`idle`, `in_use`).
pub const DB_CONNECTIONS: &str = "litejobs_db_connections";
/// Audit records dropped because the queue to the database was full.
pub const AUDIT_DROPPED: &str = "litejobs_audit_dropped_total";
/// Statements sent to the database.
pub const DB_STATEMENTS: &str = "litejobs_db_statements_total";
/// Statements the database answered with an error.
pub const DB_STATEMENT_ERRORS: &str = "litejobs_db_statement_errors_total";

/// Latency buckets (seconds): from half a millisecond to a long poll.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0,
    30.0,
];

/// The route label of a request that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static PROCESS: OnceLock<metrics_process::Collector> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use; `None` when another recorder
/// was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(HTTP_DURATION.to_string()), &LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .as_ref()
}

/// How often the histograms' recent samples are folded into their buckets.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Folds the histograms' samples into their buckets every few seconds until `shutdown`:
/// the recorder keeps each sample until then, so without it a server nobody scrapes would
/// hold every request's latency.
pub async fn run_upkeep(shutdown: tokio_util::sync::CancellationToken) {
    let Some(handle) = handle() else { return };
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => handle.run_upkeep(),
            () = shutdown.cancelled() => return,
        }
    }
}

/// The metrics in Prometheus's text format, process metrics freshly read.
pub fn render() -> Option<String> {
    let handle = handle()?;
    PROCESS
        .get_or_init(|| {
            let collector = metrics_process::Collector::default();
            collector.describe();
            collector
        })
        .collect();
    Some(handle.render())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by route template, method and status"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route template and method"
    );
    describe_counter!(AUTH_FAILURES, "failed authentications, by kind");
    describe_counter!(
        AUTH_LOCKOUTS,
        "attempts refused while their credential or address is locked out"
    );
    describe_counter!(RATE_LIMITED, "requests answered 429 by the rate limit");
    describe_counter!(JOBS_CREATED, "jobs created");
    describe_counter!(JOBS_FINISHED, "jobs whose every task ended");
    describe_counter!(JOBS_DELETED, "jobs deleted");
    describe_counter!(TASKS_ENDED, "tasks ended, by status");
    describe_gauge!(
        TASKS_RUNNING,
        "running tasks, by state (waiting, leased, simulated)"
    );
    describe_gauge!(
        AGENTS_ONLINE,
        "agents heard from within the last minute, by project"
    );
    describe_gauge!(DB_CONNECTIONS, "database connections, by pool and state");
    describe_counter!(
        AUDIT_DROPPED,
        "audit records dropped because their queue was full"
    );
    describe_counter!(DB_STATEMENTS, "statements sent to the database");
    describe_counter!(
        DB_STATEMENT_ERRORS,
        "statements the database answered with an error"
    );
    // Every counter exists from the start (at 0), so that rates and alerts see it before
    // its first event.
    for name in [
        AUTH_LOCKOUTS,
        RATE_LIMITED,
        JOBS_CREATED,
        JOBS_FINISHED,
        JOBS_DELETED,
        AUDIT_DROPPED,
        DB_STATEMENTS,
        DB_STATEMENT_ERRORS,
    ] {
        metrics::counter!(name).increment(0);
    }
    for kind in [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::Signature,
        AuthFailure::Token,
        AuthFailure::Password,
    ] {
        metrics::counter!(AUTH_FAILURES, "kind" => kind.label()).increment(0);
    }
    for status in ["SUCCESS", "FAILED", "SKIPPED"] {
        metrics::counter!(TASKS_ENDED, "status" => status).increment(0);
    }
}

/// Counts a statement sent to the database, and whether it failed.
pub fn statement<T, E>(outcome: &Result<T, E>) {
    let (sent, failed) = statement_counters();
    sent.increment(1);
    if outcome.is_err() {
        failed.increment(1);
    }
}

/// The statement counters, made once: looking a metric up in the registry costs more than
/// counting, and every statement counts.
fn statement_counters() -> &'static (metrics::Counter, metrics::Counter) {
    static COUNTERS: OnceLock<(metrics::Counter, metrics::Counter)> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        // Made while the recorder is in place (a handle made before it would count nowhere).
        let _ = handle();
        (
            metrics::counter!(DB_STATEMENTS),
            metrics::counter!(DB_STATEMENT_ERRORS),
        )
    })
}

/// Counts an answered request.
pub fn http_request(route: &str, method: &axum::http::Method, status: u16, elapsed: Duration) {
    let (count, latency) = request_metrics(route, method_label(method), status);
    count.increment(1);
    latency.record(elapsed.as_secs_f64());
}

/// A request's counter (by route, method and status) and latency histogram (by route and
/// method).
type RequestMetrics = (metrics::Counter, metrics::Histogram);

/// The metrics of each route, method and status seen, made once each: making a metric's
/// key (its labels) costs more than counting, and every request counts.
static REQUEST_METRICS: OnceLock<RwLock<RouteMetrics>> = OnceLock::new();

/// Per route template, per method and status.
type RouteMetrics = HashMap<String, HashMap<(&'static str, u16), RequestMetrics>>;

fn request_metrics(route: &str, method: &'static str, status: u16) -> RequestMetrics {
    let table = REQUEST_METRICS.get_or_init(Default::default);
    let known = table.read().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = known.get(route).and_then(|m| m.get(&(method, status))) {
        return found.clone();
    }
    drop(known);
    // Made while the recorder is in place (a handle made before it would count nowhere).
    let _ = handle();
    let made = (
        metrics::counter!(
            HTTP_REQUESTS,
            "route" => route.to_string(),
            "method" => method,
            "status" => status.to_string()
        ),
        metrics::histogram!(HTTP_DURATION, "route" => route.to_string(), "method" => method),
    );
    table
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .entry(route.to_string())
        .or_default()
        .insert((method, status), made.clone());
    made
}

/// A method's label: the standard ones by name, any other as `other` (a client may send
/// any token as a method; labels come from bounded sets).
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::TRACE => "TRACE",
        Method::CONNECT => "CONNECT",
        _ => "other",
    }
}

/// Why an authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credentials at all.
    Missing,
    /// An `Authorization` header that is no signature this service knows.
    Malformed,
    /// A signature that does not verify (unknown key, wrong secret, stale date, …).
    Signature,
    /// An unknown, expired or revoked token.
    Token,
    /// A wrong user name or password for a token.
    Password,
}

impl AuthFailure {
    fn label(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Signature => "signature",
            Self::Token => "token",
            Self::Password => "password",
        }
    }
}

pub fn auth_failure(kind: AuthFailure) {
    metrics::counter!(AUTH_FAILURES, "kind" => kind.label()).increment(1);
}

pub fn auth_lockout() {
    metrics::counter!(AUTH_LOCKOUTS).increment(1);
}

pub fn rate_limited() {
    metrics::counter!(RATE_LIMITED).increment(1);
}

pub fn jobs_created(n: u64) {
    metrics::counter!(JOBS_CREATED).increment(n);
}

pub fn jobs_deleted(n: u64) {
    metrics::counter!(JOBS_DELETED).increment(n);
}

pub fn job_finished() {
    metrics::counter!(JOBS_FINISHED).increment(1);
}

pub fn tasks_ended(status: &'static str, n: u64) {
    metrics::counter!(TASKS_ENDED, "status" => status).increment(n);
}
