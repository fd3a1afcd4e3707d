//! The PostgreSQL backend, for replicas sharing one database.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::page::{PageRead, PageWriter};
use super::sql::{
    any_status_type_visibility, counters, like_substring, lower_pattern, needs_row_count,
    order_column, order_dir, plan_page, push_exact_filters, sql_store, Bind,
};
use super::{JobPage, StoreError, StoreResult};
use crate::domain::filter::{JobFilter, ListJobsQuery, SortDir, SortKey};
use crate::domain::ProjectId;

/// Jobs and identities in PostgreSQL; any number of servers may share it.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) read: PgPool,
    pub(crate) write: PgPool,
    /// Connections whose prepared statements always run their generic plan: for the list
    /// pages one plan fits whatever the values ([`one_plan_fits`]), which PostgreSQL then
    /// plans once per connection instead of at every run. None with a single connection.
    generic: Option<Arc<PageConnections>>,
    /// Connections for the list pages that a name index serves ([`by_name_index`]), on
    /// generic plans too, which can only read the name index of the project. None with fewer
    /// than four connections.
    names: Option<Arc<PageConnections>>,
    /// Connections for the other list pages, planned for their values at each run. None with
    /// fewer than three connections.
    planned: Option<Arc<PageConnections>>,
    /// Projects' numbers of jobs, with when each was read: which way their names are
    /// searched ([`Jobs::names_of_all`]).
    sizes: Arc<DashMap<String, (u64, Instant)>>,
    /// [`LARGE_PROJECT`], but in tests.
    large_project: u64,
}

/// The list pages' own connections, taken and given back without a pool's round trips: a
/// sqlx pool asks the server whether a connection still answers when it lends it and again
/// when it gets it back, two round trips around each page's one. A connection is given back
/// only after its statements succeeded; one whose statement failed, or whose request went
/// away midway, is closed instead, and a new one is opened when needed.
pub(crate) struct PageConnections {
    options: PgConnectOptions,
    /// Idle connections, with when each was opened.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
}

/// True when `e` says the connection is gone (closed, reset, or ended by the server: a
/// restart, an administrator, `idle_session_timeout`), not that the statement failed.
fn is_lost_connection(e: &StoreError) -> bool {
    match e {
        StoreError::Database(sqlx::Error::Io(_) | sqlx::Error::Protocol(_)) => true,
        StoreError::Database(sqlx::Error::Database(db)) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "57P05")
        }),
        _ => false,
    }
}

/// What is read on the list's connections.
enum Read<'a> {
    /// A page: [`list_on`]'s arguments.
    Page(Jobs<'a>, &'a ListJobsQuery, u64, bool),
    /// `SELECT 1`.
    Ping,
}

impl Read<'_> {
    async fn on(&self, conn: &mut PgConnection) -> StoreResult<Option<JobPage>> {
        match self {
            Self::Page(jobs, query, max_page_size, keep) => {
                list_on(conn, *jobs, query, *max_page_size, *keep)
                    .await
                    .map(Some)
            }
            Self::Ping => {
                sqlx::query("SELECT 1").execute(conn).await?;
                Ok(None)
            }
        }
    }
}

/// Longest wait for a list connection: for one to be given back, or a new one to open (as the
/// pool's acquire timeout).
const TAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a list connection is used before it is closed and another opened (as sqlx's
/// pool does), so that no server process lives on forever.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A connection taken from [`PageConnections`]; closed when dropped, unless given back.
struct Taken<'a> {
    conn: Option<(PgConnection, Instant)>,
    from: &'a PageConnections,
    _permit: SemaphorePermit<'a>,
}

impl PageConnections {
    fn new(options: PgConnectOptions, max: u32) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max as usize),
        }
    }

    /// Runs `read` (which may be run again) on a connection of the set: an idle one, or a
    /// new one when the server ended the idle ones.
    async fn run(&self, read: &Read<'_>) -> StoreResult<Option<JobPage>> {
        let mut taken = self.take().await?;
        // On an error the connection is closed with `taken`, not given back.
        let done = match read.on(taken.conn()?).await {
            Err(e) if is_lost_connection(&e) => {
                // The server went away (restarted, say) since the connection was last used,
                // and likely took the other idle ones too.
                drop(taken);
                self.forget_idle();
                taken = self.take().await?;
                read.on(taken.conn()?).await?
            }
            done => done?,
        };
        taken.give_back();
        Ok(done)
    }

    /// Closes the idle connections.
    fn forget_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// An idle connection, or a new one; waits while all of them are lent.
    async fn take(&self) -> StoreResult<Taken<'_>> {
        let permit = tokio::time::timeout(TAKE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some((conn, opened)) if opened.elapsed() < MAX_LIFETIME => (conn, opened),
            _ => (
                tokio::time::timeout(TAKE_TIMEOUT, self.options.connect())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??,
                Instant::now(),
            ),
        };
        Ok(Taken {
            conn: Some(conn),
            from: self,
            _permit: permit,
        })
    }
}

impl Taken<'_> {
    fn conn(&mut self) -> StoreResult<&mut PgConnection> {
        self.conn
            .as_mut()
            .map(|(conn, _)| conn)
            .ok_or_else(|| StoreError::Batch("a page connection was given back".to_string()))
    }

    /// Gives the connection back, its statements done.
    fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.from
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
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

/// `work_mem` of the connections, unless the database URL sets one.
const NAME_SEARCH_WORK_MEM: &str = "64MB";

/// The length of the substrings in the `jobs_name_grams` index (migration 0008).
const NAME_GRAM: usize = 4;

/// True when a name index serves `pattern`: the 4-gram index from four characters, the
/// trigram index for three.
fn name_index_serves(pattern: &str) -> bool {
    lower_pattern(pattern).chars().count() >= 3
}

/// True when the list finds the jobs matching `filter` through a name index: a `name` that
/// one serves, and no `id` (whose one job the id's index finds). Both name indexes lead with
/// the project (migration 0010), so that one plan fits every such search: a bitmap of the
/// candidates from the name index (the project's, or every project's in a large project:
/// [`Jobs::names_of_all`]), their rows read, checked, counted and ordered. Their statements
/// run that generic plan on the `names` connections, which have no other kind of scan;
/// planning a search for its pattern had cost PostgreSQL three times what running a
/// selective one does.
fn by_name_index(filter: &JobFilter) -> bool {
    filter.id.is_none() && filter.name.as_deref().is_some_and(name_index_serves)
}

