//! Scratch PostgreSQL databases: created fresh on a server for one test or one benchmark
//! run, dropped afterwards.

use anyhow::Context;
use sqlx::Connection;

/// The PostgreSQL server on which tests create their databases: `LITEJOBS_TEST_PG_URL`, or
/// the local server's `postgres` database.
pub fn pg_admin_url() -> String {
    std::env::var("LITEJOBS_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database created on a PostgreSQL server, dropped (with `FORCE`, closing its
/// connections) when this is dropped, unless kept.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// The database's URL: the server's, naming this database.
    pub url: String,
    /// The URL without its password, to show.
    pub shown: String,
    admin_url: String,
    name: String,
    keep: bool,
}

impl ScratchDatabase {
    /// Creates a database named `<prefix>_<random>` on the server of `admin_url` (a URL of
    /// an existing database there, whose user may create databases).
    pub async fn create(admin_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{prefix}_{suffix}");
        let mut conn =
            sqlx::PgConnection::connect_with(&crate::store::postgres::connect_options(admin_url)?)
                .await
                .context("cannot connect to PostgreSQL")?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create the database {name}"))?;
        let mut url = reqwest::Url::parse(admin_url).context("bad PostgreSQL URL")?;
        url.set_path(&format!("/{name}"));
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        Ok(Self {
            url: url.to_string(),
            shown: shown.to_string(),
            admin_url: admin_url.to_string(),
            name,
            keep: false,
        })
    }

    /// The database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Leaves the database in place when this is dropped.
    pub fn keep(&mut self) {
        self.keep = true;
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let admin = self.admin_url.clone();
        // A thread of its own: this may run inside an async runtime.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    if let Err(e) = sqlx::query(&sql).execute(&mut conn).await {
                        eprintln!("cannot drop a scratch database: {e}");
                    }
                }
            });
        })
        .join();
    }
}

/// A fresh database for a test on [`pg_admin_url`]'s server; `None` (with a `SKIPPED:`
/// line) when PostgreSQL cannot be reached, unless `LITEJOBS_REQUIRE_PG` is set, which makes
/// that a failure (a panic: this is for tests).
pub async fn test_database() -> Option<ScratchDatabase> {
    let admin = pg_admin_url();
    match ScratchDatabase::create(&admin, "litejobs_test").await {
        Ok(db) => Some(db),
        Err(e) if std::env::var_os("LITEJOBS_REQUIRE_PG").is_some() => {
            panic!("PostgreSQL is required (LITEJOBS_REQUIRE_PG) but unusable at {admin}: {e:#}")
        }
        Err(e) => {
            eprintln!("SKIPPED: PostgreSQL unusable at {admin} ({e:#}); set LITEJOBS_TEST_PG_URL");
            None
        }
    }
}

/// A transaction on the PostgreSQL database at `url` that has written a job event of
/// `job_id` (a `deleted` change, taking its `seq`, which it answers) and not committed yet:
/// the watch's tests of late commits and rolled-back holes.
pub async fn uncommitted_job_event(url: &str, job_id: &str) -> (sqlx::PgConnection, i64) {
    let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
    sqlx::query("BEGIN")
        .execute(&mut conn)
        .await
        .expect("begin");
    let seq: i64 = sqlx::query_scalar(
        "INSERT INTO job_events (project_id, job_id, kind, item, task, visible, at) \
         SELECT project_id, id, 'deleted', list_item, NULL, visible, update_at FROM jobs \
         WHERE id = $1 RETURNING seq",
    )
    .bind(job_id)
    .fetch_one(&mut conn)
    .await
    .expect("insert");
    (conn, seq)
}
