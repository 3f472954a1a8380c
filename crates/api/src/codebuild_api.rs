//! CodeBuild's JSON API: maps the generated shapes onto `slipway-codebuild`. Projects and
//! builds are documents in the API's own shape, so most mapping is serde both ways.

use crate::domain_error as api_error;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use slipway_codebuild::service::{CodeBuild, Initiator};
use slipway_model::codebuild::*;
use slipway_model::{ApiError, Context};
use slipway_ssm::{ParameterStore, Value as ParamValue};
use slipway_store::paging::paginate;

/// The CodeBuild API over the build service (and Parameter Store, which StartBuild reads
/// PARAMETER_STORE variables from).
pub struct CodeBuildService {
    pub cb: CodeBuild,
    pub ssm: ParameterStore,
    /// How to sign the builds' log page links for this caller (none: links unsigned).
    pub links: Option<DeepLinks>,
}

/// The caller's key and the host it called, to presign build log page links with.
pub struct DeepLinks {
    pub scheme: &'static str,
    pub host: String,
    pub access_key_id: String,
    pub secret: String,
}

fn to_json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn from_json<T: DeserializeOwned>(v: Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| {
        tracing::error!(error = %e, "a stored CodeBuild document does not fit its shape");
        ApiError::internal()
    })
}

fn page(ids: Vec<String>, token: Option<&str>) -> Result<(Vec<String>, Option<String>), ApiError> {
    page_of(ids, token, None, 100)
}

/// One page of `items`: `max` per page when given, else `default`.
fn page_of<T>(
    items: Vec<T>,
    token: Option<&str>,
    max: Option<i32>,
    default: usize,
) -> Result<(Vec<T>, Option<String>), ApiError> {
    let per_page = max.map_or(default, |m| m.max(1) as usize);
    let p = paginate(items, token, per_page)
        .ok_or_else(|| ApiError::new("InvalidInputException", 400, "Invalid next token"))?;
    Ok((p.items, p.next_token))
}

fn docs<T: DeserializeOwned>(items: Vec<Value>) -> Result<Vec<T>, ApiError> {
    items.into_iter().map(from_json).collect()
}

fn ascending(order: Option<&str>) -> bool {
    order == Some("ASCENDING")
}

/// Who is starting a build: the caller's user name ("root" for the account) and ARN.
fn initiator(ctx: &Context) -> Initiator<'_> {
    Initiator {
        name: ctx.principal.user_name.as_deref().unwrap_or("root"),
        arn: &ctx.principal.arn,
    }
}

impl CodeBuildService {
    /// A build as the API returns it, its `logs.deepLink` a presigned link to its log page.
    fn build(&self, mut doc: Value) -> Result<Build, ApiError> {
        if let (Some(l), Some(id)) = (&self.links, doc["id"].as_str()) {
            let path = crate::console::page_path(id);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let query = crate::sigv4::presign_query(
                &l.host,
                &path,
                (&l.access_key_id, &l.secret),
                self.cb.region(),
                "logs",
                now,
                crate::console::LINK_SECS,
            );
            doc["logs"]["deepLink"] =
                Value::String(format!("{}://{}{path}?{query}", l.scheme, l.host));
        }
        from_json(doc)
    }

