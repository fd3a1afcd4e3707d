//! What happened, kept for those who look later: the job events the live watch reads
//! (written in the transactions that change jobs) and the audit trail. All of
//! [`crate::store::ActivityStore`].

use async_trait::async_trait;

use super::{Exec, SqlPools, SqlRow, Statement, Value};
use crate::domain::ProjectId;
use crate::store::error::retry_read;
use crate::store::{ActivityStore, AuditFilter, AuditRecord, JobEvent, StoreError, StoreResult};

/// What a job event says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    /// One of its tasks ended (the job goes on).
    Task,
    /// Its last task ended.
    Finished,
    Deleted,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Task => "task",
            Self::Finished => "finished",
            Self::Deleted => "deleted",
        }
    }
}

/// Most of a task's message an event carries (its start); the job's detail has it all.
const EVENT_MESSAGE_CHARS: usize = 1024;

/// The task part of a task's event, as JSON.
pub fn task_json(
    task_id: &str,
    server_id: &str,
    status: &str,
    message: &str,
    update_at: i64,
) -> String {
    let message: String = message.chars().take(EVENT_MESSAGE_CHARS).collect();
    serde_json::json!({
        "id": task_id,
        "server_id": server_id,
        "status": status,
        "message": message,
        "update_at": update_at.to_string(),
    })
    .to_string()
}

/// Records an event of `kind` for each of the project's jobs among `job_ids`, with each job
/// as it now is, inside the caller's transaction.
pub async fn record(
    conn: &mut impl Exec,
    project: &ProjectId,
    job_ids: &[&str],
    kind: EventKind,
    task: Option<String>,
) -> StoreResult<()> {
    if job_ids.is_empty() {
        return Ok(());
    }
    conn.run(record_statement(project, job_ids, kind, task))
        .await
        .map(drop)
}

/// The statement of [`record`] (`job_ids` not empty).
fn record_statement<'a>(
    project: &'a ProjectId,
    job_ids: &[&'a str],
    kind: EventKind,
    task: Option<String>,
) -> Statement<'a> {
    // The ids drive the join, each found through the (project_id, id) index: with `id IN
    // (…)` and this order, SQLite would rather walk the project's whole creation-order index.
    let mut s = Statement::new("WITH ids(id) AS (VALUES ");
    for (n, id) in job_ids.iter().enumerate() {
        s.push(if n == 0 { "(" } else { ", (" })
            .push_bind(*id)
            .push(")");
    }
    s.push(
        ") INSERT INTO job_events (project_id, job_id, kind, item, task, visible, at) \
         SELECT j.project_id, j.id, ",
    )
    .push_bind(kind.as_str())
    .push(", j.list_item, ")
    .push_bind(Value::from(task))
    .push(", j.visible, j.update_at FROM ids CROSS JOIN jobs j WHERE j.project_id = ")
    .push_bind(project.as_str())
    .push(" AND j.id = ids.id ORDER BY j.create_at, j.id");
    s
}

/// Records one `created` event per job, for creates of several projects.
pub async fn record_created(
    conn: &mut impl Exec,
    created: &[(&ProjectId, &str)],
) -> StoreResult<()> {
    let mut by_project: Vec<(&ProjectId, Vec<&str>)> = Vec::new();
    for (project, id) in created {
        match by_project.iter_mut().find(|(p, _)| p == project) {
            Some((_, ids)) => ids.push(id),
            None => by_project.push((project, vec![id])),
        }
    }
    for (project, ids) in by_project {
        for chunk in ids.chunks(500) {
            record(&mut *conn, project, chunk, EventKind::Created, None).await?;
        }
    }
    Ok(())
}

const EVENT_COLUMNS: &str = "seq, project_id, job_id, kind, item, task, visible, at";

fn event(row: &impl SqlRow) -> StoreResult<JobEvent> {
    Ok(JobEvent {
        seq: row.int(0)?,
        project_id: row.text(1)?,
        job_id: row.text(2)?,
        kind: row.text(3)?,
        item: row.text(4)?,
        task: row.opt_text(5)?,
        visible: row.boolean(6)?,
        at: row.int(7)?,
    })
}

