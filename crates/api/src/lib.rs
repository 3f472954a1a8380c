//! The protocol edge: one listener serving AWS JSON-1.1 (`POST /` by `X-Amz-Target`), git
//! smart HTTP (`/v1/repos/NAME`), Slipway's own routes (`/-/…`) and the S3 REST API
//! (path-style, everything else).
//!
//! Only this crate knows HTTP, JSON-1.1 and SigV4: it authenticates every request, asks IAM
//! for a decision, and hands plain Rust values to the domain crates.

pub mod auth;
pub mod codebuild_api;
pub mod codecommit_api;
pub mod codedeploy_api;
pub mod codepipeline_api;
pub mod console;
pub mod git_http;
pub mod json;
pub mod logs_api;
pub mod s3_edge;
pub mod sigv4;
pub mod ssm_api;
pub mod webhook_http;
pub mod worker_api;

use axum::routing::{any, get};
use axum::Router;
use slipway_codecommit::CodeCommit;
use slipway_iam::Iam;
use slipway_ssm::ParameterStore;
use std::future::Future;
use std::sync::Arc;

/// A domain error on the wire: the service's exception (HTTP 400), or `InternalFailure`
/// with the detail logged and never sent.
pub fn domain_error(e: slipway_store::ServiceError) -> slipway_model::ApiError {
    match e {
        slipway_store::ServiceError::Api { code, message } => {
            slipway_model::ApiError::new(code, 400, message)
        }
        slipway_store::ServiceError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            slipway_model::ApiError::internal()
        }
    }
}

/// The largest JSON request body accepted (CodeCommit's 6 MB files arrive base64-encoded).
pub const MAX_JSON_BODY: usize = 10 * 1024 * 1024;

/// Everything request handlers need, shared by all of them.
pub struct AppState {
    pub store: slipway_store::Store,
    /// Failed console sign-ins, for the rate limit.
    pub signins: console::SignInLimiter,
    pub iam: Iam,
    pub codecommit: CodeCommit,
    pub ssm: ParameterStore,
    pub s3: slipway_s3::S3Store,
    pub codebuild: slipway_codebuild::service::CodeBuild,
    pub codepipeline: slipway_codepipeline::CodePipeline,
    pub codedeploy: slipway_codedeploy::CodeDeploy,
    /// The default region (requests are served in the region they are signed for; git's
    /// `/v1/repos/NAME` and the built-in worker act in this one).
    pub region: String,
    pub account_id: String,
    pub max_json_body: usize,
    /// Bounds how many git processes serve requests at once; further requests wait for a slot.
    pub git_slots: Arc<tokio::sync::Semaphore>,
    /// How long a client may take to send a request's headers before its connection is
    /// closed (a slow or idle sender must not hold a connection forever).
    pub header_read_timeout: std::time::Duration,
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
        .merge(worker_api::routes())
        .merge(console::routes())
        .merge(webhook_http::routes())
        .route("/v1/repos/{name}", any(git_http::handle))
        .route("/v1/repos/{name}/{*rest}", any(git_http::handle))
        .route("/-/regions/{region}/v1/repos/{name}", any(git_http::handle))
        .route(
            "/-/regions/{region}/v1/repos/{name}/{*rest}",
            any(git_http::handle),
        )
        .fallback(json::handle)
        .with_state(state)
}

/// Sends each request to the S3 service or to the router (JSON-1.1, git, `/-/`).
fn dispatch(
    app: Router,
    s3: s3s::service::S3Service,
    peer: Option<std::net::SocketAddr>,
) -> impl hyper::service::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone {
    let app = hyper_util::service::TowerToHyperService::new(app);
    hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let (app, s3) = (app.clone(), s3.clone());
        if let Some(p) = peer {
            req.extensions_mut().insert(webhook_http::PeerAddr(p));
        }
        let handled = to_the_end(async move {
            if !s3_edge::is_s3(req.method(), req.uri(), req.headers()) {
                return routed(app, req).await;
            }
            match s3.call(req.map(s3s::Body::from)).await {
                Ok(resp) => resp.map(axum::body::Body::new),
                Err(e) => {
                    tracing::error!(error = ?e, "S3 request failed");
                    let mut resp = axum::response::Response::new(axum::body::Body::from(
                        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError</Code><Message>We encountered an internal error. Please try again.</Message></Error>",
                    ));
                    *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                    resp
                }
            }
        });
        async move { Ok(handled.await) }
    })
}

/// The router's answer to `req` (it never fails: errors are answers).
async fn routed<B>(
    app: hyper_util::service::TowerToHyperService<Router>,
    req: hyper::Request<B>,
) -> axum::response::Response
where
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    use hyper::service::Service as _;
    app.call(req).await.unwrap_or_else(|never| match never {})
}

/// Handles a request on a task of its own, to the end: a client that goes away (or a
/// worker that aborts a held-open heartbeat) must not cancel a handler halfway through a
/// database transaction. A handler that panics answers 500.
fn to_the_end(
    handler: impl Future<Output = axum::response::Response> + Send + 'static,
) -> impl Future<Output = axum::response::Response> + Send {
    let handled = tokio::spawn(handler);
    async move {
        handled.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "a request handler panicked");
            let mut resp = axum::response::Response::new(axum::body::Body::empty());
            *resp.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            resp
        })
    }
}

/// The server's routes for a caller in the same process — the built-in build worker: a
/// request (signed like any other, and authenticated and authorised alike) goes to the
/// router as a value, without a socket or HTTP framing in between, and is handled to the
/// end as one arriving over HTTP is. Routes the router serves (the worker protocol, JSON,
/// git); not S3.
#[derive(Clone)]
pub struct InProcess {
    app: Router,
    in_flight: tokio_util::task::TaskTracker,
}

impl InProcess {
    pub fn new(state: Arc<AppState>) -> InProcess {
        InProcess {
            app: router(state),
            in_flight: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Handles `req`; its answer (whose body may still be streaming).
    pub async fn call(
        &self,
        req: axum::http::Request<axum::body::Body>,
    ) -> axum::response::Response {
        let app = hyper_util::service::TowerToHyperService::new(self.app.clone());
        to_the_end(self.in_flight.track_future(routed(app, req))).await
    }

    /// Waits for the handlers of requests made so far to end (at shutdown, before the
    /// database closes).
    pub async fn drain(&self) {
        self.in_flight.close();
        self.in_flight.wait().await;
    }
}

/// Connections served at once; more wait in the listen backlog until one closes.
pub const MAX_CONNECTIONS: usize = 4096;

/// Serves `listener` until `shutdown` resolves, then stops accepting and drains requests
/// in flight before returning.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let header_timeout = state.header_read_timeout;
    let s3 = s3_edge::service(&state);
    let app = router(state);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    // Bounds concurrent connections; each holds a permit until it closes.
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => p.map_err(std::io::Error::other)?,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = dispatch(app.clone(), s3.clone(), Some(peer));
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
