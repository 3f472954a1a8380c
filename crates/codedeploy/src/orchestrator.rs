//! The deployment orchestrator as a pure state machine: `step(deployment, input, ctx) →
//! effects`, no IO and no clock (the time and fresh ids come in through [`Ctx`]). It decides
//! which hosts are deployed to next (never letting healthy hosts fall below the config's
//! minimum; hosts whose last deployment failed first), runs each host's lifecycle events in
//! order, and ends the deployment — succeeded, failed (with AWS's error codes) or stopped.

use crate::configs::Health;
use serde::{Deserialize, Serialize};
use slipway_model::codedeploy::{
    DeploymentInfo, DeploymentOverview, Diagnostics, ErrorInformation, LifecycleEvent,
};

/// The lifecycle events of an in-place deployment, in order.
pub const IN_PLACE: &[&str] = &[
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
];

/// The lifecycle events of an in-place deployment behind a load balancer, in order.
pub const IN_PLACE_WITH_TRAFFIC: &[&str] = &[
    "BeforeBlockTraffic",
    "BlockTraffic",
    "AfterBlockTraffic",
    "ApplicationStop",
    "DownloadBundle",
    "BeforeInstall",
    "Install",
    "AfterInstall",
    "ApplicationStart",
    "ValidateService",
    "BeforeAllowTraffic",
    "AllowTraffic",
    "AfterAllowTraffic",
];

/// The host command that runs a deployment's command health checks on a host (Slipway's
/// agent runs them; it is no lifecycle event and not shown as one).
pub const HEALTH_CHECK: &str = "SlipwayHealthCheck";

/// The prefix of an alarm name that is a command run on each host.
pub const COMMAND_CHECK: &str = "command:";

/// The batch of each host as its lifecycle events' times show it, for hosts in the order
/// they started — (first event's start, last event's end, still in progress): a host starts
/// a new batch when it started after a host of the current batch had ended (0: not started).
pub fn batch_numbers(spans: &[(Option<f64>, Option<f64>, bool)]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut batch = 0;
    let mut ends: Vec<f64> = Vec::new();
    for (first, last, in_progress) in spans {
        match first {
            None => out.push(0),
            Some(start) => {
                if batch == 0 || ends.iter().any(|e| e <= start) {
                    batch += 1;
                    ends.clear();
                }
                if let Some(e) = last.filter(|_| !in_progress) {
                    ends.push(e);
                }
                out.push(batch);
            }
        }
    }
    out
}

/// Events the service performs itself (the load balancer's), never sent to an agent.
pub fn is_service_event(event: &str) -> bool {
    matches!(event, "BlockTraffic" | "AllowTraffic")
}

/// Events whose failure `ignoreApplicationStopFailures` lets pass.
fn ignorable(event: &str) -> bool {
    matches!(
        event,
        "ApplicationStop" | "BeforeBlockTraffic" | "AfterBlockTraffic"
    )
}

/// One host of a deployment.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    pub instance: String,
    /// The host identifier its agent polls with.
    pub host: String,
    /// Pending | InProgress | Succeeded | Failed | Skipped
    pub status: String,
    pub updated: f64,
    pub events: Vec<LifecycleEvent>,
    /// The host command of the event in progress.
    #[serde(default)]
    pub command: Option<String>,
    /// Its last deployment failed: deployed to first.
    #[serde(default)]
    pub unhealthy: bool,
    /// The batch it was deployed in (1, 2, …; 0 while pending).
    #[serde(default)]
    pub batch: u32,
    /// The phase each event runs in (empty: all in phase 0). Phase 0 is rolled across the
    /// fleet by the health rule; later phases (a blue/green deployment's traffic moves) run
    /// on all their hosts at once, each after the one before has ended everywhere.
    #[serde(default)]
    pub phases: Vec<u32>,
    /// Blue (original) or Green (replacement) in a blue/green deployment.
    #[serde(default)]
    pub label: Option<String>,
    /// Its host's health checks are running (as `command`) after its last event of phase 0.
    #[serde(default)]
    pub checking: bool,
    /// Its host's health checks passed once; from then on they are run periodically.
    #[serde(default)]
    pub checked: bool,
}

impl Target {
    fn phase_of(&self, k: usize) -> u32 {
        self.phases.get(k).copied().unwrap_or(0)
    }

    /// It has events in phase 0: it is part of the fleet the health rule counts.
    fn in_fleet(&self) -> bool {
        (0..self.events.len()).any(|k| self.phase_of(k) == 0)
    }
}

