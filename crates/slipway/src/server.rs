//! `slipway server`: opens the data directory, wires the services and serves until signalled.

use anyhow::{bail, Context, Result};
use clap::Args;
use slipway_api::AppState;
use slipway_codecommit::{CodeCommit, Config};
use slipway_iam::crypto::MasterKey;
use slipway_iam::{Iam, RootCredentials};
use slipway_ssm::ParameterStore;
use slipway_store::Store;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// Where state, repositories and keys live.
    #[arg(long, env = "SLIPWAY_DATA_DIR", default_value = "./slipway-data")]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SLIPWAY_LISTEN", default_value = "127.0.0.1:4566")]
    pub listen: String,
    /// The default region: where the built-in worker and agent, `slipway build` and the
    /// console's first page act, and what data from before regions belongs to. Requests
    /// are served in the region they are signed for.
    #[arg(long, env = "SLIPWAY_REGION", default_value = "us-east-1")]
    pub region: String,
    /// AWS account id reported in ARNs.
    #[arg(long, env = "SLIPWAY_ACCOUNT_ID", default_value = "000000000000")]
    pub account_id: String,
    /// Base URL clients reach this server at (default: http://LISTEN-ADDRESS).
    #[arg(long, env = "SLIPWAY_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// How many git processes may serve clones and pushes at once (others wait).
    #[arg(long, env = "SLIPWAY_MAX_GIT_PROCESSES", default_value_t = 64)]
    pub max_git_processes: usize,
    /// Seconds a client may take to send request headers before the connection is closed.
    #[arg(long, env = "SLIPWAY_HEADER_READ_TIMEOUT_SECS", default_value_t = 30)]
    pub header_read_timeout_secs: u64,
    /// Seconds a CodeDeploy host may go without a word from its agent about a lifecycle
    /// event (or without taking one) before the host fails.
    #[arg(long, env = "SLIPWAY_AGENT_TIMEOUT_SECS", default_value_t = 300)]
    pub agent_timeout_secs: u64,
    /// The on-premises instance name of the server's built-in CodeDeploy agent, registered
    /// in the default region (tag it to put the server in a deployment group); empty: no
    /// built-in agent.
    #[arg(long, env = "SLIPWAY_BUILTIN_AGENT", default_value = "slipway-server")]
    pub builtin_agent: String,
    /// A JSON file naming the load balancers CodeDeploy moves traffic on, by target group:
    /// `{"web": {"kind": "nginx", "config": "/etc/nginx/conf.d/web.conf", "check": ["nginx",
    /// "-t"], "reload": ["nginx", "-s", "reload"]}}` (see README).
    #[arg(long, env = "SLIPWAY_LOAD_BALANCERS")]
    pub load_balancers: Option<PathBuf>,
    /// Builds the built-in worker runs at once (0: no built-in worker; builds wait for a
    /// `slipway worker`).
    #[arg(long, env = "SLIPWAY_BUILD_SLOTS", default_value_t = 2)]
    pub builtin_worker_slots: usize,
    /// The container runtime for builds: runc, crun, a path to one, or `host` (no
    /// isolation at all).
    #[arg(long, env = "SLIPWAY_RUNTIME")]
    pub runtime: Option<String>,
    /// Where object and artifact bytes live: `file:///dir` or `s3://bucket/prefix` (an
    /// S3-compatible store; see SLIPWAY_BLOB_ENDPOINT and friends). Default: DATA_DIR/blobs.
    #[arg(long, env = "SLIPWAY_BLOB_URL")]
    pub blob_url: Option<String>,
    /// The git executable (2.28 or newer).
    #[arg(long, env = "SLIPWAY_GIT", default_value = "git")]
    pub git: PathBuf,
}

/// Finds git and checks it is new enough for the `reference-transaction` hook.
pub fn find_git(git: &Path) -> Result<PathBuf> {
    let out = std::process::Command::new(git)
        .arg("--version")
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (install git 2.28 or newer, or set SLIPWAY_GIT)",
                git.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version: Vec<u32> = text
        .split_whitespace()
        .nth(2)
        .unwrap_or("")
        .split('.')
        .take(2)
        .filter_map(|p| p.parse().ok())
        .collect();
    if version.len() < 2 || (version[0], version[1]) < (2, 28) {
        bail!(
            "{} reports '{}'; Slipway needs git 2.28 or newer",
            git.display(),
            text.trim()
        );
    }
    Ok(git.to_path_buf())
}

