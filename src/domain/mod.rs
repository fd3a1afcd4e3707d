//! Pure domain logic: validated identifiers, the job and task state vocabulary, list filters
//! and permissions. Nothing here does I/O.

pub mod filter;
pub mod ids;
pub mod job;
pub mod permission;

pub use filter::{JobFilter, PageRequest, SortDir, SortKey};
pub use ids::ProjectId;
pub use job::{JobStatus, TaskStatus};
pub use permission::Action;

/// A client's mistake in a path, query or body value; becomes a 400 `ModelArts.0107`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Most servers one job may run on (a create's `server_ids`, a seeded job's tasks).
pub const MAX_SERVERS_PER_JOB: usize = 1000;

/// A server whose agent was heard from within this time (ms) is online.
pub const ONLINE_WITHIN_MS: i64 = 60_000;

/// Whether a server of `kind` last heard from at `last_seen_at` is online at `now_ms`
/// (simulated servers always are).
pub fn server_online(kind: &str, last_seen_at: Option<i64>, now_ms: i64) -> bool {
    kind == "simulated" || last_seen_at.is_some_and(|at| now_ms - at < ONLINE_WITHIN_MS)
}

/// Current time in epoch milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
