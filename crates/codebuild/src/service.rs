//! CodeBuild's control plane: projects, the build queue, builds as BatchGetBuilds reports
//! them, and the server side of the worker protocol (lease, heartbeat, logs, phases,
//! completion, cancellation, expired leases).
//!
//! Projects and builds are kept as the API's own JSON documents (`Project`, `Build`), so
//! what CreateProject was given is what BatchGetProjects returns; the columns beside them
//! are what the queue needs. Secrets a build needs travel in its job, sealed under the
//! master key, and are erased when the build ends.

use crate::execute::build_uuid;
use serde_json::{json, Map, Value};
use sha2::Digest as _;
use slipway_blobs::BlobStore;
use slipway_iam::crypto::MasterKey;
use slipway_store::events::{self, Event};
use slipway_store::{now, service_err, Conn, ServiceError, Store};
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

type Result<T> = std::result::Result<T, ServiceError>;

/// How long a worker's lease lasts without a heartbeat.
pub const LEASE_SECS: f64 = 30.0;

/// The user names of builds' git credentials begin with this (then the build's UUID).
pub const GIT_USER_PREFIX: &str = "codebuild-";

/// Who started a build: the name BatchGetBuilds shows (`initiator`) and the principal's ARN
/// (what the build's git credentials act as).
#[derive(Debug, Clone, Copy)]
pub struct Initiator<'a> {
    pub name: &'a str,
    pub arn: &'a str,
}

/// Source types Slipway can build from.
const SOURCE_TYPES: &[&str] = &["CODECOMMIT", "S3", "NO_SOURCE", "CODEPIPELINE"];
const ALL_SOURCE_TYPES: &[&str] = &[
    "CODECOMMIT",
    "CODEPIPELINE",
    "GITHUB",
    "GITLAB",
    "GITLAB_SELF_MANAGED",
    "S3",
    "BITBUCKET",
    "GITHUB_ENTERPRISE",
    "NO_SOURCE",
];

/// How long StartBuild's idempotency token is kept (AWS: five minutes).
const IDEMPOTENCY_SECS: f64 = 300.0;

pub(crate) fn invalid(message: impl Into<String>) -> ServiceError {
    service_err("InvalidInputException", message)
}

pub(crate) fn not_found(message: impl Into<String>) -> ServiceError {
    service_err("ResourceNotFoundException", message)
}

pub(crate) fn internal(e: impl std::fmt::Display) -> ServiceError {
    ServiceError::Internal(e.to_string())
}

/// A build a worker has leased: what to run, and the token that proves the lease.
#[derive(Debug, Clone)]
pub struct Lease {
    pub build_id: String,
    pub token: String,
    /// The job (see [`CodeBuild::start_build`]), secrets opened.
    pub job: Value,
}

/// What a heartbeat tells the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heartbeat {
    Continue,
    /// StopBuild was called: stop the build and report STOPPED.
    Stop,
    /// The lease is gone (expired and the build failed, or never held).
    Lost,
}

#[derive(Clone)]
pub struct CodeBuild {
    pub(crate) store: Store,
    pub(crate) blobs: BlobStore,
    key: MasterKey,
    region: String,
    account_id: String,
    /// Wakes long-polling workers when a build is queued.
    work: Arc<Notify>,
    /// Wakes heartbeats held open when StopBuild is called.
    stops: Arc<Notify>,
    /// Set when the server shuts down: long polls answer at once.
    closing: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for CodeBuild {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeBuild").finish_non_exhaustive()
    }
}

pub(crate) fn get_str<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    cur.as_str()
}

pub(crate) fn set(obj: &mut Value, key: &str, value: Value) {
    if let Value::Object(m) = obj {
        m.insert(key.to_owned(), value);
    }
}

