//! Applications, their registered revisions, and the tags of CodeDeploy resources.

use crate::error::{err, ErrorKind, Result};
use crate::CodeDeploy;
use slipway_model::codedeploy::{
    ApplicationInfo, GenericRevisionInfo, RevisionInfo, RevisionLocation, Tag,
};
use slipway_store::deploy as db;
use slipway_store::{now, tags};
use std::collections::BTreeMap;

/// The resource type tags are kept under (the resource id is its ARN).
const TAG_KIND: &str = "codedeploy";

pub(crate) fn app_missing(name: &str) -> crate::error::Error {
    err(
        ErrorKind::ApplicationDoesNotExistException,
        format!("No application found for name: {name}"),
    )
}

/// The sort and filter options of ListApplicationRevisions.
#[derive(Debug, Default)]
pub struct RevisionQuery {
    pub sort_by: Option<String>,
    pub descending: bool,
    pub s3_bucket: Option<String>,
    pub s3_key_prefix: Option<String>,
    /// include | exclude | ignore (the default)
    pub deployed: Option<String>,
}

/// A revision's identity: its location as canonical JSON (an S3 object by its eTag when
/// known — the same bytes whichever version id names them — else by its version; or the
/// content's SHA-256).
pub fn revision_key(r: &RevisionLocation) -> String {
    let mut r = r.clone();
    if let Some(s3) = r.s3_location.as_mut() {
        if let Some(tag) = s3.e_tag.as_mut() {
            *tag = tag.trim_matches('"').to_owned();
            s3.version = None;
        }
    }
    if let Some(raw) = r.string.as_mut() {
        if raw.sha256.is_none() {
            raw.sha256 = raw.content.as_deref().map(sha256_hex);
        }
    }
    if let Some(raw) = r.app_spec_content.as_mut() {
        if raw.sha256.is_none() {
            raw.sha256 = raw.content.as_deref().map(sha256_hex);
        }
    }
    serde_json::to_string(&r).unwrap_or_default()
}

/// The content (and its claimed SHA-256) of an AppSpecContent or String revision.
pub fn raw_content(r: &RevisionLocation) -> Option<(&str, Option<&str>)> {
    match (&r.app_spec_content, &r.string) {
        (Some(c), _) => Some((c.content.as_deref()?, c.sha256.as_deref())),
        (None, Some(c)) => Some((c.content.as_deref()?, c.sha256.as_deref())),
        _ => None,
    }
}

pub(crate) fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Checks a revision location as AWS does for the Server platform.
pub fn check_revision(r: Option<&RevisionLocation>) -> Result<&RevisionLocation> {
    let Some(r) = r else {
        return Err(err(
            ErrorKind::RevisionRequiredException,
            "Revision is required",
        ));
    };
    let invalid = |m: &str| Err(err(ErrorKind::InvalidRevisionException, m.to_owned()));
    match r.revision_type.as_deref() {
        Some("S3") => {
            let Some(s3) = &r.s3_location else {
                return invalid("The S3 location is required for an S3 revision");
            };
            if s3.bucket.as_deref().unwrap_or("").is_empty() {
                return invalid("The S3 bucket is required");
            }
            if s3.key.as_deref().unwrap_or("").is_empty() {
                return invalid("The S3 key is required");
            }
            match s3.bundle_type.as_deref() {
                Some("zip" | "tar" | "tgz") => {}
                None => return invalid("The bundle type is required (zip, tar or tgz)"),
                Some(other) => {
                    return Err(err(
                        ErrorKind::InvalidRevisionException,
                        format!("The bundle type {other} is not valid for the Server compute platform: use zip, tar or tgz"),
                    ))
                }
            }
        }
        Some("AppSpecContent") | Some("String") => {
            let Some((content, sum)) = raw_content(r) else {
                return invalid("The revision content is required");
            };
            if let Some(sum) = sum {
                if sum != sha256_hex(content) {
                    return invalid(
                        "The SHA-256 of the revision content does not match its content",
                    );
                }
            }
        }
        Some("GitHub") => return invalid(
            "GitHub revisions are not supported by Slipway: deploy from S3 or with AppSpecContent",
        ),
        _ => return invalid("The revision type is not valid"),
    }
    Ok(r)
}

