//! The build worker protocol, under `/-/worker/` (the built-in worker and `slipway worker`
//! on other hosts speak it alike): long-poll for a build (`lease`), `heartbeat` (extends
//! the lease, carries StopBuild), batched `logs`, `phases`, a `git-credential` for the
//! build's git commands, the build's `source` (a git
//! bundle of the resolved commit, or the S3 zip), `artifacts` (into the build's artifact
//! bucket) and `complete`. Requests are SigV4-signed (service `codebuild`) and need the
//! IAM action `slipway:RunBuilds`.

use crate::auth::{authenticate, authorize, SignedRequest};
use crate::json::respond;
use crate::{domain_error, AppState};
use axum::body::{to_bytes, Body};
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use futures_util::TryStreamExt as _;
use serde_json::{json, Value};
use slipway_codebuild::service::Heartbeat;
use slipway_model::ApiError;
use std::sync::Arc;
use std::time::Duration;

/// The worker routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/-/worker/lease", post(lease))
        .route("/-/worker/builds/{id}/heartbeat", post(heartbeat))
        .route("/-/worker/builds/{id}/logs", post(logs))
        .route("/-/worker/builds/{id}/phases", post(phases))
        .route("/-/worker/builds/{id}/reports", post(reports))
        .route("/-/worker/builds/{id}/complete", post(complete))
        .route("/-/worker/builds/{id}/source", get(source))
        .route("/-/worker/builds/{id}/parameters", post(parameters))
        .route("/-/worker/builds/{id}/git-credential", post(git_credential))
        .route("/-/worker/builds/{id}/artifacts", put(artifacts))
        .route("/-/worker/builds/{id}/cache", get(cache))
}

/// The IAM action a worker's credentials need.
pub const WORKER_ACTION: &str = "slipway:RunBuilds";

async fn check(state: &AppState, parts: &Parts, body: &[u8]) -> Result<(), ApiError> {
    let signed = SignedRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        headers: &parts.headers,
        body,
    };
    let (principal, _) = authenticate(state, &signed, "codebuild").await?;
    authorize(state, &principal, WORKER_ACTION, &["*".to_owned()]).await
}

/// Reads a request's body (at most `limit` bytes) and checks the request, body included.
async fn signed_body(
    state: &AppState,
    req: Request<Body>,
    limit: usize,
) -> Result<(Parts, axum::body::Bytes), ApiError> {
    let (parts, body) = req.into_parts();
    let body = to_bytes(body, limit).await.map_err(|_| too_large())?;
    check(state, &parts, &body).await?;
    Ok((parts, body))
}

fn too_large() -> ApiError {
    ApiError::new(
        "RequestEntityTooLargeException",
        413,
        "Request body too large",
    )
}

/// As [`signed_body`], the body gathered into a value to be sealed where it lies (a log
/// batch is not copied again to be encrypted).
async fn signed_value(
    state: &AppState,
    req: Request<Body>,
    limit: usize,
) -> Result<(Parts, slipway_blobs::ValueBuf), ApiError> {
    use http_body_util::BodyExt as _;
    let (parts, mut body) = req.into_parts();
    let declared = parts
        .headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let mut buf = slipway_blobs::ValueBuf::with_capacity(declared.unwrap_or(0));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            ApiError::new(
                "InvalidInputException",
                400,
                format!("reading the request body: {e}"),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            if buf.len() + data.len() > limit {
                return Err(too_large());
            }
            buf.extend_from_slice(data);
        }
    }
    check(state, &parts, buf.plaintext()).await?;
    Ok((parts, buf))
}

/// Reads and checks a JSON request: its body, authenticated.
async fn json_request(state: &AppState, req: Request<Body>) -> Result<Value, ApiError> {
    let (_, body) = signed_body(state, req, state.max_json_body).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::serialization(e.to_string()))
}

fn reply(result: Result<Value, ApiError>) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    respond(&id, result.map(|v| v.to_string().into_bytes()))
}

