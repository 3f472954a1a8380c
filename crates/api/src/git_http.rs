//! Git smart HTTP at `/v1/repos/NAME` (repositories of the server's default region) and
//! `/-/regions/REGION/v1/repos/NAME` (any region's), as CodeCommit serves it: authentication with the aws-cli
//! credential helper's SigV4 passwords or service-specific credentials, authorisation as
//! `codecommit:GitPull`/`GitPush`, and real git (`git http-backend`, which runs
//! `upload-pack`/`receive-pack --stateless-rpc`) doing the protocol work, protocol v0 and v2,
//! gzip request bodies, streamed both ways.

use crate::auth::authorize;
use crate::sigv4;
use crate::AppState;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use slipway_codecommit::refs::RefUpdate;
use slipway_model::runtime::base64_decode;
use slipway_model::Principal;
use std::process::Stdio;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The most a receive-pack response may hold (it is a status report, buffered so the push is
/// acknowledged only after its events are recorded).
const MAX_RECEIVE_PACK_RESPONSE: usize = 64 * 1024 * 1024;
/// The most CGI header bytes git may print before its body.
const MAX_CGI_HEADER: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GitService {
    UploadPack,
    ReceivePack,
}

impl GitService {
    fn action(self) -> &'static str {
        match self {
            GitService::UploadPack => "codecommit:GitPull",
            GitService::ReceivePack => "codecommit:GitPush",
        }
    }
}

fn plain(status: StatusCode, message: &str) -> Response {
    (
        status,
        [("content-type", "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn unauthorized(message: &str) -> Response {
    let mut r = plain(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Basic realm=\"Slipway CodeCommit\""),
    );
    r
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Who the Basic credentials belong to, or the response that refuses them.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
    repo_path: &str,
    region: &str,
) -> Result<Principal, Response> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(unauthorized("Authentication required"));
    };
    let decoded = value
        .strip_prefix("Basic ")
        .and_then(|b| base64_decode(b.trim()))
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unauthorized("Malformed Basic credentials"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthorized("Malformed Basic credentials"))?;
    let internal = |e: slipway_iam::IamError| {
        tracing::error!(error = %e, "git authentication");
        plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
    };
    // The credential helper sends the access key id (with `%token` for session credentials).
    let access_key_id = user.split('%').next().unwrap_or(user);
    let looks_signed = password.len() == 80 && password.as_bytes()[15] == b'Z';
    if looks_signed {
        if let Some(owner) = state.iam.key_owner(access_key_id).await.map_err(internal)? {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .unwrap_or("");
            let hostname = host
                .rsplit_once(':')
                .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
                .map_or(host, |(h, _)| h);
            // The helper signs for the region it is configured with (it can only read one
            // from CodeCommit's own host names): the URL's region first, then any other.
            let t = now();
            let verify = |r: &str| {
                sigv4::verify_git_password(&owner.secret, password, repo_path, hostname, r, t)
            };
            let verified = match verify(region) {
                Err(sigv4::AuthError::BadSignature(m)) => slipway_regions::all()
                    .filter(|r| *r != region)
                    .find(|r| verify(r).is_ok())
                    .map_or(Err(sigv4::AuthError::BadSignature(m)), |_| Ok(())),
                other => other,
            };
            return match verified {
                Ok(()) => Ok(Principal {
                    arn: owner.arn,
                    access_key_id: access_key_id.to_owned(),
                    user_name: owner.user_name,
                }),
                Err(e) => {
                    tracing::info!(access_key_id, reason = ?e, "git credential-helper password rejected");
                    Err(unauthorized("Invalid credentials"))
                }
            };
        }
    }
    // A running build's credential (`git-credential-helper: yes`): it acts as the principal
    // that started the build. (A service-specific credential's user name could share the
    // prefix: not found here, it is checked as one below.)
    match state.codebuild.git_principal(user, password).await {
        Ok(Some(arn)) => return Ok(Principal::acting_as(&arn)),
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "git authentication of a build");
            return Err(plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"));
        }
    }
    match state
        .iam
        .verify_service_credential("codecommit.amazonaws.com", user, password)
        .await
        .map_err(internal)?
    {
        Some(user_name) => Ok(Principal {
            arn: state.iam.user_arn(&user_name),
            access_key_id: String::new(),
            user_name: Some(user_name),
        }),
        None => Err(unauthorized("Invalid credentials")),
    }
}

