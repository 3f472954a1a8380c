//! Test and code-coverage report files read into CodeBuild's test cases and coverage lines:
//! JUnit, NUnit (2 and 3), TestNG, Visual Studio TRX and Cucumber JSON test results;
//! Cobertura, JaCoCo, Clover and SimpleCov coverage. Parsing never panics on bad input; a
//! file that is not what its format says is an error naming the file.

use crate::buildspec::ReportFormat;
use quick_xml::events::Event;
use serde_json::Value;

/// The most test cases a report keeps (AWS's limit); beyond it failures are kept first and
/// the report is marked truncated.
pub const MAX_TEST_CASES: usize = 500;
/// The longest test-case message kept.
const MAX_MESSAGE: usize = 5_000;
/// Elements nested deeper than this are refused (a hostile file cannot exhaust the stack).
const MAX_DEPTH: usize = 256;

/// One test case as DescribeTestCases returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestCase {
    pub suite: String,
    pub prefix: String,
    pub name: String,
    /// SUCCEEDED, FAILED, ERROR, SKIPPED or UNKNOWN.
    pub status: &'static str,
    pub duration_ns: i64,
    pub message: Option<String>,
    /// The report file it came from, relative to the source directory.
    pub raw_path: String,
}

/// The coverage of one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileCoverage {
    pub path: String,
    pub lines_covered: i64,
    pub lines_missed: i64,
    pub branches_covered: i64,
    pub branches_missed: i64,
}

/// What one report file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Tests(Vec<TestCase>),
    Coverage(Vec<FileCoverage>),
}

/// Reads `data` (the file at `raw_path`) as `format`.
pub fn parse(format: ReportFormat, data: &[u8], raw_path: &str) -> Result<Parsed, String> {
    let fail = |e: String| format!("{raw_path}: not a valid {} file: {e}", format.name());
    let xml = || Element::parse(data).map_err(fail);
    let json = || serde_json::from_slice::<Value>(data).map_err(|e| fail(e.to_string()));
    let path = raw_path.to_owned();
    Ok(match format {
        ReportFormat::JunitXml => Parsed::Tests(junit(&xml()?, &path)),
        ReportFormat::NunitXml => Parsed::Tests(nunit2(&xml()?, &path)),
        ReportFormat::Nunit3Xml => Parsed::Tests(nunit3(&xml()?, &path)),
        ReportFormat::TestngXml => Parsed::Tests(testng(&xml()?, &path)),
        ReportFormat::VisualStudioTrx => Parsed::Tests(trx(&xml()?, &path)),
        ReportFormat::CucumberJson => Parsed::Tests(cucumber(&json()?, &path)),
        ReportFormat::CoberturaXml => Parsed::Coverage(cobertura(&xml()?)),
        ReportFormat::JacocoXml => Parsed::Coverage(jacoco(&xml()?)),
        ReportFormat::CloverXml => Parsed::Coverage(clover(&xml()?)),
        ReportFormat::SimpleCov => Parsed::Coverage(simplecov(&json()?)),
    })
}

/// Keeps at most [`MAX_TEST_CASES`], failures and errors first; says whether any were cut.
pub fn truncate(cases: &mut Vec<TestCase>) -> bool {
    if cases.len() <= MAX_TEST_CASES {
        return false;
    }
    let rank = |c: &TestCase| match c.status {
        "FAILED" | "ERROR" => 0,
        _ => 1,
    };
    cases.sort_by_key(rank);
    cases.truncate(MAX_TEST_CASES);
    true
}

// ----- a small element tree over quick-xml -----

#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Element>,
    text: String,
}

