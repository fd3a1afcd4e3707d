//! Tests of what is SQLite's own: upgrades of an older schema, the FTS5 name indexes and
//! their merges, and the group-commit writer. What every backend does is tested by the
//! conformance suite (`tests/api/store.rs`).

use super::maintenance::NAME_INDEXES;
use super::SqliteStore;
use crate::domain::ProjectId;
use crate::store::testing::{new_job, sqlite_with_servers as store_with_servers};
use crate::store::{Backend, JobStore, StoreError};

/// A database at `path` with the migrations before `first_left_out` alone (an earlier
/// version's schema).
async fn old_database(path: &std::path::Path, first_left_out: &str) -> sqlx::SqlitePool {
    use std::str::FromStr;

    let old_migrations = path.with_extension("migrations");
    std::fs::create_dir(&old_migrations).expect("dir");
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&all).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name < first_left_out {
            std::fs::copy(&path, old_migrations.join(name)).expect("copy");
        }
    }
    let options =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .expect("options")
            .create_if_missing(true)
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal);
    let old = sqlx::SqlitePool::connect_with(options).await.expect("pool");
    sqlx::migrate::Migrator::new(old_migrations.as_path())
        .await
        .expect("old migrations")
        .run(&old)
        .await
        .expect("old schema");
    old
}

/// A database of the previous schema (migrations before 0004: a name index without
/// positions) keeps its jobs through the upgrade, and the rebuilt index finds them.
#[tokio::test]
async fn upgrading_finds_and_counts_the_jobs_already_there() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    let old = old_database(&path, "0004").await;
    for (n, name) in ["alpha-Common", "beta-log", "gamma-common-2"]
        .iter()
        .enumerate()
    {
        sqlx::query(
            "INSERT INTO jobs (project_id, id, name, user_name, type, status, visible, \
             is_reboot, pending_tasks, items, create_at, update_at) \
             VALUES ('p1', ?, ?, 'u', 'COMMON', 'FINISHED', 1, 0, 0, '[]', ?, ?)",
        )
        .bind(format!("job-{n}"))
        .bind(name)
        .bind(n as i64)
        .bind(n as i64)
        .execute(&old)
        .await
        .expect("old job");
    }
    old.close().await;

    let (store, project) = store_with_servers(&path, &[]).await;
    for (pattern, expected) in [
        ("COMMON", vec!["job-2", "job-0"]),
        ("a-com", vec!["job-2", "job-0"]),
        ("log", vec!["job-1"]),
        ("mon-2", vec!["job-2"]),
        ("alphabeta", vec![]),
    ] {
        let pairs = vec![("name".to_string(), pattern.to_string())];
        let query = crate::domain::filter::ListJobsQuery::parse(&pairs, 100).expect("query");
        let page = store.list_jobs(&project, &query, 100).await.expect("list");
        let ids: Vec<String> = page
            .items()
            .expect("items")
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(ids, expected, "{pattern}");
        assert_eq!(page.total, expected.len() as u64, "{pattern}");
    }
    // The project's total, counted by the upgrade from the jobs already there.
    let query = crate::domain::filter::ListJobsQuery::parse(&[], 100).expect("query");
    let page = store.list_jobs(&project, &query, 100).await.expect("list");
    assert_eq!(page.total, 3);
}

