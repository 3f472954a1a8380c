//! Deployment groups: which on-premises instances a deployment reaches (tag filters or tag
//! sets), how (config, style, load balancer), and what happens on failure (rollback, alarms).

use crate::error::{err, ErrorKind, Result};
use crate::CodeDeploy;
use slipway_model::codedeploy::{
    CreateDeploymentGroupInput, DeploymentGroupInfo, TagFilter, UpdateDeploymentGroupInput,
};
use slipway_store::deploy as db;
use slipway_store::now;

pub(crate) fn group_missing(app: &str, group: &str) -> crate::error::Error {
    err(
        ErrorKind::DeploymentGroupDoesNotExistException,
        format!("No Deployment Group found for name: {group} in application {app}"),
    )
}

/// Does an instance with `tags` match one tag filter?
fn filter_matches(f: &TagFilter, tags: &[(String, String)]) -> bool {
    let key = f.key.as_deref().unwrap_or("");
    let value = f.value.as_deref().unwrap_or("");
    tags.iter().any(|(k, v)| match f.r#type.as_deref() {
        Some("KEY_ONLY") => k == key,
        Some("VALUE_ONLY") => v == value,
        _ => k == key && v == value,
    })
}

/// Does an instance with `tags` belong to the group? Tag filters are ORed; in a tag set, an
/// instance must match some filter of every list.
pub fn targets(g: &DeploymentGroupInfo, tags: &[(String, String)]) -> bool {
    if let Some(set) = g
        .on_premises_tag_set
        .as_ref()
        .and_then(|s| s.on_premises_tag_set_list.as_ref())
        .filter(|l| !l.is_empty())
    {
        return set
            .iter()
            .all(|list| list.iter().any(|f| filter_matches(f, tags)));
    }
    g.on_premises_instance_tag_filters
        .iter()
        .flatten()
        .any(|f| filter_matches(f, tags))
}

fn check_filters(filters: &[TagFilter]) -> Result<()> {
    for f in filters {
        let ok = match f.r#type.as_deref() {
            Some("KEY_ONLY") => f.key.as_deref().is_some_and(|k| !k.is_empty()),
            Some("VALUE_ONLY") => f.value.as_deref().is_some_and(|v| !v.is_empty()),
            Some("KEY_AND_VALUE") | None => f.key.as_deref().is_some_and(|k| !k.is_empty()),
            _ => false,
        };
        if !ok {
            return Err(err(
                ErrorKind::InvalidTagException,
                "A tag filter needs a key (KEY_ONLY, KEY_AND_VALUE) or a value (VALUE_ONLY)",
            ));
        }
    }
    Ok(())
}

