//! Source — CodeCommit: the branch's commit (or the one a push named) as a zip of its tree
//! (`git archive`), with the source variables CodePipeline gives a CodeCommit action.

use super::{failed, put_file, scratch, Job, Provider, Step};
use crate::engine::{ActionOutput, ActionResult, Artifact, Revision};
use crate::CodePipeline;
use futures_util::future::BoxFuture;

pub struct CodeCommitSource;

impl Provider for CodeCommitSource {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            match run(cp, job).await {
                Ok(step) => step,
                Err(message) => failed("JobFailed", message),
            }
        })
    }
}

/// `<epoch seconds> <zone>` (as the repository reports commit dates) as ISO-8601 UTC.
fn iso_date(date: &str) -> String {
    let secs: i64 = date
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn run(cp: &CodePipeline, job: &Job) -> Result<Step, String> {
    let cc = cp.inner.codecommit.in_region(&job.region);
    let name = job
        .configuration
        .get("RepositoryName")
        .cloned()
        .unwrap_or_default();
    let branch = job
        .configuration
        .get("BranchName")
        .cloned()
        .unwrap_or_default();
    let format = job
        .configuration
        .get("OutputArtifactFormat")
        .map_or("CODE_ZIP", String::as_str);
    if format != "CODE_ZIP" {
        return Ok(failed(
            "ConfigurationError",
            format!("OutputArtifactFormat {format} is not supported by Slipway yet (CODE_ZIP is)"),
        ));
    }
    let repo = match cc.find(&name).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Ok(failed(
                "ConfigurationError",
                format!(
                    "The repository {name} does not exist in region {}",
                    job.region
                ),
            ))
        }
        Err(e) => return Err(format!("reading repository {name}: {e}")),
    };
    let commit = match &job.revision {
        Some(c) => c.clone(),
        None => match cc.branch_tip(&repo, &branch).await {
            Ok(Some(c)) => c,
            Ok(None) => {
                return Ok(failed(
                    "ConfigurationError",
                    format!("The branch {branch} does not exist in repository {name}"),
                ))
            }
            Err(e) => return Err(format!("reading branch {branch}: {e}")),
        },
    };
    let info = cc
        .get_commit(&repo, &commit)
        .await
        .map_err(|e| format!("reading commit {commit}: {e}"))?;
    let dir = scratch(cp)?;
    let zip = dir.path().join("source.zip");
    let zip_arg = zip.to_string_lossy().into_owned();
    cc.git(&repo)
        .run(&["archive", "--format=zip", "-o", &zip_arg, &commit])
        .await
        .map_err(|e| format!("packing commit {commit}: {e}"))?;
    let out = job
        .outputs
        .first()
        .ok_or("the action has no output artifact")?;
    put_file(cp, &out.bucket, &out.key, &zip).await?;
    let message = info.message.trim_end().to_owned();
    let variables = [
        ("CommitId", commit.clone()),
        ("BranchName", branch.clone()),
        ("RepositoryName", name.clone()),
        ("CommitMessage", message.clone()),
        ("AuthorDate", iso_date(&info.author.date)),
        ("CommitterDate", iso_date(&info.committer.date)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Ok(Step::Done(ActionResult::Succeeded(ActionOutput {
        artifacts: vec![Artifact {
            name: out.name.clone(),
            bucket: out.bucket.clone(),
            key: out.key.clone(),
        }],
        variables,
        revision: Some(Revision {
            revision_id: commit.clone(),
            summary: Some(message),
            url: None,
            created: info
                .committer
                .date
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok()),
        }),
        summary: None,
        external_id: Some(commit),
        external_url: None,
    })))
}
