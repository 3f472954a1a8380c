//! A signed AWS client for the CLI's own commands (`pipeline watch`, `deploy watch`, the
//! agent): JSON-1.1 calls and S3 object reads, credentials from the standard variables or
//! given.

use anyhow::{bail, Context};
use serde_json::Value;
use sha2::Digest as _;
use slipway_api::sigv4;
use std::time::{Duration, SystemTime};

/// A signed AWS JSON-1.1 client (credentials and region from the standard variables).
#[derive(Clone)]
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    host: String,
    key: String,
    secret: String,
    region: String,
}

impl Api {
    pub(crate) fn from_env(endpoint: &str) -> anyhow::Result<Api> {
        let key = std::env::var("AWS_ACCESS_KEY_ID").context("AWS_ACCESS_KEY_ID is not set")?;
        let secret =
            std::env::var("AWS_SECRET_ACCESS_KEY").context("AWS_SECRET_ACCESS_KEY is not set")?;
        let region = std::env::var("AWS_REGION")
            .or_else(|_| std::env::var("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|_| "us-east-1".into());
        Api::new(endpoint, key, secret, region)
    }

    /// A client of `endpoint` signing with these credentials in `region`.
    pub(crate) fn new(
        endpoint: &str,
        key: String,
        secret: String,
        region: String,
    ) -> anyhow::Result<Api> {
        let base = endpoint.trim_end_matches('/').to_owned();
        let host = base
            .split_once("://")
            .map_or(base.as_str(), |(_, h)| h)
            .to_owned();
        Ok(Api {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()?,
            base,
            host,
            key,
            secret,
            region,
        })
    }

    pub(crate) async fn call(
        &self,
        service: &str,
        target: &str,
        body: Value,
    ) -> anyhow::Result<Value> {
        let body = body.to_string();
        let hash = hex::encode(sha2::Sha256::digest(body.as_bytes()));
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut req = self
            .http
            .post(format!("{}/", self.base))
            .header("x-amz-target", target)
            .header("content-type", "application/x-amz-json-1.1");
        for (k, v) in sigv4::sign_request(
            "POST",
            &self.host,
            "/",
            "",
            &hash,
            (&self.key, &self.secret),
            &self.region,
            service,
            now,
        ) {
            req = req.header(k, v);
        }
        let resp = req
            .body(body)
            .send()
            .await
            .with_context(|| format!("calling {}", self.base))?;
        let status = resp.status();
        let bytes = resp.bytes().await.unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{}: {}",
                v["__type"].as_str().unwrap_or("error"),
                v["message"].as_str().unwrap_or_default()
            );
        }
        Ok(v)
    }

    /// An S3 object's bytes (a version of it, when named), read with a signed GET.
    pub(crate) async fn get_object(
        &self,
        bucket: &str,
        key: &str,
        version: Option<&str>,
    ) -> anyhow::Result<bytes::Bytes> {
        let path = format!("/{}/{}", encode(bucket), encode(key));
        let query = version
            .map(|v| format!("versionId={}", encode(v)))
            .unwrap_or_default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            url = format!("{url}?{query}");
        }
        let mut req = self.http.get(url);
        for (k, v) in sigv4::sign_request(
            "GET",
            &self.host,
            &path,
            &query,
            "UNSIGNED-PAYLOAD",
            (&self.key, &self.secret),
            &self.region,
            "s3",
            now,
        ) {
            req = req.header(k, v);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("reading s3://{bucket}/{key}"))?;
        let status = resp.status();
        let body = resp.bytes().await?;
        if !status.is_success() {
            bail!(
                "reading s3://{bucket}/{key}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body)
    }
}

/// Percent-encodes a path segment or query value as SigV4 canonicalises it (`/` kept in
/// keys).
fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
