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
    if !matches!(format, "CODE_ZIP" | "CODEBUILD_CLONE_REF") {
        return Ok(failed(
            "ConfigurationError",
            format!("OutputArtifactFormat must be CODE_ZIP or CODEBUILD_CLONE_REF, not {format}"),
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
    if format == "CODE_ZIP" {
        cc.git(&repo)
            .run(&["archive", "--format=zip", "-o", &zip_arg, &commit])
            .await
            .map_err(|e| format!("packing commit {commit}: {e}"))?;
    } else {
        clone_ref(&cc, &repo, &branch, &commit, dir.path(), &zip).await?;
    }
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

/// CODEBUILD_CLONE_REF: a clone of the repository (its history, `origin` the server's
/// clone URL) with `branch` at `commit` checked out, zipped with its `.git`, so a build
/// has a real git checkout.
async fn clone_ref(
    cc: &slipway_codecommit::CodeCommit,
    repo: &slipway_codecommit::Repository,
    branch: &str,
    commit: &str,
    work: &std::path::Path,
    zip: &std::path::Path,
) -> Result<(), String> {
    let checkout = work.join("checkout");
    let bare = cc.repo_path(&repo.id);
    let git = cc.config().git_bin.clone();
    let run = |args: Vec<String>, cwd: Option<std::path::PathBuf>| {
        let git = git.clone();
        async move {
            let mut cmd = tokio::process::Command::new(&git);
            cmd.args(&args)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_TERMINAL_PROMPT", "0");
            if let Some(d) = cwd {
                cmd.current_dir(d);
            }
            let out = cmd
                .output()
                .await
                .map_err(|e| format!("running git: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "git {}: {}",
                    args.first().cloned().unwrap_or_default(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ))
            }
        }
    };
    let s = |x: &str| x.to_owned();
    run(
        vec![
            s("clone"),
            s("-q"),
            s("--no-checkout"),
            bare.to_string_lossy().into_owned(),
            checkout.to_string_lossy().into_owned(),
        ],
        None,
    )
    .await?;
    run(
        vec![
            s("checkout"),
            s("-q"),
            s("-B"),
            branch.to_owned(),
            commit.to_owned(),
        ],
        Some(checkout.clone()),
    )
    .await?;
    run(
        vec![
            s("remote"),
            s("set-url"),
            s("origin"),
            repo.clone_url_http.clone(),
        ],
        Some(checkout.clone()),
    )
    .await?;
    let (dir, out) = (checkout.clone(), zip.to_owned());
    tokio::task::spawn_blocking(move || zip_dir(&dir, &out))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("zipping the clone: {e}"))
}

/// Zips every file under `dir` (symbolic links as links), paths relative to it.
fn zip_dir(dir: &std::path::Path, out: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut zip = zip::ZipWriter::new(std::fs::File::create(out)?);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .map_err(std::io::Error::other)?
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path)?;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated)
                .unix_permissions(meta.permissions().mode());
            if meta.file_type().is_symlink() {
                zip.add_symlink(rel, std::fs::read_link(&path)?.to_string_lossy(), options)?;
            } else if meta.is_dir() {
                zip.add_directory(rel, options)?;
                stack.push(path);
            } else {
                zip.start_file(rel, options)?;
                std::io::copy(&mut std::fs::File::open(&path)?, &mut zip)?;
            }
        }
    }
    zip.finish()?;
    Ok(())
}
