//! Runs a buildspec's phases in a sandbox's shell session, with CodeBuild's phase
//! transitions, `finally` blocks, `on-failure`, the build timeout and StopBuild, secret
//! masking in the log, and exported variables read back at the end.
//!
//! Phase transitions (AWS's "Build phase transitions"): a failure in PROVISIONING,
//! DOWNLOAD_SOURCE, INSTALL or PRE_BUILD goes to FINALIZING; in BUILD to POST_BUILD; in
//! POST_BUILD to UPLOAD_ARTIFACTS; in UPLOAD_ARTIFACTS to FINALIZING. `on-failure: CONTINUE`
//! goes on to the next phase as if it had succeeded (the phase and the build still fail).

use crate::buildspec::{BuildSpec, Command, OnFailure, Phase, Version};
use crate::cache;
use crate::sandbox::{Runtime, SandboxSpec};
use crate::session::{Outcome, Session, StopReason};
use std::time::SystemTime;
use tokio::sync::watch;

/// One phase as BatchGetBuilds reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseRecord {
    pub phase_type: String,
    /// None while the phase runs; then SUCCEEDED, FAILED, FAULT, TIMED_OUT, STOPPED.
    pub status: Option<String>,
    pub start: SystemTime,
    pub end: Option<SystemTime>,
    /// (statusCode, message).
    pub contexts: Vec<(String, String)>,
}

/// What a running build reports as it goes.
pub enum Report<'a> {
    /// Log lines, each ending with a newline (secrets already masked); owned when the
    /// build printed them, so a sink that keeps them takes them without a copy.
    Log(std::borrow::Cow<'a, str>),
    /// A phase began or ended.
    Phase(&'a PhaseRecord),
}

/// A budget of log bytes in flight between a build and where its log goes: the build's
/// output is read no faster than it is shipped (memory stays bounded however much a build
/// prints).
#[derive(Debug)]
pub struct Gate {
    queued: std::sync::atomic::AtomicUsize,
    limit: usize,
    notify: tokio::sync::Notify,
}

impl Gate {
    pub fn new(limit: usize) -> Gate {
        Gate {
            queued: std::sync::atomic::AtomicUsize::new(0),
            limit,
            notify: tokio::sync::Notify::new(),
        }
    }

    /// `n` more bytes are on their way.
    pub fn add(&self, n: usize) {
        self.queued
            .fetch_add(n, std::sync::atomic::Ordering::AcqRel);
    }

    /// `n` bytes have been shipped.
    pub fn done(&self, n: usize) {
        let _ = self.queued.fetch_update(
            std::sync::atomic::Ordering::AcqRel,
            std::sync::atomic::Ordering::Acquire,
            |q| Some(q.saturating_sub(n)),
        );
        self.notify.notify_waiters();
    }

    /// Waits while more than the budget is in flight.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.queued.load(std::sync::atomic::Ordering::Acquire) <= self.limit {
                return;
            }
            // Re-checked on every notice; a missed one is caught by the short timeout.
            let _ = tokio::time::timeout(std::time::Duration::from_millis(100), notified).await;
        }
    }
}

/// The phase list of a build, and where its changes go.
pub struct Progress {
    pub phases: Vec<PhaseRecord>,
    /// Backpressure from wherever the log goes (none: unbounded, e.g. a terminal).
    pub gate: Option<std::sync::Arc<Gate>>,
    sink: Box<dyn FnMut(Report<'_>) + Send>,
    secrets: Vec<String>,
}

impl Progress {
    pub fn new(secrets: Vec<String>, sink: Box<dyn FnMut(Report<'_>) + Send>) -> Progress {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| s.len() >= 3).collect();
        // Longest first, so a secret containing another is masked whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Progress {
            phases: Vec::new(),
            gate: None,
            sink,
            secrets,
        }
    }

    /// Masks `secret` in every later log line.
    pub fn add_secret(&mut self, secret: &str) {
        if secret.len() >= 3 && !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// Log text (whole lines, each ending with a newline), with every secret value
    /// replaced by `***`.
    pub fn log<'t>(&mut self, text: impl Into<std::borrow::Cow<'t, str>>) {
        let mut text = text.into();
        for s in &self.secrets {
            if text.contains(s.as_str()) {
                text = std::borrow::Cow::Owned(text.replace(s.as_str(), "***"));
            }
        }
        (self.sink)(Report::Log(text));
    }

