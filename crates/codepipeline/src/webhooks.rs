//! Webhooks: PutWebhook, ListWebhooks, DeleteWebhook, (De)RegisterWebhookWithThirdParty,
//! and the delivery of a payload to a webhook's URL — authenticated (GITHUB_HMAC, IP or
//! UNAUTHENTICATED), matched against its JSONPath filters, and then a pipeline execution.

use crate::error::{err, ErrorKind, Result};
use crate::{CodePipeline, Trigger};
use hmac::{Hmac, Mac};
use serde_json::Value;
use serde_json_path::JsonPath;
use slipway_model::codepipeline::{ListWebhookItem, Tag, WebhookDefinition};
use slipway_store::now;
use slipway_store::pipelines as db;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The resource type webhook tags are kept under.
pub(crate) const WEBHOOK_TAGS: &str = "codepipeline:webhook";

/// What a delivery came with, besides its body.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `X-Hub-Signature-256: sha256=<hex>` (GitHub's HMAC of the body).
    pub signature_256: Option<String>,
    pub client_ip: IpAddr,
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// The filters matched: the execution started.
    Started(String),
    /// A filter did not match (which one): nothing started.
    Ignored(String),
    /// The delivery failed authentication (why): nothing started.
    Refused(String),
}

fn auth_error(msg: impl Into<String>) -> crate::error::Error {
    err(
        ErrorKind::InvalidWebhookAuthenticationParametersException,
        msg,
    )
}

fn filter_error(msg: impl Into<String>) -> crate::error::Error {
    err(ErrorKind::InvalidWebhookFilterPatternException, msg)
}

fn webhook_not_found(name: &str) -> crate::error::Error {
    err(
        ErrorKind::WebhookNotFoundException,
        format!("The webhook {name} was not found"),
    )
}

