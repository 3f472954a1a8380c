//! The build worker: leases builds from a server over the worker protocol (`/-/worker/…`,
//! SigV4-signed), runs each in a sandbox, streams its log and phases back in batches,
//! heartbeats its lease (and hears StopBuild there), uploads artifacts and reports the end.
//! The server runs one in-process (the same signed requests, handed to its routes without a
//! socket); `slipway worker` runs one on another host, over HTTP.

use anyhow::{bail, Context as _};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use axum::http::{HeaderMap, Method, StatusCode};
use futures_util::stream::BoxStream;
use futures_util::StreamExt as _;
use serde_json::{json, Value};
use slipway_api::sigv4;
use slipway_codebuild::artifacts::Picked;
use slipway_codebuild::buildspec::{ArtifactFiles, BuildSpec};
use slipway_codebuild::execute::{self, build_uuid, Hooks, Job};
use slipway_codebuild::logstore::LogWriter;
use slipway_codebuild::reports::Collected;
use slipway_codebuild::runner::{Gate, PhaseRecord, Progress, Report};
use slipway_codebuild::sandbox::{Limits, Runtime};
use slipway_codebuild::session::StopReason;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch, Semaphore};

/// The largest report request sent (the server takes JSON bodies up to 10 MB).
const REPORT_BODY_LIMIT: usize = 8 << 20;

/// The server's answer to a request it did not take: what it said, and its status.
#[derive(Debug)]
struct Refused(String, StatusCode);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Whether a failed request is worth sending again: the server was not reached, or failed
/// itself (5xx, 429); not when it refused the request (the lease is gone, the input bad).
fn worth_retrying(e: &anyhow::Error) -> bool {
    match e.downcast_ref::<Refused>() {
        Some(Refused(_, status)) => status.is_server_error() || status.as_u16() == 429,
        None => true,
    }
}

/// How a worker's requests reach the server.
enum Transport {
    /// HTTP(S) to the server's URL (a `slipway worker` on another host).
    Http(reqwest::Client),
    /// Handed to this process's own routes as values (the server's built-in worker): the
    /// same signed requests, without a socket and HTTP framing in between.
    InProcess(slipway_api::InProcess),
}

/// A request's body.
enum Payload {
    Empty,
    Bytes(Vec<u8>),
    /// Pieces adding up to the given length (sent with a Content-Length, not in chunks).
    Stream(u64, BoxStream<'static, std::io::Result<bytes::Bytes>>),
}

/// The server's answer: its status and headers, and its body as it arrives.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: BoxStream<'static, anyhow::Result<bytes::Bytes>>,
}

impl Answer {
    /// The whole body as text.
    async fn text(mut self) -> anyhow::Result<String> {
        let mut all = Vec::new();
        while let Some(piece) = self.body.next().await {
            all.extend_from_slice(&piece?);
        }
        Ok(String::from_utf8_lossy(&all).into_owned())
    }
}

/// A signed client of the worker protocol.
pub struct Client {
    transport: Transport,
    /// The server's URL (git sources are fetched from it over HTTP either way).
    base: String,
    host: String,
    access_key_id: String,
    secret: String,
    region: String,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", sigv4::uri_encode(v, false)))
        .collect::<Vec<_>>()
        .join("&")
}

/// How long a request and its answer may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

