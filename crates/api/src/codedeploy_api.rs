//! CodeDeploy's JSON API over `slipway-codedeploy` (whose boundary speaks the generated
//! shapes), and the agents' command service (`CodeDeployCommandService_v20141006`).

use slipway_codedeploy::applications::RevisionQuery;
use slipway_codedeploy::error::err;
use slipway_codedeploy::CodeDeploy;
use slipway_model::codedeploy::*;
use slipway_model::codedeploy_commands as cmd;
use slipway_model::{ApiError, Context, Empty};
use slipway_store::paging::paginate;

pub struct CodeDeployService {
    pub cd: CodeDeploy,
}

fn s(v: Option<String>) -> String {
    v.unwrap_or_default()
}

/// One page of `items` (100 per page).
fn page<T>(items: Vec<T>, token: Option<&str>) -> Result<(Vec<T>, Option<String>), ApiError> {
    let p = paginate(items, token, 100).ok_or_else(|| {
        ApiError::from(err(
            ErrorKind::InvalidNextTokenException,
            "The next token is not valid",
        ))
    })?;
    Ok((p.items, p.next_token))
}

fn unsupported(what: &str) -> ApiError {
    err(
        ErrorKind::UnsupportedActionForDeploymentTypeException,
        format!("{what} is for the Lambda and ECS compute platforms, which Slipway does not run"),
    )
    .into()
}

impl CodeDeployApi for CodeDeployService {
    async fn create_application(
        &self,
        _ctx: &Context,
        input: CreateApplicationInput,
    ) -> Result<CreateApplicationOutput, ApiError> {
        let id = self
            .cd
            .create_application(
                &s(input.application_name),
                input.compute_platform.as_deref(),
                input.tags.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok(CreateApplicationOutput {
            application_id: Some(id),
        })
    }

    async fn get_application(
        &self,
        _ctx: &Context,
        input: GetApplicationInput,
    ) -> Result<GetApplicationOutput, ApiError> {
        Ok(GetApplicationOutput {
            application: Some(self.cd.get_application(&s(input.application_name)).await?),
        })
    }

    async fn batch_get_applications(
        &self,
        _ctx: &Context,
        input: BatchGetApplicationsInput,
    ) -> Result<BatchGetApplicationsOutput, ApiError> {
        let names = input.application_names.unwrap_or_default();
        if names.len() > 100 {
            return Err(err(
                ErrorKind::BatchLimitExceededException,
                "The maximum number of applications that can be returned is 100",
            )
            .into());
        }
        let mut out = Vec::new();
        for n in names {
            out.push(self.cd.get_application(&n).await?);
        }
        Ok(BatchGetApplicationsOutput {
            applications_info: Some(out),
        })
    }

    async fn list_applications(
        &self,
        _ctx: &Context,
        input: ListApplicationsInput,
    ) -> Result<ListApplicationsOutput, ApiError> {
        let (items, next) = page(
            self.cd.list_applications().await?,
            input.next_token.as_deref(),
        )?;
        Ok(ListApplicationsOutput {
            applications: Some(items),
            next_token: next,
        })
    }

    async fn update_application(
        &self,
        _ctx: &Context,
        input: UpdateApplicationInput,
    ) -> Result<Empty, ApiError> {
        let name = s(input.application_name);
        if name.is_empty() {
            return Err(err(
                ErrorKind::ApplicationNameRequiredException,
                "Application name is required",
            )
            .into());
        }
        let new = input.new_application_name.unwrap_or_else(|| name.clone());
        self.cd.update_application(&name, &new).await?;
        Ok(Empty {})
    }

    async fn delete_application(
        &self,
        _ctx: &Context,
        input: DeleteApplicationInput,
    ) -> Result<Empty, ApiError> {
        self.cd
            .delete_application(&s(input.application_name))
            .await?;
        Ok(Empty {})
    }

    async fn register_application_revision(
        &self,
        _ctx: &Context,
        input: RegisterApplicationRevisionInput,
    ) -> Result<Empty, ApiError> {
        if input
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 100)
        {
            return Err(err(
                ErrorKind::DescriptionTooLongException,
                "The description is too long (at most 100 characters)",
            )
            .into());
        }
        self.cd
            .register_revision(
                &s(input.application_name),
                input.revision.as_ref(),
                input.description.as_deref(),
            )
            .await?;
        Ok(Empty {})
    }