/// A task that an agent of a version before the leases' epochs (0010) had leased, still
/// running at the upgrade, keeps its lease: it is not taken for one never started.
#[tokio::test]
async fn a_lease_from_before_the_epochs_survives_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("old.db");
    let old = old_database(&path, "0010").await;
    sqlx::query(
        "INSERT INTO jobs (project_id, id, name, user_name, type, status, visible, \
         is_reboot, pending_tasks, items, create_at, update_at) \
         VALUES ('p1', 'job-0', 'long', 'u', 'COMMON', 'PROCESSING', 1, 0, 1, '[]', 1000, 1000)",
    )
    .execute(&old)
    .await
    .expect("old job");
    sqlx::query(
        "INSERT INTO tasks (id, project_id, job_id, position, server_id, server_name, \
         simulated, status, create_at, update_at, lease_owner, lease_until) \
         VALUES ('t-0', 'p1', 'job-0', 0, 'node-1', 'node-1', 0, 'PROCESSING', 1000, 1000, \
         'u', 10000000)",
    )
    .execute(&old)
    .await
    .expect("old leased task");
    old.close().await;

    let (store, _) = store_with_servers(&path, &[]).await;
    // Long past the start timeout, within its lease: nothing to end.
    let stalled = store
        .stalled_tasks(100_000, 5_000, 100)
        .await
        .expect("stalled");
    assert!(stalled.is_empty(), "{stalled:?}");
    // Once its lease lapsed, it is a lapsed lease.
    let stalled = store
        .stalled_tasks(20_000_000, 5_000, 100)
        .await
        .expect("stalled");
    let stalls: Vec<crate::store::Stall> = stalled.iter().map(|t| t.stall).collect();
    assert_eq!(
        stalls,
        [crate::store::Stall::LeaseLapsed { at: 10_000_000 }]
    );
}

/// The segments of the name index that has the most (each search reads every one).
async fn name_segments(store: &SqliteStore) -> i64 {
    let mut most = 0;
    for index in NAME_INDEXES {
        let sql = format!("SELECT count(DISTINCT segid) FROM {index}_idx");
        let n: i64 = sqlx::query_scalar(&sql)
            .fetch_one(&store.read)
            .await
            .expect("segments");
        most = most.max(n);
    }
    most
}

#[tokio::test]
async fn an_idle_server_merges_the_name_index_and_still_finds_every_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, project) = store_with_servers(&dir.path().join("t.db"), &["s1"]).await;
    // One create at a time: each commit adds a segment of its own to the index.
    for n in 0..24 {
        let job = new_job(&format!("run-{n:02}-Alpha"), &["s1"]);
        store.create_job(&project, job, None).await.expect("create");
    }
    let before = name_segments(&store).await;
    assert!(before >= 4, "{before} segments");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut after = before;
    while after > 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        after = name_segments(&store).await;
    }
    assert!(after <= 2, "{before} segments, then {after}");
    let patterns = [
        ("ALPHA", 24),
        ("run-07", 1),
        ("1-al", 3),
        ("alphx", 0),
        ("7-a", 2),
        ("pha", 24),
    ];
    for (pattern, matches) in patterns {
        let pairs = vec![("name".to_string(), pattern.to_string())];
        let query = crate::domain::filter::ListJobsQuery::parse(&pairs, 100).expect("query");
        let page = store.list_jobs(&project, &query, 100).await.expect("list");
        assert_eq!(page.total, matches, "{pattern}");
    }
}

/// The names of the project's jobs holding `pattern` as the list finds them, sorted.
async fn names_found(store: &SqliteStore, project: &ProjectId, pattern: &str) -> Vec<String> {
    let pairs = vec![("name".to_string(), pattern.to_string())];
    let query = crate::domain::filter::ListJobsQuery::parse(&pairs, 100).expect("query");
    let page = store.list_jobs(project, &query, 100).await.expect("list");
    let mut names: Vec<String> = page
        .items()
        .expect("items")
        .into_iter()
        .map(|j| j.name)
        .collect();
    assert_eq!(page.total, names.len() as u64, "{pattern}");
    names.sort();
    names
}

