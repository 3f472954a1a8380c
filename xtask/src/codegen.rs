//! Generates the AWS API layer (`crates/model/src/generated/`) from the vendored botocore models.
//!
//! For each service it emits: one Rust type per structure reachable from an operation,
//! validation (required, length, range, pattern, enum) following the model's constraints,
//! an error-code enum of the service's exception shapes, a handler trait with one method
//! per operation (default: a 501 `NotImplementedException`), and a dispatcher that decodes,
//! validates and routes a JSON-1.1 request body to the trait.

use crate::{AGENT_SERVICES, BOTOCORE_VERSION, SERVICES};
use anyhow::{bail, Context, Result};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const RUST_KEYWORDS: &[&str] = &[
    "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn", "for",
    "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return",
    "self", "Self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use", "where",
    "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final", "macro",
    "override", "priv", "typeof", "unsized", "virtual", "yield", "try", "gen",
];

/// Type names that would shadow the prelude or the runtime if used for a shape.
const RESERVED_TYPE_NAMES: &[&str] = &[
    "Result",
    "Option",
    "Vec",
    "String",
    "Box",
    "Default",
    "Error",
    "Context",
    "Blob",
    "Timestamp",
    "Validator",
    "ApiError",
    "Value",
    "BTreeMap",
    "Some",
    "None",
    "Ok",
    "Err",
];

pub fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let boundary = match prev {
                None => false,
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
}

