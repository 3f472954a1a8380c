//! Build pages: the projects, a project's history, and a build with its phases, its live
//! log (lines streamed as they are written), its reports and artifacts.

use crate::{ansi, badge, button_form, duration, enc, page, time, Section, Viewer, BASE};
use maud::{html, Markup};

pub struct ProjectRow {
    pub name: String,
    pub description: Option<String>,
    pub latest: Option<String>,
}

pub fn projects(viewer: &Viewer, rows: &[ProjectRow]) -> String {
    page(
        "Builds",
        Some(viewer),
        Section::Builds,
        None,
        html! {
            h1 { "Build projects" }
            @if rows.is_empty() { p class="muted" { "No build projects yet." } }
            @else {
                table {
                    thead { tr { th scope="col" { "Project" } th scope="col" { "Description" } th scope="col" { "Latest build" } } }
                    tbody {
                        @for r in rows {
                            tr {
                                td { a href={(BASE) "/builds/" (enc(&r.name))} { (r.name) } }
                                td { (r.description.as_deref().unwrap_or("")) }
                                td { @match &r.latest { Some(s) => (badge(s)), None => span class="muted" { "none" } } }
                            }
                        }
                    }
                }
            }
        },
    )
}

pub struct BuildRow {
    pub id: String,
    pub number: Option<i64>,
    pub status: String,
    pub initiator: Option<String>,
    pub start: Option<f64>,
    pub seconds: Option<f64>,
    pub source_version: Option<String>,
}

fn build_link(id: &str) -> String {
    let (project, uuid) = id.rsplit_once(':').unwrap_or(("", id));
    format!("{BASE}/builds/{}/{}", enc(project), enc(uuid))
}

pub fn history(viewer: &Viewer, project: &str, rows: &[BuildRow], can_start: bool) -> String {
    page(
        project,
        Some(viewer),
        Section::Builds,
        rows.first().map(|r| r.status.as_str()),
        html! {
            nav aria-label="Breadcrumb" class="crumbs" { a href={(BASE) "/builds"} { "Builds" } " / " strong { (project) } }
            div class="toolbar" {
                h1 { (project) }
                @if can_start { (button_form(viewer, &format!("{BASE}/builds/{}/start", enc(project)), "Start build", "primary", &[])) }
            }
            table {
                thead { tr { th scope="col" { "Build" } th scope="col" { "Status" } th scope="col" { "Source version" } th scope="col" { "Initiator" } th scope="col" { "Started" } th scope="col" { "Duration" } } }
                tbody {
                    @for r in rows {
                        tr {
                            td { a href=(build_link(&r.id)) { "#" (r.number.unwrap_or(0)) } }
                            td { (badge(&r.status)) }
                            td class="sha" { (r.source_version.as_deref().unwrap_or("—")) }
                            td { (r.initiator.as_deref().unwrap_or("")) }
                            td { (time(r.start)) }
                            td { (duration(r.seconds)) }
                        }
                    }
                }
            }
        },
    )
}

pub struct PhaseRow {
    pub name: String,
    pub status: Option<String>,
    pub seconds: Option<f64>,
    pub message: Option<String>,
}

pub struct ReportRow {
    pub name: String,
    pub kind: String,
    pub status: String,
    pub summary: String,
}

pub struct BuildView {
    pub id: String,
    pub project: String,
    pub number: Option<i64>,
    pub status: String,
    pub done: bool,
    pub phases: Vec<PhaseRow>,
    /// The log's lines so far (the newest ones when it is long).
    pub log: Vec<String>,
    /// The position to stream the rest from.
    pub log_next: String,
    pub reports: Vec<ReportRow>,
    /// Artifacts: (name, link).
    pub artifacts: Vec<(String, String)>,
    pub can_stop: bool,
    pub can_start: bool,
    /// The event outbox's position when the data was read (the live stream starts there).
    pub live_from: i64,
}

/// A run of log lines, as the page shows them (also what the live stream sends).
pub fn log_lines(lines: &[String]) -> Markup {
    html! { @for l in lines { span class="line" { (ansi(l)) "\n" } } }
}

pub fn build(viewer: &Viewer, b: &BuildView) -> String {
    let link = build_link(&b.id);
    page(
        &format!("{} #{}", b.project, b.number.unwrap_or(0)),
        Some(viewer),
        Section::Builds,
        Some(&b.status),
        html! {
            nav aria-label="Breadcrumb" class="crumbs" {
                a href={(BASE) "/builds"} { "Builds" } " / "
                a href={(BASE) "/builds/" (enc(&b.project))} { (b.project) } " / "
                strong { "#" (b.number.unwrap_or(0)) }
            }
            div hx-ext="sse" sse-connect={(link) "/live?after=" (b.live_from)} {
                div id="live" sse-swap="live" hx-swap="innerHTML" { (live(viewer, b)) }
            }
            h2 { "Log" }
            div class="logbar" {
                label for="log-search" { "Search the log" }
                input id="log-search" type="search" data-filter="log";
            }
            @if b.done {
                pre id="log" class="log" { (log_lines(&b.log)) }
            } @else {
                div hx-ext="sse" sse-connect={(link) "/log/stream?from=" (enc(&b.log_next))} sse-close="end" {
                    pre id="log" class="log" sse-swap="lines" hx-swap="beforeend" { (log_lines(&b.log)) }
                }
            }
        },
    )
}

/// The build's status, buttons, phases, reports and artifacts (sent again by the page's
/// stream after each change).
pub fn live(viewer: &Viewer, b: &BuildView) -> Markup {
    let link = build_link(&b.id);
    html! {
            span hidden data-status=(b.status) {}
            div class="toolbar" {
                h1 { (b.project) " #" (b.number.unwrap_or(0)) " " span id="build-status" { (badge(&b.status)) } }
                @if b.can_stop && !b.done { (button_form(viewer, &format!("{link}/stop"), "Stop build", "danger", &[])) }
                @if b.can_start { (button_form(viewer, &format!("{BASE}/builds/{}/start", enc(&b.project)), "Start another", "", &[])) }
            }
            h2 { "Phases" }
            table class="phases" {
                thead { tr { th scope="col" { "Phase" } th scope="col" { "Status" } th scope="col" { "Duration" } th scope="col" { "Message" } } }
                tbody {
                    @for p in &b.phases {
                        tr {
                            td { (p.name) }
                            td { @if let Some(s) = &p.status { (badge(s)) } }
                            td { (duration(p.seconds)) }
                            td { (p.message.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if !b.reports.is_empty() {
                h2 { "Reports" }
                table {
                    thead { tr { th scope="col" { "Report" } th scope="col" { "Type" } th scope="col" { "Status" } th scope="col" { "Summary" } } }
                    tbody {
                        @for r in &b.reports {
                            tr { td { (r.name) } td { (r.kind) } td { (badge(&r.status)) } td { (r.summary) } }
                        }
                    }
                }
            }
            @if !b.artifacts.is_empty() {
                h2 { "Artifacts" }
                ul { @for (name, href) in &b.artifacts { li { a href=(href) download { (name) } } } }
            }
    }
}
