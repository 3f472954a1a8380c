//! `slipway agent`: a CodeDeploy host agent. It polls the server's command service as AWS's
//! agent does (PollHostCommand → GetDeploymentSpecification → PutHostCommandAcknowledgement
//! → PutHostCommandComplete, heartbeating with PostHostCommandUpdate), downloads the
//! revision, installs its files and runs its hooks. State lives in `--root-dir` (AWS's
//! layout: `<group-id>/<deployment-id>/deployment-archive`, `deployment-instructions/`,
//! `ongoing-deployment/`), so the agent survives its own restart.

mod appspec;
mod install;

use crate::aws::Api;
use clap::Args;
use serde_json::{json, Value};
use slipway_codedeploy::spec::{Report, Spec};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Args)]
pub struct AgentArgs {
    /// The server's URL.
    #[arg(
        long,
        env = "AWS_ENDPOINT_URL",
        default_value = "http://127.0.0.1:4566"
    )]
    endpoint: String,
    /// This host's on-premises instance name (for logs).
    #[arg(long)]
    instance_name: Option<String>,
    /// Where deployments are unpacked and the agent keeps its state.
    #[arg(long, default_value = "/opt/slipway-agent/deployment-root")]
    root_dir: PathBuf,
    /// An on-premises config file as AWS's agent reads it (`aws_access_key_id`,
    /// `aws_secret_access_key`, `iam_user_arn`, `region`); else the AWS_* variables and
    /// AWS_HOST_IDENTIFIER (the IAM user ARN the instance was registered with).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seconds between heartbeats while a lifecycle event runs.
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,
}

pub(crate) struct Agent {
    api: Api,
    host: String,
    root: PathBuf,
    heartbeat: Duration,
}

/// Reads `key: value` lines of an on-premises config file.
fn read_config(path: &Path) -> anyhow::Result<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_owned(),
                v.trim().trim_matches(['"', '\'']).to_owned(),
            )
        })
        .collect())
}

pub async fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let env = |k: &str| std::env::var(k).ok();
    let cfg = match &args.config {
        Some(p) => read_config(p)?,
        None => Default::default(),
    };
    let get = |file_key: &str, env_key: &str| cfg.get(file_key).cloned().or_else(|| env(env_key));
    let key = get("aws_access_key_id", "AWS_ACCESS_KEY_ID").ok_or_else(|| {
        anyhow::anyhow!("no access key: set aws_access_key_id in --config or AWS_ACCESS_KEY_ID")
    })?;
    let secret = get("aws_secret_access_key", "AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
        anyhow::anyhow!(
            "no secret key: set aws_secret_access_key in --config or AWS_SECRET_ACCESS_KEY"
        )
    })?;
    let host = get("iam_user_arn", "AWS_HOST_IDENTIFIER").or_else(|| cfg.get("iam_session_arn").cloned()).ok_or_else(|| anyhow::anyhow!("no host identifier: set iam_user_arn in --config or AWS_HOST_IDENTIFIER to the IAM ARN the instance was registered with"))?;
    let region = get("region", "AWS_REGION")
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".into());
    let agent = Agent::new(
        Api::new(&args.endpoint, key, secret, region)?,
        host,
        &args.root_dir,
        Duration::from_secs(args.heartbeat_secs.max(1)),
    )?;
    tracing::info!(host = %agent.host, instance = ?args.instance_name, root = %agent.root.display(), "agent polling");
    agent.serve(crate::server::shutdown_signal()).await;
    Ok(ExitCode::SUCCESS)
}

impl Agent {
    const TARGET: &'static str = "CodeDeployCommandService_v20141006";

    /// An agent polling as `host` (its IAM ARN) through `api`, keeping its state in `root`.
    pub(crate) fn new(
        api: Api,
        host: String,
        root: &Path,
        heartbeat: Duration,
    ) -> anyhow::Result<Agent> {
        std::fs::create_dir_all(root)?;
        Ok(Agent {
            api,
            host,
            root: std::fs::canonicalize(root)?,
            heartbeat,
        })
    }

