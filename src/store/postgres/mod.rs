//! The PostgreSQL backend, for replicas sharing one database.
//!
//! - `list.rs`: the job list's statements, from the planner's plans;
//! - `connections.rs`: the list's own connection sets, and which runs which page;
//! - `options.rs`: what a database URL says, and TLS where it leaves it open;
//! - everything else is the shared SQL (`store/shared/`), on one sqlx pool.

mod connections;
mod list;
mod options;
#[cfg(test)]
mod tests;
mod wake;

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{ConnectOptions, Connection, PgPool, Postgres, QueryBuilder, Row};

use self::connections::{PageConnections, Read, TAKE_TIMEOUT};
pub use self::options::connect_options;
use super::list::plan::{self, Engine, Facts, ListPlan, NameSearch, Steps};
use super::shared::{create, impl_exec, SqlPools};
use super::wake::Wakeups;
use super::{Backend, IdempotencyKey, JobPage, NewJob, StoreError, StoreResult};
use crate::domain::filter::{JobFilter, ListJobsQuery};
use crate::domain::ProjectId;
use crate::wire::JobDetail;

impl_exec!(PgConnection, Postgres, PgRow, super::shared::as_written);

/// The PostgreSQL schema's migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");
/// Jobs and identities in PostgreSQL; any number of servers may share it.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// Connections for the list pages one plan fits whatever their values
    /// ([`list::one_plan_fits`]: no filter but the project, an `id`, or filters one index
    /// answers in the page's order): the cheap pages the SDK and consoles ask for, kept
    /// apart so that slow filtered pages cannot take every connection from them. Their
    /// statements stay prepared, and PostgreSQL settles on their generic plans by itself.
    /// None with a single connection.
    fitted: Option<Arc<PageConnections>>,
    /// Connections for the list pages that a name index serves, which run one generic plan
    /// whatever the pattern: a bitmap of the name index's candidates is the only scan they
    /// have. None with fewer than four connections.
    names: Option<Arc<PageConnections>>,
    /// Connections for the other list pages, planned for their values at each run. None
    /// with fewer than three connections.
    planned: Option<Arc<PageConnections>>,
    /// The totals of the list's filters read lately: whether a project is large
    /// ([`plan::LARGE_PROJECT`]), and which end a later page is nearer to.
    totals: Arc<LastTotals>,
    /// [`plan::LARGE_PROJECT`], but in tests.
    large_project: u64,
    wakeups: Arc<Wakeups>,
}

/// `work_mem` of the connections, unless the database URL sets one: a name search gathers
/// its candidate rows in a bitmap of the table's pages, which past `work_mem` keeps whole
/// pages instead of rows, every row of which is then checked again (see
/// `docs/design/job-list.md`).
const NAME_SEARCH_WORK_MEM: &str = "64MB";

/// How long a total read is reused to plan pages: to choose how a project's names are
/// searched, and which end a later page is read from (choices of how fast a page is read,
/// never of what it holds).
const LAST_TOTAL_TTL: Duration = Duration::from_secs(60);

/// The totals of the list's filters whose counters were read lately, by project and the
/// filter's `status`, `type` and `visible` (as a hash: two filters sharing one would only
/// be planned from each other's total).
#[derive(Default)]
struct LastTotals {
    totals: DashMap<u64, (u64, Instant)>,
    hasher: RandomState,
}

impl LastTotals {
    fn key(&self, project: &ProjectId, filter: &JobFilter) -> u64 {
        let status = filter.status.map(|s| s.as_str());
        let counted = (status, filter.job_type.as_deref(), filter.visible);
        self.hasher.hash_one((project.as_str(), counted))
    }

    /// The total of `filter` in `project` read at most [`LAST_TOTAL_TTL`] ago.
    fn get(&self, project: &ProjectId, filter: &JobFilter) -> Option<u64> {
        let entry = self.totals.get(&self.key(project, filter))?;
        let (total, read_at) = *entry;
        (read_at.elapsed() < LAST_TOTAL_TTL).then_some(total)
    }

    fn record(&self, project: &ProjectId, filter: &JobFilter, total: u64) {
        let key = self.key(project, filter);
        if let Some(mut entry) = self.totals.get_mut(&key) {
            *entry = (total, Instant::now());
            return;
        }
        if self.totals.len() >= 100_000 {
            // Totals are cheap to read again: forget them all rather than grow without end.
            self.totals.clear();
        }
        self.totals.insert(key, (total, Instant::now()));
    }
}

/// Connections to PostgreSQL a process keeps at most unless told: a quarter each for the
/// list's three kinds of page and the rest, each quarter one per core of this machine and
/// one more, so that while a page's rows are on their way to the server, PostgreSQL has
/// another page's statement to run.
pub fn default_connections() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    u32::try_from((cores + 1) * 4).unwrap_or(u32::MAX)
}

