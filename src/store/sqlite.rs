//! The SQLite backend: one file, WAL journal, durable commits, zero set-up.
//!
//! Creates go through a group-commit writer: concurrent creates wait in a queue, and the
//! writer commits all that are waiting in one transaction (one `fsync`). A bad request fails
//! alone, and every request gets its own outcome. A checkpointer copies committed pages from
//! the WAL into the database file on a connection of its own, off the commit path, and
//! while no create is waiting it merges the name indexes' segments a step at a time.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::sql::{sql_store, Create};
use super::sqlite_read::Readers;
use super::{IdempotencyKey, JobPage, NewJob, StoreError, StoreResult};
use crate::domain::filter::ListJobsQuery;
use crate::domain::ProjectId;
use crate::wire::JobDetail;

/// Most creates committed in one transaction.
const MAX_CREATE_BATCH: usize = 256;
/// Creates that may wait for the writer before callers wait to queue.
const CREATE_QUEUE: usize = 4096;
/// Page cache of the writer and of each reader, in KiB. Small on purpose: the operating
/// system caches the file too, and the server's memory stays bounded. The writer's is the
/// larger: inserts touch index pages all over the file.
const WRITER_CACHE_KIB: i64 = 32 * 1024;
const READER_CACHE_KIB: i64 = 8 * 1024;
/// How often the checkpointer copies committed pages from the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// WAL pages past which a commit still checkpoints by itself: a backstop, should the
/// checkpointer fall behind.
const BACKSTOP_CHECKPOINT_PAGES: u32 = 20_000;
/// Reading connections (WAL lets them run beside the writer).
const READERS: u32 = 4;
/// Pages of the name index one merge step writes at most (a few milliseconds of the writer),
/// and one step of a bulk load's merge.
const IDLE_MERGE_PAGES: u32 = 256;
pub(super) const LOAD_MERGE_PAGES: u32 = 4096;

/// A create waiting for the writer.
struct PendingCreate {
    project: ProjectId,
    job: NewJob,
    idempotency: Option<IdempotencyKey>,
    reply: oneshot::Sender<StoreResult<JobDetail>>,
}

/// Jobs and identities in one SQLite file.
///
/// Writes go through a single connection (SQLite has one writer at a time anyway), reads
/// through a pool of several, which WAL lets run beside the writer. The job list has read
/// connections of its own (see `sqlite_read`).
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
    creates: mpsc::Sender<PendingCreate>,
    list: std::sync::Arc<Readers>,
}

