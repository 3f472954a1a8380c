//! The command service host agents poll (`CodeDeployCommandService_v20141006`): a host takes
//! its next lifecycle event (PollHostCommand, held open until one is queued or 20 s pass),
//! reads the deployment specification, acknowledges, heartbeats (PostHostCommandUpdate) and
//! completes; a completion feeds the orchestrator. A host is its agent's IAM identity: the
//! caller must be the host it names.

use crate::deployments::deployment_missing;
use crate::error::{err, ErrorKind, Result};
use crate::orchestrator::{Deployment, Input};
use crate::spec::{self, Spec};
use crate::CodeDeploy;
use slipway_model::codedeploy::Diagnostics;
use slipway_store::deploy as db;
use slipway_store::now;
use std::time::Duration;

/// How long PollHostCommand waits for a command (AWS's agent reads for 80 s).
const POLL_HOLD: Duration = Duration::from_secs(20);

/// A command handed to a host.
#[derive(Debug, Clone)]
pub struct HostCommand {
    pub command_id: String,
    pub execution_id: String,
    pub command_name: String,
    pub nonce: i64,
}

fn not_yours() -> crate::error::Error {
    err(
        ErrorKind::InvalidInputException,
        "The command does not belong to this host",
    )
}

/// The host a caller may act as: its own IAM ARN (an assumed-role session's, or a user's).
pub fn may_act_as(caller: &str, host: &str, is_root: bool) -> bool {
    is_root || caller == host
}

