//! The console's tables: IAM users' sign-in passwords (as argon2 hashes made by `iam`) and
//! signed-in sessions, found by the hash of their cookie's token.

use crate::{Conn, StoreError};
use sqlx::Row;

type Result<T> = std::result::Result<T, StoreError>;

/// Sets (or replaces) a user's password hash.
pub async fn put_login_profile(conn: &mut Conn, user: &str, hash: &str, now: f64) -> Result<()> {
    sqlx::query(
        "INSERT INTO iam_login_profiles (user_name, password_hash, created) VALUES ($1, $2, $3) \
         ON CONFLICT (user_name) DO UPDATE SET password_hash = excluded.password_hash",
    )
    .bind(user)
    .bind(hash)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    // A new password ends the sessions signed in with the old one.
    sqlx::query("DELETE FROM console_sessions WHERE user_name = $1")
        .bind(user)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A user's password hash, if they have a password.
pub async fn login_profile(conn: &mut Conn, user: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT password_hash FROM iam_login_profiles WHERE user_name = $1")
            .bind(user)
            .fetch_optional(&mut *conn)
            .await?,
    )
}

/// A signed-in session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub token_hash: String,
    /// None: the account root.
    pub user_name: Option<String>,
    pub arn: String,
    pub csrf: String,
    pub created: f64,
    pub expires: f64,
}

pub async fn insert_session(conn: &mut Conn, s: &SessionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, user_name, arn, csrf, created, expires) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&s.token_hash)
    .bind(&s.user_name)
    .bind(&s.arn)
    .bind(&s.csrf)
    .bind(s.created)
    .bind(s.expires)
    .execute(&mut *conn)
    .await?;
    // Expired sessions go as new ones come.
    sqlx::query("DELETE FROM console_sessions WHERE expires < $1")
        .bind(s.created)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The session of a token hash, if it has not expired at `now`.
pub async fn session(conn: &mut Conn, token_hash: &str, now: f64) -> Result<Option<SessionRow>> {
    let row = sqlx::query(
        "SELECT token_hash, user_name, arn, csrf, created, expires FROM console_sessions \
         WHERE token_hash = $1 AND expires > $2",
    )
    .bind(token_hash)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|r| SessionRow {
        token_hash: r.get(0),
        user_name: r.get(1),
        arn: r.get(2),
        csrf: r.get(3),
        created: r.get(4),
        expires: r.get(5),
    }))
}

pub async fn delete_session(conn: &mut Conn, token_hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}
