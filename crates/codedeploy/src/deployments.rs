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
/// probe the server sends: any 2xx or 3xx answer is healthy), or `command:…` (a shell
/// command each host's agent runs: exit status 0 is healthy).
pub fn parse_check(name: &str) -> std::result::Result<(), String> {
    if name.starts_with("http://") || name.starts_with("https://") {
        Ok(())
    } else if let Some(c) = name.strip_prefix(orchestrator::COMMAND_CHECK) {
        if c.trim().is_empty() {
            Err(format!("The health check {name:?} names no command to run"))
        } else {
            Ok(())
        }
    } else {
        Err(format!("Slipway's alarms are health checks: {name:?} must be an http:// or https:// URL to probe, or command:… to run on each host"))
    }
}

/// Why a deployment is created.
pub(crate) struct Origin {
    pub creator: String,
    pub rollback_of: Option<String>,
    /// A blue/green deployment's replacement fleet (CreateDeployment's targetInstances).
    pub green: Option<Vec<slipway_model::codedeploy::TagFilter>>,
    /// A blue/green rollback: traffic back to these original hosts, off these replacements.
    pub reroute_back: Option<(Vec<String>, Vec<String>)>,
}

/// Lifecycle events named in order, all in `phase`.
fn events(names: &[&str], phase: u32) -> (Vec<LifecycleEvent>, Vec<u32>) {
    let e = names
        .iter()
        .map(|n| LifecycleEvent {
            lifecycle_event_name: Some((*n).into()),
            status: Some("Pending".into()),
            ..Default::default()
        })
        .collect();
    (e, vec![phase; names.len()])
}

const ALLOW: &[&str] = &["BeforeAllowTraffic", "AllowTraffic", "AfterAllowTraffic"];
const BLOCK: &[&str] = &["BeforeBlockTraffic", "BlockTraffic", "AfterBlockTraffic"];

impl CodeDeploy {
    /// A deployment created for an outside caller (a pipeline's action execution, its
    /// `externalId`): the one already made for it, when there is one.
    pub async fn create_deployment_for(
        &self,
        input: CreateDeploymentInput,
        external_id: &str,
    ) -> Result<String> {
        {
            let mut conn = self.store().pool().acquire().await?;
            if let Some(id) = db::by_external_id(&mut conn, &self.region, external_id).await? {
                return Ok(id);
            }
        }
        self.create(input, Some(external_id.to_owned())).await
    }

    pub async fn create_deployment(&self, input: CreateDeploymentInput) -> Result<String> {
        self.create(input, None).await
    }

