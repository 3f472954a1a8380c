//! CodePipeline's JSON API over `slipway-codepipeline` (whose boundary already speaks the
//! generated shapes), and the build service a pipeline's CodeBuild actions start builds
//! through (the same StartBuild path as the API's, variables resolved alike).

use crate::codebuild_api::CodeBuildService;
use futures_util::future::BoxFuture;
use slipway_codepipeline::{CodePipeline, Trigger};
use slipway_model::codepipeline::*;
use slipway_model::{codebuild, ApiError, Context};
use slipway_store::paging::paginate;
use std::sync::{Arc, Weak};

pub struct CodePipelineService {
    pub cp: CodePipeline,
}

fn name(n: Option<String>) -> String {
    n.unwrap_or_default()
}

/// One page of `items` (`max` per page, else `default`).
fn page<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: Option<i32>,
    default: usize,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let per_page = max.map_or(default, |m| m.max(1) as usize);
    let p = paginate(items, token, per_page).ok_or_else(|| {
        ApiError::from(slipway_codepipeline::error::err(
            ErrorKind::InvalidNextTokenException,
            "The next token is not valid",
        ))
    })?;
    Ok((p.items, p.next_token))
}

impl CodePipelineApi for CodePipelineService {
    async fn create_pipeline(
        &self,
        ctx: &Context,
        input: CreatePipelineInput,
    ) -> Result<CreatePipelineOutput, ApiError> {
        let (pipeline, tags) = self
            .cp
            .create_pipeline(
                input.pipeline.unwrap_or_default(),
                input.tags.unwrap_or_default(),
                &ctx.principal.arn,
            )
            .await?;
        Ok(CreatePipelineOutput {
            pipeline: Some(pipeline),
            tags: (!tags.is_empty()).then_some(tags),
        })
    }

    async fn get_pipeline(
        &self,
        _ctx: &Context,
        input: GetPipelineInput,
    ) -> Result<GetPipelineOutput, ApiError> {
        let (pipeline, metadata) = self
            .cp
            .get_pipeline(&name(input.name), input.version.map(i64::from))
            .await?;
        Ok(GetPipelineOutput {
            pipeline: Some(pipeline),
            metadata: Some(metadata),
        })
    }

    async fn update_pipeline(
        &self,
        ctx: &Context,
        input: UpdatePipelineInput,
    ) -> Result<UpdatePipelineOutput, ApiError> {
        let pipeline = self
            .cp
            .update_pipeline(input.pipeline.unwrap_or_default(), &ctx.principal.arn)
            .await?;
        Ok(UpdatePipelineOutput {
            pipeline: Some(pipeline),
        })
    }

    async fn delete_pipeline(
        &self,
        _ctx: &Context,
        input: DeletePipelineInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        self.cp.delete_pipeline(&name(input.name)).await?;
        Ok(Default::default())
    }

    async fn list_pipelines(
        &self,
        _ctx: &Context,
        input: ListPipelinesInput,
    ) -> Result<ListPipelinesOutput, ApiError> {
        let all = self.cp.list_pipelines().await?;
        let (pipelines, next_token) =
            page(all, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListPipelinesOutput {
            pipelines: Some(pipelines),
            next_token,
        })
    }

    async fn start_pipeline_execution(
        &self,
        ctx: &Context,
        input: StartPipelineExecutionInput,
    ) -> Result<StartPipelineExecutionOutput, ApiError> {
        let variables: Vec<(String, String)> = input
            .variables
            .unwrap_or_default()
            .into_iter()
            .map(|v| (v.name.unwrap_or_default(), v.value.unwrap_or_default()))
            .collect();
        let mut revisions = std::collections::BTreeMap::new();
        for o in input.source_revisions.unwrap_or_default() {
            revisions.insert(
                o.action_name.unwrap_or_default(),
                o.revision_value.unwrap_or_default(),
            );
        }
        let trigger = Trigger {
            kind: "StartPipelineExecution".into(),
            detail: Some(ctx.principal.arn.clone()),
            revisions,
        };
        let id = self
            .cp
            .start_execution(
                &name(input.name),
                &variables,
                input.client_request_token.as_deref(),
                trigger,
            )
            .await?;
        Ok(StartPipelineExecutionOutput {
            pipeline_execution_id: Some(id),
        })
    }