impl Client {
    /// A client of the server at `server` (its URL), over HTTP.
    pub fn new(
        server: &str,
        access_key_id: &str,
        secret: &str,
        region: &str,
    ) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Client::with(
            Transport::Http(http),
            server,
            access_key_id,
            secret,
            region,
        ))
    }

    /// A client of this process's own server (the built-in worker), which listens at `url`.
    pub fn in_process(
        api: slipway_api::InProcess,
        url: &str,
        access_key_id: &str,
        secret: &str,
        region: &str,
    ) -> Client {
        Client::with(
            Transport::InProcess(api),
            url,
            access_key_id,
            secret,
            region,
        )
    }

    /// Requests signed for the host of the server's URL, sent through `transport`.
    fn with(
        transport: Transport,
        url: &str,
        access_key_id: &str,
        secret: &str,
        region: &str,
    ) -> Client {
        let base = url.trim_end_matches('/').to_owned();
        let host = base
            .split_once("://")
            .map_or(base.as_str(), |(_, h)| h)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Client {
            transport,
            base,
            host,
            access_key_id: access_key_id.into(),
            secret: secret.into(),
            region: region.into(),
        }
    }

    /// Sends a request signed with its payload's hash (or UNSIGNED-PAYLOAD); the answer,
    /// whatever its status.
    async fn send(
        &self,
        method: Method,
        path: &str,
        q: &str,
        hash: &str,
        content_type: Option<&str>,
        payload: Payload,
    ) -> anyhow::Result<Answer> {
        let target = if q.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{q}")
        };
        let mut headers = HeaderMap::new();
        for (k, v) in sigv4::sign_request(
            method.as_str(),
            &self.host,
            path,
            q,
            hash,
            (&self.access_key_id, &self.secret),
            &self.region,
            "codebuild",
            unix_now(),
        ) {
            headers.insert(
                axum::http::HeaderName::try_from(k)?,
                axum::http::HeaderValue::try_from(v)?,
            );
        }
        if let Some(t) = content_type {
            headers.insert(CONTENT_TYPE, axum::http::HeaderValue::from_str(t)?);
        }
        if let Payload::Stream(len, _) = &payload {
            headers.insert(CONTENT_LENGTH, (*len).into());
        }
        match &self.transport {
            Transport::Http(http) => {
                let req = http
                    .request(method, format!("{}{target}", self.base))
                    .headers(headers);
                let req = match payload {
                    Payload::Empty => req,
                    Payload::Bytes(b) => req.body(b),
                    Payload::Stream(_, s) => req.body(reqwest::Body::wrap_stream(s)),
                };
                let resp = req.send().await?;
                Ok(Answer {
                    status: resp.status(),
                    headers: resp.headers().clone(),
                    body: resp.bytes_stream().map(|r| Ok(r?)).boxed(),
                })
            }
            Transport::InProcess(api) => {
                headers.insert(HOST, axum::http::HeaderValue::from_str(&self.host)?);
                let body = match payload {
                    Payload::Empty => axum::body::Body::empty(),
                    Payload::Bytes(b) => axum::body::Body::from(b),
                    Payload::Stream(_, s) => axum::body::Body::from_stream(s),
                };
                let mut req = axum::http::Request::new(body);
                *req.method_mut() = method;
                *req.uri_mut() = target.parse()?;
                *req.headers_mut() = headers;
                let (parts, body) = api.call(req).await.into_parts();
                Ok(Answer {
                    status: parts.status,
                    headers: parts.headers,
                    body: body.into_data_stream().map(|r| Ok(r?)).boxed(),
                })
            }
        }
    }

    /// POSTs a JSON request; the JSON answer.
    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let body = body.to_string().into_bytes();
        let hash = sigv4::sha256_hex(&body);
        self.post_body(path, "", "application/json", &hash, Payload::Bytes(body))
            .await
    }

    /// POSTs `body` with query `q` and its hash (or UNSIGNED-PAYLOAD) as signed; the JSON
    /// answer.
    async fn post_body(
        &self,
        path: &str,
        q: &str,
        content_type: &str,
        payload_hash: &str,
        body: Payload,
    ) -> anyhow::Result<Value> {
        let exchange = async {
            let answer = self
                .send(
                    Method::POST,
                    path,
                    q,
                    payload_hash,
                    Some(content_type),
                    body,
                )
                .await?;
            let status = answer.status;
            Ok::<_, anyhow::Error>((status, answer.text().await?))
        };
        let (status, text) = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("{path}: no answer within {REQUEST_TIMEOUT:?}"))??;
        if !status.is_success() {
            return Err(Refused(format!("{path}: {status}: {text}"), status).into());
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// GETs `path` (unsigned payload); the answer, whatever its status.
    async fn get(&self, path: &str, q: &str) -> anyhow::Result<Answer> {
        self.send(
            Method::GET,
            path,
            q,
            "UNSIGNED-PAYLOAD",
            None,
            Payload::Empty,
        )
        .await
    }

    /// Downloads to `file`; the resolved source version the server named.
    async fn download(&self, path: &str, q: &str, file: &Path) -> anyhow::Result<Option<String>> {
        save_body(self.get(path, q).await?, file).await
    }

    /// Downloads to `file` if the server has it: false on 404.
    async fn download_if_exists(&self, path: &str, q: &str, file: &Path) -> anyhow::Result<bool> {
        let answer = self.get(path, q).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(false);
        }
        save_body(answer, file).await.map(|_| true)
    }

    /// Uploads a file as the body of a PUT.
    async fn upload(&self, path: &str, q: &str, file: &Path) -> anyhow::Result<()> {
        let f = tokio::fs::File::open(file).await?;
        let len = f.metadata().await?.len();
        let body = Payload::Stream(len, tokio_util::io::ReaderStream::new(f).boxed());
        let answer = self
            .send(Method::PUT, path, q, "UNSIGNED-PAYLOAD", None, body)
            .await?;
        if !answer.status.is_success() {
            let status = answer.status;
            bail!("{status}: {}", answer.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

/// An HTTP client for image registries, requests limited to `timeout`.
fn registry_client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// The server's message in a failed request's error, without the request line around it.
fn server_message(e: anyhow::Error) -> String {
    let text = format!("{e:#}");
    text.split_once(": {")
        .and_then(|(_, j)| serde_json::from_str::<Value>(&format!("{{{j}")).ok())
        .and_then(|j| j["message"].as_str().map(str::to_owned))
        .unwrap_or(text)
}

/// Streams a successful answer's body into `file` (an error answer becomes the error,
/// with the server's message); the resolved source version the server named.
async fn save_body(answer: Answer, file: &Path) -> anyhow::Result<Option<String>> {
    if !answer.status.is_success() {
        let status = answer.status;
        let text = answer.text().await.unwrap_or_default();
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        bail!("{message} ({status})");
    }
    let resolved = answer
        .headers
        .get("x-slipway-resolved-source-version")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut out = tokio::fs::File::create(file).await?;
    let mut body = answer.body;
    while let Some(chunk) = body.next().await {
        tokio::io::AsyncWriteExt::write_all(&mut out, &chunk?).await?;
    }
    tokio::io::AsyncWriteExt::flush(&mut out).await?;
    Ok(resolved)
}

/// Where builds run and what they must not see.
#[derive(Clone)]
pub struct WorkerConfig {
    pub id: String,
    pub runtime: Runtime,
    pub work_root: PathBuf,
    pub hide: Vec<PathBuf>,
    pub slots: usize,
    /// Where imported build images are.
    pub images: PathBuf,
}

/// Leases and runs builds until `shutdown` turns true.
pub async fn serve(client: Arc<Client>, cfg: WorkerConfig, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(cfg.slots.max(1)));
    // No build runs yet: images replaced or half-imported earlier can go.
    let stale = slipway_codebuild::images::remove_stale(&cfg.images);
    if stale > 0 {
        tracing::info!(
            removed = stale,
            "removed replaced and unfinished build images"
        );
    }
    tracing::info!(worker = %cfg.id, runtime = cfg.runtime.name(), slots = cfg.slots, "build worker started");
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let ask = json!({"workerId": cfg.id, "waitSeconds": 20});
        let lease = tokio::select! {
            r = client.post("/-/worker/lease", &ask) => r,
            _ = shutdown.changed() => return,
        };
        match lease {
            Ok(v) if v["buildId"].is_string() => {
                let (client, cfg) = (client.clone(), cfg.clone());
                tokio::spawn(async move {
                    let id = v["buildId"].as_str().unwrap_or_default().to_owned();
                    if let Err(e) = run_build(&client, &cfg, &v).await {
                        tracing::error!(build = %id, error = %format!("{e:#}"), "build failed on the worker");
                    }
                    drop(permit);
                });
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "leasing a build");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
}

fn phase_json(p: &PhaseRecord) -> Value {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let mut v = json!({"phaseType": p.phase_type, "startTime": secs(p.start)});
    if let (Some(status), Some(end)) = (&p.status, p.end) {
        v["phaseStatus"] = json!(status);
        v["endTime"] = json!(secs(end));
        v["durationInSeconds"] = json!(end.duration_since(p.start).map_or(0, |d| d.as_secs()));
        v["contexts"] = json!(p
            .contexts
            .iter()
            .map(|(c, m)| json!({"statusCode": c, "message": m}))
            .collect::<Vec<_>>());
    }
    v
}

enum Upload {
    /// Whole lines (each ending with a newline) printed at a time (ms).
    Text(i64, String),
    Phases(Vec<Value>),
}

/// How many log uploads a build may have in flight at once. One at a time, a build printing
/// fast waited on every upload's round trip (the server writes each batch durably before it
/// answers: two fsyncs); the server takes them in any order, by their line numbers.
const LOG_UPLOADS: usize = 3;

/// How many bytes of log lines (32 more counted per piece) make a batch sent at once,
/// without waiting for the 250 ms tick. Each batch costs the server a fixed part (two fsyncs,
/// a file, a transaction: about a millisecond of CPU here), so a build printing fast sends
/// few large ones: 100 MB in batches of 4 MB took 12–15 % less of the server's CPU than in
/// batches of 1 MB. With the last piece added (a read, 256 KB at most) a batch stays well
/// within the 8 MB the server takes.
const LOG_BATCH: usize = 4 << 20;

/// Sends log lines and phase snapshots in batches (every 250 ms, or [`LOG_BATCH`]), up to
/// [`LOG_UPLOADS`] log batches at once; log batches go in their binary form (compressed
/// when that pays), numbered by their first line.
async fn uploader(
    client: Arc<Client>,
    id: String,
    token: String,
    gate: Arc<Gate>,
    mut rx: mpsc::UnboundedReceiver<Upload>,
) {
    let mut lines = LogWriter::default();
    let mut phases: Option<Vec<Value>> = None;
    let mut bytes = 0usize;
    let mut next_seq: i64 = 1;
    let mut in_flight = tokio::task::JoinSet::new();
    let mut open = true;
    while open {
        let deadline = tokio::time::sleep(Duration::from_millis(250));
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                m = rx.recv() => match m {
                    Some(Upload::Text(ts, t)) => {
                        bytes += t.len() + 32;
                        lines.push_text(ts, t);
                        if bytes >= LOG_BATCH { break; }
                    }
                    Some(Upload::Phases(p)) => phases = Some(p),
                    None => { open = false; break; }
                },
                _ = &mut deadline => break,
            }
        }
        if !lines.is_empty() {
            while in_flight.len() >= LOG_UPLOADS {
                in_flight.join_next().await;
            }
            let shipped = std::mem::take(&mut bytes);
            let first = next_seq;
            next_seq += lines.count() as i64;
            let body = lines.take();
            let (client, id, token, gate) =
                (client.clone(), id.clone(), token.clone(), gate.clone());
            in_flight.spawn(async move {
                if let Err(e) = upload_log(&client, &id, &token, first, body, LOG_RETRY_FOR).await {
                    tracing::warn!(build = %id, error = %format!("{e:#}"), "uploading log lines");
                }
                gate.done(shipped);
            });
        }
        if let Some(p) = phases.take() {
            // The lines printed before a phase changed are stored before the change is
            // reported: a reader who sees a phase end finds its log complete.
            while in_flight.join_next().await.is_some() {}
            if let Err(e) = client
                .post(
                    &format!("/-/worker/builds/{id}/phases"),
                    &json!({"leaseToken": token, "phases": p}),
                )
                .await
            {
                tracing::warn!(build = %id, error = %format!("{e:#}"), "reporting phases");
            }
        }
    }
    while in_flight.join_next().await.is_some() {}
}

/// How long a log batch is sent again while the server cannot take it: as long as the
/// build's lease may still hold (a server restarting keeps its builds' lines).
const LOG_RETRY_FOR: Duration = Duration::from_secs(slipway_codebuild::service::LEASE_SECS as u64);

/// Uploads one log batch whose first line is number `first`, sent in its parts (as
/// [`LogWriter::take`] gave them, with their length: not copied together); sent again after
/// a pause (250 ms, doubling up to 4 s) when that is worth it, for up to `retry_for`: the
/// server stores a batch it gets twice once.
async fn upload_log(
    client: &Client,
    id: &str,
    token: &str,
    first: i64,
    parts: Vec<bytes::Bytes>,
    retry_for: Duration,
) -> anyhow::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let path = format!("/-/worker/builds/{id}/logs");
    let q = query(&[("leaseToken", token), ("firstSeq", &first.to_string())]);
    let mut pause = Duration::from_millis(250);
    let give_up = tokio::time::Instant::now() + retry_for;
    loop {
        // Like artifacts and caches, log bytes are not hashed into the signature: hashing
        // costs as much as the rest of shipping them (the transport, TLS for a remote
        // worker, keeps them whole).
        let body = futures_util::stream::iter(parts.clone().into_iter().map(Ok)).boxed();
        let sent = client
            .post_body(
                &path,
                &q,
                "application/octet-stream",
                "UNSIGNED-PAYLOAD",
                Payload::Stream(len as u64, body),
            )
            .await;
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause < give_up && worth_retrying(&e) => {
                tracing::debug!(build = %id, error = %format!("{e:#}"), "log upload failed; sending it again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(4));
            }
            Err(e) => return Err(e),
        }
    }
}