    async fn create(
        &self,
        input: CreateDeploymentInput,
        external_id: Option<String>,
    ) -> Result<String> {
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
        let blue_green = group
            .deployment_style
            .as_ref()
            .and_then(|s| s.deployment_type.as_deref())
            == Some("BLUE_GREEN");
        let green = match (&input.target_instances, blue_green) {
            (Some(t), true) => {
                let filters: Vec<slipway_model::codedeploy::TagFilter> = t
                    .tag_filters
                    .iter()
                    .flatten()
                    .map(|f| slipway_model::codedeploy::TagFilter { key: f.key.clone(), value: f.value.clone(), r#type: f.r#type.clone() })
                    .collect();
                if filters.is_empty() || t.auto_scaling_groups.as_ref().is_some_and(|a| !a.is_empty()) {
                    return Err(err(
                        ErrorKind::InvalidTargetInstancesException,
                        "Name the replacement fleet with targetInstances.tagFilters (matched against on-premises instance tags); Slipway has no Auto Scaling groups",
                    ));
                }
                Some(filters)
            }
            (None, true) => {
                return Err(err(
                    ErrorKind::InvalidTargetInstancesException,
                    "A blue/green deployment needs targetInstances: the tag filters of its replacement fleet",
                ))
            }
            (Some(_), false) => {
                return Err(err(
                    ErrorKind::InvalidTargetInstancesException,
                    "targetInstances are for blue/green deployments",
                ))
            }
            (None, false) => None,
        };
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
        let info = DeploymentInfo {
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
            external_id,
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
        let external_id_set = info.external_id.is_some();
        let id = self
            .start_deployment(
                &mut tx,
                info,
                Origin {
                    creator: if external_id_set {
                        "CodeDeploy"
                    } else {
                        "user"
                    }
                    .into(),
                    rollback_of: None,
                    green,
                    reroute_back: None,
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
        let blue_green = style.deployment_type.as_deref() == Some("BLUE_GREEN");
        let green_group =
            origin
                .green
                .as_ref()
                .map(|f| slipway_model::codedeploy::DeploymentGroupInfo {
                    on_premises_instance_tag_filters: Some(f.clone()),
                    ..Default::default()
                });
        let mut last_phase = 0;
        for row in db::list_instances(tx, &self.region).await? {
            if !row.registered {
                continue;
            }
            let inst: slipway_model::codedeploy::InstanceInfo = serde_json::from_str(&row.doc)?;
            let tags = crate::instances::tags_of(&inst);
            let in_group = crate::groups::targets(&group, &tags);
            let green = green_group
                .as_ref()
                .is_some_and(|g| crate::groups::targets(g, &tags));
            let ((evs, phases), label) = if let Some((back_to, off)) = &origin.reroute_back {
                if back_to.contains(&row.name) {
                    last_phase = last_phase.max(1);
                    (events(ALLOW, 0), Some("Blue"))
                } else if off.contains(&row.name) {
                    last_phase = last_phase.max(1);
                    (events(BLOCK, 1), Some("Green"))
                } else {
                    continue;
                }
            } else if blue_green && green_group.is_some() {
                if green {
                    last_phase = last_phase.max(1);
                    let (mut e, mut p) = events(orchestrator::IN_PLACE, 0);
                    let (e2, p2) = events(ALLOW, 1);
                    e.extend(e2);
                    p.extend(p2);
                    ((e, p), Some("Green"))
                } else if in_group {
                    last_phase = 2;
                    (events(BLOCK, 2), Some("Blue"))
                } else {
                    continue;
                }
            } else if in_group && only.as_ref().is_none_or(|o| o.contains(&row.name)) {
                let names = if with_traffic {
                    orchestrator::IN_PLACE_WITH_TRAFFIC
                } else {
                    orchestrator::IN_PLACE
                };
                (events(names, 0), None)
            } else {
                continue;
            };
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
                events: evs,
                command: None,
                unhealthy,
                batch: 0,
                phases,
                label: label.map(str::to_owned),
                checking: false,
                checked: false,
            });
        }
        if blue_green
            && last_phase == 2
            && !targets.iter().any(|t| t.label.as_deref() == Some("Green"))
        {
            return Err(err(
                ErrorKind::InvalidTargetInstancesException,
                "No registered on-premises instance matches the replacement fleet's tag filters",
            ));
        }
        let fleet = targets
            .iter()
            .filter(|t| t.phases.first() == Some(&0) || t.phases.is_empty())
            .count();
        let min = config.minimum_healthy_hosts.clone().unwrap_or_default();
        let health = if origin.reroute_back.is_some() {
            crate::configs::Health::of(
                &slipway_model::codedeploy::MinimumHealthyHosts {
                    r#type: Some("HOST_COUNT".into()),
                    value: Some(0),
                },
                fleet,
            )
        } else {
            crate::configs::Health::of(&min, fleet)
        };
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
        // A rollback is the remedy for what the health checks saw: it is not stopped by them.
        let d_alarms = info
            .override_alarm_configuration
            .clone()
            .or(group.alarm_configuration.clone())
            .filter(|a| a.enabled == Some(true) && origin.rollback_of.is_none());
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
            alarms: d_alarms,
            phase: 0,
            last_phase,
            ready_wait: blue_green
                && origin.reroute_back.is_none()
                && group
                    .blue_green_deployment_configuration
                    .as_ref()
                    .and_then(|b| b.deployment_ready_option.as_ref())
                    .is_some_and(|r| r.action_on_timeout.as_deref() == Some("STOP_DEPLOYMENT")),
            ready_since: None,
            blue_green: blue_green.then(|| {
                let term = group
                    .blue_green_deployment_configuration
                    .as_ref()
                    .and_then(|b| b.terminate_blue_instances_on_deployment_success.as_ref());
                orchestrator::BlueGreen {
                    green_filters: origin.green.clone().unwrap_or_default(),
                    terminate: origin.reroute_back.is_none()
                        && term.and_then(|t| t.action.as_deref()) == Some("TERMINATE"),
                    termination_wait: term
                        .and_then(|t| t.termination_wait_time_in_minutes)
                        .unwrap_or(60) as f64
                        * 60.0,
                    terminated: false,
                    reroute_back: origin.reroute_back.is_some(),
                    ready_wait: group
                        .blue_green_deployment_configuration
                        .as_ref()
                        .and_then(|b| b.deployment_ready_option.as_ref())
                        .and_then(|r| r.wait_time_in_minutes)
                        .unwrap_or(0) as f64
                        * 60.0,
                }
            }),
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
                active: 1,
                state: serde_json::to_string(&d)?,
                created: t,
                external_id: d.info.external_id.clone(),
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
                        // The service's own traffic events are queued for the service.
                        let host = if orchestrator::is_service_event(event) {
                            crate::traffic::TRAFFIC_HOST.to_owned()
                        } else {
                            tg.host.clone()
                        };
                        db::insert_command(
                            tx,
                            &db::CommandRow {
                                command_id: command.clone(),
                                deployment_id: id.to_owned(),
                                region: self.region.to_string(),
                                instance: tg.instance.clone(),
                                host,
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
            if d.is_done() {
                self.finish(tx, id, d, rollback).await?;
            }
            d.info.deployment_overview = Some(d.overview());
            db::update_deployment(
                tx,
                id,
                d.status(),
                activity(d),
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
        if succeeded {
            if let Some(bg) = d.blue_green.clone().filter(|b| !b.reroute_back) {
                // The replacement fleet is the group's fleet from now on.
                if let Some(row) = db::get_group(tx, &self.region, &app, &group).await? {
                    let mut g: slipway_model::codedeploy::DeploymentGroupInfo =
                        serde_json::from_str(&row.doc)?;
                    g.on_premises_instance_tag_filters = Some(bg.green_filters.clone());
                    g.on_premises_tag_set = None;
                    db::update_group(
                        tx,
                        &self.region,
                        &app,
                        &group,
                        &group,
                        &serde_json::to_string(&g)?,
                    )
                    .await?;
                }
                if bg.terminate {
                    d.info.instance_termination_wait_time_started = Some(true);
                }
            }
        }
        if !rollback
            || d.info
                .rollback_info
                .as_ref()
                .is_some_and(|r| r.rollback_triggering_deployment_id.is_some())
        {
            return Ok(());
        }
        if let Some(bg) = d.blue_green.clone() {
            return self.reroute_back(tx, id, d, &bg).await;
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
                green: None,
                reroute_back: None,
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

    /// A blue/green deployment failed or stopped: once traffic has begun to move, a rollback
    /// deployment moves it back to the original hosts (AllowTraffic there, BlockTraffic on
    /// the replacements).
    async fn reroute_back(
        &self,
        tx: &mut Conn,
        id: &str,
        d: &mut Deployment,
        bg: &orchestrator::BlueGreen,
    ) -> Result<()> {
        if bg.reroute_back {
            return Ok(());
        }
        let moved = d.targets.iter().any(|t| {
            t.events.iter().any(|e| {
                matches!(
                    e.lifecycle_event_name.as_deref(),
                    Some("AllowTraffic" | "BlockTraffic")
                ) && matches!(
                    e.status.as_deref(),
                    Some("Succeeded" | "Failed" | "InProgress")
                )
            })
        });
        if !moved {
            d.info.rollback_info = Some(RollbackInfo {
                rollback_deployment_id: None,
                rollback_triggering_deployment_id: None,
                rollback_message: Some("No rollback was needed: traffic had not been moved to the replacement instances".into()),
            });
            return Ok(());
        }
        let of = |label: &str| -> Vec<String> {
            d.targets
                .iter()
                .filter(|t| t.label.as_deref() == Some(label))
                .map(|t| t.instance.clone())
                .collect()
        };
        let info = DeploymentInfo {
            application_name: d.info.application_name.clone(),
            deployment_group_name: d.info.deployment_group_name.clone(),
            deployment_config_name: Some("CodeDeployDefault.AllAtOnce".into()),
            revision: d.info.revision.clone(),
            description: Some(format!(
                "Rollback of {id}: traffic back to the original instances"
            )),
            ..Default::default()
        };
        let rb = Box::pin(self.start_deployment(
            tx,
            info,
            Origin {
                creator: "codeDeployRollback".into(),
                rollback_of: Some(id.to_owned()),
                green: None,
                reroute_back: Some((of("Blue"), of("Green"))),
            },
            None,
        ))
        .await?;
        d.info.rollback_info = Some(RollbackInfo {
            rollback_deployment_id: Some(rb.clone()),
            rollback_triggering_deployment_id: None,
            rollback_message: Some(format!("Deployment {id} was rolled back by {rb}, which moves traffic back to the original instances")),
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
            instance_type: t.label.clone(),
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

    /// The instances of a deployment (their instance ids), filtered by status and by type
    /// (Blue, Green).
    pub async fn list_deployment_instances(
        &self,
        id: &str,
        statuses: &[String],
        types: &[String],
    ) -> Result<Vec<String>> {
        if let Some(bad) = types
            .iter()
            .find(|t| !matches!(t.as_str(), "Blue" | "Green"))
        {
            return Err(err(
                ErrorKind::InvalidInstanceTypeException,
                format!("The instance type {bad} is not valid"),
            ));
        }
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
            .filter(|t| types.is_empty() || t.label.as_ref().is_some_and(|l| types.contains(l)))
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
                    instance_label: t.label.clone(),
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

    /// ContinueDeployment: a blue/green deployment that is Ready moves traffic.
    pub async fn continue_deployment(&self, id: &str) -> Result<()> {
        let d = self.deployment(id).await?;
        if d.status() == "Ready" {
            return self.apply(id, Input::Continue).await;
        }
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

    /// The deployments still running or deregistering their original hosts: (id, region,
    /// state).
    async fn active(&self) -> Result<Vec<(String, String, Deployment)>> {
        let mut conn = self.store().pool().acquire().await?;
        let mut out = Vec::new();
        for id in db::active_deployments(&mut conn).await? {
            if let Some(row) = db::get_deployment(&mut conn, &id).await? {
                let d: Deployment = serde_json::from_str(&row.state)?;
                out.push((id, row.region, d));
            }
        }
        Ok(out)
    }

    /// The runtime: performs the service's traffic events, stops deployments whose health
    /// checks fail or whose Ready wait ran out, deregisters replaced hosts, and fails hosts
    /// whose agents went quiet. One task in the server.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        if let Ok(mut tx) = self.store().begin_write().await {
            let _ = db::requeue(&mut tx, crate::traffic::TRAFFIC_HOST).await;
            let _ = tx.commit().await;
        }
        loop {
            if let Err(e) = self.perform_traffic().await {
                tracing::warn!(error = %e, "moving deployment traffic failed");
            }
            // The running deployments, read once for the timers and the health checks.
            match self.active().await {
                Ok(active) => {
                    if let Err(e) = self.timers(&active).await {
                        tracing::warn!(error = %e, "codedeploy timers failed");
                    }
                    if let Err(e) = self.check_alarms(&active).await {
                        tracing::warn!(error = %e, "checking deployment health checks failed");
                    }
                    if let Err(e) = self.recheck_hosts(&active).await {
                        tracing::warn!(error = %e, "queueing host health checks failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "reading running deployments failed"),
            }
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

    /// Performs the queued traffic events, one at a time.
    async fn perform_traffic(&self) -> Result<()> {
        loop {
            let c = {
                let mut tx = self.store().begin_write().await?;
                let c = db::take_command(&mut tx, crate::traffic::TRAFFIC_HOST, now()).await?;
                tx.commit().await?;
                match c {
                    Some(c) => c,
                    None => return Ok(()),
                }
            };
            let svc = self.in_region(&c.region);
            let report = match svc.traffic_event(&c).await {
                Ok(()) => crate::spec::Report {
                    error_code: 0,
                    message: format!("{} {}", c.lifecycle_event, c.instance),
                    ..Default::default()
                },
                Err(m) => crate::spec::Report {
                    error_code: 5,
                    message: m,
                    ..Default::default()
                },
            };
            let ok = report.error_code == 0;
            svc.complete(
                "*",
                &c.command_id,
                ok,
                Some(&serde_json::to_string(&report)?),
            )
            .await?;
        }
    }

    /// Moves one host in (AllowTraffic) or out (BlockTraffic) of its group's target groups.
    async fn traffic_event(&self, c: &db::CommandRow) -> std::result::Result<(), String> {
        let allow = c.lifecycle_event == "AllowTraffic";
        let mut conn = self
            .store()
            .pool()
            .acquire()
            .await
            .map_err(|e| e.to_string())?;
        let row = db::get_deployment(&mut conn, &c.deployment_id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the deployment is gone")?;
        let d: Deployment = serde_json::from_str(&row.state).map_err(|e| e.to_string())?;
        let lb = d.info.load_balancer_info.clone().unwrap_or_default();
        let names: Vec<String> = lb
            .target_group_info_list
            .iter()
            .flatten()
            .filter_map(|t| t.name.clone())
            .chain(
                lb.elb_info_list
                    .iter()
                    .flatten()
                    .filter_map(|e| e.name.clone()),
            )
            .collect();
        for tg in names {
            let current: Vec<String> = match db::get_traffic(&mut conn, &self.region, &tg)
                .await
                .map_err(|e| e.to_string())?
            {
                Some(j) => serde_json::from_str(&j).unwrap_or_default(),
                // At first the hosts serving are the group's: the original fleet of a
                // blue/green deployment, every host of an in-place one.
                None => d
                    .targets
                    .iter()
                    .filter(|t| d.blue_green.is_none() || t.label.as_deref() == Some("Blue"))
                    .map(|t| t.instance.clone())
                    .collect(),
            };
            let mut next: Vec<String> = current.into_iter().filter(|i| *i != c.instance).collect();
            if allow {
                next.push(c.instance.clone());
            }
            next.sort();
            let mut servers = Vec::new();
            for name in &next {
                let inst = db::get_instance(&mut conn, &self.region, name)
                    .await
                    .map_err(|e| e.to_string())?;
                let info: Option<slipway_model::codedeploy::InstanceInfo> =
                    inst.and_then(|i| serde_json::from_str(&i.doc).ok());
                let address = info
                    .as_ref()
                    .and_then(|i| crate::instances::tags_of(i).into_iter().find(|(k, _)| k == crate::traffic::ADDRESS_TAG))
                    .map(|(_, v)| v)
                    .ok_or_else(|| format!("The instance {name} has no {} tag (host:port behind the load balancer)", crate::traffic::ADDRESS_TAG))?;
                servers.push((name.clone(), address));
            }
            self.inner.cfg.traffic.apply(&tg, &servers).await?;
            let mut tx = self
                .store()
                .begin_write()
                .await
                .map_err(|e| e.to_string())?;
            db::set_traffic(
                &mut tx,
                &self.region,
                &tg,
                &serde_json::to_string(&next).unwrap_or_default(),
            )
            .await
            .map_err(|e| e.to_string())?;
            tx.commit().await.map_err(|e| e.to_string())?;
            tracing::info!(target_group = %tg, instance = %c.instance, allow, serving = next.len(), "moved traffic");
        }
        Ok(())
    }

    /// Ready waits that ran out, and replaced hosts whose termination wait is over.
    async fn timers(&self, active: &[(String, String, Deployment)]) -> Result<()> {
        let t = now();
        let due = |d: &Deployment| match &d.blue_green {
            _ if d.status() == "Ready" => {
                let wait = d.blue_green.as_ref().map_or(0.0, |b| b.ready_wait);
                d.ready_since.is_some_and(|s| t - s >= wait)
            }
            Some(bg) if bg.terminate && !bg.terminated => d
                .info
                .complete_time
                .is_some_and(|c| t - c >= bg.termination_wait),
            _ => false,
        };
        // A write transaction only for a deployment whose timer is due (its state read
        // again inside it).
        for (id, _, _) in active.iter().filter(|(_, _, d)| due(d)) {
            let mut tx = self.store().begin_write().await?;
            let Some(row) = db::get_deployment(&mut tx, id).await? else {
                continue;
            };
            let mut d: Deployment = serde_json::from_str(&row.state)?;
            if !due(&d) {
                tx.commit().await?;
                continue;
            }
            let svc = self.in_region(&row.region);
            if d.status() == "Ready" {
                // The Ready wait ran out: STOP_DEPLOYMENT.
                let stop = Input::Stop {
                    alarm: None,
                    rollback: None,
                };
                svc.apply_in(&mut tx, id, stop).await?;
            } else {
                // The termination wait is over: the original hosts are deregistered.
                if let Some(bg) = d.blue_green.as_mut() {
                    bg.terminated = true;
                }
                for target in d
                    .targets
                    .iter()
                    .filter(|x| x.label.as_deref() == Some("Blue"))
                {
                    svc.deregister_in(&mut tx, &target.instance).await?;
                }
                db::update_deployment(
                    &mut tx,
                    id,
                    d.status(),
                    activity(&d),
                    &serde_json::to_string(&d)?,
                    t,
                )
                .await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// SkipWaitTimeForInstanceTermination: the original hosts are deregistered now.
    pub async fn skip_termination_wait(&self, id: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        let row = db::get_deployment(&mut tx, id)
            .await?
            .filter(|r| *r.region == *self.region)
            .ok_or_else(|| deployment_missing(id))?;
        let mut d: Deployment = serde_json::from_str(&row.state)?;
        match d.blue_green.as_mut() {
            Some(bg) if row.active == 2 => bg.termination_wait = 0.0,
            _ => {
                return Err(err(
                    ErrorKind::DeploymentNotStartedException,
                    format!(
                        "The deployment {id} is not waiting to terminate its original instances"
                    ),
                ))
            }
        }
        db::update_deployment(
            &mut tx,
            id,
            d.status(),
            activity(&d),
            &serde_json::to_string(&d)?,
            now(),
        )
        .await?;
        tx.commit().await?;
        self.wake();
        Ok(())
    }

    /// Probes the health checks of running deployments; a failing one stops its deployment
    /// (ALARM_ACTIVE, rolled back when the group says DEPLOYMENT_STOP_ON_ALARM).
    async fn check_alarms(&self, active: &[(String, String, Deployment)]) -> Result<()> {
        let Some(probe) = self.inner.cfg.probe.clone() else {
            return Ok(());
        };
        let active = active
            .iter()
            .filter(|(_, _, d)| !d.is_done())
            .filter_map(|(id, region, d)| Some((id, region, d.alarms.clone()?)));
        for (id, region, alarms) in active {
            for alarm in alarms.alarms.iter().flatten() {
                // Command checks run on the hosts (recheck_hosts), not here.
                let Some(name) = alarm
                    .name
                    .clone()
                    .filter(|n| !n.starts_with(orchestrator::COMMAND_CHECK))
                else {
                    continue;
                };
                match probe(name.clone()).await {
                    Ok(()) => {}
                    Err(false) if alarms.ignore_poll_alarm_failure == Some(true) => {}
                    Err(_) => {
                        tracing::info!(deployment = %id, check = %name, "health check failed: stopping the deployment");
                        self.in_region(region)
                            .apply(
                                id,
                                Input::Stop {
                                    alarm: Some(name),
                                    rollback: None,
                                },
                            )
                            .await?;
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues the command health checks again on the hosts that have passed them, every
    /// [`RECHECK_EVERY`] seconds while their deployment runs (one at a time per host).
    async fn recheck_hosts(&self, active: &[(String, String, Deployment)]) -> Result<()> {
        let t = now();
        let mut due = Vec::new();
        {
            let mut last = self.inner.rechecked.lock().expect("not poisoned");
            last.retain(|(id, _), _| active.iter().any(|(a, _, _)| a == id));
            for (id, region, d) in active {
                if d.is_done() || d.host_checks().is_empty() {
                    continue;
                }
                for tg in &d.targets {
                    if !tg.checked || !matches!(tg.status.as_str(), "Succeeded" | "Ready") {
                        continue;
                    }
                    let key = (id.clone(), tg.host.clone());
                    let at = last.entry(key).or_insert(t);
                    if t - *at >= RECHECK_EVERY {
                        *at = t;
                        due.push((id, region, tg));
                    }
                }
            }
        }
        if due.is_empty() {
            return Ok(());
        }
        let open = {
            let mut conn = self.store().pool().acquire().await?;
            db::open_commands(&mut conn).await?
        };
        let mut tx = self.store().begin_write().await?;
        for (id, region, tg) in due {
            if open.iter().any(|c| {
                c.deployment_id == *id
                    && c.host == tg.host
                    && c.lifecycle_event == orchestrator::HEALTH_CHECK
            }) {
                continue;
            }
            db::insert_command(
                &mut tx,
                &db::CommandRow {
                    command_id: crate::new_id(),
                    deployment_id: id.clone(),
                    region: region.clone(),
                    instance: tg.instance.clone(),
                    host: tg.host.clone(),
                    lifecycle_event: orchestrator::HEALTH_CHECK.into(),
                    status: "Pending".into(),
                    nonce: (t * 1000.0) as i64,
                    created: t,
                    updated: t,
                },
            )
            .await?;
        }
        tx.commit().await?;
        self.inner.commands.notify_waiters();
        Ok(())
    }

    /// Host commands no agent has spoken about within the timeout fail their hosts.
    pub async fn sweep(&self) -> Result<()> {
        let timeout = self.inner.cfg.agent_timeout.as_secs_f64();
        let t = now();
        let open = {
            let mut conn = self.store().pool().acquire().await?;
            db::open_commands(&mut conn).await?
        };
        for c in open
            .into_iter()
            .filter(|c| c.host != crate::traffic::TRAFFIC_HOST)
        {
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

/// A deployment's `active` column: 1 running, 2 succeeded and waiting to deregister its
/// original hosts, 0 done.
fn activity(d: &Deployment) -> i64 {
    if !d.is_done() {
        1
    } else if d.status() == "Succeeded"
        && d.blue_green
            .as_ref()
            .is_some_and(|b| b.terminate && !b.terminated)
    {
        2
    } else {
        0
    }
}

/// Seconds between a host's periodic health checks while its deployment runs.
const RECHECK_EVERY: f64 = 3.0;

/// How long an acknowledged command of an agent that does not heartbeat is waited for (AWS's
/// service-side limit: 70 minutes).
const AWS_AGENT_COMMAND_LIMIT: f64 = 4200.0;

/// The revision of a deployment as its hosts read it.
pub(crate) fn revision_of(d: &Deployment) -> RevisionLocation {
    d.info.revision.clone().unwrap_or_default()
}
