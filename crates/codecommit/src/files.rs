//! Files, folders, commits and differences: reads with `git cat-file`/`ls-tree`/`diff-tree`,
//! writes by building a tree in a private index and moving the branch with compare-and-swap.

use crate::git::{is_oid, Git, ZERO_OID};
use crate::{err, paginate, Caller, CodeCommit, Error, Page, Repository, Result};
use std::collections::{BTreeMap, BTreeSet};

/// The empty tree's id, which git knows without it being stored.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// The largest file GetFile and PutFile handle, as CodeCommit limits them.
pub const MAX_FILE_SIZE: u64 = 6 * 1024 * 1024;

/// CodeCommit's file modes and their git equivalents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileMode {
    Normal,
    Executable,
    Symlink,
}

impl FileMode {
    pub fn from_git(mode: &str) -> Option<FileMode> {
        match mode {
            "100644" | "100664" => Some(FileMode::Normal),
            "100755" => Some(FileMode::Executable),
            "120000" => Some(FileMode::Symlink),
            _ => None,
        }
    }
    pub fn git(self) -> &'static str {
        match self {
            FileMode::Normal => "100644",
            FileMode::Executable => "100755",
            FileMode::Symlink => "120000",
        }
    }
    pub fn aws(self) -> &'static str {
        match self {
            FileMode::Normal => "NORMAL",
            FileMode::Executable => "EXECUTABLE",
            FileMode::Symlink => "SYMLINK",
        }
    }
    pub fn from_aws(s: &str) -> Option<FileMode> {
        match s {
            "NORMAL" => Some(FileMode::Normal),
            "EXECUTABLE" => Some(FileMode::Executable),
            "SYMLINK" => Some(FileMode::Symlink),
            _ => None,
        }
    }
}

/// A file's content at a commit.
#[derive(Debug, Clone)]
pub struct File {
    pub commit_id: String,
    pub blob_id: String,
    pub path: String,
    pub mode: FileMode,
    pub size: u64,
    pub content: Vec<u8>,
}

/// An entry of a folder listing.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub absolute_path: String,
    pub relative_path: String,
    pub mode: Option<FileMode>,
}

#[derive(Debug, Clone)]
pub struct Folder {
    pub commit_id: String,
    pub path: String,
    pub tree_id: String,
    pub sub_folders: Vec<Entry>,
    pub files: Vec<Entry>,
    pub symbolic_links: Vec<Entry>,
    pub sub_modules: Vec<Entry>,
}

#[derive(Debug, Clone, Default)]
pub struct Person {
    pub name: String,
    pub email: String,
    /// `<epoch seconds> <zone>`, as CodeCommit reports commit dates.
    pub date: String,
}

#[derive(Debug, Clone)]
pub struct Commit {
    pub commit_id: String,
    pub tree_id: String,
    pub parents: Vec<String>,
    pub message: String,
    pub author: Person,
    pub committer: Person,
}

/// A blob on one side of a difference: (blob id, path, git mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobMeta {
    pub blob_id: String,
    pub path: String,
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    pub before: Option<BlobMeta>,
    pub after: Option<BlobMeta>,
    pub change_type: char,
}

/// What GetDifferences compares: two commits (no `before`: the empty tree), optionally
/// limited to a folder on each side, one page at a time.
#[derive(Debug, Clone, Copy)]
pub struct DiffQuery<'a> {
    pub before: Option<&'a str>,
    pub after: &'a str,
    pub before_path: Option<&'a str>,
    pub after_path: Option<&'a str>,
    pub max: usize,
    pub token: Option<&'a str>,
}

/// A file to write in a commit: new content, or a copy/move of another file.
#[derive(Debug, Clone)]
pub struct PutFile {
    pub path: String,
    pub mode: Option<FileMode>,
    pub content: Option<Vec<u8>>,
    pub source: Option<(String, bool)>,
}

