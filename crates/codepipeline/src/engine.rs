//! The pipeline engine: a pure state machine, `step(state, event) → effects`, with no IO.
//!
//! A [`PipelineState`] holds one pipeline's executions that are still going (and any the
//! event names); [`step`] applies one [`Event`] and then advances every execution as far as
//! it can go — entering stages whose lock is free, starting the next run order's actions,
//! finishing stages and executions — and returns what the runtime must do: run or abandon
//! an action, and report a state change. The runtime persists the new state and the effects
//! in one transaction, then performs the effects.
//!
//! Locking follows CodePipeline: a stage holds at most one execution (unless the mode is
//! PARALLEL); an execution that finds the next stage busy waits at its boundary. In
//! SUPERSEDED mode a newer execution reaching that boundary replaces the one waiting there
//! (which ends `Superseded`); in QUEUED mode they enter in the order they started. An
//! execution also waits at a stage whose inbound transition is disabled.

use crate::error::{err, ErrorKind, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How executions share the pipeline's stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Mode {
    #[default]
    Superseded,
    Queued,
    Parallel,
}

impl Mode {
    pub fn parse(s: Option<&str>) -> Mode {
        match s {
            Some("QUEUED") => Mode::Queued,
            Some("PARALLEL") => Mode::Parallel,
            _ => Mode::Superseded,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Superseded => "SUPERSEDED",
            Mode::Queued => "QUEUED",
            Mode::Parallel => "PARALLEL",
        }
    }
}

/// What a failed stage does next (its `onFailure.result`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum OnFailure {
    #[default]
    Fail,
    /// Retry the stage once (failed actions, or all of them).
    Retry { all: bool },
    /// Skip the stage: the execution goes on to the next one.
    Skip,
    /// Fail the stage and roll it back to the last execution that succeeded in it.
    Rollback,
}

/// The part of a pipeline's declaration the engine needs: stages, their actions' run
/// orders, and what a failure does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Plan {
    pub stages: Vec<StagePlan>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct StagePlan {
    pub name: String,
    pub actions: Vec<ActionPlan>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// The stage's condition sets that have rules to check.
    #[serde(default)]
    pub conditions: Vec<Cond>,
}

/// One condition set of a stage and what engages when it decides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cond {
    pub kind: CondKind,
    /// beforeEntry/onSuccess: what happens when the rules do not pass (Fail, Skip or
    /// Rollback); onFailure: what happens when they pass (otherwise the stage fails).
    pub result: OnFailure,
}

/// A stage's condition sets: checked before it is entered, when its actions succeeded, or
/// when one failed (then its `onFailure.result` applies only if the conditions hold).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CondKind {
    BeforeEntry,
    OnSuccess,
    OnFailure,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionPlan {
    pub name: String,
    pub run_order: u32,
}

macro_rules! statuses {
    ($(#[$m:meta])* $name:ident { $($v:ident),* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $name { $($v),* }
        impl $name {
            /// The name AWS uses.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => stringify!($v)),* }
            }
        }
    };
}

statuses!(
    /// A pipeline execution's status.
    ExecStatus { InProgress, Stopping, Stopped, Succeeded, Superseded, Failed, Cancelled }
);
statuses!(
    /// A stage execution's status.
    StageStatus { InProgress, Stopping, Stopped, Succeeded, Failed, Cancelled, Skipped }
);
statuses!(
    /// An action execution's status.
    ActionStatus { InProgress, Abandoned, Succeeded, Failed }
);

impl ExecStatus {
    /// Still going (holding or waiting for stages).
    pub fn is_active(self) -> bool {
        matches!(self, ExecStatus::InProgress | ExecStatus::Stopping)
    }
}

/// Where an execution is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// Waiting to enter stage `n` (at its inbound transition).
    Waiting(usize),
    /// In stage `n`.
    InStage(usize),
    /// Past the last stage, or ended.
    Done,
}

/// An artifact an action produced: where its zip is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub bucket: String,
    pub key: String,
}

/// A source revision an action read (for GetPipelineState and the execution summary).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Revision {
    pub revision_id: String,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub created: Option<f64>,
}

/// What an action run left behind (kept whether it succeeded or failed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionOutput {
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub revision: Option<Revision>,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub external_id: Option<String>,
    #[serde(default)]
    pub external_url: Option<String>,
}

