//! The runtime around the engine: every change to a pipeline's executions is one write
//! transaction — load the executions, `engine::step`, store the executions that changed,
//! queue the action runs the step decided on (`cp_action_runs`) and append the state-change
//! events — and after the commit a background loop performs the queued runs through their
//! providers, polls the running ones, and feeds each result back as the next event. Pushes
//! and new S3 object versions start pipelines from the event outbox, the reader's position
//! moving in the same transaction as the executions it starts.

use crate::declaration::{self, artifact_bucket};
use crate::engine::{self, ActionResult, Artifact, Change, Effect, Event, Execution, Mode};
use crate::error::{err, ErrorKind, Result};
use crate::providers::{self, Job, Step};
use crate::variables::{self, Scope};
use crate::{engine_state, load_pipeline, CodePipeline, Meta, Pipeline};
use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use slipway_model::codebuild::{Build, StartBuildInput};
use slipway_model::codepipeline::PipelineDeclaration;
use slipway_store::events::{self, Event as OutboxEvent};
use slipway_store::pipelines::{self as db, Executions};
use slipway_store::{now, Conn};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How a build is started and read for a pipeline: the API layer's CodeBuild, so a
/// pipeline's builds resolve their variables and act exactly as StartBuild does.
pub trait BuildService: Send + Sync {
    /// Starts a build as `principal` (an IAM ARN), its initiator shown as `initiator`.
    fn start<'a>(
        &'a self,
        region: &'a str,
        input: StartBuildInput,
        initiator: &'a str,
        principal: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Build, String>>;
    fn get<'a>(
        &'a self,
        region: &'a str,
        id: &'a str,
    ) -> BoxFuture<'a, std::result::Result<Option<Build>, String>>;
    fn stop<'a>(&'a self, region: &'a str, id: &'a str) -> BoxFuture<'a, ()>;
    /// Makes sure project `name` exists in `region`: a CODEPIPELINE project on the default
    /// image, which Commands actions build with.
    fn ensure_project<'a>(
        &'a self,
        region: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;
}

/// Why an execution starts.
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    /// `triggerType` (CreatePipeline, StartPipelineExecution, CloudWatchEvent, …).
    pub kind: String,
    pub detail: Option<String>,
    /// Source action → the revision it must read.
    pub revisions: BTreeMap<String, String>,
}

/// The outbox reader that starts pipelines.
const TRIGGER_READER: &str = "codepipeline-triggers";
/// How often a running run is polled.
const POLL_EVERY: f64 = 1.0;

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The object key of an output artifact, in CodePipeline's layout:
/// `PIPELINE(20)/ARTIFACT(10)/RANDOM(7)`.
pub fn artifact_key(pipeline: &str, artifact: &str) -> String {
    use rand_chars as r;
    let p: String = pipeline.chars().take(20).collect();
    let a: String = artifact.chars().take(10).collect();
    format!("{p}/{a}/{}", r::seven())
}

mod rand_chars {
    /// Seven random letters and digits.
    pub fn seven() -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let bytes = uuid::Uuid::new_v4().into_bytes();
        bytes[..7]
            .iter()
            .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
            .collect()
    }
}

fn exec_state_name(s: engine::ExecStatus, resumed: bool) -> &'static str {
    use engine::ExecStatus::*;
    match s {
        InProgress if resumed => "RESUMED",
        InProgress => "STARTED",
        Stopping => "STOPPING",
        Stopped => "STOPPED",
        Succeeded => "SUCCEEDED",
        Superseded => "SUPERSEDED",
        Failed => "FAILED",
        Cancelled => "CANCELED",
    }
}

fn stage_state_name(s: engine::StageStatus) -> &'static str {
    use engine::StageStatus::*;
    match s {
        InProgress => "STARTED",
        Stopping => "STOPPING",
        Stopped => "STOPPED",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
        Cancelled => "CANCELED",
        Skipped => "SKIPPED",
    }
}

fn action_state_name(s: engine::ActionStatus) -> &'static str {
    use engine::ActionStatus::*;
    match s {
        InProgress => "STARTED",
        Abandoned => "ABANDONED",
        Succeeded => "SUCCEEDED",
        Failed => "FAILED",
    }
}

/// The succeeded action runs of `e`, with their declarations.
fn succeeded<'a>(
    d: &'a PipelineDeclaration,
    e: &'a Execution,
) -> impl Iterator<
    Item = (
        &'a slipway_model::codepipeline::ActionDeclaration,
        &'a engine::ActionRun,
    ),
> {
    let stages = d.stages.as_deref().unwrap_or_default();
    stages.iter().enumerate().flat_map(move |(si, sd)| {
        sd.actions
            .iter()
            .flatten()
            .enumerate()
            .filter_map(move |(ai, ad)| {
                let run = e.stages.get(si).and_then(|r| r.actions.get(ai))?;
                (run.status == Some(engine::ActionStatus::Succeeded)).then_some((ad, run))
            })
    })
}

