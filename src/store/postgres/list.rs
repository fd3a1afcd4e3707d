//! The job list on PostgreSQL: the planner's plans (`store/list/plan.rs`) as SQL.
//!
//! Every statement is built here, from the plan: the first page with its total from the
//! counters, a name search's first page counted by a window over its matches, a page then
//! its count, a later page with the counters' total read from the end the plan says, or a
//! total and then the page from the nearer end in one snapshot. Which connections run them
//! (and with which plans) is `mod.rs`'s choice.

use sqlx::postgres::{PgConnection, PgRow};
use sqlx::{Connection, Postgres, QueryBuilder, Row};

use crate::domain::filter::{JobFilter, ListJobsQuery, SortDir, SortKey};
use crate::domain::ProjectId;
use crate::store::list::item::{PageRead, PageWriter};
use crate::store::list::plan::{self, Count, ListPlan, NameIndex, NameScope, NameSearch, Steps};
use crate::store::{JobPage, StoreResult};

/// What a list statement reads: the project's jobs matching the filter, as the plan finds
/// them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scope<'a> {
    pub project: &'a ProjectId,
    pub filter: &'a JobFilter,
    pub plan: &'a ListPlan,
}

impl Scope<'_> {
    /// The name index is asked for every project's names holding the pattern, the project's
    /// kept after (see [`plan::LARGE_PROJECT`]).
    fn names_of_all(&self) -> bool {
        matches!(
            self.plan.name,
            Some(NameSearch::Index(_, NameScope::AllProjects))
        )
    }
}

/// True when one plan serves the statements of `plan` for filter `f` in the order of `key`
/// whatever their values: an `id` (one row at most, whatever else is asked), or a filter
/// whose exact predicates are answered by one index that also gives the page's order. No
/// filter but the project: the sort key's own index; `status`, or `type`, `status` and
/// `visible` together, ordered by `create_at`: `jobs_by_status_items` or
/// `jobs_by_type_items`, whose entries of one value are in that order. Otherwise more than
/// one index could serve, and a generic plan, which does not know the values, could walk
/// the newest jobs and drop those that do not match: fine for a common value, the whole
/// project for a rare one.
pub(super) fn one_plan_fits(f: &JobFilter, key: SortKey, plan: &ListPlan) -> bool {
    let by_create = key == SortKey::CreateAt;
    let status_alone = f.status.is_some() && f.job_type.is_none() && f.visible.is_none();
    let all_three = f.status.is_some() && f.job_type.is_some() && f.visible.is_some();
    f.id.is_some()
        || plan.count == Count::ProjectTotal
        || (plan.count == Count::KeyCounters && by_create && (status_alone || all_three))
}

/// Appends the filter's exact predicates (`id`, `status`, `type`, `visible`).
fn push_exact(qb: &mut QueryBuilder<'_, Postgres>, filter: &JobFilter) {
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
}