/// A deployment as the orchestrator sees it (stored whole in `cd_deployments.state`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployment {
    /// What the API shows (status, times, error, rollback info kept current here).
    pub info: DeploymentInfo,
    pub group_id: String,
    pub health: Health,
    pub targets: Vec<Target>,
    /// Which endings roll back by themselves (AutoRollbackEvent values).
    pub rollback_on: Vec<String>,
    /// StopDeployment asked for a rollback (its `autoRollbackEnabled`).
    #[serde(default)]
    pub rollback_requested: Option<bool>,
    /// The number of batches started so far.
    #[serde(default)]
    pub batches: u32,
    /// Health checks probed while the deployment runs (the alarm configuration in force).
    #[serde(default)]
    pub alarms: Option<slipway_model::codedeploy::AlarmConfiguration>,
    /// The phase running now, and the last one there is.
    #[serde(default)]
    pub phase: u32,
    #[serde(default)]
    pub last_phase: u32,
    /// Wait (status Ready) after phase 0 until ContinueDeployment.
    #[serde(default)]
    pub ready_wait: bool,
    /// When the deployment became Ready.
    #[serde(default)]
    pub ready_since: Option<f64>,
    /// A blue/green deployment: what follows its success.
    #[serde(default)]
    pub blue_green: Option<BlueGreen>,
}

/// What a blue/green deployment does after it succeeds, and how it is rolled back.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct BlueGreen {
    /// The replacement fleet's tag filters (the group selects it from now on).
    pub green_filters: Vec<slipway_model::codedeploy::TagFilter>,
    /// Deregister the original hosts (TERMINATE) or keep them (KEEP_ALIVE).
    pub terminate: bool,
    /// Seconds after success before the original hosts are deregistered.
    pub termination_wait: f64,
    /// Set when the original hosts have been dealt with.
    #[serde(default)]
    pub terminated: bool,
    /// This deployment moves traffic back (a rollback of a blue/green deployment).
    #[serde(default)]
    pub reroute_back: bool,
    /// Seconds a Ready deployment waits for ContinueDeployment before it stops.
    #[serde(default)]
    pub ready_wait: f64,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum Input {
    Start,
    /// A host's lifecycle event ended (its agent's PutHostCommandComplete, or the service's
    /// own traffic event).
    EventEnded {
        command: String,
        ok: bool,
        diagnostics: Diagnostics,
    },
    /// A host's health checks ended: those run after its last event (`command` is its
    /// target's) or those run periodically afterwards.
    CheckEnded {
        command: String,
        instance: String,
        ok: bool,
        diagnostics: Diagnostics,
    },
    /// A host's agent stopped answering about a command.
    HostLost {
        command: String,
    },
    /// ContinueDeployment of a deployment that is Ready.
    Continue,
    /// StopDeployment, or an alarm (its name).
    Stop {
        alarm: Option<String>,
        rollback: Option<bool>,
    },
}

/// What the runtime must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Queue lifecycle event `event` for target `target` as host command `command`.
    Command {
        target: usize,
        event: String,
        command: String,
    },
    /// A command will not be waited for any more (its acknowledgement answers Failed).
    Cancel { command: String },
    /// A target's status changed.
    InstanceChanged { target: usize },
    /// The deployment ended; `rollback`: a rollback deployment must follow.
    Ended { rollback: bool },
}

/// The time and fresh ids.
pub struct Ctx<'a> {
    pub now: f64,
    pub new_id: &'a mut dyn FnMut() -> String,
}

const HEALTH_MESSAGE: &str = "The overall deployment failed because too many individual instances failed deployment, too few healthy instances are available for deployment, or some instances in your deployment group are experiencing problems.";

impl Deployment {
    pub fn status(&self) -> &str {
        self.info.status.as_deref().unwrap_or("Created")
    }

    /// The commands of its health checks that run on each host.
    pub fn host_checks(&self) -> Vec<String> {
        self.alarms
            .iter()
            .flat_map(|a| a.alarms.iter().flatten())
            .filter_map(|a| a.name.as_deref()?.strip_prefix(COMMAND_CHECK))
            .map(str::to_owned)
            .collect()
    }

    pub fn is_done(&self) -> bool {
        matches!(self.status(), "Succeeded" | "Failed" | "Stopped")
    }

    /// The overview counts of the API.
    pub fn overview(&self) -> DeploymentOverview {
        let count = |s: &str| Some(self.targets.iter().filter(|t| t.status == s).count() as i64);
        DeploymentOverview {
            pending: count("Pending"),
            in_progress: count("InProgress"),
            succeeded: count("Succeeded"),
            failed: count("Failed"),
            skipped: count("Skipped"),
            ready: count("Ready"),
        }
    }

