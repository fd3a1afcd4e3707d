//! Tests of the SQLite list: its statements' plans, the budget of reads on the calling
//! thread, and the bytes of its pages.

use std::sync::atomic::Ordering;

use super::{first_page_sql, gram_query, page_sql, trigram_query, Readers, LIST_ITEM};
use crate::domain::filter::{SortDir, SortKey};
use crate::store::list::plan::{plan, Engine, Facts};
use crate::store::testing::{list_query as query, new_job, sqlite_with_servers};
use crate::store::Backend;

const FACTS: Facts = Facts {
    engine: Engine::Sqlite,
    large_project: false,
    last_total: None,
};

#[tokio::test]
async fn reads_that_outgrow_their_budget_run_again_on_a_blocking_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let (store, project) = sqlite_with_servers(&path, &["s1"]).await;
    for n in 0..30 {
        let mut job = new_job(&format!("name-{n:02}"), &["s1"]);
        job.id = format!("job-{n:02}");
        job.description = (n % 2 == 0).then(|| "d".to_string());
        job.now_ms = n;
        store.create_job(&project, job, None).await.expect("create");
    }
    let roomy = Readers::open(&path).expect("readers");
    let tight = Readers::with_budget(&path, (1, 0)).expect("readers");
    for raw in [
        "",
        "limit=5",
        "limit=5&offset=27&sort_dir=asc",
        "name=ME-1&limit=3",
        "name=e-&limit=50",
        "id=job-07",
    ] {
        let query = query(raw);
        let inline = roomy
            .list_jobs(&project, &query, 1000)
            .await
            .expect("inline");
        let moved = tight
            .list_jobs(&project, &query, 1000)
            .await
            .expect("moved");
        assert_eq!(inline, moved, "{raw}");
        assert!(inline.total > 0, "{raw}");
        assert_eq!(inline.items().expect("items").len() as u64, {
            let limit = query.page.limit.unwrap_or(1000);
            limit.min(inline.total - query.page.offset.min(inline.total))
        });
    }
    assert_eq!(roomy.moved.load(Ordering::Relaxed), 0);
    assert_eq!(tight.moved.load(Ordering::Relaxed), 6);
}

/// SQLite writes each item as serde_json does (NUL included, which SQLite text holds).
#[tokio::test]
async fn items_written_by_sqlite_are_the_bytes_serde_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, project) = sqlite_with_servers(&dir.path().join("t.db"), &["s1"]).await;
    crate::store::list::item::check_items_are_the_bytes_serde_writes(&store, &project, true).await;
}

/// Pages of the common list orders and filters, first or further, read the list index
/// alone: no column of the page comes from the table.
#[tokio::test]
async fn common_pages_read_their_items_from_the_list_index_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let (_store, project) = sqlite_with_servers(&path, &[]).await;
    let conn = rusqlite::Connection::open(&path).expect("connection");
    let table: i64 = conn
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'",
            [],
            |row| row.get(0),
        )
        .expect("the jobs table");
    for (raw, index) in [
        ("limit=50", "jobs_by_create_items"),
        ("limit=50&status=FINISHED", "jobs_by_status_items"),
        (
            "limit=50&type=COMMON&status=DELETED&visible=false",
            "jobs_by_type_items",
        ),
    ] {
        let query = query(raw);
        let plan = plan(&query, 1000, FACTS);
        let scope = (&project, &query.filter, &plan);
        for dir in [SortDir::Desc, SortDir::Asc] {
            let order = (SortKey::CreateAt, dir);
            for sql in [
                first_page_sql(scope, order),
                page_sql(LIST_ITEM, scope, order, 50, 1000),
            ] {
                let plan = crate::store::testing::sqlite_plan(&conn, &sql.text, Some(&sql.params));
                assert!(
                    plan.iter()
                        .any(|step| step.contains(&format!("INDEX {index} "))),
                    "{raw}: {plan:?}"
                );
                let mut program = conn
                    .prepare(&format!("EXPLAIN {}", sql.text))
                    .expect("program");
                let ops: Vec<(String, i64, i64)> = program
                    .query_map(rusqlite::params_from_iter(&sql.params), |row| {
                        Ok((row.get(1)?, row.get(2)?, row.get(3)?))
                    })
                    .expect("ops")
                    .collect::<Result<_, _>>()
                    .expect("ops");
                let table_cursors: Vec<i64> = ops
                    .iter()
                    .filter(|(op, _, root)| op == "OpenRead" && *root == table)
                    .map(|(_, cursor, _)| *cursor)
                    .collect();
                assert!(
                    !ops.iter()
                        .any(|(op, cursor, _)| op == "Column" && table_cursors.contains(cursor)),
                    "{raw}: a column read from the table: {ops:?}"
                );
            }
        }
    }
}

#[test]
fn three_character_patterns_are_asked_as_one_quoted_phrase() {
    assert_eq!(trigram_query("AbC-1"), "\"AbC-1\"");
    assert_eq!(trigram_query("x\"yz"), "\"x\"\"yz\"");
    assert_eq!(trigram_query("é🙂ü"), "\"é🙂ü\"");
}

#[test]
fn longer_patterns_are_asked_as_the_4_grams_covering_them() {
    assert_eq!(gram_query("AbCd"), "\"abcd\"");
    assert_eq!(gram_query("1F1F1"), "\"1f1f\" AND \"f1f1\"");
    assert_eq!(
        gram_query("train-res.net_1"),
        "\"et_1\" AND \"n-re\" AND \"s.ne\" AND \"trai\""
    );
    // The last 4-gram is one of the set already.
    assert_eq!(gram_query("abcdefgh"), "\"abcd\" AND \"efgh\"");
}