/// The checks CreateDeploymentGroup and UpdateDeploymentGroup share, on the group as it will
/// be.
fn check_group(g: &DeploymentGroupInfo, asg: bool, ecs: bool) -> Result<()> {
    if g.ec2_tag_filters.as_ref().is_some_and(|f| !f.is_empty())
        || g.ec2_tag_set
            .as_ref()
            .is_some_and(|s| s.ec2_tag_set_list.as_ref().is_some_and(|l| !l.is_empty()))
    {
        return Err(err(
            ErrorKind::InvalidEC2TagException,
            "Slipway has no EC2 instances: target on-premises instances with onPremisesInstanceTagFilters or onPremisesTagSet",
        ));
    }
    if asg {
        return Err(err(
            ErrorKind::InvalidAutoScalingGroupException,
            "Slipway has no Auto Scaling groups: target on-premises instances by tag",
        ));
    }
    if ecs {
        return Err(err(
            ErrorKind::InvalidECSServiceException,
            "ECS services are for the ECS compute platform, which Slipway does not run",
        ));
    }
    let filters = g
        .on_premises_instance_tag_filters
        .as_deref()
        .unwrap_or_default();
    let set = g
        .on_premises_tag_set
        .as_ref()
        .and_then(|s| s.on_premises_tag_set_list.as_deref())
        .unwrap_or_default();
    if !filters.is_empty() && !set.is_empty() {
        return Err(err(
            ErrorKind::InvalidInputException,
            "onPremisesInstanceTagFilters and onPremisesTagSet cannot both be specified",
        ));
    }
    if set.len() > 3 {
        return Err(err(
            ErrorKind::TagSetListLimitExceededException,
            "An on-premises tag set has at most three tag filter lists",
        ));
    }
    check_filters(filters)?;
    for list in set {
        check_filters(list)?;
    }
    if let Some(triggers) = &g.trigger_configurations {
        if triggers.len() > 10 {
            return Err(err(
                ErrorKind::TriggerTargetsLimitExceededException,
                "A deployment group has at most 10 triggers",
            ));
        }
        if triggers.iter().any(|t| {
            t.trigger_name.as_deref().unwrap_or("").is_empty()
                || t.trigger_target_arn.as_deref().unwrap_or("").is_empty()
        }) {
            return Err(err(
                ErrorKind::InvalidTriggerConfigException,
                "A trigger needs a name and a target ARN",
            ));
        }
    }
    if let Some(a) = &g.alarm_configuration {
        let alarms = a.alarms.as_deref().unwrap_or_default();
        if alarms.len() > 10 {
            return Err(err(
                ErrorKind::AlarmsLimitExceededException,
                "A deployment group has at most 10 alarms",
            ));
        }
        if a.enabled == Some(true) && alarms.is_empty() {
            return Err(err(
                ErrorKind::InvalidAlarmConfigException,
                "An enabled alarm configuration needs at least one alarm",
            ));
        }
        for alarm in alarms {
            crate::deployments::parse_check(alarm.name.as_deref().unwrap_or(""))
                .map_err(|m| err(ErrorKind::InvalidAlarmConfigException, m))?;
        }
    }
    if let Some(r) = &g.auto_rollback_configuration {
        if r.enabled == Some(true) && r.events.as_ref().is_none_or(|e| e.is_empty()) {
            return Err(err(
                ErrorKind::InvalidAutoRollbackConfigException,
                "An enabled automatic rollback configuration needs at least one event",
            ));
        }
    }
    let style = g.deployment_style.clone().unwrap_or_default();
    let with_traffic = style.deployment_option.as_deref() == Some("WITH_TRAFFIC_CONTROL");
    let blue_green = style.deployment_type.as_deref() == Some("BLUE_GREEN");
    let lb = g.load_balancer_info.as_ref();
    let target_groups = lb
        .map(|l| {
            l.target_group_info_list.iter().flatten().count()
                + l.elb_info_list.iter().flatten().count()
        })
        .unwrap_or(0);
    if lb.is_some_and(|l| {
        l.target_group_pair_info_list
            .as_ref()
            .is_some_and(|p| !p.is_empty())
    }) {
        return Err(err(
            ErrorKind::InvalidTargetGroupPairException,
            "Target group pairs are for the ECS compute platform, which Slipway does not run",
        ));
    }
    if (with_traffic || blue_green) && target_groups == 0 {
        return Err(err(
            ErrorKind::InvalidLoadBalancerInfoException,
            "A deployment with traffic control needs loadBalancerInfo naming a target group",
        ));
    }
    if blue_green && !with_traffic {
        return Err(err(
            ErrorKind::InvalidDeploymentStyleException,
            "A blue/green deployment moves traffic: its deployment option must be WITH_TRAFFIC_CONTROL",
        ));
    }
    Ok(())
}

