//! Pulls build images from container registries (the OCI distribution API, v2): the
//! manifest for linux on this machine's architecture, its config and layers, each checked
//! against its digest, written as an OCI image layout and imported like `slipway admin
//! import-image` does. Anonymous access, with the bearer-token challenge registries use;
//! loopback registries are spoken to over plain HTTP, others over HTTPS.

use futures_util::StreamExt as _;
use serde_json::Value;
use sha2::Digest as _;
use slipway_codebuild::images::{self, Image};
use std::path::Path;

/// An image reference: registry host, repository, and tag or digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub registry: String,
    pub repository: String,
    pub reference: String,
}

impl Reference {
    /// Docker's reading of an image name: the first component is a registry when it has a
    /// `.` or `:` or is `localhost`; otherwise the image is on Docker Hub (`library/` for
    /// one-component names). The tag defaults to `latest`.
    pub fn parse(name: &str) -> Option<Reference> {
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return None;
        }
        let (registry, rest) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_owned(), rest.to_owned())
            }
            _ => ("registry-1.docker.io".to_owned(), name.to_owned()),
        };
        let (repo, reference) = if let Some((r, d)) = rest.split_once('@') {
            (r.to_owned(), d.to_owned())
        } else {
            match rest.rsplit_once(':') {
                Some((r, t)) if !t.contains('/') => (r.to_owned(), t.to_owned()),
                _ => (rest.clone(), "latest".to_owned()),
            }
        };
        let repository = if registry == "registry-1.docker.io" && !repo.contains('/') {
            format!("library/{repo}")
        } else {
            repo
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.split('/').all(|c| {
                    !c.is_empty()
                        && c != ".."
                        && c.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || "._-".contains(ch))
                })
        };
        (valid(&repository)
            && !reference.is_empty()
            && reference
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c)))
        .then_some(Reference {
            registry,
            repository,
            reference,
        })
    }

    fn base(&self) -> String {
        let host = self.registry.split(':').next().unwrap_or_default();
        let plain = host == "localhost" || host.starts_with("127.") || host == "[::1]";
        format!(
            "{}://{}/v2/{}",
            if plain { "http" } else { "https" },
            self.registry,
            self.repository
        )
    }
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// A registry session: the client and the bearer token once one was asked for.
struct Session<'a> {
    http: &'a reqwest::Client,
    token: Option<String>,
}

