//! Repository pages: the list, a tree at a branch, tag or commit, a file, the commit log and
//! a commit's diff.

use crate::{enc, page, time, Section, Viewer, BASE};
use maud::{html, Markup};

pub struct RepoRow {
    pub name: String,
    pub description: Option<String>,
    pub default_branch: Option<String>,
    pub updated: f64,
}

pub fn list(viewer: &Viewer, repos: &[RepoRow]) -> String {
    page(
        "Repositories",
        Some(viewer),
        Section::Repositories,
        None,
        html! {
            h1 { "Repositories" }
            @if repos.is_empty() {
                p class="muted" { "No repositories yet. Create one with " code { "aws codecommit create-repository --repository-name NAME" } "." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Description" } th scope="col" { "Default branch" } th scope="col" { "Last modified" } } }
                    tbody {
                        @for r in repos {
                            tr {
                                td { a href={(BASE) "/repositories/" (enc(&r.name))} { (r.name) } }
                                td { (r.description.as_deref().unwrap_or("")) }
                                td { (r.default_branch.as_deref().unwrap_or("—")) }
                                td { (time(Some(r.updated))) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What the repository pages share: its name, how to clone it, its refs and the one shown.
pub struct RepoHead {
    pub name: String,
    pub clone_url: String,
    pub branches: Vec<String>,
    pub tags: Vec<String>,
    /// The branch, tag or commit shown.
    pub rev: String,
}

#[derive(PartialEq, Eq)]
pub enum Kind {
    Folder,
    File,
    Link,
    Submodule,
}

pub struct TreeEntry {
    pub name: String,
    pub path: String,
    pub kind: Kind,
}

fn head(h: &RepoHead, tab: &str) -> Markup {
    let base = format!("{BASE}/repositories/{}", enc(&h.name));
    let helper = "git config --global credential.helper '!aws codecommit credential-helper $@' && git config --global credential.UseHttpPath true";
    html! {
        nav aria-label="Breadcrumb" class="crumbs" { a href={(BASE) "/repositories"} { "Repositories" } " / " strong { (h.name) } }
        div class="clone" {
            label for="clone-url" { "Clone (HTTPS)" }
            input id="clone-url" readonly value=(h.clone_url);
            button type="button" class="copy" data-copy="clone-url" { "Copy" }
            details {
                summary { "Credential helper" }
                input id="helper" readonly value=(helper);
                button type="button" class="copy" data-copy="helper" { "Copy" }
            }
        }
        form method="get" action={(base) "/tree"} class="refpick" {
            label for="rev" { "Branch, tag or commit" }
            input id="rev" name="rev" list="refs" value=(h.rev);
            datalist id="refs" {
                @for b in &h.branches { option value=(b) { "branch" } }
                @for t in &h.tags { option value=(t) { "tag" } }
            }
            button type="submit" { "Show" }
        }
        nav aria-label="Repository" class="tabs" {
            a href={(base) "/tree?rev=" (enc(&h.rev))} aria-current=[(tab == "code").then_some("page")] { "Code" }
            a href={(base) "/commits?rev=" (enc(&h.rev))} aria-current=[(tab == "commits").then_some("page")] { "Commits" }
            a href={(base) "/refs"} aria-current=[(tab == "refs").then_some("page")] { "Branches and tags" }
        }
    }
}

fn path_crumbs(h: &RepoHead, path: &str) -> Markup {
    let base = format!("{BASE}/repositories/{}", enc(&h.name));
    // Each part with the path up to it.
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let prefixes: Vec<(String, &str)> = (0..parts.len())
        .map(|i| (parts[..=i].join("/"), parts[i]))
        .collect();
    html! {
        p class="path" {
            a href={(base) "/tree?rev=" (enc(&h.rev))} { (h.name) }
            @for (upto, part) in &prefixes {
                " / "
                a href={(base) "/tree?rev=" (enc(&h.rev)) "&path=" (enc(upto))} { (part) }
            }
        }
    }
}

pub fn tree(viewer: &Viewer, h: &RepoHead, path: &str, entries: &[TreeEntry]) -> String {
    let base = format!("{BASE}/repositories/{}", enc(&h.name));
    page(
        &h.name,
        Some(viewer),
        Section::Repositories,
        None,
        html! {
            (head(h, "code"))
            (path_crumbs(h, path))
            @if entries.is_empty() {
                p class="muted" { "Nothing here yet." }
            } @else {
                table class="tree" {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Kind" } } }
                    tbody {
                        @for e in entries {
                            tr {
                                td {
                                    @match e.kind {
                                        Kind::Folder => a href={(base) "/tree?rev=" (enc(&h.rev)) "&path=" (enc(&e.path))} { (e.name) "/" },
                                        Kind::Submodule => span { (e.name) },
                                        _ => a href={(base) "/blob?rev=" (enc(&h.rev)) "&path=" (enc(&e.path))} { (e.name) },
                                    }
                                }
                                td class="muted" {
                                    (match e.kind { Kind::Folder => "folder", Kind::File => "file", Kind::Link => "symbolic link", Kind::Submodule => "submodule" })
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// A file: its text with line numbers, or (binary) its size and a download link.
pub fn blob(viewer: &Viewer, h: &RepoHead, path: &str, text: Option<&str>, size: u64) -> String {
    let raw = format!(
        "{BASE}/repositories/{}/raw?rev={}&path={}",
        enc(&h.name),
        enc(&h.rev),
        enc(path)
    );
    let lang = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    page(
        path,
        Some(viewer),
        Section::Repositories,
        None,
        html! {
            (head(h, "code"))
            (path_crumbs(h, path))
            p { (size) " bytes · " a href=(raw) download { "Download" } }
            @match text {
                Some(t) => {
                    table class={"code lang-" (lang)} {
                        tbody {
                            @for (i, line) in crate::highlight::lines(path, t).into_iter().enumerate() {
                                tr id={"L" (i + 1)} {
                                    td class="ln" { a href={"#L" (i + 1)} { (i + 1) } }
                                    td class="src" { code { (line) } }
                                }
                            }
                        }
                    }
                }
                None => p class="muted" { "This is a binary file; download it to see it." },
            }
        },
    )
}

pub struct CommitRow {
    pub id: String,
    pub subject: String,
    pub author: String,
    pub date: f64,
}

pub fn commits(
    viewer: &Viewer,
    h: &RepoHead,
    rows: &[CommitRow],
    page_no: usize,
    more: bool,
) -> String {
    let base = format!("{BASE}/repositories/{}", enc(&h.name));
    page(
        &format!("Commits · {}", h.name),
        Some(viewer),
        Section::Repositories,
        None,
        html! {
            (head(h, "commits"))
            ol class="commits" {
                @for c in rows {
                    li {
                        a href={(base) "/commit/" (c.id)} class="sha" { (c.id[..c.id.len().min(8)]) }
                        " " span class="subject" { (c.subject) }
                        div class="muted" { (c.author) " · " (time(Some(c.date))) }
                    }
                }
            }
            nav class="pager" aria-label="Pages" {
                @if page_no > 1 { a href={(base) "/commits?rev=" (enc(&h.rev)) "&page=" (page_no - 1)} { "Newer" } }
                @if more { a href={(base) "/commits?rev=" (enc(&h.rev)) "&page=" (page_no + 1)} { "Older" } }
            }
        },
    )
}

pub struct CommitView {
    pub id: String,
    pub parents: Vec<String>,
    pub message: String,
    pub author: String,
    pub date: f64,
    /// The unified diff against its first parent.
    pub patch: String,
    pub truncated: bool,
}

pub fn commit(viewer: &Viewer, h: &RepoHead, c: &CommitView) -> String {
    let base = format!("{BASE}/repositories/{}", enc(&h.name));
    page(
        &format!("Commit {}", &c.id[..c.id.len().min(8)]),
        Some(viewer),
        Section::Repositories,
        None,
        html! {
            (head(h, "commits"))
            h1 class="sha" { "Commit " (c.id) }
            pre class="message" { (c.message) }
            p class="muted" { (c.author) " · " (time(Some(c.date))) }
            p { "Parents: " @for p in &c.parents { a href={(base) "/commit/" (p)} class="sha" { (p[..p.len().min(8)]) } " " } }
            pre class="diff" {
                @for line in c.patch.lines() {
                    @let class = if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ") { "meta" }
                        else if line.starts_with('+') { "add" }
                        else if line.starts_with('-') { "del" }
                        else if line.starts_with("@@") { "hunk" } else { "" };
                    span class=(class) { (line) } "\n"
                }
            }
            @if c.truncated { p class="muted" { "The diff is too long to show whole." } }
        },
    )
}

pub fn refs(
    viewer: &Viewer,
    h: &RepoHead,
    branches: &[(String, String)],
    tags: &[(String, String)],
) -> String {
    let base = format!("{BASE}/repositories/{}", enc(&h.name));
    page(
        &format!("Branches · {}", h.name),
        Some(viewer),
        Section::Repositories,
        None,
        html! {
            (head(h, "refs"))
            @for (title, list) in [("Branches", branches), ("Tags", tags)] {
                h2 { (title) }
                @if list.is_empty() { p class="muted" { "None." } }
                ul {
                    @for (name, commit) in list {
                        li { a href={(base) "/tree?rev=" (enc(name))} { (name) } " " a class="sha" href={(base) "/commit/" (commit)} { (commit[..commit.len().min(8)]) } }
                    }
                }
            }
        },
    )
}