#[derive(Debug, Clone, Default)]
pub struct CommitRequest {
    pub branch: String,
    pub parent: Option<String>,
    pub author_name: Option<String>,
    pub email: Option<String>,
    pub message: Option<String>,
    pub keep_empty_folders: bool,
    pub put: Vec<PutFile>,
    pub delete: Vec<String>,
    pub set_modes: Vec<(String, FileMode)>,
}

/// A file a commit added, updated or deleted.
#[derive(Debug, Clone)]
pub struct Change {
    pub path: String,
    pub blob_id: String,
    pub mode: FileMode,
}

#[derive(Debug, Clone, Default)]
pub struct CommitResult {
    pub commit_id: String,
    pub tree_id: String,
    pub added: Vec<Change>,
    pub updated: Vec<Change>,
    pub deleted: Vec<Change>,
}

/// Normalises a repository path (`/a/b/` → `a/b`); rejects `.`/`..`/`.git` components.
pub fn normalize_path(path: &str, allow_root: bool) -> Result<String> {
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() {
        return if allow_root {
            Ok(String::new())
        } else {
            Err(err("PathRequiredException", "A file path is required."))
        };
    }
    let ok = trimmed.split('/').all(|c| {
        !c.is_empty()
            && c != "."
            && c != ".."
            && !c.eq_ignore_ascii_case(".git")
            && !c.chars().any(|ch| ch == '\0')
    });
    if ok && trimmed.len() <= 4096 {
        Ok(trimmed.to_owned())
    } else {
        Err(err(
            "InvalidPathException",
            format!("The specified path is not valid: {path}"),
        ))
    }
}

fn split_z(out: &[u8]) -> impl Iterator<Item = String> + '_ {
    out.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

fn parse_person(line: &str) -> Person {
    // "Name <email> 1484167798 -0800"
    let (name, rest) = line.split_once(" <").unwrap_or((line, ""));
    let (email, date) = rest
        .split_once("> ")
        .unwrap_or((rest.trim_end_matches('>'), ""));
    Person {
        name: name.to_owned(),
        email: email.to_owned(),
        date: date.to_owned(),
    }
}

/// A tree flattened to its files: path → (git mode, object id).
type Listing = BTreeMap<String, (String, String)>;

async fn flatten(git: &Git, treeish: Option<&str>) -> Result<Listing> {
    let Some(t) = treeish else {
        return Ok(Listing::new());
    };
    let out = git.run(&["ls-tree", "-r", "-z", "--full-tree", t]).await?;
    let mut listing = Listing::new();
    for entry in split_z(&out) {
        let Some((meta, path)) = entry.split_once('\t') else {
            continue;
        };
        let mut parts = meta.split(' ');
        let (mode, _kind, oid) = (
            parts.next().unwrap_or(""),
            parts.next(),
            parts.next().unwrap_or(""),
        );
        listing.insert(path.to_owned(), (mode.to_owned(), oid.to_owned()));
    }
    Ok(listing)
}

