//! IAM identity-policy documents: parsing (AWS's JSON grammar) and evaluation.
//!
//! Supported: `Effect`, `Action`/`NotAction`, `Resource`/`NotResource` with `*` and `?`
//! wildcards (actions match case-insensitively, resources case-sensitively). An explicit
//! Deny wins; otherwise an Allow is needed (default deny). `Condition` blocks are not
//! evaluated yet, so they fail closed: an Allow with a condition never applies, a Deny with
//! a condition always does.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

#[derive(Debug, Clone)]
struct Patterns {
    negated: bool,
    patterns: Vec<String>,
}

impl Patterns {
    fn matches(&self, value: &str, case_insensitive: bool) -> bool {
        let hit = self.patterns.iter().any(|p| {
            if case_insensitive {
                wildcard_match(&p.to_ascii_lowercase(), &value.to_ascii_lowercase())
            } else {
                wildcard_match(p, value)
            }
        });
        hit != self.negated
    }
}

#[derive(Debug, Clone)]
struct Statement {
    effect: Effect,
    actions: Patterns,
    resources: Patterns,
    conditional: bool,
}

/// A parsed policy document.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// How a set of policies decides a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow,
    ExplicitDeny,
    ImplicitDeny,
}

fn string_or_list(v: &Value, key: &str) -> Result<Vec<String>, String> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("{key} entries must be strings"))
            })
            .collect(),
        _ => Err(format!(
            "{key} must be a string or a non-empty list of strings"
        )),
    }
}

fn pair(
    stmt: &serde_json::Map<String, Value>,
    pos: &str,
    neg: &str,
    required: bool,
) -> Result<Patterns, String> {
    match (stmt.get(pos), stmt.get(neg)) {
        (Some(_), Some(_)) => Err(format!("a statement cannot have both {pos} and {neg}")),
        (Some(v), None) => Ok(Patterns {
            negated: false,
            patterns: string_or_list(v, pos)?,
        }),
        (None, Some(v)) => Ok(Patterns {
            negated: true,
            patterns: string_or_list(v, neg)?,
        }),
        (None, None) if required => Err(format!("a statement needs {pos} or {neg}")),
        (None, None) => Ok(Patterns {
            negated: false,
            patterns: vec!["*".into()],
        }),
    }
}

impl Policy {
    /// Parses a policy document; the error text says what is malformed.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let doc: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let obj = doc.as_object().ok_or("the policy must be a JSON object")?;
        if let Some(v) = obj.get("Version") {
            match v.as_str() {
                Some("2012-10-17") | Some("2008-10-17") => {}
                _ => return Err("Version must be 2012-10-17 or 2008-10-17".into()),
            }
        }
        let stmts = match obj.get("Statement") {
            Some(Value::Array(a)) => a.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            _ => return Err("Statement must be an object or a list of objects".into()),
        };
        let mut statements = Vec::new();
        for s in &stmts {
            let s = s.as_object().ok_or("each statement must be an object")?;
            if s.contains_key("Principal") || s.contains_key("NotPrincipal") {
                return Err("identity policies cannot name a Principal".into());
            }
            let effect = match s.get("Effect").and_then(Value::as_str) {
                Some("Allow") => Effect::Allow,
                Some("Deny") => Effect::Deny,
                _ => return Err("Effect must be Allow or Deny".into()),
            };
            statements.push(Statement {
                effect,
                actions: pair(s, "Action", "NotAction", true)?,
                resources: pair(s, "Resource", "NotResource", true)?,
                conditional: s.contains_key("Condition"),
            });
        }
        Ok(Policy { statements })
    }

    fn decide_one(&self, action: &str, resource: &str) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if !(s.actions.matches(action, true) && s.resources.matches(resource, false)) {
                continue;
            }
            match s.effect {
                Effect::Deny => return Decision::ExplicitDeny,
                Effect::Allow if !s.conditional => allowed = true,
                Effect::Allow => {}
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::ImplicitDeny
        }
    }
}

/// Evaluates `action` on `resource` against all of a principal's policies.
pub fn evaluate(policies: &[Policy], action: &str, resource: &str) -> Decision {
    let mut allowed = false;
    for p in policies {
        match p.decide_one(action, resource) {
            Decision::ExplicitDeny => return Decision::ExplicitDeny,
            Decision::Allow => allowed = true,
            Decision::ImplicitDeny => {}
        }
    }
    if allowed {
        Decision::Allow
    } else {
        Decision::ImplicitDeny
    }
}

/// Glob matching with `*` (any run, including empty) and `?` (exactly one character).
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let v: Vec<char> = value.chars().collect();
    let (mut pi, mut vi) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPO: &str = "arn:aws:codecommit:us-east-1:000000000000:my-repo";

    fn decide(doc: &str, action: &str, resource: &str) -> Decision {
        evaluate(&[Policy::parse(doc).unwrap()], action, resource)
    }

    #[test]
    fn wildcards() {
        for (p, v, want) in [
            ("*", "", true),
            ("codecommit:*", "codecommit:GitPull", true),
            ("codecommit:Get*", "codecommit:GitPull", false),
            ("arn:aws:codecommit:*:*:my-?epo", REPO, true),
            ("arn:aws:codecommit:*:*:my", REPO, false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
        ] {
            assert_eq!(wildcard_match(p, v), want, "{p} vs {v}");
        }
    }

    #[test]
    fn decisions() {
        let allow_pull = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"codecommit:GitPull","Resource":"*"}]}"#;
        let deny_wins = r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*"},{"Effect":"Deny","Action":"codecommit:Delete*","Resource":"arn:aws:codecommit:*:*:my-*"}]}"#;
        let not_action = r#"{"Statement":{"Effect":"Allow","NotAction":"codecommit:GitPush","NotResource":"arn:aws:codecommit:*:*:secret"}}"#;
        let cond = r#"{"Statement":[{"Effect":"Allow","Action":"*","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}]}"#;
        let secret = "arn:aws:codecommit:us-east-1:0:secret";
        use Decision::*;
        for (doc, action, resource, want) in [
            (allow_pull, "codecommit:GitPull", REPO, Allow),
            (allow_pull, "CodeCommit:gitpull", REPO, Allow),
            (allow_pull, "codecommit:GitPush", REPO, ImplicitDeny),
            (deny_wins, "codecommit:DeleteRepository", REPO, ExplicitDeny),
            (deny_wins, "codecommit:GetRepository", REPO, Allow),
            (not_action, "codecommit:GitPull", REPO, Allow),
            (not_action, "codecommit:GitPush", REPO, ImplicitDeny),
            (not_action, "codecommit:GitPull", secret, ImplicitDeny),
            (cond, "codecommit:GitPull", REPO, ImplicitDeny),
        ] {
            assert_eq!(
                decide(doc, action, resource),
                want,
                "{action} on {resource} under {doc}"
            );
        }
    }

    #[test]
    fn malformed_documents() {
        for doc in [
            "nope",
            "[]",
            r#"{"Statement":[]}"#.replace("[]", "5").as_str(),
            r#"{"Version":"2020-01-01","Statement":[]}"#,
            r#"{"Statement":[{"Effect":"Maybe","Action":"*","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":"*","NotAction":"x","Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Action":[],"Resource":"*"}]}"#,
            r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"*","Resource":"*"}]}"#,
        ] {
            assert!(Policy::parse(doc).is_err(), "{doc}");
        }
    }
}
