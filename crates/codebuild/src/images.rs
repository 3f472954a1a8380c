//! Build images: OCI image layouts and `docker save` archives imported as a root
//! filesystem a sandbox runs on (`slipway admin import-image NAME PATH`). Layers are applied
//! in order with their whiteouts (`.wh.NAME` removes NAME, `.wh..wh..opq` empties a
//! directory); paths resolve as inside the image (symbolic links followed with the image's
//! root as `/`), so nothing in a layer lands, or is removed, outside it. AWS's curated image
//! names run on the host's root filesystem unless an image of that name was imported.
//!
//! Layout on disk: `IMAGES/<safe name>/rootfs` and `IMAGES/<safe name>/image.json` (name,
//! manifest digest, the image's environment and working directory). A re-import replaces
//! an image whole: the new one is built beside it and renamed into place; the old one stays
//! (for builds running on it) until the worker next starts.

use serde_json::{json, Value};
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// An imported image, ready to run builds on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub name: String,
    pub rootfs: PathBuf,
    /// `KEY=value` pairs from the image's config (PATH first of all).
    pub env: Vec<(String, String)>,
    /// sha256 of the image's manifest.
    pub digest: String,
    pub layers: usize,
    /// Pulled from its registry (checked against it before each build), not imported.
    pub pulled: bool,
}

/// Whether `name` is one of AWS's curated CodeBuild images (which run on the host's root
/// filesystem unless imported).
pub fn is_curated(name: &str) -> bool {
    name.is_empty() || name.starts_with("aws/codebuild/")
}

/// The directory an image named `name` is kept in under `images`.
pub fn image_dir(images: &Path, name: &str) -> PathBuf {
    use sha2::Digest as _;
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = hex::encode(sha2::Sha256::digest(name.as_bytes()));
    images.join(format!("{}-{}", safe.trim_start_matches('.'), &hash[..12]))
}

/// The image `name` if it was imported under `images`.
pub fn lookup(images: &Path, name: &str) -> Option<Image> {
    let dir = image_dir(images, name);
    let meta: Value = serde_json::from_slice(&std::fs::read(dir.join("image.json")).ok()?).ok()?;
    if meta["name"].as_str() != Some(name) {
        return None;
    }
    let env = meta["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Some(Image {
        name: name.to_owned(),
        rootfs: dir.join("rootfs"),
        env,
        digest: meta["digest"].as_str().unwrap_or_default().to_owned(),
        layers: meta["layers"].as_u64().unwrap_or(0) as usize,
        pulled: meta["pulled"].as_bool().unwrap_or(false),
    })
}

/// Names of the images imported under `images`.
pub fn list(images: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(images)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta: Value =
                serde_json::from_slice(&std::fs::read(e.path().join("image.json")).ok()?).ok()?;
            meta["name"].as_str().map(str::to_owned)
        })
        .collect();
    out.sort();
    out
}

/// A relative path inside an image or archive: no `..`, no root.
fn inside(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// A content-addressed blob of an OCI layout (`sha256:HEX` → `blobs/sha256/HEX`).
fn blob(layout: &Path, digest: &str) -> Result<PathBuf, String> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("bad digest {digest:?}"))?;
    if !alg.chars().all(|c| c.is_ascii_alphanumeric())
        || hex.is_empty()
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(format!("bad digest {digest:?}"));
    }
    Ok(layout.join("blobs").join(alg).join(hex))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&data).map_err(|e| format!("{}: {e}", path.display()))
}

/// The OCI digest of `bytes` (`sha256:HEX`): what a manifest or blob is named by.
pub fn oci_digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// This machine's architecture as OCI platforms name it.
pub fn platform_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The manifest an OCI index points to (the linux/amd64 one of a multi-platform index), and
/// its digest (checked against its bytes: the digest a registry knows it by).
fn pick_manifest(layout: &Path, index: &Value, depth: usize) -> Result<(Value, String), String> {
    let manifests = index["manifests"].as_array().cloned().unwrap_or_default();
    let chosen = manifests
        .iter()
        .find(|m| {
            m["platform"]["os"].as_str() == Some("linux")
                && m["platform"]["architecture"].as_str() == Some(platform_arch())
        })
        .or_else(|| manifests.first())
        .ok_or("the image index lists no manifest")?;
    let digest = chosen["digest"].as_str().unwrap_or_default();
    let path = blob(layout, digest)?;
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if oci_digest(&bytes) != digest {
        return Err(format!("manifest {digest} does not match its digest"));
    }
    let doc: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    let nested = doc["manifests"].is_array();
    if nested {
        if depth > 4 {
            return Err("image indexes nested too deeply".into());
        }
        return pick_manifest(layout, &doc, depth + 1);
    }
    Ok((doc, digest.to_owned()))
}

