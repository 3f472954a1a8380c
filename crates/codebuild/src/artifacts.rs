//! Picks a build's artifact files as the buildspec's `artifacts` section says: `files` globs
//! (with `**`) under `base-directory`, minus `exclude-paths`, with `discard-paths` flattening
//! and `enable-symlinks` keeping links as links.

use crate::buildspec::ArtifactFiles;
use globset::{Glob, GlobSet, GlobSetBuilder};
use std::path::{Component, Path, PathBuf};

/// One file of an artifact: where it goes inside the artifact, and where it is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    pub name: String,
    pub source: PathBuf,
    /// A symbolic link kept as such (`enable-symlinks: yes`): its target.
    pub link: Option<PathBuf>,
}

fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let p = p.trim_start_matches("./");
        let g = globset::GlobBuilder::new(p)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("invalid artifact pattern {p:?}: {e}"))?;
        b.add(g);
        // `dir/**/*` also means the files right in `dir`; `**/x` also matches `x` at the top
        // (globset does the latter itself).
        if let Some(dir) = p.strip_suffix("/**/*") {
            b.add(Glob::new(&format!("{dir}/*")).map_err(|e| e.to_string())?);
        }
    }
    b.build().map_err(|e| e.to_string())
}

/// A relative path that stays inside its base (no `..`, not absolute).
fn contained(p: &str) -> bool {
    Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// The files of `spec` found under `src`, sorted by name.
pub fn pick(spec: &ArtifactFiles, src: &Path) -> Result<Vec<Picked>, String> {
    let base = match spec.base_directory.as_deref() {
        Some(b) if !b.is_empty() => {
            let b = b.trim_start_matches("./").trim_end_matches('/');
            if !contained(b) {
                return Err(format!("base-directory {b:?} leaves the source directory"));
            }
            src.join(b)
        }
        _ => src.to_owned(),
    };
    let include = globs(&spec.files)?;
    let exclude = globs(&spec.exclude_paths)?;
    let mut out = Vec::new();
    let walker = walkdir::WalkDir::new(&base)
        .follow_links(!spec.enable_symlinks)
        .sort_by_file_name();
    for entry in walker.into_iter().filter_map(Result::ok) {
        let is_link = entry.path_is_symlink();
        if entry.file_type().is_dir() && !(is_link && spec.enable_symlinks) {
            continue;
        }
        let Ok(rel) = entry.path().strip_prefix(&base) else {
            continue;
        };
        let rel_s = rel.to_string_lossy();
        if !include.is_match(rel) || exclude.is_match(rel) {
            continue;
        }
        let name = if spec.discard_paths {
            entry.file_name().to_string_lossy().into_owned()
        } else {
            rel_s.into_owned()
        };
        let link = if is_link && spec.enable_symlinks {
            std::fs::read_link(entry.path()).ok()
        } else {
            None
        };
        out.push(Picked {
            name,
            source: entry.path().to_owned(),
            link,
        });
    }
    if out.is_empty() {
        return Err(format!(
            "no matching artifact paths found (files: {})",
            spec.files.join(", ")
        ));
    }
    Ok(out)
}

/// Copies picked files into `dest` (the local mode's `./slipway-artifacts/`).
pub fn copy_to(picked: &[Picked], dest: &Path) -> std::io::Result<()> {
    for p in picked {
        let target = dest.join(&p.name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&target);
        match &p.link {
            Some(link) => std::os::unix::fs::symlink(link, &target)?,
            None => {
                std::fs::copy(&p.source, &target)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for f in [
            "dist/app.js",
            "dist/lib/util.js",
            "dist/lib/util.js.map",
            "dist/tmp/x.tmp",
            "README.md",
            "src/main.rs",
        ] {
            let p = d.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, f).unwrap();
        }
        d
    }

    fn names(spec: &ArtifactFiles, dir: &Path) -> Vec<String> {
        pick(spec, dir)
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    #[test]
    fn globs_base_directory_exclusions_and_discard_paths() {
        let d = tree();
        let all = ArtifactFiles {
            files: vec!["**/*".into()],
            ..Default::default()
        };
        assert_eq!(names(&all, d.path()).len(), 6);
        let dist = ArtifactFiles {
            files: vec!["**/*".into()],
            base_directory: Some("dist".into()),
            exclude_paths: vec!["**/*.map".into(), "tmp/**/*".into()],
            ..Default::default()
        };
        assert_eq!(names(&dist, d.path()), vec!["app.js", "lib/util.js"]);
        let flat = ArtifactFiles {
            files: vec!["dist/**/*.js".into(), "README.md".into()],
            discard_paths: true,
            ..Default::default()
        };
        let mut n = names(&flat, d.path());
        n.sort();
        assert_eq!(n, vec!["README.md", "app.js", "util.js"]);
        let outside = ArtifactFiles {
            files: vec!["**/*".into()],
            base_directory: Some("../etc".into()),
            ..Default::default()
        };
        assert!(pick(&outside, d.path()).is_err());
        let none = ArtifactFiles {
            files: vec!["*.exe".into()],
            ..Default::default()
        };
        assert!(pick(&none, d.path())
            .unwrap_err()
            .contains("no matching artifact paths"));
    }
}
