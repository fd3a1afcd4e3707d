//! Persistence: one [`Store`] interface, implemented on SQLite (the zero-configuration default)
//! and on PostgreSQL (shared by any number of replicas).
//!
//! Every job method takes the project first, and every query is scoped to it when built, so
//! no caller can read or change another project's rows. Where to find what:
//! - `error.rs`: the store's failures, classified where the drivers' errors arise;
//! - `activity.rs`: the live watch's job events and the audit trail ([`ActivityStore`]);
//! - `list/`: the job list's planner (`plan.rs`) and the page it answers (`item.rs`);
//! - `shared/`: the SQL both backends run (identities, jobs, tasks, servers, creates);
//! - `sqlite/` and `postgres/`: each backend's connections, list and creates;
//! - `bulk.rs`: bulk loading, for the benchmark.

mod activity;
pub mod bulk;
pub mod error;
pub mod list;
pub mod postgres;
pub mod seed;
mod shared;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod testing;
pub mod wake;

use async_trait::async_trait;

pub use activity::{ActivityStore, AuditFilter, AuditRecord, JobEvent};
pub use error::{StoreError, StoreResult};
pub use list::JobPage;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::domain::filter::ListJobsQuery;
use crate::domain::{ProjectId, TaskStatus};
use crate::wire::{JobDetail, JobItem, JobListItem, Server};

/// A validated job to create.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub job_type: String,
    pub template_id: Option<String>,
    pub user_name: String,
    pub visible: bool,
    pub is_reboot: bool,
    pub items: Vec<JobItem>,
    pub server_ids: Vec<String>,
    pub now_ms: i64,
}

/// An `X-Client-Token` and the hash of the body it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub token: String,
    pub body_hash: String,
    /// The hash an earlier version kept of the same request (of the request alone, where
    /// `body_hash` also holds its user): a key it stored answers its job to that job's user.
    pub earlier_hash: Option<String>,
    /// Keys older than this (epoch ms) are expired and may be reused.
    pub not_before_ms: i64,
}

/// A simulated task whose delay has passed, ready to be finished.
#[derive(Debug, Clone)]
pub struct DueTask {
    pub project_id: ProjectId,
    pub task_id: String,
    pub server_id: String,
    /// `SUCCESS`, `FAILED` or `RANDOM`.
    pub outcome: String,
}

/// The lease an agent's report claims to hold.
#[derive(Debug, Clone, Copy)]
pub struct TaskLease<'a> {
    pub server_id: &'a str,
    /// The user who leased the task.
    pub owner: &'a str,
    /// The lease's epoch: every lease of a task has a greater one than the lease before, so
    /// a report under an older lease (one that lapsed and was taken again) is refused.
    /// `None` accepts any lease of `owner` on `server_id`.
    pub epoch: Option<i64>,
}

/// A task leased to a node agent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct LeasedTask {
    pub task_id: String,
    pub job_id: String,
    pub job_type: String,
    pub items: Vec<JobItem>,
    pub lease_until: i64,
    /// The lease's fencing epoch ([`TaskLease::epoch`]).
    pub lease_epoch: i64,
}

/// What a lease request found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leased {
    pub tasks: Vec<LeasedTask>,
    /// With no task to lease: when the first lease held on the server's running tasks ends
    /// (one may be taken again then), if any is held.
    pub next_expiry: Option<i64>,
}

/// How long a lease lasts, and each task's deadline from its lease.
pub struct LeaseTerms<'a> {
    pub now_ms: i64,
    pub until: i64,
    /// The holder renews its leases (heartbeats); an agent that does not (a version before
    /// heartbeats) holds each task's lease for the task's whole run time instead of `until`,
    /// as it did then, so that a long task is not leased to it again while it runs.
    pub renews: bool,
    /// The time (ms) a task of this job type may run, from its lease, before the
    /// server ends it (the template's timeout and some grace).
    pub run_time_ms: &'a (dyn Fn(&str) -> i64 + Send + Sync),
}

/// Where a lease an agent holds stands after a renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Renewed until then.
    Held { until: i64 },
    /// The task has ended (a deleted job's task is `SKIPPED`): stop running it.
    Ended { status: String, message: String },
    /// Another lease took the task (this one lapsed), or it is unknown: stop running it.
    Lost,
}

/// Why a running task of a real server is ended by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// No agent of its server leased it since it was created at this time.
    NeverStarted { created_at: i64 },
    /// Its lease lapsed at this time, and no agent took it again.
    LeaseLapsed { at: i64 },
    /// Its run time (from its last lease) ended at this time without a report.
    PastDeadline { at: i64 },
}

