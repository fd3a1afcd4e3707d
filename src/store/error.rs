//! What can go wrong in the store, classified where it happens.
//!
//! The drivers' errors (sqlx's, rusqlite's) are sorted here, and only here, into the kinds
//! the rest of the service acts on: a client's mistake the store found (unknown servers, a
//! reused idempotency key, a conflict, something missing), the database being out of reach
//! for now (try again later), a transaction that kept losing to concurrent ones, or a fault
//! of the service itself.

use std::time::Duration;

/// The cause of a failure, kept for the log.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Failures of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A job names servers the project does not have.
    #[error("unknown servers in this project: {}", .0.join(", "))]
    UnknownServers(Vec<String>),
    /// An `X-Client-Token` already used with another request (another body, or another
    /// user's).
    #[error(
        "the X-Client-Token was already used for another request (another body, or another user's)"
    )]
    IdempotencyConflict,
    /// A unique name or id is taken.
    #[error("{0} already exists")]
    Conflict(String),
    /// Something the request names does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The database cannot be reached, refuses connections or work, or is out of
    /// connections, space or time: trying again later may succeed.
    #[error("the database is unavailable: {0}")]
    Unavailable(#[source] Cause),
    /// A transaction lost to concurrent ones (a serialization failure or a deadlock) every
    /// time it was tried.
    #[error("the transaction kept conflicting with concurrent ones: {0}")]
    Transient(#[source] Cause),
    /// A fault of the service: malformed stored data, a failed migration, a bug.
    #[error("{0}")]
    Internal(#[source] Cause),
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// A fault of the service, described by `what`.
    pub fn internal(what: impl Into<String>) -> Self {
        Self::Internal(what.into().into())
    }

    /// True when the database is out of reach or busy, or a transaction kept conflicting:
    /// the same request may succeed later (answered 503 with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Transient(_))
    }

    /// A key conflict or a missing reference the database found, said of `what` (the
    /// user, the grant, …); other failures as they are.
    pub fn naming(self, what: &str) -> Self {
        match self {
            Self::Conflict(generic) if generic == KEY_TAKEN => Self::Conflict(what.to_string()),
            Self::NotFound(generic) if generic == MISSING_REFERENCE => {
                Self::NotFound(format!("what {what} refers to"))
            }
            other => other,
        }
    }

    /// The same kind of failure, for another request that shared the failed work (creates
    /// committed together).
    pub fn shared(&self) -> Self {
        let cause = || -> Cause { self.to_string().into() };
        match self {
            Self::UnknownServers(ids) => Self::UnknownServers(ids.clone()),
            Self::IdempotencyConflict => Self::IdempotencyConflict,
            Self::Conflict(what) => Self::Conflict(what.clone()),
            Self::NotFound(what) => Self::NotFound(what.clone()),
            Self::Unavailable(_) => Self::Unavailable(cause()),
            Self::Transient(_) => Self::Transient(cause()),
            Self::Internal(_) => Self::Internal(cause()),
        }
    }
}

/// PostgreSQL error classes and codes that say the database is out of reach or refuses work
/// for now: connection exceptions (`08`), insufficient resources (`53`), operator
/// intervention (`57`: shutdown, `cannot_connect_now`, a cancelled statement, an idle
/// session ended), a database that accepts no connections (`55000`), a read-only one
/// (`25006`), one that does not exist (`3D000`, while it is being created or restored), and
/// one without the service's tables (`42P01`: emptied or replaced under the server; `/ready`
/// says so).
fn postgres_unavailable(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57")
        || matches!(code, "55000" | "25006" | "3D000" | "42P01")
}

/// PostgreSQL codes of a transaction that lost to concurrent ones.
fn postgres_transient(code: &str) -> bool {
    matches!(code, "40001" | "40P01")
}

/// SQLite primary result codes that say the database is busy or cannot take writes now:
/// `SQLITE_BUSY`, `SQLITE_LOCKED`, `SQLITE_NOMEM`, `SQLITE_READONLY`, `SQLITE_IOERR`,
/// `SQLITE_FULL` and `SQLITE_CANTOPEN`.
fn sqlite_unavailable(primary: i32) -> bool {
    matches!(primary, 5 | 6 | 7 | 8 | 10 | 13 | 14)
}

/// What a unique-key violation is said to be before [`StoreError::naming`] names it.
const KEY_TAKEN: &str = "a row with the same key";
/// What a foreign-key violation is said to be before [`StoreError::naming`] names it.
const MISSING_REFERENCE: &str = "a row the change refers to";

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::PoolTimedOut | E::PoolClosed | E::Io(_) | E::Tls(_) | E::WorkerCrashed => {
                Self::Unavailable(e.into())
            }
            // A message the driver did not expect: the connection is in no state to go on.
            E::Protocol(_) => Self::Unavailable(e.into()),
            E::Database(db) if db.is_unique_violation() => Self::Conflict(KEY_TAKEN.into()),
            E::Database(db) if db.is_foreign_key_violation() => {
                Self::NotFound(MISSING_REFERENCE.into())
            }
            E::Database(db) => {
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    let primary = db
                        .code()
                        .and_then(|c| c.parse::<i32>().ok())
                        .map_or(0, |c| c & 0xff);
                    return if sqlite_unavailable(primary) {
                        Self::Unavailable(e.into())
                    } else {
                        Self::Internal(e.into())
                    };
                }
                match db.code() {
                    Some(code) if postgres_transient(&code) => Self::Transient(e.into()),
                    Some(code) if postgres_unavailable(&code) => Self::Unavailable(e.into()),
                    _ => Self::Internal(e.into()),
                }
            }
            _ => Self::Internal(e.into()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        let primary = match &e {
            rusqlite::Error::SqliteFailure(failure, _) => Some(failure.extended_code & 0xff),
            _ => None,
        };
        if primary.is_some_and(sqlite_unavailable) {
            Self::Unavailable(e.into())
        } else {
            Self::Internal(e.into())
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(inner) => match Self::from(inner) {
                Self::Internal(cause) => {
                    Self::Internal(format!("migration failed: {cause}").into())
                }
                other => other,
            },
            other => Self::Internal(format!("migration failed: {other}").into()),
        }
    }
}

