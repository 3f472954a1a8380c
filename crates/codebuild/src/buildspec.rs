//! The buildspec (versions 0.1 and 0.2): parsed from YAML into typed values, with every
//! error naming the key and the line it is on, as CodeBuild's `YAML_FILE_ERROR` does.

use marked_yaml::types::{MarkedMappingNode, MarkedScalarNode, MarkedSequenceNode};
use marked_yaml::{LoadError, Node, Span};
use std::fmt;

/// A parsed buildspec.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BuildSpec {
    pub version: Version,
    pub run_as: Option<String>,
    pub env: Env,
    pub proxy: Proxy,
    pub phases: Phases,
    /// Report groups (name or ARN) and the files each collects, in buildspec order.
    pub reports: Vec<(String, Report)>,
    pub artifacts: Option<Artifacts>,
    pub cache: Option<Cache>,
    /// A `batch` section was present (batch builds are recorded, not run).
    pub batch: bool,
}

/// The buildspec version: 0.1 runs every command in a shell of its own, 0.2 runs all of a
/// build's commands in one shell session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    V01,
    #[default]
    V02,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Env {
    /// `bash`, `/bin/sh`, … (default: bash where the image has it).
    pub shell: Option<String>,
    pub variables: Vec<(String, String)>,
    /// Variable name → Parameter Store parameter name.
    pub parameter_store: Vec<(String, String)>,
    /// Variable name → `secret-id:json-key:version-stage:version-id`.
    pub secrets_manager: Vec<(String, String)>,
    pub exported_variables: Vec<String>,
    pub git_credential_helper: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Proxy {
    pub upload_artifacts: bool,
    pub logs: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Phases {
    pub install: Option<Phase>,
    pub pre_build: Option<Phase>,
    pub build: Option<Phase>,
    pub post_build: Option<Phase>,
}

impl Phases {
    /// The phases in the order they run, with CodeBuild's phase type names.
    pub fn in_order(&self) -> [(&'static str, Option<&Phase>); 4] {
        [
            ("INSTALL", self.install.as_ref()),
            ("PRE_BUILD", self.pre_build.as_ref()),
            ("BUILD", self.build.as_ref()),
            ("POST_BUILD", self.post_build.as_ref()),
        ]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Phase {
    pub run_as: Option<String>,
    pub on_failure: OnFailure,
    /// Accepted and recorded (the image's runtimes are what they are).
    pub runtime_versions: Vec<(String, String)>,
    pub commands: Vec<Command>,
    pub finally: Vec<Command>,
}

/// One command and the buildspec line it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub text: String,
    pub line: usize,
}

/// What happens when a command of a phase fails.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum OnFailure {
    /// The build stops after this phase (the default).
    #[default]
    Abort,
    /// The build goes on to the next phase; the phase is still marked FAILED.
    Continue,
    /// The phase is run again, up to `count` more times (default 3), when its output
    /// matches `pattern` (any output when absent).
    Retry { count: u32, pattern: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    JunitXml,
    CucumberJson,
    NunitXml,
    Nunit3Xml,
    TestngXml,
    VisualStudioTrx,
    CloverXml,
    CoberturaXml,
    JacocoXml,
    SimpleCov,
}

impl ReportFormat {
    pub const ALL: [(&'static str, ReportFormat); 10] = [
        ("JUNITXML", ReportFormat::JunitXml),
        ("CUCUMBERJSON", ReportFormat::CucumberJson),
        ("NUNITXML", ReportFormat::NunitXml),
        ("NUNIT3XML", ReportFormat::Nunit3Xml),
        ("TESTNGXML", ReportFormat::TestngXml),
        ("VISUALSTUDIOTRX", ReportFormat::VisualStudioTrx),
        ("CLOVERXML", ReportFormat::CloverXml),
        ("COBERTURAXML", ReportFormat::CoberturaXml),
        ("JACOCOXML", ReportFormat::JacocoXml),
        ("SIMPLECOV", ReportFormat::SimpleCov),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("JUNITXML", |(n, _)| n)
    }

    /// The report type files of this format make: `TEST` or `CODE_COVERAGE`.
    pub fn report_type(self) -> &'static str {
        if self.is_test() {
            "TEST"
        } else {
            "CODE_COVERAGE"
        }
    }

    /// Test reports (as opposed to code-coverage reports).
    pub fn is_test(self) -> bool {
        !matches!(
            self,
            ReportFormat::CloverXml
                | ReportFormat::CoberturaXml
                | ReportFormat::JacocoXml
                | ReportFormat::SimpleCov
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub files: Vec<String>,
    pub base_directory: Option<String>,
    pub discard_paths: bool,
    pub file_format: ReportFormat,
}

/// The files of one artifact and how they are laid out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtifactFiles {
    pub files: Vec<String>,
    pub name: Option<String>,
    pub discard_paths: bool,
    pub base_directory: Option<String>,
    pub exclude_paths: Vec<String>,
    pub enable_symlinks: bool,
    pub s3_prefix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Artifacts {
    pub primary: ArtifactFiles,
    /// Secondary artifacts by artifact identifier.
    pub secondary: Vec<(String, ArtifactFiles)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cache {
    pub key: Option<String>,
    pub fallback_keys: Vec<String>,
    /// `restore` or `save` (both when absent).
    pub action: Option<String>,
    pub paths: Vec<String>,
}

/// A buildspec that cannot be used: what is wrong, with the key and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpecError {
    pub message: String,
    pub line: usize,
}

impl fmt::Display for BuildSpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{} at line {}", self.message, self.line)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for BuildSpecError {}

type Result<T> = std::result::Result<T, BuildSpecError>;

fn line_of(span: &Span) -> usize {
    span.start().map_or(0, |m| m.line())
}

fn err<T>(span: &Span, message: impl Into<String>) -> Result<T> {
    Err(BuildSpecError {
        message: message.into(),
        line: line_of(span),
    })
}

fn kind(node: &Node) -> &'static str {
    match node {
        Node::Scalar(_) => "a scalar",
        Node::Mapping(_) => "a mapping (subkeys)",
        Node::Sequence(_) => "a list",
    }
}

/// Whether a node is YAML's null (`key:` with nothing after it, or `~`/`null`).
fn is_null(node: &Node) -> bool {
    matches!(node, Node::Scalar(s) if s.may_coerce() && matches!(s.as_str(), "" | "~" | "null" | "Null" | "NULL"))
}

fn scalar<'a>(node: &'a Node, path: &str) -> Result<&'a MarkedScalarNode> {
    match node {
        Node::Scalar(s) => Ok(s),
        other => err(
            other.span(),
            format!(
                "Expected {path} to be of string type: found {} instead",
                kind(other)
            ),
        ),
    }
}

fn string(node: &Node, path: &str) -> Result<String> {
    Ok(scalar(node, path)?.as_str().to_owned())
}

fn mapping<'a>(node: &'a Node, path: &str) -> Result<&'a MarkedMappingNode> {
    match node {
        Node::Mapping(m) => Ok(m),
        other => err(
            other.span(),
            format!(
                "Expected {path} to be a mapping: found {} instead",
                kind(other)
            ),
        ),
    }
}

/// `yes`/`no`/`true`/`false` (any case), as buildspecs write flags.
fn flag(node: &Node, path: &str) -> Result<bool> {
    let s = scalar(node, path)?;
    match s.as_str().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" => Ok(true),
        "no" | "false" | "off" => Ok(false),
        other => err(
            s.span(),
            format!("Expected {path} to be yes or no: found {other:?}"),
        ),
    }
}

