//! The node agents' side of tasks: leases with fencing epochs, their renewals, the tasks
//! the server ends because no agent ran them in time, the output agents upload, and when
//! each server was last heard from.

use super::{parse_json, Exec, SqlPools, SqlRow, Statement, Value};
use crate::domain::ProjectId;
use crate::store::error::{retry_read, retry_transient};
use crate::store::{
    FleetGauges, LeaseState, LeaseTerms, Leased, LeasedTask, Stall, StalledTask, StoreError,
    StoreResult, TaskLease, TaskOutput,
};

/// Leases up to `limit` of a server's runnable tasks (see
/// [`crate::store::JobStore::lease_tasks`]).
pub async fn lease_tasks(
    pools: &impl SqlPools,
    project: &ProjectId,
    (server_id, owner): (&str, &str),
    terms: LeaseTerms<'_>,
    limit: i64,
) -> StoreResult<Leased> {
    retry_transient(|| async {
        let mut tx = super::begin_write(pools.write_pool()).await?;
        let s = Statement::new(
            "UPDATE tasks SET lease_owner = $1, lease_until = $2, lease_epoch = lease_epoch + 1 \
             WHERE project_id = $3 AND server_id = $4 AND status = 'PROCESSING' \
               AND (lease_until IS NULL OR lease_until < $5) \
               AND id IN (SELECT id FROM tasks WHERE project_id = $3 AND server_id = $4 \
                          AND status = 'PROCESSING' \
                          AND (lease_until IS NULL OR lease_until < $5) \
                          ORDER BY create_at LIMIT $6) \
             RETURNING id, job_id, lease_epoch",
        )
        .bind(owner)
        .bind(terms.until)
        .bind(project.as_str())
        .bind(server_id)
        .bind(terms.now_ms)
        .bind(limit);
        let leased = tx.rows(s).await?;
        let mut out = Leased::default();
        for row in leased {
            let (task_id, job_id) = (row.text(0)?, row.text(1)?);
            let s =
                Statement::new("SELECT type, items FROM jobs WHERE project_id = $1 AND id = $2")
                    .bind(project.as_str())
                    .bind(&job_id);
            let job = tx
                .row(s)
                .await?
                .ok_or_else(|| StoreError::internal(format!("task {task_id} has no job")))?;
            let job_type = job.text(0)?;
            // Each lease runs the task from its start: its run time starts now (a task leased
            // again after an agent's crash has all of it, not what the first run left).
            let deadline = terms.now_ms.saturating_add((terms.run_time_ms)(&job_type));
            let lease_until = if terms.renews { terms.until } else { deadline };
            let s = Statement::new(
                "UPDATE tasks SET deadline_at = $1, lease_until = $2 \
                 WHERE project_id = $3 AND id = $4",
            )
            .bind(deadline)
            .bind(lease_until)
            .bind(project.as_str())
            .bind(&task_id);
            tx.run(s).await?;
            out.tasks.push(LeasedTask {
                task_id,
                job_id,
                job_type,
                items: parse_json("job items", &job.text(1)?)?,
                lease_until,
                lease_epoch: row.int(2)?,
            });
        }
        if out.tasks.is_empty() {
            let s = Statement::new(
                "SELECT MIN(lease_until) FROM tasks WHERE project_id = $1 AND server_id = $2 \
                 AND status = 'PROCESSING' AND lease_until IS NOT NULL",
            )
            .bind(project.as_str())
            .bind(server_id);
            out.next_expiry = match tx.row(s).await? {
                Some(row) => row.opt_int(0)?,
                None => None,
            };
        }
        tx.commit().await?;
        Ok(out)
    })
    .await
}

