//! The SQLite backend: one file, WAL journal, durable commits, zero set-up.
//!
//! - `writer.rs`: creates go through a group-commit writer (one transaction, one `fsync`,
//!   for every create waiting), each with its own outcome;
//! - `list.rs`: the job list, on read connections of its own;
//! - `maintenance.rs`: WAL checkpoints off the commit path, name index merges while idle,
//!   and the writer's page cache sized to the file;
//! - everything else is the shared SQL (`store/shared/`), run on a pool of readers and the
//!   one writing connection.

mod list;
pub(crate) mod maintenance;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Sqlite, SqlitePool};

use self::list::Readers;
use self::maintenance::{OpenedFile, WriterCache};
use self::writer::Writer;
use super::shared::{impl_exec, SqlPools};
use super::wake::Wakeups;
use super::{Backend, IdempotencyKey, JobPage, NewJob, StoreError, StoreResult};
use crate::domain::filter::ListJobsQuery;
use crate::domain::ProjectId;
use crate::wire::JobDetail;

impl_exec!(SqliteConnection, Sqlite, SqliteRow, placeholders);

/// The shared SQL's text for SQLite: its `$1, $2, …` placeholders as plain `?` when they
/// come once each and in order (as `Statement::push_bind` writes them), else unchanged.
///
/// SQLite keeps named and numbered placeholders in a list it searches from the start, and
/// sqlx asks it for each placeholder's name in turn: for a statement of n placeholders
/// (a batch of creates writes hundreds) that is n^2/2 steps, most of a create's time. Plain
/// `?` placeholders are not in that list.
fn placeholders(sql: &str) -> std::borrow::Cow<'_, str> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut copied = 0;
    let mut expected = 1u64;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            // Quoted text and identifiers are copied as they are ('' and "" escape themselves).
            quote @ (b'\'' | b'"') => {
                i += 1;
                while i < bytes.len() && bytes[i] != quote {
                    i += 1;
                }
                i += 1;
            }
            b'$' => {
                let digits = bytes[i + 1..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .count();
                let number = sql[i + 1..i + 1 + digits].parse::<u64>().ok();
                if number != Some(expected) {
                    return std::borrow::Cow::Borrowed(sql);
                }
                expected += 1;
                out.push_str(&sql[copied..i]);
                out.push('?');
                i += 1 + digits;
                copied = i;
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        return std::borrow::Cow::Borrowed(sql);
    }
    out.push_str(&sql[copied..]);
    std::borrow::Cow::Owned(out)
}

/// The SQLite schema's migrations.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");
/// Page cache of each reader, in KiB. Small on purpose: the operating system caches the
/// file too, and the server's memory stays bounded. The readers here serve lookups and
/// background work (the list has connections of its own), which would otherwise fill a
/// large cache on each of them. The writer's is sized to the file:
/// [`maintenance::WriterCache`].
const READER_CACHE_KIB: i64 = 2 * 1024;
/// WAL pages past which a commit still checkpoints by itself: a backstop, should the
/// checkpointer fall behind.
const BACKSTOP_CHECKPOINT_PAGES: u32 = 20_000;
/// Reading connections (WAL lets them run beside the writer).
const READERS: u32 = 4;

/// Jobs and identities in one SQLite file.
///
/// Writes go through a single connection (SQLite has one writer at a time anyway), reads
/// through a pool of several, which WAL lets run beside the writer.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
    writer: Writer,
    list: Arc<Readers>,
    wakeups: Arc<Wakeups>,
    /// The database file, checked by the probes and the upkeep.
    opened: OpenedFile,
}

/// Whether a connection given back to a pool may be lent again. SQLite ends a transaction
/// by itself on some failures (a commit refused for a full disk rolls it back); the
/// driver, which counts the transactions it began, still counts that one open, its
/// `ROLLBACK` then fails, and the connection could never begin another: such a connection
/// is closed, and the pool opens a new one. (The ping first runs what the connection has
/// queued, such as the rollback of a transaction dropped unfinished.)
async fn still_usable(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection as _;
    conn.ping().await?;
    let usable = !conn.is_in_transaction();
    if !usable {
        tracing::warn!("a database connection left in a transaction SQLite had ended is replaced");
    }
    Ok(usable)
}

/// The `sqlite:` URL a URL or plain file path names.
fn sqlite_url(url: &str) -> String {
    if url.starts_with("sqlite:") {
        url.to_string()
    } else {
        format!("sqlite://{url}")
    }
}