    /// A line in CodeBuild's own voice: `[Container] 2026/11/22 05:40:00.123456 …`.
    pub fn say(&mut self, what: &str) {
        let now = time::OffsetDateTime::now_utc();
        let stamp = format!(
            "{:04}/{:02}/{:02} {:02}:{:02}:{:02}.{:06}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            now.microsecond()
        );
        self.log(format!("[Container] {stamp} {what}\n"));
    }

    pub fn begin(&mut self, phase_type: &str) {
        self.phases.push(PhaseRecord {
            phase_type: phase_type.to_owned(),
            status: None,
            start: SystemTime::now(),
            end: None,
            contexts: Vec::new(),
        });
        if let Some(p) = self.phases.last() {
            (self.sink)(Report::Phase(p));
        }
    }

    /// Ends the current phase with `status` and, for failures, a context.
    pub fn end(&mut self, status: &str, context: Option<(String, String)>) {
        let Some(p) = self.phases.last_mut() else {
            return;
        };
        p.status = Some(status.to_owned());
        p.end = Some(SystemTime::now());
        if let Some(c) = context {
            p.contexts.push(c);
        }
        let p = p.clone();
        (self.sink)(Report::Phase(&p));
    }

    /// Enters a build phase, saying so in the log.
    pub fn enter(&mut self, phase_type: &str) {
        self.say(&format!("Entering phase {phase_type}"));
        self.begin(phase_type);
    }

    /// Ends the current phase, saying so (and its context) in the log as CodeBuild does.
    pub fn complete(&mut self, status: &str, context: Option<(String, String)>) {
        let phase = self
            .phases
            .last()
            .map(|p| p.phase_type.clone())
            .unwrap_or_default();
        self.say(&format!("Phase complete: {phase} State: {status}"));
        let (code, message) = context.clone().unwrap_or_default();
        self.say(&format!(
            "Phase context status code: {code} Message: {message}"
        ));
        self.end(status, context);
    }

    /// A phase that begins and ends at once (SUBMITTED, QUEUED, COMPLETED…).
    pub fn instant(&mut self, phase_type: &str, status: Option<&str>) {
        self.begin(phase_type);
        if let Some(s) = status {
            self.end(s, None);
        }
    }
}

/// What the phases came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhasesResult {
    /// SUCCEEDED, FAILED, TIMED_OUT or STOPPED.
    pub status: String,
    /// Whether UPLOAD_ARTIFACTS comes next (by the transitions above).
    pub upload_artifacts: bool,
    pub exported: Vec<(String, String)>,
}