/// How an action run ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ActionResult {
    Succeeded(ActionOutput),
    Failed {
        code: String,
        message: String,
        output: ActionOutput,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct ActionRun {
    /// None: not run in this stage attempt yet.
    pub status: Option<ActionStatus>,
    /// The current (or last) run's actionExecutionId.
    pub id: Option<String>,
    pub updated: f64,
    #[serde(default)]
    pub output: ActionOutput,
    /// (code, message) of the last failure.
    #[serde(default)]
    pub error: Option<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct StageRun {
    pub status: Option<StageStatus>,
    pub actions: Vec<ActionRun>,
    /// 1 on entry, one more for every retry.
    #[serde(default)]
    pub attempt: u32,
    pub updated: f64,
    /// The condition sets checked in this attempt: (which, whether they held).
    #[serde(default)]
    pub checked: Vec<(CondKind, bool)>,
    /// What the checks found, as the runtime recorded it (the engine never reads it).
    #[serde(default)]
    pub condition_records: Vec<serde_json::Value>,
}

/// A stop asked for by StopPipelineExecution.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StopRequest {
    pub abandon: bool,
    pub reason: Option<String>,
}

/// One pipeline execution: which version it runs, where it is, each stage's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Execution {
    pub id: String,
    /// Start order within the pipeline.
    pub seq: i64,
    pub version: i64,
    pub mode: Mode,
    pub plan: Plan,
    pub status: ExecStatus,
    pub position: Position,
    pub stages: Vec<StageRun>,
    #[serde(default)]
    pub stop: Option<StopRequest>,
    #[serde(default)]
    pub summary: Option<String>,
    pub started: f64,
    pub updated: f64,
}

impl Execution {
    /// A new execution of `plan`, waiting to enter its first stage.
    pub fn new(id: String, seq: i64, version: i64, mode: Mode, plan: Plan, now: f64) -> Self {
        let stages = plan
            .stages
            .iter()
            .map(|s| StageRun {
                status: None,
                actions: vec![ActionRun::default(); s.actions.len()],
                attempt: 0,
                updated: now,
                checked: Vec::new(),
                condition_records: Vec::new(),
            })
            .collect();
        Execution {
            id,
            seq,
            version,
            mode,
            plan,
            status: ExecStatus::InProgress,
            position: Position::Waiting(0),
            stages,
            stop: None,
            summary: None,
            started: now,
            updated: now,
        }
    }

    /// The stage this execution holds (is inside, not waiting for).
    fn holds(&self) -> Option<usize> {
        match (self.status.is_active(), self.position) {
            (true, Position::InStage(n)) => Some(n),
            _ => None,
        }
    }

    fn waits_at(&self) -> Option<usize> {
        match (self.status.is_active(), self.position) {
            (true, Position::Waiting(n)) => Some(n),
            _ => None,
        }
    }
}

/// One pipeline's engine state: its disabled transitions, which execution entered each
/// stage last, and its executions (oldest first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct PipelineState {
    pub disabled: BTreeSet<String>,
    /// Stage name → the execution that entered it last.
    pub latest: BTreeMap<String, String>,
    pub executions: Vec<Execution>,
}

/// Something that happened to the pipeline (one at a time, never stored: its size does
/// not matter).
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Event {
    /// A new execution (see [`Execution::new`]).
    Start(Box<Execution>),
    /// An action run ended.
    ActionDone {
        execution: String,
        stage: usize,
        action: usize,
        id: String,
        result: ActionResult,
    },
    /// StopPipelineExecution.
    Stop {
        execution: String,
        abandon: bool,
        reason: Option<String>,
    },
    /// RetryStageExecution (`all`: ALL_ACTIONS, else FAILED_ACTIONS).
    Retry {
        execution: String,
        stage: usize,
        all: bool,
    },
    /// Enable/DisableStageTransition (inbound).
    Transition { stage: String, enabled: bool },
    /// A stage's condition set was checked.
    ConditionsChecked {
        execution: String,
        stage: usize,
        kind: CondKind,
        passed: bool,
        record: serde_json::Value,
    },
    /// Nothing new: advance what can advance (after a restart, or a pipeline update).
    Tick,
}

/// A state change to report (an EventBridge event).
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    Execution {
        execution: String,
        status: ExecStatus,
    },
    Stage {
        execution: String,
        stage: usize,
        status: StageStatus,
    },
    Action {
        execution: String,
        stage: usize,
        action: usize,
        id: String,
        status: ActionStatus,
    },
}

/// What the runtime must do after persisting the new state.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Run the action (a new run with actionExecutionId `id`).
    RunAction {
        execution: String,
        stage: usize,
        action: usize,
        id: String,
    },
    /// Stop the action run `id` and forget its result.
    Abandon {
        execution: String,
        stage: usize,
        action: usize,
        id: String,
    },
    /// Start an automated rollback of stage `stage`, which failed in `execution`.
    Rollback {
        execution: String,
        stage: usize,
    },
    /// Check a stage's condition set; the answer is [`Event::ConditionsChecked`].
    CheckConditions {
        execution: String,
        stage: usize,
        kind: CondKind,
    },
    Report(Change),
}

/// What `step` needs from outside: the time, and fresh ids for action runs.
pub struct Ctx<'a> {
    pub now: f64,
    pub new_id: &'a mut (dyn FnMut() -> String + Send),
}

