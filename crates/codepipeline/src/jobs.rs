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
use serde_json::{json, Value};
use slipway_model::codepipeline::*;
use slipway_store::now;
use sqlx::Row;
use std::collections::BTreeMap;

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
        let inserted = sqlx::query("INSERT INTO cp_action_types (region, category, provider, version, definition, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING")
            .bind(&*self.region)
            .bind(&c)
            .bind(&p)
            .bind(&v)
            .bind(serde_json::to_string(&t)?)
            .bind(now())
            .execute(self.store().pool())
            .await?
            .rows_affected();
        if inserted == 0 {
            return Err(err(
                ErrorKind::ActionTypeAlreadyExistsException,
                format!("ActionType (Category: '{c}', Provider: '{p}', Owner: 'Custom', Version: '{v}') already exists"),
            ));
        }
        Ok(t)
    }

    /// DeleteCustomActionType (pipelines that use it fail their runs of it).
    pub async fn delete_action_type(&self, c: &str, p: &str, v: &str) -> Result<()> {
        let n = sqlx::query("DELETE FROM cp_action_types WHERE region = $1 AND category = $2 AND provider = $3 AND version = $4")
            .bind(&*self.region)
            .bind(c)
            .bind(p)
            .bind(v)
            .execute(self.store().pool())
            .await?
            .rows_affected();
        if n == 0 {
            return Err(err(
                ErrorKind::ActionTypeNotFoundException,
                format!("ActionType (Category: '{c}', Provider: '{p}', Owner: 'Custom', Version: '{v}') does not exist"),
            ));
        }
        Ok(())
    }

    /// The region's custom action types.
    pub async fn custom_action_types(&self) -> Result<Vec<ActionType>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT definition FROM cp_action_types WHERE region = $1 ORDER BY category, provider, version")
            .bind(&*self.region)
            .fetch_all(self.store().pool())
            .await?;
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
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM cp_action_types WHERE region = $1 AND category = $2 AND provider = $3 AND version = $4")
            .bind(&*self.region)
            .bind(c)
            .bind(p)
            .bind(v)
            .fetch_optional(self.store().pool())
            .await?;
        if exists.is_none() {
            return Err(err(
                ErrorKind::ActionTypeNotFoundException,
                format!("ActionType (Category: '{c}', Provider: '{p}', Owner: 'Custom', Version: '{v}') does not exist"),
            ));
        }
        let mut tx = self.store().begin_write().await?;
        let rows = sqlx::query("SELECT job_id, nonce, data FROM cp_jobs WHERE region = $1 AND category = $2 AND provider = $3 AND version = $4 AND status = 'Queued' ORDER BY created_at")
            .bind(&*self.region)
            .bind(c)
            .bind(p)
            .bind(v)
            .fetch_all(&mut *tx)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            if out.len() >= max {
                break;
            }
            let data = self.unsealed(serde_json::from_str(r.get::<&str, _>(2))?)?;
            let config = data
                .action_configuration
                .clone()
                .and_then(|a| a.configuration)
                .unwrap_or_default();
            if !query.iter().all(|(k, v)| config.get(k) == Some(v)) {
                continue;
            }
            let id: String = r.get(0);
            sqlx::query(
                "UPDATE cp_jobs SET status = 'Dispatched', updated_at = $2 WHERE job_id = $1",
            )
            .bind(&id)
            .bind(now())
            .execute(&mut *tx)
            .await?;
            out.push(Job {
                id: Some(id),
                data: Some(data),
                nonce: Some(r.get(1)),
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
        let r = sqlx::query(
            "SELECT status, nonce, data FROM cp_jobs WHERE region = $1 AND job_id = $2",
        )
        .bind(&*self.region)
        .bind(id)
        .fetch_optional(self.store().pool())
        .await?
        .ok_or_else(|| no_job(id))?;
        Ok((
            r.get(0),
            r.get(1),
            serde_json::from_str(r.get::<&str, _>(2))?,
        ))
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
                sqlx::query(
                    "UPDATE cp_jobs SET status = 'InProgress', updated_at = $2 WHERE job_id = $1",
                )
                .bind(id)
                .bind(now())
                .execute(self.store().pool())
                .await?;
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
    pub async fn put_job_result(&self, id: &str, success: bool, result: Value) -> Result<()> {
        let (status, _, _) = self.job_row(id).await?;
        if !matches!(status.as_str(), "Dispatched" | "InProgress") {
            return Err(err(
                ErrorKind::InvalidJobStateException,
                format!(
                    "Job {id} is {status}; only a dispatched or acknowledged job takes a result"
                ),
            ));
        }
        sqlx::query(
            "UPDATE cp_jobs SET status = $2, result = $3, updated_at = $4 WHERE job_id = $1",
        )
        .bind(id)
        .bind(if success { "Succeeded" } else { "Failed" })
        .bind(result.to_string())
        .bind(now())
        .execute(self.store().pool())
        .await?;
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
        let t = now();
        sqlx::query("INSERT INTO cp_jobs (job_id, region, category, provider, version, action_execution_id, nonce, status, data, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'Queued', $8, $9, $9)")
            .bind(&id)
            .bind(&*self.region)
            .bind(&run.category)
            .bind(&run.provider)
            .bind(&run.version)
            .bind(&run.action_execution_id)
            .bind(uuid::Uuid::new_v4().simple().to_string())
            .bind(serde_json::to_string(&data).map_err(|e| e.to_string())?)
            .bind(t)
            .execute(self.store().pool())
            .await
            .map_err(|e| e.to_string())?;
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
            let row = match sqlx::query("SELECT status, result FROM cp_jobs WHERE job_id = $1")
                .bind(external_id)
                .fetch_optional(cp.store().pool())
                .await
            {
                Ok(Some(r)) => r,
                Ok(None) => {
                    return failed("JobFailed", format!("Job {external_id} no longer exists"))
                }
                Err(_) => return running(),
            };
            let status: String = row.get(0);
            let result: Value = row
                .get::<Option<String>, _>(1)
                .and_then(|r| serde_json::from_str(&r).ok())
                .unwrap_or_else(|| json!({}));
            match status.as_str() {
                "Succeeded" => {
                    if let Some(token) = result["continuationToken"].as_str() {
                        return match cp.queue_job(job, Some(token.to_owned())).await {
                            Ok(id) => Step::Running {
                                external_id: id,
                                url: None,
                                summary: result["summary"].as_str().map(str::to_owned),
                            },
                            Err(m) => failed("JobFailed", m),
                        };
                    }
                    let variables = result["outputVariables"]
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .map(|(k, v)| {
                                    (k.clone(), v.as_str().unwrap_or_default().to_owned())
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    Step::Done(ActionResult::Succeeded(ActionOutput {
                        artifacts: job.outputs.to_vec(),
                        variables,
                        revision: result["revision"].as_str().map(|r| Revision {
                            revision_id: r.to_owned(),
                            summary: result["revisionSummary"].as_str().map(str::to_owned),
                            url: None,
                            created: None,
                        }),
                        summary: result["summary"].as_str().map(str::to_owned),
                        external_id: result["externalExecutionId"].as_str().map(str::to_owned),
                        external_url: None,
                    }))
                }
                "Failed" => Step::Done(ActionResult::Failed {
                    code: result["type"].as_str().unwrap_or("JobFailed").to_owned(),
                    message: result["message"].as_str().unwrap_or_default().to_owned(),
                    output: ActionOutput {
                        external_id: result["externalExecutionId"].as_str().map(str::to_owned),
                        ..Default::default()
                    },
                }),
                _ => running(),
            }
        })
    }
}
