//! Pipeline declarations: CreatePipeline/UpdatePipeline's checks beyond the model's
//! (stages, actions, artifact wiring, action types and their configuration keys, V1/V2
//! rules, artifact stores, triggers), and the engine's [`Plan`] compiled from a valid one.

use crate::action_types::{self, ActionType};
use crate::engine::{ActionPlan, Cond, CondKind, OnFailure, Plan, StagePlan};
use crate::error::{err, ErrorKind, Result};
use slipway_model::codepipeline::{ActionDeclaration, PipelineDeclaration, StageDeclaration};
use std::collections::{BTreeMap, BTreeSet};

/// A custom action type (CreateCustomActionType) as validation needs it.
#[derive(Debug, Clone)]
pub struct CustomType {
    pub category: String,
    pub provider: String,
    pub version: String,
    pub inputs: (i32, i32),
    pub outputs: (i32, i32),
    /// (name, required)
    pub properties: Vec<(String, bool)>,
    /// The properties marked secret: their values are kept sealed and shown as `****`.
    pub secrets: Vec<String>,
}

fn structure(msg: impl Into<String>) -> crate::error::Error {
    err(ErrorKind::InvalidStructureException, msg)
}
fn stage_error(msg: impl Into<String>) -> crate::error::Error {
    err(ErrorKind::InvalidStageDeclarationException, msg)
}
fn action_error(msg: impl Into<String>) -> crate::error::Error {
    err(ErrorKind::InvalidActionDeclarationException, msg)
}

/// Whether the declaration is V2 (V1 when `pipelineType` is absent).
pub fn is_v2(d: &PipelineDeclaration) -> bool {
    d.pipeline_type.as_deref() == Some("V2")
}

/// The artifact bucket of `region` (the pipeline's `artifactStore`, or its
/// `artifactStores` entry for that region).
pub fn artifact_bucket(d: &PipelineDeclaration, region: &str) -> Option<String> {
    match (&d.artifact_store, &d.artifact_stores) {
        (Some(s), _) => s.location.clone(),
        (None, Some(m)) => m.get(region).and_then(|s| s.location.clone()),
        _ => None,
    }
}

/// The action type an action names, if Slipway knows it: (bounds, (key, required) list,
/// is a source).
struct Known {
    inputs: (i32, i32),
    outputs: (i32, i32),
    properties: Vec<(String, bool)>,
    source: bool,
}

fn known(a: &ActionDeclaration, custom: &[CustomType]) -> Option<Known> {
    let t = a.action_type_id.as_ref()?;
    let (c, o, p, v) = (
        t.category.as_deref().unwrap_or_default(),
        t.owner.as_deref().unwrap_or_default(),
        t.provider.as_deref().unwrap_or_default(),
        t.version.as_deref().unwrap_or_default(),
    );
    if let Some(ActionType {
        inputs,
        outputs,
        properties,
        source,
        ..
    }) = action_types::built_in(c, o, p, v)
    {
        return Some(Known {
            inputs: *inputs,
            outputs: *outputs,
            properties: properties
                .iter()
                .map(|p| (p.name.to_owned(), p.required))
                .collect(),
            source: *source,
        });
    }
    custom
        .iter()
        .find(|x| o == "Custom" && x.category == c && x.provider == p && x.version == v)
        .map(|x| Known {
            inputs: x.inputs,
            outputs: x.outputs,
            properties: x.properties.clone(),
            source: c == "Source",
        })
}

fn type_name(a: &ActionDeclaration) -> String {
    let t = a.action_type_id.clone().unwrap_or_default();
    format!(
        "ActionType (Category: '{}', Provider: '{}', Owner: '{}', Version: '{}')",
        t.category.unwrap_or_default(),
        t.provider.unwrap_or_default(),
        t.owner.unwrap_or_default(),
        t.version.unwrap_or_default()
    )
}

