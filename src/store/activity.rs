//! The job events of the live watch and the audit trail: their records and the
//! [`ActivityStore`] each backend implements.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::ProjectId;

/// A change of a job, as the live watch delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// Its place in the order changes were committed in (the SSE event id).
    pub seq: i64,
    pub project_id: String,
    pub job_id: String,
    /// `created`, `task` (one of its tasks ended), `finished` or `deleted`.
    pub kind: String,
    /// The job's list item (JSON) as it was after the change.
    pub item: String,
    /// For `task` and `finished`: the task that ended (JSON: id, server_id, status, message
    /// (its start), update_at).
    pub task: Option<String>,
    pub visible: bool,
    /// The job's `update_at` after the change.
    pub at: i64,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AuditRecord {
    /// Epoch ms.
    pub at: i64,
    pub project_id: Option<String>,
    /// `unknown` when the caller was not authenticated.
    pub user_id: String,
    pub user_name: String,
    /// The access key the request was signed with (its id, never its secret).
    pub access_key: Option<String>,
    /// What was done or tried, e.g. `job.create`, `token.issue`, `authenticate`.
    pub action: String,
    /// Ids of what it was done to.
    pub resources: Vec<String>,
    /// The caller's address (or `cli` for an administration command).
    pub source: String,
    pub request_id: String,
    /// `success`, `denied` (authentication or permission refused) or `failed`.
    pub outcome: String,
    /// The HTTP status answered (0 for an administration command that failed).
    pub status: u16,
    pub error_code: Option<String>,
}

/// Which audit records to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    /// A name or id the records were made under (a removed user's, `unknown`, an operating
    /// system's user of the administration commands).
    pub user: Option<String>,
    /// A user's id alone: the records of that user.
    pub user_id: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    pub project_id: Option<String>,
    pub limit: i64,
}

/// The job events of the live watch, and the audit trail.
#[async_trait]
pub trait ActivityStore: Send + Sync {
    /// Job events after `after` (of one project, or all), in order, at most `limit`.
    async fn job_events_after(
        &self,
        project: Option<&ProjectId>,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<JobEvent>>;
    /// The last job event's `seq`; with none left (purged or erased), the last `seq` handed
    /// out; 0 when none ever was.
    async fn last_job_event(&self) -> StoreResult<i64>;
    /// The first job event's `seq` the store keeps (older ones were purged or erased), or
    /// `None` when it keeps none.
    async fn first_job_event(&self) -> StoreResult<Option<i64>>;
    /// The transactions writing job events now, where the database tells them
    /// (PostgreSQL: the transaction ids of the sessions holding the events table's write
    /// lock); `None` where it does not. An event's `seq` is handed out before its
    /// transaction commits: one of these may hold the `seq` of a gap in the events.
    async fn writers_now(&self) -> StoreResult<Option<Vec<String>>>;
    /// True while any of `writers` (from [`Self::writers_now`]) has not ended.
    async fn any_writing(&self, writers: &[String]) -> StoreResult<bool>;
    async fn record_audit(&self, records: &[AuditRecord]) -> StoreResult<()>;
    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>>;
    /// Removes job events before `events_before_ms` and audit records before
    /// `audit_before_ms`.
    async fn purge_activity(&self, events_before_ms: i64, audit_before_ms: i64) -> StoreResult<()>;
}