/// Answers a JSON request of the protocol: authenticated, parsed, handled by `f`.
async fn handle<F, Fut>(state: Arc<AppState>, req: Request<Body>, f: F) -> Response
where
    F: FnOnce(Arc<AppState>, Value) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ApiError>>,
{
    let r = match json_request(&state, req).await {
        Ok(v) => f(state, v).await,
        Err(e) => Err(e),
    };
    reply(r)
}

fn token(v: &Value) -> &str {
    v["leaseToken"].as_str().unwrap_or_default()
}

fn query_param(parts: &Parts, name: &str) -> Option<String> {
    parts.uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| crate::sigv4::percent_decode(v, true))
    })
}

async fn lease(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    handle(state, req, |state, v| async move {
        let worker = v["workerId"].as_str().unwrap_or("worker").to_owned();
        let wait = v["waitSeconds"].as_f64().unwrap_or(20.0).clamp(0.0, 60.0);
        let lease = state
            .codebuild
            .lease(&worker, Duration::from_secs_f64(wait))
            .await
            .map_err(domain_error)?;
        Ok(match lease {
            Some(l) => json!({"buildId": l.build_id, "leaseToken": l.token, "job": l.job}),
            None => json!({}),
        })
    })
    .await
}

async fn heartbeat(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    handle(state, req, |state, v| async move {
        let hb = state
            .codebuild
            .heartbeat(
                &id,
                token(&v),
                std::time::Duration::from_secs(v["waitSeconds"].as_u64().unwrap_or(0)),
            )
            .await
            .map_err(domain_error)?;
        let action = match hb {
            Heartbeat::Continue => "continue",
            Heartbeat::Stop => "stop",
            Heartbeat::Lost => "lost",
        };
        Ok(json!({"action": action}))
    })
    .await
}

/// A batch of log lines in its binary form (`LogBatch::pack`), `?leaseToken=` and
/// `&firstSeq=` (the number of its first line; absent, it follows the last batch).
/// Workers send log bytes unsigned (`UNSIGNED-PAYLOAD`), as artifacts.
async fn logs(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    let result = async {
        let (parts, body) = signed_value(&state, req, LOG_BODY_LIMIT).await?;
        let lease = query_param(&parts, "leaseToken").unwrap_or_default();
        let first_seq = match query_param(&parts, "firstSeq") {
            None => None,
            Some(v) => Some(v.parse::<i64>().map_err(|_| {
                ApiError::new(
                    "InvalidInputException",
                    400,
                    format!("firstSeq must be a line number, not {v:?}"),
                )
            })?),
        };
        state
            .codebuild
            .append_logs(&id, &lease, first_seq, body)
            .await
            .map_err(domain_error)?;
        Ok(json!({}))
    }
    .await;
    reply(result)
}

/// The largest log batch taken (a worker sends at most about 4 MB at once).
const LOG_BODY_LIMIT: usize = 8 << 20;

/// A git credential for the build (`git-credential-helper: yes`): `username`, `password`.
async fn git_credential(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    handle(state, req, |state, v| async move {
        let (username, password) = state
            .codebuild
            .git_credential(&id, token(&v))
            .await
            .map_err(domain_error)?;
        Ok(json!({"username": username, "password": password}))
    })
    .await
}

async fn phases(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    handle(state, req, |state, v| async move {
        let list = v["phases"].as_array().cloned().unwrap_or_default();
        state
            .codebuild
            .report_phases(&id, token(&v), &list)
            .await
            .map_err(domain_error)?;
        Ok(json!({}))
    })
    .await
}

async fn reports(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    handle(state, req, |state, v| async move {
        let list = v["reports"].as_array().cloned().unwrap_or_default();
        let arns = state
            .codebuild
            .add_reports(&id, token(&v), &list)
            .await
            .map_err(domain_error)?;
        Ok(json!({"reportArns": arns}))
    })
    .await
}

async fn complete(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    handle(state, req, |state, v| async move {
        state
            .codebuild
            .complete(&id, token(&v), &v)
            .await
            .map_err(domain_error)?;
        // A pipeline waiting for this build reads its result now, not at its next poll.
        state.codepipeline.build_finished();
        Ok(json!({}))
    })
    .await
}