/// Opens everything a server or admin command needs from the data directory.
/// The server creates root credentials on first start; admin commands never do.
pub async fn open_data_dir(
    data_dir: &Path,
    account_id: &str,
    region: &str,
    create_root: bool,
) -> Result<(Store, Iam, MasterKey)> {
    if !slipway_regions::is_known(region) {
        bail!("'{region}' is not an AWS region name (set --region or SLIPWAY_REGION to one, such as us-east-1)");
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data_dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", data_dir.display()))?;
    }
    let store = Store::open(data_dir, region)
        .await
        .context("opening the database")?;
    let key = MasterKey::load_or_create(data_dir).context("loading the master key")?;
    let (root, created) = if create_root {
        RootCredentials::load_or_create(data_dir).context("loading root credentials")?
    } else {
        (
            RootCredentials::load(data_dir).unwrap_or_else(RootCredentials::disabled),
            false,
        )
    };
    let iam = Iam::new(
        store.clone(),
        key.clone(),
        root.clone(),
        account_id.to_owned(),
    );
    if created {
        // Printed once, on the terminal of whoever started the server; never logged.
        println!(
            "Generated root credentials (also in {}):\n  aws_access_key_id = {}\n  aws_secret_access_key = {}",
            data_dir.join("root-credentials").display(),
            root.access_key_id,
            root.secret_access_key
        );
    }
    Ok((store, iam, key))
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is called (before the
/// server says it is listening), so an early signal is never lost to the default action.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    async move {
        let (mut term, mut int) = match (term, int) {
            (Ok(t), Ok(i)) => (t, i),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM/SIGINT");
                return std::future::pending().await;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; finishing requests in flight"),
            _ = int.recv() => tracing::info!("SIGINT received; finishing requests in flight"),
        }
    }
}

/// Starts the built-in build worker, which sends this server's routes the same signed
/// requests as any other worker (with the root credentials), in process (`api`); git
/// sources it fetches over HTTP from the listener at `addr`.
async fn start_builds(
    args: &ServerArgs,
    addr: &std::net::SocketAddr,
    api: slipway_api::InProcess,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    Option<slipway_codebuild::sandbox::Runtime>,
) {
    let mut tasks = Vec::new();

    if args.builtin_worker_slots == 0 {
        return (tasks, None);
    }
    let Ok(data_dir) = std::fs::canonicalize(&args.data_dir) else {
        return (tasks, None);
    };
    let runtime = match slipway_codebuild::sandbox::Runtime::detect(
        args.runtime.as_deref(),
        &data_dir.join("runtime-state"),
    )
    .await
    {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(%why, "the built-in build worker is off: builds wait in the queue for a `slipway worker`");
            return (tasks, None);
        }
    };
    if let slipway_codebuild::sandbox::Runtime::Host = runtime {
        tracing::warn!("builds run on the host executor: plain processes with NO isolation");
    }
    let leftovers = runtime.cleanup_all().await;
    if leftovers > 0 {
        tracing::warn!(
            sandboxes = leftovers,
            "removed build sandboxes a previous run left behind"
        );
    }
    let Some(root) = RootCredentials::load(&args.data_dir) else {
        tracing::warn!("the built-in build worker is off: no root credentials");
        return (tasks, None);
    };
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let client = std::sync::Arc::new(crate::worker::Client::in_process(
        api,
        &format!("http://{host}"),
        &root.access_key_id,
        &root.secret_access_key,
        &args.region,
    ));
    let work_root = data_dir.join("builds");
    let _ = std::fs::remove_dir_all(&work_root);
    let cfg = crate::worker::WorkerConfig {
        id: "builtin".into(),
        runtime,
        work_root,
        images: data_dir.join("images"),
        hide: vec![data_dir],
        slots: args.builtin_worker_slots,
    };
    let runtime = cfg.runtime.clone();
    tasks.push(tokio::spawn(crate::worker::serve(client, cfg, stop)));
    (tasks, Some(runtime))
}

/// CodeDeploy's health checks (alarms named by URL): a GET answered 2xx or 3xx within two
/// seconds is healthy.
fn health_probe() -> slipway_codedeploy::Probe {
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap_or_default();
    Arc::new(move |url: String| {
        let http = http.clone();
        Box::pin(async move {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() || r.status().is_redirection() => Ok(()),
                Ok(_) => Err(true),
                Err(_) => Err(false),
            }
        })
    })
}

