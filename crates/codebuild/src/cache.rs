//! Build caches: the buildspec's `cache.paths` packed into one tar file when a build
//! succeeds and unpacked before the next one's INSTALL phase. Packing and unpacking run in
//! the build's own sandbox (so any path the build can write is cacheable, and the image's
//! `tar` does the work); where the tar file is kept — an S3 bucket or the worker's disk
//! (LOCAL_CUSTOM_CACHE) — is the worker's business.
//!
//! A path is cached from its last directory before any glob character: `/root/.m2/**/*`
//! caches `/root/.m2`, `node_modules/**/*` the source's `node_modules` (relative paths are
//! relative to the source directory).

use crate::buildspec::BuildSpec;

/// Where a build sees its cache directory (`in.tar` to restore, `out.tar` written).
pub const CACHE_PATH: &str = "/codebuild/cache";

/// The directories a build's `cache.paths` name, as the build sees them.
pub fn roots(spec: &BuildSpec, src_path: &str) -> Vec<String> {
    let Some(cache) = &spec.cache else {
        return Vec::new();
    };
    let mut out: Vec<String> = Vec::new();
    for p in &cache.paths {
        let fixed: Vec<&str> = p
            .split('/')
            .take_while(|c| !c.contains(['*', '?', '[', '{']))
            .filter(|c| !c.is_empty() && *c != ".")
            .collect();
        if fixed.contains(&"..") {
            continue;
        }
        let root = if p.starts_with('/') {
            format!("/{}", fixed.join("/"))
        } else if fixed.is_empty() {
            src_path.to_owned()
        } else {
            format!("{src_path}/{}", fixed.join("/"))
        };
        if root != "/" && !out.contains(&root) {
            out.push(root);
        }
    }
    out
}

/// Whether the buildspec asks for its cache to be restored (`action` absent or `restore`).
pub fn restores(spec: &BuildSpec) -> bool {
    spec.cache
        .as_ref()
        .is_some_and(|c| !c.paths.is_empty() && c.action.as_deref() != Some("save"))
}

/// Whether the buildspec asks for its cache to be saved (`action` absent or `save`).
pub fn saves(spec: &BuildSpec) -> bool {
    spec.cache
        .as_ref()
        .is_some_and(|c| !c.paths.is_empty() && c.action.as_deref() != Some("restore"))
}

/// The cache keys to look for, in order: the buildspec's `key` (else `default`), then its
/// `fallback-keys`; each made safe as a file name.
pub fn keys(spec: &BuildSpec) -> Vec<String> {
    let safe = |k: &str| -> String {
        k.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_owned()
    };
    let Some(cache) = &spec.cache else {
        return vec!["default".into()];
    };
    let mut out = vec![safe(cache.key.as_deref().unwrap_or("default"))];
    out.extend(cache.fallback_keys.iter().map(|k| safe(k)));
    out.retain(|k| !k.is_empty());
    out.dedup();
    out
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The shell script that unpacks `dir/in.tar` over the root (`dir` as the build sees it).
/// Files that already exist (the fresh source above all) are kept: a cache never overwrites
/// what the build's source provides.
pub fn restore_script(dir: &str) -> String {
    format!(
        "tar --skip-old-files -xpf {}/in.tar -C / && echo 'Cache restored'",
        quote(dir)
    )
}

/// The shell script that packs the cache roots that exist into `dir/out.tar`. It runs in a
/// subshell, so the build's own shell state is untouched.
pub fn save_script(roots: &[String], dir: &str) -> String {
    let list: Vec<String> = roots.iter().map(|r| quote(r)).collect();
    format!(
        "( set --; for p in {}; do if [ -e \"$p\" ]; then set -- \"$@\" \"${{p#/}}\"; fi; done; \
         if [ $# -gt 0 ]; then tar -cpf {dir}/out.tar -C / \"$@\" && echo \"Cache saved: $*\"; \
         else echo 'No cache path exists; nothing cached'; fi )",
        list.join(" "),
        dir = quote(dir)
    )
}
