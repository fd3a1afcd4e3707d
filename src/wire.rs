//! Wire types of the Lite Server job API, shared by the server, the CLI and the tests.
//!
//! Field names, JSON types and omissions follow the wire contract: job times are epoch
//! milliseconds as JSON integers, task times are decimal strings, `description` is omitted
//! when a job has none.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The page wrapper of every list answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Page<T> {
    /// The page's number, from 1.
    pub current: u64,
    /// The page's items.
    pub data: Vec<T>,
    /// How many pages the whole result has (0 when it is empty).
    pub pages: u64,
    /// Items per page.
    pub size: u64,
    /// How many items match, exactly.
    pub total: u64,
}

impl<T> Page<T> {
    /// A page that holds every item of a small, complete result.
    pub fn whole(data: Vec<T>) -> Self {
        let total = data.len() as u64;
        Self {
            current: 1,
            pages: u64::from(total > 0),
            size: total,
            total,
            data,
        }
    }
}

/// A job's status (`PROCESSING` until every task ended; `DELETED` after a delete).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = JobStatus)]
pub enum JobStatusName {
    Processing,
    Finished,
    Deleted,
}

/// A task's status.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[schema(as = TaskStatus)]
pub enum TaskStatusName {
    Processing,
    Success,
    Failed,
    Skipped,
}

/// One job in a list (`DevServerJobListResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct JobListItem {
    #[schema(example = "8d3c2f8e-4b53-4c0e-9d53-1a8f3f1e2a10")]
    pub id: String,
    #[schema(example = "hello")]
    pub name: String,
    /// The user who created the job.
    pub user_name: String,
    /// Absent when the job has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The job's type: the type of the template it runs.
    #[serde(rename = "type")]
    #[schema(example = "COMMON")]
    pub job_type: String,
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// How many of its tasks failed.
    #[schema(minimum = 0)]
    pub abnormal_count: i64,
    /// Epoch milliseconds.
    pub create_at: i64,
    /// Epoch milliseconds; moves on every change.
    pub update_at: i64,
}

/// A job with its items and tasks (create and get answers).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct JobDetail {
    pub id: String,
    pub name: String,
    /// The user who created the job.
    pub user_name: String,
    /// Absent when the job has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub job_type: String,
    #[schema(value_type = JobStatusName)]
    pub status: String,
    /// The template the job runs.
    pub template_id: Option<String>,
    /// How many of its tasks failed.
    #[schema(minimum = 0)]
    pub abnormal_count: i64,
    /// Epoch milliseconds.
    pub create_at: i64,
    /// Epoch milliseconds; moves on every change.
    pub update_at: i64,
    /// Extension: `false` hides the job from `visible=true` lists. Always given, except in
    /// strict mode's answers (as the cloud's have neither this nor `is_reboot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub visible: Option<bool>,
    /// Extension: whether the job restarts its servers after failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub is_reboot: Option<bool>,
    /// The items of the request, as given.
    pub items: Vec<JobItem>,
    /// One task per server.
    pub tasks: Vec<Task>,
}

/// One item of a job: what to run on each server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct JobItem {
    /// Matches `^[-_.a-zA-Z0-9]{1,64}$`.
    #[serde(rename = "type")]
    #[schema(pattern = r"^[-_.a-zA-Z0-9]{1,64}$", example = "COMMON")]
    pub item_type: String,
    /// The template's parameters for this item (keys of 1 to 64 characters, none a
    /// control character); each value must match the parameter's `regex`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<BTreeMap<String, String>>,
}

/// A job's task on one server (`DevServerTaskResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Task {
    pub id: String,
    pub server_id: String,
    pub server_name: String,
    #[schema(value_type = TaskStatusName)]
    pub status: String,
    /// What the cloud knows of the server (free-form).
    pub cloud_server: BTreeMap<String, String>,
    /// The task's result, or why it failed or was skipped.
    pub message: String,
    /// Epoch milliseconds as a decimal string, as the SDK models it.
    #[schema(pattern = "^[0-9]+$", example = "1764253200123")]
    pub create_at: String,
    /// Epoch milliseconds as a decimal string.
    #[schema(pattern = "^[0-9]+$", example = "1764253203311")]
    pub update_at: String,
    /// Extension: whether the task's server is online (its agent was heard from within the
    /// last minute; simulated servers always are). Absent when the server was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_online: Option<bool>,
}