/// The built-in CodeDeploy agent: registered as an on-premises instance of the default
/// region with the account root's ARN as its host, polling this server over loopback (its
/// bundles come through the S3 API like any agent's) with the root credentials.
async fn start_agent(
    args: &ServerArgs,
    addr: &std::net::SocketAddr,
    codedeploy: &slipway_codedeploy::CodeDeploy,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    if args.builtin_agent.is_empty() {
        return None;
    }
    let Some(root) = RootCredentials::load(&args.data_dir) else {
        tracing::warn!("the built-in CodeDeploy agent is off: no root credentials");
        return None;
    };
    let host_arn = format!("arn:aws:iam::{}:root", args.account_id);
    if let Err(e) = codedeploy
        .register_builtin(&args.builtin_agent, &host_arn)
        .await
    {
        tracing::warn!(error = %e, "the built-in CodeDeploy agent is off: registering it failed");
        return None;
    }
    let host = if addr.ip().is_unspecified() {
        format!("127.0.0.1:{}", addr.port())
    } else {
        addr.to_string()
    };
    let api = match crate::aws::Api::new(
        &format!("http://{host}"),
        root.access_key_id.clone(),
        root.secret_access_key.clone(),
        args.region.clone(),
    ) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "the built-in CodeDeploy agent is off");
            return None;
        }
    };
    let agent = match crate::agent::Agent::new(
        api,
        host_arn,
        &args.data_dir.join("agent"),
        std::time::Duration::from_secs(10),
    ) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "the built-in CodeDeploy agent is off");
            return None;
        }
    };
    Some(tokio::spawn(async move {
        let mut stop = stop;
        agent
            .serve(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    }))
}

/// Every few seconds, fails the builds whose worker stopped reporting — after killing their
/// sandbox, when it is one of the built-in worker's (a server killed mid-build leaves its
/// builds' sandboxes running; they must be gone before the build reads as ended).
fn sweep_leases(
    builds: slipway_codebuild::service::CodeBuild,
    runtime: Option<slipway_codebuild::sandbox::Runtime>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            // One cutoff for both steps: a lease running out between them is left to the
            // next sweep rather than failed with its sandbox still running.
            let cutoff = slipway_store::now();
            match builds.expired(cutoff).await {
                Ok(ids) => {
                    if let Some(rt) = &runtime {
                        for id in &ids {
                            rt.remove(&slipway_codebuild::execute::sandbox_id(id)).await;
                        }
                    }
                    match builds.expire_leases(cutoff).await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(
                            builds = n,
                            "failed builds whose worker stopped reporting"
                        ),
                        Err(e) => tracing::error!(error = %e, "expiring build leases"),
                    }
                }
                Err(e) => tracing::error!(error = %e, "listing expired build leases"),
            }
            // Finished builds' logs move from the database into the blob store.
            if let Err(e) = builds.archive_pending().await {
                tracing::error!(error = %e, "archiving build logs");
            }
        }
    })
}