/// Renews `owner`'s leases of `held` (task id, epoch) on a server (see
/// [`crate::store::JobStore::renew_leases`]).
pub async fn renew_leases(
    pools: &impl SqlPools,
    project: &ProjectId,
    (server_id, owner): (&str, &str),
    held: &[(String, i64)],
    until: i64,
) -> StoreResult<Vec<LeaseState>> {
    if held.is_empty() {
        return Ok(Vec::new());
    }
    let mut s = Statement::new("UPDATE tasks SET lease_until = ");
    s.push_bind(until)
        .push(" WHERE project_id = ")
        .push_bind(project.as_str())
        .push(" AND server_id = ")
        .push_bind(server_id)
        .push(" AND lease_owner = ")
        .push_bind(owner)
        .push(" AND status = 'PROCESSING' AND (id, lease_epoch) IN (VALUES ");
    for (i, (task_id, epoch)) in held.iter().enumerate() {
        if i > 0 {
            s.push(", ");
        }
        s.push_tuple([Value::from(task_id), Value::from(*epoch)]);
    }
    s.push(") RETURNING id");
    let mut conn = pools.write_pool().acquire().await?;
    let renewed: std::collections::HashSet<String> = conn
        .rows(s)
        .await?
        .iter()
        .map(|row| row.text(0))
        .collect::<StoreResult<_>>()?;
    let missing: Vec<&String> = held
        .iter()
        .map(|(id, _)| id)
        .filter(|id| !renewed.contains(*id))
        .collect();
    let mut ended = std::collections::HashMap::new();
    if !missing.is_empty() {
        let mut s = Statement::new("SELECT id, status, message FROM tasks WHERE project_id = ");
        s.push_bind(project.as_str())
            .push(" AND id IN ")
            .push_tuple(missing.iter().map(|id| Value::from(*id)));
        for row in conn.rows(s).await? {
            let status = row.text(1)?;
            if status != "PROCESSING" {
                ended.insert(row.text(0)?, (status, row.text(2)?));
            }
        }
    }
    Ok(held
        .iter()
        .map(|(id, _)| match ended.remove(id) {
            _ if renewed.contains(id) => LeaseState::Held { until },
            Some((status, message)) => LeaseState::Ended { status, message },
            None => LeaseState::Lost,
        })
        .collect())
}

/// Running tasks of real servers the server is to end (see
/// [`crate::store::JobStore::stalled_tasks`]): the oldest `limit` of those never started and
/// the oldest `limit` of those leased, each kind found through an index of its own, so that
/// the tasks still waiting within their start timeout are never read, and a backlog of one
/// kind never holds the other back.
pub async fn stalled_tasks(
    pools: &impl SqlPools,
    now_ms: i64,
    start_timeout_ms: i64,
    limit: i64,
) -> StoreResult<Vec<StalledTask>> {
    let since = now_ms.saturating_sub(start_timeout_ms);
    let s = stalled_statement(since, now_ms, limit);
    let rows =
        retry_read(|| async { pools.read_pool().acquire().await?.rows(s.clone()).await }).await?;
    rows.iter().map(|row| stalled_task(row, now_ms)).collect()
}

const STALLED_COLUMNS: &str =
    "project_id, id, server_id, create_at, lease_epoch, lease_until, deadline_at";

/// The statement of [`stalled_tasks`]: the oldest `limit` of the tasks never started,
/// created before `since` (on `tasks_running_on_agents`, up to `since`), and the oldest
/// `limit` of the leased tasks whose lease lapsed before `since` or whose deadline passed by
/// `now_ms` (on `tasks_leased`).
fn stalled_statement(since: i64, now_ms: i64, limit: i64) -> Statement<'static> {
    let running = "FROM tasks WHERE status = 'PROCESSING' AND simulated = FALSE";
    let oldest = "ORDER BY create_at LIMIT $3";
    Statement::new(format!(
        "SELECT {STALLED_COLUMNS} FROM (SELECT {STALLED_COLUMNS} {running} \
         AND lease_epoch = 0 AND create_at < $1 {oldest}) AS never_started \
         UNION ALL SELECT {STALLED_COLUMNS} FROM (SELECT {STALLED_COLUMNS} {running} \
         AND lease_epoch > 0 AND (lease_until < $1 OR deadline_at < $2) {oldest}) AS leased"
    ))
    .bind(since)
    .bind(now_ms)
    .bind(limit)
}

/// A row of [`STALLED_COLUMNS`], and why its task stalled.
fn stalled_task(row: &impl SqlRow, now_ms: i64) -> StoreResult<StalledTask> {
    let (created_at, epoch) = (row.int(3)?, row.int(4)?);
    let (lease_until, deadline) = (row.opt_int(5)?, row.opt_int(6)?);
    let stall = match deadline {
        Some(at) if at < now_ms => Stall::PastDeadline { at },
        _ if epoch == 0 => Stall::NeverStarted { created_at },
        _ => Stall::LeaseLapsed {
            at: lease_until.unwrap_or(created_at),
        },
    };
    Ok(StalledTask {
        project_id: ProjectId::parse(&row.text(0)?)
            .map_err(|e| StoreError::internal(e.to_string()))?,
        task_id: row.text(1)?,
        server_id: row.text(2)?,
        stall,
    })
}

