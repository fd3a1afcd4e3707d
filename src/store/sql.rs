//! The SQL both backends share, written once and instantiated per backend by [`sql_store!`].
//!
//! SQLite accepts PostgreSQL's `$N` placeholders and both speak the same SQL for everything
//! here; the few differences come from the backend's [`Dialect`].

use std::collections::BTreeMap;

use crate::domain::filter::{JobFilter, SortDir, SortKey};
use crate::domain::ProjectId;
use crate::wire::JobItem;

use super::{IdempotencyKey, NewJob, StoreError, StoreResult};

/// What differs between the backends' SQL.
pub(super) trait Dialect {
    type Db: sqlx::Database;
    /// Aggregate collecting JSON values into an array, in an `ORDER BY` given inside it.
    const JSON_AGG: &'static str;
    /// Function making a JSON array of its arguments.
    const JSON_ROW: &'static str;
}

/// Job names only hold `[-_.a-zA-Z0-9]` (see [`crate::domain::ids::is_simple_name`]), so a
/// case-insensitive match is a match of ASCII-lower-cased text on both backends. Characters
/// outside ASCII are left as they are, and then match nothing.
pub(super) fn lower_pattern(pattern: &str) -> String {
    pattern.to_ascii_lowercase()
}

/// A `LIKE` pattern matching `text` anywhere (`\` escapes `%`, `_` and itself).
pub(super) fn like_substring(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// True when a transaction failed only because of concurrent ones (serialization failure or
/// deadlock), so running it again is right.
pub(super) fn is_transient(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("40001" | "40P01"))
        }
        _ => false,
    }
}

/// Runs `attempt` until it succeeds, fails for good, or failed transiently five times.
pub(super) async fn retry_transient<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Err(e) if is_transient(&e) && tries < 5 => {
                tries += 1;
                let jitter = rand::random::<u64>() % 5;
                tokio::time::sleep(std::time::Duration::from_millis(
                    u64::from(tries) * 2 + jitter,
                ))
                .await;
            }
            done => return done,
        }
    }
}

/// Columns of a job list item, in the order [`list_item`] reads them.
pub(super) const LIST_COLUMNS: &str =
    "id, name, user_name, description, type, status, abnormal_count, create_at, update_at";

pub(super) fn order_column(key: SortKey) -> &'static str {
    match key {
        SortKey::CreateAt => "create_at",
        SortKey::UpdateAt => "update_at",
        SortKey::Name => "name",
    }
}

pub(super) fn order_dir(dir: SortDir) -> &'static str {
    match dir {
        SortDir::Asc => "ASC",
        SortDir::Desc => "DESC",
    }
}

/// True when the filter needs the jobs themselves counted (not the per-key counters).
pub(super) fn needs_row_count(filter: &JobFilter) -> bool {
    filter.id.is_some() || filter.name.is_some()
}

/// True when `filter` asks for no `status`, `type` or `visible`.
pub(super) fn any_status_type_visibility(filter: &JobFilter) -> bool {
    filter.status.is_none() && filter.job_type.is_none() && filter.visible.is_none()
}

/// The counters that give the number of jobs matching `filter` (one without `id` or `name`):
/// the project's totals when no `status`, `type` or `visible` is asked (one row, or one per
/// slot on PostgreSQL), else the counters per status, type and visibility.
pub(super) fn counters(filter: &JobFilter) -> &'static str {
    if any_status_type_visibility(filter) {
        "job_totals"
    } else {
        "job_counts"
    }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> StoreResult<T> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// A statement being built whose values are bound in the order they are pushed.
pub(super) trait Bind {
    fn sql(&mut self, text: &str);
    fn bind_text(&mut self, value: String);
    fn bind_bool(&mut self, value: bool);
}

/// Appends the filter's exact predicates (`id`, `status`, `type`, `visible`) after
/// `WHERE project_id = …`; the `name` predicate is each backend's own.
pub(super) fn push_exact_filters(b: &mut impl Bind, filter: &JobFilter) {
    if let Some(id) = &filter.id {
        b.sql(" AND id = ");
        b.bind_text(id.clone());
    }
    if let Some(status) = filter.status {
        b.sql(" AND status = ");
        b.bind_text(status.as_str().to_string());
    }
    if let Some(t) = &filter.job_type {
        b.sql(" AND type = ");
        b.bind_text(t.clone());
    }
    if let Some(v) = filter.visible {
        b.sql(" AND visible = ");
        b.bind_bool(v);
    }
}

/// Where a page other than the first is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PagePlan {
    /// Direction to read in.
    pub dir: SortDir,
    pub skip: u64,
    pub take: u64,
    /// Read from the other end: the rows come in the opposite order of the page's.
    pub reversed: bool,
}

/// How to read `limit` rows after `offset` of `total` rows in direction `dir`; `None` when
/// the page is empty. A page in the far half is read from the other end: the database then
/// skips fewer rows, and exact totals make the two readings identical.
pub(super) fn plan_page(dir: SortDir, offset: u64, limit: u64, total: u64) -> Option<PagePlan> {
    if offset >= total || limit == 0 {
        return None;
    }
    let end = offset.saturating_add(limit).min(total);
    Some(if offset > total / 2 {
        PagePlan {
            dir: dir.reverse(),
            skip: total - end,
            take: end - offset,
            reversed: true,
        }
    } else {
        PagePlan {
            dir,
            skip: offset,
            take: end - offset,
            reversed: false,
        }
    })
}

pub(super) fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) type CloudServer = BTreeMap<String, String>;
pub(super) type Items = Vec<JobItem>;

