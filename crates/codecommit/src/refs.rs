//! Branches and ref changes: CAS updates through git, and the event every change emits.
//!
//! Every ref change, whether from a push or an API call, passes through
//! [`CodeCommit::record_ref_updates`], which writes one `CodeCommit Repository State Change`
//! event per update and the new ref snapshot (`cc_refs`) in one transaction. After a crash
//! between git's ref update and that transaction, [`CodeCommit::reconcile`] (run at start)
//! compares the snapshot with git and records what was missed.

use crate::git::{is_oid, valid_branch_name, ZERO_OID};
use crate::{err, paginate, CodeCommit, Error, Page, Repository, Result};
use serde_json::json;
use slipway_store::events::{self, Event};
use slipway_store::sqlx;
use sqlx::Row;
use std::collections::BTreeMap;

/// One ref moving from `old` to `new` (zero ids for creation and deletion).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub name: String,
    pub old: String,
    pub new: String,
}

impl RefUpdate {
    /// Parses the lines git's `reference-transaction` hook receives: `<old> <new> <ref>`.
    pub fn parse_lines(text: &str) -> Vec<RefUpdate> {
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(3, ' ');
                let (old, new, name) = (it.next()?, it.next()?, it.next()?);
                (is_oid(old) && is_oid(new)).then(|| RefUpdate {
                    name: name.to_owned(),
                    old: old.to_owned(),
                    new: new.to_owned(),
                })
            })
            .collect()
    }
}

fn split_ref(name: &str) -> Option<(&'static str, &str)> {
    if let Some(b) = name.strip_prefix("refs/heads/") {
        Some(("branch", b))
    } else {
        name.strip_prefix("refs/tags/").map(|t| ("tag", t))
    }
}