impl Element {
    fn parse(data: &[u8]) -> Result<Element, String> {
        let mut reader = quick_xml::Reader::from_reader(data);
        let mut stack: Vec<Element> = vec![Element::default()];
        let mut buf = Vec::new();
        loop {
            let event = reader
                .read_event_into(&mut buf)
                .map_err(|e| format!("{e} at byte {}", reader.error_position()))?;
            match event {
                Event::Start(e) | Event::Empty(e) if stack.len() > MAX_DEPTH => {
                    let _ = e;
                    return Err("elements nested too deeply".into());
                }
                Event::Start(e) => stack.push(Element::open(&e)?),
                Event::Empty(e) => {
                    let el = Element::open(&e)?;
                    if let Some(top) = stack.last_mut() {
                        top.children.push(el);
                    }
                }
                Event::End(_) => {
                    let el = stack.pop().ok_or("unbalanced end tag")?;
                    stack
                        .last_mut()
                        .ok_or("unbalanced end tag")?
                        .children
                        .push(el);
                }
                Event::Text(t) => {
                    let s = t.decode().map_err(|e| e.to_string())?;
                    if let Some(top) = stack.last_mut() {
                        top.push_text(&s);
                    }
                }
                Event::CData(t) => {
                    let s = t.decode().map_err(|e| e.to_string())?;
                    if let Some(top) = stack.last_mut() {
                        top.push_text(&s);
                    }
                }
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                        Some(c) => c.to_string(),
                        None => {
                            let name = r.decode().map_err(|e| e.to_string())?;
                            quick_xml::escape::resolve_predefined_entity(&name)
                                .unwrap_or_default()
                                .to_owned()
                        }
                    };
                    if let Some(top) = stack.last_mut() {
                        top.push_text(&resolved);
                    }
                }
                Event::Eof => break,
                _ => {}
            }
            buf.clear();
        }
        if stack.len() != 1 {
            return Err("the document ends inside an element".into());
        }
        let mut doc = stack.pop().unwrap_or_default();
        doc.children
            .pop()
            .filter(|_| doc.children.is_empty())
            .ok_or_else(|| "no single root element".into())
    }

    fn open(e: &quick_xml::events::BytesStart<'_>) -> Result<Element, String> {
        let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
        let mut attrs = Vec::new();
        for a in e.attributes() {
            let a = a.map_err(|e| e.to_string())?;
            let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
            let value = a
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|e| e.to_string())?
                .into_owned();
            attrs.push((key, value));
        }
        Ok(Element {
            name,
            attrs,
            ..Element::default()
        })
    }

    fn push_text(&mut self, s: &str) {
        if self.text.len() < MAX_MESSAGE * 2 {
            self.text.push_str(s);
        }
    }

    fn attr(&self, key: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn attr_or(&self, key: &str) -> String {
        self.attr(key).unwrap_or_default().to_owned()
    }

    fn num(&self, key: &str) -> i64 {
        self.attr(key)
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |f| f as i64)
    }

    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    fn kids<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Every element named `name` at any depth below this one, in document order.
    fn descendants<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        for c in &self.children {
            if c.name == name {
                out.push(c);
            }
            c.descendants(name, out);
        }
    }

    fn all<'a>(&'a self, name: &str) -> Vec<&'a Element> {
        let mut v = Vec::new();
        if self.name == name {
            v.push(self);
        }
        self.descendants(name, &mut v);
        v
    }
}

fn seconds_ns(s: Option<&str>) -> i64 {
    s.and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map_or(0, |f| (f * 1e9) as i64)
}

fn message(parts: &[Option<&str>]) -> Option<String> {
    let text: Vec<&str> = parts
        .iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    if text.is_empty() {
        return None;
    }
    let mut m = text.join("\n");
    if m.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
    }
    Some(m)
}

// ----- test formats -----

fn junit(root: &Element, raw: &str) -> Vec<TestCase> {
    let mut out = Vec::new();
    for suite in root.all("testsuite") {
        let suite_name = suite.attr_or("name");
        for case in suite.kids("testcase") {
            let (status, msg) = if let Some(f) = case.child("failure") {
                ("FAILED", message(&[f.attr("message"), Some(&f.text)]))
            } else if let Some(e) = case.child("error") {
                ("ERROR", message(&[e.attr("message"), Some(&e.text)]))
            } else if let Some(s) = case.child("skipped") {
                ("SKIPPED", message(&[s.attr("message"), Some(&s.text)]))
            } else {
                ("SUCCEEDED", None)
            };
            out.push(TestCase {
                suite: suite_name.clone(),
                prefix: case.attr_or("classname"),
                name: case.attr_or("name"),
                status,
                duration_ns: seconds_ns(case.attr("time")),
                message: msg,
                raw_path: raw.to_owned(),
            });
        }
    }
    out
}