/// Applies `event` to `state` and advances every execution; the effects, in order.
pub fn step(state: &mut PipelineState, event: Event, ctx: &mut Ctx<'_>) -> Result<Vec<Effect>> {
    let mut fx = Vec::new();
    match event {
        Event::Start(e) => {
            fx.push(Effect::Report(Change::Execution {
                execution: e.id.clone(),
                status: ExecStatus::InProgress,
            }));
            state.executions.push(*e);
            state.executions.sort_by_key(|e| e.seq);
        }
        Event::ActionDone {
            execution,
            stage,
            action,
            id,
            result,
        } => {
            let now = ctx.now;
            let Some(e) = state.executions.iter_mut().find(|e| e.id == execution) else {
                return Ok(fx);
            };
            let Some(run) = e
                .stages
                .get_mut(stage)
                .and_then(|s| s.actions.get_mut(action))
            else {
                return Ok(fx);
            };
            // A result for a run that is no longer current (abandoned, retried) is dropped.
            if run.id.as_deref() != Some(&id) || run.status != Some(ActionStatus::InProgress) {
                return Ok(fx);
            }
            let status = match result {
                ActionResult::Succeeded(output) => {
                    run.output = output;
                    run.error = None;
                    ActionStatus::Succeeded
                }
                ActionResult::Failed {
                    code,
                    message,
                    output,
                } => {
                    run.output = output;
                    run.error = Some((code, message));
                    ActionStatus::Failed
                }
            };
            run.status = Some(status);
            run.updated = now;
            e.updated = now;
            fx.push(Effect::Report(Change::Action {
                execution,
                stage,
                action,
                id,
                status,
            }));
        }
        Event::Stop {
            execution,
            abandon,
            reason,
        } => stop(state, &execution, abandon, reason, ctx, &mut fx)?,
        Event::Retry {
            execution,
            stage,
            all,
        } => retry(state, &execution, stage, all, ctx, &mut fx)?,
        Event::Transition { stage, enabled } => {
            if enabled {
                state.disabled.remove(&stage);
            } else {
                state.disabled.insert(stage);
            }
        }
        Event::ConditionsChecked {
            execution,
            stage,
            kind,
            passed,
            record,
        } => {
            if let Some(run) = state
                .executions
                .iter_mut()
                .find(|e| e.id == execution)
                .and_then(|e| e.stages.get_mut(stage))
            {
                if !run.checked.iter().any(|(k, _)| *k == kind) {
                    run.checked.push((kind, passed));
                    run.condition_records.push(record);
                    run.updated = ctx.now;
                }
            }
        }
        Event::Tick => {}
    }
    advance(state, ctx, &mut fx);
    Ok(fx)
}

fn not_stoppable(id: &str) -> crate::error::Error {
    err(
        ErrorKind::PipelineExecutionNotStoppableException,
        format!("Unable to stop pipeline execution. Pipeline execution {id} is not in progress"),
    )
}

fn stop(
    state: &mut PipelineState,
    id: &str,
    abandon: bool,
    reason: Option<String>,
    ctx: &mut Ctx<'_>,
    fx: &mut Vec<Effect>,
) -> Result<()> {
    let now = ctx.now;
    let e = state
        .executions
        .iter_mut()
        .find(|e| e.id == id)
        .ok_or_else(|| not_stoppable(id))?;
    match e.status {
        ExecStatus::InProgress => {}
        ExecStatus::Stopping if abandon => {}
        ExecStatus::Stopping => {
            return Err(err(
                ErrorKind::DuplicatedStopRequestException,
                format!("Pipeline execution {id} is already stopping; to abandon its actions in progress, stop it with abandon"),
            ))
        }
        _ => return Err(not_stoppable(id)),
    }
    e.stop = Some(StopRequest { abandon, reason });
    e.updated = now;
    if let Position::InStage(n) = e.position {
        let stage = &mut e.stages[n];
        if abandon {
            for (i, a) in stage.actions.iter_mut().enumerate() {
                if a.status == Some(ActionStatus::InProgress) {
                    a.status = Some(ActionStatus::Abandoned);
                    a.updated = now;
                    let run = a.id.clone().unwrap_or_default();
                    fx.push(Effect::Abandon {
                        execution: id.to_owned(),
                        stage: n,
                        action: i,
                        id: run.clone(),
                    });
                    fx.push(Effect::Report(Change::Action {
                        execution: id.to_owned(),
                        stage: n,
                        action: i,
                        id: run,
                        status: ActionStatus::Abandoned,
                    }));
                }
            }
        } else if e.status != ExecStatus::Stopping {
            e.status = ExecStatus::Stopping;
            stage.status = Some(StageStatus::Stopping);
            stage.updated = now;
            fx.push(Effect::Report(Change::Stage {
                execution: id.to_owned(),
                stage: n,
                status: StageStatus::Stopping,
            }));
            fx.push(Effect::Report(Change::Execution {
                execution: id.to_owned(),
                status: ExecStatus::Stopping,
            }));
        }
    }
    Ok(())
}

