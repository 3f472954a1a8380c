//! The web console's pages: server-rendered HTML (maud templates, checked at compile time and
//! escaping every value they are given), the stylesheet, the small script that enhances
//! them, and the vendored htmx that swaps live fragments. It knows nothing of HTTP, IAM or
//! the services: handlers in `api` gather plain view models and call these functions.

pub mod builds;
pub mod deploys;
pub mod highlight;
pub mod pipelines;
pub mod repos;

use maud::{html, Markup, PreEscaped, DOCTYPE};

/// Where the console is served.
pub const BASE: &str = "/-/console";

/// A static file of the console: (content type, bytes).
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    Some(match name {
        "console.css" => (
            "text/css; charset=utf-8",
            include_bytes!("../assets/console.css"),
        ),
        "console.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/console.js"),
        ),
        "htmx.min.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/vendor/htmx-2.0.11.min.js"),
        ),
        "htmx-sse.js" => (
            "text/javascript; charset=utf-8",
            include_bytes!("../assets/vendor/htmx-ext-sse-2.2.4.js"),
        ),
        _ => return None,
    })
}

/// The favicon for a status: a filled circle in the status's colour.
pub fn favicon(status: &str) -> String {
    let colour = match status_class(status) {
        "ok" => "#1a7f37",
        "bad" => "#cf222e",
        "run" => "#0969da",
        "wait" => "#9a6700",
        _ => "#57606a",
    };
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><circle cx=\"8\" cy=\"8\" r=\"7\" fill=\"{colour}\"/></svg>"
    )
}

/// The class a status is drawn with: ok, bad, run, wait or idle.
pub fn status_class(status: &str) -> &'static str {
    match status {
        "Succeeded" | "SUCCEEDED" | "Success" | "Ready" => "ok",
        "Failed" | "FAILED" | "FAULT" | "TIMED_OUT" | "Stopped" | "STOPPED" | "Abandoned"
        | "Rejected" => "bad",
        "InProgress" | "IN_PROGRESS" | "Stopping" | "STOPPING" | "Created" | "Queued"
        | "Baking" => "run",
        "Pending" | "PENDING" | "Waiting" => "wait",
        _ => "idle",
    }
}

/// A status as a labelled badge (the word is always shown: colour is never the only cue).
pub fn badge(status: &str) -> Markup {
    html! { span class={"badge " (status_class(status))} { (status) } }
}

/// A time (epoch seconds) as a `<time>` element: UTC in the page, the reader's zone once the
/// script runs.
pub fn time(epoch: Option<f64>) -> Markup {
    match epoch {
        Some(t) if t > 0.0 => {
            let iso = iso8601(t);
            html! { time datetime=(iso) { (iso.replace('T', " ").trim_end_matches('Z')) " UTC" } }
        }
        _ => html! { span class="muted" { "—" } },
    }
}

/// A duration in seconds, as people read it.
pub fn duration(secs: Option<f64>) -> String {
    match secs {
        Some(s) if s >= 0.0 => {
            let s = s.round() as u64;
            match s {
                0..=59 => format!("{s} s"),
                60..=3599 => format!("{} min {} s", s / 60, s % 60),
                _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
            }
        }
        _ => "—".into(),
    }
}

fn iso8601(epoch: f64) -> String {
    let secs = epoch.floor() as i64;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Who is signed in, and what the page's forms must carry.
pub struct Viewer<'a> {
    /// The signed-in identity (an IAM user name, or "root").
    pub name: &'a str,
    /// The session's CSRF token, sent back by every form.
    pub csrf: &'a str,
}

/// The section of the console a page belongs to (highlighted in the navigation).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Repositories,
    Pipelines,
    Builds,
    Deployments,
    None,
}