impl CodeBuild {
    pub fn new(
        store: Store,
        blobs: BlobStore,
        key: MasterKey,
        region: &str,
        account_id: &str,
    ) -> CodeBuild {
        CodeBuild {
            store,
            blobs,
            key,
            region: region.into(),
            account_id: account_id.into(),
            work: Arc::new(Notify::new()),
            stops: Arc::new(Notify::new()),
            closing: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// Ends every long poll now and answers later ones at once (the server is stopping).
    pub fn close(&self) {
        self.closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.work.notify_waiters();
        self.stops.notify_waiters();
    }

    /// The same service, acting in `region`: projects, builds, report groups and logs
    /// are looked up, listed and created there. The worker protocol is the same in every
    /// view (a worker runs any region's builds).
    pub fn in_region(&self, region: &str) -> CodeBuild {
        CodeBuild {
            region: region.to_owned(),
            ..self.clone()
        }
    }

    pub fn project_arn(&self, name: &str) -> String {
        self.arn(&format!("project/{name}"))
    }

    pub fn build_arn(&self, id: &str) -> String {
        self.arn(&format!("build/{id}"))
    }

    /// The ARN of a CodeBuild resource (`project/NAME`, …) in this view's region.
    pub(crate) fn arn(&self, resource: &str) -> String {
        slipway_regions::arn("codebuild", &self.region, &self.account_id, resource)
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// A project name from a name or an ARN.
    fn project_name(&self, name_or_arn: &str) -> String {
        name_or_arn
            .strip_prefix(&self.project_arn(""))
            .unwrap_or(name_or_arn)
            .to_owned()
    }

    // ----- projects -----

    async fn project_exists(&self, name: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM cb_projects WHERE region = $1 AND name = $2")
                .bind(&self.region)
                .bind(name)
                .fetch_optional(self.store.pool())
                .await?
                .is_some(),
        )
    }

    /// Checks a project's source, artifacts and environment as CodeBuild does, and fills
    /// in the defaults it reports.
    fn complete_project(&self, doc: &mut Value) -> Result<()> {
        let source_type = get_str(doc, &["source", "type"])
            .unwrap_or_default()
            .to_owned();
        if !ALL_SOURCE_TYPES.contains(&source_type.as_str()) {
            return Err(invalid(format!("Invalid source type: {source_type}")));
        }
        if !SOURCE_TYPES.contains(&source_type.as_str()) {
            return Err(invalid(format!(
                "Source type {source_type} is not supported by Slipway (CODECOMMIT, S3, NO_SOURCE and CODEPIPELINE are)"
            )));
        }
        let location = get_str(doc, &["source", "location"]).unwrap_or_default();
        match source_type.as_str() {
            "NO_SOURCE"
                if get_str(doc, &["source", "buildspec"])
                    .unwrap_or_default()
                    .is_empty() =>
            {
                return Err(invalid(
                    "Project source buildspec cannot be null or empty for source type NO_SOURCE",
                ));
            }
            "CODECOMMIT" | "S3" if location.is_empty() => {
                return Err(invalid(format!(
                    "Project source location cannot be null or empty for source type {source_type}"
                )));
            }
            _ => {}
        }
        let artifacts_type = get_str(doc, &["artifacts", "type"])
            .unwrap_or_default()
            .to_owned();
        match artifacts_type.as_str() {
            "NO_ARTIFACTS" | "CODEPIPELINE" => {}
            "S3" => {
                if get_str(doc, &["artifacts", "location"])
                    .unwrap_or_default()
                    .is_empty()
                {
                    return Err(invalid(
                        "Project artifacts location cannot be null or empty for artifacts type S3",
                    ));
                }
            }
            other => return Err(invalid(format!("Invalid artifacts type: {other}"))),
        }
        if (source_type == "CODEPIPELINE") != (artifacts_type == "CODEPIPELINE") {
            return Err(invalid(
                "Invalid input: when using CodePipeline both sourceType, and artifactType must be set to: CODEPIPELINE",
            ));
        }
        // CreateProject and UpdateProject take `badgeEnabled`; projects report `badge`.
        if let Some(Value::Bool(on)) = doc.as_object_mut().and_then(|m| m.remove("badgeEnabled")) {
            set(doc, "badge", json!({"badgeEnabled": on}));
        }
        if source_type == "CODEPIPELINE"
            && doc
                .pointer("/badge/badgeEnabled")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        {
            return Err(invalid(
                "Build badges are not supported for CodePipeline source",
            ));
        }
        // A pipeline hands a build its inputs and outputs beyond the first as S3 objects:
        // only the primary source and artifacts can be CODEPIPELINE.
        for (list, what) in [
            ("secondarySources", "secondary source"),
            ("secondaryArtifacts", "secondary artifact"),
        ] {
            let listed = doc.get(list).and_then(Value::as_array);
            if listed
                .into_iter()
                .flatten()
                .any(|x| x["type"].as_str() == Some("CODEPIPELINE"))
            {
                return Err(invalid(format!(
                    "Invalid {what} type: CODEPIPELINE is only valid for a project's primary source and artifacts"
                )));
            }
        }
        check_cache(doc.get("cache"))?;
        for key in ["type", "image", "computeType"] {
            if get_str(doc, &["environment", key])
                .unwrap_or_default()
                .is_empty()
            {
                return Err(invalid(format!(
                    "Project environment {key} cannot be null or empty"
                )));
            }
        }
        let defaults = [
            ("timeoutInMinutes", json!(60)),
            ("queuedTimeoutInMinutes", json!(480)),
            ("cache", json!({"type": "NO_CACHE"})),
            (
                "encryptionKey",
                json!(slipway_regions::arn(
                    "kms",
                    &self.region,
                    &self.account_id,
                    "alias/aws/s3"
                )),
            ),
            ("badge", json!({"badgeEnabled": false})),
            (
                "logsConfig",
                json!({"cloudWatchLogs": {"status": "ENABLED"}, "s3Logs": {"status": "DISABLED", "encryptionDisabled": false}}),
            ),
            ("projectVisibility", json!("PRIVATE")),
            ("tags", json!([])),
        ];
        if let Value::Object(m) = doc {
            for (k, v) in defaults {
                if m.get(k).is_none_or(Value::is_null) {
                    m.insert(k.into(), v);
                }
            }
            if let Some(Value::Object(env)) = m.get_mut("environment") {
                env.entry("privilegedMode").or_insert(json!(false));
                env.entry("imagePullCredentialsType")
                    .or_insert(json!("CODEBUILD"));
                env.entry("environmentVariables").or_insert(json!([]));
            }
            if let Some(Value::Object(src)) = m.get_mut("source") {
                src.entry("insecureSsl").or_insert(json!(false));
            }
        }
        Ok(())
    }

    pub async fn create_project(&self, mut doc: Value) -> Result<Value> {
        let name = get_str(&doc, &["name"]).unwrap_or_default().to_owned();
        self.complete_project(&mut doc)?;
        let t = now();
        set(&mut doc, "arn", json!(self.project_arn(&name)));
        set(&mut doc, "created", json!(t));
        set(&mut doc, "lastModified", json!(t));
        let mut tx = self.store.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM cb_projects WHERE region = $1 AND name = $2")
            .bind(&self.region)
            .bind(&name)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if exists {
            return Err(service_err(
                "ResourceAlreadyExistsException",
                format!("Project already exists: {}", self.project_arn(&name)),
            ));
        }
        sqlx::query("INSERT INTO cb_projects (region, name, doc, created) VALUES ($1, $2, $3, $4)")
            .bind(&self.region)
            .bind(&name)
            .bind(doc.to_string())
            .bind(t)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(doc)
    }

    /// Applies the members given (the others keep their values).
    pub async fn update_project(&self, patch: Value) -> Result<Value> {
        let name = self.project_name(get_str(&patch, &["name"]).unwrap_or_default());
        let mut tx = self.store.begin_write().await?;
        let mut doc = project_in(&mut tx, &self.region, &name)
            .await?
            .ok_or_else(|| {
                not_found(format!(
                    "Project cannot be found: {}",
                    self.project_arn(&name)
                ))
            })?;
        if let (Value::Object(d), Value::Object(p)) = (&mut doc, patch) {
            for (k, v) in p {
                if k != "name" && !v.is_null() {
                    d.insert(k, v);
                }
            }
        }
        self.complete_project(&mut doc)?;
        set(&mut doc, "lastModified", json!(now()));
        sqlx::query("UPDATE cb_projects SET doc = $1 WHERE region = $2 AND name = $3")
            .bind(doc.to_string())
            .bind(&self.region)
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(doc)
    }

    pub async fn delete_project(&self, name: &str) -> Result<()> {
        let name = self.project_name(name);
        // AWS answers success whether or not the project existed.
        sqlx::query("DELETE FROM cb_projects WHERE region = $1 AND name = $2")
            .bind(&self.region)
            .bind(&name)
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// The projects found, and the names not found.
    pub async fn batch_get_projects(&self, names: &[String]) -> Result<(Vec<Value>, Vec<String>)> {
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for n in names {
            let name = self.project_name(n);
            match project_in(
                &mut *self.store.pool().acquire().await?,
                &self.region,
                &name,
            )
            .await?
            {
                Some(doc) => found.push(doc),
                None => missing.push(n.clone()),
            }
        }
        Ok((found, missing))
    }

    /// Project names, sorted by NAME, CREATED_TIME or LAST_MODIFIED_TIME.
    pub async fn list_projects(
        &self,
        sort_by: Option<&str>,
        ascending: bool,
    ) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name, doc FROM cb_projects WHERE region = $1")
            .bind(&self.region)
            .fetch_all(self.store.pool())
            .await?;
        let mut items: Vec<(String, f64, f64)> = rows
            .iter()
            .map(|r| {
                let doc: Value = serde_json::from_str(&r.get::<String, _>(1)).unwrap_or_default();
                let f = |k: &str| doc.get(k).and_then(Value::as_f64).unwrap_or_default();
                (r.get::<String, _>(0), f("created"), f("lastModified"))
            })
            .collect();
        match sort_by.unwrap_or("NAME") {
            "CREATED_TIME" => items.sort_by(|a, b| a.1.total_cmp(&b.1)),
            "LAST_MODIFIED_TIME" => items.sort_by(|a, b| a.2.total_cmp(&b.2)),
            _ => items.sort_by(|a, b| a.0.cmp(&b.0)),
        }
        if !ascending {
            items.reverse();
        }
        Ok(items.into_iter().map(|i| i.0).collect())
    }

    /// InvalidateProjectCache: caches saved before now are no longer restored (S3 and
    /// LOCAL alike; workers compare the cache's time with this one).
    pub async fn invalidate_cache(&self, name: &str) -> Result<()> {
        let name = self.project_name(name);
        let done = sqlx::query(
            "UPDATE cb_projects SET cache_invalidated = $1 WHERE region = $2 AND name = $3",
        )
        .bind(now())
        .bind(&self.region)
        .bind(&name)
        .execute(self.store.pool())
        .await?;
        if done.rows_affected() == 0 {
            return Err(not_found(format!(
                "Project cannot be found: {}",
                self.project_arn(&name)
            )));
        }
        Ok(())
    }

    // ----- builds -----

    /// Queues a build of `project` with StartBuild's overrides (`input` is the request as
    /// the API received it); `secrets` are resolved values to mask (from the caller's
    /// resolution of PARAMETER_STORE variables), already in `variables`.
    pub async fn start_build(
        &self,
        input: &Value,
        initiator: &Initiator<'_>,
        variables: Vec<(String, String, String)>,
        secrets: Vec<String>,
    ) -> Result<Value> {
        let name = self.project_name(get_str(input, &["projectName"]).unwrap_or_default());
        let mut tx = self.store.begin_write().await?;
        let project = project_in(&mut tx, &self.region, &name)
            .await?
            .ok_or_else(|| {
                not_found(format!(
                    "Project cannot be found: {}",
                    self.project_arn(&name)
                ))
            })?;
        // A repeat of a request with its idempotency token answers the build it started.
        let token = get_str(input, &["idempotencyToken"]).map(str::to_owned);
        let request_sha256 = token.as_ref().map(|_| {
            let mut rest = input.clone();
            if let Some(o) = rest.as_object_mut() {
                o.remove("idempotencyToken");
            }
            hex::encode(sha2::Sha256::digest(rest.to_string().as_bytes()))
        });
        if let Some(token) = &token {
            let earlier = sqlx::query(
                "SELECT doc, request_sha256 FROM cb_builds WHERE region = $1 AND idempotency_token = $2 AND queued > $3 ORDER BY seq DESC LIMIT 1",
            )
            .bind(&self.region)
            .bind(token)
            .bind(now() - IDEMPOTENCY_SECS)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(row) = earlier {
                if row.get::<Option<String>, _>(1) != request_sha256 {
                    return Err(invalid(format!(
                        "Idempotency token {token} was used with different parameters"
                    )));
                }
                return serde_json::from_str(row.get::<&str, _>(0)).map_err(internal);
            }
        }
        let number: i64 = sqlx::query_scalar(
            "UPDATE cb_projects SET next_build_number = next_build_number + 1 WHERE region = $1 AND name = $2 RETURNING next_build_number - 1",
        )
        .bind(&self.region)
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
        let uuid = uuid::Uuid::new_v4();
        let id = format!("{name}:{uuid}");
        let t = now();
        let o = |k: &str| input.get(k).filter(|v| !v.is_null());
        let mut source = project.get("source").cloned().unwrap_or(json!({}));
        if let Some(t) = o("sourceTypeOverride") {
            set(&mut source, "type", t.clone());
        }
        if let Some(l) = o("sourceLocationOverride") {
            set(&mut source, "location", l.clone());
        }
        if let Some(b) = o("buildspecOverride") {
            set(&mut source, "buildspec", b.clone());
        }
        if let Some(d) = o("gitCloneDepthOverride") {
            set(&mut source, "gitCloneDepth", d.clone());
        }
        let mut environment = project.get("environment").cloned().unwrap_or(json!({}));
        for (over, key) in [
            ("imageOverride", "image"),
            ("computeTypeOverride", "computeType"),
            ("environmentTypeOverride", "type"),
            ("privilegedModeOverride", "privilegedMode"),
            ("certificateOverride", "certificate"),
            (
                "imagePullCredentialsTypeOverride",
                "imagePullCredentialsType",
            ),
        ] {
            if let Some(v) = o(over) {
                set(&mut environment, key, v.clone());
            }
        }
        let mut env_vars: Vec<Value> = environment
            .get("environmentVariables")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if let Some(Value::Array(over)) = o("environmentVariablesOverride") {
            for v in over {
                let n = v.get("name").cloned();
                env_vars.retain(|e| e.get("name") != n.as_ref());
                env_vars.push(v.clone());
            }
        }
        set(&mut environment, "environmentVariables", json!(env_vars));
        let artifacts = o("artifactsOverride")
            .or(project.get("artifacts"))
            .cloned()
            .unwrap_or(json!({"type": "NO_ARTIFACTS"}));
        let cache = o("cacheOverride")
            .or(project.get("cache"))
            .cloned()
            .unwrap_or(json!({"type": "NO_CACHE"}));
        check_cache(Some(&cache))?;
        let timeout = o("timeoutInMinutesOverride")
            .or(project.get("timeoutInMinutes"))
            .and_then(Value::as_i64)
            .unwrap_or(60);
        let queued_timeout = o("queuedTimeoutInMinutesOverride")
            .or(project.get("queuedTimeoutInMinutes"))
            .and_then(Value::as_i64)
            .unwrap_or(480);
        let source_version = o("sourceVersion")
            .or(project.get("sourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        // Secondary sources, with their versions (the project's, then StartBuild's).
        let mut secondary = o("secondarySourcesOverride")
            .or(project.get("secondarySources"))
            .cloned()
            .unwrap_or(json!([]));
        let versions: Vec<Value> = project
            .get("secondarySourceVersions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .chain(
                o("secondarySourcesVersionOverride")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten(),
            )
            .cloned()
            .collect();
        for src in secondary.as_array_mut().into_iter().flatten() {
            let ident = src["sourceIdentifier"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            if !crate::execute::valid_source_identifier(&ident) {
                return Err(invalid(format!(
                    "Invalid secondary source identifier {ident:?}: letters, digits and underscores only"
                )));
            }
            if let Some(v) = versions
                .iter()
                .rev()
                .find(|v| v["sourceIdentifier"].as_str() == Some(&ident))
            {
                set(src, "sourceVersion", v["sourceVersion"].clone());
            }
        }
        let secondary_artifacts = o("secondaryArtifactsOverride")
            .or(project.get("secondaryArtifacts"))
            .cloned()
            .unwrap_or(json!([]));
        let group = format!("/aws/codebuild/{name}");
        let stream = uuid.to_string();
        let mut doc = json!({
            "id": id,
            "arn": self.build_arn(&id),
            "buildNumber": number,
            "startTime": t,
            "currentPhase": "QUEUED",
            "buildStatus": "IN_PROGRESS",
            "projectName": name,
            "phases": [
                {"phaseType": "SUBMITTED", "phaseStatus": "SUCCEEDED", "startTime": t, "endTime": t, "durationInSeconds": 0},
                {"phaseType": "QUEUED", "startTime": t},
            ],
            "source": source,
            "secondarySources": secondary,
            "secondarySourceVersions": [],
            "artifacts": {},
            "secondaryArtifacts": [],
            "cache": cache,
            "environment": environment,
            "serviceRole": project.get("serviceRole").cloned().unwrap_or(Value::Null),
            "logs": {
                "groupName": group,
                "streamName": stream,
                // Made a presigned link for each caller when the API returns the build.
                "deepLink": format!("/-/console/logs/{name}/{stream}"),
                "cloudWatchLogs": {"status": "ENABLED", "groupName": group, "streamName": stream},
                "s3Logs": {"status": "DISABLED", "encryptionDisabled": false},
            },
            "timeoutInMinutes": timeout,
            "queuedTimeoutInMinutes": queued_timeout,
            "buildComplete": false,
            "initiator": initiator.name,
            "encryptionKey": project.get("encryptionKey").cloned().unwrap_or(Value::Null),
            "exportedEnvironmentVariables": [],
            "reportArns": [],
        });
        if let Some(sv) = &source_version {
            set(&mut doc, "sourceVersion", json!(sv));
        }
        let invalidated: Option<f64> = sqlx::query_scalar(
            "SELECT cache_invalidated FROM cb_projects WHERE region = $1 AND name = $2",
        )
        .bind(&self.region)
        .bind(&name)
        .fetch_one(&mut *tx)
        .await?;
        let job = json!({
            "cache": cache,
            "cacheInvalidatedAt": invalidated,
            "buildId": id,
            "buildArn": self.build_arn(&id),
            "buildNumber": number,
            "project": name,
            "source": doc["source"],
            "sourceVersion": source_version,
            "artifacts": artifacts,
            "secondarySources": secondary,
            "secondaryArtifacts": secondary_artifacts,
            "environment": doc["environment"],
            "variables": variables.iter().map(|(n, v, t)| json!({"name": n, "value": v, "type": t})).collect::<Vec<_>>(),
            "secrets": secrets,
            "timeoutInMinutes": timeout,
            "initiator": initiator.name,
            "initiatorArn": initiator.arn,
            "region": self.region,
        });
        let sealed = self.key.seal(job.to_string().as_bytes());
        sqlx::query("INSERT INTO cb_builds (id, region, project, number, status, queued, doc, job, idempotency_token, request_sha256) VALUES ($1, $2, $3, $4, 'IN_PROGRESS', $5, $6, $7, $8, $9)")
            .bind(&id)
            .bind(&self.region)
            .bind(&name)
            .bind(number)
            .bind(t)
            .bind(doc.to_string())
            .bind(sealed)
            .bind(&token)
            .bind(&request_sha256)
            .execute(&mut *tx)
            .await?;
        self.state_event(&mut tx, &doc, "IN_PROGRESS").await?;
        tx.commit().await?;
        self.work.notify_waiters();
        Ok(doc)
    }

    async fn state_event(&self, conn: &mut Conn, doc: &Value, status: &str) -> Result<()> {
        events::append(
            conn,
            &Event {
                source: "aws.codebuild",
                detail_type: "CodeBuild Build State Change",
                account: self.account_id.clone(),
                region: arn_region(doc).unwrap_or(&self.region).to_owned(),
                resources: vec![doc["arn"].as_str().unwrap_or_default().to_owned()],
                detail: json!({
                    "build-status": status,
                    "project-name": doc["projectName"],
                    "build-id": doc["arn"],
                    "additional-information": {
                        "build-number": doc["buildNumber"],
                        "initiator": doc["initiator"],
                        "build-start-time": doc["startTime"],
                        "source": doc["source"],
                        "source-version": doc.get("sourceVersion"),
                        "phases": doc["phases"],
                        "logs": doc["logs"],
                    },
                    "current-phase": doc["currentPhase"],
                    "current-phase-context": "[]",
                    "version": "1",
                }),
            },
        )
        .await?;
        Ok(())
    }

    async fn phase_event(&self, conn: &mut Conn, doc: &Value, phase: &Value) -> Result<()> {
        events::append(
            conn,
            &Event {
                source: "aws.codebuild",
                detail_type: "CodeBuild Build Phase Change",
                account: self.account_id.clone(),
                region: arn_region(doc).unwrap_or(&self.region).to_owned(),
                resources: vec![doc["arn"].as_str().unwrap_or_default().to_owned()],
                detail: json!({
                    "completed-phase": phase["phaseType"],
                    "completed-phase-status": phase["phaseStatus"],
                    "completed-phase-duration-seconds": phase["durationInSeconds"],
                    "completed-phase-start": phase["startTime"],
                    "completed-phase-end": phase["endTime"],
                    "completed-phase-context": phase.get("contexts").map(|c| c.to_string()).unwrap_or_else(|| "[]".into()),
                    "project-name": doc["projectName"],
                    "build-id": doc["arn"],
                    "version": "1",
                }),
            },
        )
        .await?;
        Ok(())
    }

    /// The builds found (in the order asked) and the ids not found.
    pub async fn batch_get_builds(&self, ids: &[String]) -> Result<(Vec<Value>, Vec<String>)> {
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for id in ids {
            let id = id.rsplit_once(":build/").map_or(id.as_str(), |(_, i)| i);
            let doc: Option<String> =
                sqlx::query_scalar("SELECT doc FROM cb_builds WHERE id = $1 AND region = $2")
                    .bind(id)
                    .bind(&self.region)
                    .fetch_optional(self.store.pool())
                    .await?;
            match doc {
                Some(d) => found.push(serde_json::from_str(&d).map_err(internal)?),
                None => missing.push(id.to_owned()),
            }
        }
        Ok((found, missing))
    }

    /// Build ids, newest first unless `ascending`; of one project when given.
    pub async fn list_builds(&self, project: Option<&str>, ascending: bool) -> Result<Vec<String>> {
        let order = if ascending { "ASC" } else { "DESC" };
        let ids: Vec<String> = match project {
            Some(p) => {
                let name = self.project_name(p);
                if !self.project_exists(&name).await? {
                    return Err(not_found(format!(
                        "The provided project {} does not exist",
                        self.project_arn(&name)
                    )));
                }
                sqlx::query_scalar(&format!(
                    "SELECT id FROM cb_builds WHERE region = $1 AND project = $2 ORDER BY seq {order}"
                ))
                .bind(&self.region)
                .bind(&name)
                .fetch_all(self.store.pool())
                .await?
            }
            None => {
                sqlx::query_scalar(&format!(
                    "SELECT id FROM cb_builds WHERE region = $1 ORDER BY seq {order}"
                ))
                .bind(&self.region)
                .fetch_all(self.store.pool())
                .await?
            }
        };
        Ok(ids)
    }

    /// Deletes finished builds; in-progress ones are refused per id.
    pub async fn batch_delete_builds(
        &self,
        ids: &[String],
    ) -> Result<(Vec<String>, Vec<(String, String, String)>)> {
        let (mut deleted, mut refused) = (Vec::new(), Vec::new());
        let mut tx = self.store.begin_write().await?;
        for id in ids {
            let status: Option<String> =
                sqlx::query_scalar("SELECT status FROM cb_builds WHERE id = $1 AND region = $2")
                    .bind(id)
                    .bind(&self.region)
                    .fetch_optional(&mut *tx)
                    .await?;
            match status.as_deref() {
                None => refused.push((
                    id.clone(),
                    "BUILD_NOT_FOUND".into(),
                    "Build not found".into(),
                )),
                Some("IN_PROGRESS") => refused.push((
                    id.clone(),
                    "BUILD_IN_PROGRESS".into(),
                    "Build is in progress and cannot be deleted".into(),
                )),
                Some(_) => {
                    let chunks = CodeBuild::chunk_blobs(&mut tx, id).await?;
                    sqlx::query("DELETE FROM cb_log_chunks WHERE build_id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query("DELETE FROM cb_builds WHERE id = $1")
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                    deleted.push((id.clone(), chunks));
                }
            }
        }
        tx.commit().await?;
        let mut ids = Vec::with_capacity(deleted.len());
        for (id, chunks) in deleted {
            self.delete_log_blob(&id, &chunks).await;
            ids.push(id);
        }
        Ok((ids, refused))
    }

    /// Asks for a build to stop: a queued one stops at once, a running one when its
    /// worker's next heartbeat hears it (within seconds).
    pub async fn stop_build(&self, id: &str) -> Result<Value> {
        let mut tx = self.store.begin_write().await?;
        let row =
            sqlx::query("SELECT status, started, doc FROM cb_builds WHERE id = $1 AND region = $2")
                .bind(id)
                .bind(&self.region)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| not_found(format!("Build {id} does not exist")))?;
        let status: String = row.get(0);
        let started: Option<f64> = row.get(1);
        let mut doc: Value = serde_json::from_str(&row.get::<String, _>(2)).map_err(internal)?;
        if status != "IN_PROGRESS" {
            return Ok(doc);
        }
        if started.is_none() {
            let t = now();
            close_phase(&mut doc, "STOPPED", t, None);
            finish_doc(&mut doc, "STOPPED", t);
            self.write_final(&mut tx, id, &doc, "STOPPED").await?;
        } else {
            sqlx::query("UPDATE cb_builds SET stop_requested = 1 WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.stops.notify_waiters();
        Ok(doc)
    }

    async fn write_final(&self, tx: &mut Conn, id: &str, doc: &Value, status: &str) -> Result<()> {
        // The job (with its secrets) and the build's git credential are no longer needed.
        sqlx::query("UPDATE cb_builds SET status = $1, doc = $2, job = x'', worker = NULL, lease_token = NULL, lease_expires = NULL WHERE id = $3")
            .bind(status)
            .bind(doc.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cb_git_credentials WHERE build_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        self.state_event(tx, doc, status).await
    }

    /// Starts a new build with the settings of an earlier one.
    pub async fn retry_build(&self, id: &str, initiator: &Initiator<'_>) -> Result<Value> {
        let doc: Option<String> =
            sqlx::query_scalar("SELECT doc FROM cb_builds WHERE id = $1 AND region = $2")
                .bind(id)
                .bind(&self.region)
                .fetch_optional(self.store.pool())
                .await?;
        let doc: Value = serde_json::from_str(
            &doc.ok_or_else(|| not_found(format!("Build {id} does not exist")))?,
        )
        .map_err(internal)?;
        let input = json!({
            "projectName": doc["projectName"],
            "sourceVersion": doc.get("sourceVersion"),
            "buildspecOverride": doc["source"].get("buildspec"),
            "imageOverride": doc["environment"].get("image"),
            "computeTypeOverride": doc["environment"].get("computeType"),
            "environmentVariablesOverride": doc["environment"].get("environmentVariables"),
            "timeoutInMinutesOverride": doc.get("timeoutInMinutes"),
        });
        self.start_build(&input, initiator, Vec::new(), Vec::new())
            .await
    }

    // ----- the worker protocol -----

    /// Leases the oldest queued build to `worker`, waiting up to `wait` for one.
    pub async fn lease(&self, worker: &str, wait: Duration) -> Result<Option<Lease>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.work.notified();
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(None);
            }
            if let Some(l) = self.try_lease(worker).await? {
                return Ok(Some(l));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn try_lease(&self, worker: &str) -> Result<Option<Lease>> {
        let mut tx = self.store.begin_write().await?;
        let t = now();
        // Queued builds past their queued timeout end TIMED_OUT instead of running.
        let row = sqlx::query("SELECT id, doc, job FROM cb_builds WHERE status = 'IN_PROGRESS' AND started IS NULL ORDER BY seq LIMIT 1")
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let id: String = row.get(0);
        let mut doc: Value = serde_json::from_str(&row.get::<String, _>(1)).map_err(internal)?;
        if time_out_queued(&mut doc, t) {
            self.write_final(&mut tx, &id, &doc, "TIMED_OUT").await?;
            tx.commit().await?;
            return Box::pin(self.try_lease(worker)).await;
        }
        let job = self.key.open(&row.get::<Vec<u8>, _>(2)).map_err(internal)?;
        let job: Value = serde_json::from_slice(&job).map_err(internal)?;
        let token = uuid::Uuid::new_v4().to_string();
        close_phase(&mut doc, "SUCCEEDED", t, None);
        push_phase(&mut doc, "PROVISIONING", t);
        sqlx::query("UPDATE cb_builds SET started = $1, worker = $2, lease_token = $3, lease_expires = $4, doc = $5 WHERE id = $6")
            .bind(t)
            .bind(worker)
            .bind(&token)
            .bind(t + LEASE_SECS)
            .bind(doc.to_string())
            .bind(&id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(Lease {
            build_id: id,
            token,
            job,
        }))
    }

    /// A build's job (secrets opened), for the holder of its lease.
    pub async fn leased_job(&self, id: &str, token: &str) -> Result<Value> {
        let mut conn = self.store.pool().acquire().await?;
        holds_lease(&mut conn, id, token).await?;
        let sealed: Vec<u8> = sqlx::query_scalar("SELECT job FROM cb_builds WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        let job = self.key.open(&sealed).map_err(internal)?;
        serde_json::from_slice(&job).map_err(internal)
    }

    /// A git credential for build `id` (its buildspec asked for `git-credential-helper`):
    /// `(username, password)`, good for git over HTTP on this server while the build runs,
    /// acting as the principal that started the build. Each call makes a new password.
    pub async fn git_credential(&self, id: &str, token: &str) -> Result<(String, String)> {
        let job = self.leased_job(id, token).await?;
        let arn = job["initiatorArn"]
            .as_str()
            .ok_or_else(|| {
                service_err(
                    "InvalidInputException",
                    "this build was queued before builds had git credentials; start it again",
                )
            })?
            .to_owned();
        let username = format!("{GIT_USER_PREFIX}{}", build_uuid(id));
        let password = hex::encode(slipway_iam::crypto::random_bytes::<32>());
        let hash = hex::encode(sha2::Sha256::digest(password.as_bytes()));
        let id = id.to_owned();
        let user = username.clone();
        self.store
            .grouped(move |conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO cb_git_credentials (username, build_id, password_sha256, principal_arn) VALUES ($1, $2, $3, $4) ON CONFLICT (username) DO UPDATE SET build_id = $2, password_sha256 = $3, principal_arn = $4")
                        .bind(&user)
                        .bind(&id)
                        .bind(&hash)
                        .bind(&arn)
                        .execute(&mut *conn)
                        .await?;
                    Ok::<(), ServiceError>(())
                })
            })
            .await?;
        Ok((username, password))
    }

    /// The principal (ARN) a running build's git credential acts as, if `username` and
    /// `password` are one; None otherwise (wrong password, or the build has ended).
    pub async fn git_principal(&self, username: &str, password: &str) -> Result<Option<String>> {
        if !username.starts_with(GIT_USER_PREFIX) {
            return Ok(None);
        }
        let row = sqlx::query("SELECT c.password_sha256, c.principal_arn FROM cb_git_credentials c JOIN cb_builds b ON b.id = c.build_id WHERE c.username = $1 AND b.status = 'IN_PROGRESS'")
            .bind(username)
            .fetch_optional(self.store.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let stored: String = row.get(0);
        let given = hex::encode(sha2::Sha256::digest(password.as_bytes()));
        let same = slipway_iam::crypto::same_secret(stored.as_bytes(), given.as_bytes());
        Ok(same.then(|| row.get(1)))
    }

    /// Checks a lease (and extends it); says whether to stop.
    pub async fn heartbeat(&self, id: &str, token: &str, wait: Duration) -> Result<Heartbeat> {
        let mut tx = self.store.begin_write().await?;
        let row = sqlx::query("SELECT stop_requested FROM cb_builds WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'")
            .bind(id)
            .bind(token)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(Heartbeat::Lost);
        };
        sqlx::query("UPDATE cb_builds SET lease_expires = $1 WHERE id = $2")
            .bind(now() + LEASE_SECS)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if row.get::<i64, _>(0) != 0 {
            return Ok(Heartbeat::Stop);
        }
        // Held open (well inside the lease) until StopBuild is called for some build, so a
        // stop reaches the worker at once rather than at its next beat.
        let deadline =
            tokio::time::Instant::now() + wait.min(Duration::from_secs(LEASE_SECS as u64 / 3));
        loop {
            let notified = self.stops.notified();
            if self.closing.load(std::sync::atomic::Ordering::Acquire) {
                return Ok(Heartbeat::Continue);
            }
            let stop: Option<i64> = sqlx::query_scalar(
                "SELECT stop_requested FROM cb_builds WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'",
            )
            .bind(id)
            .bind(token)
            .fetch_optional(self.store.pool())
            .await?;
            match stop {
                None => return Ok(Heartbeat::Lost),
                Some(s) if s != 0 => return Ok(Heartbeat::Stop),
                Some(_) => {}
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(Heartbeat::Continue);
            }
        }
    }

    /// Records the build's phases as the worker reports them (all but SUBMITTED/QUEUED,
    /// which the server keeps), emitting a phase-change event for each newly ended phase.
    pub async fn report_phases(&self, id: &str, token: &str, phases: &[Value]) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        holds_lease(&mut tx, id, token).await?;
        let mut doc = build_doc(&mut tx, id).await?;
        let before: Vec<Value> = doc["phases"].as_array().cloned().unwrap_or_default();
        let merged = merge_phases(&before, phases);
        let ended_before = before
            .iter()
            .filter(|p| p.get("phaseStatus").is_some())
            .count();
        let current = merged
            .last()
            .and_then(|p| p["phaseType"].as_str())
            .unwrap_or("PROVISIONING")
            .to_owned();
        set(&mut doc, "phases", json!(merged));
        set(&mut doc, "currentPhase", json!(current));
        let newly: Vec<Value> = merged
            .iter()
            .filter(|p| p.get("phaseStatus").is_some())
            .skip(ended_before)
            .cloned()
            .collect();
        sqlx::query("UPDATE cb_builds SET doc = $1 WHERE id = $2")
            .bind(doc.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        for p in &newly {
            self.phase_event(&mut tx, &doc, p).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Ends a build as its worker reports: status, exported variables, artifacts location,
    /// resolved source version.
    pub async fn complete(&self, id: &str, token: &str, report: &Value) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        holds_lease(&mut tx, id, token).await?;
        let mut doc = build_doc(&mut tx, id).await?;
        let status = report["status"].as_str().unwrap_or("FAULT").to_owned();
        if let Some(phases) = report.get("phases").and_then(Value::as_array) {
            let merged = merge_phases(doc["phases"].as_array().map_or(&[][..], |v| v), phases);
            set(&mut doc, "phases", json!(merged));
        }
        for key in [
            "exportedEnvironmentVariables",
            "artifacts",
            "secondaryArtifacts",
            "secondarySourceVersions",
            "resolvedSourceVersion",
        ] {
            if let Some(v) = report.get(key).filter(|v| !v.is_null()) {
                set(&mut doc, key, v.clone());
            }
        }
        finish_doc(&mut doc, &status, now());
        self.write_final(&mut tx, id, &doc, &status).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The builds whose lease had expired by `cutoff` (their worker stopped heartbeating).
    /// The sweep kills their sandboxes and then passes the same cutoff to
    /// [`CodeBuild::expire_leases`], so no build is failed whose sandbox was not killed.
    pub async fn expired(&self, cutoff: f64) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar("SELECT id FROM cb_builds WHERE status = 'IN_PROGRESS' AND started IS NOT NULL AND lease_expires < $1")
            .bind(cutoff)
            .fetch_all(self.store.pool())
            .await?)
    }

    /// Fails the builds whose worker stopped heartbeating (a dead worker, or a server that
    /// restarted under a built-in worker), with a phase context that says so: those whose
    /// lease had expired by `cutoff`, and the queued builds past their queued timeout.
    pub async fn expire_leases(&self, cutoff: f64) -> Result<usize> {
        let mut tx = self.store.begin_write().await?;
        let t = now();
        let rows = sqlx::query("SELECT id, doc, worker FROM cb_builds WHERE status = 'IN_PROGRESS' AND started IS NOT NULL AND lease_expires < $1")
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await?;
        for r in &rows {
            let id: String = r.get(0);
            let mut doc: Value = serde_json::from_str(&r.get::<String, _>(1)).map_err(internal)?;
            let worker: Option<String> = r.get(2);
            let message = format!(
                "The worker running this build ({}) stopped reporting; its lease expired. ",
                worker.unwrap_or_default()
            );
            close_phase(&mut doc, "FAILED", t, Some(("CLIENT_ERROR", &message)));
            push_phase(&mut doc, "FINALIZING", t);
            close_phase(&mut doc, "SUCCEEDED", t, None);
            finish_doc(&mut doc, "FAILED", t);
            self.write_final(&mut tx, &id, &doc, "FAILED").await?;
        }
        // Builds that waited in the queue longer than their queued timeout.
        let queued = sqlx::query(
            "SELECT id, doc FROM cb_builds WHERE status = 'IN_PROGRESS' AND started IS NULL",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut timed_out = 0;
        for r in &queued {
            let id: String = r.get(0);
            let mut doc: Value = serde_json::from_str(&r.get::<String, _>(1)).map_err(internal)?;
            if !time_out_queued(&mut doc, t) {
                continue;
            }
            self.write_final(&mut tx, &id, &doc, "TIMED_OUT").await?;
            timed_out += 1;
        }
        tx.commit().await?;
        Ok(rows.len() + timed_out)
    }

    /// The build a log group and stream name (`/aws/codebuild/PROJECT`, build uuid), and
    /// the line its log is read before. While the build runs that is the line after
    /// `log_seq` (its log has no gap up to there): a batch still on its way is never passed
    /// over by a reader's next token.
    async fn stream_build(&self, group: &str, stream: &str) -> Result<(String, i64)> {
        let project = group
            .strip_prefix("/aws/codebuild/")
            .ok_or_else(|| not_found("The specified log group does not exist."))?;
        let id = format!("{project}:{stream}");
        let build: Option<(String, i64)> =
            sqlx::query_as("SELECT status, log_seq FROM cb_builds WHERE id = $1 AND region = $2")
                .bind(&id)
                .bind(&self.region)
                .fetch_optional(self.store.pool())
                .await?;
        match build {
            Some((status, seen)) if status == "IN_PROGRESS" => Ok((id, seen.saturating_add(1))),
            Some(_) => Ok((id, i64::MAX)),
            None => Err(not_found(if self.project_exists(project).await? {
                "The specified log stream does not exist."
            } else {
                "The specified log group does not exist."
            })),
        }
    }

    /// Log events `(seq, timestamp ms, message)` of a stream: from `after` (a sequence
    /// number, exclusive) forwards, or the last `limit` before `before` when reading
    /// backwards; within `[start, end)` ms when given.
    pub async fn log_events(
        &self,
        group: &str,
        stream: &str,
        q: &LogQuery,
    ) -> Result<Vec<LogEvent>> {
        let (id, readable) = self.stream_build(group, stream).await?;
        let (start, end) = (q.start.unwrap_or(i64::MIN), q.end.unwrap_or(i64::MAX));
        let (after, before) = (
            q.after.unwrap_or(0),
            q.before.unwrap_or(i64::MAX).min(readable),
        );
        let limit = usize::try_from(q.limit).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        self.read_chunks(
            &id,
            (after, before),
            (start, end),
            q.backwards,
            |first, lines| {
                let picked = lines
                    .into_iter()
                    .enumerate()
                    .map(|(i, (ts, message))| LogEvent {
                        stream: stream.to_owned(),
                        seq: first + i as i64,
                        timestamp: ts,
                        message,
                    })
                    .filter(|e| {
                        e.seq > after && e.seq < before && e.timestamp >= start && e.timestamp < end
                    });
                if q.backwards {
                    let mut v: Vec<LogEvent> = picked.collect();
                    v.reverse();
                    out.extend(v);
                } else {
                    out.extend(picked);
                }
                out.len() < limit
            },
        )
        .await?;
        out.truncate(limit);
        if q.backwards {
            out.reverse();
        }
        Ok(out)
    }

    /// The log groups (one per project), names starting with `prefix`:
    /// `(name, created ms, stored bytes)`.
    pub async fn log_groups(&self, prefix: &str) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query("SELECT p.name, p.created, COALESCE((SELECT SUM(c.bytes) FROM cb_log_chunks c JOIN cb_builds b ON b.id = c.build_id WHERE b.region = p.region AND b.project = p.name), 0) FROM cb_projects p WHERE p.region = $1 ORDER BY p.name")
            .bind(&self.region)
            .fetch_all(self.store.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    format!("/aws/codebuild/{}", r.get::<String, _>(0)),
                    (r.get::<f64, _>(1) * 1000.0) as i64,
                    r.get::<i64, _>(2),
                )
            })
            .filter(|(n, _, _)| n.starts_with(prefix))
            .collect())
    }

    /// The log streams (one per build) of a group: `(name, created ms, first, last event ms)`.
    pub async fn log_streams(
        &self,
        group: &str,
    ) -> Result<Vec<(String, i64, Option<i64>, Option<i64>)>> {
        let project = group
            .strip_prefix("/aws/codebuild/")
            .ok_or_else(|| not_found("The specified log group does not exist."))?;
        if !self.project_exists(project).await? {
            return Err(not_found("The specified log group does not exist."));
        }
        let rows = sqlx::query("SELECT b.id, b.queued, MIN(c.first_ts), MAX(c.last_ts) FROM cb_builds b LEFT JOIN cb_log_chunks c ON c.build_id = b.id WHERE b.region = $1 AND b.project = $2 GROUP BY b.id ORDER BY b.seq")
            .bind(&self.region)
            .bind(project)
            .fetch_all(self.store.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let id: String = r.get(0);
                (
                    crate::execute::build_uuid(&id).to_owned(),
                    (r.get::<f64, _>(1) * 1000.0) as i64,
                    r.get(2),
                    r.get(3),
                )
            })
            .collect())
    }
}

/// What to read of a log stream.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    pub after: Option<i64>,
    pub before: Option<i64>,
    pub backwards: bool,
    pub start: Option<i64>,
    pub end: Option<i64>,
    pub limit: i64,
}