/// Runs INSTALL, PRE_BUILD, BUILD and POST_BUILD of `spec` in sandboxes from `runtime`.
/// `shell` is the shell inside the sandbox.
pub async fn run_phases(
    runtime: &Runtime,
    sandbox: &SandboxSpec,
    spec: &BuildSpec,
    shell: &str,
    progress: &mut Progress,
    stop: &mut watch::Receiver<Option<StopReason>>,
) -> PhasesResult {
    let mut session: Option<Session> = None;
    let mut failed = false;
    let mut upload_artifacts = true;
    let mut stopped = None;
    let cache_dir = match runtime {
        Runtime::Host => sandbox.work.join("cache").display().to_string(),
        Runtime::Oci { .. } => cache::CACHE_PATH.to_owned(),
    };
    if cache::restores(spec) && sandbox.work.join("cache/in.tar").is_file() {
        progress.say("Restoring the cache");
        housekeeping(
            runtime,
            sandbox,
            shell,
            &mut session,
            &cache::restore_script(&cache_dir),
            progress,
            stop,
        )
        .await;
    }
    for (phase_type, phase) in spec.phases.in_order() {
        progress.enter(phase_type);
        let empty = Phase::default();
        let phase = phase.unwrap_or(&empty);
        let result = run_phase(
            runtime,
            sandbox,
            spec,
            phase,
            shell,
            &mut session,
            progress,
            stop,
        )
        .await;
        let (phase_status, context) = match &result {
            PhaseEnd::Succeeded => ("SUCCEEDED", None),
            PhaseEnd::Failed(ctx) => ("FAILED", Some(ctx.clone())),
            PhaseEnd::Stopped(StopReason::TimedOut) => (
                "TIMED_OUT",
                Some((
                    "BUILD_TIMED_OUT".to_owned(),
                    "Build has timed out. ".to_owned(),
                )),
            ),
            PhaseEnd::Stopped(StopReason::Stopped) => (
                "STOPPED",
                Some(("BUILD_STOPPED".to_owned(), "Build was stopped. ".to_owned())),
            ),
        };
        progress.say(&format!(
            "Phase complete: {phase_type} State: {phase_status}"
        ));
        let (code, message) = context.clone().unwrap_or_default();
        progress.say(&format!(
            "Phase context status code: {code} Message: {message}"
        ));
        progress.end(phase_status, context);
        match result {
            PhaseEnd::Succeeded => {}
            PhaseEnd::Failed(_) => {
                failed = true;
                if let Some(s) = session.as_mut() {
                    // What post_build reads to tell (CODEBUILD_BUILD_SUCCEEDING).
                    let _ = s
                        .run(
                            "export CODEBUILD_BUILD_SUCCEEDING=0",
                            stop,
                            &mut |_| {},
                            None,
                        )
                        .await;
                }
                // INSTALL and PRE_BUILD failures go straight to FINALIZING unless the
                // phase says CONTINUE; BUILD's go on to POST_BUILD, POST_BUILD's to
                // UPLOAD_ARTIFACTS.
                let early = matches!(phase_type, "INSTALL" | "PRE_BUILD");
                if early && phase.on_failure != OnFailure::Continue {
                    upload_artifacts = false;
                    break;
                }
            }
            PhaseEnd::Stopped(reason) => {
                stopped = Some(reason);
                upload_artifacts = false;
                break;
            }
        }
    }
    let status = match stopped {
        Some(StopReason::TimedOut) => "TIMED_OUT",
        Some(StopReason::Stopped) => "STOPPED",
        None if failed => "FAILED",
        None => "SUCCEEDED",
    };
    let exported = match session.as_mut() {
        Some(s) if stopped.is_none() => read_exported(s, sandbox, spec, stop).await,
        _ => Vec::new(),
    };
    if status == "SUCCEEDED" && cache::saves(spec) {
        progress.say("Saving the cache");
        let roots = cache::roots(spec, &sandbox.src_path);
        housekeeping(
            runtime,
            sandbox,
            shell,
            &mut session,
            &cache::save_script(&roots, &cache_dir),
            progress,
            stop,
        )
        .await;
    }
    if let Some(s) = session {
        s.close().await;
    }
    PhasesResult {
        status: status.to_owned(),
        upload_artifacts,
        exported,
    }
}

/// The build's shell, started if there is none yet.
async fn open_shell<'a>(
    runtime: &Runtime,
    sandbox: &SandboxSpec,
    shell: &str,
    session: &'a mut Option<Session>,
) -> std::io::Result<&'a mut Session> {
    if session.is_none() {
        *session = Some(Session::start(runtime, sandbox, shell).await?);
    }
    session
        .as_mut()
        .ok_or_else(|| std::io::Error::other("no shell"))
}

/// Runs `text` in the shell, its output into the log (under the log's budget).
async fn run_logged(
    s: &mut Session,
    text: &str,
    stop: &mut watch::Receiver<Option<StopReason>>,
    progress: &mut Progress,
) -> Outcome {
    let gate = progress.gate.clone();
    s.run(
        text,
        stop,
        &mut |t: String| progress.log(t),
        gate.as_deref(),
    )
    .await
}

/// Runs one of Slipway's own scripts (cache restore and save) in the build's shell, its
/// output in the log; a failure is reported there and changes nothing else.
async fn housekeeping(
    runtime: &Runtime,
    sandbox: &SandboxSpec,
    shell: &str,
    session: &mut Option<Session>,
    script: &str,
    progress: &mut Progress,
    stop: &mut watch::Receiver<Option<StopReason>>,
) {
    let s = match open_shell(runtime, sandbox, shell, session).await {
        Ok(s) => s,
        Err(e) => {
            progress.say(&format!("could not start the build's shell: {e}"));
            return;
        }
    };
    match run_logged(s, script, stop, progress).await {
        Outcome::Exit { status: 0, .. } => {}
        Outcome::Exit { status, .. } => progress.say(&format!(
            "cache step failed (exit status {status}); the build goes on"
        )),
        Outcome::SessionEnded { .. } => {
            if let Some(s) = session.take() {
                s.close().await;
            }
        }
        Outcome::Stopped(_) => {}
    }
}

enum PhaseEnd {
    Succeeded,
    /// (statusCode, message)
    Failed((String, String)),
    Stopped(StopReason),
}

