//! Prometheus metrics: the process-wide recorder, and the counters the store keeps.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Statements sent to the database.
pub const DB_STATEMENTS: &str = "litejobs_db_statements_total";
/// Statements the database answered with an error.
pub const DB_STATEMENT_ERRORS: &str = "litejobs_db_statement_errors_total";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use; `None` when another recorder
/// was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok().map(|()| handle)
        })
        .as_ref()
}

/// Counts a statement sent to the database, and whether it failed.
pub fn statement<T, E>(outcome: &Result<T, E>) {
    metrics::counter!(DB_STATEMENTS).increment(1);
    if outcome.is_err() {
        metrics::counter!(DB_STATEMENT_ERRORS).increment(1);
    }
}
