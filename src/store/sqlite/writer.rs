//! The group-commit writer of SQLite's creates: concurrent creates wait in a queue, and the
//! writer commits all that are waiting in one transaction (one `fsync`). A bad request fails
//! alone, and every request gets its own outcome.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use crate::domain::ProjectId;
use crate::store::shared::create::{create_job_alone, insert_jobs, Create};
use crate::store::wake::Wakeups;
use crate::store::{IdempotencyKey, NewJob, StoreError, StoreResult};
use crate::wire::JobDetail;

/// Most creates committed in one transaction.
const MAX_CREATE_BATCH: usize = 256;
/// Creates that may wait for the writer before callers wait to queue.
const CREATE_QUEUE: usize = 4096;

/// A create waiting for the writer.
struct PendingCreate {
    project: ProjectId,
    job: NewJob,
    idempotency: Option<IdempotencyKey>,
    reply: oneshot::Sender<StoreResult<JobDetail>>,
}

/// The queue of creates to the writer.
#[derive(Clone)]
pub(super) struct Writer {
    creates: mpsc::Sender<PendingCreate>,
}

/// What the writer's maintenance needs to see of it: whether it is still wanted, and
/// whether it committed anything lately.
pub(super) struct WriterWatch {
    store: mpsc::WeakSender<PendingCreate>,
    batches: Arc<AtomicU64>,
}

impl WriterWatch {
    /// False once every [`Writer`] is gone.
    pub(super) fn alive(&self) -> bool {
        self.store.upgrade().is_some()
    }

    /// Batches committed so far.
    pub(super) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

impl Writer {
    /// Starts the writer on `pool` (SQLite's one writing connection); each create it commits
    /// wakes the agents waiting for its servers.
    pub(super) fn start(pool: SqlitePool, wakeups: Arc<Wakeups>) -> (Self, WriterWatch) {
        let (creates, queue) = mpsc::channel(CREATE_QUEUE);
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(pool, queue, batches.clone(), wakeups));
        let watch = WriterWatch {
            store: creates.downgrade(),
            batches: batches.clone(),
        };
        (Self { creates }, watch)
    }

    /// Creates a job, committed together with the others waiting.
    pub(super) async fn create(
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
        let stopped = || StoreError::Unavailable("the database writer has stopped".into());
        self.creates.send(pending).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }
}

/// Commits every create waiting in `queue` in one transaction, until every sender is gone;
/// counts the batches in `batches`.
async fn run(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<PendingCreate>,
    batches: Arc<AtomicU64>,
    wakeups: Arc<Wakeups>,
) {
    let mut batch = Vec::with_capacity(MAX_CREATE_BATCH);
    while queue.recv_many(&mut batch, MAX_CREATE_BATCH).await > 0 {
        batches.fetch_add(1, Ordering::Relaxed);
        let outcomes = create_batch(&pool, &batch).await;
        for (pending, outcome) in batch.iter().zip(&outcomes) {
            if let Ok(job) = outcome {
                for task in &job.tasks {
                    wakeups.wake(pending.project.as_str(), &task.server_id);
                }
            }
        }
        if outcomes.iter().any(Result::is_ok) {
            wakeups.events_written();
        }
        for (pending, outcome) in batch.drain(..).zip(outcomes) {
            // The caller may have gone away; its job stays created, as with any write.
            let _ = pending.reply.send(outcome);
        }
    }
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
                outcomes.extend(now.iter().map(|_| Err(e.shared())));
            }
        }
        rest = later;
    }
    outcomes
}

/// The pools [`create_job_alone`] runs a create on: the writer's connection alone.
struct WriterPool<'a>(&'a SqlitePool);

impl crate::store::shared::SqlPools for WriterPool<'_> {
    type Db = sqlx::Sqlite;
    fn read_pool(&self) -> &SqlitePool {
        self.0
    }
    fn write_pool(&self) -> &SqlitePool {
        self.0
    }
    fn events_written(&self) {
        // The writer wakes the watch once its batch is done.
    }
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
    let mut tx = crate::store::shared::begin_write(pool).await?;
    match insert_jobs(&mut *tx, &each).await {
        Ok(Some(inserted)) => {
            tx.commit().await?;
            crate::metrics::jobs_created(inserted.created);
            Ok(inserted.outcomes)
        }
        // `None` (a key taken by a concurrent transaction) cannot happen with one writer;
        // like any other failure, it is sorted out by running every create alone.
        Ok(None) | Err(_) => {
            tx.rollback().await?;
            let mut alone = Vec::with_capacity(each.len());
            for c in &each {
                let pools = WriterPool(pool);
                alone.push(create_job_alone(&pools, c.project, c.job, c.idempotency).await);
            }
            Ok(alone)
        }
    }
}
