//! Tests of what is PostgreSQL's own: the list connections and their settings (here), and
//! the list's statements and their plans (`plans.rs`). What every backend does is tested by
//! the conformance suite (`tests/api/store.rs`).

mod plans;

use sqlx::{Connection, Postgres, QueryBuilder, Row};

use super::list::{
    name_grams, one_plan_fits, push_count, push_counting_page, push_page, push_page_from_end, Scope,
};
use super::PgStore;
use crate::domain::filter::{ListJobsQuery, SortDir, SortKey};
use crate::domain::ProjectId;
use crate::store::list::plan::{self, Engine, Facts, ListPlan, NameSearch};
use crate::store::testing::list_query;
use crate::store::Backend;
use crate::testkit::{pg_admin_url, test_database};

/// A query and its plan on PostgreSQL, in a large project or not.
pub(super) fn planned(raw: &str, large_project: bool) -> (ListJobsQuery, ListPlan) {
    let query = list_query(raw);
    let facts = Facts {
        engine: Engine::Postgres,
        large_project,
        last_total: None,
    };
    let plan = plan::plan(&query, 1000, facts);
    (query, plan)
}

pub(super) fn by_name_index(plan: &ListPlan) -> bool {
    matches!(plan.name, Some(NameSearch::Index(..)))
}

/// Adds the jobs `select` gives (the columns of the insert below, `$1` the project) and
/// gathers the planner's statistics.
pub(super) async fn insert_analyzed(store: &PgStore, project: &ProjectId, select: &str) {
    sqlx::query(&format!(
        "INSERT INTO jobs (project_id, id, name, user_name, type, status, visible, \
         is_reboot, pending_tasks, items, create_at, update_at) {select}"
    ))
    .bind(project.as_str())
    .execute(&store.pool)
    .await
    .expect("insert jobs");
    sqlx::query("ANALYZE jobs")
        .execute(&store.pool)
        .await
        .expect("analyze");
}

/// A statement of the list.
#[derive(Debug, Clone, Copy)]
pub(super) enum Statement {
    Page,
    PageWithTotal,
    WindowCounted,
    Count,
    /// The page after `skip` read from the end, with the total from the counters.
    FromEnd,
}

/// Pushes a statement of the list after what `qb` holds.
pub(super) fn push_statement<'a>(
    qb: &mut QueryBuilder<'a, Postgres>,
    scope: Scope<'a>,
    order: (SortKey, SortDir),
    (take, skip, statement): (u64, u64, Statement),
) {
    let literal = one_plan_fits(scope.filter, order.0, scope.plan);
    match statement {
        Statement::Page => push_page(qb, scope, order, (take, skip), false, literal),
        Statement::PageWithTotal => push_page(qb, scope, order, (take, skip), true, literal),
        Statement::WindowCounted => push_counting_page(qb, scope, order, take),
        Statement::Count => push_count(qb, scope),
        Statement::FromEnd => push_page_from_end(qb, scope, order, (skip, take), literal),
    }
}

/// The plan of a page statement, as EXPLAIN writes it.
pub(super) async fn explain<'e>(
    on: impl sqlx::Executor<'e, Database = Postgres>,
    scope: Scope<'_>,
    order: (SortKey, SortDir),
    statement: (u64, u64, Statement),
) -> String {
    let mut qb = QueryBuilder::<Postgres>::new("EXPLAIN ");
    push_statement(&mut qb, scope, order, statement);
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
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
    let store = PgStore::connect(&url, 4).await.expect("connect");
    let project = ProjectId::parse("p1").expect("project");
    let unfiltered = ListJobsQuery::parse(&[], 100).expect("query");
    let pairs = [("status".to_string(), "FINISHED".to_string())];
    let by_status = ListJobsQuery::parse(&pairs, 100).expect("query");
    for round in 0..3 {
        // On the fitted connections, on the planned ones, and a ping.
        for query in [&unfiltered, &by_status] {
            let page = Backend::list_jobs(&store, &project, query, 100)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(page.total, 0);
        }
        crate::store::Backend::ping(&store)
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
}

/// A server that ends idle sessions (`idle_session_timeout`) does not fail the pages
/// read after it did.
#[tokio::test]
async fn pages_outlive_idle_session_timeouts() {
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
    let name = url
        .rsplit_once('/')
        .map(|(_, n)| n.to_string())
        .unwrap_or_default();
    let mut conn = sqlx::PgConnection::connect(&pg_admin_url())
        .await
        .expect("admin");
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
            Backend::list_jobs(&store, &project, &query, 100)
                .await
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }
    drop(store);
}