/// A `LIKE` pattern matching `text` anywhere (`\` escapes `%`, `_` and itself).
fn like_substring(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The 4-grams `litejobs_name_grams` (migration 0008) makes of `text`: each run of four
/// characters, once. Made here and sent as an array: PostgreSQL runs a SQL function of a
/// parameter anew at each execution, which cost it as much as the rest of a selective
/// search (`docs/design/job-list.md`, "Names").
pub(super) fn name_grams(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut grams: Vec<String> = chars.windows(4).map(|w| w.iter().collect()).collect();
    grams.sort_unstable();
    grams.dedup();
    grams
}

/// Appends the predicate of the names holding `pattern`, as `search` finds them. Job names
/// only hold `[-_.a-zA-Z0-9]`, so a case-insensitive match is one of ASCII-lower-cased text
/// (characters outside ASCII are left as they are, and then match nothing).
fn push_name(qb: &mut QueryBuilder<'_, Postgres>, pattern: &str, search: NameSearch) {
    let lower = pattern.to_ascii_lowercase();
    match search {
        NameSearch::Index(NameIndex::Grams, _) => {
            // The names holding all of the pattern's 4-grams (the `jobs_name_grams` index),
            // then the substring itself, in a test no other index offers to serve.
            qb.push("litejobs_name_grams(lower(name)) @> ")
                .push_bind(name_grams(&lower))
                .push(" AND strpos(lower(name), ")
                .push_bind(lower)
                .push(") > 0");
        }
        NameSearch::Index(NameIndex::Trigrams, _) => {
            // `lower(name) LIKE '%…%'`, which the `jobs_name_trgm` trigram index serves.
            qb.push("lower(name) LIKE ")
                .push_bind(like_substring(&lower));
        }
        NameSearch::Check => {
            qb.push("strpos(lower(name), ")
                .push_bind(lower)
                .push(") > 0");
        }
    }
}

/// Pushes ` FROM jobs WHERE` the project's jobs matching the filter. For a search of every
/// project's names, the names found are those of a subquery that knows no project (`OFFSET
/// 0` keeps PostgreSQL from moving the project's predicate into it, where the name index
/// would serve it), and the project's are kept after.
fn push_from<'a>(qb: &mut QueryBuilder<'a, Postgres>, scope: Scope<'a>) {
    let name = scope.filter.name.as_deref().zip(scope.plan.name);
    if let (Some((pattern, search)), true) = (name, scope.names_of_all()) {
        qb.push(
            " FROM (SELECT project_id, id, name, type, status, visible, create_at, \
             update_at, list_item FROM jobs WHERE ",
        );
        push_name(qb, pattern, search);
        qb.push(" OFFSET 0) AS jobs WHERE project_id = ")
            .push_bind(scope.project.as_str());
        push_exact(qb, scope.filter);
        return;
    }
    qb.push(" FROM jobs WHERE project_id = ")
        .push_bind(scope.project.as_str());
    push_exact(qb, scope.filter);
    if let Some((pattern, search)) = name {
        qb.push(" AND ");
        push_name(qb, pattern, search);
    }
}

/// Pushes a query of the number of the project's jobs matching the filter: from the
/// counters, unless the plan counts rows.
pub(super) fn push_count<'a>(qb: &mut QueryBuilder<'a, Postgres>, scope: Scope<'a>) {
    match scope.plan.count.table() {
        Some(counters) => {
            qb.push("SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM ")
                .push(counters)
                .push(" WHERE project_id = ")
                .push_bind(scope.project.as_str());
            push_exact(qb, scope.filter);
        }
        None => {
            qb.push("SELECT COUNT(*)");
            push_from(qb, scope);
        }
    }
}

/// Pushes a query of one page of the list: each job's `list_item` (after the total when
/// `with_total`), `take` rows after `skip` in `order`. With `literal_limits`, the limit and
/// offset are numbers in the text rather than parameters: PostgreSQL plans a parameterised
/// `LIMIT` as if a tenth of the rows were wanted, and would never settle on a statement's
/// generic plan.
pub(super) fn push_page<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    scope: Scope<'a>,
    order: (SortKey, SortDir),
    (take, skip): (u64, u64),
    with_total: bool,
    literal_limits: bool,
) {
    let (col, dir) = plan::order_sql(order);
    qb.push("SELECT ");
    if with_total {
        qb.push("(");
        push_count(qb, scope);
        qb.push("), ");
    }
    qb.push("list_item");
    push_from(qb, scope);
    // (An `id` is one job at most: nothing to order, and no plan that would walk an index
    // for its order instead of finding the id.)
    if scope.filter.id.is_none() {
        qb.push(format!(" ORDER BY {col} {dir}, id {dir}"));
    }
    qb.push(" LIMIT ");
    let (take, skip) = (
        i64::try_from(take).unwrap_or(i64::MAX),
        i64::try_from(skip).unwrap_or(i64::MAX),
    );
    if literal_limits {
        qb.push(format!("{take} OFFSET {skip}"));
    } else {
        qb.push_bind(take).push(" OFFSET ").push_bind(skip);
    }
}