/// How many seconds a build-timeout minute lasts: 60, unless `SLIPWAY_TIMEOUT_MINUTE_SECS`
/// says otherwise (for tests of timeouts, which AWS allows no shorter than 5 minutes).
fn minute_secs() -> u64 {
    std::env::var("SLIPWAY_TIMEOUT_MINUTE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(60)
}

fn job_from(v: &Value, cfg: &WorkerConfig, work: &Path) -> Job {
    let j = &v["job"];
    let s = |v: &Value| v.as_str().map(str::to_owned);
    let env = &j["environment"];
    Job {
        build_id: s(&j["buildId"]).unwrap_or_default(),
        build_arn: s(&j["buildArn"]).unwrap_or_default(),
        build_number: j["buildNumber"].as_u64().unwrap_or(1),
        project: s(&j["project"]).unwrap_or_default(),
        buildspec: s(&j["source"]["buildspec"]).filter(|b| !b.is_empty()),
        buildspec_path: None,
        variables: j["variables"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                (
                    s(&x["name"]).unwrap_or_default(),
                    s(&x["value"]).unwrap_or_default(),
                )
            })
            .collect(),
        secrets: j["secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(&s)
            .collect(),
        image: s(&env["image"]).unwrap_or_else(|| "aws/codebuild/standard:7.0".into()),
        region: s(&j["region"]).unwrap_or_else(|| "us-east-1".into()),
        initiator: s(&j["initiator"]).unwrap_or_default(),
        source_version: s(&j["sourceVersion"]),
        resolved_source_version: None,
        source_repo_url: s(&j["source"]["location"]),
        src_host: work.join("src"),
        secondary_sources: j["secondarySources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x["sourceIdentifier"].as_str())
            .filter(|i| execute::valid_source_identifier(i))
            .map(|i| (i.to_owned(), work.join(format!("src-{i}"))))
            .collect(),
        work: work.join("sandbox"),
        hide: cfg.hide.clone(),
        images_dir: Some(cfg.images.clone()),
        limits: Limits::for_compute_type(env["computeType"].as_str().unwrap_or_default()),
        privileged: env["privilegedMode"].as_bool().unwrap_or(false),
        timeout: Duration::from_secs(
            j["timeoutInMinutes"].as_u64().unwrap_or(60).max(1) * minute_secs(),
        ),
    }
}

async fn run_build(client: &Arc<Client>, cfg: &WorkerConfig, lease: &Value) -> anyhow::Result<()> {
    let id = lease["buildId"].as_str().unwrap_or_default().to_owned();
    let token = lease["leaseToken"].as_str().unwrap_or_default().to_owned();
    let work = cfg.work_root.join(build_uuid(&id));
    std::fs::create_dir_all(work.join("src"))?;
    let job = job_from(lease, cfg, &work);
    tracing::info!(build = %id, "build started");

    let (tx, rx) = mpsc::unbounded_channel();
    // At most 24 MB of log in flight (the uploads in flight and the batch being gathered,
    // with room to spare): a build printing faster than the server takes it waits (its
    // output pipe fills), rather than the worker's memory growing.
    let gate = Arc::new(Gate::new(LOG_UPLOADS * LOG_BATCH + 2 * LOG_BATCH));
    let uploads = tokio::spawn(uploader(
        client.clone(),
        id.clone(),
        token.clone(),
        gate.clone(),
        rx,
    ));
    let (stop_tx, stop_rx) = watch::channel(None);
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let beat = {
        let (client, id, token, lost) = (client.clone(), id.clone(), token.clone(), lost.clone());
        tokio::spawn(async move {
            // Each beat is held open by the server for up to 10 s, answered at once when
            // StopBuild is called. The first comes after a second: a build that ends sooner
            // costs the server no beat at all (the lease lasts 30 s).
            tokio::time::sleep(Duration::from_secs(1)).await;
            loop {
                match client
                    .post(
                        &format!("/-/worker/builds/{id}/heartbeat"),
                        &json!({"leaseToken": token, "waitSeconds": 10}),
                    )
                    .await
                {
                    Ok(v) if v["action"] == "stop" => {
                        let _ = stop_tx.send(Some(StopReason::Stopped));
                    }
                    Ok(v) if v["action"] == "lost" => {
                        lost.store(true, std::sync::atomic::Ordering::Release);
                        let _ = stop_tx.send(Some(StopReason::Stopped));
                        return;
                    }
                    Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    Err(e) => {
                        tracing::warn!(build = %id, error = %format!("{e:#}"), "heartbeat");
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                }
            }
        })
    };
    let sink_tx = tx.clone();
    let sink_gate = gate.clone();
    // The phase list as it stands, sent whole on every change (the uploader keeps only the
    // newest between two uploads).
    let mut list: Vec<PhaseRecord> = Vec::new();
    let mut progress = Progress::new(
        job.secrets.clone(),
        Box::new(move |r| match r {
            Report::Log(t) => {
                sink_gate.add(t.len() + 32);
                let _ = sink_tx.send(Upload::Text(millis(SystemTime::now()), t.into_owned()));
            }
            Report::Phase(p) => {
                match list.last_mut() {
                    Some(last) if last.phase_type == p.phase_type && last.start == p.start => {
                        *last = p.clone()
                    }
                    _ => list.push(p.clone()),
                }
                let _ = sink_tx.send(Upload::Phases(list.iter().map(phase_json).collect()));
            }
        }),
    );
    progress.gate = Some(gate);
    let mut hooks = WorkerHooks {
        client: client.clone(),
        id: id.clone(),
        token: token.clone(),
        job: lease["job"].clone(),
        work: work.clone(),
        cache_root: cfg.work_root.join("cache"),
        artifacts: None,
        secondary_artifacts: Vec::new(),
    };
    let done = execute::run(&cfg.runtime, &job, &mut hooks, &mut progress, stop_rx).await;
    beat.abort();
    let _ = tx.send(Upload::Phases(done.phases.iter().map(phase_json).collect()));
    let artifacts = hooks.artifacts.take();
    let secondary_artifacts = std::mem::take(&mut hooks.secondary_artifacts);
    // Every sender gone: the uploader sends what is left and ends.
    drop((tx, progress, hooks));
    let _ = uploads.await;
    if !lost.load(std::sync::atomic::Ordering::Acquire) {
        let report = json!({
            "leaseToken": token,
            "status": done.status,
            "phases": done.phases.iter().map(phase_json).collect::<Vec<_>>(),
            "exportedEnvironmentVariables": done.exported.iter().map(|(n, v)| json!({"name": n, "value": v})).collect::<Vec<_>>(),
            "resolvedSourceVersion": done.resolved_source_version,
            "secondarySourceVersions": done.secondary_versions.iter().map(|(i, v)| json!({"sourceIdentifier": i, "sourceVersion": v})).collect::<Vec<_>>(),
            "artifacts": artifacts.unwrap_or(json!({})),
            "secondaryArtifacts": secondary_artifacts,
        });
        client
            .post(&format!("/-/worker/builds/{id}/complete"), &report)
            .await
            .context("reporting the build's end")?;
    }
    tracing::info!(build = %id, status = %done.status, "build finished");
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}

struct WorkerHooks {
    client: Arc<Client>,
    id: String,
    token: String,
    job: Value,
    work: PathBuf,
    /// Where LOCAL_CUSTOM_CACHE caches are kept on this worker.
    cache_root: PathBuf,
    /// The primary artifact's location, once uploaded (BatchGetBuilds' `artifacts`).
    artifacts: Option<Value>,
    /// The secondary artifacts' locations (BatchGetBuilds' `secondaryArtifacts`).
    secondary_artifacts: Vec<Value>,
}

async fn git(args: &[&str], dir: &Path) -> Result<(), String> {
    let out = tokio::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .map_err(|e| format!("running git: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "git {}: {}",
            args.first().unwrap_or(&""),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn unzip(file: &Path, dest: &Path) -> Result<(), String> {
    let f = std::fs::File::open(file).map_err(|e| e.to_string())?;
    let mut zip =
        zip::ZipArchive::new(f).map_err(|e| format!("the source is not a zip file: {e}"))?;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| e.to_string())?;
        // Entries whose names leave the directory (`../`, absolute) are refused.
        let Some(rel) = entry.enclosed_name() else {
            return Err(format!(
                "zip entry {:?} leaves the source directory",
                entry.name()
            ));
        };
        let target = dest.join(rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut out = std::fs::File::create(&target).map_err(|e| e.to_string())?;
        std::io::copy(&mut entry, &mut out).map_err(|e| e.to_string())?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt as _;
            let _ =
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode & 0o777));
        }
    }
    Ok(())
}

fn zip_files(files: &[Picked], out: &Path) -> std::io::Result<()> {
    let f = std::fs::File::create(out)?;
    let mut zip = zip::ZipWriter::new(f);
    for p in files {
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(
                std::fs::metadata(&p.source)
                    .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()))
                    .unwrap_or(0o644),
            );
        match &p.link {
            Some(target) => zip.add_symlink(&p.name, target.to_string_lossy(), options)?,
            None => {
                zip.start_file(&p.name, options)?;
                std::io::copy(&mut std::fs::File::open(&p.source)?, &mut zip)?;
            }
        }
    }
    zip.finish()?;
    Ok(())
}

