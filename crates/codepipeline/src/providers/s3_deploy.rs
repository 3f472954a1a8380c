//! Deploy — S3: the input artifact into `BucketName`, unpacked under `ObjectKey`
//! (Extract true) or as the zip at `ObjectKey` (Extract false). `CannedACL` and
//! `CacheControl` are recorded in the summary (Slipway's S3 has no ACLs).

use super::{failed, get_file, put_file, scratch, Job, Provider, Step};
use crate::engine::{ActionOutput, ActionResult};
use crate::CodePipeline;
use futures_util::future::BoxFuture;
use std::path::{Path, PathBuf};

pub struct S3Deploy;

impl Provider for S3Deploy {
    fn start<'a>(&'a self, cp: &'a CodePipeline, job: &'a Job) -> BoxFuture<'a, Step> {
        Box::pin(async move {
            match run(cp, job).await {
                Ok(step) => step,
                Err(message) => failed("JobFailed", message),
            }
        })
    }
}

/// Unpacks `zip` into `into`; the files written, relative to `into` (entries that would
/// land outside it are refused).
fn unzip(zip: &Path, into: &Path) -> Result<Vec<PathBuf>, String> {
    let f = std::fs::File::open(zip).map_err(|e| e.to_string())?;
    let mut archive =
        zip::ZipArchive::new(f).map_err(|e| format!("the input artifact is not a zip: {e}"))?;
    let mut files = Vec::new();
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(format!(
                "the input artifact has an entry outside its root: {}",
                entry.name()
            ));
        };
        let dest = into.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let mut out = std::fs::File::create(&dest).map_err(|e| e.to_string())?;
        std::io::copy(&mut entry, &mut out).map_err(|e| e.to_string())?;
        files.push(rel);
    }
    Ok(files)
}

async fn run(cp: &CodePipeline, job: &Job) -> Result<Step, String> {
    let bucket = job
        .configuration
        .get("BucketName")
        .cloned()
        .unwrap_or_default();
    let extract = job
        .configuration
        .get("Extract")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let key = job
        .configuration
        .get("ObjectKey")
        .cloned()
        .unwrap_or_default();
    if !extract && key.is_empty() {
        return Ok(failed(
            "ConfigurationError",
            "ObjectKey is required when Extract is false",
        ));
    }
    if let Err(e) = cp.inner.s3.bucket(&bucket).await {
        return Ok(failed(
            "ConfigurationError",
            format!(
                "The deployment bucket {bucket} cannot be used: {}",
                e.message().unwrap_or("error")
            ),
        ));
    }
    let input = job
        .inputs
        .first()
        .ok_or("the action has no input artifact")?;
    let dir = scratch(cp)?;
    let zip = dir.path().join("input.zip");
    get_file(cp, &input.bucket, &input.key, &zip).await?;
    let count = if extract {
        let root = dir.path().join("files");
        let (z, r) = (zip.clone(), root.clone());
        let files = tokio::task::spawn_blocking(move || unzip(&z, &r))
            .await
            .map_err(|e| e.to_string())??;
        for rel in &files {
            let rel_key = rel.to_string_lossy();
            let object = match key.trim_matches('/') {
                "" => rel_key.into_owned(),
                prefix => format!("{prefix}/{rel_key}"),
            };
            put_file(cp, &bucket, &object, &root.join(rel)).await?;
        }
        files.len()
    } else {
        put_file(cp, &bucket, &key, &zip).await?;
        1
    };
    let mut summary = format!("Deployed {count} object(s) to s3://{bucket}/{key}");
    for k in ["CannedACL", "CacheControl"] {
        if let Some(v) = job.configuration.get(k) {
            summary.push_str(&format!("; {k} {v}"));
        }
    }
    Ok(Step::Done(ActionResult::Succeeded(ActionOutput {
        summary: Some(summary),
        ..Default::default()
    })))
}