/// `(config file, layer files, manifest digest)` of an unpacked OCI layout or `docker save`
/// archive.
fn describe(dir: &Path) -> Result<(PathBuf, Vec<PathBuf>, String), String> {
    use sha2::Digest as _;
    if dir.join("index.json").is_file() {
        let index = read_json(&dir.join("index.json"))?;
        let (manifest, digest) = pick_manifest(dir, &index, 0)?;
        let config = blob(
            dir,
            manifest["config"]["digest"].as_str().unwrap_or_default(),
        )?;
        let layers = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| blob(dir, l["digest"].as_str().unwrap_or_default()))
            .collect::<Result<Vec<_>, _>>()?;
        return Ok((config, layers, digest));
    }
    if dir.join("manifest.json").is_file() {
        let manifest = read_json(&dir.join("manifest.json"))?;
        let first = manifest
            .as_array()
            .and_then(|a| a.first())
            .ok_or("manifest.json lists no image")?;
        let rel = |p: &Value| {
            p.as_str()
                .and_then(inside)
                .map(|p| dir.join(p))
                .ok_or_else(|| format!("bad path in manifest.json: {p}"))
        };
        let config = rel(&first["Config"])?;
        let layers = first["Layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(rel)
            .collect::<Result<Vec<_>, _>>()?;
        let digest = hex::encode(sha2::Sha256::digest(first.to_string().as_bytes()));
        return Ok((config, layers, format!("sha256:{digest}")));
    }
    Err(
        "not an OCI image layout (no index.json) nor a docker save archive (no manifest.json)"
            .into(),
    )
}

/// A layer's bytes as a tar stream (gzip-compressed layers inflated).
fn layer_reader(path: &Path) -> Result<Box<dyn Read>, String> {
    let mut f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(|e| e.to_string())?;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    match &magic[..n] {
        [0x1f, 0x8b, ..] => Ok(Box::new(flate2::read::GzDecoder::new(f))),
        [0x28, 0xb5, 0x2f, 0xfd] => Err(format!(
            "{}: zstd-compressed layers are not supported; export the image with gzip layers",
            path.display()
        )),
        _ => Ok(Box::new(f)),
    }
}

/// Where `rel` is inside `root` as the image itself sees it: every directory on the way is
/// resolved, symbolic links followed with `root` as `/` (an absolute target starts again at
/// `root`, `..` stops at it) — as a container runtime resolves paths in a root filesystem,
/// so merged-/usr's `bin -> usr/bin` works and nothing resolves outside `root`. The last
/// component is followed only with `follow_last`. Components that do not exist yet are kept
/// as they are.
fn in_root(root: &Path, rel: &Path, follow_last: bool) -> Result<PathBuf, String> {
    /// Linux's limit (ELOOP).
    const MAX_LINKS: usize = 40;
    let parts = |p: &Path| -> Vec<std::ffi::OsString> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n.to_owned()),
                Component::ParentDir => Some("..".into()),
                _ => None,
            })
            .collect()
    };
    let walk = match follow_last {
        true => rel,
        false => rel.parent().unwrap_or(Path::new("")),
    };
    let mut todo: std::collections::VecDeque<_> = parts(walk).into();
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part == ".." {
            at.pop();
            continue;
        }
        let full = root.join(&at).join(&part);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(format!(
                        "{}: too many levels of symbolic links",
                        rel.display()
                    ));
                }
                let target =
                    std::fs::read_link(&full).map_err(|e| format!("{}: {e}", full.display()))?;
                if target.is_absolute() {
                    at.clear();
                }
                for t in parts(&target).into_iter().rev() {
                    todo.push_front(t);
                }
            }
            _ => at.push(part),
        }
    }
    let mut out = root.join(at);
    if !follow_last {
        out.extend(rel.file_name());
    }
    Ok(out)
}

/// Removes `path` (a file, a link — not followed — or a directory with everything in it);
/// with `contents_only`, empties the directory instead. Nothing there is not an error.
fn remove(path: &Path, contents_only: bool) -> Result<(), String> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    let gone = |p: &Path, is_dir: bool| {
        if is_dir {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        }
        .map_err(|e| format!("{}: {e}", p.display()))
    };
    if !contents_only {
        return gone(path, meta.is_dir());
    }
    if meta.is_dir() {
        for e in std::fs::read_dir(path)
            .map_err(|e| e.to_string())?
            .flatten()
        {
            gone(
                &e.path(),
                e.file_type().map_err(|e| e.to_string())?.is_dir(),
            )?;
        }
    }
    Ok(())
}

