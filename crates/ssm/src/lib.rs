//! Parameter Store (the part of AWS Systems Manager builds use): versioned String, StringList
//! and SecureString parameters in a hierarchy, SecureString values envelope-encrypted at rest,
//! and a `Parameter Store Change` event for every write.
//!
//! Knows nothing of HTTP or JSON-1.1; errors carry SSM's exception names.

use serde_json::json;
use slipway_iam::crypto::MasterKey;
use slipway_store::events::{self, Event};
use slipway_store::paging::{paginate, Page};
use slipway_store::{now, sqlx, Store};
use sqlx::Row;
use std::collections::BTreeMap;

/// An SSM error: SSM's exception name and a message, or an internal failure.
pub use slipway_store::ServiceError as Error;

pub type Result<T> = std::result::Result<T, Error>;

use slipway_store::service_err as err;

/// The most versions a parameter keeps; writing more drops the oldest, as SSM does.
pub const MAX_VERSIONS: i64 = 100;
/// The deepest hierarchy SSM allows.
pub const MAX_DEPTH: usize = 15;

/// A value as a caller may see it: plaintext, or a SecureString read without decryption.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Plain(String),
    /// The envelope as stored (callers show it base64-encoded, as SSM shows KMS ciphertext).
    Encrypted(Vec<u8>),
}

/// A parameter value as a caller sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub ptype: String,
    pub value: Value,
    pub version: i64,
    pub selector: Option<String>,
    pub last_modified: f64,
    pub arn: String,
    pub data_type: String,
}

/// A parameter's metadata (DescribeParameters) or one of its versions (GetParameterHistory).
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub name: String,
    pub arn: String,
    pub ptype: String,
    pub key_id: Option<String>,
    pub last_modified: f64,
    pub last_modified_user: String,
    pub description: Option<String>,
    pub allowed_pattern: Option<String>,
    pub version: i64,
    pub tier: String,
    pub data_type: String,
    /// Only filled for history entries.
    pub value: Option<Value>,
}

/// A PutParameter request.
#[derive(Debug, Clone, Default)]
pub struct Put {
    pub name: String,
    pub value: String,
    pub ptype: Option<String>,
    pub description: Option<String>,
    pub key_id: Option<String>,
    pub overwrite: bool,
    pub allowed_pattern: Option<String>,
    pub tier: Option<String>,
    pub data_type: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// A DescribeParameters/GetParametersByPath filter: key, option, values.
#[derive(Debug, Clone)]
pub struct Filter {
    pub key: String,
    pub option: Option<String>,
    pub values: Vec<String>,
}

/// The Parameter Store of one account, as seen from one region ([`ParameterStore::in_region`]
/// gives another region's: the same store, other parameters).
#[derive(Clone, Debug)]
pub struct ParameterStore {
    store: Store,
    key: MasterKey,
    region: String,
    account_id: String,
}

fn bad_name() -> Error {
    err(
        "ValidationException",
        "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_",
    )
}

/// Checks a parameter name as SSM does.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > 2048 {
        return Err(bad_name());
    }
    let lower = name.trim_start_matches('/').to_ascii_lowercase();
    if lower.starts_with("aws") || lower.starts_with("ssm") {
        return Err(bad_name());
    }
    if name.contains('/') {
        if !name.starts_with('/') {
            return Err(err(
                "ValidationException",
                "Parameter name must be a fully qualified name.",
            ));
        }
        let parts: Vec<&str> = name[1..].split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad_name());
        }
        if parts.len() > MAX_DEPTH {
            return Err(err(
                "HierarchyLevelLimitExceededException",
                "Parameter name exceeds the maximum of 15 levels in a hierarchy.",
            ));
        }
    }
    if name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "_.-/".contains(c))
    {
        Ok(())
    } else {
        Err(bad_name())
    }
}

fn check_type(t: &str) -> Result<()> {
    match t {
        "String" | "StringList" | "SecureString" => Ok(()),
        _ => Err(err(
            "UnsupportedParameterType",
            format!("The parameter type {t} is not supported."),
        )),
    }
}