/// A running task the server is to end.
#[derive(Debug, Clone)]
pub struct StalledTask {
    pub project_id: ProjectId,
    pub task_id: String,
    pub server_id: String,
    pub stall: Stall,
}

/// The tail of a task's output, as its agent last uploaded it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskOutput {
    pub task_id: String,
    pub output: String,
    pub update_at: i64,
}

/// A Lite Server to register or update.
#[derive(Debug, Clone)]
pub struct NewServer {
    pub id: String,
    pub name: String,
    pub kind: String,
    pub sim_outcome: Option<String>,
    pub cloud_server: std::collections::BTreeMap<String, String>,
    pub now_ms: i64,
}

/// An access key as stored.
#[derive(Debug, Clone)]
pub struct AccessKeyRecord {
    pub access_key: String,
    pub secret_key: String,
    pub user_id: String,
    pub user_name: String,
    pub description: String,
    pub create_at: i64,
}

/// A user as stored.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub id: String,
    pub name: String,
    pub password_hash: Option<String>,
    pub create_at: i64,
}

/// A project as stored.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProjectRecord {
    pub id: String,
    pub name: String,
    pub create_at: i64,
}

/// A policy: a name and its action patterns.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PolicyRecord {
    pub name: String,
    pub actions: Vec<String>,
    pub builtin: bool,
}

/// A valid, unexpired, unrevoked token.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub user_id: String,
    pub user_name: String,
    pub project_id: String,
    pub expires_at: i64,
}

/// What each backend does in its own way, in its own folder (`sqlite/`, `postgres/`): the
/// job list, the creates, and whether its database answers. The rest of [`Store`] is the SQL
/// both backends share (`shared/`), written once for all of them.
#[async_trait]
pub trait Backend: Send + Sync {
    /// Short name of the backend, for logs and the benchmark.
    fn backend(&self) -> &'static str;

    /// Checks the database answers.
    async fn ping(&self) -> StoreResult<()>;

    /// The use of the store's connection pools.
    fn pool_use(&self) -> Vec<PoolUse>;

    /// Whether the database is ready for this server: `None` when it answers and holds
    /// every migration this server knows, else why not.
    async fn readiness(&self) -> StoreResult<Option<String>>;

    /// The wake-ups of agents waiting for their servers' tasks, which the store's creates
    /// (here and, on PostgreSQL, on other replicas) trigger.
    fn wakeups(&self) -> &wake::Wakeups;

    /// One page of the list and the exact number of matching jobs.
    async fn list_jobs(
        &self,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<JobPage>;

    /// Creates a job with one task per server, all in one transaction. With an idempotency
    /// key already used with the same body, answers that earlier job instead.
    async fn create_job(
        &self,
        project: &ProjectId,
        job: NewJob,
        idempotency: Option<IdempotencyKey>,
    ) -> StoreResult<JobDetail>;
}

/// Jobs, tasks and servers of projects (beside the list and the creates: [`Backend`]).
#[async_trait]
pub trait JobStore: Send + Sync {
    async fn get_job(&self, project: &ProjectId, id: &str) -> StoreResult<Option<JobDetail>>;

    /// Soft-deletes the project's jobs among `ids`, cancelling their running tasks, and
    /// answers every one of them (now `DELETED`). Ids that are unknown here are ignored.
    async fn delete_jobs(
        &self,
        project: &ProjectId,
        ids: &[String],
        now_ms: i64,
    ) -> StoreResult<Vec<JobListItem>>;

    /// Ends a running task; the job finishes when its last task does. With `lease`, only the
    /// holder of the task's lease on that server may end it. False when the task was not
    /// running (already ended, cancelled, or unknown) or, with `lease`, not leased so.
    async fn complete_task(
        &self,
        project: &ProjectId,
        task_id: &str,
        status: TaskStatus,
        message: &str,
        now_ms: i64,
        lease: Option<TaskLease<'_>>,
    ) -> StoreResult<bool>;