    #[cfg(test)]
    fn count(&self, s: &str) -> usize {
        self.targets.iter().filter(|t| t.status == s).count()
    }

    /// How many hosts of the fleet (phase 0) must succeed for the deployment to succeed.
    fn required(&self) -> usize {
        let fleet = self.targets.iter().filter(|t| t.in_fleet()).count();
        self.health.min_healthy.max(1).min(fleet)
    }
}

fn diag(code: &str, message: &str) -> Diagnostics {
    Diagnostics {
        error_code: Some(code.into()),
        script_name: Some(String::new()),
        message: Some(message.into()),
        log_tail: Some(String::new()),
    }
}

/// Advances `d` by `input`.
pub fn step(d: &mut Deployment, input: Input, ctx: &mut Ctx) -> Vec<Effect> {
    let mut fx = Vec::new();
    if d.is_done() {
        return fx;
    }
    match input {
        Input::Start => {
            d.info.status = Some("InProgress".into());
            d.info.start_time = Some(ctx.now);
            if d.targets.is_empty() {
                end(d, "Failed", Some(("NO_INSTANCES", "The deployment failed because no instances were found for your deployment group. Check your deployment group settings to make sure the tags for your on-premises instances are correct.")), ctx, &mut fx);
                return fx;
            }
        }
        Input::EventEnded {
            command,
            ok,
            diagnostics,
        } => {
            let Some(i) = d
                .targets
                .iter()
                .position(|t| t.command.as_deref() == Some(&command))
            else {
                return fx;
            };
            event_ended(d, i, ok, diagnostics, ctx, &mut fx);
        }
        Input::CheckEnded {
            command,
            instance,
            ok,
            diagnostics,
        } => {
            let i = d
                .targets
                .iter()
                .position(|t| t.checking && t.command.as_deref() == Some(&command));
            if ok {
                let Some(i) = i else { return fx };
                let t = &mut d.targets[i];
                t.checking = false;
                t.checked = true;
                t.command = None;
                next_event(d, i, ctx, &mut fx);
            } else {
                let check = diagnostics.script_name.unwrap_or_default();
                let output = diagnostics
                    .log_tail
                    .as_deref()
                    .and_then(|l| l.lines().rev().find(|l| !l.trim().is_empty()))
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default();
                let m = format!(
                    "The deployment was stopped because the health check {COMMAND_CHECK}{check} failed on {instance}{output}"
                );
                end(d, "Stopped", Some(("ALARM_ACTIVE", &m)), ctx, &mut fx);
                return fx;
            }
        }
        Input::HostLost { command } => {
            let Some(i) = d
                .targets
                .iter()
                .position(|t| t.command.as_deref() == Some(&command))
            else {
                return fx;
            };
            let dg = diag("UnknownError", "The host's agent stopped answering: no word about this lifecycle event within the agent timeout");
            fail_target(d, i, dg, ctx, &mut fx);
        }
        Input::Continue => {
            if d.status() != "Ready" {
                return fx;
            }
            let next = d.phase + 1;
            go_phase(d, next, ctx, &mut fx);
        }
        Input::Stop { alarm, rollback } => {
            d.rollback_requested = rollback;
            match alarm {
                Some(name) => {
                    let m = format!(
                        "The deployment was stopped because the health check {name} failed"
                    );
                    end(d, "Stopped", Some(("ALARM_ACTIVE", &m)), ctx, &mut fx);
                }
                None => end(
                    d,
                    "Stopped",
                    Some(("MANUAL_STOP", "The deployment was stopped by a user")),
                    ctx,
                    &mut fx,
                ),
            }
            return fx;
        }
    }
    advance(d, ctx, &mut fx);
    fx
}

fn event_ended(
    d: &mut Deployment,
    i: usize,
    ok: bool,
    diagnostics: Diagnostics,
    ctx: &mut Ctx,
    fx: &mut Vec<Effect>,
) {
    let ignore = d.info.ignore_application_stop_failures == Some(true);
    let t = &mut d.targets[i];
    let Some(k) = t
        .events
        .iter()
        .position(|e| e.status.as_deref() == Some("InProgress"))
    else {
        return;
    };
    let name = t.events[k].lifecycle_event_name.clone().unwrap_or_default();
    let passes = ok || (ignore && ignorable(&name));
    if !passes {
        fail_target(d, i, diagnostics, ctx, fx);
        return;
    }
    let e = &mut t.events[k];
    e.status = Some(if ok { "Succeeded" } else { "Failed" }.into());
    e.end_time = Some(ctx.now);
    e.diagnostics = Some(diagnostics);
    t.updated = ctx.now;
    t.command = None;
    next_event(d, i, ctx, fx);
}

