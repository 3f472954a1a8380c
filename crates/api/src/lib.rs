//! The protocol edge: one listener serving AWS JSON-1.1 (`POST /` by `X-Amz-Target`), git
//! smart HTTP (`/v1/repos/NAME`) and Slipway's own routes (`/-/…`).
//!
//! Only this crate knows HTTP, JSON-1.1 and SigV4: it authenticates every request, asks IAM
//! for a decision, and hands plain Rust values to the domain crates.

pub mod auth;
pub mod codecommit_api;
pub mod git_http;
pub mod json;
pub mod sigv4;
pub mod ssm_api;

use axum::routing::{any, get};
use axum::Router;
use slipway_codecommit::CodeCommit;
use slipway_iam::Iam;
use slipway_ssm::ParameterStore;
use std::future::Future;
use std::sync::Arc;

/// The largest JSON request body accepted (CodeCommit's 6 MB files arrive base64-encoded).
pub const MAX_JSON_BODY: usize = 10 * 1024 * 1024;

/// Everything request handlers need, shared by all of them.
pub struct AppState {
    pub iam: Iam,
    pub codecommit: CodeCommit,
    pub ssm: ParameterStore,
    pub region: String,
    pub account_id: String,
    pub max_json_body: usize,
    /// Bounds how many git processes serve requests at once; further requests wait for a slot.
    pub git_slots: Arc<tokio::sync::Semaphore>,
}

/// Builds the router for every protocol Slipway serves.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/-/health",
            get(|| async {
                (
                    [("content-type", "application/json")],
                    "{\"status\":\"ok\"}",
                )
            }),
        )
        .route("/v1/repos/{name}", any(git_http::handle))
        .route("/v1/repos/{name}/{*rest}", any(git_http::handle))
        .fallback(json::handle)
        .with_state(state)
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and drains requests
/// in flight before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
