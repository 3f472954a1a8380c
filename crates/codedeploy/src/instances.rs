//! On-premises instances: registered with the IAM identity their agent signs as (its host
//! identifier), tagged, deregistered.

use crate::error::{err, ErrorKind, Result};
use crate::CodeDeploy;
use slipway_model::codedeploy::{InstanceInfo, Tag, TagFilter};
use slipway_store::deploy as db;
use slipway_store::now;

fn not_registered(name: &str) -> crate::error::Error {
    err(
        ErrorKind::InstanceNotRegisteredException,
        format!("The on-premises instance {name} is not registered"),
    )
}

/// An instance's tags as (key, value) pairs.
pub(crate) fn tags_of(i: &InstanceInfo) -> Vec<(String, String)> {
    i.tags
        .iter()
        .flatten()
        .map(|t| {
            (
                t.key.clone().unwrap_or_default(),
                t.value.clone().unwrap_or_default(),
            )
        })
        .collect()
}

impl CodeDeploy {
    pub async fn register_instance(
        &self,
        name: &str,
        user_arn: Option<&str>,
        session_arn: Option<&str>,
    ) -> Result<()> {
        let iam = match (user_arn, session_arn) {
            (Some(_), Some(_)) => {
                return Err(err(
                    ErrorKind::MultipleIamArnsProvidedException,
                    "Both an IAM user ARN and an IAM session ARN were provided",
                ))
            }
            (None, None) => {
                return Err(err(
                    ErrorKind::IamArnRequiredException,
                    "An IAM user ARN or an IAM session ARN is required",
                ))
            }
            (Some(u), None) => {
                if !(u.starts_with("arn:") && u.contains(":iam::") && u.contains(":user/")) {
                    return Err(err(
                        ErrorKind::InvalidIamUserArnException,
                        format!("The IAM user ARN {u} is not valid"),
                    ));
                }
                u
            }
            (None, Some(s)) => {
                if !(s.starts_with("arn:") && s.contains(":sts::") && s.contains(":assumed-role/"))
                {
                    return Err(err(
                        ErrorKind::InvalidIamSessionArnException,
                        format!("The IAM session ARN {s} is not valid"),
                    ));
                }
                s
            }
        };
        let mut tx = self.store().begin_write().await?;
        if let Some(existing) = db::get_instance(&mut tx, &self.region, name).await? {
            if existing.registered {
                return Err(err(
                    ErrorKind::InstanceNameAlreadyRegisteredException,
                    format!("The on-premises instance name {name} is already registered"),
                ));
            }
        }
        let taken = db::instances_of(&mut tx, iam)
            .await?
            .into_iter()
            .any(|(r, n)| r == *self.region && n != name);
        if taken {
            let kind = if user_arn.is_some() {
                ErrorKind::IamUserArnAlreadyRegisteredException
            } else {
                ErrorKind::IamSessionArnAlreadyRegisteredException
            };
            return Err(err(
                kind,
                format!("The IAM ARN {iam} is already registered with another instance"),
            ));
        }
        let info = InstanceInfo {
            instance_name: Some(name.into()),
            iam_session_arn: session_arn.map(str::to_owned),
            iam_user_arn: user_arn.map(str::to_owned),
            instance_arn: Some(self.instance_arn(name)),
            register_time: Some(now()),
            deregister_time: None,
            tags: Some(Vec::new()),
        };
        db::put_instance(
            &mut tx,
            &self.region,
            &db::InstanceRow {
                name: name.into(),
                iam_arn: iam.into(),
                registered: true,
                doc: serde_json::to_string(&info)?,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Registers the server's own agent (its host is the account root), unless an instance
    /// of that name is registered already; its tags are kept across restarts.
    pub async fn register_builtin(&self, name: &str, host: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        if db::get_instance(&mut tx, &self.region, name)
            .await?
            .is_some_and(|i| i.registered)
        {
            return Ok(());
        }
        let info = InstanceInfo {
            instance_name: Some(name.into()),
            iam_user_arn: Some(host.into()),
            instance_arn: Some(self.instance_arn(name)),
            register_time: Some(now()),
            tags: Some(Vec::new()),
            ..Default::default()
        };
        db::put_instance(
            &mut tx,
            &self.region,
            &db::InstanceRow {
                name: name.into(),
                iam_arn: host.into(),
                registered: true,
                doc: serde_json::to_string(&info)?,
            },
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn deregister_instance(&self, name: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        self.deregister_in(&mut tx, name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deregisters an instance in `tx` (nothing when there is none).
    pub(crate) async fn deregister_in(
        &self,
        tx: &mut slipway_store::Conn,
        name: &str,
    ) -> Result<()> {
        let Some(mut row) = db::get_instance(&mut *tx, &self.region, name).await? else {
            return Ok(());
        };
        if row.registered {
            let mut info: InstanceInfo = serde_json::from_str(&row.doc)?;
            info.deregister_time = Some(now());
            row.registered = false;
            row.doc = serde_json::to_string(&info)?;
            db::put_instance(&mut *tx, &self.region, &row).await?;
        }
        Ok(())
    }

    pub async fn get_instance(&self, name: &str) -> Result<InstanceInfo> {
        let mut conn = self.store().pool().acquire().await?;
        let row = db::get_instance(&mut conn, &self.region, name)
            .await?
            .ok_or_else(|| not_registered(name))?;
        Ok(serde_json::from_str(&row.doc)?)
    }

    pub async fn batch_get_instances(&self, names: &[String]) -> Result<Vec<InstanceInfo>> {
        if names.len() > 100 {
            return Err(err(
                ErrorKind::BatchLimitExceededException,
                "The maximum number of instances that can be returned is 100",
            ));
        }
        let mut conn = self.store().pool().acquire().await?;
        let mut out = Vec::new();
        for n in names {
            if let Some(row) = db::get_instance(&mut conn, &self.region, n).await? {
                out.push(serde_json::from_str(&row.doc)?);
            }
        }
        Ok(out)
    }

    /// Registered instances, as InstanceInfo with their tags.
    pub async fn registered_instances(&self) -> Result<Vec<InstanceInfo>> {
        let mut conn = self.store().pool().acquire().await?;
        let mut out = Vec::new();
        for row in db::list_instances(&mut conn, &self.region).await? {
            if row.registered {
                out.push(serde_json::from_str(&row.doc)?);
            }
        }
        Ok(out)
    }

    pub async fn list_instances(
        &self,
        status: Option<&str>,
        filters: &[TagFilter],
    ) -> Result<Vec<String>> {
        let want = match status {
            None => None,
            Some("Registered") => Some(true),
            Some("Deregistered") => Some(false),
            Some(other) => {
                return Err(err(
                    ErrorKind::InvalidRegistrationStatusException,
                    format!("The registration status {other} is not valid"),
                ))
            }
        };
        for f in filters {
            if !matches!(
                f.r#type.as_deref(),
                Some("KEY_ONLY" | "VALUE_ONLY" | "KEY_AND_VALUE") | None
            ) {
                return Err(err(
                    ErrorKind::InvalidTagFilterException,
                    "The tag filter type is not valid",
                ));
            }
        }
        let group = slipway_model::codedeploy::DeploymentGroupInfo {
            on_premises_instance_tag_filters: Some(filters.to_vec()),
            ..Default::default()
        };
        let mut conn = self.store().pool().acquire().await?;
        let mut out = Vec::new();
        for row in db::list_instances(&mut conn, &self.region).await? {
            if want.is_some_and(|w| w != row.registered) {
                continue;
            }
            let info: InstanceInfo = serde_json::from_str(&row.doc)?;
            if !filters.is_empty() && !crate::groups::targets(&group, &tags_of(&info)) {
                continue;
            }
            out.push(row.name);
        }
        Ok(out)
    }

    /// Adds (`add`) or removes tags on instances; every instance must be registered.
    pub async fn tag_instances(&self, names: &[String], tags: &[Tag], add: bool) -> Result<()> {
        if tags.is_empty() {
            return Err(err(ErrorKind::TagRequiredException, "A tag is required"));
        }
        if names.len() > 10 {
            return Err(err(
                ErrorKind::InstanceLimitExceededException,
                "At most 10 instances can be tagged at once",
            ));
        }
        if tags
            .iter()
            .any(|t| t.key.as_deref().unwrap_or("").is_empty())
        {
            return Err(err(ErrorKind::InvalidTagException, "A tag needs a key"));
        }
        let mut tx = self.store().begin_write().await?;
        for n in names {
            let mut row = db::get_instance(&mut tx, &self.region, n)
                .await?
                .filter(|r| r.registered)
                .ok_or_else(|| not_registered(n))?;
            let mut info: InstanceInfo = serde_json::from_str(&row.doc)?;
            let mut list = info.tags.take().unwrap_or_default();
            for t in tags {
                list.retain(|x| x.key != t.key);
                if add {
                    list.push(t.clone());
                }
            }
            if list.len() > 10 {
                return Err(err(
                    ErrorKind::TagLimitExceededException,
                    "An on-premises instance has at most 10 tags",
                ));
            }
            info.tags = Some(list);
            row.doc = serde_json::to_string(&info)?;
            db::put_instance(&mut tx, &self.region, &row).await?;
        }
        tx.commit().await?;
        Ok(())
    }
}
