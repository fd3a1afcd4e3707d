//! SQLite's upkeep beside the writer: a checkpointer copies committed pages from the WAL into
//! the database file on a connection of its own, off the commit path, and while no create is
//! waiting the name indexes' segments are merged a step at a time.

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

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] on `pool` (a connection of its own), so
/// commits do not stop to copy pages into the database file; at a tick when no batch of
/// creates was committed since the last one, takes one step of merging the name indexes (on
/// the writer's connection, `write`, between batches), until a step finds nothing to merge
/// or creates come again. Ends with the writer.
pub(super) async fn run(pool: SqlitePool, write: SqlitePool, writer: WriterWatch) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut seen, mut merged) = (u64::MAX, false);
    loop {
        tick.tick().await;
        if !writer.alive() {
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