/// Starts target `i`'s next pending event, or ends it as succeeded.
fn next_event(d: &mut Deployment, i: usize, ctx: &mut Ctx, fx: &mut Vec<Effect>) {
    let phase = d.phase;
    let checks = d.phase == 0 && !d.host_checks().is_empty();
    let t = &mut d.targets[i];
    let next = t
        .events
        .iter()
        .position(|e| e.status.as_deref() == Some("Pending"));
    if checks && !t.checked && t.in_fleet() && next.is_none_or(|k| t.phase_of(k) > phase) {
        // Its part of the fleet's work is done: its health checks decide.
        let command = (ctx.new_id)();
        t.checking = true;
        t.command = Some(command.clone());
        t.updated = ctx.now;
        fx.push(Effect::Command {
            target: i,
            event: HEALTH_CHECK.into(),
            command,
        });
        return;
    }
    if let Some(k) = next {
        if t.phase_of(k) > phase {
            // Done for this phase: it waits for the next one.
            t.status = "Ready".into();
            t.command = None;
            t.updated = ctx.now;
            fx.push(Effect::InstanceChanged { target: i });
            return;
        }
    }
    match t
        .events
        .iter()
        .position(|e| e.status.as_deref() == Some("Pending"))
    {
        Some(k) => {
            let e = &mut t.events[k];
            e.status = Some("InProgress".into());
            e.start_time = Some(ctx.now);
            let command = (ctx.new_id)();
            t.command = Some(command.clone());
            t.updated = ctx.now;
            fx.push(Effect::Command {
                target: i,
                event: e.lifecycle_event_name.clone().unwrap_or_default(),
                command,
            });
        }
        None => {
            t.status = "Succeeded".into();
            t.command = None;
            t.updated = ctx.now;
            fx.push(Effect::InstanceChanged { target: i });
        }
    }
}

/// Target `i` failed in its current event: the rest of its events are skipped.
fn fail_target(
    d: &mut Deployment,
    i: usize,
    diagnostics: Diagnostics,
    ctx: &mut Ctx,
    fx: &mut Vec<Effect>,
) {
    let t = &mut d.targets[i];
    for e in &mut t.events {
        match e.status.as_deref() {
            Some("InProgress") => {
                e.status = Some("Failed".into());
                e.end_time = Some(ctx.now);
                e.diagnostics = Some(diagnostics.clone());
            }
            Some("Pending") => e.status = Some("Skipped".into()),
            _ => {}
        }
    }
    t.status = "Failed".into();
    t.command = None;
    t.checking = false;
    t.updated = ctx.now;
    fx.push(Effect::InstanceChanged { target: i });
}

/// Starts what the health rule allows, and ends the deployment when it is decided.
fn advance(d: &mut Deployment, ctx: &mut Ctx, fx: &mut Vec<Effect>) {
    if d.phase > 0 {
        return advance_later_phase(d, ctx, fx);
    }
    let fleet: Vec<usize> = (0..d.targets.len())
        .filter(|&i| d.targets[i].in_fleet())
        .collect();
    let total = fleet.len();
    let required = d.required();
    let count = |s: &str| fleet.iter().filter(|&&i| d.targets[i].status == s).count();
    // A host Ready has passed phase 0: it counts as succeeded here.
    let succeeded = count("Succeeded") + count("Ready");
    let pending = count("Pending");
    let in_progress = count("InProgress");
    let failed = count("Failed");
    // Failure is decided as soon as too few hosts can still succeed (OneAtATime forgives a
    // failure on the last host only).
    if succeeded + pending + in_progress < required {
        end(
            d,
            "Failed",
            Some(("HEALTH_CONSTRAINTS", HEALTH_MESSAGE)),
            ctx,
            fx,
        );
        return;
    }
    let concurrency = d.health.concurrency(total);
    let mut started = Vec::new();
    let mut order: Vec<usize> = fleet
        .iter()
        .copied()
        .filter(|&i| d.targets[i].status == "Pending")
        .collect();
    order.sort_by_key(|&i| (!d.targets[i].unhealthy, d.targets[i].instance.clone()));
    let mut busy = in_progress;
    for i in order {
        let healthy_after = total - failed - busy - 1;
        if busy >= concurrency || healthy_after < d.health.min_healthy {
            break;
        }
        started.push(i);
        busy += 1;
    }
    if !started.is_empty() {
        if in_progress == 0 || d.batches == 0 {
            d.batches += 1;
        }
        for i in started {
            let t = &mut d.targets[i];
            t.status = "InProgress".into();
            t.batch = d.batches;
            t.updated = ctx.now;
            fx.push(Effect::InstanceChanged { target: i });
            next_event(d, i, ctx, fx);
        }
        // A target with no events at all has already succeeded: look again.
        if d.targets.iter().all(|t| t.status != "InProgress") {
            advance(d, ctx, fx);
        }
        return;
    }
    if busy > 0 {
        return;
    }
    if pending > 0 || succeeded < required {
        end(
            d,
            "Failed",
            Some(("HEALTH_CONSTRAINTS", HEALTH_MESSAGE)),
            ctx,
            fx,
        );
    } else if d.last_phase == 0 {
        end(d, "Succeeded", None, ctx, fx);
    } else if d.ready_wait {
        d.info.status = Some("Ready".into());
        d.ready_since = Some(ctx.now);
    } else {
        go_phase(d, 1, ctx, fx);
    }
}

