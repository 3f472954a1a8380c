//! CodeDeploy for the Server (EC2/on-premises) compute platform: applications and their
//! revisions ([`applications`]), deployment configs ([`configs`]) and groups ([`groups`]),
//! on-premises instances ([`instances`]), deployments rolled across a fleet by a pure
//! orchestrator ([`orchestrator`]) whose effects the runtime ([`deployments`]) persists and
//! performs, and the command service host agents poll ([`commands`]).
//!
//! Domain types at the boundary are the generated model's shapes; errors are CodeDeploy's
//! `ErrorKind`s. SQL stays behind `slipway_store::deploy`.

pub mod applications;
pub mod commands;
pub mod configs;
pub mod deployments;
pub mod envelope;
pub mod error;
pub mod groups;
pub mod instances;
pub mod orchestrator;
pub mod spec;
pub mod traffic;

use crate::error::{err, ErrorKind, Result};
use slipway_store::Store;
use std::sync::Arc;
use std::time::Duration;

/// What the service is configured with.
#[derive(Clone)]
pub struct Config {
    pub account_id: String,
    pub default_region: String,
    /// How long a host may go without a word from its agent about a command it was given
    /// (or without taking one) before its host fails.
    pub agent_timeout: Duration,
    /// Probes a health check (an alarm's URL): Ok when it answers healthy, Err(true) when it
    /// answers unhealthy, Err(false) when it cannot be reached.
    pub probe: Option<Probe>,
    /// The load balancers traffic moves on (`--load-balancers`).
    pub traffic: traffic::Traffic,
}

/// A health-check prober, given by the binary (domain crates send no HTTP themselves).
pub type Probe = Arc<
    dyn Fn(String) -> futures_util::future::BoxFuture<'static, std::result::Result<(), bool>>
        + Send
        + Sync,
>;

pub(crate) struct Inner {
    pub store: Store,
    pub cfg: Config,
    pub s3: slipway_s3::S3Store,
    /// Woken when a host may have a new command (agents long-poll on it).
    pub commands: tokio::sync::Notify,
    /// Woken when the runtime has something to do (a result, a new deployment).
    pub wake: tokio::sync::Notify,
    /// Set at shutdown: long polls are answered at once.
    pub closing: std::sync::atomic::AtomicBool,
    /// When each (deployment, host) last had its health checks queued again.
    pub rechecked: std::sync::Mutex<std::collections::HashMap<(String, String), f64>>,
    /// Signs deployment specifications (made at start; None: sent as TEXT/JSON).
    pub signer: Option<envelope::Signer>,
}

/// The CodeDeploy service, as seen from one region.
#[derive(Clone)]
pub struct CodeDeploy {
    pub(crate) inner: Arc<Inner>,
    pub(crate) region: Arc<str>,
}

impl CodeDeploy {
    pub fn new(store: Store, cfg: Config, s3: slipway_s3::S3Store) -> CodeDeploy {
        let region = cfg.default_region.as_str().into();
        CodeDeploy {
            inner: Arc::new(Inner {
                store,
                cfg,
                s3,
                commands: tokio::sync::Notify::new(),
                wake: tokio::sync::Notify::new(),
                closing: Default::default(),
                rechecked: Default::default(),
                signer: match envelope::Signer::generate() {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::warn!(error = %e, "deployment specifications go unsigned (TEXT/JSON)");
                        None
                    }
                },
            }),
            region,
        }
    }

    /// The same service acting in `region`.
    pub fn in_region(&self, region: &str) -> CodeDeploy {
        CodeDeploy {
            inner: self.inner.clone(),
            region: region.into(),
        }
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub(crate) fn account_id(&self) -> &str {
        &self.inner.cfg.account_id
    }

    pub(crate) fn store(&self) -> &Store {
        &self.inner.store
    }

    /// At shutdown: agents' long polls are answered at once (with no command), so draining
    /// the connections does not wait for them.
    pub fn close(&self) {
        self.inner
            .closing
            .store(true, std::sync::atomic::Ordering::Release);
        self.inner.commands.notify_waiters();
    }

    /// Tells the runtime there may be something to do.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    fn arn(&self, resource: &str) -> String {
        slipway_regions::arn("codedeploy", &self.region, self.account_id(), resource)
    }

    pub fn application_arn(&self, name: &str) -> String {
        self.arn(&format!("application:{name}"))
    }

    pub fn group_arn(&self, app: &str, group: &str) -> String {
        self.arn(&format!("deploymentgroup:{app}/{group}"))
    }

    pub fn config_arn(&self, name: &str) -> String {
        self.arn(&format!("deploymentconfig:{name}"))
    }

    pub fn instance_arn(&self, name: &str) -> String {
        self.arn(&format!("instance/{name}"))
    }
}

/// A stable, opaque id (applications, groups, configs).
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A deployment id as AWS shapes them: `d-` and nine upper-case letters and digits.
pub(crate) fn deployment_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let tail: String = bytes[..9]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect();
    format!("d-{tail}")
}

/// The error for a compute platform Slipway does not run.
pub(crate) fn platform_unsupported(platform: &str) -> error::Error {
    err(
        ErrorKind::InvalidComputePlatformException,
        format!("Slipway runs the Server compute platform (EC2/on-premises instances); {platform} is not supported"),
    )
}

/// Checks a compute platform: only Server is run.
pub(crate) fn check_platform(platform: Option<&str>) -> Result<String> {
    match platform.unwrap_or("Server") {
        "Server" => Ok("Server".into()),
        other => Err(platform_unsupported(other)),
    }
}