/// Checks a declaration (the model's constraints already hold) in `region`; its plan.
pub fn validate(d: &PipelineDeclaration, region: &str, custom: &[CustomType]) -> Result<Plan> {
    let v2 = is_v2(d);
    match (&d.artifact_store, &d.artifact_stores) {
        (Some(_), Some(_)) => {
            return Err(structure(
                "Pipeline cannot have both artifactStore and artifactStores",
            ))
        }
        (None, None) => {
            return Err(structure(
                "Pipeline must have either artifactStore or artifactStores",
            ))
        }
        (None, Some(m)) if !m.contains_key(region) => {
            return Err(structure(format!(
                "artifactStores must contain an artifact store for the pipeline's region '{region}'"
            )))
        }
        _ => {}
    }
    for store in d
        .artifact_store
        .iter()
        .chain(d.artifact_stores.iter().flat_map(|m| m.values()))
    {
        if store.r#type.as_deref() != Some("S3") {
            return Err(structure("Artifact store type must be S3"));
        }
    }
    if !v2 {
        if d.variables.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(structure(
                "Pipeline variables are only supported by pipelines of type V2",
            ));
        }
        if d.triggers.as_ref().is_some_and(|v| !v.is_empty()) {
            return Err(structure(
                "Pipeline triggers are only supported by pipelines of type V2",
            ));
        }
        if matches!(
            d.execution_mode.as_deref(),
            Some("QUEUED") | Some("PARALLEL")
        ) {
            return Err(structure(format!(
                "Execution mode {} is only supported by pipelines of type V2",
                d.execution_mode.as_deref().unwrap_or_default()
            )));
        }
    }
    let mut names = BTreeSet::new();
    for var in d.variables.iter().flatten() {
        let name = var.name.clone().unwrap_or_default();
        if !names.insert(name.clone()) {
            return Err(structure(format!(
                "Pipeline variable {name} is declared more than once"
            )));
        }
    }
    let stages = d.stages.as_deref().unwrap_or_default();
    if stages.len() < 2 {
        return Err(structure(format!(
            "Pipeline has only {} stage(s). There should be a minimum of 2 stages in a pipeline",
            stages.len()
        )));
    }
    let mut stage_names = BTreeSet::new();
    let mut produced: BTreeSet<String> = BTreeSet::new();
    let mut namespaces = BTreeSet::new();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    let mut plan = Plan::default();
    for (si, stage) in stages.iter().enumerate() {
        let sname = stage.name.clone().unwrap_or_default();
        if !stage_names.insert(sname.clone()) {
            return Err(stage_error(format!(
                "Stage name {sname} is used more than once in the pipeline; stage names must be unique"
            )));
        }
        let conditions = [
            stage
                .before_entry
                .as_ref()
                .and_then(|c| c.conditions.as_ref()),
            stage
                .on_success
                .as_ref()
                .and_then(|c| c.conditions.as_ref()),
            stage
                .on_failure
                .as_ref()
                .and_then(|c| c.conditions.as_ref()),
        ];
        let rollback =
            stage.on_failure.as_ref().and_then(|f| f.result.as_deref()) == Some("ROLLBACK");
        if !v2 && (rollback || conditions.iter().any(|c| c.is_some_and(|c| !c.is_empty()))) {
            return Err(stage_error(format!(
                "Stage {sname} has conditions or a rollback on failure, which only pipelines of type V2 support"
            )));
        }
        plan.stages.push(check_stage(
            stage,
            si,
            v2,
            custom,
            &mut produced,
            &mut namespaces,
            &mut sources,
        )?);
    }
    for t in d.triggers.iter().flatten() {
        let git = t.git_configuration.clone().unwrap_or_default();
        let action = git.source_action_name.unwrap_or_default();
        match sources.get(&action).map(String::as_str) {
            Some("CodeCommit" | "CodeStarSourceConnection") => {}
            Some(p) => {
                return Err(structure(format!(
                    "Trigger source action {action} has provider {p}; git triggers need a CodeCommit or CodeStarSourceConnection source action"
                )))
            }
            None => {
                return Err(structure(format!(
                    "Trigger source action {action} is not a source action of the pipeline"
                )))
            }
        }
        if git.pull_request.as_ref().is_some_and(|p| !p.is_empty()) {
            return Err(structure(
                "Pull request triggers need a CodeStarSourceConnection source action, which Slipway does not serve",
            ));
        }
        for f in git.push.iter().flatten() {
            if f.branches.is_some() && f.tags.is_some() {
                return Err(structure(
                    "A push filter cannot have both branches and tags",
                ));
            }
        }
    }
    Ok(plan)
}

