//! CodePipeline: pipelines (declarations, versions, tags), their executions run by a pure
//! engine ([`engine`]) and a runtime that persists each step and performs its effects
//! ([`runtime`]) through one provider per action type ([`providers`]).
//!
//! Domain types at the boundary are the generated model's shapes (plain Rust structs);
//! errors are CodePipeline's `ErrorKind`s. SQL stays behind `slipway-store`'s pool in
//! portable form.

pub mod action_types;
mod conditions;
pub mod declaration;
pub mod engine;
pub mod error;
mod executions;
pub use conditions::rule_types;
pub mod jobs;
pub mod providers;
pub mod rules;
pub mod runtime;
pub mod triggers;
pub mod variables;
pub mod webhooks;

use crate::engine::{Execution, PipelineState};
use crate::error::{err, Error, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use slipway_model::codepipeline::{PipelineDeclaration, PipelineMetadata, PipelineSummary, Tag};
use slipway_store::pipelines as db;
use slipway_store::{now, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

pub use executions::Approval;
pub use runtime::{BuildService, Trigger};

/// The resource type tags are kept under.
const TAG_KIND: &str = "codepipeline:pipeline";

/// How a stored secret configuration value starts (hex of its sealed bytes follows).
pub(crate) const SEALED: &str = "slipway-sealed:";
/// How a secret configuration value is shown.
pub(crate) const MASK: &str = "****";

/// A run's configuration as the API shows it: sealed (secret) values masked.
pub(crate) fn shown(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| {
            let v = if v.starts_with(SEALED) {
                MASK
            } else {
                v.as_str()
            };
            (k.clone(), v.to_owned())
        })
        .collect()
}

/// A declaration as the API shows it: secret configuration values masked.
pub(crate) fn masked(mut d: PipelineDeclaration) -> PipelineDeclaration {
    for a in d
        .stages
        .iter_mut()
        .flatten()
        .flat_map(|s| s.actions.iter_mut().flatten())
    {
        for v in a.configuration.iter_mut().flatten().map(|(_, v)| v) {
            if v.starts_with(SEALED) {
                *v = MASK.to_owned();
            }
        }
    }
    d
}

/// What the service is configured with.
pub struct Config {
    pub account_id: String,
    pub default_region: String,
    /// Where actions unpack and pack artifacts (a directory of the data dir).
    pub work_dir: PathBuf,
    /// The server's URL as clients reach it (webhook URLs start with it).
    pub public_url: String,
    /// Seals webhook secrets at rest.
    pub key: slipway_iam::crypto::MasterKey,
}

pub(crate) struct Inner {
    pub store: Store,
    pub cfg: Config,
    pub s3: slipway_s3::S3Store,
    pub codecommit: slipway_codecommit::CodeCommit,
    pub builds: Arc<dyn BuildService>,
    /// Deploy — CodeDeploy actions create their deployments here.
    pub codedeploy: Option<slipway_codedeploy::CodeDeploy>,
    /// Woken when there is work for the runtime (a new action run, a new event).
    pub wake: tokio::sync::Notify,
    /// Set when running runs should be polled at once (a build ended).
    pub poll_now: std::sync::atomic::AtomicBool,
}

/// The CodePipeline service, as seen from one region.
#[derive(Clone)]
pub struct CodePipeline {
    pub(crate) inner: Arc<Inner>,
    pub(crate) region: Arc<str>,
}

/// A disabled inbound transition: why, who, when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Disabled {
    pub reason: String,
    pub by: String,
    pub at: f64,
}

/// What the engine never reads about an execution: how it started and with what.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Meta {
    pub trigger_type: String,
    #[serde(default)]
    pub trigger_detail: Option<String>,
    /// Pipeline variables, resolved (defaults and overrides).
    #[serde(default)]
    pub variables: Vec<(String, String)>,
    /// Source action → the revision it must read (a push names its commit).
    #[serde(default)]
    pub revisions: BTreeMap<String, String>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// For a ROLLBACK execution: the execution whose artifacts it runs with.
    #[serde(default)]
    pub rollback_target: Option<String>,
}