/// Body of `POST .../dev-servers/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
#[schema(example = json!({
    "name": "hello",
    "type": "COMMON",
    "server_ids": ["sim-server-01", "sim-server-02"],
    "items": [{"type": "COMMON", "spec": {"cmd": "echo hi"}}]
}))]
pub struct JobCreateRequest {
    #[schema(pattern = r"^[-_.a-zA-Z0-9]{1,64}$")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = r"^[-_.a-zA-Z0-9]{1,64}$")]
    pub description: Option<String>,
    /// The servers of the project to run the job on, each named once (ids of 1 to 64
    /// characters, none a control character); every one must be known in the project.
    #[schema(min_items = 1, max_items = 1000)]
    pub server_ids: Vec<String>,
    /// The job's template, by its type (see the template list).
    #[serde(rename = "type")]
    #[schema(pattern = r"^[-_.a-zA-Z0-9]{1,64}$")]
    pub job_type: String,
    /// Restart after failure (default `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_reboot: Option<bool>,
    #[schema(min_items = 1, max_items = 100)]
    pub items: Vec<JobItem>,
    /// Extension: jobs submitted with `false` are hidden from `visible=true` lists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visible: Option<bool>,
}

/// Body of `DELETE .../dev-servers/jobs`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct DeleteJobsRequest {
    /// Ids of 1 to 64 characters; unknown ones are ignored.
    #[schema(min_items = 1, max_items = 1000)]
    pub job_ids: Vec<String>,
}

/// One template in a list (`DevServerTemplateListResponse`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TemplateListItem {
    pub id: String,
    pub name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub template_type: String,
    pub flavor_type: String,
    pub params: Vec<TemplateParam>,
}

/// A template in full (`GetDevServerJobTemplateResponse`); every scalar is a string.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TemplateDetail {
    pub id: String,
    pub name: String,
    pub description: String,
    pub cmd: String,
    pub swr_path: String,
    pub resources: String,
    pub volumes: String,
    pub volumes_mount: String,
    pub flavor_type: String,
    pub timeout: String,
    pub check_interval: String,
    #[serde(rename = "type")]
    pub template_type: String,
    pub status: String,
    pub params: Vec<TemplateParam>,
}

/// A template parameter; `visible` is the string `"true"` or `"false"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TemplateParam {
    pub name: String,
    pub description: String,
    pub value: String,
    pub visible: String,
    pub regex: String,
}

/// The error body of every failed request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ErrorBody {
    /// `APIG.*` for authentication and gateway errors, `ModelArts.*` for the service's.
    #[schema(example = "ModelArts.0102")]
    pub error_code: String,
    #[schema(example = "The job 0f6b1a52-7c1d-4a8e-a3c4-5e2d9b7c6f01 does not exist.")]
    pub error_msg: String,
    /// The request's id, also answered in `X-Request-Id`.
    pub request_id: String,
}

/// A Lite Server of a project, as the admin commands and the agent see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct Server {
    pub id: String,
    pub name: String,
    /// `agent` (a real node with `litejobs agent`) or `simulated`.
    pub kind: String,
    pub cloud_server: BTreeMap<String, String>,
    pub create_at: i64,
    /// When its agent was last heard from (epoch ms; written every few seconds).
    pub last_seen_at: Option<i64>,
    /// Its agent was heard from within the last minute (simulated servers always are).
    #[serde(default)]
    pub online: bool,
    /// A simulated server's outcome: `SUCCESS`, `FAILED` or `RANDOM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Body of an agent's `PUT …/agent/servers/{server_id}`: the server it runs on.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AgentRegistration {
    /// The server's name (default: its id).
    #[serde(default)]
    pub name: String,
    /// What is known of the server, copied into each of its tasks: at most 32 facts, keys
    /// of 1 to 64 characters and values of at most 256 characters, none of them a control
    /// character.
    #[serde(default)]
    pub cloud_server: BTreeMap<String, String>,
}