impl Session<'_> {
    /// GET `url`, answering a bearer challenge (anonymously) once.
    async fn get(&mut self, url: &str, accept: &str) -> Result<reqwest::Response, String> {
        for _ in 0..2 {
            let mut req = self.http.get(url).header("accept", accept);
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && self.token.is_none() {
                let challenge = resp
                    .headers()
                    .get("www-authenticate")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                self.token = Some(self.token_for(&challenge).await?);
                continue;
            }
            if !resp.status().is_success() {
                return Err(format!("{url}: {}", resp.status()));
            }
            return Ok(resp);
        }
        Err(format!("{url}: not authorised"))
    }

    /// An anonymous token for a `Bearer realm="…",service="…",scope="…"` challenge.
    async fn token_for(&self, challenge: &str) -> Result<String, String> {
        let params = challenge
            .strip_prefix("Bearer ")
            .ok_or_else(|| format!("the registry asks for {challenge:?}, not a bearer token"))?;
        let mut realm = None;
        let mut query = Vec::new();
        for part in params.split(',') {
            if let Some((k, v)) = part.trim().split_once('=') {
                let v = v.trim_matches('"').to_owned();
                match k {
                    "realm" => realm = Some(v),
                    "service" | "scope" => query.push((k.to_owned(), v)),
                    _ => {}
                }
            }
        }
        let realm = realm.ok_or("the registry's challenge names no realm")?;
        let q: Vec<String> = query
            .iter()
            .map(|(k, v)| format!("{k}={}", slipway_api::sigv4::uri_encode(v, true)))
            .collect();
        let url = if q.is_empty() {
            realm.clone()
        } else {
            format!(
                "{realm}{}{}",
                if realm.contains('?') { '&' } else { '?' },
                q.join("&")
            )
        };
        let v: Value = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{realm}: {e}"))?
            .bytes()
            .await
            .map_err(|e| format!("{realm}: {e}"))
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("{realm}: {e}")))?;
        v["token"]
            .as_str()
            .or(v["access_token"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{realm} gave no token"))
    }

    /// Downloads blob `digest` into the layout, checking it.
    async fn blob(&mut self, r: &Reference, digest: &str, layout: &Path) -> Result<(), String> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
            .ok_or_else(|| format!("unsupported digest {digest:?}"))?;
        let resp = self
            .get(&format!("{}/blobs/{digest}", r.base()), "*/*")
            .await?;
        let path = layout.join("blobs/sha256").join(hex);
        let mut out = tokio::fs::File::create(&path)
            .await
            .map_err(|e| e.to_string())?;
        let mut hasher = sha2::Sha256::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| e.to_string())?;
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut out, &chunk)
                .await
                .map_err(|e| e.to_string())?;
        }
        if hex::encode(hasher.finalize()) != hex {
            return Err(format!("blob {digest} does not match its digest"));
        }
        Ok(())
    }

    /// The manifest `reference` names (descending an index to this platform's entry), and
    /// its bytes.
    async fn manifest(&mut self, r: &Reference) -> Result<(Value, Vec<u8>), String> {
        let mut reference = r.reference.clone();
        for _ in 0..3 {
            let url = format!("{}/manifests/{reference}", r.base());
            let bytes = self
                .get(&url, MANIFEST_TYPES)
                .await?
                .bytes()
                .await
                .map_err(|e| e.to_string())?;
            // A manifest asked for by digest (pinned by the user, or an index's entry) must
            // be the one that digest names.
            if reference.starts_with("sha256:") && images::oci_digest(&bytes) != reference {
                return Err(format!("{url}: the manifest does not match its digest"));
            }
            let doc: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{url}: {e}"))?;
            let Some(list) = doc["manifests"].as_array() else {
                return Ok((doc, bytes.to_vec()));
            };
            let arch = images::platform_arch();
            reference = list
                .iter()
                .find(|m| m["platform"]["os"] == "linux" && m["platform"]["architecture"] == arch)
                .and_then(|m| m["digest"].as_str())
                .ok_or_else(|| format!("{url}: no image for linux/{arch}"))?
                .to_owned();
        }
        Err("image indexes nested too deeply".into())
    }
}

/// The digest of the manifest `name` stands for in its registry now (this platform's, for
/// an index): what a pulled image is compared with to see whether its tag moved.
pub async fn current_digest(http: &reqwest::Client, name: &str) -> Result<String, String> {
    let r = Reference::parse(name).ok_or_else(|| format!("{name:?} is not an image reference"))?;
    let (_, bytes) = Session { http, token: None }.manifest(&r).await?;
    Ok(images::oci_digest(&bytes))
}