/// A pipeline as stored.
#[derive(Debug, Clone)]
pub struct Pipeline {
    pub name: String,
    pub version: i64,
    pub declaration: PipelineDeclaration,
    pub created: f64,
    pub updated: f64,
    pub disabled: BTreeMap<String, Disabled>,
    pub latest: BTreeMap<String, String>,
    pub principal: String,
}

pub(crate) fn not_found(account: &str, name: &str) -> Error {
    err(
        ErrorKind::PipelineNotFoundException,
        format!("Account '{account}' does not have a pipeline with name '{name}'"),
    )
}

impl CodePipeline {
    pub fn new(
        store: Store,
        cfg: Config,
        s3: slipway_s3::S3Store,
        codecommit: slipway_codecommit::CodeCommit,
        builds: Arc<dyn BuildService>,
        codedeploy: Option<slipway_codedeploy::CodeDeploy>,
    ) -> Result<CodePipeline> {
        std::fs::create_dir_all(&cfg.work_dir)?;
        let region = cfg.default_region.as_str().into();
        Ok(CodePipeline {
            inner: Arc::new(Inner {
                store,
                cfg,
                s3,
                codecommit,
                builds,
                codedeploy,
                wake: tokio::sync::Notify::new(),
                poll_now: Default::default(),
            }),
            region,
        })
    }