    async fn get_application_revision(
        &self,
        _ctx: &Context,
        input: GetApplicationRevisionInput,
    ) -> Result<GetApplicationRevisionOutput, ApiError> {
        let app = s(input.application_name);
        let info = self.cd.get_revision(&app, input.revision.as_ref()).await?;
        Ok(GetApplicationRevisionOutput {
            application_name: Some(app),
            revision: input.revision,
            revision_info: Some(info),
        })
    }

    async fn batch_get_application_revisions(
        &self,
        _ctx: &Context,
        input: BatchGetApplicationRevisionsInput,
    ) -> Result<BatchGetApplicationRevisionsOutput, ApiError> {
        let app = s(input.application_name);
        let (revisions, message) = self
            .cd
            .batch_get_revisions(&app, input.revisions.as_deref().unwrap_or_default())
            .await?;
        Ok(BatchGetApplicationRevisionsOutput {
            application_name: Some(app),
            error_message: message,
            revisions: Some(revisions),
        })
    }

    async fn list_application_revisions(
        &self,
        _ctx: &Context,
        input: ListApplicationRevisionsInput,
    ) -> Result<ListApplicationRevisionsOutput, ApiError> {
        let q = RevisionQuery {
            sort_by: input.sort_by,
            descending: input.sort_order.as_deref() == Some("descending"),
            s3_bucket: input.s3_bucket,
            s3_key_prefix: input.s3_key_prefix,
            deployed: input.deployed,
        };
        let all = self
            .cd
            .list_revisions(&s(input.application_name), &q)
            .await?;
        let (items, next) = page(all, input.next_token.as_deref())?;
        Ok(ListApplicationRevisionsOutput {
            revisions: Some(items),
            next_token: next,
        })
    }

    async fn create_deployment_config(
        &self,
        _ctx: &Context,
        input: CreateDeploymentConfigInput,
    ) -> Result<CreateDeploymentConfigOutput, ApiError> {
        if input.zonal_config.is_some() {
            return Err(err(
                ErrorKind::InvalidZonalDeploymentConfigurationException,
                "Zonal configurations need Availability Zones, which Slipway's hosts do not have",
            )
            .into());
        }
        let id = self
            .cd
            .create_config(
                &s(input.deployment_config_name),
                input.minimum_healthy_hosts,
                input.compute_platform.as_deref(),
                input.traffic_routing_config.is_some(),
            )
            .await?;
        Ok(CreateDeploymentConfigOutput {
            deployment_config_id: Some(id),
        })
    }

    async fn get_deployment_config(
        &self,
        _ctx: &Context,
        input: GetDeploymentConfigInput,
    ) -> Result<GetDeploymentConfigOutput, ApiError> {
        Ok(GetDeploymentConfigOutput {
            deployment_config_info: Some(
                self.cd.get_config(&s(input.deployment_config_name)).await?,
            ),
        })
    }

    async fn list_deployment_configs(
        &self,
        _ctx: &Context,
        input: ListDeploymentConfigsInput,
    ) -> Result<ListDeploymentConfigsOutput, ApiError> {
        let (items, next) = page(self.cd.list_configs().await?, input.next_token.as_deref())?;
        Ok(ListDeploymentConfigsOutput {
            deployment_configs_list: Some(items),
            next_token: next,
        })
    }

    async fn delete_deployment_config(
        &self,
        _ctx: &Context,
        input: DeleteDeploymentConfigInput,
    ) -> Result<Empty, ApiError> {
        self.cd
            .delete_config(&s(input.deployment_config_name))
            .await?;
        Ok(Empty {})
    }

    async fn create_deployment_group(
        &self,
        _ctx: &Context,
        input: CreateDeploymentGroupInput,
    ) -> Result<CreateDeploymentGroupOutput, ApiError> {
        let id = self.cd.create_group(input).await?;
        Ok(CreateDeploymentGroupOutput {
            deployment_group_id: Some(id),
        })
    }

    async fn get_deployment_group(
        &self,
        _ctx: &Context,
        input: GetDeploymentGroupInput,
    ) -> Result<GetDeploymentGroupOutput, ApiError> {
        let g = self
            .cd
            .group(&s(input.application_name), &s(input.deployment_group_name))
            .await?;
        Ok(GetDeploymentGroupOutput {
            deployment_group_info: Some(g),
        })
    }

