//! Build/Test — CodeBuild: a build of `ProjectName` with the primary input artifact as its
//! CODEPIPELINE source (the others as secondary sources), its output artifacts where the
//! pipeline wants them, `EnvironmentVariables` as overrides; polled until it ends, its
//! exported variables becoming the action's.

use super::{failed, Job, Provider, Step};
use crate::engine::{ActionOutput, ActionResult};
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use slipway_model::codebuild::{
    Build, EnvironmentVariable, ProjectArtifacts, ProjectSource, ProjectSourceVersion,
    StartBuildInput,
};

pub struct CodeBuildAction;

pub(super) fn s3_arn(bucket: &str, key: &str) -> String {
    format!("arn:aws:s3:::{bucket}/{key}")
}

/// The StartBuild request for a job, or why there is none.
fn start_input(job: &Job) -> Result<StartBuildInput, String> {
    if job
        .configuration
        .get("BatchEnabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        return Err("BatchEnabled is not supported: Slipway runs no batch builds yet".into());
    }
    let vars: Vec<EnvironmentVariable> = match job.configuration.get("EnvironmentVariables") {
        Some(v) => serde_json::from_str(v).map_err(|e| {
            format!("EnvironmentVariables must be a JSON array of {{name, value, type}}: {e}")
        })?,
        None => Vec::new(),
    };
    let primary_name = job.configuration.get("PrimarySource");
    let primary = match primary_name {
        Some(n) => {
            job.inputs.iter().find(|a| &a.name == n).ok_or_else(|| {
                format!("PrimarySource {n} is not an input artifact of the action")
            })?
        }
        None if job.inputs.len() > 1 => {
            return Err(
                "PrimarySource is required when the action has more than one input artifact".into(),
            )
        }
        None => job
            .inputs
            .first()
            .ok_or("the action has no input artifact")?,
    };
    let secondary: Vec<&crate::engine::Artifact> = job
        .inputs
        .iter()
        .filter(|a| a.name != primary.name)
        .collect();
    let artifacts = job.outputs.first().map(|o| ProjectArtifacts {
        r#type: Some("CODEPIPELINE".into()),
        location: Some(s3_arn(&o.bucket, &o.key)),
        ..Default::default()
    });
    let secondary_artifacts: Vec<ProjectArtifacts> = job
        .outputs
        .iter()
        .skip(1)
        .map(|o| ProjectArtifacts {
            r#type: Some("S3".into()),
            location: Some(o.bucket.clone()),
            path: Some(o.key.rsplit_once('/').map_or("", |(p, _)| p).to_owned()),
            name: Some(o.key.rsplit('/').next().unwrap_or_default().to_owned()),
            packaging: Some("ZIP".into()),
            namespace_type: Some("NONE".into()),
            artifact_identifier: Some(o.name.clone()),
            ..Default::default()
        })
        .collect();
    Ok(StartBuildInput {
        project_name: job.configuration.get("ProjectName").cloned(),
        source_type_override: Some("CODEPIPELINE".into()),
        source_version: Some(s3_arn(&primary.bucket, &primary.key)),
        secondary_sources_override: (!secondary.is_empty()).then(|| {
            secondary
                .iter()
                .map(|a| ProjectSource {
                    r#type: Some("S3".into()),
                    location: Some(format!("{}/{}", a.bucket, a.key)),
                    source_identifier: Some(a.name.clone()),
                    ..Default::default()
                })
                .collect()
        }),
        secondary_sources_version_override: None::<Vec<ProjectSourceVersion>>,
        artifacts_override: Some(artifacts.unwrap_or(ProjectArtifacts {
            r#type: Some("NO_ARTIFACTS".into()),
            ..Default::default()
        })),
        secondary_artifacts_override: (!secondary_artifacts.is_empty())
            .then_some(secondary_artifacts),
        environment_variables_override: (!vars.is_empty()).then_some(vars),
        // A start repeated after a crash (claimed, not yet recorded) finds its build.
        idempotency_token: Some(job.action_execution_id.clone()),
        ..Default::default()
    })
}

/// The step a build's state makes.
pub(super) fn step_of(job: &Job, build: &Build) -> Step {
    let id = build.id.clone().unwrap_or_default();
    match build.build_status.as_deref() {
        Some("SUCCEEDED") => {
            let variables = build
                .exported_environment_variables
                .iter()
                .flatten()
                .map(|v| {
                    (
                        v.name.clone().unwrap_or_default(),
                        v.value.clone().unwrap_or_default(),
                    )
                })
                .collect();
            Step::Done(ActionResult::Succeeded(ActionOutput {
                artifacts: job
                    .outputs
                    .iter()
                    .map(|o| crate::engine::Artifact {
                        name: o.name.clone(),
                        bucket: o.bucket.clone(),
                        key: o.key.clone(),
                    })
                    .collect(),
                variables,
                summary: Some(format!("Build {id} succeeded")),
                external_id: Some(id),
                ..Default::default()
            }))
        }
        Some("IN_PROGRESS") | None => Step::Running {
            external_id: id,
            url: None,
            summary: build
                .current_phase
                .clone()
                .map(|p| format!("Build phase {p}")),
        },
        Some(status) => {
            let why = build
                .phases
                .iter()
                .flatten()
                .filter(|p| p.phase_status.as_deref().is_some_and(|s| s != "SUCCEEDED"))
                .flat_map(|p| p.contexts.iter().flatten())
                .filter_map(|c| c.message.clone())
                .find(|m| !m.is_empty());
            Step::Done(ActionResult::Failed {
                code: "JobFailed".into(),
                message: format!(
                    "Build {id} ended {status}{}",
                    why.map_or(String::new(), |w| format!(": {w}"))
                ),
                output: ActionOutput {
                    external_id: Some(id),
                    ..Default::default()
                },
            })
        }
    }
}

impl Provider for CodeBuildAction {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            let input = match start_input(job) {
                Ok(i) => i,
                Err(m) => return failed("ConfigurationError", m),
            };
            let initiator = format!("codepipeline/{}", job.pipeline);
            match cp
                .inner
                .builds
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
        Box::pin(async move {
            match cp.inner.builds.get(&job.region, external_id).await {
                Ok(Some(build)) => step_of(job, &build),
                Ok(None) => failed("JobFailed", format!("Build {external_id} no longer exists")),
                Err(m) => Step::Running {
                    external_id: external_id.to_owned(),
                    url: None,
                    summary: Some(m),
                },
            }
        })
    }

    fn cancel<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { cp.inner.builds.stop(&job.region, external_id).await })
    }
}