fn retry(
    state: &mut PipelineState,
    id: &str,
    n: usize,
    all: bool,
    ctx: &mut Ctx<'_>,
    fx: &mut Vec<Effect>,
) -> Result<()> {
    let now = ctx.now;
    let Some(i) = state.executions.iter().position(|e| e.id == id) else {
        return Err(err(
            ErrorKind::PipelineExecutionNotFoundException,
            format!("Pipeline execution {id} not found"),
        ));
    };
    let e = &state.executions[i];
    let stage_name = e
        .plan
        .stages
        .get(n)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    let failed = e.stages.get(n).and_then(|s| s.status) == Some(StageStatus::Failed)
        && e.status == ExecStatus::Failed;
    if !failed {
        return Err(err(
            ErrorKind::StageNotRetryableException,
            format!("Stage {stage_name} of pipeline execution {id} cannot be retried: only a failed stage of a failed execution can"),
        ));
    }
    if state.latest.get(&stage_name).is_some_and(|l| l != id) {
        return Err(err(
            ErrorKind::NotLatestPipelineExecutionException,
            format!("Pipeline execution {id} is not the latest to run stage {stage_name}; only the latest execution of a stage can be retried"),
        ));
    }
    if e.mode != Mode::Parallel
        && state
            .executions
            .iter()
            .any(|o| o.id != id && o.holds() == Some(n))
    {
        return Err(err(
            ErrorKind::ConflictException,
            format!("Stage {stage_name} is running another execution"),
        ));
    }
    let e = &mut state.executions[i];
    e.status = ExecStatus::InProgress;
    e.position = Position::InStage(n);
    e.summary = None;
    e.updated = now;
    reset_stage(e, n, all, now);
    fx.push(Effect::Report(Change::Execution {
        execution: id.to_owned(),
        status: ExecStatus::InProgress,
    }));
    fx.push(Effect::Report(Change::Stage {
        execution: id.to_owned(),
        stage: n,
        status: StageStatus::InProgress,
    }));
    Ok(())
}

/// Makes stage `n` run again: its failed (or all) actions forgotten, one more attempt.
fn reset_stage(e: &mut Execution, n: usize, all: bool, now: f64) {
    let stage = &mut e.stages[n];
    stage.status = Some(StageStatus::InProgress);
    stage.attempt += 1;
    stage.updated = now;
    stage.checked.clear();
    for a in &mut stage.actions {
        if all || a.status != Some(ActionStatus::Succeeded) {
            a.status = None;
        }
    }
}

/// Moves every execution as far as it can go, until nothing changes.
fn advance(state: &mut PipelineState, ctx: &mut Ctx<'_>, fx: &mut Vec<Effect>) {
    loop {
        let mut changed = false;
        for i in 0..state.executions.len() {
            changed |= advance_one(state, i, ctx, fx);
        }
        if !changed {
            break;
        }
    }
}

fn finish(e: &mut Execution, status: ExecStatus, now: f64, fx: &mut Vec<Effect>) {
    e.status = status;
    e.position = Position::Done;
    e.updated = now;
    fx.push(Effect::Report(Change::Execution {
        execution: e.id.clone(),
        status,
    }));
}

fn set_stage(e: &mut Execution, n: usize, status: StageStatus, now: f64, fx: &mut Vec<Effect>) {
    e.stages[n].status = Some(status);
    e.stages[n].updated = now;
    fx.push(Effect::Report(Change::Stage {
        execution: e.id.clone(),
        stage: n,
        status,
    }));
}

