//! The `slipway` binary: command-line interface, configuration and wiring (kept thin).

mod admin;
mod agent;
mod aws;
mod build;
mod deploy;
mod pipeline;
mod registry;
mod server;
mod worker;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "slipway",
    version,
    about = "Self-hosted CodeCommit, CodePipeline, CodeBuild and CodeDeploy that speak AWS's APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: every API, git over HTTP and the console on one port.
    Server(server::ServerArgs),
    /// Administer users, keys, policies and credentials (mirrors `aws iam`).
    Admin(admin::AdminArgs),
    /// Run a build worker that takes builds from a server.
    Worker(worker::WorkerArgs),
    /// Run a CodeDeploy host agent: polls a server and deploys revisions to this host.
    Agent(agent::AgentArgs),
    /// Run a buildspec locally in a sandbox, without a server.
    Build(build::BuildArgs),
    /// Follow pipelines on a server (`slipway pipeline watch NAME`).
    Pipeline(pipeline::PipelineArgs),
    /// Follow CodeDeploy deployments on a server (`slipway deploy watch ID`).
    Deploy(deploy::DeployArgs),
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter =
        // s3s logs every client error (a missing key, a bad signature) at ERROR; Slipway logs
        // what matters itself, so s3s stays quiet unless SLIPWAY_LOG asks for it.
        EnvFilter::try_from_env("SLIPWAY_LOG")
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,s3s=off"));
    // Colours only for a terminal: logs redirected to files or collectors stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if std::env::var("SLIPWAY_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    // An agent waits on the network almost all the time: one thread is enough, and an idle
    // host keeps less memory for it.
    let builder = match cli.command {
        Command::Agent(_) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    let mut builder = builder;
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("slipway: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Build(args) => build::run(args).await,
            Command::Worker(args) => worker::run(args).await,
            Command::Pipeline(args) => pipeline::run(args).await,
            Command::Deploy(args) => deploy::run(args).await,
            Command::Agent(args) => agent::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("slipway: {e:#}");
            ExitCode::FAILURE
        }
    }
}
