//! CodeCommit's domain: repositories, branches, files, commits and differences over real
//! bare git repositories, with every ref change recorded as an event.
//!
//! Knows nothing of HTTP or AWS's JSON: the API edge maps these plain types and [`Error`]s
//! (whose codes are CodeCommit's exception names) onto the wire.

pub mod browse;
pub mod files;
pub mod git;
pub mod refs;

use git::Git;
use slipway_store::{is_unique_violation, now, sqlx, Store};
use sqlx::Row;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A CodeCommit error: CodeCommit's exception name and a message, or an internal failure.
pub use slipway_store::ServiceError as Error;

pub type Result<T> = std::result::Result<T, Error>;

/// An error with CodeCommit's exception name `code`.
pub use slipway_store::service_err as err;

impl From<git::GitError> for Error {
    fn from(e: git::GitError) -> Self {
        Error::Internal(e.to_string())
    }
}

/// A repository's metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    pub id: String,
    /// The region the repository lives in (names are unique per region).
    pub region: String,
    pub name: String,
    pub description: Option<String>,
    pub default_branch: Option<String>,
    pub kms_key_id: String,
    pub created_at: f64,
    pub updated_at: f64,
    pub arn: String,
    pub clone_url_http: String,
    pub clone_url_ssh: String,
}

/// Who is acting, for events and default commit identities.
#[derive(Debug, Clone)]
pub struct Caller {
    pub arn: String,
    pub name: String,
}

/// Settings the service needs from the server.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub git_bin: PathBuf,
    pub account_id: String,
    /// The server's default region: its repositories' clone URLs are `/v1/repos/NAME`, as
    /// CodeCommit's; other regions' are `/-/regions/REGION/v1/repos/NAME`.
    pub region: String,
    /// The server's public base URL, e.g. `http://127.0.0.1:4566`.
    pub public_url: String,
}

/// The path of a repository's git URL on this server (see [`Config::region`]).
pub fn git_path(default_region: &str, region: &str, name: &str) -> String {
    if region == default_region {
        format!("/v1/repos/{name}")
    } else {
        format!("/-/regions/{region}/v1/repos/{name}")
    }
}

/// The CodeCommit service, as seen from one region: names are looked up, listed and created
/// in [`CodeCommit::region`]. [`CodeCommit::in_region`] gives the view of another (cheap: the
/// store, settings and cache are shared).
#[derive(Clone, Debug)]
pub struct CodeCommit {
    store: Store,
    cfg: std::sync::Arc<Config>,
    cache: std::sync::Arc<RepoCache>,
    region: std::sync::Arc<str>,
}

/// Repository rows by region and name, so the hot read path (every API call names a repository) skips a
/// database round trip. Every write to `cc_repositories` goes through this process's
/// [`CodeCommit`] and calls [`RepoCache::invalidate`] after it commits; `generation` makes a
/// read that raced with a write discard its (possibly old) row instead of caching it.
/// A deployment with several server processes on one database must not use this cache as is.
#[derive(Debug, Default)]
struct RepoCache {
    /// Region → name → row (nested, so a lookup borrows its keys instead of building one).
    rows: std::sync::RwLock<
        std::collections::HashMap<String, std::collections::HashMap<String, Repository>>,
    >,
    generation: std::sync::atomic::AtomicU64,
}

impl RepoCache {
    fn get(&self, region: &str, name: &str) -> Option<Repository> {
        self.rows.read().ok()?.get(region)?.get(name).cloned()
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Caches a row read when the generation was `seen`, unless a write happened since.
    fn put(&self, seen: u64, repo: &Repository) {
        if let Ok(mut rows) = self.rows.write() {
            if self.generation() == seen {
                rows.entry(repo.region.clone())
                    .or_default()
                    .insert(repo.name.clone(), repo.clone());
            }
        }
    }

    fn invalidate(&self) {
        if let Ok(mut rows) = self.rows.write() {
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            rows.clear();
        }
    }
}

/// Sort key for ListRepositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortBy {
    Name,
    LastModified,
}

pub use slipway_store::paging::Page;

/// A page of `items`, or `bad_token` (CodeCommit's exception name) for a token it did not make.
pub fn paginate<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: usize,
    bad_token: &'static str,
) -> Result<Page<T>> {
    slipway_store::paging::paginate(items, token, max)
        .ok_or_else(|| err(bad_token, "The specified continuation token is not valid."))
}

/// CodeCommit's extra rules for repository names beyond the model's pattern.
fn check_repository_name(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && name != "."
        && name != ".."
        && !name.to_ascii_lowercase().ends_with(".git");
    if valid {
        Ok(())
    } else {
        Err(err(
            "InvalidRepositoryNameException",
            slipway_model::runtime::INVALID_REPOSITORY_NAME,
        ))
    }
}

