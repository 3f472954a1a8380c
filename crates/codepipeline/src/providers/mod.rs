//! Action providers: one file per action type, each behind [`Provider`]. A provider starts
//! an action run from its [`Job`] (everything resolved: configuration, input artifacts'
//! and output artifacts' locations), and is polled while the run is out of its hands (a
//! build, an approval).

pub mod codebuild;
pub mod codecommit;
pub mod codedeploy;
pub mod commands;
pub mod invoke;
pub mod manual;
pub mod s3_deploy;
pub mod s3_source;

use crate::engine::{ActionOutput, ActionResult, Artifact};
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One action run, as the runtime hands it to a provider (and stores it with the run).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Job {
    pub region: String,
    pub pipeline: String,
    pub pipeline_version: i64,
    pub execution_id: String,
    pub stage: String,
    pub stage_index: usize,
    pub action: String,
    pub action_index: usize,
    pub action_execution_id: String,
    pub category: String,
    pub owner: String,
    pub provider: String,
    pub version: String,
    /// Configuration with every variable reference resolved.
    pub configuration: BTreeMap<String, String>,
    /// The configuration as declared.
    pub declared: BTreeMap<String, String>,
    #[serde(default)]
    pub commands: Vec<String>,
    /// A Commands action's `outputVariables`.
    #[serde(default)]
    pub output_variables: Vec<String>,
    /// A Commands action's output artifact's `files`.
    #[serde(default)]
    pub output_files: Vec<String>,
    /// A Commands action's `environmentVariables`: (name, value resolved, type).
    #[serde(default)]
    pub environment: Vec<(String, String, String)>,
    pub inputs: Vec<Artifact>,
    pub outputs: Vec<Artifact>,
    /// The revision a source action must read (a push names its commit).
    #[serde(default)]
    pub revision: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    /// The principal the pipeline acts as.
    pub principal: String,
    pub started: f64,
    /// When the run fails for taking too long (seconds since the epoch).
    #[serde(default)]
    pub deadline: Option<f64>,
}

/// Where a run is after a provider call.
#[derive(Debug, Clone)]
pub enum Step {
    /// Out of our hands: `external_id` says where (a build id, an approval token).
    Running {
        external_id: String,
        url: Option<String>,
        summary: Option<String>,
    },
    Done(ActionResult),
}

/// A failed run.
pub fn failed(code: &str, message: impl Into<String>) -> Step {
    Step::Done(ActionResult::Failed {
        code: code.into(),
        message: message.into(),
        output: ActionOutput::default(),
    })
}

/// What every provider does.
pub trait Provider: Send + Sync {
    /// Starts the run. After a restart a run that was being started is started again:
    /// a provider that hands work elsewhere finds what it handed over (`resume`) instead.
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step>;

    /// Where a running run is now (`external_id` from [`Step::Running`]).
    fn poll<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, Step> {
        let _ = (cp, job, external_id);
        Box::pin(async { failed("JobFailed", "This action cannot be polled") })
    }

    /// Stops a running run whose result is no longer wanted.
    fn cancel<'a>(
        &'a self,
        cp: &'a CodePipeline,
        job: &'a Job,
        external_id: &'a str,
    ) -> BoxFuture<'a, ()> {
        let _ = (cp, job, external_id);
        Box::pin(async {})
    }
}

/// The provider of an action type.
pub fn provider(job: &Job) -> Option<&'static dyn Provider> {
    Some(
        match (
            job.category.as_str(),
            job.owner.as_str(),
            job.provider.as_str(),
        ) {
            ("Source", "AWS", "CodeCommit") => &codecommit::CodeCommitSource,
            ("Source", "AWS", "S3") => &s3_source::S3Source,
            ("Build" | "Test", "AWS", "CodeBuild") => &codebuild::CodeBuildAction,
            ("Compute", "AWS", "Commands") => &commands::CommandsAction,
            ("Approval", "AWS", "Manual") => &manual::ManualApproval,
            ("Deploy", "AWS", "S3") => &s3_deploy::S3Deploy,
            ("Deploy", "AWS", "CodeDeploy") => &codedeploy::CodeDeployAction,
            ("Invoke", "AWS", "CodePipeline") => &invoke::InvokePipeline,
            (_, "Custom", _) => &crate::jobs::CustomAction,
            _ => return None,
        },
    )
}

/// Writes a local file to `artifact`'s object; the version id written.
pub(crate) async fn put_file(
    cp: &CodePipeline,
    bucket: &str,
    key: &str,
    path: &std::path::Path,
) -> Result<Option<String>, String> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| e.to_string())?;
    let stream = tokio_util_stream(file);
    cp.inner
        .s3
        .put_stream(bucket, key, stream, "PutObject")
        .await
        .map(|w| w.version_id)
        .map_err(|e| {
            format!(
                "{}: {}",
                bucket_hint(bucket),
                e.message().unwrap_or("error")
            )
        })
}

fn bucket_hint(bucket: &str) -> String {
    format!("writing to bucket {bucket}")
}

fn tokio_util_stream(
    file: tokio::fs::File,
) -> impl futures_util::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    futures_util::stream::unfold(file, |mut f| async move {
        use tokio::io::AsyncReadExt as _;
        let mut buf = vec![0u8; 256 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(bytes::Bytes::from(buf)), f))
            }
            Err(e) => Some((Err(e), f)),
        }
    })
}

/// Reads an object into a local file.
pub(crate) async fn get_file(
    cp: &CodePipeline,
    bucket: &str,
    key: &str,
    path: &std::path::Path,
) -> Result<(), String> {
    use futures_util::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    let mut stream = cp
        .inner
        .s3
        .get_stream(bucket, key, None)
        .await
        .map_err(|e| {
            format!(
                "reading s3://{bucket}/{key}: {}",
                e.message().unwrap_or("error")
            )
        })?;
    let mut out = tokio::fs::File::create(path)
        .await
        .map_err(|e| e.to_string())?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("reading s3://{bucket}/{key}: {e}"))?;
        out.write_all(&chunk).await.map_err(|e| e.to_string())?;
    }
    out.flush().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A scratch directory for one run, removed when dropped.
pub(crate) fn scratch(cp: &CodePipeline) -> Result<tempfile::TempDir, String> {
    tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(&cp.inner.cfg.work_dir)
        .map_err(|e| format!("making a work directory: {e}"))
}
