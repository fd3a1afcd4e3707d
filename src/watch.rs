//! The live watch: every replica tails the job events the store writes (in the transactions
//! that change jobs) and hands them to its watchers, who each keep those of their project
//! that match their filter.
//!
//! One reader per replica (the hub) follows the events in `seq` order, woken when events
//! are written here or, on PostgreSQL, on another replica (`NOTIFY`); it reads nothing
//! while nobody watches. On PostgreSQL a `seq` is handed out before its transaction
//! commits, so a later `seq` may become visible first: the hub holds back at such a gap
//! until it fills, or until every transaction that was writing job events when the gap
//! was seen has ended and a read after that still finds it (a transaction that rolled back
//! leaves its gap for good); at most [`GAP_MAX_WAIT`], or [`GAP_WAIT`] where the database
//! cannot tell its writers. A slow commit is so delivered in order, not skipped, also by a
//! hub that starts reading (its replica's first watcher, or the first after nobody watched):
//! it starts before a recent hole in the order rather than after the last event. A watcher
//! resuming after the last event it saw (`Last-Event-ID`) reads what it missed from the
//! database, up to where the hub stands, then goes on with the hub.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::domain::ProjectId;
use crate::store::{JobEvent, Store, StoreResult};

/// Longest time the hub waits at a gap in the events' order, where the database cannot
/// tell which transactions are still writing.
pub const GAP_WAIT: Duration = Duration::from_secs(5);
/// Longest time the hub waits at a gap while transactions that were writing when it was
/// seen are still running (one of them may hold its `seq`).
pub const GAP_MAX_WAIT: Duration = Duration::from_secs(300);

/// How often the hub looks at a gap again.
const GAP_POLL: Duration = Duration::from_millis(50);

/// A gap in the events' order the hub waits at.
struct Gap {
    /// The first `seq` missing.
    at: i64,
    since: Instant,
    /// The transactions writing when the gap was seen, where the database tells them.
    writers: Option<Vec<String>>,
    /// Every one of `writers` has ended since: what the next read finds is final.
    settled: bool,
}

impl Gap {
    /// True when the hub may go on past the gap: read again after its writers ended (or,
    /// not knowing them, after [`GAP_WAIT`]), the missing events were rolled back.
    fn given_up(&self) -> bool {
        match self.writers {
            Some(_) => self.settled || self.since.elapsed() >= GAP_MAX_WAIT,
            None => self.since.elapsed() >= GAP_WAIT,
        }
    }
}
/// Events read at once.
const BATCH: i64 = 500;
/// Events before the last one a hub that starts reading looks for holes among.
const START_SCAN: i64 = 4 * BATCH;
/// How recent a hole a hub that starts reading starts before: a transaction that commits
/// later than this after a later one may be passed by a replica's first watcher.
const START_LOOKBACK: Duration = Duration::from_secs(30);
/// Events a slow watcher may fall behind before it reads them again from the database.
const CHANNEL: usize = 4096;
/// Pause after the database failed a read.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// This replica's reader of job events.
pub struct Hub {
    store: Arc<dyn Store>,
    sender: broadcast::Sender<Arc<JobEvent>>,
    /// The last event handed to the watchers (every event up to it was, or was given up).
    cursor: AtomicI64,
    /// The cursor fell behind while nobody watched: the next watcher moves it to the end.
    stale: AtomicBool,
    /// Held while a watcher moves a stale cursor, so that another arriving meanwhile gets
    /// the position moved to.
    moving: tokio::sync::Mutex<()>,
    started: tokio::sync::OnceCell<()>,
    shutdown: CancellationToken,
}

impl Hub {
    pub fn new(store: Arc<dyn Store>, shutdown: CancellationToken) -> Arc<Self> {
        let (sender, _) = broadcast::channel(CHANNEL);
        Arc::new(Self {
            store,
            sender,
            cursor: AtomicI64::new(0),
            stale: AtomicBool::new(false),
            moving: tokio::sync::Mutex::new(()),
            started: tokio::sync::OnceCell::new(),
            shutdown,
        })
    }

