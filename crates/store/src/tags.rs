//! Resource tags, keyed by resource type and stable id, written inside the caller's transaction.

use crate::{StoreError, Tx};
use std::collections::BTreeMap;

/// Sets `tags` on a resource (existing keys get the new values).
pub async fn put(
    tx: &mut Tx<'_>,
    kind: &str,
    id: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), StoreError> {
    for (k, v) in tags {
        sqlx::query(
            "INSERT INTO resource_tags (resource_type, resource_id, tag_key, tag_value) VALUES ($1, $2, $3, $4)
             ON CONFLICT (resource_type, resource_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
        )
        .bind(kind)
        .bind(id)
        .bind(k)
        .bind(v)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Removes every tag of a resource.
pub async fn delete_all(tx: &mut Tx<'_>, kind: &str, id: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM resource_tags WHERE resource_type = $1 AND resource_id = $2")
        .bind(kind)
        .bind(id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// A resource's tags, by key.
pub async fn get(
    conn: &mut crate::Conn,
    kind: &str,
    id: &str,
) -> Result<BTreeMap<String, String>, StoreError> {
    use sqlx::Row as _;
    let rows = sqlx::query(
        "SELECT tag_key, tag_value FROM resource_tags WHERE resource_type = $1 AND resource_id = $2",
    )
    .bind(kind)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Removes the tags with these keys from a resource (keys it lacks are ignored).
pub async fn remove(
    tx: &mut Tx<'_>,
    kind: &str,
    id: &str,
    keys: &[String],
) -> Result<(), StoreError> {
    for k in keys {
        sqlx::query(
            "DELETE FROM resource_tags WHERE resource_type = $1 AND resource_id = $2 AND tag_key = $3",
        )
        .bind(kind)
        .bind(id)
        .bind(k)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
