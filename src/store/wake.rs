//! Wake-ups of node agents waiting for their server's tasks, instead of each waiting agent
//! asking the database again and again.
//!
//! Every (project, server) has a slot: a generation that grows when tasks may have become
//! runnable on that server (a job was created for it, here or, on PostgreSQL, on another
//! replica through `LISTEN`/`NOTIFY`), and the waiters to wake then. A lease request that
//! found nothing marks its slot idle, until the generation moves or the first lease held on
//! the server's tasks ends (a lapsed lease makes its task runnable again without a
//! notification): until then, further lease requests wait without asking the database.
//! Should notifications be lost (the listener's connection dropped), every slot is woken and
//! its idle mark forgotten; and an idle mark is never trusted for longer than
//! [`IDLE_RECHECK`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;

/// Longest time an idle mark is trusted without asking the database again.
pub const IDLE_RECHECK: Duration = Duration::from_secs(300);
/// Slots kept at most; beyond, they are all forgotten (and their waiters woken).
const MAX_SLOTS: usize = 100_000;

/// One server's slot.
#[derive(Debug, Default)]
pub struct Slot {
    notify: Notify,
    generation: AtomicU64,
    /// The generation the server was found without runnable tasks at, and until when
    /// (epoch ms) that holds at most.
    idle: Mutex<Option<(u64, i64)>>,
}

impl Slot {
    /// The current generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// True when the server is known to have no runnable task at `now_ms`: it was found so
    /// at the current generation, and no lease has ended since.
    pub fn known_idle(&self, now_ms: i64) -> bool {
        self.idle_until().is_some_and(|until| now_ms < until)
    }

    /// Until when (epoch ms) the server is known to have no runnable task, if it is.
    pub fn idle_until(&self) -> Option<i64> {
        let idle = *self.idle.lock().unwrap_or_else(|e| e.into_inner());
        idle.filter(|(generation, _)| *generation == self.generation())
            .map(|(_, until)| until)
    }

    /// Marks the server found without runnable tasks at `generation`, until `until`.
    pub fn mark_idle(&self, generation: u64, until: i64) {
        *self.idle.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, until));
    }

    /// Waits until the slot is woken after `generation` (at once if it already was).
    pub async fn woken_after(&self, generation: u64) {
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.generation() != generation {
            return;
        }
        notified.await;
    }

    fn wake(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }
}

/// The slots of the servers agents wait for, on this replica; and the slot of job events,
/// which the live watch waits on.
#[derive(Debug, Default)]
pub struct Wakeups {
    slots: DashMap<(String, String), Arc<Slot>>,
    events: Slot,
    /// Wake-ups of every slot (listener reconnections), counted.
    resets: AtomicU64,
}

impl Wakeups {
    /// The slot of `server` in `project`.
    pub fn slot(&self, project: &str, server: &str) -> Arc<Slot> {
        let key = (project.to_string(), server.to_string());
        if let Some(slot) = self.slots.get(&key) {
            return slot.clone();
        }
        if self.slots.len() >= MAX_SLOTS {
            self.wake_all();
            self.slots.clear();
        }
        self.slots.entry(key).or_default().clone()
    }

    /// Tasks may have become runnable on `server` of `project`: wakes its waiters.
    pub fn wake(&self, project: &str, server: &str) {
        let key = (project.to_string(), server.to_string());
        if let Some(slot) = self.slots.get(&key) {
            slot.wake();
        }
    }

    /// The slot woken when job events were written (here or, on PostgreSQL, on another
    /// replica).
    pub fn events(&self) -> &Slot {
        &self.events
    }

    /// Job events were written: wakes the watch.
    pub fn events_written(&self) {
        self.events.wake();
    }

    /// Wakes every slot (notifications may have been lost).
    pub fn wake_all(&self) {
        self.resets.fetch_add(1, Ordering::Relaxed);
        self.events.wake();
        for slot in self.slots.iter() {
            slot.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_ends_the_idle_mark_and_the_wait() {
        let wakeups = Arc::new(Wakeups::default());
        let slot = wakeups.slot("p", "s1");
        let generation = slot.generation();
        slot.mark_idle(generation, 1_000);
        assert!(slot.known_idle(500));
        assert!(!slot.known_idle(1_000), "past the first lease's end");
        let waiting = {
            let slot = slot.clone();
            tokio::spawn(async move { slot.woken_after(generation).await })
        };
        tokio::task::yield_now().await;
        wakeups.wake("p", "other");
        assert!(slot.known_idle(500), "another server's wake-up");
        wakeups.wake("p", "s1");
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken")
            .expect("task");
        assert!(!slot.known_idle(500));
        // A wake-up before the wait begins is not missed.
        let generation = slot.generation();
        wakeups.wake("p", "s1");
        tokio::time::timeout(Duration::from_secs(5), slot.woken_after(generation))
            .await
            .expect("not missed");
        wakeups.wake_all();
        assert_eq!(slot.generation(), generation + 2);
    }
}
