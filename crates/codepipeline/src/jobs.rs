//! Custom action types and their job workers: CreateCustomActionType and friends, the jobs a
//! custom action's run hands out (PollForJobs → AcknowledgeJob → PutJobSuccessResult /
//! PutJobFailureResult, with continuation tokens), and the ThirdParty variants (no
//! ThirdParty action types exist in Slipway, so they find no jobs).

use crate::declaration::CustomType;
use crate::engine::{ActionOutput, ActionResult, Revision};
use crate::error::{err, ErrorKind, Result};
use crate::providers::{failed, Job as RunJob, Provider, Step};
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use slipway_model::codepipeline::*;
use slipway_store::now;
use slipway_store::pipelines as db;
use std::collections::BTreeMap;

/// What a job worker reported: PutJobSuccessResult (continuation token, variables,
/// summary, revision) or PutJobFailureResult (failure type and message).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    pub continuation_token: Option<String>,
    pub output_variables: Option<BTreeMap<String, String>>,
    pub summary: Option<String>,
    pub external_execution_id: Option<String>,
    pub revision: Option<String>,
    pub revision_summary: Option<String>,
    #[serde(rename = "type")]
    pub failure_type: Option<String>,
    pub message: Option<String>,
}

fn type_id(c: &str, p: &str, v: &str) -> ActionTypeId {
    ActionTypeId {
        category: Some(c.into()),
        owner: Some("Custom".into()),
        provider: Some(p.into()),
        version: Some(v.into()),
    }
}

fn no_job(id: &str) -> crate::error::Error {
    err(
        ErrorKind::JobNotFoundException,
        format!("Job {id} does not exist"),
    )
}

impl CodePipeline {
    /// CreateCustomActionType.
    pub async fn create_action_type(
        &self,
        input: CreateCustomActionTypeInput,
    ) -> Result<ActionType> {
        let (c, p, v) = (
            input.category.clone().unwrap_or_default(),
            input.provider.clone().unwrap_or_default(),
            input.version.clone().unwrap_or_default(),
        );
        let t = ActionType {
            id: Some(type_id(&c, &p, &v)),
            settings: input.settings,
            action_configuration_properties: Some(
                input.configuration_properties.unwrap_or_default(),
            ),
            input_artifact_details: input.input_artifact_details,
            output_artifact_details: input.output_artifact_details,
        };
        let mut tx = self.store().begin_write().await?;
        let doc = serde_json::to_string(&t)?;
        let inserted =
            db::insert_action_type(&mut tx, &self.region, (&c, &p, &v), &doc, now()).await?;
        tx.commit().await?;
        if !inserted {
            return Err(err(
                ErrorKind::ActionTypeAlreadyExistsException,
                format!("ActionType (Category: '{c}', Provider: '{p}', Owner: 'Custom', Version: '{v}') already exists"),
            ));
        }
        Ok(t)
    }

    /// DeleteCustomActionType (pipelines that use it fail their runs of it).
    pub async fn delete_action_type(&self, c: &str, p: &str, v: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        let deleted = db::delete_action_type(&mut tx, &self.region, (c, p, v)).await?;
        tx.commit().await?;
        if !deleted {
            return Err(err(
                ErrorKind::ActionTypeNotFoundException,
                format!("ActionType (Category: '{c}', Provider: '{p}', Owner: 'Custom', Version: '{v}') does not exist"),
            ));
        }
        Ok(())
    }

    /// The region's custom action types.
    pub async fn custom_action_types(&self) -> Result<Vec<ActionType>> {
        let mut conn = self.store().pool().acquire().await?;
        let rows = db::action_types(&mut conn, &self.region).await?;
        rows.iter().map(|d| Ok(serde_json::from_str(d)?)).collect()
    }

