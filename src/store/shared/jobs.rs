//! Jobs, tasks and servers as both backends read and change them: [`JobStore`] for every
//! store whose pools run the shared SQL (the list and the creates are each backend's own:
//! [`crate::store::Backend`]).

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::activity::{self, EventKind};
use super::leases;
use super::{parse_json, to_json, Exec, SqlPools, SqlRow, Statement, Value};
use crate::domain::{JobStatus, ProjectId, TaskStatus};
use crate::store::error::{retry_read, retry_transient};
use crate::store::{
    DueTask, FleetGauges, JobStore, LeaseState, LeaseTerms, Leased, NewServer, StalledTask,
    StoreError, StoreResult, TaskLease, TaskOutput,
};
use crate::wire::{JobDetail, JobItem, JobListItem, Server, Task};

/// Columns of a job list item, in the order [`list_item`] reads them.
pub const LIST_COLUMNS: &str =
    "id, name, user_name, description, type, status, abnormal_count, create_at, update_at";

/// A job list item from a row holding [`LIST_COLUMNS`] first.
pub fn list_item(r: &impl SqlRow) -> StoreResult<JobListItem> {
    Ok(JobListItem {
        id: r.text(0)?,
        name: r.text(1)?,
        user_name: r.text(2)?,
        description: r.opt_text(3)?,
        job_type: r.text(4)?,
        status: r.text(5)?,
        abnormal_count: r.int(6)?,
        create_at: r.int(7)?,
        update_at: r.int(8)?,
    })
}

const TASK_COLUMNS: &str = "t.id, t.server_id, t.server_name, t.status, t.cloud_server, \
     t.message, t.create_at, t.update_at, s.kind, s.last_seen_at";

/// One job with its items and tasks, or `None`.
pub async fn read_job(
    conn: &mut impl Exec,
    project: &ProjectId,
    id: &str,
) -> StoreResult<Option<JobDetail>> {
    let s = Statement::new(format!(
        "SELECT {LIST_COLUMNS}, template_id, visible, is_reboot, items FROM jobs \
         WHERE project_id = $1 AND id = $2"
    ))
    .bind(project.as_str())
    .bind(id);
    let Some(row) = conn.row(s).await? else {
        return Ok(None);
    };
    let base = list_item(&row)?;
    // A job's tasks share its create_at, which leads their index.
    let s = Statement::new(format!(
        "SELECT {TASK_COLUMNS} FROM tasks t LEFT JOIN servers s \
         ON s.project_id = t.project_id AND s.id = t.server_id \
         WHERE t.project_id = $1 AND t.create_at = $2 AND t.job_id = $3 ORDER BY t.position"
    ))
    .bind(project.as_str())
    .bind(base.create_at)
    .bind(id);
    let mut tasks = Vec::new();
    let now = crate::domain::now_ms();
    for t in conn.rows(s).await? {
        tasks.push(Task {
            id: t.text(0)?,
            server_id: t.text(1)?,
            server_name: t.text(2)?,
            status: t.text(3)?,
            cloud_server: parse_json("task cloud_server", &t.text(4)?)?,
            message: t.text(5)?,
            create_at: t.int(6)?.to_string(),
            update_at: t.int(7)?.to_string(),
            server_online: match t.opt_text(8)? {
                Some(kind) => Some(crate::domain::server_online(&kind, t.opt_int(9)?, now)),
                None => None,
            },
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
        template_id: row.opt_text(9)?,
        visible: Some(row.boolean(10)?),
        is_reboot: Some(row.boolean(11)?),
        items: parse_json::<Vec<JobItem>>("job items", &row.text(12)?)?,
        tasks,
    }))
}