    /// The project's and the overrides' environment variables, PARAMETER_STORE ones
    /// resolved to their (decrypted) values; those values are the secrets to mask.
    async fn variables(
        &self,
        input: &StartBuildInput,
    ) -> Result<(Vec<(String, String, String)>, Vec<String>), ApiError> {
        let (projects, _) = self
            .cb
            .batch_get_projects(&[input.project_name.clone().unwrap_or_default()])
            .await
            .map_err(api_error)?;
        let mut vars: Vec<EnvironmentVariable> = projects
            .first()
            .and_then(|p| p["environment"]["environmentVariables"].as_array().cloned())
            .map(|a| {
                a.into_iter()
                    .filter_map(|v| serde_json::from_value(v).ok())
                    .collect()
            })
            .unwrap_or_default();
        for o in input
            .environment_variables_override
            .clone()
            .unwrap_or_default()
        {
            vars.retain(|v| v.name != o.name);
            vars.push(o);
        }
        let (mut out, mut secrets) = (Vec::new(), Vec::new());
        for v in vars {
            let name = v.name.unwrap_or_default();
            let value = v.value.unwrap_or_default();
            let kind = v.r#type.unwrap_or_else(|| "PLAINTEXT".into());
            match kind.as_str() {
                "PARAMETER_STORE" => {
                    let p = self.ssm.get(&value, true).await.map_err(|_| {
                        ApiError::new(
                            "InvalidInputException",
                            400,
                            format!("Parameter Store parameter {value} for environment variable {name} cannot be found or read"),
                        )
                    })?;
                    let plain = match p.value {
                        ParamValue::Plain(s) => s,
                        ParamValue::Encrypted(_) => return Err(ApiError::internal()),
                    };
                    secrets.push(plain.clone());
                    out.push((name, plain, kind));
                }
                "SECRETS_MANAGER" => {
                    return Err(ApiError::new(
                        "InvalidInputException",
                        400,
                        format!("Environment variable {name}: SECRETS_MANAGER variables need Secrets Manager, which Slipway does not have yet"),
                    ))
                }
                _ => out.push((name, value, kind)),
            }
        }
        Ok((out, secrets))
    }
}

impl CodeBuildService {
    /// Starts a build, its initiator shown as `name` and acting as `arn`.
    pub async fn start_as(
        &self,
        input: StartBuildInput,
        name: &str,
        arn: &str,
    ) -> Result<Build, ApiError> {
        let (variables, secrets) = self.variables(&input).await?;
        let doc = self
            .cb
            .start_build(
                &to_json(&input),
                &Initiator { name, arn },
                variables,
                secrets,
            )
            .await
            .map_err(api_error)?;
        self.build(doc)
    }

    /// The build `id`, if it exists.
    pub async fn get_build(&self, id: &str) -> Result<Option<Build>, ApiError> {
        let (builds, _) = self
            .cb
            .batch_get_builds(&[id.to_owned()])
            .await
            .map_err(api_error)?;
        builds.into_iter().next().map(|b| self.build(b)).transpose()
    }
}

impl CodeBuildApi for CodeBuildService {
    async fn create_project(
        &self,
        _ctx: &Context,
        input: CreateProjectInput,
    ) -> Result<CreateProjectOutput, ApiError> {
        let doc = self
            .cb
            .create_project(to_json(&input))
            .await
            .map_err(api_error)?;
        Ok(CreateProjectOutput {
            project: Some(from_json(doc)?),
        })
    }

    async fn update_project(
        &self,
        _ctx: &Context,
        input: UpdateProjectInput,
    ) -> Result<UpdateProjectOutput, ApiError> {
        let doc = self
            .cb
            .update_project(to_json(&input))
            .await
            .map_err(api_error)?;
        Ok(UpdateProjectOutput {
            project: Some(from_json(doc)?),
        })
    }