    /// Running tasks of simulated servers created before `created_before_ms`.
    async fn due_simulated_tasks(
        &self,
        created_before_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<DueTask>>;

    /// Leases up to `limit` running tasks of one server to `owner` on `terms`: tasks never
    /// leased, or whose lease ran out. Each lease gets the task's next epoch; a task's first
    /// lease also sets its deadline.
    async fn lease_tasks(
        &self,
        project: &ProjectId,
        server_id: &str,
        owner: &str,
        terms: LeaseTerms<'_>,
        limit: i64,
    ) -> StoreResult<Leased>;

    /// Renews `owner`'s leases of `held` (task id, epoch) on `server_id` until `until`;
    /// answers where each stands, in the order given.
    async fn renew_leases(
        &self,
        project: &ProjectId,
        server_id: &str,
        owner: &str,
        held: &[(String, i64)],
        until: i64,
    ) -> StoreResult<Vec<LeaseState>>;

    /// Running tasks of real servers (not simulated) that the server is to end: never leased
    /// within `start_timeout_ms` of their creation (the oldest `limit` of them), and a lease
    /// lapsed for that long or past their deadline (the oldest `limit` of those).
    async fn stalled_tasks(
        &self,
        now_ms: i64,
        start_timeout_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<StalledTask>>;

    /// Keeps the tail of a task's output, from the holder of its lease `lease`; false when
    /// the task is not leased so (or unknown).
    async fn put_task_output(
        &self,
        project: &ProjectId,
        task_id: &str,
        lease: TaskLease<'_>,
        output: &str,
        now_ms: i64,
    ) -> StoreResult<bool>;

    /// The tail of the output of a task of the job `job_id`, if its agent uploaded any.
    async fn task_output(
        &self,
        project: &ProjectId,
        job_id: &str,
        task_id: &str,
    ) -> StoreResult<Option<TaskOutput>>;

    /// Removes jobs deleted before `deleted_before_ms`, and expired idempotency keys and
    /// tokens. Answers the number of jobs removed.
    async fn purge(&self, deleted_before_ms: i64, keys_before_ms: i64) -> StoreResult<u64>;

    async fn upsert_server(&self, project: &ProjectId, server: NewServer) -> StoreResult<()>;
    /// Adds or updates a server an agent serves (of kind `agent`, whatever `server.kind`
    /// says), unless the id is a server of another kind: then nothing changes and the answer
    /// is false.
    async fn register_agent_server(
        &self,
        project: &ProjectId,
        server: NewServer,
    ) -> StoreResult<bool>;
    async fn list_servers(&self, project: &ProjectId) -> StoreResult<Vec<Server>>;
    async fn delete_server(&self, project: &ProjectId, id: &str) -> StoreResult<bool>;
    async fn touch_server(&self, project: &ProjectId, id: &str, now_ms: i64) -> StoreResult<bool>;
    /// Records when each server was last heard from, in one statement (`seen`: project,
    /// server id, time).
    async fn touch_servers(&self, seen: &[(ProjectId, String, i64)]) -> StoreResult<()>;

    /// The running tasks by state, and the agents heard from since `online_since_ms` per
    /// project, at `now_ms`.
    async fn fleet_gauges(&self, now_ms: i64, online_since_ms: i64) -> StoreResult<FleetGauges>;

    /// The project's running (`PROCESSING`) tasks per server id; servers with none are left
    /// out.
    async fn running_tasks(&self, project: &ProjectId) -> StoreResult<Vec<(String, u64)>>;
}

/// What the fleet's gauges show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetGauges {
    /// Running tasks of real servers that no agent holds a lease of.
    pub waiting: u64,
    /// Running tasks an agent holds a lease of.
    pub leased: u64,
    /// Running tasks of simulated servers.
    pub simulated: u64,
    /// Agents heard from lately, per project (projects with none are left out).
    pub agents_online: Vec<(String, u64)>,
}

/// A connection pool's use.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolUse {
    pub pool: &'static str,
    pub idle: u64,
    pub in_use: u64,
}

/// What a new token is issued on. It is stored only while that still holds, in a way that a
/// change of password or a revocation of the user's tokens, made at the same time, either
/// prevents or ends it.
#[derive(Debug, Clone, Copy)]
pub enum TokenGrounds<'a> {
    /// The user's password, whose hash was checked: not once it changed.
    Password(&'a str),
    /// Another of the user's tokens (its hash), as a console's project switch: not once it
    /// was revoked or expired.
    Token(&'a str),
    /// Nothing to check (tests).
    Unconditional,
}

/// Users, keys, projects, policies and tokens.
#[async_trait]
pub trait IamStore: Send + Sync {
    async fn create_project(&self, project: &ProjectRecord) -> StoreResult<()>;
    async fn list_projects(&self) -> StoreResult<Vec<ProjectRecord>>;
    /// Finds a project by id or by name.
    async fn find_project(&self, id_or_name: &str) -> StoreResult<Option<ProjectRecord>>;

    async fn create_user(&self, user: &UserRecord) -> StoreResult<()>;
    async fn find_user(&self, id_or_name: &str) -> StoreResult<Option<UserRecord>>;
    async fn list_users(&self) -> StoreResult<Vec<UserRecord>>;
    async fn set_password(&self, user_id: &str, password_hash: &str) -> StoreResult<()>;
    async fn delete_user(&self, user_id: &str) -> StoreResult<bool>;

    async fn create_access_key(&self, key: &AccessKeyRecord) -> StoreResult<()>;
    async fn find_access_key(&self, access_key: &str) -> StoreResult<Option<AccessKeyRecord>>;
    async fn list_access_keys(&self, user_id: &str) -> StoreResult<Vec<AccessKeyRecord>>;
    async fn delete_access_key(&self, access_key: &str) -> StoreResult<bool>;

    async fn upsert_policy(&self, policy: &PolicyRecord) -> StoreResult<()>;
    async fn list_policies(&self) -> StoreResult<Vec<PolicyRecord>>;
    async fn delete_policy(&self, name: &str) -> StoreResult<bool>;

    async fn grant(&self, user_id: &str, project_id: &str, policy: &str) -> StoreResult<()>;
    async fn revoke(&self, user_id: &str, project_id: &str, policy: &str) -> StoreResult<bool>;
    /// `(project_id, policy_name)` pairs granted to a user.
    async fn list_grants(&self, user_id: &str) -> StoreResult<Vec<(String, String)>>;
    /// The action patterns a user holds in a project; `None` when the user has no grant there.
    async fn project_actions(
        &self,
        user_id: &str,
        project_id: &str,
    ) -> StoreResult<Option<Vec<String>>>;

    /// Stores a token (`token_hash`, `user_id`, `project_id`) valid from `issued_at` to
    /// `expires_at`, if what it is issued on still holds (false when it no longer does).
    async fn insert_token(
        &self,
        token: (&str, &str, &str),
        valid: (i64, i64),
        grounds: TokenGrounds<'_>,
    ) -> StoreResult<bool>;
    async fn find_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>>;
    async fn revoke_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<bool>;
    /// Revokes every token of a user; answers how many.
    async fn revoke_user_tokens(&self, user_id: &str, now_ms: i64) -> StoreResult<u64>;
}

/// Everything the service keeps.
pub trait Store: Backend + JobStore + IamStore + ActivityStore + seed::SeedStore {}

impl<T: Backend + JobStore + IamStore + ActivityStore + seed::SeedStore> Store for T {}

/// The use of a sqlx pool.
fn pool_use<DB: sqlx::Database>(pool: &'static str, p: &sqlx::Pool<DB>) -> PoolUse {
    let idle = p.num_idle() as u64;
    PoolUse {
        pool,
        idle,
        in_use: u64::from(p.size()).saturating_sub(idle),
    }
}

/// True when a database URL names PostgreSQL (otherwise it is a SQLite file).
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// The scheme of a URL of another database than SQLite or PostgreSQL (`mysql://…`).
fn foreign_scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    (scheme != "sqlite" && !is_postgres_url(url)).then_some(scheme)
}

/// The file a SQLite URL or path names; `None` for PostgreSQL, in-memory and other
/// databases.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    if is_postgres_url(url) || foreign_scheme(url).is_some() {
        return None;
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let path = path.split('?').next().unwrap_or(path);
    (!path.is_empty() && !path.contains(":memory:")).then(|| std::path::PathBuf::from(path))
}

/// Opens the store a database URL names (`sqlite:…` or a path, `postgres://…`) and migrates it.
pub async fn open(url: &str) -> StoreResult<std::sync::Arc<dyn Store>> {
    open_with(url, None).await
}

/// [`open`], with at most `pg_connections` connections to PostgreSQL (default:
/// [`postgres::default_connections`]); SQLite has its own fixed set.
pub async fn open_with(
    url: &str,
    pg_connections: Option<u32>,
) -> StoreResult<std::sync::Arc<dyn Store>> {
    if let Some(scheme) = foreign_scheme(url) {
        return Err(StoreError::internal(format!(
            "{scheme}:// names no database litejobs uses: give a SQLite path or sqlite: URL, \
             or a postgres:// URL"
        )));
    }
    if is_postgres_url(url) {
        let connections = pg_connections.unwrap_or_else(postgres::default_connections);
        Ok(std::sync::Arc::new(
            PgStore::connect(url, connections).await?,
        ))
    } else {
        Ok(std::sync::Arc::new(SqliteStore::open(url).await?))
    }
}