/// Soft-deletes the project's jobs among `ids` (not empty), cancelling their running tasks;
/// answers each of them as it now is.
async fn delete_jobs(
    pools: &impl SqlPools,
    project: &ProjectId,
    ids: &[String],
    now_ms: i64,
) -> StoreResult<Vec<JobListItem>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    retry_transient(|| async {
        let mut tx = super::begin_write(pools.write_pool()).await?;
        let (mut deleted_ids, mut cancelled) = (Vec::new(), 0);
        // One job at a time: an equality on the id is what makes every planner take the
        // (project, id) index (with `id IN (…)` SQLite may walk a covering index over the
        // whole project instead).
        for id in ids {
            let s = Statement::new(
                "UPDATE jobs SET status = $1, deleted_at = $2, update_at = $2, \
                 pending_tasks = 0 WHERE project_id = $3 AND id = $4 AND status <> $1 \
                 RETURNING create_at",
            )
            .bind(JobStatus::Deleted.as_str())
            .bind(now_ms)
            .bind(project.as_str())
            .bind(id);
            let Some(deleted) = tx.row(s).await? else {
                continue;
            };
            // The job's tasks share its create_at, which leads their index.
            let s = Statement::new(
                "UPDATE tasks SET status = $1, message = $2, update_at = $3, \
                 lease_owner = NULL, lease_until = NULL WHERE project_id = $4 \
                 AND create_at = $5 AND job_id = $6 AND status = $7",
            )
            .bind(TaskStatus::Skipped.as_str())
            .bind("cancelled: the job was deleted")
            .bind(now_ms)
            .bind(project.as_str())
            .bind(deleted.int(0)?)
            .bind(id)
            .bind(TaskStatus::Processing.as_str());
            cancelled += tx.run(s).await?;
            deleted_ids.push(id.as_str());
        }
        activity::record(&mut *tx, project, &deleted_ids, EventKind::Deleted, None).await?;
        let mut s = Statement::new(format!(
            "SELECT {LIST_COLUMNS} FROM jobs WHERE project_id = "
        ));
        s.push_bind(project.as_str())
            .push(" AND id IN ")
            .push_tuple(ids.iter().map(Value::from))
            .push(" ORDER BY create_at DESC, id DESC");
        let rows = tx.rows(s).await?;
        tx.commit().await?;
        if !deleted_ids.is_empty() {
            pools.events_written();
            crate::metrics::jobs_deleted(deleted_ids.len() as u64);
            crate::metrics::tasks_ended(TaskStatus::Skipped.as_str(), cancelled);
        }
        rows.iter().map(list_item).collect()
    })
    .await
}

/// Ends a running task (see [`crate::store::JobStore::complete_task`]).
async fn complete_task(
    pools: &impl SqlPools,
    project: &ProjectId,
    task_id: &str,
    (status, message): (TaskStatus, &str),
    now_ms: i64,
    lease: Option<TaskLease<'_>>,
) -> StoreResult<bool> {
    if !status.is_terminal() {
        return Ok(false);
    }
    // With a lease, the task must be leased, on that server, by that user, and (when the
    // report names its epoch) by that very lease.
    let mut sql = String::from(
        "UPDATE tasks SET status = $1, message = $2, \
         update_at = CASE WHEN update_at > $3 THEN update_at ELSE $3 END, \
         lease_owner = NULL, lease_until = NULL \
         WHERE project_id = $4 AND id = $5 AND status = 'PROCESSING'",
    );
    if lease.is_some() {
        sql.push_str(
            " AND server_id = $6 AND lease_owner = $7 \
             AND lease_epoch = COALESCE($8, lease_epoch)",
        );
    }
    sql.push_str(" RETURNING job_id, server_id, update_at");
    retry_transient(|| async {
        let mut tx = super::begin_write(pools.write_pool()).await?;
        let mut s = Statement::new(sql.as_str())
            .bind(status.as_str())
            .bind(message)
            .bind(now_ms)
            .bind(project.as_str())
            .bind(task_id);
        if let Some(lease) = lease {
            s = s.bind(lease.server_id).bind(lease.owner).bind(lease.epoch);
        }
        let Some(ended) = tx.row(s).await? else {
            return Ok(false);
        };
        let job_id = ended.text(0)?;
        let s = Statement::new(
            "UPDATE jobs SET pending_tasks = pending_tasks - 1, \
             abnormal_count = abnormal_count + $1, \
             status = CASE WHEN status = 'PROCESSING' AND pending_tasks <= 1 \
                      THEN 'FINISHED' ELSE status END, \
             update_at = CASE WHEN update_at > $2 THEN update_at ELSE $2 END \
             WHERE project_id = $3 AND id = $4 AND status <> 'DELETED' RETURNING status",
        )
        .bind(i64::from(status == TaskStatus::Failed))
        .bind(now_ms)
        .bind(project.as_str())
        .bind(&job_id);
        let finished = match tx.row(s).await? {
            Some(job) => job.text(0)? == JobStatus::Finished.as_str(),
            None => false,
        };
        let kind = if finished {
            EventKind::Finished
        } else {
            EventKind::Task
        };
        let task = activity::task_json(
            task_id,
            &ended.text(1)?,
            status.as_str(),
            message,
            ended.int(2)?,
        );
        activity::record(&mut *tx, project, &[job_id.as_str()], kind, Some(task)).await?;
        tx.commit().await?;
        pools.events_written();
        crate::metrics::tasks_ended(status.as_str(), 1);
        if finished {
            crate::metrics::job_finished();
        }
        Ok(true)
    })
    .await
}

