//! The PostgreSQL backend, for replicas sharing one database.

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};

use super::page::{ItemRef, PageRead, PageWriter};
use super::sql::{
    like_substring, lower_pattern, needs_row_count, order_column, order_dir, plan_page,
    push_exact_filters, sql_store, Bind, LIST_COLUMNS,
};
use super::{JobPage, StoreResult};
use crate::domain::filter::{JobFilter, ListJobsQuery, SortDir, SortKey};
use crate::domain::ProjectId;

/// Jobs and identities in PostgreSQL; any number of servers may share it.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) read: PgPool,
    pub(crate) write: PgPool,
    /// Connections whose prepared statements always run their generic plan: for the list
    /// pages one plan fits whatever the values ([`one_plan_fits`]), which PostgreSQL then
    /// plans once per connection instead of at every run.
    pages: PgPool,
}

impl super::sql::Dialect for PgStore {
    type Db = sqlx::Postgres;
    const JSON_AGG: &'static str = "json_agg";
    const JSON_ROW: &'static str = "json_build_array";
}

impl Bind for QueryBuilder<'_, Postgres> {
    fn sql(&mut self, text: &str) {
        self.push(text);
    }

    fn bind_text(&mut self, value: String) {
        self.push_bind(value);
    }

    fn bind_bool(&mut self, value: bool) {
        self.push_bind(value);
    }
}

/// Appends the filter's predicates (after `WHERE project_id = …`).
fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, filter: &JobFilter) {
    push_exact_filters(qb, filter);
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

/// Pushes a query of one page of the list: [`LIST_COLUMNS`] (after the total when
/// `with_total`), `take` rows after `skip` in `order`.
fn push_page<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    project: &'a ProjectId,
    filter: &JobFilter,
    order: (SortKey, SortDir),
    take: u64,
    skip: u64,
    with_total: bool,
) {
    let (col, d) = (order_column(order.0), order_dir(order.1));
    qb.push("SELECT ");
    if with_total {
        qb.push("(");
        push_count(qb, project, filter);
        qb.push("), ");
    }
    qb.push(format!("{LIST_COLUMNS} FROM jobs WHERE project_id = "));
    qb.push_bind(project.as_str());
    push_filter(qb, filter);
    if filter.id.is_none() {
        qb.push(format!(" ORDER BY {col} {d}, id {d}"));
    }
    // (An `id` is one job at most: nothing to order, and no plan that would walk an index
    // for its order instead of finding the id.)
    qb.push(" LIMIT ");
    let (take, skip) = (
        i64::try_from(take).unwrap_or(i64::MAX),
        i64::try_from(skip).unwrap_or(i64::MAX),
    );
    if one_plan_fits(filter, order.0) {
        // Numbers, not parameters: PostgreSQL plans a parameterised LIMIT as if a tenth of
        // the rows were wanted, and would never settle on the statement's generic plan.
        qb.push(format!("{take} OFFSET {skip}"));
    } else {
        qb.push_bind(take).push(" OFFSET ").push_bind(skip);
    }
}

/// True when one plan serves the filter whatever its values: no filter, an `id` (one row at
/// most), or exact filters leading an index that also gives the order. PostgreSQL then runs
/// the statement's generic plan, made once per connection, on the `pages` connections, where
/// only such an index can be chosen. Otherwise a plan fit for one value (walk the newest
/// jobs and keep the few that match, say) could read the whole project for another, and each
/// run is planned for its values.
fn one_plan_fits(filter: &JobFilter, key: SortKey) -> bool {
    if filter.name.is_some() {
        return false;
    }
    if filter.id.is_some() {
        return true;
    }
    match (
        filter.status.is_some(),
        filter.job_type.is_some(),
        filter.visible.is_some(),
    ) {
        (false, false, false) => true,
        // `jobs_by_status` and `jobs_by_type` end with (create_at, id).
        (true, false, false) | (true, true, true) => key == SortKey::CreateAt,
        _ => false,
    }
}