const AUDIT_COLUMNS: &str = "at, project_id, user_id, user_name, access_key, action, \
     resources, source, request_id, outcome, status, error_code";

fn audit(row: &impl SqlRow) -> StoreResult<AuditRecord> {
    Ok(AuditRecord {
        at: row.int(0)?,
        project_id: row.opt_text(1)?,
        user_id: row.text(2)?,
        user_name: row.text(3)?,
        access_key: row.opt_text(4)?,
        action: row.text(5)?,
        resources: super::parse_json("audit resources", &row.text(6)?)?,
        source: row.text(7)?,
        request_id: row.text(8)?,
        outcome: row.text(9)?,
        status: u16::try_from(row.int(10)?)
            .map_err(|_| StoreError::internal("an audit record with a bad status"))?,
        error_code: row.opt_text(11)?,
    })
}

/// Audit records written at most in one statement.
const AUDIT_ROWS_PER_INSERT: usize = 500;

#[async_trait]
impl<P: SqlPools> ActivityStore for P {
    async fn job_events_after(
        &self,
        project: Option<&ProjectId>,
        after: i64,
        limit: i64,
    ) -> StoreResult<Vec<JobEvent>> {
        let mut s = Statement::new(format!("SELECT {EVENT_COLUMNS} FROM job_events WHERE "));
        if let Some(project) = project {
            s.push("project_id = ")
                .push_bind(project.as_str())
                .push(" AND ");
        }
        s.push("seq > ")
            .push_bind(after)
            .push(" ORDER BY seq LIMIT ")
            .push_bind(limit);
        let rows = retry_read(|| async { self.read_pool().acquire().await?.rows(s.clone()).await })
            .await?;
        rows.iter().map(event).collect()
    }

    async fn last_job_event(&self) -> StoreResult<i64> {
        // With every event purged or erased, the sequence's position: the next event then
        // follows the cursor with no gap for the live watch to wait at.
        let handed_out = if super::is_sqlite::<P::Db>() {
            "(SELECT seq FROM sqlite_sequence WHERE name = 'job_events')"
        } else {
            "(SELECT last_value FROM pg_sequences \
              WHERE schemaname = current_schema() AND sequencename = 'job_events_seq_seq')"
        };
        let s = Statement::new(format!(
            "SELECT COALESCE((SELECT MAX(seq) FROM job_events), {handed_out}, 0)"
        ));
        let row =
            retry_read(|| async { self.read_pool().acquire().await?.row(s.clone()).await }).await?;
        match row {
            Some(row) => row.int(0),
            None => Ok(0),
        }
    }

    async fn first_job_event(&self) -> StoreResult<Option<i64>> {
        let s = Statement::new("SELECT MIN(seq) FROM job_events");
        let row =
            retry_read(|| async { self.read_pool().acquire().await?.row(s.clone()).await }).await?;
        match row {
            Some(row) => row.opt_int(0),
            None => Ok(None),
        }
    }

    async fn writers_now(&self) -> StoreResult<Option<Vec<String>>> {
        // SQLite commits one writer at a time, in `seq` order: a gap is a rollback.
        if super::is_sqlite::<P::Db>() {
            return Ok(None);
        }
        // Only those that write events: an INSERT takes its table's lock before its rows
        // take their `seq`, and keeps it until its transaction ends. (A transaction of
        // another program, or of this one writing elsewhere, holds no gap.)
        let s = Statement::new(
            "SELECT DISTINCT a.backend_xid::text FROM pg_locks l \
             JOIN pg_stat_activity a ON a.pid = l.pid \
             WHERE l.locktype = 'relation' AND l.relation = 'job_events'::regclass \
             AND l.mode = 'RowExclusiveLock' AND l.granted \
             AND a.datname = current_database() AND a.backend_xid IS NOT NULL",
        );
        let rows = self.read_pool().acquire().await?.rows(s).await?;
        rows.iter()
            .map(|r| r.text(0))
            .collect::<StoreResult<_>>()
            .map(Some)
    }

