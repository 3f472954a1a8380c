//! The build log page that BatchGetBuilds' `logs.deepLink` opens in a browser: a presigned
//! link (SigV4 in the query string, made for the caller who asked for the build and valid
//! for an hour), authorised as `logs:GetLogEvents` on the build's log group. The page shows
//! the newest lines and refreshes itself while the build runs.

use crate::auth::{authenticate_presigned, authorize};
use crate::worker_api::error_response;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use slipway_codebuild::service::LogQuery;
use slipway_console::escape;
use slipway_model::ApiError;
use std::sync::Arc;

/// Lines a page shows (the newest ones).
const PAGE_LINES: i64 = 10_000;
/// How long a deep link stays valid.
pub const LINK_SECS: i64 = 3600;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/-/console/logs/{project}/{uuid}", get(log_page))
}

/// The path of a build's log page (`project:uuid` build id).
pub fn page_path(build_id: &str) -> String {
    let (project, uuid) = build_id.rsplit_once(':').unwrap_or(("", build_id));
    format!(
        "/-/console/logs/{}/{}",
        crate::sigv4::uri_encode(project, false),
        crate::sigv4::uri_encode(uuid, false)
    )
}

async fn log_page(
    State(state): State<Arc<AppState>>,
    Path((project, uuid)): Path<(String, String)>,
    req: Request<Body>,
) -> Response {
    match page(&state, &project, &uuid, req).await {
        Ok(html) => (
            [
                ("content-type", "text/html; charset=utf-8"),
                ("cache-control", "no-store"),
                ("x-content-type-options", "nosniff"),
                (
                    "content-security-policy",
                    "default-src 'none'; style-src 'unsafe-inline'",
                ),
            ],
            html,
        )
            .into_response(),
        Err(mut e) => {
            // A page answers refusals as the web does (the JSON APIs say 400).
            if e.code.contains("AccessDenied") {
                e.status = 403;
            }
            error_response(e)
        }
    }
}

async fn page(
    state: &AppState,
    project: &str,
    uuid: &str,
    req: Request<Body>,
) -> Result<String, ApiError> {
    let (parts, _) = req.into_parts();
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    // The link is presigned for the region of the build it shows.
    let (principal, region) = authenticate_presigned(
        state,
        parts.uri.path(),
        parts.uri.query().unwrap_or(""),
        host,
        "logs",
    )
    .await?;
    let group = format!("/aws/codebuild/{project}");
    let arn = slipway_regions::arn(
        "logs",
        &region,
        &state.account_id,
        &format!("log-group:{group}:*"),
    );
    authorize(state, &principal, "logs:GetLogEvents", &[arn]).await?;
    let codebuild = state.codebuild.in_region(&region);
    let id = format!("{project}:{uuid}");
    let (builds, _) = codebuild
        .batch_get_builds(std::slice::from_ref(&id))
        .await
        .map_err(crate::domain_error)?;
    let build = builds.first().ok_or_else(|| {
        ApiError::new(
            "ResourceNotFoundException",
            404,
            format!("Build {id} does not exist"),
        )
    })?;
    let q = LogQuery {
        backwards: true,
        limit: PAGE_LINES,
        ..Default::default()
    };
    let events = codebuild
        .log_events(&group, uuid, &q)
        .await
        .map_err(crate::domain_error)?;
    let running = !build["buildComplete"].as_bool().unwrap_or(false);
    let mut html = String::from("<!doctype html><html><head><meta charset=\"utf-8\">");
    if running {
        html.push_str("<meta http-equiv=\"refresh\" content=\"5\">");
    }
    html.push_str(&format!(
        "<title>{id}</title><style>body{{font-family:sans-serif;margin:1em}}pre{{background:#111;color:#ddd;padding:1em;overflow-x:auto}}</style></head><body><h1>{id}</h1><p>Status: <b>{}</b> · phase {} · log group {group}, stream {uuid}{}</p><pre>",
        escape(build["buildStatus"].as_str().unwrap_or("")),
        escape(build["currentPhase"].as_str().unwrap_or("")),
        if events.len() as i64 >= PAGE_LINES { " · the newest 10,000 lines" } else { "" },
        id = escape(&id),
        group = escape(&group),
        uuid = escape(uuid),
    ));
    for e in &events {
        html.push_str(&escape(&e.message));
        html.push('\n');
    }
    html.push_str("</pre></body></html>");
    Ok(html)
}
