//! The job list on SQLite: the planner's plans (`store/list/plan.rs`) run as SQL on read
//! connections of the list's own.
//!
//! A page is a few microseconds of SQLite work, so it runs on the calling thread: first with
//! a budget of virtual-machine steps, and only when a read outgrows that budget (a short
//! `name` pattern scanning the project, say) is it run again, without a budget, on a
//! blocking thread. Each row gives its list item as SQLite wrote it, copied into the page.
//! These connections are rusqlite's, not sqlx's: sqlx runs every SQLite statement on a
//! worker thread of its own, a hand-over that costs more than the page.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::types::{Type, Value};
use rusqlite::{Connection, ErrorCode, OpenFlags};

use crate::domain::filter::{JobFilter, ListJobsQuery, SortDir, SortKey};
use crate::domain::ids::is_simple_name;
use crate::domain::ProjectId;
use crate::store::list::item::{PageRead, PageWriter};
use crate::store::list::plan::{self, Engine, Facts, ListPlan, NameIndex, NameSearch, Steps};
use crate::store::{JobPage, StoreError, StoreResult};

/// Connections kept open between reads.
const MAX_IDLE: usize = 8;
/// Reads running on blocking threads at once.
const BLOCKING_READS: usize = 4;
/// Page cache of each connection, in KiB; the operating system caches the file too.
const CACHE_KIB: i64 = 4 * 1024;
/// A read on the calling thread is interrupted after this many progress calls of
/// [`PROGRESS_PERIOD`] virtual-machine steps each (about a millisecond of work).
const INLINE_CALLS: u32 = 16;
const PROGRESS_PERIOD: i32 = 4096;
/// How long a read on a blocking thread waits for a locked database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Distinct list statements a connection keeps prepared.
const STATEMENT_CACHE: usize = 64;

/// Read-only connections to one SQLite file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    blocking: Arc<tokio::sync::Semaphore>,
    /// Steps between progress calls, and calls, of a read on the calling thread.
    budget: (i32, u32),
    /// Reads that outgrew their budget and ran on a blocking thread.
    moved: AtomicU64,
}

/// True when a read on the calling thread stopped without an answer: its budget ran out,
/// or the database was locked (the read then goes to a blocking thread, where it may wait).
fn stopped_inline(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::OperationInterrupted | ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

impl Readers {
    /// Opens the first connection to `path`, which must already hold the migrated schema.
    pub(super) fn open(path: &Path) -> StoreResult<Arc<Self>> {
        Self::with_budget(path, (PROGRESS_PERIOD, INLINE_CALLS))
    }

    fn with_budget(path: &Path, budget: (i32, u32)) -> StoreResult<Arc<Self>> {
        let readers = Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
            blocking: Arc::new(tokio::sync::Semaphore::new(BLOCKING_READS)),
            budget,
            moved: AtomicU64::new(0),
        };
        let first = readers.connect()?;
        readers.put(first);
        Ok(Arc::new(readers))
    }

    fn connect(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(&format!(
            "PRAGMA cache_size = -{CACHE_KIB}; PRAGMA query_only = ON;"
        ))?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    fn put(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `read` on an idle connection (or a new one), which is kept afterwards.
    fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.connect()?,
        };
        let outcome = read(&conn);
        self.put(conn);
        outcome
    }

    /// One page of the project's jobs matching `query`, and the exact number of matches.
    pub(super) async fn list_jobs(
        self: &Arc<Self>,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<JobPage> {
        let facts = Facts {
            engine: Engine::Sqlite,
            large_project: false,
            last_total: None,
        };
        let plan = plan::plan(query, max_page_size, facts);
        if plan.steps == Steps::Nothing {
            return Ok(JobPage::empty());
        }
        let (period, most) = self.budget;
        let inline = self.with(|conn| {
            // Never wait for a lock on the calling thread: a busy database sends the read to
            // a blocking thread too, where it waits as long as it must.
            conn.busy_timeout(Duration::ZERO)?;
            let mut calls = 0u32;
            conn.progress_handler(
                period,
                Some(move || {
                    calls += 1;
                    calls > most
                }),
            );
            let page = run(conn, project, query, &plan);
            conn.progress_handler(0, None::<fn() -> bool>);
            conn.busy_timeout(BUSY_TIMEOUT)?;
            page
        });
        match inline {
            Err(e) if stopped_inline(&e) => {}
            done => return Ok(done?),
        }
        self.moved.fetch_add(1, Ordering::Relaxed);
        let permit = self
            .blocking
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::internal("the store is closed"))?;
        let (me, project, query) = (self.clone(), project.clone(), query.clone());
        let page = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            me.with(|conn| run(conn, &project, &query, &plan))
        })
        .await
        .map_err(|e| StoreError::internal(format!("a read stopped: {e}")))?;
        Ok(page?)
    }
}

