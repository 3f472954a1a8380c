//! Running real `git` plumbing against a bare repository, with bounded output and clear errors.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The all-zero object id git uses for "no object" in ref updates.
pub const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// A failed git invocation.
#[derive(Debug, thiserror::Error)]
#[error("git {args}: exit {status}: {stderr}")]
pub struct GitError {
    pub args: String,
    pub status: i32,
    pub stderr: String,
}

/// How to run git on one repository.
#[derive(Debug, Clone)]
pub struct Git {
    pub bin: PathBuf,
    pub repo: PathBuf,
}

impl Git {
    pub fn new(bin: &Path, repo: &Path) -> Git {
        Git {
            bin: bin.to_path_buf(),
            repo: repo.to_path_buf(),
        }
    }

    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--git-dir").arg(&self.repo).args(args);
        // Nothing from the user's or system's git configuration may change what we compute.
        cmd.env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .env("GIT_LITERAL_PATHSPECS", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_WORK_TREE");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs git with extra environment and optional stdin; returns stdout, or the exit status
    /// and stderr as a [`GitError`].
    pub async fn run_env(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
        stdin: Option<&[u8]>,
    ) -> Result<Vec<u8>, GitError> {
        let mut cmd = self.command(args, env);
        if stdin.is_some() {
            cmd.stdin(Stdio::piped());
        }
        let fail = |status: i32, stderr: String| GitError {
            args: args.join(" "),
            status,
            stderr,
        };
        let mut child = cmd.spawn().map_err(|e| fail(-1, e.to_string()))?;
        if let Some(input) = stdin {
            let mut pipe = child
                .stdin
                .take()
                .ok_or_else(|| fail(-1, "no stdin".into()))?;
            let data = input.to_vec();
            // Write concurrently with reading output, so large inputs and outputs cannot deadlock.
            let writer = tokio::spawn(async move {
                let _ = pipe.write_all(&data).await;
                drop(pipe);
            });
            let out = child
                .wait_with_output()
                .await
                .map_err(|e| fail(-1, e.to_string()))?;
            let _ = writer.await;
            return finish(out, args);
        }
        let out = child
            .wait_with_output()
            .await
            .map_err(|e| fail(-1, e.to_string()))?;
        finish(out, args)
    }

    pub async fn run(&self, args: &[&str]) -> Result<Vec<u8>, GitError> {
        self.run_env(args, &[], None).await
    }

    /// Runs git and returns trimmed stdout as text.
    pub async fn text(&self, args: &[&str]) -> Result<String, GitError> {
        Ok(String::from_utf8_lossy(&self.run(args).await?)
            .trim()
            .to_owned())
    }

    /// Resolves `rev` to a full object id, `None` if it does not name an object of that kind.
    pub async fn resolve(&self, rev: &str) -> Result<Option<String>, GitError> {
        match self
            .run(&["rev-parse", "--verify", "--quiet", "--end-of-options", rev])
            .await
        {
            Ok(out) => Ok(Some(String::from_utf8_lossy(&out).trim().to_owned())),
            Err(e) if e.status == 1 => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every branch and tag: (full ref name, object id the ref points at).
    pub async fn refs(&self) -> Result<Vec<(String, String)>, GitError> {
        let out = self
            .text(&[
                "for-each-ref",
                "--format=%(refname) %(objectname)",
                "refs/heads",
                "refs/tags",
            ])
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(r, o)| (r.to_owned(), o.to_owned()))
            .collect())
    }
}

fn finish(out: std::process::Output, args: &[&str]) -> Result<Vec<u8>, GitError> {
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(GitError {
            args: args.join(" "),
            status: out.status.code().unwrap_or(-1),
            stderr: String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(2000)
                .collect(),
        })
    }
}

/// Whether `oid` looks like a full SHA-1 object id.
pub fn is_oid(oid: &str) -> bool {
    oid.len() == 40
        && oid
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

/// Git's rules for a ref name component (`git check-ref-format`), applied to a branch name.
pub fn valid_branch_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && !name.starts_with('/')
        && !name.ends_with('/')
        && !name.ends_with('.')
        && !name.ends_with(".lock")
        && !name.starts_with('-')
        && !name.contains("..")
        && !name.contains("//")
        && !name.contains("@{")
        && name != "@"
        && !name
            .split('/')
            .any(|c| c.starts_with('.') || c.ends_with(".lock"))
        && !name
            .chars()
            .any(|c| c.is_control() || " ~^:?*[\\".contains(c))
}
