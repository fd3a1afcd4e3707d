//! Creating jobs: each with one task per server and its idempotency key, several in one
//! transaction (SQLite's group commit) or one alone (PostgreSQL, and SQLite's fallback).

use std::collections::{BTreeSet, HashMap};

use super::jobs::read_job;
use super::{parse_json, to_json, Exec, SqlPools, SqlRow, Statement, Value};
use crate::domain::{JobStatus, ProjectId, TaskStatus};
use crate::store::error::retry_transient;
use crate::store::{IdempotencyKey, NewJob, StoreError, StoreResult};
use crate::wire::{JobDetail, Task};

/// One create as the stores write it.
#[derive(Debug, Clone, Copy)]
pub struct Create<'a> {
    pub project: &'a ProjectId,
    pub job: &'a NewJob,
    pub idempotency: Option<&'a IdempotencyKey>,
}

/// A server a job runs on, as its task records it.
struct ServerRow {
    name: String,
    simulated: bool,
    /// JSON object.
    cloud_server: String,
    online: bool,
}

/// A task being created: the `job`-th create's `position`-th server.
struct NewTask<'a> {
    id: String,
    job: usize,
    position: usize,
    server_id: &'a String,
    server: &'a ServerRow,
}

/// Rows one `INSERT` writes at most: 15 values each at most, far below the bound values a
/// statement may hold (32,766 on SQLite, 65,535 on PostgreSQL).
const ROWS_PER_INSERT: usize = 1000;

/// An `INSERT` of `rows` (each its values) after `head`.
fn insert_rows<'a, R, const N: usize>(
    head: &str,
    rows: &'a [R],
    values: impl Fn(&'a R) -> [Value<'a>; N],
) -> Statement<'a> {
    let mut s = Statement::new(head);
    s.push(" VALUES ");
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.push_tuple(values(row));
    }
    s
}