/// Creates a missing database file readable by its owner alone: it holds password hashes,
/// sealed secrets and the audit trail. (SQLite gives its WAL and shared-memory files the
/// database's mode.) What cannot be created here is left to SQLite to report.
/// The database file `file` could not be opened for `e`: said with the file, and what
/// likely stands in the way (a folder missing, a file or folder not writable: SQLite makes
/// its write-ahead log beside the file).
fn cannot_open(file: Option<&std::path::Path>, e: sqlx::Error) -> StoreError {
    let Some(file) = file else {
        return e.into();
    };
    let folder = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let why = if folder.exists() && !folder.is_dir() {
        format!("{} is not a folder", folder.display())
    } else if !folder.is_dir() {
        format!("its folder {} does not exist", folder.display())
    } else if file.is_dir() {
        "it is a folder".to_string()
    } else if !file.exists() {
        format!(
            "it does not exist, and cannot be made in {} (is the folder writable by this user?)",
            folder.display()
        )
    } else if e.to_string().contains("readonly") {
        format!(
            "it, or its folder {} (where the write-ahead log goes), is not writable by this user",
            folder.display()
        )
    } else {
        "it cannot be opened".to_string()
    };
    StoreError::Unavailable(format!("the SQLite database {}: {why} ({e})", file.display()).into())
}

fn create_private(file: &std::path::Path) {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let _ = options.open(file);
}

impl SqliteStore {
    /// Opens (creating when missing) and migrates the database at `url`: a `sqlite:` URL or
    /// a plain file path.
    pub async fn open(url: &str) -> StoreResult<Self> {
        let url = sqlite_url(url);
        if let Some(file) = super::sqlite_file(&url) {
            create_private(&file);
        }
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let writer_cache = WriterCache::default();
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .after_connect(writer_cache.on_connect())
            .after_release(|conn, _| Box::pin(still_usable(conn)))
            .connect_with(
                options
                    .clone()
                    .pragma("wal_autocheckpoint", BACKSTOP_CHECKPOINT_PAGES.to_string()),
            )
            .await
            .map_err(|e| cannot_open(super::sqlite_file(&url).as_deref(), e))?;
        MIGRATOR.run(&write).await?;
        let checkpoint = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone().pragma("cache_size", "-1024"))
            .await?;
        writer_cache.fit(&checkpoint, &write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(
                options
                    .read_only(true)
                    .pragma("cache_size", (-READER_CACHE_KIB).to_string()),
            )
            .await?;
        let file = super::sqlite_file(&url)
            .ok_or_else(|| StoreError::internal(format!("{url} names no database file")))?;
        let list = Readers::open(&file)?;
        let wakeups = Arc::new(Wakeups::default());
        let (writer, watch) = Writer::start(write.clone(), wakeups.clone());
        let opened = OpenedFile::of(&file);
        tokio::spawn(maintenance::run(
            checkpoint,
            write.clone(),
            (watch, opened.clone()),
            writer_cache,
        ));
        Ok(Self {
            read,
            write,
            writer,
            list,
            wakeups,
            opened,
        })
    }

    /// A connection for a bulk load: no durable commits and a large page cache.
    pub(crate) async fn bulk_connection(url: &str) -> StoreResult<SqliteConnection> {
        use sqlx::ConnectOptions;
        Ok(SqliteConnectOptions::from_str(&sqlite_url(url))?
            .synchronous(SqliteSynchronous::Off)
            .pragma("cache_size", "-262144")
            .connect()
            .await?)
    }
}

impl SqlPools for SqliteStore {
    type Db = Sqlite;
    fn read_pool(&self) -> &SqlitePool {
        &self.read
    }
    fn write_pool(&self) -> &SqlitePool {
        &self.write
    }
    fn events_written(&self) {
        self.wakeups.events_written();
    }
}

#[async_trait]
impl Backend for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn list_jobs(
        &self,
        project: &ProjectId,
        query: &ListJobsQuery,
        max_page_size: u64,
    ) -> StoreResult<JobPage> {
        self.list.list_jobs(project, query, max_page_size).await
    }

    async fn create_job(
        &self,
        project: &ProjectId,
        job: NewJob,
        idempotency: Option<IdempotencyKey>,
    ) -> StoreResult<JobDetail> {
        self.writer.create(project, job, idempotency).await
    }

    async fn ping(&self) -> StoreResult<()> {
        if let Some(lost) = self.opened.lost() {
            return Err(StoreError::Unavailable(lost.into()));
        }
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    fn pool_use(&self) -> Vec<super::PoolUse> {
        [("write", &self.write), ("read", &self.read)]
            .into_iter()
            .map(|(pool, p)| super::pool_use(pool, p))
            .collect()
    }

    async fn readiness(&self) -> StoreResult<Option<String>> {
        if let Some(lost) = self.opened.lost() {
            return Ok(Some(lost));
        }
        crate::store::shared::unapplied_migrations(self, &MIGRATOR).await
    }

    fn wakeups(&self) -> &Wakeups {
        &self.wakeups
    }
}

#[cfg(test)]
mod tests;