#[allow(clippy::too_many_arguments)]
async fn run_phase(
    runtime: &Runtime,
    sandbox: &SandboxSpec,
    spec: &BuildSpec,
    phase: &Phase,
    shell: &str,
    session: &mut Option<Session>,
    progress: &mut Progress,
    stop: &mut watch::Receiver<Option<StopReason>>,
) -> PhaseEnd {
    let run_as = phase.run_as.as_deref().or(spec.run_as.as_deref());
    let mut failure = None;
    // The commands stop at the first failure; `finally` runs whether or not they failed,
    // and its own first failure counts when the commands succeeded.
    for list in [&phase.commands, &phase.finally] {
        for c in list {
            match run_command(
                runtime, sandbox, spec, c, run_as, shell, session, progress, stop,
            )
            .await
            {
                Ok(()) => {}
                Err(PhaseEnd::Stopped(r)) => return PhaseEnd::Stopped(r),
                Err(e) => {
                    failure.get_or_insert(e);
                    break;
                }
            }
        }
    }
    failure.unwrap_or(PhaseEnd::Succeeded)
}

#[allow(clippy::too_many_arguments)]
async fn run_command(
    runtime: &Runtime,
    sandbox: &SandboxSpec,
    spec: &BuildSpec,
    command: &Command,
    run_as: Option<&str>,
    shell: &str,
    session: &mut Option<Session>,
    progress: &mut Progress,
    stop: &mut watch::Receiver<Option<StopReason>>,
) -> Result<(), PhaseEnd> {
    // Version 0.1: every command in a fresh shell.
    if spec.version == Version::V01 {
        if let Some(s) = session.take() {
            s.close().await;
        }
    }
    let s = open_shell(runtime, sandbox, shell, session)
        .await
        .map_err(|e| {
            PhaseEnd::Failed((
                "CLIENT_ERROR".into(),
                format!("could not start the build's shell: {e}"),
            ))
        })?;
    progress.say(&format!("Running command {}", command.text));
    let text = match run_as {
        Some(user) if user != "root" => format!(
            "runuser -u {} -- {shell} -c {}",
            shell_quote(user),
            shell_quote(&command.text)
        ),
        _ => command.text.clone(),
    };
    let outcome = run_logged(s, &text, stop, progress).await;
    match outcome {
        Outcome::Exit { status: 0, .. } => Ok(()),
        Outcome::Exit { status, oom: false } => Err(command_failed(
            &command.text,
            &format!("exit status {status}"),
        )),
        Outcome::Exit { oom: true, .. } | Outcome::SessionEnded { oom: true, .. } => Err(PhaseEnd::Failed((
            "OUT_OF_MEMORY".into(),
            format!(
                "Error while executing command: {}. Reason: the build ran out of memory ({} MB) and was killed",
                command.text,
                sandbox.limits.memory_bytes / (1024 * 1024)
            ),
        ))),
        Outcome::SessionEnded { status, .. } => {
            // The shell ended (an `exit` in the command): a new one serves what follows.
            if let Some(s) = session.take() {
                s.close().await;
            }
            let code = status.map_or("the shell ended".into(), |c| format!("exit status {c}"));
            if status == Some(0) {
                Ok(())
            } else {
                Err(command_failed(&command.text, &code))
            }
        }
        Outcome::Stopped(r) => Err(PhaseEnd::Stopped(r)),
    }
}

fn command_failed(command: &str, reason: &str) -> PhaseEnd {
    PhaseEnd::Failed((
        "COMMAND_EXECUTION_ERROR".into(),
        format!("Error while executing command: {command}. Reason: {reason}"),
    ))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Reads the exported variables' final values from the shell.
async fn read_exported(
    s: &mut Session,
    sandbox: &SandboxSpec,
    spec: &BuildSpec,
    stop: &mut watch::Receiver<Option<StopReason>>,
) -> Vec<(String, String)> {
    let names: Vec<&String> = spec
        .env
        .exported_variables
        .iter()
        .filter(|n| {
            !n.is_empty()
                && !n.starts_with(|c: char| c.is_ascii_digit())
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let file = format!("{}/exported", s.output_path());
    let mut script = format!(": > {file}\n");
    for n in &names {
        script.push_str(&format!("printf '%s\\0' \"${{{n}-}}\" >> {file}\n"));
    }
    if !matches!(
        s.run(&script, stop, &mut |_| {}, None).await,
        Outcome::Exit { status: 0, .. }
    ) {
        return Vec::new();
    }
    let data = std::fs::read(sandbox.output_dir().join("exported")).unwrap_or_default();
    let values: Vec<String> = data
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    names
        .into_iter()
        .zip(values)
        .map(|(n, v)| (n.clone(), v))
        .collect()
}