fn parent_dirs(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

impl CodeCommit {
    /// Resolves a commit specifier (branch, tag or commit id; default: the default branch).
    pub async fn resolve_commit(&self, repo: &Repository, spec: Option<&str>) -> Result<String> {
        let git = self.git(repo);
        let spec = match spec {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => match &repo.default_branch {
                Some(b) => b.clone(),
                None => {
                    return Err(err(
                        "CommitDoesNotExistException",
                        "The repository has no commits yet.",
                    ))
                }
            },
        };
        let missing = || {
            err(
                "CommitDoesNotExistException",
                format!("The specified commit does not exist or no commit was specified: {spec}"),
            )
        };
        if spec.starts_with('-')
            || spec.contains("..")
            || spec.chars().any(|c| c.is_control() || c == ':')
        {
            return Err(missing());
        }
        let candidates = if is_oid(&spec) {
            vec![spec.clone()]
        } else {
            vec![
                format!("refs/heads/{spec}"),
                format!("refs/tags/{spec}"),
                spec.clone(),
            ]
        };
        for c in candidates {
            if let Some(oid) = git.resolve(&format!("{c}^{{commit}}")).await? {
                return Ok(oid);
            }
        }
        Err(missing())
    }

    pub async fn get_blob(&self, repo: &Repository, blob_id: &str) -> Result<Vec<u8>> {
        let git = self.git(repo);
        let invalid = || {
            err(
                "InvalidBlobIdException",
                format!("The specified blob ID is not valid: {blob_id}"),
            )
        };
        if !is_oid(blob_id) {
            return Err(invalid());
        }
        match git.run(&["cat-file", "-t", blob_id]).await {
            Ok(t) if String::from_utf8_lossy(&t).trim() == "blob" => {}
            Ok(_) => return Err(invalid()),
            Err(_) => {
                return Err(err(
                    "BlobIdDoesNotExistException",
                    format!("Blob {blob_id} does not exist"),
                ))
            }
        }
        let size: u64 = git
            .text(&["cat-file", "-s", blob_id])
            .await?
            .parse()
            .unwrap_or(0);
        if size > MAX_FILE_SIZE {
            return Err(err(
                "FileTooLargeException",
                "The specified file exceeds the file size limit for AWS CodeCommit.",
            ));
        }
        Ok(git.run(&["cat-file", "blob", blob_id]).await?)
    }

    pub async fn get_file(
        &self,
        repo: &Repository,
        spec: Option<&str>,
        path: &str,
    ) -> Result<File> {
        let path = normalize_path(path, false)?;
        let commit = self.resolve_commit(repo, spec).await?;
        let git = self.git(repo);
        let out = git
            .run(&["ls-tree", "-z", "-l", "--full-tree", &commit, "--", &path])
            .await?;
        let entry = split_z(&out).next();
        let parsed = entry.as_deref().and_then(|e| {
            let (meta, p) = e.split_once('\t')?;
            let f: Vec<&str> = meta.split_whitespace().collect();
            (p == path && f.len() == 4 && f[1] == "blob").then(|| {
                (
                    f[0].to_owned(),
                    f[2].to_owned(),
                    f[3].parse::<u64>().unwrap_or(0),
                )
            })
        });
        let Some((mode, blob, size)) = parsed else {
            return Err(err(
                "FileDoesNotExistException",
                format!("The specified file does not exist: {path}"),
            ));
        };
        if size > MAX_FILE_SIZE {
            return Err(err(
                "FileTooLargeException",
                "The specified file exceeds the file size limit for AWS CodeCommit.",
            ));
        }
        let content = git.run(&["cat-file", "blob", &blob]).await?;
        Ok(File {
            commit_id: commit,
            blob_id: blob,
            path,
            mode: FileMode::from_git(&mode).unwrap_or(FileMode::Normal),
            size,
            content,
        })
    }

    pub async fn get_folder(
        &self,
        repo: &Repository,
        spec: Option<&str>,
        folder: &str,
    ) -> Result<Folder> {
        let path = normalize_path(folder, true)?;
        let commit = self.resolve_commit(repo, spec).await?;
        let git = self.git(repo);
        let rev = if path.is_empty() {
            format!("{commit}^{{tree}}")
        } else {
            format!("{commit}:{path}")
        };
        let tree = git.resolve(&rev).await?;
        let is_tree = match &tree {
            Some(t) => git.text(&["cat-file", "-t", t]).await? == "tree",
            None => false,
        };
        let tree = match tree {
            Some(t) if is_tree => t,
            _ => {
                return Err(err(
                    "FolderDoesNotExistException",
                    format!("The specified folder does not exist: {folder}"),
                ))
            }
        };
        let out = git.run(&["ls-tree", "-z", &tree]).await?;
        let mut f = Folder {
            commit_id: commit,
            path: format!("/{path}"),
            tree_id: tree,
            sub_folders: vec![],
            files: vec![],
            symbolic_links: vec![],
            sub_modules: vec![],
        };
        for e in split_z(&out) {
            let Some((meta, name)) = e.split_once('\t') else {
                continue;
            };
            let m: Vec<&str> = meta.split(' ').collect();
            if m.len() != 3 {
                continue;
            }
            let abs = if path.is_empty() {
                name.to_owned()
            } else {
                format!("{path}/{name}")
            };
            let entry = Entry {
                id: m[2].to_owned(),
                absolute_path: abs,
                relative_path: name.to_owned(),
                mode: FileMode::from_git(m[0]),
            };
            match (m[1], m[0]) {
                ("tree", _) => f.sub_folders.push(entry),
                ("commit", _) => f.sub_modules.push(entry),
                (_, "120000") => f.symbolic_links.push(entry),
                _ => f.files.push(entry),
            }
        }
        Ok(f)
    }

    pub async fn get_commit(&self, repo: &Repository, commit_id: &str) -> Result<Commit> {
        if !is_oid(commit_id) {
            return Err(err(
                "InvalidCommitIdException",
                format!("The specified commit ID is not valid: {commit_id}"),
            ));
        }
        let git = self.git(repo);
        let raw = match git.run(&["cat-file", "commit", commit_id]).await {
            Ok(r) => r,
            Err(_) => {
                return Err(err(
                    "CommitIdDoesNotExistException",
                    format!("Commit {commit_id} does not exist"),
                ))
            }
        };
        let text = String::from_utf8_lossy(&raw);
        let (headers, message) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut c = Commit {
            commit_id: commit_id.to_owned(),
            tree_id: String::new(),
            parents: vec![],
            message: message.to_owned(),
            author: Person::default(),
            committer: Person::default(),
        };
        for line in headers.lines() {
            match line.split_once(' ') {
                Some(("tree", v)) => c.tree_id = v.to_owned(),
                Some(("parent", v)) => c.parents.push(v.to_owned()),
                Some(("author", v)) => c.author = parse_person(v),
                Some(("committer", v)) => c.committer = parse_person(v),
                _ => {}
            }
        }
        Ok(c)
    }

    pub async fn get_differences(
        &self,
        repo: &Repository,
        q: &DiffQuery<'_>,
    ) -> Result<Page<Difference>> {
        let DiffQuery {
            before,
            after,
            before_path,
            after_path,
            max,
            token,
        } = *q;
        let after = self.resolve_commit(repo, Some(after)).await?;
        let before = match before {
            Some(b) if !b.is_empty() => self.resolve_commit(repo, Some(b)).await?,
            _ => EMPTY_TREE.to_owned(),
        };
        let bp = before_path
            .map(|p| normalize_path(p, true))
            .transpose()?
            .filter(|p| !p.is_empty());
        let ap = after_path
            .map(|p| normalize_path(p, true))
            .transpose()?
            .filter(|p| !p.is_empty());
        let git = self.git(repo);
        let mut args = vec![
            "diff-tree",
            "-r",
            "-z",
            "--no-renames",
            "--raw",
            "--full-index",
            &before,
            &after,
        ];
        let mut paths: Vec<&str> = bp.iter().chain(ap.iter()).map(String::as_str).collect();
        paths.dedup();
        if !paths.is_empty() {
            args.push("--");
            args.extend(paths.iter().copied());
        }
        let out = git.run(&args).await?;
        let fields: Vec<String> = split_z(&out).collect();
        let under = |p: &str, root: &Option<String>| {
            root.as_ref()
                .is_none_or(|r| p == r || p.starts_with(&format!("{r}/")))
        };
        let mut diffs = Vec::new();
        let mut i = 0;
        while i + 1 < fields.len() {
            let meta = fields[i].trim_start_matches(':');
            let path = fields[i + 1].clone();
            i += 2;
            let m: Vec<&str> = meta.split(' ').collect();
            if m.len() < 5 {
                continue;
            }
            let status = m[4].chars().next().unwrap_or('M');
            let side = |mode: &str, oid: &str| {
                (oid != ZERO_OID).then(|| BlobMeta {
                    blob_id: oid.to_owned(),
                    path: path.clone(),
                    mode: mode.to_owned(),
                })
            };
            let d = Difference {
                before: side(m[0], m[2]),
                after: side(m[1], m[3]),
                change_type: status,
            };
            let keep = d.before.as_ref().is_none_or(|b| under(&b.path, &bp))
                && d.after.as_ref().is_none_or(|a| under(&a.path, &ap));
            if keep && matches!(status, 'A' | 'M' | 'D' | 'T') {
                diffs.push(Difference {
                    change_type: if status == 'T' { 'M' } else { status },
                    ..d
                });
            }
        }
        paginate(diffs, token, max, "InvalidContinuationTokenException")
    }

    /// Commits on `spec`'s history that touched `path`, newest first, each with the commits
    /// of that list that came next for the file (its `revisionChildren`).
    pub async fn file_history(
        &self,
        repo: &Repository,
        spec: Option<&str>,
        path: &str,
    ) -> Result<Vec<(String, Vec<String>)>> {
        let path = normalize_path(path, false)?;
        let commit = self.resolve_commit(repo, spec).await?;
        // --parents rewrites each commit's parents to the previous commits that touched path.
        let out = self
            .git(repo)
            .text(&[
                "log",
                "--parents",
                "--format=%H %P",
                "--no-renames",
                &commit,
                "--",
                &path,
            ])
            .await?;
        let entries: Vec<(String, Vec<String>)> = out
            .lines()
            .filter_map(|l| {
                let mut ids = l.split_whitespace().map(str::to_owned);
                Some((ids.next()?, ids.collect()))
            })
            .collect();
        Ok(entries
            .iter()
            .map(|(id, _)| {
                let children = entries
                    .iter()
                    .filter(|(_, parents)| parents.contains(id))
                    .map(|(c, _)| c.clone())
                    .collect();
                (id.clone(), children)
            })
            .collect())
    }

    /// The blob a path has at a commit, if it is a file there.
    pub async fn blob_at(
        &self,
        repo: &Repository,
        commit: &str,
        path: &str,
    ) -> Result<Option<String>> {
        Ok(self.git(repo).resolve(&format!("{commit}:{path}")).await?)
    }

    /// Creates a commit on a branch from file changes; the branch moves only if it is still at
    /// the parent (`ParentCommitIdOutdatedException` otherwise).
    pub async fn create_commit(
        &self,
        repo: &Repository,
        req: &CommitRequest,
        caller: &Caller,
        no_change_code: &'static str,
    ) -> Result<CommitResult> {
        let branch = req.branch.as_str();
        if !crate::git::valid_branch_name(branch) {
            return Err(err(
                "InvalidBranchNameException",
                format!("The specified branch name is not valid: {branch}"),
            ));
        }
        let git = self.git(repo);
        let tip = self.branch_tip(repo, branch).await?;
        let parent = match (&tip, req.parent.as_deref()) {
            (Some(_), None) => return Err(err("ParentCommitIdRequiredException", "A parent commit ID is required. To view the full commit ID of a branch in a repository, use GetBranch.")),
            (Some(tip), Some(p)) => {
                let p = self.require_commit(repo, p, "InvalidParentCommitIdException", "ParentCommitDoesNotExistException").await?;
                if &p != tip {
                    return Err(err("ParentCommitIdOutdatedException", format!("The parent commit ID {p} is not the tip of branch {branch} ({tip}).")));
                }
                Some(p)
            }
            (None, Some(p)) => Some(self.require_commit(repo, p, "InvalidParentCommitIdException", "ParentCommitDoesNotExistException").await?),
            (None, None) => {
                if !git.refs().await?.is_empty() {
                    return Err(err("ParentCommitIdRequiredException", format!("Branch {branch} does not exist; a parent commit ID is required to create it.")));
                }
                None
            }
        };
        let base = flatten(&git, parent.as_deref()).await?;
        let mut tree = base.clone();
        let mut touched = BTreeSet::new();
        let mut result = CommitResult::default();
        let claim = |touched: &mut BTreeSet<String>, p: &str| {
            if touched.insert(p.to_owned()) {
                Ok(())
            } else {
                Err(err(
                    "SamePathRequestException",
                    format!(
                        "The commit cannot be created because more than one change applies to {p}."
                    ),
                ))
            }
        };

        for d in &req.delete {
            let p = normalize_path(d, false)?;
            claim(&mut touched, &p)?;
            let Some((mode, oid)) = tree.remove(&p) else {
                return Err(err(
                    "FileDoesNotExistException",
                    format!("The specified file does not exist: {p}"),
                ));
            };
            result.deleted.push(Change {
                path: p,
                blob_id: oid,
                mode: FileMode::from_git(&mode).unwrap_or(FileMode::Normal),
            });
        }
        for put in &req.put {
            let p = normalize_path(&put.path, false)?;
            claim(&mut touched, &p)?;
            let oid = match (&put.content, &put.source) {
                (Some(_), Some(_)) => {
                    return Err(err(
                        "FileContentAndSourceFileSpecifiedException",
                        format!("Both content and a source file were given for {p}."),
                    ))
                }
                (Some(content), None) => {
                    if content.len() as u64 > MAX_FILE_SIZE {
                        return Err(err(
                            "FileContentSizeLimitExceededException",
                            "The file cannot be added because it is too large.",
                        ));
                    }
                    let out = git
                        .run_env(&["hash-object", "-w", "--stdin"], &[], Some(content))
                        .await?;
                    String::from_utf8_lossy(&out).trim().to_owned()
                }
                (None, Some((src, is_move))) => {
                    let src = normalize_path(src, false)?;
                    let Some((_, oid)) = base.get(&src).cloned() else {
                        return Err(err(
                            "FileDoesNotExistException",
                            format!("The source file does not exist: {src}"),
                        ));
                    };
                    if *is_move {
                        claim(&mut touched, &src)?;
                        if let Some((mode, o)) = tree.remove(&src) {
                            result.deleted.push(Change {
                                path: src,
                                blob_id: o,
                                mode: FileMode::from_git(&mode).unwrap_or(FileMode::Normal),
                            });
                        }
                    }
                    oid
                }
                (None, None) => {
                    return Err(err(
                        "FileContentRequiredException",
                        format!("No content or source file was given for {p}."),
                    ))
                }
            };
            if tree.keys().any(|k| k.starts_with(&format!("{p}/"))) {
                return Err(err(
                    "FileNameConflictsWithDirectoryNameException",
                    format!("{p} is the name of a folder in this repository."),
                ));
            }
            if let Some(dir) = parent_dirs(&p).find(|d| tree.contains_key(*d)) {
                return Err(err(
                    "DirectoryNameConflictsWithFileNameException",
                    format!("{dir} is the name of a file in this repository."),
                ));
            }
            let old = tree.get(&p).cloned();
            let mode = put
                .mode
                .or_else(|| old.as_ref().and_then(|(m, _)| FileMode::from_git(m)))
                .unwrap_or(FileMode::Normal);
            let change = Change {
                path: p.clone(),
                blob_id: oid.clone(),
                mode,
            };
            match &old {
                Some((m, o)) if *o == oid && m == mode.git() => continue,
                Some(_) => result.updated.push(change),
                None => result.added.push(change),
            }
            tree.insert(p, (mode.git().to_owned(), oid));
        }
        for (path, mode) in &req.set_modes {
            let p = normalize_path(path, false)?;
            claim(&mut touched, &p)?;
            let Some(entry) = tree.get_mut(&p) else {
                return Err(err(
                    "FileDoesNotExistException",
                    format!("The specified file does not exist: {p}"),
                ));
            };
            if entry.0 != mode.git() {
                entry.0 = mode.git().to_owned();
                result.updated.push(Change {
                    path: p,
                    blob_id: entry.1.clone(),
                    mode: *mode,
                });
            }
        }
        if req.keep_empty_folders {
            let emptied: BTreeSet<String> = result
                .deleted
                .iter()
                .filter_map(|c| c.path.rsplit_once('/').map(|(d, _)| d.to_owned()))
                .filter(|d| !tree.keys().any(|k| k.starts_with(&format!("{d}/"))))
                .collect();
            if !emptied.is_empty() {
                let empty = String::from_utf8_lossy(
                    &git.run_env(&["hash-object", "-w", "--stdin"], &[], Some(b""))
                        .await?,
                )
                .trim()
                .to_owned();
                for d in emptied {
                    tree.insert(format!("{d}/.gitkeep"), ("100644".into(), empty.clone()));
                }
            }
        }
        if tree == base {
            return Err(err(no_change_code, "The commit cannot be created because no changes will be made to the repository as a result of this commit."));
        }

        // Build the tree in a private index, so concurrent commits never share state.
        let index = tempfile::Builder::new()
            .prefix("slipway-index")
            .tempfile()
            .map_err(Error::from)?;
        let index_path = index.path().to_string_lossy().into_owned();
        let _ = std::fs::remove_file(index.path());
        let env = [("GIT_INDEX_FILE", index_path.as_str())];
        let mut info = Vec::new();
        for (path, (mode, oid)) in &tree {
            info.extend_from_slice(format!("{mode} {oid}\t{path}").as_bytes());
            info.push(0);
        }
        git.run_env(&["update-index", "-z", "--index-info"], &env, Some(&info))
            .await?;
        let tree_id = String::from_utf8_lossy(&git.run_env(&["write-tree"], &env, None).await?)
            .trim()
            .to_owned();
        drop(index);
        let name = req
            .author_name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| caller.name.clone());
        let email = req.email.clone().unwrap_or_default();
        let ident = [
            ("GIT_AUTHOR_NAME", name.as_str()),
            ("GIT_AUTHOR_EMAIL", email.as_str()),
            ("GIT_COMMITTER_NAME", name.as_str()),
            ("GIT_COMMITTER_EMAIL", email.as_str()),
        ];
        let message = req.message.clone().unwrap_or_default();
        let mut args = vec!["commit-tree", tree_id.as_str()];
        if let Some(p) = &parent {
            args.push("-p");
            args.push(p);
        }
        args.extend(["-F", "-"]);
        let commit =
            String::from_utf8_lossy(&git.run_env(&args, &ident, Some(message.as_bytes())).await?)
                .trim()
                .to_owned();
        if !self
            .compare_and_swap(repo, branch, &commit, tip.as_deref(), &caller.arn)
            .await?
        {
            return Err(err("ParentCommitIdOutdatedException", format!("Branch {branch} moved while the commit was being created; retry with its new tip.")));
        }
        result.commit_id = commit;
        result.tree_id = tree_id;
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_and_reject_traversal() {
        assert_eq!(normalize_path("/a/b/", false).unwrap(), "a/b");
        assert_eq!(normalize_path("/", true).unwrap(), "");
        for bad in ["a/../b", "..", "./x", "a//b", ".git/config", "x/.GIT/y"] {
            assert!(normalize_path(bad, false).is_err(), "{bad}");
        }
        assert!(normalize_path("", false).is_err());
    }

    #[test]
    fn people_parse() {
        let p = parse_person("Jane Doe <jane@example.com> 1484167798 -0800");
        assert_eq!(
            (p.name.as_str(), p.email.as_str(), p.date.as_str()),
            ("Jane Doe", "jane@example.com", "1484167798 -0800")
        );
    }
}
