//! Deployments: created from a group and a revision, advanced by the orchestrator in one
//! write transaction per change (state stored, host commands queued, events appended), rolled
//! back by a new deployment of the group's last good revision, and timed out when a host's
//! agent stops answering.

use crate::error::{err, ErrorKind, Result};
use crate::orchestrator::{self, Ctx, Deployment, Effect, Input, Target};
use crate::CodeDeploy;
use serde_json::json;
use slipway_model::codedeploy::{
    CreateDeploymentInput, DeploymentInfo, DeploymentTarget, InstanceSummary, InstanceTarget,
    LastDeploymentInfo, LifecycleEvent, RevisionLocation, RollbackInfo,
};
use slipway_store::deploy as db;
use slipway_store::{events, now, Conn};

pub(crate) fn deployment_missing(id: &str) -> crate::error::Error {
    err(
        ErrorKind::DeploymentDoesNotExistException,
        format!("The deployment {id} could not be found"),
    )
}

/// Checks an alarm name as Slipway reads it: a health check, `http://…` or `https://…` (a
/// probe the server sends: any 2xx or 3xx answer is healthy).
pub fn parse_check(name: &str) -> std::result::Result<(), String> {
    if name.starts_with("http://") || name.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("Slipway's alarms are health checks: {name:?} must be an http:// or https:// URL to probe"))
    }
}

/// Why a deployment is created.
pub(crate) struct Origin {
    pub creator: String,
    pub rollback_of: Option<String>,
}

impl CodeDeploy {
    pub async fn create_deployment(&self, input: CreateDeploymentInput) -> Result<String> {
        let app = input.application_name.clone().unwrap_or_default();
        self.app(&app).await?;
        let Some(group_name) = input.deployment_group_name.clone() else {
            return Err(err(
                ErrorKind::DeploymentGroupNameRequiredException,
                "Deployment group name is required",
            ));
        };
        let group = self.group(&app, &group_name).await?;
        let revision = match input.revision.as_ref() {
            Some(r) => crate::applications::check_revision(Some(r))?.clone(),
            None => group
                .target_revision
                .clone()
                .ok_or_else(|| err(ErrorKind::RevisionRequiredException, "Revision is required"))?,
        };
        if input
            .description
            .as_ref()
            .is_some_and(|d| d.chars().count() > 100)
        {
            return Err(err(
                ErrorKind::DescriptionTooLongException,
                "The description is too long (at most 100 characters)",
            ));
        }
        if let Some(b) = input.file_exists_behavior.as_deref() {
            if !matches!(b, "DISALLOW" | "OVERWRITE" | "RETAIN") {
                return Err(err(
                    ErrorKind::InvalidFileExistsBehaviorException,
                    format!("The file exists behavior {b} is not valid"),
                ));
            }
        }
        if input.target_instances.is_some() {
            return Err(err(
                ErrorKind::InvalidTargetInstancesException,
                "Target instances are for blue/green deployments of EC2 instances, which Slipway does not run",
            ));
        }
        if let Some(r) = &input.auto_rollback_configuration {
            if r.enabled == Some(true) && r.events.as_ref().is_none_or(|e| e.is_empty()) {
                return Err(err(
                    ErrorKind::InvalidAutoRollbackConfigException,
                    "An enabled automatic rollback configuration needs at least one event",
                ));
            }
        }
        if let Some(s3) = &revision.s3_location {
            self.check_bundle(s3).await?;
        }
        let mut info = DeploymentInfo {
            application_name: Some(app.clone()),
            deployment_group_name: Some(group_name.clone()),
            deployment_config_name: input.deployment_config_name.clone(),
            revision: Some(revision),
            description: input.description.clone(),
            ignore_application_stop_failures: Some(
                input.ignore_application_stop_failures.unwrap_or(false),
            ),
            auto_rollback_configuration: input.auto_rollback_configuration.clone(),
            update_outdated_instances_only: Some(
                input.update_outdated_instances_only.unwrap_or(false),
            ),
            file_exists_behavior: Some(
                input
                    .file_exists_behavior
                    .clone()
                    .unwrap_or_else(|| "DISALLOW".into()),
            ),
            override_alarm_configuration: input.override_alarm_configuration.clone(),
            ..Default::default()
        };
        if let Some(c) = &info.deployment_config_name {
            self.get_config(c).await?;
        }
        let mut tx = self.store().begin_write().await?;
        if db::active_in_group(&mut tx, &self.region, &app, &group_name)
            .await?
            .is_some()
        {
            return Err(err(
                ErrorKind::DeploymentLimitExceededException,
                format!("The deployment group {group_name} already has an active deployment"),
            ));
        }
        info.creator = Some("user".into());
        let id = self
            .start_deployment(
                &mut tx,
                info,
                Origin {
                    creator: "user".into(),
                    rollback_of: None,
                },
                None,
            )
            .await?;
        tx.commit().await?;
        self.inner.commands.notify_waiters();
        Ok(id)
    }