    /// A subscription to the events after the hub's position now, and that position.
    pub async fn subscribe(
        self: &Arc<Self>,
    ) -> StoreResult<(broadcast::Receiver<Arc<JobEvent>>, i64)> {
        let hub = self.clone();
        self.started
            .get_or_try_init(|| async move {
                let start = hub.start_position().await?;
                hub.cursor.store(start, Ordering::Release);
                tokio::spawn(hub.clone().run());
                Ok::<(), crate::store::StoreError>(())
            })
            .await?;
        // Subscribed before the position is read: nothing after it can be missed. (Events
        // the hub hands out again after a move of its cursor are told apart by their `seq`.)
        let receiver = self.sender.subscribe();
        let _moving = self.moving.lock().await;
        if self.stale.load(Ordering::Acquire) {
            let start = self.start_position().await?;
            self.cursor.fetch_max(start, Ordering::AcqRel);
            self.stale.store(false, Ordering::Release);
            // What was committed after a hole it starts before is read now, not at the next
            // write (the wake-ups of those events were spent while nobody watched).
            self.store.wakeups().events_written();
        }
        Ok((receiver, self.cursor.load(Ordering::Acquire)))
    }

    /// Where a hub that was not reading starts: after the last event committed; but where
    /// the database commits out of `seq` order (PostgreSQL: it can tell its writers), before
    /// the first hole among the last [`START_SCAN`] events that the next one followed within
    /// [`START_LOOKBACK`]: a transaction still running may hold that `seq`, and the hub then
    /// waits at the gap as it does at any other, rather than passing a change that commits
    /// later. (An older hole is passed, as a running hub would have given up most of them:
    /// waiting at each rolled-back one while a long transaction runs would hold every new
    /// watcher up.)
    async fn start_position(&self) -> StoreResult<i64> {
        let last = self.store.last_job_event().await?;
        if self.store.writers_now().await?.is_none() {
            return Ok(last);
        }
        let since =
            crate::domain::now_ms() - i64::try_from(START_LOOKBACK.as_millis()).unwrap_or(i64::MAX);
        let mut expected = (last - START_SCAN).max(0) + 1;
        while expected <= last {
            let events = self
                .store
                .job_events_after(None, expected - 1, BATCH)
                .await?;
            let mut read_on = false;
            for event in events.iter().take_while(|e| e.seq <= last) {
                if event.seq != expected && event.at >= since {
                    return Ok(expected - 1);
                }
                expected = event.seq + 1;
                read_on = true;
            }
            if !read_on {
                break;
            }
        }
        Ok(last)
    }

    /// The next of the events of `project` after `after` up to the hub's position `until`,
    /// from the database (a resumed watcher's catching up): at most one batch, and whether
    /// more may follow the last of them. A watcher reads on batch by batch as its client
    /// takes the events, so a resume from long ago holds one batch in memory, not the day's.
    pub async fn history_batch(
        &self,
        project: &ProjectId,
        after: i64,
        until: i64,
    ) -> StoreResult<(Vec<JobEvent>, bool)> {
        if after >= until {
            return Ok((Vec::new(), false));
        }
        let mut events = self
            .store
            .job_events_after(Some(project), after, BATCH)
            .await?;
        let full = events.len() as i64 == BATCH;
        let past = events.iter().position(|e| e.seq > until);
        if let Some(end) = past {
            events.truncate(end);
        }
        let more = full && past.is_none() && events.last().is_some_and(|e| e.seq < until);
        Ok((events, more))
    }

    async fn run(self: Arc<Self>) {
        let signal = self.store.wakeups().events();
        let mut gap: Option<Gap> = None;
        loop {
            let generation = signal.generation();
            if self.sender.receiver_count() > 0 {
                match self.read(&mut gap).await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read job events; retrying");
                        tokio::select! {
                            () = self.shutdown.cancelled() => return,
                            () = tokio::time::sleep(RETRY_AFTER) => {}
                        }
                        continue;
                    }
                }
            } else {
                // Nobody watches: what is written meanwhile is nobody's; the next watcher
                // starts from the end.
                self.stale.store(true, Ordering::Release);
                gap = None;
            }
            // At a gap, look again every little while (a commit that fills it wakes the hub
            // too).
            let gap_pause = gap.as_ref().map(|_| GAP_POLL);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = signal.woken_after(generation) => {}
                () = sleep_or_never(gap_pause) => {}
            }
        }
    }

    /// Hands the events after the cursor to the watchers, up to a gap; true when there may
    /// be more to read at once.
    async fn read(&self, gap: &mut Option<Gap>) -> StoreResult<bool> {
        let cursor = self.cursor.load(Ordering::Acquire);
        let events = self.store.job_events_after(None, cursor, BATCH).await?;
        let full = events.len() as i64 == BATCH;
        let mut expected = cursor + 1;
        for event in events {
            if event.seq != expected {
                match gap {
                    Some(g) if g.at == expected && g.given_up() => {
                        tracing::debug!(from = expected, to = event.seq - 1, "giving up a gap");
                    }
                    Some(g) if g.at == expected => {
                        // Its writers all ended: read once more, and what is missing then
                        // was rolled back.
                        if let Some(writers) = &g.writers {
                            if !g.settled && !self.store.any_writing(writers).await.unwrap_or(true)
                            {
                                g.settled = true;
                                return Ok(true);
                            }
                        }
                        return Ok(false);
                    }
                    _ => {
                        let writers = self.store.writers_now().await.unwrap_or(None);
                        *gap = Some(Gap {
                            at: expected,
                            since: Instant::now(),
                            writers,
                            settled: false,
                        });
                        return Ok(false);
                    }
                }
            }
            *gap = None;
            expected = event.seq + 1;
            self.cursor.fetch_max(event.seq, Ordering::AcqRel);
            // No receiver left: nothing to do with it.
            let _ = self.sender.send(Arc::new(event));
        }
        Ok(full && gap.is_none())
    }
}