/// Where a project's cache lives.
enum CacheStore {
    /// `bucket`, and the key prefix (the location's path, then the project).
    S3(String, String),
    /// A directory on this worker.
    Local(PathBuf),
    None,
}

impl WorkerHooks {
    fn cache_store(&self) -> CacheStore {
        let c = &self.job["cache"];
        let project = self.job["project"].as_str().unwrap_or("project");
        match c["type"].as_str() {
            Some("S3") => {
                let location = c["location"].as_str().unwrap_or_default();
                let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
                let prefix = prefix.trim_matches('/');
                let prefix = if prefix.is_empty() {
                    project.to_owned()
                } else {
                    format!("{prefix}/{project}")
                };
                CacheStore::S3(bucket.to_owned(), prefix)
            }
            Some("LOCAL")
                if c["modes"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x == "LOCAL_CUSTOM_CACHE")) =>
            {
                // Same-named projects of two regions are two projects; a dot cannot be
                // part of a project name, so no old per-project directory is met.
                let region = self.job["region"].as_str().unwrap_or("us-east-1");
                CacheStore::Local(self.cache_root.join(format!("{region}.{project}")))
            }
            _ => CacheStore::None,
        }
    }

    /// Where S3 artifacts `a` go: the bucket, the key (CodeBuild's layout: path, the build
    /// id when namespaceType is BUILD_ID, the name), and whether the buildspec's name
    /// overrode the artifact's.
    fn s3_artifact_key(
        &self,
        a: &Value,
        ident: Option<&str>,
        files_spec: Option<&ArtifactFiles>,
    ) -> (String, String, bool) {
        let spec_name = files_spec.and_then(|f| f.name.clone());
        let location = a["location"].as_str().unwrap_or_default();
        let (bucket, _) = location.split_once('/').unwrap_or((location, ""));
        let uuid = build_uuid(&self.id);
        let override_name = a["overrideArtifactName"].as_bool().unwrap_or(false);
        let name = spec_name
            .filter(|_| override_name)
            .or_else(|| a["name"].as_str().map(str::to_owned))
            .unwrap_or_else(|| {
                ident
                    .or(self.job["project"].as_str())
                    .unwrap_or("artifacts")
                    .to_owned()
            });
        // The buildspec's `s3-prefix` replaces the path when the namespace is the build id.
        let by_build = a["namespaceType"].as_str() == Some("BUILD_ID");
        let path = match files_spec.and_then(|f| f.s3_prefix.as_deref()) {
            Some(prefix) if by_build => prefix,
            _ => a["path"].as_str().unwrap_or_default(),
        };
        let mut key = String::new();
        for part in [path, if by_build { uuid } else { "" }, name.as_str()] {
            let part = part.trim_matches('/');
            if !part.is_empty() {
                if !key.is_empty() {
                    key.push('/');
                }
                key.push_str(part);
            }
        }
        (bucket.to_owned(), key, override_name)
    }

    /// Uploads the files picked for one artifact (`ident`: a secondary one's identifier) to
    /// where its settings `a` say (an S3 bucket, zipped or not; a pipeline's output
    /// artifact); its location for BatchGetBuilds.
    async fn upload_one(
        &self,
        a: &Value,
        ident: Option<&str>,
        files_spec: Option<&ArtifactFiles>,
        picked: &[(Option<String>, Picked)],
        progress: &mut Progress,
    ) -> Result<Option<Value>, String> {
        let (bucket, key, override_name) = match a["type"].as_str() {
            Some("S3") => self.s3_artifact_key(a, ident, files_spec),
            // A pipeline action's output artifact: zipped to exactly the object its
            // location names (`arn:aws:s3:::BUCKET/KEY`, as the pipeline hands it over).
            Some("CODEPIPELINE") => {
                let location = a["location"].as_str().unwrap_or_default();
                let Some((bucket, key)) = execute::s3_object(location)
                    .split_once('/')
                    .filter(|(b, k)| !b.is_empty() && !k.is_empty())
                else {
                    return Err("CLIENT_ERROR: CODEPIPELINE artifacts are the output artifact of a pipeline's action, and this build names none (artifacts location: arn:aws:s3:::BUCKET/KEY)".into());
                };
                (bucket.to_owned(), key.to_owned(), false)
            }
            _ => return Ok(None),
        };
        let bucket = bucket.as_str();
        let zipped = a["packaging"].as_str() == Some("ZIP") || a["type"] == "CODEPIPELINE";
        let files: Vec<Picked> = picked
            .iter()
            .filter(|(i, _)| i.as_deref() == ident)
            .map(|(_, p)| p.clone())
            .collect();
        let path = format!("/-/worker/builds/{}/artifacts", self.id);
        if zipped {
            let zip = self
                .work
                .join(format!("artifacts-{}.zip", ident.unwrap_or("primary")));
            zip_files(&files, &zip).map_err(|e| format!("zipping the artifacts: {e}"))?;
            let q = query(&[
                ("bucket", bucket),
                ("key", &key),
                ("leaseToken", &self.token),
            ]);
            self.client
                .upload(&path, &q, &zip)
                .await
                .map_err(|e| format!("{e:#}"))?;
        } else {
            for f in &files {
                let k = format!("{key}/{}", f.name);
                let q = query(&[("bucket", bucket), ("key", &k), ("leaseToken", &self.token)]);
                self.client
                    .upload(&path, &q, &f.source)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
            }
        }
        progress.say(&format!(
            "Uploaded {} artifact file(s) to s3://{bucket}/{key}",
            files.len()
        ));
        Ok(Some(json!({
            "location": format!("arn:aws:s3:::{bucket}/{key}"),
            "overrideArtifactName": override_name,
            "encryptionDisabled": a["encryptionDisabled"].as_bool().unwrap_or(false),
        })))
    }

    /// Downloads a source into `src` (the primary) or `src-IDENT` (a secondary one); the
    /// version it resolved to.
    async fn fetch(
        &self,
        source: &Value,
        identifier: Option<&str>,
        progress: &mut Progress,
    ) -> Result<Option<String>, String> {
        let dir = identifier.map_or_else(|| "src".to_owned(), |i| format!("src-{i}"));
        let src = self.work.join(&dir);
        let path = format!("/-/worker/builds/{}/source", self.id);
        let mut params = vec![("leaseToken", self.token.as_str())];
        if let Some(i) = identifier {
            params.push(("identifier", i));
        }
        let q = query(&params);
        let location = source["location"].as_str().unwrap_or_default();
        match source["type"].as_str().unwrap_or_default() {
            "CODECOMMIT" => {
                let bundle = self.work.join(format!("{dir}.bundle"));
                let resolved = self
                    .client
                    .download(&path, &q, &bundle)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                let b = bundle.to_string_lossy().into_owned();
                git(&["clone", "-q", "--no-checkout", &b, &dir], &self.work).await?;
                let rev = resolved.clone().unwrap_or_else(|| "HEAD".into());
                git(&["checkout", "-q", "--detach", &rev], &src).await?;
                if !location.is_empty() {
                    git(&["remote", "set-url", "origin", location], &src).await?;
                }
                let _ = std::fs::remove_file(&bundle);
                progress.say(&format!("Source {location} at {rev}"));
                Ok(resolved)
            }
            kind @ ("S3" | "CODEPIPELINE") => {
                let zip = self.work.join(format!("{dir}.zip"));
                let resolved = self
                    .client
                    .download(&path, &q, &zip)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
                unzip(&zip, &src)?;
                let _ = std::fs::remove_file(&zip);
                // A pipeline's input artifact is the object its sourceVersion names.
                let object = if kind == "S3" {
                    format!("s3://{location}")
                } else {
                    let artifact = self.job["sourceVersion"].as_str().unwrap_or_default();
                    format!(
                        "pipeline input artifact s3://{}",
                        execute::s3_object(artifact)
                    )
                };
                progress.say(&format!(
                    "Source {object} version {}",
                    resolved.as_deref().unwrap_or("-")
                ));
                Ok(resolved)
            }
            _ => {
                std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
                Ok(None)
            }
        }
    }
}

