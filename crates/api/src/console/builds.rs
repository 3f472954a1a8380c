//! Build pages: projects, a project's history, a build with phases, its log (streamed live
//! through GetLogEvents' forward tokens, as Server-Sent Events), reports and artifacts;
//! Start and Stop. Each is a CodeBuild or Logs operation as the signed-in caller.

use super::{back, can, form, html, op, opt, require, str_of, Fail, PageResult, Session};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use slipway_console::{builds as views, enc};
use std::sync::Arc;
use std::time::Duration;

/// Builds a project's history shows.
const HISTORY: usize = 50;
/// Log lines a page starts with (the newest).
const LOG_LINES: i64 = 10_000;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/-/console/builds", get(projects))
        .route("/-/console/builds/{project}", get(history))
        .route("/-/console/builds/{project}/start", post(start))
        .route("/-/console/builds/{project}/{uuid}", get(build))
        .route("/-/console/builds/{project}/{uuid}/stop", post(stop))
        .route("/-/console/builds/{project}/{uuid}/live", get(live))
        .route("/-/console/artifacts/{bucket}/{*key}", get(artifact))
        .route(
            "/-/console/builds/{project}/{uuid}/log/stream",
            get(log_stream),
        )
}

fn path_of(id: &str) -> String {
    let (p, u) = id.rsplit_once(':').unwrap_or(("", id));
    format!("/-/console/builds/{}/{}", enc(p), enc(u))
}

async fn latest_builds(
    state: &AppState,
    s: &Session,
    project: &str,
    n: usize,
) -> Result<Vec<Value>, Fail> {
    let ids: Vec<Value> = op(
        state,
        s,
        "codebuild",
        "ListBuildsForProject",
        json!({"projectName": project, "sortOrder": "DESCENDING"}),
    )
    .await?["ids"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ids: Vec<Value> = ids.into_iter().take(n).collect();
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let got = op(state, s, "codebuild", "BatchGetBuilds", json!({"ids": ids})).await?;
    Ok(got["builds"].as_array().cloned().unwrap_or_default())
}

async fn projects(State(state): State<Arc<AppState>>, headers: HeaderMap) -> PageResult {
    let s = require(&state, &headers, "/-/console/builds").await?;
    let names: Vec<Value> = op(
        &state,
        &s,
        "codebuild",
        "ListProjects",
        json!({"sortBy": "NAME"}),
    )
    .await?["projects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut rows = Vec::new();
    for chunk in names.chunks(100) {
        let got = op(
            &state,
            &s,
            "codebuild",
            "BatchGetProjects",
            json!({"names": chunk}),
        )
        .await?;
        for p in got["projects"].as_array().into_iter().flatten() {
            let name = str_of(p, "name").to_owned();
            let latest = latest_builds(&state, &s, &name, 1)
                .await
                .ok()
                .and_then(|b| b.first().and_then(|b| opt(b, "buildStatus")));
            rows.push(views::ProjectRow {
                description: opt(p, "description"),
                latest,
                name,
            });
        }
    }
    Ok(html(views::projects(&s.viewer(), &rows)))
}

fn row(b: &Value) -> views::BuildRow {
    let start = b["startTime"].as_f64();
    views::BuildRow {
        id: str_of(b, "id").to_owned(),
        number: b["buildNumber"].as_i64(),
        status: str_of(b, "buildStatus").to_owned(),
        initiator: opt(b, "initiator"),
        seconds: start.zip(b["endTime"].as_f64()).map(|(s, e)| e - s),
        start,
        source_version: opt(b, "resolvedSourceVersion").or_else(|| opt(b, "sourceVersion")),
    }
}

async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!("/-/console/builds/{}", enc(&project)),
    )
    .await?;
    let builds = latest_builds(&state, &s, &project, HISTORY).await?;
    let rows: Vec<views::BuildRow> = builds.iter().map(row).collect();
    let can_start = can(
        &state,
        &s,
        "codebuild",
        "StartBuild",
        &json!({"projectName": project}),
    )
    .await;
    Ok(html(views::history(
        &s.viewer(),
        &project,
        &rows,
        can_start,
    )))
}

async fn build(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, uuid)): Path<(String, String)>,
) -> PageResult {
    let id = format!("{project}:{uuid}");
    let s = require(&state, &headers, &path_of(&id)).await?;
    let at = super::live::position(&state).await?;
    let mut v = view(&state, &s, &project, &id, true).await?;
    v.live_from = at;
    Ok(html(views::build(&s.viewer(), &v)))
}