/// Keeps the tail of a task's output from its lease holder (see
/// [`crate::store::JobStore::put_task_output`]).
pub async fn put_task_output(
    pools: &impl SqlPools,
    project: &ProjectId,
    task_id: &str,
    lease: TaskLease<'_>,
    output: &str,
    now_ms: i64,
) -> StoreResult<bool> {
    retry_transient(|| async {
        let mut tx = super::begin_write(pools.write_pool()).await?;
        let s = Statement::new(
            "SELECT 1 FROM tasks WHERE project_id = $1 AND id = $2 AND status = 'PROCESSING' \
             AND server_id = $3 AND lease_owner = $4 AND lease_epoch = COALESCE($5, lease_epoch)",
        )
        .bind(project.as_str())
        .bind(task_id)
        .bind(lease.server_id)
        .bind(lease.owner)
        .bind(lease.epoch);
        if tx.row(s).await?.is_none() {
            return Ok(false);
        }
        let s = Statement::new(
            "INSERT INTO task_output (project_id, task_id, output, update_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (project_id, task_id) \
             DO UPDATE SET output = excluded.output, update_at = excluded.update_at",
        )
        .bind(project.as_str())
        .bind(task_id)
        .bind(output)
        .bind(now_ms);
        tx.run(s).await?;
        tx.commit().await?;
        Ok(true)
    })
    .await
}

/// The output an agent uploaded for a task of `job_id`.
pub async fn task_output(
    pools: &impl SqlPools,
    project: &ProjectId,
    job_id: &str,
    task_id: &str,
) -> StoreResult<Option<TaskOutput>> {
    let s = Statement::new(
        "SELECT o.output, o.update_at FROM task_output o \
         JOIN tasks t ON t.project_id = o.project_id AND t.id = o.task_id \
         WHERE o.project_id = $1 AND o.task_id = $2 AND t.job_id = $3",
    )
    .bind(project.as_str())
    .bind(task_id)
    .bind(job_id);
    let row =
        retry_read(|| async { pools.read_pool().acquire().await?.row(s.clone()).await }).await?;
    row.map(|row| {
        Ok(TaskOutput {
            task_id: task_id.to_string(),
            output: row.text(0)?,
            update_at: row.int(1)?,
        })
    })
    .transpose()
}

/// Servers at most in one statement.
const SERVERS_PER_TOUCH: usize = 1000;

/// Records when servers were last heard from (see [`crate::store::JobStore::touch_servers`]).
pub async fn touch_servers(
    pools: &impl SqlPools,
    seen: &[(ProjectId, String, i64)],
) -> StoreResult<()> {
    let mut conn = pools.write_pool().acquire().await?;
    for chunk in seen.chunks(SERVERS_PER_TOUCH) {
        let mut s = Statement::new("UPDATE servers SET last_seen_at = seen.at FROM (");
        for (i, (project, id, at)) in chunk.iter().enumerate() {
            if i > 0 {
                s.push(" UNION ALL ");
            }
            s.push("SELECT ")
                .push_bind(project.as_str())
                .push(" AS project_id, ")
                .push_bind(id.as_str())
                .push(" AS id, CAST(")
                .push_bind(*at)
                .push(" AS BIGINT) AS at");
        }
        s.push(
            ") AS seen WHERE servers.project_id = seen.project_id \
             AND servers.id = seen.id AND (servers.last_seen_at IS NULL \
             OR servers.last_seen_at < seen.at)",
        );
        conn.run(s).await?;
    }
    Ok(())
}

/// The running tasks by state and the agents online per project (see
/// [`crate::store::JobStore::fleet_gauges`]).
pub async fn fleet_gauges(
    pools: &impl SqlPools,
    now_ms: i64,
    online_since_ms: i64,
) -> StoreResult<FleetGauges> {
    let mut conn = pools.read_pool().acquire().await?;
    let mut gauges = FleetGauges::default();
    if let Some(row) = conn.row(running_counts(now_ms)).await? {
        let count = |i| row.int(i).map(|n| u64::try_from(n).unwrap_or(0));
        let (agents, leased) = (count(1)?, count(2)?);
        gauges.simulated = count(0)?;
        gauges.leased = leased;
        gauges.waiting = agents.saturating_sub(leased);
    }
    let s = Statement::new(
        "SELECT project_id, COUNT(*) FROM servers WHERE kind = 'agent' \
         AND last_seen_at >= $1 GROUP BY project_id ORDER BY project_id",
    )
    .bind(online_since_ms);
    for row in conn.rows(s).await? {
        let n = u64::try_from(row.int(1)?).unwrap_or(0);
        gauges.agents_online.push((row.text(0)?, n));
    }
    Ok(gauges)
}