/// Starts phase `p` on every host with events in it.
fn go_phase(d: &mut Deployment, p: u32, ctx: &mut Ctx, fx: &mut Vec<Effect>) {
    d.phase = p;
    d.info.status = Some("InProgress".into());
    for i in 0..d.targets.len() {
        let t = &d.targets[i];
        let next = t
            .events
            .iter()
            .position(|e| e.status.as_deref() == Some("Pending"));
        if next.is_some_and(|k| t.phase_of(k) <= p)
            && matches!(t.status.as_str(), "Ready" | "Pending")
        {
            let t = &mut d.targets[i];
            t.status = "InProgress".into();
            t.batch = d.batches + 1;
            t.updated = ctx.now;
            fx.push(Effect::InstanceChanged { target: i });
            next_event(d, i, ctx, fx);
        }
    }
    d.batches += 1;
    advance(d, ctx, fx);
}

/// A later phase (traffic moves) ends when every host in it has; any failure fails the
/// deployment.
fn advance_later_phase(d: &mut Deployment, ctx: &mut Ctx, fx: &mut Vec<Effect>) {
    if d.targets.iter().any(|t| {
        t.status == "Failed"
            && t.events
                .iter()
                .enumerate()
                .any(|(k, e)| t.phase_of(k) == d.phase && e.status.as_deref() == Some("Failed"))
    }) {
        end(
            d,
            "Failed",
            Some((
                "HEALTH_CONSTRAINTS",
                "The deployment failed because a host failed while traffic was being moved",
            )),
            ctx,
            fx,
        );
        return;
    }
    if d.targets.iter().any(|t| t.status == "InProgress") {
        return;
    }
    if d.phase < d.last_phase {
        let next = d.phase + 1;
        go_phase(d, next, ctx, fx);
    } else {
        end(d, "Succeeded", None, ctx, fx);
    }
}

/// Ends the deployment: pending hosts are skipped, hosts in flight are no longer waited for.
fn end(
    d: &mut Deployment,
    status: &str,
    error: Option<(&str, &str)>,
    ctx: &mut Ctx,
    fx: &mut Vec<Effect>,
) {
    for i in 0..d.targets.len() {
        match d.targets[i].status.as_str() {
            "Pending" | "Ready" if status != "Succeeded" => {
                let t = &mut d.targets[i];
                t.status = "Skipped".into();
                for e in &mut t.events {
                    if e.status.as_deref() == Some("Pending") {
                        e.status = Some("Skipped".into());
                    }
                }
                t.updated = ctx.now;
                fx.push(Effect::InstanceChanged { target: i });
            }
            "InProgress" => {
                if let Some(c) = d.targets[i].command.clone() {
                    fx.push(Effect::Cancel { command: c });
                }
                let m = match status {
                    "Stopped" => "The deployment was stopped before this lifecycle event finished",
                    _ => "The deployment failed before this lifecycle event finished",
                };
                fail_target(d, i, diag("UnknownError", m), ctx, fx);
            }
            _ => {}
        }
    }
    d.info.status = Some(status.into());
    d.info.complete_time = Some(ctx.now);
    d.info.error_information = error.map(|(code, message)| ErrorInformation {
        code: Some(code.into()),
        message: Some(message.into()),
    });
    let rollback = match (status, error.map(|e| e.0)) {
        ("Failed", _) => d.rollback_on.iter().any(|e| e == "DEPLOYMENT_FAILURE"),
        ("Stopped", Some("ALARM_ACTIVE")) => d
            .rollback_on
            .iter()
            .any(|e| e == "DEPLOYMENT_STOP_ON_ALARM"),
        ("Stopped", _) => d.rollback_requested.unwrap_or_else(|| {
            d.rollback_on
                .iter()
                .any(|e| e == "DEPLOYMENT_STOP_ON_REQUEST")
        }),
        _ => false,
    };
    fx.push(Effect::Ended { rollback });
}

