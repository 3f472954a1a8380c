//! CodeBuild's report groups and reports: the groups a buildspec's `reports` section names
//! (created as `PROJECT-NAME` on first use, as CodeBuild does), the reports builds upload
//! through their worker, their test cases and coverage lines, and trends across a group.
//!
//! A report's documents are the API's own shapes (`ReportGroup`, `Report`, `TestCase`,
//! `CodeCoverage`), kept as JSON beside the columns lists are sorted and filtered by.

use crate::service::{
    arn_region, build_doc, holds_lease, internal, invalid, not_found, set, CodeBuild,
};
use serde_json::{json, Value};
use slipway_store::{now, service_err, Conn, ServiceError};
use sqlx::Row;

type Result<T> = std::result::Result<T, ServiceError>;

/// How long reports are kept before they show as expired (AWS: 30 days).
const EXPIRY_SECS: f64 = 30.0 * 24.0 * 3600.0;

const TEST_STATUSES: [&str; 5] = ["SUCCEEDED", "FAILED", "ERROR", "SKIPPED", "UNKNOWN"];

/// `(field of a report's summary, summary member)` per trend field.
fn trend_source(field: &str) -> Option<(&'static str, &'static str)> {
    Some(match field {
        "PASS_RATE" => ("testSummary", "passRate"),
        "DURATION" => ("testSummary", "durationInNanoSeconds"),
        "TOTAL" => ("testSummary", "total"),
        "LINE_COVERAGE" => ("codeCoverageSummary", "lineCoveragePercentage"),
        "LINES_COVERED" => ("codeCoverageSummary", "linesCovered"),
        "LINES_MISSED" => ("codeCoverageSummary", "linesMissed"),
        "BRANCH_COVERAGE" => ("codeCoverageSummary", "branchCoveragePercentage"),
        "BRANCHES_COVERED" => ("codeCoverageSummary", "branchesCovered"),
        "BRANCHES_MISSED" => ("codeCoverageSummary", "branchesMissed"),
        _ => return None,
    })
}

/// A number as the trend API writes it: integers plain, others with two decimals at most.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

fn check_export_config(doc: &Value) -> Result<()> {
    let kind = doc["exportConfig"]["exportConfigType"]
        .as_str()
        .unwrap_or("NO_EXPORT");
    match kind {
        "NO_EXPORT" => Ok(()),
        "S3" => {
            if doc["exportConfig"]["s3Destination"]["bucket"]
                .as_str()
                .unwrap_or_default()
                .is_empty()
            {
                Err(invalid(
                    "Report export config S3 destination bucket cannot be null or empty",
                ))
            } else {
                Ok(())
            }
        }
        other => Err(invalid(format!(
            "Invalid report export config type: {other}"
        ))),
    }
}

/// Adds a report's test or coverage summary to `doc`; its status: FAILED when a test
/// failed or erred or a file could not be read, else SUCCEEDED.
fn summarize(doc: &mut Value, kind: &str, items: &[Value], file_errors: bool) -> &'static str {
    if kind == "TEST" {
        let mut counts = serde_json::Map::new();
        for s in TEST_STATUSES {
            let n = items
                .iter()
                .filter(|c| c["status"].as_str() == Some(s))
                .count();
            counts.insert(s.into(), json!(n));
        }
        let failed = counts["FAILED"].as_u64().unwrap_or(0) + counts["ERROR"].as_u64().unwrap_or(0);
        let duration: i64 = items
            .iter()
            .filter_map(|c| c["durationInNanoSeconds"].as_i64())
            .sum();
        set(
            doc,
            "testSummary",
            json!({"total": items.len(), "statusCounts": counts, "durationInNanoSeconds": duration}),
        );
        if failed > 0 || file_errors {
            "FAILED"
        } else {
            "SUCCEEDED"
        }
    } else {
        let sum = |k: &str| items.iter().filter_map(|c| c[k].as_i64()).sum::<i64>();
        let (lc, lm, bc, bm) = (
            sum("linesCovered"),
            sum("linesMissed"),
            sum("branchesCovered"),
            sum("branchesMissed"),
        );
        set(
            doc,
            "codeCoverageSummary",
            json!({
                "lineCoveragePercentage": crate::reports::percent(lc, lm),
                "linesCovered": lc, "linesMissed": lm,
                "branchCoveragePercentage": crate::reports::percent(bc, bm),
                "branchesCovered": bc, "branchesMissed": bm,
            }),
        );
        if file_errors {
            "FAILED"
        } else {
            "SUCCEEDED"
        }
    }
}