impl Hooks for WorkerHooks {
    async fn pull_image(
        &mut self,
        images: &Path,
        name: &str,
        progress: &mut Progress,
    ) -> Result<slipway_codebuild::images::Image, String> {
        let http = registry_client(Duration::from_secs(30 * 60))?;
        crate::registry::pull(&http, images, name, &mut |m| progress.say(m)).await
    }

    async fn image_digest(&mut self, name: &str) -> Result<Option<String>, String> {
        let http = registry_client(Duration::from_secs(30))?;
        crate::registry::current_digest(&http, name).await.map(Some)
    }

    async fn restore_cache(
        &mut self,
        keys: &[String],
        dest: &Path,
        _progress: &mut Progress,
    ) -> Result<Option<String>, String> {
        let invalidated = self.job["cacheInvalidatedAt"].as_f64();
        match self.cache_store() {
            CacheStore::None => Ok(None),
            CacheStore::Local(dir) => {
                for k in keys {
                    let f = dir.join(format!("{k}.tar"));
                    let Ok(meta) = std::fs::metadata(&f) else {
                        continue;
                    };
                    let saved = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                        .map_or(0.0, |d| d.as_secs_f64());
                    if invalidated.is_some_and(|t| saved <= t) {
                        continue;
                    }
                    std::fs::copy(&f, dest).map_err(|e| format!("{}: {e}", f.display()))?;
                    return Ok(Some(k.clone()));
                }
                Ok(None)
            }
            CacheStore::S3(_, prefix) => {
                let path = format!("/-/worker/builds/{}/cache", self.id);
                for k in keys {
                    let key = format!("{prefix}/{k}.tar");
                    let q = query(&[("key", &key), ("leaseToken", &self.token)]);
                    if self
                        .client
                        .download_if_exists(&path, &q, dest)
                        .await
                        .map_err(|e| format!("{e:#}"))?
                    {
                        return Ok(Some(k.clone()));
                    }
                }
                Ok(None)
            }
        }
    }

