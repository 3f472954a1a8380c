//! Stage condition rules: VariableCheck (a resolved variable compared with a value) and
//! DeploymentWindow (the current minute inside a cron window), checked at once when a stage
//! asks; a condition holds when all its rules pass, a condition set when all its conditions
//! hold.

use crate::variables::{self, Scope};
use serde_json::{json, Value};
use slipway_model::codepipeline::{Condition, RuleDeclaration};

/// The rule types Slipway checks: (provider, required keys, optional keys).
pub const RULE_TYPES: &[(&str, &[&str], &[&str])] = &[
    ("VariableCheck", &["Variable", "Value", "Operator"], &[]),
    ("DeploymentWindow", &["Cron"], &["TimeZone"]),
];

/// Checks a condition set; whether it held, and the record of every rule's outcome.
pub fn check(
    conditions: &[Condition],
    scope: &Scope,
    now: f64,
    new_id: &mut dyn FnMut() -> String,
) -> (bool, Value) {
    let mut all = true;
    let mut rules = Vec::new();
    for c in conditions {
        for r in c.rules.iter().flatten() {
            let (passed, summary, resolved) = rule(r, scope, now);
            all &= passed;
            rules.push(json!({
                "ruleExecutionId": new_id(),
                "ruleName": r.name,
                "ruleTypeId": r.rule_type_id,
                "configuration": r.configuration,
                "resolvedConfiguration": resolved,
                "status": if passed { "Succeeded" } else { "Failed" },
                "summary": summary,
                "time": now,
            }));
        }
    }
    (
        all,
        json!({
            "status": if all { "Succeeded" } else { "Failed" },
            "summary": if all { "All conditions were met" } else { "A condition was not met" },
            "time": now,
            "rules": rules,
        }),
    )
}