fn field_ident(member: &str) -> String {
    let s = snake_case(member);
    if RUST_KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

fn type_ident(shape: &str) -> String {
    let mut s: String = shape
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if let Some(first) = s.get(0..1) {
        let up = first.to_ascii_uppercase();
        s.replace_range(0..1, &up);
    }
    if RESERVED_TYPE_NAMES.contains(&s.as_str()) {
        s.push_str("Shape");
    }
    s
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

/// Rewrites a model pattern (Java regex semantics, full match) for the `regex` crate:
/// anchors it and makes `\w`/`\d`/`\s` ASCII-only as Java's are by default.
fn rust_pattern(p: &str) -> String {
    let mut out = String::new();
    let mut in_class = false;
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let n = chars.next().unwrap_or('\\');
                let class = match n {
                    'w' => Some("0-9A-Za-z_"),
                    'd' => Some("0-9"),
                    's' => Some(" \\t\\n\\x0B\\f\\r"),
                    _ => None,
                };
                match class {
                    Some(cls) if in_class => out.push_str(cls),
                    Some(cls) => {
                        out.push('[');
                        out.push_str(cls);
                        out.push(']');
                    }
                    None => {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
                if chars.peek() == Some(&'^') {
                    out.push(chars.next().unwrap_or('^'));
                }
                if chars.peek() == Some(&']') {
                    out.push_str("\\]");
                    chars.next();
                }
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            '[' if in_class => out.push_str("\\["),
            _ => out.push(c),
        }
    }
    format!("^(?:{out})$")
}

struct Service<'a> {
    module: &'a str,
    shapes: &'a Map<String, Value>,
    ops: &'a Map<String, Value>,
    meta: &'a Map<String, Value>,
}

impl<'a> Service<'a> {
    fn shape(&self, name: &str) -> Result<&'a Map<String, Value>> {
        self.shapes
            .get(name)
            .and_then(Value::as_object)
            .with_context(|| format!("{}: unknown shape {name}", self.module))
    }

    fn kind(&self, name: &str) -> Result<&'a str> {
        Ok(self
            .shape(name)?
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("structure"))
    }

    fn members(&self, name: &str) -> Result<Vec<(&'a str, &'a str)>> {
        let s = self.shape(name)?;
        let mut out = Vec::new();
        if let Some(m) = s.get("members").and_then(Value::as_object) {
            for (k, v) in m {
                out.push((
                    k.as_str(),
                    v["shape"].as_str().context("member without shape")?,
                ));
            }
        }
        Ok(out)
    }

    fn required(&self, name: &str) -> Result<BTreeSet<&'a str>> {
        Ok(self
            .shape(name)?
            .get("required")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default())
    }

    /// The shapes a shape refers to directly.
    fn children(&self, name: &str) -> Result<Vec<&'a str>> {
        let s = self.shape(name)?;
        Ok(match self.kind(name)? {
            "structure" => self.members(name)?.into_iter().map(|(_, t)| t).collect(),
            "list" => vec![s["member"]["shape"].as_str().context("list member")?],
            "map" => vec![
                s["key"]["shape"].as_str().context("map key")?,
                s["value"]["shape"].as_str().context("map value")?,
            ],
            _ => vec![],
        })
    }

    fn reachable(&self) -> Result<BTreeSet<&'a str>> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&str> = Vec::new();
        for op in self.ops.values() {
            for key in ["input", "output"] {
                if let Some(s) = op.get(key).and_then(|v| v["shape"].as_str()) {
                    todo.push(s);
                }
            }
        }
        while let Some(s) = todo.pop() {
            if seen.insert(s) {
                todo.extend(self.children(s)?);
            }
        }
        Ok(seen)
    }

    /// Whether `from` can reach `to` through structure/list/map edges (for boxing recursion).
    fn reaches(&self, from: &str, to: &str) -> Result<bool> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(s) = todo.pop() {
            if s == to {
                return Ok(true);
            }
            if seen.insert(s) {
                todo.extend(self.children(s)?);
            }
        }
        Ok(false)
    }

    fn rust_type(&self, name: &str) -> Result<String> {
        let s = self.shape(name)?;
        Ok(match self.kind(name)? {
            "string" => "String".into(),
            "integer" => "i32".into(),
            "long" => "i64".into(),
            "boolean" => "bool".into(),
            "double" | "float" => "f64".into(),
            "timestamp" => "Timestamp".into(),
            "blob" => "Blob".into(),
            "list" => format!(
                "Vec<{}>",
                self.rust_type(s["member"]["shape"].as_str().unwrap_or_default())?
            ),
            "map" => format!(
                "BTreeMap<String, {}>",
                self.rust_type(s["value"]["shape"].as_str().unwrap_or_default())?
            ),
            "structure" => type_ident(name),
            other => bail!("{}: shape {name} has unsupported type {other}", self.module),
        })
    }

    /// Emits validation statements for a present value `expr` (a reference) of shape `name`.
    fn emit_checks(
        &self,
        out: &mut String,
        indent: usize,
        expr: &str,
        name: &str,
        depth: usize,
    ) -> Result<()> {
        let s = self.shape(name)?;
        let pad = " ".repeat(indent);
        let min = s.get("min").and_then(Value::as_f64);
        let max = s.get("max").and_then(Value::as_f64);
        match self.kind(name)? {
            "string" => {
                if min.is_some() || max.is_some() {
                    writeln!(
                        out,
                        "{pad}v.length({expr}.chars().count(), {}, {});",
                        opt_u(min),
                        opt_u(max)
                    )?;
                }
                if let Some(p) = s.get("pattern").and_then(Value::as_str) {
                    let rp = rust_pattern(p);
                    if regex::Regex::new(&rp).is_ok() {
                        writeln!(
                            out,
                            "{pad}{{ static RE: LazyLock<Regex> = LazyLock::new(|| Regex::new({rp:?}).expect(\"pattern compiled at codegen\")); v.pattern({expr}, &RE, {p:?}); }}"
                        )?;
                    } else {
                        writeln!(out, "{pad}// pattern {p:?} is not expressible in the regex crate; not enforced")?;
                    }
                }
                if let Some(e) = s.get("enum").and_then(Value::as_array) {
                    let vals: Vec<String> = e
                        .iter()
                        .filter_map(Value::as_str)
                        .map(|x| format!("{x:?}"))
                        .collect();
                    writeln!(out, "{pad}v.one_of({expr}, &[{}]);", vals.join(", "))?;
                }
            }
            "integer" | "long" | "double" | "float" if min.is_some() || max.is_some() => {
                writeln!(
                    out,
                    "{pad}v.range(*{expr} as f64, {}, {});",
                    opt_f(min),
                    opt_f(max)
                )?;
            }
            "blob" if min.is_some() || max.is_some() => {
                writeln!(
                    out,
                    "{pad}v.length({expr}.0.len(), {}, {});",
                    opt_u(min),
                    opt_u(max)
                )?;
            }
            "list" => {
                if min.is_some() || max.is_some() {
                    writeln!(
                        out,
                        "{pad}v.count({expr}.len(), {}, {});",
                        opt_u(min),
                        opt_u(max)
                    )?;
                }
                let inner = s["member"]["shape"].as_str().unwrap_or_default();
                let mut body = String::new();
                let item = format!("item{depth}");
                self.emit_checks(&mut body, indent + 4, &item, inner, depth + 1)?;
                if !body.is_empty() {
                    writeln!(out, "{pad}for (i, {item}) in {expr}.iter().enumerate() {{")?;
                    writeln!(out, "{pad}    v.enter_index(i);")?;
                    out.push_str(&body);
                    writeln!(out, "{pad}    v.leave();")?;
                    writeln!(out, "{pad}}}")?;
                }
            }
            "map" => {
                if min.is_some() || max.is_some() {
                    writeln!(
                        out,
                        "{pad}v.count({expr}.len(), {}, {});",
                        opt_u(min),
                        opt_u(max)
                    )?;
                }
                let key = s["key"]["shape"].as_str().unwrap_or_default();
                let val = s["value"]["shape"].as_str().unwrap_or_default();
                let (k, x) = (format!("key{depth}"), format!("val{depth}"));
                let mut kb = String::new();
                self.emit_checks(&mut kb, indent + 4, &k, key, depth + 1)?;
                let mut vb = String::new();
                self.emit_checks(&mut vb, indent + 4, &x, val, depth + 1)?;
                if !kb.is_empty() || !vb.is_empty() {
                    writeln!(out, "{pad}for ({k}, {x}) in {expr}.iter() {{")?;
                    writeln!(out, "{pad}    let _ = (&{k}, &{x});")?;
                    writeln!(out, "{pad}    v.enter_key({k});")?;
                    out.push_str(&kb);
                    out.push_str(&vb);
                    writeln!(out, "{pad}    v.leave();")?;
                    writeln!(out, "{pad}}}")?;
                }
            }
            "structure" => {
                writeln!(out, "{pad}{expr}.validate(v);")?;
            }
            _ => {}
        }
        Ok(())
    }

    fn emit_struct(&self, out: &mut String, name: &str) -> Result<()> {
        let ident = type_ident(name);
        let required = self.required(name)?;
        let members = self.members(name)?;
        writeln!(
            out,
            "#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]"
        )?;
        writeln!(out, "pub struct {ident} {{")?;
        let mut seen = BTreeSet::new();
        for (m, t) in &members {
            let f = field_ident(m);
            if !seen.insert(f.clone()) {
                bail!(
                    "{}: {name}.{m} collides with another member as {f}",
                    self.module
                );
            }
            let mut ty = self.rust_type(t)?;
            if self.kind(t)? == "structure" && self.reaches(t, name)? {
                ty = format!("Box<{ty}>");
            }
            writeln!(
                out,
                "    #[serde(rename = {m:?}, default, skip_serializing_if = \"Option::is_none\")]"
            )?;
            writeln!(out, "    pub {f}: Option<{ty}>,")?;
        }
        writeln!(out, "}}\n")?;
        writeln!(out, "impl Validate for {ident} {{")?;
        let mut body = String::new();
        for (m, t) in &members {
            let f = field_ident(m);
            let mut checks = String::new();
            self.emit_checks(&mut checks, 12, "x", t, 0)?;
            let req = required.contains(m);
            if !req && checks.is_empty() {
                continue;
            }
            writeln!(body, "        v.enter_member({m:?});")?;
            if req {
                writeln!(body, "        v.required(self.{f}.is_some());")?;
            }
            if !checks.is_empty() {
                writeln!(body, "        if let Some(x) = &self.{f} {{")?;
                body.push_str(&checks);
                writeln!(body, "        }}")?;
            }
            writeln!(body, "        v.leave();")?;
        }
        if body.is_empty() {
            writeln!(out, "    fn validate(&self, _v: &mut Validator) {{}}")?;
        } else {
            writeln!(out, "    fn validate(&self, v: &mut Validator) {{")?;
            out.push_str(&body);
            writeln!(out, "    }}")?;
        }
        writeln!(out, "}}\n")?;
        Ok(())
    }

    fn exceptions(&self) -> Vec<(&'a str, u16)> {
        self.shapes
            .iter()
            .filter(|(_, v)| v.get("exception").and_then(Value::as_bool) == Some(true))
            .map(|(k, v)| {
                let status = v
                    .get("error")
                    .and_then(|e| e.get("httpStatusCode"))
                    .and_then(Value::as_u64)
                    .map(|s| s as u16)
                    .unwrap_or(if v.get("fault").and_then(Value::as_bool) == Some(true) {
                        500
                    } else {
                        400
                    });
                (k.as_str(), status)
            })
            .collect()
    }

    /// The service-specific exceptions for a top-level input member: (missing, invalid, too many).
    fn member_errors(
        &self,
        op_errors: &BTreeSet<&str>,
        member: &str,
        target: &str,
    ) -> [Option<String>; 3] {
        let bases = [capitalize(member), type_ident(target)];
        let find = |fmt: &dyn Fn(&str) -> String| {
            bases
                .iter()
                .map(|b| fmt(b))
                .find(|name| op_errors.contains(name.as_str()))
        };
        [
            find(&|b| format!("{b}RequiredException")),
            find(&|b| format!("Invalid{b}Exception")),
            find(&|b| format!("Maximum{b}ExceededException")),
        ]
    }

    fn generate(&self) -> Result<String> {
        let mut out = String::new();
        let prefix = self.meta["targetPrefix"].as_str().context("targetPrefix")?;
        let signing = self
            .meta
            .get("signingName")
            .or(self.meta.get("endpointPrefix"))
            .and_then(Value::as_str)
            .context("signing name")?;
        let sid = self
            .meta
            .get("serviceId")
            .or(self.meta.get("serviceAbbreviation"))
            .and_then(Value::as_str)
            .context("serviceId")?
            .replace(' ', "");
        writeln!(
            out,
            "//! {sid} API ({prefix}): shapes, validation, errors, handler trait and dispatcher."
        )?;
        writeln!(out, "//!")?;
        writeln!(out, "//! Generated by `cargo xtask codegen` from botocore {BOTOCORE_VERSION}'s model; do not edit.\n")?;
        writeln!(
            out,
            "#![allow(clippy::all, unused_imports, unused_variables, non_camel_case_types)]\n"
        )?;
        writeln!(out, "use crate::runtime::*;")?;
        writeln!(out, "use regex::Regex;")?;
        writeln!(out, "use serde::{{Deserialize, Serialize}};")?;
        writeln!(out, "use std::collections::BTreeMap;")?;
        writeln!(out, "use std::future::Future;")?;
        writeln!(out, "use std::sync::LazyLock;\n")?;
        writeln!(out, "/// The `X-Amz-Target` prefix of this service.")?;
        writeln!(out, "pub const TARGET_PREFIX: &str = {prefix:?};")?;
        writeln!(
            out,
            "/// The SigV4 signing name (credential scope service) and IAM action prefix."
        )?;
        writeln!(out, "pub const SIGNING_NAME: &str = {signing:?};\n")?;

        // Errors.
        let exceptions = self.exceptions();
        writeln!(
            out,
            "/// The exception shapes this service's model defines."
        )?;
        writeln!(out, "#[derive(Debug, Clone, Copy, PartialEq, Eq)]")?;
        writeln!(out, "pub enum ErrorKind {{")?;
        for (e, _) in &exceptions {
            writeln!(out, "    {},", type_ident(e))?;
        }
        writeln!(out, "}}\n")?;
        writeln!(out, "impl ErrorKind {{")?;
        writeln!(out, "    /// The `__type` AWS sends for this error.")?;
        writeln!(
            out,
            "    pub fn code(self) -> &'static str {{\n        match self {{"
        )?;
        for (e, _) in &exceptions {
            writeln!(out, "            ErrorKind::{} => {e:?},", type_ident(e))?;
        }
        writeln!(out, "        }}\n    }}\n")?;
        writeln!(out, "    /// The HTTP status AWS answers this error with.")?;
        writeln!(
            out,
            "    pub fn status(self) -> u16 {{\n        match self {{"
        )?;
        for (e, s) in &exceptions {
            writeln!(out, "            ErrorKind::{} => {s},", type_ident(e))?;
        }
        writeln!(out, "        }}\n    }}\n")?;
        writeln!(out, "    /// An [`ApiError`] of this kind with a message.")?;
        writeln!(
            out,
            "    pub fn with(self, message: impl Into<String>) -> ApiError {{"
        )?;
        writeln!(
            out,
            "        ApiError::new(self.code(), self.status(), message)"
        )?;
        writeln!(out, "    }}\n}}\n")?;

        // Shapes.
        let reachable = self.reachable()?;
        for name in &reachable {
            if self.kind(name)? == "structure" {
                self.emit_struct(&mut out, name)?;
            }
        }

        // Operations.
        let trait_name = format!("{sid}Api");
        writeln!(out, "/// Every operation of the service, in model order.")?;
        writeln!(out, "pub const OPERATIONS: &[&str] = &[")?;
        for op in self.ops.keys() {
            writeln!(out, "    {op:?},")?;
        }
        writeln!(out, "];\n")?;
        writeln!(
            out,
            "/// One method per operation; the defaults answer 501 `NotImplementedException`."
        )?;
        writeln!(out, "pub trait {trait_name}: Send + Sync {{")?;
        let mut arms = String::new();
        for (op, spec) in self.ops {
            let method = field_ident(op);
            let input = spec.get("input").and_then(|v| v["shape"].as_str());
            let output = spec.get("output").and_then(|v| v["shape"].as_str());
            let in_ty = input.map(type_ident).unwrap_or_else(|| "Empty".into());
            let out_ty = output.map(type_ident).unwrap_or_else(|| "Empty".into());
            writeln!(
                out,
                "    fn {method}(&self, ctx: &Context, input: {in_ty}) -> impl Future<Output = Result<{out_ty}, ApiError>> + Send {{"
            )?;
            writeln!(out, "        let _ = (ctx, input);")?;
            writeln!(
                out,
                "        async move {{ Err(ApiError::not_implemented({sid:?}, {op:?})) }}"
            )?;
            writeln!(out, "    }}")?;

            // Per-operation mapping of top-level validation failures to the service's exceptions.
            let op_errors: BTreeSet<&str> = spec
                .get("errors")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|e| e["shape"].as_str()).collect())
                .unwrap_or_default();
            let mut table = Vec::new();
            if let Some(input) = input {
                for (m, t) in self.members(input)? {
                    let errs = self.member_errors(&op_errors, m, t);
                    if errs.iter().any(Option::is_some) {
                        let f = |e: &Option<String>| match e {
                            Some(e) => format!("Some({e:?})"),
                            None => "None".into(),
                        };
                        table.push(format!(
                            "({m:?}, {}, {}, {})",
                            f(&errs[0]),
                            f(&errs[1]),
                            f(&errs[2])
                        ));
                    }
                }
            }
            writeln!(arms, "        {op:?} => {{")?;
            writeln!(arms, "            let input: {in_ty} = decode(input)?;")?;
            writeln!(arms, "            check(&input, &[{}])?;", table.join(", "))?;
            writeln!(arms, "            encode(&api.{method}(ctx, input).await?)")?;
            writeln!(arms, "        }}")?;
        }
        writeln!(out, "}}\n")?;
        writeln!(out, "/// Decodes, validates and routes one request to `api`; returns the JSON response body.")?;
        writeln!(
            out,
            "pub async fn dispatch<A: {trait_name} + ?Sized>(api: &A, ctx: &Context, operation: &str, input: serde_json::Value) -> Result<Vec<u8>, ApiError> {{"
        )?;
        writeln!(out, "    match operation {{")?;
        out.push_str(&arms);
        writeln!(
            out,
            "        _ => Err(ApiError::unknown_operation(TARGET_PREFIX, operation)),"
        )?;
        writeln!(out, "    }}\n}}")?;
        Ok(out)
    }
}