impl CodeDeploy {
    /// The next command for `host`, waiting up to 20 s for one.
    pub async fn poll_host_command(&self, host: &str) -> Result<Option<HostCommand>> {
        let deadline = tokio::time::Instant::now() + POLL_HOLD;
        loop {
            let notified = self.inner.commands.notified();
            if self
                .inner
                .closing
                .load(std::sync::atomic::Ordering::Acquire)
            {
                return Ok(None);
            }
            let mut tx = self.store().begin_write().await?;
            let taken = db::take_command(&mut tx, host, now()).await?;
            tx.commit().await?;
            if let Some(c) = taken {
                return Ok(Some(HostCommand {
                    execution_id: format!(
                        "slipway/{}/{}/{}",
                        c.region, c.deployment_id, c.command_id
                    ),
                    command_id: c.command_id,
                    command_name: c.lifecycle_event,
                    nonce: c.nonce,
                }));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn command(&self, host: &str, id: &str) -> Result<db::CommandRow> {
        let mut conn = self.store().pool().acquire().await?;
        let c = db::get_command(&mut conn, id).await?.ok_or_else(|| {
            err(
                ErrorKind::InvalidInputException,
                format!("No host command {id}"),
            )
        })?;
        if host != "*" && c.host != host {
            return Err(not_yours());
        }
        Ok(c)
    }

    /// The specification of the deployment a command belongs to, in its envelope: (format,
    /// payload) — `PKCS7/JSON` as AWS's agent requires it.
    pub async fn deployment_specification(
        &self,
        host: &str,
        execution_id: &str,
    ) -> Result<(&'static str, String)> {
        let parts: Vec<&str> = execution_id.splitn(4, '/').collect();
        let [_, _, deployment_id, command_id] = parts[..] else {
            return Err(err(
                ErrorKind::InvalidInputException,
                "The deployment execution id is not valid",
            ));
        };
        let c = self.command(host, command_id).await?;
        let mut conn = self.store().pool().acquire().await?;
        let row = db::get_deployment(&mut conn, deployment_id)
            .await?
            .filter(|r| r.deployment_id == c.deployment_id)
            .ok_or_else(|| deployment_missing(deployment_id))?;
        let d: Deployment = serde_json::from_str(&row.state)?;
        let json = serde_json::to_string(&spec_of(&d))?;
        match &self.inner.signer {
            Some(signer) => Ok((
                crate::envelope::PKCS7_JSON,
                signer
                    .pkcs7_pem(json.as_bytes())
                    .map_err(crate::error::Error::Internal)?,
            )),
            None => Ok((spec::TEXT_JSON, json)),
        }
    }

    /// PutHostCommandAcknowledgement: what the host should do with the command.
    pub async fn acknowledge(&self, host: &str, id: &str) -> Result<&'static str> {
        let c = self.command(host, id).await?;
        match c.status.as_str() {
            "Succeeded" => Ok("Succeeded"),
            "Failed" => Ok("Failed"),
            _ => {
                let mut tx = self.store().begin_write().await?;
                db::set_command(&mut tx, id, "InProgress", now()).await?;
                tx.commit().await?;
                Ok("InProgress")
            }
        }
    }

    /// PostHostCommandUpdate: the host is still at it (Slipway's agent heartbeats).
    pub async fn command_update(&self, host: &str, id: &str) -> Result<&'static str> {
        let c = self.command(host, id).await?;
        match c.status.as_str() {
            "Succeeded" => Ok("Succeeded"),
            "Failed" => Ok("Failed"),
            _ => {
                let mut tx = self.store().begin_write().await?;
                db::set_command(&mut tx, id, "Live", now()).await?;
                tx.commit().await?;
                Ok("InProgress")
            }
        }
    }

    /// PutHostCommandComplete: the first terminal status counts (AWS's agent may send a
    /// second one after a failure).
    pub async fn complete(
        &self,
        host: &str,
        id: &str,
        succeeded: bool,
        report: Option<&str>,
    ) -> Result<()> {
        let c = self.command(host, id).await?;
        if matches!(c.status.as_str(), "Succeeded" | "Failed") {
            return Ok(());
        }
        let r: spec::Report = report
            .and_then(|p| serde_json::from_str(p).ok())
            .unwrap_or_else(|| spec::Report {
                error_code: if succeeded { 0 } else { 5 },
                ..Default::default()
            });
        let diagnostics = Diagnostics {
            error_code: Some(
                spec::lifecycle_error_code(if succeeded { 0 } else { r.error_code.max(1) }).into(),
            ),
            script_name: Some(r.script_name),
            message: Some(r.message),
            log_tail: Some(r.log),
        };
        let mut tx = self.store().begin_write().await?;
        db::set_command(
            &mut tx,
            id,
            if succeeded { "Succeeded" } else { "Failed" },
            now(),
        )
        .await?;
        let input = if c.lifecycle_event == crate::orchestrator::HEALTH_CHECK {
            Input::CheckEnded {
                command: id.to_owned(),
                instance: c.instance.clone(),
                ok: succeeded,
                diagnostics,
            }
        } else {
            Input::EventEnded {
                command: id.to_owned(),
                ok: succeeded,
                diagnostics,
            }
        };
        self.apply_in(&mut tx, &c.deployment_id, input).await?;
        tx.commit().await?;
        self.inner.commands.notify_waiters();
        Ok(())
    }
}

/// The specification of deployment `d`.
fn spec_of(d: &Deployment) -> Spec {
    let r = crate::deployments::revision_of(d);
    let revision = match &r.s3_location {
        Some(s3) => spec::Revision {
            revision_type: "S3".into(),
            s3_revision: Some(spec::S3Revision {
                bucket: s3.bucket.clone().unwrap_or_default(),
                key: s3.key.clone().unwrap_or_default(),
                bundle_type: s3.bundle_type.clone().unwrap_or_default(),
                version: s3.version.clone(),
                etag: s3.e_tag.clone(),
            }),
            app_spec_content: None,
        },
        None => spec::Revision {
            revision_type: "AppSpecContent".into(),
            s3_revision: None,
            app_spec_content: crate::applications::raw_content(&r).map(|(c, _)| spec::Content {
                content: c.to_owned(),
            }),
        },
    };
    Spec {
        deployment_id: d.info.deployment_id.clone().unwrap_or_default(),
        deployment_group_id: d.group_id.clone(),
        deployment_group_name: d.info.deployment_group_name.clone().unwrap_or_default(),
        application_name: d.info.application_name.clone().unwrap_or_default(),
        deployment_creator: d.info.creator.clone(),
        deployment_type: d
            .info
            .deployment_style
            .as_ref()
            .and_then(|s| s.deployment_type.clone())
            .or(Some("IN_PLACE".into())),
        agent_action_overrides: Some(spec::AgentActionOverrides {
            agent_overrides: Some(spec::AgentOverrides {
                file_exists_behavior: d.info.file_exists_behavior.clone(),
            }),
        }),
        revision,
        health_checks: d.host_checks(),
    }
}