    async fn batch_get_deployment_groups(
        &self,
        _ctx: &Context,
        input: BatchGetDeploymentGroupsInput,
    ) -> Result<BatchGetDeploymentGroupsOutput, ApiError> {
        let (groups, message) = self
            .cd
            .batch_get_groups(
                &s(input.application_name),
                input.deployment_group_names.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok(BatchGetDeploymentGroupsOutput {
            deployment_groups_info: Some(groups),
            error_message: message,
        })
    }

    async fn list_deployment_groups(
        &self,
        _ctx: &Context,
        input: ListDeploymentGroupsInput,
    ) -> Result<ListDeploymentGroupsOutput, ApiError> {
        let app = s(input.application_name);
        let (items, next) = page(
            self.cd.list_groups(&app).await?,
            input.next_token.as_deref(),
        )?;
        Ok(ListDeploymentGroupsOutput {
            application_name: Some(app),
            deployment_groups: Some(items),
            next_token: next,
        })
    }

    async fn update_deployment_group(
        &self,
        _ctx: &Context,
        input: UpdateDeploymentGroupInput,
    ) -> Result<UpdateDeploymentGroupOutput, ApiError> {
        self.cd.update_group(input).await?;
        Ok(UpdateDeploymentGroupOutput {
            hooks_not_cleaned_up: Some(Vec::new()),
        })
    }

    async fn delete_deployment_group(
        &self,
        _ctx: &Context,
        input: DeleteDeploymentGroupInput,
    ) -> Result<DeleteDeploymentGroupOutput, ApiError> {
        self.cd
            .delete_group(&s(input.application_name), &s(input.deployment_group_name))
            .await?;
        Ok(DeleteDeploymentGroupOutput {
            hooks_not_cleaned_up: Some(Vec::new()),
        })
    }

    async fn create_deployment(
        &self,
        _ctx: &Context,
        input: CreateDeploymentInput,
    ) -> Result<CreateDeploymentOutput, ApiError> {
        let id = self.cd.create_deployment(input).await?;
        Ok(CreateDeploymentOutput {
            deployment_id: Some(id),
        })
    }

    async fn get_deployment(
        &self,
        _ctx: &Context,
        input: GetDeploymentInput,
    ) -> Result<GetDeploymentOutput, ApiError> {
        Ok(GetDeploymentOutput {
            deployment_info: Some(self.cd.get_deployment(&s(input.deployment_id)).await?),
        })
    }

    async fn batch_get_deployments(
        &self,
        _ctx: &Context,
        input: BatchGetDeploymentsInput,
    ) -> Result<BatchGetDeploymentsOutput, ApiError> {
        let ids = input.deployment_ids.unwrap_or_default();
        Ok(BatchGetDeploymentsOutput {
            deployments_info: Some(self.cd.batch_get_deployments(&ids).await?),
        })
    }

    async fn list_deployments(
        &self,
        _ctx: &Context,
        input: ListDeploymentsInput,
    ) -> Result<ListDeploymentsOutput, ApiError> {
        let range = input.create_time_range.map(|r| (r.start, r.end));
        let ids = self
            .cd
            .list_deployments(
                input.application_name.as_deref(),
                input.deployment_group_name.as_deref(),
                input.include_only_statuses.as_deref().unwrap_or_default(),
                range,
            )
            .await?;
        let (items, next) = page(ids, input.next_token.as_deref())?;
        Ok(ListDeploymentsOutput {
            deployments: Some(items),
            next_token: next,
        })
    }

    async fn stop_deployment(
        &self,
        _ctx: &Context,
        input: StopDeploymentInput,
    ) -> Result<StopDeploymentOutput, ApiError> {
        let (status, message) = self
            .cd
            .stop_deployment(&s(input.deployment_id), input.auto_rollback_enabled)
            .await?;
        Ok(StopDeploymentOutput {
            status: Some(status),
            status_message: Some(message),
        })
    }

    async fn continue_deployment(
        &self,
        _ctx: &Context,
        input: ContinueDeploymentInput,
    ) -> Result<Empty, ApiError> {
        let id = s(input.deployment_id);
        // TERMINATION_WAIT ends the wait before the original hosts are terminated (what
        // SkipWaitTimeForInstanceTermination does); READY_WAIT, the default, moves traffic.
        match input.deployment_wait_type.as_deref() {
            Some("TERMINATION_WAIT") => self.cd.skip_termination_wait(&id).await?,
            _ => self.cd.continue_deployment(&id).await?,
        }
        Ok(Empty {})
    }

    async fn skip_wait_time_for_instance_termination(
        &self,
        _ctx: &Context,
        input: SkipWaitTimeForInstanceTerminationInput,
    ) -> Result<Empty, ApiError> {
        self.cd
            .skip_termination_wait(&s(input.deployment_id))
            .await?;
        Ok(Empty {})
    }

    async fn get_deployment_instance(
        &self,
        _ctx: &Context,
        input: GetDeploymentInstanceInput,
    ) -> Result<GetDeploymentInstanceOutput, ApiError> {
        let i = self
            .cd
            .deployment_instance(&s(input.deployment_id), &s(input.instance_id))
            .await?;
        Ok(GetDeploymentInstanceOutput {
            instance_summary: Some(i),
        })
    }

    async fn batch_get_deployment_instances(
        &self,
        _ctx: &Context,
        input: BatchGetDeploymentInstancesInput,
    ) -> Result<BatchGetDeploymentInstancesOutput, ApiError> {
        let (items, message) = self
            .cd
            .deployment_instances(
                &s(input.deployment_id),
                input.instance_ids.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok(BatchGetDeploymentInstancesOutput {
            instances_summary: Some(items),
            error_message: message,
        })
    }

    async fn list_deployment_instances(
        &self,
        _ctx: &Context,
        input: ListDeploymentInstancesInput,
    ) -> Result<ListDeploymentInstancesOutput, ApiError> {
        let ids = self
            .cd
            .list_deployment_instances(
                &s(input.deployment_id),
                input.instance_status_filter.as_deref().unwrap_or_default(),
                input.instance_type_filter.as_deref().unwrap_or_default(),
            )
            .await?;
        let (items, next) = page(ids, input.next_token.as_deref())?;
        Ok(ListDeploymentInstancesOutput {
            instances_list: Some(items),
            next_token: next,
        })
    }

    async fn get_deployment_target(
        &self,
        _ctx: &Context,
        input: GetDeploymentTargetInput,
    ) -> Result<GetDeploymentTargetOutput, ApiError> {
        let mut t = self
            .cd
            .deployment_targets(&s(input.deployment_id), &[s(input.target_id)])
            .await?;
        Ok(GetDeploymentTargetOutput {
            deployment_target: t.pop(),
        })
    }

    async fn batch_get_deployment_targets(
        &self,
        _ctx: &Context,
        input: BatchGetDeploymentTargetsInput,
    ) -> Result<BatchGetDeploymentTargetsOutput, ApiError> {
        let t = self
            .cd
            .deployment_targets(
                &s(input.deployment_id),
                input.target_ids.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok(BatchGetDeploymentTargetsOutput {
            deployment_targets: Some(t),
        })
    }

    async fn list_deployment_targets(
        &self,
        _ctx: &Context,
        input: ListDeploymentTargetsInput,
    ) -> Result<ListDeploymentTargetsOutput, ApiError> {
        let mut statuses = Vec::new();
        for (name, values) in input.target_filters.unwrap_or_default() {
            match name.as_str() {
                "TargetStatus" => statuses.extend(values),
                "ServerInstanceLabel" => {}
                other => {
                    return Err(err(
                        ErrorKind::InvalidTargetFilterNameException,
                        format!("The target filter {other} is not valid"),
                    )
                    .into())
                }
            }
        }
        let ids = self
            .cd
            .list_deployment_targets(&s(input.deployment_id), &statuses)
            .await?;
        let (items, next) = page(ids, input.next_token.as_deref())?;
        Ok(ListDeploymentTargetsOutput {
            target_ids: Some(items),
            next_token: next,
        })
    }

    async fn register_on_premises_instance(
        &self,
        _ctx: &Context,
        input: RegisterOnPremisesInstanceInput,
    ) -> Result<Empty, ApiError> {
        self.cd
            .register_instance(
                &s(input.instance_name),
                input.iam_user_arn.as_deref(),
                input.iam_session_arn.as_deref(),
            )
            .await?;
        Ok(Empty {})
    }

    async fn deregister_on_premises_instance(
        &self,
        _ctx: &Context,
        input: DeregisterOnPremisesInstanceInput,
    ) -> Result<Empty, ApiError> {
        self.cd.deregister_instance(&s(input.instance_name)).await?;
        Ok(Empty {})
    }

    async fn get_on_premises_instance(
        &self,
        _ctx: &Context,
        input: GetOnPremisesInstanceInput,
    ) -> Result<GetOnPremisesInstanceOutput, ApiError> {
        Ok(GetOnPremisesInstanceOutput {
            instance_info: Some(self.cd.get_instance(&s(input.instance_name)).await?),
        })
    }

    async fn batch_get_on_premises_instances(
        &self,
        _ctx: &Context,
        input: BatchGetOnPremisesInstancesInput,
    ) -> Result<BatchGetOnPremisesInstancesOutput, ApiError> {
        let names = input.instance_names.unwrap_or_default();
        Ok(BatchGetOnPremisesInstancesOutput {
            instance_infos: Some(self.cd.batch_get_instances(&names).await?),
        })
    }

    async fn list_on_premises_instances(
        &self,
        _ctx: &Context,
        input: ListOnPremisesInstancesInput,
    ) -> Result<ListOnPremisesInstancesOutput, ApiError> {
        let names = self
            .cd
            .list_instances(
                input.registration_status.as_deref(),
                input.tag_filters.as_deref().unwrap_or_default(),
            )
            .await?;
        let (items, next) = page(names, input.next_token.as_deref())?;
        Ok(ListOnPremisesInstancesOutput {
            instance_names: Some(items),
            next_token: next,
        })
    }

    async fn add_tags_to_on_premises_instances(
        &self,
        _ctx: &Context,
        input: AddTagsToOnPremisesInstancesInput,
    ) -> Result<Empty, ApiError> {
        self.cd
            .tag_instances(
                input.instance_names.as_deref().unwrap_or_default(),
                input.tags.as_deref().unwrap_or_default(),
                true,
            )
            .await?;
        Ok(Empty {})
    }

    async fn remove_tags_from_on_premises_instances(
        &self,
        _ctx: &Context,
        input: RemoveTagsFromOnPremisesInstancesInput,
    ) -> Result<Empty, ApiError> {
        self.cd
            .tag_instances(
                input.instance_names.as_deref().unwrap_or_default(),
                input.tags.as_deref().unwrap_or_default(),
                false,
            )
            .await?;
        Ok(Empty {})
    }

    async fn list_tags_for_resource(
        &self,
        _ctx: &Context,
        input: ListTagsForResourceInput,
    ) -> Result<ListTagsForResourceOutput, ApiError> {
        let tags = self.cd.list_tags(&s(input.resource_arn)).await?;
        let (items, next) = page(tags, input.next_token.as_deref())?;
        Ok(ListTagsForResourceOutput {
            tags: Some(items),
            next_token: next,
        })
    }

    async fn tag_resource(
        &self,
        _ctx: &Context,
        input: TagResourceInput,
    ) -> Result<TagResourceOutput, ApiError> {
        self.cd
            .tag_resource(
                &s(input.resource_arn),
                input.tags.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok(TagResourceOutput {})
    }

    async fn untag_resource(
        &self,
        _ctx: &Context,
        input: UntagResourceInput,
    ) -> Result<UntagResourceOutput, ApiError> {
        self.cd
            .untag_resource(
                &s(input.resource_arn),
                input.tag_keys.as_deref().unwrap_or_default(),
            )
            .await?;
        Ok(UntagResourceOutput {})
    }

    async fn put_lifecycle_event_hook_execution_status(
        &self,
        _ctx: &Context,
        _input: PutLifecycleEventHookExecutionStatusInput,
    ) -> Result<PutLifecycleEventHookExecutionStatusOutput, ApiError> {
        Err(unsupported(
            "PutLifecycleEventHookExecutionStatus (hooks run as Lambda functions)",
        ))
    }

    async fn delete_git_hub_account_token(
        &self,
        _ctx: &Context,
        _input: DeleteGitHubAccountTokenInput,
    ) -> Result<DeleteGitHubAccountTokenOutput, ApiError> {
        Err(err(
            ErrorKind::OperationNotSupportedException,
            "Slipway does not connect to GitHub: deploy revisions from S3",
        )
        .into())
    }

    async fn list_git_hub_account_token_names(
        &self,
        _ctx: &Context,
        _input: ListGitHubAccountTokenNamesInput,
    ) -> Result<ListGitHubAccountTokenNamesOutput, ApiError> {
        Ok(ListGitHubAccountTokenNamesOutput {
            token_name_list: Some(Vec::new()),
            next_token: None,
        })
    }

    async fn delete_resources_by_external_id(
        &self,
        _ctx: &Context,
        _input: DeleteResourcesByExternalIdInput,
    ) -> Result<DeleteResourcesByExternalIdOutput, ApiError> {
        Ok(DeleteResourcesByExternalIdOutput {})
    }
}

/// The agents' command service: the caller must be the host it names (its IAM ARN).
pub struct CommandService {
    pub cd: CodeDeploy,
}

fn client(message: impl Into<String>) -> ApiError {
    cmd::ErrorKind::ClientException.with(message)
}

fn is_root(ctx: &Context) -> bool {
    ctx.principal.user_name.is_none() && ctx.principal.arn.ends_with(":root")
}

/// Whose commands the caller may touch: its own host's (`*`: the account root, any host's).
fn caller(ctx: &Context) -> String {
    if is_root(ctx) {
        "*".into()
    } else {
        ctx.principal.arn.clone()
    }
}

fn host_of(ctx: &Context, host: Option<String>) -> Result<String, ApiError> {
    let host = host.unwrap_or_default();
    if !slipway_codedeploy::commands::may_act_as(&ctx.principal.arn, &host, is_root(ctx)) {
        return Err(client(format!(
            "{} may not act as host {host}",
            ctx.principal.arn
        )));
    }
    Ok(host)
}

fn command_err(e: slipway_codedeploy::error::Error) -> ApiError {
    match e {
        slipway_codedeploy::error::Error::Api { message, .. } => client(message),
        other => ApiError::from(other),
    }
}

impl cmd::CodeDeployCommandApi for CommandService {
    async fn poll_host_command(
        &self,
        ctx: &Context,
        input: cmd::PollHostCommandInput,
    ) -> Result<cmd::PollHostCommandOutput, ApiError> {
        let host = host_of(ctx, input.host_identifier)?;
        let c = self
            .cd
            .poll_host_command(&host)
            .await
            .map_err(command_err)?;
        Ok(cmd::PollHostCommandOutput {
            host_command: c.map(|c| cmd::HostCommandInstance {
                command_name: Some(c.command_name),
                deployment_execution_id: Some(c.execution_id),
                host_command_identifier: Some(c.command_id),
                host_identifier: Some(host),
                nonce: Some(c.nonce),
            }),
        })
    }

    async fn get_deployment_specification(
        &self,
        ctx: &Context,
        input: cmd::GetDeploymentSpecificationInput,
    ) -> Result<cmd::GetDeploymentSpecificationOutput, ApiError> {
        let host = host_of(ctx, input.host_identifier)?;
        let (format, spec) = self
            .cd
            .deployment_specification(
                &host,
                input.deployment_execution_id.as_deref().unwrap_or(""),
            )
            .await
            .map_err(command_err)?;
        Ok(cmd::GetDeploymentSpecificationOutput {
            deployment_specification: Some(cmd::DeploymentSpecification {
                generic_envelope: Some(cmd::Envelope {
                    format: Some(format.into()),
                    payload: Some(spec),
                }),
                variant_envelope: None,
                variant_id: None,
            }),
            deployment_system: Some("CodeDeploy".into()),
        })
    }

    async fn put_host_command_acknowledgement(
        &self,
        ctx: &Context,
        input: cmd::PutHostCommandAcknowledgementInput,
    ) -> Result<cmd::PutHostCommandAcknowledgementOutput, ApiError> {
        let host = caller(ctx);
        let status = self
            .cd
            .acknowledge(
                &host,
                input.host_command_identifier.as_deref().unwrap_or(""),
            )
            .await
            .map_err(command_err)?;
        Ok(cmd::PutHostCommandAcknowledgementOutput {
            command_status: Some(status.into()),
        })
    }

    async fn post_host_command_update(
        &self,
        ctx: &Context,
        input: cmd::PostHostCommandUpdateInput,
    ) -> Result<cmd::PostHostCommandUpdateOutput, ApiError> {
        let host = caller(ctx);
        let status = self
            .cd
            .command_update(
                &host,
                input.host_command_identifier.as_deref().unwrap_or(""),
            )
            .await
            .map_err(command_err)?;
        Ok(cmd::PostHostCommandUpdateOutput {
            command_status: Some(status.into()),
        })
    }

    async fn put_host_command_complete(
        &self,
        ctx: &Context,
        input: cmd::PutHostCommandCompleteInput,
    ) -> Result<Empty, ApiError> {
        let host = caller(ctx);
        let ok = input.command_status.as_deref() == Some("Succeeded");
        self.cd
            .complete(
                &host,
                input.host_command_identifier.as_deref().unwrap_or(""),
                ok,
                input
                    .diagnostics
                    .as_ref()
                    .and_then(|d| d.payload.as_deref()),
            )
            .await
            .map_err(command_err)?;
        Ok(Empty {})
    }
}