    /// Polls and runs commands until `stop` resolves (a command in progress is left to the
    /// next start, which reports it failed).
    pub(crate) async fn serve(&self, stop: impl std::future::Future<Output = ()>) {
        self.recover().await;
        let mut errors = 0u32;
        let mut stop = std::pin::pin!(stop);
        loop {
            let polled = tokio::select! {
                r = self.poll_once() => r,
                _ = &mut stop => return,
            };
            match polled {
                Ok(()) => errors = 0,
                Err(e) => {
                    errors = (errors + 1).min(5);
                    tracing::warn!(error = %format!("{e:#}"), "agent poll failed");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1 << errors)) => {}
                        _ = &mut stop => return,
                    }
                }
            }
        }
    }

    async fn call(&self, op: &str, body: Value) -> anyhow::Result<Value> {
        self.api
            .call(
                "codedeploy-commands",
                &format!("{}.{op}", Self::TARGET),
                body,
            )
            .await
    }

    /// A command that was running when the agent died fails (AWS's code 7).
    async fn recover(&self) {
        let dir = self.root.join("ongoing-deployment");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            if let Ok(id) = std::fs::read_to_string(e.path()) {
                let report = Report {
                    error_code: 7,
                    message: "Failed: Failing in-progress lifecycle event after an agent restart."
                        .into(),
                    ..Default::default()
                };
                let _ = self.complete(id.trim(), false, &report).await;
            }
            let _ = std::fs::remove_file(e.path());
        }
    }

    async fn complete(&self, id: &str, ok: bool, report: &Report) -> anyhow::Result<()> {
        self.call(
            "PutHostCommandComplete",
            json!({
                "HostCommandIdentifier": id,
                "CommandStatus": if ok { "Succeeded" } else { "Failed" },
                "Diagnostics": {"Format": "JSON", "Payload": serde_json::to_string(report)?},
            }),
        )
        .await?;
        Ok(())
    }

    async fn poll_once(&self) -> anyhow::Result<()> {
        let v = self
            .call("PollHostCommand", json!({"HostIdentifier": self.host}))
            .await?;
        let Some(cmd) = v.get("HostCommand").filter(|c| c.is_object()) else {
            return Ok(());
        };
        let id = cmd["HostCommandIdentifier"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = cmd["CommandName"].as_str().unwrap_or_default().to_owned();
        let exec = cmd["DeploymentExecutionId"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let spec_v = self
            .call(
                "GetDeploymentSpecification",
                json!({"DeploymentExecutionId": exec, "HostIdentifier": self.host}),
            )
            .await?;
        let envelope = &spec_v["DeploymentSpecification"]["GenericEnvelope"];
        let payload = envelope["Payload"].as_str().unwrap_or_default();
        let json = match envelope["Format"].as_str() {
            Some(slipway_codedeploy::envelope::PKCS7_JSON) => {
                slipway_codedeploy::envelope::content(payload)
            }
            Some(slipway_codedeploy::spec::TEXT_JSON) => Some(payload.as_bytes().to_vec()),
            _ => None,
        };
        let Some(json) = json else {
            let report = Report {
                error_code: 5,
                message: format!(
                    "Unsupported DeploymentSpecification format: {}",
                    envelope["Format"]
                ),
                ..Default::default()
            };
            return self.complete(&id, false, &report).await;
        };
        let spec: Spec = serde_json::from_slice(&json)?;
        let ack = self
            .call("PutHostCommandAcknowledgement", json!({"HostCommandIdentifier": id, "Diagnostics": {"Format": "JSON", "Payload": "{\"IsCommandNoop\":false}"}}))
            .await?;
        if matches!(ack["CommandStatus"].as_str(), Some("Succeeded" | "Failed")) {
            return Ok(());
        }
        let check = name == slipway_codedeploy::orchestrator::HEALTH_CHECK;
        let ongoing = self.root.join("ongoing-deployment");
        std::fs::create_dir_all(&ongoing)?;
        let marker = ongoing.join(&spec.deployment_id);
        // A health check is no lifecycle event: nothing to fail after a restart.
        if !check {
            std::fs::write(&marker, &id)?;
        }
        tracing::info!(deployment = %spec.deployment_id, event = %name, "running lifecycle event");
        let beat = {
            let api = self.api_clone();
            let id = id.clone();
            let every = self.heartbeat;
            tokio::spawn(async move {
                loop {
                    let _ = api
                        .call(
                            "codedeploy-commands",
                            &format!("{}.PostHostCommandUpdate", Agent::TARGET),
                            json!({"HostCommandIdentifier": id}),
                        )
                        .await;
                    tokio::time::sleep(every).await;
                }
            })
        };
        let result = self.execute(&name, &spec).await;
        beat.abort();
        let (ok, report) = match result {
            Ok(log) => (
                true,
                Report {
                    error_code: 0,
                    message: "Succeeded".into(),
                    log,
                    ..Default::default()
                },
            ),
            Err(r) => (false, r),
        };
        self.complete(&id, ok, &report).await?;
        if !check {
            let _ = std::fs::remove_file(&marker);
        }
        Ok(())
    }

    fn api_clone(&self) -> Api {
        self.api.clone()
    }

    fn deployment_dir(&self, spec: &Spec) -> PathBuf {
        self.root
            .join(&spec.deployment_group_id)
            .join(&spec.deployment_id)
    }

    fn instructions(&self) -> PathBuf {
        self.root.join("deployment-instructions")
    }

    /// Runs one lifecycle event; the log of its scripts on success.
    async fn execute(&self, name: &str, spec: &Spec) -> Result<String, Report> {
        let unknown = |m: String| Report {
            error_code: 5,
            message: m,
            ..Default::default()
        };
        let dir = self.deployment_dir(spec);
        std::fs::create_dir_all(dir.join("logs")).map_err(|e| unknown(e.to_string()))?;
        std::fs::create_dir_all(self.instructions()).map_err(|e| unknown(e.to_string()))?;
        let group = &spec.deployment_group_id;
        match name {
            slipway_codedeploy::orchestrator::HEALTH_CHECK => {
                let cwd = match dir.join("deployment-archive") {
                    a if a.is_dir() => a,
                    _ => self.root.clone(),
                };
                let mut log = String::new();
                for c in &spec.health_checks {
                    log.push_str(&run_check(c, &cwd, spec).await?);
                }
                Ok(log)
            }
            "DownloadBundle" => {
                self.download(spec, &dir)
                    .await
                    .map_err(|e| unknown(format!("{e:#}")))?;
                std::fs::write(
                    self.instructions()
                        .join(format!("{group}_most_recent_install")),
                    dir.to_string_lossy().as_bytes(),
                )
                .map_err(|e| unknown(e.to_string()))?;
                Ok(String::new())
            }
            "Install" => {
                let archive = dir.join("deployment-archive");
                let spec_text = read_appspec(&archive).map_err(unknown)?;
                let app = appspec::parse(&spec_text).map_err(unknown)?;
                let behavior = spec
                    .agent_action_overrides
                    .as_ref()
                    .and_then(|o| o.agent_overrides.as_ref())
                    .and_then(|o| o.file_exists_behavior.clone())
                    .unwrap_or_else(|| "DISALLOW".into());
                let instructions = self.instructions();
                let group = group.clone();
                tokio::task::spawn_blocking(move || {
                    install::install(&instructions, &group, &archive, &app, &behavior)
                })
                .await
                .map_err(|e| unknown(e.to_string()))?
                .map_err(unknown)?;
                std::fs::write(
                    self.instructions().join(format!(
                        "{}_last_successful_install",
                        spec.deployment_group_id
                    )),
                    dir.to_string_lossy().as_bytes(),
                )
                .map_err(|e| unknown(e.to_string()))?;
                Ok(String::new())
            }
            hook => {
                // ApplicationStop and the block-traffic hooks run the last installed
                // revision's scripts (none on a first deployment).
                let revision_dir = if matches!(
                    hook,
                    "ApplicationStop" | "BeforeBlockTraffic" | "AfterBlockTraffic"
                ) && !dir.join("deployment-archive").exists()
                {
                    match std::fs::read_to_string(
                        self.instructions()
                            .join(format!("{group}_last_successful_install")),
                    ) {
                        Ok(p) => PathBuf::from(p.trim()),
                        Err(_) => return Ok(String::new()),
                    }
                } else {
                    dir.clone()
                };
                let archive = revision_dir.join("deployment-archive");
                let Ok(text) = read_appspec(&archive) else {
                    return Ok(String::new());
                };
                let app = appspec::parse(&text).map_err(unknown)?;
                let Some(scripts) = app.hooks.get(hook) else {
                    return Ok(String::new());
                };
                run_scripts(hook, scripts, &archive, spec, &dir.join("logs/scripts.log")).await
            }
        }
    }

    async fn download(&self, spec: &Spec, dir: &Path) -> anyhow::Result<()> {
        let archive = dir.join("deployment-archive");
        let _ = std::fs::remove_dir_all(&archive);
        std::fs::create_dir_all(&archive)?;
        match (&spec.revision.s3_revision, &spec.revision.app_spec_content) {
            (Some(s3), _) => {
                let bytes = self
                    .api
                    .get_object(&s3.bucket, &s3.key, s3.version.as_deref())
                    .await?;
                let bundle = dir.join("bundle.tar");
                std::fs::write(&bundle, &bytes)?;
                match s3.bundle_type.as_str() {
                    "zip" => {
                        let archive2 = archive.clone();
                        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
                            let mut z = zip::ZipArchive::new(std::fs::File::open(&bundle)?)?;
                            z.extract(&archive2)?;
                            Ok(())
                        })
                        .await??;
                    }
                    t => {
                        let flags = if t == "tgz" { "-zxpsf" } else { "-xpsf" };
                        let status = tokio::process::Command::new("tar")
                            .arg(flags)
                            .arg(&bundle)
                            .arg("-C")
                            .arg(&archive)
                            .status()
                            .await?;
                        anyhow::ensure!(status.success(), "unpacking the {t} bundle failed");
                    }
                }
            }
            (None, Some(c)) => std::fs::write(archive.join("appspec.yml"), &c.content)?,
            (None, None) => anyhow::bail!("the deployment names no revision this agent can read"),
        }
        Ok(())
    }
}