/// Splits `name:selector` into the name and a version number (labels are not supported yet).
fn split_selector(raw: &str) -> Result<(&str, Option<i64>, Option<String>)> {
    match raw.rsplit_once(':') {
        None => Ok((raw, None, None)),
        Some((name, sel)) => match sel.parse::<i64>() {
            Ok(v) if v > 0 => Ok((name, Some(v), Some(format!(":{sel}")))),
            _ => Err(err("ParameterVersionNotFound", format!("Systems Manager could not find version {sel} of {name}. Parameter labels are not supported by Slipway yet."))),
        },
    }
}

impl ParameterStore {
    pub fn new(store: Store, key: MasterKey, region: String, account_id: String) -> ParameterStore {
        ParameterStore {
            store,
            key,
            region,
            account_id,
        }
    }

    /// The same store, acting in `region`.
    pub fn in_region(&self, region: &str) -> ParameterStore {
        ParameterStore {
            region: region.to_owned(),
            ..self.clone()
        }
    }

    /// The region this view acts in.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The ARN of a parameter (`…:parameter/a/b` for `/a/b`, `…:parameter/x` for `x`).
    pub fn arn(&self, name: &str) -> String {
        slipway_regions::arn(
            "ssm",
            &self.region,
            &self.account_id,
            &format!("parameter/{}", name.trim_start_matches('/')),
        )
    }

    /// The key a parameter's tags are kept under: its region and name (names have no ':').
    fn tag_id(&self, name: &str) -> String {
        format!("{}:{name}", self.region)
    }

