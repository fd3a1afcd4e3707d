//! Bulk loading of complete job rows, for the benchmark's data set: far faster than creates
//! through the API (multi-row inserts in large, non-durable transactions on SQLite; `COPY` on
//! PostgreSQL). The schema's triggers still run, so counters and the name index stay exact.
//!
//! Load only into a database nothing else uses meanwhile, migrated first ([`super::open`]).

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Connection, QueryBuilder, Sqlite};

use super::{ProjectRecord, StoreResult};

/// A job as stored, with its one task.
#[derive(Debug, Clone)]
pub struct BulkJob {
    pub project_id: String,
    pub id: String,
    pub name: String,
    pub user_name: String,
    pub description: Option<String>,
    pub job_type: String,
    pub template_id: Option<String>,
    pub status: &'static str,
    pub visible: bool,
    pub abnormal_count: i64,
    pub pending_tasks: i64,
    /// JSON array of the job's items.
    pub items: String,
    pub create_at: i64,
    pub update_at: i64,
    pub deleted_at: Option<i64>,
    pub task: BulkTask,
}

/// The task of a [`BulkJob`].
#[derive(Debug, Clone)]
pub struct BulkTask {
    pub id: String,
    pub server_id: String,
    pub server_name: String,
    pub status: &'static str,
    pub message: String,
}

/// Rows per SQLite statement: 16 parameters a row stays under its limit of 32766.
const SQLITE_ROWS_PER_STATEMENT: usize = 1000;

/// A connection loading rows into one database.
pub enum BulkLoader {
    Sqlite(SqliteConnection),
    Postgres(PgConnection),
}