/// Counts the running tasks of simulated servers, of real ones, and those of real ones
/// leased at `now_ms`: the first two on their partial indexes alone, the third reading only
/// the leased tasks (`tasks_leased`).
fn running_counts(now_ms: i64) -> Statement<'static> {
    let running = "SELECT COUNT(*) FROM tasks WHERE status = 'PROCESSING' AND simulated =";
    Statement::new(format!(
        "SELECT ({running} TRUE), ({running} FALSE), \
         ({running} FALSE AND lease_epoch > 0 AND lease_until >= $1)"
    ))
    .bind(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each statement of the sweep and the gauges, and the index each of its parts reads.
    fn statements() -> Vec<(Statement<'static>, Vec<&'static str>)> {
        vec![
            (
                stalled_statement(1_000, 2_000, 500),
                vec!["tasks_running_on_agents", "tasks_leased"],
            ),
            (
                running_counts(2_000),
                vec![
                    "tasks_due_simulated",
                    "tasks_running_on_agents",
                    "tasks_leased",
                ],
            ),
        ]
    }

    /// On SQLite, the sweep for stalled tasks and the gauges read the running tasks through
    /// their partial indexes, in the order of the statement's parts, and never walk the
    /// table (nor the running tasks for the leased ones).
    #[tokio::test]
    async fn sqlite_sweeps_and_counts_running_tasks_on_their_indexes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let _store = crate::store::testing::sqlite_with_servers(&path, &[]).await;
        let conn = rusqlite::Connection::open(&path).expect("connection");
        for (s, indexes) in statements() {
            let steps = crate::store::testing::sqlite_plan(&conn, &s.sql, None);
            let reads: Vec<&String> = steps.iter().filter(|s| s.contains("tasks")).collect();
            assert_eq!(reads.len(), indexes.len(), "{}: {steps:?}", s.sql);
            for (step, index) in reads.iter().zip(&indexes) {
                assert!(
                    step.contains(&format!("INDEX {index}")),
                    "{}: {steps:?}",
                    s.sql
                );
            }
        }
    }

    /// On PostgreSQL, with many waiting tasks and a few leased ones analysed, the same
    /// statements read the same indexes, never the whole table.
    #[tokio::test]
    async fn postgres_sweeps_and_counts_running_tasks_on_their_indexes() {
        use sqlx::Connection as _;
        let Some(db) = crate::testkit::test_database().await else {
            return;
        };
        let _store = crate::store::postgres::PgStore::connect(&db.url, 2)
            .await
            .expect("connect");
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("conn");
        let tasks = "INSERT INTO tasks (id, project_id, job_id, position, server_id, \
             server_name, simulated, status, create_at, update_at, lease_epoch, lease_until) \
             SELECT 't' || g, 'p', 'j' || g, 0, 's' || (g % 100), 's', g % 10 = 0, \
             CASE WHEN g % 3 = 0 THEN 'SUCCESS' ELSE 'PROCESSING' END, g, g, \
             CASE WHEN g % 500 = 1 THEN 1 ELSE 0 END, \
             CASE WHEN g % 500 = 1 THEN g + 60000 END FROM generate_series(1, 30000) AS g";
        for s in [tasks, "ANALYZE tasks"] {
            sqlx::query(s).execute(&mut conn).await.expect(s);
        }
        for (s, indexes) in statements() {
            let explain = Statement {
                sql: format!("EXPLAIN {}", s.sql),
                values: s.values.clone(),
            };
            let plan: Vec<String> = conn
                .rows(explain)
                .await
                .expect("explain")
                .iter()
                .map(|row| row.text(0))
                .collect::<StoreResult<_>>()
                .expect("plan");
            let plan = plan.join("\n");
            assert!(!plan.contains("Seq Scan"), "{}:\n{plan}", s.sql);
            let mut rest = plan.as_str();
            for index in indexes {
                let at = rest
                    .find(index)
                    .unwrap_or_else(|| panic!("{index} in {}:\n{plan}", s.sql));
                rest = &rest[at..];
            }
        }
    }
}