fn check_stage(
    stage: &StageDeclaration,
    si: usize,
    v2: bool,
    custom: &[CustomType],
    produced: &mut BTreeSet<String>,
    namespaces: &mut BTreeSet<String>,
    sources: &mut BTreeMap<String, String>,
) -> Result<StagePlan> {
    let sname = stage.name.clone().unwrap_or_default();
    let actions = stage.actions.as_deref().unwrap_or_default();
    if actions.is_empty() {
        return Err(stage_error(format!(
            "Stage {sname} has no actions; a stage needs at least one"
        )));
    }
    let mut action_names = BTreeSet::new();
    // Outputs of this stage become visible to the actions of a later run order only.
    let mut by_order: Vec<(&ActionDeclaration, u32)> = actions
        .iter()
        .map(|a| (a, a.run_order.unwrap_or(1).max(1) as u32))
        .collect();
    by_order.sort_by_key(|(_, r)| *r);
    let mut stage_outputs: Vec<(u32, String)> = Vec::new();
    for (a, order) in &by_order {
        let aname = a.name.clone().unwrap_or_default();
        if !action_names.insert(aname.clone()) {
            return Err(action_error(format!(
                "Action name {aname} is used more than once in stage {sname}; action names must be unique within a stage"
            )));
        }
        let Some(k) = known(a, custom) else {
            return Err(action_error(format!(
                "{} in action '{aname}' is not available",
                type_name(a)
            )));
        };
        let category = a
            .action_type_id
            .as_ref()
            .and_then(|t| t.category.clone())
            .unwrap_or_default();
        if si == 0 && !k.source {
            return Err(structure(format!(
                "Stage {sname} is the first stage and action {aname} is not a source action; the first stage may contain only source actions"
            )));
        }
        if si > 0 && k.source {
            return Err(structure(format!(
                "Action {aname} in stage {sname} is a source action; source actions may only be in the first stage"
            )));
        }
        let inputs = a.input_artifacts.as_deref().unwrap_or_default();
        let outputs = a.output_artifacts.as_deref().unwrap_or_default();
        let count = |n: usize, (lo, hi): (i32, i32), what: &str| -> Result<()> {
            if (n as i32) < lo || (n as i32) > hi {
                return Err(action_error(format!(
                    "Action {aname} of {} has {n} {what} artifacts; it needs at least {lo} and at most {hi}",
                    type_name(a)
                )));
            }
            Ok(())
        };
        count(inputs.len(), k.inputs, "input")?;
        count(outputs.len(), k.outputs, "output")?;
        for i in inputs {
            let n = i.name.clone().unwrap_or_default();
            let earlier = produced.contains(&n)
                || stage_outputs
                    .iter()
                    .any(|(o, name)| o < order && *name == n);
            if !earlier {
                return Err(structure(format!(
                    "Input artifact {n} of action {aname} in stage {sname} is not the output artifact of an action before it"
                )));
            }
        }
        for o in outputs {
            let n = o.name.clone().unwrap_or_default();
            if produced.contains(&n) || stage_outputs.iter().any(|(_, x)| *x == n) {
                return Err(structure(format!(
                    "Output artifact name {n} of action {aname} is used by another action; output artifact names must be unique in a pipeline"
                )));
            }
            stage_outputs.push((*order, n));
        }
        if let Some(ns) = &a.namespace {
            if !namespaces.insert(ns.clone()) {
                return Err(action_error(format!(
                    "Namespace {ns} of action {aname} is used by another action; namespaces must be unique in a pipeline"
                )));
            }
        }
        let config = a.configuration.clone().unwrap_or_default();
        for (key, required) in &k.properties {
            if *required && !config.contains_key(key) {
                return Err(action_error(format!(
                    "Action configuration for action '{aname}' is missing required configuration '{key}'"
                )));
            }
        }
        for key in config.keys() {
            if !k.properties.iter().any(|(p, _)| p == key) {
                return Err(action_error(format!(
                    "Action configuration for action '{aname}' contains unknown configuration '{key}'"
                )));
            }
        }
        let provider = a
            .action_type_id
            .as_ref()
            .and_then(|t| t.provider.as_deref())
            .unwrap_or_default();
        if !v2 && category == "Compute" {
            return Err(action_error(format!(
                "Action {aname} of provider {provider} is only available in pipelines of type V2"
            )));
        }
        let listed = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| !v.is_empty());
        if (listed(&a.commands) || listed(&a.output_variables)) && category != "Compute" {
            return Err(action_error(format!(
                "Action {aname}: commands and outputVariables are only for actions of provider Commands"
            )));
        }
        if category == "Compute" && a.commands.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(action_error(format!(
                "Action {aname} of provider Commands needs commands"
            )));
        }
        if k.source {
            let provider = a
                .action_type_id
                .as_ref()
                .and_then(|t| t.provider.clone())
                .unwrap_or_default();
            sources.insert(aname.clone(), provider);
        }
    }
    produced.extend(stage_outputs.into_iter().map(|(_, n)| n));
    check_conditions(stage, si)?;
    Ok(stage_plan(stage))
}