/// Parameter Store values (decrypted) for the buildspec's `env.parameter-store`.
async fn parameters(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    handle(state, req, |state, v| async move {
        let job = state
            .codebuild
            .leased_job(&id, token(&v))
            .await
            .map_err(domain_error)?;
        // The build's own region's parameters.
        let ssm = state.ssm.in_region(job_region(&state, &job));
        let mut values = serde_json::Map::new();
        for name in v["names"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let p = ssm.get(name, true).await.map_err(|_| {
                ApiError::new(
                    "ParameterNotFound",
                    400,
                    format!("parameter does not exist: {name}"),
                )
            })?;
            let value = match p.value {
                slipway_ssm::Value::Plain(s) => s,
                slipway_ssm::Value::Encrypted(_) => return Err(ApiError::internal()),
            };
            values.insert(name.to_owned(), Value::String(value));
        }
        Ok(json!({"values": values}))
    })
    .await
}

pub(crate) fn error_response(e: ApiError) -> Response {
    respond(&uuid::Uuid::new_v4().to_string(), Err(e))
}

/// The region a leased job's build runs in (the server's default for a job queued before
/// builds had regions).
fn job_region<'a>(state: &'a AppState, job: &'a serde_json::Value) -> &'a str {
    job["region"].as_str().unwrap_or(&state.region)
}

