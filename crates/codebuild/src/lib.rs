//! CodeBuild: buildspecs, sandboxes made by an OCI runtime, and the build runner.

pub mod buildspec;
