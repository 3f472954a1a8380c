//! appspec.yml version 0.0 for the Server platform: `files`, `file_exists_behavior`,
//! `permissions` and `hooks`, read into typed values; every error names the key.

use marked_yaml::Node;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Default)]
pub struct AppSpec {
    pub files: Vec<(String, String)>,
    pub file_exists_behavior: Option<String>,
    pub permissions: Vec<Permission>,
    pub hooks: BTreeMap<String, Vec<Script>>,
}

#[derive(Debug, Clone, Default)]
pub struct Permission {
    pub object: String,
    pub pattern: String,
    pub except: Vec<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub mode: Option<u32>,
    pub acls: Vec<String>,
    /// Which kinds it applies to: files, directories.
    pub files: bool,
    pub directories: bool,
}

#[derive(Debug, Clone)]
pub struct Script {
    pub location: String,
    pub timeout: u64,
    pub runas: Option<String>,
}

/// The script hooks appspec may name.
pub const HOOKS: &[&str] = &[
    "BeforeBlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "BeforeInstall",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AfterAllowTraffic",
];

fn to_json(n: &Node) -> Value {
    match n {
        Node::Scalar(s) => {
            let t = s.as_str();
            if s.may_coerce() && matches!(t, "" | "~" | "null" | "Null" | "NULL") {
                Value::Null
            } else {
                Value::String(t.to_owned())
            }
        }
        Node::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Node::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m.iter() {
                out.insert(k.as_str().to_owned(), to_json(v));
            }
            Value::Object(out)
        }
    }
}

fn string(v: &Value, path: &str) -> Result<String, String> {
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("The appspec's {path} must be a string"))
}

fn list<'a>(v: &'a Value, path: &str) -> Result<&'a [Value], String> {
    match v {
        Value::Array(a) => Ok(a),
        Value::Null => Ok(&[]),
        _ => Err(format!("The appspec's {path} must be a list")),
    }
}

/// Parses an appspec.
pub fn parse(text: &str) -> Result<AppSpec, String> {
    let root = marked_yaml::parse_yaml(0, text)
        .map_err(|e| format!("The appspec is not valid YAML: {e}"))?;
    let v = to_json(&root);
    let Some(top) = v.as_object() else {
        return Err("The appspec must be a YAML mapping".into());
    };
    match top.get("version").and_then(Value::as_str) {
        Some("0.0") => {}
        Some(other) => {
            return Err(format!(
                "The appspec version {other} is not supported: expected 0.0"
            ))
        }
        None => return Err("The appspec has no version: expected version: 0.0".into()),
    }
    match top.get("os").and_then(Value::as_str) {
        Some("linux") => {}
        Some(other) => {
            return Err(format!(
                "The appspec os {other} is not supported here: expected linux"
            ))
        }
        None => return Err("The appspec has no os: expected os: linux".into()),
    }
    let mut spec = AppSpec::default();
    for (i, f) in list(top.get("files").unwrap_or(&Value::Null), "files")?
        .iter()
        .enumerate()
    {
        let source = string(
            f.get("source").unwrap_or(&Value::Null),
            &format!("files[{i}].source"),
        )?;
        let destination = string(
            f.get("destination").unwrap_or(&Value::Null),
            &format!("files[{i}].destination"),
        )?;
        if !destination.starts_with('/') {
            return Err(format!(
                "The appspec's files[{i}].destination must be an absolute path"
            ));
        }
        spec.files.push((source, destination));
    }
    if let Some(b) = top.get("file_exists_behavior").filter(|b| !b.is_null()) {
        let b = string(b, "file_exists_behavior")?.to_uppercase();
        if !matches!(b.as_str(), "DISALLOW" | "OVERWRITE" | "RETAIN") {
            return Err(format!("The appspec's file_exists_behavior {b} is not valid: DISALLOW, OVERWRITE or RETAIN"));
        }
        spec.file_exists_behavior = Some(b);
    }
    for (i, p) in list(
        top.get("permissions").unwrap_or(&Value::Null),
        "permissions",
    )?
    .iter()
    .enumerate()
    {
        let path = format!("permissions[{i}]");
        let object = string(
            p.get("object").unwrap_or(&Value::Null),
            &format!("{path}.object"),
        )?;
        let mode = match p.get("mode").filter(|m| !m.is_null()) {
            Some(m) => {
                let s = string(m, &format!("{path}.mode"))?;
                let digits = format!("{s:0>3}");
                if digits.len() > 4 || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                    return Err(format!(
                        "The appspec's {path}.mode {s} is not an octal mode"
                    ));
                }
                Some(u32::from_str_radix(&digits, 8).unwrap_or(0o644))
            }
            None => None,
        };
        let types: Vec<String> = list(
            p.get("type").unwrap_or(&Value::Null),
            &format!("{path}.type"),
        )?
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
        if let Some(bad) = types
            .iter()
            .find(|t| !matches!(t.as_str(), "file" | "directory"))
        {
            return Err(format!(
                "The appspec's {path}.type {bad} is not valid: file or directory"
            ));
        }
        let get = |k: &str| p.get(k).and_then(Value::as_str).map(str::to_owned);
        spec.permissions.push(Permission {
            object,
            pattern: get("pattern").unwrap_or_else(|| "**".into()),
            except: list(
                p.get("except").unwrap_or(&Value::Null),
                &format!("{path}.except"),
            )?
            .iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect(),
            owner: get("owner"),
            group: get("group"),
            mode,
            acls: list(
                p.get("acls").unwrap_or(&Value::Null),
                &format!("{path}.acls"),
            )?
            .iter()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect(),
            files: types.is_empty() || types.iter().any(|t| t == "file"),
            directories: types.is_empty() || types.iter().any(|t| t == "directory"),
        });
    }
    if let Some(hooks) = top.get("hooks").filter(|h| !h.is_null()) {
        let Some(hooks) = hooks.as_object() else {
            return Err("The appspec's hooks must be a mapping".into());
        };
        for (event, scripts) in hooks {
            if !HOOKS.contains(&event.as_str()) {
                return Err(format!(
                    "The appspec names an unknown lifecycle event: {event}"
                ));
            }
            let mut out = Vec::new();
            for (i, s) in list(scripts, &format!("hooks.{event}"))?.iter().enumerate() {
                let path = format!("hooks.{event}[{i}]");
                let location = string(
                    s.get("location").unwrap_or(&Value::Null),
                    &format!("{path}.location"),
                )?;
                let timeout = match s.get("timeout").filter(|t| !t.is_null()) {
                    Some(t) => string(t, &format!("{path}.timeout"))?
                        .parse::<u64>()
                        .ok()
                        .filter(|t| (1..=3600).contains(t))
                        .ok_or_else(|| {
                            format!("The appspec's {path}.timeout must be 1 to 3600 seconds")
                        })?,
                    None => 3600,
                };
                out.push(Script {
                    location,
                    timeout,
                    runas: s.get("runas").and_then(Value::as_str).map(str::to_owned),
                });
            }
            spec.hooks.insert(event.clone(), out);
        }
    }
    Ok(spec)
}

