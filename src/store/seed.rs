//! What the emulator's reset, seed and export need from the store: jobs written as they are
//! given (any state, any times, their tasks), read back whole, and erased.

use async_trait::async_trait;

use super::StoreResult;
use crate::domain::ProjectId;

/// A job row as stored, with its tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRow {
    pub id: String,
    pub name: String,
    pub user_name: String,
    pub description: Option<String>,
    pub job_type: String,
    pub template_id: Option<String>,
    /// `PROCESSING`, `FINISHED` or `DELETED`.
    pub status: String,
    pub visible: bool,
    /// The JSON array of the job's items.
    pub items: String,
    pub create_at: i64,
    pub update_at: i64,
    pub deleted_at: Option<i64>,
    pub tasks: Vec<TaskRow>,
}

/// A task row as stored (its `create_at` is its job's).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: String,
    pub server_id: String,
    pub server_name: String,
    /// `PROCESSING`, `SUCCESS`, `FAILED` or `SKIPPED`.
    pub status: String,
    pub message: String,
    /// The JSON object of the task's cloud server.
    pub cloud_server: String,
    /// Ended by the simulated fleet (a task of a simulated server).
    pub simulated: bool,
    pub update_at: i64,
}

#[async_trait]
pub trait SeedStore: Send + Sync {
    /// Writes jobs as given, in one transaction; counters and indexes follow.
    async fn insert_job_rows(&self, project: &ProjectId, jobs: &[JobRow]) -> StoreResult<()>;
    /// Every job of a project with its tasks, oldest first.
    async fn job_rows(&self, project: &ProjectId) -> StoreResult<Vec<JobRow>>;
    /// Erases the jobs of a project (or of every project), with their tasks, output,
    /// idempotency keys and events; answers how many jobs went.
    async fn erase_jobs(&self, project: Option<&ProjectId>) -> StoreResult<u64>;
    /// Deletes a project with its servers, grants and tokens (its jobs erased first).
    async fn delete_project(&self, project: &ProjectId) -> StoreResult<bool>;
}