    async fn get_pipeline_state(
        &self,
        _ctx: &Context,
        input: GetPipelineStateInput,
    ) -> Result<GetPipelineStateOutput, ApiError> {
        Ok(self.cp.pipeline_state(&name(input.name)).await?)
    }

    async fn get_pipeline_execution(
        &self,
        _ctx: &Context,
        input: GetPipelineExecutionInput,
    ) -> Result<GetPipelineExecutionOutput, ApiError> {
        let e = self
            .cp
            .pipeline_execution(
                &name(input.pipeline_name),
                &name(input.pipeline_execution_id),
            )
            .await?;
        Ok(GetPipelineExecutionOutput {
            pipeline_execution: Some(e),
        })
    }

    async fn list_pipeline_executions(
        &self,
        _ctx: &Context,
        input: ListPipelineExecutionsInput,
    ) -> Result<ListPipelineExecutionsOutput, ApiError> {
        let stage = input
            .filter
            .and_then(|f| f.succeeded_in_stage)
            .and_then(|s| s.stage_name);
        let all = self
            .cp
            .list_executions(&name(input.pipeline_name), stage.as_deref())
            .await?;
        let (items, next_token) = page(all, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListPipelineExecutionsOutput {
            pipeline_execution_summaries: Some(items),
            next_token,
        })
    }

    async fn list_action_executions(
        &self,
        _ctx: &Context,
        input: ListActionExecutionsInput,
    ) -> Result<ListActionExecutionsOutput, ApiError> {
        let execution = input.filter.and_then(|f| f.pipeline_execution_id);
        let all = self
            .cp
            .list_action_executions(&name(input.pipeline_name), execution.as_deref())
            .await?;
        let (items, next_token) = page(all, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListActionExecutionsOutput {
            action_execution_details: Some(items),
            next_token,
        })
    }

    async fn list_action_types(
        &self,
        _ctx: &Context,
        input: ListActionTypesInput,
    ) -> Result<ListActionTypesOutput, ApiError> {
        let all = self
            .cp
            .action_types(input.action_owner_filter.as_deref())
            .await?;
        let (items, next_token) = page(all, input.next_token.as_deref(), None, 100)?;
        Ok(ListActionTypesOutput {
            action_types: Some(items),
            next_token,
        })
    }

    async fn put_approval_result(
        &self,
        ctx: &Context,
        input: PutApprovalResultInput,
    ) -> Result<PutApprovalResultOutput, ApiError> {
        let result = input.result.unwrap_or_default();
        let at = self
            .cp
            .put_approval_result(
                &name(input.pipeline_name),
                &slipway_codepipeline::Approval {
                    stage: input.stage_name.as_deref().unwrap_or_default(),
                    action: input.action_name.as_deref().unwrap_or_default(),
                    token: input.token.as_deref().unwrap_or_default(),
                    approved: result.status.as_deref() == Some("Approved"),
                    summary: result.summary.as_deref().unwrap_or_default(),
                },
                &ctx.principal.arn,
            )
            .await?;
        Ok(PutApprovalResultOutput {
            approved_at: Some(at),
        })
    }

    async fn retry_stage_execution(
        &self,
        _ctx: &Context,
        input: RetryStageExecutionInput,
    ) -> Result<RetryStageExecutionOutput, ApiError> {
        let id = name(input.pipeline_execution_id);
        self.cp
            .retry_stage(
                &name(input.pipeline_name),
                &name(input.stage_name),
                &id,
                input.retry_mode.as_deref() == Some("ALL_ACTIONS"),
            )
            .await?;
        Ok(RetryStageExecutionOutput {
            pipeline_execution_id: Some(id),
        })
    }

