//! The job list, which every backend answers the same way: [`plan`] decides how a page and
//! its exact total are read, each backend runs the plan with its own SQL
//! (`sqlite/list.rs`, `postgres/list.rs`), and [`item`] writes the page as the answer holds
//! it. How it stays fast at millions of jobs: `docs/design/job-list.md`.

pub mod item;
pub mod plan;

use super::{StoreError, StoreResult};
use crate::wire::JobListItem;

/// One page of the job list, as the store read it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// Jobs matching the filter, on every page.
    pub total: u64,
    /// The page's jobs: a JSON array of list items (`JobListItem`), written by the store
    /// (UTF-8).
    pub data: Vec<u8>,
}

impl JobPage {
    /// No job.
    pub fn empty() -> Self {
        Self {
            total: 0,
            data: b"[]".to_vec(),
        }
    }

    /// The page's jobs, decoded.
    pub fn items(&self) -> StoreResult<Vec<JobListItem>> {
        serde_json::from_slice(&self.data)
            .map_err(|e| StoreError::internal(format!("job page: {e}")))
    }
}