/// The variables `e` can resolve: the pipeline's and every succeeded action's namespace.
fn scope_of(d: &PipelineDeclaration, e: &Execution, meta: &Meta) -> Scope {
    let mut scope = Scope::new(&e.id, &meta.variables);
    for (ad, run) in succeeded(d, e) {
        if let Some(ns) = &ad.namespace {
            scope
                .namespaces
                .insert(ns.clone(), run.output.variables.clone());
        }
    }
    scope
}

/// Checks condition set `kind` of stage `stage` for `e`: whether it held, and its record.
fn check_conditions(
    d: &PipelineDeclaration,
    e: &Execution,
    meta: &Meta,
    stage: usize,
    kind: engine::CondKind,
    t: f64,
) -> (bool, Value) {
    let s = &d.stages.as_deref().unwrap_or_default()[stage];
    let conditions = match kind {
        engine::CondKind::BeforeEntry => {
            s.before_entry.as_ref().and_then(|c| c.conditions.as_ref())
        }
        engine::CondKind::OnSuccess => s.on_success.as_ref().and_then(|c| c.conditions.as_ref()),
        engine::CondKind::OnFailure => s.on_failure.as_ref().and_then(|c| c.conditions.as_ref()),
    };
    let scope = scope_of(d, e, meta);
    let mut ids = new_id;
    let (passed, mut record) = crate::rules::check(
        conditions.map(Vec::as_slice).unwrap_or_default(),
        &scope,
        t,
        &mut ids,
    );
    record["kind"] = json!(kind);
    (passed, record)
}

/// Loads `ids` (and every active execution of the pipeline) with their metadata.
async fn load_executions(
    conn: &mut Conn,
    region: &str,
    pipeline: &str,
    also: Option<&str>,
) -> Result<Vec<(Execution, Meta)>> {
    let also: Vec<&str> = also.into_iter().collect();
    db::executions(conn, region, pipeline, Executions::ActiveAnd(&also))
        .await?
        .iter()
        .map(|r| {
            Ok((
                serde_json::from_str(&r.state)?,
                serde_json::from_str(&r.meta)?,
            ))
        })
        .collect()
}

impl CodePipeline {
    /// StartPipelineExecution (and every other start): the new execution's id.
    pub async fn start_execution(
        &self,
        name: &str,
        overrides: &[(String, String)],
        client_token: Option<&str>,
        trigger: Trigger,
    ) -> Result<String> {
        let mut tx = self.store().begin_write().await?;
        let id = self
            .start_in(&mut tx, name, overrides, client_token, trigger)
            .await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(id)
    }

    async fn start_in(
        &self,
        conn: &mut Conn,
        name: &str,
        overrides: &[(String, String)],
        client_token: Option<&str>,
        trigger: Trigger,
    ) -> Result<String> {
        let p = load_pipeline(conn, &self.region, name)
            .await?
            .ok_or_else(|| crate::not_found(self.account_id(), name))?;
        if let Some(token) = client_token {
            if let Some(id) = db::execution_by_token(conn, &self.region, name, token).await? {
                return Ok(id);
            }
        }
        let declared = p.declaration.variables.clone().unwrap_or_default();
        if !overrides.is_empty() && !declaration::is_v2(&p.declaration) {
            return Err(err(
                ErrorKind::ValidationException,
                "Pipeline variables can only be passed to pipelines of type V2",
            ));
        }
        for (k, _) in overrides {
            if !declared.iter().any(|d| d.name.as_deref() == Some(k)) {
                return Err(err(
                    ErrorKind::ValidationException,
                    format!("Variable {k} is not declared in pipeline {name}"),
                ));
            }
        }
        let mut resolved = Vec::new();
        for d in &declared {
            let n = d.name.clone().unwrap_or_default();
            let value = overrides
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .or_else(|| d.default_value.clone());
            match value {
                Some(v) => resolved.push((n, v)),
                None => {
                    return Err(err(
                        ErrorKind::ValidationException,
                        format!("Variable {n} has no default value and no value was given for it"),
                    ))
                }
            }
        }
        let plan = declaration::plan_of(&p.declaration);
        let seq = db::next_seq(conn, &self.region, name).await?;
        let id = new_id();
        let mode = Mode::parse(p.declaration.execution_mode.as_deref());
        let exec = Execution::new(id.clone(), seq, p.version, mode, plan, now());
        let meta = Meta {
            trigger_type: trigger.kind,
            trigger_detail: trigger.detail,
            variables: resolved,
            revisions: trigger.revisions,
            stop_reason: None,
            rollback_target: None,
        };
        self.insert_execution(conn, &p, &exec, &meta, client_token)
            .await?;
        Ok(id)
    }

    /// Stores a new execution and lets the engine take it from there.
    async fn insert_execution(
        &self,
        conn: &mut Conn,
        p: &Pipeline,
        exec: &Execution,
        meta: &Meta,
        client_token: Option<&str>,
    ) -> Result<()> {
        let (state, meta) = (serde_json::to_string(exec)?, serde_json::to_string(meta)?);
        let row = db::NewExecution {
            id: &exec.id,
            region: &self.region,
            pipeline: &p.name,
            seq: exec.seq,
            state: &state,
            meta: &meta,
            client_token,
            started: exec.started,
        };
        db::insert_execution(conn, &row).await?;
        // The engine sees the new execution as already stored (so `apply` loads it).
        self.apply(conn, p, Event::Tick, Some((exec.id.as_str(), true)))
            .await
    }