/// A stage's condition sets: known rule types with their required configuration, and
/// the results each kind allows.
fn check_conditions(stage: &StageDeclaration, si: usize) -> Result<()> {
    let sname = stage.name.clone().unwrap_or_default();
    let sets = [
        (
            "beforeEntry",
            stage
                .before_entry
                .as_ref()
                .and_then(|b| b.conditions.as_ref()),
            &["FAIL", "SKIP"][..],
        ),
        (
            "onSuccess",
            stage
                .on_success
                .as_ref()
                .and_then(|b| b.conditions.as_ref()),
            &["ROLLBACK", "FAIL"][..],
        ),
        (
            "onFailure",
            stage
                .on_failure
                .as_ref()
                .and_then(|b| b.conditions.as_ref()),
            &["ROLLBACK", "FAIL", "RETRY", "SKIP"][..],
        ),
    ];
    for (what, conditions, results) in sets {
        let Some(conditions) = conditions else {
            continue;
        };
        if si == 0 && !conditions.is_empty() {
            return Err(stage_error(format!(
                "Stage {sname} is the first stage; conditions cannot be set on it"
            )));
        }
        for c in conditions {
            if let Some(r) = c.result.as_deref() {
                if !results.contains(&r) {
                    return Err(stage_error(format!(
                        "Result {r} is not valid for the {what} conditions of stage {sname}; use one of {}",
                        results.join(", ")
                    )));
                }
            }
            for rule in c.rules.iter().flatten() {
                let rname = rule.name.clone().unwrap_or_default();
                let t = rule.rule_type_id.clone().unwrap_or_default();
                let provider = t.provider.unwrap_or_default();
                let known = crate::rules::RULE_TYPES
                    .iter()
                    .find(|(p, _, _)| *p == provider);
                let Some((_, required, optional)) = known.filter(|_| {
                    t.category.as_deref() == Some("Rule")
                        && t.owner.as_deref().unwrap_or("AWS") == "AWS"
                        && t.version.as_deref().unwrap_or("1") == "1"
                }) else {
                    return Err(stage_error(format!(
                        "Rule type {}/{}/{provider}/{} of rule {rname} in stage {sname} is not available",
                        t.category.unwrap_or_default(),
                        t.owner.unwrap_or_default(),
                        t.version.unwrap_or_default()
                    )));
                };
                let config = rule.configuration.clone().unwrap_or_default();
                for key in *required {
                    if !config.contains_key(*key) {
                        return Err(stage_error(format!(
                            "Rule configuration for rule '{rname}' is missing required configuration '{key}'"
                        )));
                    }
                }
                for key in config.keys() {
                    if !required.contains(&key.as_str()) && !optional.contains(&key.as_str()) {
                        return Err(stage_error(format!(
                            "Rule configuration for rule '{rname}' contains unknown configuration '{key}'"
                        )));
                    }
                }
                if provider == "VariableCheck" {
                    let op = config
                        .get("Operator")
                        .map(String::as_str)
                        .unwrap_or_default();
                    if !["EQ", "NE", "CONTAINS", "MATCHES"].contains(&op) {
                        return Err(stage_error(format!(
                            "Operator {op} of rule '{rname}' is not valid; use EQ, NE, CONTAINS or MATCHES"
                        )));
                    }
                }
                if provider == "DeploymentWindow" {
                    let cron = config.get("Cron").map(String::as_str).unwrap_or_default();
                    let zone = config.get("TimeZone").map(String::as_str);
                    if let Err(m) = crate::rules::in_window(cron, zone, 0.0) {
                        return Err(stage_error(format!("Rule '{rname}': {m}")));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The engine's plan of a declaration (checked before it was stored).
pub fn plan_of(d: &PipelineDeclaration) -> Plan {
    Plan {
        stages: d.stages.iter().flatten().map(stage_plan).collect(),
    }
}

fn on_failure_retry(stage: &StageDeclaration) -> OnFailure {
    OnFailure::Retry {
        all: stage
            .on_failure
            .as_ref()
            .and_then(|f| f.retry_configuration.as_ref())
            .and_then(|r| r.retry_mode.as_deref())
            == Some("ALL_ACTIONS"),
    }
}

fn stage_plan(stage: &StageDeclaration) -> StagePlan {
    let on_failure = match stage.on_failure.as_ref().and_then(|f| f.result.as_deref()) {
        Some("RETRY") => on_failure_retry(stage),
        Some("SKIP") => OnFailure::Skip,
        Some("ROLLBACK") => OnFailure::Rollback,
        _ => OnFailure::Fail,
    };
    let mut conditions = Vec::new();
    let sets = [
        (
            CondKind::BeforeEntry,
            stage
                .before_entry
                .as_ref()
                .and_then(|b| b.conditions.as_ref()),
            OnFailure::Fail,
        ),
        (
            CondKind::OnSuccess,
            stage
                .on_success
                .as_ref()
                .and_then(|b| b.conditions.as_ref()),
            OnFailure::Rollback,
        ),
        (
            CondKind::OnFailure,
            stage
                .on_failure
                .as_ref()
                .and_then(|b| b.conditions.as_ref()),
            on_failure,
        ),
    ];
    for (kind, set, default) in sets {
        let Some(c) = set.and_then(|c| {
            c.iter()
                .find(|x| x.rules.as_ref().is_some_and(|r| !r.is_empty()))
        }) else {
            continue;
        };
        let result = match c.result.as_deref() {
            Some("SKIP") => OnFailure::Skip,
            Some("ROLLBACK") => OnFailure::Rollback,
            Some("FAIL") => OnFailure::Fail,
            Some("RETRY") => on_failure_retry(stage),
            _ => default,
        };
        conditions.push(Cond { kind, result });
    }
    StagePlan {
        conditions,
        name: stage.name.clone().unwrap_or_default(),
        actions: stage
            .actions
            .iter()
            .flatten()
            .map(|a| ActionPlan {
                name: a.name.clone().unwrap_or_default(),
                run_order: a.run_order.unwrap_or(1).max(1) as u32,
            })
            .collect(),
        on_failure,
    }
}