/// One create as the stores write it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Create<'a> {
    pub project: &'a ProjectId,
    pub job: &'a NewJob,
    pub idempotency: Option<&'a IdempotencyKey>,
}

/// A server a job runs on, as its task records it.
pub(super) struct ServerRow {
    pub name: String,
    pub simulated: bool,
    /// JSON object.
    pub cloud_server: String,
}

/// A task being created: the `job`-th create's `position`-th server.
pub(super) struct NewTask<'a> {
    pub id: String,
    pub job: usize,
    pub position: usize,
    pub server_id: &'a String,
    pub server: &'a ServerRow,
}

/// Rows one `INSERT` writes at most: 15 values each at most, far below the bound values a
/// statement may hold (32,766 on SQLite, 65,535 on PostgreSQL).
pub(super) const ROWS_PER_INSERT: usize = 1000;

/// Maps a unique-key violation to [`StoreError::Conflict`].
pub(super) fn conflict_as(what: &str, e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_string())
        }
        sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
            StoreError::NotFound(format!("what {what} refers to"))
        }
        _ => StoreError::Database(e),
    }
}

/// Builds a job list item from a row holding [`LIST_COLUMNS`].
macro_rules! list_item {
    ($row:expr) => {{
        use sqlx::Row;
        let row = $row;
        $crate::wire::JobListItem {
            id: row.try_get(0)?,
            name: row.try_get(1)?,
            user_name: row.try_get(2)?,
            description: row.try_get(3)?,
            job_type: row.try_get(4)?,
            status: row.try_get(5)?,
            abnormal_count: row.try_get(6)?,
            create_at: row.try_get(7)?,
            update_at: row.try_get(8)?,
        }
    }};
}
pub(super) use list_item;

/// Appends ` IN ($a, $b, …)` binding each of `ids`.
macro_rules! push_in_list {
    ($qb:expr, $ids:expr) => {{
        let qb = $qb;
        qb.push(" IN (");
        let mut sep = qb.separated(", ");
        for id in $ids {
            sep.push_bind(id.clone());
        }
        qb.push(")");
    }};
}
pub(super) use push_in_list;