    /// RollbackStage: a new execution (type ROLLBACK) that runs `stage` again with what the
    /// target execution's earlier stages produced; its id.
    pub async fn rollback_stage(&self, name: &str, stage: &str, target: &str) -> Result<String> {
        let mut tx = self.store().begin_write().await?;
        let p = load_pipeline(&mut tx, &self.region, name)
            .await?
            .ok_or_else(|| crate::not_found(self.account_id(), name))?;
        let id = self
            .rollback_in(&mut tx, &p, stage, target, "ManualRollback")
            .await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(id)
    }

    /// Starts a ROLLBACK execution of `stage` to `target`'s artifacts, inside the
    /// caller's transaction (`trigger`: ManualRollback or AutomatedRollback).
    async fn rollback_in(
        &self,
        tx: &mut Conn,
        p: &Pipeline,
        stage: &str,
        target: &str,
        trigger: &str,
    ) -> Result<String> {
        let name = &p.name;
        if !p
            .declaration
            .stages
            .iter()
            .flatten()
            .any(|s| s.name.as_deref() == Some(stage))
        {
            return Err(err(
                ErrorKind::StageNotFoundException,
                format!("Stage {stage} does not exist in pipeline {name}"),
            ));
        }
        let Some((t, tmeta)) = load_executions(tx, &self.region, name, Some(target))
            .await?
            .into_iter()
            .find(|(e, _)| e.id == target)
        else {
            return Err(err(
                ErrorKind::PipelineExecutionNotFoundException,
                format!("Pipeline Execution with id '{target}' does not exist in pipeline with name '{name}'"),
            ));
        };
        let Some(idx) = t.plan.stages.iter().position(|s| s.name == stage) else {
            return Err(err(
                ErrorKind::UnableToRollbackStageException,
                format!("Stage {stage} was not part of pipeline execution {target}"),
            ));
        };
        if t.stages[idx].status != Some(engine::StageStatus::Succeeded) {
            return Err(err(
                ErrorKind::UnableToRollbackStageException,
                format!("Unable to roll back stage {stage}: pipeline execution {target} did not succeed in it"),
            ));
        }
        let seq = db::next_seq(tx, &self.region, name).await?;
        let mut plan = t.plan.clone();
        plan.stages.truncate(idx + 1);
        let mut exec = Execution::new(new_id(), seq, t.version, t.mode, plan, now());
        for i in 0..idx {
            exec.stages[i] = t.stages[i].clone();
        }
        exec.position = engine::Position::Waiting(idx);
        let meta = Meta {
            trigger_type: trigger.into(),
            trigger_detail: Some(target.to_owned()),
            variables: tmeta.variables.clone(),
            revisions: BTreeMap::new(),
            stop_reason: None,
            rollback_target: Some(target.to_owned()),
        };
        let id = exec.id.clone();
        self.insert_execution(tx, p, &exec, &meta, None).await?;
        Ok(id)
    }

    /// The newest execution other than `failed` that succeeded in stage `stage` and is
    /// not itself a rollback: what an automated rollback goes back to.
    async fn rollback_target(
        &self,
        conn: &mut Conn,
        pipeline: &str,
        stage: &str,
        failed: &str,
    ) -> Result<Option<String>> {
        let which = Executions::FinishedExcept {
            except: failed,
            limit: 100,
        };
        for r in db::executions(conn, &self.region, pipeline, which).await? {
            let e: Execution = serde_json::from_str(&r.state)?;
            let m: Meta = serde_json::from_str(&r.meta)?;
            let ok = e
                .plan
                .stages
                .iter()
                .position(|s| s.name == stage)
                .is_some_and(|i| e.stages[i].status == Some(engine::StageStatus::Succeeded));
            if ok && m.rollback_target.is_none() {
                return Ok(Some(e.id));
            }
        }
        Ok(None)
    }