impl CodeDeploy {
    pub async fn create_group(&self, input: CreateDeploymentGroupInput) -> Result<String> {
        let app = input.application_name.clone().unwrap_or_default();
        let name = input.deployment_group_name.clone().unwrap_or_default();
        let role = input.service_role_arn.clone().unwrap_or_default();
        if role.is_empty() {
            return Err(err(
                ErrorKind::RoleRequiredException,
                "Role ARN is required",
            ));
        }
        if !role.starts_with("arn:") {
            return Err(err(
                ErrorKind::InvalidRoleException,
                format!("The service role {role} is not an ARN"),
            ));
        }
        let config = input
            .deployment_config_name
            .clone()
            .unwrap_or_else(|| "CodeDeployDefault.OneAtATime".into());
        self.get_config(&config).await?;
        let id = crate::new_id();
        let info = DeploymentGroupInfo {
            application_name: Some(app.clone()),
            deployment_group_id: Some(id.clone()),
            deployment_group_name: Some(name.clone()),
            deployment_config_name: Some(config),
            ec2_tag_filters: input.ec2_tag_filters,
            on_premises_instance_tag_filters: input.on_premises_instance_tag_filters,
            auto_scaling_groups: None,
            service_role_arn: Some(role),
            trigger_configurations: input.trigger_configurations,
            alarm_configuration: input.alarm_configuration,
            auto_rollback_configuration: input.auto_rollback_configuration,
            deployment_style: Some(input.deployment_style.unwrap_or_else(|| {
                slipway_model::codedeploy::DeploymentStyle {
                    deployment_type: Some("IN_PLACE".into()),
                    deployment_option: Some("WITHOUT_TRAFFIC_CONTROL".into()),
                }
            })),
            outdated_instances_strategy: Some(
                input
                    .outdated_instances_strategy
                    .unwrap_or_else(|| "UPDATE".into()),
            ),
            blue_green_deployment_configuration: input.blue_green_deployment_configuration,
            load_balancer_info: input.load_balancer_info,
            ec2_tag_set: input.ec2_tag_set,
            on_premises_tag_set: input.on_premises_tag_set,
            compute_platform: Some("Server".into()),
            termination_hook_enabled: Some(input.termination_hook_enabled.unwrap_or(false)),
            ..Default::default()
        };
        check_group(
            &info,
            input.auto_scaling_groups.is_some_and(|a| !a.is_empty()),
            input.ecs_services.is_some_and(|e| !e.is_empty()),
        )?;
        let mut tx = self.store().begin_write().await?;
        if db::get_app(&mut tx, &self.region, &app).await?.is_none() {
            return Err(crate::applications::app_missing(&app));
        }
        let row = db::GroupRow {
            application: app.clone(),
            name: name.clone(),
            group_id: id.clone(),
            doc: serde_json::to_string(&info)?,
        };
        if !db::insert_group(&mut tx, &self.region, &row, now()).await? {
            return Err(err(
                ErrorKind::DeploymentGroupAlreadyExistsException,
                format!("The deployment group {name} already exists in application {app}"),
            ));
        }
        self.put_tags(
            &mut tx,
            &self.group_arn(&app, &name),
            input.tags.as_deref().unwrap_or_default(),
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A deployment group as stored.
    pub async fn group(&self, app: &str, name: &str) -> Result<DeploymentGroupInfo> {
        let mut conn = self.store().pool().acquire().await?;
        if db::get_app(&mut conn, &self.region, app).await?.is_none() {
            return Err(crate::applications::app_missing(app));
        }
        let row = db::get_group(&mut conn, &self.region, app, name)
            .await?
            .ok_or_else(|| group_missing(app, name))?;
        Ok(serde_json::from_str(&row.doc)?)
    }

    pub async fn list_groups(&self, app: &str) -> Result<Vec<String>> {
        let mut conn = self.store().pool().acquire().await?;
        if db::get_app(&mut conn, &self.region, app).await?.is_none() {
            return Err(crate::applications::app_missing(app));
        }
        Ok(db::list_groups(&mut conn, &self.region, app)
            .await?
            .into_iter()
            .map(|g| g.name)
            .collect())
    }

    pub async fn batch_get_groups(
        &self,
        app: &str,
        names: &[String],
    ) -> Result<(Vec<DeploymentGroupInfo>, Option<String>)> {
        if names.len() > 100 {
            return Err(err(
                ErrorKind::BatchLimitExceededException,
                "The maximum number of deployment groups that can be returned is 100",
            ));
        }
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for n in names {
            match self.group(app, n).await {
                Ok(g) => out.push(g),
                Err(e) if e.kind() == Some(ErrorKind::DeploymentGroupDoesNotExistException) => {
                    missing.push(n.clone())
                }
                Err(e) => return Err(e),
            }
        }
        let message = (!missing.is_empty())
            .then(|| format!("Deployment groups not found: {}", missing.join(", ")));
        Ok((out, message))
    }

    pub async fn update_group(&self, input: UpdateDeploymentGroupInput) -> Result<()> {
        let app = input.application_name.clone().unwrap_or_default();
        let name = input
            .current_deployment_group_name
            .clone()
            .unwrap_or_default();
        let mut g = self.group(&app, &name).await?;
        let new_name = input
            .new_deployment_group_name
            .clone()
            .unwrap_or_else(|| name.clone());
        if let Some(c) = input.deployment_config_name {
            self.get_config(&c).await?;
            g.deployment_config_name = Some(c);
        }
        if let Some(role) = input.service_role_arn {
            if !role.starts_with("arn:") {
                return Err(err(
                    ErrorKind::InvalidRoleException,
                    format!("The service role {role} is not an ARN"),
                ));
            }
            g.service_role_arn = Some(role);
        }
        macro_rules! replace {
            ($($field:ident),*) => { $( if input.$field.is_some() { g.$field = input.$field; } )* };
        }
        replace!(
            ec2_tag_filters,
            on_premises_instance_tag_filters,
            trigger_configurations,
            alarm_configuration,
            auto_rollback_configuration,
            outdated_instances_strategy,
            deployment_style,
            blue_green_deployment_configuration,
            load_balancer_info,
            ec2_tag_set,
            on_premises_tag_set,
            termination_hook_enabled
        );
        g.deployment_group_name = Some(new_name.clone());
        check_group(
            &g,
            input.auto_scaling_groups.is_some_and(|a| !a.is_empty()),
            input.ecs_services.is_some_and(|e| !e.is_empty()),
        )?;
        let mut tx = self.store().begin_write().await?;
        if !db::update_group(
            &mut tx,
            &self.region,
            &app,
            &name,
            &new_name,
            &serde_json::to_string(&g)?,
        )
        .await?
        {
            return Err(err(
                ErrorKind::DeploymentGroupAlreadyExistsException,
                format!("The deployment group {new_name} already exists in application {app}"),
            ));
        }
        if new_name != name {
            let old = self.group_arn(&app, &name);
            let mut conn_tags = slipway_store::tags::get(&mut tx, "codedeploy", &old).await?;
            self.drop_tags(&mut tx, &old).await?;
            let list = crate::applications::tag_list(std::mem::take(&mut conn_tags));
            self.put_tags(&mut tx, &self.group_arn(&app, &new_name), &list)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_group(&self, app: &str, name: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        db::delete_group(&mut tx, &self.region, app, name).await?;
        self.drop_tags(&mut tx, &self.group_arn(app, name)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a group's last attempted (and, when it succeeded, last successful) deployment.
    pub(crate) async fn record_last(
        &self,
        conn: &mut slipway_store::Conn,
        app: &str,
        group: &str,
        last: slipway_model::codedeploy::LastDeploymentInfo,
        succeeded: bool,
    ) -> Result<()> {
        let Some(row) = db::get_group(conn, &self.region, app, group).await? else {
            return Ok(());
        };
        let mut g: DeploymentGroupInfo = serde_json::from_str(&row.doc)?;
        if succeeded {
            g.last_successful_deployment = Some(last.clone());
        }
        g.last_attempted_deployment = Some(last);
        db::update_group(
            conn,
            &self.region,
            app,
            group,
            group,
            &serde_json::to_string(&g)?,
        )
        .await?;
        Ok(())
    }
}