/// Pulls `name` from its registry and imports it under `images`.
pub async fn pull(
    http: &reqwest::Client,
    images_dir: &Path,
    name: &str,
    say: &mut (dyn FnMut(&str) + Send),
) -> Result<Image, String> {
    let r = Reference::parse(name).ok_or_else(|| format!("{name:?} is not an image reference"))?;
    say(&format!(
        "Pulling {name} from {} ({})",
        r.registry, r.repository
    ));
    let tmp = images_dir.join(format!(".pull-{}", uuid::Uuid::new_v4().simple()));
    let layout = tmp.join("layout");
    let result = async {
        std::fs::create_dir_all(layout.join("blobs/sha256")).map_err(|e| e.to_string())?;
        let mut s = Session { http, token: None };
        let (manifest, bytes) = s.manifest(&r).await?;
        let digests: Vec<String> = std::iter::once(&manifest["config"])
            .chain(manifest["layers"].as_array().into_iter().flatten())
            .filter_map(|d| d["digest"].as_str().map(str::to_owned))
            .collect();
        for d in &digests {
            s.blob(&r, d, &layout).await?;
        }
        say(&format!("Pulled {} blob(s)", digests.len()));
        let digest = images::oci_digest(&bytes);
        std::fs::write(
            layout.join("blobs/sha256").join(&digest[7..]),
            &bytes,
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            layout.join("index.json"),
            serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": digest, "mediaType": manifest["mediaType"]}]})
                .to_string(),
        )
        .map_err(|e| e.to_string())?;
        let (dir, name, layout) = (images_dir.to_owned(), name.to_owned(), layout.clone());
        tokio::task::spawn_blocking(move || {
            images::import_as(&dir, &name, &layout, true, &mut |_| {})
        })
            .await
            .map_err(|e| e.to_string())?
    }
    .await;
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_read_as_docker_reads_them() {
        let r = |reg: &str, repo: &str, refr: &str| Reference {
            registry: reg.into(),
            repository: repo.into(),
            reference: refr.into(),
        };
        assert_eq!(
            Reference::parse("ubuntu"),
            Some(r("registry-1.docker.io", "library/ubuntu", "latest"))
        );
        assert_eq!(
            Reference::parse("team/app:1.2"),
            Some(r("registry-1.docker.io", "team/app", "1.2"))
        );
        assert_eq!(
            Reference::parse("127.0.0.1:5000/team/app:1"),
            Some(r("127.0.0.1:5000", "team/app", "1"))
        );
        assert_eq!(
            Reference::parse("localhost/app@sha256:abc"),
            Some(r("localhost", "app", "sha256:abc"))
        );
        assert_eq!(
            Reference::parse("ghcr.io/org/tool"),
            Some(r("ghcr.io", "org/tool", "latest"))
        );
        for bad in [
            "",
            "a b",
            "reg.io/../x",
            "reg.io//x",
            "x:y/z:%",
            "ubuntu:",
            "app@",
        ] {
            assert_eq!(Reference::parse(bad), None, "{bad}");
        }
        assert!(r("127.0.0.1:5000", "a", "1").base().starts_with("http://"));
        assert!(r("ghcr.io", "a", "1").base().starts_with("https://"));
    }

    /// Mutated names never panic the parser, and what it accepts is always safe to put in
    /// a URL path: no empty or `..` repository component, no `/` in the registry or tag.
    #[test]
    fn mutated_references_never_panic_or_escape() {
        let mut next = slipway_codebuild::fuzz::xorshift(0x9e37_79b9_7f4a_7c15);
        let bases = [
            "ubuntu",
            "team/app:1.2",
            "127.0.0.1:5000/team/app:1",
            "localhost/app@sha256:abc",
            "ghcr.io/org/tool",
        ];
        let alphabet = b"/:@.-_a9 %\\\0";
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..20_000 {
            let mut b = bases[(next() as usize) % bases.len()].as_bytes().to_vec();
            for _ in 0..(1 + next() % 3) {
                let i = (next() as usize) % (b.len() + 1);
                match next() % 3 {
                    0 if i < b.len() => b[i] = alphabet[(next() as usize) % alphabet.len()],
                    1 if i < b.len() => {
                        b.remove(i);
                    }
                    _ => b.insert(i, alphabet[(next() as usize) % alphabet.len()]),
                }
            }
            match Reference::parse(&String::from_utf8_lossy(&b)) {
                Some(r) => {
                    ok += 1;
                    assert!(!r.registry.is_empty() && !r.registry.contains('/'), "{r:?}");
                    assert!(
                        r.repository.split('/').all(|c| !c.is_empty() && c != ".."),
                        "{r:?}"
                    );
                    assert!(
                        !r.reference.is_empty() && !r.reference.contains('/'),
                        "{r:?}"
                    );
                }
                None => refused += 1,
            }
        }
        assert!(ok > 1000 && refused > 1000, "ok {ok}, refused {refused}");
    }
}