/// A connection to the database, tried again while the server cannot be reached or is
/// starting (one starting beside this one) for as long as the pool would wait, so that a
/// database that stays away is reported by its cause (`Connection refused`) rather than by
/// the pool's timeout. Other failures (a wrong password, no such database, a certificate
/// refused, a name that does not resolve) are reported at once.
async fn first_connection(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let deadline = Instant::now() + TAKE_TIMEOUT;
    let mut pause = Duration::from_millis(50);
    let mut said = false;
    loop {
        let answer = options.connect().await;
        let again = match &answer {
            Err(sqlx::Error::Io(e)) => unreachable_yet(e.kind()),
            // `cannot_connect_now`: starting up, shutting down, or recovering.
            Err(sqlx::Error::Database(db)) => db.code().as_deref() == Some("57P03"),
            _ => false,
        };
        match answer {
            Err(e) if again && Instant::now() + pause < deadline => {
                if !said {
                    tracing::warn!(error = %e, "cannot reach the database yet; trying again");
                    said = true;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            answer => return answer,
        }
    }
}

/// True for the failures of a server that is not there yet (or no longer), as opposed to one
/// that answers wrongly (a certificate refused surfaces as invalid data).
fn unreachable_yet(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        kind,
        K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::TimedOut
            | K::UnexpectedEof
            | K::HostUnreachable
            | K::NetworkUnreachable
            | K::AddrNotAvailable
    )
}

/// Migrations whose text changed after a build had applied them: the version, the checksum
/// that build recorded (SHA-384, hex), and the statements that bring its schema to today's
/// text. sqlx refuses a database whose recorded checksum differs from the file's.
const EDITED_MIGRATIONS: &[(i64, &str, &str)] = &[(
    12,
    "fc85ffb3eda5508245ff75f503a7be11d3c9e26837dffd7bb855ad53ea78f1ea\
     edcbe1d0718009eb480c2c31020f7a0e",
    "ALTER TABLE audit_log ALTER COLUMN status TYPE BIGINT",
)];

/// Brings a database that applied an earlier text of an edited migration to today's text,
/// and records today's checksum, in one transaction (a replica doing the same meanwhile
/// waits for the row, then finds nothing to do).
async fn repair_edited_migrations(conn: &mut PgConnection) -> StoreResult<()> {
    let applied: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(&mut *conn)
            .await?;
    if applied.is_none() {
        return Ok(());
    }
    for (version, recorded, change) in EDITED_MIGRATIONS {
        let Some(today) = MIGRATOR.iter().find(|m| m.version == *version) else {
            continue;
        };
        let recorded = hex::decode(recorded).map_err(|e| StoreError::internal(e.to_string()))?;
        let mut tx = conn.begin().await?;
        let found = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
        )
        .bind(today.checksum.as_ref())
        .bind(version)
        .bind(recorded)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if found > 0 {
            sqlx::raw_sql(change).execute(&mut *tx).await?;
            tracing::info!(version, "brought an earlier text of a migration to today's");
        }
        tx.commit().await?;
    }
    Ok(())
}

