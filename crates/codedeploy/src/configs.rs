//! Deployment configs: the predefined `CodeDeployDefault.*` ones and custom HOST_COUNT /
//! FLEET_PERCENT configs, and what a config means for a fleet (how many hosts must stay
//! healthy).

use crate::error::{err, ErrorKind, Result};
use crate::CodeDeploy;
use slipway_model::codedeploy::{DeploymentConfigInfo, MinimumHealthyHosts};
use slipway_store::deploy as db;
use slipway_store::now;

/// The predefined Server configs: (name, type, value). OneAtATime reads back as
/// MOST_CONCURRENCY 1, as AWS shows it.
const PREDEFINED: &[(&str, &str, i32)] = &[
    ("CodeDeployDefault.AllAtOnce", "HOST_COUNT", 0),
    ("CodeDeployDefault.HalfAtATime", "FLEET_PERCENT", 50),
    ("CodeDeployDefault.OneAtATime", "MOST_CONCURRENCY", 1),
];

/// The predefined configs of the other platforms: named so they read as AWS's, refused when
/// used.
const OTHER_PLATFORMS: &[(&str, &str)] = &[
    ("CodeDeployDefault.LambdaAllAtOnce", "Lambda"),
    ("CodeDeployDefault.LambdaCanary10Percent5Minutes", "Lambda"),
    (
        "CodeDeployDefault.LambdaLinear10PercentEvery1Minute",
        "Lambda",
    ),
    ("CodeDeployDefault.ECSAllAtOnce", "ECS"),
    ("CodeDeployDefault.ECSCanary10Percent5Minutes", "ECS"),
    ("CodeDeployDefault.ECSLinear10PercentEvery1Minutes", "ECS"),
];

/// How many hosts of a fleet must stay healthy, and how many may be deployed to at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Health {
    /// The minimum number of healthy hosts.
    pub min_healthy: usize,
    /// OneAtATime: one host at a time, and the last host may fail.
    pub one_at_a_time: bool,
}

impl Health {
    /// The health rule of `config` for a fleet of `total` hosts (FLEET_PERCENT rounds up);
    /// None when the rule cannot be met at all (HEALTH_CONSTRAINTS_INVALID).
    pub fn of(config: &MinimumHealthyHosts, total: usize) -> Option<Health> {
        let value = config.value.unwrap_or(0).max(0) as usize;
        let (min_healthy, one) = match config.r#type.as_deref() {
            Some("MOST_CONCURRENCY") => (total.saturating_sub(1), true),
            Some("FLEET_PERCENT") => ((total * value).div_ceil(100), false),
            _ => (value, false),
        };
        if !one && total > 0 && min_healthy >= total {
            return None;
        }
        Some(Health {
            min_healthy,
            one_at_a_time: one,
        })
    }

    /// How many hosts may be deployed to at once.
    pub fn concurrency(&self, total: usize) -> usize {
        if self.one_at_a_time {
            1
        } else {
            total.saturating_sub(self.min_healthy).max(1)
        }
    }
}

fn predefined(name: &str) -> Option<DeploymentConfigInfo> {
    let (n, ty, value) = PREDEFINED.iter().find(|(n, _, _)| *n == name)?;
    Some(DeploymentConfigInfo {
        deployment_config_id: Some(format!(
            "predefined-{}",
            n.trim_start_matches("CodeDeployDefault.")
        )),
        deployment_config_name: Some((*n).into()),
        minimum_healthy_hosts: Some(MinimumHealthyHosts {
            r#type: Some((*ty).into()),
            value: Some(*value),
        }),
        create_time: Some(0.0),
        compute_platform: Some("Server".into()),
        ..Default::default()
    })
}

impl CodeDeploy {
    /// A deployment config by name (predefined or custom).
    pub async fn get_config(&self, name: &str) -> Result<DeploymentConfigInfo> {
        if let Some(c) = predefined(name) {
            return Ok(c);
        }
        if let Some((_, platform)) = OTHER_PLATFORMS.iter().find(|(n, _)| *n == name) {
            return Err(crate::platform_unsupported(platform));
        }
        let mut conn = self.store().pool().acquire().await?;
        match db::get_config(&mut conn, &self.region, name).await? {
            Some(doc) => Ok(serde_json::from_str(&doc)?),
            None => Err(err(
                ErrorKind::DeploymentConfigDoesNotExistException,
                format!("Deployment config {name} does not exist"),
            )),
        }
    }