/// Pushes a query of the first page (`take` rows in `order`), each job's `list_item` after
/// the number of matching jobs, counted by a window over all of them before the page is
/// taken: the matching jobs are found once for both. For a name a name index serves, whose
/// page reads every candidate to order them anyway. (A statement that gathers the keys
/// first, counts them and joins the page back is as fast for a common name, but costs
/// PostgreSQL twice the planning of a selective one.)
pub(super) fn push_counting_page<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    scope: Scope<'a>,
    order: (SortKey, SortDir),
    take: u64,
) {
    let (col, dir) = plan::order_sql(order);
    qb.push("SELECT COUNT(*) OVER (), list_item");
    push_from(qb, scope);
    qb.push(format!(" ORDER BY {col} {dir}, id {dir} LIMIT "));
    qb.push_bind(i64::try_from(take).unwrap_or(i64::MAX));
}

/// Pushes a query of the page of `limit` rows after `offset` in `order` read from the other
/// end, with the total from the counters, in one statement: the total first (read once),
/// which places the page's rows from the end ([`plan::window`]); they come in the opposite
/// order of the page's. An empty page has no row, nor its total.
pub(super) fn push_page_from_end<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    scope: Scope<'a>,
    order: (SortKey, SortDir),
    (offset, limit): (u64, u64),
    literal_limits: bool,
) {
    let (col, back) = plan::order_sql((order.0, order.1.reverse()));
    let number = |qb: &mut QueryBuilder<'a, Postgres>, n: u64| {
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        if literal_limits {
            qb.push(n.to_string());
        } else {
            qb.push("CAST(").push_bind(n).push(" AS BIGINT)");
        }
    };
    qb.push("WITH total(n) AS (");
    push_count(qb, scope);
    qb.push(") SELECT (SELECT n FROM total), list_item");
    push_from(qb, scope);
    // The page is rows `offset` to `end` = min(offset + limit, total): from the end, the
    // `end - offset` after the `total - end` last ones. (`offset + limit` is added here,
    // where it cannot overflow a `bigint`: no total is that large.)
    let last = offset.saturating_add(limit);
    qb.push(format!(
        " ORDER BY {col} {back}, id {back} LIMIT (SELECT GREATEST(LEAST("
    ));
    number(qb, last);
    qb.push(", n) - ");
    number(qb, offset);
    qb.push(", 0) FROM total) OFFSET (SELECT n - LEAST(");
    number(qb, last);
    qb.push(", n) FROM total)");
}

/// The page read from `rows`, whose list item is column `first` (column 0, when `first` is
/// 1, is the total; a row without an item holds only the total). The item is the JSON
/// object PostgreSQL stored (migration 0007), taken as the bytes it sends (UTF-8, in the
/// binary format of a prepared statement).
fn read_page(rows: &[PgRow], first: usize, reversed: bool) -> Result<PageRead, sqlx::Error> {
    let mut page = PageWriter::new(reversed);
    for row in rows {
        if let Some(item) = row.try_get_unchecked::<Option<&[u8]>, _>(first)? {
            page.push(item);
        }
    }
    let total = match rows.first() {
        Some(row) if first > 0 => Some(u64::try_from(row.try_get::<i64, _>(0)?).unwrap_or(0)),
        _ => None,
    };
    Ok(page.read(total))
}