#[cfg(test)]
mod tests {
    use super::*;
    use slipway_model::codedeploy::MinimumHealthyHosts;

    fn deployment(n: usize, ty: &str, value: i32) -> Deployment {
        let health = Health::of(
            &MinimumHealthyHosts {
                r#type: Some(ty.into()),
                value: Some(value),
            },
            n,
        )
        .unwrap();
        Deployment {
            info: DeploymentInfo::default(),
            group_id: "g".into(),
            health,
            targets: (0..n)
                .map(|i| Target {
                    instance: format!("host{i}"),
                    host: format!("arn:aws:iam::1:user/h{i}"),
                    status: "Pending".into(),
                    updated: 0.0,
                    events: ["DownloadBundle", "Install"]
                        .iter()
                        .map(|e| LifecycleEvent {
                            lifecycle_event_name: Some((*e).into()),
                            status: Some("Pending".into()),
                            ..Default::default()
                        })
                        .collect(),
                    command: None,
                    unhealthy: false,
                    batch: 0,
                    phases: Vec::new(),
                    label: None,
                    checking: false,
                    checked: false,
                })
                .collect(),
            rollback_on: vec!["DEPLOYMENT_FAILURE".into()],
            rollback_requested: None,
            batches: 0,
            alarms: None,
            phase: 0,
            last_phase: 0,
            ready_wait: false,
            ready_since: None,
            blue_green: None,
        }
    }

    struct Run {
        d: Deployment,
        n: u32,
        /// Max hosts in progress at once.
        peak: usize,
        ended: Option<bool>,
        /// Hosts whose health checks fail.
        sick: Vec<usize>,
        /// The host commands in the order they were issued.
        log: Vec<(usize, String)>,
    }

    impl Run {
        fn new(d: Deployment) -> Run {
            Run {
                d,
                n: 0,
                peak: 0,
                ended: None,
                sick: Vec::new(),
                log: Vec::new(),
            }
        }
        fn feed(&mut self, input: Input) -> Vec<Effect> {
            let mut n = self.n;
            let mut id = || {
                n += 1;
                format!("c{n}")
            };
            let fx = step(
                &mut self.d,
                input,
                &mut Ctx {
                    now: 1.0,
                    new_id: &mut id,
                },
            );
            self.n = n;
            self.peak = self.peak.max(self.d.count("InProgress"));
            for f in &fx {
                if let Effect::Ended { rollback } = f {
                    self.ended = Some(*rollback);
                }
            }
            fx
        }
        /// Runs to the end; hosts in `bad` fail their Install.
        fn run(&mut self, bad: &[usize]) {
            let mut queue: Vec<(usize, String, String)> = Vec::new();
            let collect = |fx: Vec<Effect>, q: &mut Vec<(usize, String, String)>| {
                for f in fx {
                    if let Effect::Command {
                        target,
                        event,
                        command,
                    } = f
                    {
                        q.push((target, event, command));
                    }
                }
            };
            let fx = self.feed(Input::Start);
            collect(fx, &mut queue);
            while let Some((target, event, command)) = (!queue.is_empty()).then(|| queue.remove(0))
            {
                self.log.push((target, event.clone()));
                let fx = if event == HEALTH_CHECK {
                    let ok = !self.sick.contains(&target);
                    self.feed(Input::CheckEnded {
                        command,
                        instance: self.d.targets[target].instance.clone(),
                        ok,
                        diagnostics: Diagnostics {
                            script_name: Some("curl -f localhost".into()),
                            log_tail: Some("[stderr]connection refused\n".into()),
                            ..Default::default()
                        },
                    })
                } else {
                    let ok = !(event == "Install" && bad.contains(&target));
                    self.feed(Input::EventEnded {
                        command,
                        ok,
                        diagnostics: Diagnostics::default(),
                    })
                };
                collect(fx, &mut queue);
            }
        }
    }

