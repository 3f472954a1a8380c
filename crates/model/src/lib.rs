//! AWS API shapes for Slipway's services: generated types and handler traits plus their runtime.
//!
//! `generated/` is written by `cargo xtask codegen` from the botocore models in `models/`;
//! `runtime` is the hand-written support it relies on (errors, validation, request context).

pub mod generated;
pub mod runtime;

pub use generated::*;
pub use runtime::{ApiError, Blob, Context, Empty, Principal, Timestamp};
