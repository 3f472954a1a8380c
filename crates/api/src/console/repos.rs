//! Repository pages: the list, a tree, a file (shown or downloaded), the commit log, a
//! commit's diff, branches and tags. Folders, files and commits come through CodeCommit's
//! own operations (GetFolder, GetFile, GetCommit); the log, diff and refs are authorised
//! as the console permissions AWS names (GetCommitHistory, GetDifferences, GetReferences).

use super::{html, op, opt, require, str_of, Fail, PageResult, Session};
use crate::auth::authorize;
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use slipway_console::repos as views;
use std::sync::Arc;

/// Commits on a page of the log.
const LOG_PAGE: usize = 50;
/// The largest file shown as text (larger ones are offered for download).
const MAX_TEXT: usize = 1 << 20;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/-/console/repositories", get(list))
        .route("/-/console/repositories/{name}", get(tree))
        .route("/-/console/repositories/{name}/tree", get(tree))
        .route("/-/console/repositories/{name}/blob", get(blob))
        .route("/-/console/repositories/{name}/raw", get(raw))
        .route("/-/console/repositories/{name}/commits", get(commits))
        .route("/-/console/repositories/{name}/commit/{id}", get(commit))
        .route("/-/console/repositories/{name}/refs", get(refs))
}

#[derive(serde::Deserialize, Default)]
pub struct At {
    rev: Option<String>,
    path: Option<String>,
    page: Option<usize>,
}

async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> PageResult {
    let s = require(&state, &headers, "/-/console/repositories").await?;
    let names: Vec<String> = op(
        &state,
        &s,
        "codecommit",
        "ListRepositories",
        json!({"sortBy": "repositoryName"}),
    )
    .await?["repositories"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| opt(r, "repositoryName"))
        .collect();
    let mut rows = Vec::new();
    for chunk in names.chunks(25) {
        let got = op(
            &state,
            &s,
            "codecommit",
            "BatchGetRepositories",
            json!({"repositoryNames": chunk}),
        )
        .await?;
        for r in got["repositories"].as_array().into_iter().flatten() {
            rows.push(views::RepoRow {
                name: str_of(r, "repositoryName").to_owned(),
                description: opt(r, "repositoryDescription"),
                default_branch: opt(r, "defaultBranch"),
                updated: r["lastModifiedDate"].as_f64().unwrap_or(0.0),
            });
        }
    }
    Ok(html(views::list(&s.viewer(), &rows)))
}

/// The repository (as its metadata and domain value), its refs, and the rev shown.
async fn head(
    state: &AppState,
    s: &Session,
    name: &str,
    rev: Option<&str>,
) -> Result<(views::RepoHead, slipway_codecommit::Repository), Fail> {
    let meta = op(
        state,
        s,
        "codecommit",
        "GetRepository",
        json!({"repositoryName": name}),
    )
    .await?;
    let m = &meta["repositoryMetadata"];
    let repo = state
        .codecommit
        .in_region(&s.region)
        .get(name)
        .await
        .map_err(crate::domain_error)?;
    let branches = op(
        state,
        s,
        "codecommit",
        "ListBranches",
        json!({"repositoryName": name}),
    )
    .await
    .map(|v| {
        v["branches"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str().map(str::to_owned))
            .collect()
    })
    .unwrap_or_default();
    let tags = match allowed_refs(state, s, &repo).await {
        true => state
            .codecommit
            .in_region(&s.region)
            .tag_list(&repo)
            .await
            .map(|t| t.into_iter().map(|(n, _)| n).collect())
            .unwrap_or_default(),
        false => Vec::new(),
    };
    let rev = rev
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .or_else(|| opt(m, "defaultBranch"))
        .unwrap_or_default();
    Ok((
        views::RepoHead {
            name: name.to_owned(),
            clone_url: str_of(m, "cloneUrlHttp").to_owned(),
            branches,
            tags,
            rev,
        },
        repo,
    ))
}

async fn allowed_refs(
    state: &AppState,
    s: &Session,
    repo: &slipway_codecommit::Repository,
) -> bool {
    authorize(
        state,
        &s.principal,
        "codecommit:GetReferences",
        std::slice::from_ref(&repo.arn),
    )
    .await
    .is_ok()
}

async fn check(
    state: &AppState,
    s: &Session,
    action: &str,
    repo: &slipway_codecommit::Repository,
) -> Result<(), Fail> {
    authorize(state, &s.principal, action, std::slice::from_ref(&repo.arn))
        .await
        .map_err(|e| Fail::Api(Some((s.name.clone(), s.csrf.clone())), e))
}