    /// An S3 bundle must exist (the version and eTag named, when named).
    async fn check_bundle(&self, s3: &slipway_model::codedeploy::S3Location) -> Result<()> {
        let bucket = s3.bucket.as_deref().unwrap_or("");
        let key = s3.key.as_deref().unwrap_or("");
        let missing = || {
            err(
                ErrorKind::RevisionDoesNotExistException,
                format!("The revision s3://{bucket}/{key} does not exist"),
            )
        };
        let o = self
            .inner
            .s3
            .object(bucket, key, s3.version.as_deref())
            .await
            .map_err(|_| missing())?;
        if o.delete_marker {
            return Err(missing());
        }
        if let Some(tag) = s3.e_tag.as_deref() {
            if tag.trim_matches('"') != o.etag {
                return Err(err(
                    ErrorKind::InvalidRevisionException,
                    format!("The eTag {tag} does not match the bundle's ({})", o.etag),
                ));
            }
        }
        Ok(())
    }

    /// Creates and starts a deployment in `tx` (the group's hosts found now).
    async fn start_deployment(
        &self,
        tx: &mut Conn,
        mut info: DeploymentInfo,
        origin: Origin,
        only: Option<Vec<String>>,
    ) -> Result<String> {
        let app = info.application_name.clone().unwrap_or_default();
        let group_name = info.deployment_group_name.clone().unwrap_or_default();
        let row = db::get_group(tx, &self.region, &app, &group_name)
            .await?
            .ok_or_else(|| crate::groups::group_missing(&app, &group_name))?;
        let mut group: slipway_model::codedeploy::DeploymentGroupInfo =
            serde_json::from_str(&row.doc)?;
        let config_name = info
            .deployment_config_name
            .clone()
            .or(group.deployment_config_name.clone())
            .unwrap_or_else(|| "CodeDeployDefault.OneAtATime".into());
        let config = self.get_config(&config_name).await?;
        let id = crate::deployment_id();
        let t = now();
        // The hosts: registered instances the group's tags select.
        let mut targets = Vec::new();
        let previous = match group
            .last_attempted_deployment
            .as_ref()
            .and_then(|l| l.deployment_id.clone())
        {
            Some(prev) => db::get_deployment(tx, &prev)
                .await?
                .and_then(|r| serde_json::from_str::<Deployment>(&r.state).ok()),
            None => None,
        };
        let style = group.deployment_style.clone().unwrap_or_default();
        let with_traffic = style.deployment_option.as_deref() == Some("WITH_TRAFFIC_CONTROL");
        let names: &[&str] = if with_traffic {
            orchestrator::IN_PLACE_WITH_TRAFFIC
        } else {
            orchestrator::IN_PLACE
        };
        for row in db::list_instances(tx, &self.region).await? {
            if !row.registered {
                continue;
            }
            let inst: slipway_model::codedeploy::InstanceInfo = serde_json::from_str(&row.doc)?;
            if !crate::groups::targets(&group, &crate::instances::tags_of(&inst)) {
                continue;
            }
            if only.as_ref().is_some_and(|o| !o.contains(&row.name)) {
                continue;
            }
            let unhealthy = previous.as_ref().is_some_and(|p| {
                p.targets
                    .iter()
                    .any(|x| x.instance == row.name && x.status == "Failed")
            });
            targets.push(Target {
                instance: row.name.clone(),
                host: row.iam_arn.clone(),
                status: "Pending".into(),
                updated: t,
                events: names
                    .iter()
                    .map(|n| LifecycleEvent {
                        lifecycle_event_name: Some((*n).into()),
                        status: Some("Pending".into()),
                        ..Default::default()
                    })
                    .collect(),
                command: None,
                unhealthy,
                batch: 0,
            });
        }
        let min = config.minimum_healthy_hosts.clone().unwrap_or_default();
        let health = crate::configs::Health::of(&min, targets.len());
        let rollback_cfg = info
            .auto_rollback_configuration
            .clone()
            .or(group.auto_rollback_configuration.clone());
        let rollback_on = rollback_cfg
            .as_ref()
            .filter(|r| r.enabled == Some(true))
            .and_then(|r| r.events.clone())
            .unwrap_or_default();
        info.deployment_id = Some(id.clone());
        info.deployment_config_name = Some(config_name);
        info.status = Some("Created".into());
        info.create_time = Some(t);
        info.creator = Some(origin.creator.clone());
        info.compute_platform = Some("Server".into());
        info.deployment_style = Some(style.clone());
        info.load_balancer_info = group.load_balancer_info.clone();
        info.previous_revision = group
            .last_successful_deployment
            .as_ref()
            .and(group.target_revision.clone());
        info.auto_rollback_configuration = rollback_cfg;
        if let Some(of) = &origin.rollback_of {
            info.rollback_info = Some(RollbackInfo {
                rollback_deployment_id: None,
                rollback_triggering_deployment_id: Some(of.clone()),
                rollback_message: Some(format!(
                    "This deployment was created by CodeDeploy to roll back {of}"
                )),
            });
        }
        let mut d = Deployment {
            info,
            group_id: row.group_id.clone(),
            health: health.unwrap_or(crate::configs::Health {
                min_healthy: usize::MAX,
                one_at_a_time: false,
            }),
            targets,
            rollback_on,
            rollback_requested: None,
            batches: 0,
        };
        // The revision as it is deployed (S3 versions fixed when not named: a later upload
        // to the same key does not change what this deployment installs).
        if let Some(r) = d.info.revision.as_mut() {
            if let Some(s3) = r.s3_location.as_mut() {
                if s3.version.is_none() || s3.e_tag.is_none() {
                    if let Ok(o) = self
                        .inner
                        .s3
                        .object(
                            s3.bucket.as_deref().unwrap_or(""),
                            s3.key.as_deref().unwrap_or(""),
                            s3.version.as_deref(),
                        )
                        .await
                    {
                        if o.version_id != "null" {
                            s3.version.get_or_insert(o.version_id);
                        }
                        s3.e_tag.get_or_insert(o.etag);
                    }
                }
            }
        }
        let revision = d.info.revision.clone().unwrap_or_default();
        group.target_revision = Some(revision.clone());
        db::update_group(
            tx,
            &self.region,
            &app,
            &group_name,
            &group_name,
            &serde_json::to_string(&group)?,
        )
        .await?;
        let key = crate::applications::revision_key(&revision);
        let used = db::get_revision(tx, &self.region, &app, &key).await?;
        let mut groups: Vec<String> = used
            .map(|u| serde_json::from_str(&u.groups).unwrap_or_default())
            .unwrap_or_default();
        if !groups.contains(&group_name) {
            groups.push(group_name.clone());
        }
        db::revision_used(
            tx,
            &self.region,
            &app,
            &key,
            &serde_json::to_string(&groups)?,
            t,
        )
        .await?;
        db::insert_deployment(
            tx,
            &db::DeploymentRow {
                deployment_id: id.clone(),
                region: self.region.to_string(),
                application: app,
                group_name,
                status: "Created".into(),
                active: true,
                state: serde_json::to_string(&d)?,
                created: t,
            },
        )
        .await?;
        if health.is_none() {
            // The rule cannot be met on this fleet: the deployment fails at once.
            d.info.status = Some("InProgress".into());
            d.info.start_time = Some(t);
            let fx = vec![Effect::Ended { rollback: false }];
            for tg in &mut d.targets {
                tg.status = "Skipped".into();
            }
            d.info.status = Some("Failed".into());
            d.info.complete_time = Some(t);
            d.info.error_information = Some(slipway_model::codedeploy::ErrorInformation {
                code: Some("HEALTH_CONSTRAINTS_INVALID".into()),
                message: Some("The deployment failed because the minimum number of healthy instances required by the deployment configuration is not less than the number of instances in the deployment group.".into()),
            });
            self.event(tx, &d, "START").await?;
            self.persist(tx, &id, &mut d, fx).await?;
            return Ok(id);
        }
        let mut new_id = crate::new_id;
        let fx = orchestrator::step(
            &mut d,
            Input::Start,
            &mut Ctx {
                now: t,
                new_id: &mut new_id,
            },
        );
        self.event(tx, &d, "START").await?;
        self.persist(tx, &id, &mut d, fx).await?;
        Ok(id)
    }

