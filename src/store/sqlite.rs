//! The SQLite backend: one file, WAL journal, durable commits, zero set-up.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::sql::sql_store;

/// Jobs and identities in one SQLite file.
///
/// Writes go through a single connection (SQLite has one writer at a time anyway), reads
/// through a pool of several, which WAL lets run beside the writer.
#[derive(Clone)]
pub struct SqliteStore {
    pub(crate) read: SqlitePool,
    pub(crate) write: SqlitePool,
}

impl super::sql::Dialect for SqliteStore {
    const POSITION_FN: &'static str = "instr";
    const READ_SNAPSHOT: Option<&'static str> = None;
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
            .busy_timeout(Duration::from_secs(10))
            .pragma("cache_size", "-65536");
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(options.clone())
            .await?;
        sqlx::migrate!("migrations/sqlite").run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self { read, write })
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

sql_store!(SqliteStore, sqlx::Sqlite);