/// Running tasks of simulated servers created before `created_before_ms`, oldest first.
async fn due_simulated_tasks(
    pools: &impl SqlPools,
    created_before_ms: i64,
    limit: i64,
) -> StoreResult<Vec<DueTask>> {
    let s = Statement::new(
        "SELECT t.project_id, t.id, t.server_id, COALESCE(s.sim_outcome, 'SUCCESS') \
         FROM tasks t LEFT JOIN servers s ON s.project_id = t.project_id AND s.id = t.server_id \
         WHERE t.status = 'PROCESSING' AND t.simulated = TRUE AND t.create_at < $1 \
         ORDER BY t.create_at LIMIT $2",
    )
    .bind(created_before_ms)
    .bind(limit);
    let rows = pools.read_pool().acquire().await?.rows(s).await?;
    rows.iter()
        .map(|row| {
            Ok(DueTask {
                project_id: ProjectId::parse(&row.text(0)?)
                    .map_err(|e| StoreError::internal(e.to_string()))?,
                task_id: row.text(1)?,
                server_id: row.text(2)?,
                outcome: row.text(3)?,
            })
        })
        .collect()
}

/// Removes jobs deleted before `deleted_before_ms` with their tasks, and idempotency keys
/// and tokens older than `keys_before_ms`; answers the number of jobs removed.
async fn purge(
    pools: &impl SqlPools,
    deleted_before_ms: i64,
    keys_before_ms: i64,
) -> StoreResult<u64> {
    let mut tx = super::begin_write(pools.write_pool()).await?;
    let s = Statement::new(
        "DELETE FROM task_output WHERE (project_id, task_id) IN \
         (SELECT t.project_id, t.id FROM tasks t JOIN jobs j \
          ON j.project_id = t.project_id AND j.create_at = t.create_at AND j.id = t.job_id \
          WHERE j.deleted_at < $1)",
    )
    .bind(deleted_before_ms);
    tx.run(s).await?;
    let s = Statement::new(
        "DELETE FROM tasks WHERE (project_id, create_at, job_id) IN \
         (SELECT project_id, create_at, id FROM jobs WHERE deleted_at < $1)",
    )
    .bind(deleted_before_ms);
    tx.run(s).await?;
    let s = Statement::new("DELETE FROM jobs WHERE deleted_at < $1").bind(deleted_before_ms);
    let jobs = tx.run(s).await?;
    let s =
        Statement::new("DELETE FROM idempotency_keys WHERE create_at < $1").bind(keys_before_ms);
    tx.run(s).await?;
    let s = Statement::new("DELETE FROM tokens WHERE expires_at < $1").bind(keys_before_ms);
    tx.run(s).await?;
    tx.commit().await?;
    Ok(jobs)
}