async fn source(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    let (parts, _) = req.into_parts();
    let job = match leased(&state, &parts, &id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    // The primary source, or the secondary one `?identifier=` names.
    let (source, version) = match query_param(&parts, "identifier") {
        None => (job["source"].clone(), job["sourceVersion"].clone()),
        Some(ident) => {
            let Some(src) = job["secondarySources"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| s["sourceIdentifier"].as_str() == Some(&ident))
            else {
                return client_error(format!("the build has no secondary source {ident:?}"));
            };
            (src.clone(), src["sourceVersion"].clone())
        }
    };
    let location = source["location"].as_str().unwrap_or_default().to_owned();
    match source["type"].as_str().unwrap_or_default() {
        "CODECOMMIT" => codecommit_source(&state, &job, &location, version.as_str()).await,
        "S3" => s3_source(&state, &job, &location, version.as_str()).await,
        // A pipeline's build: its input artifact, the zip `sourceVersion` names as an S3
        // object ARN (as CodePipeline's builds show it).
        "CODEPIPELINE" => match version.as_str().filter(|v| !v.is_empty()) {
            Some(artifact) => s3_source(&state, &job, artifact, None).await,
            None => client_error(
                "CLIENT_ERROR: a CODEPIPELINE source is the input artifact of a pipeline's action, and this build names none (sourceVersion: arn:aws:s3:::BUCKET/KEY)".into(),
            ),
        },
        other => error_response(ApiError::new(
            "InvalidInputException",
            400,
            format!("source type {other} has nothing to download"),
        )),
    }
}

/// Checks a streaming request (signature over no payload, `?leaseToken=` holding build
/// `id`'s lease); the build's job, or the error to answer.
async fn leased(state: &AppState, parts: &Parts, id: &str) -> Result<serde_json::Value, Response> {
    check(state, parts, b"").await.map_err(error_response)?;
    let lease = query_param(parts, "leaseToken").unwrap_or_default();
    state
        .codebuild
        .leased_job(id, &lease)
        .await
        .map_err(|e| error_response(domain_error(e)))
}

/// Whether the principal that started the build (`initiatorArn`) may do `action` on
/// `resource`: a build reads its sources and writes its artifacts and caches as that
/// principal, as its git commands do. (A job queued before builds recorded it goes on.)
async fn initiator_may(
    state: &AppState,
    job: &serde_json::Value,
    action: &str,
    resource: &str,
) -> Result<(), Response> {
    let Some(arn) = job["initiatorArn"].as_str() else {
        return Ok(());
    };
    let principal = slipway_model::Principal::acting_as(arn);
    authorize(state, &principal, action, &[resource.to_owned()])
        .await
        .map_err(|e| match e.code.as_ref() {
            "AccessDeniedException" => client_error(format!("AccessDenied: {}", e.message)),
            _ => error_response(e),
        })
}

fn s3_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

fn client_error(message: String) -> Response {
    error_response(ApiError::new("CLIENT_ERROR", 400, message))
}

/// A git bundle of the source version (a branch, tag, ref or commit; the default branch
/// when none), streamed from `git bundle create`; the commit in a response header.
async fn codecommit_source(
    state: &AppState,
    job: &serde_json::Value,
    location: &str,
    version: Option<&str>,
) -> Response {
    // The repository the clone URL names, in the region it names.
    let (region, name) = state.codecommit.repository_in_url(location);
    let codecommit = state.codecommit.in_region(&region);
    let repo = match codecommit.get(&name).await {
        Ok(r) => r,
        Err(_) => {
            return client_error(format!(
                "repository not found for primary source and source version {}",
                version.unwrap_or("")
            ))
        }
    };
    if let Err(r) = initiator_may(state, job, "codecommit:GitPull", &repo.arn).await {
        return r;
    }
    let git = state.codecommit.git(&repo);
    let default = repo.default_branch.clone().unwrap_or_else(|| "main".into());
    let wanted = version.unwrap_or(&default);
    let candidates: Vec<String> = if wanted.starts_with("refs/") {
        vec![wanted.to_owned()]
    } else {
        vec![
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
            wanted.to_owned(),
        ]
    };
    let mut found = None;
    for c in &candidates {
        if let Ok(Some(sha)) = git.resolve(c).await {
            found = Some((c.clone(), sha));
            break;
        }
    }
    let Some((reference, sha)) = found else {
        return client_error(format!(
            "reference not found for primary source and source version {wanted}"
        ));
    };
    let bundle_ref = if reference.starts_with("refs/") {
        reference
    } else {
        "--all".to_owned()
    };
    let child = tokio::process::Command::new(&state.codecommit.config().git_bin)
        .arg("-C")
        .arg(state.codecommit.repo_path(&repo.id))
        .args(["bundle", "create", "-q", "-", &bundle_ref])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "starting git bundle");
            return error_response(ApiError::internal());
        }
    };
    let Some(stdout) = child.stdout.take() else {
        return error_response(ApiError::internal());
    };
    let stream = tokio_util::io::ReaderStream::new(stdout);
    // The child is reaped when the stream ends (kill_on_drop covers a client that left).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    (
        StatusCode::OK,
        [
            ("content-type", "application/x-git-bundle".to_owned()),
            ("x-slipway-resolved-source-version", sha),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// The zip at an S3 source location (`BUCKET/KEY` or its ARN), in `version` (an object
/// version id) when one is named.
async fn s3_source(
    state: &AppState,
    job: &serde_json::Value,
    location: &str,
    version: Option<&str>,
) -> Response {
    let location = slipway_codebuild::execute::s3_object(location);
    let Some((bucket, key)) = location.split_once('/') else {
        return client_error(format!("invalid S3 source location {location}"));
    };
    if let Err(r) = initiator_may(state, job, "s3:GetObject", &s3_arn(bucket, key)).await {
        return r;
    }
    let version = version.filter(|v| !v.is_empty());
    match stream_object(state, bucket, key, version, "application/zip", None).await {
        Some(r) => r,
        None => client_error(format!(
            "NoSuchKey: the source object {location}{} does not exist",
            version.map_or(String::new(), |v| format!(" (version {v})"))
        )),
    }
}

/// An object's bytes, streamed, with its version id in `x-slipway-resolved-source-version`;
/// None when it does not exist (or was written before `newer_than`, seconds).
async fn stream_object(
    state: &AppState,
    bucket: &str,
    key: &str,
    version: Option<&str>,
    content_type: &str,
    newer_than: Option<f64>,
) -> Option<Response> {
    let object = state.s3.object(bucket, key, version).await.ok()?;
    if newer_than.is_some_and(|t| object.modified <= t) {
        return None;
    }
    let segments = match state.s3.segments(&object).await {
        Ok(s) => s,
        Err(_) => return Some(error_response(ApiError::internal())),
    };
    let stream = state
        .s3
        .read(segments, 0..object.size)
        .map_err(std::io::Error::other);
    Some(
        (
            StatusCode::OK,
            [
                ("content-type", content_type.to_owned()),
                (
                    "x-slipway-resolved-source-version",
                    object.version_id.clone(),
                ),
            ],
            Body::from_stream(stream),
        )
            .into_response(),
    )
}

/// The bucket of a job's S3 cache (`cache.location` is `bucket[/prefix]`).
fn cache_bucket(job: &serde_json::Value) -> Option<String> {
    (job["cache"]["type"].as_str() == Some("S3"))
        .then(|| job["cache"]["location"].as_str())
        .flatten()
        .map(|l| l.split('/').next().unwrap_or(l).to_owned())
}

/// A cache the build's project saved in its S3 cache bucket (`?key=`): 404 when there is
/// none, or it was saved before InvalidateProjectCache.
async fn cache(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    let (parts, _) = req.into_parts();
    let job = match leased(&state, &parts, &id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let Some(bucket) = cache_bucket(&job) else {
        return client_error("the build's project has no S3 cache".into());
    };
    let key = query_param(&parts, "key").unwrap_or_default();
    if let Err(r) = initiator_may(&state, &job, "s3:GetObject", &s3_arn(&bucket, &key)).await {
        return r;
    }
    let invalidated = job["cacheInvalidatedAt"].as_f64();
    match stream_object(
        &state,
        &bucket,
        &key,
        None,
        "application/x-tar",
        invalidated,
    )
    .await
    {
        Some(r) => r,
        None => error_response(ApiError::new(
            "NoSuchKey",
            404,
            format!("no cache at {bucket}/{key}"),
        )),
    }
}

/// Stores one artifact object (`?bucket=&key=`) in the build's artifact bucket.
async fn artifacts(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    req: Request<Body>,
) -> Response {
    let (parts, body) = req.into_parts();
    let job = match leased(&state, &parts, &id).await {
        Ok(j) => j,
        Err(r) => return r,
    };
    let bucket = query_param(&parts, "bucket").unwrap_or_default();
    let key = query_param(&parts, "key").unwrap_or_default();
    let allowed: Vec<String> = std::iter::once(&job["artifacts"])
        .chain(job["secondaryArtifacts"].as_array().into_iter().flatten())
        .filter_map(|a| a["location"].as_str())
        .map(slipway_codebuild::execute::s3_object)
        .map(|l| l.split('/').next().unwrap_or(l).to_owned())
        .chain(cache_bucket(&job))
        .collect();
    if key.is_empty() || !allowed.contains(&bucket) {
        return client_error(format!(
            "artifacts may only go to the build's artifact bucket, not {bucket:?}"
        ));
    }
    if let Err(r) = initiator_may(&state, &job, "s3:PutObject", &s3_arn(&bucket, &key)).await {
        return r;
    }
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut hashers = s3s::checksum::ChecksumHasher::default();
    let staged = match state
        .s3
        .stage(stream, 5 * 1024 * 1024 * 1024 * 1024, true, &mut hashers)
        .await
    {
        Ok(s) => s,
        Err(e) => return client_error(format!("storing the artifact: {e:?}")),
    };
    let how = slipway_s3::How {
        if_none_match: false,
        reason: "PutObject",
    };
    match state
        .s3
        .commit_object(&bucket, &key, staged, Default::default(), Vec::new(), how)
        .await
    {
        Ok(w) => reply(Ok(json!({"etag": w.etag, "size": w.size}))),
        Err(e) => client_error(format!(
            "storing the artifact in {bucket}: {}",
            e.message().unwrap_or("error")
        )),
    }
}
