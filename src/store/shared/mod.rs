//! The SQL both backends share, written once.
//!
//! SQLite accepts PostgreSQL's `$N` placeholders, and everything here is SQL both speak, so
//! these functions run unchanged on either database. They are written against [`Exec`], a
//! connection that runs a [`Statement`] (text and values), rather than generically over
//! `sqlx::Database`: sqlx's generic bounds (every bound type, the executor, the row index)
//! would have to be restated at every function, as Rust does not carry them along from one
//! trait; here they are spelled out once per backend, in [`impl_exec!`].
//!
//! - [`iam`]: users, keys, projects, policies, grants and tokens: all of [`super::IamStore`].
//! - [`jobs`]: all of [`super::JobStore`]: reading and deleting jobs, ending and leasing
//!   tasks, servers, retention (the list and the creates are each backend's own:
//!   [`super::Backend`]).
//! - [`create`]: creating jobs with their tasks and idempotency keys, several in one
//!   transaction.

pub mod activity;
pub mod create;
pub mod iam;
pub mod jobs;
pub mod leases;
pub mod seed;

use std::borrow::Cow;
use std::fmt::Write as _;
use std::future::Future;

use super::{StoreError, StoreResult};

/// A value bound to a statement's placeholder; text is borrowed where the caller has it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Text(Cow<'a, str>),
    OptText(Option<Cow<'a, str>>),
    Int(i64),
    OptInt(Option<i64>),
    Bool(bool),
}

impl<'a> From<&'a str> for Value<'a> {
    fn from(v: &'a str) -> Self {
        Self::Text(Cow::Borrowed(v))
    }
}

impl From<String> for Value<'_> {
    fn from(v: String) -> Self {
        Self::Text(Cow::Owned(v))
    }
}

impl<'a> From<&'a String> for Value<'a> {
    fn from(v: &'a String) -> Self {
        Self::Text(Cow::Borrowed(v))
    }
}

impl From<Option<String>> for Value<'_> {
    fn from(v: Option<String>) -> Self {
        Self::OptText(v.map(Cow::Owned))
    }
}

impl<'a> From<Option<&'a str>> for Value<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Self::OptText(v.map(Cow::Borrowed))
    }
}

impl<'a> From<&'a Option<String>> for Value<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Self::OptText(v.as_deref().map(Cow::Borrowed))
    }
}

impl From<i64> for Value<'_> {
    fn from(v: i64) -> Self {
        Self::Int(v)
    }
}

impl From<Option<i64>> for Value<'_> {
    fn from(v: Option<i64>) -> Self {
        Self::OptInt(v)
    }
}

impl From<bool> for Value<'_> {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

/// A statement: SQL text with `$1`, `$2`, … placeholders, and their values in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement<'a> {
    pub sql: String,
    pub values: Vec<Value<'a>>,
}

impl<'a> Statement<'a> {
    pub fn new(sql: impl Into<String>) -> Self {
        Self {
            sql: sql.into(),
            values: Vec::new(),
        }
    }

    /// Binds the next placeholder.
    pub fn bind(mut self, value: impl Into<Value<'a>>) -> Self {
        self.values.push(value.into());
        self
    }

    /// Appends text.
    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }

    /// Appends a placeholder (`$N`, numbered after those already bound) and its value.
    pub fn push_bind(&mut self, value: impl Into<Value<'a>>) -> &mut Self {
        self.values.push(value.into());
        // Writing to a String cannot fail.
        let _ = write!(self.sql, "${}", self.values.len());
        self
    }

    /// Appends `(v, v, …)`, one placeholder a value.
    pub fn push_tuple(&mut self, values: impl IntoIterator<Item = Value<'a>>) -> &mut Self {
        self.push("(");
        for (i, value) in values.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.push_bind(value);
        }
        self.push(")")
    }
}

/// A row a statement answered, read by column position.
pub trait SqlRow {
    fn text(&self, i: usize) -> StoreResult<String>;
    fn opt_text(&self, i: usize) -> StoreResult<Option<String>>;
    fn int(&self, i: usize) -> StoreResult<i64>;
    fn opt_int(&self, i: usize) -> StoreResult<Option<i64>>;
    fn boolean(&self, i: usize) -> StoreResult<bool>;
}