/// A list of strings; a single string stands for a list of one, as CodeBuild allows.
fn strings(node: &Node, path: &str) -> Result<Vec<(String, usize)>> {
    match node {
        n if is_null(n) => Ok(Vec::new()),
        Node::Scalar(s) => Ok(vec![(s.as_str().to_owned(), line_of(s.span()))]),
        Node::Sequence(items) => seq_strings(items, path),
        other => err(
            other.span(),
            format!(
                "Expected {path} to be a list of strings: found {} instead",
                kind(other)
            ),
        ),
    }
}

fn seq_strings(items: &MarkedSequenceNode, path: &str) -> Result<Vec<(String, usize)>> {
    items
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let s = scalar(n, &format!("{path}[{i}]"))?;
            Ok((s.as_str().to_owned(), line_of(s.span())))
        })
        .collect()
}

fn plain_strings(node: &Node, path: &str) -> Result<Vec<String>> {
    Ok(strings(node, path)?.into_iter().map(|(s, _)| s).collect())
}

/// A mapping of names to string values, in order.
fn pairs(node: &Node, path: &str) -> Result<Vec<(String, String)>> {
    if is_null(node) {
        return Ok(Vec::new());
    }
    let m = mapping(node, path)?;
    m.iter()
        .map(|(k, v)| {
            let key = k.as_str().to_owned();
            let value = if is_null(v) {
                String::new()
            } else {
                string(v, &format!("{path}.{key}"))?
            };
            Ok((key, value))
        })
        .collect()
}