fn advance_one(
    state: &mut PipelineState,
    i: usize,
    ctx: &mut Ctx<'_>,
    fx: &mut Vec<Effect>,
) -> bool {
    let now = ctx.now;
    let e = &state.executions[i];
    if let Some(n) = e.waits_at() {
        let stop = e.stop.is_some();
        let name = e.plan.stages[n].name.clone();
        let (seq, mode) = (e.seq, e.mode);
        if stop {
            finish(&mut state.executions[i], ExecStatus::Stopped, now, fx);
            return true;
        }
        if mode != Mode::Parallel {
            let others = || state.executions.iter().filter(|o| o.seq != seq);
            // SUPERSEDED: a newer execution at the same boundary replaces this one.
            if mode == Mode::Superseded && others().any(|o| o.waits_at() == Some(n) && o.seq > seq)
            {
                let e = &mut state.executions[i];
                e.summary = Some("Superseded by a newer execution".into());
                finish(e, ExecStatus::Superseded, now, fx);
                return true;
            }
            if others().any(|o| o.holds() == Some(n)) {
                return false;
            }
            // QUEUED: the oldest waiting enters first.
            if others().any(|o| o.waits_at() == Some(n) && o.seq < seq) {
                return false;
            }
        }
        if n > 0 && state.disabled.contains(&name) {
            return false;
        }
        state.latest.insert(name, state.executions[i].id.clone());
        let e = &mut state.executions[i];
        e.position = Position::InStage(n);
        e.updated = now;
        let all = true;
        e.stages[n].attempt = 0;
        reset_stage(e, n, all, now);
        e.stages[n].attempt = 1;
        fx.push(Effect::Report(Change::Stage {
            execution: e.id.clone(),
            stage: n,
            status: StageStatus::InProgress,
        }));
        return true;
    }
    let Some(n) = state.executions[i].holds() else {
        return false;
    };
    let e = &mut state.executions[i];
    let stage = &e.stages[n];
    if stage
        .actions
        .iter()
        .any(|a| a.status == Some(ActionStatus::InProgress))
    {
        return false;
    }
    if e.stop.is_some() {
        set_stage(e, n, StageStatus::Stopped, now, fx);
        finish(e, ExecStatus::Stopped, now, fx);
        return true;
    }
    // A condition set to check (once per attempt) before going on; None: not declared.
    let wants = |kind: CondKind| {
        e.plan.stages[n]
            .conditions
            .iter()
            .find(|c| c.kind == kind)
            .map(|c| c.result)
    };
    let result = |kind: CondKind| {
        stage
            .checked
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, p)| *p)
    };
    if let Some(then) = wants(CondKind::BeforeEntry) {
        match result(CondKind::BeforeEntry) {
            None => return check(e, n, CondKind::BeforeEntry, fx),
            Some(false) if then == OnFailure::Skip => {
                set_stage(e, n, StageStatus::Skipped, now, fx);
                return next_stage(e, n, now, fx);
            }
            Some(false) => {
                return fail_stage(
                    e,
                    n,
                    "its entry conditions were not met".into(),
                    false,
                    now,
                    fx,
                )
            }
            Some(true) => {}
        }
    }
    if let Some(failed) = stage
        .actions
        .iter()
        .position(|a| a.status == Some(ActionStatus::Failed))
    {
        // With failure conditions, the result engages only if they pass.
        let then = match wants(CondKind::OnFailure) {
            Some(then) => match result(CondKind::OnFailure) {
                None => return check(e, n, CondKind::OnFailure, fx),
                Some(true) => then,
                Some(false) => OnFailure::Fail,
            },
            None => e.plan.stages[n].on_failure,
        };
        match then {
            OnFailure::Retry { all } if stage.attempt < 2 => {
                reset_stage(e, n, all, now);
                return true;
            }
            OnFailure::Skip => {
                set_stage(e, n, StageStatus::Skipped, now, fx);
                return next_stage(e, n, now, fx);
            }
            _ => {}
        }
        let action = &e.plan.stages[n].actions[failed].name;
        let why = stage.actions[failed]
            .error
            .as_ref()
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        let rollback = then == OnFailure::Rollback;
        return fail_stage(
            e,
            n,
            format!("action {action} failed: {why}"),
            rollback,
            now,
            fx,
        );
    }
    let plan = &e.plan.stages[n];
    let next = plan
        .actions
        .iter()
        .zip(&stage.actions)
        .filter(|(_, r)| r.status.is_none())
        .map(|(p, _)| p.run_order)
        .min();
    if let Some(order) = next {
        let group: Vec<usize> = (0..plan.actions.len())
            .filter(|&a| plan.actions[a].run_order == order && stage.actions[a].status.is_none())
            .collect();
        for a in group {
            let id = (ctx.new_id)();
            let run = &mut e.stages[n].actions[a];
            run.status = Some(ActionStatus::InProgress);
            run.id = Some(id.clone());
            run.updated = now;
            run.error = None;
            fx.push(Effect::RunAction {
                execution: e.id.clone(),
                stage: n,
                action: a,
                id: id.clone(),
            });
            fx.push(Effect::Report(Change::Action {
                execution: e.id.clone(),
                stage: n,
                action: a,
                id,
                status: ActionStatus::InProgress,
            }));
        }
        e.updated = now;
        return true;
    }
    if let Some(then) = wants(CondKind::OnSuccess) {
        match result(CondKind::OnSuccess) {
            None => return check(e, n, CondKind::OnSuccess, fx),
            Some(false) => {
                let rollback = then == OnFailure::Rollback;
                let why = "its success conditions were not met".into();
                return fail_stage(e, n, why, rollback, now, fx);
            }
            Some(true) => {}
        }
    }
    set_stage(e, n, StageStatus::Succeeded, now, fx);
    next_stage(e, n, now, fx)
}

/// Asks for a stage's condition set to be checked (unless already asked).
fn check(e: &mut Execution, n: usize, kind: CondKind, fx: &mut Vec<Effect>) -> bool {
    let asked = fx.iter().any(|f| matches!(f, Effect::CheckConditions { execution, stage, kind: k } if *execution == e.id && *stage == n && *k == kind));
    if !asked {
        fx.push(Effect::CheckConditions {
            execution: e.id.clone(),
            stage: n,
            kind,
        });
    }
    // The answer comes as the next event, in the same transaction.
    false
}

/// Stage `n` failed (`why`): the execution fails with it, and the stage is rolled back
/// if `rollback`.
fn fail_stage(
    e: &mut Execution,
    n: usize,
    why: String,
    rollback: bool,
    now: f64,
    fx: &mut Vec<Effect>,
) -> bool {
    e.summary = Some(format!("Stage {} failed: {why}", e.plan.stages[n].name));
    set_stage(e, n, StageStatus::Failed, now, fx);
    e.status = ExecStatus::Failed;
    e.position = Position::InStage(n);
    e.updated = now;
    fx.push(Effect::Report(Change::Execution {
        execution: e.id.clone(),
        status: ExecStatus::Failed,
    }));
    if rollback {
        fx.push(Effect::Rollback {
            execution: e.id.clone(),
            stage: n,
        });
    }
    true
}

