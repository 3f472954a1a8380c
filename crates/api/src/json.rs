//! AWS JSON-1.1: `POST /` routed by `X-Amz-Target`, authenticated, authorised, dispatched to
//! the generated service traits, with errors rendered as AWS renders them.

use crate::auth::{authenticate, authorize, SignedRequest};
use crate::codebuild_api::CodeBuildService;
use crate::codecommit_api::CodeCommitService;
use crate::ssm_api::SsmService;
use crate::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{HeaderValue, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use slipway_codebuild::service::CodeBuild;
use slipway_model::Principal;
use slipway_model::{
    codebuild, codecommit, codedeploy, codedeploy_commands, codepipeline, logs, ssm, ApiError,
    Context,
};
use std::sync::Arc;

pub(crate) fn respond(request_id: &str, result: Result<Vec<u8>, ApiError>) -> Response {
    let (status, body) = match result {
        Ok(body) => (StatusCode::OK, body),
        Err(e) => (
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.body(),
        ),
    };
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-amz-json-1.1"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    resp
}

/// The resources an operation acts on, read from its input, for IAM. Operations whose
/// resource is not named in the input are checked against `*`.
fn codecommit_resources(cc: &slipway_codecommit::CodeCommit, input: &Value) -> Vec<String> {
    let arn = |name: &str| cc.arn(name);
    let mut out = Vec::new();
    for key in ["repositoryName", "oldName"] {
        if let Some(n) = input.get(key).and_then(Value::as_str) {
            out.push(arn(n));
        }
    }
    if let Some(names) = input.get("repositoryNames").and_then(Value::as_array) {
        out.extend(names.iter().filter_map(Value::as_str).map(arn));
    }
    if let Some(a) = input.get("resourceArn").and_then(Value::as_str) {
        out.push(a.to_owned());
    }
    if out.is_empty() {
        out.push("*".into());
    }
    out
}

/// The parameters an SSM operation acts on (`*` for listings), for IAM.
fn ssm_resources(ssm: &slipway_ssm::ParameterStore, input: &Value) -> Vec<String> {
    let arn = |name: &str| ssm.arn(name.split(':').next().unwrap_or(name));
    let mut out: Vec<String> = Vec::new();
    if let Some(n) = input.get("Name").and_then(Value::as_str) {
        out.push(arn(n));
    }
    if let Some(names) = input.get("Names").and_then(Value::as_array) {
        out.extend(names.iter().filter_map(Value::as_str).map(arn));
    }
    if let Some(p) = input.get("Path").and_then(Value::as_str) {
        out.push(arn(p));
    }
    if out.is_empty() {
        out.push("*".into());
    }
    out
}

/// The report groups a CodeBuild report operation acts on, for IAM: CodeBuild authorises
/// report operations on the report group's ARN (a report's group for report ARNs).
fn report_group_resources(cb: &CodeBuild, operation: &str, input: &Value) -> Vec<String> {
    let of_report = |arn: &str| match arn.split_once(":report/") {
        Some((head, rest)) => format!(
            "{head}:report-group/{}",
            rest.rsplit_once(':').map_or(rest, |(g, _)| g)
        ),
        None => arn.to_owned(),
    };
    let mut out = Vec::new();
    if operation == "CreateReportGroup" {
        if let Some(n) = input.get("name").and_then(Value::as_str) {
            out.push(cb.report_group_arn(n));
        }
    }
    for key in [
        "reportGroupArn",
        "reportGroupArns",
        "arn",
        "reportArn",
        "reportArns",
    ] {
        let values = match input.get(key) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            Some(Value::String(s)) => vec![s.as_str()],
            _ => Vec::new(),
        };
        out.extend(values.into_iter().map(of_report));
    }
    if out.is_empty() {
        out.push("*".into());
    }
    out
}

/// The projects (and builds' projects) a CodeBuild operation acts on, for IAM: CodeBuild
/// authorises build operations on the project's ARN.
fn codebuild_resources(cb: &CodeBuild, operation: &str, input: &Value) -> Vec<String> {
    if operation.contains("Report")
        || operation.ends_with("TestCases")
        || operation.ends_with("CodeCoverages")
    {
        return report_group_resources(cb, operation, input);
    }
    let project = |name_or_arn: &str| {
        if name_or_arn.starts_with("arn:") {
            name_or_arn.to_owned()
        } else {
            cb.project_arn(name_or_arn)
        }
    };
    // A build id is PROJECT:UUID (or a build ARN ending in it).
    let of_build = |id: &str| {
        let id = id.rsplit_once(":build/").map_or(id, |(_, i)| i);
        project(id.rsplit_once(':').map_or(id, |(p, _)| p))
    };
    let mut out = Vec::new();
    for key in ["name", "projectName"] {
        if let Some(n) = input.get(key).and_then(Value::as_str) {
            out.push(project(n));
        }
    }
    if let Some(names) = input.get("names").and_then(Value::as_array) {
        out.extend(names.iter().filter_map(Value::as_str).map(project));
    }
    if let Some(id) = input.get("id").and_then(Value::as_str) {
        out.push(of_build(id));
    }
    if let Some(ids) = input.get("ids").and_then(Value::as_array) {
        out.extend(ids.iter().filter_map(Value::as_str).map(of_build));
    }
    if out.is_empty() {
        out.push("*".into());
    }
    out
}

