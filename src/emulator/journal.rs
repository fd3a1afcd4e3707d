//! The request journal: the last requests the server received, for a test to assert what
//! its code sent (method, path, query, operation, project, key, status, error code, time).

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// One request as received and answered. `status` 0: the connection was dropped.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Order of answer, from 1: a request is numbered once it is answered, so a reader of
    /// the entries after a `seq` never passes one still being answered. (Requests that
    /// overlap are in the order their answers were made, which `at` and `elapsed_ms` show.)
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

    /// At most `limit` entries, oldest first: the first after `after` (a `seq`), as a cursor
    /// reads on; without one, the newest.
    pub fn entries(&self, after: Option<u64>, limit: usize) -> Vec<Entry> {
        let guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let matching = guard.1.iter().filter(|e| after.is_none_or(|a| e.seq > a));
        let skip = match after {
            Some(_) => 0,
            None => guard.1.len().saturating_sub(limit),
        };
        matching.skip(skip).take(limit).cloned().collect()
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
            .entries(Some(0), 10)
            .into_iter()
            .map(|e| (e.seq, e.path))
            .collect();
        assert_eq!(kept, vec![(2, "/b".to_string()), (3, "/c".to_string())]);
        assert_eq!(journal.entries(Some(2), 10).len(), 1);
        assert_eq!(journal.entries(None, 1)[0].path, "/c");
    }

    #[test]
    fn a_cursor_reads_on_from_where_it_stands() {
        let journal = Journal::new(100);
        for n in 0..60 {
            journal.record(entry(&format!("/{n}")));
        }
        let seqs = |after, limit| -> Vec<u64> {
            journal
                .entries(after, limit)
                .iter()
                .map(|e| e.seq)
                .collect()
        };
        assert_eq!(seqs(Some(2), 2), [3, 4]);
        assert_eq!(seqs(Some(58), 5), [59, 60]);
        assert_eq!(seqs(None, 2), [59, 60]);
        assert_eq!(seqs(None, usize::MAX).len(), 60);
    }
}
