//! Pipeline pages and their buttons: the list, a pipeline's graph (a live fragment too),
//! its history and JSON; Release change, Stop, Retry stage, Approve/Reject, Disable/Enable
//! transition and Save JSON, each one CodePipeline operation as the signed-in caller.

use super::{back, can, form, html, op, opt, require, str_of, Fail, PageResult, Session};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use slipway_console::{enc, pipelines as views};
use std::collections::HashMap;
use std::sync::Arc;

/// Executions the history shows.
const HISTORY: i64 = 50;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/-/console/pipelines", get(list))
        .route("/-/console/pipelines/{name}", get(page))
        .route("/-/console/pipelines/{name}/live", get(live))
        .route("/-/console/pipelines/{name}/release", post(release))
        .route("/-/console/pipelines/{name}/stop", post(stop))
        .route("/-/console/pipelines/{name}/retry", post(retry))
        .route("/-/console/pipelines/{name}/approval", post(approval))
        .route("/-/console/pipelines/{name}/transitions", post(transitions))
        .route("/-/console/pipelines/{name}/json", post(save_json))
}

fn path_of(name: &str) -> String {
    format!("/-/console/pipelines/{}", enc(name))
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> PageResult {
    let s = require(&state, &headers, "/-/console/pipelines").await?;
    let out = op(&state, &s, "codepipeline", "ListPipelines", json!({})).await?;
    let mut rows = Vec::new();
    for p in out["pipelines"].as_array().into_iter().flatten() {
        let name = str_of(p, "name").to_owned();
        let latest = op(
            &state,
            &s,
            "codepipeline",
            "ListPipelineExecutions",
            json!({"pipelineName": name, "maxResults": 1}),
        )
        .await
        .ok()
        .and_then(|v| v["pipelineExecutionSummaries"].get(0).cloned());
        rows.push(views::PipelineRow {
            latest: latest.as_ref().and_then(|l| opt(l, "status")),
            updated: latest
                .as_ref()
                .and_then(|l| l["lastUpdateTime"].as_f64())
                .or(p["updated"].as_f64()),
            name,
        });
    }
    Ok(html(views::list(&s.viewer(), &rows)))
}

#[derive(serde::Deserialize, Default)]
pub struct Filter {
    status: Option<String>,
}

/// Where an action's details are shown.
fn action_link(provider: &str, config: &Value, exec: &Value) -> Option<String> {
    let id = exec["externalExecutionId"].as_str()?;
    match provider {
        "CodeBuild" => {
            let (project, uuid) = id.rsplit_once(':')?;
            Some(format!("/-/console/builds/{}/{}", enc(project), enc(uuid)))
        }
        "CodeDeploy" => Some(format!(
            "/-/console/deployments/{}/{}",
            enc(config["ApplicationName"].as_str().unwrap_or("")),
            enc(id)
        )),
        _ => exec["externalExecutionUrl"]
            .as_str()
            .filter(|u| u.starts_with("http://") || u.starts_with("https://") || u.starts_with('/'))
            .map(str::to_owned),
    }
}

async fn view(
    state: &AppState,
    s: &Session,
    name: &str,
    filter: Option<String>,
    json_error: Option<String>,
    posted: Option<String>,
) -> Result<views::PipelineView, Fail> {
    let decl = op(
        state,
        s,
        "codepipeline",
        "GetPipeline",
        json!({"name": name}),
    )
    .await?;
    let st = op(
        state,
        s,
        "codepipeline",
        "GetPipelineState",
        json!({"name": name}),
    )
    .await?;
    let hist = op(
        state,
        s,
        "codepipeline",
        "ListPipelineExecutions",
        json!({"pipelineName": name, "maxResults": HISTORY}),
    )
    .await?;
    // Providers, run orders and configuration, from the declaration.
    let mut declared: HashMap<(String, String), (String, i32, Value)> = HashMap::new();
    for stage in decl["pipeline"]["stages"].as_array().into_iter().flatten() {
        for a in stage["actions"].as_array().into_iter().flatten() {
            declared.insert(
                (
                    str_of(stage, "name").to_owned(),
                    str_of(a, "name").to_owned(),
                ),
                (
                    str_of(&a["actionTypeId"], "provider").to_owned(),
                    a["runOrder"].as_i64().unwrap_or(1) as i32,
                    a["configuration"].clone(),
                ),
            );
        }
    }
    let stages = st["stageStates"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|sg| {
            let sname = str_of(sg, "stageName").to_owned();
            let transition = &sg["inboundTransitionState"];
            views::StageView {
                status: opt(&sg["latestExecution"], "status"),
                execution_id: opt(&sg["latestExecution"], "pipelineExecutionId"),
                disabled: (transition["enabled"] == Value::Bool(false))
                    .then(|| opt(transition, "disabledReason").unwrap_or_default()),
                actions: sg["actionStates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        let aname = str_of(a, "actionName").to_owned();
                        let (provider, run_order, config) = declared
                            .get(&(sname.clone(), aname.clone()))
                            .cloned()
                            .unwrap_or_else(|| (String::new(), 1, Value::Null));
                        let ex = &a["latestExecution"];
                        let status = opt(ex, "status");
                        views::ActionView {
                            link: action_link(&provider, &config, ex),
                            approval_token: (provider == "Manual"
                                && status.as_deref() == Some("InProgress"))
                            .then(|| opt(ex, "token"))
                            .flatten(),
                            name: aname,
                            run_order,
                            provider,
                            status,
                            summary: opt(ex, "summary"),
                            revision: opt(&a["currentRevision"], "revisionId"),
                            last_change: ex["lastStatusChange"].as_f64(),
                            error: opt(&ex["errorDetails"], "message"),
                        }
                    })
                    .collect(),
                name: sname,
            }
        })
        .collect();
    let all: Vec<&Value> = hist["pipelineExecutionSummaries"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    let latest = all.first().and_then(|e| opt(e, "status"));
    let latest_id = all.first().and_then(|e| opt(e, "pipelineExecutionId"));
    let executions = all
        .iter()
        .filter(|e| {
            filter
                .as_deref()
                .is_none_or(|f| e["status"].as_str() == Some(f))
        })
        .map(|e| views::ExecutionRow {
            id: str_of(e, "pipelineExecutionId").to_owned(),
            status: str_of(e, "status").to_owned(),
            trigger: str_of(&e["trigger"], "triggerType").to_owned(),
            start: e["startTime"].as_f64(),
            updated: e["lastUpdateTime"].as_f64(),
            revision: e["sourceRevisions"]
                .get(0)
                .and_then(|r| opt(r, "revisionId")),
        })
        .collect();
    let input = json!({"name": name, "pipelineName": name});
    let can = views::Can {
        release: can(state, s, "codepipeline", "StartPipelineExecution", &input).await,
        stop: can(state, s, "codepipeline", "StopPipelineExecution", &input).await,
        retry: can(state, s, "codepipeline", "RetryStageExecution", &input).await,
        approve: can(state, s, "codepipeline", "PutApprovalResult", &input).await,
        transitions: can(state, s, "codepipeline", "DisableStageTransition", &input).await,
        edit: can(
            state,
            s,
            "codepipeline",
            "UpdatePipeline",
            &json!({"pipeline": {"name": name}}),
        )
        .await,
    };
    let json = posted
        .unwrap_or_else(|| serde_json::to_string_pretty(&decl["pipeline"]).unwrap_or_default());
    Ok(views::PipelineView {
        live_from: 0,
        name: name.to_owned(),
        stages,
        latest,
        latest_id,
        executions,
        filter,
        json,
        json_error,
        can,
    })
}

async fn page(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(f): Query<Filter>,
) -> PageResult {
    let s = require(&state, &headers, &path_of(&name)).await?;
    let v = view(
        &state,
        &s,
        &name,
        f.status.filter(|x| !x.is_empty()),
        None,
        None,
    )
    .await?;
    Ok(html(views::pipeline(&s.viewer(), &v)))
}

/// The buttons, graph and history, drawn again after each change of the pipeline.
async fn live(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(at): Query<super::live::After>,
    Query(f): Query<Filter>,
) -> PageResult {
    let s = Arc::new(require(&state, &headers, &path_of(&name)).await?);
    let filter = f.status.filter(|x| !x.is_empty());
    let changes = super::live::changes(
        state.clone(),
        s.region.clone(),
        format!("pipeline:{name}"),
        at.after,
    )
    .await?;
    Ok(super::live::fragments(changes, "live", move || {
        let (state, s, name, filter) = (state.clone(), s.clone(), name.clone(), filter.clone());
        async move {
            match view(&state, &s, &name, filter, None, None).await {
                Ok(v) => Some(views::live_fragment(&s.viewer(), &v)),
                Err(Fail::Api(_, e)) => {
                    tracing::warn!(pipeline = %name, code = %e.code, message = %e.message, "drawing the live graph failed");
                    None
                }
                Err(Fail::SignIn(_)) => None,
            }
        }
    }))
}

fn field<'a>(f: &'a HashMap<String, String>, k: &str) -> &'a str {
    f.get(k).map(String::as_str).unwrap_or("")
}