/// Creates jobs with their tasks (and records their idempotency keys) inside the caller's
/// transaction, which the caller commits or rolls back; answers each create's outcome, in
/// order. A create whose key was used before with the same body answers that earlier job.
/// A create refused with [`StoreError::UnknownServers`] or
/// [`StoreError::IdempotencyConflict`] has written nothing that matters (at most it removed
/// an expired key), and the others go on. `Ok(None)` when a concurrent transaction took one
/// of the keys first: the caller rolls back and tries again. No two creates may carry the
/// same key.
///
/// Each kind of row is written by one statement for all the creates, the jobs last: on
/// SQLite, a statement that may fail halfway opens a savepoint, at which the name index
/// writes out the names it holds in memory; written last, the names reach the index once, at
/// commit, rather than once per create.
pub async fn insert_jobs(
    conn: &mut impl Exec,
    creates: &[Create<'_>],
) -> StoreResult<Option<Inserted>> {
    let mut outcomes = Vec::with_capacity(creates.len());
    for c in creates {
        outcomes.push(earlier_create(&mut *conn, c).await?);
    }

    // The servers of each project, looked up once for all its creates.
    let mut wanted: HashMap<&str, BTreeSet<&str>> = HashMap::new();
    for (c, _) in creates.iter().zip(&outcomes).filter(|(_, o)| o.is_none()) {
        let ids = wanted.entry(c.project.as_str()).or_default();
        ids.extend(c.job.server_ids.iter().map(String::as_str));
    }
    let mut known = HashMap::with_capacity(wanted.len());
    for (project, ids) in wanted {
        known.insert(project, find_servers(&mut *conn, project, ids).await?);
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
        return Ok(Some(Inserted {
            outcomes: answers(outcomes),
            created: 0,
        }));
    }

    for chunk in tasks.chunks(ROWS_PER_INSERT) {
        let s = insert_rows(
            "INSERT INTO tasks (id, project_id, job_id, position, server_id, server_name, \
             simulated, status, message, cloud_server, create_at, update_at)",
            chunk,
            |t| {
                let c = &creates[t.job];
                [
                    Value::from(&t.id),
                    c.project.as_str().into(),
                    (&c.job.id).into(),
                    (t.position as i64).into(),
                    t.server_id.into(),
                    (&t.server.name).into(),
                    t.server.simulated.into(),
                    TaskStatus::Processing.as_str().into(),
                    "".into(),
                    (&t.server.cloud_server).into(),
                    c.job.now_ms.into(),
                    c.job.now_ms.into(),
                ]
            },
        );
        conn.run(s).await?;
    }

    let keyed: Vec<_> = created
        .iter()
        .filter_map(|(i, _)| Some((&creates[*i], creates[*i].idempotency?)))
        .collect();
    if !keyed.is_empty() {
        let mut s = insert_rows(
            "INSERT INTO idempotency_keys (project_id, token, body_hash, job_id, create_at)",
            &keyed,
            |(c, key)| {
                [
                    c.project.as_str().into(),
                    (&key.token).into(),
                    (&key.body_hash).into(),
                    (&c.job.id).into(),
                    c.job.now_ms.into(),
                ]
            },
        );
        s.push(" ON CONFLICT DO NOTHING");
        if conn.run(s).await? < keyed.len() as u64 {
            return Ok(None);
        }
    }

    for chunk in created.chunks(ROWS_PER_INSERT) {
        let mut rows = Vec::with_capacity(chunk.len());
        for (i, _) in chunk {
            rows.push((&creates[*i], to_json(&creates[*i].job.items)?));
        }
        let s = insert_rows(
            "INSERT INTO jobs (project_id, id, name, user_name, description, type, \
             template_id, status, visible, is_reboot, abnormal_count, pending_tasks, items, \
             create_at, update_at)",
            &rows,
            |(c, items)| {
                let job = c.job;
                [
                    c.project.as_str().into(),
                    (&job.id).into(),
                    (&job.name).into(),
                    (&job.user_name).into(),
                    (&job.description).into(),
                    (&job.job_type).into(),
                    (&job.template_id).into(),
                    JobStatus::Processing.as_str().into(),
                    job.visible.into(),
                    job.is_reboot.into(),
                    0i64.into(),
                    (job.server_ids.len() as i64).into(),
                    items.into(),
                    job.now_ms.into(),
                    job.now_ms.into(),
                ]
            },
        );
        conn.run(s).await.map_err(|e| e.naming("job id"))?;
    }
    let new_jobs: Vec<(&ProjectId, &str)> = created
        .iter()
        .map(|(i, _)| (creates[*i].project, creates[*i].job.id.as_str()))
        .collect();
    super::activity::record_created(&mut *conn, &new_jobs).await?;

    for (i, range) in created {
        let job = creates[i].job;
        let mut out_tasks = Vec::with_capacity(range.len());
        for t in &tasks[range] {
            out_tasks.push(Task {
                id: t.id.clone(),
                server_id: t.server_id.clone(),
                server_name: t.server.name.clone(),
                status: TaskStatus::Processing.as_str().to_string(),
                cloud_server: parse_json("server cloud_server", &t.server.cloud_server)?,
                message: String::new(),
                create_at: job.now_ms.to_string(),
                update_at: job.now_ms.to_string(),
                server_online: Some(t.server.online),
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
            visible: Some(job.visible),
            is_reboot: Some(job.is_reboot),
            items: job.items.clone(),
            tasks: out_tasks,
        }));
    }
    Ok(Some(Inserted {
        outcomes: answers(outcomes),
        created: new_jobs.len() as u64,
    }))
}

/// What [`insert_jobs`] did: each create's outcome, in order, and how many jobs it created
/// (the others were refused or answered by an earlier create with their key).
pub struct Inserted {
    pub outcomes: Vec<StoreResult<JobDetail>>,
    pub created: u64,
}

/// The outcomes of [`insert_jobs`], each create having one by then.
fn answers(outcomes: Vec<Option<StoreResult<JobDetail>>>) -> Vec<StoreResult<JobDetail>> {
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| Err(StoreError::internal("a create was left without an outcome")))
        })
        .collect()
}