/// Times a transaction that lost to concurrent ones is tried again before the failure is
/// answered.
const TRANSIENT_RETRIES: u32 = 5;

/// Runs `attempt` until it succeeds, fails for good, or lost to concurrent transactions
/// [`TRANSIENT_RETRIES`] times more, waiting a few jittered milliseconds between tries.
pub async fn retry_transient<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    let mut tries = 0u32;
    loop {
        match attempt().await {
            Err(StoreError::Transient(_)) if tries < TRANSIENT_RETRIES => {
                tries += 1;
                let jitter = rand::random::<u64>() % 5;
                let wait = Duration::from_millis(u64::from(tries) * 2 + jitter);
                tokio::time::sleep(wait).await;
            }
            done => return done,
        }
    }
}

/// Runs a read again, once, when the database was unavailable for it (a pooled connection
/// the server had ended, a restart in progress): a read changes nothing, so trying it twice
/// is safe, and the second try gets a new connection. Not when no connection could be had
/// within the pool's timeout: the pool already kept trying for that long, and a second
/// wait would only double the time to the answer.
pub async fn retry_read<T, F, Fut>(mut attempt: F) -> StoreResult<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = StoreResult<T>>,
{
    match attempt().await {
        Err(StoreError::Unavailable(cause)) if !is_pool_timeout(&cause) => attempt().await,
        done => done,
    }
}

/// True when `cause` is the pool giving up on finding a connection.
fn is_pool_timeout(cause: &Cause) -> bool {
    matches!(
        cause.downcast_ref::<sqlx::Error>(),
        Some(sqlx::Error::PoolTimedOut)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_codes_are_sorted_into_kinds() {
        for code in [
            "08006", "08001", "53300", "57P01", "57P03", "57014", "55000", "25006", "3D000",
            "42P01",
        ] {
            assert!(postgres_unavailable(code), "{code}");
            assert!(!postgres_transient(code), "{code}");
        }
        for code in ["40001", "40P01"] {
            assert!(postgres_transient(code), "{code}");
        }
        for code in ["23505", "22P02", "42703", "XX000"] {
            assert!(
                !postgres_unavailable(code) && !postgres_transient(code),
                "{code}"
            );
        }
    }

    /// Calls `retry_read` on a read that always fails with `failure`; how often it ran.
    async fn tries_of(failure: fn() -> sqlx::Error) -> u32 {
        let tries = std::sync::atomic::AtomicU32::new(0);
        let answer: StoreResult<()> = retry_read(|| async {
            tries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Err(StoreError::from(failure()))
        })
        .await;
        assert!(matches!(answer, Err(StoreError::Unavailable(_))));
        tries.into_inner()
    }

    #[tokio::test]
    async fn a_read_is_tried_again_on_a_lost_connection_but_not_after_the_pool_gave_up() {
        let lost = || sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into());
        assert_eq!(tries_of(lost).await, 2);
        assert_eq!(tries_of(|| sqlx::Error::PoolTimedOut).await, 1);
    }

    #[test]
    fn driver_failures_become_kinds() {
        assert!(matches!(
            StoreError::from(sqlx::Error::PoolTimedOut),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            StoreError::from(sqlx::Error::RowNotFound),
            StoreError::Internal(_)
        ));
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        assert!(matches!(StoreError::from(busy), StoreError::Unavailable(_)));
        let constraint = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CONSTRAINT),
            None,
        );
        assert!(matches!(
            StoreError::from(constraint),
            StoreError::Internal(_)
        ));
    }

    #[tokio::test]
    async fn transient_failures_are_tried_again_and_others_are_not() {
        let mut tries = 0;
        let done: StoreResult<u32> = retry_transient(|| {
            tries += 1;
            let now = tries;
            async move {
                if now < 3 {
                    Err(StoreError::Transient("serialization failure".into()))
                } else {
                    Ok(now)
                }
            }
        })
        .await;
        assert_eq!(done.expect("third try"), 3);
        let mut tries = 0;
        let failed: StoreResult<()> = retry_transient(|| {
            tries += 1;
            async { Err(StoreError::Unavailable("refused".into())) }
        })
        .await;
        assert!(failed.is_err());
        assert_eq!(tries, 1);
        let mut tries = 0;
        let lost: StoreResult<()> = retry_transient(|| {
            tries += 1;
            async { Err(StoreError::Transient("deadlock".into())) }
        })
        .await;
        assert!(matches!(lost, Err(StoreError::Transient(_))));
        assert_eq!(tries, 1 + TRANSIENT_RETRIES);
    }
}