    async fn stop_pipeline_execution(
        &self,
        _ctx: &Context,
        input: StopPipelineExecutionInput,
    ) -> Result<StopPipelineExecutionOutput, ApiError> {
        let id = name(input.pipeline_execution_id);
        self.cp
            .stop_execution(
                &name(input.pipeline_name),
                &id,
                input.abandon.unwrap_or(false),
                input.reason,
            )
            .await?;
        Ok(StopPipelineExecutionOutput {
            pipeline_execution_id: Some(id),
        })
    }

    async fn enable_stage_transition(
        &self,
        _ctx: &Context,
        input: EnableStageTransitionInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        self.cp
            .set_transition(
                &name(input.pipeline_name),
                &name(input.stage_name),
                input.transition_type.as_deref().unwrap_or_default(),
                None,
            )
            .await?;
        Ok(Default::default())
    }

    async fn disable_stage_transition(
        &self,
        ctx: &Context,
        input: DisableStageTransitionInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        self.cp
            .set_transition(
                &name(input.pipeline_name),
                &name(input.stage_name),
                input.transition_type.as_deref().unwrap_or_default(),
                Some((name(input.reason), ctx.principal.arn.clone())),
            )
            .await?;
        Ok(Default::default())
    }

    async fn create_custom_action_type(
        &self,
        _ctx: &Context,
        input: CreateCustomActionTypeInput,
    ) -> Result<CreateCustomActionTypeOutput, ApiError> {
        let tags = input.tags.clone();
        let t = self.cp.create_action_type(input).await?;
        Ok(CreateCustomActionTypeOutput {
            action_type: Some(t),
            tags,
        })
    }