/// An NUnit test case's failure (or skip reason) message and stack trace.
fn nunit_message(case: &Element) -> Option<String> {
    let f = case.child("failure").or_else(|| case.child("reason"))?;
    message(&[
        f.child("message").map(|m| m.text.as_str()),
        f.child("stack-trace").map(|m| m.text.as_str()),
    ])
}

fn nunit3(root: &Element, raw: &str) -> Vec<TestCase> {
    let mut out = Vec::new();
    let mut suites = Vec::new();
    root.descendants("test-suite", &mut suites);
    for suite in suites {
        for case in suite.kids("test-case") {
            let status = match case.attr("result") {
                Some("Passed") => "SUCCEEDED",
                Some("Failed") if case.attr("label") == Some("Error") => "ERROR",
                Some("Failed") => "FAILED",
                Some("Skipped") => "SKIPPED",
                _ => "UNKNOWN",
            };
            out.push(TestCase {
                suite: suite.attr_or("fullname"),
                prefix: case.attr_or("classname"),
                name: case.attr_or("name"),
                status,
                duration_ns: seconds_ns(case.attr("duration")),
                message: nunit_message(case),
                raw_path: raw.to_owned(),
            });
        }
    }
    out
}

fn nunit2(root: &Element, raw: &str) -> Vec<TestCase> {
    let mut out = Vec::new();
    let mut suites = Vec::new();
    root.descendants("test-suite", &mut suites);
    for suite in suites {
        let Some(results) = suite.child("results") else {
            continue;
        };
        for case in results.kids("test-case") {
            let status = match case.attr("result") {
                Some("Success") => "SUCCEEDED",
                Some("Failure") => "FAILED",
                Some("Error") => "ERROR",
                Some("Ignored" | "Skipped" | "NotRunnable") => "SKIPPED",
                _ if case.attr("executed") == Some("False") => "SKIPPED",
                _ => "UNKNOWN",
            };
            let full = case.attr_or("name");
            let (prefix, name) = full
                .rsplit_once('.')
                .map_or((String::new(), full.clone()), |(p, n)| {
                    (p.to_owned(), n.to_owned())
                });
            out.push(TestCase {
                suite: suite.attr_or("name"),
                prefix,
                name,
                status,
                duration_ns: seconds_ns(case.attr("time")),
                message: nunit_message(case),
                raw_path: raw.to_owned(),
            });
        }
    }
    out
}

fn testng(root: &Element, raw: &str) -> Vec<TestCase> {
    let mut out = Vec::new();
    for suite in root.all("suite") {
        for class in suite.all("class") {
            for m in class.kids("test-method") {
                if m.attr("is-config") == Some("true") {
                    continue;
                }
                let status = match m.attr("status") {
                    Some("PASS") => "SUCCEEDED",
                    Some("FAIL") => "FAILED",
                    Some("SKIP") => "SKIPPED",
                    _ => "UNKNOWN",
                };
                let ex = m.child("exception");
                out.push(TestCase {
                    suite: suite.attr_or("name"),
                    prefix: class.attr_or("name"),
                    name: m.attr_or("name"),
                    status,
                    duration_ns: m.num("duration-ms").saturating_mul(1_000_000),
                    message: ex.and_then(|e| {
                        message(&[e.attr("class"), e.child("message").map(|x| x.text.as_str())])
                    }),
                    raw_path: raw.to_owned(),
                });
            }
        }
    }
    out
}

/// `hh:mm:ss.fffffff` (TRX durations) in nanoseconds.
fn trx_duration(d: Option<&str>) -> i64 {
    let Some(d) = d else { return 0 };
    let parts: Vec<f64> = d.split(':').filter_map(|p| p.parse().ok()).collect();
    match parts.as_slice() {
        [h, m, s] => ((h * 3600.0 + m * 60.0 + s) * 1e9) as i64,
        _ => 0,
    }
}

