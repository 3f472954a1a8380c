//! Pipeline pages: the list with each pipeline's latest status, and a pipeline drawn as a
//! graph of stages (parallel actions side by side) with its buttons, its execution history
//! and its JSON. The graph is also a fragment the page swaps in when the pipeline changes.

use crate::{badge, button_form, enc, page, time, Section, Viewer, BASE};
use maud::{html, Markup};

pub struct PipelineRow {
    pub name: String,
    pub latest: Option<String>,
    pub updated: Option<f64>,
}

pub fn list(viewer: &Viewer, rows: &[PipelineRow]) -> String {
    page(
        "Pipelines",
        Some(viewer),
        Section::Pipelines,
        None,
        html! {
            h1 { "Pipelines" }
            @if rows.is_empty() {
                p class="muted" { "No pipelines yet. Create one with " code { "aws codepipeline create-pipeline --cli-input-json file://pipeline.json" } "." }
            } @else {
                table {
                    thead { tr { th scope="col" { "Name" } th scope="col" { "Latest execution" } th scope="col" { "Updated" } } }
                    tbody {
                        @for r in rows {
                            tr {
                                td { a href={(BASE) "/pipelines/" (enc(&r.name))} { (r.name) } }
                                td { @match &r.latest { Some(s) => (badge(s)), None => span class="muted" { "never run" } } }
                                td { (time(r.updated)) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What the viewer may do on a pipeline page (buttons not allowed are not drawn).
#[derive(Default, Clone, Copy)]
pub struct Can {
    pub release: bool,
    pub stop: bool,
    pub retry: bool,
    pub approve: bool,
    pub transitions: bool,
    pub edit: bool,
}

pub struct ActionView {
    pub name: String,
    pub run_order: i32,
    pub provider: String,
    pub status: Option<String>,
    pub summary: Option<String>,
    pub revision: Option<String>,
    pub last_change: Option<f64>,
    pub error: Option<String>,
    /// Where its details are (a build's or deployment's page, or an external URL).
    pub link: Option<String>,
    /// A manual approval waiting: its token.
    pub approval_token: Option<String>,
}

pub struct StageView {
    pub name: String,
    pub status: Option<String>,
    pub execution_id: Option<String>,
    /// Its inbound transition is disabled: why.
    pub disabled: Option<String>,
    pub actions: Vec<ActionView>,
}

pub struct ExecutionRow {
    pub id: String,
    pub status: String,
    pub trigger: String,
    pub start: Option<f64>,
    pub updated: Option<f64>,
    pub revision: Option<String>,
}

pub struct PipelineView {
    pub name: String,
    pub stages: Vec<StageView>,
    pub latest: Option<String>,
    pub latest_id: Option<String>,
    pub executions: Vec<ExecutionRow>,
    /// The status filter applied to the history.
    pub filter: Option<String>,
    pub json: String,
    /// What UpdatePipeline said of the JSON last posted.
    pub json_error: Option<String>,
    pub can: Can,
    /// The event outbox's position when the page's data was read: its live stream starts
    /// there.
    pub live_from: i64,
}

/// The graph of stages and actions.
pub fn graph(viewer: &Viewer, p: &PipelineView) -> Markup {
    html! {
        section id="graph" class="graph" aria-label="Stages" aria-live="polite" {
            (graph_content(viewer, p))
        }
    }
}

/// What the graph section holds.
fn graph_content(viewer: &Viewer, p: &PipelineView) -> Markup {
    let base = format!("{BASE}/pipelines/{}", enc(&p.name));
    html! {
            span hidden data-status=[p.latest.as_deref()] {}
            @for (i, s) in p.stages.iter().enumerate() {
                @if i > 0 {
                    div class="transition" {
                        @match &s.disabled {
                            Some(reason) => {
                                span class="badge bad" { "Transition disabled" }
                                span class="muted" { (reason) }
                                @if p.can.transitions {
                                    (button_form(viewer, &format!("{base}/transitions"), "Enable transition", "", &[("stage", &s.name), ("enable", "true")]))
                                }
                            }
                            None => {
                                span aria-hidden="true" { "↓" }
                                @if p.can.transitions {
                                    details class="disable" {
                                        summary { "Disable transition" }
                                        form method="post" action={(base) "/transitions"} {
                                            input type="hidden" name="csrf" value=(viewer.csrf);
                                            input type="hidden" name="stage" value=(s.name);
                                            label for={"reason-" (i)} { "Reason" }
                                            input id={"reason-" (i)} name="reason" required maxlength="300";
                                            button type="submit" { "Disable" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                article class={"stage " (s.status.as_deref().map(crate::status_class).unwrap_or("idle"))} data-stage=(s.name) {
                    header {
                        h2 { (s.name) }
                        @if let Some(st) = &s.status { (badge(st)) }
                    }
                    div class="orders" {
                        @for group in run_orders(&s.actions) {
                            div class="order" {
                                @for a in group {
                                    (action(viewer, p, s, a))
                                }
                            }
                        }
                    }
                    @if p.can.retry && s.status.as_deref() == Some("Failed") {
                        @if let Some(ex) = &s.execution_id {
                            div class="retry" {
                                (button_form(viewer, &format!("{base}/retry"), "Retry failed actions", "primary", &[("stage", &s.name), ("execution", ex), ("mode", "FAILED_ACTIONS")]))
                                (button_form(viewer, &format!("{base}/retry"), "Retry all actions", "", &[("stage", &s.name), ("execution", ex), ("mode", "ALL_ACTIONS")]))
                            }
                        }
                    }
                }
            }
    }
}

fn run_orders(actions: &[ActionView]) -> Vec<Vec<&ActionView>> {
    let mut orders: Vec<i32> = actions.iter().map(|a| a.run_order).collect();
    orders.sort_unstable();
    orders.dedup();
    orders
        .into_iter()
        .map(|o| actions.iter().filter(|a| a.run_order == o).collect())
        .collect()
}

fn action(viewer: &Viewer, p: &PipelineView, s: &StageView, a: &ActionView) -> Markup {
    let base = format!("{BASE}/pipelines/{}", enc(&p.name));
    html! {
        div class={"action " (a.status.as_deref().map(crate::status_class).unwrap_or("idle"))} data-action=(a.name) {
            h3 {
                @match &a.link { Some(l) => a href=(l) { (a.name) }, None => (a.name) }
            }
            p class="provider muted" { (a.provider) }
            @if let Some(st) = &a.status { (badge(st)) }
            @if let Some(r) = &a.revision { p class="sha" title="Revision" { (r[..r.len().min(12)]) } }
            @if let Some(m) = &a.summary { p class="summary" { (m) } }
            @if let Some(e) = &a.error { p class="error" { (e) } }
            @if let Some(t) = &a.last_change { p class="muted" { (time(Some(*t))) } }
            @if let (true, Some(token)) = (p.can.approve, &a.approval_token) {
                form method="post" action={(base) "/approval"} class="approval" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    input type="hidden" name="stage" value=(s.name);
                    input type="hidden" name="action" value=(a.name);
                    input type="hidden" name="token" value=(token);
                    label for={"comment-" (a.name)} { "Comment" }
                    input id={"comment-" (a.name)} name="summary" maxlength="512";
                    button type="submit" name="status" value="Approved" class="primary" { "Approve" }
                    button type="submit" name="status" value="Rejected" class="danger" { "Reject" }
                }
            }
        }
    }
}

/// What changes as the pipeline runs: the buttons, the graph and the history (the page's
/// stream sends it again after each change; the JSON editor stays as it is).
pub fn live(viewer: &Viewer, p: &PipelineView) -> Markup {
    let base = format!("{BASE}/pipelines/{}", enc(&p.name));
    let filters = ["InProgress", "Succeeded", "Failed", "Stopped", "Superseded"];
    html! {
        div class="toolbar" {
            h1 { (p.name) }
            @if p.can.release { (button_form(viewer, &format!("{base}/release"), "Release change", "primary", &[])) }
            @if let (true, Some(id), Some("InProgress")) = (p.can.stop, &p.latest_id, p.latest.as_deref()) {
                form method="post" action={(base) "/stop"} class="inline" {
                    input type="hidden" name="csrf" value=(viewer.csrf);
                    input type="hidden" name="execution" value=(id);
                    label { input type="checkbox" name="abandon" value="true"; " abandon in-flight actions" }
                    button type="submit" class="danger" { "Stop execution" }
                }
            }
        }
        (graph(viewer, p))
        h2 id="history" { "Execution history" }
        nav class="filters" aria-label="Filter by status" {
            a href={(base) "#history"} aria-current=[p.filter.is_none().then_some("page")] { "All" }
            @for f in filters {
                a href={(base) "?status=" (f) "#history"} aria-current=[(p.filter.as_deref() == Some(f)).then_some("page")] { (f) }
            }
        }
        table class="history" {
            thead { tr { th scope="col" { "Execution" } th scope="col" { "Status" } th scope="col" { "Trigger" } th scope="col" { "Revision" } th scope="col" { "Started" } th scope="col" { "Updated" } } }
            tbody {
                @for e in &p.executions {
                    tr {
                        td class="sha" { (e.id) }
                        td { (badge(&e.status)) }
                        td { (e.trigger) }
                        td class="sha" { (e.revision.as_deref().map(|r| &r[..r.len().min(12)]).unwrap_or("—")) }
                        td { (time(e.start)) }
                        td { (time(e.updated)) }
                    }
                }
            }
        }
    }
}

pub fn live_fragment(viewer: &Viewer, p: &PipelineView) -> String {
    live(viewer, p).into_string()
}

pub fn pipeline(viewer: &Viewer, p: &PipelineView) -> String {
    let base = format!("{BASE}/pipelines/{}", enc(&p.name));
    page(
        &p.name,
        Some(viewer),
        Section::Pipelines,
        p.latest.as_deref(),
        html! {
            nav aria-label="Breadcrumb" class="crumbs" { a href={(BASE) "/pipelines"} { "Pipelines" } " / " strong { (p.name) } }
            div hx-ext="sse" sse-connect={(base) "/live?after=" (p.live_from) (p.filter.as_deref().map(|f| format!("&status={}", enc(f))).unwrap_or_default())} {
                div id="live" sse-swap="live" hx-swap="innerHTML" { (live(viewer, p)) }
            }
            h2 { "Pipeline JSON" }
            @if let Some(e) = &p.json_error { p class="error" role="alert" id="json-error" { (e) } }
            form method="post" action={(base) "/json"} class="json" {
                input type="hidden" name="csrf" value=(viewer.csrf);
                label for="pipeline-json" { "The pipeline's declaration (UpdatePipeline)" }
                textarea id="pipeline-json" name="json" rows="24" spellcheck="false" readonly[!p.can.edit] { (p.json) }
                @if p.can.edit { button type="submit" { "Save" } }
            }
        },
    )
}