    /// The same service acting in `region`.
    pub fn in_region(&self, region: &str) -> CodePipeline {
        CodePipeline {
            inner: self.inner.clone(),
            region: region.into(),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    /// Tells the runtime there may be something new (an outbox event, a result).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Tells the runtime a build ended: running builds are polled now.
    pub fn build_finished(&self) {
        self.inner
            .poll_now
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.wake.notify_one();
    }

    pub fn account_id(&self) -> &str {
        &self.inner.cfg.account_id
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn pipeline_arn(&self, name: &str) -> String {
        slipway_regions::arn("codepipeline", &self.region, self.account_id(), name)
    }

    /// The pipeline name an ARN of this region and account names, if it is one.
    fn name_in_arn(&self, arn: &str) -> Option<String> {
        let prefix = self.pipeline_arn("");
        arn.strip_prefix(&prefix)
            .filter(|n| !n.is_empty() && !n.contains('/'))
            .map(str::to_owned)
    }

    async fn checked(&self, d: &PipelineDeclaration) -> Result<engine::Plan> {
        declaration::validate(d, &self.region, &self.custom_types().await?)
    }

    /// Seals the values of secret configuration properties (custom action types' `secret`
    /// ones) in a declaration about to be stored; `****` keeps the value `current` has.
    async fn seal_secrets(
        &self,
        d: &mut PipelineDeclaration,
        current: Option<&PipelineDeclaration>,
    ) -> Result<()> {
        let custom = self.custom_types().await?;
        for stage in d.stages.iter_mut().flatten() {
            let sname = stage.name.clone();
            for a in stage.actions.iter_mut().flatten() {
                let t = a.action_type_id.clone().unwrap_or_default();
                if t.owner.as_deref() != Some("Custom") {
                    continue;
                }
                let Some(ct) = custom.iter().find(|c| {
                    Some(c.category.as_str()) == t.category.as_deref()
                        && Some(c.provider.as_str()) == t.provider.as_deref()
                        && Some(c.version.as_str()) == t.version.as_deref()
                }) else {
                    continue;
                };
                let before = current
                    .and_then(|c| c.stages.as_ref())
                    .and_then(|s| s.iter().find(|s| s.name == sname))
                    .and_then(|s| s.actions.as_ref())
                    .and_then(|x| x.iter().find(|x| x.name == a.name))
                    .and_then(|x| x.configuration.clone())
                    .unwrap_or_default();
                for (k, v) in a.configuration.iter_mut().flatten() {
                    if !ct.secrets.contains(k) {
                        continue;
                    }
                    *v = match before.get(k) {
                        Some(old) if v == MASK && old.starts_with(SEALED) => old.clone(),
                        _ => format!(
                            "{SEALED}{}",
                            hex::encode(self.inner.cfg.key.encrypt(v.as_bytes()))
                        ),
                    };
                }
            }
        }
        Ok(())
    }

    /// A sealed configuration value in the clear (any other value as it is).
    pub(crate) fn unseal(&self, v: &str) -> Result<String> {
        let Some(sealed) = v.strip_prefix(SEALED) else {
            return Ok(v.to_owned());
        };
        let bytes = hex::decode(sealed)
            .ok()
            .and_then(|b| self.inner.cfg.key.decrypt(&b).ok())
            .ok_or_else(|| {
                Error::Internal("a sealed configuration value cannot be opened".into())
            })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    // ----- pipelines -----

    /// CreatePipeline: the declaration as stored (version 1).
    pub async fn create_pipeline(
        &self,
        mut d: PipelineDeclaration,
        tags: Vec<Tag>,
        principal: &str,
    ) -> Result<(PipelineDeclaration, Vec<Tag>)> {
        self.checked(&d).await?;
        check_tags(&tags)?;
        let name = d.name.clone().unwrap_or_default();
        d.version = Some(1);
        if d.pipeline_type.is_none() {
            d.pipeline_type = Some("V1".into());
        }
        if d.execution_mode.is_none() {
            d.execution_mode = Some("SUPERSEDED".into());
        }
        self.seal_secrets(&mut d, None).await?;
        let doc = serde_json::to_string(&d)?;
        let t = now();
        let mut tx = self.store().begin_write().await?;
        if !db::insert_pipeline(&mut tx, &self.region, &name, &doc, t, principal).await? {
            return Err(err(
                ErrorKind::PipelineNameInUseException,
                format!(
                    "A pipeline with the name '{name}' already exists in account '{}'",
                    self.account_id()
                ),
            ));
        }
        let map: BTreeMap<String, String> = tags
            .iter()
            .map(|t| {
                (
                    t.key.clone().unwrap_or_default(),
                    t.value.clone().unwrap_or_default(),
                )
            })
            .collect();
        slipway_store::tags::put(&mut tx, TAG_KIND, &self.tag_id(&name), &map).await?;
        tx.commit().await?;
        // A new pipeline runs once, as in AWS.
        let trigger = Trigger {
            kind: "CreatePipeline".into(),
            detail: Some(principal.to_owned()),
            revisions: BTreeMap::new(),
        };
        // (Not when a pipeline variable has no default: that run could not start.)
        if let Err(e) = self.start_execution(&name, &[], None, trigger).await {
            tracing::info!(pipeline = %name, error = %e, "the new pipeline's first run did not start");
        }
        Ok((masked(d), tags))
    }

    fn tag_id(&self, name: &str) -> String {
        format!("{}:{name}", self.region)
    }

    /// The stored pipeline `name` (its current version).
    pub async fn pipeline(&self, name: &str) -> Result<Pipeline> {
        let mut conn = self.store().pool().acquire().await?;
        load_pipeline(&mut conn, &self.region, name)
            .await?
            .ok_or_else(|| not_found(self.account_id(), name))
    }

    /// GetPipeline: the declaration (of `version`, else the current one) and its metadata.
    pub async fn get_pipeline(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<(PipelineDeclaration, PipelineMetadata)> {
        let p = self.pipeline(name).await?;
        let declaration = match version {
            None => p.declaration,
            Some(v) => self.declaration(name, v).await?,
        };
        Ok((
            masked(declaration),
            PipelineMetadata {
                pipeline_arn: Some(self.pipeline_arn(name)),
                created: Some(p.created),
                updated: Some(p.updated),
                polling_disabled_at: None,
            },
        ))
    }

    /// The declaration of version `version` of pipeline `name`.
    pub(crate) async fn declaration(
        &self,
        name: &str,
        version: i64,
    ) -> Result<PipelineDeclaration> {
        let mut conn = self.store().pool().acquire().await?;
        match db::pipeline_version(&mut conn, &self.region, name, version).await? {
            Some(d) => Ok(serde_json::from_str(&d)?),
            None => Err(err(
                ErrorKind::PipelineVersionNotFoundException,
                format!("Pipeline version {version} of pipeline {name} does not exist"),
            )),
        }
    }

    /// UpdatePipeline: a new version (the declaration's `version` must be the current one).
    pub async fn update_pipeline(
        &self,
        mut d: PipelineDeclaration,
        principal: &str,
    ) -> Result<PipelineDeclaration> {
        let name = d.name.clone().unwrap_or_default();
        self.checked(&d).await?;
        let mut tx = self.store().begin_write().await?;
        let p = load_pipeline(&mut tx, &self.region, &name)
            .await?
            .ok_or_else(|| not_found(self.account_id(), &name))?;
        if let Some(v) = d.version {
            if v as i64 != p.version {
                return Err(err(
                    ErrorKind::InvalidStructureException,
                    format!("Pipeline version mismatch: the declaration names version {v}, the pipeline is at version {}", p.version),
                ));
            }
        }
        let version = p.version + 1;
        d.version = Some(version as i32);
        if d.pipeline_type.is_none() {
            d.pipeline_type = p.declaration.pipeline_type.clone().or(Some("V1".into()));
        }
        if d.execution_mode.is_none() {
            d.execution_mode = Some("SUPERSEDED".into());
        }
        self.seal_secrets(&mut d, Some(&p.declaration)).await?;
        let doc = serde_json::to_string(&d)?;
        let t = now();
        db::update_pipeline(&mut tx, &self.region, &name, version, &doc, t, principal).await?;
        tx.commit().await?;
        Ok(masked(d))
    }

    /// DeletePipeline (an unknown name is no error, as in AWS). Its executions go with it;
    /// their running builds are stopped.
    pub async fn delete_pipeline(&self, name: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        let runs = db::delete_pipeline(&mut tx, &self.region, name).await?;
        slipway_store::tags::delete_all(&mut tx, TAG_KIND, &self.tag_id(name)).await?;
        tx.commit().await?;
        for job in runs {
            if let Ok(job) = serde_json::from_str::<providers::Job>(&job) {
                self.cancel_run(&job).await;
            }
        }
        Ok(())
    }

    /// ListPipelines: every pipeline of the region, by name.
    pub async fn list_pipelines(&self) -> Result<Vec<PipelineSummary>> {
        let mut conn = self.store().pool().acquire().await?;
        db::pipelines(&mut conn, &self.region)
            .await?
            .into_iter()
            .map(|r| {
                let d: PipelineDeclaration = serde_json::from_str(&r.declaration)?;
                Ok(PipelineSummary {
                    name: Some(r.name),
                    version: Some(r.version as i32),
                    pipeline_type: d.pipeline_type,
                    execution_mode: d.execution_mode,
                    created: Some(r.created),
                    updated: Some(r.updated),
                })
            })
            .collect()
    }

    // ----- tags -----

    /// The tag kind and id of a taggable resource (a pipeline or a webhook) by its ARN.
    async fn tagged(&self, arn: &str) -> Result<(&'static str, String)> {
        if let Some(name) = self.webhook_in_arn(arn) {
            let mut conn = self.store().pool().acquire().await?;
            let exists = db::webhooks(&mut conn, &self.region, Some(&name)).await?;
            return match exists.first() {
                Some(_) => Ok((webhooks::WEBHOOK_TAGS, self.webhook_tag_id(&name))),
                None => Err(err(
                    ErrorKind::ResourceNotFoundException,
                    format!("The webhook {name} was not found"),
                )),
            };
        }
        let name = self.tagged_pipeline(arn).await?;
        Ok((TAG_KIND, self.tag_id(&name)))
    }

    async fn tagged_pipeline(&self, arn: &str) -> Result<String> {
        let missing = || {
            let name = arn.rsplit(':').next().unwrap_or(arn);
            err(
                ErrorKind::ResourceNotFoundException,
                format!(
                    "The account with id '{}' does not include a pipeline with the name '{name}'",
                    self.account_id()
                ),
            )
        };
        if !arn.starts_with("arn:") || arn.split(':').count() < 6 {
            return Err(err(
                ErrorKind::InvalidArnException,
                format!("The ARN '{arn}' is not valid"),
            ));
        }
        let name = self.name_in_arn(arn).ok_or_else(missing)?;
        let mut conn = self.store().pool().acquire().await?;
        let exists = db::pipeline(&mut conn, &self.region, &name).await?;
        exists.map(|_| name).ok_or_else(missing)
    }

    pub async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>> {
        let (kind, id) = self.tagged(arn).await?;
        let mut conn = self.store().pool().acquire().await?;
        let tags = slipway_store::tags::get(&mut conn, kind, &id).await?;
        Ok(tags
            .into_iter()
            .map(|(k, v)| Tag {
                key: Some(k),
                value: Some(v),
            })
            .collect())
    }

    pub async fn tag(&self, arn: &str, tags: Vec<Tag>) -> Result<()> {
        let (kind, id) = self.tagged(arn).await?;
        check_tags(&tags)?;
        let map: BTreeMap<String, String> = tags
            .into_iter()
            .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
            .collect();
        let mut tx = self.store().begin_write().await?;
        let before = slipway_store::tags::get(&mut tx, kind, &id).await?;
        let total = before
            .keys()
            .chain(map.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        if total > 50 {
            return Err(err(
                ErrorKind::TooManyTagsException,
                "A resource can have at most 50 tags",
            ));
        }
        slipway_store::tags::put(&mut tx, kind, &id, &map).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn untag(&self, arn: &str, keys: &[String]) -> Result<()> {
        let (kind, id) = self.tagged(arn).await?;
        let mut tx = self.store().begin_write().await?;
        slipway_store::tags::remove(&mut tx, kind, &id, keys).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Tags as AWS checks them: no `aws:` keys, no key twice.
pub(crate) fn check_tags(tags: &[Tag]) -> Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for t in tags {
        let k = t.key.as_deref().unwrap_or_default();
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(err(
                ErrorKind::InvalidTagsException,
                format!("Tag key {k} is reserved: keys may not begin with aws:"),
            ));
        }
        if !seen.insert(k) {
            return Err(err(
                ErrorKind::InvalidTagsException,
                format!("Tag key {k} is given more than once"),
            ));
        }
    }
    if tags.len() > 50 {
        return Err(err(
            ErrorKind::TooManyTagsException,
            "A resource can have at most 50 tags",
        ));
    }
    Ok(())
}

pub(crate) async fn load_pipeline(
    conn: &mut slipway_store::Conn,
    region: &str,
    name: &str,
) -> Result<Option<Pipeline>> {
    let Some(r) = db::pipeline(conn, region, name).await? else {
        return Ok(None);
    };
    Ok(Some(Pipeline {
        declaration: serde_json::from_str(&r.declaration)?,
        disabled: serde_json::from_str(&r.transitions)?,
        latest: serde_json::from_str(&r.latest)?,
        name: r.name,
        version: r.version,
        created: r.created,
        updated: r.updated,
        principal: r.principal,
    }))
}

pub(crate) fn engine_state(p: &Pipeline, executions: Vec<Execution>) -> PipelineState {
    PipelineState {
        disabled: p.disabled.keys().cloned().collect(),
        latest: p.latest.clone(),
        executions,
    }
}
