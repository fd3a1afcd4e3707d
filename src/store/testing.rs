//! Helpers of the store's unit tests.

use super::{JobStore, NewJob, NewServer, SqliteStore};
use crate::domain::filter::ListJobsQuery;
use crate::domain::ProjectId;

/// The list query a query string asks for (pages of at most 1,000 jobs).
pub fn list_query(raw: &str) -> ListJobsQuery {
    let pairs: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    ListJobsQuery::parse(&pairs, 1000).expect("query")
}

/// Registers agent servers `ids` in `project`.
pub async fn add_servers(store: &(impl JobStore + ?Sized), project: &ProjectId, ids: &[&str]) {
    for id in ids {
        let server = NewServer {
            id: id.to_string(),
            name: id.to_string(),
            kind: "agent".to_string(),
            sim_outcome: None,
            cloud_server: Default::default(),
            now_ms: 1,
        };
        store.upsert_server(project, server).await.expect("server");
    }
}

/// A SQLite store in `path` with project `p1` and its agent servers `servers`.
pub async fn sqlite_with_servers(
    path: &std::path::Path,
    servers: &[&str],
) -> (SqliteStore, ProjectId) {
    let store = SqliteStore::open(&path.display().to_string())
        .await
        .expect("store");
    let project = ProjectId::parse("p1").expect("project");
    add_servers(&store, &project, servers).await;
    (store, project)
}

/// A `COMMON` job named `name` on `servers`, created at 1 ms.
pub fn new_job(name: &str, servers: &[&str]) -> NewJob {
    NewJob {
        id: crate::domain::ids::new_id(),
        name: name.to_string(),
        description: None,
        job_type: "COMMON".to_string(),
        template_id: None,
        user_name: "u".to_string(),
        visible: true,
        is_reboot: false,
        items: Vec::new(),
        server_ids: servers.iter().map(|s| s.to_string()).collect(),
        now_ms: 1,
    }
}

/// The steps of SQLite's plan of `sql` (`EXPLAIN QUERY PLAN`) with `params`, or with every
/// parameter `NULL`.
pub fn sqlite_plan(
    conn: &rusqlite::Connection,
    sql: &str,
    params: Option<&[rusqlite::types::Value]>,
) -> Vec<String> {
    let mut plan = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .expect("plan");
    let nulls = vec![rusqlite::types::Value::Null; plan.parameter_count()];
    plan.query_map(
        rusqlite::params_from_iter(params.unwrap_or(&nulls)),
        |row| row.get(3),
    )
    .expect("plan rows")
    .collect::<Result<_, _>>()
    .expect("plan rows")
}
