//! `slipway pipeline watch NAME`: a live view of a pipeline's execution for a person at a
//! terminal — stages, actions, durations, and the failing build's last log lines — read
//! with the same signed API calls the aws-cli makes.

use crate::aws::Api;
use anyhow::bail;
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

#[derive(Args)]
pub struct PipelineArgs {
    #[command(subcommand)]
    command: PipelineCommand,
}

#[derive(Subcommand)]
enum PipelineCommand {
    /// Follow an execution (the latest, or --execution-id) until it ends; exits 0 when it
    /// succeeds, 1 otherwise.
    Watch {
        /// The pipeline.
        name: String,
        #[arg(long)]
        execution_id: Option<String>,
        /// The server (default: AWS_ENDPOINT_URL, else http://127.0.0.1:4566).
        #[arg(
            long,
            env = "AWS_ENDPOINT_URL",
            default_value = "http://127.0.0.1:4566"
        )]
        endpoint_url: String,
        /// Log lines of a failed build to show.
        #[arg(long, default_value_t = 20)]
        log_lines: usize,
    },
}

pub(crate) fn duration(from: Option<f64>, to: f64) -> String {
    let Some(from) = from else {
        return String::new();
    };
    let s = (to - from).max(0.0);
    if s < 60.0 {
        format!("{s:.0}s")
    } else {
        format!("{}m{:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    }
}

pub(crate) fn mark(status: &str) -> &'static str {
    match status {
        "Succeeded" => "✓",
        "Failed" => "✗",
        "InProgress" => "…",
        "Stopped" | "Stopping" | "Abandoned" | "Superseded" | "Cancelled" => "■",
        _ => " ",
    }
}

/// One picture of the execution: the lines to print, and its status.
async fn picture(
    api: &Api,
    name: &str,
    id: &str,
    log_lines: usize,
    live: bool,
) -> anyhow::Result<(Vec<String>, String)> {
    let cp = "CodePipeline_20150709";
    let exec = api
        .call(
            "codepipeline",
            &format!("{cp}.GetPipelineExecution"),
            json!({"pipelineName": name, "pipelineExecutionId": id}),
        )
        .await?;
    let e = &exec["pipelineExecution"];
    let status = e["status"].as_str().unwrap_or_default().to_owned();
    let runs = api
        .call(
            "codepipeline",
            &format!("{cp}.ListActionExecutions"),
            json!({"pipelineName": name, "filter": {"pipelineExecutionId": id}}),
        )
        .await?;
    let state = api
        .call(
            "codepipeline",
            &format!("{cp}.GetPipelineState"),
            json!({"name": name}),
        )
        .await?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut lines = vec![format!(
        "{name} · execution {id} · {status}{}",
        e["statusSummary"]
            .as_str()
            .map(|s| format!(" — {s}"))
            .unwrap_or_default()
    )];
    let details = runs["actionExecutionDetails"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut failed_build = None;
    for stage in state["stageStates"].as_array().into_iter().flatten() {
        let sname = stage["stageName"].as_str().unwrap_or_default();
        let mine: Vec<&Value> = details.iter().filter(|d| d["stageName"] == sname).collect();
        let latest = &stage["latestExecution"];
        let sstatus = if latest["pipelineExecutionId"] == id {
            latest["status"].as_str().unwrap_or_default()
        } else if stage["inboundExecution"]["pipelineExecutionId"] == id {
            "waiting"
        } else {
            ""
        };
        let held = stage["inboundTransitionState"]["enabled"] == false;
        lines.push(format!(
            "  {} {sname}{}{}",
            mark(sstatus),
            if sstatus.is_empty() {
                String::new()
            } else {
                format!("  {sstatus}")
            },
            if held {
                format!(
                    "  (transition disabled: {})",
                    stage["inboundTransitionState"]["disabledReason"]
                        .as_str()
                        .unwrap_or_default()
                )
            } else {
                String::new()
            }
        ));
        for a in stage["actionStates"].as_array().into_iter().flatten() {
            let aname = a["actionName"].as_str().unwrap_or_default();
            // The newest run of this action in this execution.
            let Some(run) = mine
                .iter()
                .filter(|d| d["actionName"] == aname)
                .max_by(|x, y| {
                    x["startTime"]
                        .as_f64()
                        .unwrap_or(0.0)
                        .total_cmp(&y["startTime"].as_f64().unwrap_or(0.0))
                })
            else {
                lines.push(format!("      {aname}"));
                continue;
            };
            let astatus = run["status"].as_str().unwrap_or_default();
            let end = if astatus == "InProgress" {
                now
            } else {
                run["lastUpdateTime"].as_f64().unwrap_or(now)
            };
            let result = &run["output"]["executionResult"];
            let note = result["errorDetails"]["message"]
                .as_str()
                .or(result["externalExecutionSummary"].as_str())
                .or(a["latestExecution"]["summary"].as_str())
                .unwrap_or_default();
            // Off a terminal a running action's clock is left out: a line per change only.
            let took = if astatus == "InProgress" && !live {
                String::new()
            } else {
                duration(run["startTime"].as_f64(), end)
            };
            lines.push(format!(
                "    {} {aname}  {astatus}  {took}{}",
                mark(astatus),
                if note.is_empty() {
                    String::new()
                } else {
                    format!("  {note}")
                }
            ));
            if astatus == "Failed" && run["input"]["actionTypeId"]["provider"] == "CodeBuild" {
                failed_build = result["externalExecutionId"].as_str().map(str::to_owned);
            }
        }
    }
    if let Some(build) = failed_build.filter(|_| log_lines > 0) {
        if let Ok(tail) = build_log_tail(api, &build, log_lines).await {
            lines.push(format!("  last {} lines of build {build}:", tail.len()));
            lines.extend(tail.into_iter().map(|l| format!("    | {l}")));
        }
    }
    Ok((lines, status))
}

async fn build_log_tail(api: &Api, build: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let b = api
        .call(
            "codebuild",
            "CodeBuild_20161006.BatchGetBuilds",
            json!({"ids": [build]}),
        )
        .await?;
    let logs = &b["builds"][0]["logs"];
    let (group, stream) = (logs["groupName"].as_str(), logs["streamName"].as_str());
    let (Some(group), Some(stream)) = (group, stream) else {
        return Ok(Vec::new());
    };
    let page = api
        .call("logs", "Logs_20140328.GetLogEvents", json!({"logGroupName": group, "logStreamName": stream, "limit": n, "startFromHead": false}))
        .await?;
    Ok(page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(|m| m.trim_end().to_owned()))
        .collect())
}

/// Prints `lines` when they differ from what is `shown`: in place on a terminal, else after
/// a blank line.
pub(crate) fn redraw(shown: &mut Vec<String>, lines: Vec<String>, terminal: bool) {
    if lines == *shown {
        return;
    }
    if terminal && !shown.is_empty() {
        // Redraw in place: up over the last picture, clear to the end.
        print!("\x1b[{}A\x1b[J", shown.len());
    } else if !shown.is_empty() {
        println!();
    }
    for l in &lines {
        println!("{l}");
    }
    *shown = lines;
}

pub async fn run(args: PipelineArgs) -> anyhow::Result<ExitCode> {
    let PipelineCommand::Watch {
        name,
        execution_id,
        endpoint_url,
        log_lines,
    } = args.command;
    let api = Api::from_env(&endpoint_url)?;
    let id = match execution_id {
        Some(id) => id,
        None => {
            let list = api
                .call(
                    "codepipeline",
                    "CodePipeline_20150709.ListPipelineExecutions",
                    json!({"pipelineName": name, "maxResults": 1}),
                )
                .await?;
            match list["pipelineExecutionSummaries"][0]["pipelineExecutionId"].as_str() {
                Some(id) => id.to_owned(),
                None => bail!("pipeline {name} has no executions yet"),
            }
        }
    };
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let mut shown: Vec<String> = Vec::new();
    loop {
        let (lines, status) = picture(&api, &name, &id, log_lines, terminal).await?;
        redraw(&mut shown, lines, terminal);
        if !matches!(status.as_str(), "InProgress" | "Stopping") {
            return Ok(if status == "Succeeded" {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            });
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