fn read_appspec(archive: &Path) -> Result<String, String> {
    for name in ["appspec.yml", "appspec.yaml"] {
        if let Ok(t) = std::fs::read_to_string(archive.join(name)) {
            return Ok(t);
        }
    }
    Err(format!(
        "The revision has no appspec.yml at {}",
        archive.display()
    ))
}

/// How much of a hook's output the diagnostics keep: its first and last lines.
const LOG_HEAD: usize = 1024;
const LOG_TAIL: usize = 1000;

/// Runs a hook's scripts in order; the first failure ends it.
async fn run_scripts(
    hook: &str,
    scripts: &[appspec::Script],
    archive: &Path,
    spec: &Spec,
    log_path: &Path,
) -> Result<String, Report> {
    use tokio::io::AsyncBufReadExt as _;
    let mut all = format!("LifecycleEvent - {hook}\n");
    for s in scripts {
        all.push_str(&format!("Script - {}\n", s.location));
        let path = archive.join(s.location.trim_start_matches('/'));
        if s.location.split('/').any(|c| c == "..") || !path.is_file() {
            return Err(Report {
                error_code: 1,
                script_name: s.location.clone(),
                message: format!(
                    "Script does not exist at specified location: {}",
                    path.display()
                ),
                log: diag_log(&all),
            });
        }
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(m) = std::fs::metadata(&path) {
            let mode = m.permissions().mode();
            if mode & 0o111 == 0
                && std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode | 0o755))
                    .is_err()
            {
                return Err(Report {
                    error_code: 2,
                    script_name: s.location.clone(),
                    message: format!(
                        "Unable to set script at specified location: {} as executable",
                        s.location
                    ),
                    log: diag_log(&all),
                });
            }
        }
        let mut cmd = match &s.runas {
            Some(user) => {
                let mut c = tokio::process::Command::new("su");
                c.arg(user).arg("-c").arg(&path);
                c
            }
            None => tokio::process::Command::new(&path),
        };
        cmd.env("LIFECYCLE_EVENT", hook)
            .env("DEPLOYMENT_ID", &spec.deployment_id)
            .env("APPLICATION_NAME", &spec.application_name)
            .env("DEPLOYMENT_GROUP_NAME", &spec.deployment_group_name)
            .env("DEPLOYMENT_GROUP_ID", &spec.deployment_group_id)
            .current_dir(archive)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(s3) = &spec.revision.s3_revision {
            cmd.env("BUNDLE_BUCKET", &s3.bucket)
                .env("BUNDLE_KEY", &s3.key);
            if let Some(v) = &s3.version {
                cmd.env("BUNDLE_VERSION", v);
            }
            if let Some(e) = &s3.etag {
                cmd.env("BUNDLE_ETAG", e);
            }
        }
        let mut child = cmd.spawn().map_err(|e| Report {
            error_code: 4,
            script_name: s.location.clone(),
            message: format!(
                "Script at specified location: {} failed with error {e}",
                s.location
            ),
            log: diag_log(&all),
        })?;
        let pid = child.id();
        let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        let mut err = tokio::io::BufReader::new(child.stderr.take().expect("piped")).lines();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)
            .ok();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(s.timeout);
        let (mut out_done, mut err_done) = (false, false);
        let status = loop {
            let line = tokio::select! {
                l = out.next_line(), if !out_done => match l { Ok(Some(l)) => Some(format!("[stdout]{l}\n")), _ => { out_done = true; None } },
                l = err.next_line(), if !err_done => match l { Ok(Some(l)) => Some(format!("[stderr]{l}\n")), _ => { err_done = true; None } },
                st = child.wait(), if out_done && err_done => break st.ok(),
                _ = tokio::time::sleep_until(deadline) => {
                    if let Some(pid) = pid {
                        // The script's whole process group.
                        let _ = tokio::process::Command::new("kill").arg("-TERM").arg("--").arg(format!("-{pid}")).status().await;
                    }
                    let _ = child.kill().await;
                    return Err(Report { error_code: 3, script_name: s.location.clone(), message: format!("Script at specified location: {} failed to complete in {} seconds", s.location, s.timeout), log: diag_log(&all) });
                }
            };
            if let Some(l) = line {
                if let Some(f) = file.as_mut() {
                    use std::io::Write as _;
                    let _ = write!(f, "{} {l}", chrono_now());
                }
                all.push_str(&l);
            }
        };
        match status {
            Some(st) if st.success() => {}
            st => {
                let code = st.and_then(|s| s.code()).unwrap_or(-1);
                let runas = s
                    .runas
                    .as_ref()
                    .map(|u| format!(" run as user {u}"))
                    .unwrap_or_default();
                return Err(Report {
                    error_code: 4,
                    script_name: s.location.clone(),
                    message: format!(
                        "Script at specified location: {}{runas} failed with exit code {code}",
                        s.location
                    ),
                    log: diag_log(&all),
                });
            }
        }
    }
    Ok(diag_log(&all))
}