    #[test]
    fn batch_sizes_follow_the_config() {
        for (ty, v, n, peak) in [
            ("MOST_CONCURRENCY", 1, 5, 1),
            ("FLEET_PERCENT", 50, 5, 2),
            ("HOST_COUNT", 0, 5, 5),
            ("FLEET_PERCENT", 40, 9, 5),
            ("HOST_COUNT", 6, 9, 3),
        ] {
            let mut r = Run::new(deployment(n, ty, v));
            r.run(&[]);
            assert_eq!(r.d.status(), "Succeeded", "{ty} {v}");
            assert_eq!(r.peak, peak, "{ty} {v} on {n}");
            assert_eq!(r.d.count("Succeeded"), n);
        }
    }

    #[test]
    fn one_at_a_time_fails_at_the_first_failure_but_forgives_the_last_host() {
        let mut r = Run::new(deployment(5, "MOST_CONCURRENCY", 1));
        r.run(&[1]);
        assert_eq!(r.d.status(), "Failed");
        assert_eq!(
            r.d.info.error_information.as_ref().unwrap().code.as_deref(),
            Some("HEALTH_CONSTRAINTS")
        );
        assert_eq!(
            (
                r.d.count("Succeeded"),
                r.d.count("Failed"),
                r.d.count("Skipped")
            ),
            (1, 1, 3)
        );
        assert_eq!(r.ended, Some(true));
        let mut r = Run::new(deployment(5, "MOST_CONCURRENCY", 1));
        r.run(&[4]);
        assert_eq!(r.d.status(), "Succeeded");
    }

    #[test]
    fn half_at_a_time_tolerates_a_minority_of_failures() {
        let mut r = Run::new(deployment(4, "FLEET_PERCENT", 50));
        r.run(&[0]);
        assert_eq!(r.d.status(), "Succeeded");
        assert_eq!(r.d.count("Failed"), 1);
        let mut r = Run::new(deployment(4, "FLEET_PERCENT", 50));
        r.run(&[0, 1, 2]);
        assert_eq!(r.d.status(), "Failed");
    }

    #[test]
    fn unhealthy_hosts_go_first_and_stop_rolls_back_on_request() {
        let mut d = deployment(3, "MOST_CONCURRENCY", 1);
        d.targets[2].unhealthy = true;
        let mut r = Run::new(d);
        let fx = r.feed(Input::Start);
        assert!(fx
            .iter()
            .any(|f| matches!(f, Effect::Command { target: 2, .. })));
        let fx = r.feed(Input::Stop {
            alarm: None,
            rollback: Some(true),
        });
        assert!(fx.iter().any(|f| matches!(f, Effect::Cancel { .. })));
        assert_eq!(r.d.status(), "Stopped");
        assert_eq!(r.ended, Some(true));
        assert_eq!(r.d.count("Skipped"), 2);
    }

    #[test]
    fn blue_green_phases_run_in_order_and_wait_when_ready() {
        let mut d = deployment(4, "HOST_COUNT", 0);
        // host0, host1 green: install (phase 0) then traffic (phase 1); host2, host3 blue:
        // traffic blocked (phase 2).
        for (i, t) in d.targets.iter_mut().enumerate() {
            if i < 2 {
                t.events.push(LifecycleEvent {
                    lifecycle_event_name: Some("AllowTraffic".into()),
                    status: Some("Pending".into()),
                    ..Default::default()
                });
                t.phases = vec![0, 0, 1];
            } else {
                t.events = vec![LifecycleEvent {
                    lifecycle_event_name: Some("BlockTraffic".into()),
                    status: Some("Pending".into()),
                    ..Default::default()
                }];
                t.phases = vec![2];
            }
        }
        d.last_phase = 2;
        d.ready_wait = true;
        let mut r = Run::new(d);
        let mut order = Vec::new();
        let mut queue: Vec<(usize, String, String)> = Vec::new();
        let take = |fx: Vec<Effect>, q: &mut Vec<(usize, String, String)>| {
            for f in fx {
                if let Effect::Command {
                    target,
                    event,
                    command,
                } = f
                {
                    q.push((target, event, command));
                }
            }
        };
        take(r.feed(Input::Start), &mut queue);
        while let Some((target, event, command)) = (!queue.is_empty()).then(|| queue.remove(0)) {
            order.push((target, event.clone()));
            take(
                r.feed(Input::EventEnded {
                    command,
                    ok: true,
                    diagnostics: Diagnostics::default(),
                }),
                &mut queue,
            );
        }
        assert_eq!(r.d.status(), "Ready");
        assert!(r.d.targets[..2].iter().all(|t| t.status == "Ready"));
        assert!(r.d.targets[2..].iter().all(|t| t.status == "Pending"));
        assert!(order.iter().all(|(t, _)| *t < 2));
        take(r.feed(Input::Continue), &mut queue);
        while let Some((target, event, command)) = (!queue.is_empty()).then(|| queue.remove(0)) {
            order.push((target, event.clone()));
            take(
                r.feed(Input::EventEnded {
                    command,
                    ok: true,
                    diagnostics: Diagnostics::default(),
                }),
                &mut queue,
            );
        }
        assert_eq!(r.d.status(), "Succeeded");
        let allow = order
            .iter()
            .rposition(|(_, e)| e == "AllowTraffic")
            .unwrap();
        let block = order.iter().position(|(_, e)| e == "BlockTraffic").unwrap();
        assert!(
            allow < block,
            "traffic reaches green before it leaves blue: {order:?}"
        );
        assert_eq!(r.d.count("Succeeded"), 4);
    }

