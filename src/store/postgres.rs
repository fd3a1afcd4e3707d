//! The PostgreSQL backend, for replicas sharing one database.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, QueryBuilder};

use super::sql::{like_substring, lower_pattern, sql_store};
use crate::domain::JobFilter;

/// Jobs and identities in PostgreSQL; any number of servers may share it.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) read: PgPool,
    pub(crate) write: PgPool,
}

impl super::sql::Dialect for PgStore {
    type Db = sqlx::Postgres;
    const BEGIN_READ: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";
    const JSON_AGG: &'static str = "json_agg";
    const JSON_ROW: &'static str = "json_build_array";
    const PLAN_EACH_NAME_PATTERN: bool = true;

    fn jobs_source(_: &JobFilter) -> &'static str {
        "jobs"
    }

    /// `lower(name) LIKE '%…%'`, which the `jobs_name_trgm` trigram index serves.
    fn push_name_filter(qb: &mut QueryBuilder<'_, sqlx::Postgres>, pattern: &str) {
        qb.push(" AND lower(name) LIKE ")
            .push_bind(like_substring(&lower_pattern(pattern)));
    }
}

impl PgStore {
    /// Connects to `url` and migrates the database.
    pub async fn connect(url: &str) -> super::StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        // Replicas starting together migrate one at a time: sqlx takes an advisory lock.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }

    /// Creates a job: in a transaction of its own, which PostgreSQL commits together with
    /// concurrent ones.
    async fn submit_create(
        &self,
        project: &crate::domain::ProjectId,
        job: super::NewJob,
        idempotency: Option<super::IdempotencyKey>,
    ) -> super::StoreResult<crate::wire::JobDetail> {
        Self::create_job_alone(&self.write, project, &job, idempotency.as_ref()).await
    }
}

#[async_trait::async_trait]
impl super::Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn ping(&self) -> super::StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

/// The shared SQL, in a module of its own so that its imports stay there.
mod queries {
    super::sql_store!(super::PgStore, sqlx::Postgres);
}