/// The list item in the row's columns from `first` on ([`LIST_COLUMNS`]).
fn item(row: &PgRow, first: usize) -> Result<ItemRef<'_>, sqlx::Error> {
    Ok(ItemRef {
        id: row.try_get(first)?,
        name: row.try_get(first + 1)?,
        user_name: row.try_get(first + 2)?,
        description: row.try_get(first + 3)?,
        job_type: row.try_get(first + 4)?,
        status: row.try_get(first + 5)?,
        abnormal_count: row.try_get(first + 6)?,
        create_at: row.try_get(first + 7)?,
        update_at: row.try_get(first + 8)?,
    })
}

/// The page read from `rows`, whose list columns start at `first` (column 0, when `first` is
/// 1, is the total).
fn read_page(rows: &[PgRow], first: usize, reversed: bool) -> Result<PageRead, sqlx::Error> {
    let mut page = PageWriter::new(reversed);
    for row in rows {
        page.push(&item(row, first)?);
    }
    let total = match rows.first() {
        Some(row) if first > 0 => Some(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0)),
        _ => None,
    };
    Ok(page.read(total))
}

impl PgStore {
    /// Connects to `url` with at most `max_connections` connections, and migrates the
    /// database.
    pub async fn connect(url: &str, max_connections: u32) -> super::StoreResult<Self> {
        let options: PgConnectOptions = url.parse()?;
        // The connections are shared between the pages and everything else; with a single
        // one, pages are planned at each run like the rest.
        let max_connections = max_connections.max(1);
        let pages = max_connections.div_ceil(2);
        let rest = if max_connections > 1 {
            max_connections - pages
        } else {
            1
        };
        let pool = PgPoolOptions::new()
            .max_connections(rest)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await?;
        // Replicas starting together migrate one at a time: sqlx takes an advisory lock.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let pages = if max_connections > 1 {
            PgPoolOptions::new()
                .max_connections(pages)
                .acquire_timeout(Duration::from_secs(10))
                .connect_lazy_with(options.options([
                    ("plan_cache_mode", "force_generic_plan"),
                    // A generic plan does not know the project's size: without sorting or
                    // scanning it all, only the index that gives the page's order is left.
                    ("enable_sort", "off"),
                    ("enable_bitmapscan", "off"),
                    ("enable_seqscan", "off"),
                ]))
        } else {
            pool.clone()
        };
        Ok(Self {
            read: pool.clone(),
            write: pool,
            pages,
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
        let pool = if one_plan_fits(filter, order.0) {
            &self.pages
        } else {
            &self.read
        };
        if offset == 0 && needs_row_count(filter) {
            // A selective filter (an id, a name) usually matches less than a page: the page
            // is then the whole result, and the rows need not be looked for again to count.
            let mut qb = QueryBuilder::<Postgres>::new("");
            push_page(&mut qb, project, filter, order, limit, 0, false);
            let rows = qb.build().persistent(keep).fetch_all(pool).await?;
            let page = read_page(&rows, 0, false)?;
            if page.rows < limit {
                return Ok(JobPage {
                    total: page.rows,
                    data: page.json,
                });
            }
        }
        if offset == 0 {
            // The first page (what the SDK and consoles ask) with its total, in one statement
            // (one snapshot, one round trip). No row means no matching job.
            let mut qb = QueryBuilder::<Postgres>::new("");
            push_page(&mut qb, project, filter, order, limit, 0, true);
            let rows = qb.build().persistent(keep).fetch_all(pool).await?;
            let page = read_page(&rows, 1, false)?;
            return Ok(JobPage {
                total: page.total.unwrap_or(0),
                data: page.json,
            });
        }
        let mut tx = pool
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
            &mut qb,
            project,
            filter,
            (order.0, plan.dir),
            plan.take,
            plan.skip,
            false,
        );
        let rows = qb.build().persistent(keep).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let page = read_page(&rows, 0, plan.reversed)?;
        Ok(JobPage {
            total,
            data: page.json,
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