/// A page of the console around `body`. `favicon`: the status the tab's icon shows.
pub fn page(
    title: &str,
    viewer: Option<&Viewer>,
    section: Section,
    favicon_status: Option<&str>,
    body: Markup,
) -> String {
    let nav = [
        (Section::Repositories, "Repositories", "repositories"),
        (Section::Pipelines, "Pipelines", "pipelines"),
        (Section::Builds, "Builds", "builds"),
        (Section::Deployments, "Deployments", "deployments"),
    ];
    let icon = format!("{BASE}/favicon/{}.svg", favicon_status.unwrap_or("none"));
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true,"attributesToSettle":["class","width","height"]}"#;
                title { (title) " · Slipway" }
                link rel="icon" type="image/svg+xml" href=(icon) id="favicon";
                link rel="stylesheet" href={(BASE) "/assets/console.css"};
                script src={(BASE) "/assets/htmx.min.js"} defer {}
                script src={(BASE) "/assets/htmx-sse.js"} defer {}
                script src={(BASE) "/assets/console.js"} defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    a class="brand" href={(BASE) "/"} { "Slipway" }
                    @if let Some(v) = viewer {
                        nav aria-label="Sections" {
                            ul {
                                @for (s, label, path) in nav {
                                    li {
                                        a href={(BASE) "/" (path)} aria-current=[(s == section).then_some("page")] { (label) }
                                    }
                                }
                            }
                        }
                        form class="signout" method="post" action={(BASE) "/signout"} {
                            input type="hidden" name="csrf" value=(v.csrf);
                            span class="who" { "Signed in as " strong { (v.name) } }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
    .into_string()
}

/// The sign-in page; `error` is shown above the form.
pub fn signin(error: Option<&str>, next: &str, user: &str) -> String {
    page(
        "Sign in",
        None,
        Section::None,
        None,
        html! {
            section class="signin" {
                h1 { "Sign in to Slipway" }
                @if let Some(e) = error {
                    p class="error" role="alert" { (e) }
                }
                form method="post" action={(BASE) "/signin"} {
                    input type="hidden" name="next" value=(next);
                    fieldset {
                        legend { "With your IAM user's password" }
                        label for="user" { "User name" }
                        input id="user" name="user" autocomplete="username" value=(user);
                        label for="password" { "Password" }
                        input id="password" name="password" type="password" autocomplete="current-password";
                    }
                    fieldset {
                        legend { "Or with an access key" }
                        label for="access_key_id" { "Access key ID" }
                        input id="access_key_id" name="access_key_id" autocomplete="off";
                        label for="secret_access_key" { "Secret access key" }
                        input id="secret_access_key" name="secret_access_key" type="password" autocomplete="off";
                    }
                    button type="submit" class="primary" { "Sign in" }
                }
            }
        },
    )
}

/// The home page: where to go.
pub fn home(viewer: &Viewer, counts: &[(&str, &str, usize)]) -> String {
    page(
        "Home",
        Some(viewer),
        Section::None,
        None,
        html! {
            h1 { "Slipway" }
            ul class="cards" {
                @for (label, path, n) in counts {
                    li { a href={(BASE) "/" (path)} { strong { (n) } " " (label) } }
                }
            }
        },
    )
}

/// An error page (a refusal, something missing, bad input).
pub fn error(viewer: Option<&Viewer>, status: u16, code: &str, message: &str) -> String {
    let title = match status {
        403 => "Not allowed",
        404 => "Not found",
        400..=499 => "Cannot do that",
        _ => "Something went wrong",
    };
    page(
        title,
        viewer,
        Section::None,
        None,
        html! {
            h1 { (title) }
            p class="error" role="alert" { code { (code) } ": " (message) }
            p { a href={(BASE) "/"} { "Back to the console" } }
        },
    )
}

/// A form with one button that POSTs to `action` (with the CSRF token and `fields`).
pub fn button_form(
    viewer: &Viewer,
    action: &str,
    label: &str,
    class: &str,
    fields: &[(&str, &str)],
) -> Markup {
    html! {
        form method="post" action=(action) class="inline" {
            input type="hidden" name="csrf" value=(viewer.csrf);
            @for (k, v) in fields {
                input type="hidden" name=(k) value=(v);
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

/// Text with ANSI colour codes as HTML: colours become classes, every other byte escaped.
pub fn ansi(text: &str) -> Markup {
    let mut out = String::with_capacity(text.len() + 16);
    let mut open = false;
    let mut rest = text;
    while let Some(i) = rest.find('\u{1b}') {
        escape_into(&mut out, &rest[..i]);
        rest = &rest[i + 1..];
        let Some(body) = rest.strip_prefix('[') else {
            continue;
        };
        let end = body
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(body.len());
        let (params, after) = body.split_at(end);
        let cmd = after.chars().next();
        rest = after.get(1..).unwrap_or("");
        if cmd != Some('m') {
            continue;
        }
        if open {
            out.push_str("</span>");
            open = false;
        }
        let class: Vec<&str> = params
            .split(';')
            .filter_map(|p| match p {
                "1" => Some("b"),
                "30" | "90" => Some("c0"),
                "31" | "91" => Some("c1"),
                "32" | "92" => Some("c2"),
                "33" | "93" => Some("c3"),
                "34" | "94" => Some("c4"),
                "35" | "95" => Some("c5"),
                "36" | "96" => Some("c6"),
                "37" | "97" => Some("c7"),
                _ => None,
            })
            .collect();
        if !class.is_empty() {
            out.push_str("<span class=\"");
            out.push_str(&class.join(" "));
            out.push_str("\">");
            open = true;
        }
    }
    escape_into(&mut out, rest);
    if open {
        out.push_str("</span>");
    }
    PreEscaped(out)
}

/// `s` as HTML text or attribute value (the one escaping the console's hand-built HTML uses;
/// maud escapes alike).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    escape_into(&mut out, s);
    out
}

/// Appends `s` to `out`, escaped as [`escape`] does.
pub fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_escaped_everywhere() {
        let v = Viewer {
            name: "<script>alert(1)</script>",
            csrf: "\"><script>",
        };
        let html = home(&v, &[("<b>x</b>", "pipelines", 1)]);
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(!html.contains("\"><script>"));
        assert!(!html.contains("<b>x</b>"));
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    }

    #[test]
    fn ansi_colours_become_classes_and_the_rest_is_escaped() {
        let m = ansi("\u{1b}[1;31mERROR\u{1b}[0m <script>x</script>\u{1b}[2K");
        assert_eq!(
            m.into_string(),
            "<span class=\"b c1\">ERROR</span> &lt;script&gt;x&lt;/script&gt;"
        );
        // A lone escape or an unfinished sequence never panics.
        for s in ["\u{1b}", "\u{1b}[", "\u{1b}[31", "a\u{1b}[31mb"] {
            ansi(s);
        }
    }

    #[test]
    fn times_are_iso_utc() {
        assert_eq!(iso8601(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_796_687_184.7), "2026-12-07T23:46:24Z");
        assert_eq!(iso8601(951_782_400.0), "2000-02-29T00:00:00Z");
    }
}