/// Implements [`super::JobStore`] and [`super::IamStore`] for a store struct with `read` and
/// `write` pools of one sqlx database.
macro_rules! sql_store {
    ($store:ty, $db:ty) => {
        use async_trait::async_trait;
        use sqlx::{QueryBuilder, Row};

        use crate::domain::filter::ListJobsQuery;
        use crate::domain::{JobStatus, ProjectId, TaskStatus};
        use std::collections::{BTreeSet, HashMap};

        use crate::store::sql::{
            conflict_as, list_item, parse_json, push_in_list, retry_transient, to_json,
            CloudServer, Create, Dialect, Items, NewTask, ServerRow, LIST_COLUMNS,
            ROWS_PER_INSERT,
        };
        use crate::store::{
            AccessKeyRecord, DueTask, IamStore, IdempotencyKey, JobPage, JobStore, LeasedTask, NewJob,
            NewServer, PolicyRecord, ProjectRecord, StoreError, StoreResult, TaskLease, TokenRecord,
            UserRecord,
        };
        use crate::wire::{JobDetail, JobListItem, Server, Task};

        const JOB_COLUMNS: &str = "id, name, user_name, description, type, status, \
            abnormal_count, create_at, update_at, template_id, visible, is_reboot, items";
        const TASK_COLUMNS: &str =
            "id, server_id, server_name, status, cloud_server, message, create_at, update_at";

        impl $store {
            async fn read_job(
                conn: &mut <$db as sqlx::Database>::Connection,
                project: &ProjectId,
                id: &str,
            ) -> StoreResult<Option<JobDetail>> {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE project_id = $1 AND id = $2"
                );
                let Some(row) = sqlx::query(&sql)
                    .bind(project.as_str())
                    .bind(id)
                    .fetch_optional(&mut *conn)
                    .await?
                else {
                    return Ok(None);
                };
                let base = list_item!(&row);
                let items_json: String = row.try_get(12)?;
                // A job's tasks share its create_at, which leads their index.
                let sql = format!(
                    "SELECT {TASK_COLUMNS} FROM tasks WHERE project_id = $1 AND create_at = $2 \
                     AND job_id = $3 ORDER BY position"
                );
                let task_rows = sqlx::query(&sql)
                    .bind(project.as_str())
                    .bind(base.create_at)
                    .bind(id)
                    .fetch_all(&mut *conn)
                    .await?;
                let mut tasks = Vec::with_capacity(task_rows.len());
                for t in task_rows {
                    let cloud: String = t.try_get(4)?;
                    tasks.push(Task {
                        id: t.try_get(0)?,
                        server_id: t.try_get(1)?,
                        server_name: t.try_get(2)?,
                        status: t.try_get(3)?,
                        cloud_server: parse_json::<CloudServer>("task cloud_server", &cloud)?,
                        message: t.try_get(5)?,
                        create_at: t.try_get::<i64, _>(6)?.to_string(),
                        update_at: t.try_get::<i64, _>(7)?.to_string(),
                    });
                }
                Ok(Some(JobDetail {
                    id: base.id,
                    name: base.name,
                    user_name: base.user_name,
                    description: base.description,
                    job_type: base.job_type,
                    status: base.status,
                    abnormal_count: base.abnormal_count,
                    create_at: base.create_at,
                    update_at: base.update_at,
                    template_id: row.try_get(9)?,
                    visible: row.try_get(10)?,
                    is_reboot: row.try_get(11)?,
                    items: parse_json::<Items>("job items", &items_json)?,
                    tasks,
                }))
            }

            /// Creates jobs with their tasks (and records their idempotency keys) inside the
            /// caller's transaction, which the caller commits or rolls back; answers each
            /// create's outcome, in order. A create whose key was used before with the same
            /// body answers that earlier job. A create refused with
            /// [`StoreError::UnknownServers`] or [`StoreError::IdempotencyConflict`] has
            /// written nothing that matters (at most it removed an expired key), and the
            /// others go on. `Ok(None)` when a concurrent transaction took one of the keys
            /// first: the caller rolls back and tries again. No two creates may carry the
            /// same key.
            ///
            /// Each kind of row is written by one statement for all the creates, the jobs
            /// last: on SQLite, a statement that may fail halfway opens a savepoint, at
            /// which the name index writes out the names it holds in memory; written last,
            /// the names reach the index once, at commit, rather than once per create.
            pub(crate) async fn insert_jobs(
                conn: &mut <$db as sqlx::Database>::Connection,
                creates: &[Create<'_>],
            ) -> StoreResult<Option<Vec<StoreResult<JobDetail>>>> {
                let mut outcomes = Vec::with_capacity(creates.len());
                for c in creates {
                    outcomes.push(Self::earlier_create(&mut *conn, c).await?);
                }

                // The servers of each project, looked up once for all its creates.
                let mut wanted: HashMap<&str, BTreeSet<&str>> = HashMap::new();
                for (c, _) in creates.iter().zip(&outcomes).filter(|(_, o)| o.is_none()) {
                    let ids = wanted.entry(c.project.as_str()).or_default();
                    ids.extend(c.job.server_ids.iter().map(String::as_str));
                }
                let mut known = HashMap::with_capacity(wanted.len());
                for (project, ids) in wanted {
                    known.insert(project, Self::find_servers(&mut *conn, project, ids).await?);
                }
                let no_servers = HashMap::new();
                let mut tasks = Vec::new();
                let mut created = Vec::new();
                for (i, c) in creates.iter().enumerate() {
                    if outcomes[i].is_some() {
                        continue;
                    }
                    let servers = known.get(c.project.as_str()).unwrap_or(&no_servers);
                    let missing: Vec<String> = c
                        .job
                        .server_ids
                        .iter()
                        .filter(|id| !servers.contains_key(id.as_str()))
                        .cloned()
                        .collect();
                    if !missing.is_empty() {
                        outcomes[i] = Some(Err(StoreError::UnknownServers(missing)));
                        continue;
                    }
                    let first = tasks.len();
                    for (position, server_id) in c.job.server_ids.iter().enumerate() {
                        tasks.push(NewTask {
                            id: crate::domain::ids::new_task_id(),
                            job: i,
                            position,
                            server_id,
                            server: &servers[server_id.as_str()],
                        });
                    }
                    created.push((i, first..tasks.len()));
                }
                if created.is_empty() {
                    return Ok(Some(Self::answers(outcomes)));
                }

                for chunk in tasks.chunks(ROWS_PER_INSERT) {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO tasks (id, project_id, job_id, position, server_id, \
                         server_name, simulated, status, message, cloud_server, create_at, \
                         update_at) ",
                    );
                    qb.push_values(chunk, |mut b, t| {
                        let c = &creates[t.job];
                        b.push_bind(t.id.clone())
                            .push_bind(c.project.as_str().to_string())
                            .push_bind(c.job.id.clone())
                            .push_bind(t.position as i64)
                            .push_bind(t.server_id.clone())
                            .push_bind(t.server.name.clone())
                            .push_bind(t.server.simulated)
                            .push_bind(TaskStatus::Processing.as_str())
                            .push_bind("")
                            .push_bind(t.server.cloud_server.clone())
                            .push_bind(c.job.now_ms)
                            .push_bind(c.job.now_ms);
                    });
                    qb.build().execute(&mut *conn).await?;
                }

                let keyed: Vec<_> = created
                    .iter()
                    .filter_map(|(i, _)| Some((&creates[*i], creates[*i].idempotency?)))
                    .collect();
                if !keyed.is_empty() {
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO idempotency_keys (project_id, token, body_hash, job_id, \
                         create_at) ",
                    );
                    qb.push_values(&keyed, |mut b, (c, key)| {
                        b.push_bind(c.project.as_str().to_string())
                            .push_bind(key.token.clone())
                            .push_bind(key.body_hash.clone())
                            .push_bind(c.job.id.clone())
                            .push_bind(c.job.now_ms);
                    });
                    qb.push(" ON CONFLICT DO NOTHING");
                    let inserted = qb.build().execute(&mut *conn).await?.rows_affected();
                    if inserted < keyed.len() as u64 {
                        return Ok(None);
                    }
                }

                for chunk in created.chunks(ROWS_PER_INSERT) {
                    let mut rows = Vec::with_capacity(chunk.len());
                    for (i, _) in chunk {
                        rows.push((&creates[*i], to_json(&creates[*i].job.items)?));
                    }
                    let mut qb = QueryBuilder::<$db>::new(
                        "INSERT INTO jobs (project_id, id, name, user_name, description, type, \
                         template_id, status, visible, is_reboot, abnormal_count, \
                         pending_tasks, items, create_at, update_at) ",
                    );
                    qb.push_values(rows, |mut b, (c, items)| {
                        let job = c.job;
                        b.push_bind(c.project.as_str().to_string())
                            .push_bind(job.id.clone())
                            .push_bind(job.name.clone())
                            .push_bind(job.user_name.clone())
                            .push_bind(job.description.clone())
                            .push_bind(job.job_type.clone())
                            .push_bind(job.template_id.clone())
                            .push_bind(JobStatus::Processing.as_str())
                            .push_bind(job.visible)
                            .push_bind(job.is_reboot)
                            .push_bind(0i32)
                            .push_bind(job.server_ids.len() as i64)
                            .push_bind(items)
                            .push_bind(job.now_ms)
                            .push_bind(job.now_ms);
                    });
                    qb.build()
                        .execute(&mut *conn)
                        .await
                        .map_err(|e| conflict_as("job id", e))?;
                }

                for (i, range) in created {
                    let job = creates[i].job;
                    let mut out_tasks = Vec::with_capacity(range.len());
                    for t in &tasks[range] {
                        out_tasks.push(Task {
                            id: t.id.clone(),
                            server_id: t.server_id.clone(),
                            server_name: t.server.name.clone(),
                            status: TaskStatus::Processing.as_str().to_string(),
                            cloud_server: parse_json::<CloudServer>(
                                "server cloud_server",
                                &t.server.cloud_server,
                            )?,
                            message: String::new(),
                            create_at: job.now_ms.to_string(),
                            update_at: job.now_ms.to_string(),
                        });
                    }
                    outcomes[i] = Some(Ok(JobDetail {
                        id: job.id.clone(),
                        name: job.name.clone(),
                        user_name: job.user_name.clone(),
                        description: job.description.clone(),
                        job_type: job.job_type.clone(),
                        status: JobStatus::Processing.as_str().to_string(),
                        template_id: job.template_id.clone(),
                        abnormal_count: 0,
                        create_at: job.now_ms,
                        update_at: job.now_ms,
                        visible: job.visible,
                        is_reboot: job.is_reboot,
                        items: job.items.clone(),
                        tasks: out_tasks,
                    }));
                }
                Ok(Some(Self::answers(outcomes)))
            }

            /// The outcomes of [`Self::insert_jobs`], each create having one by then.
            fn answers(
                outcomes: Vec<Option<StoreResult<JobDetail>>>,
            ) -> Vec<StoreResult<JobDetail>> {
                outcomes
                    .into_iter()
                    .map(|o| {
                        o.unwrap_or_else(|| {
                            Err(StoreError::Corrupt("a create was left without an outcome".into()))
                        })
                    })
                    .collect()
            }

            /// What a create's idempotency key says: `None` when the job is to be created
            /// (no key, a key not used before, or an expired one, which is removed); else the
            /// earlier job (same body) or the conflict (another body).
            async fn earlier_create(
                conn: &mut <$db as sqlx::Database>::Connection,
                create: &Create<'_>,
            ) -> StoreResult<Option<StoreResult<JobDetail>>> {
                let (project, Some(key)) = (create.project, create.idempotency) else {
                    return Ok(None);
                };
                let found = sqlx::query(
                    "SELECT body_hash, job_id, create_at FROM idempotency_keys \
                     WHERE project_id = $1 AND token = $2",
                )
                .bind(project.as_str())
                .bind(&key.token)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(row) = found else {
                    return Ok(None);
                };
                let hash: String = row.try_get(0)?;
                let job_id: String = row.try_get(1)?;
                let created: i64 = row.try_get(2)?;
                if created >= key.not_before_ms {
                    if hash != key.body_hash {
                        return Ok(Some(Err(StoreError::IdempotencyConflict)));
                    }
                    // A job deleted and purged since is gone: the key is then spent, as an
                    // expired one is, and the request creates a job.
                    if let Some(job) = Self::read_job(&mut *conn, project, &job_id).await? {
                        return Ok(Some(Ok(job)));
                    }
                }
                sqlx::query("DELETE FROM idempotency_keys WHERE project_id = $1 AND token = $2")
                    .bind(project.as_str())
                    .bind(&key.token)
                    .execute(&mut *conn)
                    .await?;
                Ok(None)
            }

            /// The project's servers among `ids`, by id. One value holds every server: one
            /// round trip however many there are.
            async fn find_servers(
                conn: &mut <$db as sqlx::Database>::Connection,
                project: &str,
                ids: BTreeSet<&str>,
            ) -> StoreResult<HashMap<String, ServerRow>> {
                let mut qb = QueryBuilder::<$db>::new(format!(
                    "SELECT CAST({}({}(id, name, kind, cloud_server)) AS TEXT) FROM servers \
                     WHERE project_id = ",
                    <$store as Dialect>::JSON_AGG,
                    <$store as Dialect>::JSON_ROW
                ));
                qb.push_bind(project.to_string()).push(" AND id");
                push_in_list!(&mut qb, ids.iter().map(|id| id.to_string()));
                let found: Option<String> = qb.build().fetch_one(&mut *conn).await?.try_get(0)?;
                let found: Vec<(String, String, String, String)> = match found {
                    Some(raw) => parse_json("servers", &raw)?,
                    None => Vec::new(),
                };
                Ok(found
                    .into_iter()
                    .map(|(id, name, kind, cloud_server)| {
                        let simulated = kind == "simulated";
                        (id, ServerRow { name, simulated, cloud_server })
                    })
                    .collect())
            }

            /// Creates a job in a transaction of its own; tries again when a concurrent
            /// request took the same idempotency key first or the transaction failed
            /// transiently.
            pub(crate) async fn create_job_alone(
                pool: &sqlx::Pool<$db>,
                project: &ProjectId,
                job: &NewJob,
                idempotency: Option<&IdempotencyKey>,
            ) -> StoreResult<JobDetail> {
                let create = Create {
                    project,
                    job,
                    idempotency,
                };
                for _ in 0..3 {
                    let done = retry_transient(|| async {
                        let mut tx = pool.begin().await?;
                        let creates = std::slice::from_ref(&create);
                        let Some(mut outcomes) = Self::insert_jobs(&mut *tx, creates).await?
                        else {
                            tx.rollback().await?;
                            return Ok(None);
                        };
                        // A refused create is rolled back as the transaction is dropped.
                        let detail = outcomes.pop().unwrap_or_else(|| {
                            Err(StoreError::Corrupt("a create was left without an outcome".into()))
                        })?;
                        tx.commit().await?;
                        Ok(Some(detail))
                    })
                    .await?;
                    if let Some(done) = done {
                        return Ok(done);
                    }
                }
                Err(StoreError::Corrupt(
                    "idempotency key kept changing hands".to_string(),
                ))
            }
        }

        #[async_trait]
        impl JobStore for $store {
            async fn list_jobs(
                &self,
                project: &ProjectId,
                query: &ListJobsQuery,
                max_page_size: u64,
            ) -> StoreResult<JobPage> {
                self.list_page(project, query, max_page_size).await
            }

            async fn create_job(
                &self,
                project: &ProjectId,
                job: NewJob,
                idempotency: Option<IdempotencyKey>,
            ) -> StoreResult<JobDetail> {
                self.submit_create(project, job, idempotency).await
            }

            async fn get_job(
                &self,
                project: &ProjectId,
                id: &str,
            ) -> StoreResult<Option<JobDetail>> {
                let mut conn = self.read.acquire().await?;
                Self::read_job(&mut *conn, project, id).await
            }

            async fn delete_jobs(
                &self,
                project: &ProjectId,
                ids: &[String],
                now_ms: i64,
            ) -> StoreResult<Vec<JobListItem>> {
                if ids.is_empty() {
                    return Ok(Vec::new());
                }
                retry_transient(|| async {
                    let mut tx = self.write.begin().await?;
                    // One job at a time: an equality on the id is what makes every planner
                    // take the (project, id) index (with `id IN (…)` SQLite may walk a
                    // covering index over the whole project instead).
                    for id in ids {
                        let deleted: Option<i64> = sqlx::query_scalar(
                            "UPDATE jobs SET status = $1, deleted_at = $2, update_at = $2, \
                             pending_tasks = 0 WHERE project_id = $3 AND id = $4 \
                             AND status <> $1 RETURNING create_at",
                        )
                        .bind(JobStatus::Deleted.as_str())
                        .bind(now_ms)
                        .bind(project.as_str())
                        .bind(id)
                        .fetch_optional(&mut *tx)
                        .await?;
                        let Some(create_at) = deleted else {
                            continue;
                        };
                        // The job's tasks share its create_at, which leads their index.
                        sqlx::query(
                            "UPDATE tasks SET status = $1, message = $2, update_at = $3, \
                             lease_owner = NULL, lease_until = NULL WHERE project_id = $4 \
                             AND create_at = $5 AND job_id = $6 AND status = $7",
                        )
                        .bind(TaskStatus::Skipped.as_str())
                        .bind("cancelled: the job was deleted")
                        .bind(now_ms)
                        .bind(project.as_str())
                        .bind(create_at)
                        .bind(id)
                        .bind(TaskStatus::Processing.as_str())
                        .execute(&mut *tx)
                        .await?;
                    }

                    let mut qb = QueryBuilder::<$db>::new(format!(
                        "SELECT {LIST_COLUMNS} FROM jobs WHERE project_id = "
                    ));
                    qb.push_bind(project.as_str()).push(" AND id");
                    push_in_list!(&mut qb, ids);
                    qb.push(" ORDER BY create_at DESC, id DESC");
                    let rows = qb.build().fetch_all(&mut *tx).await?;
                    tx.commit().await?;
                    let mut items = Vec::with_capacity(rows.len());
                    for row in &rows {
                        items.push(list_item!(row));
                    }
                    Ok(items)
                })
                .await
            }

            async fn complete_task(
                &self,
                project: &ProjectId,
                task_id: &str,
                status: TaskStatus,
                message: &str,
                now_ms: i64,
                lease: Option<TaskLease<'_>>,
            ) -> StoreResult<bool> {
                if !status.is_terminal() {
                    return Ok(false);
                }
                // With a lease, the task must be leased, on that server, by that user, and
                // (when the report names it) by that very lease.
                let sql = if lease.is_some() {
                    "UPDATE tasks SET status = $1, message = $2, \
                     update_at = CASE WHEN update_at > $3 THEN update_at ELSE $3 END, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE project_id = $4 AND id = $5 AND status = 'PROCESSING' \
                       AND server_id = $6 AND lease_owner = $7 \
                       AND lease_until = COALESCE($8, lease_until) \
                     RETURNING job_id"
                } else {
                    "UPDATE tasks SET status = $1, message = $2, \
                     update_at = CASE WHEN update_at > $3 THEN update_at ELSE $3 END, \
                     lease_owner = NULL, lease_until = NULL \
                     WHERE project_id = $4 AND id = $5 AND status = 'PROCESSING' \
                     RETURNING job_id"
                };
                retry_transient(|| async {
                    let mut tx = self.write.begin().await?;
                    let mut query = sqlx::query(sql)
                        .bind(status.as_str())
                        .bind(message)
                        .bind(now_ms)
                        .bind(project.as_str())
                        .bind(task_id);
                    if let Some(lease) = lease {
                        query = query.bind(lease.server_id).bind(lease.owner).bind(lease.until);
                    }
                    let job_id: Option<String> = query
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                    let Some(job_id) = job_id else {
                        return Ok(false);
                    };
                    let failed: i64 = i64::from(status == TaskStatus::Failed);
                    sqlx::query(
                        "UPDATE jobs SET pending_tasks = pending_tasks - 1, \
                         abnormal_count = abnormal_count + $1, \
                         status = CASE WHEN status = 'PROCESSING' AND pending_tasks <= 1 \
                                  THEN 'FINISHED' ELSE status END, \
                         update_at = CASE WHEN update_at > $2 THEN update_at ELSE $2 END \
                         WHERE project_id = $3 AND id = $4 AND status <> 'DELETED'",
                    )
                    .bind(failed)
                    .bind(now_ms)
                    .bind(project.as_str())
                    .bind(&job_id)
                    .execute(&mut *tx)
                    .await?;
                    tx.commit().await?;
                    Ok(true)
                })
                .await
            }

            async fn due_simulated_tasks(
                &self,
                created_before_ms: i64,
                limit: i64,
            ) -> StoreResult<Vec<DueTask>> {
                let rows = sqlx::query(
                    "SELECT t.project_id, t.id, t.server_id, COALESCE(s.sim_outcome, 'SUCCESS') \
                     FROM tasks t LEFT JOIN servers s \
                       ON s.project_id = t.project_id AND s.id = t.server_id \
                     WHERE t.status = 'PROCESSING' AND t.simulated = TRUE AND t.create_at < $1 \
                     ORDER BY t.create_at LIMIT $2",
                )
                .bind(created_before_ms)
                .bind(limit)
                .fetch_all(&self.read)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let project: String = row.try_get(0)?;
                    out.push(DueTask {
                        project_id: ProjectId::parse(&project)
                            .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                        task_id: row.try_get(1)?,
                        server_id: row.try_get(2)?,
                        outcome: row.try_get(3)?,
                    });
                }
                Ok(out)
            }

            async fn lease_tasks(
                &self,
                project: &ProjectId,
                server_id: &str,
                owner: &str,
                now_ms: i64,
                lease_until: i64,
                limit: i64,
            ) -> StoreResult<Vec<LeasedTask>> {
                retry_transient(|| async {
                    let mut tx = self.write.begin().await?;
                    let rows = sqlx::query(
                        "UPDATE tasks SET lease_owner = $1, lease_until = $2 \
                         WHERE project_id = $3 AND server_id = $4 AND status = 'PROCESSING' \
                           AND (lease_until IS NULL OR lease_until < $5) \
                           AND id IN (SELECT id FROM tasks WHERE project_id = $3 AND server_id = $4 \
                                      AND status = 'PROCESSING' \
                                      AND (lease_until IS NULL OR lease_until < $5) \
                                      ORDER BY create_at LIMIT $6) \
                         RETURNING id, job_id",
                    )
                    .bind(owner)
                    .bind(lease_until)
                    .bind(project.as_str())
                    .bind(server_id)
                    .bind(now_ms)
                    .bind(limit)
                    .fetch_all(&mut *tx)
                    .await?;
                    let mut out = Vec::with_capacity(rows.len());
                    for row in rows {
                        let task_id: String = row.try_get(0)?;
                        let job_id: String = row.try_get(1)?;
                        let job = sqlx::query(
                            "SELECT type, items FROM jobs WHERE project_id = $1 AND id = $2",
                        )
                        .bind(project.as_str())
                        .bind(&job_id)
                        .fetch_one(&mut *tx)
                        .await?;
                        let items: String = job.try_get(1)?;
                        out.push(LeasedTask {
                            task_id,
                            job_id,
                            job_type: job.try_get(0)?,
                            items: parse_json::<Items>("job items", &items)?,
                            lease_until,
                        });
                    }
                    tx.commit().await?;
                    Ok(out)
                })
                .await
            }

            async fn purge(&self, deleted_before_ms: i64, keys_before_ms: i64) -> StoreResult<u64> {
                let mut tx = self.write.begin().await?;
                sqlx::query(
                    "DELETE FROM tasks WHERE (project_id, create_at, job_id) IN \
                     (SELECT project_id, create_at, id FROM jobs WHERE deleted_at < $1)",
                )
                .bind(deleted_before_ms)
                .execute(&mut *tx)
                .await?;
                let jobs = sqlx::query("DELETE FROM jobs WHERE deleted_at < $1")
                    .bind(deleted_before_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM idempotency_keys WHERE create_at < $1")
                    .bind(keys_before_ms)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
                    .bind(keys_before_ms)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(jobs)
            }

            async fn upsert_server(&self, project: &ProjectId, s: NewServer) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO servers (project_id, id, name, kind, sim_outcome, cloud_server, \
                     create_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (project_id, id) DO UPDATE SET name = excluded.name, \
                     kind = excluded.kind, sim_outcome = excluded.sim_outcome, \
                     cloud_server = excluded.cloud_server",
                )
                .bind(project.as_str())
                .bind(&s.id)
                .bind(&s.name)
                .bind(&s.kind)
                .bind(&s.sim_outcome)
                .bind(to_json(&s.cloud_server)?)
                .bind(s.now_ms)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn list_servers(&self, project: &ProjectId) -> StoreResult<Vec<Server>> {
                let rows = sqlx::query(
                    "SELECT id, name, kind, cloud_server, create_at, last_seen_at FROM servers \
                     WHERE project_id = $1 ORDER BY id",
                )
                .bind(project.as_str())
                .fetch_all(&self.read)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for row in rows {
                    let cloud: String = row.try_get(3)?;
                    out.push(Server {
                        id: row.try_get(0)?,
                        name: row.try_get(1)?,
                        kind: row.try_get(2)?,
                        cloud_server: parse_json::<CloudServer>("server cloud_server", &cloud)?,
                        create_at: row.try_get(4)?,
                        last_seen_at: row.try_get(5)?,
                    });
                }
                Ok(out)
            }

            async fn delete_server(&self, project: &ProjectId, id: &str) -> StoreResult<bool> {
                let n = sqlx::query("DELETE FROM servers WHERE project_id = $1 AND id = $2")
                    .bind(project.as_str())
                    .bind(id)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn touch_server(
                &self,
                project: &ProjectId,
                id: &str,
                now_ms: i64,
            ) -> StoreResult<bool> {
                let n = sqlx::query(
                    "UPDATE servers SET last_seen_at = $1 WHERE project_id = $2 AND id = $3",
                )
                .bind(now_ms)
                .bind(project.as_str())
                .bind(id)
                .execute(&self.write)
                .await?
                .rows_affected();
                Ok(n > 0)
            }
        }

        #[async_trait]
        impl IamStore for $store {
            async fn create_project(&self, p: &ProjectRecord) -> StoreResult<()> {
                sqlx::query("INSERT INTO projects (id, name, create_at) VALUES ($1, $2, $3)")
                    .bind(&p.id)
                    .bind(&p.name)
                    .bind(p.create_at)
                    .execute(&self.write)
                    .await
                    .map_err(|e| conflict_as("project", e))?;
                Ok(())
            }

            async fn list_projects(&self) -> StoreResult<Vec<ProjectRecord>> {
                let rows = sqlx::query("SELECT id, name, create_at FROM projects ORDER BY name")
                    .fetch_all(&self.read)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(ProjectRecord {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        create_at: r.try_get(2)?,
                    });
                }
                Ok(out)
            }

            async fn find_project(&self, id_or_name: &str) -> StoreResult<Option<ProjectRecord>> {
                let row = sqlx::query(
                    "SELECT id, name, create_at FROM projects WHERE id = $1 OR name = $1 \
                     ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1",
                )
                .bind(id_or_name)
                .fetch_optional(&self.read)
                .await?;
                row.map(|r| {
                    Ok(ProjectRecord {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        create_at: r.try_get(2)?,
                    })
                })
                .transpose()
            }

            async fn create_user(&self, u: &UserRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO users (id, name, password_hash, create_at) VALUES ($1, $2, $3, $4)",
                )
                .bind(&u.id)
                .bind(&u.name)
                .bind(&u.password_hash)
                .bind(u.create_at)
                .execute(&self.write)
                .await
                .map_err(|e| conflict_as("user", e))?;
                Ok(())
            }

            async fn find_user(&self, id_or_name: &str) -> StoreResult<Option<UserRecord>> {
                let row = sqlx::query(
                    "SELECT id, name, password_hash, create_at FROM users \
                     WHERE id = $1 OR name = $1 \
                     ORDER BY CASE WHEN id = $1 THEN 0 ELSE 1 END LIMIT 1",
                )
                .bind(id_or_name)
                .fetch_optional(&self.read)
                .await?;
                row.map(|r| {
                    Ok(UserRecord {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        password_hash: r.try_get(2)?,
                        create_at: r.try_get(3)?,
                    })
                })
                .transpose()
            }

            async fn list_users(&self) -> StoreResult<Vec<UserRecord>> {
                let rows = sqlx::query(
                    "SELECT id, name, password_hash, create_at FROM users ORDER BY name",
                )
                .fetch_all(&self.read)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(UserRecord {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        password_hash: r.try_get(2)?,
                        create_at: r.try_get(3)?,
                    });
                }
                Ok(out)
            }

            async fn set_password(&self, user_id: &str, hash: &str) -> StoreResult<()> {
                let n = sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .bind(hash)
                    .bind(user_id)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                if n == 0 {
                    return Err(StoreError::NotFound(format!("user {user_id}")));
                }
                Ok(())
            }

            async fn delete_user(&self, user_id: &str) -> StoreResult<bool> {
                let n = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(user_id)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn create_access_key(&self, k: &AccessKeyRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO access_keys (access_key, user_id, secret_key, description, \
                     create_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&k.access_key)
                .bind(&k.user_id)
                .bind(&k.secret_key)
                .bind(&k.description)
                .bind(k.create_at)
                .execute(&self.write)
                .await
                .map_err(|e| conflict_as("access key", e))?;
                Ok(())
            }

            async fn find_access_key(&self, ak: &str) -> StoreResult<Option<AccessKeyRecord>> {
                let row = sqlx::query(
                    "SELECT k.access_key, k.secret_key, k.user_id, u.name, k.description, \
                     k.create_at FROM access_keys k JOIN users u ON u.id = k.user_id \
                     WHERE k.access_key = $1",
                )
                .bind(ak)
                .fetch_optional(&self.read)
                .await?;
                row.map(|r| {
                    Ok(AccessKeyRecord {
                        access_key: r.try_get(0)?,
                        secret_key: r.try_get(1)?,
                        user_id: r.try_get(2)?,
                        user_name: r.try_get(3)?,
                        description: r.try_get(4)?,
                        create_at: r.try_get(5)?,
                    })
                })
                .transpose()
            }

            async fn list_access_keys(&self, user_id: &str) -> StoreResult<Vec<AccessKeyRecord>> {
                let rows = sqlx::query(
                    "SELECT k.access_key, k.secret_key, k.user_id, u.name, k.description, \
                     k.create_at FROM access_keys k JOIN users u ON u.id = k.user_id \
                     WHERE k.user_id = $1 ORDER BY k.create_at",
                )
                .bind(user_id)
                .fetch_all(&self.read)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push(AccessKeyRecord {
                        access_key: r.try_get(0)?,
                        secret_key: r.try_get(1)?,
                        user_id: r.try_get(2)?,
                        user_name: r.try_get(3)?,
                        description: r.try_get(4)?,
                        create_at: r.try_get(5)?,
                    });
                }
                Ok(out)
            }

            async fn delete_access_key(&self, ak: &str) -> StoreResult<bool> {
                let n = sqlx::query("DELETE FROM access_keys WHERE access_key = $1")
                    .bind(ak)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn upsert_policy(&self, p: &PolicyRecord) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO policies (name, actions, builtin) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET actions = excluded.actions, \
                     builtin = excluded.builtin",
                )
                .bind(&p.name)
                .bind(to_json(&p.actions)?)
                .bind(p.builtin)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn list_policies(&self) -> StoreResult<Vec<PolicyRecord>> {
                let rows = sqlx::query("SELECT name, actions, builtin FROM policies ORDER BY name")
                    .fetch_all(&self.read)
                    .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let actions: String = r.try_get(1)?;
                    out.push(PolicyRecord {
                        name: r.try_get(0)?,
                        actions: parse_json("policy actions", &actions)?,
                        builtin: r.try_get(2)?,
                    });
                }
                Ok(out)
            }

            async fn delete_policy(&self, name: &str) -> StoreResult<bool> {
                let n = sqlx::query("DELETE FROM policies WHERE name = $1 AND builtin = FALSE")
                    .bind(name)
                    .execute(&self.write)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn grant(&self, user_id: &str, project_id: &str, policy: &str) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO grants (user_id, project_id, policy_name) VALUES ($1, $2, $3) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(user_id)
                .bind(project_id)
                .bind(policy)
                .execute(&self.write)
                .await
                .map_err(|e| conflict_as("grant", e))?;
                Ok(())
            }

            async fn revoke(&self, user_id: &str, project_id: &str, policy: &str) -> StoreResult<bool> {
                let n = sqlx::query(
                    "DELETE FROM grants WHERE user_id = $1 AND project_id = $2 AND policy_name = $3",
                )
                .bind(user_id)
                .bind(project_id)
                .bind(policy)
                .execute(&self.write)
                .await?
                .rows_affected();
                Ok(n > 0)
            }

            async fn list_grants(&self, user_id: &str) -> StoreResult<Vec<(String, String)>> {
                let rows = sqlx::query(
                    "SELECT project_id, policy_name FROM grants WHERE user_id = $1 \
                     ORDER BY project_id, policy_name",
                )
                .bind(user_id)
                .fetch_all(&self.read)
                .await?;
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    out.push((r.try_get(0)?, r.try_get(1)?));
                }
                Ok(out)
            }

            async fn project_actions(
                &self,
                user_id: &str,
                project_id: &str,
            ) -> StoreResult<Option<Vec<String>>> {
                let rows = sqlx::query(
                    "SELECT p.actions FROM grants g JOIN policies p ON p.name = g.policy_name \
                     WHERE g.user_id = $1 AND g.project_id = $2",
                )
                .bind(user_id)
                .bind(project_id)
                .fetch_all(&self.read)
                .await?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let mut actions = Vec::new();
                for r in rows {
                    let raw: String = r.try_get(0)?;
                    actions.extend(parse_json::<Vec<String>>("policy actions", &raw)?);
                }
                Ok(Some(actions))
            }

            async fn insert_token(
                &self,
                token_hash: &str,
                user_id: &str,
                project_id: &str,
                issued_at: i64,
                expires_at: i64,
            ) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO tokens (token_hash, user_id, project_id, issued_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token_hash)
                .bind(user_id)
                .bind(project_id)
                .bind(issued_at)
                .bind(expires_at)
                .execute(&self.write)
                .await?;
                Ok(())
            }

            async fn find_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<Option<TokenRecord>> {
                let row = sqlx::query(
                    "SELECT t.user_id, u.name, t.project_id, t.expires_at FROM tokens t \
                     JOIN users u ON u.id = t.user_id \
                     WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2",
                )
                .bind(token_hash)
                .bind(now_ms)
                .fetch_optional(&self.read)
                .await?;
                row.map(|r| {
                    Ok(TokenRecord {
                        user_id: r.try_get(0)?,
                        user_name: r.try_get(1)?,
                        project_id: r.try_get(2)?,
                        expires_at: r.try_get(3)?,
                    })
                })
                .transpose()
            }

            async fn revoke_token(&self, token_hash: &str, now_ms: i64) -> StoreResult<bool> {
                let n = sqlx::query(
                    "UPDATE tokens SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
                )
                .bind(now_ms)
                .bind(token_hash)
                .execute(&self.write)
                .await?
                .rows_affected();
                Ok(n > 0)
            }

            async fn revoke_user_tokens(&self, user_id: &str, now_ms: i64) -> StoreResult<u64> {
                let n = sqlx::query(
                    "UPDATE tokens SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
                )
                .bind(now_ms)
                .bind(user_id)
                .execute(&self.write)
                .await?
                .rows_affected();
                Ok(n)
            }
        }
    };
}
pub(super) use sql_store;