/// Facts a server's `cloud_server` holds at most (the field's documentation says so too).
pub const MAX_CLOUD_SERVER_FACTS: usize = 32;
/// Characters a value of `cloud_server` holds at most.
pub const MAX_CLOUD_SERVER_VALUE_CHARS: usize = 256;

/// Checks a server's `cloud_server` (an agent's registration, a seed's task), which every task of the server copies: a few
/// facts of bounded length (an agent sends four).
pub fn check_cloud_server(facts: &BTreeMap<String, String>) -> Result<(), crate::domain::Invalid> {
    if facts.len() > MAX_CLOUD_SERVER_FACTS {
        return Err(crate::domain::Invalid(format!(
            "cloud_server holds at most {MAX_CLOUD_SERVER_FACTS} facts"
        )));
    }
    for (key, value) in facts {
        crate::domain::ids::bounded("cloud_server key", key)?;
        if value.chars().count() > MAX_CLOUD_SERVER_VALUE_CHARS
            || value.chars().any(char::is_control)
        {
            return Err(crate::domain::Invalid(format!(
                "cloud_server values must be at most {MAX_CLOUD_SERVER_VALUE_CHARS} \
                 characters, none of them a control character"
            )));
        }
    }
    Ok(())
}

/// A task handed to a node agent, with what it needs to run it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AgentTask {
    pub task_id: String,
    pub job_id: String,
    pub job_type: String,
    /// The template's command line; `${name}` refers to a parameter, passed in the
    /// environment.
    pub command: String,
    /// Template parameters with their defaults, overridden by each item's spec.
    pub params: BTreeMap<String, String>,
    pub items: Vec<JobItem>,
    pub timeout_secs: u64,
    /// The lease ends then (epoch ms) unless renewed by a heartbeat; a task whose lease
    /// lapsed may be leased again.
    pub lease_until: i64,
    /// The lease's fencing epoch: heartbeats, output and the report name it, and are refused
    /// once the task was leased again under a greater one.
    pub lease_epoch: i64,
}

/// Answer of an agent's lease request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AgentLease {
    pub tasks: Vec<AgentTask>,
}

/// Body of an agent's report of a finished task.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AgentResult {
    /// `SUCCESS` or `FAILED`.
    #[schema(pattern = "^(SUCCESS|FAILED)$")]
    pub status: String,
    #[serde(default)]
    pub message: String,
    /// The epoch of the lease the task ran under: a report from a lease that lapsed, after
    /// which the task was leased again, is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_epoch: Option<i64>,
}

/// Largest output the service keeps of a task (its tail); an agent uploads at most this.
pub const MAX_OUTPUT_BYTES: usize = 1024 * 1024;

/// A lease an agent holds, as its heartbeat names it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct HeldLease {
    pub task_id: String,
    pub lease_epoch: i64,
}

/// Body of an agent's heartbeat: the leases it holds, to renew.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct AgentHeartbeat {
    #[serde(default)]
    pub tasks: Vec<HeldLease>,
}

/// Where one lease stands after a heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct LeaseAnswer {
    pub task_id: String,
    /// `held` (renewed until the answer's `lease_until`), `ended` (the task ended: a deleted
    /// job's task is cancelled; stop it) or `lost` (another lease took it; stop it).
    pub state: String,
    /// The task's status when it ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Answer of an agent's heartbeat.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct HeartbeatAnswer {
    /// The renewed leases end then (epoch ms).
    pub lease_until: i64,
    pub tasks: Vec<LeaseAnswer>,
}

/// The tail of a task's output, as its agent last uploaded it
/// (`GET …/jobs/{id}/tasks/{task_id}/output`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TaskOutputAnswer {
    pub task_id: String,
    pub output: String,
    /// When it was uploaded (epoch ms).
    pub update_at: i64,
}