/// The first value `path` selects in `body`, as text (strings as they are, other values
/// as JSON).
fn select(path: &JsonPath, body: &Value) -> Option<String> {
    let found = path.query(body).first()?;
    Some(match found {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// `matchEquals` with `{Key}` replaced by the target action's configuration value.
fn expand(pattern: &str, config: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        out.push_str(&rest[..open]);
        let key = &rest[open + 1..open + close];
        match config.get(key) {
            Some(v) => out.push_str(v),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

impl CodePipeline {
    pub fn webhook_arn(&self, name: &str) -> String {
        slipway_regions::arn(
            "codepipeline",
            &self.region,
            self.account_id(),
            &format!("webhook:{name}"),
        )
    }

    /// The webhook name a webhook ARN of this region and account names, if it is one.
    pub(crate) fn webhook_in_arn(&self, arn: &str) -> Option<String> {
        arn.strip_prefix(&self.webhook_arn(""))
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
    }

    fn webhook_url(&self, token: &str) -> String {
        format!(
            "{}/-/webhooks/trigger?t={token}&v=1",
            self.inner.cfg.public_url.trim_end_matches('/')
        )
    }

    /// PutWebhook: creates the webhook, or replaces the definition of one of that name
    /// (its URL stays).
    pub async fn put_webhook(
        &self,
        mut def: WebhookDefinition,
        tags: Vec<Tag>,
    ) -> Result<ListWebhookItem> {
        let name = def.name.clone().unwrap_or_default();
        let pipeline = def.target_pipeline.clone().unwrap_or_default();
        let action = def.target_action.clone().unwrap_or_default();
        crate::check_tags(&tags)?;
        for f in def.filters.iter().flatten() {
            let path = f.json_path.as_deref().unwrap_or_default();
            JsonPath::parse(path).map_err(|e| {
                filter_error(format!(
                    "The JSON path {path} of webhook {name} is not valid: {e}"
                ))
            })?;
        }
        let config = def.authentication_configuration.clone().unwrap_or_default();
        let secret = match def.authentication.as_deref().unwrap_or_default() {
            "GITHUB_HMAC" => {
                let s = config.secret_token.clone().filter(|s| !s.is_empty());
                Some(s.ok_or_else(|| auth_error("GITHUB_HMAC authentication needs a SecretToken"))?)
            }
            "IP" => {
                let range = config.allowed_ip_range.clone().unwrap_or_default();
                range.parse::<ipnet::IpNet>().map_err(|_| {
                    auth_error(format!("AllowedIPRange {range:?} is not a CIDR range"))
                })?;
                None
            }
            "UNAUTHENTICATED" => None,
            other => {
                return Err(auth_error(format!(
                    "Authentication {other} is not valid: use GITHUB_HMAC, IP or UNAUTHENTICATED"
                )))
            }
        };
        let p = self.pipeline(&pipeline).await?;
        let known = p
            .declaration
            .stages
            .iter()
            .flatten()
            .flat_map(|s| s.actions.iter().flatten())
            .any(|a| a.name.as_deref() == Some(action.as_str()));
        if !known {
            return Err(err(
                ErrorKind::ActionNotFoundException,
                format!("Action {action} does not exist in pipeline {pipeline}"),
            ));
        }
        // The secret is kept sealed, apart from the definition.
        if let Some(c) = def.authentication_configuration.as_mut() {
            c.secret_token = None;
        }
        let sealed = secret.map(|s| self.inner.cfg.key.encrypt(s.as_bytes()));
        let mut tx = self.store().begin_write().await?;
        // A new webhook's token: 160 random bits (an existing webhook keeps its own).
        let token = hex::encode(slipway_iam::crypto::random_bytes::<20>());
        let doc = serde_json::to_string(&def)?;
        let row = db::NewWebhook {
            region: &self.region,
            name: &name,
            token: &token,
            pipeline: &pipeline,
            definition: &doc,
            secret: sealed.as_deref(),
            t: now(),
        };
        db::put_webhook(&mut tx, &row).await?;
        let map: BTreeMap<String, String> = tags
            .iter()
            .map(|t| {
                (
                    t.key.clone().unwrap_or_default(),
                    t.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        slipway_store::tags::put(&mut tx, WEBHOOK_TAGS, &self.webhook_tag_id(&name), &map).await?;
        tx.commit().await?;
        tracing::info!(webhook = %name, pipeline = %pipeline, "webhook put");
        self.webhook(&name).await
    }

    pub(crate) fn webhook_tag_id(&self, name: &str) -> String {
        format!("{}:{name}", self.region)
    }

    async fn webhook_items(&self, name: Option<&str>) -> Result<Vec<ListWebhookItem>> {
        let mut conn = self.store().pool().acquire().await?;
        let rows = db::webhooks(&mut conn, &self.region, name).await?;
        let mut out = Vec::new();
        for r in rows {
            let name = r.name;
            let mut def: WebhookDefinition = serde_json::from_str(&r.definition)?;
            if let Some(sealed) = r.secret {
                let secret =
                    self.inner.cfg.key.decrypt(&sealed).map_err(|e| {
                        crate::error::Error::Internal(format!("webhook secret: {e}"))
                    })?;
                def.authentication_configuration
                    .get_or_insert_with(Default::default)
                    .secret_token = Some(String::from_utf8_lossy(&secret).into_owned());
            }
            let tags =
                slipway_store::tags::get(&mut conn, WEBHOOK_TAGS, &self.webhook_tag_id(&name))
                    .await?;
            out.push(ListWebhookItem {
                definition: Some(def),
                url: Some(self.webhook_url(&r.token)),
                last_triggered: r.last_triggered,
                arn: Some(self.webhook_arn(&name)),
                tags: (!tags.is_empty()).then(|| {
                    tags.into_iter()
                        .map(|(k, v)| Tag {
                            key: Some(k),
                            value: Some(v),
                        })
                        .collect()
                }),
                ..Default::default()
            });
        }
        Ok(out)
    }

    async fn webhook(&self, name: &str) -> Result<ListWebhookItem> {
        self.webhook_items(Some(name))
            .await?
            .pop()
            .ok_or_else(|| webhook_not_found(name))
    }

    /// ListWebhooks: the region's webhooks by name.
    pub async fn list_webhooks(&self) -> Result<Vec<ListWebhookItem>> {
        self.webhook_items(None).await
    }

    /// DeleteWebhook: succeeds for a name that does not exist, as AWS does.
    pub async fn delete_webhook(&self, name: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        db::delete_webhook(&mut tx, &self.region, name).await?;
        slipway_store::tags::delete_all(&mut tx, WEBHOOK_TAGS, &self.webhook_tag_id(name)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// (De)RegisterWebhookWithThirdParty: Slipway calls no third party (the tool is given
    /// the webhook's URL by its owner); the webhook is marked registered or not.
    pub async fn register_webhook(&self, name: &str, registered: bool) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        if !db::set_registered(&mut tx, &self.region, name, registered).await? {
            return Err(webhook_not_found(name));
        }
        tx.commit().await?;
        Ok(())
    }

    /// A payload delivered to the webhook whose URL token is `token` (in any region).
    pub async fn deliver_webhook(
        &self,
        token: &str,
        how: &Delivery,
        body: &[u8],
    ) -> Result<Delivered> {
        let mut conn = self.store().pool().acquire().await?;
        let row = db::webhook_by_token(&mut conn, token)
            .await?
            .ok_or_else(|| webhook_not_found("of this URL"))?;
        drop(conn);
        let (region, name, pipeline) = (row.region, row.name, row.pipeline);
        let def: WebhookDefinition = serde_json::from_str(&row.definition)?;
        let here = self.in_region(&region);
        match def.authentication.as_deref().unwrap_or_default() {
            "GITHUB_HMAC" => {
                let sealed: Vec<u8> = row.secret.clone().unwrap_or_default();
                let secret =
                    self.inner.cfg.key.decrypt(&sealed).map_err(|e| {
                        crate::error::Error::Internal(format!("webhook secret: {e}"))
                    })?;
                let Some(given) = how
                    .signature_256
                    .as_deref()
                    .and_then(|s| s.strip_prefix("sha256="))
                    .and_then(|h| hex::decode(h).ok())
                else {
                    return Ok(Delivered::Refused(
                        "no X-Hub-Signature-256 signature".into(),
                    ));
                };
                let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&secret)
                    .map_err(|e| crate::error::Error::Internal(e.to_string()))?;
                mac.update(body);
                if mac.verify_slice(&given).is_err() {
                    return Ok(Delivered::Refused(
                        "the signature does not match the payload".into(),
                    ));
                }
            }
            "IP" => {
                let range = def
                    .authentication_configuration
                    .as_ref()
                    .and_then(|c| c.allowed_ip_range.as_deref())
                    .and_then(|r| r.parse::<ipnet::IpNet>().ok());
                let ip = match how.client_ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(how.client_ip),
                    v4 => v4,
                };
                if !range.is_some_and(|r| r.contains(&ip)) {
                    return Ok(Delivered::Refused(format!(
                        "{ip} is outside the allowed range"
                    )));
                }
            }
            _ => {}
        }
        let payload: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Ok(Delivered::Ignored(format!("the payload is not JSON: {e}"))),
        };
        let p = here.pipeline(&pipeline).await?;
        let action = def.target_action.clone().unwrap_or_default();
        let config = p
            .declaration
            .stages
            .iter()
            .flatten()
            .flat_map(|s| s.actions.iter().flatten())
            .find(|a| a.name.as_deref() == Some(action.as_str()))
            .and_then(|a| a.configuration.clone())
            .unwrap_or_default();
        for f in def.filters.iter().flatten() {
            let text = f.json_path.clone().unwrap_or_default();
            let Ok(path) = JsonPath::parse(&text) else {
                return Ok(Delivered::Ignored(format!(
                    "filter {text} is not a JSON path"
                )));
            };
            let found = select(&path, &payload);
            let ok = match (&found, f.match_equals.as_deref()) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(v), Some(want)) => *v == expand(want, &config),
            };
            if !ok {
                return Ok(Delivered::Ignored(format!("filter {text} did not match")));
            }
        }
        let trigger = Trigger {
            kind: "Webhook".into(),
            detail: Some(here.webhook_arn(&name)),
            revisions: BTreeMap::new(),
        };
        let id = here.start_execution(&pipeline, &[], None, trigger).await?;
        let mut tx = self.store().begin_write().await?;
        db::webhook_triggered(&mut tx, token, now()).await?;
        tx.commit().await?;
        tracing::info!(webhook = %name, %pipeline, execution = %id, "webhook started an execution");
        Ok(Delivered::Started(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_equals_expands_configuration() {
        let config = BTreeMap::from([("BranchName".to_owned(), "main".to_owned())]);
        assert_eq!(
            expand("refs/heads/{BranchName}", &config),
            "refs/heads/main"
        );
        assert_eq!(expand("{Nope}/x", &config), "{Nope}/x");
        let path = JsonPath::parse("$.ref").unwrap();
        let body = serde_json::json!({"ref": "refs/heads/main", "n": 3});
        assert_eq!(select(&path, &body).as_deref(), Some("refs/heads/main"));
        assert_eq!(
            select(&JsonPath::parse("$.n").unwrap(), &body).as_deref(),
            Some("3")
        );
        assert_eq!(select(&JsonPath::parse("$.missing").unwrap(), &body), None);
    }
}