/// The status and phases, drawn again after each change of the build.
async fn live(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, uuid)): Path<(String, String)>,
    Query(at): Query<super::live::After>,
) -> PageResult {
    let id = format!("{project}:{uuid}");
    let s = Arc::new(require(&state, &headers, &path_of(&id)).await?);
    let topic = format!("build:{id}");
    let changes = super::live::changes(state.clone(), s.region.clone(), topic, at.after).await?;
    Ok(super::live::fragments(changes, "live", move || {
        let (state, s, project, id) = (state.clone(), s.clone(), project.clone(), id.clone());
        async move {
            let v = view(&state, &s, &project, &id, false).await.ok()?;
            Some(views::live(&s.viewer(), &v).into_string())
        }
    }))
}

/// The build as its page shows it (`with_log`: and the newest lines of its log).
async fn view(
    state: &AppState,
    s: &Session,
    project: &str,
    id: &str,
    with_log: bool,
) -> Result<views::BuildView, Fail> {
    let (project, id) = (project.to_owned(), id.to_owned());
    let got = op(
        state,
        s,
        "codebuild",
        "BatchGetBuilds",
        json!({"ids": [id]}),
    )
    .await?;
    let b = got["builds"].get(0).cloned().ok_or_else(|| {
        Fail::Api(
            Some((s.name.clone(), s.csrf.clone())),
            slipway_model::ApiError::new(
                "ResourceNotFoundException",
                404,
                format!("Build {id} does not exist"),
            ),
        )
    })?;
    let logs = &b["logs"];
    let (group, stream) = (
        str_of(logs, "groupName").to_owned(),
        str_of(logs, "streamName").to_owned(),
    );
    let (log, log_next) = if group.is_empty() || !with_log {
        (Vec::new(), String::new())
    } else {
        let ev = op(state, s, "logs", "GetLogEvents", json!({"logGroupName": group, "logStreamName": stream, "startFromHead": false, "limit": LOG_LINES})).await?;
        let lines = ev["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| str_of(e, "message").to_owned())
            .collect();
        (lines, str_of(&ev, "nextForwardToken").to_owned())
    };
    let reports = match b["reportArns"].as_array() {
        Some(arns) if !arns.is_empty() => op(
            state,
            s,
            "codebuild",
            "BatchGetReports",
            json!({"reportArns": arns}),
        )
        .await
        .map(|r| {
            r["reports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    let t = &r["testSummary"];
                    let summary = if t.is_object() {
                        format!(
                            "{} tests, {} passed",
                            t["total"].as_i64().unwrap_or(0),
                            t["statusCounts"]["SUCCEEDED"].as_i64().unwrap_or(0)
                        )
                    } else {
                        let c = &r["codeCoverageSummary"];
                        format!(
                            "line coverage {:.1} %",
                            c["lineCoveragePercentage"].as_f64().unwrap_or(0.0)
                        )
                    };
                    views::ReportRow {
                        name: str_of(r, "name").to_owned(),
                        kind: str_of(r, "type").to_owned(),
                        status: str_of(r, "status").to_owned(),
                        summary,
                    }
                })
                .collect()
        })
        .unwrap_or_default(),
        _ => Vec::new(),
    };
    let artifacts = b["artifacts"]["location"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(|l| vec![(l.to_owned(), artifact_link(l))])
        .unwrap_or_default();
    let phases = b["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| views::PhaseRow {
            name: str_of(p, "phaseType").to_owned(),
            status: opt(p, "phaseStatus"),
            seconds: p["durationInSeconds"].as_f64(),
            message: p["contexts"]
                .get(0)
                .and_then(|c| opt(c, "message"))
                .filter(|m| !m.is_empty()),
        })
        .collect();
    let view = views::BuildView {
        id: id.clone(),
        project: project.clone(),
        number: b["buildNumber"].as_i64(),
        status: str_of(&b, "buildStatus").to_owned(),
        done: b["buildComplete"].as_bool().unwrap_or(false),
        phases,
        log,
        log_next,
        reports,
        artifacts,
        can_stop: can(state, s, "codebuild", "StopBuild", &json!({"id": id})).await,
        can_start: can(
            state,
            s,
            "codebuild",
            "StartBuild",
            &json!({"projectName": project}),
        )
        .await,
        live_from: 0,
    };
    Ok(view)
}

