//! Invoke — CodePipeline: starts another pipeline (of the same region) with `Variables` and
//! `SourceRevisions`, and succeeds once it has started.

use super::{failed, Job, Provider, Step};
use crate::engine::{ActionOutput, ActionResult};
use crate::runtime::Trigger;
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use serde_json::Value;

pub struct InvokePipeline;

fn pairs(json: Option<&String>, key: &str, value: &str) -> Result<Vec<(String, String)>, String> {
    let Some(text) = json else {
        return Ok(Vec::new());
    };
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not a JSON array: {e}"))?;
    v.as_array()
        .ok_or("not a JSON array")?
        .iter()
        .map(|x| {
            Ok((
                x[key]
                    .as_str()
                    .ok_or(format!("an entry without {key}"))?
                    .to_owned(),
                x[value]
                    .as_str()
                    .ok_or(format!("an entry without {value}"))?
                    .to_owned(),
            ))
        })
        .collect()
}

impl Provider for InvokePipeline {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            let target = job
                .configuration
                .get("PipelineName")
                .cloned()
                .unwrap_or_default();
            let variables = match pairs(job.configuration.get("Variables"), "name", "value") {
                Ok(v) => v,
                Err(e) => return failed("ConfigurationError", format!("Variables is {e}")),
            };
            let revisions = match pairs(
                job.configuration.get("SourceRevisions"),
                "actionName",
                "revisionValue",
            ) {
                Ok(v) => v.into_iter().collect(),
                Err(e) => return failed("ConfigurationError", format!("SourceRevisions is {e}")),
            };
            let trigger = Trigger {
                kind: "StartPipelineExecution".into(),
                detail: Some(cp.pipeline_arn(&job.pipeline)),
                revisions,
            };
            match cp.start_execution(&target, &variables, None, trigger).await {
                Ok(id) => Step::Done(ActionResult::Succeeded(ActionOutput {
                    summary: Some(format!("Started execution {id} of pipeline {target}")),
                    external_id: Some(id),
                    ..Default::default()
                })),
                Err(e) => failed("JobFailed", format!("Starting pipeline {target}: {e}")),
            }
        })
    }
}