/// SQL text with `?` placeholders and the values bound to them, in order.
#[derive(Default)]
struct Sql {
    text: String,
    params: Vec<Value>,
}

impl Sql {
    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    fn bind(&mut self, value: impl Into<Value>) -> &mut Self {
        self.text.push('?');
        self.params.push(value.into());
        self
    }
}

/// Characters of a 4-gram of the name index (migration 0009).
const GRAM: usize = 4;

/// The FTS5 query finding the names that hold `pattern` case-folded through the trigram
/// index: the pattern as one phrase, which the trigram tokenizer splits into its trigrams at
/// consecutive positions (a superset of the names holding the pattern as `lower()` folds it,
/// which is checked after).
fn trigram_query(pattern: &str) -> String {
    format!("\"{}\"", pattern.replace('"', "\"\""))
}

/// The FTS5 query of the 4-gram index finding the names that hold every 4-gram of a set
/// covering `pattern` (those at 0, 4, 8, … and the last one): a superset of the names
/// holding the pattern, checked after. The planner sends only name characters here
/// (`[-_.a-zA-Z0-9]`, ASCII: byte offsets are character offsets), four or more.
fn gram_query(pattern: &str) -> String {
    debug_assert!(pattern.len() >= GRAM && is_simple_name(pattern));
    let lower = pattern.to_ascii_lowercase();
    let last = lower.len().saturating_sub(GRAM);
    let mut grams: Vec<&str> = (0..=last)
        .step_by(GRAM)
        .filter_map(|i| lower.get(i..i + GRAM))
        .collect();
    grams.extend(lower.get(last..));
    grams.sort_unstable();
    grams.dedup();
    let quoted: Vec<String> = grams.iter().map(|g| format!("\"{g}\"")).collect();
    quoted.join(" AND ")
}

/// The jobs table as a page reads it: with a name index's candidates, the planner is kept
/// from walking a sort index over the whole project.
fn jobs_source(plan: &ListPlan) -> &'static str {
    match plan.name {
        Some(NameSearch::Index(..)) => "jobs NOT INDEXED",
        _ => "jobs",
    }
}

/// Appends the filter's predicates (after `WHERE project_id = ?`). Job names only hold
/// `[-_.a-zA-Z0-9]`, so a case-insensitive match is one of ASCII-lower-cased text
/// (characters outside ASCII are left as they are, and then match nothing).
fn push_filter(sql: &mut Sql, filter: &JobFilter, name: Option<NameSearch>) {
    if let Some(id) = &filter.id {
        sql.push(" AND id = ").bind(id.clone());
    }
    if let Some(status) = filter.status {
        sql.push(" AND status = ").bind(status.as_str().to_string());
    }
    if let Some(t) = &filter.job_type {
        sql.push(" AND type = ").bind(t.clone());
    }
    if let Some(v) = filter.visible {
        sql.push(" AND visible = ").bind(v);
    }
    let Some(pattern) = &filter.name else {
        return;
    };
    // Candidates from a name index, then the exact test on each candidate's name.
    if let Some(NameSearch::Index(index, _)) = name {
        let (table, query) = match index {
            NameIndex::Grams => ("jobs_name_grams", gram_query(pattern)),
            NameIndex::Trigrams => ("jobs_name_fts", trigram_query(pattern)),
        };
        sql.push(&format!(
            " AND seq IN (SELECT rowid FROM {table} WHERE {table} MATCH "
        ))
        .bind(query)
        .push(")");
    }
    sql.push(" AND instr(lower(name), ")
        .bind(pattern.to_ascii_lowercase())
        .push(") > 0");
}