impl BulkLoader {
    /// Connects to the (migrated) database at `url`.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        if super::is_postgres_url(url) {
            let mut conn =
                PgConnection::connect_with(&super::postgres::connect_options(url)?).await?;
            // Loaded rows are redone by loading again, not recovered: no need to wait for
            // each commit's flush.
            sqlx::query("SET synchronous_commit = off")
                .execute(&mut conn)
                .await?;
            return Ok(Self::Postgres(conn));
        }
        Ok(Self::Sqlite(
            super::SqliteStore::bulk_connection(url).await?,
        ))
    }

    /// Adds projects.
    pub async fn insert_projects(&mut self, projects: &[ProjectRecord]) -> StoreResult<()> {
        match self {
            Self::Sqlite(conn) => {
                let mut tx = conn.begin().await?;
                for chunk in projects.chunks(SQLITE_ROWS_PER_STATEMENT) {
                    let mut qb =
                        QueryBuilder::<Sqlite>::new("INSERT INTO projects (id, name, create_at) ");
                    qb.push_values(chunk, |mut b, p| {
                        b.push_bind(&p.id).push_bind(&p.name).push_bind(p.create_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Self::Postgres(conn) => {
                let mut text = String::new();
                for p in projects {
                    let create_at = p.create_at.to_string();
                    copy_row(&mut text, &[Some(&p.id), Some(&p.name), Some(&create_at)]);
                }
                copy_in(conn, "COPY projects (id, name, create_at) FROM STDIN", text).await?;
            }
        }
        Ok(())
    }

    /// Adds jobs and their tasks, in one transaction.
    pub async fn insert_jobs(&mut self, jobs: &[BulkJob]) -> StoreResult<()> {
        match self {
            Self::Sqlite(conn) => {
                let mut tx = conn.begin().await?;
                for chunk in jobs.chunks(SQLITE_ROWS_PER_STATEMENT) {
                    let mut qb =
                        QueryBuilder::<Sqlite>::new(format!("INSERT INTO jobs ({JOB_COLUMNS}) "));
                    qb.push_values(chunk, |mut b, j| {
                        b.push_bind(&j.project_id)
                            .push_bind(&j.id)
                            .push_bind(&j.name)
                            .push_bind(&j.user_name)
                            .push_bind(&j.description)
                            .push_bind(&j.job_type)
                            .push_bind(&j.template_id)
                            .push_bind(j.status)
                            .push_bind(j.visible)
                            .push_bind(false)
                            .push_bind(j.abnormal_count)
                            .push_bind(j.pending_tasks)
                            .push_bind(&j.items)
                            .push_bind(j.create_at)
                            .push_bind(j.update_at)
                            .push_bind(j.deleted_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                    let mut qb =
                        QueryBuilder::<Sqlite>::new(format!("INSERT INTO tasks ({TASK_COLUMNS}) "));
                    qb.push_values(chunk, |mut b, j| {
                        b.push_bind(&j.task.id)
                            .push_bind(&j.project_id)
                            .push_bind(&j.id)
                            .push_bind(0_i64)
                            .push_bind(&j.task.server_id)
                            .push_bind(&j.task.server_name)
                            .push_bind(false)
                            .push_bind(j.task.status)
                            .push_bind(&j.task.message)
                            .push_bind("{}")
                            .push_bind(j.create_at)
                            .push_bind(j.update_at);
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            Self::Postgres(conn) => {
                let mut jobs_text = String::with_capacity(jobs.len() * 256);
                let mut tasks_text = String::with_capacity(jobs.len() * 160);
                for j in jobs {
                    let bool_text = |b: bool| if b { "t" } else { "f" };
                    let (create_at, update_at) = (j.create_at.to_string(), j.update_at.to_string());
                    let (abnormal, pending) =
                        (j.abnormal_count.to_string(), j.pending_tasks.to_string());
                    let deleted = j.deleted_at.map(|d| d.to_string());
                    copy_row(
                        &mut jobs_text,
                        &[
                            Some(&j.project_id),
                            Some(&j.id),
                            Some(&j.name),
                            Some(&j.user_name),
                            j.description.as_deref(),
                            Some(&j.job_type),
                            j.template_id.as_deref(),
                            Some(j.status),
                            Some(bool_text(j.visible)),
                            Some("f"),
                            Some(&abnormal),
                            Some(&pending),
                            Some(&j.items),
                            Some(&create_at),
                            Some(&update_at),
                            deleted.as_deref(),
                        ],
                    );
                    copy_row(
                        &mut tasks_text,
                        &[
                            Some(&j.task.id),
                            Some(&j.project_id),
                            Some(&j.id),
                            Some("0"),
                            Some(&j.task.server_id),
                            Some(&j.task.server_name),
                            Some("f"),
                            Some(j.task.status),
                            Some(&j.task.message),
                            Some("{}"),
                            Some(&create_at),
                            Some(&update_at),
                        ],
                    );
                }
                let mut tx = conn.begin().await?;
                copy_in(
                    &mut tx,
                    &format!("COPY jobs ({JOB_COLUMNS}) FROM STDIN"),
                    jobs_text,
                )
                .await?;
                copy_in(
                    &mut tx,
                    &format!("COPY tasks ({TASK_COLUMNS}) FROM STDIN"),
                    tasks_text,
                )
                .await?;
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Makes the load durable. PostgreSQL also gets the vacuum and statistics its autovacuum
    /// would give a table grown this much, and a checkpoint. SQLite gets its name index
    /// merged as an idle server merges it (see `sqlite/maintenance.rs`), and is left
    /// without statistics, as a database grown through the API is (and with `STAT4`
    /// statistics, SQLite would prepare every statement with bound values again at each run).
    pub async fn finish(self) -> StoreResult<()> {
        match self {
            Self::Sqlite(mut conn) => {
                use super::sqlite::maintenance::{merge_name_indexes, LOAD_MERGE_PAGES};
                while merge_name_indexes(&mut conn, LOAD_MERGE_PAGES).await? {}
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut conn)
                    .await?;
                conn.close().await?;
            }
            Self::Postgres(mut conn) => {
                sqlx::query("VACUUM ANALYZE").execute(&mut conn).await?;
                // Written out now rather than by the next checkpoint, while the benchmark
                // measures. Only a superuser (or pg_checkpoint) may: otherwise that
                // checkpoint comes when it comes, and the floor's second measurement
                // still stands for the machine at rest.
                let _ = sqlx::query("CHECKPOINT").execute(&mut conn).await;
                conn.close().await?;
            }
        }
        Ok(())
    }
}

const JOB_COLUMNS: &str = "project_id, id, name, user_name, description, type, template_id, \
    status, visible, is_reboot, abnormal_count, pending_tasks, items, create_at, update_at, \
    deleted_at";
const TASK_COLUMNS: &str = "id, project_id, job_id, position, server_id, server_name, \
    simulated, status, message, cloud_server, create_at, update_at";

/// Appends one row in `COPY`'s text format; `None` is `NULL`.
fn copy_row(out: &mut String, values: &[Option<&str>]) {
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        let Some(value) = value else {
            out.push_str("\\N");
            continue;
        };
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
    }
    out.push('\n');
}

async fn copy_in(conn: &mut PgConnection, statement: &str, text: String) -> StoreResult<()> {
    let mut copy = conn.copy_in_raw(statement).await?;
    copy.send(text.into_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::copy_row;

    #[test]
    fn copy_rows_escape_what_the_text_format_reserves() {
        let mut out = String::new();
        copy_row(&mut out, &[Some("a\tb"), Some("c\\d"), None, Some("e\nf")]);
        assert_eq!(out, "a\\tb\tc\\\\d\t\\N\te\\nf\n");
    }
}
