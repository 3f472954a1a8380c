//! Project automation: model import, code generation and benchmarks (`cargo xtask …`).

mod bench;
mod codegen;
mod models;

use anyhow::{bail, Result};
use std::path::PathBuf;

/// The botocore release whose service models Slipway's API layer is generated from.
pub const BOTOCORE_VERSION: &str = "1.43.11";

/// The services generated from botocore models: (botocore name, Rust module name).
pub const SERVICES: &[(&str, &str)] = &[
    ("codecommit", "codecommit"),
    ("codepipeline", "codepipeline"),
    ("codebuild", "codebuild"),
    ("codedeploy", "codedeploy"),
    ("ssm", "ssm"),
    ("logs", "logs"),
];

/// Services generated from models botocore does not ship (`models/agent/`): (file stem,
/// Rust module name).
pub const AGENT_SERVICES: &[(&str, &str)] = &[("codedeploy-commands", "codedeploy_commands")];

/// Services of which only some operations are built: the others keep their names (so they
/// are routed and answer 501) but lose their shapes in the vendored model.
pub const PARTIAL_SERVICES: &[(&str, &[&str])] = &[
    (
        "ssm",
        &[
            "PutParameter",
            "GetParameter",
            "GetParameters",
            "GetParametersByPath",
            "DeleteParameter",
            "DeleteParameters",
            "DescribeParameters",
            "GetParameterHistory",
        ],
    ),
    // CloudWatch Logs: what the aws-cli uses to read build logs.
    (
        "logs",
        &[
            "GetLogEvents",
            "FilterLogEvents",
            "DescribeLogGroups",
            "DescribeLogStreams",
        ],
    ),
];

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    match args.first().map(String::as_str) {
        Some("models") => models::import(&root, args.get(1).map(PathBuf::from)),
        Some("codegen") => {
            let check = args.iter().any(|a| a == "--check");
            codegen::run(&root, check)
        }
        Some("bench") => bench::run(&root, &args[1..]),
        _ => bail!(
            "usage: cargo xtask <command>\n\n\
             commands:\n  \
             models [BOTOCORE_DATA_DIR]  import botocore {BOTOCORE_VERSION} models into models/botocore (docs stripped)\n  \
             codegen [--check]           generate crates/model/src/generated from models/ (--check: fail if stale)\n  \
             bench [NAME]                run benchmarks (see BENCHMARKS.md)"
        ),
    }
}
