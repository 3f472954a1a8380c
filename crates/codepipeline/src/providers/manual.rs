//! Approval — Manual: the run waits for PutApprovalResult with its token (7 days at most,
//! or the action's timeoutInMinutes); the runtime delivers the result.

use super::{failed, Job, Provider, Step};
use crate::CodePipeline;
use futures_util::future::BoxFuture;

pub struct ManualApproval;

/// How long an approval waits by default (7 days).
pub const DEFAULT_TIMEOUT_SECS: f64 = 7.0 * 24.0 * 3600.0;

impl Provider for ManualApproval {
    fn start<'a>(&'a self, _cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            Step::Running {
                external_id: uuid::Uuid::new_v4().to_string(),
                url: job.configuration.get("ExternalEntityLink").cloned(),
                summary: job.configuration.get("CustomData").cloned(),
            }
        })
    }

    fn poll<'a>(
        &'a self,
        _cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            let deadline = job.deadline.unwrap_or(job.started + DEFAULT_TIMEOUT_SECS);
            if slipway_store::now() >= deadline {
                failed(
                    "ApprovalTimedOut",
                    "The approval request expired before anyone approved or rejected it",
                )
            } else {
                Step::Running {
                    external_id: external_id.to_owned(),
                    url: job.configuration.get("ExternalEntityLink").cloned(),
                    summary: job.configuration.get("CustomData").cloned(),
                }
            }
        })
    }
}