async fn tree(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(at): Query<At>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!("/-/console/repositories/{}", slipway_console::enc(&name)),
    )
    .await?;
    let (h, _) = head(&state, &s, &name, at.rev.as_deref()).await?;
    let path = at.path.unwrap_or_default();
    if h.rev.is_empty() {
        return Ok(html(views::tree(&s.viewer(), &h, &path, &[])));
    }
    let f = op(
        &state,
        &s,
        "codecommit",
        "GetFolder",
        json!({"repositoryName": name, "commitSpecifier": h.rev, "folderPath": if path.is_empty() { "/" } else { &path }}),
    )
    .await?;
    let mut entries = Vec::new();
    for (key, kind) in [
        ("subFolders", views::Kind::Folder),
        ("files", views::Kind::File),
        ("symbolicLinks", views::Kind::Link),
        ("subModules", views::Kind::Submodule),
    ] {
        let mut these: Vec<views::TreeEntry> = f[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| views::TreeEntry {
                name: str_of(e, "relativePath").to_owned(),
                path: str_of(e, "absolutePath").to_owned(),
                kind: match kind {
                    views::Kind::Folder => views::Kind::Folder,
                    views::Kind::File => views::Kind::File,
                    views::Kind::Link => views::Kind::Link,
                    views::Kind::Submodule => views::Kind::Submodule,
                },
            })
            .collect();
        these.sort_by(|a, b| a.name.cmp(&b.name));
        entries.extend(these);
    }
    Ok(html(views::tree(&s.viewer(), &h, &path, &entries)))
}

async fn file(
    state: &AppState,
    s: &Session,
    name: &str,
    rev: &str,
    path: &str,
) -> Result<Vec<u8>, Fail> {
    let f = op(
        state,
        s,
        "codecommit",
        "GetFile",
        json!({"repositoryName": name, "commitSpecifier": rev, "filePath": path}),
    )
    .await?;
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(str_of(&f, "fileContent"))
        .map_err(|e| Fail::from(super::internal(e)))
}

async fn blob(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(at): Query<At>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!("/-/console/repositories/{}", slipway_console::enc(&name)),
    )
    .await?;
    let (h, _) = head(&state, &s, &name, at.rev.as_deref()).await?;
    let path = at.path.unwrap_or_default();
    let bytes = file(&state, &s, &name, &h.rev, &path).await?;
    let text = (bytes.len() <= MAX_TEXT && !bytes.contains(&0))
        .then(|| std::str::from_utf8(&bytes).ok())
        .flatten();
    Ok(html(views::blob(
        &s.viewer(),
        &h,
        &path,
        text,
        bytes.len() as u64,
    )))
}

async fn raw(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(at): Query<At>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!("/-/console/repositories/{}", slipway_console::enc(&name)),
    )
    .await?;
    let path = at.path.unwrap_or_default();
    let bytes = file(&state, &s, &name, at.rev.as_deref().unwrap_or(""), &path).await?;
    let file_name: String = path
        .rsplit('/')
        .next()
        .unwrap_or("file")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{file_name}\""),
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; sandbox".to_owned(),
            ),
        ],
        bytes,
    )
        .into_response())
}

async fn commits(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(at): Query<At>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!(
            "/-/console/repositories/{}/commits",
            slipway_console::enc(&name)
        ),
    )
    .await?;
    let (h, repo) = head(&state, &s, &name, at.rev.as_deref()).await?;
    check(&state, &s, "codecommit:GetCommitHistory", &repo).await?;
    let page_no = at.page.unwrap_or(1).max(1);
    let mut log = if h.rev.is_empty() {
        Vec::new()
    } else {
        state
            .codecommit
            .in_region(&s.region)
            .log(&repo, Some(&h.rev), (page_no - 1) * LOG_PAGE, LOG_PAGE + 1)
            .await
            .map_err(crate::domain_error)?
    };
    let more = log.len() > LOG_PAGE;
    log.truncate(LOG_PAGE);
    let rows: Vec<views::CommitRow> = log
        .into_iter()
        .map(|c| views::CommitRow {
            id: c.commit_id,
            subject: c.subject,
            author: c.author,
            date: c.date,
        })
        .collect();
    Ok(html(views::commits(&s.viewer(), &h, &rows, page_no, more)))
}

async fn commit(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((name, id)): Path<(String, String)>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!("/-/console/repositories/{}", slipway_console::enc(&name)),
    )
    .await?;
    let (mut h, repo) = head(&state, &s, &name, Some(&id)).await?;
    h.rev = id.clone();
    let c = op(
        &state,
        &s,
        "codecommit",
        "GetCommit",
        json!({"repositoryName": name, "commitId": id}),
    )
    .await?;
    let c = &c["commit"];
    check(&state, &s, "codecommit:GetDifferences", &repo).await?;
    let (patch, truncated) = state
        .codecommit
        .in_region(&s.region)
        .patch(&repo, &id)
        .await
        .map_err(crate::domain_error)?;
    let author = &c["author"];
    let view = views::CommitView {
        id: str_of(c, "commitId").to_owned(),
        parents: c["parents"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect(),
        message: str_of(c, "message").to_owned(),
        author: format!("{} <{}>", str_of(author, "name"), str_of(author, "email")),
        date: str_of(author, "date")
            .split(' ')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or(0.0),
        patch,
        truncated,
    };
    Ok(html(views::commit(&s.viewer(), &h, &view)))
}

async fn refs(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> PageResult {
    let s = require(
        &state,
        &headers,
        &format!(
            "/-/console/repositories/{}/refs",
            slipway_console::enc(&name)
        ),
    )
    .await?;
    let (h, repo) = head(&state, &s, &name, None).await?;
    check(&state, &s, "codecommit:GetReferences", &repo).await?;
    let cc = state.codecommit.in_region(&s.region);
    let branches = cc.branch_tips(&repo).await.map_err(crate::domain_error)?;
    let tags = cc.tag_list(&repo).await.map_err(crate::domain_error)?;
    Ok(html(views::refs(&s.viewer(), &h, &branches, &tags)))
}