    async fn save_cache(
        &mut self,
        key: &str,
        file: &Path,
        progress: &mut Progress,
    ) -> Result<(), String> {
        match self.cache_store() {
            CacheStore::None => Ok(()),
            CacheStore::Local(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                // Copied beside, then renamed: a build reading the cache never sees half.
                let tmp = dir.join(format!(".{key}.{}", uuid::Uuid::new_v4().simple()));
                std::fs::copy(file, &tmp).map_err(|e| e.to_string())?;
                std::fs::rename(&tmp, dir.join(format!("{key}.tar"))).map_err(|e| e.to_string())?;
                progress.say(&format!("Cache kept on this worker (key {key})"));
                Ok(())
            }
            CacheStore::S3(bucket, prefix) => {
                let key = format!("{prefix}/{key}.tar");
                let q = query(&[
                    ("bucket", &bucket),
                    ("key", &key),
                    ("leaseToken", &self.token),
                ]);
                self.client
                    .upload(&format!("/-/worker/builds/{}/artifacts", self.id), &q, file)
                    .await
                    .map_err(|e| format!("{e:#}"))?;
                progress.say(&format!("Cache uploaded to s3://{bucket}/{key}"));
                Ok(())
            }
        }
    }

    async fn fetch_source(&mut self, progress: &mut Progress) -> Result<Option<String>, String> {
        let source = self.job["source"].clone();
        self.fetch(&source, None, progress).await
    }

