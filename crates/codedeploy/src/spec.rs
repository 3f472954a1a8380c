//! The deployment specification a host's agent reads (GetDeploymentSpecification): the JSON
//! of AWS's agent protocol (PascalCase keys), shared by the server that writes it and
//! Slipway's agent that reads it.

use serde::{Deserialize, Serialize};

/// The envelope format Slipway's server sends and its agent reads.
pub const TEXT_JSON: &str = "TEXT/JSON";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Spec {
    pub deployment_id: String,
    pub deployment_group_id: String,
    pub deployment_group_name: String,
    pub application_name: String,
    #[serde(default)]
    pub deployment_creator: Option<String>,
    #[serde(default)]
    pub deployment_type: Option<String>,
    #[serde(default)]
    pub agent_action_overrides: Option<AgentActionOverrides>,
    pub revision: Revision,
    /// The commands of the deployment's health checks, run on the host for the
    /// `SlipwayHealthCheck` command (a Slipway extension AWS's agent does not read).
    #[serde(
        default,
        rename = "SlipwayHealthChecks",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub health_checks: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentActionOverrides {
    #[serde(default)]
    pub agent_overrides: Option<AgentOverrides>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentOverrides {
    #[serde(default)]
    pub file_exists_behavior: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Revision {
    /// `S3`, or (a Slipway extension AWS's agent does not read) `AppSpecContent`.
    pub revision_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_revision: Option<S3Revision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_spec_content: Option<Content>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct S3Revision {
    pub bucket: String,
    pub key: String,
    pub bundle_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, rename = "ETag", skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Content {
    pub content: String,
}

/// What a host reports about a command (the JSON diagnostics payload of
/// PutHostCommandComplete).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    pub error_code: i64,
    #[serde(default)]
    pub script_name: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub log: String,
}

/// The agent's error codes: 0 success, 1 script missing, 2 not executable, 3 timed out,
/// 4 failed, 5 unknown, 6 outputs left open, 7 failed after an agent restart.
pub fn lifecycle_error_code(code: i64) -> &'static str {
    match code {
        0 => "Success",
        1 => "ScriptMissing",
        2 => "ScriptNotExecutable",
        3 => "ScriptTimedOut",
        4 => "ScriptFailed",
        _ => "UnknownError",
    }
}