    fn with_host_check(mut d: Deployment) -> Deployment {
        d.alarms = Some(slipway_model::codedeploy::AlarmConfiguration {
            enabled: Some(true),
            alarms: Some(vec![slipway_model::codedeploy::Alarm {
                name: Some("command:curl -f localhost".into()),
            }]),
            ..Default::default()
        });
        d.rollback_on.push("DEPLOYMENT_STOP_ON_ALARM".into());
        d
    }

    #[test]
    fn host_checks_run_after_each_hosts_events_and_gate_the_next_batch() {
        let mut r = Run::new(with_host_check(deployment(3, "MOST_CONCURRENCY", 1)));
        r.run(&[]);
        assert_eq!(r.d.status(), "Succeeded");
        let order: Vec<(usize, &str)> = r.log.iter().map(|(t, e)| (*t, e.as_str())).collect();
        let mut want = Vec::new();
        for t in 0..3 {
            want.extend([(t, "DownloadBundle"), (t, "Install"), (t, HEALTH_CHECK)]);
        }
        assert_eq!(order, want);
        assert!(r.d.targets.iter().all(|t| t.checked && !t.checking));
        // The check is no lifecycle event.
        assert!(r.d.targets.iter().all(|t| t.events.len() == 2));
    }

    #[test]
    fn a_failing_host_check_stops_the_deployment_on_alarm_and_rolls_back() {
        let mut r = Run::new(with_host_check(deployment(3, "MOST_CONCURRENCY", 1)));
        r.sick = vec![1];
        r.run(&[]);
        assert_eq!(r.d.status(), "Stopped");
        let e = r.d.info.error_information.clone().unwrap();
        assert_eq!(e.code.as_deref(), Some("ALARM_ACTIVE"));
        let m = e.message.unwrap();
        assert!(
            m.contains("command:curl -f localhost") && m.contains("host1"),
            "{m}"
        );
        assert!(m.ends_with("connection refused"), "{m}");
        assert_eq!(r.ended, Some(true));
        let st: Vec<&str> = r.d.targets.iter().map(|t| t.status.as_str()).collect();
        assert_eq!(st, ["Succeeded", "Failed", "Skipped"]);
        // A periodic check failing later (no target's command) stops it too.
        let mut r = Run::new(with_host_check(deployment(2, "HOST_COUNT", 0)));
        r.feed(Input::Start);
        let fx = r.feed(Input::CheckEnded {
            command: "periodic".into(),
            instance: "host0".into(),
            ok: false,
            diagnostics: Diagnostics::default(),
        });
        assert!(fx.contains(&Effect::Ended { rollback: true }));
        // … while one passing is nothing.
        let mut r = Run::new(with_host_check(deployment(2, "HOST_COUNT", 0)));
        r.feed(Input::Start);
        let fx = r.feed(Input::CheckEnded {
            command: "periodic".into(),
            instance: "host0".into(),
            ok: true,
            diagnostics: Diagnostics::default(),
        });
        assert!(fx.is_empty() && r.d.status() == "InProgress");
    }

    #[test]
    fn no_instances_fails_at_once() {
        let mut r = Run::new(deployment(0, "HOST_COUNT", 0));
        r.feed(Input::Start);
        assert_eq!(r.d.status(), "Failed");
        assert_eq!(
            r.d.info.error_information.unwrap().code.as_deref(),
            Some("NO_INSTANCES")
        );
    }
}