    /// Stores `d` and performs `fx` in `tx`.
    fn persist<'a>(
        &'a self,
        tx: &'a mut Conn,
        id: &'a str,
        d: &'a mut Deployment,
        fx: Vec<Effect>,
    ) -> futures_util::future::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let t = now();
            let mut rollback = false;
            for f in &fx {
                match f {
                    Effect::Command {
                        target,
                        event,
                        command,
                    } => {
                        let tg = &d.targets[*target];
                        if orchestrator::is_service_event(event) {
                            // The service's own traffic events: no load balancer moves yet in
                            // an in-place deployment, so they succeed at once.
                            continue;
                        }
                        db::insert_command(
                            tx,
                            &db::CommandRow {
                                command_id: command.clone(),
                                deployment_id: id.to_owned(),
                                region: self.region.to_string(),
                                instance: tg.instance.clone(),
                                host: tg.host.clone(),
                                lifecycle_event: event.clone(),
                                status: "Pending".into(),
                                nonce: (t * 1000.0) as i64,
                                created: t,
                                updated: t,
                            },
                        )
                        .await?;
                    }
                    Effect::Cancel { command } => {
                        db::set_command(tx, command, "Failed", t).await?;
                    }
                    Effect::InstanceChanged { target } => {
                        self.instance_event(tx, d, *target).await?;
                    }
                    Effect::Ended { rollback: r } => rollback = *r,
                }
            }
            // Service events complete at once (and may start the next events).
            let service: Vec<String> = fx
                .iter()
                .filter_map(|f| match f {
                    Effect::Command { event, command, .. }
                        if orchestrator::is_service_event(event) =>
                    {
                        Some(command.clone())
                    }
                    _ => None,
                })
                .collect();
            if !service.is_empty() {
                let mut more = Vec::new();
                let mut new_id = crate::new_id;
                for command in service {
                    more.extend(orchestrator::step(
                        d,
                        Input::EventEnded {
                            command,
                            ok: true,
                            diagnostics: success(),
                        },
                        &mut Ctx {
                            now: t,
                            new_id: &mut new_id,
                        },
                    ));
                }
                return self.persist(tx, id, d, more).await;
            }
            if d.is_done() {
                self.finish(tx, id, d, rollback).await?;
            }
            d.info.deployment_overview = Some(d.overview());
            db::update_deployment(
                tx,
                id,
                d.status(),
                !d.is_done(),
                &serde_json::to_string(&*d)?,
                t,
            )
            .await?;
            Ok(())
        })
    }

    /// A deployment ended: the group's last deployments, the event, and the rollback.
    async fn finish(
        &self,
        tx: &mut Conn,
        id: &str,
        d: &mut Deployment,
        rollback: bool,
    ) -> Result<()> {
        let app = d.info.application_name.clone().unwrap_or_default();
        let group = d.info.deployment_group_name.clone().unwrap_or_default();
        let last = LastDeploymentInfo {
            deployment_id: Some(id.to_owned()),
            status: d.info.status.clone(),
            end_time: d.info.complete_time,
            create_time: d.info.create_time,
        };
        let succeeded = d.status() == "Succeeded";
        self.record_last(tx, &app, &group, last, succeeded).await?;
        let state = match d.status() {
            "Succeeded" => "SUCCESS",
            "Stopped" => "STOP",
            _ => "FAILURE",
        };
        self.event(tx, d, state).await?;
        if !rollback
            || d.info
                .rollback_info
                .as_ref()
                .is_some_and(|r| r.rollback_triggering_deployment_id.is_some())
        {
            return Ok(());
        }
        // Roll back: the last successful deployment's revision, as a new deployment to the
        // hosts this one touched.
        let row = db::get_group(tx, &self.region, &app, &group).await?;
        let g: Option<slipway_model::codedeploy::DeploymentGroupInfo> =
            row.map(|r| serde_json::from_str(&r.doc)).transpose()?;
        let good = match g
            .as_ref()
            .and_then(|g| g.last_successful_deployment.as_ref())
            .and_then(|l| l.deployment_id.clone())
        {
            Some(good) => db::get_deployment(tx, &good)
                .await?
                .and_then(|r| serde_json::from_str::<Deployment>(&r.state).ok()),
            None => None,
        };
        let Some(good) = good else {
            d.info.rollback_info = Some(RollbackInfo {
                rollback_deployment_id: None,
                rollback_triggering_deployment_id: None,
                rollback_message: Some("Automatic rollback was not possible: the deployment group has no previous successful deployment".into()),
            });
            return Ok(());
        };
        let touched: Vec<String> = d
            .targets
            .iter()
            .filter(|t| t.status != "Skipped")
            .map(|t| t.instance.clone())
            .collect();
        let info = DeploymentInfo {
            application_name: Some(app),
            deployment_group_name: Some(group),
            deployment_config_name: d.info.deployment_config_name.clone(),
            revision: good.info.revision.clone(),
            description: Some(format!("Rollback of {id}")),
            ignore_application_stop_failures: d.info.ignore_application_stop_failures,
            file_exists_behavior: Some("OVERWRITE".into()),
            ..Default::default()
        };
        let rb = Box::pin(self.start_deployment(
            tx,
            info,
            Origin {
                creator: "codeDeployRollback".into(),
                rollback_of: Some(id.to_owned()),
            },
            Some(touched),
        ))
        .await?;
        d.info.rollback_info = Some(RollbackInfo {
            rollback_deployment_id: Some(rb.clone()),
            rollback_triggering_deployment_id: None,
            rollback_message: Some(format!("Deployment {id} was rolled back by {rb}")),
        });
        Ok(())
    }

    async fn event(&self, tx: &mut Conn, d: &Deployment, state: &str) -> Result<()> {
        let app = d.info.application_name.clone().unwrap_or_default();
        let group = d.info.deployment_group_name.clone().unwrap_or_default();
        events::append(
            tx,
            &events::Event {
                source: "aws.codedeploy",
                detail_type: "CodeDeploy Deployment State-change Notification",
                account: self.account_id().to_owned(),
                region: self.region.to_string(),
                resources: vec![self.application_arn(&app), self.group_arn(&app, &group)],
                detail: json!({
                    "region": &*self.region,
                    "deploymentId": d.info.deployment_id,
                    "instanceGroupId": d.group_id,
                    "deploymentGroup": group,
                    "application": app,
                    "state": state,
                }),
            },
        )
        .await?;
        Ok(())
    }

    async fn instance_event(&self, tx: &mut Conn, d: &Deployment, target: usize) -> Result<()> {
        let t = &d.targets[target];
        let state = match t.status.as_str() {
            "InProgress" => "START",
            "Succeeded" => "SUCCESS",
            "Failed" => "FAILURE",
            "Skipped" => "SKIPPED",
            _ => return Ok(()),
        };
        let app = d.info.application_name.clone().unwrap_or_default();
        let group = d.info.deployment_group_name.clone().unwrap_or_default();
        events::append(
            tx,
            &events::Event {
                source: "aws.codedeploy",
                detail_type: "CodeDeploy Instance State-change Notification",
                account: self.account_id().to_owned(),
                region: self.region.to_string(),
                resources: vec![
                    self.application_arn(&app),
                    self.group_arn(&app, &group),
                    self.instance_arn(&t.instance),
                ],
                detail: json!({
                    "region": &*self.region,
                    "deploymentId": d.info.deployment_id,
                    "instanceGroupId": d.group_id,
                    "deploymentGroup": group,
                    "application": app,
                    "instance": self.instance_arn(&t.instance),
                    "state": state,
                }),
            },
        )
        .await?;
        Ok(())
    }

    /// Feeds `input` to deployment `id` in one write transaction.
    pub(crate) async fn apply(&self, id: &str, input: Input) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        self.apply_in(&mut tx, id, input).await?;
        tx.commit().await?;
        self.inner.commands.notify_waiters();
        Ok(())
    }

    pub(crate) async fn apply_in(&self, tx: &mut Conn, id: &str, input: Input) -> Result<()> {
        let row = db::get_deployment(tx, id)
            .await?
            .ok_or_else(|| deployment_missing(id))?;
        let mut d: Deployment = serde_json::from_str(&row.state)?;
        let svc = self.in_region(&row.region);
        let mut new_id = crate::new_id;
        let fx = orchestrator::step(
            &mut d,
            input,
            &mut Ctx {
                now: now(),
                new_id: &mut new_id,
            },
        );
        if fx.is_empty() {
            return Ok(());
        }
        svc.persist(tx, id, &mut d, fx).await
    }

    /// A deployment as stored (of this region).
    pub(crate) async fn deployment(&self, id: &str) -> Result<Deployment> {
        let mut conn = self.store().pool().acquire().await?;
        let row = db::get_deployment(&mut conn, id)
            .await?
            .filter(|r| *r.region == *self.region)
            .ok_or_else(|| deployment_missing(id))?;
        Ok(serde_json::from_str(&row.state)?)
    }

    pub async fn get_deployment(&self, id: &str) -> Result<DeploymentInfo> {
        let d = self.deployment(id).await?;
        let mut info = d.info.clone();
        info.deployment_overview = Some(d.overview());
        Ok(info)
    }

    pub async fn batch_get_deployments(&self, ids: &[String]) -> Result<Vec<DeploymentInfo>> {
        if ids.len() > 25 {
            return Err(err(
                ErrorKind::BatchLimitExceededException,
                "The maximum number of deployments that can be returned is 25",
            ));
        }
        let mut out = Vec::new();
        for id in ids {
            match self.get_deployment(id).await {
                Ok(i) => out.push(i),
                Err(e) if e.kind() == Some(ErrorKind::DeploymentDoesNotExistException) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    pub async fn list_deployments(
        &self,
        app: Option<&str>,
        group: Option<&str>,
        statuses: &[String],
        range: Option<(Option<f64>, Option<f64>)>,
    ) -> Result<Vec<String>> {
        match (app, group) {
            (None, Some(_)) => {
                return Err(err(
                    ErrorKind::ApplicationNameRequiredException,
                    "An application name is required with a deployment group name",
                ))
            }
            (Some(_), None) => {
                return Err(err(
                    ErrorKind::DeploymentGroupNameRequiredException,
                    "A deployment group name is required with an application name",
                ))
            }
            (Some(a), Some(g)) => {
                self.group(a, g).await?;
            }
            (None, None) => {}
        }
        const STATUSES: &[&str] = &[
            "Created",
            "Queued",
            "InProgress",
            "Baking",
            "Succeeded",
            "Failed",
            "Stopped",
            "Ready",
        ];
        if let Some(bad) = statuses.iter().find(|s| !STATUSES.contains(&s.as_str())) {
            return Err(err(
                ErrorKind::InvalidDeploymentStatusException,
                format!("The deployment status {bad} is not valid"),
            ));
        }
        if let Some((Some(s), Some(e))) = range {
            if s > e {
                return Err(err(
                    ErrorKind::InvalidTimeRangeException,
                    "The time range's start is after its end",
                ));
            }
        }
        let mut conn = self.store().pool().acquire().await?;
        let rows = db::list_deployments(&mut conn, &self.region, app, group).await?;
        Ok(rows
            .into_iter()
            .filter(|(_, status, _)| statuses.is_empty() || statuses.contains(status))
            .filter(|(_, _, created)| match range {
                Some((s, e)) => s.is_none_or(|s| *created >= s) && e.is_none_or(|e| *created <= e),
                None => true,
            })
            .map(|(id, _, _)| id)
            .collect())
    }

    pub async fn stop_deployment(
        &self,
        id: &str,
        rollback: Option<bool>,
    ) -> Result<(String, String)> {
        let d = self.deployment(id).await?;
        if d.is_done() {
            return Err(err(
                ErrorKind::DeploymentAlreadyCompletedException,
                format!("The deployment {id} has already completed"),
            ));
        }
        self.apply(
            id,
            Input::Stop {
                alarm: None,
                rollback,
            },
        )
        .await?;
        Ok(("Succeeded".into(), "The deployment was stopped".into()))
    }

    fn summary(&self, d: &Deployment, t: &Target) -> InstanceSummary {
        InstanceSummary {
            deployment_id: d.info.deployment_id.clone(),
            instance_id: Some(self.instance_arn(&t.instance)),
            status: Some(t.status.clone()),
            last_updated_at: Some(t.updated),
            lifecycle_events: Some(t.events.clone()),
            instance_type: None,
        }
    }

    fn find_target<'a>(d: &'a Deployment, id: &str) -> Option<&'a Target> {
        let name = id.rsplit_once("instance/").map_or(id, |(_, n)| n);
        d.targets.iter().find(|t| t.instance == name)
    }

    pub async fn deployment_instance(&self, id: &str, instance: &str) -> Result<InstanceSummary> {
        let d = self.deployment(id).await?;
        let t = Self::find_target(&d, instance).ok_or_else(|| {
            err(
                ErrorKind::InstanceDoesNotExistException,
                format!("The instance {instance} is not part of deployment {id}"),
            )
        })?;
        Ok(self.summary(&d, t))
    }

    pub async fn deployment_instances(
        &self,
        id: &str,
        ids: &[String],
    ) -> Result<(Vec<InstanceSummary>, Option<String>)> {
        if ids.len() > 100 {
            return Err(err(
                ErrorKind::BatchLimitExceededException,
                "The maximum number of instances that can be returned is 100",
            ));
        }
        let d = self.deployment(id).await?;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for i in ids {
            match Self::find_target(&d, i) {
                Some(t) => out.push(self.summary(&d, t)),
                None => missing.push(i.clone()),
            }
        }
        Ok((
            out,
            (!missing.is_empty()).then(|| format!("Instances not found: {}", missing.join(", "))),
        ))
    }

    /// The instances of a deployment (their instance ids), filtered by status.
    pub async fn list_deployment_instances(
        &self,
        id: &str,
        statuses: &[String],
    ) -> Result<Vec<String>> {
        const OK: &[&str] = &[
            "Pending",
            "InProgress",
            "Succeeded",
            "Failed",
            "Skipped",
            "Unknown",
            "Ready",
        ];
        if let Some(bad) = statuses.iter().find(|s| !OK.contains(&s.as_str())) {
            return Err(err(
                ErrorKind::InvalidInstanceStatusException,
                format!("The instance status {bad} is not valid"),
            ));
        }
        let d = self.deployment(id).await?;
        Ok(d.targets
            .iter()
            .filter(|t| statuses.is_empty() || statuses.contains(&t.status))
            .map(|t| t.instance.clone())
            .collect())
    }

    pub async fn deployment_targets(
        &self,
        id: &str,
        ids: &[String],
    ) -> Result<Vec<DeploymentTarget>> {
        if ids.len() > 25 {
            return Err(err(
                ErrorKind::DeploymentTargetListSizeExceededException,
                "At most 25 targets can be read at once",
            ));
        }
        let d = self.deployment(id).await?;
        let mut out = Vec::new();
        for i in ids {
            let t = Self::find_target(&d, i).ok_or_else(|| {
                err(
                    ErrorKind::DeploymentTargetDoesNotExistException,
                    format!("The target {i} is not part of deployment {id}"),
                )
            })?;
            out.push(DeploymentTarget {
                deployment_target_type: Some("InstanceTarget".into()),
                instance_target: Some(InstanceTarget {
                    deployment_id: Some(id.to_owned()),
                    target_id: Some(t.instance.clone()),
                    target_arn: Some(self.instance_arn(&t.instance)),
                    status: Some(t.status.clone()),
                    last_updated_at: Some(t.updated),
                    lifecycle_events: Some(t.events.clone()),
                    instance_label: None,
                }),
                ..Default::default()
            });
        }
        Ok(out)
    }

    pub async fn list_deployment_targets(
        &self,
        id: &str,
        statuses: &[String],
    ) -> Result<Vec<String>> {
        let d = self.deployment(id).await?;
        Ok(d.targets
            .iter()
            .filter(|t| statuses.is_empty() || statuses.contains(&t.status))
            .map(|t| t.instance.clone())
            .collect())
    }

    /// ContinueDeployment, SkipWaitTimeForInstanceTermination: blue/green waits only.
    pub async fn continue_deployment(&self, id: &str) -> Result<()> {
        let d = self.deployment(id).await?;
        if d.is_done() {
            return Err(err(
                ErrorKind::DeploymentAlreadyCompletedException,
                format!("The deployment {id} has already completed"),
            ));
        }
        Err(err(
            ErrorKind::DeploymentIsNotInReadyStateException,
            format!("The deployment {id} is not waiting (only a blue/green deployment waits to be continued)"),
        ))
    }

    /// The runtime: fails hosts whose agents went quiet. One task in the server.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            if let Err(e) = self.sweep().await {
                tracing::warn!(error = %e, "codedeploy sweep failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                _ = self.inner.wake.notified() => {}
                _ = &mut shutdown => return,
            }
        }
    }

    /// Host commands no agent has spoken about within the timeout fail their hosts.
    pub async fn sweep(&self) -> Result<()> {
        let timeout = self.inner.cfg.agent_timeout.as_secs_f64();
        let t = now();
        let open = {
            let mut conn = self.store().pool().acquire().await?;
            db::open_commands(&mut conn).await?
        };
        for c in open {
            // AWS's agent never sends updates while a hook runs: a command it acknowledged
            // (InProgress) is waited for as long as AWS waits; Slipway's agent heartbeats
            // (Live), and a command not yet taken or acknowledged waits for the timeout.
            let limit = match c.status.as_str() {
                "InProgress" => AWS_AGENT_COMMAND_LIMIT.max(timeout),
                _ => timeout,
            };
            if t - c.updated < limit {
                continue;
            }
            let mut tx = self.store().begin_write().await?;
            if db::get_command(&mut tx, &c.command_id)
                .await?
                .is_some_and(|x| x.status == c.status && x.updated == c.updated)
            {
                db::set_command(&mut tx, &c.command_id, "Failed", t).await?;
                self.apply_in(
                    &mut tx,
                    &c.deployment_id,
                    Input::HostLost {
                        command: c.command_id.clone(),
                    },
                )
                .await?;
            }
            tx.commit().await?;
            self.inner.commands.notify_waiters();
        }
        Ok(())
    }
}

/// How long an acknowledged command of an agent that does not heartbeat is waited for (AWS's
/// service-side limit: 70 minutes).
const AWS_AGENT_COMMAND_LIMIT: f64 = 4200.0;

pub(crate) fn success() -> slipway_model::codedeploy::Diagnostics {
    slipway_model::codedeploy::Diagnostics {
        error_code: Some("Success".into()),
        script_name: Some(String::new()),
        message: Some("Succeeded".into()),
        log_tail: Some(String::new()),
    }
}

/// The revision of a deployment as its hosts read it.
pub(crate) fn revision_of(d: &Deployment) -> RevisionLocation {
    d.info.revision.clone().unwrap_or_default()
}