/// Appends a query of the number of the project's jobs matching the filter: from the
/// counters, unless the plan counts rows.
fn push_count(sql: &mut Sql, project: &ProjectId, filter: &JobFilter, plan: &ListPlan) {
    match plan.count.table() {
        Some(counters) => sql.push(&format!("SELECT COALESCE(SUM(n), 0) FROM {counters}")),
        None => sql.push("SELECT COUNT(*) FROM ").push(jobs_source(plan)),
    };
    sql.push(" WHERE project_id = ")
        .bind(project.as_str().to_string());
    push_filter(sql, filter, plan.name);
}

/// The number of the project's jobs matching the filter.
fn count(
    conn: &Connection,
    project: &ProjectId,
    filter: &JobFilter,
    plan: &ListPlan,
) -> rusqlite::Result<u64> {
    let mut sql = Sql::default();
    push_count(&mut sql, project, filter, plan);
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let n = stmt.query_row(rusqlite::params_from_iter(&sql.params), |row| {
        row.get::<_, i64>(0)
    });
    crate::metrics::statement(&n);
    let n = n?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// What a SQLite page reads of each job: its list item as JSON, kept in the list indexes.
const LIST_ITEM: &str = "list_item";

/// A page: `columns` of the matching jobs, `take` after `skip` in `order`.
fn page_sql(
    columns: &str,
    (project, filter, plan): (&ProjectId, &JobFilter, &ListPlan),
    order: (SortKey, SortDir),
    take: u64,
    skip: u64,
) -> Sql {
    let (col, dir) = plan::order_sql(order);
    let mut sql = Sql::default();
    sql.push("SELECT ")
        .push(columns)
        .push(" FROM ")
        .push(jobs_source(plan))
        .push(" WHERE project_id = ")
        .bind(project.as_str().to_string());
    push_filter(&mut sql, filter, plan.name);
    sql.push(&format!(" ORDER BY {col} {dir}, id {dir} LIMIT "))
        .bind(i64::try_from(take).unwrap_or(i64::MAX))
        .push(" OFFSET ")
        .bind(i64::try_from(skip).unwrap_or(i64::MAX));
    sql
}

/// The first page with its total from the counters (column 0), read by one statement.
fn first_page_sql(scope: (&ProjectId, &JobFilter, &ListPlan), order: (SortKey, SortDir)) -> Sql {
    let (project, filter, plan) = scope;
    let mut columns = Sql::default();
    columns.push("(");
    push_count(&mut columns, project, filter, plan);
    columns.push("), ").push(LIST_ITEM);
    let mut sql = page_sql(&columns.text, scope, order, plan.limit, 0);
    columns.params.append(&mut sql.params);
    sql.params = columns.params;
    sql
}

/// The first page with its total (column 0), read by one statement that finds the matching
/// jobs once for both: their keys are gathered (`MATERIALIZED`), counted, and the page's
/// items read by row id for the first of them.
fn counting_page_sql(
    (project, filter, plan): (&ProjectId, &JobFilter, &ListPlan),
    order: (SortKey, SortDir),
) -> Sql {
    let (col, dir) = plan::order_sql(order);
    let mut sql = Sql::default();
    sql.push(&format!(
        "WITH matches AS MATERIALIZED (SELECT {col}, id, seq FROM "
    ))
    .push(jobs_source(plan))
    .push(" WHERE project_id = ")
    .bind(project.as_str().to_string());
    push_filter(&mut sql, filter, plan.name);
    sql.push(&format!(
        ") SELECT (SELECT COUNT(*) FROM matches), j.{LIST_ITEM} FROM (SELECT {col}, id, seq \
         FROM matches ORDER BY {col} {dir}, id {dir} LIMIT "
    ))
    .bind(i64::try_from(plan.limit).unwrap_or(i64::MAX))
    .push(&format!(
        ") AS top JOIN jobs AS j ON j.seq = top.seq ORDER BY top.{col} {dir}, top.id {dir}"
    ));
    sql
}

/// The list item in column `i` of the row: the JSON object SQLite wrote (migration 0008).
fn item<'a>(row: &'a rusqlite::Row<'_>, i: usize) -> rusqlite::Result<&'a [u8]> {
    row.get_ref(i)?
        .as_bytes()
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(i, Type::Text, Box::new(e)))
}