/// The jobs a list statement reads: a project's, and how a name index is asked for them.
#[derive(Debug, Clone, Copy)]
struct Jobs<'a> {
    project: &'a ProjectId,
    /// The name index is asked for the names of every project holding the pattern, and the
    /// project's are kept after: for a project with a large share of all jobs
    /// ([`LARGE_PROJECT`]), whose own entry in the index (every one of its jobs) costs more
    /// to read than the few candidates of a selective pattern in other projects.
    names_of_all: bool,
}

#[cfg(test)]
impl<'a> Jobs<'a> {
    fn of(project: &'a ProjectId) -> Self {
        Self {
            project,
            names_of_all: false,
        }
    }
}

/// Jobs in a project from which its name searches ask the name index for every project's
/// names ([`Jobs::names_of_all`]). The index hands over a project's candidates by reading
/// through its entry for the project, some 120 pages for a million jobs: a millisecond, where
/// the benchmark's selective pattern has a handful of candidates in all projects (0.05 ms).
const LARGE_PROJECT: u64 = 100_000;

/// How long a project's number of jobs is reused to choose how its names are searched (the
/// choice changes how fast a search is, never what it finds).
const PROJECT_SIZE_TTL: Duration = Duration::from_secs(60);

/// Appends the filter's exact predicates, then the name's.
fn push_filter(qb: &mut QueryBuilder<'_, Postgres>, filter: &JobFilter) {
    push_exact_filters(qb, filter);
    if let Some(pattern) = &filter.name {
        qb.push(" AND ");
        push_name(qb, pattern);
    }
}

/// Appends the predicate of the names holding `pattern`.
fn push_name(qb: &mut QueryBuilder<'_, Postgres>, pattern: &str) {
    let lower = lower_pattern(pattern);
    if lower.chars().count() >= NAME_GRAM {
        // The names holding all of the pattern's 4-grams (the `jobs_name_grams` index),
        // then the substring itself, in a test no other index offers to serve.
        qb.push("litejobs_name_grams(lower(name)) @> litejobs_name_grams(")
            .push_bind(lower.clone())
            .push(") AND strpos(lower(name), ")
            .push_bind(lower)
            .push(") > 0");
    } else {
        // `lower(name) LIKE '%…%'`, which the `jobs_name_trgm` trigram index serves.
        qb.push("lower(name) LIKE ")
            .push_bind(like_substring(&lower));
    }
}

/// Pushes ` FROM jobs WHERE` the project's jobs matching `filter`. For a search of every
/// project's names, the names found are those of a subquery that knows no project (`OFFSET
/// 0` keeps PostgreSQL from moving the project's predicate into it, where the name index
/// would serve it), and the project's are kept after.
fn push_from<'a>(qb: &mut QueryBuilder<'a, Postgres>, jobs: Jobs<'a>, filter: &JobFilter) {
    match filter.name.as_deref() {
        Some(pattern) if jobs.names_of_all => {
            qb.push(
                " FROM (SELECT project_id, id, name, type, status, visible, create_at, \
                 update_at, list_item FROM jobs WHERE ",
            );
            push_name(qb, pattern);
            qb.push(" OFFSET 0) AS jobs WHERE project_id = ")
                .push_bind(jobs.project.as_str());
            push_exact_filters(qb, filter);
        }
        _ => {
            qb.push(" FROM jobs WHERE project_id = ")
                .push_bind(jobs.project.as_str());
            push_filter(qb, filter);
        }
    }
}

/// Pushes a query of the number of the project's jobs matching `filter`: from the counters,
/// unless the filter needs the rows themselves.
fn push_count<'a>(qb: &mut QueryBuilder<'a, Postgres>, jobs: Jobs<'a>, filter: &JobFilter) {
    if needs_row_count(filter) {
        qb.push("SELECT COUNT(*)");
        push_from(qb, jobs, filter);
    } else {
        qb.push("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM ")
            .push(counters(filter))
            .push(" WHERE project_id = ")
            .push_bind(jobs.project.as_str());
        push_exact_filters(qb, filter);
    }
}

/// Pushes a query of one page of the list: each job's `list_item` (after the total when
/// `with_total`), `take` rows after `skip` in `order`.
fn push_page<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    jobs: Jobs<'a>,
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
        push_count(qb, jobs, filter);
        qb.push("), ");
    }
    qb.push("list_item");
    push_from(qb, jobs, filter);
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
    if one_plan_fits(filter) {
        // Numbers, not parameters: PostgreSQL plans a parameterised LIMIT as if a tenth of
        // the rows were wanted, and would never settle on the statement's generic plan.
        qb.push(format!("{take} OFFSET {skip}"));
    } else {
        qb.push_bind(take).push(" OFFSET ").push_bind(skip);
    }
}

/// Pushes a query of the first page of the list (`take` rows in `order`), each job's
/// `list_item` after the number of matching jobs, counted by a window over all of them
/// before the page is taken: the matching jobs are found once for both. For a `name` that a
/// name index serves, whose page reads every candidate to order them anyway, where
/// [`push_page`]'s total would look for every matching row a second time. (A statement
/// that gathers the keys first, counts them and joins the page back is as fast for a common
/// name, but costs PostgreSQL twice the planning of a selective one.)
fn push_window_counted_page<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    jobs: Jobs<'a>,
    filter: &JobFilter,
    order: (SortKey, SortDir),
    take: u64,
) {
    let (col, d) = (order_column(order.0), order_dir(order.1));
    qb.push("SELECT COUNT(*) OVER (), list_item");
    push_from(qb, jobs, filter);
    qb.push(format!(" ORDER BY {col} {d}, id {d} LIMIT "));
    qb.push_bind(i64::try_from(take).unwrap_or(i64::MAX));
}