/// Registers a server, or updates one already there.
async fn upsert_server(
    pools: &impl SqlPools,
    project: &ProjectId,
    server: NewServer,
) -> StoreResult<()> {
    let s = Statement::new(
        "INSERT INTO servers (project_id, id, name, kind, sim_outcome, cloud_server, create_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) \
         ON CONFLICT (project_id, id) DO UPDATE SET name = excluded.name, \
         kind = excluded.kind, sim_outcome = excluded.sim_outcome, \
         cloud_server = excluded.cloud_server",
    )
    .bind(project.as_str())
    .bind(server.id)
    .bind(server.name)
    .bind(server.kind)
    .bind(server.sim_outcome)
    .bind(to_json(&server.cloud_server)?)
    .bind(server.now_ms);
    pools.write_pool().acquire().await?.run(s).await.map(drop)
}

/// Adds or updates a server an agent serves (see
/// [`crate::store::JobStore::register_agent_server`]); answers whether it was written.
async fn register_agent_server(
    pools: &impl SqlPools,
    project: &ProjectId,
    server: NewServer,
) -> StoreResult<bool> {
    let s = Statement::new(
        "INSERT INTO servers (project_id, id, name, kind, sim_outcome, cloud_server, create_at) \
         VALUES ($1, $2, $3, 'agent', NULL, $4, $5) \
         ON CONFLICT (project_id, id) DO UPDATE SET name = excluded.name, \
         cloud_server = excluded.cloud_server WHERE servers.kind = 'agent'",
    )
    .bind(project.as_str())
    .bind(server.id)
    .bind(server.name)
    .bind(to_json(&server.cloud_server)?)
    .bind(server.now_ms);
    let written = pools.write_pool().acquire().await?.run(s).await?;
    Ok(written > 0)
}

/// The project's servers, by id.
async fn list_servers(pools: &impl SqlPools, project: &ProjectId) -> StoreResult<Vec<Server>> {
    let s = Statement::new(
        "SELECT id, name, kind, cloud_server, create_at, last_seen_at, sim_outcome \
         FROM servers WHERE project_id = $1 ORDER BY id",
    )
    .bind(project.as_str());
    let rows = pools.read_pool().acquire().await?.rows(s).await?;
    let now = crate::domain::now_ms();
    rows.iter()
        .map(|row| {
            let kind = row.text(2)?;
            let last_seen_at = row.opt_int(5)?;
            let online = crate::domain::server_online(&kind, last_seen_at, now);
            Ok(Server {
                id: row.text(0)?,
                name: row.text(1)?,
                kind,
                cloud_server: parse_json::<BTreeMap<String, String>>(
                    "server cloud_server",
                    &row.text(3)?,
                )?,
                create_at: row.int(4)?,
                last_seen_at,
                online,
                outcome: row.opt_text(6)?,
            })
        })
        .collect()
}

/// Removes a server; false when the project has none of that id.
async fn delete_server(pools: &impl SqlPools, project: &ProjectId, id: &str) -> StoreResult<bool> {
    let s = Statement::new("DELETE FROM servers WHERE project_id = $1 AND id = $2")
        .bind(project.as_str())
        .bind(id);
    Ok(pools.write_pool().acquire().await?.run(s).await? > 0)
}

/// Records that a server's agent was heard from; false when the project has no such server.
async fn touch_server(
    pools: &impl SqlPools,
    project: &ProjectId,
    id: &str,
    now_ms: i64,
) -> StoreResult<bool> {
    let s =
        Statement::new("UPDATE servers SET last_seen_at = $1 WHERE project_id = $2 AND id = $3")
            .bind(now_ms)
            .bind(project.as_str())
            .bind(id);
    Ok(pools.write_pool().acquire().await?.run(s).await? > 0)
}

#[async_trait]
impl<P: SqlPools> JobStore for P {
    async fn get_job(&self, project: &ProjectId, id: &str) -> StoreResult<Option<JobDetail>> {
        retry_read(|| async {
            read_job(&mut *self.read_pool().acquire().await?, project, id).await
        })
        .await
    }

