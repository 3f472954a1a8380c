//! One build from start to end, the same for `slipway build` (local mode) and for workers:
//! the phases SUBMITTED … COMPLETED, CodeBuild's `CODEBUILD_*` environment, the buildspec
//! read and checked in DOWNLOAD_SOURCE, the build phases in a sandbox, and the artifacts
//! picked in UPLOAD_ARTIFACTS (what happens to them is the caller's).

use crate::artifacts::{self, Picked};
use crate::buildspec::{self, BuildSpec};
use crate::cache;
use crate::images;
use crate::reports::{self, Collected};
use crate::runner::{self, Progress};
use crate::sandbox::{Limits, Runtime, SandboxSpec};
use crate::session::StopReason;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The uuid part of a build id (`project:uuid`): the log stream's name, the build's
/// directories and its sandbox's name are made from it.
pub fn build_uuid(build_id: &str) -> &str {
    build_id.rsplit_once(':').map_or(build_id, |(_, u)| u)
}

/// An S3 object location as `BUCKET/KEY`, whether given so or as its ARN
/// (`arn:aws:s3:::BUCKET/KEY`, as CodePipeline hands artifacts over).
pub fn s3_object(location: &str) -> &str {
    location.strip_prefix("arn:aws:s3:::").unwrap_or(location)
}

/// The name of a build's sandbox in the container runtime.
pub fn sandbox_id(build_id: &str) -> String {
    format!("slipway-{}", build_uuid(build_id))
}

