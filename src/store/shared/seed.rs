//! [`SeedStore`] for every store whose pools run the shared SQL: jobs written as given,
//! read back whole, and erased (the emulator's seed, export and reset).

use async_trait::async_trait;

use super::{Exec, SqlPools, SqlRow, Statement};
use crate::domain::ProjectId;
use crate::store::seed::{JobRow, SeedStore, TaskRow};
use crate::store::StoreResult;

const JOB_COLUMNS: &str = "project_id, id, name, user_name, description, type, template_id, \
    status, visible, is_reboot, abnormal_count, pending_tasks, items, create_at, update_at, \
    deleted_at";
const TASK_COLUMNS: &str = "id, project_id, job_id, position, server_id, server_name, \
    simulated, status, message, cloud_server, create_at, update_at";

async fn insert_job_rows(
    pools: &impl SqlPools,
    project: &ProjectId,
    jobs: &[JobRow],
) -> StoreResult<()> {
    let mut tx = super::begin_write(pools.write_pool()).await?;
    for job in jobs {
        let count = |status: &str| job.tasks.iter().filter(|t| t.status == status).count() as i64;
        let s = Statement::new(format!(
            "INSERT INTO jobs ({JOB_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(project.as_str())
        .bind(&job.id)
        .bind(&job.name)
        .bind(&job.user_name)
        .bind(&job.description)
        .bind(&job.job_type)
        .bind(&job.template_id)
        .bind(&job.status)
        .bind(job.visible)
        .bind(false)
        .bind(count("FAILED"))
        .bind(count("PROCESSING"))
        .bind(&job.items)
        .bind(job.create_at)
        .bind(job.update_at)
        .bind(job.deleted_at);
        tx.run(s).await.map_err(|e| e.naming("job"))?;
        for (position, task) in job.tasks.iter().enumerate() {
            let s = Statement::new(format!(
                "INSERT INTO tasks ({TASK_COLUMNS}) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
            ))
            .bind(&task.id)
            .bind(project.as_str())
            .bind(&job.id)
            .bind(position as i64)
            .bind(&task.server_id)
            .bind(&task.server_name)
            .bind(task.simulated)
            .bind(&task.status)
            .bind(&task.message)
            .bind(&task.cloud_server)
            .bind(job.create_at)
            .bind(task.update_at);
            tx.run(s).await.map_err(|e| e.naming("task"))?;
        }
    }
    tx.commit().await?;
    Ok(())
}

async fn job_rows(pools: &impl SqlPools, project: &ProjectId) -> StoreResult<Vec<JobRow>> {
    let mut conn = pools.read_pool().acquire().await?;
    let s = Statement::new(
        "SELECT id, name, user_name, description, type, template_id, status, visible, items, \
         create_at, update_at, deleted_at FROM jobs WHERE project_id = $1 \
         ORDER BY create_at, id",
    )
    .bind(project.as_str());
    let mut jobs = Vec::new();
    for r in conn.rows(s).await? {
        jobs.push(JobRow {
            id: r.text(0)?,
            name: r.text(1)?,
            user_name: r.text(2)?,
            description: r.opt_text(3)?,
            job_type: r.text(4)?,
            template_id: r.opt_text(5)?,
            status: r.text(6)?,
            visible: r.boolean(7)?,
            items: r.text(8)?,
            create_at: r.int(9)?,
            update_at: r.int(10)?,
            deleted_at: r.opt_int(11)?,
            tasks: Vec::new(),
        });
    }
    let s = Statement::new(
        "SELECT job_id, id, server_id, server_name, status, message, cloud_server, simulated, \
         update_at FROM tasks WHERE project_id = $1 ORDER BY job_id, position",
    )
    .bind(project.as_str());
    let mut tasks: std::collections::HashMap<String, Vec<TaskRow>> = Default::default();
    for r in conn.rows(s).await? {
        tasks.entry(r.text(0)?).or_default().push(TaskRow {
            id: r.text(1)?,
            server_id: r.text(2)?,
            server_name: r.text(3)?,
            status: r.text(4)?,
            message: r.text(5)?,
            cloud_server: r.text(6)?,
            simulated: r.boolean(7)?,
            update_at: r.int(8)?,
        });
    }
    for job in &mut jobs {
        job.tasks = tasks.remove(&job.id).unwrap_or_default();
    }
    Ok(jobs)
}

async fn erase_jobs(pools: &impl SqlPools, project: Option<&ProjectId>) -> StoreResult<u64> {
    let scope = |sql: &str| {
        let s = match project {
            Some(p) => Statement::new(format!("{sql} WHERE project_id = $1")).bind(p.as_str()),
            None => Statement::new(sql),
        };
        s
    };
    let mut tx = super::begin_write(pools.write_pool()).await?;
    tx.run(scope("DELETE FROM task_output")).await?;
    tx.run(scope("DELETE FROM tasks")).await?;
    let jobs = tx.run(scope("DELETE FROM jobs")).await?;
    tx.run(scope("DELETE FROM idempotency_keys")).await?;
    // Their events too: a watcher replaying from the start must not see erased jobs (nor,
    // when a project's id is used again, another tenant's).
    tx.run(scope("DELETE FROM job_events")).await?;
    tx.commit().await?;
    Ok(jobs)
}

async fn delete_project(pools: &impl SqlPools, project: &ProjectId) -> StoreResult<bool> {
    erase_jobs(pools, Some(project)).await?;
    let mut tx = super::begin_write(pools.write_pool()).await?;
    let p = project.as_str();
    tx.run(Statement::new("DELETE FROM servers WHERE project_id = $1").bind(p))
        .await?;
    tx.run(Statement::new("DELETE FROM grants WHERE project_id = $1").bind(p))
        .await?;
    tx.run(Statement::new("DELETE FROM tokens WHERE project_id = $1").bind(p))
        .await?;
    let gone = tx
        .run(Statement::new("DELETE FROM projects WHERE id = $1").bind(p))
        .await?;
    tx.commit().await?;
    Ok(gone > 0)
}

#[async_trait]
impl<P: SqlPools> SeedStore for P {
    async fn delete_project(&self, project: &ProjectId) -> StoreResult<bool> {
        delete_project(self, project).await
    }

    async fn insert_job_rows(&self, project: &ProjectId, jobs: &[JobRow]) -> StoreResult<()> {
        insert_job_rows(self, project, jobs).await
    }

    async fn job_rows(&self, project: &ProjectId) -> StoreResult<Vec<JobRow>> {
        job_rows(self, project).await
    }

    async fn erase_jobs(&self, project: Option<&ProjectId>) -> StoreResult<u64> {
        erase_jobs(self, project).await
    }
}