/// True when one plan serves the filter whatever its values: no filter but the project (the
/// sort key's own index is the only one that gives the order), or an `id` (one row at most,
/// whatever else is asked). (Names a name index serves have their own plan, [`by_name_index`].)
/// PostgreSQL then runs the statement's generic plan, made once per connection, on the
/// `generic` connections. With a `status`, `type` or `visible` filter more than one index could
/// serve, and a generic plan, which does not know the value, could walk the newest jobs and
/// drop those that do not match: fine for a common value, the whole project for a rare one.
/// Those statements are planned for their values at each run.
fn one_plan_fits(filter: &JobFilter) -> bool {
    filter.id.is_some() || (filter.name.is_none() && any_status_type_visibility(filter))
}

/// The list item in column `i` of the row: the JSON object PostgreSQL stored (migration
/// 0007), taken as the bytes it sends (UTF-8, in the binary format of a prepared statement).
fn item(row: &PgRow, i: usize) -> Result<&[u8], sqlx::Error> {
    row.try_get_unchecked(i)
}

/// The page read from `rows`, whose list item is column `first` (column 0, when `first` is
/// 1, is the total).
fn read_page(rows: &[PgRow], first: usize, reversed: bool) -> Result<PageRead, sqlx::Error> {
    let mut page = PageWriter::new(reversed);
    for row in rows {
        page.push(item(row, first)?);
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
        let mut options: PgConnectOptions = url.parse()?;
        if !options
            .get_options()
            .is_some_and(|o| o.contains("work_mem"))
        {
            // A name search gathers its candidate rows in a bitmap of the table's pages, which
            // past `work_mem` keeps whole pages instead of rows: every row of those pages is
            // then checked again, its name's 4-grams computed anew (a common pattern over two
            // million jobs: 12 s at PostgreSQL's 4 MB, 0.7 s with the bitmap exact). 64 MB
            // keeps it exact up to a table of about a million pages (8 GiB). A `work_mem`
            // given in the URL's options is kept.
            options = options.options([("work_mem", NAME_SEARCH_WORK_MEM)]);
        }
        // The connections are shared between the list pages (on generic plans, the name
        // searches on theirs, and the pages planned at each run) and everything else; with
        // fewer, the pool serves some pages too.
        let max_connections = max_connections.max(1);
        let share = |from: u32| {
            if max_connections >= from {
                (max_connections / 4).max(1)
            } else {
                0
            }
        };
        let (generic, planned, names) = (share(2), share(3), share(4));
        let rest = max_connections - generic - planned - names;
        let pool = PgPoolOptions::new()
            .max_connections(rest)
            .acquire_timeout(TAKE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        // Replicas starting together migrate one at a time: sqlx takes an advisory lock.
        sqlx::migrate!("migrations/postgres").run(&pool).await?;
        let generic = (generic > 0).then(|| {
            Arc::new(PageConnections::new(
                options.clone().options([
                    ("plan_cache_mode", "force_generic_plan"),
                    // A generic plan does not know the project's size: without sorting or
                    // scanning it all, only the index that gives the page's order is left.
                    ("enable_sort", "off"),
                    ("enable_bitmapscan", "off"),
                    ("enable_seqscan", "off"),
                ]),
                generic,
            ))
        });
        let names = (names > 0).then(|| {
            Arc::new(PageConnections::new(
                options.clone().options([
                    ("plan_cache_mode", "force_generic_plan"),
                    // A bitmap of the candidates from the project's name index is the only
                    // scan left (see `by_name_index`), on this process alone: a parallel
                    // plan's workers cost a selective search more than they could save.
                    ("enable_indexscan", "off"),
                    ("enable_indexonlyscan", "off"),
                    ("enable_seqscan", "off"),
                    ("max_parallel_workers_per_gather", "0"),
                ]),
                names,
            ))
        });
        let planned =
            (planned > 0).then(|| Arc::new(PageConnections::new(options.clone(), planned)));
        Ok(Self {
            read: pool.clone(),
            write: pool,
            generic,
            names,
            planned,
            sizes: Arc::default(),
            large_project: LARGE_PROJECT,
        })
    }

    /// True when `project` holds [`LARGE_PROJECT`] jobs or more, as its counters said at
    /// most [`PROJECT_SIZE_TTL`] ago.
    async fn is_large(&self, project: &ProjectId) -> StoreResult<bool> {
        if let Some(entry) = self.sizes.get(project.as_str()) {
            let (jobs, read_at) = *entry;
            if read_at.elapsed() < PROJECT_SIZE_TTL {
                return Ok(jobs >= self.large_project);
            }
        }
        let mut qb = QueryBuilder::<Postgres>::new("");
        let all = Jobs {
            project,
            names_of_all: false,
        };
        push_count(&mut qb, all, &JobFilter::default());
        let jobs: i64 = qb.build().fetch_one(&self.read).await?.try_get(0)?;
        let jobs = u64::try_from(jobs).unwrap_or(0);
        if self.sizes.len() >= 100_000 {
            // Sizes are cheap to read again: forget them all rather than grow without end.
            self.sizes.clear();
        }
        self.sizes
            .insert(project.as_str().to_string(), (jobs, Instant::now()));
        Ok(jobs >= self.large_project)
    }

    /// One page of the job list and its exact total, read in one snapshot.
    async fn list_page(
        &self,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<JobPage> {
        let filter = &query.filter;
        let jobs = Jobs {
            project,
            names_of_all: by_name_index(filter) && self.is_large(project).await?,
        };
        // Statements are kept prepared, their plans with them, except those filtering by a
        // name off the `names` connections: planned for its pattern at each run, as a plan
        // made for one pattern could walk the whole project for another.
        let read = |keep| Read::Page(jobs, query, max_page_size, keep);
        let page = match (&self.generic, &self.names, &self.planned) {
            (Some(generic), _, _) if one_plan_fits(filter) => generic.run(&read(true)).await?,
            (_, Some(names), _) if by_name_index(filter) => names.run(&read(true)).await?,
            (_, _, Some(planned)) => planned.run(&read(filter.name.is_none())).await?,
            _ => {
                read(filter.name.is_none())
                    .on(&mut *self.read.acquire().await?)
                    .await?
            }
        };
        page.ok_or_else(|| StoreError::Batch("a page read answered no page".to_string()))
    }
}

/// One page of the job list and its exact total, read in one snapshot on `conn`; its
/// statements are kept prepared on the connection when `keep`, else prepared and planned anew.
async fn list_on(
    conn: &mut PgConnection,
    jobs: Jobs<'_>,
    query: &ListJobsQuery,
    max_page_size: u64,
    keep: bool,
) -> StoreResult<JobPage> {
    let filter = &query.filter;
    let order = (query.page.sort_key, query.page.sort_dir);
    let limit = query.page.effective_limit(max_page_size);
    let offset = query.page.offset;
    if offset == 0 && by_name_index(filter) {
        // A name index gives the candidates, all of which the page reads to order them: one
        // statement finds them once for the page and its total.
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_window_counted_page(&mut qb, jobs, filter, order, limit);
        let rows = qb.build().persistent(keep).fetch_all(&mut *conn).await?;
        let page = read_page(&rows, 1, false)?;
        return Ok(JobPage {
            total: page.total.unwrap_or(0),
            data: page.json,
        });
    }
    if offset == 0 && needs_row_count(filter) {
        // An id, or a name too short for the name indexes (whose page may walk the order's
        // index and stop at a page): when the page is not full it is the whole result, and
        // the rows need not be looked for again to count.
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_page(&mut qb, jobs, filter, order, limit, 0, false);
        let rows = qb.build().persistent(keep).fetch_all(&mut *conn).await?;
        let page = read_page(&rows, 0, false)?;
        if page.rows < limit {
            return Ok(JobPage {
                total: page.rows,
                data: page.json,
            });
        }
        // More than a page matches: the page again with its total, in one snapshot.
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_page(&mut qb, jobs, filter, order, limit, 0, true);
        let rows = qb.build().persistent(keep).fetch_all(&mut *conn).await?;
        let page = read_page(&rows, 1, false)?;
        return Ok(JobPage {
            total: page.total.unwrap_or(0),
            data: page.json,
        });
    }
    if offset == 0 {
        // The first page (what the SDK and consoles ask) with its total, in one statement
        // (one snapshot, one round trip). No row means no matching job.
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_page(&mut qb, jobs, filter, order, limit, 0, true);
        let rows = qb.build().persistent(keep).fetch_all(&mut *conn).await?;
        let page = read_page(&rows, 1, false)?;
        return Ok(JobPage {
            total: page.total.unwrap_or(0),
            data: page.json,
        });
    }
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let mut qb = QueryBuilder::<Postgres>::new("");
    push_count(&mut qb, jobs, filter);
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
            data: b"[]".to_vec(),
        });
    };
    let mut qb = QueryBuilder::<Postgres>::new("");
    push_page(
        &mut qb,
        jobs,
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

impl PgStore {
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

    /// One `SELECT 1`, on a connection of the list's when there are (as a page is read).
    async fn ping(&self) -> super::StoreResult<()> {
        match self.planned.as_ref().or(self.generic.as_ref()) {
            Some(set) => set.run(&Read::Ping).await?,
            None => Read::Ping.on(&mut *self.read.acquire().await?).await?,
        };
        Ok(())
    }
}

/// The shared SQL, in a module of its own so that its imports stay there.
mod queries {
    super::sql_store!(super::PgStore, sqlx::Postgres);
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, Postgres, QueryBuilder, Row};

    use super::{
        by_name_index, one_plan_fits, push_count, push_page, push_window_counted_page, Jobs,
        PgStore,
    };
    use crate::domain::filter::{ListJobsQuery, SortDir};
    use crate::domain::ProjectId;

    /// A fresh database on the test PostgreSQL server, or `None` (with a message) when there
    /// is none and `LITEJOBS_REQUIRE_PG` is not set.
    async fn fresh_database() -> Option<(String, String)> {
        let admin = std::env::var("LITEJOBS_TEST_PG_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string());
        let mut conn = match sqlx::PgConnection::connect(&admin).await {
            Ok(c) => c,
            Err(e) if std::env::var_os("LITEJOBS_REQUIRE_PG").is_some() => {
                panic!("PostgreSQL is required (LITEJOBS_REQUIRE_PG) but unreachable: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: PostgreSQL unreachable at {admin} ({e})");
                return None;
            }
        };
        let name = format!("litejobs_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some((format!("{base}/{name}"), admin))
    }

    /// Adds the jobs `select` gives (the columns of the insert below, `$1` the project) and
    /// gathers the planner's statistics.
    async fn insert_analyzed(store: &PgStore, project: &ProjectId, select: &str) {
        sqlx::query(&format!(
            "INSERT INTO jobs (project_id, id, name, user_name, type, status, visible, \
             is_reboot, pending_tasks, items, create_at, update_at) {select}"
        ))
        .bind(project.as_str())
        .execute(&store.write)
        .await
        .expect("insert jobs");
        sqlx::query("ANALYZE jobs")
            .execute(&store.write)
            .await
            .expect("analyze");
    }

    /// A statement of the list.
    #[derive(Debug, Clone, Copy)]
    enum Statement {
        Page,
        PageWithTotal,
        WindowCounted,
        Count,
    }

    /// Pushes a statement of the list after what `qb` holds.
    fn push_statement<'a>(
        qb: &mut QueryBuilder<'a, Postgres>,
        jobs: Jobs<'a>,
        filter: &crate::domain::filter::JobFilter,
        order: (crate::domain::filter::SortKey, SortDir),
        (take, skip, statement): (u64, u64, Statement),
    ) {
        match statement {
            Statement::Page => push_page(qb, jobs, filter, order, take, skip, false),
            Statement::PageWithTotal => push_page(qb, jobs, filter, order, take, skip, true),
            Statement::WindowCounted => push_window_counted_page(qb, jobs, filter, order, take),
            Statement::Count => push_count(qb, jobs, filter),
        }
    }

    /// The plan of a page statement, as EXPLAIN writes it.
    async fn explain<'e>(
        on: impl sqlx::Executor<'e, Database = Postgres>,
        project: &ProjectId,
        filter: &crate::domain::filter::JobFilter,
        order: (crate::domain::filter::SortKey, SortDir),
        statement: (u64, u64, Statement),
    ) -> String {
        let mut qb = QueryBuilder::<Postgres>::new("EXPLAIN ");
        push_statement(&mut qb, Jobs::of(project), filter, order, statement);
        let plan: Vec<String> = qb
            .build()
            .fetch_all(on)
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get::<String, _>(0))
            .collect();
        plan.join("\n")
    }

    /// Page connections the server ended (a restart, an administrator) are replaced: the
    /// next page is read on a new connection instead of failing.
    #[tokio::test]
    async fn pages_outlive_their_connections() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(&url, 4).await.expect("connect");
        let project = ProjectId::parse("p1").expect("project");
        let unfiltered = ListJobsQuery::parse(&[], 100).expect("query");
        let pairs = [("status".to_string(), "FINISHED".to_string())];
        let by_status = ListJobsQuery::parse(&pairs, 100).expect("query");
        for round in 0..3 {
            // On the generic-plan connections, on the others, and a ping.
            for query in [&unfiltered, &by_status] {
                let page = store
                    .list_page(&project, query, 100)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                assert_eq!(page.total, 0);
            }
            super::super::Store::ping(&store)
                .await
                .unwrap_or_else(|e| panic!("round {round}: ping: {e}"));
            // End every other connection to this database, as a restart would.
            let mut conn = sqlx::PgConnection::connect(&url).await.expect("connection");
            let ended: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid() \
                 AND application_name = '' AND backend_type = 'client backend') AS t",
            )
            .fetch_one(&mut conn)
            .await
            .expect("terminate");
            assert!(ended >= 2, "round {round}: {ended} connections ended");
        }
        drop(store);
        drop_database(&url, &admin).await;
    }

    /// A server that ends idle sessions (`idle_session_timeout`) does not fail the pages
    /// read after it did.
    #[tokio::test]
    async fn pages_outlive_idle_session_timeouts() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let name = url
            .rsplit_once('/')
            .map(|(_, n)| n.to_string())
            .unwrap_or_default();
        let mut conn = sqlx::PgConnection::connect(&admin).await.expect("admin");
        sqlx::query(&format!(
            "ALTER DATABASE {name} SET idle_session_timeout = '200ms'"
        ))
        .execute(&mut conn)
        .await
        .expect("set idle_session_timeout");
        let store = PgStore::connect(&url, 4).await.expect("connect");
        let project = ProjectId::parse("p1").expect("project");
        let pairs = [("status".to_string(), "FINISHED".to_string())];
        for query in [
            ListJobsQuery::parse(&[], 100).expect("query"),
            ListJobsQuery::parse(&pairs, 100).expect("query"),
        ] {
            for round in 0..2 {
                store
                    .list_page(&project, &query, 100)
                    .await
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
        drop(store);
        drop_database(&url, &admin).await;
    }

    /// The name indexes move new names from their pending lists (which every search reads
    /// in full) into the index by 64 kB, rather than letting them grow to 4 MB between
    /// vacuums.
    #[tokio::test]
    async fn name_index_pending_lists_stay_small_under_creates() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(&url, 4).await.expect("connect");
        for index in ["jobs_name_grams", "jobs_name_trgm"] {
            let options: Vec<String> =
                sqlx::query_scalar("SELECT unnest(reloptions) FROM pg_class WHERE relname = $1")
                    .bind(index)
                    .fetch_all(&store.write)
                    .await
                    .expect("reloptions");
            assert!(
                options.iter().any(|o| o == "gin_pending_list_limit=64"),
                "{index}: {options:?}"
            );
        }
        let project = ProjectId::parse("p1").expect("project");
        for batch in 0..30 {
            sqlx::query(
                "INSERT INTO jobs (project_id, id, name, user_name, type, status, visible, \
                 is_reboot, pending_tasks, items, create_at, update_at) \
                 SELECT $1, 'job-' || g, 'Name-' || md5(g::text), 'u', 'COMMON', 'FINISHED', \
                 TRUE, FALSE, 0, '[]', g, g FROM generate_series($2 * 100 + 1, $2 * 100 + 100) AS g",
            )
            .bind(project.as_str())
            .bind(batch)
            .execute(&store.write)
            .await
            .expect("insert jobs");
        }
        // The pending list's size, where the page inspector is at hand (a superuser's
        // extension that ships with PostgreSQL).
        let inspect = sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
            .execute(&store.write)
            .await;
        if inspect.is_ok() {
            for index in ["jobs_name_grams", "jobs_name_trgm"] {
                let pages: i64 = sqlx::query_scalar(
                    "SELECT n_pending_pages FROM gin_metapage_info(get_raw_page($1, 0))",
                )
                .bind(index)
                .fetch_one(&store.write)
                .await
                .expect("metapage");
                assert!(pages <= 8, "{index}: {pages} pending pages");
            }
        } else {
            eprintln!("pageinspect unavailable: the pending lists' sizes are not checked");
        }
        let query = crate::store::page::list_query("name=c4ca42");
        let page = store.list_page(&project, &query, 1000).await.expect("list");
        assert!(page.total >= 1);
        drop(store);
        drop_database(&url, &admin).await;
    }

    /// Name searches keep their bitmaps exact up to a large table: every connection has
    /// 64 MB of `work_mem`, unless the database URL sets its own.
    #[tokio::test]
    async fn connections_have_the_work_mem_of_name_searches_unless_the_url_sets_one() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        async fn work_mem(store: &PgStore) -> Vec<String> {
            let mut on_sets = Vec::new();
            for set in [&store.generic, &store.planned, &store.names] {
                let set = set.as_ref().expect("list connections");
                let mut taken = set.take().await.expect("take");
                let value: String = sqlx::query_scalar("SHOW work_mem")
                    .fetch_one(taken.conn().expect("conn"))
                    .await
                    .expect("show");
                taken.give_back();
                on_sets.push(value);
            }
            let on_pool: String = sqlx::query_scalar("SHOW work_mem")
                .fetch_one(&store.read)
                .await
                .expect("show");
            on_sets.insert(0, on_pool);
            on_sets
        }
        let store = PgStore::connect(&url, 6).await.expect("connect");
        assert_eq!(work_mem(&store).await, ["64MB"; 4]);
        drop(store);
        let own = format!("{url}?options=-c%20work_mem%3D8MB");
        let store = PgStore::connect(&own, 6).await.expect("connect");
        assert_eq!(work_mem(&store).await, ["8MB"; 4]);
        drop(store);
        drop_database(&url, &admin).await;
    }

    async fn drop_database(url: &str, admin: &str) {
        let name = url.rsplit_once('/').map(|(_, n)| n.to_string());
        if let (Some(name), Ok(mut conn)) = (name, sqlx::PgConnection::connect(admin).await) {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await;
        }
    }

    /// PostgreSQL writes each item as serde_json does (its text cannot hold NUL).
    #[tokio::test]
    async fn items_written_by_postgres_are_the_bytes_serde_writes() {
        use crate::store::JobStore;

        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(&url, 4).await.expect("connect");
        let project = ProjectId::parse("p1").expect("project");
        let server = crate::store::NewServer {
            id: "s1".to_string(),
            name: "s1".to_string(),
            kind: "agent".to_string(),
            sim_outcome: None,
            cloud_server: Default::default(),
            now_ms: 1,
        };
        store.upsert_server(&project, server).await.expect("server");
        crate::store::page::check_items_are_the_bytes_serde_writes(&store, &project, false).await;
        drop(store);
        drop_database(&url, &admin).await;
    }

    /// A `name` pattern of four characters or more is looked for through the 4-gram index,
    /// with its page, its count and its window-counted first page, and finds what a scan
    /// finds; a shorter one never is.
    #[tokio::test]
    async fn name_patterns_use_the_index_of_their_length() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(&url, 4).await.expect("connect");
        let project = ProjectId::parse("p1").expect("project");
        insert_analyzed(
            &store,
            &project,
            "SELECT $1, 'job-' || g, 'Name-' || md5(g::text), 'u', 'COMMON', 'FINISHED', \
             TRUE, FALSE, 0, '[]', g, g FROM generate_series(1, 20000) AS g",
        )
        .await;
        // (A three-character pattern matches too many of these names for any index to pay.)
        for (pattern, grams) in [("E-C4CA", true), ("c4ca42", true), ("4ca", false)] {
            let query = crate::store::page::list_query(&format!("name={pattern}"));
            for statement in [
                Statement::PageWithTotal,
                Statement::Page,
                Statement::WindowCounted,
            ] {
                let order = (query.page.sort_key, query.page.sort_dir);
                let plan = explain(
                    &store.write,
                    &project,
                    &query.filter,
                    order,
                    (50, 0, statement),
                )
                .await;
                assert_eq!(
                    plan.contains("jobs_name_grams"),
                    grams,
                    "{pattern}:\n{plan}"
                );
                if grams {
                    assert!(!plan.contains("Seq Scan"), "{pattern}:\n{plan}");
                    assert!(!plan.contains("jobs_name_trgm"), "{pattern}:\n{plan}");
                }
            }
            // The answer is the names holding the pattern, case-insensitively.
            let page = store.list_page(&project, &query, 1000).await.expect("list");
            let expected: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM jobs WHERE strpos(lower(name), lower($1)) > 0",
            )
            .bind(pattern)
            .fetch_one(&store.write)
            .await
            .expect("count");
            assert!(expected > 0, "{pattern}");
            assert_eq!(page.total, expected as u64, "{pattern}");
            assert_eq!(
                page.items().expect("items").len() as i64,
                expected.min(1000)
            );
        }
        drop(store);
        drop_database(&url, &admin).await;
    }

    /// A `name` matching more than a page: the first page holds the first matching jobs in
    /// the page's order, and the total counts them all (through the 4-gram index, the
    /// trigram one, and with an exact filter beside the name).
    #[tokio::test]
    async fn first_pages_of_common_names_are_the_first_matches_with_their_total() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let mut store = PgStore::connect(&url, 4).await.expect("connect");
        let project = ProjectId::parse("p1").expect("project");
        insert_analyzed(
            &store,
            &project,
            "SELECT $1, 'job-' || g, 'Name-' || md5(g::text), 'u', 'COMMON', \
             CASE WHEN g % 3 = 0 THEN 'PROCESSING' ELSE 'FINISHED' END, TRUE, FALSE, 0, '[]', \
             g, (g * 7919) % 20011 FROM generate_series(1, 3000) AS g",
        )
        .await;
        let other = ProjectId::parse("p2").expect("project");
        insert_analyzed(
            &store,
            &other,
            "SELECT $1, 'other-' || g, 'Name-' || md5(g::text), 'u', 'COMMON', 'FINISHED', \
             TRUE, FALSE, 0, '[]', g, g FROM generate_series(1, 500) AS g",
        )
        .await;
        // Searched in the project's names, then in every project's (as in a large project).
        for (large_project, pattern, status, offset) in [0, 1]
            .into_iter()
            .flat_map(|offset| [super::LARGE_PROJECT, 1].map(|large| (large, offset * 9)))
            .flat_map(|(large, offset)| {
                [
                    ("NAME-", None),
                    ("ame-a", None),
                    ("4ca", None),
                    ("name-", Some("PROCESSING")),
                    // Too short for the name indexes: the page first, then with its count.
                    ("e-", None),
                    ("a", Some("PROCESSING")),
                ]
                .map(|(pattern, status)| (large, pattern, status, offset))
            })
        {
            store.large_project = large_project;
            store.sizes.clear();
            for (key, dir) in [
                ("create_at", "DESC"),
                ("create_at", "ASC"),
                ("update_at", "DESC"),
                ("name", "ASC"),
            ] {
                let mut raw = format!(
                    "name={pattern}&limit=7&offset={offset}&sort_key={key}&sort_dir={}",
                    dir.to_lowercase()
                );
                if let Some(status) = status {
                    raw.push_str(&format!("&status={status}"));
                }
                let query = crate::store::page::list_query(&raw);
                let page = store.list_page(&project, &query, 1000).await.expect("list");
                let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
                    "SELECT id, COUNT(*) OVER () FROM jobs WHERE project_id = $1 \
                     AND strpos(lower(name), lower($2)) > 0 AND ($3::text IS NULL OR status = $3) \
                     ORDER BY {key} {dir}, id {dir}"
                ))
                .bind(project.as_str())
                .bind(pattern)
                .bind(status)
                .fetch_all(&store.write)
                .await
                .expect("scan");
                assert!(rows.len() > 7, "{raw}: {} rows", rows.len());
                assert_eq!(page.total, rows.len() as u64, "{raw} ({large_project})");
                let ids: Vec<String> = page
                    .items()
                    .expect("items")
                    .into_iter()
                    .map(|item| item.id)
                    .collect();
                let expected: Vec<String> = rows
                    .into_iter()
                    .skip(offset)
                    .take(7)
                    .map(|(id, _)| id)
                    .collect();
                assert_eq!(ids, expected, "{raw} ({large_project})");
            }
        }
        drop(store);
        drop_database(&url, &admin).await;
    }

    /// On the connections that keep generic plans, every page statement that is sent there
    /// is read from the one index that gives the page's order and answers its conditions (or
    /// finds its id): no sort, no scan of the table or of a bitmap, no row read to be
    /// dropped, whatever the project's size (a generic plan does not know it).
    #[tokio::test]
    async fn pages_on_generic_plans_walk_an_index_in_their_order() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(&url, 4).await.expect("connect");
        let project = ProjectId::parse("0123456789abcdef0123456789abcdef").expect("project");
        // Jobs in this project and another, with their statistics, as a planner sees them.
        insert_analyzed(
            &store,
            &project,
            "SELECT CASE WHEN g % 10 = 0 THEN 'other' ELSE $1 END, 'job-' || g, 'name-' || g, \
             'u', CASE WHEN g % 3 = 0 THEN 'COMMON' ELSE 'LOG_COLLECT' END, \
             CASE WHEN g % 50 = 0 THEN 'PROCESSING' ELSE 'FINISHED' END, g % 12 <> 0, FALSE, \
             0, '[]', g, g FROM generate_series(1, 5000) AS g",
        )
        .await;
        let mut checked = 0;
        let pages = store.generic.clone().expect("page connections");
        let mut taken = pages.take().await.expect("a page connection");
        // The filter, and the index a page must be read from when one plan fits it.
        for (raw, index) in [
            ("", Some("jobs_by_create_items")),
            ("sort_key=update_at&sort_dir=asc", Some("jobs_by_update")),
            ("sort_key=name", Some("jobs_by_name")),
            ("id=job-7", Some("jobs_by_project_id")),
            (
                "id=job-7&status=FINISHED&sort_key=name",
                Some("jobs_by_project_id"),
            ),
            ("id=job-7&name=name-7", Some("jobs_by_project_id")),
            ("status=DELETED", None),
            ("type=LOG_COLLECT&status=FINISHED&visible=false", None),
            ("status=PROCESSING&sort_key=update_at", None),
            ("visible=true", None),
            ("name=abc", None),
        ] {
            let query = crate::store::page::list_query(raw);
            let (filter, key) = (&query.filter, query.page.sort_key);
            assert_eq!(one_plan_fits(filter), index.is_some(), "{raw}");
            let Some(index) = index else {
                continue;
            };
            for (dir, take, skip, statement) in [
                (SortDir::Desc, 50, 0, Statement::PageWithTotal),
                (SortDir::Asc, 1000, 0, Statement::Page),
                (SortDir::Desc, 50, 500_000, Statement::Page),
            ] {
                let plan = explain(
                    taken.conn().expect("a connection"),
                    &project,
                    filter,
                    (key, dir),
                    (take, skip, statement),
                )
                .await;
                assert!(
                    plan.contains(&format!(" using {index} on jobs")),
                    "{raw}:\n{plan}"
                );
                for bad in ["Sort", "Seq Scan", "Bitmap"] {
                    assert!(!plan.contains(bad), "{raw}: {bad} in\n{plan}");
                }
                // Rows read to be dropped: only the one row an id finds may be.
                assert!(
                    index == "jobs_by_project_id" || !plan.contains("Filter"),
                    "{raw}:\n{plan}"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, 3 * 6);
        taken.give_back();
        drop(store);
        drop_database(&url, &admin).await;
    }

    /// The plan PostgreSQL runs for `statement` on `conn` as a prepared statement executed
    /// with `args` (SQL literals, one per parameter), with its row counts when `analyze`:
    /// the generic plan, on connections that force one.
    async fn prepared_plan(
        conn: &mut sqlx::PgConnection,
        statement: &str,
        args: &[&str],
        analyze: bool,
    ) -> String {
        sqlx::query(&format!("PREPARE litejobs_plan AS {statement}"))
            .persistent(false)
            .execute(&mut *conn)
            .await
            .expect("prepare");
        let plan: Vec<String> = sqlx::query(&format!(
            "EXPLAIN (ANALYZE {analyze}) EXECUTE litejobs_plan({})",
            args.join(", ")
        ))
        .persistent(false)
        .fetch_all(&mut *conn)
        .await
        .expect("explain")
        .iter()
        .map(|row| row.get::<String, _>(0))
        .collect();
        sqlx::query("DEALLOCATE litejobs_plan")
            .persistent(false)
            .execute(&mut *conn)
            .await
            .expect("deallocate");
        plan.join("\n")
    }

    /// Checks the generic plan of `statement` for `raw` on the names connection `conn`: one
    /// bitmap scan, of `index`, whose condition holds the project when `project_in_index`
    /// (and never does otherwise), and no other kind of scan.
    async fn check_name_plan(
        conn: &mut sqlx::PgConnection,
        jobs: Jobs<'_>,
        raw: &str,
        statement: (u64, u64, Statement),
        args: &[&str],
        index: &str,
    ) {
        let query = crate::store::page::list_query(raw);
        assert!(by_name_index(&query.filter), "{raw}");
        let order = (query.page.sort_key, query.page.sort_dir);
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_statement(&mut qb, jobs, &query.filter, order, statement);
        let plan = prepared_plan(conn, qb.sql(), args, false).await;
        let scan = format!("Bitmap Index Scan on {index}");
        assert_eq!(
            plan.matches("Bitmap Index Scan").count(),
            1,
            "{raw}:\n{plan}"
        );
        assert!(plan.contains(&scan), "{raw}:\n{plan}");
        let cond = plan.split(&scan).nth(1).unwrap_or_default();
        if jobs.names_of_all {
            assert!(!cond.contains("project_id"), "{raw}:\n{plan}");
        } else {
            assert!(
                cond.contains("Index Cond: ((project_id = $1) AND"),
                "{raw}:\n{plan}"
            );
        }
        for bad in [
            "BitmapAnd",
            "Seq Scan",
            "Index Scan using",
            "Index Only",
            "Gather",
        ] {
            assert!(!plan.contains(bad), "{raw}: {bad} in\n{plan}");
        }
    }

    /// On the `names` connections every statement of a name search runs one generic plan: a
    /// bitmap of the project's candidates from the name index of the pattern's length, and
    /// nothing else, whatever the filters beside the name, the order and the page; and the
    /// index gives only the project's candidates, not those of another project holding the
    /// pattern (which the name indexes before migration 0010 gave too).
    #[tokio::test]
    async fn name_searches_run_one_generic_plan_on_the_projects_name_index() {
        let Some((url, admin)) = fresh_database().await else {
            return;
        };
        let store = PgStore::connect(&url, 4).await.expect("connect");
        let (big, small) = (
            ProjectId::parse("p1").expect("project"),
            ProjectId::parse("p2").expect("project"),
        );
        insert_analyzed(
            &store,
            &big,
            "SELECT $1, 'job-' || g, 'Name-' || md5(g::text), 'u', \
             CASE WHEN g % 3 = 0 THEN 'COMMON' ELSE 'LOG_COLLECT' END, \
             CASE WHEN g % 7 = 0 THEN 'PROCESSING' ELSE 'FINISHED' END, g % 5 <> 0, FALSE, \
             0, '[]', g, g FROM generate_series(1, 6000) AS g",
        )
        .await;
        insert_analyzed(
            &store,
            &small,
            "SELECT $1, 'small-' || g, 'Other-' || md5(g::text), 'u', 'COMMON', 'FINISHED', \
             TRUE, FALSE, 0, '[]', g, g FROM generate_series(1, 40) AS g",
        )
        .await;
        let names = store.names.clone().expect("name search connections");
        let mut taken = names.take().await.expect("a name search connection");
        let (grams, trigrams) = ("jobs_name_grams", "jobs_name_trgm");
        // The query, a statement of its search, its parameters (the project, exact filters,
        // the pattern, the page), and the index it reads.
        let p = "'p1'";
        for (raw, statement, args, index) in [
            (
                "name=c4ca42",
                (50, 0, Statement::WindowCounted),
                vec![p, "'c4ca42'", "'c4ca42'", "50"],
                grams,
            ),
            (
                "name=NAME-&status=FINISHED&sort_key=name",
                (50, 0, Statement::WindowCounted),
                vec![p, "'FINISHED'", "'name-'", "'name-'", "50"],
                grams,
            ),
            (
                "name=4ca&sort_key=update_at&sort_dir=asc",
                (20, 0, Statement::WindowCounted),
                vec![p, "'%4ca%'", "20"],
                trigrams,
            ),
            (
                "name=ame-a&type=COMMON&status=FINISHED&visible=true",
                (50, 100, Statement::Page),
                vec![
                    p,
                    "'FINISHED'",
                    "'COMMON'",
                    "TRUE",
                    "'ame-a'",
                    "'ame-a'",
                    "50",
                    "100",
                ],
                grams,
            ),
            (
                "name=ame-a&status=PROCESSING",
                (0, 0, Statement::Count),
                vec![p, "'PROCESSING'", "'ame-a'", "'ame-a'"],
                grams,
            ),
            (
                "name=e-a",
                (0, 0, Statement::Count),
                vec![p, "'%e-a%'"],
                trigrams,
            ),
        ] {
            let conn = taken.conn().expect("conn");
            check_name_plan(conn, Jobs::of(&big), raw, statement, &args, index).await;
        }
        // Searched in every project's names (a large project), the index is asked for the
        // pattern alone, its parameters first, and the project's rows kept after.
        let all = Jobs {
            project: &big,
            names_of_all: true,
        };
        for (raw, statement, args, index) in [
            (
                "name=c4ca42",
                (50, 0, Statement::WindowCounted),
                vec!["'c4ca42'", "'c4ca42'", p, "50"],
                grams,
            ),
            (
                "name=4ca&sort_key=name",
                (20, 0, Statement::WindowCounted),
                vec!["'%4ca%'", p, "20"],
                trigrams,
            ),
            (
                "name=ame-a&status=PROCESSING",
                (0, 0, Statement::Count),
                vec!["'ame-a'", "'ame-a'", p, "'PROCESSING'"],
                grams,
            ),
            (
                "name=ame-a&visible=false",
                (50, 100, Statement::Page),
                vec!["'ame-a'", "'ame-a'", p, "FALSE", "50", "100"],
                grams,
            ),
        ] {
            let conn = taken.conn().expect("conn");
            check_name_plan(conn, all, raw, statement, &args, index).await;
        }
        assert!(!by_name_index(
            &crate::store::page::list_query("name=c4ca42&id=job-1").filter
        ));
        assert!(!by_name_index(
            &crate::store::page::list_query("name=c4").filter
        ));
        taken.give_back();
        // A pattern that every name of the big project holds, looked for in the small one:
        // the index hands over the small project's candidates alone.
        for (pattern, args) in [
            ("name-", vec!["'p2'", "'name-'", "'name-'", "50"]),
            ("ame", vec!["'p2'", "'%ame%'", "50"]),
            ("other-", vec!["'p2'", "'other-'", "'other-'", "50"]),
        ] {
            let query = crate::store::page::list_query(&format!("name={pattern}"));
            let order = (query.page.sort_key, query.page.sort_dir);
            let mut qb = QueryBuilder::<Postgres>::new("");
            push_window_counted_page(&mut qb, Jobs::of(&small), &query.filter, order, 50);
            let mut taken = names.take().await.expect("a name search connection");
            let plan = prepared_plan(taken.conn().expect("conn"), qb.sql(), &args, true).await;
            taken.give_back();
            let expected = if pattern == "other-" { 40 } else { 0 };
            let index_rows = plan
                .lines()
                .find(|line| line.contains("Bitmap Index Scan"))
                .and_then(|line| line.split("rows=").nth(2))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok());
            assert_eq!(index_rows, Some(expected), "{pattern}:\n{plan}");
            let page = store.list_page(&small, &query, 1000).await.expect("list");
            assert_eq!(page.total, expected, "{pattern}");
        }
        drop(store);
        drop_database(&url, &admin).await;
    }
}
