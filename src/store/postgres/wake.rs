//! Wake-ups across replicas: new tasks notify `litejobs_tasks` (a trigger, migration 0011)
//! with their project and server, and new job events notify `litejobs_events` (migration
//! 0012); every replica listens, waking its waiting agents and its live watch.

use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::store::wake::Wakeups;
use crate::store::StoreResult;

/// The channel new tasks are announced on.
const CHANNEL: &str = "litejobs_tasks";
/// The channel new job events are announced on.
const EVENTS_CHANNEL: &str = "litejobs_events";
/// Pause before listening again after the listener failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Wake-ups fed by `LISTEN litejobs_tasks` on a connection of their own, made with
/// `options`; the listening ends with the last reference to them.
pub(super) async fn listen(options: &PgConnectOptions) -> StoreResult<Arc<Wakeups>> {
    let wakeups = Arc::new(Wakeups::default());
    // A pool of its one connection, kept for good (as `PgListener::connect` makes).
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_lazy_with(options.clone());
    let mut listener = PgListener::connect_with(&pool).await?;
    listener.listen_all([CHANNEL, EVENTS_CHANNEL]).await?;
    tokio::spawn(run(listener, Arc::downgrade(&wakeups)));
    Ok(wakeups)
}

async fn run(mut listener: PgListener, wakeups: Weak<Wakeups>) {
    loop {
        let received = listener.try_recv().await;
        let Some(wakeups) = wakeups.upgrade() else {
            return;
        };
        match received {
            Ok(Some(notification)) if notification.channel() == EVENTS_CHANNEL => {
                wakeups.events_written();
            }
            Ok(Some(notification)) => {
                if let Some((project, server)) = notification.payload().split_once(' ') {
                    wakeups.wake(project, server);
                }
            }
            // The connection was lost (and is opened again at the next call): what was
            // notified meanwhile is lost, so every waiter looks for itself.
            Ok(None) => wakeups.wake_all(),
            Err(e) => {
                tracing::warn!(error = %e, "listening for new tasks failed; retrying");
                wakeups.wake_all();
                drop(wakeups);
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}