fn opt_u(v: Option<f64>) -> String {
    v.map(|x| format!("Some({})", x as u64))
        .unwrap_or_else(|| "None".into())
}

fn opt_f(v: Option<f64>) -> String {
    v.map(|x| format!("Some({x:?})"))
        .unwrap_or_else(|| "None".into())
}

fn generate_all(root: &Path) -> Result<BTreeMap<String, String>> {
    let mut files = BTreeMap::new();
    let mut modrs = String::new();
    writeln!(
        modrs,
        "//! Code generated from AWS's service models by `cargo xtask codegen`; do not edit.\n"
    )?;
    let mut table = String::new();
    let botocore = SERVICES
        .iter()
        .map(|(s, m)| (format!("models/botocore/{s}.json"), *m));
    let agent = AGENT_SERVICES
        .iter()
        .map(|(s, m)| (format!("models/agent/{s}.json"), *m));
    for (file, module) in botocore.chain(agent) {
        let path = root.join(file);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let model: Value = serde_json::from_str(&text)?;
        let svc = Service {
            module,
            shapes: model["shapes"].as_object().context("shapes")?,
            ops: model["operations"].as_object().context("operations")?,
            meta: model["metadata"].as_object().context("metadata")?,
        };
        files.insert(format!("{module}.rs"), svc.generate()?);
        writeln!(modrs, "pub mod {module};")?;
        writeln!(
            table,
            "    ({module}::TARGET_PREFIX, {module}::SIGNING_NAME, {module}::OPERATIONS),"
        )?;
    }
    writeln!(
        modrs,
        "\n/// (target prefix, signing name, operations) of every generated service."
    )?;
    writeln!(
        modrs,
        "pub const SERVICES: &[(&str, &str, &[&str])] = &[\n{table}];"
    )?;
    files.insert("mod.rs".into(), modrs);
    Ok(files)
}