    async fn delete_project(
        &self,
        _ctx: &Context,
        input: DeleteProjectInput,
    ) -> Result<DeleteProjectOutput, ApiError> {
        self.cb
            .delete_project(&input.name.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(DeleteProjectOutput {})
    }

    async fn batch_get_projects(
        &self,
        _ctx: &Context,
        input: BatchGetProjectsInput,
    ) -> Result<BatchGetProjectsOutput, ApiError> {
        let (found, missing) = self
            .cb
            .batch_get_projects(&input.names.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(BatchGetProjectsOutput {
            projects: Some(found.into_iter().map(from_json).collect::<Result<_, _>>()?),
            projects_not_found: Some(missing),
        })
    }

    async fn list_projects(
        &self,
        _ctx: &Context,
        input: ListProjectsInput,
    ) -> Result<ListProjectsOutput, ApiError> {
        let names = self
            .cb
            .list_projects(
                input.sort_by.as_deref(),
                ascending(input.sort_order.as_deref()),
            )
            .await
            .map_err(api_error)?;
        let (projects, next_token) = page(names, input.next_token.as_deref())?;
        Ok(ListProjectsOutput {
            next_token,
            projects: Some(projects),
        })
    }

    async fn start_build(
        &self,
        ctx: &Context,
        input: StartBuildInput,
    ) -> Result<StartBuildOutput, ApiError> {
        let i = initiator(ctx);
        Ok(StartBuildOutput {
            build: Some(self.start_as(input, i.name, i.arn).await?),
        })
    }

    async fn stop_build(
        &self,
        _ctx: &Context,
        input: StopBuildInput,
    ) -> Result<StopBuildOutput, ApiError> {
        let doc = self
            .cb
            .stop_build(&input.id.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(StopBuildOutput {
            build: Some(self.build(doc)?),
        })
    }

    async fn retry_build(
        &self,
        ctx: &Context,
        input: RetryBuildInput,
    ) -> Result<RetryBuildOutput, ApiError> {
        let Some(id) = input.id else {
            return Err(ApiError::new(
                "InvalidInputException",
                400,
                "A build id is required",
            ));
        };
        let doc = self
            .cb
            .retry_build(&id, &initiator(ctx))
            .await
            .map_err(api_error)?;
        Ok(RetryBuildOutput {
            build: Some(self.build(doc)?),
        })
    }

    async fn batch_get_builds(
        &self,
        _ctx: &Context,
        input: BatchGetBuildsInput,
    ) -> Result<BatchGetBuildsOutput, ApiError> {
        let (found, missing) = self
            .cb
            .batch_get_builds(&input.ids.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(BatchGetBuildsOutput {
            builds: Some(
                found
                    .into_iter()
                    .map(|d| self.build(d))
                    .collect::<Result<_, _>>()?,
            ),
            builds_not_found: Some(missing),
        })
    }

    async fn batch_delete_builds(
        &self,
        _ctx: &Context,
        input: BatchDeleteBuildsInput,
    ) -> Result<BatchDeleteBuildsOutput, ApiError> {
        let (deleted, refused) = self
            .cb
            .batch_delete_builds(&input.ids.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(BatchDeleteBuildsOutput {
            builds_deleted: Some(deleted),
            builds_not_deleted: Some(
                refused
                    .into_iter()
                    .map(|(id, code, _)| BuildNotDeleted {
                        id: Some(id),
                        status_code: Some(code),
                    })
                    .collect(),
            ),
        })
    }

    async fn list_builds(
        &self,
        _ctx: &Context,
        input: ListBuildsInput,
    ) -> Result<ListBuildsOutput, ApiError> {
        let ids = self
            .cb
            .list_builds(None, ascending(input.sort_order.as_deref()))
            .await
            .map_err(api_error)?;
        let (ids, next_token) = page(ids, input.next_token.as_deref())?;
        Ok(ListBuildsOutput {
            ids: Some(ids),
            next_token,
        })
    }

    async fn list_builds_for_project(
        &self,
        _ctx: &Context,
        input: ListBuildsForProjectInput,
    ) -> Result<ListBuildsForProjectOutput, ApiError> {
        let ids = self
            .cb
            .list_builds(
                Some(&input.project_name.unwrap_or_default()),
                ascending(input.sort_order.as_deref()),
            )
            .await
            .map_err(api_error)?;
        let (ids, next_token) = page(ids, input.next_token.as_deref())?;
        Ok(ListBuildsForProjectOutput {
            ids: Some(ids),
            next_token,
        })
    }

    async fn list_curated_environment_images(
        &self,
        _ctx: &Context,
        _input: ListCuratedEnvironmentImagesInput,
    ) -> Result<ListCuratedEnvironmentImagesOutput, ApiError> {
        // AWS's curated image names; on Slipway each runs on the host's root filesystem
        // unless an image of that name was imported.
        let image = |name: &str, description: &str| EnvironmentImage {
            name: Some(name.into()),
            description: Some(description.into()),
            versions: Some(vec![format!("{name}:latest")]),
        };
        let language = |lang: &str| EnvironmentLanguage {
            language: Some(lang.into()),
            images: Some(vec![
                image(
                    "aws/codebuild/standard:7.0",
                    "Ubuntu 22.04 (Slipway: the host image)",
                ),
                image(
                    "aws/codebuild/standard:6.0",
                    "Ubuntu 22.04 (Slipway: the host image)",
                ),
                image(
                    "aws/codebuild/amazonlinux-x86_64-standard:5.0",
                    "Amazon Linux 2023 (Slipway: the host image)",
                ),
            ]),
        };
        Ok(ListCuratedEnvironmentImagesOutput {
            platforms: Some(vec![EnvironmentPlatform {
                platform: Some("UBUNTU".into()),
                languages: Some(
                    ["BASE", "PYTHON", "NODE_JS", "JAVA", "GOLANG", "DOCKER"]
                        .into_iter()
                        .map(language)
                        .collect(),
                ),
            }]),
        })
    }

    async fn invalidate_project_cache(
        &self,
        _ctx: &Context,
        input: InvalidateProjectCacheInput,
    ) -> Result<InvalidateProjectCacheOutput, ApiError> {
        self.cb
            .invalidate_cache(&input.project_name.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(InvalidateProjectCacheOutput {})
    }

    async fn create_report_group(
        &self,
        _ctx: &Context,
        input: CreateReportGroupInput,
    ) -> Result<CreateReportGroupOutput, ApiError> {
        let doc = self
            .cb
            .create_report_group(&to_json(&input))
            .await
            .map_err(api_error)?;
        Ok(CreateReportGroupOutput {
            report_group: Some(from_json(doc)?),
        })
    }

    async fn update_report_group(
        &self,
        _ctx: &Context,
        input: UpdateReportGroupInput,
    ) -> Result<UpdateReportGroupOutput, ApiError> {
        let doc = self
            .cb
            .update_report_group(&to_json(&input))
            .await
            .map_err(api_error)?;
        Ok(UpdateReportGroupOutput {
            report_group: Some(from_json(doc)?),
        })
    }

    async fn delete_report_group(
        &self,
        _ctx: &Context,
        input: DeleteReportGroupInput,
    ) -> Result<DeleteReportGroupOutput, ApiError> {
        self.cb
            .delete_report_group(
                &input.arn.unwrap_or_default(),
                input.delete_reports.unwrap_or(false),
            )
            .await
            .map_err(api_error)?;
        Ok(DeleteReportGroupOutput {})
    }

    async fn batch_get_report_groups(
        &self,
        _ctx: &Context,
        input: BatchGetReportGroupsInput,
    ) -> Result<BatchGetReportGroupsOutput, ApiError> {
        let (found, missing) = self
            .cb
            .batch_get_report_groups(&input.report_group_arns.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(BatchGetReportGroupsOutput {
            report_groups: Some(docs(found)?),
            report_groups_not_found: Some(missing),
        })
    }

    async fn list_report_groups(
        &self,
        _ctx: &Context,
        input: ListReportGroupsInput,
    ) -> Result<ListReportGroupsOutput, ApiError> {
        let arns = self
            .cb
            .list_report_groups(
                input.sort_by.as_deref(),
                ascending(input.sort_order.as_deref()),
            )
            .await
            .map_err(api_error)?;
        let (arns, next_token) =
            page_of(arns, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListReportGroupsOutput {
            next_token,
            report_groups: Some(arns),
        })
    }

    async fn batch_get_reports(
        &self,
        _ctx: &Context,
        input: BatchGetReportsInput,
    ) -> Result<BatchGetReportsOutput, ApiError> {
        let (found, missing) = self
            .cb
            .batch_get_reports(&input.report_arns.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(BatchGetReportsOutput {
            reports: Some(docs(found)?),
            reports_not_found: Some(missing),
        })
    }

    async fn list_reports(
        &self,
        _ctx: &Context,
        input: ListReportsInput,
    ) -> Result<ListReportsOutput, ApiError> {
        let arns = self
            .cb
            .list_reports(
                None,
                input.filter.as_ref().and_then(|f| f.status.as_deref()),
                ascending(input.sort_order.as_deref()),
            )
            .await
            .map_err(api_error)?;
        let (arns, next_token) =
            page_of(arns, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListReportsOutput {
            next_token,
            reports: Some(arns),
        })
    }

    async fn list_reports_for_report_group(
        &self,
        _ctx: &Context,
        input: ListReportsForReportGroupInput,
    ) -> Result<ListReportsForReportGroupOutput, ApiError> {
        let arns = self
            .cb
            .list_reports(
                Some(input.report_group_arn.as_deref().unwrap_or_default()),
                input.filter.as_ref().and_then(|f| f.status.as_deref()),
                ascending(input.sort_order.as_deref()),
            )
            .await
            .map_err(api_error)?;
        let (arns, next_token) =
            page_of(arns, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(ListReportsForReportGroupOutput {
            next_token,
            reports: Some(arns),
        })
    }

    async fn delete_report(
        &self,
        _ctx: &Context,
        input: DeleteReportInput,
    ) -> Result<DeleteReportOutput, ApiError> {
        self.cb
            .delete_report(&input.arn.unwrap_or_default())
            .await
            .map_err(api_error)?;
        Ok(DeleteReportOutput {})
    }

    async fn describe_test_cases(
        &self,
        _ctx: &Context,
        input: DescribeTestCasesInput,
    ) -> Result<DescribeTestCasesOutput, ApiError> {
        let filter = input.filter.unwrap_or_default();
        let cases = self
            .cb
            .test_cases(
                &input.report_arn.unwrap_or_default(),
                filter.status.as_deref(),
                filter.keyword.as_deref(),
            )
            .await
            .map_err(api_error)?;
        let (cases, next_token) =
            page_of(cases, input.next_token.as_deref(), input.max_results, 50)?;
        Ok(DescribeTestCasesOutput {
            next_token,
            test_cases: Some(docs(cases)?),
        })
    }

    async fn describe_code_coverages(
        &self,
        _ctx: &Context,
        input: DescribeCodeCoveragesInput,
    ) -> Result<DescribeCodeCoveragesOutput, ApiError> {
        let items = self
            .cb
            .code_coverages(
                &input.report_arn.unwrap_or_default(),
                input.sort_by.as_deref(),
                input.sort_order.as_deref() != Some("DESCENDING"),
                input.min_line_coverage_percentage,
                input.max_line_coverage_percentage,
            )
            .await
            .map_err(api_error)?;
        let (items, next_token) =
            page_of(items, input.next_token.as_deref(), input.max_results, 100)?;
        Ok(DescribeCodeCoveragesOutput {
            next_token,
            code_coverages: Some(docs(items)?),
        })
    }

    async fn get_report_group_trend(
        &self,
        _ctx: &Context,
        input: GetReportGroupTrendInput,
    ) -> Result<GetReportGroupTrendOutput, ApiError> {
        let (stats, raw) = self
            .cb
            .report_group_trend(
                &input.report_group_arn.unwrap_or_default(),
                input
                    .num_of_reports
                    .map_or(100, |n| n.clamp(1, 100) as usize),
                &input.trend_field.unwrap_or_default(),
            )
            .await
            .map_err(api_error)?;
        Ok(GetReportGroupTrendOutput {
            stats: Some(stats.map_or_else(
                ReportGroupTrendStats::default,
                |(average, max, min)| ReportGroupTrendStats {
                    average: Some(average),
                    max: Some(max),
                    min: Some(min),
                },
            )),
            raw_data: Some(
                raw.into_iter()
                    .map(|(arn, data)| ReportWithRawData {
                        report_arn: Some(arn),
                        data: Some(data),
                    })
                    .collect(),
            ),
        })
    }
}
