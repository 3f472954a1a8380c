//! Variable references in action configuration: `#{namespace.name}` for an earlier
//! action's output variables, `#{variables.name}` for pipeline variables and
//! `#{codepipeline.PipelineExecutionId}`.

use std::collections::BTreeMap;

/// What references resolve against.
#[derive(Debug, Default)]
pub struct Scope {
    /// Namespace → its variables (`variables` and `codepipeline` included).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

impl Scope {
    pub fn new(execution_id: &str, pipeline_variables: &[(String, String)]) -> Scope {
        let mut namespaces = BTreeMap::new();
        namespaces.insert(
            "codepipeline".to_owned(),
            BTreeMap::from([("PipelineExecutionId".to_owned(), execution_id.to_owned())]),
        );
        namespaces.insert(
            "variables".to_owned(),
            pipeline_variables.iter().cloned().collect(),
        );
        Scope { namespaces }
    }
}

/// `text` with every reference replaced; the first reference that does not resolve is the
/// error (AWS fails the action with it).
pub fn resolve(text: &str, scope: &Scope) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("#{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let reference = &after[..end];
        let value = reference
            .split_once('.')
            .and_then(|(ns, name)| scope.namespaces.get(ns)?.get(name));
        match value {
            Some(v) => out.push_str(v),
            None => {
                return Err(format!(
                    "An action in this pipeline failed because one or more variables could not be resolved: #{{{reference}}}"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_resolve_or_name_what_is_missing() {
        let mut s = Scope::new("e-1", &[("env".into(), "prod".into())]);
        s.namespaces.insert(
            "SourceVariables".into(),
            BTreeMap::from([("CommitId".into(), "abc".into())]),
        );
        assert_eq!(
            resolve(
                "#{SourceVariables.CommitId}-#{variables.env}-#{codepipeline.PipelineExecutionId}",
                &s
            )
            .unwrap(),
            "abc-prod-e-1"
        );
        assert_eq!(
            resolve("plain #{ not closed", &s).unwrap(),
            "plain #{ not closed"
        );
        let e = resolve("x #{Build.Missing}", &s).unwrap_err();
        assert!(e.contains("#{Build.Missing}"), "{e}");
    }
}