/// One log line as CloudWatch Logs returns it.
#[derive(Debug, Clone)]
pub struct LogEvent {
    pub stream: String,
    pub seq: i64,
    pub timestamp: i64,
    pub message: String,
}

/// Re-wraps the data keys of the jobs of builds not yet ended (after a master-key
/// rotation); ended builds hold no job. Returns how many were re-wrapped.
pub async fn rewrap_jobs(store: &Store, key: &MasterKey) -> Result<usize> {
    let mut tx = store.begin_write().await?;
    let rows = sqlx::query("SELECT id, job FROM cb_builds WHERE LENGTH(job) > 0")
        .fetch_all(&mut *tx)
        .await?;
    for r in &rows {
        let fresh = key.rewrap(&r.get::<Vec<u8>, _>(1)).map_err(internal)?;
        sqlx::query("UPDATE cb_builds SET job = $1 WHERE id = $2")
            .bind(fresh)
            .bind(r.get::<String, _>(0))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

/// The region an ARN-carrying document (a build's) names in its `arn`.
pub(crate) fn arn_region(doc: &Value) -> Option<&str> {
    doc["arn"]
        .as_str()?
        .split(':')
        .nth(3)
        .filter(|r| !r.is_empty())
}

async fn project_in(conn: &mut Conn, region: &str, name: &str) -> Result<Option<Value>> {
    let doc: Option<String> =
        sqlx::query_scalar("SELECT doc FROM cb_projects WHERE region = $1 AND name = $2")
            .bind(region)
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?;
    doc.map(|d| serde_json::from_str(&d).map_err(internal))
        .transpose()
}

pub(crate) async fn build_doc(conn: &mut Conn, id: &str) -> Result<Value> {
    let doc: String = sqlx::query_scalar("SELECT doc FROM cb_builds WHERE id = $1")
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    serde_json::from_str(&doc).map_err(internal)
}

pub(crate) async fn holds_lease(conn: &mut Conn, id: &str, token: &str) -> Result<()> {
    let held = sqlx::query(
        "SELECT 1 FROM cb_builds WHERE id = $1 AND lease_token = $2 AND status = 'IN_PROGRESS'",
    )
    .bind(id)
    .bind(token)
    .fetch_optional(&mut *conn)
    .await?
    .is_some();
    if held {
        Ok(())
    } else {
        Err(lease_lost(id))
    }
}

/// What a worker hears when it calls for a build whose lease it does not hold.
pub(crate) fn lease_lost(id: &str) -> ServiceError {
    service_err(
        "LeaseLostException",
        format!("The lease on build {id} is not held"),
    )
}

/// Checks a project's (or StartBuild's override's) cache settings as CodeBuild does.
pub(crate) fn check_cache(cache: Option<&Value>) -> Result<()> {
    let Some(cache) = cache.filter(|c| !c.is_null()) else {
        return Ok(());
    };
    match cache["type"].as_str().unwrap_or_default() {
        "NO_CACHE" => Ok(()),
        "S3" if cache["location"].as_str().unwrap_or_default().is_empty() => Err(invalid(
            "Cache location cannot be null or empty for cache type S3",
        )),
        "S3" => Ok(()),
        "LOCAL" => {
            let modes = cache["modes"].as_array().cloned().unwrap_or_default();
            if modes.is_empty() {
                return Err(invalid(
                    "Cache modes cannot be null or empty for cache type LOCAL",
                ));
            }
            for m in &modes {
                let m = m.as_str().unwrap_or_default();
                if !matches!(
                    m,
                    "LOCAL_SOURCE_CACHE" | "LOCAL_DOCKER_LAYER_CACHE" | "LOCAL_CUSTOM_CACHE"
                ) {
                    return Err(invalid(format!("Invalid cache mode: {m}")));
                }
            }
            Ok(())
        }
        other => Err(invalid(format!("Invalid cache type: {other}"))),
    }
}

/// Ends a queued build TIMED_OUT if it waited longer than its queued timeout; says so.
fn time_out_queued(doc: &mut Value, t: f64) -> bool {
    let limit = doc["queuedTimeoutInMinutes"].as_f64().unwrap_or(480.0) * 60.0;
    if t - doc["startTime"].as_f64().unwrap_or(t) <= limit {
        return false;
    }
    close_phase(
        doc,
        "TIMED_OUT",
        t,
        Some(("BUILD_TIMED_OUT", "Build has timed out while queued. ")),
    );
    finish_doc(doc, "TIMED_OUT", t);
    true
}

/// The server's own phases (SUBMITTED, QUEUED) followed by the ones a worker reports.
fn merge_phases(server: &[Value], worker: &[Value]) -> Vec<Value> {
    let ours = |p: &&Value| matches!(p["phaseType"].as_str(), Some("SUBMITTED" | "QUEUED"));
    server
        .iter()
        .filter(ours)
        .chain(worker.iter().filter(|p| !ours(p)))
        .cloned()
        .collect()
}

fn push_phase(doc: &mut Value, phase: &str, t: f64) {
    if let Some(Value::Array(p)) = doc.get_mut("phases") {
        p.push(json!({"phaseType": phase, "startTime": t}));
    }
    set(doc, "currentPhase", json!(phase));
}

/// Ends the open (last) phase.
fn close_phase(doc: &mut Value, status: &str, t: f64, context: Option<(&str, &str)>) {
    if let Some(Value::Array(p)) = doc.get_mut("phases") {
        if let Some(Value::Object(last)) = p.last_mut() {
            if last.get("phaseStatus").is_none() {
                let start = last.get("startTime").and_then(Value::as_f64).unwrap_or(t);
                last.insert("phaseStatus".into(), json!(status));
                last.insert("endTime".into(), json!(t));
                last.insert(
                    "durationInSeconds".into(),
                    json!((t - start).max(0.0) as i64),
                );
                if let Some((code, message)) = context {
                    last.insert(
                        "contexts".into(),
                        json!([{"statusCode": code, "message": message}]),
                    );
                }
            }
        }
    }
}

/// Marks a build complete: status, end time, COMPLETED as the current phase.
fn finish_doc(doc: &mut Value, status: &str, t: f64) {
    if let Some(Value::Array(p)) = doc.get_mut("phases") {
        if p.last().and_then(|l| l["phaseType"].as_str()) != Some("COMPLETED") {
            p.push(json!({"phaseType": "COMPLETED", "startTime": t}));
        }
    }
    let m: &mut Map<String, Value> = match doc {
        Value::Object(m) => m,
        _ => return,
    };
    m.insert("buildStatus".into(), json!(status));
    m.insert("endTime".into(), json!(t));
    m.insert("currentPhase".into(), json!("COMPLETED"));
    m.insert("buildComplete".into(), json!(true));
}