/// The name indexes move new names from their pending lists (which every search reads
/// in full) into the index by 64 kB, rather than letting them grow to 4 MB between
/// vacuums.
#[tokio::test]
async fn name_index_pending_lists_stay_small_under_creates() {
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
    let store = PgStore::connect(&url, 4).await.expect("connect");
    for index in ["jobs_name_grams", "jobs_name_trgm"] {
        let options: Vec<String> =
            sqlx::query_scalar("SELECT unnest(reloptions) FROM pg_class WHERE relname = $1")
                .bind(index)
                .fetch_all(&store.pool)
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
        .execute(&store.pool)
        .await
        .expect("insert jobs");
    }
    // The pending list's size, where the page inspector is at hand (a superuser's
    // extension that ships with PostgreSQL).
    let inspect = sqlx::query("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(&store.pool)
        .await;
    if inspect.is_ok() {
        for index in ["jobs_name_grams", "jobs_name_trgm"] {
            let pages: i64 = sqlx::query_scalar(
                "SELECT n_pending_pages FROM gin_metapage_info(get_raw_page($1, 0))",
            )
            .bind(index)
            .fetch_one(&store.pool)
            .await
            .expect("metapage");
            assert!(pages <= 8, "{index}: {pages} pending pages");
        }
    } else {
        eprintln!("pageinspect unavailable: the pending lists' sizes are not checked");
    }
    let query = list_query("name=c4ca42");
    let page = Backend::list_jobs(&store, &project, &query, 1000)
        .await
        .expect("list");
    assert!(page.total >= 1);
    drop(store);
}

/// Name searches keep their bitmaps exact up to a large table: every connection has
/// 64 MB of `work_mem`, unless the database URL sets its own.
#[tokio::test]
async fn connections_have_the_work_mem_of_name_searches_unless_the_url_sets_one() {
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
    async fn work_mem(store: &PgStore) -> Vec<String> {
        let mut on_sets = Vec::new();
        for set in [&store.fitted, &store.planned, &store.names] {
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
            .fetch_one(&store.pool)
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
}

/// PostgreSQL writes each item as serde_json does (its text cannot hold NUL).
/// The 4-grams a name search sends are those `litejobs_name_grams`, which the index holds,
/// makes of the same text: each run of four characters, once, whatever the characters.
#[tokio::test]
async fn name_grams_are_those_the_index_holds() {
    let Some(db) = test_database().await else {
        return;
    };
    let store = PgStore::connect(&db.url, 1).await.expect("connect");
    for text in [
        "c4ca42",
        "aaaaaaaa",
        "abcd",
        "ab-cd.ef_gh",
        "naïve-ünïcode",
        "x\u{1F600}yzw",
    ] {
        let mut from_postgres: Vec<String> = sqlx::query_scalar("SELECT litejobs_name_grams($1)")
            .bind(text)
            .fetch_one(&store.pool)
            .await
            .expect("grams");
        from_postgres.sort_unstable();
        assert_eq!(name_grams(text), from_postgres, "{text}");
    }
    drop(store);
}

#[tokio::test]
async fn items_written_by_postgres_are_the_bytes_serde_writes() {
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
    let store = PgStore::connect(&url, 4).await.expect("connect");
    let project = ProjectId::parse("p1").expect("project");
    crate::store::testing::add_servers(&store, &project, &["s1"]).await;
    crate::store::list::item::check_items_are_the_bytes_serde_writes(&store, &project, false).await;
    drop(store);
}

/// Of the database's client connections (the store's pool, its list connections and its
/// listener), how many are encrypted, and how many there are.
async fn encrypted(store: &PgStore) -> (i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(*) FILTER (WHERE s.ssl), COUNT(*) FROM pg_stat_activity a \
         JOIN pg_stat_ssl s USING (pid) \
         WHERE a.datname = current_database() AND a.backend_type = 'client backend'",
    )
    .fetch_one(&store.pool)
    .await
    .expect("pg_stat_ssl")
}

/// Ends every client connection to `db`'s database but the caller's (a dropped store's
/// listener waits for its next notification to notice).
async fn end_connections(db: &crate::testkit::ScratchDatabase) {
    let mut admin = sqlx::PgConnection::connect(&pg_admin_url())
        .await
        .expect("admin");
    sqlx::query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db.name())
    .execute(&mut admin)
    .await
    .expect("terminate");
}

/// TLS as the URL asks: none by default on loopback; `require`; `verify-full` against the
/// server's own certificate (Debian's, for `localhost`) as `sslrootcert`, which checks the
/// host's name too. Skipped where the server offers no TLS.
#[tokio::test]
async fn connections_use_tls_as_the_url_asks() {
    let Some(db) = test_database().await else {
        return;
    };
    let project = ProjectId::parse("p1").expect("project");
    let query = ListJobsQuery::parse(&[], 100).expect("query");
    let store = PgStore::connect(&db.url, 4).await.expect("connect");
    Backend::list_jobs(&store, &project, &query, 100)
        .await
        .expect("list");
    let (tls, all) = encrypted(&store).await;
    assert!(
        all >= 3 && tls == 0,
        "loopback without sslmode: {tls} of {all} encrypted"
    );
    let (ssl, cert): (String, String) =
        sqlx::query_as("SELECT current_setting('ssl'), current_setting('ssl_cert_file')")
            .fetch_one(&store.pool)
            .await
            .expect("settings");
    drop(store);
    end_connections(&db).await;
    if ssl != "on" {
        eprintln!("skipped: the PostgreSQL server offers no TLS");
        return;
    }
    let with = |host: &str, query: &str| {
        let mut url = reqwest::Url::parse(&db.url).expect("url");
        url.set_host(Some(host)).expect("host");
        url.set_query(Some(query));
        url.to_string()
    };
    for url in [
        with("127.0.0.1", "sslmode=require"),
        with(
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={cert}"),
        ),
    ] {
        let store = PgStore::connect(&url, 4)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        // The pool, the list's own connections and the listener alike.
        let page = Backend::list_jobs(&store, &project, &query, 100)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(page.total, 0);
        let (tls, all) = encrypted(&store).await;
        assert!(all >= 3 && tls == all, "{url}: {tls} of {all} encrypted");
        drop(store);
        end_connections(&db).await;
    }
    // Verified, a certificate must name the host: Debian's names `localhost` alone. The
    // refusal is reported at once, not tried again as an unreachable server is.
    let url = with(
        "127.0.0.1",
        &format!("sslmode=verify-full&sslrootcert={cert}"),
    );
    let options = super::connect_options(&url).expect("options");
    match super::first_connection(&options).await {
        Err(sqlx::Error::Io(e)) if !super::unreachable_yet(e.kind()) => {
            assert!(e.to_string().contains("certificate"), "{e}");
        }
        other => panic!("a certificate for another name is refused: {other:?}"),
    }
}