async fn release(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> PageResult {
    let (s, _) = form(&state, &headers, body).await?;
    op(
        &state,
        &s,
        "codepipeline",
        "StartPipelineExecution",
        json!({"name": name}),
    )
    .await?;
    back(&path_of(&name))
}

async fn stop(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> PageResult {
    let (s, f) = form(&state, &headers, body).await?;
    op(
        &state,
        &s,
        "codepipeline",
        "StopPipelineExecution",
        json!({
            "pipelineName": name,
            "pipelineExecutionId": field(&f, "execution"),
            "abandon": field(&f, "abandon") == "true",
            "reason": format!("Stopped from the console by {}", s.name),
        }),
    )
    .await?;
    back(&path_of(&name))
}

async fn retry(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> PageResult {
    let (s, f) = form(&state, &headers, body).await?;
    op(
        &state,
        &s,
        "codepipeline",
        "RetryStageExecution",
        json!({
            "pipelineName": name,
            "stageName": field(&f, "stage"),
            "pipelineExecutionId": field(&f, "execution"),
            "retryMode": field(&f, "mode"),
        }),
    )
    .await?;
    back(&path_of(&name))
}

async fn approval(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> PageResult {
    let (s, f) = form(&state, &headers, body).await?;
    op(
        &state,
        &s,
        "codepipeline",
        "PutApprovalResult",
        json!({
            "pipelineName": name,
            "stageName": field(&f, "stage"),
            "actionName": field(&f, "action"),
            "token": field(&f, "token"),
            "result": {"status": field(&f, "status"), "summary": field(&f, "summary")},
        }),
    )
    .await?;
    back(&path_of(&name))
}

async fn transitions(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> PageResult {
    let (s, f) = form(&state, &headers, body).await?;
    let stage = field(&f, "stage");
    if field(&f, "enable") == "true" {
        op(
            &state,
            &s,
            "codepipeline",
            "EnableStageTransition",
            json!({"pipelineName": name, "stageName": stage, "transitionType": "Inbound"}),
        )
        .await?;
    } else {
        op(&state, &s, "codepipeline", "DisableStageTransition", json!({"pipelineName": name, "stageName": stage, "transitionType": "Inbound", "reason": field(&f, "reason")})).await?;
    }
    back(&path_of(&name))
}

async fn save_json(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: axum::body::Body,
) -> PageResult {
    let (s, f) = form(&state, &headers, body).await?;
    let text = field(&f, "json").to_owned();
    let result = match serde_json::from_str::<Value>(&text) {
        Ok(mut p) if p.is_object() => {
            // The page edits this pipeline: its name stays.
            p["name"] = Value::String(name.clone());
            op(
                &state,
                &s,
                "codepipeline",
                "UpdatePipeline",
                json!({"pipeline": p}),
            )
            .await
        }
        Ok(_) => Err(Fail::from(slipway_model::ApiError::new(
            "InvalidStructureException",
            400,
            "The pipeline must be a JSON object",
        ))),
        Err(e) => Err(Fail::from(slipway_model::ApiError::new(
            "InvalidStructureException",
            400,
            format!("The pipeline is not valid JSON: {e}"),
        ))),
    };
    match result {
        Ok(_) => back(&path_of(&name)),
        // The errors are shown in place, beside the JSON as it was posted.
        Err(Fail::Api(_, e)) if e.status < 500 && !e.code.contains("AccessDenied") => {
            let v = view(
                &state,
                &s,
                &name,
                None,
                Some(format!("{}: {}", e.code, e.message)),
                Some(text),
            )
            .await?;
            Ok((
                axum::http::StatusCode::BAD_REQUEST,
                html(views::pipeline(&s.viewer(), &v)),
            )
                .into_response())
        }
        Err(other) => Err(other),
    }
}

use axum::response::IntoResponse as _;