impl CodeBuild {
    pub fn report_group_arn(&self, name: &str) -> String {
        self.arn(&format!("report-group/{name}"))
    }

    fn group_not_found(&self, arn: &str) -> ServiceError {
        not_found(format!("Report group {arn} does not exist"))
    }

    async fn group_doc(&self, conn: &mut Conn, arn: &str) -> Result<Option<Value>> {
        let doc: Option<String> =
            sqlx::query_scalar("SELECT doc FROM cb_report_groups WHERE arn = $1 AND region = $2")
                .bind(arn)
                .bind(self.region())
                .fetch_optional(&mut *conn)
                .await?;
        doc.map(|d| serde_json::from_str(&d).map_err(internal))
            .transpose()
    }

    async fn insert_group(&self, conn: &mut Conn, doc: &Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO cb_report_groups (arn, region, name, doc, created) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(doc["arn"].as_str())
        .bind(self.region())
        .bind(doc["name"].as_str())
        .bind(doc.to_string())
        .bind(doc["created"].as_f64())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn new_group(&self, name: &str, kind: &str, export: Value, tags: Value) -> Value {
        let t = now();
        json!({
            "arn": self.report_group_arn(name),
            "name": name,
            "type": kind,
            "exportConfig": export,
            "created": t,
            "lastModified": t,
            "tags": tags,
            "status": "ACTIVE",
        })
    }

    /// CreateReportGroup (`input` as the API received it).
    pub async fn create_report_group(&self, input: &Value) -> Result<Value> {
        let name = input["name"].as_str().unwrap_or_default();
        let kind = input["type"].as_str().unwrap_or_default();
        if !matches!(kind, "TEST" | "CODE_COVERAGE") {
            return Err(invalid(format!("Invalid report group type: {kind}")));
        }
        let doc = self.new_group(
            name,
            kind,
            input["exportConfig"].clone(),
            input.get("tags").cloned().unwrap_or(json!([])),
        );
        check_export_config(&doc)?;
        let arn = self.report_group_arn(name);
        let mut tx = self.store.begin_write().await?;
        if self.group_doc(&mut tx, &arn).await?.is_some() {
            return Err(service_err(
                "ResourceAlreadyExistsException",
                format!("Report group {arn} already exists"),
            ));
        }
        self.insert_group(&mut tx, &doc).await?;
        tx.commit().await?;
        Ok(doc)
    }

    /// UpdateReportGroup: the export config and tags given replace the old ones.
    pub async fn update_report_group(&self, input: &Value) -> Result<Value> {
        let arn = input["arn"].as_str().unwrap_or_default();
        let mut tx = self.store.begin_write().await?;
        let mut doc = self
            .group_doc(&mut tx, arn)
            .await?
            .ok_or_else(|| self.group_not_found(arn))?;
        for key in ["exportConfig", "tags"] {
            if let Some(v) = input.get(key).filter(|v| !v.is_null()) {
                set(&mut doc, key, v.clone());
            }
        }
        check_export_config(&doc)?;
        set(&mut doc, "lastModified", json!(now()));
        sqlx::query("UPDATE cb_report_groups SET doc = $1 WHERE arn = $2 AND region = $3")
            .bind(doc.to_string())
            .bind(arn)
            .bind(self.region())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(doc)
    }

    /// DeleteReportGroup: refused while it holds reports unless `delete_reports`.
    pub async fn delete_report_group(&self, arn: &str, delete_reports: bool) -> Result<()> {
        let mut tx = self.store.begin_write().await?;
        let reports: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM cb_reports WHERE group_arn = $1 AND region = $2",
        )
        .bind(arn)
        .bind(self.region())
        .fetch_one(&mut *tx)
        .await?;
        if reports > 0 && !delete_reports {
            return Err(invalid(format!(
                "Cannot delete report group {arn}: it has {reports} report(s); set deleteReports to delete them with it"
            )));
        }
        sqlx::query("DELETE FROM cb_reports WHERE group_arn = $1 AND region = $2")
            .bind(arn)
            .bind(self.region())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM cb_report_groups WHERE arn = $1 AND region = $2")
            .bind(arn)
            .bind(self.region())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn batch_get_report_groups(
        &self,
        arns: &[String],
    ) -> Result<(Vec<Value>, Vec<String>)> {
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        let mut conn = self.store.pool().acquire().await?;
        for arn in arns {
            match self.group_doc(&mut conn, arn).await? {
                Some(d) => found.push(d),
                None => missing.push(arn.clone()),
            }
        }
        Ok((found, missing))
    }

    /// Report group ARNs sorted by NAME, CREATED_TIME (default) or LAST_MODIFIED_TIME.
    pub async fn list_report_groups(
        &self,
        sort_by: Option<&str>,
        ascending: bool,
    ) -> Result<Vec<String>> {
        let rows: Vec<String> =
            sqlx::query_scalar("SELECT doc FROM cb_report_groups WHERE region = $1")
                .bind(self.region())
                .fetch_all(self.store.pool())
                .await?;
        let mut docs: Vec<Value> = rows
            .iter()
            .map(|d| serde_json::from_str(d).map_err(internal))
            .collect::<Result<_>>()?;
        let key = match sort_by.unwrap_or("CREATED_TIME") {
            "NAME" => "name",
            "LAST_MODIFIED_TIME" => "lastModified",
            _ => "created",
        };
        docs.sort_by(|a, b| match (a[key].as_f64(), b[key].as_f64()) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a[key].as_str().cmp(&b[key].as_str()),
        });
        if !ascending {
            docs.reverse();
        }
        Ok(docs
            .into_iter()
            .map(|d| d["arn"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    // ----- reports -----

    pub async fn batch_get_reports(&self, arns: &[String]) -> Result<(Vec<Value>, Vec<String>)> {
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for arn in arns {
            let doc: Option<String> =
                sqlx::query_scalar("SELECT doc FROM cb_reports WHERE arn = $1 AND region = $2")
                    .bind(arn)
                    .bind(self.region())
                    .fetch_optional(self.store.pool())
                    .await?;
            match doc {
                Some(d) => found.push(serde_json::from_str(&d).map_err(internal)?),
                None => missing.push(arn.clone()),
            }
        }
        Ok((found, missing))
    }

    /// Report ARNs, newest first unless `ascending`; of one group when given; of one status
    /// when `status` is given.
    pub async fn list_reports(
        &self,
        group: Option<&str>,
        status: Option<&str>,
        ascending: bool,
    ) -> Result<Vec<String>> {
        if let Some(g) = group {
            let mut conn = self.store.pool().acquire().await?;
            if self.group_doc(&mut conn, g).await?.is_none() {
                return Err(self.group_not_found(g));
            }
        }
        let order = if ascending { "ASC" } else { "DESC" };
        let sql = format!(
            "SELECT arn FROM cb_reports WHERE region = $3 AND ($1 IS NULL OR group_arn = $1) AND ($2 IS NULL OR status = $2) ORDER BY seq {order}"
        );
        Ok(sqlx::query_scalar(&sql)
            .bind(group)
            .bind(status)
            .bind(self.region())
            .fetch_all(self.store.pool())
            .await?)
    }

    /// DeleteReport (success whether or not it existed, as AWS answers).
    pub async fn delete_report(&self, arn: &str) -> Result<()> {
        sqlx::query("DELETE FROM cb_reports WHERE arn = $1 AND region = $2")
            .bind(arn)
            .bind(self.region())
            .execute(self.store.pool())
            .await?;
        Ok(())
    }

    /// A report's test cases or coverage lines, and its type.
    async fn report_items(&self, arn: &str) -> Result<(String, Vec<Value>)> {
        let row = sqlx::query("SELECT doc, items FROM cb_reports WHERE arn = $1 AND region = $2")
            .bind(arn)
            .bind(self.region())
            .fetch_optional(self.store.pool())
            .await?
            .ok_or_else(|| not_found(format!("Report {arn} does not exist")))?;
        let doc: Value = serde_json::from_str(&row.get::<String, _>(0)).map_err(internal)?;
        let items: Vec<Value> = serde_json::from_str(&row.get::<String, _>(1)).map_err(internal)?;
        Ok((doc["type"].as_str().unwrap_or("TEST").to_owned(), items))
    }

    /// DescribeTestCases: a report's test cases, of one status and/or containing a keyword
    /// in their name or prefix when asked.
    pub async fn test_cases(
        &self,
        arn: &str,
        status: Option<&str>,
        keyword: Option<&str>,
    ) -> Result<Vec<Value>> {
        let (kind, items) = self.report_items(arn).await?;
        if kind != "TEST" {
            return Err(invalid(format!("Report {arn} is not a test report")));
        }
        if let Some(s) = status {
            if !TEST_STATUSES.contains(&s) {
                return Err(invalid(format!("Invalid test case status filter: {s}")));
            }
        }
        Ok(items
            .into_iter()
            .filter(|c| status.is_none_or(|s| c["status"].as_str() == Some(s)))
            .filter(|c| {
                keyword.is_none_or(|k| {
                    ["name", "prefix"]
                        .iter()
                        .any(|f| c[f].as_str().is_some_and(|v| v.contains(k)))
                })
            })
            .collect())
    }

    /// DescribeCodeCoverages: a report's files, sorted by FILE_PATH (default) or
    /// LINE_COVERAGE_PERCENTAGE, within the line-coverage bounds given.
    pub async fn code_coverages(
        &self,
        arn: &str,
        sort_by: Option<&str>,
        ascending: bool,
        min: Option<f64>,
        max: Option<f64>,
    ) -> Result<Vec<Value>> {
        let (kind, items) = self.report_items(arn).await?;
        if kind != "CODE_COVERAGE" {
            return Err(invalid(format!(
                "Report {arn} is not a code coverage report"
            )));
        }
        let pct = |c: &Value| c["lineCoveragePercentage"].as_f64().unwrap_or(0.0);
        let mut items: Vec<Value> = items
            .into_iter()
            .filter(|c| min.is_none_or(|m| pct(c) >= m) && max.is_none_or(|m| pct(c) <= m))
            .collect();
        match sort_by.unwrap_or("FILE_PATH") {
            "LINE_COVERAGE_PERCENTAGE" => items.sort_by(|a, b| pct(a).total_cmp(&pct(b))),
            "FILE_PATH" => {
                items.sort_by(|a, b| a["filePath"].as_str().cmp(&b["filePath"].as_str()))
            }
            other => return Err(invalid(format!("Invalid sortBy: {other}"))),
        }
        if !ascending {
            items.reverse();
        }
        Ok(items)
    }

    /// GetReportGroupTrend over the group's newest `count` reports: (average, max, min) and
    /// each report's value.
    pub async fn report_group_trend(
        &self,
        group: &str,
        count: usize,
        field: &str,
    ) -> Result<(Option<(String, String, String)>, Vec<(String, String)>)> {
        let (summary, member) =
            trend_source(field).ok_or_else(|| invalid(format!("Invalid trend field: {field}")))?;
        let mut conn = self.store.pool().acquire().await?;
        if self.group_doc(&mut conn, group).await?.is_none() {
            return Err(self.group_not_found(group));
        }
        let docs: Vec<String> = sqlx::query_scalar(
            "SELECT doc FROM cb_reports WHERE group_arn = $1 ORDER BY seq DESC LIMIT $2",
        )
        .bind(group)
        .bind(count as i64)
        .fetch_all(&mut *conn)
        .await?;
        let mut raw = Vec::new();
        for d in docs {
            let doc: Value = serde_json::from_str(&d).map_err(internal)?;
            let s = &doc[summary];
            let value = if member == "passRate" {
                let total = s["total"].as_f64().unwrap_or(0.0);
                let passed = s["statusCounts"]["SUCCEEDED"].as_f64().unwrap_or(0.0);
                (total > 0.0).then(|| passed * 100.0 / total)
            } else {
                s[member].as_f64()
            };
            if let Some(v) = value {
                raw.push((doc["arn"].as_str().unwrap_or_default().to_owned(), v));
            }
        }
        let stats = (!raw.is_empty()).then(|| {
            let values = raw.iter().map(|(_, v)| *v);
            let sum: f64 = values.clone().sum();
            let max = values.clone().fold(f64::MIN, f64::max);
            let min = values.fold(f64::MAX, f64::min);
            (number(sum / raw.len() as f64), number(max), number(min))
        });
        Ok((
            stats,
            raw.into_iter().map(|(a, v)| (a, number(v))).collect(),
        ))
    }

    /// The group a buildspec's report name means: an existing group's ARN, or `PROJECT-NAME`
    /// (created on first use). None, logged, when there can be no such group.
    async fn report_group_for(
        &self,
        tx: &mut Conn,
        build: &str,
        project: &str,
        name: &str,
        kind: &str,
    ) -> Result<Option<Value>> {
        if name.starts_with("arn:") {
            let group = self.group_doc(tx, name).await?;
            if group.is_none() {
                tracing::warn!(
                    build,
                    group = name,
                    "a buildspec names a report group that does not exist"
                );
            }
            return Ok(group);
        }
        let group_name = format!("{project}-{name}");
        let valid = (2..=128).contains(&group_name.len())
            && group_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            tracing::warn!(build, group = %group_name, "a buildspec names a report group that cannot exist (2-128 letters, digits, - and _)");
            return Ok(None);
        }
        if let Some(group) = self
            .group_doc(tx, &self.report_group_arn(&group_name))
            .await?
        {
            return Ok(Some(group));
        }
        let group = self.new_group(
            &group_name,
            kind,
            json!({"exportConfigType": "NO_EXPORT"}),
            json!([]),
        );
        self.insert_group(tx, &group).await?;
        Ok(Some(group))
    }

    /// Stores the reports a build's worker uploaded (see `reports::Collected::to_json`):
    /// report groups named by the buildspec are created as `PROJECT-NAME` on first use;
    /// returns the new reports' ARNs, which are added to the build's `reportArns`.
    pub async fn add_reports(
        &self,
        id: &str,
        token: &str,
        reports: &[Value],
    ) -> Result<Vec<String>> {
        let mut tx = self.store.begin_write().await?;
        holds_lease(&mut tx, id, token).await?;
        let mut build = build_doc(&mut tx, id).await?;
        // A worker's upload is about a build of any region: act in the build's.
        let this = self.in_region(arn_region(&build).unwrap_or(self.region()));
        let project = build["projectName"].as_str().unwrap_or_default().to_owned();
        let uuid = crate::execute::build_uuid(id).to_owned();
        let t = now();
        let mut arns = Vec::new();
        for r in reports {
            let name = r["name"].as_str().unwrap_or_default();
            let kind = r["type"].as_str().unwrap_or("TEST");
            let Some(group) = this
                .report_group_for(&mut tx, id, &project, name, kind)
                .await?
            else {
                continue;
            };
            let group_arn = group["arn"].as_str().unwrap_or_default().to_owned();
            let group_name = group["name"].as_str().unwrap_or_default().to_owned();
            let arn = this.arn(&format!("report/{group_name}:{uuid}"));
            let mut items: Vec<Value> = if kind == "TEST" {
                r["testCases"].as_array().cloned().unwrap_or_default()
            } else {
                r["codeCoverages"].as_array().cloned().unwrap_or_default()
            };
            for (i, item) in items.iter_mut().enumerate() {
                set(item, "reportArn", json!(arn));
                set(item, "expired", json!(t + EXPIRY_SECS));
                if kind != "TEST" {
                    set(item, "id", json!(format!("{uuid}-{i}")));
                }
            }
            let mut doc = json!({
                "arn": arn,
                "type": kind,
                "name": group_name,
                "reportGroupArn": group_arn,
                "executionId": build["arn"],
                "created": t,
                "expired": t + EXPIRY_SECS,
                "exportConfig": group["exportConfig"],
                "truncated": r["truncated"].as_bool().unwrap_or(false),
            });
            let status = if r["files"].as_array().is_none_or(Vec::is_empty)
                || group["type"].as_str() != Some(kind)
            {
                "INCOMPLETE"
            } else {
                let errors = !r["errors"].as_array().is_none_or(Vec::is_empty);
                summarize(&mut doc, kind, &items, errors)
            };
            set(&mut doc, "status", json!(status));
            sqlx::query("INSERT INTO cb_reports (arn, region, group_arn, build_id, status, created, doc, items) VALUES ($1, $8, $2, $3, $4, $5, $6, $7) ON CONFLICT (arn) DO UPDATE SET status = excluded.status, doc = excluded.doc, items = excluded.items")
                .bind(&arn)
                .bind(&group_arn)
                .bind(id)
                .bind(status)
                .bind(t)
                .bind(doc.to_string())
                .bind(Value::Array(items).to_string())
                .bind(this.region())
                .execute(&mut *tx)
                .await?;
            arns.push(arn);
        }
        let mut all: Vec<Value> = build["reportArns"].as_array().cloned().unwrap_or_default();
        for a in &arns {
            if !all.iter().any(|x| x.as_str() == Some(a)) {
                all.push(json!(a));
            }
        }
        set(&mut build, "reportArns", json!(all));
        sqlx::query("UPDATE cb_builds SET doc = $1 WHERE id = $2")
            .bind(build.to_string())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(arns)
    }
}