    async fn fetch_secondary_sources(
        &mut self,
        progress: &mut Progress,
    ) -> Result<Vec<(String, String)>, String> {
        let mut versions = Vec::new();
        for src in self.job["secondarySources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let ident = src["sourceIdentifier"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if let Some(v) = self.fetch(&src, Some(&ident), progress).await? {
                versions.push((ident, v));
            }
        }
        Ok(versions)
    }

    async fn git_credential(&mut self) -> Result<Option<execute::GitCredential>, String> {
        let v = self
            .client
            .post(
                &format!("/-/worker/builds/{}/git-credential", self.id),
                &json!({"leaseToken": self.token}),
            )
            .await
            .map_err(server_message)?;
        let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
        Ok(Some(execute::GitCredential {
            url: self.client.base.clone(),
            username: field("username"),
            password: field("password"),
        }))
    }

    async fn parameters(
        &mut self,
        wanted: &[(String, String)],
    ) -> Result<Vec<(String, String)>, String> {
        let names: Vec<&String> = wanted.iter().map(|(_, p)| p).collect();
        let v = self
            .client
            .post(
                &format!("/-/worker/builds/{}/parameters", self.id),
                &json!({"leaseToken": self.token, "names": names}),
            )
            .await
            .map_err(server_message)?;
        Ok(wanted
            .iter()
            .map(|(var, p)| {
                (
                    var.clone(),
                    v["values"][p].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect())
    }

    async fn upload_reports(
        &mut self,
        reports: &[Collected],
        progress: &mut Progress,
    ) -> Result<(), String> {
        let path = format!("/-/worker/builds/{}/reports", self.id);
        for r in reports {
            let mut report = r.to_json();
            // One request per report, under the server's request limit: a coverage report
            // of very many files keeps the first ones and says it was truncated.
            while report.to_string().len() > REPORT_BODY_LIMIT {
                let list = report["codeCoverages"]
                    .as_array_mut()
                    .filter(|l| l.len() > 1);
                let Some(list) = list else { break };
                list.truncate(list.len() / 2);
                report["truncated"] = json!(true);
            }
            let v = self
                .client
                .post(
                    &path,
                    &json!({"leaseToken": self.token, "reports": [report]}),
                )
                .await
                .map_err(|e| format!("{e:#}"))?;
            for arn in v["reportArns"].as_array().into_iter().flatten() {
                progress.say(&format!(
                    "Report {} stored as {}",
                    r.name,
                    arn.as_str().unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    async fn upload_artifacts(
        &mut self,
        spec: &BuildSpec,
        picked: &[(Option<String>, Picked)],
        progress: &mut Progress,
    ) -> Result<(), String> {
        let primary = self.job["artifacts"].clone();
        let files = spec.artifacts.as_ref().map(|x| &x.primary);
        self.artifacts = self
            .upload_one(&primary, None, files, picked, progress)
            .await?;
        let mut secondary = Vec::new();
        for a in self.job["secondaryArtifacts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let ident = a["artifactIdentifier"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let files = spec.artifacts.as_ref().and_then(|x| {
                x.secondary
                    .iter()
                    .find(|(i, _)| *i == ident)
                    .map(|(_, f)| f)
            });
            if let Some(mut loc) = self
                .upload_one(&a, Some(&ident), files, picked, progress)
                .await?
            {
                loc["artifactIdentifier"] = json!(ident);
                secondary.push(loc);
            }
        }
        self.secondary_artifacts = secondary;
        Ok(())
    }
}

#[derive(clap::Args)]
pub struct WorkerArgs {
    /// The Slipway server to take builds from.
    #[arg(long, env = "SLIPWAY_SERVER", default_value = "http://127.0.0.1:4566")]
    server: String,
    /// This worker's name (default: the host name).
    #[arg(long, env = "SLIPWAY_WORKER_ID")]
    id: Option<String>,
    /// The container runtime: runc, crun, a path to one, or `host` (no isolation at all).
    #[arg(long, env = "SLIPWAY_RUNTIME")]
    runtime: Option<String>,
    /// Where builds keep their files while they run.
    #[arg(long, env = "SLIPWAY_WORK_DIR", default_value = "slipway-worker")]
    work_dir: PathBuf,
    /// Builds run at once.
    #[arg(long, env = "SLIPWAY_WORKER_SLOTS", default_value_t = 2)]
    slots: usize,
    /// Where imported build images are (`slipway admin import-image --images-dir`);
    /// default WORK_DIR/images.
    #[arg(long, env = "SLIPWAY_IMAGES_DIR")]
    images_dir: Option<PathBuf>,
}

/// `slipway worker`: credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (a user
/// allowed `slipway:RunBuilds`), region from AWS_REGION.
pub async fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let key = std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set")?;
    let secret =
        std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY is not set")?;
    let region = std::env::var("AWS_REGION")
        .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|_| "us-east-1".into());
    std::fs::create_dir_all(&args.work_dir)?;
    let work_root = std::fs::canonicalize(&args.work_dir)?;
    let runtime = Runtime::detect(args.runtime.as_deref(), &work_root.join("runtime-state"))
        .await
        .map_err(anyhow::Error::msg)?;
    if let Runtime::Host = runtime {
        eprintln!("slipway: WARNING: the host executor runs builds as plain processes with no isolation at all");
    }
    let id = args.id.unwrap_or_else(|| {
        std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "worker".into())
    });
    println!(
        "slipway worker {id}: taking builds from {} ({} sandbox)",
        args.server,
        runtime.name()
    );
    let client = Arc::new(Client::new(&args.server, &key, &secret, &region)?);
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    serve(
        client,
        WorkerConfig {
            id,
            runtime,
            hide: vec![work_root.clone()],
            images: args
                .images_dir
                .clone()
                .unwrap_or_else(|| work_root.join("images")),
            work_root,
            slots: args.slots,
        },
        rx,
    )
    .await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// What the test server saw: each upload's query, Content-Length and body.
    type Seen = Arc<Mutex<Vec<(String, Option<String>, Vec<u8>)>>>;

    /// A server taking log uploads that answers `status` to the first `failures` of them.
    async fn server(failures: usize, status: u16) -> (String, Seen) {
        let seen: Seen = Arc::default();
        let left = Arc::new(AtomicUsize::new(failures));
        let record = seen.clone();
        let app = axum::Router::new().route(
            "/-/worker/builds/{id}/logs",
            axum::routing::post(move |req: axum::extract::Request| {
                let (record, left) = (record.clone(), left.clone());
                async move {
                    let (parts, body) = req.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
                    record.lock().unwrap().push((
                        parts.uri.query().unwrap_or_default().to_owned(),
                        parts
                            .headers
                            .get("content-length")
                            .map(|v| v.to_str().unwrap().to_owned()),
                        body.to_vec(),
                    ));
                    let fail = left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let code = if fail { status } else { 200 };
                    (axum::http::StatusCode::from_u16(code).unwrap(), "{}")
                }
            }),
        );
        (serve(app).await, seen)
    }

    /// Serves `app` on a loopback port; its URL.
    async fn serve(app: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    fn parts() -> Vec<bytes::Bytes> {
        vec![
            bytes::Bytes::from_static(b"SLB\x02"),
            bytes::Bytes::from(vec![b'x'; 200_000]),
            bytes::Bytes::from_static(b"runs"),
        ]
    }

    #[tokio::test]
    async fn a_phase_change_is_reported_after_the_lines_before_it_are_stored() {
        let order: Arc<Mutex<Vec<&'static str>>> = Arc::default();
        let (logs, phases) = (order.clone(), order.clone());
        let app = axum::Router::new()
            .route(
                "/-/worker/builds/{id}/logs",
                axum::routing::post(move || {
                    let logs = logs.clone();
                    async move {
                        logs.lock().unwrap().push("log taken");
                        // A slow store: the phase change comes while this is in flight.
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        logs.lock().unwrap().push("log stored");
                        "{}"
                    }
                }),
            )
            .route(
                "/-/worker/builds/{id}/phases",
                axum::routing::post(move || {
                    let phases = phases.clone();
                    async move {
                        phases.lock().unwrap().push("phases");
                        "{}"
                    }
                }),
            );
        let url = serve(app).await;
        let client = Arc::new(Client::new(&url, "AKIDTEST", "secret", "us-east-1").unwrap());
        let (tx, rx) = mpsc::unbounded_channel();
        let gate = Arc::new(Gate::new(1 << 20));
        let up = tokio::spawn(uploader(client, "p:1".into(), "tok".into(), gate, rx));
        tx.send(Upload::Text(1, "printed in BUILD\n".into()))
            .unwrap();
        // Past the uploader's 250 ms tick: the line goes up on its own, then the change.
        tokio::time::sleep(Duration::from_millis(400)).await;
        tx.send(Upload::Phases(vec![json!({"phaseType": "BUILD"})]))
            .unwrap();
        drop(tx);
        up.await.unwrap();
        assert_eq!(
            *order.lock().unwrap(),
            ["log taken", "log stored", "phases"]
        );
    }

    /// A server that takes a request and never answers: the request fails after
    /// [`REQUEST_TIMEOUT`] (the clock paused and run forward), not never.
    #[tokio::test(start_paused = true)]
    async fn a_request_the_server_never_answers_fails_after_the_timeout() {
        let app = axum::Router::new().route(
            "/-/worker/builds/{id}/heartbeat",
            axum::routing::post(std::future::pending::<&'static str>),
        );
        let url = serve(app).await;
        let client = Client::new(&url, "AKIDTEST", "secret", "us-east-1").unwrap();
        let started = tokio::time::Instant::now();
        let e = client
            .post(
                "/-/worker/builds/p:1/heartbeat",
                &json!({"leaseToken": "tok"}),
            )
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("no answer within"), "{e:#}");
        assert!(
            started.elapsed() >= REQUEST_TIMEOUT,
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn log_uploads_are_sent_again_when_the_server_fails_and_not_when_it_refuses() {
        // Two 503s, then taken: three sends of the same numbered batch, whole each time.
        let (url, seen) = server(2, 503).await;
        let client = Client::new(&url, "AKIDTEST", "secret", "us-east-1").unwrap();
        let retry_for = Duration::from_secs(2);
        upload_log(&client, "p:1", "tok", 7, parts(), retry_for)
            .await
            .unwrap();
        let whole = parts().concat();
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        for (query, len, body) in &seen {
            assert_eq!(query, "leaseToken=tok&firstSeq=7");
            assert_eq!(len.as_deref(), Some(whole.len().to_string().as_str()));
            assert_eq!(body, &whole);
        }

        // A refusal (the batch or lease is wrong) is final: sent once, the error kept.
        let (url, seen) = server(1, 400).await;
        let client = Client::new(&url, "AKIDTEST", "secret", "us-east-1").unwrap();
        let e = upload_log(&client, "p:1", "tok", 1, parts(), retry_for)
            .await
            .unwrap_err();
        assert!(!worth_retrying(&e), "{e:#}");
        assert_eq!(seen.lock().unwrap().len(), 1);

        // A server that keeps failing: sent again for as long as it may (here 2 s: pauses
        // of 250, 500 and 1000 ms), then the error.
        let (url, seen) = server(usize::MAX, 500).await;
        let client = Client::new(&url, "AKIDTEST", "secret", "us-east-1").unwrap();
        assert!(upload_log(&client, "p:1", "tok", 1, parts(), retry_for)
            .await
            .is_err());
        assert_eq!(seen.lock().unwrap().len(), 4);
    }
}