/// Appends committed ref updates (`<old> <new> <ref>` lines) to `$SLIPWAY_REF_LOG`.
const REFERENCE_TRANSACTION_HOOK: &str = "#!/bin/sh\n# Installed by Slipway: reports committed ref updates of a push to the server.\nif [ \"$1\" = committed ] && [ -n \"$SLIPWAY_REF_LOG\" ]; then\n  cat >> \"$SLIPWAY_REF_LOG\"\nelse\n  cat > /dev/null\nfi\nexit 0\n";

const REPO_COLUMNS: &str =
    "repository_id, region, name, description, default_branch, kms_key_id, created_at, updated_at";

impl CodeCommit {
    pub fn new(store: Store, cfg: Config) -> Result<CodeCommit> {
        std::fs::create_dir_all(cfg.data_dir.join("repos"))?;
        let region = cfg.region.as_str().into();
        let cc = CodeCommit {
            store,
            cfg: std::sync::Arc::new(cfg),
            cache: Default::default(),
            region,
        };
        cc.install_hooks()?;
        Ok(cc)
    }

    /// The hooks directory pushes run with (`core.hooksPath`).
    pub fn hooks_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("hooks")
    }

    /// The directory holding every bare repository (`GIT_PROJECT_ROOT` for smart HTTP).
    pub fn repos_dir(&self) -> PathBuf {
        self.cfg.data_dir.join("repos")
    }

    /// Writes the `reference-transaction` hook that reports a push's committed ref updates
    /// to the file named by `SLIPWAY_REF_LOG`, so each accepted update becomes one event.
    fn install_hooks(&self) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.hooks_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("reference-transaction");
        let tmp = dir.join(".reference-transaction.tmp");
        std::fs::write(&tmp, REFERENCE_TRANSACTION_HOOK)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The same service, acting in `region`.
    pub fn in_region(&self, region: &str) -> CodeCommit {
        CodeCommit {
            region: region.into(),
            ..self.clone()
        }
    }

    /// The region this view acts in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The region and repository name a clone URL names:
    /// `…/-/regions/REGION/v1/repos/NAME`, CodeCommit's own
    /// `https://git-codecommit.REGION.amazonaws.com/v1/repos/NAME`, or `…/v1/repos/NAME`
    /// (this server's default region). Anything else is taken as a bare name.
    pub fn repository_in_url(&self, url: &str) -> (String, String) {
        let Some((head, name)) = url.rsplit_once("/v1/repos/") else {
            return (self.cfg.region.clone(), url.to_owned());
        };
        let name = name.trim_end_matches('/');
        let name = name.strip_suffix(".git").unwrap_or(name).to_owned();
        let in_path = head
            .rsplit_once("/-/regions/")
            .map(|(_, r)| r)
            .filter(|r| slipway_regions::is_known(r));
        let host = head.split("://").nth(1).unwrap_or(head);
        let in_host = host
            .strip_prefix("git-codecommit.")
            .and_then(|h| h.split('.').next())
            .filter(|r| slipway_regions::is_known(r));
        let region = in_path.or(in_host).unwrap_or(&self.cfg.region);
        (region.to_owned(), name)
    }

    /// The bare repository directory of a repository id.
    pub fn repo_path(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("repos").join(format!("{id}.git"))
    }

    pub fn git(&self, repo: &Repository) -> Git {
        Git::new(&self.cfg.git_bin, &self.repo_path(&repo.id))
    }

    /// The ARN of repository `name` in this view's region.
    pub fn arn(&self, name: &str) -> String {
        arn_in(&self.region, &self.cfg.account_id, name)
    }

    fn repo_from_row(&self, r: &sqlx::sqlite::SqliteRow) -> Repository {
        let name: String = r.get("name");
        let region: String = r.get("region");
        let path = git_path(&self.cfg.region, &region, &name);
        let host = self
            .cfg
            .public_url
            .split("://")
            .nth(1)
            .unwrap_or("127.0.0.1")
            .split(':')
            .next()
            .unwrap_or("127.0.0.1")
            .to_owned();
        Repository {
            id: r.get("repository_id"),
            description: r.get("description"),
            default_branch: r.get("default_branch"),
            kms_key_id: r.get("kms_key_id"),
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
            arn: arn_in(&region, &self.cfg.account_id, &name),
            clone_url_http: format!("{}{path}", self.cfg.public_url.trim_end_matches('/')),
            clone_url_ssh: format!("ssh://{host}{path}"),
            region,
            name,
        }
    }

    /// Looks a repository up by name in this view's region.
    pub async fn find(&self, name: &str) -> Result<Option<Repository>> {
        if let Some(r) = self.cache.get(&self.region, name) {
            return Ok(Some(r));
        }
        let seen = self.cache.generation();
        let row = sqlx::query(&format!(
            "SELECT {REPO_COLUMNS} FROM cc_repositories WHERE region = $1 AND name = $2"
        ))
        .bind(&*self.region)
        .bind(name)
        .fetch_optional(self.store.pool())
        .await?;
        let repo = row.map(|r| self.repo_from_row(&r));
        if let Some(r) = &repo {
            self.cache.put(seen, r);
        }
        Ok(repo)
    }

    /// Drops cached repository rows; called after every committed write to them.
    pub(crate) fn invalidate(&self) {
        self.cache.invalidate();
    }

    /// A repository by name, or `RepositoryDoesNotExistException`.
    pub async fn get(&self, name: &str) -> Result<Repository> {
        self.find(name).await?.ok_or_else(|| {
            err(
                "RepositoryDoesNotExistException",
                format!("{name} does not exist"),
            )
        })
    }

    pub async fn create_repository(
        &self,
        name: &str,
        description: Option<&str>,
        tags: &BTreeMap<String, String>,
        kms_key_id: Option<&str>,
    ) -> Result<Repository> {
        check_repository_name(name)?;
        let id = uuid::Uuid::new_v4().to_string();
        let path = self.repo_path(&id);
        let git = Git::new(&self.cfg.git_bin, &path);
        // The git directory exists before the row commits, so a visible repository always
        // has its storage; a crash in between leaves only an unreferenced directory.
        init_bare(&git).await?;
        let ts = now();
        let kms = kms_key_id.map(str::to_owned).unwrap_or_else(|| {
            slipway_regions::arn(
                "kms",
                &self.region,
                &self.cfg.account_id,
                "alias/aws/codecommit",
            )
        });
        let mut tx = self.store.begin_write().await?;
        let res = sqlx::query(
            "INSERT INTO cc_repositories (repository_id, region, name, description, default_branch, kms_key_id, created_at, updated_at) VALUES ($1, $2, $3, $4, NULL, $5, $6, $6)",
        )
        .bind(&id)
        .bind(&*self.region)
        .bind(name)
        .bind(description)
        .bind(&kms)
        .bind(ts)
        .execute(&mut *tx)
        .await;
        match res {
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                let _ = tokio::fs::remove_dir_all(&path).await;
                return Err(err(
                    "RepositoryNameExistsException",
                    format!("Repository named {name} already exists"),
                ));
            }
            other => {
                other?;
            }
        }
        slipway_store::tags::put(&mut tx, "repository", &id, tags).await?;
        tx.commit().await?;
        self.invalidate();
        tracing::info!(repository = name, region = %self.region, id = %id, "created repository");
        self.get(name).await
    }

    /// Deletes a repository; `None` when there was none of that name (as AWS answers).
    pub async fn delete_repository(&self, name: &str) -> Result<Option<String>> {
        let Some(repo) = self.find(name).await? else {
            return Ok(None);
        };
        let mut tx = self.store.begin_write().await?;
        sqlx::query("DELETE FROM cc_repositories WHERE repository_id = $1")
            .bind(&repo.id)
            .execute(&mut *tx)
            .await?;
        slipway_store::tags::delete_all(&mut tx, "repository", &repo.id).await?;
        tx.commit().await?;
        self.invalidate();
        // Rename first so the directory vanishes atomically, then remove at leisure.
        let path = self.repo_path(&repo.id);
        let trash = path.with_extension("deleted");
        if tokio::fs::rename(&path, &trash).await.is_ok() {
            let _ = tokio::fs::remove_dir_all(&trash).await;
        }
        tracing::info!(repository = name, id = %repo.id, "deleted repository");
        Ok(Some(repo.id))
    }

    pub async fn list_repositories(
        &self,
        sort: SortBy,
        ascending: bool,
        token: Option<&str>,
    ) -> Result<Page<(String, String)>> {
        let order = match (sort, ascending) {
            (SortBy::Name, true) => "name ASC",
            (SortBy::Name, false) => "name DESC",
            (SortBy::LastModified, true) => "updated_at ASC, name ASC",
            (SortBy::LastModified, false) => "updated_at DESC, name ASC",
        };
        let rows = sqlx::query(&format!(
            "SELECT name, repository_id FROM cc_repositories WHERE region = $1 ORDER BY {order}"
        ))
        .bind(&*self.region)
        .fetch_all(self.store.pool())
        .await?;
        let items = rows
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<String, _>(1)))
            .collect();
        paginate(items, token, 1000, "InvalidContinuationTokenException")
    }

    pub async fn update_repository_name(&self, old: &str, new: &str) -> Result<()> {
        check_repository_name(new)?;
        let repo = self.get(old).await?;
        let res = sqlx::query(
            "UPDATE cc_repositories SET name = $1, updated_at = $2 WHERE repository_id = $3",
        )
        .bind(new)
        .bind(now())
        .bind(&repo.id)
        .execute(self.store.pool())
        .await;
        self.invalidate();
        match res {
            Err(e) if is_unique_violation(&e) => Err(err(
                "RepositoryNameExistsException",
                format!("Repository named {new} already exists"),
            )),
            Err(e) => Err(e.into()),
            Ok(_) => Ok(()),
        }
    }

    pub async fn update_repository_description(
        &self,
        name: &str,
        description: Option<&str>,
    ) -> Result<()> {
        let repo = self.get(name).await?;
        sqlx::query(
            "UPDATE cc_repositories SET description = $1, updated_at = $2 WHERE repository_id = $3",
        )
        .bind(description)
        .bind(now())
        .bind(&repo.id)
        .execute(self.store.pool())
        .await?;
        self.invalidate();
        Ok(())
    }

    /// The repository an ARN names (in this view's region), or the errors TagResource and
    /// friends use.
    pub async fn repository_for_arn(&self, arn: &str) -> Result<Repository> {
        let prefix = arn_in(&self.region, &self.cfg.account_id, "");
        let name = arn
            .strip_prefix(&prefix)
            .filter(|n| !n.is_empty() && !n.contains(':'))
            .ok_or_else(|| {
                err(
                    "InvalidResourceArnException",
                    format!("The value for the resource ARN is not valid: {arn}"),
                )
            })?;
        self.find(name).await?.ok_or_else(|| {
            err(
                "RepositoryDoesNotExistException",
                format!("{name} does not exist"),
            )
        })
    }

    pub async fn tags(&self, repo: &Repository) -> Result<BTreeMap<String, String>> {
        let rows = sqlx::query("SELECT tag_key, tag_value FROM resource_tags WHERE resource_type = 'repository' AND resource_id = $1 ORDER BY tag_key")
            .bind(&repo.id)
            .fetch_all(self.store.pool())
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn tag(&self, repo: &Repository, tags: &BTreeMap<String, String>) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        slipway_store::tags::put(&mut tx, "repository", &repo.id, tags).await?;
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM resource_tags WHERE resource_type = 'repository' AND resource_id = $1")
            .bind(&repo.id)
            .fetch_one(&mut *tx)
            .await?;
        if n > 50 {
            return Err(err(
                "TooManyTagsException",
                "The maximum number of tags for an AWS CodeCommit resource has been exceeded.",
            ));
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn untag(&self, repo: &Repository, keys: &[String]) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        for k in keys {
            sqlx::query("DELETE FROM resource_tags WHERE resource_type = 'repository' AND resource_id = $1 AND tag_key = $2")
                .bind(&repo.id)
                .bind(k)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The ARN of repository `name` in `region`.
fn arn_in(region: &str, account_id: &str, name: &str) -> String {
    slipway_regions::arn("codecommit", region, account_id, name)
}

/// Creates a bare repository configured for durability and integrity.
async fn init_bare(git: &Git) -> Result<()> {
    let path = git.repo.to_string_lossy().to_string();
    let init = Git::new(&git.bin, Path::new("/nonexistent"));
    // `git init` takes the directory as an argument; --git-dir is ignored for it.
    let mut cmd = tokio::process::Command::new(&init.bin);
    cmd.args(["init", "--quiet", "--bare", "--initial-branch=main", &path])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null");
    let out = cmd.output().await?;
    if !out.status.success() {
        return Err(Error::Internal(format!(
            "git init: {}",
            String::from_utf8_lossy(&out.stderr)
        )));
    }
    // Appended as a second [core] section etc., which git merges; one write, no extra processes.
    let extra = "\
[core]
\t# Objects and refs reach the disk before a push or commit is acknowledged.
\tfsync = committed
\tfsyncMethod = fsync
\tlogAllRefUpdates = false
[receive]
\t# Reject corrupt or malformed objects in pushes.
\tfsckObjects = true
[transfer]
\tfsckObjects = true
[uploadpack]
\tallowFilter = true
[http]
\treceivepack = true
";
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(git.repo.join("config"))?;
    f.write_all(extra.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