    fn reveal(&self, ptype: &str, stored: &[u8], decrypt: bool) -> Result<Value> {
        if ptype != "SecureString" {
            return Ok(Value::Plain(String::from_utf8_lossy(stored).into_owned()));
        }
        if !decrypt {
            return Ok(Value::Encrypted(stored.to_vec()));
        }
        let plain = self
            .key
            .open(stored)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Value::Plain(String::from_utf8_lossy(&plain).into_owned()))
    }

    fn event(&self, operation: &str, name: &str, ptype: &str, description: Option<&str>) -> Event {
        let mut detail = json!({ "operation": operation, "name": name, "type": ptype });
        if let Some(d) = description {
            detail["description"] = d.into();
        }
        Event {
            source: "aws.ssm",
            detail_type: "Parameter Store Change",
            account: self.account_id.clone(),
            region: self.region.clone(),
            resources: vec![self.arn(name)],
            detail,
        }
    }

    /// PutParameter: creates version 1, or (with `overwrite`) the next version. Returns
    /// (version, tier).
    pub async fn put(&self, p: &Put, user_arn: &str) -> Result<(i64, String)> {
        check_name(&p.name)?;
        if let Some(t) = &p.ptype {
            check_type(t)?;
        }
        let tier = match p.tier.as_deref() {
            None | Some("Standard") | Some("Intelligent-Tiering") => "Standard",
            Some("Advanced") => "Advanced",
            Some(t) => return Err(err("ValidationException", format!("Invalid tier {t}"))),
        };
        let limit = if tier == "Advanced" { 8192 } else { 4096 };
        if p.value.chars().count() > limit {
            return Err(err(
                "ValidationException",
                format!("{tier} tier parameters support a maximum parameter value of {limit} characters."),
            ));
        }
        if p.value.is_empty() {
            return Err(err("ValidationException", "1 validation error detected: Value '' at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1"));
        }
        let data_type = p.data_type.clone().unwrap_or_else(|| "text".into());
        if !["text", "aws:ec2:image", "aws:ssm:integration"].contains(&data_type.as_str()) {
            return Err(err(
                "ValidationException",
                format!("The following data type is not supported: {data_type}"),
            ));
        }
        if let Some(pattern) = &p.allowed_pattern {
            let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|_| {
                err(
                    "InvalidAllowedPatternException",
                    format!("The allowed pattern {pattern} is not a valid regular expression."),
                )
            })?;
            if !re.is_match(&p.value) {
                return Err(err(
                    "ParameterPatternMismatchException",
                    format!(
                        "Parameter value, cannot be validated against allowedPattern: {pattern}"
                    ),
                ));
            }
        }
        if p.overwrite && !p.tags.is_empty() {
            return Err(err("ValidationException", "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource."));
        }
        let mut tx = self.store.begin_write().await?;
        let existing =
            sqlx::query("SELECT type, version FROM ssm_parameters WHERE region = $1 AND name = $2")
                .bind(&self.region)
                .bind(&p.name)
                .fetch_optional(&mut *tx)
                .await?;
        let (ptype, version, operation) = match existing {
            Some(row) => {
                if !p.overwrite {
                    return Err(err(
                        "ParameterAlreadyExists",
                        "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.",
                    ));
                }
                let old_type: String = row.get(0);
                let ptype = p.ptype.clone().unwrap_or_else(|| old_type.clone());
                if ptype != old_type {
                    return Err(err(
                        "HierarchyTypeMismatchException",
                        "The parameter type can't be changed. Create a parameter with a new name instead.",
                    ));
                }
                (ptype, row.get::<i64, _>(1) + 1, "Update")
            }
            None => {
                let ptype = p.ptype.clone().ok_or_else(|| {
                    err(
                        "ValidationException",
                        "A parameter type is required when you create a parameter.",
                    )
                })?;
                (ptype, 1, "Create")
            }
        };
        let stored = if ptype == "SecureString" {
            self.key.seal(p.value.as_bytes())
        } else {
            p.value.as_bytes().to_vec()
        };
        let key_id = (ptype == "SecureString")
            .then(|| p.key_id.clone().unwrap_or_else(|| "alias/aws/ssm".into()));
        let ts = now();
        sqlx::query(
            "INSERT INTO ssm_parameters (region, name, type, data_type, version, last_modified, last_modified_user) VALUES ($7, $1, $2, $3, $4, $5, $6)
             ON CONFLICT (region, name) DO UPDATE SET type = excluded.type, data_type = excluded.data_type, version = excluded.version,
             last_modified = excluded.last_modified, last_modified_user = excluded.last_modified_user",
        )
        .bind(&p.name)
        .bind(&ptype)
        .bind(&data_type)
        .bind(version)
        .bind(ts)
        .bind(user_arn)
        .bind(&self.region)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ssm_parameter_versions (region, name, version, type, data_type, value, description, key_id, allowed_pattern, tier, modified, modified_user)
             VALUES ($12, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&p.name)
        .bind(version)
        .bind(&ptype)
        .bind(&data_type)
        .bind(&stored)
        .bind(&p.description)
        .bind(&key_id)
        .bind(&p.allowed_pattern)
        .bind(tier)
        .bind(ts)
        .bind(user_arn)
        .bind(&self.region)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "DELETE FROM ssm_parameter_versions WHERE region = $1 AND name = $2 AND version <= $3",
        )
        .bind(&self.region)
        .bind(&p.name)
        .bind(version - MAX_VERSIONS)
        .execute(&mut *tx)
        .await?;
        slipway_store::tags::put(&mut tx, "parameter", &self.tag_id(&p.name), &p.tags).await?;
        events::append(
            &mut tx,
            &self.event(operation, &p.name, &ptype, p.description.as_deref()),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(parameter = %p.name, region = %self.region, version, "parameter written");
        Ok((version, tier.to_owned()))
    }

    /// GetParameter (with an optional `:version` selector).
    pub async fn get(&self, raw: &str, decrypt: bool) -> Result<Parameter> {
        let (name, version, selector) = split_selector(raw)?;
        check_name(name)
            .map_err(|_| err("ParameterNotFound", format!("Parameter {name} not found.")))?;
        let row = match version {
            None => sqlx::query(
                "SELECT v.type, v.value, v.version, v.modified, v.data_type FROM ssm_parameter_versions v
                 JOIN ssm_parameters p ON p.region = v.region AND p.name = v.name AND p.version = v.version WHERE v.region = $1 AND v.name = $2",
            )
            .bind(&self.region)
            .bind(name)
            .fetch_optional(self.store.pool())
            .await?,
            Some(n) => sqlx::query("SELECT type, value, version, modified, data_type FROM ssm_parameter_versions WHERE region = $3 AND name = $1 AND version = $2")
                .bind(name)
                .bind(n)
                .bind(&self.region)
                .fetch_optional(self.store.pool())
                .await?,
        };
        let Some(row) = row else {
            let exists: Option<i64> = sqlx::query_scalar(
                "SELECT version FROM ssm_parameters WHERE region = $1 AND name = $2",
            )
            .bind(&self.region)
            .bind(name)
            .fetch_optional(self.store.pool())
            .await?;
            return Err(match (exists, version) {
                (Some(_), Some(v)) => err(
                    "ParameterVersionNotFound",
                    format!("Systems Manager could not find version {v} of {name}."),
                ),
                _ => err("ParameterNotFound", format!("Parameter {name} not found.")),
            });
        };
        let ptype: String = row.get(0);
        let stored: Vec<u8> = row.get(1);
        Ok(Parameter {
            name: name.to_owned(),
            value: self.reveal(&ptype, &stored, decrypt)?,
            ptype,
            version: row.get(2),
            selector,
            last_modified: row.get(3),
            arn: self.arn(name),
            data_type: row.get(4),
        })
    }

    /// GetParameters: the found parameters and the names that were not.
    pub async fn get_many(
        &self,
        names: &[String],
        decrypt: bool,
    ) -> Result<(Vec<Parameter>, Vec<String>)> {
        let (mut found, mut missing) = (vec![], vec![]);
        for n in names {
            match self.get(n, decrypt).await {
                Ok(p) => found.push(p),
                Err(Error::Api { .. }) => missing.push(n.clone()),
                Err(e) => return Err(e),
            }
        }
        Ok((found, missing))
    }

    async fn latest_versions(&self) -> Result<Vec<Version>> {
        let rows = sqlx::query(
            "SELECT v.name, v.type, v.key_id, v.modified, v.modified_user, v.description, v.allowed_pattern, v.version, v.tier, v.data_type
             FROM ssm_parameter_versions v JOIN ssm_parameters p ON p.region = v.region AND p.name = v.name AND p.version = v.version
             WHERE v.region = $1 ORDER BY v.name",
        )
        .bind(&self.region)
        .fetch_all(self.store.pool())
        .await?;
        Ok(rows
            .iter()
            .map(|r| self.version_from_row(r, None))
            .collect())
    }

    fn version_from_row(&self, r: &sqlx::sqlite::SqliteRow, value: Option<Value>) -> Version {
        let name: String = r.get("name");
        Version {
            arn: self.arn(&name),
            name,
            ptype: r.get("type"),
            key_id: r.get("key_id"),
            last_modified: r.get("modified"),
            last_modified_user: r.get("modified_user"),
            description: r.get("description"),
            allowed_pattern: r.get("allowed_pattern"),
            version: r.get("version"),
            tier: r.get("tier"),
            data_type: r.get("data_type"),
            value,
        }
    }

    /// GetParametersByPath: parameters under `path` (one level, or all with `recursive`).
    pub async fn by_path(
        &self,
        path: &str,
        recursive: bool,
        filters: &[Filter],
        decrypt: bool,
        max: usize,
        token: Option<&str>,
    ) -> Result<Page<Parameter>> {
        if !path.starts_with('/')
            || (path.len() > 1 && path.ends_with('/') && path.trim_end_matches('/').is_empty())
        {
            return Err(err(
                "ValidationException",
                "The parameter path must begin with a forward slash (/).",
            ));
        }
        let base = path.trim_end_matches('/');
        let under: Vec<Version> = self
            .latest_versions()
            .await?
            .into_iter()
            .filter(|v| {
                let Some(rest) = v.name.strip_prefix(&format!("{base}/")) else {
                    return false;
                };
                recursive || !rest.contains('/')
            })
            .filter(|v| filters.iter().all(|f| matches(f, v)))
            .collect();
        for f in filters {
            check_filter(f, true)?;
        }
        let page = paginate(under, token, max)
            .ok_or_else(|| err("InvalidNextToken", "The specified token isn't valid."))?;
        let mut items = Vec::new();
        for v in page.items {
            items.push(self.get(&v.name, decrypt).await?);
        }
        Ok(Page {
            items,
            next_token: page.next_token,
        })
    }

    /// DescribeParameters: metadata of the latest versions that pass every filter.
    pub async fn describe(
        &self,
        filters: &[Filter],
        max: usize,
        token: Option<&str>,
    ) -> Result<Page<Version>> {
        for f in filters {
            check_filter(f, false)?;
        }
        let all: Vec<Version> = self
            .latest_versions()
            .await?
            .into_iter()
            .filter(|v| filters.iter().all(|f| matches(f, v)))
            .collect();
        paginate(all, token, max)
            .ok_or_else(|| err("InvalidNextToken", "The specified token isn't valid."))
    }

    /// GetParameterHistory: every kept version, oldest first.
    pub async fn history(
        &self,
        name: &str,
        decrypt: bool,
        max: usize,
        token: Option<&str>,
    ) -> Result<Page<Version>> {
        let rows = sqlx::query(
            "SELECT name, type, key_id, modified, modified_user, description, allowed_pattern, version, tier, data_type, value
             FROM ssm_parameter_versions WHERE region = $1 AND name = $2 ORDER BY version",
        )
        .bind(&self.region)
        .bind(name)
        .fetch_all(self.store.pool())
        .await?;
        if rows.is_empty() {
            return Err(err(
                "ParameterNotFound",
                format!("Parameter {name} not found."),
            ));
        }
        let mut all = Vec::new();
        for r in &rows {
            let ptype: String = r.get("type");
            let stored: Vec<u8> = r.get("value");
            let value = self.reveal(&ptype, &stored, decrypt)?;
            all.push(self.version_from_row(r, Some(value)));
        }
        paginate(all, token, max)
            .ok_or_else(|| err("InvalidNextToken", "The specified token isn't valid."))
    }

    /// DeleteParameter; `ParameterNotFound` if there is none.
    pub async fn delete(&self, name: &str) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        let ptype: Option<String> =
            sqlx::query_scalar("SELECT type FROM ssm_parameters WHERE region = $1 AND name = $2")
                .bind(&self.region)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(ptype) = ptype else {
            return Err(err(
                "ParameterNotFound",
                format!("Parameter {name} not found."),
            ));
        };
        sqlx::query("DELETE FROM ssm_parameters WHERE region = $1 AND name = $2")
            .bind(&self.region)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        slipway_store::tags::delete_all(&mut tx, "parameter", &self.tag_id(name)).await?;
        events::append(&mut tx, &self.event("Delete", name, &ptype, None)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// DeleteParameters: (deleted, not found).
    pub async fn delete_many(&self, names: &[String]) -> Result<(Vec<String>, Vec<String>)> {
        let (mut deleted, mut invalid) = (vec![], vec![]);
        for n in names {
            match self.delete(n).await {
                Ok(()) => deleted.push(n.clone()),
                Err(Error::Api { .. }) => invalid.push(n.clone()),
                Err(e) => return Err(e),
            }
        }
        Ok((deleted, invalid))
    }
}