    pub async fn create_config(
        &self,
        name: &str,
        min: Option<MinimumHealthyHosts>,
        platform: Option<&str>,
        traffic_routing: bool,
    ) -> Result<String> {
        crate::check_platform(platform)?;
        if traffic_routing {
            return Err(err(
                ErrorKind::InvalidTrafficRoutingConfigurationException,
                "Traffic routing configurations are for the Lambda and ECS compute platforms, which Slipway does not run",
            ));
        }
        let Some(min) = min else {
            return Err(err(
                ErrorKind::InvalidMinimumHealthyHostValueException,
                "A minimum healthy hosts value is required for the Server compute platform",
            ));
        };
        let Some(ty) = min.r#type.as_deref() else {
            return Err(err(
                ErrorKind::InvalidMinimumHealthyHostValueException,
                "The minimum healthy hosts type is required",
            ));
        };
        let value = min.value.unwrap_or(0);
        let ok = match ty {
            "HOST_COUNT" => value >= 0,
            "FLEET_PERCENT" => (0..100).contains(&value),
            _ => false,
        };
        if !ok {
            return Err(err(
                ErrorKind::InvalidMinimumHealthyHostValueException,
                format!("The minimum healthy hosts value {value} is not valid for {ty}"),
            ));
        }
        if name.starts_with("CodeDeployDefault.") {
            return Err(err(
                ErrorKind::DeploymentConfigAlreadyExistsException,
                format!("Deployment config {name} already exists"),
            ));
        }
        let id = crate::new_id();
        let t = now();
        let info = DeploymentConfigInfo {
            deployment_config_id: Some(id.clone()),
            deployment_config_name: Some(name.into()),
            minimum_healthy_hosts: Some(MinimumHealthyHosts {
                r#type: Some(ty.into()),
                value: Some(value),
            }),
            create_time: Some(t),
            compute_platform: Some("Server".into()),
            ..Default::default()
        };
        let mut tx = self.store().begin_write().await?;
        if !db::insert_config(
            &mut tx,
            &self.region,
            name,
            &serde_json::to_string(&info)?,
            t,
        )
        .await?
        {
            return Err(err(
                ErrorKind::DeploymentConfigAlreadyExistsException,
                format!("Deployment config {name} already exists"),
            ));
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn delete_config(&self, name: &str) -> Result<()> {
        if name.starts_with("CodeDeployDefault.") {
            return Err(err(
                ErrorKind::InvalidOperationException,
                "A predefined deployment config cannot be deleted",
            ));
        }
        let mut tx = self.store().begin_write().await?;
        let in_use = db::all_groups(&mut tx, &self.region)
            .await?
            .into_iter()
            .filter_map(|g| {
                serde_json::from_str::<slipway_model::codedeploy::DeploymentGroupInfo>(&g.doc).ok()
            })
            .any(|g| g.deployment_config_name.as_deref() == Some(name));
        if in_use {
            return Err(err(
                ErrorKind::DeploymentConfigInUseException,
                format!("Deployment config {name} is in use by a deployment group"),
            ));
        }
        db::delete_config(&mut tx, &self.region, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every config name: the predefined ones, then custom ones.
    pub async fn list_configs(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = PREDEFINED.iter().map(|(n, _, _)| (*n).to_owned()).collect();
        names.extend(OTHER_PLATFORMS.iter().map(|(n, _)| (*n).to_owned()));
        let mut conn = self.store().pool().acquire().await?;
        names.extend(db::list_configs(&mut conn, &self.region).await?);
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mh(ty: &str, value: i32) -> MinimumHealthyHosts {
        MinimumHealthyHosts {
            r#type: Some(ty.into()),
            value: Some(value),
        }
    }

    #[test]
    fn health_rules_match_aws_examples() {
        // Nine hosts, HOST_COUNT 6: three at a time.
        let h = Health::of(&mh("HOST_COUNT", 6), 9).unwrap();
        assert_eq!((h.min_healthy, h.concurrency(9)), (6, 3));
        // Nine hosts, FLEET_PERCENT 40: four must stay healthy (rounded up), five at a time.
        let h = Health::of(&mh("FLEET_PERCENT", 40), 9).unwrap();
        assert_eq!((h.min_healthy, h.concurrency(9)), (4, 5));
        // HalfAtATime on five: up to two at a time (half rounded down).
        let h = Health::of(&mh("FLEET_PERCENT", 50), 5).unwrap();
        assert_eq!(h.concurrency(5), 2);
        // AllAtOnce: everything.
        assert_eq!(
            Health::of(&mh("HOST_COUNT", 0), 5).unwrap().concurrency(5),
            5
        );
        // OneAtATime: one, and all but one must succeed.
        let h = Health::of(&mh("MOST_CONCURRENCY", 1), 5).unwrap();
        assert_eq!((h.min_healthy, h.concurrency(5)), (4, 1));
        // More healthy hosts required than there are: invalid.
        assert!(Health::of(&mh("HOST_COUNT", 3), 3).is_none());
    }
}
