//! Which source changes start a pipeline: a push to a CodeCommit source action's branch (or,
//! when the pipeline declares V2 triggers for that action, a push matching their branch and
//! tag filters), a new version of an S3 source action's object.

use crate::runtime::SourceChange;
use slipway_model::codepipeline::{ActionDeclaration, GitPushFilter, PipelineDeclaration};

fn glob_match(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| {
        globset::GlobBuilder::new(p)
            .literal_separator(false)
            .build()
            .map(|g| g.compile_matcher().is_match(name))
            .unwrap_or(false)
    })
}

/// Whether a filter's includes/excludes admit `name` (no includes: everything).
fn admits(includes: Option<&Vec<String>>, excludes: Option<&Vec<String>>, name: &str) -> bool {
    let included = includes.is_none_or(|i| glob_match(i, name));
    included && !excludes.is_some_and(|e| glob_match(e, name))
}

fn push_matches(f: &GitPushFilter, kind: &str, name: &str) -> bool {
    match kind {
        "branch" => f
            .branches
            .as_ref()
            .is_some_and(|b| admits(b.includes.as_ref(), b.excludes.as_ref(), name)),
        "tag" => f
            .tags
            .as_ref()
            .is_some_and(|t| admits(t.includes.as_ref(), t.excludes.as_ref(), name)),
        _ => false,
    }
}

/// The revision `action` must read when `change` starts the pipeline, or None when the
/// change does not concern it.
pub fn matches(
    d: &PipelineDeclaration,
    action: &ActionDeclaration,
    change: &SourceChange,
) -> Option<String> {
    let t = action.action_type_id.as_ref()?;
    let config = action.configuration.clone().unwrap_or_default();
    let name = action.name.clone().unwrap_or_default();
    match (t.provider.as_deref(), t.owner.as_deref(), change) {
        (
            Some("CodeCommit"),
            Some("AWS"),
            SourceChange::Push {
                repository,
                kind,
                name: reference,
                commit,
            },
        ) => {
            if config.get("RepositoryName") != Some(repository) {
                return None;
            }
            let triggers: Vec<_> = d
                .triggers
                .iter()
                .flatten()
                .filter_map(|t| t.git_configuration.as_ref())
                .filter(|g| g.source_action_name.as_deref() == Some(&name))
                .collect();
            let hit = if triggers.is_empty() {
                kind == "branch" && config.get("BranchName") == Some(reference)
            } else {
                triggers
                    .iter()
                    .flat_map(|g| g.push.iter().flatten())
                    .any(|f| push_matches(f, kind, reference))
            };
            hit.then(|| commit.clone())
        }
        (
            Some("S3"),
            Some("AWS"),
            SourceChange::Object {
                bucket,
                key,
                version,
            },
        ) => (config.get("S3Bucket") == Some(bucket) && config.get("S3ObjectKey") == Some(key))
            .then(|| version.clone().unwrap_or_default()),
        _ => None,
    }
}