/// How long one health check command may run.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs one health check command (`sh -c`) in `cwd`: its output on success (exit 0).
async fn run_check(command: &str, cwd: &Path, spec: &Spec) -> Result<String, Report> {
    let report = |error_code, message: String, log: &str| Report {
        error_code,
        script_name: command.to_owned(),
        message,
        log: diag_log(log),
    };
    let child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("DEPLOYMENT_ID", &spec.deployment_id)
        .env("APPLICATION_NAME", &spec.application_name)
        .env("DEPLOYMENT_GROUP_NAME", &spec.deployment_group_name)
        .env("DEPLOYMENT_GROUP_ID", &spec.deployment_group_id)
        .current_dir(cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            report(
                4,
                format!("Health check {command} could not start: {e}"),
                "",
            )
        })?;
    let out = match tokio::time::timeout(CHECK_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(report(4, format!("Health check {command} failed: {e}"), "")),
        Err(_) => {
            return Err(report(
                3,
                format!(
                    "Health check {command} did not finish in {} seconds",
                    CHECK_TIMEOUT.as_secs()
                ),
                "",
            ))
        }
    };
    let mut log = format!("HealthCheck - {command}\n");
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        for l in String::from_utf8_lossy(bytes).lines() {
            log.push_str(&format!("[{stream}]{l}\n"));
        }
    }
    if out.status.success() {
        Ok(log)
    } else {
        let code = out.status.code().unwrap_or(-1);
        Err(report(
            4,
            format!("Health check {command} failed with exit code {code}"),
            &log,
        ))
    }
}

fn chrono_now() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{t}")
}

/// A script log as the diagnostics show it: whole, or its first and last lines with what
/// was left out between them marked.
fn diag_log(all: &str) -> String {
    if all.len() <= LOG_HEAD + LOG_TAIL {
        return all.to_owned();
    }
    let mut head = String::new();
    for l in all.split_inclusive('\n') {
        if head.len() + l.len() > LOG_HEAD {
            break;
        }
        head.push_str(l);
    }
    let mut tail: Vec<&str> = Vec::new();
    let mut n = 0;
    for l in all.split_inclusive('\n').rev() {
        if n + l.len() > LOG_TAIL {
            break;
        }
        n += l.len();
        tail.push(l);
    }
    tail.reverse();
    format!("{head}[… output left out …]\n{}", tail.concat())
}