/// A database connection that runs statements (a pooled one, or one in a transaction).
pub trait Exec: Send {
    type Row: SqlRow + Send;
    /// Every row the statement answers.
    fn rows(
        &mut self,
        s: Statement<'_>,
    ) -> impl Future<Output = StoreResult<Vec<Self::Row>>> + Send;
    /// The first row the statement answers, if any.
    fn row(
        &mut self,
        s: Statement<'_>,
    ) -> impl Future<Output = StoreResult<Option<Self::Row>>> + Send;
    /// Runs the statement; answers the rows it changed.
    fn run(&mut self, s: Statement<'_>) -> impl Future<Output = StoreResult<u64>> + Send;
}

/// The pools of a store whose SQL is shared: `read` for queries, `write` for changes
/// (SQLite's single writing connection; on PostgreSQL the same pool).
pub trait SqlPools: Send + Sync {
    type Db: sqlx::Database<Connection: Exec>;
    fn read_pool(&self) -> &sqlx::Pool<Self::Db>;
    fn write_pool(&self) -> &sqlx::Pool<Self::Db>;
    /// Job events were committed: wakes this replica's live watch.
    fn events_written(&self);
}

/// True when `Db` is SQLite: for the few statements the two backends write differently.
pub fn is_sqlite<Db: sqlx::Database>() -> bool {
    Db::NAME == <sqlx::Sqlite as sqlx::Database>::NAME
}

/// Opens a transaction on `pool`, the pool of a store's changes. On SQLite it takes the
/// database's write lock at once (`BEGIN IMMEDIATE`, waiting for it as long as the busy
/// timeout allows): a transaction that reads first and writes after would otherwise fail at
/// its first write, without waiting, whenever another connection (another process, such as
/// the administration commands) committed since its read began.
///
/// The transaction is begun in a task of its own: a request that goes away while its
/// `BEGIN` is on its way would otherwise leave the connection in a transaction the driver
/// does not count (sqlx 0.8 rolls back, when given up, only a transaction whose `BEGIN` was
/// answered), and the pool would lend it on, a later statement then running inside it, to
/// be committed or rolled back with whatever came next on the connection. Begun whole, a
/// transaction given up is rolled back when dropped.
pub async fn begin_write<Db: sqlx::Database>(
    pool: &sqlx::Pool<Db>,
) -> Result<sqlx::Transaction<'static, Db>, sqlx::Error> {
    let pool = pool.clone();
    let begun = tokio::spawn(async move {
        if is_sqlite::<Db>() {
            pool.begin_with("BEGIN IMMEDIATE").await
        } else {
            pool.begin().await
        }
    });
    begun
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("a transaction's begin failed: {e}")))?
}

/// Implements [`Exec`] for a sqlx connection type and [`SqlRow`] for its row type: the one
/// place the shared SQL meets a driver's types.
///
/// `$sql` gives the statement's text as the driver takes it (SQLite's placeholders are
/// rewritten, see `sqlite::placeholders`).
macro_rules! impl_exec {
    ($conn:ty, $db:ty, $row:ty, $sql:path) => {
        impl $crate::store::shared::SqlRow for $row {
            fn text(&self, i: usize) -> $crate::store::StoreResult<String> {
                Ok(sqlx::Row::try_get(self, i)?)
            }
            fn opt_text(&self, i: usize) -> $crate::store::StoreResult<Option<String>> {
                Ok(sqlx::Row::try_get(self, i)?)
            }
            fn int(&self, i: usize) -> $crate::store::StoreResult<i64> {
                Ok(sqlx::Row::try_get(self, i)?)
            }
            fn opt_int(&self, i: usize) -> $crate::store::StoreResult<Option<i64>> {
                Ok(sqlx::Row::try_get(self, i)?)
            }
            fn boolean(&self, i: usize) -> $crate::store::StoreResult<bool> {
                Ok(sqlx::Row::try_get(self, i)?)
            }
        }

        impl $crate::store::shared::Exec for $conn {
            type Row = $row;
            async fn rows(
                &mut self,
                s: $crate::store::shared::Statement<'_>,
            ) -> $crate::store::StoreResult<Vec<$row>> {
                let sql = $sql(&s.sql);
                let query = $crate::store::shared::bind_all(sqlx::query::<$db>(&sql), &s.values);
                let answer = query.fetch_all(self).await;
                $crate::metrics::statement(&answer);
                Ok(answer?)
            }
            async fn row(
                &mut self,
                s: $crate::store::shared::Statement<'_>,
            ) -> $crate::store::StoreResult<Option<$row>> {
                let sql = $sql(&s.sql);
                let query = $crate::store::shared::bind_all(sqlx::query::<$db>(&sql), &s.values);
                let answer = query.fetch_optional(self).await;
                $crate::metrics::statement(&answer);
                Ok(answer?)
            }
            async fn run(
                &mut self,
                s: $crate::store::shared::Statement<'_>,
            ) -> $crate::store::StoreResult<u64> {
                let sql = $sql(&s.sql);
                let query = $crate::store::shared::bind_all(sqlx::query::<$db>(&sql), &s.values);
                let answer = query.execute(self).await;
                $crate::metrics::statement(&answer);
                Ok(answer?.rows_affected())
            }
        }
    };
}
pub(crate) use impl_exec;