    async fn any_writing(&self, writers: &[String]) -> StoreResult<bool> {
        if writers.is_empty() {
            return Ok(false);
        }
        let mut s = Statement::new(
            "SELECT COUNT(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND backend_xid::text IN ",
        );
        s.push_tuple(writers.iter().map(Value::from));
        let row = self.read_pool().acquire().await?.row(s).await?;
        Ok(row.map(|r| r.int(0)).transpose()?.unwrap_or(0) > 0)
    }

    async fn record_audit(&self, records: &[AuditRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = super::begin_write(self.write_pool()).await?;
        for chunk in records.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut s = Statement::new(format!("INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES "));
            for (i, r) in chunk.iter().enumerate() {
                if i > 0 {
                    s.push(", ");
                }
                let resources = super::to_json(&r.resources)?;
                s.push_tuple([
                    Value::from(r.at),
                    Value::from(&r.project_id),
                    Value::from(&r.user_id),
                    Value::from(&r.user_name),
                    Value::from(&r.access_key),
                    Value::from(&r.action),
                    Value::from(resources),
                    Value::from(&r.source),
                    Value::from(&r.request_id),
                    Value::from(&r.outcome),
                    Value::from(i64::from(r.status)),
                    Value::from(&r.error_code),
                ]);
            }
            tx.run(s).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRecord>> {
        let mut s = Statement::new(format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log WHERE at >= "
        ));
        s.push_bind(filter.since_ms.unwrap_or(0));
        if let Some(until) = filter.until_ms {
            s.push(" AND at < ").push_bind(until);
        }
        if let Some(user) = &filter.user {
            s.push(" AND (user_name = ")
                .push_bind(user.as_str())
                .push(" OR user_id = ")
                .push_bind(user.as_str())
                .push(")");
        }
        if let Some(id) = &filter.user_id {
            s.push(" AND user_id = ").push_bind(id.as_str());
        }
        if let Some(action) = &filter.action {
            s.push(" AND action = ").push_bind(action.as_str());
        }
        if let Some(outcome) = &filter.outcome {
            s.push(" AND outcome = ").push_bind(outcome.as_str());
        }
        if let Some(project) = &filter.project_id {
            s.push(" AND project_id = ").push_bind(project.as_str());
        }
        s.push(" ORDER BY at DESC, id DESC LIMIT ")
            .push_bind(filter.limit);
        let rows = self.read_pool().acquire().await?.rows(s).await?;
        rows.iter().map(audit).collect()
    }

    async fn purge_activity(&self, events_before_ms: i64, audit_before_ms: i64) -> StoreResult<()> {
        let mut conn = self.write_pool().acquire().await?;
        let s = Statement::new("DELETE FROM job_events WHERE at < $1").bind(events_before_ms);
        conn.run(s).await?;
        let s = Statement::new("DELETE FROM audit_log WHERE at < $1").bind(audit_before_ms);
        conn.run(s).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Events of several jobs find each job through its (project_id, id) index: never by
    /// walking the project (a delete of two jobs in a project of a million took 50 ms so).
    #[tokio::test]
    async fn events_of_several_jobs_look_each_job_up_by_its_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.db");
        let (_store, project) = crate::store::testing::sqlite_with_servers(&path, &[]).await;
        let conn = rusqlite::Connection::open(&path).expect("connection");
        for ids in [
            &["a"][..],
            &["a", "b"],
            &["a", "b", "c", "d", "e", "f", "g", "h"],
        ] {
            let s = record_statement(&project, ids, EventKind::Deleted, None);
            let steps = crate::store::testing::sqlite_plan(&conn, &s.sql, None);
            assert!(
                steps
                    .iter()
                    .any(|step| step.contains("INDEX jobs_by_project_id (project_id=? AND id=?)")),
                "{ids:?}: {steps:?}"
            );
            assert!(
                !steps
                    .iter()
                    .any(|step| step.contains("jobs_by_create_items")),
                "{ids:?}: {steps:?}"
            );
        }
    }
}