/// An artifact's S3 ARN as the console's download link.
fn artifact_link(location: &str) -> String {
    let key = location.strip_prefix("arn:aws:s3:::").unwrap_or(location);
    format!(
        "/-/console/artifacts/{}",
        key.split('/').map(enc).collect::<Vec<_>>().join("/")
    )
}

/// An object downloaded through the console: authorised as `s3:GetObject` for the
/// signed-in caller, streamed.
async fn artifact(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((bucket, key)): Path<(String, String)>,
) -> PageResult {
    let s = require(&state, &headers, "/-/console/builds").await?;
    let arn = format!("arn:aws:s3:::{bucket}/{key}");
    crate::auth::authorize(&state, &s.principal, "s3:GetObject", &[arn])
        .await
        .map_err(|e| Fail::Api(Some((s.name.clone(), s.csrf.clone())), e))?;
    let stream = state
        .s3
        .get_stream(&bucket, &key, None)
        .await
        .map_err(|e| {
            Fail::Api(
                Some((s.name.clone(), s.csrf.clone())),
                slipway_model::ApiError::new("NoSuchKey", 404, format!("{bucket}/{key}: {e}")),
            )
        })?;
    let name: String = key
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    use futures_util::TryStreamExt as _;
    let body = axum::body::Body::from_stream(stream.map_err(std::io::Error::other));
    Ok((
        [
            (
                axum::http::header::CONTENT_TYPE,
                "application/octet-stream".to_owned(),
            ),
            (
                axum::http::header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                "nosniff".to_owned(),
            ),
        ],
        body,
    )
        .into_response())
}

#[derive(serde::Deserialize)]
pub struct From {
    from: String,
}

async fn log_stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, uuid)): Path<(String, String)>,
    Query(q): Query<From>,
) -> PageResult {
    let id = format!("{project}:{uuid}");
    let s = require(&state, &headers, &path_of(&id)).await?;
    let got = op(
        &state,
        &s,
        "codebuild",
        "BatchGetBuilds",
        json!({"ids": [id]}),
    )
    .await?;
    let logs = &got["builds"][0]["logs"];
    let (group, stream) = (
        str_of(logs, "groupName").to_owned(),
        str_of(logs, "streamName").to_owned(),
    );
    let s = Arc::new(s);
    let events = futures_util::stream::unfold(
        (state, s, q.from, false),
        move |(state, s, mut token, ended)| {
            let (group, stream, id) = (group.clone(), stream.clone(), id.clone());
            async move {
                if ended {
                    return None;
                }
                loop {
                    let done = op(
                        &state,
                        &s,
                        "codebuild",
                        "BatchGetBuilds",
                        json!({"ids": [id]}),
                    )
                    .await
                    .map(|v| v["builds"][0]["buildComplete"].as_bool().unwrap_or(true))
                    .unwrap_or(true);
                    let got = op(&state, &s, "logs", "GetLogEvents", json!({"logGroupName": group, "logStreamName": stream, "startFromHead": true, "nextToken": token}))
                        .await
                        .ok();
                    let lines: Vec<String> = got
                        .as_ref()
                        .map(|g| {
                            g["events"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .map(|e| str_of(e, "message").to_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    if let Some(next) = got.as_ref().and_then(|g| opt(g, "nextForwardToken")) {
                        token = next;
                    }
                    if !lines.is_empty() {
                        let ev = Event::default()
                            .event("lines")
                            .data(views::log_lines(&lines).into_string());
                        return Some((
                            Ok::<_, std::convert::Infallible>(ev),
                            (state, s, token, false),
                        ));
                    }
                    if done || got.is_none() {
                        let ev = Event::default().event("end").data("");
                        return Some((Ok(ev), (state, s, token, true)));
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        },
    );
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

async fn start(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(project): Path<String>,
    body: axum::body::Body,
) -> PageResult {
    let (s, _) = form(&state, &headers, body).await?;
    let out = op(
        &state,
        &s,
        "codebuild",
        "StartBuild",
        json!({"projectName": project}),
    )
    .await?;
    back(&path_of(str_of(&out["build"], "id")))
}

async fn stop(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((project, uuid)): Path<(String, String)>,
    body: axum::body::Body,
) -> PageResult {
    let (s, _) = form(&state, &headers, body).await?;
    let id = format!("{project}:{uuid}");
    op(&state, &s, "codebuild", "StopBuild", json!({"id": id})).await?;
    back(&path_of(&id))
}
