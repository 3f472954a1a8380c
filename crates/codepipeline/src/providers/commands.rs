//! Compute — Commands: the action's `commands` run as a build (the same sandbox as a
//! CodeBuild action's) of a project Slipway manages, `slipway-pipeline-commands`, with a
//! buildspec made from the commands, `outputVariables` as exported variables and the
//! output artifact's `files`.

use super::codebuild::{s3_arn, step_of, CodeBuildAction};
use super::{failed, Job, Provider, Step};
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use serde_json::json;
use slipway_model::codebuild::{
    EnvironmentVariable, ProjectArtifacts, ProjectSource, StartBuildInput,
};

/// The project Commands actions build with (made in a region on first use).
pub const COMMANDS_PROJECT: &str = "slipway-pipeline-commands";

pub struct CommandsAction;

/// The buildspec of a Commands action (JSON, which is YAML).
fn buildspec(job: &Job) -> String {
    let mut spec = json!({
        "version": 0.2,
        "phases": {"build": {"commands": job.commands}},
    });
    if !job.output_variables.is_empty() {
        spec["env"] = json!({"exported-variables": job.output_variables});
    }
    if !job.outputs.is_empty() {
        let files = if job.output_files.is_empty() {
            vec!["**/*".to_owned()]
        } else {
            job.output_files.clone()
        };
        spec["artifacts"] = json!({"files": files});
    }
    // On several lines: a one-line buildspec override names a file in the source.
    serde_json::to_string_pretty(&spec).unwrap_or_default()
}

fn start_input(job: &Job) -> Result<StartBuildInput, String> {
    let primary = job
        .inputs
        .first()
        .ok_or("the action has no input artifact")?;
    let vars: Vec<EnvironmentVariable> = job
        .environment
        .iter()
        .map(|(name, value, kind)| EnvironmentVariable {
            name: Some(name.clone()),
            value: Some(value.clone()),
            r#type: Some(kind.clone()),
        })
        .collect();
    Ok(StartBuildInput {
        project_name: Some(COMMANDS_PROJECT.to_owned()),
        source_type_override: Some("CODEPIPELINE".into()),
        source_version: Some(s3_arn(&primary.bucket, &primary.key)),
        buildspec_override: Some(buildspec(job)),
        secondary_sources_override: (job.inputs.len() > 1).then(|| {
            job.inputs[1..]
                .iter()
                .map(|a| ProjectSource {
                    r#type: Some("S3".into()),
                    location: Some(format!("{}/{}", a.bucket, a.key)),
                    source_identifier: Some(a.name.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        artifacts_override: Some(match job.outputs.first() {
            Some(o) => ProjectArtifacts {
                r#type: Some("CODEPIPELINE".into()),
                location: Some(s3_arn(&o.bucket, &o.key)),
                ..Default::default()
            },
            None => ProjectArtifacts {
                r#type: Some("NO_ARTIFACTS".into()),
                ..Default::default()
            },
        }),
        environment_variables_override: (!vars.is_empty()).then_some(vars),
        idempotency_token: Some(job.action_execution_id.clone()),
        ..Default::default()
    })
}

impl Provider for CommandsAction {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            let input = match start_input(job) {
                Ok(i) => i,
                Err(m) => return failed("ConfigurationError", m),
            };
            let builds = &cp.inner.builds;
            if let Err(m) = builds.ensure_project(&job.region, COMMANDS_PROJECT).await {
                return failed("JobFailed", format!("Preparing the Commands project: {m}"));
            }
            let initiator = format!("codepipeline/{}", job.pipeline);
            match builds
                .start(&job.region, input, &initiator, &job.principal)
                .await
            {
                Ok(build) => step_of(job, &build),
                Err(m) => failed("JobFailed", m),
            }
        })
    }

    fn poll<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, Step> {
        CodeBuildAction.poll(cp, job, external_id)
    }

    fn cancel<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, ()> {
        CodeBuildAction.cancel(cp, job, external_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildspec_of_commands() {
        let job = Job {
            commands: vec!["echo \"hi\" > out.txt".into(), "export V=1".into()],
            output_variables: vec!["V".into()],
            outputs: vec![crate::engine::Artifact {
                name: "Out".into(),
                bucket: "b".into(),
                key: "k".into(),
            }],
            output_files: vec!["out.txt".into()],
            ..Default::default()
        };
        let spec: serde_json::Value = serde_json::from_str(&buildspec(&job)).unwrap();
        assert_eq!(
            spec["phases"]["build"]["commands"][0],
            "echo \"hi\" > out.txt"
        );
        assert_eq!(spec["env"]["exported-variables"], json!(["V"]));
        assert_eq!(spec["artifacts"]["files"], json!(["out.txt"]));
    }
}