/// Runs a page statement whose list item is column `first` (column 0, when `first` is 1, is
/// the total); with `reversed`, the array holds the rows in the opposite order.
fn read_page(
    conn: &Connection,
    sql: &Sql,
    first: usize,
    reversed: bool,
) -> rusqlite::Result<PageRead> {
    let mut stmt = conn.prepare_cached(&sql.text)?;
    let rows = stmt.query(rusqlite::params_from_iter(&sql.params));
    crate::metrics::statement(&rows);
    let mut rows = rows?;
    let mut page = PageWriter::new(reversed);
    let mut total = None;
    while let Some(row) = rows.next()? {
        if total.is_none() && first > 0 {
            total = Some(u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0));
        }
        page.push(item(row, first)?);
    }
    Ok(page.read(total))
}

/// A read transaction, so that a count and a page agree; ended when dropped. Its statements
/// stay prepared.
struct Snapshot<'c>(&'c Connection);

impl<'c> Snapshot<'c> {
    fn begin(conn: &'c Connection) -> rusqlite::Result<Self> {
        conn.prepare_cached("BEGIN")?.execute([])?;
        Ok(Self(conn))
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        // A read has nothing to keep or undo: either ending will do.
        let ended = self
            .0
            .prepare_cached("COMMIT")
            .and_then(|mut end| end.execute([]));
        if ended.is_err() {
            let _ = self.0.execute_batch("ROLLBACK");
        }
    }
}

/// Runs `plan`: one page and its total, read in one snapshot.
fn run(
    conn: &Connection,
    project: &ProjectId,
    query: &ListJobsQuery,
    plan: &ListPlan,
) -> rusqlite::Result<JobPage> {
    let filter = &query.filter;
    let scope = (project, filter, plan);
    let order = (query.page.sort_key, query.page.sort_dir);
    let counted = |page: PageRead| JobPage {
        total: page.total.unwrap_or(0),
        data: page.json,
    };
    match plan.steps {
        Steps::Nothing => Ok(JobPage::empty()),
        Steps::FirstPageWithTotal => Ok(counted(read_page(
            conn,
            &first_page_sql(scope, order),
            1,
            false,
        )?)),
        Steps::FirstPageCountingMatches => Ok(counted(read_page(
            conn,
            &counting_page_sql(scope, order),
            1,
            false,
        )?)),
        Steps::FirstPageThenCount => {
            let _snapshot = Snapshot::begin(conn)?;
            let sql = page_sql(LIST_ITEM, scope, order, plan.limit, 0);
            let page = read_page(conn, &sql, 0, false)?;
            let total = if page.rows < plan.limit {
                page.rows
            } else {
                count(conn, project, filter, plan)?
            };
            Ok(JobPage {
                total,
                data: page.json,
            })
        }
        // (The planner gives SQLite no `PageWithTotal`: its two statements cost no round
        // trip.)
        Steps::CountThenPage | Steps::PageWithTotal { .. } => {
            let _snapshot = Snapshot::begin(conn)?;
            let total = count(conn, project, filter, plan)?;
            let Some(w) = plan::window(order.1, query.page.offset, plan.limit, total) else {
                return Ok(JobPage {
                    total,
                    data: b"[]".to_vec(),
                });
            };
            let sql = page_sql(LIST_ITEM, scope, (order.0, w.dir), w.take, w.skip);
            let page = read_page(conn, &sql, 0, w.reversed)?;
            Ok(JobPage {
                total,
                data: page.json,
            })
        }
    }
}

#[cfg(test)]
mod tests;
