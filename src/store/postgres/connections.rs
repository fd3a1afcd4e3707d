//! The list's own connections to PostgreSQL, taken and given back without a pool's round
//! trips: a sqlx pool asks the server whether a connection still answers when it gets it
//! back (and, unless told otherwise, again when it lends it), a round trip beside each
//! page's one. A connection is given back only after its statements succeeded; one whose
//! statement failed, or whose request went away midway, is closed instead, and a new one is
//! opened when needed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::ConnectOptions;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::list;
use crate::domain::filter::ListJobsQuery;
use crate::domain::ProjectId;
use crate::store::list::plan::ListPlan;
use crate::store::{JobPage, StoreError, StoreResult};

/// Longest wait for a list connection: for one to be given back, or a new one to open (as the
/// pool's acquire timeout).
pub(super) const TAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a list connection is used before it is closed and another opened (as sqlx's
/// pool does), so that no server process lives on forever.
const MAX_LIFETIME: Duration = Duration::from_secs(30 * 60);

/// A set of connections with the same settings.
pub(super) struct PageConnections {
    options: PgConnectOptions,
    /// Idle connections, with when each was opened.
    idle: Mutex<Vec<(PgConnection, Instant)>>,
    permits: Semaphore,
}

/// What is read on the list's connections.
pub(super) enum Read<'a> {
    /// A page: [`list::run`]'s arguments.
    Page {
        job: (&'a ProjectId, &'a ListJobsQuery, &'a ListPlan),
        keep: bool,
        literal_limits: bool,
    },
    /// `SELECT 1`.
    Ping,
}

impl Read<'_> {
    pub(super) async fn on(&self, conn: &mut PgConnection) -> StoreResult<JobPage> {
        match self {
            Self::Page {
                job,
                keep,
                literal_limits,
            } => list::run(conn, *job, *keep, *literal_limits).await,
            Self::Ping => {
                sqlx::query("SELECT 1").execute(conn).await?;
                Ok(JobPage::empty())
            }
        }
    }
}

/// A connection taken from [`PageConnections`]; closed when dropped, unless given back.
pub(super) struct Taken<'a> {
    conn: Option<(PgConnection, Instant)>,
    from: &'a PageConnections,
    _permit: SemaphorePermit<'a>,
}

impl PageConnections {
    pub(super) fn new(options: PgConnectOptions, max: u32) -> Self {
        Self {
            options,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(max as usize),
        }
    }

    /// Runs `read` (which may be run again) on a connection of the set: an idle one, or a
    /// new one when the server ended the idle ones.
    pub(super) async fn run(&self, read: &Read<'_>) -> StoreResult<JobPage> {
        let mut taken = self.take().await?;
        // On an error the connection is closed with `taken`, not given back.
        let done = match read.on(taken.conn()?).await {
            Err(StoreError::Unavailable(_)) => {
                // The server went away (restarted, say) since the connection was last used,
                // and likely took the other idle ones too.
                drop(taken);
                self.forget_idle();
                taken = self.take().await?;
                read.on(taken.conn()?).await?
            }
            done => done?,
        };
        taken.give_back();
        Ok(done)
    }

    /// Closes the idle connections.
    fn forget_idle(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// An idle connection, or a new one; waits while all of them are lent.
    pub(super) async fn take(&self) -> StoreResult<Taken<'_>> {
        let permit = tokio::time::timeout(TAKE_TIMEOUT, self.permits.acquire())
            .await
            .map_err(|_| sqlx::Error::PoolTimedOut)?
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let conn = match idle {
            Some((conn, opened)) if opened.elapsed() < MAX_LIFETIME => (conn, opened),
            _ => (
                tokio::time::timeout(TAKE_TIMEOUT, self.options.connect())
                    .await
                    .map_err(|_| sqlx::Error::PoolTimedOut)??,
                Instant::now(),
            ),
        };
        Ok(Taken {
            conn: Some(conn),
            from: self,
            _permit: permit,
        })
    }
}

impl Taken<'_> {
    pub(super) fn conn(&mut self) -> StoreResult<&mut PgConnection> {
        self.conn
            .as_mut()
            .map(|(conn, _)| conn)
            .ok_or_else(|| StoreError::internal("a page connection was given back"))
    }

    /// Gives the connection back, its statements done.
    pub(super) fn give_back(mut self) {
        if let Some(conn) = self.conn.take() {
            self.from
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(conn);
        }
    }
}
