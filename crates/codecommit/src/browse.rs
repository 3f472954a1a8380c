//! Reading a repository as the console shows it: the commit log a page at a time, a
//! commit's patch (bounded), and the tags.

use crate::{CodeCommit, Repository, Result};

/// One commit of the log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub commit_id: String,
    pub subject: String,
    pub author: String,
    /// Author time, epoch seconds.
    pub date: f64,
}

/// The most of a patch shown.
pub const MAX_PATCH: usize = 512 * 1024;

impl CodeCommit {
    /// Up to `count` commits reachable from `spec` (a branch, tag or commit; the default
    /// branch when None), newest first, after skipping `skip`.
    pub async fn log(
        &self,
        repo: &Repository,
        spec: Option<&str>,
        skip: usize,
        count: usize,
    ) -> Result<Vec<LogEntry>> {
        let commit = self.resolve_commit(repo, spec).await?;
        let out = self
            .git(repo)
            .text(&[
                "log",
                "--format=%H%x00%an <%ae>%x00%at%x00%s%x1e",
                &format!("--skip={skip}"),
                &format!("--max-count={count}"),
                &commit,
                "--",
            ])
            .await?;
        Ok(out
            .split('\u{1e}')
            .filter_map(|rec| {
                let mut f = rec.trim_start_matches('\n').split('\0');
                let commit_id = f.next()?.to_owned();
                if commit_id.is_empty() {
                    return None;
                }
                Some(LogEntry {
                    commit_id,
                    author: f.next()?.to_owned(),
                    date: f.next()?.parse().unwrap_or(0.0),
                    subject: f.next().unwrap_or("").to_owned(),
                })
            })
            .collect())
    }

    /// A commit's patch against its first parent (the whole tree for a root commit), cut
    /// at [`MAX_PATCH`] bytes; whether it was cut.
    pub async fn patch(&self, repo: &Repository, commit_id: &str) -> Result<(String, bool)> {
        let commit = self.resolve_commit(repo, Some(commit_id)).await?;
        let out = self
            .git(repo)
            .run(&[
                "show",
                "--format=",
                "--patch",
                "--no-color",
                "--no-ext-diff",
                "--find-renames",
                &commit,
                "--",
            ])
            .await?;
        let cut = out.len() > MAX_PATCH;
        let text = String::from_utf8_lossy(&out[..out.len().min(MAX_PATCH)]).into_owned();
        Ok((text, cut))
    }

    /// The tags: (name, the commit they point at).
    pub async fn tag_list(&self, repo: &Repository) -> Result<Vec<(String, String)>> {
        let out = self
            .git(repo)
            .text(&[
                "for-each-ref",
                "--format=%(refname:strip=2)%00%(*objectname)%00%(objectname)",
                "refs/tags",
            ])
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut f = l.split('\0');
                let name = f.next()?.to_owned();
                let peeled = f.next().unwrap_or("");
                let direct = f.next().unwrap_or("");
                Some((
                    name,
                    if peeled.is_empty() { direct } else { peeled }.to_owned(),
                ))
            })
            .collect())
    }

    /// The branches: (name, tip commit).
    pub async fn branch_tips(&self, repo: &Repository) -> Result<Vec<(String, String)>> {
        Ok(self
            .git(repo)
            .refs()
            .await?
            .into_iter()
            .filter_map(|(r, c)| r.strip_prefix("refs/heads/").map(|b| (b.to_owned(), c)))
            .collect())
    }
}
