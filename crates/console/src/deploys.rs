//! Deployment pages: applications, an application's groups and deployments, and a
//! deployment with its hosts by batch, each lifecycle event's status and script output.

use crate::{badge, enc, page, time, Section, Viewer, BASE};
use maud::html;

pub fn applications(viewer: &Viewer, apps: &[String]) -> String {
    page(
        "Deployments",
        Some(viewer),
        Section::Deployments,
        None,
        html! {
            h1 { "Applications" }
            @if apps.is_empty() { p class="muted" { "No CodeDeploy applications yet." } }
            ul {
                @for a in apps { li { a href={(BASE) "/deployments/" (enc(a))} { (a) } } }
            }
        },
    )
}

pub struct DeploymentRow {
    pub id: String,
    pub group: String,
    pub status: String,
    pub created: Option<f64>,
    pub creator: Option<String>,
}

pub fn application(
    viewer: &Viewer,
    app: &str,
    groups: &[String],
    deployments: &[DeploymentRow],
) -> String {
    page(
        app,
        Some(viewer),
        Section::Deployments,
        None,
        html! {
            nav aria-label="Breadcrumb" class="crumbs" { a href={(BASE) "/deployments"} { "Deployments" } " / " strong { (app) } }
            h1 { (app) }
            h2 { "Deployment groups" }
            ul { @for g in groups { li { (g) } } }
            h2 { "Deployments" }
            table {
                thead { tr { th scope="col" { "Deployment" } th scope="col" { "Group" } th scope="col" { "Status" } th scope="col" { "Creator" } th scope="col" { "Created" } } }
                tbody {
                    @for d in deployments {
                        tr {
                            td { a href={(BASE) "/deployments/" (enc(app)) "/" (enc(&d.id))} { (d.id) } }
                            td { (d.group) }
                            td { (badge(&d.status)) }
                            td { (d.creator.as_deref().unwrap_or("")) }
                            td { (time(d.created)) }
                        }
                    }
                }
            }
        },
    )
}

pub struct EventRow {
    pub name: String,
    pub status: String,
    pub start: Option<f64>,
    pub end: Option<f64>,
    pub script: Option<String>,
    pub message: Option<String>,
    pub log: Option<String>,
}

pub struct HostRow {
    pub instance: String,
    pub status: String,
    pub batch: u32,
    pub label: Option<String>,
    pub events: Vec<EventRow>,
}

pub struct DeploymentView {
    pub id: String,
    pub app: String,
    pub group: String,
    pub status: String,
    pub done: bool,
    pub error: Option<String>,
    pub rollback_of: Option<String>,
    pub rolled_back_by: Option<String>,
    pub hosts: Vec<HostRow>,
    pub can_stop: bool,
    /// The event outbox's position when the data was read (the live stream starts there).
    pub live_from: i64,
}

pub fn deployment(viewer: &Viewer, d: &DeploymentView) -> String {
    let base = format!("{BASE}/deployments/{}", enc(&d.app));
    page(
        &d.id,
        Some(viewer),
        Section::Deployments,
        Some(&d.status),
        html! {
            nav aria-label="Breadcrumb" class="crumbs" {
                a href={(BASE) "/deployments"} { "Deployments" } " / "
                a href=(base) { (d.app) } " / " strong { (d.id) }
            }
            div hx-ext="sse" sse-connect={(base) "/" (enc(&d.id)) "/live?after=" (d.live_from)} {
                div id="live" sse-swap="live" hx-swap="innerHTML" { (live(viewer, d)) }
            }
        },
    )
}

/// What changes as the deployment runs (sent again by the page's stream after each change).
pub fn live(viewer: &Viewer, d: &DeploymentView) -> maud::Markup {
    let base = format!("{BASE}/deployments/{}", enc(&d.app));
    let mut batches: Vec<u32> = d.hosts.iter().map(|h| h.batch).collect();
    batches.sort_unstable();
    batches.dedup();
    html! {
            span hidden data-status=(d.status) {}
            div class="toolbar" {
                h1 { (d.id) " " (badge(&d.status)) }
                @if d.can_stop && !d.done {
                    form method="post" action={(base) "/" (enc(&d.id)) "/stop"} class="inline" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        label { input type="checkbox" name="rollback" value="true"; " and roll back" }
                        button type="submit" class="danger" { "Stop deployment" }
                    }
                }
            }
            p { "Group " strong { (d.group) } }
            @if let Some(e) = &d.error { p class="error" role="alert" { (e) } }
            @if let Some(r) = &d.rollback_of { p { "Rolls back " a href={(base) "/" (enc(r))} { (r) } } }
            @if let Some(r) = &d.rolled_back_by { p { "Rolled back by " a href={(base) "/" (enc(r))} { (r) } } }
            @for b in batches {
                section class="batch" {
                    h2 { @if b == 0 { "Not started" } @else { "Batch " (b) } }
                    @for h in d.hosts.iter().filter(|h| h.batch == b) {
                        details class="host" open[h.status == "Failed"] {
                            summary {
                                strong { (h.instance) } " " (badge(&h.status))
                                @if let Some(l) = &h.label { " " span class="muted" { (l) } }
                            }
                            table class="events" {
                                thead { tr { th scope="col" { "Lifecycle event" } th scope="col" { "Status" } th scope="col" { "Started" } th scope="col" { "Ended" } } }
                                tbody {
                                    @for e in &h.events {
                                        tr {
                                            td { (e.name) }
                                            td { (badge(&e.status)) }
                                            td { (time(e.start)) }
                                            td { (time(e.end)) }
                                        }
                                        @if e.message.as_deref().is_some_and(|m| !m.is_empty()) || e.log.as_deref().is_some_and(|l| !l.is_empty()) {
                                            tr class="output" {
                                                td colspan="4" {
                                                    @if let Some(s) = e.script.as_deref().filter(|s| !s.is_empty()) { p { "Script " code { (s) } } }
                                                    @if let Some(m) = &e.message { p { (m) } }
                                                    @if let Some(l) = e.log.as_deref().filter(|l| !l.is_empty()) { pre class="log" { (l) } }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
    }
}