/// The entries of a mapping, refusing keys that are not in `known`.
fn entries<'a>(
    m: &'a MarkedMappingNode,
    path: &str,
    known: &[&str],
) -> Result<Vec<(&'a str, &'a Node)>> {
    let mut out = Vec::new();
    for (k, v) in m.iter() {
        let key = k.as_str();
        if !known.contains(&key) {
            let at = if path.is_empty() {
                key.to_owned()
            } else {
                format!("{path}.{key}")
            };
            return err(
                k.span(),
                format!("Unknown key {at}: expected one of {}", known.join(", ")),
            );
        }
        out.push((key, v));
    }
    Ok(out)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Parses a buildspec.
pub fn parse(text: &str) -> Result<BuildSpec> {
    let options = marked_yaml::LoaderOptions::default().error_on_duplicate_keys(true);
    let root = marked_yaml::parse_yaml_with_options(0, text, options).map_err(load_error)?;
    let Node::Mapping(top) = &root else {
        return err(root.span(), "The buildspec must be a YAML mapping");
    };
    let mut spec = BuildSpec::default();
    let mut version = None;
    for (key, v) in entries(
        top,
        "",
        &[
            "version",
            "run-as",
            "env",
            "proxy",
            "batch",
            "phases",
            "reports",
            "artifacts",
            "cache",
        ],
    )? {
        match key {
            "version" => {
                let s = scalar(v, "version")?;
                version = Some(match s.as_str() {
                    "0.1" => Version::V01,
                    "0.2" => Version::V02,
                    other => {
                        return err(
                            s.span(),
                            format!("Invalid buildspec version {other:?}: expected 0.1 or 0.2"),
                        )
                    }
                });
            }
            "run-as" => spec.run_as = Some(string(v, "run-as")?),
            "env" => spec.env = parse_env(v)?,
            "proxy" => spec.proxy = parse_proxy(v)?,
            "batch" => spec.batch = !is_null(v),
            "phases" => spec.phases = parse_phases(v)?,
            "reports" => spec.reports = parse_reports(v)?,
            "artifacts" => spec.artifacts = Some(parse_artifacts(v)?),
            "cache" => spec.cache = Some(parse_cache(v)?),
            _ => unreachable!("entries() only returns known keys"),
        }
    }
    match version {
        Some(v) => spec.version = v,
        None => {
            return err(
                top.span(),
                "The buildspec has no version: expected version: 0.2",
            )
        }
    }
    Ok(spec)
}

fn load_error(e: LoadError) -> BuildSpecError {
    let (line, message) = match &e {
        LoadError::TopLevelMustBeMapping(m) => {
            (m.line(), "The buildspec must be a YAML mapping".into())
        }
        LoadError::TopLevelMustBeSequence(m) => (m.line(), "Expected a list".into()),
        LoadError::UnexpectedAnchor(m) => (
            m.line(),
            "YAML anchors and aliases are not supported".into(),
        ),
        LoadError::MappingKeyMustBeScalar(m) => (m.line(), "Mapping keys must be strings".into()),
        LoadError::UnexpectedTag(m) => (m.line(), "YAML tags are not supported".into()),
        LoadError::ScanError(m, se) => (m.line(), format!("Invalid YAML: {}", se.info())),
        LoadError::DuplicateKey(d) => (
            line_of(d.key.span()),
            format!("Duplicate key {:?}", d.key.as_str()),
        ),
    };
    BuildSpecError { message, line }
}

fn parse_env(node: &Node) -> Result<Env> {
    let mut env = Env::default();
    if is_null(node) {
        return Ok(env);
    }
    let m = mapping(node, "env")?;
    for (key, v) in entries(
        m,
        "env",
        &[
            "shell",
            "variables",
            "parameter-store",
            "secrets-manager",
            "exported-variables",
            "git-credential-helper",
        ],
    )? {
        let path = join("env", key);
        match key {
            "shell" => env.shell = Some(string(v, &path)?),
            "variables" => env.variables = pairs(v, &path)?,
            "parameter-store" => env.parameter_store = pairs(v, &path)?,
            "secrets-manager" => env.secrets_manager = pairs(v, &path)?,
            "exported-variables" => env.exported_variables = plain_strings(v, &path)?,
            "git-credential-helper" => env.git_credential_helper = flag(v, &path)?,
            _ => unreachable!("entries() only returns known keys"),
        }
    }
    Ok(env)
}

fn parse_proxy(node: &Node) -> Result<Proxy> {
    let mut proxy = Proxy::default();
    if is_null(node) {
        return Ok(proxy);
    }
    let m = mapping(node, "proxy")?;
    for (key, v) in entries(m, "proxy", &["upload-artifacts", "logs"])? {
        let on = flag(v, &join("proxy", key))?;
        match key {
            "upload-artifacts" => proxy.upload_artifacts = on,
            _ => proxy.logs = on,
        }
    }
    Ok(proxy)
}

fn parse_phases(node: &Node) -> Result<Phases> {
    let mut phases = Phases::default();
    if is_null(node) {
        return Ok(phases);
    }
    let m = mapping(node, "phases")?;
    for (key, v) in entries(
        m,
        "phases",
        &["install", "pre_build", "build", "post_build"],
    )? {
        let phase = parse_phase(v, &join("phases", key))?;
        let slot = match key {
            "install" => &mut phases.install,
            "pre_build" => &mut phases.pre_build,
            "build" => &mut phases.build,
            _ => &mut phases.post_build,
        };
        *slot = Some(phase);
    }
    Ok(phases)
}

fn commands(node: &Node, path: &str) -> Result<Vec<Command>> {
    Ok(strings(node, path)?
        .into_iter()
        .map(|(text, line)| Command { text, line })
        .collect())
}

fn parse_phase(node: &Node, path: &str) -> Result<Phase> {
    let mut phase = Phase::default();
    if is_null(node) {
        return Ok(phase);
    }
    let m = mapping(node, path)?;
    for (key, v) in entries(
        m,
        path,
        &[
            "run-as",
            "on-failure",
            "runtime-versions",
            "commands",
            "finally",
        ],
    )? {
        let here = join(path, key);
        match key {
            "run-as" => phase.run_as = Some(string(v, &here)?),
            "on-failure" => phase.on_failure = parse_on_failure(scalar(v, &here)?, &here)?,
            "runtime-versions" => phase.runtime_versions = pairs(v, &here)?,
            "commands" => phase.commands = commands(v, &here)?,
            _ => phase.finally = commands(v, &here)?,
        }
    }
    Ok(phase)
}

/// `ABORT`, `CONTINUE`, `RETRY`, `RETRY-<count>`, `RETRY-<regex>`, `RETRY-<count>-<regex>`.
fn parse_on_failure(s: &MarkedScalarNode, path: &str) -> Result<OnFailure> {
    let text = s.as_str();
    match text {
        "ABORT" => return Ok(OnFailure::Abort),
        "CONTINUE" => return Ok(OnFailure::Continue),
        "RETRY" => {
            return Ok(OnFailure::Retry {
                count: 3,
                pattern: None,
            })
        }
        _ => {}
    }
    if let Some(rest) = text.strip_prefix("RETRY-") {
        let (count, pattern) = match rest.split_once('-') {
            Some((n, p)) if n.parse::<u32>().is_ok() => (n.parse().ok(), Some(p)),
            _ => match rest.parse::<u32>() {
                Ok(n) => (Some(n), None),
                Err(_) => (None, Some(rest)),
            },
        };
        if let Some(p) = pattern {
            if regex_is_invalid(p) {
                return err(
                    s.span(),
                    format!("Invalid regular expression in {path}: {p:?}"),
                );
            }
        }
        return Ok(OnFailure::Retry {
            count: count.unwrap_or(3),
            pattern: pattern.map(str::to_owned),
        });
    }
    err(
        s.span(),
        format!("Invalid {path} {text:?}: expected ABORT, CONTINUE or RETRY[-count][-regex]"),
    )
}

fn regex_is_invalid(p: &str) -> bool {
    regex::Regex::new(p).is_err()
}

fn parse_reports(node: &Node) -> Result<Vec<(String, Report)>> {
    if is_null(node) {
        return Ok(Vec::new());
    }
    let m = mapping(node, "reports")?;
    let mut out = Vec::new();
    for (k, v) in m.iter() {
        let name = k.as_str().to_owned();
        let path = join("reports", &name);
        let r = mapping(v, &path)?;
        let mut report = Report {
            files: Vec::new(),
            base_directory: None,
            discard_paths: false,
            file_format: ReportFormat::JunitXml,
        };
        for (key, v) in entries(
            r,
            &path,
            &["files", "base-directory", "discard-paths", "file-format"],
        )? {
            let here = join(&path, key);
            match key {
                "files" => report.files = plain_strings(v, &here)?,
                "base-directory" => report.base_directory = Some(string(v, &here)?),
                "discard-paths" => report.discard_paths = flag(v, &here)?,
                _ => {
                    let s = scalar(v, &here)?;
                    report.file_format = ReportFormat::ALL
                        .iter()
                        .find(|(n, _)| *n == s.as_str())
                        .map(|(_, f)| *f)
                        .map_or_else(
                            || {
                                err(
                                    s.span(),
                                    format!(
                                        "Invalid {here} {:?}: expected one of {}",
                                        s.as_str(),
                                        ReportFormat::ALL.map(|(n, _)| n).join(", ")
                                    ),
                                )
                            },
                            Ok,
                        )?;
                }
            }
        }
        if report.files.is_empty() {
            return err(v.span(), format!("{path} needs files"));
        }
        out.push((name, report));
    }
    Ok(out)
}

const ARTIFACT_KEYS: [&str; 7] = [
    "files",
    "name",
    "discard-paths",
    "base-directory",
    "exclude-paths",
    "enable-symlinks",
    "s3-prefix",
];

fn artifact_key(a: &mut ArtifactFiles, key: &str, v: &Node, here: &str) -> Result<()> {
    match key {
        "files" => a.files = plain_strings(v, here)?,
        "name" => a.name = Some(string(v, here)?),
        "discard-paths" => a.discard_paths = flag(v, here)?,
        "base-directory" => a.base_directory = Some(string(v, here)?),
        "exclude-paths" => a.exclude_paths = plain_strings(v, here)?,
        "enable-symlinks" => a.enable_symlinks = flag(v, here)?,
        _ => a.s3_prefix = Some(string(v, here)?),
    }
    Ok(())
}

fn parse_artifacts(node: &Node) -> Result<Artifacts> {
    let mut arts = Artifacts::default();
    if is_null(node) {
        return Ok(arts);
    }
    let m = mapping(node, "artifacts")?;
    let mut known = ARTIFACT_KEYS.to_vec();
    known.push("secondary-artifacts");
    for (key, v) in entries(m, "artifacts", &known)? {
        let here = join("artifacts", key);
        if key == "secondary-artifacts" {
            let sm = mapping(v, &here)?;
            for (id, sv) in sm.iter() {
                let path = join(&here, id.as_str());
                let mut a = ArtifactFiles::default();
                for (k, v) in entries(mapping(sv, &path)?, &path, &ARTIFACT_KEYS)? {
                    artifact_key(&mut a, k, v, &join(&path, k))?;
                }
                if a.files.is_empty() {
                    return err(sv.span(), format!("{path} needs files"));
                }
                arts.secondary.push((id.as_str().to_owned(), a));
            }
        } else {
            artifact_key(&mut arts.primary, key, v, &here)?;
        }
    }
    if arts.primary.files.is_empty() && arts.secondary.is_empty() {
        return err(node.span(), "artifacts needs files");
    }
    Ok(arts)
}

fn parse_cache(node: &Node) -> Result<Cache> {
    let mut cache = Cache::default();
    if is_null(node) {
        return Ok(cache);
    }
    let m = mapping(node, "cache")?;
    for (key, v) in entries(m, "cache", &["key", "fallback-keys", "action", "paths"])? {
        let here = join("cache", key);
        match key {
            "key" => cache.key = Some(string(v, &here)?),
            "fallback-keys" => cache.fallback_keys = plain_strings(v, &here)?,
            "action" => {
                let s = scalar(v, &here)?;
                if !matches!(s.as_str(), "restore" | "save") {
                    return err(
                        s.span(),
                        format!("Invalid {here} {:?}: expected restore or save", s.as_str()),
                    );
                }
                cache.action = Some(s.as_str().to_owned());
            }
            _ => cache.paths = plain_strings(v, &here)?,
        }
    }
    Ok(cache)
}