    async fn delete_jobs(
        &self,
        project: &ProjectId,
        ids: &[String],
        now_ms: i64,
    ) -> StoreResult<Vec<JobListItem>> {
        delete_jobs(self, project, ids, now_ms).await
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
        complete_task(self, project, task_id, (status, message), now_ms, lease).await
    }

    async fn due_simulated_tasks(&self, before_ms: i64, limit: i64) -> StoreResult<Vec<DueTask>> {
        due_simulated_tasks(self, before_ms, limit).await
    }

    async fn lease_tasks(
        &self,
        project: &ProjectId,
        server_id: &str,
        owner: &str,
        terms: LeaseTerms<'_>,
        limit: i64,
    ) -> StoreResult<Leased> {
        leases::lease_tasks(self, project, (server_id, owner), terms, limit).await
    }

    async fn renew_leases(
        &self,
        project: &ProjectId,
        server_id: &str,
        owner: &str,
        held: &[(String, i64)],
        until: i64,
    ) -> StoreResult<Vec<LeaseState>> {
        leases::renew_leases(self, project, (server_id, owner), held, until).await
    }

    async fn stalled_tasks(
        &self,
        now_ms: i64,
        start_timeout_ms: i64,
        limit: i64,
    ) -> StoreResult<Vec<StalledTask>> {
        leases::stalled_tasks(self, now_ms, start_timeout_ms, limit).await
    }

    async fn put_task_output(
        &self,
        project: &ProjectId,
        task_id: &str,
        lease: TaskLease<'_>,
        output: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        leases::put_task_output(self, project, task_id, lease, output, now_ms).await
    }

    async fn task_output(
        &self,
        project: &ProjectId,
        job_id: &str,
        task_id: &str,
    ) -> StoreResult<Option<TaskOutput>> {
        leases::task_output(self, project, job_id, task_id).await
    }

    async fn touch_servers(&self, seen: &[(ProjectId, String, i64)]) -> StoreResult<()> {
        leases::touch_servers(self, seen).await
    }

    async fn purge(&self, deleted_before_ms: i64, keys_before_ms: i64) -> StoreResult<u64> {
        purge(self, deleted_before_ms, keys_before_ms).await
    }

    async fn upsert_server(&self, project: &ProjectId, server: NewServer) -> StoreResult<()> {
        upsert_server(self, project, server).await
    }

    async fn register_agent_server(
        &self,
        project: &ProjectId,
        server: NewServer,
    ) -> StoreResult<bool> {
        register_agent_server(self, project, server).await
    }

    async fn list_servers(&self, project: &ProjectId) -> StoreResult<Vec<Server>> {
        list_servers(self, project).await
    }

    async fn delete_server(&self, project: &ProjectId, id: &str) -> StoreResult<bool> {
        delete_server(self, project, id).await
    }

    async fn fleet_gauges(&self, now_ms: i64, online_since_ms: i64) -> StoreResult<FleetGauges> {
        leases::fleet_gauges(self, now_ms, online_since_ms).await
    }

    async fn touch_server(&self, project: &ProjectId, id: &str, now_ms: i64) -> StoreResult<bool> {
        touch_server(self, project, id, now_ms).await
    }

    async fn running_tasks(&self, project: &ProjectId) -> StoreResult<Vec<(String, u64)>> {
        running_tasks(self, project).await
    }
}

/// The project's running tasks per server (on the partial index of running tasks).
async fn running_tasks(
    pools: &impl SqlPools,
    project: &ProjectId,
) -> StoreResult<Vec<(String, u64)>> {
    let s = Statement::new(
        "SELECT server_id, COUNT(*) FROM tasks WHERE project_id = $1 \
         AND status = 'PROCESSING' GROUP BY server_id ORDER BY server_id",
    )
    .bind(project.as_str());
    let rows = pools.read_pool().acquire().await?.rows(s).await?;
    rows.iter()
        .map(|row| Ok((row.text(0)?, u64::try_from(row.int(1)?).unwrap_or(0))))
        .collect()
}