fn trx(root: &Element, raw: &str) -> Vec<TestCase> {
    // Test definitions give each test's class.
    let classes: Vec<(String, String)> = root
        .all("UnitTest")
        .into_iter()
        .map(|t| {
            (
                t.attr_or("id"),
                t.child("TestMethod")
                    .map(|m| m.attr_or("className"))
                    .unwrap_or_default(),
            )
        })
        .collect();
    let run_name = root.attr_or("name");
    root.all("UnitTestResult")
        .into_iter()
        .map(|r| {
            let status = match r.attr("outcome") {
                Some("Passed") => "SUCCEEDED",
                Some("Failed") => "FAILED",
                Some("Error" | "Timeout" | "Aborted") => "ERROR",
                Some("NotExecuted" | "Inconclusive") => "SKIPPED",
                _ => "UNKNOWN",
            };
            let id = r.attr_or("testId");
            let err = r.child("Output").and_then(|o| o.child("ErrorInfo"));
            TestCase {
                suite: run_name.clone(),
                prefix: classes
                    .iter()
                    .find(|(i, _)| *i == id)
                    .map(|(_, c)| c.clone())
                    .unwrap_or_default(),
                name: r.attr_or("testName"),
                status,
                duration_ns: trx_duration(r.attr("duration")),
                message: err.and_then(|e| {
                    message(&[
                        e.child("Message").map(|m| m.text.as_str()),
                        e.child("StackTrace").map(|m| m.text.as_str()),
                    ])
                }),
                raw_path: raw.to_owned(),
            }
        })
        .collect()
}

fn cucumber(doc: &Value, raw: &str) -> Vec<TestCase> {
    let mut out = Vec::new();
    for feature in doc.as_array().into_iter().flatten() {
        let feature_name = feature["name"].as_str().unwrap_or_default();
        for scenario in feature["elements"].as_array().into_iter().flatten() {
            if scenario["type"].as_str() == Some("background") {
                continue;
            }
            let mut status = "SUCCEEDED";
            let mut duration = 0i64;
            let mut msg = None;
            for step in scenario["steps"].as_array().into_iter().flatten() {
                let r = &step["result"];
                duration = duration.saturating_add(r["duration"].as_i64().unwrap_or(0).max(0));
                let s = match r["status"].as_str() {
                    Some("passed") => "SUCCEEDED",
                    Some("failed") => "FAILED",
                    Some("skipped") => "SKIPPED",
                    _ => "UNKNOWN",
                };
                if s == "FAILED" && msg.is_none() {
                    msg = message(&[r["error_message"].as_str()]);
                }
                // The scenario's status is its worst step's.
                let rank = |s: &str| match s {
                    "FAILED" => 3,
                    "UNKNOWN" => 2,
                    "SKIPPED" => 1,
                    _ => 0,
                };
                if rank(s) > rank(status) {
                    status = s;
                }
            }
            out.push(TestCase {
                suite: feature_name.to_owned(),
                prefix: feature["uri"].as_str().unwrap_or_default().to_owned(),
                name: scenario["name"].as_str().unwrap_or_default().to_owned(),
                status,
                duration_ns: duration,
                message: msg,
                raw_path: raw.to_owned(),
            });
        }
    }
    out
}

// ----- coverage formats -----

/// Adds `c` to the file's entry (formats list a file once per class).
fn merge(out: &mut Vec<FileCoverage>, c: FileCoverage) {
    match out.iter_mut().find(|x| x.path == c.path) {
        Some(x) => {
            x.lines_covered += c.lines_covered;
            x.lines_missed += c.lines_missed;
            x.branches_covered += c.branches_covered;
            x.branches_missed += c.branches_missed;
        }
        None => out.push(c),
    }
}

