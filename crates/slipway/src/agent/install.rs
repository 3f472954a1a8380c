//! Install: the previous install's files removed (its cleanup list, newest first), the
//! appspec's `files` copied with `file_exists_behavior`, `permissions` applied to what this
//! install created, and the new cleanup list written.

use super::appspec::AppSpec;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Runs the install of `archive` for deployment group `group`; `behavior` is the
/// deployment's file-exists behaviour (the appspec's own wins).
pub fn install(
    instructions: &Path,
    group: &str,
    archive: &Path,
    spec: &AppSpec,
    behavior: &str,
) -> Result<(), String> {
    let cleanup = instructions.join(format!("{group}-cleanup"));
    if let Ok(text) = std::fs::read_to_string(&cleanup) {
        let mut lines: Vec<&str> = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.trim_end_matches('\n'))
            .collect();
        lines.reverse();
        for l in lines {
            let p = Path::new(l);
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.is_dir() => {
                    let _ = std::fs::remove_dir(p);
                }
                Ok(_) => {
                    let _ = std::fs::remove_file(p);
                }
                Err(_) => {}
            }
        }
        let _ = std::fs::remove_file(&cleanup);
    }
    let behavior = spec.file_exists_behavior.as_deref().unwrap_or(behavior);
    // Instructions first: nothing is copied when one of them is refused.
    let mut mkdirs: Vec<PathBuf> = Vec::new();
    let mut copies: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (source, destination) in &spec.files {
        let src = archive.join(source.trim_start_matches('/'));
        let src = if source.trim_start_matches('/').is_empty() {
            archive.to_path_buf()
        } else {
            src
        };
        if !src.starts_with(archive) || source.split('/').any(|c| c == "..") {
            return Err(format!(
                "The appspec's source {source} is outside the revision"
            ));
        }
        let dest = PathBuf::from(destination);
        let meta = std::fs::symlink_metadata(&src)
            .map_err(|_| format!("The appspec's source {source} is not in the revision"))?;
        if meta.is_dir() {
            plan_dir(&src, &dest, &mut mkdirs, &mut copies)?;
        } else {
            let name = src.file_name().ok_or("a source file has no name")?;
            copies.push((src.clone(), dest.join(name)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (_, d) in &copies {
        if !seen.insert(d.clone()) {
            return Err(format!(
                "The appspec specifies two source files for the same destination ({})",
                d.display()
            ));
        }
    }
    let mut kept = Vec::new();
    for (src, dest) in &copies {
        if std::fs::symlink_metadata(dest).is_ok() {
            match behavior {
                "OVERWRITE" => kept.push((src.clone(), dest.clone())),
                "RETAIN" => {}
                _ => return Err(format!("The deployment failed because a specified file already exists at this location: {}", dest.display())),
            }
        } else {
            kept.push((src.clone(), dest.clone()));
        }
    }
    let mut log = std::fs::File::create(&cleanup)
        .map_err(|e| format!("writing {}: {e}", cleanup.display()))?;
    let mut made_dirs = Vec::new();
    for d in &mkdirs {
        let mut missing = Vec::new();
        let mut cur = d.as_path();
        while std::fs::symlink_metadata(cur).is_err() {
            missing.push(cur.to_path_buf());
            match cur.parent() {
                Some(p) => cur = p,
                None => break,
            }
        }
        for m in missing.into_iter().rev() {
            std::fs::create_dir(&m).map_err(|e| format!("creating {}: {e}", m.display()))?;
            let _ = writeln!(log, "{}", m.display());
            made_dirs.push(m);
        }
    }
    let mut copied = Vec::new();
    for (src, dest) in &kept {
        if let Some(parent) = dest.parent() {
            if std::fs::symlink_metadata(parent).is_err() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("creating {}: {e}", parent.display()))?;
                let _ = writeln!(log, "{}", parent.display());
                made_dirs.push(parent.to_path_buf());
            }
        }
        let _ = writeln!(log, "{}", dest.display());
        let meta = std::fs::symlink_metadata(src).map_err(|e| e.to_string())?;
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(src).map_err(|e| e.to_string())?;
            let _ = std::fs::remove_file(dest);
            std::os::unix::fs::symlink(target, dest)
                .map_err(|e| format!("linking {}: {e}", dest.display()))?;
        } else {
            std::fs::copy(src, dest).map_err(|e| format!("copying to {}: {e}", dest.display()))?;
        }
        copied.push(dest.clone());
    }
    let _ = log.sync_all();
    for p in &spec.permissions {
        let object = Path::new(&p.object);
        let mut targets: Vec<&PathBuf> = Vec::new();
        if p.files {
            targets.extend(copied.iter().filter(|c| c.as_path() == object));
        }
        for (list, wanted) in [(&copied, p.files), (&made_dirs, p.directories)] {
            if !wanted {
                continue;
            }
            for c in list {
                let Ok(rel) = c.strip_prefix(object) else {
                    continue;
                };
                let rel = rel.to_string_lossy();
                if rel.is_empty()
                    || !super::appspec::glob(&p.pattern, &rel)
                    || p.except.iter().any(|e| super::appspec::glob(e, &rel))
                {
                    continue;
                }
                targets.push(c);
            }
        }
        for t in targets {
            apply_permission(t, p)?;
        }
    }
    Ok(())
}

fn plan_dir(
    src: &Path,
    dest: &Path,
    mkdirs: &mut Vec<PathBuf>,
    copies: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(), String> {
    if !dest.is_dir() {
        mkdirs.push(dest.to_path_buf());
    }
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .map_err(|e| format!("reading {}: {e}", src.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let target = dest.join(e.file_name());
        let ft = e.file_type().map_err(|e| e.to_string())?;
        if ft.is_dir() {
            plan_dir(&path, &target, mkdirs, copies)?;
        } else {
            copies.push((path, target));
        }
    }
    Ok(())
}

fn apply_permission(path: &Path, p: &super::appspec::Permission) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(mode) = p.mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    }
    if !p.acls.is_empty() {
        let status = std::process::Command::new("setfacl")
            .arg("--modify")
            .arg(p.acls.join(","))
            .arg(path)
            .status()
            .map_err(|e| format!("setfacl: {e}"))?;
        if !status.success() {
            return Err(format!("setfacl failed on {}", path.display()));
        }
    }
    if p.owner.is_some() || p.group.is_some() {
        let spec = format!(
            "{}:{}",
            p.owner.as_deref().unwrap_or(""),
            p.group.as_deref().unwrap_or("")
        );
        let spec = spec.trim_end_matches(':').to_owned();
        let status = std::process::Command::new("chown")
            .arg("-h")
            .arg(&spec)
            .arg(path)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(format!("chown {spec} failed on {}", path.display()));
        }
    }
    Ok(())
}
