//! Executions as the API shows them (GetPipelineState, GetPipelineExecution,
//! ListPipelineExecutions, ListActionExecutions, ListActionTypes) and the operations on
//! them (PutApprovalResult, Stop, Retry, stage transitions).

use crate::action_types::BUILT_IN;
use crate::engine::{self, ActionStatus, Event, Execution, Position};
use crate::error::{err, ErrorKind, Result};
use crate::providers::Job;
use crate::{load_pipeline, CodePipeline, Disabled, Meta};
use serde_json::Value;
use slipway_model::codepipeline::*;
use slipway_store::now;
use slipway_store::pipelines::{self as db, Executions, Runs};
use std::collections::{BTreeMap, HashMap};

/// One stored action run.
struct RunRow {
    id: String,
    execution: String,
    stage: String,
    action: String,
    status: String,
    job: Job,
    external: Option<String>,
    detail: Value,
    started: f64,
    updated: f64,
}

fn run_from(r: db::RunRow) -> Result<RunRow> {
    Ok(RunRow {
        job: serde_json::from_str(&r.job)?,
        detail: serde_json::from_str(&r.detail).unwrap_or_default(),
        id: r.id,
        execution: r.execution,
        stage: r.stage,
        action: r.action,
        status: r.status,
        external: r.external,
        started: r.started,
        updated: r.updated,
    })
}

pub(crate) fn exec_not_found(id: &str, pipeline: &str) -> crate::error::Error {
    err(
        ErrorKind::PipelineExecutionNotFoundException,
        format!(
            "Pipeline Execution with id '{id}' does not exist in pipeline with name '{pipeline}'"
        ),
    )
}

impl CodePipeline {
    pub(crate) async fn execution_of(&self, pipeline: &str, id: &str) -> Result<(Execution, Meta)> {
        self.execution(pipeline, id).await
    }

    async fn execution(&self, pipeline: &str, id: &str) -> Result<(Execution, Meta)> {
        let mut conn = self.store().pool().acquire().await?;
        let row = db::executions(&mut conn, &self.region, pipeline, Executions::One(id))
            .await?
            .pop()
            .ok_or_else(|| exec_not_found(id, pipeline))?;
        Ok((
            serde_json::from_str(&row.state)?,
            serde_json::from_str(&row.meta)?,
        ))
    }