fn cobertura(root: &Element) -> Vec<FileCoverage> {
    let mut out = Vec::new();
    for class in root.all("class") {
        let mut c = FileCoverage {
            path: class.attr_or("filename"),
            lines_covered: 0,
            lines_missed: 0,
            branches_covered: 0,
            branches_missed: 0,
        };
        // The class's own lines (methods repeat them).
        for line in class
            .child("lines")
            .into_iter()
            .flat_map(|l| l.kids("line"))
        {
            if line.num("hits") > 0 {
                c.lines_covered += 1;
            } else {
                c.lines_missed += 1;
            }
            // condition-coverage="50% (1/2)"
            if let Some((covered, total)) = line
                .attr("condition-coverage")
                .and_then(|cc| cc.split_once('(')?.1.strip_suffix(')')?.split_once('/'))
                .and_then(|(a, b)| {
                    Some((a.trim().parse::<i64>().ok()?, b.trim().parse::<i64>().ok()?))
                })
            {
                c.branches_covered += covered;
                c.branches_missed += (total - covered).max(0);
            }
        }
        merge(&mut out, c);
    }
    out
}

fn jacoco(root: &Element) -> Vec<FileCoverage> {
    let mut out = Vec::new();
    for package in root.all("package") {
        let pkg = package.attr_or("name");
        for file in package.kids("sourcefile") {
            let counter = |kind: &str| {
                file.kids("counter")
                    .find(|c| c.attr("type") == Some(kind))
                    .map_or((0, 0), |c| (c.num("covered"), c.num("missed")))
            };
            let (lc, lm) = counter("LINE");
            let (bc, bm) = counter("BRANCH");
            let name = file.attr_or("name");
            merge(
                &mut out,
                FileCoverage {
                    path: if pkg.is_empty() {
                        name
                    } else {
                        format!("{pkg}/{name}")
                    },
                    lines_covered: lc,
                    lines_missed: lm,
                    branches_covered: bc,
                    branches_missed: bm,
                },
            );
        }
    }
    out
}

fn clover(root: &Element) -> Vec<FileCoverage> {
    let mut out = Vec::new();
    for file in root.all("file") {
        let Some(m) = file.child("metrics") else {
            continue;
        };
        let (statements, covered) = (m.num("statements"), m.num("coveredstatements"));
        let (conds, covered_conds) = (m.num("conditionals"), m.num("coveredconditionals"));
        merge(
            &mut out,
            FileCoverage {
                path: file
                    .attr("path")
                    .map_or_else(|| file.attr_or("name"), str::to_owned),
                lines_covered: covered,
                lines_missed: (statements - covered).max(0),
                branches_covered: covered_conds,
                branches_missed: (conds - covered_conds).max(0),
            },
        );
    }
    out
}

/// simplecov-json's `files` list, or SimpleCov's own `.resultset.json` (`{run: {coverage:
/// {file: {lines: […], branches: {…}}}}}`).
fn simplecov(doc: &Value) -> Vec<FileCoverage> {
    let lines_of = |v: &Value| {
        let lines = v.get("lines").unwrap_or(v);
        let mut c = (0i64, 0i64);
        for hit in lines.as_array().into_iter().flatten() {
            match hit.as_i64() {
                Some(0) => c.1 += 1,
                Some(_) => c.0 += 1,
                None => {}
            }
        }
        c
    };
    let branches_of = |v: &Value| {
        let mut c = (0i64, 0i64);
        for cond in v
            .get("branches")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|m| m.values())
        {
            for hit in cond.as_object().into_iter().flat_map(|m| m.values()) {
                match hit.as_i64() {
                    Some(0) => c.1 += 1,
                    Some(_) => c.0 += 1,
                    None => {}
                }
            }
        }
        c
    };
    let mut out = Vec::new();
    let mut add = |path: &str, v: &Value| {
        let (lc, lm) = lines_of(v);
        let (bc, bm) = branches_of(v);
        merge(
            &mut out,
            FileCoverage {
                path: path.to_owned(),
                lines_covered: lc,
                lines_missed: lm,
                branches_covered: bc,
                branches_missed: bm,
            },
        );
    };
    if let Some(files) = doc["files"].as_array() {
        for f in files {
            add(f["filename"].as_str().unwrap_or_default(), &f["coverage"]);
        }
    } else if let Some(runs) = doc.as_object() {
        for run in runs.values() {
            for (path, v) in run["coverage"].as_object().into_iter().flatten() {
                add(path, v);
            }
        }
    }
    out
}

