//! Slipway's state store: a sqlx pool, numbered migrations, and the transactional event outbox.
//!
//! The embedded backend is SQLite in WAL mode with `synchronous=FULL`, so a committed
//! transaction is on disk before any request that made it is acknowledged. Domain crates use
//! [`Db`] and write portable SQL (`$1` placeholders, no SQLite-only functions) so a PostgreSQL
//! backend can follow behind the same interface.

pub mod console;
pub mod deploy;
pub mod events;
pub mod group;
pub mod paging;
pub mod pipelines;
pub mod tags;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Pool, Row};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The database the store runs on.
pub type Db = sqlx::Sqlite;
/// A pooled connection handle.
pub type DbPool = Pool<Db>;
/// A connection to the store (what a transaction dereferences to).
pub type Conn = sqlx::SqliteConnection;
/// A transaction on the store.
pub type Tx<'a> = sqlx::Transaction<'a, Db>;

pub use sqlx;

/// Errors from the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("write: {0}")]
    Group(String),
    #[error("migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
}

/// The error every domain crate returns: the AWS exception name of a failure the caller
/// caused (`Api`), or an internal failure whose detail belongs in the log only.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{code}: {message}")]
    Api { code: &'static str, message: String },
    #[error("internal: {0}")]
    Internal(String),
}

/// A [`ServiceError::Api`] with the service's exception name `code`.
pub fn service_err(code: &'static str, message: impl Into<String>) -> ServiceError {
    ServiceError::Api {
        code,
        message: message.into(),
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        ServiceError::Internal(e.to_string())
    }
}
impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        ServiceError::Internal(e.to_string())
    }
}
impl From<std::io::Error> for ServiceError {
    fn from(e: std::io::Error) -> Self {
        ServiceError::Internal(e.to_string())
    }
}

/// (version, name, SQL) of every migration, applied in order exactly once.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (2, "ssm", include_str!("../migrations/sqlite/0002_ssm.sql")),
    (3, "s3", include_str!("../migrations/sqlite/0003_s3.sql")),
    (
        4,
        "codebuild",
        include_str!("../migrations/sqlite/0004_codebuild.sql"),
    ),
    (
        5,
        "reports",
        include_str!("../migrations/sqlite/0005_reports.sql"),
    ),
    (
        6,
        "log_format",
        include_str!("../migrations/sqlite/0006_log_format.sql"),
    ),
    (
        7,
        "build_git_credentials",
        include_str!("../migrations/sqlite/0007_build_git_credentials.sql"),
    ),
    (
        8,
        "log_chunk_blobs",
        include_str!("../migrations/sqlite/0008_log_chunk_blobs.sql"),
    ),
    (
        9,
        "log_seq",
        include_str!("../migrations/sqlite/0009_log_seq.sql"),
    ),
    (
        10,
        "regions",
        include_str!("../migrations/sqlite/0010_regions.sql"),
    ),
    (
        11,
        "codepipeline",
        include_str!("../migrations/sqlite/0011_codepipeline.sql"),
    ),
    (
        12,
        "cp_webhooks",
        include_str!("../migrations/sqlite/0012_cp_webhooks.sql"),
    ),
    (
        13,
        "build_idempotency",
        include_str!("../migrations/sqlite/0013_build_idempotency.sql"),
    ),
    (
        14,
        "codedeploy",
        include_str!("../migrations/sqlite/0014_codedeploy.sql"),
    ),
    (
        15,
        "cp_events_after",
        include_str!("../migrations/sqlite/0015_cp_events_after.sql"),
    ),
    (
        16,
        "console",
        include_str!("../migrations/sqlite/0016_console.sql"),
    ),
];

/// The store: cheap to clone, shared by every service.
#[derive(Clone, Debug)]
pub struct Store {
    pool: DbPool,
    writer: group::GroupWriter,
}