async fn sleep_or_never(pause: Option<Duration>) {
    match pause {
        Some(p) => tokio::time::sleep(p).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::store::testing::{add_servers, new_job};

    /// Waits (at most 10 s) until `done` holds.
    async fn until(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "never came to pass");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A hub whose watchers all went, and that a new one starts again before a hole a
    /// rolled-back transaction left among the last events, reads on from there at once,
    /// though nothing is written after the watcher arrives.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_hub_started_before_a_hole_reads_on_at_once() {
        let Some(db) = crate::testkit::test_database().await else {
            return;
        };
        let store = crate::store::open(&db.url).await.expect("open");
        let project = ProjectId::parse("p1").expect("project");
        add_servers(store.as_ref(), &project, &["s1"]).await;
        let job = |name: &str| {
            let mut job = new_job(name, &["s1"]);
            job.now_ms = crate::domain::now_ms();
            job
        };
        let shutdown = CancellationToken::new();
        let hub = Hub::new(store.clone(), shutdown.clone());
        let (first_watcher, _) = hub.subscribe().await.expect("subscribe");
        drop(first_watcher);
        let first = store
            .create_job(&project, job("first"), None)
            .await
            .expect("job");
        until(|| hub.stale.load(Ordering::Acquire)).await;
        // A transaction takes a `seq`, a later change commits, and the transaction rolls back.
        let (mut slow, hole) = crate::testkit::uncommitted_job_event(&db.url, &first.id).await;
        let second = store
            .create_job(&project, job("second"), None)
            .await
            .expect("job");
        sqlx::query("ROLLBACK")
            .execute(&mut slow)
            .await
            .expect("rollback");
        let (mut watcher, start) = hub.subscribe().await.expect("subscribe");
        assert!(start < hole, "starts before the hole: {start} < {hole}");
        let event = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let event = watcher.recv().await.expect("an event");
                if event.job_id == second.id {
                    return event;
                }
            }
        })
        .await
        .expect("the later change within 10 s");
        assert!(event.seq > hole);
        shutdown.cancel();
    }

    /// An old hole is passed: a hub that starts reading does not wait at it, even while a
    /// transaction that writes is open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hub_starts_after_an_old_hole() {
        let Some(db) = crate::testkit::test_database().await else {
            return;
        };
        let store = crate::store::open(&db.url).await.expect("open");
        let insert = |at: i64| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO job_events (project_id, job_id, kind, item, task, visible, at) \
                 VALUES ('p1', 'j1', 'created', '{}', NULL, true, $1) RETURNING seq",
            )
            .bind(at)
        };
        let old = crate::domain::now_ms() - 2 * START_LOOKBACK.as_millis() as i64;
        let mut conn = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query("BEGIN")
            .execute(&mut conn)
            .await
            .expect("begin");
        insert(old).fetch_one(&mut conn).await.expect("hole");
        sqlx::query("ROLLBACK")
            .execute(&mut conn)
            .await
            .expect("rollback");
        let last = insert(old)
            .fetch_one(&mut conn)
            .await
            .expect("after the hole");
        // A transaction that writes, open while the hub starts.
        let mut writer = sqlx::PgConnection::connect(&db.url).await.expect("connect");
        sqlx::query("BEGIN")
            .execute(&mut writer)
            .await
            .expect("begin");
        sqlx::query("SELECT pg_current_xact_id()")
            .execute(&mut writer)
            .await
            .expect("xid");
        let shutdown = CancellationToken::new();
        let hub = Hub::new(store, shutdown.clone());
        let (_watcher, start) = hub.subscribe().await.expect("subscribe");
        assert_eq!(start, last);
        shutdown.cancel();
    }
}