    /// Executions of pipeline `name` with their metadata.
    pub(crate) async fn executions_of(
        &self,
        name: &str,
        which: Executions<'_>,
    ) -> Result<Vec<(Execution, Meta)>> {
        let mut conn = self.store().pool().acquire().await?;
        db::executions(&mut conn, &self.region, name, which)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    serde_json::from_str(&r.state)?,
                    serde_json::from_str(&r.meta)?,
                ))
            })
            .collect()
    }

    async fn runs(&self, which: Runs<'_>) -> Result<Vec<RunRow>> {
        let mut conn = self.store().pool().acquire().await?;
        db::runs(&mut conn, &self.region, which)
            .await?
            .into_iter()
            .map(run_from)
            .collect()
    }

    /// GetPipelineState.
    pub async fn pipeline_state(&self, name: &str) -> Result<GetPipelineStateOutput> {
        let p = self.pipeline(name).await?;
        let latest: Vec<&str> = p.latest.values().map(String::as_str).collect();
        let execs = self
            .executions_of(name, Executions::ActiveAnd(&latest))
            .await?;
        let by_id: HashMap<&str, &Execution> =
            execs.iter().map(|(e, _)| (e.id.as_str(), e)).collect();
        let run_ids: Vec<String> = execs
            .iter()
            .flat_map(|(e, _)| {
                e.stages
                    .iter()
                    .flat_map(|s| s.actions.iter().filter_map(|a| a.id.clone()))
            })
            .collect();
        let refs: Vec<&str> = run_ids.iter().map(String::as_str).collect();
        let runs: HashMap<String, RunRow> = self
            .runs(Runs::Ids(&refs))
            .await?
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut stage_states = Vec::new();
        for sd in p.declaration.stages.iter().flatten() {
            let sname = sd.name.clone().unwrap_or_default();
            let latest = p
                .latest
                .get(&sname)
                .and_then(|id| by_id.get(id.as_str()).copied());
            let index = latest.and_then(|e| e.plan.stages.iter().position(|s| s.name == sname));
            let inbound: Vec<StageExecution> = execs
                .iter()
                .filter(|(e, _)| {
                    e.status.is_active()
                        && matches!(e.position, Position::Waiting(n) if e.plan.stages.get(n).is_some_and(|s| s.name == sname))
                })
                .map(|(e, _)| StageExecution {
                    pipeline_execution_id: Some(e.id.clone()),
                    status: Some("InProgress".into()),
                    r#type: Some("STANDARD".into()),
                })
                .collect();
            let disabled = p.disabled.get(&sname);
            let latest_run = latest.zip(index).map(|(e, si)| &e.stages[si]);
            let mut action_states = Vec::new();
            for ad in sd.actions.iter().flatten() {
                let aname = ad.name.clone().unwrap_or_default();
                let run = latest.zip(index).and_then(|(e, si)| {
                    let ai = e.plan.stages[si]
                        .actions
                        .iter()
                        .position(|a| a.name == aname)?;
                    Some(&e.stages[si].actions[ai])
                });
                let latest_execution = run.and_then(|r| {
                    let id = r.id.clone()?;
                    let row = runs.get(&id);
                    let status = r.status?;
                    let approval = ad
                        .action_type_id
                        .as_ref()
                        .and_then(|t| t.category.as_deref())
                        == Some("Approval");
                    Some(ActionExecution {
                        action_execution_id: Some(id),
                        status: Some(status.as_str().into()),
                        summary: r.output.summary.clone().or_else(|| {
                            row.and_then(|x| x.detail["summary"].as_str().map(str::to_owned))
                        }),
                        last_status_change: Some(r.updated),
                        token: (approval && status == ActionStatus::InProgress)
                            .then(|| row.and_then(|x| x.external.clone()))
                            .flatten(),
                        external_execution_id: r.output.external_id.clone().or_else(|| {
                            (!approval)
                                .then(|| row.and_then(|x| x.external.clone()))
                                .flatten()
                        }),
                        external_execution_url: r.output.external_url.clone(),
                        error_details: r.error.as_ref().map(|(c, m)| ErrorDetails {
                            code: Some(c.clone()),
                            message: Some(m.clone()),
                        }),
                        ..Default::default()
                    })
                });
                action_states.push(ActionState {
                    action_name: Some(aname),
                    current_revision: run.and_then(|r| r.output.revision.as_ref()).map(|rev| {
                        ActionRevision {
                            revision_id: Some(rev.revision_id.clone()),
                            revision_change_id: Some(rev.revision_id.clone()),
                            created: rev.created,
                        }
                    }),
                    latest_execution,
                    ..Default::default()
                });
            }
            stage_states.push(StageState {
                stage_name: Some(sname.clone()),
                inbound_execution: inbound.last().cloned(),
                inbound_executions: (!inbound.is_empty()).then_some(inbound),
                inbound_transition_state: Some(TransitionState {
                    enabled: Some(disabled.is_none()),
                    last_changed_by: disabled.map(|d| d.by.clone()),
                    last_changed_at: disabled.map(|d| d.at),
                    disabled_reason: disabled.map(|d| d.reason.clone()),
                }),
                action_states: Some(action_states),
                latest_execution: latest.zip(index).and_then(|(e, si)| {
                    Some(StageExecution {
                        pipeline_execution_id: Some(e.id.clone()),
                        status: Some(e.stages[si].status?.as_str().into()),
                        r#type: Some("STANDARD".into()),
                    })
                }),
                before_entry_condition_state: latest_run
                    .and_then(|r| crate::conditions::state_of(r, engine::CondKind::BeforeEntry)),
                on_success_condition_state: latest_run
                    .and_then(|r| crate::conditions::state_of(r, engine::CondKind::OnSuccess)),
                on_failure_condition_state: latest_run
                    .and_then(|r| crate::conditions::state_of(r, engine::CondKind::OnFailure)),
                ..Default::default()
            });
        }
        Ok(GetPipelineStateOutput {
            pipeline_name: Some(name.to_owned()),
            pipeline_version: Some(p.version as i32),
            stage_states: Some(stage_states),
            created: Some(p.created),
            updated: Some(p.updated),
        })
    }

    fn revisions(e: &Execution) -> Vec<(String, String, engine::Revision)> {
        e.plan
            .stages
            .iter()
            .zip(&e.stages)
            .take(1)
            .flat_map(|(sp, sr)| {
                sp.actions.iter().zip(&sr.actions).filter_map(|(ap, ar)| {
                    let rev = ar.output.revision.clone()?;
                    let artifact = ar
                        .output
                        .artifacts
                        .first()
                        .map(|a| a.name.clone())
                        .unwrap_or_default();
                    Some((ap.name.clone(), artifact, rev))
                })
            })
            .collect()
    }

    /// GetPipelineExecution.
    pub async fn pipeline_execution(&self, name: &str, id: &str) -> Result<PipelineExecution> {
        self.pipeline(name).await?;
        let (e, meta) = self.execution(name, id).await?;
        Ok(PipelineExecution {
            pipeline_name: Some(name.to_owned()),
            pipeline_version: Some(e.version as i32),
            pipeline_execution_id: Some(e.id.clone()),
            status: Some(e.status.as_str().into()),
            status_summary: e.summary.clone(),
            artifact_revisions: Some(
                Self::revisions(&e)
                    .into_iter()
                    .map(|(_, artifact, rev)| ArtifactRevision {
                        name: Some(artifact),
                        revision_id: Some(rev.revision_id),
                        revision_summary: rev.summary,
                        created: rev.created,
                        revision_url: rev.url,
                        ..Default::default()
                    })
                    .collect(),
            ),
            variables: (!meta.variables.is_empty()).then(|| {
                meta.variables
                    .iter()
                    .map(|(k, v)| ResolvedPipelineVariable {
                        name: Some(k.clone()),
                        resolved_value: Some(v.clone()),
                    })
                    .collect()
            }),
            trigger: Some(trigger(&meta)),
            execution_mode: Some(e.mode.as_str().into()),
            execution_type: Some(execution_type(&meta).into()),
            rollback_metadata: rollback(&meta),
        })
    }

    /// ListPipelineExecutions: newest first.
    pub async fn list_executions(
        &self,
        name: &str,
        succeeded_in_stage: Option<&str>,
    ) -> Result<Vec<PipelineExecutionSummary>> {
        self.pipeline(name).await?;
        let mut out = Vec::new();
        for (e, meta) in self.executions_of(name, Executions::All).await? {
            if let Some(stage) = succeeded_in_stage {
                let ok = e.plan.stages.iter().zip(&e.stages).any(|(p, s)| {
                    p.name == stage && s.status == Some(engine::StageStatus::Succeeded)
                });
                if !ok {
                    continue;
                }
            }
            out.push(PipelineExecutionSummary {
                pipeline_execution_id: Some(e.id.clone()),
                status: Some(e.status.as_str().into()),
                status_summary: e.summary.clone(),
                start_time: Some(e.started),
                last_update_time: Some(e.updated),
                source_revisions: Some(
                    Self::revisions(&e)
                        .into_iter()
                        .map(|(action, _, rev)| SourceRevision {
                            action_name: Some(action),
                            revision_id: Some(rev.revision_id),
                            revision_summary: rev.summary,
                            revision_url: rev.url,
                        })
                        .collect(),
                ),
                trigger: Some(trigger(&meta)),
                stop_trigger: meta
                    .stop_reason
                    .clone()
                    .map(|r| StopExecutionTrigger { reason: Some(r) }),
                execution_mode: Some(e.mode.as_str().into()),
                execution_type: Some(execution_type(&meta).into()),
                rollback_metadata: rollback(&meta),
            });
        }
        Ok(out)
    }

    /// ListActionExecutions: newest first, of one execution when `execution` is given.
    pub async fn list_action_executions(
        &self,
        name: &str,
        execution: Option<&str>,
    ) -> Result<Vec<ActionExecutionDetail>> {
        self.pipeline(name).await?;
        if let Some(id) = execution {
            self.execution(name, id).await?;
        }
        let mut runs = match execution {
            Some(id) => {
                self.runs(Runs::Execution {
                    pipeline: name,
                    execution: id,
                })
                .await?
            }
            None => self.runs(Runs::Pipeline(name)).await?,
        };
        runs.sort_by(|a, b| b.started.total_cmp(&a.started));
        Ok(runs.into_iter().map(|r| action_detail(&r)).collect())
    }

    /// ListActionTypes: the built-in ones (owner `AWS`) and the region's custom ones.
    pub async fn action_types(&self, owner: Option<&str>) -> Result<Vec<ActionType>> {
        let mut all = self.built_in_types(owner);
        if owner.is_none_or(|o| o == "Custom") {
            all.extend(self.custom_action_types().await?);
        }
        Ok(all)
    }

    fn built_in_types(&self, owner: Option<&str>) -> Vec<ActionType> {
        BUILT_IN
            .iter()
            .filter(|t| owner.is_none_or(|o| o == t.owner))
            .map(|t| ActionType {
                id: Some(ActionTypeId {
                    category: Some(t.category.into()),
                    owner: Some(t.owner.into()),
                    provider: Some(t.provider.into()),
                    version: Some(t.version.into()),
                }),
                settings: None,
                action_configuration_properties: Some(
                    t.properties
                        .iter()
                        .map(|p| ActionConfigurationProperty {
                            name: Some(p.name.into()),
                            required: Some(p.required),
                            key: Some(p.key),
                            secret: Some(p.secret),
                            queryable: Some(p.queryable),
                            description: None,
                            r#type: Some(p.kind.into()),
                        })
                        .collect(),
                ),
                input_artifact_details: Some(ArtifactDetails {
                    minimum_count: Some(t.inputs.0),
                    maximum_count: Some(t.inputs.1),
                }),
                output_artifact_details: Some(ArtifactDetails {
                    minimum_count: Some(t.outputs.0),
                    maximum_count: Some(t.outputs.1),
                }),
            })
            .collect()
    }

    /// GetActionType: a built-in action type (owner AWS) described as a declaration; its
    /// actions are run by the service itself, which polls for them as a job worker would.
    pub fn action_type_declaration(
        &self,
        id: &ActionTypeIdentifier,
    ) -> Result<ActionTypeDeclaration> {
        let f = |x: &Option<String>| x.clone().unwrap_or_default();
        let (c, o, p, v) = (
            f(&id.category),
            f(&id.owner),
            f(&id.provider),
            f(&id.version),
        );
        let Some(t) = BUILT_IN
            .iter()
            .find(|t| (t.category, t.owner, t.provider, t.version) == (&*c, &*o, &*p, &*v))
        else {
            return Err(err(
                ErrorKind::ActionTypeNotFoundException,
                format!("Action type {c}/{o}/{p}/{v} was not found"),
            ));
        };
        Ok(ActionTypeDeclaration {
            description: Some(format!(
                "{} {} action, run by Slipway",
                t.provider, t.category
            )),
            executor: Some(ActionTypeExecutor {
                r#type: Some("JobWorker".into()),
                configuration: Some(ExecutorConfiguration {
                    job_worker_executor_configuration: Some(JobWorkerExecutorConfiguration {
                        polling_accounts: Some(vec![self.account_id().to_owned()]),
                        polling_service_principals: Some(vec!["codepipeline.amazonaws.com".into()]),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            id: Some(id.clone()),
            input_artifact_details: Some(ActionTypeArtifactDetails {
                minimum_count: Some(t.inputs.0),
                maximum_count: Some(t.inputs.1),
            }),
            output_artifact_details: Some(ActionTypeArtifactDetails {
                minimum_count: Some(t.outputs.0),
                maximum_count: Some(t.outputs.1),
            }),
            permissions: None,
            properties: Some(
                t.properties
                    .iter()
                    .map(|p| ActionTypeProperty {
                        name: Some(p.name.into()),
                        optional: Some(!p.required),
                        key: Some(p.key),
                        no_echo: Some(p.secret),
                        queryable: Some(p.queryable),
                        description: None,
                    })
                    .collect(),
            ),
            urls: None,
        })
    }

    /// UpdateActionType: built-in types are not the caller's to change, and Slipway keeps
    /// no ThirdParty types.
    pub fn update_action_type(&self, d: &ActionTypeDeclaration) -> Result<()> {
        let id = d.id.clone().unwrap_or_default();
        self.action_type_declaration(&id)?;
        Err(err(
            ErrorKind::RequestFailedException,
            format!(
                "Action type {}/{}/{} is built in (owner AWS) and cannot be updated",
                id.category.unwrap_or_default(),
                id.provider.unwrap_or_default(),
                id.version.unwrap_or_default()
            ),
        ))
    }

    /// ListDeployActionExecutionTargets: the targets a deploy action execution deployed to.
    /// Slipway's deploy providers so far (S3) have none; CodeDeploy's will.
    pub async fn deploy_targets(
        &self,
        pipeline: &str,
        action_execution: &str,
    ) -> Result<Vec<DeployActionExecutionTarget>> {
        self.pipeline(pipeline).await?;
        let runs = self
            .runs(Runs::One {
                pipeline,
                id: action_execution,
            })
            .await?;
        if runs.is_empty() {
            return Err(err(
                ErrorKind::ActionExecutionNotFoundException,
                format!(
                    "Action execution {action_execution} does not exist in pipeline {pipeline}"
                ),
            ));
        }
        Ok(Vec::new())
    }

    // ----- operations on executions -----

    /// PutApprovalResult: the approval's time.
    pub async fn put_approval_result(&self, name: &str, a: &Approval<'_>, by: &str) -> Result<f64> {
        let (stage, action, token, approved, summary) =
            (a.stage, a.action, a.token, a.approved, a.summary);
        let p = self.pipeline(name).await?;
        let sd = p
            .declaration
            .stages
            .iter()
            .flatten()
            .find(|s| s.name.as_deref() == Some(stage))
            .ok_or_else(|| {
                err(
                    ErrorKind::StageNotFoundException,
                    format!("Stage {stage} does not exist in pipeline {name}"),
                )
            })?;
        let ad = sd
            .actions
            .iter()
            .flatten()
            .find(|a| a.name.as_deref() == Some(action))
            .ok_or_else(|| {
                err(
                    ErrorKind::ActionNotFoundException,
                    format!("Action {action} does not exist in stage {stage} of pipeline {name}"),
                )
            })?;
        if ad
            .action_type_id
            .as_ref()
            .and_then(|t| t.category.as_deref())
            != Some("Approval")
        {
            return Err(err(
                ErrorKind::InvalidApprovalTokenException,
                format!("Action {action} is not an approval action"),
            ));
        }
        let mut tx = self.store().begin_write().await?;
        let rows = db::runs(
            &mut tx,
            &self.region,
            Runs::Approval {
                pipeline: name,
                stage,
                action,
                token,
            },
        )
        .await?;
        let Some(run) = rows.into_iter().map(run_from).next().transpose()? else {
            return Err(err(
                ErrorKind::InvalidApprovalTokenException,
                format!(
                    "The approval token {token} is not valid for action {action} in stage {stage}"
                ),
            ));
        };
        if run.status == "done" {
            return Err(err(
                ErrorKind::ApprovalAlreadyCompletedException,
                format!(
                    "The approval for action {action} in stage {stage} has already been completed"
                ),
            ));
        }
        let output = engine::ActionOutput {
            summary: Some(summary.to_owned()),
            external_id: Some(by.to_owned()),
            ..Default::default()
        };
        let result = if approved {
            engine::ActionResult::Succeeded(output)
        } else {
            engine::ActionResult::Failed {
                code: "JobFailed".into(),
                message: format!("Rejected by {by}: {summary}"),
                output,
            }
        };
        let at = now();
        self.finish_run(&mut tx, &run.job, result).await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(at)
    }

    /// PutActionRevision: starts the pipeline with `revision` for source action `action`
    /// unless that is the revision it last ran with; (whether it was new, the execution).
    pub async fn put_action_revision(
        &self,
        name: &str,
        stage: &str,
        action: &str,
        revision: &str,
    ) -> Result<(bool, Option<String>)> {
        let p = self.pipeline(name).await?;
        let sd = p
            .declaration
            .stages
            .iter()
            .flatten()
            .find(|s| s.name.as_deref() == Some(stage))
            .ok_or_else(|| {
                err(
                    ErrorKind::StageNotFoundException,
                    format!("Stage {stage} does not exist in pipeline {name}"),
                )
            })?;
        if !sd
            .actions
            .iter()
            .flatten()
            .any(|a| a.name.as_deref() == Some(action))
        {
            return Err(err(
                ErrorKind::ActionNotFoundException,
                format!("Action {action} does not exist in stage {stage} of pipeline {name}"),
            ));
        }
        let last = self
            .list_executions(name, None)
            .await?
            .into_iter()
            .flat_map(|e| e.source_revisions.unwrap_or_default())
            .find(|r| r.action_name.as_deref() == Some(action))
            .and_then(|r| r.revision_id);
        if last.as_deref() == Some(revision) {
            return Ok((false, None));
        }
        let trigger = crate::Trigger {
            kind: "PutActionRevision".into(),
            detail: Some(action.to_owned()),
            revisions: BTreeMap::from([(action.to_owned(), revision.to_owned())]),
        };
        Ok((
            true,
            Some(self.start_execution(name, &[], None, trigger).await?),
        ))
    }

    /// StopPipelineExecution.
    pub async fn stop_execution(
        &self,
        name: &str,
        id: &str,
        abandon: bool,
        reason: Option<String>,
    ) -> Result<()> {
        self.pipeline(name).await?;
        self.execution(name, id).await?;
        self.transition(
            name,
            Event::Stop {
                execution: id.to_owned(),
                abandon,
                reason: reason.clone(),
            },
        )
        .await?;
        if let Some(r) = reason {
            let mut tx = self.store().begin_write().await?;
            let meta = db::execution_meta(&mut tx, id)
                .await?
                .ok_or_else(|| exec_not_found(id, name))?;
            let mut meta: Meta = serde_json::from_str(&meta)?;
            meta.stop_reason = Some(r);
            db::set_execution_meta(&mut tx, id, &serde_json::to_string(&meta)?).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// RetryStageExecution.
    pub async fn retry_stage(&self, name: &str, stage: &str, id: &str, all: bool) -> Result<()> {
        let p = self.pipeline(name).await?;
        if !p
            .declaration
            .stages
            .iter()
            .flatten()
            .any(|s| s.name.as_deref() == Some(stage))
        {
            return Err(err(
                ErrorKind::StageNotFoundException,
                format!("Stage {stage} does not exist in pipeline {name}"),
            ));
        }
        let (e, _) = self.execution(name, id).await?;
        let Some(index) = e.plan.stages.iter().position(|s| s.name == stage) else {
            return Err(err(
                ErrorKind::StageNotRetryableException,
                format!("Stage {stage} was not part of pipeline execution {id}"),
            ));
        };
        if e.version != p.version {
            return Err(err(
                ErrorKind::StageNotRetryableException,
                format!("Pipeline execution {id} ran version {} of the pipeline, which has changed since (now version {}); it cannot be retried", e.version, p.version),
            ));
        }
        self.transition(
            name,
            Event::Retry {
                execution: id.to_owned(),
                stage: index,
                all,
            },
        )
        .await
    }

    /// Enable/DisableStageTransition (inbound).
    pub async fn set_transition(
        &self,
        name: &str,
        stage: &str,
        kind: &str,
        disabled: Option<(String, String)>,
    ) -> Result<()> {
        if kind != "Inbound" {
            return Err(err(
                ErrorKind::ValidationException,
                "Slipway controls inbound stage transitions only; disable the next stage's inbound transition instead of this stage's outbound one",
            ));
        }
        let mut tx = self.store().begin_write().await?;
        let p = load_pipeline(&mut tx, &self.region, name)
            .await?
            .ok_or_else(|| crate::not_found(self.account_id(), name))?;
        if !p
            .declaration
            .stages
            .iter()
            .flatten()
            .any(|s| s.name.as_deref() == Some(stage))
        {
            return Err(err(
                ErrorKind::StageNotFoundException,
                format!("Stage {stage} does not exist in pipeline {name}"),
            ));
        }
        let mut map: BTreeMap<String, Disabled> = p.disabled.clone();
        let enabled = disabled.is_none();
        match disabled {
            Some((reason, by)) => {
                map.insert(
                    stage.to_owned(),
                    Disabled {
                        reason,
                        by,
                        at: now(),
                    },
                );
            }
            None => {
                map.remove(stage);
            }
        }
        db::set_transitions(&mut tx, &self.region, name, &serde_json::to_string(&map)?).await?;
        let p = crate::Pipeline { disabled: map, ..p };
        self.apply(
            &mut tx,
            &p,
            Event::Transition {
                stage: stage.to_owned(),
                enabled,
            },
            None,
        )
        .await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(())
    }
}

/// A PutApprovalResult request.
pub struct Approval<'a> {
    pub stage: &'a str,
    pub action: &'a str,
    pub token: &'a str,
    pub approved: bool,
    pub summary: &'a str,
}

fn execution_type(meta: &Meta) -> &'static str {
    if meta.rollback_target.is_some() {
        "ROLLBACK"
    } else {
        "STANDARD"
    }
}

fn rollback(meta: &Meta) -> Option<PipelineRollbackMetadata> {
    meta.rollback_target
        .as_ref()
        .map(|t| PipelineRollbackMetadata {
            rollback_target_pipeline_execution_id: Some(t.clone()),
        })
}

fn trigger(meta: &Meta) -> ExecutionTrigger {
    ExecutionTrigger {
        trigger_type: Some(meta.trigger_type.clone()),
        trigger_detail: meta.trigger_detail.clone(),
    }
}

fn action_detail(r: &RunRow) -> ActionExecutionDetail {
    let status = match r.status.as_str() {
        "done" => r.detail["status"]
            .as_str()
            .unwrap_or("Abandoned")
            .to_owned(),
        "abandon" => "Abandoned".into(),
        _ => "InProgress".into(),
    };
    let output: engine::ActionOutput =
        serde_json::from_value(r.detail["output"].clone()).unwrap_or_default();
    let artifact = |a: &engine::Artifact| ArtifactDetail {
        name: Some(a.name.clone()),
        s3location: Some(S3Location {
            bucket: Some(a.bucket.clone()),
            key: Some(a.key.clone()),
        }),
    };
    let j = &r.job;
    ActionExecutionDetail {
        pipeline_execution_id: Some(r.execution.clone()),
        action_execution_id: Some(r.id.clone()),
        pipeline_version: Some(j.pipeline_version as i32),
        stage_name: Some(r.stage.clone()),
        action_name: Some(r.action.clone()),
        start_time: Some(r.started),
        last_update_time: Some(r.updated),
        updated_by: None,
        status: Some(status),
        input: Some(ActionExecutionInput {
            action_type_id: Some(ActionTypeId {
                category: Some(j.category.clone()),
                owner: Some(j.owner.clone()),
                provider: Some(j.provider.clone()),
                version: Some(j.version.clone()),
            }),
            configuration: Some(j.declared.clone()),
            resolved_configuration: Some(crate::shown(&j.configuration)),
            role_arn: None,
            region: Some(j.region.clone()),
            input_artifacts: Some(j.inputs.iter().map(artifact).collect()),
            namespace: j.namespace.clone(),
        }),
        output: Some(ActionExecutionOutput {
            output_artifacts: Some(output.artifacts.iter().map(artifact).collect()),
            execution_result: Some(ActionExecutionResult {
                external_execution_id: output.external_id.clone().or_else(|| r.external.clone()),
                external_execution_summary: output
                    .summary
                    .clone()
                    .or_else(|| r.detail["message"].as_str().map(str::to_owned)),
                external_execution_url: output.external_url.clone(),
                error_details: r.detail["code"].as_str().map(|c| ErrorDetails {
                    code: Some(c.to_owned()),
                    message: r.detail["message"].as_str().map(str::to_owned),
                }),
                log_stream_arn: None,
            }),
            output_variables: (!output.variables.is_empty()).then(|| output.variables.clone()),
        }),
    }
}
