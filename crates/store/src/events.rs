//! The event outbox: every state change writes its event in the same transaction, in
//! EventBridge's envelope (`version`, `id`, `detail-type`, `source`, `account`, `time`,
//! `region`, `resources`, `detail`), for triggers, rules, notifications and audit to read.

use crate::{Conn, StoreError};
use serde_json::{json, Value};

/// An event before it is written.
#[derive(Debug, Clone)]
pub struct Event {
    pub source: &'static str,
    pub detail_type: &'static str,
    pub account: String,
    pub region: String,
    pub resources: Vec<String>,
    pub detail: Value,
}

/// Appends an event to the outbox on `conn` (inside a transaction); it becomes visible when
/// that transaction commits.
pub async fn append(conn: &mut Conn, event: &Event) -> Result<String, StoreError> {
    let id = uuid::Uuid::new_v4().to_string();
    let time = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let body = json!({
        "version": "0",
        "id": id,
        "detail-type": event.detail_type,
        "source": event.source,
        "account": event.account,
        "time": time,
        "region": event.region,
        "resources": event.resources,
        "detail": event.detail,
    });
    sqlx::query("INSERT INTO event_outbox (event_id, source, detail_type, event_time, body) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(event.source)
        .bind(event.detail_type)
        .bind(&time)
        .bind(body.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(id)
}

/// Where outbox reader `reader` is (the last sequence number it has read; 0 at first).
pub async fn cursor(conn: &mut Conn, reader: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT seq FROM outbox_cursors WHERE reader = $1")
            .bind(reader)
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(0),
    )
}

/// The sequence number of the newest event (0 when there is none).
pub async fn last_seq(conn: &mut Conn) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM event_outbox")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Up to `limit` events after sequence number `seq`: (seq, the event as JSON).
pub async fn after(
    conn: &mut Conn,
    seq: i64,
    limit: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    use sqlx::Row;
    let rows =
        sqlx::query("SELECT seq, body FROM event_outbox WHERE seq > $1 ORDER BY seq LIMIT $2")
            .bind(seq)
            .bind(limit)
            .fetch_all(&mut *conn)
            .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Moves outbox reader `reader` to `seq` (inside the transaction that acted on the events).
pub async fn set_cursor(conn: &mut Conn, reader: &str, seq: i64) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO outbox_cursors (reader, seq) VALUES ($1, $2) ON CONFLICT (reader) DO UPDATE SET seq = excluded.seq")
        .bind(reader)
        .bind(seq)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
