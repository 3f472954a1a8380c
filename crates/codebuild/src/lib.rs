//! CodeBuild: buildspecs, sandboxes made by an OCI runtime, and the build runner.

pub mod artifacts;
pub mod buildspec;
pub mod cache;
pub mod execute;
pub mod fuzz;
pub mod images;
pub mod logstore;
mod readbufs;
pub mod report_groups;
pub mod reports;
pub mod runner;
pub mod sandbox;
pub mod service;
pub mod session;
