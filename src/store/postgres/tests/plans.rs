//! The list's statements on PostgreSQL: which index each reads, and what it finds.

use sqlx::{Postgres, QueryBuilder, Row};

use super::{by_name_index, explain, insert_analyzed, planned, push_statement, Statement};
use crate::domain::filter::SortDir;
use crate::domain::ProjectId;
use crate::store::list::plan;
use crate::store::postgres::list::{one_plan_fits, push_counting_page, Scope};
use crate::store::postgres::PgStore;
use crate::store::testing::list_query;
use crate::store::Backend;
use crate::testkit::test_database;

/// A `name` pattern of four characters or more is looked for through the 4-gram index,
/// with its page, its count and its window-counted first page, and finds what a scan
/// finds; a shorter one never is.
#[tokio::test]
async fn name_patterns_use_the_index_of_their_length() {
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
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
        let (query, list_plan) = planned(&format!("name={pattern}"), false);
        let scope = Scope {
            project: &project,
            filter: &query.filter,
            plan: &list_plan,
        };
        for statement in [
            Statement::PageWithTotal,
            Statement::Page,
            Statement::WindowCounted,
        ] {
            let order = (query.page.sort_key, query.page.sort_dir);
            let plan = explain(&store.pool, scope, order, (50, 0, statement)).await;
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
        let page = Backend::list_jobs(&store, &project, &query, 1000)
            .await
            .expect("list");
        let expected: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE strpos(lower(name), lower($1)) > 0",
        )
        .bind(pattern)
        .fetch_one(&store.pool)
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
}

/// A `name` matching more than a page: the first page holds the first matching jobs in
/// the page's order, and the total counts them all (through the 4-gram index, the
/// trigram one, and with an exact filter beside the name).
#[tokio::test]
async fn first_pages_of_common_names_are_the_first_matches_with_their_total() {
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
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
        .flat_map(|offset| [plan::LARGE_PROJECT, 1].map(|large| (large, offset * 9)))
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
        store.totals.totals.clear();
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
            let query = list_query(&raw);
            let page = Backend::list_jobs(&store, &project, &query, 1000)
                .await
                .expect("list");
            let rows: Vec<(String, i64)> = sqlx::query_as(&format!(
                "SELECT id, COUNT(*) OVER () FROM jobs WHERE project_id = $1 \
                 AND strpos(lower(name), lower($2)) > 0 AND ($3::text IS NULL OR status = $3) \
                 ORDER BY {key} {dir}, id {dir}"
            ))
            .bind(project.as_str())
            .bind(pattern)
            .bind(status)
            .fetch_all(&store.pool)
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
}

/// A later page is placed by the total read with it: whatever total of its filter the
/// store read last (none, an old one, one of another size), every page holds the jobs at
/// its offset, and a page past the last job is empty with the exact total.
#[tokio::test]
async fn later_pages_are_exact_whatever_total_was_read_last() {
    let Some(db) = test_database().await else {
        return;
    };
    let store = PgStore::connect(&db.url, 4).await.expect("connect");
    let project = ProjectId::parse("p1").expect("project");
    insert_analyzed(
        &store,
        &project,
        "SELECT $1, 'job-' || g, 'name-' || g, 'u', 'COMMON', \
         CASE WHEN g % 3 = 0 THEN 'PROCESSING' ELSE 'FINISHED' END, TRUE, FALSE, 0, '[]', \
         g / 2, g FROM generate_series(1, 30) AS g",
    )
    .await;
    let ids = |page: crate::store::JobPage| -> Vec<String> {
        let items = page.items().expect("items");
        items.into_iter().map(|item| item.id).collect()
    };
    for filter in ["sort_dir=desc", "status=FINISHED&sort_dir=asc"] {
        let whole = Backend::list_jobs(&store, &project, &list_query(filter), 1000)
            .await
            .expect("list");
        let total = whole.total;
        let whole = ids(whole);
        assert_eq!(whole.len() as u64, total, "{filter}");
        let query = list_query(filter);
        for last in [
            None,
            Some(0),
            Some(1),
            Some(total / 2),
            Some(total),
            Some(10_000),
        ] {
            for offset in 1..=whole.len() + 1 {
                let raw = format!("{filter}&limit=4&offset={offset}");
                match last {
                    Some(last) => store.totals.record(&project, &query.filter, last),
                    None => store.totals.totals.clear(),
                }
                let page = Backend::list_jobs(&store, &project, &list_query(&raw), 1000)
                    .await
                    .expect("list");
                assert_eq!(page.total, total, "{raw} ({last:?})");
                let expected: Vec<String> = whole.iter().skip(offset).take(4).cloned().collect();
                assert_eq!(ids(page), expected, "{raw} ({last:?})");
            }
        }
    }
    drop(store);
}