/// Handles every request under `/v1/repos/` and `/-/regions/REGION/v1/repos/`.
pub async fn handle(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let (prefix, region) = match path.strip_prefix("/-/regions/") {
        Some(r) => {
            let region = r.split('/').next().unwrap_or_default();
            if !slipway_regions::is_known(region) {
                return plain(
                    StatusCode::NOT_FOUND,
                    &format!("'{region}' is not an AWS region"),
                );
            }
            (format!("/-/regions/{region}"), region.to_owned())
        }
        None => (String::new(), state.region.clone()),
    };
    let rest = path
        .strip_prefix(prefix.as_str())
        .and_then(|p| p.strip_prefix("/v1/repos/"))
        .unwrap_or("");
    let (raw_name, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let name = raw_name.strip_suffix(".git").unwrap_or(raw_name).to_owned();
    let service = match (req.method().as_str(), tail) {
        ("GET", "info/refs") => match query.split('&').find_map(|p| p.strip_prefix("service=")) {
            Some("git-upload-pack") => GitService::UploadPack,
            Some("git-receive-pack") => GitService::ReceivePack,
            _ => {
                return plain(
                    StatusCode::FORBIDDEN,
                    "Only the smart HTTP protocol is supported",
                )
            }
        },
        ("POST", "git-upload-pack") => GitService::UploadPack,
        ("POST", "git-receive-pack") => GitService::ReceivePack,
        _ => return plain(StatusCode::NOT_FOUND, "Not found"),
    };
    let repo_path = format!("{prefix}/v1/repos/{raw_name}");
    let principal = match authenticate(&state, req.headers(), &repo_path, &region).await {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let codecommit = state.codecommit.in_region(&region);
    let arn = codecommit.arn(&name);
    if let Err(e) = authorize(
        &state,
        &principal,
        service.action(),
        std::slice::from_ref(&arn),
    )
    .await
    {
        tracing::info!(caller = %principal.arn, repository = %name, action = service.action(), "git access denied");
        return plain(
            if e.status == 500 {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::FORBIDDEN
            },
            &e.message,
        );
    }
    let repo = match codecommit.find(&name).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return plain(
                StatusCode::NOT_FOUND,
                &format!("Repository {name} does not exist"),
            )
        }
        Err(e) => {
            tracing::error!(error = %e, "finding repository");
            return plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error");
        }
    };
    tracing::info!(repository = %name, service = ?service, caller = %principal.arn, "git request");
    match run_backend(&state, &repo, &principal, service, tail, &query, req).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, repository = %name, "git http-backend failed");
            plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error")
        }
    }
}

/// A CGI response head: status, headers, and where the body starts.
type CgiHead = (StatusCode, Vec<(String, String)>, usize);

/// Splits CGI output into (status, headers) and the bytes after the blank line.
fn parse_cgi_headers(buf: &[u8]) -> Option<CgiHead> {
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .or_else(|| buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2))?;
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut status = StatusCode::OK;
    let mut headers = Vec::new();
    for line in text.lines().map(str::trim_end).filter(|l| !l.is_empty()) {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            status = v
                .split(' ')
                .next()
                .and_then(|c| c.parse().ok())
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            headers.push((k.to_owned(), v.to_owned()));
        }
    }
    Some((status, headers, end))
}