impl super::sql::Dialect for SqliteStore {
    type Db = Sqlite;
    const JSON_AGG: &'static str = "json_group_array";
    const JSON_ROW: &'static str = "json_array";
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the database at `url`: a `sqlite:` URL or
    /// a plain file path.
    pub async fn open(url: &str) -> super::StoreResult<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_string()
        } else {
            format!("sqlite://{url}")
        };
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", (-WRITER_CACHE_KIB).to_string())
                    .pragma("wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES.to_string()),
            )
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&write).await?;
        let checkpoint = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().pragma("cache_size", "-1024"))
            .await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(
                options
                    .read_only(true)
                    .pragma("cache_size", (-READER_CACHE_KIB).to_string()),
            )
            .await?;
        let file = super::sqlite_file(&url)
            .ok_or_else(|| StoreError::Corrupt(format!("{url} names no database file")))?;
        let list = Readers::open(&file)?;
        let (creates, queue) = mpsc::channel(CREATE_QUEUE);
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run_creates(write.clone(), queue, batches.clone()));
        tokio::spawn(run_maintenance(
            checkpoint,
            write.clone(),
            creates.downgrade(),
            batches,
        ));
        Ok(Self {
            read,
            write,
            creates,
            list,
        })
    }

    /// One page of the job list, on the list's own read connections.
    async fn list_page(
        &self,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<JobPage> {
        self.list.list_jobs(project, query, max_page_size).await
    }

    /// Creates a job through the group-commit writer.
    async fn submit_create(
        &self,
        project: &ProjectId,
        job: NewJob,
        idempotency: Option<IdempotencyKey>,
    ) -> StoreResult<JobDetail> {
        let (reply, outcome) = oneshot::channel();
        let pending = PendingCreate {
            project: project.clone(),
            job,
            idempotency,
            reply,
        };
        let stopped = || StoreError::Batch("the database writer has stopped".to_string());
        self.creates.send(pending).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// The group-commit writer: commits every create waiting in `queue` in one transaction,
/// until every sender is gone; counts the batches in `batches`.
async fn run_creates(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<PendingCreate>,
    batches: Arc<AtomicU64>,
) {
    let mut batch = Vec::with_capacity(MAX_CREATE_BATCH);
    while queue.recv_many(&mut batch, MAX_CREATE_BATCH).await > 0 {
        batches.fetch_add(1, Ordering::Relaxed);
        let outcomes = create_batch(&pool, &batch).await;
        for (pending, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone away; its job stays created, as with any write.
            let _ = pending.reply.send(outcome);
        }
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] on a connection of its own, so commits do
/// not stop to copy pages into the database file; at a tick when no batch of creates was
/// committed since the last one, takes one step of merging the name index (on the writer's
/// connection, between batches), until a step finds nothing to merge or creates come again.
/// Ends with the store (when `store` no longer upgrades).
async fn run_maintenance(
    pool: SqlitePool,
    write: SqlitePool,
    store: mpsc::WeakSender<PendingCreate>,
    batches: Arc<AtomicU64>,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut seen, mut merged) = (u64::MAX, false);
    loop {
        tick.tick().await;
        if store.upgrade().is_none() {
            pool.close().await;
            return;
        }
        // Passive: copies what no reader still needs, never waits for readers or the writer.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
        let now = batches.load(Ordering::Relaxed);
        if now != seen {
            (seen, merged) = (now, false);
            continue;
        }
        if !merged {
            let step = match write.acquire().await {
                Ok(mut conn) => merge_name_index(&mut conn, IDLE_MERGE_PAGES).await,
                Err(e) => Err(e.into()),
            };
            match step {
                Ok(more) => merged = !more,
                Err(e) => {
                    tracing::warn!(error = %e, "merging the name index failed");
                    merged = true;
                }
            }
        }
    }
}

/// The name indexes: of trigrams, and of 4-grams.
const NAME_INDEXES: [&str; 2] = ["jobs_name_fts", "jobs_name_grams"];

/// One step of merging each name index's segments, writing at most about `pages` pages
/// each; true when it merged anything (FTS5 reports work by two changes or more).
pub(super) async fn merge_name_index(
    conn: &mut sqlx::SqliteConnection,
    pages: u32,
) -> StoreResult<bool> {
    let changes = "SELECT total_changes()";
    let mut merged = false;
    for index in NAME_INDEXES {
        let before: i64 = sqlx::query_scalar(changes).fetch_one(&mut *conn).await?;
        sqlx::query(&format!(
            "INSERT INTO {index} ({index}, rank) VALUES ('merge', ?)"
        ))
        .bind(pages)
        .execute(&mut *conn)
        .await?;
        let after: i64 = sqlx::query_scalar(changes).fetch_one(&mut *conn).await?;
        merged |= after - before >= 2;
    }
    Ok(merged)
}

/// Runs the creates of `batch` in as few transactions as its idempotency keys allow (one,
/// unless a key comes twice: a create repeating a key waits for the transaction of the one
/// before it); answers each one's outcome. A create that is refused (unknown servers,
/// idempotency conflict) has written nothing and is refused alone. When anything else
/// fails, the transaction is rolled back and each of its creates runs again in a
/// transaction of its own, so that only the failing one fails.
async fn create_batch(pool: &SqlitePool, batch: &[PendingCreate]) -> Vec<StoreResult<JobDetail>> {
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut rest = batch;
    while !rest.is_empty() {
        let mut keys = HashSet::new();
        let n = rest
            .iter()
            .position(|p| {
                p.idempotency
                    .as_ref()
                    .is_some_and(|k| !keys.insert((&p.project, &k.token)))
            })
            .unwrap_or(rest.len());
        let (now, later) = rest.split_at(n);
        match create_together(pool, now).await {
            Ok(done) => outcomes.extend(done),
            Err(e) => {
                tracing::warn!(error = %e, creates = now.len(), "a batch of creates failed");
                let why = e.to_string();
                outcomes.extend(now.iter().map(|_| Err(StoreError::Batch(why.clone()))));
            }
        }
        rest = later;
    }
    outcomes
}

/// Runs `creates`, whose idempotency keys all differ, in one transaction (see
/// [`create_batch`]).
async fn create_together(
    pool: &SqlitePool,
    creates: &[PendingCreate],
) -> StoreResult<Vec<StoreResult<JobDetail>>> {
    let each: Vec<Create<'_>> = creates
        .iter()
        .map(|p| Create {
            project: &p.project,
            job: &p.job,
            idempotency: p.idempotency.as_ref(),
        })
        .collect();
    let mut tx = pool.begin().await?;
    match SqliteStore::insert_jobs(&mut tx, &each).await {
        Ok(Some(outcomes)) => {
            tx.commit().await?;
            Ok(outcomes)
        }
        // `None` (a key taken by a concurrent transaction) cannot happen with one writer;
        // like any other failure, it is sorted out by running every create alone.
        Ok(None) | Err(_) => {
            tx.rollback().await?;
            let mut alone = Vec::with_capacity(each.len());
            for c in &each {
                alone.push(
                    SqliteStore::create_job_alone(pool, c.project, c.job, c.idempotency).await,
                );
            }
            Ok(alone)
        }
    }
}

#[async_trait::async_trait]
impl super::Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> super::StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }
}