impl CodeCommit {
    /// Records ref updates that git has already applied: events plus the ref snapshot, in one
    /// transaction; picks a default branch when the repository had none.
    pub async fn record_ref_updates(
        &self,
        repo: &Repository,
        updates: &[RefUpdate],
        caller_arn: &str,
    ) -> Result<()> {
        let git = self.git(repo);
        let mut tx = self.store.begin_write().await?;
        // Read git's refs inside the write transaction: recorders are serialised by it, so the
        // last one to commit stores the latest truth even when pushes finish out of order.
        let current = git.refs().await?;
        let mut n = 0;
        for u in updates {
            let Some((kind, short)) = split_ref(&u.name) else {
                continue;
            };
            let (event, mut detail) = match (u.old == ZERO_OID, u.new == ZERO_OID) {
                (true, false) => ("referenceCreated", json!({ "commitId": u.new })),
                (false, true) => ("referenceDeleted", json!({ "oldCommitId": u.old })),
                (false, false) => (
                    "referenceUpdated",
                    json!({ "commitId": u.new, "oldCommitId": u.old }),
                ),
                (true, true) => continue,
            };
            let obj = detail.as_object_mut().expect("json object");
            obj.insert("event".into(), event.into());
            obj.insert("callerUserArn".into(), caller_arn.into());
            obj.insert("repositoryName".into(), repo.name.clone().into());
            obj.insert("repositoryId".into(), repo.id.clone().into());
            obj.insert("referenceType".into(), kind.into());
            obj.insert("referenceName".into(), short.into());
            obj.insert("referenceFullName".into(), u.name.clone().into());
            events::append(
                &mut tx,
                &Event {
                    source: "aws.codecommit",
                    detail_type: "CodeCommit Repository State Change",
                    account: self.cfg.account_id.clone(),
                    region: repo.region.clone(),
                    resources: vec![repo.arn.clone()],
                    detail,
                },
            )
            .await?;
            n += 1;
        }
        sqlx::query("DELETE FROM cc_refs WHERE repository_id = $1")
            .bind(&repo.id)
            .execute(&mut *tx)
            .await?;
        for (name, oid) in &current {
            sqlx::query(
                "INSERT INTO cc_refs (repository_id, ref_name, commit_id) VALUES ($1, $2, $3)",
            )
            .bind(&repo.id)
            .bind(name)
            .bind(oid)
            .execute(&mut *tx)
            .await?;
        }
        let default: Option<String> = sqlx::query_scalar(
            "SELECT default_branch FROM cc_repositories WHERE repository_id = $1",
        )
        .bind(&repo.id)
        .fetch_optional(&mut *tx)
        .await?
        .flatten();
        let branches: Vec<&str> = current
            .iter()
            .filter_map(|(r, _)| r.strip_prefix("refs/heads/"))
            .collect();
        let mut new_default = None;
        if default.as_deref().is_none_or(|d| !branches.contains(&d)) {
            new_default = ["main", "master"]
                .into_iter()
                .find(|b| branches.contains(b))
                .or_else(|| branches.first().copied())
                .map(str::to_owned);
        }
        if let Some(d) = &new_default {
            sqlx::query("UPDATE cc_repositories SET default_branch = $1 WHERE repository_id = $2")
                .bind(d)
                .bind(&repo.id)
                .execute(&mut *tx)
                .await?;
        }
        if n > 0 {
            sqlx::query("UPDATE cc_repositories SET updated_at = $1 WHERE repository_id = $2")
                .bind(slipway_store::now())
                .bind(&repo.id)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.invalidate();
        if let Some(d) = new_default {
            git.run(&["symbolic-ref", "HEAD", &format!("refs/heads/{d}")])
                .await?;
        }
        Ok(())
    }

    /// Records ref changes that happened without being recorded (a crash between git's ref
    /// update and the event transaction). Returns how many were found.
    pub async fn reconcile(&self) -> Result<usize> {
        let names: Vec<(String, String)> =
            sqlx::query_as("SELECT region, name FROM cc_repositories")
                .fetch_all(self.store.pool())
                .await?;
        let mut found = 0;
        for (region, name) in names {
            let Some(repo) = self.in_region(&region).find(&name).await? else {
                continue;
            };
            let recorded: BTreeMap<String, String> =
                sqlx::query("SELECT ref_name, commit_id FROM cc_refs WHERE repository_id = $1")
                    .bind(&repo.id)
                    .fetch_all(self.store.pool())
                    .await?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect();
            let actual: BTreeMap<String, String> =
                self.git(&repo).refs().await?.into_iter().collect();
            let mut updates = Vec::new();
            for (r, new) in &actual {
                let old = recorded.get(r).cloned().unwrap_or_else(|| ZERO_OID.into());
                if &old != new {
                    updates.push(RefUpdate {
                        name: r.clone(),
                        old,
                        new: new.clone(),
                    });
                }
            }
            for (r, old) in &recorded {
                if !actual.contains_key(r) {
                    updates.push(RefUpdate {
                        name: r.clone(),
                        old: old.clone(),
                        new: ZERO_OID.into(),
                    });
                }
            }
            if !updates.is_empty() {
                tracing::warn!(repository = %repo.name, count = updates.len(), "recording ref changes missed before a restart");
                found += updates.len();
                self.record_ref_updates(
                    &repo,
                    &updates,
                    &format!("arn:aws:iam::{}:root", self.cfg.account_id),
                )
                .await?;
            }
        }
        Ok(found)
    }

    /// Moves `refs/heads/<branch>` from `old` (None: must not exist) to `new` atomically.
    /// Returns false when the branch was not at `old` (someone else moved it first).
    pub async fn compare_and_swap(
        &self,
        repo: &Repository,
        branch: &str,
        new: &str,
        old: Option<&str>,
        caller_arn: &str,
    ) -> Result<bool> {
        let full = format!("refs/heads/{branch}");
        let old_oid = old.unwrap_or(ZERO_OID);
        match self
            .git(repo)
            .run(&["update-ref", "--no-deref", &full, new, old_oid])
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == 128 || e.status == 1 => return Ok(false),
            Err(e) => return Err(e.into()),
        }
        self.record_ref_updates(
            repo,
            &[RefUpdate {
                name: full,
                old: old_oid.into(),
                new: new.into(),
            }],
            caller_arn,
        )
        .await?;
        Ok(true)
    }

    /// The commit a branch points at, if the branch exists.
    pub async fn branch_tip(&self, repo: &Repository, branch: &str) -> Result<Option<String>> {
        if !valid_branch_name(branch) {
            return Ok(None);
        }
        Ok(self
            .git(repo)
            .resolve(&format!("refs/heads/{branch}^{{commit}}"))
            .await?)
    }

    fn check_branch_name(branch: &str) -> Result<()> {
        if valid_branch_name(branch) {
            Ok(())
        } else {
            Err(err(
                "InvalidBranchNameException",
                format!("The specified branch name is not valid: {branch}"),
            ))
        }
    }

