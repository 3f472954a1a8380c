//! Signing in and out: an IAM user's name and password (argon2-hashed, set with `slipway
//! admin create-login-profile`) or an access key pair; a session row and its cookie; a limit
//! on failed attempts per name and per client address.

use super::{html, now, token_hash, PageResult, COOKIE, SESSION_SECS};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use slipway_console as views;
use slipway_model::ApiError;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Failed attempts allowed in [`WINDOW`] per user name and per client address.
const MAX_FAILURES: usize = 5;
/// Seconds over which failures are counted.
const WINDOW: f64 = 300.0;

/// Failed sign-ins, by key (`user:NAME`, `key:ID`, `addr:IP`): their times.
#[derive(Default)]
pub struct SignInLimiter {
    failures: Mutex<HashMap<String, Vec<f64>>>,
}

impl SignInLimiter {
    /// Seconds until `keys` may try again (None: they may now).
    fn blocked(&self, keys: &[String], t: f64) -> Option<f64> {
        let mut f = self.failures.lock().expect("not poisoned");
        f.retain(|_, v| {
            v.retain(|x| t - x < WINDOW);
            !v.is_empty()
        });
        keys.iter()
            .filter_map(|k| f.get(k))
            .filter(|v| v.len() >= MAX_FAILURES)
            .map(|v| WINDOW - (t - v[0]))
            .reduce(f64::max)
    }

    fn failed(&self, keys: &[String], t: f64) {
        let mut f = self.failures.lock().expect("not poisoned");
        for k in keys {
            f.entry(k.clone()).or_default().push(t);
        }
    }

    fn succeeded(&self, keys: &[String]) {
        let mut f = self.failures.lock().expect("not poisoned");
        for k in keys.iter().filter(|k| !k.starts_with("addr:")) {
            f.remove(k);
        }
    }
}

#[derive(serde::Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// Only a path inside the console is a place to go back to (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/-/console/") && !n.contains("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/-/console/".into(),
    }
}

pub async fn page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> PageResult {
    let next = safe_next(q.next.as_deref());
    if super::session(&state, &headers).await?.is_some() {
        return super::back(&next);
    }
    Ok(html(views::signin(None, &next, "")))
}

pub async fn submit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    peer: Option<axum::extract::Extension<crate::webhook_http::PeerAddr>>,
    body: axum::body::Body,
) -> PageResult {
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|_| ApiError::new("RequestEntityTooLarge", 413, "The form is too large"))?;
    let f: HashMap<String, String> = form_urlencoded::parse(&bytes).into_owned().collect();
    let get = |k: &str| f.get(k).map(|v| v.trim()).unwrap_or("");
    let next = safe_next(Some(get("next")));
    let (user, password) = (
        get("user"),
        f.get("password").map(String::as_str).unwrap_or(""),
    );
    let (key_id, secret) = (get("access_key_id"), get("secret_access_key"));
    let mut keys = Vec::new();
    if let Some(p) = peer {
        keys.push(format!("addr:{}", p.0 .0.ip()));
    }
    if !user.is_empty() {
        keys.push(format!("user:{user}"));
    }
    if !key_id.is_empty() {
        keys.push(format!("key:{key_id}"));
    }
    let t = now();
    let refuse = |status: StatusCode, m: &str| {
        Ok((
            status,
            super::html_headers(),
            views::signin(Some(m), &next, user),
        )
            .into_response())
    };
    if let Some(wait) = state.signins.blocked(&keys, t) {
        let m = format!(
            "Too many failed sign-ins. Try again in {} minute(s).",
            (wait / 60.0).ceil().max(1.0)
        );
        return refuse(StatusCode::TOO_MANY_REQUESTS, &m);
    }
    let owner = if !key_id.is_empty() {
        state
            .iam
            .verify_key_pair(key_id, secret)
            .await
            .map_err(super::internal)?
            .map(|o| (o.user_name, o.arn))
    } else if !user.is_empty() {
        let ok = state
            .iam
            .verify_password(user, password)
            .await
            .map_err(super::internal)?;
        ok.then(|| (Some(user.to_owned()), state.iam.user_arn(user)))
    } else {
        None
    };
    let Some((user_name, arn)) = owner else {
        state.signins.failed(&keys, t);
        tracing::info!(user = %user, access_key_id = %key_id, "console sign-in refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "The user name and password, or the access key pair, are not right.",
        );
    };
    state.signins.succeeded(&keys);
    let token = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let csrf = uuid::Uuid::new_v4().simple().to_string();
    let row = slipway_store::console::SessionRow {
        token_hash: token_hash(&token),
        user_name: user_name.clone(),
        arn,
        csrf,
        created: t,
        expires: t + SESSION_SECS,
    };
    let mut tx = state.store.begin_write().await.map_err(super::internal)?;
    slipway_store::console::insert_session(&mut tx, &row)
        .await
        .map_err(super::internal)?;
    tx.commit().await.map_err(super::internal)?;
    tracing::info!(
        user = user_name.as_deref().unwrap_or("root"),
        "console sign-in"
    );
    // Secure when the console is reached over HTTPS (through a TLS-terminating proxy).
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        == Some("https");
    let cookie = format!(
        "{COOKIE}={token}; Path=/-/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_SECS as i64,
        if secure { "; Secure" } else { "" }
    );
    Ok((
        StatusCode::SEE_OTHER,
        [(header::LOCATION, next), (header::SET_COOKIE, cookie)],
    )
        .into_response())
}

pub async fn signout(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> PageResult {
    super::form(&state, &headers, body).await?;
    if let Some(token) = super::cookie_token(&headers) {
        let mut tx = state.store.begin_write().await.map_err(super::internal)?;
        slipway_store::console::delete_session(&mut tx, &token_hash(&token))
            .await
            .map_err(super::internal)?;
        tx.commit().await.map_err(super::internal)?;
    }
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, "/-/console/signin".to_owned()),
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/-/console; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
        ],
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_a_name_for_the_window_and_success_clears_it() {
        let l = SignInLimiter::default();
        let keys = vec!["user:alice".to_owned(), "addr:127.0.0.1".to_owned()];
        for i in 0..MAX_FAILURES {
            assert!(l.blocked(&keys, 100.0 + i as f64).is_none());
            l.failed(&keys, 100.0 + i as f64);
        }
        assert!(l.blocked(&keys, 110.0).is_some());
        assert!(l.blocked(&["user:bob".to_owned()], 110.0).is_none());
        assert!(
            l.blocked(&keys, 100.0 + WINDOW + 5.0).is_none(),
            "the window passes"
        );
        l.succeeded(&keys);
        assert!(l.blocked(&["user:alice".to_owned()], 110.0).is_none());
    }

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        assert_eq!(
            safe_next(Some("/-/console/pipelines/x")),
            "/-/console/pipelines/x"
        );
        for bad in [
            "https://evil.example/",
            "//evil.example",
            "/-/console//evil",
            "/v1/repos",
            "/-/console/\\x",
        ] {
            assert_eq!(safe_next(Some(bad)), "/-/console/", "{bad}");
        }
    }
}
