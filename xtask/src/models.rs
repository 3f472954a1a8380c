//! Imports botocore's service models into `models/botocore/`, pinned and stripped of documentation.

use crate::{BOTOCORE_VERSION, SERVICES};
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
        let mut text = serde_json::to_string_pretty(&model)?;
        text.push('\n');
        let path = out_dir.join(format!("{service}.json"));
        std::fs::write(&path, text)?;
        println!("wrote {}", path.display());
    }
    std::fs::write(
        out_dir.join("VERSION"),
        format!("botocore {BOTOCORE_VERSION}\n"),
    )?;
    Ok(())
}