/// A statement's text unchanged (PostgreSQL takes `$N` placeholders as written).
pub(crate) fn as_written(sql: &str) -> std::borrow::Cow<'_, str> {
    std::borrow::Cow::Borrowed(sql)
}

/// Why the database is not ready for `migrator`'s schema (a migration of it not applied, or
/// failed), or `None` when it is.
pub async fn unapplied_migrations<P: SqlPools>(
    pools: &P,
    migrator: &sqlx::migrate::Migrator,
) -> StoreResult<Option<String>> {
    let mut conn = pools.read_pool().acquire().await?;
    let table = Statement::new(if is_sqlite::<P::Db>() {
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'"
    } else {
        "SELECT CAST(COUNT(*) AS BIGINT) FROM pg_tables \
         WHERE schemaname = current_schema() AND tablename = '_sqlx_migrations'"
    });
    let tables = conn.rows(table).await?;
    if tables
        .first()
        .map(|row| row.int(0))
        .transpose()?
        .unwrap_or(0)
        == 0
    {
        return Ok(Some(
            "the database holds none of the service's tables (a new or emptied database, or \
             not litejobs'): run `litejobs migrate`, or restore it"
                .to_string(),
        ));
    }
    let s = Statement::new("SELECT version FROM _sqlx_migrations WHERE success = TRUE");
    let applied: std::collections::HashSet<i64> = conn
        .rows(s)
        .await?
        .iter()
        .map(|row| row.int(0))
        .collect::<StoreResult<_>>()?;
    let missing: Vec<String> = migrator
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .map(|m| format!("{} ({})", m.version, m.description))
        .collect();
    Ok((!missing.is_empty()).then(|| {
        format!(
            "the database lacks migrations this server needs: {}",
            missing.join(", ")
        )
    }))
}

/// Binds `values` to `query` in order.
pub(crate) fn bind_all<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    values: &'q [Value<'_>],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<&'q str>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for value in values {
        query = match value {
            Value::Text(v) => query.bind(v.as_ref()),
            Value::OptText(v) => query.bind(v.as_deref()),
            Value::Int(v) => query.bind(*v),
            Value::OptInt(v) => query.bind(*v),
            Value::Bool(v) => query.bind(*v),
        };
    }
    query
}

/// Decodes a JSON column.
pub fn parse_json<T: serde::de::DeserializeOwned>(what: &str, raw: &str) -> StoreResult<T> {
    serde_json::from_str(raw).map_err(|e| StoreError::internal(format!("{what}: {e}")))
}

/// Encodes a value for a JSON column.
pub fn to_json<T: serde::Serialize>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{Statement, Value};

    #[test]
    fn placeholders_are_numbered_in_the_order_values_are_bound() {
        let mut s = Statement::new("SELECT 1 FROM t WHERE a = $1").bind("x");
        s.push(" AND b IN ")
            .push_tuple([Value::Int(1), Value::Int(2)])
            .push(" AND c = ")
            .push_bind(true);
        assert_eq!(
            s.sql,
            "SELECT 1 FROM t WHERE a = $1 AND b IN ($2, $3) AND c = $4"
        );
        assert_eq!(
            s.values,
            vec![
                Value::Text("x".into()),
                Value::Int(1),
                Value::Int(2),
                Value::Bool(true)
            ]
        );
    }
}