/// The pipelines a CodePipeline operation acts on, for IAM (by name, or the tagged ARN).
fn codepipeline_resources(cp: &slipway_codepipeline::CodePipeline, input: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let named = input
        .get("name")
        .or_else(|| input.get("pipelineName"))
        .or_else(|| input.pointer("/pipeline/name"));
    if let Some(n) = named.and_then(Value::as_str) {
        out.push(cp.pipeline_arn(n));
    }
    if let Some(a) = input.get("resourceArn").and_then(Value::as_str) {
        out.push(a.to_owned());
    }
    let webhook = input
        .get("webhookName")
        .or_else(|| input.pointer("/webhook/name"));
    if let Some(n) = webhook.and_then(Value::as_str) {
        out.push(cp.webhook_arn(n));
    }
    if let Some(n) = input
        .pointer("/webhook/targetPipeline")
        .and_then(Value::as_str)
    {
        out.push(cp.pipeline_arn(n));
    }
    if out.is_empty() {
        out.push("*".into());
    }
    out
}

/// The applications, groups and configs a CodeDeploy operation names, for IAM (`*` for the
/// others: deployments and instances are authorised on `*`).
fn codedeploy_resources(cd: &slipway_codedeploy::CodeDeploy, input: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let app = input.get("applicationName").and_then(Value::as_str);
    let group = input
        .get("deploymentGroupName")
        .or_else(|| input.get("currentDeploymentGroupName"))
        .and_then(Value::as_str);
    match (app, group) {
        (Some(a), Some(g)) => out.push(cd.group_arn(a, g)),
        (Some(a), None) => out.push(cd.application_arn(a)),
        _ => {}
    }
    if let Some(c) = input.get("deploymentConfigName").and_then(Value::as_str) {
        out.push(cd.config_arn(c));
    }
    if let Some(a) = input.get("ResourceArn").and_then(Value::as_str) {
        out.push(a.to_owned());
    }
    if out.is_empty() {
        out.push("*".into());
    }
    out
}

/// The fallback handler: everything that is not git or `/-/` is an AWS API request.
pub async fn handle(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    // AWS's query protocol (IAM, STS: a form with `Action=`), which Slipway does not serve:
    // answered in that protocol's XML, so its clients report the error instead of failing
    // to parse it.
    let query_protocol = !req.headers().contains_key("x-amz-target")
        && req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let result = handle_inner(&state, req, &request_id).await;
    if let Err(e) = &result {
        tracing::info!(request_id, code = %e.code, status = e.status, "request failed");
    }
    match result {
        Err(_) if query_protocol => query_error(&request_id),
        result => respond(&request_id, result),
    }
}

/// An `ErrorResponse` in the query protocol's XML for an action Slipway does not serve.
fn query_error(request_id: &str) -> Response {
    let body = format!(
        "<ErrorResponse><Error><Type>Sender</Type><Code>InvalidAction</Code><Message>Slipway does not serve AWS query-protocol APIs (IAM, STS) over HTTP; manage users, keys and policies with `slipway admin`</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>"
    );
    let mut resp = (StatusCode::BAD_REQUEST, body).into_response();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/xml"));
    resp
}

async fn handle_inner(
    state: &AppState,
    req: Request<Body>,
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let (parts, body) = req.into_parts();
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let Some(target) = target else {
        return Err(ApiError::new(
            "UnknownOperationException",
            404,
            format!("No route for {} {}", parts.method, parts.uri.path()),
        ));
    };
    if parts.method != Method::POST || parts.uri.path() != "/" {
        return Err(ApiError::new(
            "UnknownOperationException",
            404,
            "AWS JSON requests are POST /",
        ));
    }
    let (prefix, operation) = target.split_once('.').unwrap_or((target.as_str(), ""));
    let Some((_, signing, operations)) = slipway_model::SERVICES
        .iter()
        .find(|(p, _, _)| *p == prefix)
    else {
        return Err(ApiError::unknown_operation(prefix, operation));
    };
    let body = to_bytes(body, state.max_json_body).await.map_err(|_| {
        ApiError::new(
            "RequestEntityTooLargeException",
            413,
            format!("Request body exceeds {} bytes", state.max_json_body),
        )
    })?;
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body: &body,
    };
    let (principal, region) = authenticate(state, &signed, signing).await?;
    if !operations.contains(&operation) {
        return Err(ApiError::unknown_operation(prefix, operation));
    }
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::serialization(format!("Request body is not valid JSON: {e}")))?
    };
    if !input.is_object() {
        return Err(ApiError::serialization(
            "Request body must be a JSON object",
        ));
    }
    // Build log pages are linked for the caller, signed with its own key; behind a
    // TLS-terminating proxy the link is https.
    let host = parts
        .headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let scheme = match parts
        .headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    call(
        state,
        principal,
        &region,
        signing,
        operation,
        input,
        Some((scheme, host)),
        request_id,
    )
    .await
}

