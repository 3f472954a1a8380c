//! Source — S3: the object's current version (or the one an event named), copied as the
//! output artifact; its ETag and VersionId as the action's variables.

use super::{failed, Job, Provider, Step};
use crate::engine::{ActionOutput, ActionResult, Artifact, Revision};
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use futures_util::TryStreamExt as _;

pub struct S3Source;

impl Provider for S3Source {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(run(cp, job))
    }
}

async fn run(cp: &CodePipeline, job: &Job) -> Step {
    let bucket = job
        .configuration
        .get("S3Bucket")
        .cloned()
        .unwrap_or_default();
    let key = job
        .configuration
        .get("S3ObjectKey")
        .cloned()
        .unwrap_or_default();
    let s3 = &cp.inner.s3;
    // An S3 source reads object versions: its bucket must keep them, as AWS requires.
    match s3.bucket(&bucket).await {
        Ok(b) if b.versioning.as_deref() == Some("Enabled") => {}
        Ok(_) => {
            return failed(
                "ConfigurationError",
                format!("The source bucket {bucket} does not have versioning enabled; an S3 source action needs a versioned bucket"),
            )
        }
        Err(_) => {
            return failed(
                "ConfigurationError",
                format!("The source bucket {bucket} does not exist"),
            )
        }
    }
    let object = match s3.object(&bucket, &key, job.revision.as_deref()).await {
        Ok(o) => o,
        Err((e, _)) => {
            return failed(
                "ConfigurationError",
                format!(
                    "The object s3://{bucket}/{key} cannot be read: {}",
                    e.message().unwrap_or("error")
                ),
            )
        }
    };
    let Some(out) = job.outputs.first() else {
        return failed("ConfigurationError", "the action has no output artifact");
    };
    let bytes = match s3.get_stream(&bucket, &key, Some(&object.version_id)).await {
        Ok(s) => s.map_err(std::io::Error::other),
        Err(e) => return failed("JobFailed", e.message().unwrap_or("error").to_owned()),
    };
    if let Err(e) = s3
        .put_stream(&out.bucket, &out.key, bytes, "PutObject")
        .await
    {
        return failed(
            "JobFailed",
            format!(
                "writing the artifact to bucket {}: {}",
                out.bucket,
                e.message().unwrap_or("error")
            ),
        );
    }
    let variables = [
        ("ETag", object.etag.clone()),
        ("VersionId", object.version_id.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Step::Done(ActionResult::Succeeded(ActionOutput {
        artifacts: vec![Artifact {
            name: out.name.clone(),
            bucket: out.bucket.clone(),
            key: out.key.clone(),
        }],
        variables,
        revision: Some(Revision {
            revision_id: object.version_id.clone(),
            summary: Some(format!("s3://{bucket}/{key}")),
            url: None,
            created: Some(object.modified),
        }),
        summary: None,
        external_id: Some(object.version_id),
        external_url: None,
    }))
}
