//! `slipway build`: runs a buildspec locally in a sandbox, without a server — phases and
//! log printed as they happen, artifacts copied to `./slipway-artifacts/` (CodeBuild's
//! local agent, in one command).

use anyhow::Context as _;
use slipway_codebuild::artifacts::{self, Picked};
use slipway_codebuild::buildspec::BuildSpec;
use slipway_codebuild::execute::{self, Hooks, Job};
use slipway_codebuild::reports::{self, Collected};
use slipway_codebuild::runner::{Progress, Report};
use slipway_codebuild::sandbox::{Limits, Runtime};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The buildspec to run (default: DIR/buildspec.yml).
    #[arg(long)]
    buildspec: Option<PathBuf>,
    /// An environment variable for the build, K=V (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// The container runtime: runc, crun, a path to one, or `host` (no isolation at all).
    #[arg(long, env = "SLIPWAY_RUNTIME")]
    runtime: Option<String>,
    /// The compute type whose memory and CPU limits apply.
    #[arg(long, default_value = "BUILD_GENERAL1_SMALL")]
    compute_type: String,
    /// Minutes before the build is stopped as TIMED_OUT.
    #[arg(long, default_value_t = 60)]
    timeout_minutes: u64,
    /// Where the artifacts go.
    #[arg(long, default_value = "slipway-artifacts")]
    artifacts: PathBuf,
    /// The source directory (mounted read-write, as CodeBuild's local agent does).
    #[arg(default_value = ".")]
    dir: PathBuf,
}

pub async fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let src = std::fs::canonicalize(&args.dir)
        .with_context(|| format!("source directory {}", args.dir.display()))?;
    let buildspec = match &args.buildspec {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let mut variables = Vec::new();
    for kv in &args.env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?}: expected K=V"))?;
        variables.push((k.to_owned(), v.to_owned()));
    }
    let scratch = std::env::temp_dir().join(format!("slipway-build-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch)?;
    let runtime = Runtime::detect(args.runtime.as_deref(), &scratch.join("runtime-state"))
        .await
        .map_err(anyhow::Error::msg)?;
    if let Runtime::Host = runtime {
        eprintln!("slipway: WARNING: the host executor runs the build as plain processes of this user, with no isolation at all");
    }
    let uuid = uuid::Uuid::new_v4();
    let job = Job {
        build_id: format!("local:{uuid}"),
        build_arn: format!("arn:aws:codebuild:local:000000000000:build/local:{uuid}"),
        build_number: 1,
        project: "local".into(),
        buildspec,
        buildspec_path: None,
        variables,
        secrets: Vec::new(),
        image: "aws/codebuild/standard:7.0".into(),
        region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
        initiator: std::env::var("USER").unwrap_or_else(|_| "local".into()),
        source_version: None,
        resolved_source_version: None,
        source_repo_url: None,
        secondary_sources: Vec::new(),
        images_dir: None,
        src_host: src.clone(),
        work: scratch.join("work"),
        hide: Vec::new(),
        limits: Limits::for_compute_type(&args.compute_type),
        privileged: false,
        timeout: Duration::from_secs(args.timeout_minutes.max(1) * 60),
    };
    let mut progress = Progress::new(
        Vec::new(),
        Box::new(|r| {
            if let Report::Log(text) = r {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(text.as_bytes());
            }
        }),
    );
    let (stop_tx, stop) = tokio::sync::watch::channel(None);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("slipway: stopping the build");
            let _ = stop_tx.send(Some(slipway_codebuild::session::StopReason::Stopped));
        }
    });
    let mut hooks = LocalHooks {
        dest: args.artifacts.clone(),
    };
    let done = execute::run(&runtime, &job, &mut hooks, &mut progress, stop).await;
    for (k, v) in &done.exported {
        println!("slipway: exported {k}={v}");
    }
    println!("slipway: build {} {}", job.build_id, done.status);
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(if done.status == "SUCCEEDED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Local mode: the source is the directory itself; artifacts are copied to `dest` (the
/// primary one at its top, each secondary one in a directory named by its identifier).
struct LocalHooks {
    dest: PathBuf,
}

impl Hooks for LocalHooks {
    async fn fetch_source(&mut self, _progress: &mut Progress) -> Result<Option<String>, String> {
        Ok(None)
    }

    async fn parameters(
        &mut self,
        wanted: &[(String, String)],
    ) -> Result<Vec<(String, String)>, String> {
        // No server here: the values come from this process's environment when set there.
        wanted
            .iter()
            .map(|(var, p)| {
                std::env::var(var)
                    .map(|v| (var.clone(), v))
                    .map_err(|_| format!("parameter {p} for {var}: local builds have no Parameter Store; set {var} in the environment"))
            })
            .collect()
    }

    /// Local builds keep no cache.
    async fn restore_cache(
        &mut self,
        _keys: &[String],
        _dest: &std::path::Path,
        _progress: &mut Progress,
    ) -> Result<Option<String>, String> {
        Ok(None)
    }

    async fn save_cache(
        &mut self,
        _key: &str,
        _file: &std::path::Path,
        progress: &mut Progress,
    ) -> Result<(), String> {
        progress.say("Local builds keep no cache");
        Ok(())
    }

    /// Local builds keep no reports: each is summed up in the log.
    async fn upload_reports(
        &mut self,
        reports: &[Collected],
        progress: &mut Progress,
    ) -> Result<(), String> {
        for r in reports {
            if r.format.is_test() {
                let count = |s: &str| r.tests.iter().filter(|t| t.status == s).count();
                progress.say(&format!(
                    "Report {}: {} test case(s): {} succeeded, {} failed, {} error(s), {} skipped",
                    r.name,
                    r.tests.len(),
                    count("SUCCEEDED"),
                    count("FAILED"),
                    count("ERROR"),
                    count("SKIPPED")
                ));
                for t in r
                    .tests
                    .iter()
                    .filter(|t| matches!(t.status, "FAILED" | "ERROR"))
                {
                    progress.say(&format!("  {} {}.{}", t.status, t.prefix, t.name));
                }
            } else {
                let (covered, missed) = r.coverage.iter().fold((0, 0), |(c, m), f| {
                    (c + f.lines_covered, m + f.lines_missed)
                });
                progress.say(&format!(
                    "Report {}: line coverage {}% over {} file(s)",
                    r.name,
                    reports::percent(covered, missed),
                    r.coverage.len()
                ));
            }
        }
        Ok(())
    }

    async fn upload_artifacts(
        &mut self,
        _spec: &BuildSpec,
        picked: &[(Option<String>, Picked)],
        progress: &mut Progress,
    ) -> Result<(), String> {
        let mut ids: Vec<&Option<String>> = Vec::new();
        for (id, _) in picked {
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        for id in ids {
            let files: Vec<Picked> = picked
                .iter()
                .filter(|(i, _)| i == id)
                .map(|(_, p)| p.clone())
                .collect();
            let target = match id {
                Some(id) => self.dest.join(id),
                None => self.dest.clone(),
            };
            artifacts::copy_to(&files, &target)
                .map_err(|e| format!("copying artifacts to {}: {e}", target.display()))?;
            progress.say(&format!(
                "{} artifact file(s) copied to {}",
                files.len(),
                target.display()
            ));
        }
        Ok(())
    }
}
