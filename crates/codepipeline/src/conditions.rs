//! Stage conditions as the API shows them: their states in GetPipelineState,
//! ListRuleExecutions, ListRuleTypes and OverrideStageCondition.

use crate::engine::{CondKind, Execution, StageRun};
use crate::error::{err, ErrorKind, Result};
use crate::CodePipeline;
use serde_json::Value;
use slipway_model::codepipeline::*;
use std::collections::BTreeMap;

fn kind_of(record: &Value) -> Option<CondKind> {
    serde_json::from_value(record.get("kind")?.clone()).ok()
}

fn text(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn strings(v: &Value) -> Option<BTreeMap<String, String>> {
    serde_json::from_value(v.clone()).ok()
}

/// The latest check of condition set `kind` in `run`, as GetPipelineState shows it.
pub(crate) fn state_of(run: &StageRun, kind: CondKind) -> Option<StageConditionState> {
    let record = run
        .condition_records
        .iter()
        .rev()
        .find(|r| kind_of(r) == Some(kind))?;
    let rules = record["rules"].as_array().cloned().unwrap_or_default();
    Some(StageConditionState {
        latest_execution: Some(StageConditionsExecution {
            status: text(record, "status"),
            summary: text(record, "summary"),
        }),
        condition_states: Some(vec![ConditionState {
            latest_execution: Some(ConditionExecution {
                status: text(record, "status"),
                summary: text(record, "summary"),
                last_status_change: record["time"].as_f64(),
            }),
            rule_states: Some(
                rules
                    .iter()
                    .map(|r| RuleState {
                        rule_name: text(r, "ruleName"),
                        latest_execution: Some(RuleExecution {
                            rule_execution_id: text(r, "ruleExecutionId"),
                            status: text(r, "status"),
                            summary: text(r, "summary"),
                            last_status_change: r["time"].as_f64(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
        }]),
    })
}

fn rule_details(e: &Execution, out: &mut Vec<RuleExecutionDetail>) {
    for (plan, run) in e.plan.stages.iter().zip(&e.stages) {
        for record in &run.condition_records {
            for r in record["rules"].as_array().into_iter().flatten() {
                let status = text(r, "status");
                out.push(RuleExecutionDetail {
                    pipeline_execution_id: Some(e.id.clone()),
                    rule_execution_id: text(r, "ruleExecutionId"),
                    pipeline_version: Some(e.version as i32),
                    stage_name: Some(plan.name.clone()),
                    rule_name: text(r, "ruleName"),
                    start_time: r["time"].as_f64(),
                    last_update_time: r["time"].as_f64(),
                    status: status.clone(),
                    input: Some(RuleExecutionInput {
                        rule_type_id: serde_json::from_value(r["ruleTypeId"].clone()).ok(),
                        configuration: strings(&r["configuration"]),
                        resolved_configuration: strings(&r["resolvedConfiguration"]),
                        ..Default::default()
                    }),
                    output: Some(RuleExecutionOutput {
                        execution_result: Some(RuleExecutionResult {
                            external_execution_summary: text(r, "summary"),
                            error_details: (status.as_deref() == Some("Failed")).then(|| {
                                ErrorDetails {
                                    code: Some("RuleFailed".into()),
                                    message: text(r, "summary"),
                                }
                            }),
                            ..Default::default()
                        }),
                    }),
                    ..Default::default()
                });
            }
        }
    }
}

impl CodePipeline {
    /// ListRuleExecutions: every rule checked in the pipeline's executions (or in one),
    /// newest first.
    pub async fn list_rule_executions(
        &self,
        name: &str,
        execution: Option<&str>,
    ) -> Result<Vec<RuleExecutionDetail>> {
        self.pipeline(name).await?;
        let which = match execution {
            Some(id) => slipway_store::pipelines::Executions::One(id),
            None => slipway_store::pipelines::Executions::All,
        };
        let execs = self.executions_of(name, which).await?;
        if execs.is_empty() {
            if let Some(id) = execution {
                return Err(crate::executions::exec_not_found(id, name));
            }
        }
        let mut out = Vec::new();
        for (e, _) in execs {
            rule_details(&e, &mut out);
        }
        out.sort_by(|a, b| {
            b.start_time
                .unwrap_or_default()
                .total_cmp(&a.start_time.unwrap_or_default())
        });
        Ok(out)
    }

    /// OverrideStageCondition: Slipway's rules decide when they are checked, so no
    /// condition is ever in progress to be overridden.
    pub async fn override_stage_condition(
        &self,
        name: &str,
        stage: &str,
        execution: &str,
        condition_type: &str,
    ) -> Result<()> {
        let p = self.pipeline(name).await?;
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
        self.execution_of(name, execution).await?;
        Err(err(
            ErrorKind::ConditionNotOverridableException,
            format!("The {condition_type} condition of stage {stage} in pipeline execution {execution} is not in progress and cannot be overridden"),
        ))
    }
}

/// ListRuleTypes: the rules Slipway checks.
pub fn rule_types(owner: Option<&str>) -> Vec<RuleType> {
    if owner.is_some_and(|o| o != "AWS") {
        return Vec::new();
    }
    crate::rules::RULE_TYPES
        .iter()
        .map(|(provider, required, optional)| RuleType {
            id: Some(RuleTypeId {
                category: Some("Rule".into()),
                owner: Some("AWS".into()),
                provider: Some((*provider).into()),
                version: Some("1".into()),
            }),
            settings: Some(RuleTypeSettings::default()),
            rule_configuration_properties: Some(
                required
                    .iter()
                    .map(|k| (k, true))
                    .chain(optional.iter().map(|k| (k, false)))
                    .map(|(k, required)| RuleConfigurationProperty {
                        name: Some((*k).into()),
                        required: Some(required),
                        key: Some(false),
                        secret: Some(false),
                        queryable: Some(false),
                        r#type: Some("String".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            input_artifact_details: Some(ArtifactDetails {
                minimum_count: Some(0),
                maximum_count: Some(0),
            }),
        })
        .collect()
}
