//! Parameter Store's JSON API (AmazonSSM): maps the generated shapes onto `slipway-ssm`.

use slipway_model::runtime::base64_encode;
use slipway_model::ssm::*;
use slipway_model::{ApiError, Context};
use slipway_ssm::{self as domain, Filter, ParameterStore, Put, Value};

/// The SSM API over a [`ParameterStore`].
pub struct SsmService {
    pub ps: ParameterStore,
}

use crate::domain_error as api_error;

/// A member the generated validation has already proven present.
fn req<T: Default>(v: Option<T>) -> T {
    v.unwrap_or_default()
}

fn value(v: Value) -> String {
    match v {
        Value::Plain(s) => s,
        Value::Encrypted(bytes) => base64_encode(&bytes),
    }
}

fn parameter(p: domain::Parameter) -> Parameter {
    Parameter {
        name: Some(p.name),
        r#type: Some(p.ptype),
        value: Some(value(p.value)),
        version: Some(p.version),
        selector: p.selector,
        source_result: None,
        last_modified_date: Some(p.last_modified),
        arn: Some(p.arn),
        data_type: Some(p.data_type),
    }
}

fn filters(list: Option<Vec<ParameterStringFilter>>) -> Vec<Filter> {
    list.unwrap_or_default()
        .into_iter()
        .map(|f| Filter {
            key: req(f.key),
            option: f.option,
            values: f.values.unwrap_or_default(),
        })
        .collect()
}

impl SSMApi for SsmService {
    async fn put_parameter(
        &self,
        ctx: &Context,
        input: PutParameterRequest,
    ) -> Result<PutParameterResult, ApiError> {
        if input
            .policies
            .as_deref()
            .is_some_and(|p| !p.trim().is_empty() && p.trim() != "[]")
        {
            return Err(ApiError::new(
                "InvalidPolicyTypeException",
                400,
                "Parameter policies are not supported by Slipway yet.",
            ));
        }
        let put = Put {
            name: req(input.name),
            value: req(input.value),
            ptype: input.r#type,
            description: input.description,
            key_id: input.key_id,
            overwrite: input.overwrite.unwrap_or(false),
            allowed_pattern: input.allowed_pattern,
            tier: input.tier,
            data_type: input.data_type,
            tags: input
                .tags
                .unwrap_or_default()
                .into_iter()
                .map(|t| (req(t.key), req(t.value)))
                .collect(),
        };
        let (version, tier) = self
            .ps
            .put(&put, &ctx.principal.arn)
            .await
            .map_err(api_error)?;
        Ok(PutParameterResult {
            version: Some(version),
            tier: Some(tier),
        })
    }

    async fn get_parameter(
        &self,
        _ctx: &Context,
        input: GetParameterRequest,
    ) -> Result<GetParameterResult, ApiError> {
        let p = self
            .ps
            .get(&req(input.name), input.with_decryption.unwrap_or(false))
            .await
            .map_err(api_error)?;
        Ok(GetParameterResult {
            parameter: Some(parameter(p)),
        })
    }

    async fn get_parameters(
        &self,
        _ctx: &Context,
        input: GetParametersRequest,
    ) -> Result<GetParametersResult, ApiError> {
        let (found, missing) = self
            .ps
            .get_many(&req(input.names), input.with_decryption.unwrap_or(false))
            .await
            .map_err(api_error)?;
        Ok(GetParametersResult {
            parameters: Some(found.into_iter().map(parameter).collect()),
            invalid_parameters: Some(missing),
        })
    }

    async fn get_parameters_by_path(
        &self,
        _ctx: &Context,
        input: GetParametersByPathRequest,
    ) -> Result<GetParametersByPathResult, ApiError> {
        let page = self
            .ps
            .by_path(
                &req(input.path),
                input.recursive.unwrap_or(false),
                &filters(input.parameter_filters),
                input.with_decryption.unwrap_or(false),
                input.max_results.unwrap_or(10) as usize,
                input.next_token.as_deref(),
            )
            .await
            .map_err(api_error)?;
        Ok(GetParametersByPathResult {
            parameters: Some(page.items.into_iter().map(parameter).collect()),
            next_token: page.next_token,
        })
    }

    async fn delete_parameter(
        &self,
        _ctx: &Context,
        input: DeleteParameterRequest,
    ) -> Result<DeleteParameterResult, ApiError> {
        self.ps.delete(&req(input.name)).await.map_err(api_error)?;
        Ok(DeleteParameterResult {})
    }

    async fn delete_parameters(
        &self,
        _ctx: &Context,
        input: DeleteParametersRequest,
    ) -> Result<DeleteParametersResult, ApiError> {
        let (deleted, invalid) = self
            .ps
            .delete_many(&req(input.names))
            .await
            .map_err(api_error)?;
        Ok(DeleteParametersResult {
            deleted_parameters: Some(deleted),
            invalid_parameters: Some(invalid),
        })
    }

    async fn describe_parameters(
        &self,
        _ctx: &Context,
        input: DescribeParametersRequest,
    ) -> Result<DescribeParametersResult, ApiError> {
        let mut all = filters(input.parameter_filters);
        for f in input.filters.unwrap_or_default() {
            all.push(Filter {
                key: req(f.key),
                option: None,
                values: f.values.unwrap_or_default(),
            });
        }
        let page = self
            .ps
            .describe(
                &all,
                input.max_results.unwrap_or(50) as usize,
                input.next_token.as_deref(),
            )
            .await
            .map_err(api_error)?;
        Ok(DescribeParametersResult {
            parameters: Some(
                page.items
                    .into_iter()
                    .map(|v| ParameterMetadata {
                        name: Some(v.name),
                        arn: Some(v.arn),
                        r#type: Some(v.ptype),
                        key_id: v.key_id,
                        last_modified_date: Some(v.last_modified),
                        last_modified_user: Some(v.last_modified_user),
                        description: v.description,
                        allowed_pattern: v.allowed_pattern,
                        version: Some(v.version),
                        tier: Some(v.tier),
                        policies: Some(vec![]),
                        data_type: Some(v.data_type),
                    })
                    .collect(),
            ),
            next_token: page.next_token,
        })
    }

    async fn get_parameter_history(
        &self,
        _ctx: &Context,
        input: GetParameterHistoryRequest,
    ) -> Result<GetParameterHistoryResult, ApiError> {
        let page = self
            .ps
            .history(
                &req(input.name),
                input.with_decryption.unwrap_or(false),
                input.max_results.unwrap_or(50) as usize,
                input.next_token.as_deref(),
            )
            .await
            .map_err(api_error)?;
        Ok(GetParameterHistoryResult {
            parameters: Some(
                page.items
                    .into_iter()
                    .map(|v| ParameterHistory {
                        name: Some(v.name),
                        r#type: Some(v.ptype),
                        key_id: v.key_id,
                        last_modified_date: Some(v.last_modified),
                        last_modified_user: Some(v.last_modified_user),
                        description: v.description,
                        value: v.value.map(value),
                        allowed_pattern: v.allowed_pattern,
                        version: Some(v.version),
                        labels: Some(vec![]),
                        tier: Some(v.tier),
                        policies: Some(vec![]),
                        data_type: Some(v.data_type),
                    })
                    .collect(),
            ),
            next_token: page.next_token,
        })
    }
}