    /// Resolves a full commit id that must exist in the repository.
    pub async fn require_commit(
        &self,
        repo: &Repository,
        commit_id: &str,
        invalid: &'static str,
        missing: &'static str,
    ) -> Result<String> {
        if !is_oid(commit_id) {
            return Err(err(
                invalid,
                format!("The specified commit ID is not valid: {commit_id}"),
            ));
        }
        self.git(repo)
            .resolve(&format!("{commit_id}^{{commit}}"))
            .await?
            .ok_or_else(|| {
                err(
                    missing,
                    format!("Commit {commit_id} does not exist in {}", repo.name),
                )
            })
    }

    pub async fn create_branch(
        &self,
        repo: &Repository,
        branch: &str,
        commit_id: &str,
        caller_arn: &str,
    ) -> Result<()> {
        Self::check_branch_name(branch)?;
        let commit = self
            .require_commit(
                repo,
                commit_id,
                "InvalidCommitIdException",
                "CommitDoesNotExistException",
            )
            .await?;
        if self.branch_tip(repo, branch).await?.is_some() {
            return Err(err(
                "BranchNameExistsException",
                format!("Branch {branch} already exists"),
            ));
        }
        if !self
            .compare_and_swap(repo, branch, &commit, None, caller_arn)
            .await?
        {
            return Err(err(
                "BranchNameExistsException",
                format!("Branch {branch} already exists"),
            ));
        }
        Ok(())
    }

    pub async fn get_branch(&self, repo: &Repository, branch: &str) -> Result<String> {
        Self::check_branch_name(branch)?;
        self.branch_tip(repo, branch).await?.ok_or_else(|| {
            err(
                "BranchDoesNotExistException",
                format!("Branch {branch} does not exist"),
            )
        })
    }

    pub async fn list_branches(
        &self,
        repo: &Repository,
        token: Option<&str>,
    ) -> Result<Page<String>> {
        let branches: Vec<String> = self
            .git(repo)
            .refs()
            .await?
            .into_iter()
            .filter_map(|(r, _)| r.strip_prefix("refs/heads/").map(str::to_owned))
            .collect();
        paginate(branches, token, 100, "InvalidContinuationTokenException")
    }

    /// Deletes a branch; `None` if it did not exist (as AWS answers).
    pub async fn delete_branch(
        &self,
        repo: &Repository,
        branch: &str,
        caller_arn: &str,
    ) -> Result<Option<String>> {
        Self::check_branch_name(branch)?;
        if repo.default_branch.as_deref() == Some(branch) {
            return Err(err(
                "DefaultBranchCannotBeDeletedException",
                format!(
                    "Branch {branch} is the default branch of {} and cannot be deleted",
                    repo.name
                ),
            ));
        }
        let Some(tip) = self.branch_tip(repo, branch).await? else {
            return Ok(None);
        };
        let full = format!("refs/heads/{branch}");
        match self
            .git(repo)
            .run(&["update-ref", "--no-deref", "-d", &full, &tip])
            .await
        {
            Ok(_) => {}
            Err(e) if e.status == 1 || e.status == 128 => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        self.record_ref_updates(
            repo,
            &[RefUpdate {
                name: full,
                old: tip.clone(),
                new: ZERO_OID.into(),
            }],
            caller_arn,
        )
        .await?;
        Ok(Some(tip))
    }

    pub async fn update_default_branch(&self, repo: &Repository, branch: &str) -> Result<()> {
        self.get_branch(repo, branch).await?;
        sqlx::query("UPDATE cc_repositories SET default_branch = $1 WHERE repository_id = $2")
            .bind(branch)
            .bind(&repo.id)
            .execute(self.store.pool())
            .await?;
        self.invalidate();
        self.git(repo)
            .run(&["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")])
            .await
            .map_err(Error::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hook_lines_parse() {
        let z = ZERO_OID;
        let a = "a".repeat(40);
        let text = format!("{z} {a} refs/heads/main\n{a} {z} refs/tags/v1\ngarbage\n");
        let u = RefUpdate::parse_lines(&text);
        assert_eq!(u.len(), 2);
        assert_eq!(
            u[0],
            RefUpdate {
                name: "refs/heads/main".into(),
                old: z.into(),
                new: a.clone()
            }
        );
        assert_eq!(u[1].name, "refs/tags/v1");
    }
}