/// The shared SQL, in a module of its own so that its imports stay there.
mod queries {
    super::sql_store!(super::SqliteStore, sqlx::Sqlite);
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::domain::ProjectId;
    use crate::store::{IdempotencyKey, JobStore, NewJob, NewServer, SqliteStore, StoreError};

    /// A store in `path` with project `p1` and its agent servers `servers`.
    pub(crate) async fn store_with_servers(
        path: &std::path::Path,
        servers: &[&str],
    ) -> (SqliteStore, ProjectId) {
        let store = SqliteStore::open(&path.display().to_string())
            .await
            .expect("store");
        let project = ProjectId::parse("p1").expect("project");
        for id in servers {
            let server = NewServer {
                id: id.to_string(),
                name: id.to_string(),
                kind: "agent".to_string(),
                sim_outcome: None,
                cloud_server: Default::default(),
                now_ms: 1,
            };
            store.upsert_server(&project, server).await.expect("server");
        }
        (store, project)
    }

    pub(crate) fn new_job(name: &str, servers: &[&str]) -> NewJob {
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

    /// A database of the previous schema (migrations before 0004: a name index without
    /// positions) keeps its jobs through the upgrade, and the rebuilt index finds them.
    #[tokio::test]
    async fn upgrading_finds_and_counts_the_jobs_already_there() {
        use std::str::FromStr;

        let dir = tempfile::tempdir().expect("tempdir");
        let old_migrations = dir.path().join("migrations");
        std::fs::create_dir(&old_migrations).expect("dir");
        let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations/sqlite");
        for entry in std::fs::read_dir(&all).expect("migrations") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name < "0004" {
                std::fs::copy(&path, old_migrations.join(name)).expect("copy");
            }
        }
        let path = dir.path().join("old.db");
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

    /// Segments of the name index (each search reads every one).
    /// The segments of the name index that has the most.
    async fn name_segments(store: &SqliteStore) -> i64 {
        let mut most = 0;
        for index in super::NAME_INDEXES {
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

    fn key(token: &str, body: &str) -> Option<IdempotencyKey> {
        Some(IdempotencyKey {
            token: token.to_string(),
            body_hash: body.to_string(),
            not_before_ms: 0,
        })
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
            "alp", "ALPH", "pha-", "lpha", "a.b-c", "b-c_", "xyz", "GAMMA", "mma", "ha_2",
            "alpha-1x", "halp", "lphalpha", "Z", "a", "é-al", "al%", "a\"lp",
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

    #[tokio::test]
    async fn concurrent_creates_share_commits_but_not_outcomes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, project) = store_with_servers(&dir.path().join("t.db"), &["s1", "s2"]).await;
        let creates = (0..40).map(|n| {
            let servers: &[&str] = if n % 5 == 0 {
                &["s1", "nope"]
            } else {
                &["s1", "s2"]
            };
            store.create_job(&project, new_job(&format!("j{n}"), servers), None)
        });
        let outcomes = futures::future::join_all(creates).await;
        for (n, outcome) in outcomes.iter().enumerate() {
            match outcome {
                Ok(job) => {
                    assert!(n % 5 != 0, "j{n} names an unknown server");
                    assert_eq!(job.tasks.len(), 2);
                    let stored = store.get_job(&project, &job.id).await.expect("get");
                    assert_eq!(stored.as_ref(), Some(job), "j{n} as stored");
                    let servers: Vec<_> = job.tasks.iter().map(|t| t.server_id.as_str()).collect();
                    assert_eq!(servers, ["s1", "s2"]);
                    let mut query = crate::domain::filter::ListJobsQuery::default();
                    query.filter.name = Some(format!("J{n}"));
                    let found = store.list_jobs(&project, &query, 1000).await.expect("list");
                    let names: Vec<String> = found
                        .items()
                        .expect("items")
                        .into_iter()
                        .map(|j| j.name)
                        .collect();
                    assert!(names.contains(&format!("j{n}")), "j{n} by name: {names:?}");
                }
                Err(StoreError::UnknownServers(missing)) => {
                    assert_eq!(n % 5, 0);
                    assert_eq!(missing, &["nope".to_string()]);
                }
                Err(e) => panic!("j{n}: {e}"),
            }
        }
        let (same_a, same_b, other) = futures::future::join3(
            store.create_job(&project, new_job("k", &["s1"]), key("t", "h1")),
            store.create_job(&project, new_job("k", &["s1"]), key("t", "h1")),
            store.create_job(&project, new_job("k2", &["s1"]), key("t", "h2")),
        )
        .await;
        assert_eq!(same_a.expect("a").id, same_b.expect("b").id);
        assert!(matches!(other, Err(StoreError::IdempotencyConflict)));

        // A create failing in the database (a job id taken, here by a create of the same
        // batch) fails alone: the others of its batch are created.
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
        assert_eq!(page.total, 32 + 1 + 2);
        assert_eq!(page.items().expect("items").len(), 35);
    }

    #[tokio::test]
    async fn deletes_cancel_and_purges_remove_every_task_of_the_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, project) = store_with_servers(&dir.path().join("t.db"), &["s1", "s2"]).await;
        let gone = store
            .create_job(&project, new_job("gone", &["s1", "s2"]), None)
            .await
            .expect("create");
        let mut kept = new_job("kept", &["s1", "s2"]);
        kept.now_ms = gone.create_at; // same create_at: only the job id tells them apart
        let kept = store
            .create_job(&project, kept, None)
            .await
            .expect("create");
        let deleted = store
            .delete_jobs(&project, std::slice::from_ref(&gone.id), 5)
            .await
            .expect("delete");
        assert_eq!(deleted.len(), 1);
        let shown = store
            .get_job(&project, &gone.id)
            .await
            .expect("get")
            .expect("job");
        assert!(
            shown.tasks.iter().all(|t| t.status == "SKIPPED"),
            "{:?}",
            shown.tasks
        );
        let other = store
            .get_job(&project, &kept.id)
            .await
            .expect("get")
            .expect("job");
        assert_eq!(other.tasks.len(), 2);
        assert!(other.tasks.iter().all(|t| t.status == "PROCESSING"));
        assert_eq!(store.purge(10, 0).await.expect("purge"), 1);
        let tasks: Vec<String> = sqlx::query_scalar("SELECT job_id FROM tasks")
            .fetch_all(&store.write)
            .await
            .expect("tasks");
        assert_eq!(tasks, vec![kept.id.clone(), kept.id]);
    }
}
