//! The store's side of the emulator's seeds, export and reset, on both backends.

use crate::helpers::test_database;

/// The total of a project's list with these parameters.
async fn total(
    store: &dyn litejobs::store::Store,
    project: &litejobs::domain::ProjectId,
    pairs: &[(&str, &str)],
) -> u64 {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let query = litejobs::domain::filter::ListJobsQuery::parse(&pairs, 1000).expect("query");
    store
        .list_jobs(project, &query, 1000)
        .await
        .expect("list")
        .total
}

/// The store's side of seeds, export and reset, on a store of either backend: rows written
/// as given keep their states, times and counters; erasing one project leaves the others;
/// a deleted project takes its servers and grants along.
async fn seed_rows_round_trip_and_erase_by_project(store: &dyn litejobs::store::Store) {
    use litejobs::domain::ProjectId;
    use litejobs::store::seed::{JobRow, TaskRow};

    let a = litejobs::iam::create_project(store, "cn-north-4", None)
        .await
        .expect("project");
    let b = litejobs::iam::create_project(store, "cn-east-3", None)
        .await
        .expect("project");
    let (pa, pb) = (
        ProjectId::parse(&a.id).expect("id"),
        ProjectId::parse(&b.id).expect("id"),
    );
    let task = |id: &str, status: &str| TaskRow {
        id: id.to_string(),
        server_id: "node-1".to_string(),
        server_name: "node-1".to_string(),
        status: status.to_string(),
        message: format!("{status} here"),
        cloud_server: "{}".to_string(),
        simulated: false,
        update_at: 1_700_000_000_500,
    };
    let job = |id: &str, status: &str, tasks: Vec<TaskRow>, deleted_at: Option<i64>| JobRow {
        id: id.to_string(),
        name: format!("seeded-{id}"),
        user_name: "seed".to_string(),
        description: None,
        job_type: "COMMON".to_string(),
        template_id: None,
        status: status.to_string(),
        visible: true,
        items: r#"[{"type":"COMMON"}]"#.to_string(),
        create_at: 1_700_000_000_000,
        update_at: 1_700_000_001_000,
        deleted_at,
        tasks,
    };
    let rows = vec![
        job(
            "j1",
            "FINISHED",
            vec![task("t1", "SUCCESS"), task("t2", "FAILED")],
            None,
        ),
        job("j2", "PROCESSING", vec![task("t3", "PROCESSING")], None),
        job(
            "j3",
            "DELETED",
            vec![task("t4", "SKIPPED")],
            Some(1_700_000_002_000),
        ),
    ];
    store.insert_job_rows(&pa, &rows).await.expect("insert");
    store
        .insert_job_rows(
            &pb,
            &[job("j9", "FINISHED", vec![task("t9", "SUCCESS")], None)],
        )
        .await
        .expect("insert");
    assert_eq!(store.job_rows(&pa).await.expect("rows"), rows);

    assert_eq!(total(store, &pa, &[]).await, 3);
    assert_eq!(total(store, &pa, &[("status", "FINISHED")]).await, 1);
    assert_eq!(total(store, &pa, &[("status", "DELETED")]).await, 1);
    let detail = store.get_job(&pa, "j1").await.expect("get").expect("j1");
    assert_eq!(
        (detail.abnormal_count, detail.create_at),
        (1, 1_700_000_000_000)
    );
    assert_eq!(detail.tasks[1].status, "FAILED");

    assert_eq!(store.erase_jobs(Some(&pa)).await.expect("erase"), 3);
    assert_eq!(total(store, &pa, &[]).await, 0);
    assert_eq!(
        total(store, &pb, &[]).await,
        1,
        "the other project keeps its jobs"
    );
    // The same ids can be seeded again once erased.
    store.insert_job_rows(&pa, &rows[..1]).await.expect("again");
    assert_eq!(total(store, &pa, &[]).await, 1);

    assert!(store.delete_project(&pa).await.expect("delete"));
    assert!(store.find_project(&a.id).await.expect("find").is_none());
    assert!(!store.delete_project(&pa).await.expect("delete again"));
    assert_eq!(store.erase_jobs(None).await.expect("erase all"), 1);
    assert_eq!(total(store, &pb, &[]).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_rows_on_sqlite() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("seed.db").display());
    let store = litejobs::store::open(&url).await.expect("open");
    seed_rows_round_trip_and_erase_by_project(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_rows_on_postgres() {
    let Some(database) = test_database().await else {
        return;
    };
    let store = litejobs::store::open(&database.url).await.expect("open");
    seed_rows_round_trip_and_erase_by_project(store.as_ref()).await;
}
