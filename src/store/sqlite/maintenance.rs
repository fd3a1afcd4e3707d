//! SQLite's upkeep beside the writer: a checkpointer copies committed pages from the WAL into
//! the database file on a connection of its own, off the commit path, and while no create is
//! waiting the name indexes' segments are merged a step at a time; the writer's page cache
//! grows once the file passes 1 GiB ([`WriterCache`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::SqlitePool;

use super::writer::WriterWatch;
use crate::store::StoreResult;

/// How often the checkpointer copies committed pages from the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// Pages of a name index one merge step writes at most (a few milliseconds of the writer).
const IDLE_MERGE_PAGES: u32 = 256;
/// Pages of a name index one step of a bulk load's merge writes at most.
pub(crate) const LOAD_MERGE_PAGES: u32 = 4096;

/// The name indexes: of trigrams, and of 4-grams.
pub(super) const NAME_INDEXES: [&str; 2] = ["jobs_name_fts", "jobs_name_grams"];

/// The database file as the store opened it. Its path names it until someone removes it or
/// renames another file over it (`rm`, `mv`); then what the server writes goes to a file no
/// name reaches, lost at its next start. (A copy written over it in place keeps the file,
/// and is not seen.)
#[derive(Debug, Clone)]
pub(super) struct OpenedFile {
    path: PathBuf,
    /// The file's device and inode when it was opened (where the system tells them).
    id: Option<(u64, u64)>,
    /// The path could not be looked up at the last look (shared by the clones): warned of
    /// once until it can be again, not at every look.
    unreadable: Arc<AtomicBool>,
    /// What happened to the file, once seen (shared by the clones): the writer is then
    /// closed for good, so a file put back where it was changes nothing until a restart.
    gone: Arc<std::sync::OnceLock<String>>,
}

impl OpenedFile {
    pub(super) fn of(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            id: file_id(path).ok(),
            unreadable: Arc::default(),
            gone: Arc::default(),
        }
    }

    /// What happened to the file, once its path no longer names it. (A path that cannot
    /// be looked up for another reason, a permission or a network mount's hiccup, is looked
    /// at again later.)
    pub(super) fn lost(&self) -> Option<String> {
        if let Some(gone) = self.gone.get() {
            return Some(gone.clone());
        }
        let opened = self.id?;
        let looked = file_id(&self.path);
        let unreadable = matches!(&looked, Err(e) if e.kind() != std::io::ErrorKind::NotFound);
        let was_unreadable = self.unreadable.swap(unreadable, Ordering::Relaxed);
        let how = match looked {
            Ok(now) if now == opened => {
                if was_unreadable {
                    tracing::info!(path = %self.path.display(), "the database file can be looked at again");
                }
                return None;
            }
            Ok(_) => "replaced",
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "removed",
            Err(e) => {
                if !was_unreadable {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot look at the database file (warned once until it can be)");
                }
                return None;
            }
        };
        let gone = format!(
            "the database file {} was {how} while the server ran: changes are refused; \
             restart the server",
            self.path.display()
        );
        Some(self.gone.get_or_init(|| gone).clone())
    }
}