impl PgStore {
    /// Connects to `url` with at most `max_connections` connections, and migrates the
    /// database.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let mut options: PgConnectOptions = connect_options(url)?;
        if !options
            .get_options()
            .is_some_and(|o| o.contains("work_mem"))
        {
            options = options.options([("work_mem", NAME_SEARCH_WORK_MEM)]);
        }
        // The connections are shared between the list's three kinds of page and everything
        // else; with fewer, the pool serves some pages too.
        let max_connections = max_connections.max(1);
        let share = |from: u32| {
            if max_connections >= from {
                (max_connections / 4).max(1)
            } else {
                0
            }
        };
        let (fitted, planned, names) = (share(2), share(3), share(4));
        let rest = max_connections - fitted - planned - names;
        // The first connection migrates, then makes way for the pool. Replicas starting
        // together migrate one at a time: sqlx takes an advisory lock.
        let mut first = first_connection(&options).await?;
        repair_edited_migrations(&mut first).await?;
        MIGRATOR.run(&mut first).await?;
        first.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(rest)
            .acquire_timeout(TAKE_TIMEOUT)
            .connect_with(options.clone())
            .await?;
        let fitted = (fitted > 0).then(|| Arc::new(PageConnections::new(options.clone(), fitted)));
        let names = (names > 0).then(|| {
            Arc::new(PageConnections::new(
                options.clone().options([
                    ("plan_cache_mode", "force_generic_plan"),
                    // A bitmap of the candidates from the name index is the only scan left,
                    // on this process alone: a parallel plan's workers cost a selective
                    // search more than they could save.
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
            pool,
            fitted,
            names,
            planned,
            totals: Arc::default(),
            large_project: plan::LARGE_PROJECT,
            wakeups: wake::listen(&options).await?,
        })
    }

    /// True when `project` holds [`plan::LARGE_PROJECT`] jobs or more, as its counters said
    /// at most [`LAST_TOTAL_TTL`] ago.
    async fn is_large(&self, project: &ProjectId) -> StoreResult<bool> {
        let filter = JobFilter::default();
        if let Some(jobs) = self.totals.get(project, &filter) {
            return Ok(jobs >= self.large_project);
        }
        let all = plan::plan(&ListJobsQuery::default(), 1, self.facts(false, None));
        let mut qb = QueryBuilder::<Postgres>::new("");
        list::push_count(
            &mut qb,
            list::Scope {
                project,
                filter: &filter,
                plan: &all,
            },
        );
        let jobs: i64 = qb.build().fetch_one(&self.pool).await?.try_get(0)?;
        let jobs = u64::try_from(jobs).unwrap_or(0);
        self.totals.record(project, &filter, jobs);
        Ok(jobs >= self.large_project)
    }

    fn facts(&self, large_project: bool, last_total: Option<u64>) -> Facts {
        Facts {
            engine: Engine::Postgres,
            large_project,
            last_total,
        }
    }

    /// The plan of a page of `query` in `project`.
    async fn plan(
        &self,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<ListPlan> {
        let large =
            plan::wants_project_size(query, Engine::Postgres) && self.is_large(project).await?;
        let last_total = plan::wants_last_total(query, Engine::Postgres)
            .then(|| self.totals.get(project, &query.filter))
            .flatten();
        Ok(plan::plan(
            query,
            max_page_size,
            self.facts(large, last_total),
        ))
    }
}

impl SqlPools for PgStore {
    type Db = Postgres;
    fn read_pool(&self) -> &PgPool {
        &self.pool
    }
    fn write_pool(&self) -> &PgPool {
        &self.pool
    }
    fn events_written(&self) {
        // Other replicas hear of them through the events' NOTIFY.
        self.wakeups.events_written();
    }
}

#[async_trait]
impl Backend for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    /// One page of the job list and its exact total, read in one snapshot, on the list
    /// connections that suit its plan. Statements are kept prepared, their plans with them,
    /// except those filtering by a name off the `names` connections: planned for its
    /// pattern at each run, as a plan made for one pattern could walk the whole project for
    /// another.
    async fn list_jobs(
        &self,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<JobPage> {
        let plan = self.plan(project, query, max_page_size).await?;
        if plan.steps == Steps::Nothing {
            return Ok(JobPage::empty());
        }
        let fits = list::one_plan_fits(&query.filter, query.page.sort_key, &plan);
        let by_index = matches!(plan.name, Some(NameSearch::Index(..)));
        let read = |keep| Read::Page {
            job: (project, query, &plan),
            keep,
            literal_limits: fits,
        };
        let unnamed = query.filter.name.is_none();
        let page = match (&self.fitted, &self.names, &self.planned) {
            (Some(fitted), _, _) if fits => fitted.run(&read(true)).await,
            (_, Some(names), _) if by_index => names.run(&read(true)).await,
            (_, _, Some(planned)) => planned.run(&read(unnamed)).await,
            _ => read(unnamed).on(&mut *self.pool.acquire().await?).await,
        }?;
        if plan.count.table().is_some() {
            self.totals.record(project, &query.filter, page.total);
        }
        Ok(page)
    }

    /// Creates a job in a transaction of its own, which PostgreSQL commits together with
    /// concurrent ones.
    async fn create_job(
        &self,
        project: &ProjectId,
        job: NewJob,
        idempotency: Option<IdempotencyKey>,
    ) -> StoreResult<JobDetail> {
        let created = create::create_job_alone(self, project, &job, idempotency.as_ref()).await?;
        // Agents waiting here at once; on every replica (here too) through the tasks' NOTIFY.
        for task in &created.tasks {
            self.wakeups.wake(project.as_str(), &task.server_id);
        }
        self.wakeups.events_written();
        Ok(created)
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }

    /// One `SELECT 1`, on a connection of the list's when there are (as a page is read).
    fn pool_use(&self) -> Vec<super::PoolUse> {
        vec![super::pool_use("main", &self.pool)]
    }

    async fn readiness(&self) -> StoreResult<Option<String>> {
        crate::store::shared::unapplied_migrations(self, &MIGRATOR).await
    }

    async fn ping(&self) -> StoreResult<()> {
        match self.planned.as_ref().or(self.fitted.as_ref()) {
            Some(set) => set.run(&Read::Ping).await?,
            None => Read::Ping.on(&mut *self.pool.acquire().await?).await?,
        };
        Ok(())
    }
}