impl CodeDeploy {
    pub async fn create_application(
        &self,
        name: &str,
        platform: Option<&str>,
        tag_list: &[Tag],
    ) -> Result<String> {
        let platform = crate::check_platform(platform)?;
        let tags = check_tags(tag_list)?;
        let row = db::AppRow {
            name: name.into(),
            application_id: crate::new_id(),
            compute_platform: platform,
            created: now(),
        };
        let mut tx = self.store().begin_write().await?;
        if !db::insert_app(&mut tx, &self.region, &row).await? {
            return Err(err(
                ErrorKind::ApplicationAlreadyExistsException,
                format!("The application {name} already exists"),
            ));
        }
        tags::put(&mut tx, TAG_KIND, &self.application_arn(name), &tags).await?;
        tx.commit().await?;
        Ok(row.application_id)
    }

    pub(crate) async fn app(&self, name: &str) -> Result<db::AppRow> {
        let mut conn = self.store().pool().acquire().await?;
        db::get_app(&mut conn, &self.region, name)
            .await?
            .ok_or_else(|| app_missing(name))
    }

    pub async fn get_application(&self, name: &str) -> Result<ApplicationInfo> {
        let a = self.app(name).await?;
        Ok(ApplicationInfo {
            application_id: Some(a.application_id),
            application_name: Some(a.name),
            create_time: Some(a.created),
            linked_to_git_hub: Some(false),
            compute_platform: Some(a.compute_platform),
            git_hub_account_name: None,
        })
    }

    pub async fn list_applications(&self) -> Result<Vec<String>> {
        let mut conn = self.store().pool().acquire().await?;
        Ok(db::list_apps(&mut conn, &self.region).await?)
    }

