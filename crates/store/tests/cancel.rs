//! Writers cancelled halfway through a transaction (a request dropped mid-way) leave the
//! store usable: no pooled connection stays inside a transaction holding the write lock.

use slipway_store::Store;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_cancelled_mid_transaction_leave_the_store_writable() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), "us-east-1").await.unwrap();
    sqlx::query("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
        .execute(store.pool())
        .await
        .unwrap();
    let blob = vec![7u8; 256 * 1024];
    for round in 0..200u64 {
        let (s, b) = (store.clone(), blob.clone());
        let task = tokio::spawn(async move {
            let mut tx = s.begin_write().await.unwrap();
            sqlx::query("INSERT OR REPLACE INTO t (k, v) VALUES ($1, $2)")
                .bind(round as i64 % 7)
                .bind(&b)
                .execute(&mut *tx)
                .await
                .unwrap();
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert!(n > 0);
            tx.commit().await.unwrap();
        });
        // Cancelled at a different point each round.
        tokio::time::sleep(Duration::from_micros(round * 37 % 3000)).await;
        task.abort();
        let _ = task.await;
    }
    // Every connection of the pool can still begin a write, and quickly.
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let mut tx = tokio::time::timeout(Duration::from_secs(5), s.begin_write())
                    .await
                    .expect("a write could not start: a connection holds the lock")
                    .expect("begin_write");
                sqlx::query("INSERT OR REPLACE INTO t (k, v) VALUES ($1, x'00')")
                    .bind(100 + i)
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
            })
        })
        .collect();
    for w in writers {
        w.await.unwrap();
    }
}