    /// Applies `event` to pipeline `p` inside the caller's transaction: loads its
    /// executions, steps the engine, stores what changed, queues action runs, abandons
    /// runs, appends events. `started`: an execution just inserted (reported as started).
    pub(crate) fn apply<'a>(
        &'a self,
        conn: &'a mut Conn,
        p: &'a Pipeline,
        event: Event,
        started: Option<(&'a str, bool)>,
    ) -> BoxFuture<'a, Result<()>> {
        // Boxed: an automated rollback starts an execution, which applies again.
        Box::pin(self.apply_inner(conn, p, event, started))
    }

    async fn apply_inner(
        &self,
        conn: &mut Conn,
        p: &Pipeline,
        event: Event,
        started: Option<(&str, bool)>,
    ) -> Result<()> {
        let named = match &event {
            Event::ActionDone { execution, .. }
            | Event::Stop { execution, .. }
            | Event::Retry { execution, .. } => Some(execution.clone()),
            _ => None,
        };
        let loaded = load_executions(conn, &self.region, &p.name, named.as_deref()).await?;
        let mut metas: HashMap<String, Meta> = HashMap::new();
        let mut before: HashMap<String, String> = HashMap::new();
        let mut execs = Vec::new();
        for (e, m) in loaded {
            before.insert(e.id.clone(), serde_json::to_string(&e)?);
            metas.insert(e.id.clone(), m);
            execs.push(e);
        }
        let mut state = engine_state(p, execs);
        let mut ids = new_id;
        let t = now();
        let mut ctx = engine::Ctx {
            now: t,
            new_id: &mut ids,
        };
        let mut effects = Vec::new();
        if let Some((id, true)) = started {
            effects.push(Effect::Report(Change::Execution {
                execution: id.to_owned(),
                status: engine::ExecStatus::InProgress,
            }));
        }
        let mut pending = vec![event];
        let mut declarations: HashMap<i64, PipelineDeclaration> = HashMap::new();
        let mut runs: Vec<(Job, String)> = Vec::new();
        while let Some(ev) = pending.pop() {
            let fx = engine::step(&mut state, ev, &mut ctx)?;
            for f in &fx {
                if let Effect::CheckConditions {
                    execution,
                    stage,
                    kind,
                } = f
                {
                    let Some(e) = state.executions.iter().find(|e| &e.id == execution) else {
                        continue;
                    };
                    if let std::collections::hash_map::Entry::Vacant(v) =
                        declarations.entry(e.version)
                    {
                        v.insert(self.declaration_in(conn, &p.name, e.version).await?);
                    }
                    let d = &declarations[&e.version];
                    let meta = metas.get(execution).cloned().unwrap_or_default();
                    let (passed, record) = check_conditions(d, e, &meta, *stage, *kind, t);
                    pending.push(Event::ConditionsChecked {
                        execution: execution.clone(),
                        stage: *stage,
                        kind: *kind,
                        passed,
                        record,
                    });
                    continue;
                }
                let Effect::RunAction {
                    execution,
                    stage,
                    action,
                    id,
                } = f
                else {
                    continue;
                };
                let Some(e) = state.executions.iter().find(|e| &e.id == execution) else {
                    continue;
                };
                if let std::collections::hash_map::Entry::Vacant(v) = declarations.entry(e.version)
                {
                    v.insert(self.declaration_in(conn, &p.name, e.version).await?);
                }
                let d = &declarations[&e.version];
                let meta = metas.get(execution).cloned().unwrap_or_default();
                match self.prepare(p, d, e, &meta, *stage, *action, id, t).await {
                    Ok(job) => {
                        let input = json!({
                            "configuration": job.declared,
                            "resolvedConfiguration": crate::shown(&job.configuration),
                        });
                        runs.push((job, input.to_string()));
                    }
                    Err(message) => pending.push(Event::ActionDone {
                        execution: execution.clone(),
                        stage: *stage,
                        action: *action,
                        id: id.clone(),
                        result: ActionResult::Failed {
                            code: "ConfigurationError".into(),
                            message,
                            output: Default::default(),
                        },
                    }),
                }
            }
            effects.extend(fx);
        }
        for e in &state.executions {
            let doc = serde_json::to_string(e)?;
            if before.get(&e.id) == Some(&doc) {
                continue;
            }
            let status = e.status.as_str();
            db::update_execution(conn, &e.id, &doc, status, e.status.is_active(), e.updated)
                .await?;
        }
        db::set_latest(
            conn,
            &self.region,
            &p.name,
            &serde_json::to_string(&state.latest)?,
        )
        .await?;
        for (job, detail) in &runs {
            let doc = serde_json::to_string(job)?;
            let run = db::NewRun {
                id: &job.action_execution_id,
                execution: &job.execution_id,
                region: &self.region,
                pipeline: &p.name,
                stage: &job.stage,
                action: &job.action,
                job: &doc,
                detail,
                t,
            };
            db::insert_run(conn, &run).await?;
        }
        // Runs that were never performed and are no longer wanted are finished here; the
        // ones out of our hands are cancelled by the loop.
        for f in &effects {
            match f {
                Effect::Abandon { id, .. } => {
                    let detail = json!({"status": "Abandoned"}).to_string();
                    db::abandon_run(conn, id, &detail, t).await?;
                }
                Effect::Report(change) => {
                    self.report(conn, p, &state, &metas, change).await?;
                }
                Effect::Rollback { execution, stage } => {
                    let is_rollback = metas
                        .get(execution)
                        .is_some_and(|m| m.rollback_target.is_some());
                    let Some(e) = state.executions.iter().find(|e| &e.id == execution) else {
                        continue;
                    };
                    let name = e.plan.stages[*stage].name.clone();
                    if is_rollback {
                        continue;
                    }
                    match self
                        .rollback_target(conn, &p.name, &name, execution)
                        .await?
                    {
                        Some(target) => {
                            let id = self
                                .rollback_in(conn, p, &name, &target, "AutomatedRollback")
                                .await?;
                            tracing::info!(pipeline = %p.name, stage = %name, failed = %execution, %target, rollback = %id, "automated rollback");
                        }
                        None => {
                            tracing::info!(pipeline = %p.name, stage = %name, failed = %execution, "no earlier execution succeeded in the stage: nothing to roll back to")
                        }
                    }
                }
                Effect::RunAction { .. } | Effect::CheckConditions { .. } => {}
            }
        }
        Ok(())
    }

    async fn declaration_in(
        &self,
        conn: &mut Conn,
        name: &str,
        version: i64,
    ) -> Result<PipelineDeclaration> {
        let doc = db::pipeline_version(conn, &self.region, name, version)
            .await?
            .ok_or_else(|| {
                crate::error::Error::Internal(format!(
                    "version {version} of pipeline {name} is missing"
                ))
            })?;
        Ok(serde_json::from_str(&doc)?)
    }

    /// The job of one action run: inputs found, outputs placed, configuration resolved.
    #[allow(clippy::too_many_arguments)]
    async fn prepare(
        &self,
        p: &Pipeline,
        d: &PipelineDeclaration,
        e: &Execution,
        meta: &Meta,
        stage: usize,
        action: usize,
        id: &str,
        t: f64,
    ) -> std::result::Result<Job, String> {
        let stages = d.stages.as_deref().unwrap_or_default();
        let s = &stages[stage];
        let a = &s.actions.as_deref().unwrap_or_default()[action];
        let region = a.region.clone().unwrap_or_else(|| self.region.to_string());
        let bucket = artifact_bucket(d, &region)
            .ok_or_else(|| format!("The pipeline has no artifact store in region {region}"))?;
        if self.inner.s3.bucket(&bucket).await.is_err() {
            return Err(format!("The artifact store bucket {bucket} does not exist"));
        }
        // What earlier actions of this execution produced.
        let mut produced: BTreeMap<String, Artifact> = BTreeMap::new();
        for (_, run) in succeeded(d, e) {
            for art in &run.output.artifacts {
                produced.insert(art.name.clone(), art.clone());
            }
        }
        let scope = scope_of(d, e, meta);
        let inputs =
            a.input_artifacts
                .iter()
                .flatten()
                .map(|i| {
                    let n = i.name.clone().unwrap_or_default();
                    produced.get(&n).cloned().ok_or_else(|| {
                        format!("Input artifact {n} was not produced in this execution")
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()?;
        let outputs = a
            .output_artifacts
            .iter()
            .flatten()
            .map(|o| {
                let n = o.name.clone().unwrap_or_default();
                Artifact {
                    key: artifact_key(&p.name, &n),
                    name: n,
                    bucket: bucket.clone(),
                }
            })
            .collect();
        let mut declared: BTreeMap<String, String> = a.configuration.clone().unwrap_or_default();
        let mut configuration = BTreeMap::new();
        for (k, v) in declared.iter_mut() {
            if v.starts_with(crate::SEALED) {
                // A secret stays sealed in the run; its job worker gets it unsealed.
                configuration.insert(k.clone(), std::mem::replace(v, crate::MASK.to_owned()));
                continue;
            }
            configuration.insert(k.clone(), variables::resolve(v, &scope)?);
        }
        let commands = a
            .commands
            .iter()
            .flatten()
            .map(|c| variables::resolve(c, &scope))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let environment = a
            .environment_variables
            .iter()
            .flatten()
            .map(|v| {
                Ok((
                    v.name.clone().unwrap_or_default(),
                    variables::resolve(v.value.as_deref().unwrap_or_default(), &scope)?,
                    v.r#type.clone().unwrap_or_else(|| "PLAINTEXT".into()),
                ))
            })
            .collect::<std::result::Result<Vec<_>, String>>()?;
        let t_id = a.action_type_id.clone().unwrap_or_default();
        let name = a.name.clone().unwrap_or_default();
        let job = Job {
            region,
            pipeline: p.name.clone(),
            pipeline_version: e.version,
            execution_id: e.id.clone(),
            stage: s.name.clone().unwrap_or_default(),
            stage_index: stage,
            action: name.clone(),
            action_index: action,
            action_execution_id: id.to_owned(),
            category: t_id.category.unwrap_or_default(),
            owner: t_id.owner.unwrap_or_default(),
            provider: t_id.provider.unwrap_or_default(),
            version: t_id.version.unwrap_or_default(),
            configuration,
            declared,
            commands,
            output_variables: a.output_variables.clone().unwrap_or_default(),
            output_files: a
                .output_artifacts
                .iter()
                .flatten()
                .flat_map(|o| o.files.iter().flatten().cloned())
                .collect(),
            environment,
            inputs,
            outputs,
            revision: meta.revisions.get(&name).filter(|r| !r.is_empty()).cloned(),
            namespace: a.namespace.clone(),
            principal: p.principal.clone(),
            started: t,
            deadline: a.timeout_in_minutes.map(|m| t + m as f64 * 60.0),
        };
        if providers::provider(&job).is_none() {
            return Err(format!(
                "Action type {}/{}/{} is not run by Slipway",
                job.category, job.owner, job.provider
            ));
        }
        Ok(job)
    }

    /// Appends the EventBridge event of one state change.
    async fn report(
        &self,
        conn: &mut Conn,
        p: &Pipeline,
        state: &engine::PipelineState,
        metas: &HashMap<String, Meta>,
        change: &Change,
    ) -> Result<()> {
        let exec_of = |id: &str| state.executions.iter().find(|e| e.id == id);
        let (detail_type, detail) = match change {
            Change::Execution { execution, status } => {
                let e = exec_of(execution);
                let resumed = e.is_some_and(|e| e.stages.iter().any(|s| s.attempt > 1))
                    && *status == engine::ExecStatus::InProgress;
                let meta = metas.get(execution);
                (
                    "CodePipeline Pipeline Execution State Change",
                    json!({
                        "pipeline": p.name,
                        "execution-id": execution,
                        "state": exec_state_name(*status, resumed),
                        "version": e.map_or(p.version, |e| e.version),
                        "execution-trigger": {
                            "trigger-type": meta.map(|m| m.trigger_type.clone()).unwrap_or_else(|| "StartPipelineExecution".into()),
                            "trigger-detail": meta.and_then(|m| m.trigger_detail.clone()).unwrap_or_default(),
                        },
                    }),
                )
            }
            Change::Stage {
                execution,
                stage,
                status,
            } => {
                let e = exec_of(execution);
                (
                    "CodePipeline Stage Execution State Change",
                    json!({
                        "pipeline": p.name,
                        "execution-id": execution,
                        "stage": e.map(|e| e.plan.stages[*stage].name.clone()),
                        "state": stage_state_name(*status),
                        "version": e.map_or(p.version, |e| e.version),
                    }),
                )
            }
            Change::Action {
                execution,
                stage,
                action,
                id,
                status,
            } => {
                let e = exec_of(execution);
                let (stage_name, action_name) = e
                    .map(|e| {
                        (
                            e.plan.stages[*stage].name.clone(),
                            e.plan.stages[*stage].actions[*action].name.clone(),
                        )
                    })
                    .unwrap_or_default();
                let t = p
                    .declaration
                    .stages
                    .iter()
                    .flatten()
                    .find(|s| s.name.as_deref() == Some(&stage_name))
                    .and_then(|s| {
                        s.actions
                            .iter()
                            .flatten()
                            .find(|a| a.name.as_deref() == Some(&action_name))
                    })
                    .and_then(|a| a.action_type_id.clone())
                    .unwrap_or_default();
                (
                    "CodePipeline Action Execution State Change",
                    json!({
                        "pipeline": p.name,
                        "execution-id": execution,
                        "action-execution-id": id,
                        "stage": stage_name,
                        "action": action_name,
                        "state": action_state_name(*status),
                        "region": &*self.region,
                        "type": {
                            "owner": t.owner, "provider": t.provider,
                            "category": t.category, "version": t.version,
                        },
                        "version": e.map_or(p.version, |e| e.version),
                    }),
                )
            }
        };
        events::append(
            conn,
            &OutboxEvent {
                source: "aws.codepipeline",
                detail_type,
                account: self.account_id().to_owned(),
                region: self.region.to_string(),
                resources: vec![self.pipeline_arn(&p.name)],
                detail,
            },
        )
        .await?;
        Ok(())
    }

    /// Applies an event to pipeline `name` in a transaction of its own.
    pub(crate) async fn transition(&self, name: &str, event: Event) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        let p = load_pipeline(&mut tx, &self.region, name)
            .await?
            .ok_or_else(|| crate::not_found(self.account_id(), name))?;
        self.apply(&mut tx, &p, event, None).await?;
        tx.commit().await?;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Records how a run ended and hands the result to the engine, in one transaction
    /// (only for a run still open: a result never counts twice).
    pub(crate) async fn finish_run(
        &self,
        conn: &mut Conn,
        job: &Job,
        result: ActionResult,
    ) -> Result<bool> {
        let detail = match &result {
            ActionResult::Succeeded(o) => json!({"status": "Succeeded", "output": o}),
            ActionResult::Failed {
                code,
                message,
                output,
            } => {
                json!({"status": "Failed", "code": code, "message": message, "output": output})
            }
        };
        let mut stored: Value = db::run_detail(conn, &job.action_execution_id)
            .await?
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_else(|| json!({}));
        if let (Some(s), Some(d)) = (stored.as_object_mut(), detail.as_object()) {
            s.extend(d.clone());
        }
        let id = &job.action_execution_id;
        if !db::finish_run(conn, id, &stored.to_string(), now()).await? {
            return Ok(false);
        }
        let Some(p) = load_pipeline(conn, &self.region, &job.pipeline).await? else {
            return Ok(false);
        };
        self.apply(
            conn,
            &p,
            Event::ActionDone {
                execution: job.execution_id.clone(),
                stage: job.stage_index,
                action: job.action_index,
                id: job.action_execution_id.clone(),
                result,
            },
            None,
        )
        .await?;
        Ok(true)
    }

    /// Stops a run that is out of our hands (a build), best effort.
    pub(crate) async fn cancel_run(&self, job: &Job) {
        let external = async {
            let mut conn = self.store().pool().acquire().await?;
            db::run_external(&mut conn, &job.action_execution_id).await
        };
        let external = external.await.ok().flatten().flatten();
        if let (Some(p), Some(x)) = (providers::provider(job), external) {
            p.cancel(&self.in_region(&job.region), job, &x).await;
        }
    }

    // ----- the loop -----

    /// Runs the runtime until `shutdown` resolves: triggers, queued runs, polls.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let in_flight = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::<
            String,
        >::new()));
        loop {
            if let Err(e) = self.read_triggers().await {
                tracing::warn!(error = %e, "reading pipeline triggers");
            }
            if let Err(e) = self.perform(&in_flight).await {
                tracing::warn!(error = %e, "performing pipeline actions");
            }
            tokio::select! {
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = &mut shutdown => break,
            }
        }
    }

    async fn perform(
        &self,
        in_flight: &std::sync::Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
    ) -> Result<()> {
        let mut conn = self.store().pool().acquire().await?;
        let rows = db::open_runs(&mut conn).await?;
        drop(conn);
        let t = now();
        let poll_all = self
            .inner
            .poll_now
            .swap(false, std::sync::atomic::Ordering::AcqRel);
        for r in rows {
            let db::OpenRun {
                id,
                status,
                job,
                external,
                updated,
            } = r;
            if status == "running" && !poll_all && t - updated < POLL_EVERY {
                continue;
            }
            if !in_flight
                .lock()
                .map(|mut s| s.insert(id.clone()))
                .unwrap_or(false)
            {
                continue;
            }
            let job: Job = match serde_json::from_str(&job) {
                Ok(j) => j,
                Err(e) => {
                    tracing::error!(error = %e, id, "an action run's job cannot be read");
                    in_flight.lock().map(|mut s| s.remove(&id)).ok();
                    continue;
                }
            };
            let cp = self.in_region(&job.region);
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                if let Err(e) = cp.perform_one(&job, &status, external.as_deref()).await {
                    tracing::warn!(error = %e, run = %job.action_execution_id, "an action run step failed; it is tried again");
                }
                in_flight.lock().map(|mut s| s.remove(&id)).ok();
                cp.inner.wake.notify_one();
            });
        }
        Ok(())
    }

    async fn perform_one(&self, job: &Job, status: &str, external: Option<&str>) -> Result<()> {
        let Some(provider) = providers::provider(job) else {
            return Ok(());
        };
        let step = match (status, external) {
            ("abandon", x) => {
                if let Some(x) = x {
                    provider.cancel(self, job, x).await;
                }
                let mut tx = self.store().begin_write().await?;
                db::run_done(&mut tx, &job.action_execution_id).await?;
                tx.commit().await?;
                return Ok(());
            }
            ("running", Some(x)) => provider.poll(self, job, x).await,
            _ => {
                let mut tx = self.store().begin_write().await?;
                let claimed = db::claim_run(&mut tx, &job.action_execution_id, now()).await?;
                tx.commit().await?;
                if !claimed {
                    return Ok(());
                }
                tracing::info!(pipeline = %job.pipeline, stage = %job.stage, action = %job.action, run = %job.action_execution_id, "starting action");
                provider.start(self, job).await
            }
        };
        match step {
            Step::Running {
                external_id,
                url,
                summary,
            } => {
                let detail = self.running_detail(job, url, summary).await?;
                let mut tx = self.store().begin_write().await?;
                let id = &job.action_execution_id;
                let running = db::set_running(&mut tx, id, &external_id, &detail, now()).await?;
                if running && status != "running" {
                    self.approval_notification(&mut tx, job, &external_id)
                        .await?;
                }
                tx.commit().await?;
            }
            Step::Done(result) => {
                let mut tx = self.store().begin_write().await?;
                let done = self.finish_run(&mut tx, job, result).await?;
                tx.commit().await?;
                if done {
                    tracing::info!(pipeline = %job.pipeline, stage = %job.stage, action = %job.action, "action finished");
                }
            }
        }
        Ok(())
    }

    /// A manual approval with a NotificationArn that just started: the notification AWS
    /// would publish to that topic, written to the outbox (Slipway has no SNS).
    async fn approval_notification(&self, conn: &mut Conn, job: &Job, token: &str) -> Result<()> {
        let Some(topic) = job.configuration.get("NotificationArn") else {
            return Ok(());
        };
        if job.category != "Approval" {
            return Ok(());
        }
        let deadline = job
            .deadline
            .unwrap_or(job.started + providers::manual::DEFAULT_TIMEOUT_SECS);
        let expires = time::OffsetDateTime::from_unix_timestamp(deadline as i64)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
        events::append(
            conn,
            &OutboxEvent {
                source: "aws.codepipeline",
                detail_type: "CodePipeline Manual Approval Notification",
                account: self.account_id().to_owned(),
                region: job.region.clone(),
                resources: vec![
                    topic.clone(),
                    self.in_region(&job.region).pipeline_arn(&job.pipeline),
                ],
                detail: json!({
                    "notificationArn": topic,
                    "approval": {
                        "pipelineName": job.pipeline,
                        "stageName": job.stage,
                        "actionName": job.action,
                        "token": token,
                        "expires": expires,
                        "externalEntityLink": job.configuration.get("ExternalEntityLink"),
                        "customData": job.configuration.get("CustomData"),
                    },
                }),
            },
        )
        .await?;
        Ok(())
    }

    async fn running_detail(
        &self,
        job: &Job,
        url: Option<String>,
        summary: Option<String>,
    ) -> Result<String> {
        let mut conn = self.store().pool().acquire().await?;
        let mut d: Value = db::run_detail(&mut conn, &job.action_execution_id)
            .await?
            .and_then(|d| serde_json::from_str(&d).ok())
            .unwrap_or_else(|| json!({}));
        d["url"] = json!(url);
        d["summary"] = json!(summary);
        Ok(d.to_string())
    }

    // ----- triggers -----

    /// Starts the pipelines the new outbox events concern (pushes to a source branch, new
    /// versions of a source object), moving the reader in the same transaction.
    async fn read_triggers(&self) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        let cursor = events::cursor(&mut tx, TRIGGER_READER).await?;
        let rows = events::after(&mut tx, cursor, 200).await?;
        let Some(last) = rows.last().map(|(seq, _)| *seq) else {
            return Ok(());
        };
        let mut started = 0;
        for (seq, body) in &rows {
            let body: Value = serde_json::from_str(body).unwrap_or_default();
            started += self.trigger_from(&mut tx, *seq, &body).await?;
        }
        events::set_cursor(&mut tx, TRIGGER_READER, last).await?;
        tx.commit().await?;
        if started > 0 {
            self.inner.wake.notify_one();
        }
        Ok(())
    }

    /// Starts what one event (outbox sequence number `seq`) triggers; how many executions.
    /// Pipelines created after the event are not started by it.
    async fn trigger_from(&self, conn: &mut Conn, seq: i64, event: &Value) -> Result<usize> {
        let region = event["region"].as_str().unwrap_or_default();
        let d = &event["detail"];
        let source = event["source"].as_str().unwrap_or_default();
        let change = match (source, event["detail-type"].as_str()) {
            ("aws.codecommit", Some("CodeCommit Repository State Change"))
                if matches!(
                    d["event"].as_str(),
                    Some("referenceCreated" | "referenceUpdated")
                ) =>
            {
                SourceChange::Push {
                    repository: d["repositoryName"].as_str().unwrap_or_default().to_owned(),
                    kind: d["referenceType"].as_str().unwrap_or_default().to_owned(),
                    name: d["referenceName"].as_str().unwrap_or_default().to_owned(),
                    commit: d["commitId"].as_str().unwrap_or_default().to_owned(),
                }
            }
            ("aws.s3", Some("Object Created")) => SourceChange::Object {
                bucket: d["bucket"]["name"].as_str().unwrap_or_default().to_owned(),
                key: d["object"]["key"].as_str().unwrap_or_default().to_owned(),
                version: d["object"]["version-id"].as_str().map(str::to_owned),
            },
            _ => return Ok(0),
        };
        let cp = self.in_region(region);
        let names: Vec<(String, String)> = db::pipelines(conn, region)
            .await?
            .into_iter()
            .filter(|r| r.events_after < seq)
            .map(|r| (r.name, r.declaration))
            .collect();
        let mut n = 0;
        for (name, doc) in names {
            let Ok(decl) = serde_json::from_str::<PipelineDeclaration>(&doc) else {
                continue;
            };
            let mut revisions = BTreeMap::new();
            for action in decl
                .stages
                .iter()
                .flatten()
                .take(1)
                .flat_map(|s| s.actions.iter().flatten())
            {
                if let Some(rev) = crate::triggers::matches(&decl, action, &change) {
                    revisions.insert(action.name.clone().unwrap_or_default(), rev);
                }
            }
            if revisions.is_empty() {
                continue;
            }
            let (kind, detail) = match &change {
                SourceChange::Push { repository, .. } => (
                    "CloudWatchEvent",
                    cp.inner.codecommit.in_region(region).arn(repository),
                ),
                SourceChange::Object { bucket, key, .. } => {
                    ("CloudWatchEvent", format!("arn:aws:s3:::{bucket}/{key}"))
                }
            };
            let trigger = Trigger {
                kind: kind.into(),
                detail: Some(detail),
                revisions,
            };
            match cp.start_in(conn, &name, &[], None, trigger).await {
                Ok(id) => {
                    tracing::info!(pipeline = %name, execution = %id, "a source change started the pipeline");
                    n += 1;
                }
                Err(e) => {
                    tracing::warn!(pipeline = %name, error = %e, "a source change could not start the pipeline")
                }
            }
        }
        Ok(n)
    }
}

/// A source change read from the outbox.
#[derive(Debug, Clone)]
pub enum SourceChange {
    Push {
        repository: String,
        /// `branch` or `tag`
        kind: String,
        name: String,
        commit: String,
    },
    Object {
        bucket: String,
        key: String,
        version: Option<String>,
    },
}