async fn run_backend(
    state: &AppState,
    repo: &slipway_codecommit::Repository,
    principal: &Principal,
    service: GitService,
    tail: &str,
    query: &str,
    req: Request<Body>,
) -> std::io::Result<Response> {
    let cc = &state.codecommit.in_region(&repo.region);
    let cfg = cc.config();
    // Held until git exits (moved into the task that waits for it when the response streams).
    let permit = state
        .git_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = req.into_parts();
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let ref_log = tempfile::NamedTempFile::new()?;
    let hooks = cc.hooks_dir();
    let mut cmd = Command::new(&cfg.git_bin);
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", cc.repos_dir())
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("PATH_INFO", format!("/{}.git/{tail}", repo.id))
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("QUERY_STRING", query)
        .env("CONTENT_TYPE", header("content-type"))
        .env(
            "REMOTE_USER",
            principal.user_name.as_deref().unwrap_or("root"),
        )
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("HOME", &cfg.data_dir)
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "core.hooksPath")
        .env("GIT_CONFIG_VALUE_0", &hooks)
        .env("SLIPWAY_REF_LOG", ref_log.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (h, var) in [
        ("content-encoding", "HTTP_CONTENT_ENCODING"),
        ("git-protocol", "GIT_PROTOCOL"),
        ("content-length", "CONTENT_LENGTH"),
    ] {
        let v = header(h);
        if !v.is_empty() {
            cmd.env(var, v);
        }
    }
    let mut child = cmd.spawn()?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| std::io::Error::other("no stdin"))?;
    let mut stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::other("no stdout"))?;
    let mut stderr = child
        .stderr
        .take()
        .ok_or_else(|| std::io::Error::other("no stderr"))?;

    // Request body → git, chunk by chunk: a push of any size never sits whole in memory.
    tokio::spawn(async move {
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(bytes) => {
                    if stdin.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::info!(error = %e, "git request body aborted");
                    break;
                }
            }
        }
        let _ = stdin.shutdown().await;
    });
    let stderr_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
        buf
    });

    // Read the CGI headers.
    let mut buf = Vec::with_capacity(8192);
    let (status, headers, body_start) = loop {
        if let Some(parsed) = parse_cgi_headers(&buf) {
            break parsed;
        }
        if buf.len() > MAX_CGI_HEADER {
            return Err(std::io::Error::other(
                "git http-backend printed oversized headers",
            ));
        }
        let mut chunk = [0u8; 8192];
        let n = stdout.read(&mut chunk).await?;
        if n == 0 {
            let status = child.wait().await?;
            let err = stderr_task.await.unwrap_or_default();
            return Err(std::io::Error::other(format!(
                "git http-backend exited {status} without a response: {}",
                String::from_utf8_lossy(&err)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let first = Bytes::copy_from_slice(&buf[body_start..]);

    let mut builder = Response::builder().status(status);
    for (k, v) in &headers {
        builder = builder.header(k.as_str(), v.as_str());
    }

    if service == GitService::ReceivePack && parts.method == axum::http::Method::POST {
        // Buffer the status report until git has finished and the ref updates are recorded,
        // so a client never sees its push acknowledged before its events exist.
        let mut out = first.to_vec();
        (&mut stdout)
            .take(MAX_RECEIVE_PACK_RESPONSE as u64)
            .read_to_end(&mut out)
            .await?;
        let exit = child.wait().await?;
        let err = stderr_task.await.unwrap_or_default();
        if !exit.success() {
            tracing::warn!(repository = %repo.name, %exit, stderr = %String::from_utf8_lossy(&err), "receive-pack failed");
        }
        let log = tokio::fs::read_to_string(ref_log.path())
            .await
            .unwrap_or_default();
        let updates = RefUpdate::parse_lines(&log);
        if !updates.is_empty() {
            // The repository row may have changed (default branch) since it was read.
            let fresh = cc
                .find(&repo.name)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| repo.clone());
            if let Err(e) = cc
                .record_ref_updates(&fresh, &updates, &principal.arn)
                .await
            {
                tracing::error!(error = %e, repository = %repo.name, "recording pushed ref updates");
                return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal error"));
            }
            tracing::info!(repository = %repo.name, updates = updates.len(), "push recorded");
            // Pipelines watching this branch start without waiting for their next look.
            state.codepipeline.wake();
        }
        return builder.body(Body::from(out)).map_err(std::io::Error::other);
    }

    // Everything else streams: the pack of a multi-GB clone flows straight from git.
    let rest = tokio_util::io::ReaderStream::with_capacity(stdout, 64 * 1024);
    let stream =
        futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(first) }).chain(rest);
    tokio::spawn(async move {
        let status = child.wait().await;
        let err = stderr_task.await.unwrap_or_default();
        if !matches!(&status, Ok(s) if s.success()) {
            tracing::info!(?status, stderr = %String::from_utf8_lossy(&err), "git http-backend ended");
        }
        drop(ref_log);
        drop(permit);
    });
    builder
        .body(Body::from_stream(stream))
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgi_headers() {
        let raw = b"Content-Type: x\r\nExpires: y\r\n\r\nBODY";
        let (s, h, end) = parse_cgi_headers(raw).unwrap();
        assert_eq!((s, h.len(), &raw[end..]), (StatusCode::OK, 2, &b"BODY"[..]));
        let (s, _, _) = parse_cgi_headers(b"Status: 403 Forbidden\n\n").unwrap();
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(parse_cgi_headers(b"Content-Type: x\r\n").is_none());
    }
}