/// Runs `plan` on `conn`: one page of the job list and its exact total, read in one
/// snapshot. Its statements are kept prepared on the connection when `keep`, else prepared
/// and planned anew; with `literal_limits`, page limits are written as numbers.
pub(super) async fn run(
    conn: &mut PgConnection,
    (project, query, plan): (&ProjectId, &ListJobsQuery, &ListPlan),
    keep: bool,
    literal_limits: bool,
) -> StoreResult<JobPage> {
    let scope = Scope {
        project,
        filter: &query.filter,
        plan,
    };
    let order = (query.page.sort_key, query.page.sort_dir);
    let counted = |page: PageRead| JobPage {
        total: page.total.unwrap_or(0),
        data: page.json,
    };
    let mut qb = QueryBuilder::<Postgres>::new("");
    match plan.steps {
        Steps::Nothing => Ok(JobPage::empty()),
        Steps::FirstPageWithTotal => {
            // One statement: one snapshot, one round trip. No row means no matching job.
            push_page(&mut qb, scope, order, (plan.limit, 0), true, literal_limits);
            let rows = counted_statement(qb.build().persistent(keep).fetch_all(&mut *conn).await)?;
            Ok(counted(read_page(&rows, 1, false)?))
        }
        Steps::FirstPageCountingMatches => {
            push_counting_page(&mut qb, scope, order, plan.limit);
            let rows = counted_statement(qb.build().persistent(keep).fetch_all(&mut *conn).await)?;
            Ok(counted(read_page(&rows, 1, false)?))
        }
        Steps::FirstPageThenCount => {
            push_page(
                &mut qb,
                scope,
                order,
                (plan.limit, 0),
                false,
                literal_limits,
            );
            let rows = counted_statement(qb.build().persistent(keep).fetch_all(&mut *conn).await)?;
            let page = read_page(&rows, 0, false)?;
            if page.rows < plan.limit {
                return Ok(JobPage {
                    total: page.rows,
                    data: page.json,
                });
            }
            // More than a page matches: the page again with its total, in one snapshot.
            let mut qb = QueryBuilder::<Postgres>::new("");
            push_page(&mut qb, scope, order, (plan.limit, 0), true, literal_limits);
            let rows = counted_statement(qb.build().persistent(keep).fetch_all(&mut *conn).await)?;
            Ok(counted(read_page(&rows, 1, false)?))
        }
        Steps::PageWithTotal { from_end } => {
            let (offset, limit) = (query.page.offset, plan.limit);
            if from_end {
                push_page_from_end(&mut qb, scope, order, (offset, limit), literal_limits);
            } else {
                let (take, skip) = (limit, offset);
                push_page(&mut qb, scope, order, (take, skip), true, literal_limits);
            }
            let rows = counted_statement(qb.build().persistent(keep).fetch_all(&mut *conn).await)?;
            if rows.is_empty() {
                // Past the last job: its total, with the (empty) page, in one snapshot.
                return count_then_page(conn, scope, query, keep, literal_limits).await;
            }
            Ok(counted(read_page(&rows, 1, from_end)?))
        }
        Steps::CountThenPage => count_then_page(conn, scope, query, keep, literal_limits).await,
    }
}

/// The total of `scope`, then the page of `query` read from the nearer end, in one
/// snapshot.
async fn count_then_page(
    conn: &mut PgConnection,
    scope: Scope<'_>,
    query: &ListJobsQuery,
    keep: bool,
    literal_limits: bool,
) -> StoreResult<JobPage> {
    let order = (query.page.sort_key, query.page.sort_dir);
    let mut tx = conn
        .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await?;
    let mut qb = QueryBuilder::<Postgres>::new("");
    push_count(&mut qb, scope);
    let total: i64 =
        counted_statement(qb.build().persistent(keep).fetch_one(&mut *tx).await)?.try_get(0)?;
    let total = u64::try_from(total).unwrap_or(0);
    let Some(w) = plan::window(order.1, query.page.offset, scope.plan.limit, total) else {
        tx.commit().await?;
        return Ok(JobPage {
            total,
            data: b"[]".to_vec(),
        });
    };
    let mut qb = QueryBuilder::<Postgres>::new("");
    push_page(
        &mut qb,
        scope,
        (order.0, w.dir),
        (w.take, w.skip),
        false,
        literal_limits,
    );
    let rows = counted_statement(qb.build().persistent(keep).fetch_all(&mut *tx).await)?;
    tx.commit().await?;
    let page = read_page(&rows, 0, w.reversed)?;
    Ok(JobPage {
        total,
        data: page.json,
    })
}

/// A statement's answer, counted.
fn counted_statement<T>(answer: Result<T, sqlx::Error>) -> Result<T, sqlx::Error> {
    crate::metrics::statement(&answer);
    answer
}