impl Store {
    /// Opens (creating if needed) the SQLite database at `DIR/slipway.db` and migrates it.
    /// `default_region` is the region a migration gives to what existed before resources
    /// had regions (the server's `--region`).
    pub async fn open(data_dir: &Path, default_region: &str) -> Result<Store, StoreError> {
        let url = format!("sqlite://{}", data_dir.join("slipway.db").display());
        let options = SqliteConnectOptions::from_str(&url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            // A transaction dropped unfinished (its task cancelled) queues a rollback; when
            // a connection comes back still inside one once that has run, it is closed (which
            // rolls back and frees the write lock) instead of going back to the pool, where
            // every later write would fail ("begin_with at non-zero transaction depth") or
            // wait on its lock.
            .after_release(|conn, _| {
                Box::pin(async move {
                    use sqlx::Connection as _;
                    if !conn.is_in_transaction() {
                        return Ok(true);
                    }
                    conn.ping().await?;
                    let keep = !conn.is_in_transaction();
                    if !keep {
                        tracing::warn!(
                            "a database connection was left inside a transaction; closing it"
                        );
                    }
                    Ok(keep)
                })
            })
            .connect_with(options.clone())
            .await?;
        let writer = group::GroupWriter::start(options).await?;
        let store = Store { pool, writer };
        store.migrate(default_region).await?;
        Ok(store)
    }

    pub fn pool(&self) -> &DbPool {
        &self.pool
    }

    /// Runs a small write through group commit ([`group`]): it shares a transaction (and
    /// its `fsync`) with the writes that arrive with it, in a savepoint of its own, and is
    /// answered once committed.
    pub async fn grouped<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c> FnOnce(&'c mut Conn) -> futures_util::future::BoxFuture<'c, Result<T, E>>
            + Send
            + 'static,
    {
        self.writer.write(f).await
    }

    /// Begins a transaction that takes the write lock at once (`BEGIN IMMEDIATE` on SQLite),
    /// so read-then-write sequences inside it cannot race with another writer.
    pub async fn begin_write(&self) -> Result<Tx<'static>, StoreError> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// Applies the migrations not applied yet, all in one transaction. Foreign keys are off
    /// while they run (a migration may rebuild a parent table; dropping the old one must not
    /// cascade) and checked, every one, before the commit. A migration reads the default
    /// region from the temporary table `migration_settings`.
    async fn migrate(&self, default_region: &str) -> Result<(), StoreError> {
        use sqlx::Connection as _;
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA foreign_keys = OFF")
            .execute(&mut *conn)
            .await?;
        let result = async {
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)",
            )
            .execute(&mut *tx)
            .await?;
            sqlx::query("CREATE TEMP TABLE IF NOT EXISTS migration_settings (default_region TEXT NOT NULL)")
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM migration_settings")
                .execute(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO migration_settings (default_region) VALUES ($1)")
                .bind(default_region)
                .execute(&mut *tx)
                .await?;
            let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.get::<i64, _>(0))
                .collect();
            for (version, name, sql) in MIGRATIONS {
                if applied.contains(version) {
                    continue;
                }
                let fail = |source| StoreError::Migration {
                    version: *version,
                    source,
                };
                sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(fail)?;
                let broken = sqlx::query("PRAGMA foreign_key_check")
                    .fetch_all(&mut *tx)
                    .await
                    .map_err(fail)?;
                if !broken.is_empty() {
                    return Err(fail(sqlx::Error::Protocol(format!(
                        "{} rows violate foreign keys (first in table {})",
                        broken.len(),
                        broken[0].get::<String, _>(0)
                    ))));
                }
                sqlx::query(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                )
                .bind(version)
                .bind(name)
                .bind(now())
                .execute(&mut *tx)
                .await?;
                tracing::info!(version, name, "applied migration");
            }
            sqlx::query("DROP TABLE migration_settings")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        // Back on for every later user of this pooled connection, whatever happened.
        sqlx::query("PRAGMA foreign_keys = ON")
            .execute(&mut *conn)
            .await?;
        result
    }
}

/// Seconds since the Unix epoch, as stored in `REAL` timestamp columns.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

/// Whether an error is a uniqueness violation (a name already taken).
pub fn is_unique_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(d) if d.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn migrations_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "us-east-1").await.unwrap();
        drop(s);
        let s = Store::open(dir.path(), "us-east-1").await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM schema_migrations")
            .fetch_one(s.pool())
            .await
            .unwrap();
        assert_eq!(n, MIGRATIONS.len() as i64);
    }

    async fn counter_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path(), "us-east-1").await.unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER PRIMARY KEY)")
            .execute(s.pool())
            .await
            .unwrap();
        (dir, s)
    }

    async fn insert(s: &Store, n: i64, fail: bool) -> Result<i64, ServiceError> {
        s.grouped(move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (n) VALUES ($1)")
                    .bind(n)
                    .execute(&mut *conn)
                    .await?;
                if fail {
                    return Err(service_err("Nope", "asked to fail"));
                }
                if n < 0 {
                    panic!("a write that panics");
                }
                Ok(n)
            })
        })
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn grouped_writes_commit_together_and_fail_alone() {
        let (_dir, s) = counter_store().await;
        let mut tasks = Vec::new();
        for n in 0..300 {
            let s = s.clone();
            // Every 7th write fails after its insert; every 50th panics (as a negative n).
            tasks.push(tokio::spawn(async move {
                let n2 = if n % 50 == 49 { -n } else { n };
                (n, insert(&s, n2, n % 7 == 3).await)
            }));
        }
        let mut ok = Vec::new();
        for t in tasks {
            let (n, r) = t.await.unwrap();
            match r {
                Ok(v) => {
                    assert_eq!(v, n);
                    ok.push(n)
                }
                Err(ServiceError::Api { code, .. }) => assert_eq!((code, n % 7), ("Nope", 3)),
                Err(ServiceError::Internal(m)) => {
                    assert!(n % 50 == 49 && m.contains("panicked"), "{n}: {m}")
                }
            }
        }
        // Exactly the writes that succeeded are there: the failed ones were rolled back
        // to their savepoints without taking the rest of their batch with them.
        let rows: Vec<i64> = sqlx::query_scalar("SELECT n FROM t ORDER BY n")
            .fetch_all(s.pool())
            .await
            .unwrap();
        assert_eq!(rows, ok);
        assert_eq!(rows.len(), 300 - 43 - 6 + 1);
    }

    #[tokio::test]
    async fn a_grouped_write_sees_the_writes_before_it_and_is_durable() {
        let (dir, s) = counter_store().await;
        insert(&s, 1, false).await.unwrap();
        // A duplicate key fails in SQL, inside its savepoint.
        assert!(matches!(
            insert(&s, 1, false).await,
            Err(ServiceError::Internal(_))
        ));
        insert(&s, 2, false).await.unwrap();
        drop(s);
        let s = Store::open(dir.path(), "us-east-1").await.unwrap();
        let rows: Vec<i64> = sqlx::query_scalar("SELECT n FROM t ORDER BY n")
            .fetch_all(s.pool())
            .await
            .unwrap();
        assert_eq!(rows, vec![1, 2]);
    }
}