/// Whether `ident` can name a secondary source (AWS: letters, digits and underscores);
/// it becomes a directory and a `CODEBUILD_SRC_DIR_<ident>` variable.
pub fn valid_source_identifier(ident: &str) -> bool {
    !ident.is_empty() && ident.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Where the source is inside the sandbox (CodeBuild's layout).
pub const SRC_PATH: &str = "/codebuild/output/src1/src";

/// Everything a build needs to run.
#[derive(Debug, Clone)]
pub struct Job {
    /// `project:uuid`.
    pub build_id: String,
    pub build_arn: String,
    pub build_number: u64,
    pub project: String,
    /// The buildspec text, or (when None) a path in the source (default `buildspec.yml`).
    pub buildspec: Option<String>,
    pub buildspec_path: Option<String>,
    /// Environment variables as resolved from the project, overrides and stores.
    pub variables: Vec<(String, String)>,
    /// Values to mask in the log (Parameter Store and Secrets Manager values).
    pub secrets: Vec<String>,
    pub image: String,
    pub region: String,
    pub initiator: String,
    pub source_version: Option<String>,
    pub resolved_source_version: Option<String>,
    pub source_repo_url: Option<String>,
    /// The source directory on the host (already downloaded).
    pub src_host: PathBuf,
    /// Secondary sources: (sourceIdentifier, directory on the host).
    pub secondary_sources: Vec<(String, PathBuf)>,
    /// The build's own scratch directory on the host.
    pub work: PathBuf,
    /// Host paths the build must not see.
    pub hide: Vec<PathBuf>,
    /// Where imported images are (None: every build runs on the host's root filesystem).
    pub images_dir: Option<PathBuf>,
    pub limits: Limits,
    pub privileged: bool,
    pub timeout: Duration,
}

/// How a build ended.
#[derive(Debug, Clone)]
pub struct Finished {
    /// SUCCEEDED, FAILED, FAULT, TIMED_OUT or STOPPED.
    pub status: String,
    pub resolved_source_version: Option<String>,
    pub phases: Vec<runner::PhaseRecord>,
    pub exported: Vec<(String, String)>,
    /// The versions the secondary sources resolved to: (sourceIdentifier, version).
    pub secondary_versions: Vec<(String, String)>,
    /// The primary artifact's files, and each secondary artifact's, when uploading was
    /// reached.
    pub artifacts: Option<Vec<(Option<String>, Picked)>>,
}

/// The shell a buildspec asks for (`env.shell`), as a path in the image.
fn shell_path(spec: &BuildSpec, image: Option<&images::Image>) -> String {
    // An image without bash runs its builds with /bin/sh.
    let has_bash = image.is_none_or(|i| {
        ["bin/bash", "usr/bin/bash"]
            .iter()
            .any(|p| std::fs::symlink_metadata(i.rootfs.join(p)).is_ok())
    });
    match spec.env.shell.as_deref() {
        None if !has_bash => "/bin/sh".into(),
        Some("bash") | None => "/bin/bash".into(),
        Some("sh") => "/bin/sh".into(),
        Some(p) => p.to_owned(),
    }
}

fn millis(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// CodeBuild's built-in variables, then the job's own (which may not override them).
fn environment(
    job: &Job,
    spec: &BuildSpec,
    src_path: &str,
    started: SystemTime,
) -> Vec<(String, String)> {
    let uuid = build_uuid(&job.build_id);
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("LANG".into(), "C.UTF-8".into()),
        ("AWS_DEFAULT_REGION".into(), job.region.clone()),
        ("AWS_REGION".into(), job.region.clone()),
        ("CODEBUILD_BUILD_ARN".into(), job.build_arn.clone()),
        ("CODEBUILD_BUILD_ID".into(), job.build_id.clone()),
        ("CODEBUILD_BUILD_IMAGE".into(), job.image.clone()),
        (
            "CODEBUILD_BUILD_NUMBER".into(),
            job.build_number.to_string(),
        ),
        ("CODEBUILD_BUILD_SUCCEEDING".into(), "1".into()),
        ("CODEBUILD_INITIATOR".into(), job.initiator.clone()),
        ("CODEBUILD_LOG_PATH".into(), uuid.to_owned()),
        ("CODEBUILD_SRC_DIR".into(), src_path.to_owned()),
        ("CODEBUILD_START_TIME".into(), millis(started).to_string()),
    ];
    for (k, v) in [
        ("CODEBUILD_SOURCE_VERSION", &job.source_version),
        (
            "CODEBUILD_RESOLVED_SOURCE_VERSION",
            &job.resolved_source_version,
        ),
        ("CODEBUILD_SOURCE_REPO_URL", &job.source_repo_url),
    ] {
        if let Some(v) = v {
            env.push((k.into(), v.clone()));
        }
    }
    let builtin = |k: &str| k.starts_with("CODEBUILD_") && k != "CODEBUILD_BUILD_SUCCEEDING";
    for (k, v) in spec.env.variables.iter().chain(job.variables.iter()) {
        if builtin(k) {
            continue;
        }
        match env.iter_mut().find(|(n, _)| n == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// A git credential for a build: git over HTTP to `url` (the server's base URL) answers to
/// it while the build runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitCredential {
    pub url: String,
    pub username: String,
    pub password: String,
}

impl GitCredential {
    /// The environment that makes the build's `git` use it for `url` only (git's
    /// `GIT_CONFIG_*` variables: no file written, nothing for other hosts).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("GIT_CONFIG_COUNT".into(), "1".into()),
            (
                "GIT_CONFIG_KEY_0".into(),
                format!("credential.{}.helper", self.url.trim_end_matches('/')),
            ),
            (
                "GIT_CONFIG_VALUE_0".into(),
                format!(
                    "!f() {{ test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' '{}' '{}'; }}; f",
                    self.username, self.password
                ),
            ),
        ]
    }
}

/// What differs between running a build locally and on a worker: where the source comes
/// from and where the artifacts go.
pub trait Hooks: Send {
    /// Puts the source in place (DOWNLOAD_SOURCE); returns the resolved source version.
    fn fetch_source(
        &mut self,
        progress: &mut Progress,
    ) -> impl std::future::Future<Output = Result<Option<String>, String>> + Send;

    /// Puts each secondary source in its directory (DOWNLOAD_SOURCE); returns the versions
    /// they resolved to, by source identifier. None by default.
    fn fetch_secondary_sources(
        &mut self,
        _progress: &mut Progress,
    ) -> impl std::future::Future<Output = Result<Vec<(String, String)>, String>> + Send {
        async { Ok(Vec::new()) }
    }

    /// Fetches an image that was not imported (from its registry) into `images`. None by
    /// default.
    fn pull_image(
        &mut self,
        _images: &std::path::Path,
        _name: &str,
        _progress: &mut Progress,
    ) -> impl std::future::Future<Output = Result<images::Image, String>> + Send {
        async { Err("no registry is configured".to_owned()) }
    }

    /// The digest `name` (an image pulled before) stands for in its registry now; None
    /// where there is no registry to ask.
    fn image_digest(
        &mut self,
        _name: &str,
    ) -> impl std::future::Future<Output = Result<Option<String>, String>> + Send {
        async { Ok(None) }
    }

    /// The values of Parameter Store parameters (the buildspec's `env.parameter-store`),
    /// decrypted: `(variable, parameter)` in, `(variable, value)` out.
    fn parameters(
        &mut self,
        wanted: &[(String, String)],
    ) -> impl std::future::Future<Output = Result<Vec<(String, String)>, String>> + Send;

    /// A credential for the build's git commands (the buildspec's `git-credential-helper`):
    /// the server's base URL, a user name and a password. None where there is no server
    /// (local builds).
    fn git_credential(
        &mut self,
    ) -> impl std::future::Future<Output = Result<Option<GitCredential>, String>> + Send {
        async { Ok(None) }
    }

    /// Stores the test and coverage reports the build produced (UPLOAD_ARTIFACTS). A failure
    /// is logged; it does not fail the build.
    fn upload_reports(
        &mut self,
        reports: &[Collected],
        progress: &mut Progress,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;

    /// Fetches the newest cache saved under the first of `keys` that has one into `dest`;
    /// the key found, or None when there is no cache yet.
    fn restore_cache(
        &mut self,
        keys: &[String],
        dest: &std::path::Path,
        progress: &mut Progress,
    ) -> impl std::future::Future<Output = Result<Option<String>, String>> + Send;

    /// Keeps the cache the build packed (`file`) under `key`.
    fn save_cache(
        &mut self,
        key: &str,
        file: &std::path::Path,
        progress: &mut Progress,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;

    /// Stores the picked artifact files (UPLOAD_ARTIFACTS).
    fn upload_artifacts(
        &mut self,
        spec: &BuildSpec,
        picked: &[(Option<String>, Picked)],
        progress: &mut Progress,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
}

/// The image a build runs on (PROVISIONING): one imported or pulled before (a pulled one
/// pulled again when its registry's tag has moved), one pulled now, or None for the host's
/// root filesystem; the message to fail PROVISIONING with when a pull fails.
async fn provision_image(
    runtime: &Runtime,
    job: &Job,
    hooks: &mut impl Hooks,
    progress: &mut Progress,
) -> Result<Option<images::Image>, String> {
    let (Some(dir), Runtime::Oci { .. }) = (&job.images_dir, runtime) else {
        return Ok(None);
    };
    let mut found = images::lookup(dir, &job.image);
    // A pulled image is used again only while its tag still names it.
    if let Some(i) = found.as_ref().filter(|i| i.pulled) {
        match hooks.image_digest(&job.image).await {
            Ok(Some(now)) if now != i.digest => {
                progress.say(&format!(
                    "Image {}: the registry has {now} now (pulled before: {}); pulling it",
                    i.name, i.digest
                ));
                found = None;
            }
            Ok(_) => {}
            Err(e) => progress.say(&format!(
                "Image {}: the registry could not be asked ({e}); using the copy pulled before",
                i.name
            )),
        }
    }
    if let Some(i) = found {
        progress.say(&format!(
            "Image {} ({}, {} layer(s))",
            i.name, i.digest, i.layers
        ));
        return Ok(Some(i));
    }
    if images::is_curated(&job.image) {
        progress.say(&format!(
            "Image {}: the host's root filesystem (no image of that name imported)",
            job.image
        ));
        return Ok(None);
    }
    let i = hooks
        .pull_image(dir, &job.image, progress)
        .await
        .map_err(|e| {
            format!(
                "Unable to pull the build image {}: {e}; import it with `slipway admin import-image {} PATH`",
                job.image, job.image
            )
        })?;
    progress.say(&format!(
        "Image {} pulled ({}, {} layer(s))",
        i.name, i.digest, i.layers
    ));
    Ok(Some(i))
}

/// Runs `job` to the end. `stop` carries StopBuild; the build's timeout is applied here.
pub async fn run(
    runtime: &Runtime,
    job: &Job,
    hooks: &mut impl Hooks,
    progress: &mut Progress,
    mut stop: watch::Receiver<Option<StopReason>>,
) -> Finished {
    let started = SystemTime::now();
    progress.instant("SUBMITTED", Some("SUCCEEDED"));
    progress.instant("QUEUED", Some("SUCCEEDED"));
    progress.begin("PROVISIONING");
    progress.say(&format!(
        "Running on Slipway ({} sandbox) for build {}",
        runtime.name(),
        job.build_id
    ));
    let image = match provision_image(runtime, job, hooks, progress).await {
        Ok(i) => i,
        Err(message) => {
            progress.complete("FAILED", Some(("CLIENT_ERROR".into(), message)));
            return finish(progress, "FAILED", Vec::new(), None);
        }
    };
    progress.end("SUCCEEDED", None);

    // DOWNLOAD_SOURCE: the source is fetched, then the buildspec read and checked.
    progress.begin("DOWNLOAD_SOURCE");
    let resolved = match hooks.fetch_source(progress).await {
        Ok(r) => r,
        Err(message) => {
            progress.complete("FAILED", Some(("CLIENT_ERROR".into(), message)));
            return finish(progress, "FAILED", Vec::new(), None);
        }
    };
    let secondary_versions = if job.secondary_sources.is_empty() {
        Vec::new()
    } else {
        match hooks.fetch_secondary_sources(progress).await {
            Ok(v) => v,
            Err(message) => {
                progress.complete("FAILED", Some(("CLIENT_ERROR".into(), message)));
                return finish(progress, "FAILED", Vec::new(), None);
            }
        }
    };
    // The job as DOWNLOAD_SOURCE completes it: resolved version, Parameter Store values.
    let mut job = job.clone();
    if resolved.is_some() {
        job.resolved_source_version = resolved;
    }
    let spec = match load_buildspec(&job) {
        Ok(s) => s,
        Err((code, message)) => {
            progress.complete("FAILED", Some((code.into(), message)));
            return finish(progress, "FAILED", Vec::new(), None);
        }
    };
    if !spec.env.parameter_store.is_empty() {
        match hooks.parameters(&spec.env.parameter_store).await {
            Ok(values) => {
                for (name, value) in values {
                    progress.add_secret(&value);
                    job.variables.push((name, value));
                }
            }
            Err(message) => {
                progress.complete(
                    "FAILED",
                    Some(("DECRYPTED_VARIABLES_ERROR".into(), message)),
                );
                return finish(progress, "FAILED", Vec::new(), None);
            }
        }
    }
    if spec.env.git_credential_helper {
        match hooks.git_credential().await {
            Ok(Some(c)) => {
                progress.add_secret(&c.password);
                job.variables.extend(c.env());
                progress.say(&format!(
                    "git-credential-helper: git over HTTP to {} uses the build's credential",
                    c.url
                ));
            }
            Ok(None) => progress.say("git-credential-helper: no server to give credentials here"),
            Err(message) => {
                progress.complete(
                    "FAILED",
                    Some((
                        "CLIENT_ERROR".into(),
                        format!("git-credential-helper: {message}"),
                    )),
                );
                return finish(progress, "FAILED", Vec::new(), None);
            }
        }
    }
    let job = &job;
    let cache_dir = job.work.join("cache");
    if cache::restores(&spec) {
        let restored = match std::fs::create_dir_all(&cache_dir) {
            Ok(()) => {
                hooks
                    .restore_cache(&cache::keys(&spec), &cache_dir.join("in.tar"), progress)
                    .await
            }
            Err(e) => Err(e.to_string()),
        };
        match restored {
            Ok(Some(key)) => progress.say(&format!("Downloaded the cache (key {key})")),
            Ok(None) => progress.say("No cache saved yet"),
            Err(e) => progress.say(&format!(
                "Downloading the cache failed, going on without it: {e}"
            )),
        }
    }
    progress.say(&format!("CODEBUILD_SRC_DIR={SRC_PATH}"));
    progress.end("SUCCEEDED", None);

    // The timeout: a watcher turns it into a stop.
    let (stop_tx, mut inner_stop) = watch::channel(None);
    let timeout = job.timeout;
    let watcher = tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => { let _ = stop_tx.send(Some(StopReason::TimedOut)); }
            r = async {
                loop {
                    if stop.changed().await.is_err() { return None; }
                    if let Some(r) = *stop.borrow() { return Some(r); }
                }
            } => { if let Some(r) = r { let _ = stop_tx.send(Some(r)); } }
        }
        // Keep the sender alive until the build is over.
        std::future::pending::<()>().await;
    });

    let src_path = match runtime {
        Runtime::Host => job.src_host.display().to_string(),
        _ => SRC_PATH.into(),
    };
    // Secondary sources at /codebuild/output/src2/src, src3…, named by
    // CODEBUILD_SRC_DIR_<sourceIdentifier>.
    let secondary: Vec<(String, String, PathBuf)> = job
        .secondary_sources
        .iter()
        .enumerate()
        .map(|(i, (ident, host))| {
            let path = match runtime {
                Runtime::Host => host.display().to_string(),
                _ => format!("/codebuild/output/src{}/src", i + 2),
            };
            (ident.clone(), path, host.clone())
        })
        .collect();
    let sandbox = SandboxSpec {
        id: sandbox_id(&job.build_id),
        work: job.work.clone(),
        src_host: job.src_host.clone(),
        image_root: image.as_ref().map(|i| i.rootfs.clone()),
        env: {
            let mut env = environment(job, &spec, &src_path, started);
            // The image's own variables (its PATH above all) under CodeBuild's.
            if let Some(i) = &image {
                for (k, v) in i.env.iter().rev() {
                    match env.iter_mut().find(|(n, _)| n == k) {
                        Some(slot) if k == "PATH" || k == "HOME" || k == "LANG" => {
                            slot.1 = v.clone()
                        }
                        Some(_) => {}
                        None => env.insert(0, (k.clone(), v.clone())),
                    }
                }
            }
            env.extend(
                secondary
                    .iter()
                    .map(|(ident, path, _)| (format!("CODEBUILD_SRC_DIR_{ident}"), path.clone())),
            );
            env
        },
        extra_sources: secondary
            .iter()
            .map(|(_, path, host)| (path.clone(), host.clone()))
            .collect(),
        src_path,
        hide: job.hide.clone(),
        limits: job.limits,
        privileged: job.privileged,
    };
    let result = runner::run_phases(
        runtime,
        &sandbox,
        &spec,
        &shell_path(&spec, image.as_ref()),
        progress,
        &mut inner_stop,
    )
    .await;
    watcher.abort();

    let mut status = result.status.clone();
    let mut picked = None;
    if result.upload_artifacts {
        progress.enter("UPLOAD_ARTIFACTS");
        let packed = cache_dir.join("out.tar");
        if packed.is_file() {
            let key = cache::keys(&spec).remove(0);
            if let Err(e) = hooks.save_cache(&key, &packed, progress).await {
                progress.say(&format!("Uploading the cache failed: {e}"));
            }
        }
        if !spec.reports.is_empty() {
            let collected = reports::collect(&spec, &job.src_host);
            for c in &collected {
                progress.say(&format!(
                    "Preparing to copy {} report {}: {} file(s), {}",
                    c.format.report_type(),
                    c.name,
                    c.files.len(),
                    if c.format.is_test() {
                        format!("{} test case(s)", c.tests.len())
                    } else {
                        format!("{} source file(s)", c.coverage.len())
                    }
                ));
                for e in &c.errors {
                    progress.say(&format!("Report {}: {e}", c.name));
                }
            }
            if let Err(e) = hooks.upload_reports(&collected, progress).await {
                progress.say(&format!("Uploading reports failed: {e}"));
            }
        }
        let uploaded = match pick_all(&spec, &job.src_host) {
            Ok(p) => hooks
                .upload_artifacts(&spec, &p, progress)
                .await
                .map(|()| p),
            Err(e) => Err(e),
        };
        match uploaded {
            Ok(p) => {
                progress.complete("SUCCEEDED", None);
                picked = Some(p);
            }
            Err(message) => {
                progress.complete("FAILED", Some(("CLIENT_ERROR".into(), message)));
                status = "FAILED".into();
            }
        }
    }
    let mut done = finish(progress, &status, result.exported, picked);
    done.resolved_source_version = job.resolved_source_version.clone();
    done.secondary_versions = secondary_versions;
    done
}

fn finish(
    progress: &mut Progress,
    status: &str,
    exported: Vec<(String, String)>,
    artifacts: Option<Vec<(Option<String>, Picked)>>,
) -> Finished {
    progress.begin("FINALIZING");
    progress.end("SUCCEEDED", None);
    progress.instant("COMPLETED", None);
    Finished {
        status: status.to_owned(),
        resolved_source_version: None,
        secondary_versions: Vec::new(),
        phases: progress.phases.clone(),
        exported,
        artifacts,
    }
}

/// Reads the buildspec (the job's text, or a file in the source) and parses it; failures
/// are CodeBuild's YAML_FILE_ERROR.
fn load_buildspec(job: &Job) -> Result<BuildSpec, (&'static str, String)> {
    let text = match &job.buildspec {
        Some(t) if t.contains('\n') || t.trim_start().starts_with("version") => t.clone(),
        other => {
            let rel = other
                .as_deref()
                .or(job.buildspec_path.as_deref())
                .unwrap_or("buildspec.yml");
            if rel.split('/').any(|c| c == "..") {
                return Err((
                    "YAML_FILE_ERROR",
                    format!("buildspec path {rel:?} leaves the source directory"),
                ));
            }
            let path = job.src_host.join(rel);
            std::fs::read_to_string(&path)
                .map_err(|e| ("YAML_FILE_ERROR", format!("stat {SRC_PATH}/{rel}: {e}")))?
        }
    };
    buildspec::parse(&text).map_err(|e| ("YAML_FILE_ERROR", format!("YAML_FILE_ERROR: {e}")))
}

/// The files of every artifact the buildspec names (None = the primary one).
fn pick_all(
    spec: &BuildSpec,
    src: &std::path::Path,
) -> Result<Vec<(Option<String>, Picked)>, String> {
    let mut out = Vec::new();
    let Some(a) = &spec.artifacts else {
        return Ok(out);
    };
    if !a.primary.files.is_empty() {
        out.extend(
            artifacts::pick(&a.primary, src)?
                .into_iter()
                .map(|p| (None, p)),
        );
    }
    for (id, files) in &a.secondary {
        out.extend(
            artifacts::pick(files, src)?
                .into_iter()
                .map(|p| (Some(id.clone()), p)),
        );
    }
    Ok(out)
}