/// What a create's idempotency key says: `None` when the job is to be created (no key, a key
/// not used before, or an expired one, which is removed); else the earlier job (same body)
/// or the conflict (another body).
async fn earlier_create(
    conn: &mut impl Exec,
    create: &Create<'_>,
) -> StoreResult<Option<StoreResult<JobDetail>>> {
    let (project, Some(key)) = (create.project, create.idempotency) else {
        return Ok(None);
    };
    let s = Statement::new(
        "SELECT body_hash, job_id, create_at FROM idempotency_keys \
         WHERE project_id = $1 AND token = $2",
    )
    .bind(project.as_str())
    .bind(&key.token);
    let Some(row) = conn.row(s).await? else {
        return Ok(None);
    };
    if row.int(2)? >= key.not_before_ms {
        let stored = row.text(0)?;
        // A key an earlier version stored holds the request alone: it is the user's whose
        // job it names.
        let earlier = stored != key.body_hash && key.earlier_hash.as_ref() == Some(&stored);
        if stored != key.body_hash && !earlier {
            return Ok(Some(Err(StoreError::IdempotencyConflict)));
        }
        // A job deleted and purged since is gone: the key is then spent, as an expired one
        // is, and the request creates a job.
        if let Some(job) = read_job(&mut *conn, project, &row.text(1)?).await? {
            if earlier && job.user_name != create.job.user_name {
                return Ok(Some(Err(StoreError::IdempotencyConflict)));
            }
            return Ok(Some(Ok(job)));
        }
    }
    let s = Statement::new("DELETE FROM idempotency_keys WHERE project_id = $1 AND token = $2")
        .bind(project.as_str())
        .bind(&key.token);
    conn.run(s).await?;
    Ok(None)
}

/// The project's servers among `ids`, by id.
async fn find_servers(
    conn: &mut impl Exec,
    project: &str,
    ids: BTreeSet<&str>,
) -> StoreResult<HashMap<String, ServerRow>> {
    let mut s = Statement::new(
        "SELECT id, name, kind, cloud_server, last_seen_at FROM servers WHERE project_id = ",
    );
    s.push_bind(project)
        .push(" AND id IN ")
        .push_tuple(ids.into_iter().map(Value::from));
    let mut found = HashMap::new();
    for row in conn.rows(s).await? {
        let server = ServerRow {
            name: row.text(1)?,
            simulated: row.text(2)? == "simulated",
            cloud_server: row.text(3)?,
            online: crate::domain::server_online(
                &row.text(2)?,
                row.opt_int(4)?,
                crate::domain::now_ms(),
            ),
        };
        found.insert(row.text(0)?, server);
    }
    Ok(found)
}

/// Creates a job in a transaction of its own; tries again when a concurrent request took
/// the same idempotency key first or the transaction lost to concurrent ones.
pub async fn create_job_alone(
    pools: &impl SqlPools,
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
            let mut tx = super::begin_write(pools.write_pool()).await?;
            let creates = std::slice::from_ref(&create);
            let Some(mut inserted) = insert_jobs(&mut *tx, creates).await? else {
                tx.rollback().await?;
                return Ok(None);
            };
            // A refused create is rolled back as the transaction is dropped.
            let detail = inserted.outcomes.pop().unwrap_or_else(|| {
                Err(StoreError::internal("a create was left without an outcome"))
            })?;
            tx.commit().await?;
            crate::metrics::jobs_created(inserted.created);
            if inserted.created > 0 {
                pools.events_written();
            }
            Ok(Some(detail))
        })
        .await?;
        if let Some(done) = done {
            return Ok(done);
        }
    }
    Err(StoreError::internal(
        "an idempotency key kept changing hands",
    ))
}
