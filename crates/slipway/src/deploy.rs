//! `slipway deploy watch ID`: a live view of a CodeDeploy deployment for a person at a
//! terminal — host by host, batch by batch, each host's current lifecycle event and the
//! failing script's last lines — read with the same signed API calls the aws-cli makes.

use crate::aws::Api;
use crate::pipeline::{duration, mark, redraw};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Args)]
pub struct DeployArgs {
    #[command(subcommand)]
    command: DeployCommand,
}

#[derive(Subcommand)]
enum DeployCommand {
    /// Follow a deployment until it ends; exits 0 when it succeeds, 1 otherwise.
    Watch {
        /// The deployment id (d-…).
        id: String,
        /// The server (default: AWS_ENDPOINT_URL, else http://127.0.0.1:4566).
        #[arg(
            long,
            env = "AWS_ENDPOINT_URL",
            default_value = "http://127.0.0.1:4566"
        )]
        endpoint_url: String,
    },
}

const TARGET: &str = "CodeDeploy_20141006";

/// The hosts in the order they were deployed to, each with its batch: a host starts a new
/// batch when it started after an earlier host of the current batch had ended.
fn batches(hosts: &mut [Value]) -> Vec<usize> {
    let first = |h: &Value| {
        h["lifecycleEvents"].as_array().and_then(|e| {
            e.iter()
                .filter_map(|e| e["startTime"].as_f64())
                .reduce(f64::min)
        })
    };
    let last = |h: &Value| {
        h["lifecycleEvents"].as_array().and_then(|e| {
            e.iter()
                .filter_map(|e| e["endTime"].as_f64())
                .reduce(f64::max)
        })
    };
    hosts.sort_by(|a, b| {
        first(a)
            .unwrap_or(f64::MAX)
            .total_cmp(&first(b).unwrap_or(f64::MAX))
    });
    let spans: Vec<(Option<f64>, Option<f64>, bool)> = hosts
        .iter()
        .map(|h| (first(h), last(h), h["status"] == "InProgress"))
        .collect();
    slipway_codedeploy::orchestrator::batch_numbers(&spans)
}

async fn picture(api: &Api, id: &str) -> anyhow::Result<(Vec<String>, String)> {
    let d = api
        .call(
            "codedeploy",
            &format!("{TARGET}.GetDeployment"),
            json!({"deploymentId": id}),
        )
        .await?;
    let info = &d["deploymentInfo"];
    let status = info["status"].as_str().unwrap_or_default().to_owned();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let end = info["completeTime"].as_f64().unwrap_or(now);
    let mut lines = vec![format!(
        "{} deployment {id}  {}/{}  {status}  {}  {}",
        mark(&status),
        info["applicationName"].as_str().unwrap_or_default(),
        info["deploymentGroupName"].as_str().unwrap_or_default(),
        info["deploymentConfigName"].as_str().unwrap_or_default(),
        duration(info["createTime"].as_f64(), end),
    )];
    if let Some(m) = info["errorInformation"]["message"].as_str() {
        lines.push(format!(
            "  {}: {m}",
            info["errorInformation"]["code"]
                .as_str()
                .unwrap_or_default()
        ));
    }
    if let Some(rb) = info["rollbackInfo"]["rollbackDeploymentId"].as_str() {
        lines.push(format!("  rolled back by {rb}"));
    }
    let ids = api
        .call(
            "codedeploy",
            &format!("{TARGET}.ListDeploymentInstances"),
            json!({"deploymentId": id}),
        )
        .await?;
    let ids: Vec<Value> = ids["instancesList"].as_array().cloned().unwrap_or_default();
    let mut hosts = Vec::new();
    for chunk in ids.chunks(100) {
        let got = api
            .call(
                "codedeploy",
                &format!("{TARGET}.BatchGetDeploymentInstances"),
                json!({"deploymentId": id, "instanceIds": chunk}),
            )
            .await?;
        hosts.extend(
            got["instancesSummary"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    let numbers = batches(&mut hosts);
    let mut shown_batch = usize::MAX;
    let mut failure = None;
    for (h, b) in hosts.iter().zip(numbers) {
        if b != shown_batch {
            lines.push(if b == 0 {
                "  not started".into()
            } else {
                format!("  batch {b}")
            });
            shown_batch = b;
        }
        let hstatus = h["status"].as_str().unwrap_or_default();
        let name = h["instanceId"].as_str().unwrap_or_default();
        let name = name.rsplit_once("instance/").map_or(name, |(_, n)| n);
        let events = h["lifecycleEvents"].as_array().cloned().unwrap_or_default();
        let current = events
            .iter()
            .find(|e| e["status"] == "InProgress")
            .or_else(|| events.iter().find(|e| e["status"] == "Failed"))
            .and_then(|e| e["lifecycleEventName"].as_str())
            .unwrap_or_default();
        let started = events
            .iter()
            .filter_map(|e| e["startTime"].as_f64())
            .reduce(f64::min);
        let ended = if hstatus == "InProgress" {
            now
        } else {
            events
                .iter()
                .filter_map(|e| e["endTime"].as_f64())
                .reduce(f64::max)
                .unwrap_or(now)
        };
        lines.push(format!(
            "    {} {name}  {hstatus}  {current}  {}",
            mark(hstatus),
            duration(started, ended)
        ));
        if hstatus == "Failed" && failure.is_none() {
            failure = events
                .iter()
                .find(|e| e["status"] == "Failed")
                .cloned()
                .map(|e| (name.to_owned(), e));
        }
    }
    if let Some((host, e)) = failure {
        let diag = &e["diagnostics"];
        lines.push(format!(
            "  {host} {}: {}",
            e["lifecycleEventName"].as_str().unwrap_or_default(),
            diag["message"].as_str().unwrap_or_default()
        ));
        for l in diag["logTail"]
            .as_str()
            .unwrap_or_default()
            .lines()
            .rev()
            .take(10)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            lines.push(format!("    | {l}"));
        }
    }
    Ok((lines, status))
}

pub async fn run(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let DeployCommand::Watch { id, endpoint_url } = args.command;
    let api = Api::from_env(&endpoint_url)?;
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut shown = Vec::new();
    loop {
        let (lines, status) = picture(&api, &id).await?;
        redraw(&mut shown, lines, terminal);
        if matches!(status.as_str(), "Succeeded" | "Failed" | "Stopped") {
            return Ok(if status == "Succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