/// The resources an operation acts on, as IAM evaluates them.
fn resources_of(
    state: &AppState,
    region: &str,
    signing: &str,
    operation: &str,
    input: &Value,
) -> Vec<String> {
    match signing {
        "codepipeline" => codepipeline_resources(&state.codepipeline.in_region(region), input),
        "codedeploy" => codedeploy_resources(&state.codedeploy.in_region(region), input),
        "codecommit" => codecommit_resources(&state.codecommit.in_region(region), input),
        "ssm" => ssm_resources(&state.ssm.in_region(region), input),
        "codebuild" => codebuild_resources(&state.codebuild.in_region(region), operation, input),
        _ => vec!["*".to_owned()],
    }
}

/// Whether `principal` may call `operation` with `input` (what the console asks before it
/// draws a button).
pub(crate) async fn allowed(
    state: &AppState,
    principal: &Principal,
    region: &str,
    signing: &str,
    operation: &str,
    input: &Value,
) -> bool {
    let resources = resources_of(state, region, signing, operation, input);
    authorize(
        state,
        principal,
        &format!("{signing}:{operation}"),
        &resources,
    )
    .await
    .is_ok()
}

/// Authorises and performs one operation for an authenticated caller: the JSON API's
/// requests and the console's actions both end here, so they are judged alike.
/// `links`: (scheme, host) build log links are made for.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn call(
    state: &AppState,
    principal: Principal,
    region: &str,
    signing: &str,
    operation: &str,
    input: Value,
    links: Option<(&'static str, String)>,
    request_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let action = format!("{signing}:{operation}");
    let resources = resources_of(state, region, signing, operation, &input);
    authorize(state, &principal, &action, &resources).await?;
    tracing::debug!(request_id, %action, caller = %principal.arn, "authorized");
    // Every service acts in the region the request is signed for.
    let region = region.to_owned();
    let codecommit = state.codecommit.in_region(&region);
    let codebuild = state.codebuild.in_region(&region);
    let ssm = state.ssm.in_region(&region);
    let pipelines = state.codepipeline.in_region(&region);
    let deploy = state.codedeploy.in_region(&region);
    let ctx = Context {
        request_id: request_id.to_owned(),
        region,
        account_id: state.account_id.clone(),
        principal,
    };
    match signing {
        "codecommit" => {
            let svc = CodeCommitService { cc: codecommit };
            let result = codecommit::dispatch(&svc, &ctx, operation, input).await;
            // A commit through the API may start pipelines (its event is in the outbox).
            state.codepipeline.wake();
            result
        }
        "codebuild" => {
            let secret = state
                .iam
                .key_owner(&ctx.principal.access_key_id)
                .await
                .ok()
                .flatten()
                .map(|o| o.secret);
            let svc = CodeBuildService {
                cb: codebuild,
                ssm,
                links: links.zip(secret).map(|((scheme, host), secret)| {
                    crate::codebuild_api::DeepLinks {
                        scheme,
                        host,
                        access_key_id: ctx.principal.access_key_id.clone(),
                        secret,
                    }
                }),
            };
            codebuild::dispatch(&svc, &ctx, operation, input).await
        }
        "codepipeline" => {
            let svc = crate::codepipeline_api::CodePipelineService { cp: pipelines };
            codepipeline::dispatch(&svc, &ctx, operation, input).await
        }
        "codedeploy" => {
            let svc = crate::codedeploy_api::CodeDeployService { cd: deploy };
            codedeploy::dispatch(&svc, &ctx, operation, input).await
        }
        "codedeploy-commands" => {
            let svc = crate::codedeploy_api::CommandService { cd: deploy };
            codedeploy_commands::dispatch(&svc, &ctx, operation, input).await
        }
        "logs" => {
            let svc = crate::logs_api::LogsService { cb: codebuild };
            logs::dispatch(&svc, &ctx, operation, input).await
        }
        "ssm" => {
            let svc = SsmService { ps: ssm };
            ssm::dispatch(&svc, &ctx, operation, input).await
        }
        _ => Err(ApiError::unknown_operation(signing, operation)),
    }
}