    pub async fn update_application(&self, name: &str, new_name: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        if db::get_app(&mut tx, &self.region, name).await?.is_none() {
            return Err(app_missing(name));
        }
        if name == new_name {
            return Ok(());
        }
        if !db::rename_app(&mut tx, &self.region, name, new_name).await? {
            return Err(err(
                ErrorKind::ApplicationAlreadyExistsException,
                format!("The application {new_name} already exists"),
            ));
        }
        let old_arn = self.application_arn(name);
        let t = tags::get(&mut tx, TAG_KIND, &old_arn).await?;
        tags::delete_all(&mut tx, TAG_KIND, &old_arn).await?;
        tags::put(&mut tx, TAG_KIND, &self.application_arn(new_name), &t).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an application with its groups and revisions (nothing when there is none,
    /// as AWS answers).
    pub async fn delete_application(&self, name: &str) -> Result<()> {
        let mut tx = self.store().begin_write().await?;
        for g in db::list_groups(&mut tx, &self.region, name).await? {
            tags::delete_all(&mut tx, TAG_KIND, &self.group_arn(name, &g.name)).await?;
        }
        tags::delete_all(&mut tx, TAG_KIND, &self.application_arn(name)).await?;
        db::delete_app(&mut tx, &self.region, name).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn register_revision(
        &self,
        app: &str,
        revision: Option<&RevisionLocation>,
        description: Option<&str>,
    ) -> Result<()> {
        let r = check_revision(revision)?;
        let mut tx = self.store().begin_write().await?;
        if db::get_app(&mut tx, &self.region, app).await?.is_none() {
            return Err(app_missing(app));
        }
        db::register_revision(
            &mut tx,
            &self.region,
            app,
            &revision_key(r),
            description,
            now(),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_revision(
        &self,
        app: &str,
        revision: Option<&RevisionLocation>,
    ) -> Result<GenericRevisionInfo> {
        let r = check_revision(revision)?;
        self.app(app).await?;
        let mut conn = self.store().pool().acquire().await?;
        match db::get_revision(&mut conn, &self.region, app, &revision_key(r)).await? {
            Some(row) => Ok(generic_info(&row)),
            None => Err(err(
                ErrorKind::RevisionDoesNotExistException,
                "No application revision found for revision",
            )),
        }
    }

    pub async fn batch_get_revisions(
        &self,
        app: &str,
        revisions: &[RevisionLocation],
    ) -> Result<(Vec<RevisionInfo>, Option<String>)> {
        if revisions.len() > 25 {
            return Err(err(
                ErrorKind::BatchLimitExceededException,
                "The maximum number of revisions that can be returned is 25",
            ));
        }
        self.app(app).await?;
        let mut conn = self.store().pool().acquire().await?;
        let mut out = Vec::new();
        let mut missing = Vec::new();
        for r in revisions {
            let r = check_revision(Some(r))?;
            match db::get_revision(&mut conn, &self.region, app, &revision_key(r)).await? {
                Some(row) => out.push(RevisionInfo {
                    revision_location: Some(r.clone()),
                    generic_revision_info: Some(generic_info(&row)),
                }),
                None => missing.push(describe(r)),
            }
        }
        let message =
            (!missing.is_empty()).then(|| format!("Revisions not found: {}", missing.join(", ")));
        Ok((out, message))
    }

    pub async fn list_revisions(
        &self,
        app: &str,
        q: &RevisionQuery,
    ) -> Result<Vec<RevisionLocation>> {
        if let Some(d) = q.deployed.as_deref() {
            if !matches!(d, "include" | "exclude" | "ignore") {
                return Err(err(
                    ErrorKind::InvalidDeployedStateFilterException,
                    format!("The deployed state filter {d} is not valid"),
                ));
            }
        }
        if q.s3_key_prefix.is_some() && q.s3_bucket.is_none() {
            return Err(err(
                ErrorKind::InvalidBucketNameFilterException,
                "A key prefix filter needs a bucket name filter",
            ));
        }
        self.app(app).await?;
        let mut conn = self.store().pool().acquire().await?;
        let mut rows = db::list_revisions(&mut conn, &self.region, app).await?;
        rows.retain(|row| match q.deployed.as_deref() {
            Some("include") => row.first_used.is_some(),
            Some("exclude") => row.first_used.is_none(),
            _ => true,
        });
        let key_of = |row: &db::RevisionRow| match q.sort_by.as_deref() {
            Some("firstUsedTime") => row.first_used.unwrap_or(0.0),
            Some("lastUsedTime") => row.last_used.unwrap_or(0.0),
            _ => row.registered,
        };
        rows.sort_by(|a, b| key_of(a).total_cmp(&key_of(b)));
        if q.descending {
            rows.reverse();
        }
        let mut out = Vec::new();
        for row in rows {
            let Ok(loc) = serde_json::from_str::<RevisionLocation>(&row.key) else {
                continue;
            };
            if let Some(bucket) = &q.s3_bucket {
                let s3 = loc.s3_location.as_ref();
                if s3.and_then(|s| s.bucket.as_ref()) != Some(bucket) {
                    continue;
                }
                let key = s3.and_then(|s| s.key.as_deref()).unwrap_or("");
                if !key.starts_with(q.s3_key_prefix.as_deref().unwrap_or("")) {
                    continue;
                }
            }
            out.push(loc);
        }
        Ok(out)
    }

    /// The ARN's tags, if it names a CodeDeploy resource of this region that exists.
    pub async fn list_tags(&self, arn: &str) -> Result<Vec<Tag>> {
        self.tagged(arn).await?;
        let mut conn = self.store().pool().acquire().await?;
        Ok(tag_list(tags::get(&mut conn, TAG_KIND, arn).await?))
    }

    pub async fn tag_resource(&self, arn: &str, tag_list: &[Tag]) -> Result<()> {
        let t = check_tags(tag_list)?;
        self.tagged(arn).await?;
        let mut tx = self.store().begin_write().await?;
        tags::put(&mut tx, TAG_KIND, arn, &t).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn untag_resource(&self, arn: &str, keys: &[String]) -> Result<()> {
        self.tagged(arn).await?;
        let mut tx = self.store().begin_write().await?;
        tags::remove(&mut tx, TAG_KIND, arn, keys).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks that `arn` names an application, deployment group or custom config here.
    async fn tagged(&self, arn: &str) -> Result<()> {
        let invalid = || {
            err(
                ErrorKind::InvalidArnException,
                format!("The ARN {arn} is not a valid CodeDeploy resource ARN"),
            )
        };
        let prefix = slipway_regions::arn("codedeploy", &self.region, self.account_id(), "");
        let rest = arn.strip_prefix(&prefix).ok_or_else(invalid)?;
        let mut conn = self.store().pool().acquire().await?;
        let found = if let Some(name) = rest.strip_prefix("application:") {
            db::get_app(&mut conn, &self.region, name).await?.is_some()
        } else if let Some(path) = rest.strip_prefix("deploymentgroup:") {
            let (app, group) = path.split_once('/').ok_or_else(invalid)?;
            db::get_group(&mut conn, &self.region, app, group)
                .await?
                .is_some()
        } else if let Some(name) = rest.strip_prefix("deploymentconfig:") {
            db::get_config(&mut conn, &self.region, name)
                .await?
                .is_some()
        } else {
            return Err(invalid());
        };
        if !found {
            return Err(err(
                ErrorKind::ResourceArnRequiredException,
                format!("The resource {arn} does not exist"),
            ));
        }
        Ok(())
    }

    pub(crate) async fn put_tags(
        &self,
        tx: &mut slipway_store::Tx<'_>,
        arn: &str,
        t: &[Tag],
    ) -> Result<()> {
        let t = check_tags(t)?;
        tags::put(tx, TAG_KIND, arn, &t).await?;
        Ok(())
    }

    pub(crate) async fn drop_tags(&self, tx: &mut slipway_store::Tx<'_>, arn: &str) -> Result<()> {
        tags::delete_all(tx, TAG_KIND, arn).await?;
        Ok(())
    }
}

fn generic_info(row: &db::RevisionRow) -> GenericRevisionInfo {
    let groups: Vec<String> = serde_json::from_str(&row.groups).unwrap_or_default();
    GenericRevisionInfo {
        description: row.description.clone(),
        deployment_groups: (!groups.is_empty()).then_some(groups),
        first_used_time: row.first_used,
        last_used_time: row.last_used,
        register_time: Some(row.registered),
    }
}

fn describe(r: &RevisionLocation) -> String {
    match &r.s3_location {
        Some(s3) => format!(
            "s3://{}/{}",
            s3.bucket.as_deref().unwrap_or(""),
            s3.key.as_deref().unwrap_or("")
        ),
        None => r.revision_type.clone().unwrap_or_default(),
    }
}

/// Tags as a map, checked (a key is required; keys are at most 128 characters, values 256).
pub(crate) fn check_tags(list: &[Tag]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for t in list {
        let key = t.key.clone().unwrap_or_default();
        let value = t.value.clone().unwrap_or_default();
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(err(
                ErrorKind::InvalidTagsToAddException,
                "Tags must have a key of 1 to 128 characters and a value of at most 256",
            ));
        }
        out.insert(key, value);
    }
    Ok(out)
}

pub(crate) fn tag_list(map: BTreeMap<String, String>) -> Vec<Tag> {
    map.into_iter()
        .map(|(k, v)| Tag {
            key: Some(k),
            value: Some(v),
        })
        .collect()
}