/// Applies one layer to `rootfs` (which has no symbolic link in its own path).
fn apply_layer(rootfs: &Path, layer: &Path) -> Result<usize, String> {
    let mut archive = tar::Archive::new(layer_reader(layer)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix_root());
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    let mut files = 0;
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| format!("{}: {e}", layer.display()))?;
        let raw = entry
            .path()
            .map_err(|e| e.to_string())?
            .to_string_lossy()
            .into_owned();
        let rel = inside(&raw).ok_or_else(|| format!("layer entry {raw:?} leaves the image"))?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let name = rel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let parent = rel.parent().unwrap_or(Path::new(""));
            if hidden == ".wh..opq" {
                remove(&in_root(rootfs, parent, true)?, true)?;
            } else {
                remove(&in_root(rootfs, &parent.join(hidden), false)?, false)?;
            }
            continue;
        }
        let kind = entry.header().entry_type();
        // Device nodes and FIFOs are not needed in a build image (and need privileges).
        if matches!(
            kind,
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo
        ) {
            continue;
        }
        let dest = in_root(rootfs, &rel, false)?;
        // What a lower layer left there is replaced (a directory merges with a directory).
        if let Ok(m) = std::fs::symlink_metadata(&dest) {
            if !(kind.is_dir() && m.is_dir()) {
                remove(&dest, false)?;
            }
        }
        // Every directory of `dest` is a real one inside `rootfs` (resolved above): those
        // missing are created as plain directories.
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{raw}: {e}"))?;
        }
        let unpacked = if kind.is_hard_link() {
            // The link's target is resolved in the image like any path (`Entry::unpack`
            // would take it relative to this process's directory).
            let target = entry
                .link_name()
                .map_err(|e| e.to_string())?
                .and_then(|t| inside(&t.to_string_lossy()))
                .filter(|t| !t.as_os_str().is_empty())
                .ok_or_else(|| format!("hard link {raw:?} has a bad target"))?;
            std::fs::hard_link(in_root(rootfs, &target, false)?, &dest).map(|_| ())
        } else {
            entry.unpack(&dest).map(|_| ())
        };
        unpacked.map_err(|e| {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            format!("{raw}: {e}{cause}")
        })?;
        files += 1;
    }
    Ok(files)
}

/// Whether this process can give files their owners (it runs as root).
fn nix_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// Removes what imports left behind: replaced images (`.old-*`) and interrupted imports
/// and pulls. Call it when no build runs (a worker's start); how many were removed.
pub fn remove_stale(images: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(images).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if [".old-", ".import-", ".pull-"]
            .iter()
            .any(|p| name.starts_with(p))
            && std::fs::remove_dir_all(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

/// Imports the image at `source` (an OCI layout directory, or a tar of one, or a `docker
/// save` archive) as `name` under `images`; `say` hears what is being done.
pub fn import(
    images: &Path,
    name: &str,
    source: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<Image, String> {
    import_as(images, name, source, false, say)
}

/// [`import`], recording whether the image was `pulled` from its registry.
pub fn import_as(
    images: &Path,
    name: &str,
    source: &Path,
    pulled: bool,
    say: &mut dyn FnMut(&str),
) -> Result<Image, String> {
    if name.is_empty() || name.len() > 255 || name.chars().any(|c| c.is_control()) {
        return Err(format!("invalid image name {name:?}"));
    }
    std::fs::create_dir_all(images).map_err(|e| format!("{}: {e}", images.display()))?;
    let work = images.join(format!(".import-{}", uuid::Uuid::new_v4().simple()));
    let result = (|| {
        std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
        let layout = if source.is_dir() {
            source.to_owned()
        } else {
            say(&format!("unpacking {}", source.display()));
            let unpacked = work.join("archive");
            std::fs::create_dir_all(&unpacked).map_err(|e| e.to_string())?;
            let f = layer_reader(source)?;
            let mut archive = tar::Archive::new(f);
            archive
                .unpack(&unpacked)
                .map_err(|e| format!("{}: not a tar archive: {e}", source.display()))?;
            unpacked
        };
        let (config_path, layers, digest) = describe(&layout)?;
        let config = read_json(&config_path)?;
        let rootfs = work.join("image").join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|e| e.to_string())?;
        // Layers resolve their paths under the real root (`in_root` follows no link above it).
        let rootfs = std::fs::canonicalize(&rootfs).map_err(|e| e.to_string())?;
        for (i, layer) in layers.iter().enumerate() {
            let files = apply_layer(&rootfs, layer)?;
            say(&format!(
                "layer {}/{}: {files} entries",
                i + 1,
                layers.len()
            ));
        }
        let env: Vec<String> = config["config"]["Env"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.as_str().map(str::to_owned))
            .collect();
        let meta = json!({
            "name": name,
            "digest": digest,
            "layers": layers.len(),
            "env": env,
            "workingDir": config["config"]["WorkingDir"],
            "pulled": pulled,
        });
        std::fs::write(work.join("image").join("image.json"), meta.to_string())
            .map_err(|e| e.to_string())?;
        // Into place: the old image (if any) moved aside — builds running on it keep it
        // until `remove_stale` at the next worker start.
        let dest = image_dir(images, name);
        let old = images.join(format!(".old-{}", uuid::Uuid::new_v4().simple()));
        let _ = std::fs::rename(&dest, &old);
        if let Err(e) = std::fs::rename(work.join("image"), &dest) {
            // Another import of the same name (two builds pulling it at once) got there
            // first: theirs serves.
            return lookup(images, name).ok_or_else(|| e.to_string());
        }
        lookup(images, name).ok_or_else(|| "the imported image cannot be read back".to_owned())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}