/// Does `rel` (a path relative to a permission's object) match a simple glob (`*` only, one
/// level)?
pub fn glob(pattern: &str, rel: &str) -> bool {
    if pattern == "**" {
        return true;
    }
    if rel.contains('/') {
        return false;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == rel;
    }
    let mut rest = rel;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else {
                return false;
            };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            let Some(at) = rest.find(part) else {
                return false;
            };
            rest = &rest[at + part.len()..];
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A revision's appspec is untrusted input on the host: mutations of a valid one (a seeded
    /// xorshift, so a failure replays) parse or fail with a message, never panic.
    #[test]
    fn mutated_appspecs_never_panic() {
        let base = "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv/app\npermissions:\n  - object: /srv/app\n    mode: 755\n    type: [file]\nhooks:\n  ApplicationStart:\n    - location: start.sh\n      timeout: 30\n";
        let alphabet = b"-:[]{}\n #0123456789abc\"'*&!|>%@`";
        let mut x: u64 = 0x5eed_1234_abcd_0001;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..(next() % 6 + 1) {
                let at = (next() as usize) % b.len();
                match next() % 3 {
                    0 => b[at] = alphabet[(next() as usize) % alphabet.len()],
                    1 => b.insert(at, alphabet[(next() as usize) % alphabet.len()]),
                    _ => {
                        b.remove(at);
                    }
                }
            }
            let _ = parse(&String::from_utf8_lossy(&b));
        }
    }

    #[test]
    fn parses_files_permissions_hooks() {
        let s = parse(
            "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /srv/app\nfile_exists_behavior: overwrite\npermissions:\n  - object: /srv/app\n    pattern: \"*.sh\"\n    mode: 755\n    type: [file]\nhooks:\n  ApplicationStart:\n    - location: start.sh\n      timeout: 30\n      runas: root\n",
        )
        .unwrap();
        assert_eq!(s.files, vec![("/".into(), "/srv/app".into())]);
        assert_eq!(s.file_exists_behavior.as_deref(), Some("OVERWRITE"));
        assert_eq!(s.permissions[0].mode, Some(0o755));
        assert!(s.permissions[0].files && !s.permissions[0].directories);
        assert_eq!(s.hooks["ApplicationStart"][0].timeout, 30);
        assert!(parse("version: 0.0\nos: linux\nhooks:\n  Bogus: []\n")
            .unwrap_err()
            .contains("Bogus"));
        assert!(
            parse("version: 0.0\nos: linux\nfiles:\n  - source: a\n    destination: rel\n")
                .is_err()
        );
        assert!(glob("*.sh", "start.sh") && !glob("*.sh", "bin/start.sh") && glob("**", "a/b"));
    }
}