/// Both name indexes (trigrams for three characters, 4-grams from four) find what
/// reading every name finds, as jobs are added, renamed and removed: each index is kept
/// by triggers, and the 4-gram one forgets a row only when given its 4-grams again.
#[tokio::test]
async fn name_searches_find_what_reading_every_name_finds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, project) = store_with_servers(&dir.path().join("t.db"), &["s1"]).await;
    let mut names: Vec<String> = [
        "Alpha-1",
        "alphabet",
        "BETA.alpha_2",
        "gamma",
        "a.b-c_d",
        "xyz",
        "ALPHA",
        "pha-alp",
        "alphalpha",
    ]
    .iter()
    .map(|n| n.to_string())
    .collect();
    for name in &names {
        store
            .create_job(&project, new_job(name, &["s1"]), None)
            .await
            .expect("create");
    }
    let patterns = [
        "alp", "ALPH", "pha-", "lpha", "a.b-c", "b-c_", "xyz", "GAMMA", "mma", "ha_2", "alpha-1x",
        "halp", "lphalpha", "Z", "a", "é-al", "al%", "a\"lp",
    ];
    for round in ["created", "renamed and removed"] {
        for pattern in patterns {
            let lower = pattern.to_ascii_lowercase();
            let mut expected: Vec<String> = names
                .iter()
                .filter(|n| n.to_ascii_lowercase().contains(&lower))
                .cloned()
                .collect();
            expected.sort();
            let found = names_found(&store, &project, pattern).await;
            assert_eq!(found, expected, "{pattern}, {round}");
        }
        // Names never change through the API; the triggers keep the indexes whatever
        // changes a row.
        sqlx::query("UPDATE jobs SET name = 'omega-alpha' WHERE name = 'gamma'")
            .execute(&store.write)
            .await
            .expect("rename");
        sqlx::query("DELETE FROM jobs WHERE name IN ('alphabet', 'xyz')")
            .execute(&store.write)
            .await
            .expect("remove");
        names.retain(|n| n != "alphabet" && n != "xyz");
        for n in names.iter_mut().filter(|n| *n == "gamma") {
            *n = "omega-alpha".to_string();
        }
    }
    sqlx::query(
        "INSERT INTO jobs_name_grams (jobs_name_grams, rank) VALUES ('integrity-check', 0)",
    )
    .execute(&store.write)
    .await
    .expect("the 4-gram index is whole");
}

/// Creates waiting together share one transaction; one failing in the database (a job id
/// taken, here by a create of the same batch) fails alone, the others of its batch are
/// created. (That every create gets its own outcome is the conformance suite's.)
#[tokio::test]
async fn a_create_failing_in_a_batch_fails_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, project) = store_with_servers(&dir.path().join("t.db"), &["s1", "s2"]).await;
    let twin = new_job("twin", &["s1"]);
    let mut taken = new_job("taken", &["s2"]);
    taken.id = twin.id.clone();
    let (first, second, third) = futures::future::join3(
        store.create_job(&project, twin.clone(), None),
        store.create_job(&project, taken, None),
        store.create_job(&project, new_job("third", &["s1"]), None),
    )
    .await;
    assert_eq!(first.expect("first").name, "twin");
    assert!(matches!(second, Err(StoreError::Conflict(_))), "{second:?}");
    assert_eq!(third.expect("third").name, "third");
    let query = crate::domain::filter::ListJobsQuery::default();
    let page = store.list_jobs(&project, &query, 1000).await.expect("list");
    assert_eq!(page.total, 2);
}

/// A transaction SQLite ends by itself (as it rolls back a commit refused for a full disk;
/// here a `ROLLBACK` sent as a statement) leaves the driver counting it open, and its own
/// rollback failing: the writer's connection is replaced and creates go on.
#[tokio::test]
async fn a_transaction_sqlite_ended_by_itself_does_not_stop_the_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, project) = store_with_servers(&dir.path().join("t.db"), &["s1"]).await;
    for _ in 0..2 {
        let mut tx = crate::store::shared::begin_write(&store.write)
            .await
            .expect("begin");
        sqlx::query("ROLLBACK")
            .execute(&mut *tx)
            .await
            .expect("SQLite ends the transaction");
        assert!(tx.rollback().await.is_err(), "the driver's rollback fails");
        let created = store
            .create_job(&project, new_job("after", &["s1"]), None)
            .await;
        assert_eq!(created.expect("created").name, "after");
    }
}

/// A database file removed under the store: the probes say so and, within a tick of the
/// upkeep, changes are refused rather than written to a file no name reaches.
#[cfg(unix)]
#[tokio::test]
async fn a_removed_database_file_fails_the_probes_and_refuses_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gone.db");
    let (store, project) = store_with_servers(&path, &["s1"]).await;
    store
        .create_job(&project, new_job("before", &["s1"]), None)
        .await
        .expect("created");
    assert_eq!(store.readiness().await.expect("ready"), None);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let reason = store.readiness().await.expect("an answer");
    assert!(
        reason.as_deref().is_some_and(|r| r.contains("was removed")),
        "{reason:?}"
    );
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match store
            .create_job(&project, new_job("after", &["s1"]), None)
            .await
        {
            Err(StoreError::Unavailable(_)) => break,
            Ok(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            other => panic!("a change after the file went: {other:?}"),
        }
    }
}

