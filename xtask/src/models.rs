//! Imports botocore's service models into `models/botocore/`, pinned and stripped of documentation.

use crate::{BOTOCORE_VERSION, PARTIAL_SERVICES, SERVICES};
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Keys that carry prose or examples, not shape: dropped from the vendored models.
const DROPPED_KEYS: &[&str] = &[
    "documentation",
    "documentationUrl",
    "examples",
    "deprecatedMessage",
];

fn botocore_data_dir() -> Result<PathBuf> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import botocore, os; print(botocore.__version__); print(os.path.join(os.path.dirname(botocore.__file__), 'data'))",
        ])
        .output()
        .context("running python3 to locate botocore")?;
    if !out.status.success() {
        bail!("botocore is not importable: pip install botocore=={BOTOCORE_VERSION}");
    }
    let text = String::from_utf8(out.stdout)?;
    let mut lines = text.lines();
    let version = lines.next().unwrap_or_default();
    if version != BOTOCORE_VERSION {
        bail!("botocore {version} is installed; the pinned version is {BOTOCORE_VERSION} (pip install botocore=={BOTOCORE_VERSION})");
    }
    Ok(PathBuf::from(lines.next().unwrap_or_default()))
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for k in DROPPED_KEYS {
                map.remove(*k);
            }
            map.values_mut().for_each(strip);
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

/// Keeps the shapes of the `keep` operations (and what they reach, and their errors); the
/// other operations stay as bare names.
fn trim(model: &mut Value, keep: &[&str]) -> Result<()> {
    let shapes = model["shapes"].as_object().context("shapes")?.clone();
    let mut wanted = std::collections::BTreeSet::new();
    let mut todo: Vec<String> = Vec::new();
    let ops = model["operations"].as_object_mut().context("operations")?;
    for (name, op) in ops.iter_mut() {
        if keep.contains(&name.as_str()) {
            for key in ["input", "output"] {
                if let Some(s) = op.get(key).and_then(|v| v["shape"].as_str()) {
                    todo.push(s.to_owned());
                }
            }
            for e in op
                .get("errors")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = e["shape"].as_str() {
                    todo.push(s.to_owned());
                }
            }
        } else {
            *op = serde_json::json!({ "name": name, "http": op["http"].clone() });
        }
    }
    while let Some(s) = todo.pop() {
        if !wanted.insert(s.clone()) {
            continue;
        }
        let shape = shapes
            .get(&s)
            .with_context(|| format!("unknown shape {s}"))?;
        let mut refs = Vec::new();
        if let Some(m) = shape.get("members").and_then(Value::as_object) {
            refs.extend(m.values().filter_map(|v| v["shape"].as_str()));
        }
        for key in ["member", "key", "value"] {
            if let Some(r) = shape.get(key).and_then(|v| v["shape"].as_str()) {
                refs.push(r);
            }
        }
        todo.extend(refs.into_iter().map(str::to_owned));
    }
    let kept: serde_json::Map<String, Value> = shapes
        .into_iter()
        .filter(|(k, _)| wanted.contains(k))
        .collect();
    model["shapes"] = Value::Object(kept);
    Ok(())
}

/// Drops the prose (`description`) from each region of `partitions.json`.
fn strip_region_descriptions(v: &mut Value) {
    for p in v["partitions"].as_array_mut().into_iter().flatten() {
        for r in p["regions"]
            .as_object_mut()
            .into_iter()
            .flat_map(|m| m.values_mut())
        {
            if let Some(m) = r.as_object_mut() {
                m.remove("description");
            }
        }
    }
}

fn read_model(dir: &Path) -> Result<Value> {
    let plain = dir.join("service-2.json");
    let gz = dir.join("service-2.json.gz");
    let mut text = String::new();
    if plain.exists() {
        text = std::fs::read_to_string(&plain)?;
    } else {
        flate2::read::GzDecoder::new(
            std::fs::File::open(&gz).with_context(|| gz.display().to_string())?,
        )
        .read_to_string(&mut text)?;
    }
    Ok(serde_json::from_str(&text)?)
}

pub fn import(root: &Path, data_dir: Option<PathBuf>) -> Result<()> {
    let data = match data_dir {
        Some(d) => d,
        None => botocore_data_dir()?,
    };
    let out_dir = root.join("models/botocore");
    std::fs::create_dir_all(&out_dir)?;
    for (service, _) in SERVICES {
        let versions = std::fs::read_dir(data.join(service))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .max()
            .with_context(|| format!("no model for {service}"))?;
        let mut model = read_model(&versions)?;
        strip(&mut model);
        if let Some((_, keep)) = PARTIAL_SERVICES.iter().find(|(s, _)| s == service) {
            trim(&mut model, keep)?;
        }
        let mut text = serde_json::to_string_pretty(&model)?;
        text.push('\n');
        let path = out_dir.join(format!("{service}.json"));
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    // The regions of every partition (and each partition's ARN name), for the region list
    // requests are checked against.
    let mut partitions: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("partitions.json"))?)?;
    strip_region_descriptions(&mut partitions);
    let mut text = serde_json::to_string_pretty(&partitions)?;
    text.push('\n');
    std::fs::write(out_dir.join("partitions.json"), text)?;
    println!("wrote {}", out_dir.join("partitions.json").display());
    std::fs::write(
        out_dir.join("VERSION"),
        format!("botocore {BOTOCORE_VERSION}\n"),
    )?;
    Ok(())
}
