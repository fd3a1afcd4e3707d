//! The PostgreSQL backend, for replicas sharing one database.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::sql::{
    like_substring, lower_pattern, needs_row_count, order_column, order_dir, plan_page, sql_store,
    LIST_COLUMNS,
};
use super::{JobPage, StoreResult};
use crate::domain::filter::{JobFilter, ListJobsQuery, SortDir, SortKey};
use crate::domain::ProjectId;

/// Jobs and identities in PostgreSQL; any number of servers may share it.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) read: PgPool,
    pub(crate) write: PgPool,
}

impl super::sql::Dialect for PgStore {
    type Db = sqlx::Postgres;
    const JSON_AGG: &'static str = "json_agg";
    const JSON_ROW: &'static str = "json_build_array";
}

/// A job list item as a JSON object (`JobListItem`; `description` only when set).
const ITEM_OBJECT: &str = "json_strip_nulls(json_build_object('id', id, 'name', name, \
    'user_name', user_name, 'description', description, 'type', type, 'status', status, \
    'abnormal_count', abnormal_count, 'create_at', create_at, 'update_at', update_at))";

/// Appends the filter's predicates (after `WHERE project_id = …`).
fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, filter: &JobFilter) {
    if let Some(id) = &filter.id {
        qb.push(" AND id = ").push_bind(id.clone());
    }
    if let Some(status) = filter.status {
        qb.push(" AND status = ").push_bind(status.as_str());
    }
    if let Some(t) = &filter.job_type {
        qb.push(" AND type = ").push_bind(t.clone());
    }
    if let Some(v) = filter.visible {
        qb.push(" AND visible = ").push_bind(v);
    }
    if let Some(pattern) = &filter.name {
        // `lower(name) LIKE '%…%'`, which the `jobs_name_trgm` trigram index serves.
        qb.push(" AND lower(name) LIKE ")
            .push_bind(like_substring(&lower_pattern(pattern)));
    }
}

/// Pushes a query of the number of the project's jobs matching `filter`: from the counters,
/// unless the filter needs the rows themselves.
fn push_count<'a>(qb: &mut QueryBuilder<'a, Postgres>, project: &'a ProjectId, filter: &JobFilter) {
    if needs_row_count(filter) {
        qb.push("SELECT COUNT(*) FROM jobs WHERE project_id = ");
    } else {
        qb.push("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM job_counts WHERE project_id = ");
    }
    qb.push_bind(project.as_str());
    push_filter(qb, filter);
}

/// Pushes a query of one page of the list as a JSON array of list items (one value: one
/// round trip whatever the page's size), or NULL when the page is empty; `with_rows` adds a
/// column with the number of items. The rows are read in `read_dir` and the array holds
/// them ordered by `order`.
#[allow(clippy::too_many_arguments)]
fn push_page<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    project: &'a ProjectId,
    filter: &JobFilter,
    order: (SortKey, SortDir),
    read_dir: SortDir,
    take: u64,
    skip: u64,
    with_rows: bool,
) {
    let col = order_column(order.0);
    let (d, r) = (order_dir(order.1), order_dir(read_dir));
    let rows = if with_rows { ", COUNT(*)" } else { "" };
    qb.push(format!(
        "SELECT CAST(json_agg({ITEM_OBJECT} ORDER BY {col} {d}, id {d}) AS TEXT){rows} \
         FROM (SELECT {LIST_COLUMNS} FROM jobs WHERE project_id = "
    ));
    qb.push_bind(project.as_str());
    push_filter(qb, filter);
    qb.push(format!(" ORDER BY {col} {r}, id {r} LIMIT "));
    qb.push_bind(i64::try_from(take).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .push_bind(i64::try_from(skip).unwrap_or(i64::MAX))
        .push(") AS page");
}

fn page_json(raw: Option<String>) -> String {
    raw.unwrap_or_else(|| "[]".to_string())
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

    /// One page of the job list and its exact total, read in one snapshot.
    async fn list_page(
        &self,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<JobPage> {
        let filter = &query.filter;
        let order = (query.page.sort_key, query.page.sort_dir);
        let limit = query.page.effective_limit(max_page_size);
        let offset = query.page.offset;
        // A statement filtering by name is planned for its pattern: a generic plan cannot
        // tell a selective pattern from a common one, and walks the whole project.
        let keep = filter.name.is_none();
        if offset == 0 && limit > 0 && needs_row_count(filter) {
            // A selective filter (an id, a name) usually matches less than a page: the page
            // is then the whole result, and the rows need not be looked for again to count.
            let mut qb = QueryBuilder::<Postgres>::new("");
            push_page(&mut qb, project, filter, order, order.1, limit, 0, true);
            let row = qb.build().persistent(keep).fetch_one(&self.read).await?;
            let n = u64::try_from(row.try_get::<i64, _>(1)?).unwrap_or(0);
            if n < limit {
                return Ok(JobPage {
                    total: n,
                    data: page_json(row.try_get(0)?),
                });
            }
        }
        if offset == 0 {
            // The first page (what the SDK and consoles ask) with its total in one statement,
            // so in one snapshot and one round trip.
            let mut qb = QueryBuilder::<Postgres>::new("SELECT (");
            push_count(&mut qb, project, filter);
            qb.push("), (");
            push_page(&mut qb, project, filter, order, order.1, limit, 0, false);
            qb.push(")");
            let row = qb.build().persistent(keep).fetch_one(&self.read).await?;
            let total = u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0);
            return Ok(JobPage {
                total,
                data: page_json(row.try_get(1)?),
            });
        }
        let mut tx = self
            .read
            .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .await?;
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_count(&mut qb, project, filter);
        let total: i64 = qb
            .build()
            .persistent(keep)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let total = u64::try_from(total).unwrap_or(0);
        let Some(plan) = plan_page(order.1, offset, limit, total) else {
            tx.commit().await?;
            return Ok(JobPage {
                total,
                data: "[]".to_string(),
            });
        };
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_page(
            &mut qb, project, filter, order, plan.dir, plan.take, plan.skip, false,
        );
        let data: Option<String> = qb
            .build()
            .persistent(keep)
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        tx.commit().await?;
        Ok(JobPage {
            total,
            data: page_json(data),
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