    /// Custom types as declaration checks see them.
    pub(crate) async fn custom_types(&self) -> Result<Vec<CustomType>> {
        Ok(self
            .custom_action_types()
            .await?
            .into_iter()
            .map(|t| {
                let id = t.id.unwrap_or_default();
                let bounds = |d: Option<ArtifactDetails>| {
                    let d = d.unwrap_or_default();
                    (d.minimum_count.unwrap_or(0), d.maximum_count.unwrap_or(0))
                };
                CustomType {
                    category: id.category.unwrap_or_default(),
                    provider: id.provider.unwrap_or_default(),
                    version: id.version.unwrap_or_default(),
                    inputs: bounds(t.input_artifact_details),
                    outputs: bounds(t.output_artifact_details),
                    secrets: t
                        .action_configuration_properties
                        .iter()
                        .flatten()
                        .filter(|p| p.secret == Some(true))
                        .filter_map(|p| p.name.clone())
                        .collect(),
                    properties: t
                        .action_configuration_properties
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| (p.name.unwrap_or_default(), p.required.unwrap_or(false)))
                        .collect(),
                }
            })
            .collect())
    }

    /// PollForJobs: up to `max` queued jobs of the type (matching `query` on queryable
    /// configuration), now dispatched.
    pub async fn poll_for_jobs(
        &self,
        t: &ActionTypeId,
        max: usize,
        query: &BTreeMap<String, String>,
    ) -> Result<Vec<Job>> {
        let (c, p, v) = (
            t.category.as_deref().unwrap_or_default(),
            t.provider.as_deref().unwrap_or_default(),
            t.version.as_deref().unwrap_or_default(),
        );
        if t.owner.as_deref() != Some("Custom") {
            return Err(err(
                ErrorKind::ValidationException,
                "PollForJobs is valid only for action types with Custom in the owner field",
            ));
        }
        let mut tx = self.store().begin_write().await?;
        if !db::action_type_exists(&mut tx, &self.region, (c, p, v)).await? {
            return Err(err(
                ErrorKind::ActionTypeNotFoundException,
                format!("ActionType (Category: '{c}', Provider: '{p}', Owner: 'Custom', Version: '{v}') does not exist"),
            ));
        }
        let rows = db::queued_jobs(&mut tx, &self.region, (c, p, v)).await?;
        let mut out = Vec::new();
        for r in rows {
            if out.len() >= max {
                break;
            }
            let data = self.unsealed(serde_json::from_str(&r.data)?)?;
            let config = data
                .action_configuration
                .clone()
                .and_then(|a| a.configuration)
                .unwrap_or_default();
            if !query.iter().all(|(k, v)| config.get(k) == Some(v)) {
                continue;
            }
            db::set_job_status(&mut tx, &r.id, "Dispatched", now()).await?;
            out.push(Job {
                id: Some(r.id),
                data: Some(data),
                nonce: Some(r.nonce),
                account_id: Some(self.account_id().to_owned()),
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// A job's data with its secret configuration values unsealed, for its worker.
    fn unsealed(&self, mut data: JobData) -> Result<JobData> {
        if let Some(c) = data
            .action_configuration
            .as_mut()
            .and_then(|a| a.configuration.as_mut())
        {
            for v in c.values_mut() {
                *v = self.unseal(v)?;
            }
        }
        Ok(data)
    }

    async fn job_row(&self, id: &str) -> Result<(String, String, JobData)> {
        let mut conn = self.store().pool().acquire().await?;
        let r = db::job(&mut conn, &self.region, id)
            .await?
            .ok_or_else(|| no_job(id))?;
        let data = self.unsealed(serde_json::from_str(&r.data)?)?;
        Ok((r.status, r.nonce, data))
    }

    /// AcknowledgeJob: the job's status (InProgress).
    pub async fn acknowledge_job(&self, id: &str, nonce: &str) -> Result<String> {
        let (status, expected, _) = self.job_row(id).await?;
        if nonce != expected {
            return Err(err(
                ErrorKind::InvalidNonceException,
                format!("The nonce for job {id} is not valid"),
            ));
        }
        match status.as_str() {
            "Queued" | "Dispatched" | "InProgress" => {
                let mut tx = self.store().begin_write().await?;
                db::set_job_status(&mut tx, id, "InProgress", now()).await?;
                tx.commit().await?;
                Ok("InProgress".into())
            }
            other => Ok(other.to_owned()),
        }
    }

    /// GetJobDetails.
    pub async fn job_details(&self, id: &str) -> Result<JobDetails> {
        let (_, _, data) = self.job_row(id).await?;
        Ok(JobDetails {
            id: Some(id.to_owned()),
            data: Some(data),
            account_id: Some(self.account_id().to_owned()),
        })
    }

    /// PutJobSuccessResult / PutJobFailureResult: `result` is recorded; the run picks it up.
    pub async fn put_job_result(&self, id: &str, success: bool, result: &JobResult) -> Result<()> {
        let (status, _, _) = self.job_row(id).await?;
        if !matches!(status.as_str(), "Dispatched" | "InProgress") {
            return Err(err(
                ErrorKind::InvalidJobStateException,
                format!(
                    "Job {id} is {status}; only a dispatched or acknowledged job takes a result"
                ),
            ));
        }
        let status = if success { "Succeeded" } else { "Failed" };
        let mut tx = self.store().begin_write().await?;
        db::set_job_result(&mut tx, id, status, &serde_json::to_string(result)?, now()).await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Queues a job for a custom action's run; its id.
    async fn queue_job(
        &self,
        run: &RunJob,
        continuation: Option<String>,
    ) -> std::result::Result<String, String> {
        let artifact = |a: &crate::engine::Artifact| Artifact {
            name: Some(a.name.clone()),
            revision: None,
            location: Some(ArtifactLocation {
                r#type: Some("S3".into()),
                s3_location: Some(S3ArtifactLocation {
                    bucket_name: Some(a.bucket.clone()),
                    object_key: Some(a.key.clone()),
                }),
            }),
        };
        let data = JobData {
            action_type_id: Some(type_id(&run.category, &run.provider, &run.version)),
            action_configuration: Some(ActionConfiguration {
                configuration: Some(run.configuration.clone()),
            }),
            pipeline_context: Some(PipelineContext {
                pipeline_name: Some(run.pipeline.clone()),
                stage: Some(StageContext {
                    name: Some(run.stage.clone()),
                }),
                action: Some(ActionContext {
                    name: Some(run.action.clone()),
                    action_execution_id: Some(run.action_execution_id.clone()),
                }),
                pipeline_arn: Some(self.pipeline_arn(&run.pipeline)),
                pipeline_execution_id: Some(run.execution_id.clone()),
            }),
            input_artifacts: Some(run.inputs.iter().map(artifact).collect()),
            output_artifacts: Some(run.outputs.iter().map(artifact).collect()),
            artifact_credentials: None,
            continuation_token: continuation,
            encryption_key: None,
        };
        let id = uuid::Uuid::new_v4().to_string();
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let doc = serde_json::to_string(&data).map_err(|e| e.to_string())?;
        let job = db::NewJob {
            id: &id,
            region: &self.region,
            action_type: (&run.category, &run.provider, &run.version),
            action_execution_id: &run.action_execution_id,
            nonce: &nonce,
            data: &doc,
            t: now(),
        };
        let stored = async {
            let mut tx = self.store().begin_write().await?;
            db::insert_job(&mut tx, &job).await?;
            tx.commit().await?;
            Ok::<_, crate::error::Error>(())
        };
        stored.await.map_err(|e| e.to_string())?;
        Ok(id)
    }
}

/// A custom action's run: a job for its workers, polled until they report.
pub struct CustomAction;

impl Provider for CustomAction {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a RunJob) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            match cp.queue_job(job, None).await {
                Ok(id) => Step::Running {
                    external_id: id,
                    url: None,
                    summary: None,
                },
                Err(m) => failed("JobFailed", m),
            }
        })
    }

    fn poll<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a RunJob,
        external_id: &'a str,
    ) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            let running = || Step::Running {
                external_id: external_id.to_owned(),
                url: None,
                summary: None,
            };
            let found = async {
                let mut conn = cp.store().pool().acquire().await?;
                db::job_result(&mut conn, external_id).await
            };
            let (status, result) = match found.await {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return failed("JobFailed", format!("Job {external_id} no longer exists"))
                }
                Err(_) => return running(),
            };
            let result: JobResult = result
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or_default();
            match status.as_str() {
                "Succeeded" => {
                    if let Some(token) = result.continuation_token.clone() {
                        return match cp.queue_job(job, Some(token)).await {
                            Ok(id) => Step::Running {
                                external_id: id,
                                url: None,
                                summary: result.summary,
                            },
                            Err(m) => failed("JobFailed", m),
                        };
                    }
                    Step::Done(ActionResult::Succeeded(ActionOutput {
                        artifacts: job.outputs.to_vec(),
                        variables: result
                            .output_variables
                            .unwrap_or_default()
                            .into_iter()
                            .collect(),
                        revision: result.revision.map(|r| Revision {
                            revision_id: r,
                            summary: result.revision_summary,
                            url: None,
                            created: None,
                        }),
                        summary: result.summary,
                        external_id: result.external_execution_id,
                        external_url: None,
                    }))
                }
                "Failed" => Step::Done(ActionResult::Failed {
                    code: result.failure_type.unwrap_or_else(|| "JobFailed".into()),
                    message: result.message.unwrap_or_default(),
                    output: ActionOutput {
                        external_id: result.external_execution_id,
                        ..Default::default()
                    },
                }),
                _ => running(),
            }
        })
    }
}
