//! Deployment pages: applications, an application's groups and deployments, and a
//! deployment's hosts by batch with each lifecycle event's status and script output; Stop
//! (and roll back). Each is a CodeDeploy operation as the signed-in caller.

use super::{back, can, form, html, op, opt, require, str_of, PageResult};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use slipway_console::{deploys as views, enc};
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/-/console/deployments", get(applications))
        .route("/-/console/deployments/{app}", get(application))
        .route("/-/console/deployments/{app}/{id}", get(deployment))
        .route("/-/console/deployments/{app}/{id}/stop", post(stop))
        .route("/-/console/deployments/{app}/{id}/live", get(live))
}

fn strings(v: &Value, k: &str) -> Vec<String> {
    v[k].as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_owned))
        .collect()
}

async fn applications(State(state): State<Arc<AppState>>, headers: HeaderMap) -> PageResult {
    let s = require(&state, &headers, "/-/console/deployments").await?;
    let apps = strings(
        &op(&state, &s, "codedeploy", "ListApplications", json!({})).await?,
        "applications",
    );
    Ok(html(views::applications(&s.viewer(), &apps)))
}

async fn application(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!("/-/console/deployments/{}", enc(&app)),
    )
    .await?;
    op(
        &state,
        &s,
        "codedeploy",
        "GetApplication",
        json!({"applicationName": app}),
    )
    .await?;
    let groups = strings(
        &op(
            &state,
            &s,
            "codedeploy",
            "ListDeploymentGroups",
            json!({"applicationName": app}),
        )
        .await?,
        "deploymentGroups",
    );
    let mut ids = Vec::new();
    for g in &groups {
        ids.extend(strings(
            &op(
                &state,
                &s,
                "codedeploy",
                "ListDeployments",
                json!({"applicationName": app, "deploymentGroupName": g}),
            )
            .await?,
            "deployments",
        ));
    }
    let mut rows = Vec::new();
    for chunk in ids.chunks(25) {
        let got = op(
            &state,
            &s,
            "codedeploy",
            "BatchGetDeployments",
            json!({"deploymentIds": chunk}),
        )
        .await?;
        for d in got["deploymentsInfo"].as_array().into_iter().flatten() {
            rows.push(views::DeploymentRow {
                id: str_of(d, "deploymentId").to_owned(),
                group: str_of(d, "deploymentGroupName").to_owned(),
                status: str_of(d, "status").to_owned(),
                created: d["createTime"].as_f64(),
                creator: opt(d, "creator"),
            });
        }
    }
    rows.sort_by(|a, b| {
        b.created
            .partial_cmp(&a.created)
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    Ok(html(views::application(&s.viewer(), &app, &groups, &rows)))
}

fn page_path(app: &str, id: &str) -> String {
    format!("/-/console/deployments/{}/{}", enc(app), enc(id))
}

async fn deployment(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
) -> PageResult {
    let s = require(&state, &headers, &page_path(&app, &id)).await?;
    let at = super::live::position(&state).await?;
    let mut v = view(&state, &s, &app, &id).await?;
    v.live_from = at;
    Ok(html(views::deployment(&s.viewer(), &v)))
}

/// The hosts and buttons, drawn again after each change of the deployment.
async fn live(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    Query(at): Query<super::live::After>,
) -> PageResult {
    let s = Arc::new(require(&state, &headers, &page_path(&app, &id)).await?);
    let topic = format!("deployment:{id}");
    let changes = super::live::changes(state.clone(), s.region.clone(), topic, at.after).await?;
    Ok(super::live::fragments(changes, "live", move || {
        let (state, s, app, id) = (state.clone(), s.clone(), app.clone(), id.clone());
        async move {
            let v = view(&state, &s, &app, &id).await.ok()?;
            Some(views::live(&s.viewer(), &v).into_string())
        }
    }))
}

async fn view(
    state: &AppState,
    s: &super::Session,
    app: &str,
    id: &str,
) -> Result<views::DeploymentView, super::Fail> {
    let (app, id) = (app.to_owned(), id.to_owned());
    let d = op(
        state,
        s,
        "codedeploy",
        "GetDeployment",
        json!({"deploymentId": id}),
    )
    .await?;
    let d = &d["deploymentInfo"];
    let targets = strings(
        &op(
            state,
            s,
            "codedeploy",
            "ListDeploymentTargets",
            json!({"deploymentId": id}),
        )
        .await?,
        "targetIds",
    );
    let mut hosts = Vec::new();
    for chunk in targets.chunks(25) {
        let got = op(
            state,
            s,
            "codedeploy",
            "BatchGetDeploymentTargets",
            json!({"deploymentId": id, "targetIds": chunk}),
        )
        .await?;
        for t in got["deploymentTargets"].as_array().into_iter().flatten() {
            let it = &t["instanceTarget"];
            let events = it["lifecycleEvents"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let dg = &e["diagnostics"];
                    views::EventRow {
                        name: str_of(e, "lifecycleEventName").to_owned(),
                        status: str_of(e, "status").to_owned(),
                        start: e["startTime"].as_f64(),
                        end: e["endTime"].as_f64(),
                        script: opt(dg, "scriptName"),
                        message: opt(dg, "message").filter(|m| m != "Succeeded"),
                        log: opt(dg, "logTail"),
                    }
                })
                .collect();
            hosts.push(views::HostRow {
                instance: str_of(it, "targetId").to_owned(),
                status: str_of(it, "status").to_owned(),
                batch: 0,
                label: opt(it, "instanceLabel"),
                events,
            });
        }
    }
    // Hosts in the order they started, numbered by batch from their events' times.
    let first = |h: &views::HostRow| h.events.iter().filter_map(|e| e.start).reduce(f64::min);
    hosts.sort_by(|a, b| {
        first(a)
            .unwrap_or(f64::MAX)
            .total_cmp(&first(b).unwrap_or(f64::MAX))
    });
    let spans: Vec<_> = hosts
        .iter()
        .map(|h| {
            (
                first(h),
                h.events.iter().filter_map(|e| e.end).reduce(f64::max),
                h.status == "InProgress",
            )
        })
        .collect();
    for (h, b) in hosts
        .iter_mut()
        .zip(slipway_codedeploy::orchestrator::batch_numbers(&spans))
    {
        h.batch = b as u32;
    }
    let status = str_of(d, "status").to_owned();
    let view = views::DeploymentView {
        id: id.clone(),
        app: app.clone(),
        group: str_of(d, "deploymentGroupName").to_owned(),
        done: matches!(status.as_str(), "Succeeded" | "Failed" | "Stopped"),
        status,
        error: d["errorInformation"].is_object().then(|| {
            format!(
                "{}: {}",
                str_of(&d["errorInformation"], "code"),
                str_of(&d["errorInformation"], "message")
            )
        }),
        rollback_of: opt(&d["rollbackInfo"], "rollbackTriggeringDeploymentId"),
        rolled_back_by: opt(&d["rollbackInfo"], "rollbackDeploymentId"),
        hosts,
        can_stop: can(
            state,
            s,
            "codedeploy",
            "StopDeployment",
            &json!({"deploymentId": id}),
        )
        .await,
        live_from: 0,
    };
    Ok(view)
}

async fn stop(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((app, id)): Path<(String, String)>,
    body: axum::body::Body,
) -> PageResult {
    let (s, f) = form(&state, &headers, body).await?;
    op(&state, &s, "codedeploy", "StopDeployment", json!({"deploymentId": id, "autoRollbackEnabled": f.get("rollback").map(String::as_str) == Some("true")})).await?;
    back(&format!(
        "/-/console/deployments/{}/{}",
        enc(&app),
        enc(&id)
    ))
}
