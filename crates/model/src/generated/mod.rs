//! Code generated from AWS's service models by `cargo xtask codegen`; do not edit.

pub mod codebuild;
pub mod codecommit;
pub mod codedeploy;
pub mod codedeploy_commands;
pub mod codepipeline;
pub mod logs;
pub mod ssm;

/// (target prefix, signing name, operations) of every generated service.
pub const SERVICES: &[(&str, &str, &[&str])] = &[
    (
        codecommit::TARGET_PREFIX,
        codecommit::SIGNING_NAME,
        codecommit::OPERATIONS,
    ),
    (
        codepipeline::TARGET_PREFIX,
        codepipeline::SIGNING_NAME,
        codepipeline::OPERATIONS,
    ),
    (
        codebuild::TARGET_PREFIX,
        codebuild::SIGNING_NAME,
        codebuild::OPERATIONS,
    ),
    (
        codedeploy::TARGET_PREFIX,
        codedeploy::SIGNING_NAME,
        codedeploy::OPERATIONS,
    ),
    (ssm::TARGET_PREFIX, ssm::SIGNING_NAME, ssm::OPERATIONS),
    (logs::TARGET_PREFIX, logs::SIGNING_NAME, logs::OPERATIONS),
    (
        codedeploy_commands::TARGET_PREFIX,
        codedeploy_commands::SIGNING_NAME,
        codedeploy_commands::OPERATIONS,
    ),
];
