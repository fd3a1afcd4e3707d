//! The request journal: the last requests the server received, for a test to assert what
//! its code sent (method, path, query, operation, project, key, status, error code, time).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// One request as received and answered. `status` 0: the connection was dropped.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Order of arrival, from 1.
    pub seq: u64,
    /// Epoch milliseconds of the answer.
    pub at: i64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub operation: String,
    pub route: String,
    pub project_id: Option<String>,
    pub access_key: Option<String>,
    pub status: u16,
    pub error_code: Option<String>,
    pub elapsed_ms: f64,
    pub request_id: String,
}

/// The last `capacity` entries, oldest first.
pub struct Journal {
    capacity: usize,
    entries: Mutex<(u64, VecDeque<Entry>)>,
}

impl Journal {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            entries: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Keeps `entry`, numbered after the last; the oldest goes when full.
    pub fn record(&self, mut entry: Entry) {
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (seq, entries) = &mut *guard;
        *seq += 1;
        entry.seq = *seq;
        if entries.len() == self.capacity {
            entries.pop_front();
        }
        entries.push_back(entry);
    }

    /// The entries after `after` (a `seq`), oldest first, at most `limit` of the newest.
    pub fn entries(&self, after: u64, limit: usize) -> Vec<Entry> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let matching: Vec<&Entry> = guard.1.iter().filter(|e| e.seq > after).collect();
        let skip = matching.len().saturating_sub(limit);
        matching.into_iter().skip(skip).cloned().collect()
    }

    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str) -> Entry {
        Entry {
            seq: 0,
            at: 0,
            method: "GET".into(),
            path: path.into(),
            query: String::new(),
            operation: String::new(),
            route: String::new(),
            project_id: None,
            access_key: None,
            status: 200,
            error_code: None,
            elapsed_ms: 0.0,
            request_id: String::new(),
        }
    }

    #[test]
    fn keeps_the_last_entries_in_order() {
        let journal = Journal::new(2);
        for p in ["/a", "/b", "/c"] {
            journal.record(entry(p));
        }
        let kept: Vec<_> = journal
            .entries(0, 10)
            .into_iter()
            .map(|e| (e.seq, e.path))
            .collect();
        assert_eq!(kept, vec![(2, "/b".to_string()), (3, "/c".to_string())]);
        assert_eq!(journal.entries(2, 10).len(), 1);
        assert_eq!(journal.entries(0, 1)[0].path, "/c");
    }
}