fn next_stage(e: &mut Execution, n: usize, now: f64, fx: &mut Vec<Effect>) -> bool {
    if n + 1 < e.stages.len() {
        e.position = Position::Waiting(n + 1);
        e.updated = now;
    } else {
        finish(e, ExecStatus::Succeeded, now, fx);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(stages: &[(&str, &[(&str, u32)])]) -> Plan {
        Plan {
            stages: stages
                .iter()
                .map(|(name, actions)| StagePlan {
                    name: name.to_string(),
                    actions: actions
                        .iter()
                        .map(|(a, r)| ActionPlan {
                            name: a.to_string(),
                            run_order: *r,
                        })
                        .collect(),
                    on_failure: OnFailure::Fail,
                    conditions: Vec::new(),
                })
                .collect(),
        }
    }

    struct T {
        state: PipelineState,
        next: u32,
        plan: Plan,
        mode: Mode,
    }

    impl T {
        fn new(mode: Mode, p: Plan) -> T {
            T {
                state: PipelineState::default(),
                next: 0,
                plan: p,
                mode,
            }
        }
        fn step(&mut self, ev: Event) -> Result<Vec<Effect>> {
            let mut n = self.next;
            let mut new_id = || {
                n += 1;
                format!("a{n}")
            };
            let r = step(
                &mut self.state,
                ev,
                &mut Ctx {
                    now: 1.0,
                    new_id: &mut new_id,
                },
            );
            self.next = n;
            r
        }
        fn start(&mut self, id: &str) -> Vec<Effect> {
            let seq = self.state.executions.len() as i64;
            let e = Execution::new(id.into(), seq, 1, self.mode, self.plan.clone(), 1.0);
            self.step(Event::Start(Box::new(e))).unwrap()
        }
        fn done(&mut self, exec: &str, stage: usize, action: usize, ok: bool) -> Vec<Effect> {
            let id = self.exec(exec).stages[stage].actions[action]
                .id
                .clone()
                .unwrap();
            let result = if ok {
                ActionResult::Succeeded(ActionOutput::default())
            } else {
                ActionResult::Failed {
                    code: "JobFailed".into(),
                    message: "boom".into(),
                    output: ActionOutput::default(),
                }
            };
            self.step(Event::ActionDone {
                execution: exec.into(),
                stage,
                action,
                id,
                result,
            })
            .unwrap()
        }
        fn exec(&self, id: &str) -> &Execution {
            self.state.executions.iter().find(|e| e.id == id).unwrap()
        }
    }

    fn runs(fx: &[Effect]) -> Vec<(String, usize, usize)> {
        fx.iter()
            .filter_map(|f| match f {
                Effect::RunAction {
                    execution,
                    stage,
                    action,
                    ..
                } => Some((execution.clone(), *stage, *action)),
                _ => None,
            })
            .collect()
    }

    fn r(e: &str, s: usize, a: usize) -> (String, usize, usize) {
        (e.to_string(), s, a)
    }

    #[test]
    fn stages_run_in_order_and_one_run_order_in_parallel() {
        let mut t = T::new(
            Mode::Superseded,
            plan(&[
                ("Source", &[("src", 1)]),
                ("Build", &[("a", 1), ("b", 1), ("c", 2)]),
            ]),
        );
        assert_eq!(runs(&t.start("e1")), vec![r("e1", 0, 0)]);
        assert_eq!(
            runs(&t.done("e1", 0, 0, true)),
            vec![r("e1", 1, 0), r("e1", 1, 1)]
        );
        assert!(runs(&t.done("e1", 1, 0, true)).is_empty());
        assert_eq!(runs(&t.done("e1", 1, 1, true)), vec![r("e1", 1, 2)]);
        let fx = t.done("e1", 1, 2, true);
        assert!(fx.contains(&Effect::Report(Change::Execution {
            execution: "e1".into(),
            status: ExecStatus::Succeeded
        })));
        assert_eq!(t.exec("e1").stages[1].status, Some(StageStatus::Succeeded));
    }

    #[test]
    fn a_failed_action_fails_the_stage_after_its_group_and_retry_reruns_only_it() {
        let mut t = T::new(
            Mode::Superseded,
            plan(&[
                ("Source", &[("src", 1)]),
                ("Build", &[("a", 1), ("b", 1), ("c", 2)]),
                ("Deploy", &[("d", 1)]),
            ]),
        );
        t.start("e1");
        t.done("e1", 0, 0, true);
        t.done("e1", 1, 0, false);
        // b still runs: the stage has not failed yet.
        assert_eq!(t.exec("e1").status, ExecStatus::InProgress);
        assert!(runs(&t.done("e1", 1, 1, true)).is_empty());
        assert_eq!(t.exec("e1").status, ExecStatus::Failed);
        assert_eq!(t.exec("e1").stages[1].status, Some(StageStatus::Failed));
        assert!(t
            .exec("e1")
            .summary
            .as_deref()
            .unwrap()
            .contains("action a failed: boom"));
        // Retrying a stage that did not fail is refused.
        let e = t
            .step(Event::Retry {
                execution: "e1".into(),
                stage: 0,
                all: false,
            })
            .unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::StageNotRetryableException));
        let fx = t
            .step(Event::Retry {
                execution: "e1".into(),
                stage: 1,
                all: false,
            })
            .unwrap();
        assert_eq!(runs(&fx), vec![r("e1", 1, 0)]);
        assert_eq!(runs(&t.done("e1", 1, 0, true)), vec![r("e1", 1, 2)]);
        assert_eq!(runs(&t.done("e1", 1, 2, true)), vec![r("e1", 2, 0)]);
        t.done("e1", 2, 0, true);
        assert_eq!(t.exec("e1").status, ExecStatus::Succeeded);
        assert_eq!(t.exec("e1").stages[1].attempt, 2);
    }

    #[test]
    fn superseded_mode_replaces_the_waiting_execution() {
        let mut t = T::new(
            Mode::Superseded,
            plan(&[("Source", &[("src", 1)]), ("Build", &[("b", 1)])]),
        );
        t.start("e1");
        t.done("e1", 0, 0, true); // e1 in Build
        t.start("e2");
        t.done("e2", 0, 0, true); // e2 waits for Build
        t.start("e3");
        t.done("e3", 0, 0, true); // e3 reaches the boundary: e2 is superseded
        assert_eq!(t.exec("e2").status, ExecStatus::Superseded);
        assert_eq!(t.exec("e3").position, Position::Waiting(1));
        assert_eq!(runs(&t.done("e1", 1, 0, true)), vec![r("e3", 1, 0)]);
    }

    #[test]
    fn queued_mode_enters_in_start_order() {
        let mut t = T::new(
            Mode::Queued,
            plan(&[("Source", &[("src", 1)]), ("Build", &[("b", 1)])]),
        );
        t.start("e1");
        t.done("e1", 0, 0, true);
        t.start("e2");
        t.done("e2", 0, 0, true);
        t.start("e3");
        t.done("e3", 0, 0, true);
        assert_eq!(t.exec("e2").status, ExecStatus::InProgress);
        assert_eq!(runs(&t.done("e1", 1, 0, true)), vec![r("e2", 1, 0)]);
        assert_eq!(runs(&t.done("e2", 1, 0, true)), vec![r("e3", 1, 0)]);
    }

    #[test]
    fn parallel_mode_shares_nothing() {
        let mut t = T::new(
            Mode::Parallel,
            plan(&[("Source", &[("src", 1)]), ("Build", &[("b", 1)])]),
        );
        t.start("e1");
        assert_eq!(runs(&t.start("e2")), vec![r("e2", 0, 0)]);
        t.done("e1", 0, 0, true);
        assert_eq!(runs(&t.done("e2", 0, 0, true)), vec![r("e2", 1, 0)]);
    }

    #[test]
    fn a_disabled_transition_holds_executions_until_enabled() {
        let mut t = T::new(
            Mode::Superseded,
            plan(&[("Source", &[("src", 1)]), ("Build", &[("b", 1)])]),
        );
        t.step(Event::Transition {
            stage: "Build".into(),
            enabled: false,
        })
        .unwrap();
        t.start("e1");
        assert!(runs(&t.done("e1", 0, 0, true)).is_empty());
        assert_eq!(t.exec("e1").position, Position::Waiting(1));
        let fx = t
            .step(Event::Transition {
                stage: "Build".into(),
                enabled: true,
            })
            .unwrap();
        assert_eq!(runs(&fx), vec![r("e1", 1, 0)]);
    }

    #[test]
    fn stop_waits_for_actions_or_abandons_them() {
        let mut t = T::new(
            Mode::Parallel,
            plan(&[("Source", &[("src", 1)]), ("Build", &[("b", 1)])]),
        );
        t.start("e1");
        t.step(Event::Stop {
            execution: "e1".into(),
            abandon: false,
            reason: None,
        })
        .unwrap();
        assert_eq!(t.exec("e1").status, ExecStatus::Stopping);
        let e = t
            .step(Event::Stop {
                execution: "e1".into(),
                abandon: false,
                reason: None,
            })
            .unwrap_err();
        assert_eq!(e.kind(), Some(ErrorKind::DuplicatedStopRequestException));
        assert!(runs(&t.done("e1", 0, 0, true)).is_empty());
        assert_eq!(t.exec("e1").status, ExecStatus::Stopped);
        assert_eq!(t.exec("e1").stages[0].status, Some(StageStatus::Stopped));
        let e = t
            .step(Event::Stop {
                execution: "e1".into(),
                abandon: true,
                reason: None,
            })
            .unwrap_err();
        assert_eq!(
            e.kind(),
            Some(ErrorKind::PipelineExecutionNotStoppableException)
        );

        t.start("e2");
        let fx = t
            .step(Event::Stop {
                execution: "e2".into(),
                abandon: true,
                reason: Some("no".into()),
            })
            .unwrap();
        assert!(fx.iter().any(|f| matches!(
            f,
            Effect::Abandon {
                stage: 0,
                action: 0,
                ..
            }
        )));
        assert_eq!(t.exec("e2").status, ExecStatus::Stopped);
        // The abandoned run's late result changes nothing.
        let fx = t
            .step(Event::ActionDone {
                execution: "e2".into(),
                stage: 0,
                action: 0,
                id: t.exec("e2").stages[0].actions[0].id.clone().unwrap(),
                result: ActionResult::Succeeded(ActionOutput::default()),
            })
            .unwrap();
        assert!(fx.is_empty());
    }

    #[test]
    fn retry_needs_the_latest_execution_of_the_stage() {
        let mut t = T::new(
            Mode::Superseded,
            plan(&[("Source", &[("src", 1)]), ("Build", &[("b", 1)])]),
        );
        t.start("e1");
        t.done("e1", 0, 0, true);
        t.done("e1", 1, 0, false);
        t.start("e2");
        t.done("e2", 0, 0, true); // e2 enters Build after e1 failed there
        let e = t
            .step(Event::Retry {
                execution: "e1".into(),
                stage: 1,
                all: true,
            })
            .unwrap_err();
        assert_eq!(
            e.kind(),
            Some(ErrorKind::NotLatestPipelineExecutionException)
        );
    }

    #[test]
    fn on_failure_retry_and_skip() {
        let mut p = plan(&[
            ("Source", &[("src", 1)]),
            ("Build", &[("b", 1)]),
            ("Deploy", &[("d", 1)]),
        ]);
        p.stages[1].on_failure = OnFailure::Retry { all: false };
        let mut t = T::new(Mode::Superseded, p.clone());
        t.start("e1");
        t.done("e1", 0, 0, true);
        assert_eq!(runs(&t.done("e1", 1, 0, false)), vec![r("e1", 1, 0)]);
        t.done("e1", 1, 0, false);
        assert_eq!(t.exec("e1").status, ExecStatus::Failed);

        p.stages[1].on_failure = OnFailure::Skip;
        let mut t = T::new(Mode::Superseded, p);
        t.start("e1");
        t.done("e1", 0, 0, true);
        assert_eq!(runs(&t.done("e1", 1, 0, false)), vec![r("e1", 2, 0)]);
        assert_eq!(t.exec("e1").stages[1].status, Some(StageStatus::Skipped));
    }

    fn checks(fx: &[Effect]) -> Vec<(usize, CondKind)> {
        fx.iter()
            .filter_map(|f| match f {
                Effect::CheckConditions { stage, kind, .. } => Some((*stage, *kind)),
                _ => None,
            })
            .collect()
    }

    fn checked(t: &mut T, stage: usize, kind: CondKind, passed: bool) -> Vec<Effect> {
        t.step(Event::ConditionsChecked {
            execution: "e1".into(),
            stage,
            kind,
            passed,
            record: serde_json::Value::Null,
        })
        .unwrap()
    }

    #[test]
    fn conditions_gate_entry_and_roll_back_on_success() {
        let mut p = plan(&[
            ("Source", &[("src", 1)]),
            ("Build", &[("b", 1)]),
            ("Deploy", &[("d", 1)]),
        ]);
        p.stages[1].conditions = vec![Cond {
            kind: CondKind::BeforeEntry,
            result: OnFailure::Skip,
        }];
        p.stages[2].conditions = vec![Cond {
            kind: CondKind::OnSuccess,
            result: OnFailure::Rollback,
        }];
        let mut t = T::new(Mode::Superseded, p);
        t.start("e1");
        // Entering Build asks for its entry conditions and starts nothing until they answer.
        let fx = t.done("e1", 0, 0, true);
        assert_eq!(
            (checks(&fx), runs(&fx)),
            (vec![(1, CondKind::BeforeEntry)], vec![])
        );
        // They fail: Build is skipped and Deploy starts.
        assert_eq!(
            runs(&checked(&mut t, 1, CondKind::BeforeEntry, false)),
            vec![r("e1", 2, 0)]
        );
        assert_eq!(t.exec("e1").stages[1].status, Some(StageStatus::Skipped));
        // Deploy succeeded, its success conditions are asked for; they fail: rolled back.
        let fx = t.done("e1", 2, 0, true);
        assert_eq!(checks(&fx), vec![(2, CondKind::OnSuccess)]);
        assert_eq!(t.exec("e1").status, ExecStatus::InProgress);
        let fx = checked(&mut t, 2, CondKind::OnSuccess, false);
        assert!(fx
            .iter()
            .any(|f| matches!(f, Effect::Rollback { stage: 2, .. })));
        assert_eq!(t.exec("e1").status, ExecStatus::Failed);
    }
}