/// The shared SQL's placeholders become plain `?` only when that keeps their meaning.
#[test]
fn placeholders_become_plain_when_they_come_once_each_in_order() {
    use super::placeholders;
    assert_eq!(
        placeholders("INSERT INTO t VALUES ($1, $2), ($3, $4)"),
        "INSERT INTO t VALUES (?, ?), (?, ?)"
    );
    // Quoted text keeps its dollars; the placeholders around it still change.
    assert_eq!(
        placeholders("SELECT json_extract(x, '$.a'), \"$b\" FROM t WHERE a = $1 AND b = $2"),
        "SELECT json_extract(x, '$.a'), \"$b\" FROM t WHERE a = ? AND b = ?"
    );
    assert_eq!(placeholders("SELECT 1"), "SELECT 1");
    // A placeholder used twice, or out of order, keeps its number.
    for kept in [
        "SELECT * FROM t WHERE a = $1 OR b = $1",
        "SELECT * FROM t WHERE a = $2 AND b = $1",
        "SELECT * FROM t WHERE a = $1 AND b = $3",
    ] {
        assert!(matches!(placeholders(kept), std::borrow::Cow::Borrowed(s) if s == kept));
    }
    assert_eq!(
        placeholders("SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11")
            .matches('?')
            .count(),
        11
    );
}

/// Another process may write to the file while the server runs (the administration commands
/// do): a create waits for that writer's lock and then commits, rather than failing because
/// the other's commit came between its reads and its first write.
#[tokio::test]
async fn creates_wait_for_another_connections_write_and_then_commit() {
    use std::str::FromStr;
    use std::time::Duration;

    use sqlx::ConnectOptions;

    use crate::store::JobStore;

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.db");
    let (store, project) = store_with_servers(&path, &["s1"]).await;
    let mut other =
        sqlx::sqlite::SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .expect("options")
            .connect()
            .await
            .expect("another connection");
    let hold = |sql: &'static str| sqlx::query(sql);
    hold("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .expect("the other takes the write lock");
    hold("UPDATE servers SET name = name || '' WHERE project_id = 'p1'")
        .execute(&mut other)
        .await
        .expect("the other writes");
    // Longer than a failing create's quick retries take.
    let release = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hold("COMMIT").execute(&mut other).await
    };
    let (created, committed) = tokio::join!(
        store.create_job(&project, new_job("after-the-other", &["s1"]), None),
        release
    );
    committed.expect("the other commits");
    let job = created.expect("the create waited for the lock, then committed");
    let found = store
        .get_job(&project, &job.id)
        .await
        .expect("read")
        .expect("the job is there");
    assert_eq!(found.name, "after-the-other");
}

/// A database smaller than 1 GiB gets the writer's small page cache, on the connection the
/// writer opened first and on one it opens again.
#[tokio::test]
async fn a_small_database_has_a_small_writer_cache() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, _) = store_with_servers(&dir.path().join("cache.db"), &[]).await;
    let cache_size = "PRAGMA cache_size";
    let size: i64 = sqlx::query_scalar(cache_size)
        .fetch_one(&store.write)
        .await
        .expect("cache size");
    assert_eq!(size, -8 * 1024);
    let mut conn = store.write.acquire().await.expect("writer");
    conn.close_on_drop();
    drop(conn);
    let size: i64 = sqlx::query_scalar(cache_size)
        .fetch_one(&store.write)
        .await
        .expect("cache size");
    assert_eq!(size, -8 * 1024);
}

/// A database file the store creates, and its WAL, are its owner's alone.
#[cfg(unix)]
#[tokio::test]
async fn a_new_database_is_readable_by_its_owner_alone() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("private.db");
    let store = SqliteStore::open(&path.display().to_string())
        .await
        .expect("open");
    let project = ProjectId::parse("p1").expect("project");
    store
        .create_job(&project, new_job("x", &["s1"]), None)
        .await
        .ok();
    for file in [path.clone(), path.with_extension("db-wal")] {
        let mode = std::fs::metadata(&file)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
}