    async fn delete_custom_action_type(
        &self,
        _ctx: &Context,
        input: DeleteCustomActionTypeInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        self.cp
            .delete_action_type(
                input.category.as_deref().unwrap_or_default(),
                input.provider.as_deref().unwrap_or_default(),
                input.version.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok(Default::default())
    }

    async fn poll_for_jobs(
        &self,
        _ctx: &Context,
        input: PollForJobsInput,
    ) -> Result<PollForJobsOutput, ApiError> {
        let jobs = self
            .cp
            .poll_for_jobs(
                &input.action_type_id.unwrap_or_default(),
                input.max_batch_size.unwrap_or(1).max(1) as usize,
                &input.query_param.unwrap_or_default(),
            )
            .await?;
        Ok(PollForJobsOutput { jobs: Some(jobs) })
    }

    async fn acknowledge_job(
        &self,
        _ctx: &Context,
        input: AcknowledgeJobInput,
    ) -> Result<AcknowledgeJobOutput, ApiError> {
        let status = self
            .cp
            .acknowledge_job(&name(input.job_id), &name(input.nonce))
            .await?;
        Ok(AcknowledgeJobOutput {
            status: Some(status),
        })
    }

    async fn get_job_details(
        &self,
        _ctx: &Context,
        input: GetJobDetailsInput,
    ) -> Result<GetJobDetailsOutput, ApiError> {
        let details = self.cp.job_details(&name(input.job_id)).await?;
        Ok(GetJobDetailsOutput {
            job_details: Some(details),
        })
    }

    async fn put_job_success_result(
        &self,
        _ctx: &Context,
        input: PutJobSuccessResultInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        let details = input.execution_details.unwrap_or_default();
        let revision = input.current_revision.unwrap_or_default();
        let result = slipway_codepipeline::jobs::JobResult {
            continuation_token: input.continuation_token,
            output_variables: input.output_variables,
            summary: details.summary,
            external_execution_id: details.external_execution_id,
            revision: revision.revision,
            revision_summary: revision.revision_summary,
            ..Default::default()
        };
        self.cp
            .put_job_result(&name(input.job_id), true, &result)
            .await?;
        Ok(Default::default())
    }

    async fn put_job_failure_result(
        &self,
        _ctx: &Context,
        input: PutJobFailureResultInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        let f = input.failure_details.unwrap_or_default();
        let result = slipway_codepipeline::jobs::JobResult {
            failure_type: f.r#type,
            message: f.message,
            external_execution_id: f.external_execution_id,
            ..Default::default()
        };
        self.cp
            .put_job_result(&name(input.job_id), false, &result)
            .await?;
        Ok(Default::default())
    }

    // ThirdParty action types are partners' (registered with AWS); none exist here, so
    // there are no third-party jobs.
    async fn poll_for_third_party_jobs(
        &self,
        _ctx: &Context,
        _input: PollForThirdPartyJobsInput,
    ) -> Result<PollForThirdPartyJobsOutput, ApiError> {
        Ok(PollForThirdPartyJobsOutput {
            jobs: Some(Vec::new()),
        })
    }

    async fn acknowledge_third_party_job(
        &self,
        _ctx: &Context,
        input: AcknowledgeThirdPartyJobInput,
    ) -> Result<AcknowledgeThirdPartyJobOutput, ApiError> {
        Err(no_third_party_job(input.job_id))
    }

    async fn get_third_party_job_details(
        &self,
        _ctx: &Context,
        input: GetThirdPartyJobDetailsInput,
    ) -> Result<GetThirdPartyJobDetailsOutput, ApiError> {
        Err(no_third_party_job(input.job_id))
    }

    async fn put_third_party_job_success_result(
        &self,
        _ctx: &Context,
        input: PutThirdPartyJobSuccessResultInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        Err(no_third_party_job(input.job_id))
    }

    async fn put_third_party_job_failure_result(
        &self,
        _ctx: &Context,
        input: PutThirdPartyJobFailureResultInput,
    ) -> Result<slipway_model::Empty, ApiError> {
        Err(no_third_party_job(input.job_id))
    }

    async fn put_action_revision(
        &self,
        _ctx: &Context,
        input: PutActionRevisionInput,
    ) -> Result<PutActionRevisionOutput, ApiError> {
        let revision = input.action_revision.unwrap_or_default();
        let (new_revision, id) = self
            .cp
            .put_action_revision(
                &name(input.pipeline_name),
                &name(input.stage_name),
                &name(input.action_name),
                &name(revision.revision_id),
            )
            .await?;
        Ok(PutActionRevisionOutput {
            new_revision: Some(new_revision),
            pipeline_execution_id: id,
        })
    }

    async fn rollback_stage(
        &self,
        _ctx: &Context,
        input: RollbackStageInput,
    ) -> Result<RollbackStageOutput, ApiError> {
        let id = self
            .cp
            .rollback_stage(
                &name(input.pipeline_name),
                &name(input.stage_name),
                &name(input.target_pipeline_execution_id),
            )
            .await?;
        Ok(RollbackStageOutput {
            pipeline_execution_id: Some(id),
        })
    }

    async fn list_rule_types(
        &self,
        _ctx: &Context,
        input: ListRuleTypesInput,
    ) -> Result<ListRuleTypesOutput, ApiError> {
        Ok(ListRuleTypesOutput {
            rule_types: Some(slipway_codepipeline::rule_types(
                input.rule_owner_filter.as_deref(),
            )),
        })
    }

    async fn list_rule_executions(
        &self,
        _ctx: &Context,
        input: ListRuleExecutionsInput,
    ) -> Result<ListRuleExecutionsOutput, ApiError> {
        let execution = input.filter.and_then(|f| f.pipeline_execution_id);
        let all = self
            .cp
            .list_rule_executions(&name(input.pipeline_name), execution.as_deref())
            .await?;
        let (items, next_token) = page(all, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListRuleExecutionsOutput {
            rule_execution_details: Some(items),
            next_token,
        })
    }

    async fn override_stage_condition(
        &self,
        _ctx: &Context,
        input: OverrideStageConditionInput,
    ) -> Result<slipway_model::runtime::Empty, ApiError> {
        self.cp
            .override_stage_condition(
                &name(input.pipeline_name),
                &name(input.stage_name),
                &name(input.pipeline_execution_id),
                &name(input.condition_type),
            )
            .await?;
        Ok(slipway_model::runtime::Empty::default())
    }

    async fn get_action_type(
        &self,
        _ctx: &Context,
        input: GetActionTypeInput,
    ) -> Result<GetActionTypeOutput, ApiError> {
        let id = ActionTypeIdentifier {
            category: input.category,
            owner: input.owner,
            provider: input.provider,
            version: input.version,
        };
        Ok(GetActionTypeOutput {
            action_type: Some(self.cp.action_type_declaration(&id)?),
        })
    }

    async fn update_action_type(
        &self,
        _ctx: &Context,
        input: UpdateActionTypeInput,
    ) -> Result<slipway_model::runtime::Empty, ApiError> {
        self.cp
            .update_action_type(&input.action_type.unwrap_or_default())?;
        Ok(slipway_model::runtime::Empty::default())
    }

    async fn list_deploy_action_execution_targets(
        &self,
        _ctx: &Context,
        input: ListDeployActionExecutionTargetsInput,
    ) -> Result<ListDeployActionExecutionTargetsOutput, ApiError> {
        let all = self
            .cp
            .deploy_targets(&name(input.pipeline_name), &name(input.action_execution_id))
            .await?;
        let (items, next_token) = page(all, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListDeployActionExecutionTargetsOutput {
            targets: Some(items),
            next_token,
        })
    }

    async fn put_webhook(
        &self,
        _ctx: &Context,
        input: PutWebhookInput,
    ) -> Result<PutWebhookOutput, ApiError> {
        let webhook = self
            .cp
            .put_webhook(
                input.webhook.unwrap_or_default(),
                input.tags.unwrap_or_default(),
            )
            .await?;
        Ok(PutWebhookOutput {
            webhook: Some(webhook),
        })
    }

    async fn list_webhooks(
        &self,
        _ctx: &Context,
        input: ListWebhooksInput,
    ) -> Result<ListWebhooksOutput, ApiError> {
        let all = self.cp.list_webhooks().await?;
        let (items, next_token) = page(all, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListWebhooksOutput {
            webhooks: Some(items),
            next_token,
        })
    }

    async fn delete_webhook(
        &self,
        _ctx: &Context,
        input: DeleteWebhookInput,
    ) -> Result<DeleteWebhookOutput, ApiError> {
        self.cp.delete_webhook(&name(input.name)).await?;
        Ok(DeleteWebhookOutput {})
    }

    async fn register_webhook_with_third_party(
        &self,
        _ctx: &Context,
        input: RegisterWebhookWithThirdPartyInput,
    ) -> Result<RegisterWebhookWithThirdPartyOutput, ApiError> {
        self.cp
            .register_webhook(&name(input.webhook_name), true)
            .await?;
        Ok(RegisterWebhookWithThirdPartyOutput {})
    }

    async fn deregister_webhook_with_third_party(
        &self,
        _ctx: &Context,
        input: DeregisterWebhookWithThirdPartyInput,
    ) -> Result<DeregisterWebhookWithThirdPartyOutput, ApiError> {
        self.cp
            .register_webhook(&name(input.webhook_name), false)
            .await?;
        Ok(DeregisterWebhookWithThirdPartyOutput {})
    }

    async fn list_tags_for_resource(
        &self,
        _ctx: &Context,
        input: ListTagsForResourceInput,
    ) -> Result<ListTagsForResourceOutput, ApiError> {
        let all = self.cp.list_tags(&name(input.resource_arn)).await?;
        let (tags, next_token) = page(all, input.next_token.as_deref(), input.max_results, 50)?;
        Ok(ListTagsForResourceOutput {
            tags: Some(tags),
            next_token,
        })
    }

    async fn tag_resource(
        &self,
        _ctx: &Context,
        input: TagResourceInput,
    ) -> Result<TagResourceOutput, ApiError> {
        self.cp
            .tag(&name(input.resource_arn), input.tags.unwrap_or_default())
            .await?;
        Ok(Default::default())
    }

    async fn untag_resource(
        &self,
        _ctx: &Context,
        input: UntagResourceInput,
    ) -> Result<UntagResourceOutput, ApiError> {
        self.cp
            .untag(
                &name(input.resource_arn),
                &input.tag_keys.unwrap_or_default(),
            )
            .await?;
        Ok(Default::default())
    }
}

fn no_third_party_job(id: Option<String>) -> ApiError {
    ApiError::new(
        "JobNotFoundException",
        400,
        format!("Job {} does not exist", id.unwrap_or_default()),
    )
}

/// The builds of pipelines, through the API layer's CodeBuild (which needs the server's
/// state: held weakly, as the state holds the pipeline service that holds this).
pub struct PipelineBuilds {
    pub state: std::sync::OnceLock<Weak<crate::AppState>>,
}

impl PipelineBuilds {
    fn state(&self) -> Result<Arc<crate::AppState>, String> {
        self.state
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "the server is shutting down".to_owned())
    }
}