/// A percentage with one decimal place's precision kept (0 when there is nothing to count).
pub fn percent(covered: i64, missed: i64) -> f64 {
    let total = covered + missed;
    if total <= 0 {
        return 0.0;
    }
    (covered as f64 * 10_000.0 / total as f64).round() / 100.0
}

/// One `reports` entry of a buildspec as a build found and read it: what goes to the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Collected {
    /// The report group's name (or ARN) as the buildspec gives it.
    pub name: String,
    pub format: ReportFormat,
    /// The files read, relative to the source directory.
    pub files: Vec<String>,
    pub tests: Vec<TestCase>,
    pub coverage: Vec<FileCoverage>,
    pub truncated: bool,
    /// Files that could not be read, and why.
    pub errors: Vec<String>,
}

/// The largest report file read.
const MAX_FILE: u64 = 64 << 20;

/// Finds and reads the files of every report the buildspec names, under `src`.
pub fn collect(spec: &crate::buildspec::BuildSpec, src: &std::path::Path) -> Vec<Collected> {
    let mut out = Vec::new();
    for (name, r) in &spec.reports {
        let mut c = Collected {
            name: name.clone(),
            format: r.file_format,
            files: Vec::new(),
            tests: Vec::new(),
            coverage: Vec::new(),
            truncated: false,
            errors: Vec::new(),
        };
        let select = crate::buildspec::ArtifactFiles {
            files: r.files.clone(),
            base_directory: r.base_directory.clone(),
            discard_paths: r.discard_paths,
            ..Default::default()
        };
        match crate::artifacts::pick(&select, src) {
            Err(e) => c.errors.push(e),
            Ok(picked) => {
                for p in picked.into_iter().filter(|p| p.link.is_none()) {
                    let raw = p
                        .source
                        .strip_prefix(src)
                        .map_or(p.name.clone(), |r| r.to_string_lossy().into_owned());
                    let read = std::fs::metadata(&p.source)
                        .map_err(|e| e.to_string())
                        .and_then(|m| {
                            if m.len() > MAX_FILE {
                                Err(format!("larger than {} MB", MAX_FILE >> 20))
                            } else {
                                std::fs::read(&p.source).map_err(|e| e.to_string())
                            }
                        });
                    let parsed = read
                        .map_err(|e| format!("{raw}: {e}"))
                        .and_then(|data| parse(r.file_format, &data, &raw));
                    match parsed {
                        Ok(Parsed::Tests(t)) => c.tests.extend(t),
                        Ok(Parsed::Coverage(v)) => {
                            for f in v {
                                merge(&mut c.coverage, f);
                            }
                        }
                        Err(e) => c.errors.push(e),
                    }
                    c.files.push(raw);
                }
            }
        }
        c.truncated = truncate(&mut c.tests);
        out.push(c);
    }
    out
}

impl Collected {
    /// The report in the worker protocol's shape (test cases and coverage in the API's).
    pub fn to_json(&self) -> Value {
        let tests: Vec<Value> = self
            .tests
            .iter()
            .map(|t| {
                serde_json::json!({
                    "testRawDataPath": t.raw_path,
                    "prefix": t.prefix,
                    "name": t.name,
                    "status": t.status,
                    "durationInNanoSeconds": t.duration_ns,
                    "message": t.message,
                    "testSuiteName": t.suite,
                })
            })
            .collect();
        let coverage: Vec<Value> = self
            .coverage
            .iter()
            .map(|f| {
                serde_json::json!({
                    "filePath": f.path,
                    "linesCovered": f.lines_covered,
                    "linesMissed": f.lines_missed,
                    "lineCoveragePercentage": percent(f.lines_covered, f.lines_missed),
                    "branchesCovered": f.branches_covered,
                    "branchesMissed": f.branches_missed,
                    "branchCoveragePercentage": percent(f.branches_covered, f.branches_missed),
                })
            })
            .collect();
        serde_json::json!({
            "name": self.name,
            "fileFormat": self.format.name(),
            "type": self.format.report_type(),
            "files": self.files,
            "truncated": self.truncated,
            "errors": self.errors,
            "testCases": tests,
            "codeCoverages": coverage,
        })
    }
}
