//! Group commit: one writer task runs the small writes that arrive together in one
//! transaction, each in its own savepoint, so a burst of concurrent writers shares one
//! `fsync` instead of queueing on SQLite's single write lock one commit at a time.
//!
//! Every write still behaves as if it ran alone: it sees the writes before it, a write that
//! fails is rolled back to its savepoint without touching the others, and no caller hears
//! "done" before the transaction holding its write is committed (durable). A failed commit
//! fails every write of the batch.

use crate::StoreError;
use futures_util::future::BoxFuture;
use futures_util::FutureExt as _;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions as _, Connection as _, SqliteConnection};
use std::panic::AssertUnwindSafe;
use tokio::sync::{mpsc, oneshot};

/// The most writes committed together; bounds how long the first of a batch waits.
const MAX_BATCH: usize = 128;

/// What the writer calls back once the batch's fate is known.
type Finish = Box<dyn FnOnce(Result<(), String>) + Send>;
/// A write: run on the writer's connection (or told it cannot run, when given `None`);
/// says whether it succeeded and how to report the outcome.
type Job = Box<
    dyn for<'c> FnOnce(Option<&'c mut SqliteConnection>) -> BoxFuture<'c, (bool, Finish)> + Send,
>;

/// The sending side of the writer task; cheap to clone.
#[derive(Clone, Debug)]
pub struct GroupWriter {
    jobs: mpsc::Sender<Job>,
}

impl GroupWriter {
    /// Opens the writer's own connection and starts the writer task.
    pub async fn start(options: SqliteConnectOptions) -> Result<GroupWriter, StoreError> {
        let conn = options.connect().await?;
        let (jobs, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(conn, options, rx));
        Ok(GroupWriter { jobs })
    }

    /// Runs `f` inside a transaction shared with the writes that arrive with it, and returns
    /// its result once that transaction is committed. `f` must not wait on anything but
    /// its own statements: the writes behind it wait for it.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, E>> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<T, E>>();
        let job: Job = Box::new(move |conn| {
            Box::pin(async move {
                let result = match conn {
                    None => Err(StoreError::Group("the write could not start".into()).into()),
                    Some(conn) => match AssertUnwindSafe(f(conn)).catch_unwind().await {
                        Ok(r) => r,
                        Err(_) => Err(StoreError::Group("the write panicked".into()).into()),
                    },
                };
                let ok = result.is_ok();
                let finish: Finish = Box::new(move |committed| {
                    let outcome = match (result, committed) {
                        (Ok(_), Err(e)) => Err(StoreError::Group(e).into()),
                        (r, _) => r,
                    };
                    let _ = reply.send(outcome);
                });
                (ok, finish)
            })
        });
        if self.jobs.send(job).await.is_err() {
            return Err(StoreError::Group("the writer has stopped".into()).into());
        }
        answer.await.unwrap_or_else(|_| {
            Err(StoreError::Group("the writer dropped the write".into()).into())
        })
    }
}

// Boxed so the writer task's future is `Send` for every lifetime (sqlx's executor impls
// otherwise trip the compiler's higher-ranked lifetime check in `tokio::spawn`).
fn exec<'a>(
    conn: &'a mut SqliteConnection,
    sql: &'static str,
) -> BoxFuture<'a, Result<(), String>> {
    Box::pin(async move {
        sqlx::query(sql)
            .execute(conn)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
}

async fn run(
    mut conn: SqliteConnection,
    options: SqliteConnectOptions,
    mut rx: mpsc::Receiver<Job>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // The savepoint statements between two writes go in one round trip to SQLite's
        // thread ("RELEASE w; SAVEPOINT w"), and the batch's COMMIT with the last of them.
        if let Err(e) = exec(&mut conn, "BEGIN IMMEDIATE; SAVEPOINT w").await {
            tracing::error!(error = %e, "group commit: BEGIN failed");
            let _ = exec(&mut conn, "ROLLBACK").await;
            for job in batch {
                let (_, finish) = job(None).await;
                finish(Err(e.clone()));
            }
            continue;
        }
        let last = batch.len() - 1;
        let mut finishes = Vec::with_capacity(batch.len());
        let mut broken = None;
        for (i, job) in batch.into_iter().enumerate() {
            if broken.is_some() {
                let (_, finish) = job(None).await;
                finishes.push(finish);
                continue;
            }
            let (ok, finish) = job(Some(&mut conn)).await;
            finishes.push(finish);
            let next = match (ok, i == last) {
                (true, false) => "RELEASE w; SAVEPOINT w",
                (false, false) => "ROLLBACK TO w; RELEASE w; SAVEPOINT w",
                (true, true) => "RELEASE w; COMMIT",
                (false, true) => "ROLLBACK TO w; RELEASE w; COMMIT",
            };
            if let Err(e) = exec(&mut conn, next).await {
                broken = Some(e);
            }
        }
        let committed = match broken {
            Some(e) => Err(e),
            None => Ok(()),
        };
        if let Err(e) = &committed {
            tracing::error!(error = %e, writes = finishes.len(), "group commit failed; rolling back");
            if let Err(e) = exec(&mut conn, "ROLLBACK").await {
                // The connection is in an unknown state: replace it (closing it rolls back).
                tracing::error!(error = %e, "group commit: ROLLBACK failed; reconnecting");
                conn = loop {
                    match options.connect().await {
                        Ok(c) => break c,
                        Err(e) => {
                            tracing::error!(error = %e, "group commit: reconnecting");
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        }
                    }
                };
            }
        }
        for finish in finishes {
            finish(committed.clone());
        }
    }
    let _ = conn.close().await;
}