impl slipway_codepipeline::BuildService for PipelineBuilds {
    fn start<'a>(
        &'a self,
        region: &'a str,
        input: codebuild::StartBuildInput,
        initiator: &'a str,
        principal: &'a str,
    ) -> BoxFuture<'a, Result<codebuild::Build, String>> {
        Box::pin(async move {
            let state = self.state()?;
            let svc = CodeBuildService {
                cb: state.codebuild.in_region(region),
                ssm: state.ssm.in_region(region),
                links: None,
            };
            svc.start_as(input, initiator, principal)
                .await
                .map_err(|e| e.message)
        })
    }

    fn get<'a>(
        &'a self,
        region: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<codebuild::Build>, String>> {
        Box::pin(async move {
            let state = self.state()?;
            let svc = CodeBuildService {
                cb: state.codebuild.in_region(region),
                ssm: state.ssm.in_region(region),
                links: None,
            };
            svc.get_build(id).await.map_err(|e| e.message)
        })
    }

    fn stop<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(state) = self.state() {
                if let Err(e) = state.codebuild.in_region(region).stop_build(id).await {
                    tracing::info!(error = %e, build = id, "stopping a pipeline's build");
                }
            }
        })
    }

    fn ensure_project<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let state = self.state()?;
            let cb = state.codebuild.in_region(region);
            let input = codebuild::CreateProjectInput {
                name: Some(name.to_owned()),
                description: Some(
                    "Runs the commands of CodePipeline Commands actions (managed by Slipway)"
                        .into(),
                ),
                source: Some(codebuild::ProjectSource {
                    r#type: Some("CODEPIPELINE".into()),
                    ..Default::default()
                }),
                artifacts: Some(codebuild::ProjectArtifacts {
                    r#type: Some("CODEPIPELINE".into()),
                    ..Default::default()
                }),
                environment: Some(codebuild::ProjectEnvironment {
                    r#type: Some("LINUX_CONTAINER".into()),
                    image: Some("aws/codebuild/amazonlinux-x86_64-standard:5.0".into()),
                    compute_type: Some("BUILD_GENERAL1_SMALL".into()),
                    ..Default::default()
                }),
                service_role: Some(format!(
                    "arn:aws:iam::{}:role/slipway-pipeline-commands",
                    state.account_id
                )),
                ..Default::default()
            };
            let doc = serde_json::to_value(&input).map_err(|e| e.to_string())?;
            match cb.create_project(doc).await {
                Ok(_) => Ok(()),
                // Made by an earlier action (or one beside this one).
                Err(e) if e.to_string().contains("already exists") => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}
