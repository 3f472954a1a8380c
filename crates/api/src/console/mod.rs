//! The web console under `/-/console`: sessions (an HttpOnly, SameSite=Strict cookie whose
//! token is kept only as a hash), CSRF tokens on every form, and pages whose data and
//! actions go through the same operations, IAM evaluation and errors as the JSON API
//! (`json::call`): the console is one more client of the API, in the same process.

mod builds;
mod deploys;
mod live;
mod log;
mod pipelines;
mod repos;
mod signin;

pub use log::{page_path, LINK_SECS};
pub use signin::SignInLimiter;

use crate::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use slipway_console as views;
use slipway_model::{ApiError, Principal};
use std::sync::Arc;

/// The session cookie's name.
const COOKIE: &str = "slipway_session";
/// How long a session lasts.
const SESSION_SECS: f64 = 12.0 * 3600.0;
/// The largest form a console page posts (a pipeline's JSON is the largest).
const MAX_FORM: usize = 1 << 20;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .merge(log::routes())
        .route("/-/console", get(|| async { Redirect::to("/-/console/") }))
        .route("/-/console/", get(home))
        .route("/-/console/assets/{name}", get(asset))
        .route("/-/console/favicon/{status}", get(favicon))
        .route("/-/console/signin", get(signin::page).post(signin::submit))
        .route("/-/console/signout", post(signin::signout))
        .merge(repos::routes())
        .merge(pipelines::routes())
        .merge(builds::routes())
        .merge(deploys::routes())
}

/// A signed-in caller.
pub(crate) struct Session {
    pub principal: Principal,
    pub name: String,
    pub csrf: String,
    /// The region the console acts in (the server's default).
    pub region: String,
}

impl Session {
    pub fn viewer(&self) -> views::Viewer<'_> {
        views::Viewer {
            name: &self.name,
            csrf: &self.csrf,
        }
    }
}

/// What a console handler answers when it cannot show its page.
pub(crate) enum Fail {
    /// Not signed in: to the sign-in page, then back to `next`.
    SignIn(String),
    /// An API error, shown as a page with its status.
    Api(Option<(String, String)>, ApiError),
}

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Fail {
        Fail::Api(None, e)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        match self {
            Fail::SignIn(next) => {
                Redirect::to(&format!("/-/console/signin?next={}", views::enc(&next)))
                    .into_response()
            }
            Fail::Api(viewer, mut e) => {
                // Pages answer refusals as the web does (the JSON APIs say 400).
                if e.code.contains("AccessDenied") {
                    e.status = 403;
                } else if e.code.contains("NotFound")
                    || e.code.contains("DoesNotExist")
                    || e.code.ends_with("NotExistException")
                {
                    e.status = 404;
                }
                let v = viewer
                    .as_ref()
                    .map(|(n, c)| views::Viewer { name: n, csrf: c });
                let body = views::error(v.as_ref(), e.status, &e.code, &e.message);
                let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
                (status, html_headers(), body).into_response()
            }
        }
    }
}

pub(crate) type PageResult = Result<Response, Fail>;