/// One rule: (passed, summary, resolved configuration).
fn rule(r: &RuleDeclaration, scope: &Scope, now: f64) -> (bool, String, Value) {
    let config = r.configuration.clone().unwrap_or_default();
    let mut resolved = serde_json::Map::new();
    for (k, v) in &config {
        match variables::resolve(v, scope) {
            Ok(x) => {
                resolved.insert(k.clone(), Value::String(x));
            }
            Err(m) => return (false, m, Value::Object(resolved)),
        }
    }
    let get = |k: &str| {
        resolved
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let provider = r
        .rule_type_id
        .as_ref()
        .and_then(|t| t.provider.as_deref())
        .unwrap_or_default();
    let (passed, summary) = match provider {
        "VariableCheck" => {
            let (var, value, op) = (get("Variable"), get("Value"), get("Operator"));
            let passed = match op.as_str() {
                "EQ" => var == value,
                "NE" => var != value,
                "CONTAINS" => var.contains(&value),
                "MATCHES" => regex::Regex::new(&value).is_ok_and(|re| re.is_match(&var)),
                _ => false,
            };
            (
                passed,
                format!(
                    "'{var}' {op} '{value}': {}",
                    if passed { "true" } else { "false" }
                ),
            )
        }
        "DeploymentWindow" => match in_window(
            &get("Cron"),
            resolved.get("TimeZone").and_then(Value::as_str),
            now,
        ) {
            Ok(true) => (true, "Inside the deployment window".to_owned()),
            Ok(false) => (false, "Outside the deployment window".to_owned()),
            Err(m) => (false, m),
        },
        other => (
            false,
            format!("Rule provider {other} is not run by Slipway"),
        ),
    };
    (passed, summary, Value::Object(resolved))
}

/// Whether the minute of `now` (seconds since the epoch) matches `cron` in `zone` (UTC, or
/// a fixed offset `±HH:MM`). Fields as EventBridge's: minutes hours day-of-month month
/// day-of-week year (a leading seconds field, as Quartz writes it, is allowed).
pub fn in_window(cron: &str, zone: Option<&str>, now: f64) -> Result<bool, String> {
    let offset = match zone.unwrap_or("UTC") {
        "UTC" | "GMT" | "Etc/UTC" | "" => 0,
        z => parse_offset(z).ok_or_else(|| {
            format!("TimeZone {z} is not supported: use UTC or a fixed offset such as +02:00")
        })?,
    };
    let t = time::OffsetDateTime::from_unix_timestamp(now as i64 + offset)
        .map_err(|e| e.to_string())?;
    let fields: Vec<&str> = cron
        .trim()
        .trim_start_matches("cron(")
        .trim_end_matches(')')
        .split_whitespace()
        .collect();
    // Seconds (always `*`: a window is whole minutes), then the five or six EventBridge
    // fields.
    let fields = match fields.len() {
        6 | 7 if fields[0] == "*" || fields[0] == "0" => &fields[1..],
        6 | 7 => return Err(format!("Cron {cron:?}: the seconds field must be *")),
        n => return Err(format!("Cron {cron:?} has {n} fields; it needs seconds, minutes, hours, day of month, month, day of week and optionally year")),
    };
    let dow = t.weekday().number_from_sunday() as u32; // 1 = Sunday, as EventBridge counts
    let values = [
        (t.minute() as u32, 0, 59, NONE),
        (t.hour() as u32, 0, 23, NONE),
        (t.day() as u32, 1, 31, NONE),
        (t.month() as u32, 1, 12, MONTHS),
        (dow, 1, 7, DAYS),
        (t.year() as u32, 1970, 2199, NONE),
    ];
    for (field, (value, lo, hi, names)) in fields.iter().zip(values) {
        if !field_matches(field, value, lo, hi, names).map_err(|e| format!("Cron {cron:?}: {e}"))? {
            return Ok(false);
        }
    }
    Ok(true)
}

const NONE: &[&str] = &[];
const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

fn parse_offset(z: &str) -> Option<i64> {
    let (sign, rest) = match z.as_bytes().first()? {
        b'+' => (1, &z[1..]),
        b'-' => (-1, &z[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    Some(sign * (h.parse::<i64>().ok()? * 3600 + m.parse::<i64>().ok()? * 60))
}

fn number(s: &str, names: &[&str], lo: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(i as u32 + lo);
    }
    s.parse().map_err(|_| format!("{s:?} is not a number"))
}

fn field_matches(
    field: &str,
    value: u32,
    lo: u32,
    hi: u32,
    names: &[&str],
) -> Result<bool, String> {
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("bad step in {part:?}"))?
                    .max(1),
            ),
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" | "?" => (lo, hi),
            r => match r.split_once('-') {
                Some((a, b)) => (number(a, names, lo)?, number(b, names, lo)?),
                None if step > 1 => (number(r, names, lo)?, hi),
                None => {
                    let n = number(r, names, lo)?;
                    (n, n)
                }
            },
        };
        if value >= from && value <= to && (value - from).is_multiple_of(step) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_windows() {
        // 2026-12-07 06:30 UTC, a Monday.
        let t = 1_796_625_000.0;
        assert!(in_window("* * * * * ?", None, t).unwrap());
        assert!(in_window("* 0/30 6 ? * MON-FRI", None, t).unwrap());
        assert!(!in_window("* * 9-17 ? * MON-FRI", None, t).unwrap());
        assert!(in_window("* * 9-17 ? * MON-FRI", Some("+03:00"), t).unwrap());
        assert!(!in_window("* * * ? * SAT,SUN", None, t).unwrap());
        assert!(in_window("* 30 6 ? DEC 2 2026", None, t).unwrap());
        assert!(!in_window("* 30 6 ? DEC 2 2027", None, t).unwrap());
        assert!(in_window("* *", None, t).is_err());
        assert!(in_window("5 * * * * ?", None, t).is_err());
        assert!(in_window("* * * * * ?", Some("Europe/Paris"), t).is_err());
    }
}