#[cfg(unix)]
fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &Path) -> std::io::Result<(u64, u64)> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] on `pool` (a connection of its own), so
/// commits do not stop to copy pages into the database file; at a tick when no batch of
/// creates was committed since the last one, takes one step of merging the name indexes (on
/// the writer's connection, `write`, between batches), until a step finds nothing to merge
/// or creates come again. Ends with the writer, or once the database file is removed or
/// replaced: then it closes the writer's pool, and every change is refused (503) rather
/// than written where it would be lost.
pub(super) async fn run(
    pool: SqlitePool,
    write: SqlitePool,
    (writer, file): (WriterWatch, OpenedFile),
    cache: WriterCache,
) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut seen, mut merged) = (u64::MAX, false);
    loop {
        tick.tick().await;
        if !writer.alive() {
            pool.close().await;
            return;
        }
        if let Some(lost) = file.lost() {
            tracing::error!("{lost}");
            write.close().await;
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
        if !cache.is_large() {
            if let Err(e) = cache.fit(&pool, &write).await {
                tracing::warn!(error = %e, "sizing the writer's page cache failed");
            }
        }
        let now = writer.batches();
        if now != seen {
            (seen, merged) = (now, false);
            continue;
        }
        if !merged {
            let step = match write.acquire().await {
                Ok(mut conn) => merge_name_indexes(&mut conn, IDLE_MERGE_PAGES).await,
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

/// One step of merging each name index's segments, writing at most about `pages` pages
/// each; true when it merged anything (FTS5 reports work by two changes or more).
pub(crate) async fn merge_name_indexes(
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

/// SQLite's lock page lies at this offset of the file: no data is ever stored there.
const LOCK_PAGE_OFFSET: i64 = 1 << 30;
/// The writer's page cache, in KiB, while the file is smaller than [`LOCK_PAGE_OFFSET`].
const SMALL_WRITER_CACHE_KIB: i64 = 8 * 1024;
/// The writer's page cache, in KiB, once the file is larger: inserts then touch index pages
/// all over a file the cache cannot hold, and every page kept saves a read.
const LARGE_WRITER_CACHE_KIB: i64 = 32 * 1024;

/// The writer's page cache for a database file of `bytes`.
///
/// SQLite's B-tree, when it balances pages, numbers one for a moment with the lock page's
/// number; in a file smaller than that offset, the page cache is left holding a page past
/// the end of the file, and the commit that follows walks the whole cache to drop it. A
/// large cache makes every commit of a small database slower, and takes memory, while a
/// large database, whose file holds the lock page, gains from it (docs/benchmarks.md).
fn writer_cache_kib(bytes: i64) -> i64 {
    if bytes < LOCK_PAGE_OFFSET {
        SMALL_WRITER_CACHE_KIB
    } else {
        LARGE_WRITER_CACHE_KIB
    }
}

/// The size of the writer's page cache, kept for its connection ([`Self::on_connect`]) and
/// changed as the file grows ([`Self::fit`]).
#[derive(Clone)]
pub(super) struct WriterCache(Arc<AtomicI64>);

impl Default for WriterCache {
    fn default() -> Self {
        Self(Arc::new(AtomicI64::new(SMALL_WRITER_CACHE_KIB)))
    }
}

/// The hook of the writer's pool that sets a new connection's page cache.
type OnConnect = dyn for<'c> Fn(
        &'c mut sqlx::SqliteConnection,
        sqlx::pool::PoolConnectionMetadata,
    ) -> futures::future::BoxFuture<'c, Result<(), sqlx::Error>>
    + Send
    + Sync;

impl WriterCache {
    fn pragma(kib: i64) -> String {
        format!("PRAGMA cache_size = -{kib}")
    }

    /// True once the cache is the large one (the file has passed the lock page).
    pub(super) fn is_large(&self) -> bool {
        self.0.load(Ordering::Relaxed) >= LARGE_WRITER_CACHE_KIB
    }

    /// Sets the cache of each new connection of the writer's pool.
    pub(super) fn on_connect(&self) -> Box<OnConnect> {
        let size = self.0.clone();
        Box::new(move |conn, _| {
            let pragma = Self::pragma(size.load(Ordering::Relaxed));
            Box::pin(async move { sqlx::query(&pragma).execute(conn).await.map(drop) })
        })
    }

    /// Sizes the cache to the file as `read` now sees it; a new size is set on the writer's
    /// connection (`write`).
    pub(super) async fn fit(&self, read: &SqlitePool, write: &SqlitePool) -> StoreResult<()> {
        let bytes: i64 = sqlx::query_scalar(
            "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()",
        )
        .fetch_one(read)
        .await?;
        let kib = writer_cache_kib(bytes);
        let was = self.0.swap(kib, Ordering::Relaxed);
        if was != kib {
            if let Err(e) = sqlx::query(&Self::pragma(kib)).execute(write).await {
                self.0.store(was, Ordering::Relaxed);
                return Err(e.into());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_file_that_cannot_be_looked_up_is_warned_of_once_and_one_lost_stays_lost() {
        let dir = tempfile::tempdir().expect("dir");
        let folder = dir.path().join("data");
        std::fs::create_dir(&folder).expect("folder");
        let path = folder.join("jobs.db");
        std::fs::write(&path, b"").expect("file");
        let file = OpenedFile::of(&path);
        let clone = file.clone();
        assert_eq!(file.lost(), None);
        // A file where the folder was: the path cannot be looked up (not a folder), which
        // says nothing of the database file itself.
        std::fs::rename(&folder, dir.path().join("moved")).expect("move");
        std::fs::write(&folder, b"").expect("a file in the way");
        assert_eq!(file.lost(), None);
        assert!(
            clone.unreadable.load(Ordering::Relaxed),
            "the clones share what was warned"
        );
        assert_eq!(clone.lost(), None);
        std::fs::remove_file(&folder).expect("remove");
        std::fs::rename(dir.path().join("moved"), &folder).expect("back");
        assert_eq!(file.lost(), None);
        assert!(!file.unreadable.load(Ordering::Relaxed));
        std::fs::rename(&path, dir.path().join("aside.db")).expect("move the file away");
        assert!(file.lost().is_some_and(|lost| lost.contains("removed")));
        // Put back, it is still lost: the writer was closed when the loss was seen.
        std::fs::rename(dir.path().join("aside.db"), &path).expect("back");
        assert!(clone.lost().is_some_and(|lost| lost.contains("removed")));
    }

    #[test]
    fn the_writer_cache_grows_once_the_file_holds_the_lock_page() {
        assert_eq!(writer_cache_kib(0), SMALL_WRITER_CACHE_KIB);
        assert_eq!(
            writer_cache_kib(LOCK_PAGE_OFFSET - 4096),
            SMALL_WRITER_CACHE_KIB
        );
        assert_eq!(writer_cache_kib(LOCK_PAGE_OFFSET), LARGE_WRITER_CACHE_KIB);
        assert_eq!(
            writer_cache_kib(8 * LOCK_PAGE_OFFSET),
            LARGE_WRITER_CACHE_KIB
        );
    }
}
