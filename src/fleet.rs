//! What this replica knows of the fleet between database round trips: which servers are
//! registered (checked against the database now and then), and when each was last heard
//! from (written to the database in batches). An idle agent's long polls then cost the
//! database nothing.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::domain::ProjectId;
use crate::store::Store;

/// How long a server found registered is taken to be registered without asking again.
const KNOWN_FOR: Duration = Duration::from_secs(300);
/// How often the times servers were heard from are written to the database.
pub const SEEN_FLUSH_EVERY: Duration = Duration::from_secs(10);
/// Entries each table holds at most.
const MAX_ENTRIES: usize = 100_000;

/// Registered servers and when they were last heard from.
#[derive(Debug, Default)]
pub struct Fleet {
    known: DashMap<(ProjectId, String), Instant>,
    seen: DashMap<(ProjectId, String), i64>,
}

impl Fleet {
    /// Notes that `server` was heard from at `now_ms`; true when it is registered in
    /// `project` (asked of the database at most every few minutes, by writing the time).
    pub async fn heard_from(
        &self,
        store: &dyn Store,
        project: &ProjectId,
        server: &str,
        now_ms: i64,
    ) -> crate::store::StoreResult<bool> {
        let key = (project.clone(), server.to_string());
        let fresh = self
            .known
            .get(&key)
            .is_some_and(|since| since.elapsed() < KNOWN_FOR);
        if !fresh {
            if !store.touch_server(project, server, now_ms).await? {
                self.known.remove(&key);
                return Ok(false);
            }
            if self.known.len() >= MAX_ENTRIES {
                self.known.clear();
            }
            self.known.insert(key, Instant::now());
            return Ok(true);
        }
        if self.seen.len() < MAX_ENTRIES {
            self.seen.insert(key, now_ms);
        }
        Ok(true)
    }

    /// Forgets that `server` is registered (it was registered again, or removed).
    pub fn forget(&self, project: &ProjectId, server: &str) {
        self.known.remove(&(project.clone(), server.to_string()));
    }

    /// Writes the times servers were heard from since the last flush, in one statement.
    pub async fn flush(&self, store: &dyn Store) -> crate::store::StoreResult<()> {
        let seen: Vec<(ProjectId, String, i64)> = self
            .seen
            .iter()
            .map(|e| (e.key().0.clone(), e.key().1.clone(), *e.value()))
            .collect();
        if seen.is_empty() {
            return Ok(());
        }
        for (project, server, at) in &seen {
            self.seen
                .remove_if(&(project.clone(), server.clone()), |_, v| v == at);
        }
        store.touch_servers(&seen).await
    }
}