/// Every page statement sent to the `fitted` connections (no filter but the project, an
/// `id`, or filters one index answers in the page's order) runs, as the generic plan
/// PostgreSQL settles on, from the one index that gives the page's order and answers its
/// conditions (or finds its id): no sort of the matching jobs, no scan of the table or of a
/// bitmap, no row read to be dropped.
#[tokio::test]
async fn fitted_pages_walk_the_index_of_their_order() {
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
    let store = PgStore::connect(&url, 4).await.expect("connect");
    let project = ProjectId::parse("0123456789abcdef0123456789abcdef").expect("project");
    // Jobs in this project and another, with their statistics, as a planner sees them.
    insert_analyzed(
        &store,
        &project,
        "SELECT CASE WHEN g % 10 = 0 THEN 'other' ELSE $1 END, 'job-' || g, 'name-' || g, \
         'u', CASE WHEN g % 3 = 0 THEN 'COMMON' ELSE 'LOG_COLLECT' END, \
         CASE WHEN g % 50 = 0 THEN 'PROCESSING' ELSE 'FINISHED' END, g % 12 <> 0, FALSE, \
         0, '[]', g, g FROM generate_series(1, 50000) AS g",
    )
    .await;
    let mut checked = 0;
    let pages = store.fitted.clone().expect("page connections");
    let mut taken = pages.take().await.expect("a page connection");
    sqlx::query("SET plan_cache_mode = force_generic_plan")
        .execute(taken.conn().expect("a connection"))
        .await
        .expect("set");
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
        ("status=DELETED", Some("jobs_by_status_items")),
        (
            "type=LOG_COLLECT&status=FINISHED&visible=false",
            Some("jobs_by_type_items"),
        ),
        ("status=PROCESSING&sort_key=update_at", None),
        ("status=FINISHED&visible=true", None),
        ("type=COMMON&status=FINISHED", None),
        ("visible=true", None),
        ("name=abc", None),
    ] {
        let (query, list_plan) = planned(raw, false);
        let (filter, key) = (&query.filter, query.page.sort_key);
        let fits = one_plan_fits(filter, key, &list_plan) && !by_name_index(&list_plan);
        assert_eq!(fits, index.is_some(), "{raw}");
        let scope = Scope {
            project: &project,
            filter,
            plan: &list_plan,
        };
        let Some(index) = index else {
            continue;
        };
        // The statement's parameters: the project, the exact filters and the name checked,
        // for each time the statement reads the jobs or their counters.
        let mut values = vec![format!("'{}'", project.as_str())];
        values.extend(filter.id.iter().map(|id| format!("'{id}'")));
        values.extend(filter.status.iter().map(|s| format!("'{}'", s.as_str())));
        values.extend(filter.job_type.iter().map(|t| format!("'{t}'")));
        values.extend(filter.visible.iter().map(|v| v.to_string()));
        values.extend(
            filter
                .name
                .iter()
                .map(|n| format!("'{}'", n.to_lowercase())),
        );
        let later = if filter.id.is_some() {
            vec![]
        } else {
            vec![
                (SortDir::Desc, 50, 200, Statement::PageWithTotal, 2),
                (SortDir::Asc, 50, 200, Statement::FromEnd, 2),
            ]
        };
        for (dir, take, skip, statement, reads) in [
            (SortDir::Desc, 50, 0, Statement::PageWithTotal, 2),
            (SortDir::Asc, 1000, 0, Statement::Page, 1),
            (SortDir::Desc, 50, 200, Statement::Page, 1),
        ]
        .into_iter()
        .chain(later)
        {
            let mut qb = QueryBuilder::<Postgres>::new("");
            push_statement(&mut qb, scope, (key, dir), (take, skip, statement));
            let args: Vec<&str> = (0..reads)
                .flat_map(|_| values.iter().map(String::as_str))
                .collect();
            let conn = taken.conn().expect("a connection");
            let plan = prepared_plan(conn, qb.sql(), &args, false).await;
            assert!(
                plan.contains(&format!(" using {index} on jobs")),
                "{raw}:\n{plan}"
            );
            // (The counters' table is tiny: any scan of it will do.)
            for bad in ["Seq Scan on jobs", "Bitmap Heap Scan on jobs"] {
                assert!(!plan.contains(bad), "{raw}: {bad} in\n{plan}");
            }
            assert!(!plan.contains("Sort"), "{raw}:\n{plan}");
            // Rows read to be dropped: only the one row an id finds may be.
            let dropping = plan.lines().any(|l| l.contains("Filter"));
            assert!(index == "jobs_by_project_id" || !dropping, "{raw}:\n{plan}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3 * 3 + 5 * 5);
    taken.give_back();
    drop(store);
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
    (project, names_of_all): (&ProjectId, bool),
    raw: &str,
    statement: (u64, u64, Statement),
    args: &[&str],
    index: &str,
) {
    let (query, list_plan) = planned(raw, names_of_all);
    assert!(by_name_index(&list_plan), "{raw}");
    let order = (query.page.sort_key, query.page.sort_dir);
    let scope = Scope {
        project,
        filter: &query.filter,
        plan: &list_plan,
    };
    let mut qb = QueryBuilder::<Postgres>::new("");
    push_statement(&mut qb, scope, order, statement);
    let plan = prepared_plan(conn, qb.sql(), args, false).await;
    let scan = format!("Bitmap Index Scan on {index}");
    assert_eq!(
        plan.matches("Bitmap Index Scan").count(),
        1,
        "{raw}:\n{plan}"
    );
    assert!(plan.contains(&scan), "{raw}:\n{plan}");
    let cond = plan.split(&scan).nth(1).unwrap_or_default();
    if names_of_all {
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
    let Some(db) = test_database().await else {
        return;
    };
    let url = db.url.clone();
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
            vec![p, "'{4ca4,c4ca,ca42}'", "'c4ca42'", "50"],
            grams,
        ),
        (
            "name=NAME-&status=FINISHED&sort_key=name",
            (50, 0, Statement::WindowCounted),
            vec![p, "'FINISHED'", "'{ame-,name}'", "'name-'", "50"],
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
                "'{ame-,me-a}'",
                "'ame-a'",
                "50",
                "100",
            ],
            grams,
        ),
        (
            "name=ame-a&status=PROCESSING",
            (0, 0, Statement::Count),
            vec![p, "'PROCESSING'", "'{ame-,me-a}'", "'ame-a'"],
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
        check_name_plan(conn, (&big, false), raw, statement, &args, index).await;
    }
    // Searched in every project's names (a large project), the index is asked for the
    // pattern alone, its parameters first, and the project's rows kept after.
    for (raw, statement, args, index) in [
        (
            "name=c4ca42",
            (50, 0, Statement::WindowCounted),
            vec!["'{4ca4,c4ca,ca42}'", "'c4ca42'", p, "50"],
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
            vec!["'{ame-,me-a}'", "'ame-a'", p, "'PROCESSING'"],
            grams,
        ),
        (
            "name=ame-a&visible=false",
            (50, 100, Statement::Page),
            vec!["'{ame-,me-a}'", "'ame-a'", p, "FALSE", "50", "100"],
            grams,
        ),
    ] {
        let conn = taken.conn().expect("conn");
        check_name_plan(conn, (&big, true), raw, statement, &args, index).await;
    }
    assert!(!by_name_index(&planned("name=c4ca42&id=job-1", false).1));
    assert!(!by_name_index(&planned("name=c4", false).1));
    taken.give_back();
    // A pattern that every name of the big project holds, looked for in the small one:
    // the index hands over the small project's candidates alone.
    for (pattern, args) in [
        ("name-", vec!["'p2'", "'{ame-,name}'", "'name-'", "50"]),
        ("ame", vec!["'p2'", "'%ame%'", "50"]),
        (
            "other-",
            vec!["'p2'", "'{her-,othe,ther}'", "'other-'", "50"],
        ),
    ] {
        let (query, list_plan) = planned(&format!("name={pattern}"), false);
        let order = (query.page.sort_key, query.page.sort_dir);
        let scope = Scope {
            project: &small,
            filter: &query.filter,
            plan: &list_plan,
        };
        let mut qb = QueryBuilder::<Postgres>::new("");
        push_counting_page(&mut qb, scope, order, 50);
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
        let page = Backend::list_jobs(&store, &small, &query, 1000)
            .await
            .expect("list");
        assert_eq!(page.total, expected, "{pattern}");
    }
    drop(store);
}
