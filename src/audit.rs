//! The audit trail: who changed what, from where, and every denied or failed
//! authentication, kept in the database.
//!
//! The HTTP layer records a request when it changes something (the actions of
//! [`action_of`]) or when its authentication failed; the administration commands record
//! themselves. Records are written by one task per process in batches (each batch as the
//! previous one is done, so a busy server writes fewer, larger transactions); a request's
//! answer does not wait for its record. What is queued when the process is killed outright
//! (at most one batch, milliseconds of requests) is lost; a graceful stop writes it all.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::store::{AuditRecord, Store};

/// Records queued at most; beyond, new ones are dropped (and counted).
const QUEUE: usize = 16_384;
/// Records written at most in one transaction.
const BATCH: usize = 1000;
/// Records that arrive within this time of a batch's first join it: one commit (one sync to
/// disk) per period at most, so that the trail does not halve the creates' rate on SQLite's
/// one writer.
const GATHER: Duration = Duration::from_millis(100);
/// Pause after the database refused a batch, which is tried again.
const RETRY_AFTER: Duration = Duration::from_millis(500);
/// Longest pause between tries while the database is out of reach.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
/// Tries of a batch the database refuses for another reason than being out of reach, before
/// it is given up (and logged).
const TRIES: u32 = 10;

/// `user_id` and `user_name` of a caller who was not authenticated.
pub const UNKNOWN: &str = "unknown";
/// `user_id` of the administration commands' records (their `user_name` is the operating
/// system's user).
pub const ADMIN: &str = "cli";

/// The outcome of an audited request, from its status.
pub fn outcome(status: u16) -> &'static str {
    match status {
        200..=399 => "success",
        401 | 403 => "denied",
        _ => "failed",
    }
}

/// The audited action of a route template and method, if it changes something.
pub fn action_of(method: &str, route: &str) -> Option<&'static str> {
    Some(match (method, route) {
        ("POST", "/v1/{project_id}/dev-servers/jobs") => "job.create",
        ("DELETE", "/v1/{project_id}/dev-servers/jobs") => "job.delete",
        ("POST", "/v3/auth/tokens") => "token.issue",
        ("DELETE", "/v3/auth/tokens") => "token.revoke",
        ("PUT", "/v1/{project_id}/agent/servers/{server_id}") => "agent.register",
        ("POST", "/v1/{project_id}/agent/servers/{server_id}/tasks/{task_id}/result") => {
            "agent.report"
        }
        ("POST", "/console/jobs") => "job.create",
        ("POST", "/console/jobs/{id}/delete") => "job.delete",
        ("POST", "/console/login") | ("POST", "/console/project") => "token.issue",
        ("POST", "/console/logout") => "token.revoke",
        _ => return None,
    })
}

/// The ids in a request's path (its project's aside), by its route template.
pub fn path_ids(route: &str, path: &str) -> Vec<String> {
    route
        .split('/')
        .zip(path.split('/'))
        .filter(|(t, _)| t.starts_with('{') && *t != "{project_id}")
        .map(|(_, v)| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect()
}

/// Characters of a client's text (an access key id, an id in a path) a record keeps at most:
/// a valid one is shorter, and a request refused for its credentials writes no more than
/// this whatever it sent.
pub const MAX_FIELD_CHARS: usize = 128;

/// `text` as a record keeps it: its first [`MAX_FIELD_CHARS`] characters, then `…` when it
/// was longer.
pub fn clipped(text: String) -> String {
    match text.char_indices().nth(MAX_FIELD_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Who made a request, as the authentication found (kept in the answer's extensions).
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub user_id: Option<String>,
    pub user_name: Option<String>,
    pub project_id: Option<String>,
    /// The access key the request was signed with.
    pub access_key: Option<String>,
}

/// The ids a request acted on (kept in the answer's extensions by its handler).
#[derive(Debug, Clone, Default)]
pub struct Resources(pub Vec<String>);

/// A second change a request made, beside the one its route names, recorded with it (kept
/// in the answer's extensions by its handler): a console project switch issues a token
/// and ends the one of the project it leaves.
#[derive(Debug, Clone)]
pub struct AlsoDone {
    pub action: &'static str,
    pub project_id: Option<String>,
}

/// The process's audit writer (or none, when the trail is turned off).
pub struct AuditLog {
    queue: Option<mpsc::Sender<AuditRecord>>,
    dropped: AtomicU64,
}

impl AuditLog {
    /// A writer to `store`; the task it answers ends once the last reference to the log
    /// is gone and everything queued is written.
    pub fn start(store: Arc<dyn Store>) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let writer = tokio::spawn(write(store, receiver));
        let log = Arc::new(Self {
            queue: Some(queue),
            dropped: AtomicU64::new(0),
        });
        (log, writer)
    }

    /// A log that records nothing (`serve --no-audit`).
    pub fn off() -> Arc<Self> {
        Arc::new(Self {
            queue: None,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues a record; a full queue drops it (counted and logged).
    pub fn record(&self, record: AuditRecord) {
        let Some(queue) = &self.queue else {
            return;
        };
        if queue.try_send(record).is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            metrics::counter!(crate::metrics::AUDIT_DROPPED).increment(1);
            if dropped.is_power_of_two() {
                tracing::error!(
                    dropped,
                    "the audit queue is full: records are being dropped"
                );
            }
        }
    }
}

async fn write(store: Arc<dyn Store>, mut receiver: mpsc::Receiver<AuditRecord>) {
    let mut batch = Vec::with_capacity(BATCH);
    while receiver.recv_many(&mut batch, BATCH).await > 0 {
        if batch.len() < BATCH {
            tokio::time::sleep(GATHER).await;
            while batch.len() < BATCH {
                match receiver.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
        }
        // While the database is out of reach the batch waits for it (new records wait in
        // the queue, and only its overflow is lost); a batch it refuses is given up after a
        // few tries, so that it cannot hold up the ones behind it.
        let (mut tries, mut pause) = (0, RETRY_AFTER);
        while let Err(e) = store.record_audit(&batch).await {
            if !e.is_retryable() {
                tries += 1;
            }
            if tries >= TRIES {
                tracing::error!(error = %e, records = batch.len(), "cannot write audit records; they are lost");
                break;
            }
            if pause >= MAX_RETRY_AFTER {
                tracing::warn!(
                    error = %e,
                    records = batch.len(),
                    "cannot write audit records yet; trying again"
                );
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_AFTER);
        }
        batch.clear();
    }
}
