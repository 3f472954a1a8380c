//! Deploy — CodeDeploy: the input artifact (a zip with an appspec.yml at its root, in the
//! pipeline's artifact bucket) deployed to `DeploymentGroupName` of `ApplicationName`,
//! polled until the deployment ends. The action execution id is the deployment's
//! `externalId`, so a run started again after a restart finds its deployment.

use super::{failed, Job, Provider, Step};
use crate::engine::{ActionOutput, ActionResult};
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use slipway_model::codedeploy::{CreateDeploymentInput, RevisionLocation, S3Location};

pub struct CodeDeployAction;

fn step_of(id: String, status: &str, error: Option<String>) -> Step {
    match status {
        "Succeeded" => Step::Done(ActionResult::Succeeded(ActionOutput {
            summary: Some(format!("Deployment {id} succeeded")),
            external_id: Some(id),
            ..Default::default()
        })),
        "Failed" | "Stopped" => Step::Done(ActionResult::Failed {
            code: "JobFailed".into(),
            message: format!(
                "Deployment {id} ended {status}{}",
                error.map_or(String::new(), |e| format!(": {e}"))
            ),
            output: ActionOutput {
                external_id: Some(id),
                ..Default::default()
            },
        }),
        other => Step::Running {
            summary: Some(format!("Deployment {other}")),
            external_id: id,
            url: None,
        },
    }
}

async fn poll(cp: &CodePipeline, job: &Job, id: &str) -> Step {
    let Some(cd) = cp.inner.codedeploy.as_ref() else {
        return failed("JobFailed", "CodeDeploy is not running in this server");
    };
    match cd.in_region(&job.region).get_deployment(id).await {
        Ok(info) => step_of(
            id.to_owned(),
            info.status.as_deref().unwrap_or("Created"),
            info.error_information.and_then(|e| e.message),
        ),
        Err(e) => failed("JobFailed", e.to_string()),
    }
}

impl Provider for CodeDeployAction {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            let Some(cd) = cp.inner.codedeploy.as_ref() else {
                return failed("JobFailed", "CodeDeploy is not running in this server");
            };
            let cd = cd.in_region(&job.region);
            let Some(input) = job.inputs.first() else {
                return failed(
                    "ConfigurationError",
                    "A CodeDeploy action needs an input artifact",
                );
            };
            let version = cp
                .inner
                .s3
                .object(&input.bucket, &input.key, None)
                .await
                .ok()
                .map(|o| o.version_id)
                .filter(|v| v != "null");
            let request = CreateDeploymentInput {
                application_name: job.configuration.get("ApplicationName").cloned(),
                deployment_group_name: job.configuration.get("DeploymentGroupName").cloned(),
                revision: Some(RevisionLocation {
                    revision_type: Some("S3".into()),
                    s3_location: Some(S3Location {
                        bucket: Some(input.bucket.clone()),
                        key: Some(input.key.clone()),
                        bundle_type: Some("zip".into()),
                        version,
                        e_tag: None,
                    }),
                    ..Default::default()
                }),
                description: Some(format!(
                    "CodePipeline {} execution {}",
                    job.pipeline, job.execution_id
                )),
                ..Default::default()
            };
            match cd
                .create_deployment_for(request, &job.action_execution_id)
                .await
            {
                Ok(id) => poll(cp, job, &id).await,
                Err(e) => failed("JobFailed", e.to_string()),
            }
        })
    }

    fn poll<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, Step> {
        Box::pin(poll(cp, job, external_id))
    }

    fn cancel<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Some(cd) = cp.inner.codedeploy.as_ref() {
                let _ = cd
                    .in_region(&job.region)
                    .stop_deployment(external_id, None)
                    .await;
            }
        })
    }
}