/// The headers every console page carries: no inline script may run, nothing is framed or
/// cached, and the content type is never sniffed.
fn html_headers() -> [(header::HeaderName, &'static str); 6] {
    [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    ]
}

pub(crate) fn html(body: String) -> Response {
    (html_headers(), body).into_response()
}

fn now() -> f64 {
    slipway_store::now()
}

/// The session token in a request's cookies.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

fn token_hash(token: &str) -> String {
    crate::sigv4::sha256_hex(token.as_bytes())
}

/// The session of a request, if it is signed in.
pub(crate) async fn session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, ApiError> {
    let Some(token) = cookie_token(headers) else {
        return Ok(None);
    };
    let mut conn = state.store.pool().acquire().await.map_err(internal)?;
    let Some(row) = slipway_store::console::session(&mut conn, &token_hash(&token), now())
        .await
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let name = row.user_name.clone().unwrap_or_else(|| "root".into());
    Ok(Some(Session {
        principal: Principal {
            arn: row.arn,
            access_key_id: String::new(),
            user_name: row.user_name,
        },
        name,
        csrf: row.csrf,
        region: state.region.clone(),
    }))
}

/// The session of a page request, or the way to the sign-in page.
pub(crate) async fn require(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<Session, Fail> {
    session(state, headers)
        .await?
        .ok_or_else(|| Fail::SignIn(path.to_owned()))
}

/// A posted form's fields, checked against the session's CSRF token. A form without it, or
/// with another session's, changes nothing (403).
pub(crate) async fn form(
    state: &AppState,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<(Session, std::collections::HashMap<String, String>), Fail> {
    let s = session(state, headers)
        .await?
        .ok_or_else(|| Fail::SignIn("/-/console/".into()))?;
    let bytes = axum::body::to_bytes(body, MAX_FORM)
        .await
        .map_err(|_| ApiError::new("RequestEntityTooLarge", 413, "The form is too large"))?;
    let fields: std::collections::HashMap<String, String> =
        form_urlencoded::parse(&bytes).into_owned().collect();
    let sent = fields.get("csrf").map(String::as_str).unwrap_or("");
    if !crate::sigv4::signatures_equal(sent, &s.csrf) || sent.is_empty() {
        return Err(Fail::Api(
            Some((s.name.clone(), s.csrf.clone())),
            ApiError::new(
                "InvalidCsrfToken",
                403,
                "The form did not carry this session's CSRF token; reload the page and try again",
            ),
        ));
    }
    Ok((s, fields))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "console");
    ApiError::internal()
}

/// Calls an API operation as the session's principal; the output as JSON.
pub(crate) async fn op(
    state: &AppState,
    s: &Session,
    signing: &str,
    operation: &str,
    input: Value,
) -> Result<Value, Fail> {
    let id = uuid::Uuid::new_v4().to_string();
    let out = crate::json::call(
        state,
        s.principal.clone(),
        &s.region,
        signing,
        operation,
        input,
        None,
        &id,
    )
    .await
    .map_err(|e| Fail::Api(Some((s.name.clone(), s.csrf.clone())), e))?;
    if out.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(&out).map_err(|e| Fail::from(internal(e)))
}

/// Whether the session may call an operation (a button is drawn only if so).
pub(crate) async fn can(
    state: &AppState,
    s: &Session,
    signing: &str,
    operation: &str,
    input: &Value,
) -> bool {
    crate::json::allowed(state, &s.principal, &s.region, signing, operation, input).await
}

/// After a form: back to the page it came from (303, so a reload does not post again).
pub(crate) fn back(to: &str) -> PageResult {
    Ok((StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response())
}

async fn home(State(state): State<Arc<AppState>>, headers: HeaderMap) -> PageResult {
    let s = require(&state, &headers, "/-/console/").await?;
    let count = |v: &Value, k: &str| v[k].as_array().map_or(0, Vec::len);
    let repos = op(
        &state,
        &s,
        "codecommit",
        "ListRepositories",
        Value::Object(Default::default()),
    )
    .await
    .map(|v| count(&v, "repositories"))
    .unwrap_or(0);
    let pipelines = op(
        &state,
        &s,
        "codepipeline",
        "ListPipelines",
        Value::Object(Default::default()),
    )
    .await
    .map(|v| count(&v, "pipelines"))
    .unwrap_or(0);
    let projects = op(
        &state,
        &s,
        "codebuild",
        "ListProjects",
        Value::Object(Default::default()),
    )
    .await
    .map(|v| count(&v, "projects"))
    .unwrap_or(0);
    let apps = op(
        &state,
        &s,
        "codedeploy",
        "ListApplications",
        Value::Object(Default::default()),
    )
    .await
    .map(|v| count(&v, "applications"))
    .unwrap_or(0);
    Ok(html(views::home(
        &s.viewer(),
        &[
            ("repositories", "repositories", repos),
            ("pipelines", "pipelines", pipelines),
            ("build projects", "builds", projects),
            ("applications", "deployments", apps),
        ],
    )))
}

async fn asset(Path(name): Path<String>) -> Response {
    match views::asset(&name) {
        Some((ty, bytes)) => (
            [
                (header::CONTENT_TYPE, ty),
                (header::CACHE_CONTROL, "public, max-age=3600"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn favicon(Path(status): Path<String>) -> Response {
    let status = status.strip_suffix(".svg").unwrap_or(&status);
    (
        [
            (header::CONTENT_TYPE, "image/svg+xml"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        views::favicon(status),
    )
        .into_response()
}

/// A string field of a JSON value ("" when absent).
pub(crate) fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// An optional string field.
pub(crate) fn opt(v: &Value, k: &str) -> Option<String> {
    v[k].as_str().map(str::to_owned)
}