/// Re-wraps the data key of every SecureString version under the primary master key (after a
/// rotation); values are not re-encrypted. Returns how many versions were re-wrapped.
pub async fn rewrap_secrets(store: &Store, key: &MasterKey) -> Result<usize> {
    let mut tx = store.begin_write().await?;
    let rows = sqlx::query(
        "SELECT name, version, value, region FROM ssm_parameter_versions WHERE type = 'SecureString'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for r in &rows {
        let value: Vec<u8> = r.get(2);
        let rewrapped = key
            .rewrap(&value)
            .map_err(|e| Error::Internal(e.to_string()))?;
        sqlx::query(
            "UPDATE ssm_parameter_versions SET value = $1 WHERE name = $2 AND version = $3 AND region = $4",
        )
        .bind(rewrapped)
        .bind(r.get::<String, _>(0))
        .bind(r.get::<i64, _>(1))
        .bind(r.get::<String, _>(3))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(rows.len())
}

const FILTER_KEYS: &[&str] = &["Name", "Type", "KeyId", "Path", "Tier", "DataType"];

fn check_filter(f: &Filter, by_path: bool) -> Result<()> {
    if !FILTER_KEYS.contains(&f.key.as_str()) || (by_path && (f.key == "Name" || f.key == "Path")) {
        return Err(err(
            "InvalidFilterKey",
            format!("The filter key {} is not valid here.", f.key),
        ));
    }
    let options: &[&str] = match f.key.as_str() {
        "Name" => &["Equals", "BeginsWith", "Contains"],
        "Path" => &["Recursive", "OneLevel"],
        _ => &["Equals"],
    };
    match &f.option {
        Some(o) if !options.contains(&o.as_str()) => Err(err(
            "InvalidFilterOption",
            format!("The filter option {o} is not valid for key {}.", f.key),
        )),
        _ if f.values.is_empty() && f.key != "Path" => Err(err(
            "InvalidFilterValue",
            format!("The filter {} needs values.", f.key),
        )),
        _ => Ok(()),
    }
}

fn matches(f: &Filter, v: &Version) -> bool {
    let field = match f.key.as_str() {
        "Name" => v.name.clone(),
        "Type" => v.ptype.clone(),
        "KeyId" => v.key_id.clone().unwrap_or_default(),
        "Tier" => v.tier.clone(),
        "DataType" => v.data_type.clone(),
        "Path" => {
            let recursive = f.option.as_deref() == Some("Recursive");
            return f.values.iter().any(|p| {
                let base = p.trim_end_matches('/');
                v.name
                    .strip_prefix(&format!("{base}/"))
                    .is_some_and(|rest| recursive || !rest.contains('/'))
            });
        }
        _ => return false,
    };
    let option = f.option.as_deref().unwrap_or("Equals");
    f.values.iter().any(|val| match option {
        "BeginsWith" => field.starts_with(val.as_str()),
        "Contains" => field.contains(val.as_str()),
        _ => &field == val,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["db-password", "/app/prod/db.url", "a_b.c-d", "/x"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "aws-thing",
            "/ssm/x",
            "SSMx",
            "a/b",
            "/a//b",
            "/a/b/",
            "sp ace",
            "/a\0b",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let deep = "/a".repeat(16);
        assert!(matches!(
            check_name(&deep),
            Err(Error::Api {
                code: "HierarchyLevelLimitExceededException",
                ..
            })
        ));
    }

    #[test]
    fn selectors() {
        assert_eq!(split_selector("/a/b").unwrap(), ("/a/b", None, None));
        assert_eq!(
            split_selector("/a/b:3").unwrap(),
            ("/a/b", Some(3), Some(":3".into()))
        );
        assert!(split_selector("/a/b:label").is_err());
    }

    #[tokio::test]
    async fn secure_strings_are_sealed_and_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), "us-east-1").await.unwrap();
        let key = MasterKey::load_or_create(dir.path()).unwrap();
        let ps = ParameterStore::new(store, key, "us-east-1".into(), "000000000000".into());
        let put = Put {
            name: "/app/secret".into(),
            value: "hunter2-hunter2".into(),
            ptype: Some("SecureString".into()),
            ..Default::default()
        };
        assert_eq!(ps.put(&put, "me").await.unwrap().0, 1);
        assert!(matches!(
            ps.put(&put, "me").await,
            Err(Error::Api {
                code: "ParameterAlreadyExists",
                ..
            })
        ));
        let again = Put {
            value: "second-secret".into(),
            overwrite: true,
            ..put.clone()
        };
        assert_eq!(ps.put(&again, "me").await.unwrap().0, 2);
        let string = Put {
            ptype: Some("String".into()),
            ..again.clone()
        };
        assert!(matches!(
            ps.put(&string, "me").await,
            Err(Error::Api {
                code: "HierarchyTypeMismatchException",
                ..
            })
        ));
        assert_eq!(
            ps.get("/app/secret", true).await.unwrap().value,
            Value::Plain("second-secret".into())
        );
        assert_eq!(
            ps.get("/app/secret:1", true).await.unwrap().value,
            Value::Plain("hunter2-hunter2".into())
        );
        assert!(matches!(
            ps.get("/app/secret", false).await.unwrap().value,
            Value::Encrypted(_)
        ));
        for file in ["slipway.db", "slipway.db-wal"] {
            let bytes = std::fs::read(dir.path().join(file)).unwrap_or_default();
            assert!(
                !bytes.windows(7).any(|w| w == b"hunter2"),
                "{file} holds the plaintext"
            );
        }
    }
}