/// `regions.rs`: every region of every partition in botocore's `partitions.json`, with the
/// partition's ARN name, sorted by region.
fn regions(root: &Path) -> Result<String> {
    let path = root.join("models/botocore/partitions.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let model: Value = serde_json::from_str(&text)?;
    let mut rows = BTreeMap::new();
    for p in model["partitions"].as_array().context("partitions")? {
        let arn_partition = p["outputs"]["name"].as_str().context("partition name")?;
        for region in p["regions"].as_object().context("regions")?.keys() {
            // Pseudo-regions such as `aws-global` are endpoints, not places resources live.
            if region.starts_with(arn_partition) && region.ends_with("-global") {
                continue;
            }
            rows.insert(region.clone(), arn_partition.to_owned());
        }
    }
    let mut out = String::new();
    writeln!(
        out,
        "//! The regions of every AWS partition, from botocore's `partitions.json`: generated by `cargo xtask codegen`, do not edit.\n"
    )?;
    writeln!(
        out,
        "/// (region, the ARN partition its resources are named in), sorted by region."
    )?;
    writeln!(out, "pub const REGIONS: &[(&str, &str)] = &[")?;
    for (region, partition) in &rows {
        writeln!(out, "    ({region:?}, {partition:?}),")?;
    }
    writeln!(out, "];")?;
    Ok(out)
}

fn rustfmt(text: &str) -> Result<String> {
    use std::io::Write;
    let mut child = std::process::Command::new("rustfmt")
        .args(["--edition", "2021", "--emit", "stdout"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running rustfmt")?;
    let mut stdin = child.stdin.take().context("rustfmt stdin")?;
    let input = text.to_owned();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("rustfmt writer panicked"))??;
    if !out.status.success() {
        bail!("rustfmt failed on generated code");
    }
    Ok(String::from_utf8(out.stdout)?)
}

pub fn run(root: &Path, check: bool) -> Result<()> {
    let mut files: BTreeMap<PathBuf, String> = generate_all(root)?
        .into_iter()
        .map(|(name, text)| (root.join("crates/model/src/generated").join(name), text))
        .collect();
    files.insert(root.join("crates/regions/src/generated.rs"), regions(root)?);
    let mut stale = Vec::new();
    for (path, text) in &files {
        let text = rustfmt(text)?;
        let dir = path.parent().context("generated file's directory")?;
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current != text {
            if check {
                stale.push(path.display().to_string());
            } else {
                std::fs::create_dir_all(dir)?;
                std::fs::write(path, text)?;
                println!("wrote {}", path.display());
            }
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated code is stale (run `cargo xtask codegen`): {}",
            stale.join(", ")
        );
    }
    if check {
        println!("generated code is current ({} files)", files.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_handles_acronyms() {
        assert_eq!(snake_case("BatchGetRepositories"), "batch_get_repositories");
        assert_eq!(snake_case("cloneUrlHttp"), "clone_url_http");
        assert_eq!(snake_case("KMSKeyId"), "kms_key_id");
        assert_eq!(snake_case("repositoryId"), "repository_id");
        assert_eq!(snake_case("s3Location"), "s3_location");
    }

    #[test]
    fn patterns_are_anchored_and_ascii() {
        let re = regex::Regex::new(&rust_pattern(r"[\w\.-]+")).unwrap();
        assert!(re.is_match("my-repo.v2_x"));
        assert!(!re.is_match("a/b"));
        assert!(!re.is_match("répo"));
    }
}