pub async fn run(args: ServerArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let git = find_git(&args.git)?;
    let (store, iam, key) =
        open_data_dir(&args.data_dir, &args.account_id, &args.region, true).await?;
    let blob_url = args
        .blob_url
        .clone()
        .unwrap_or_else(|| args.data_dir.join("blobs").display().to_string());
    let blobs = slipway_blobs::BlobStore::from_url(&blob_url, key.clone())
        .with_context(|| format!("opening the blob store {blob_url}"))?;
    let s3 = slipway_s3::S3Store::new(store.clone(), blobs.clone(), &args.region, &args.account_id);
    // Blobs a previous run queued for deletion but did not get to.
    s3.purge_trash().await;
    let codebuild = slipway_codebuild::service::CodeBuild::new(
        store.clone(),
        blobs,
        key.clone(),
        &args.region,
        &args.account_id,
    );
    let ssm = ParameterStore::new(
        store.clone(),
        key.clone(),
        args.region.clone(),
        args.account_id.clone(),
    );
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    let public_url = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    let codecommit = CodeCommit::new(
        store.clone(),
        Config {
            data_dir,
            git_bin: git,
            account_id: args.account_id.clone(),
            region: args.region.clone(),
            public_url: public_url.clone(),
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let missed = codecommit
        .reconcile()
        .await
        .map_err(|e| anyhow::anyhow!("reconciling refs: {e}"))?;
    if missed > 0 {
        tracing::warn!(missed, "recorded ref changes that a previous run had not");
    }
    let codedeploy = slipway_codedeploy::CodeDeploy::new(
        store.clone(),
        slipway_codedeploy::Config {
            account_id: args.account_id.clone(),
            default_region: args.region.clone(),
            agent_timeout: std::time::Duration::from_secs(args.agent_timeout_secs.max(1)),
            probe: Some(health_probe()),
            traffic: match &args.load_balancers {
                Some(p) => slipway_codedeploy::traffic::Traffic::from_file(p)
                    .map_err(|e| anyhow::anyhow!(e))?,
                None => Default::default(),
            },
        },
        s3.clone(),
    );
    // A pipeline's builds go through the API layer's CodeBuild, which needs the state.
    let pipeline_builds = Arc::new(slipway_api::codepipeline_api::PipelineBuilds {
        state: std::sync::OnceLock::new(),
    });
    let codepipeline = slipway_codepipeline::CodePipeline::new(
        store.clone(),
        slipway_codepipeline::Config {
            account_id: args.account_id.clone(),
            default_region: args.region.clone(),
            work_dir: std::fs::canonicalize(&args.data_dir)?.join("pipeline-work"),
            public_url: public_url.clone(),
            key: key.clone(),
        },
        s3.clone(),
        codecommit.clone(),
        pipeline_builds.clone(),
        Some(codedeploy.clone()),
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let state = Arc::new(AppState {
        store: store.clone(),
        signins: Default::default(),
        iam,
        codecommit,
        ssm,
        s3,
        codebuild,
        codepipeline: codepipeline.clone(),
        codedeploy: codedeploy.clone(),
        region: args.region.clone(),
        account_id: args.account_id.clone(),
        max_json_body: slipway_api::MAX_JSON_BODY,
        git_slots: Arc::new(tokio::sync::Semaphore::new(args.max_git_processes.max(1))),
        header_read_timeout: std::time::Duration::from_secs(args.header_read_timeout_secs.max(1)),
    });
    let _ = pipeline_builds.state.set(Arc::downgrade(&state));
    let (stop_pipelines, pipelines_stop) = tokio::sync::watch::channel(false);
    let pipelines = tokio::spawn(codepipeline.run(async move {
        let mut rx = pipelines_stop;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    let (stop_deploys, deploys_stop) = tokio::sync::watch::channel(false);
    let deploys_stop_agent = deploys_stop.clone();
    let deploys = tokio::spawn(codedeploy.clone().run(async move {
        let mut rx = deploys_stop;
        let _ = rx.wait_for(|stop| *stop).await;
    }));
    let builtin_agent = start_agent(&args, &addr, &codedeploy, deploys_stop_agent).await;
    let builds = state.codebuild.clone();
    let (stop_worker, worker_stop) = tokio::sync::watch::channel(false);
    let in_process = slipway_api::InProcess::new(state.clone());
    let (mut workers, runtime) = start_builds(&args, &addr, in_process.clone(), worker_stop).await;
    workers.push(sweep_leases(builds, runtime.clone()));
    tracing::info!(%addr, %public_url, blobs = %blob_url, region = %args.region, account = %args.account_id, startup_ms = started.elapsed().as_millis() as u64, "listening");
    let closing = state.codebuild.clone();
    let closing_deploys = state.codedeploy.clone();
    let stop_builds = stop_worker.clone();
    // Signal handlers are installed here, before "listening" is printed.
    let signalled = shutdown_signal();
    let shutdown = async move {
        signalled.await;
        // Long-polling workers are answered at once and the built-in one stops leasing,
        // so draining the connections does not wait for a poll to time out.
        closing.close();
        closing_deploys.close();
        let _ = stop_builds.send(true);
    };
    println!("Slipway listening on http://{addr}");
    slipway_api::serve(listener, state, shutdown).await?;
    let _ = stop_worker.send(true);
    let _ = stop_pipelines.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), pipelines).await;
    let _ = stop_deploys.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), deploys).await;
    if let Some(a) = builtin_agent {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), a).await;
    }
    for w in workers {
        w.abort();
    }
    // The built-in worker's requests in flight end before the database closes (long polls
    // were answered by `close`; a handler stuck longer is left behind).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), in_process.drain()).await;
    // Builds still running end with the server: their sandboxes are killed, and their
    // leases expire (the builds end FAILED) once a server runs again.
    if let Some(rt) = runtime {
        let n = rt.cleanup_all().await;
        if n > 0 {
            tracing::warn!(
                sandboxes = n,
                "killed the sandboxes of builds still running"
            );
        }
    }
    store.pool().close().await;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
