//! Webhook deliveries, `POST /-/webhooks/trigger?t=TOKEN&v=1` on the API port: the token
//! names the webhook (CodePipeline's own URLs have the same query); the webhook's own
//! authentication (GITHUB_HMAC, IP, UNAUTHENTICATED) stands in for SigV4.

use crate::AppState;
use axum::body::{to_bytes, Body};
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use slipway_codepipeline::webhooks::{Delivered, Delivery};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

/// The largest payload a webhook accepts (GitHub sends at most 25 MB; pushes are far less).
const MAX_PAYLOAD: usize = 8 << 20;

/// The address a connection came from, set on each of its requests by the server.
#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/-/webhooks/trigger", post(trigger))
}

fn answer(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn trigger(State(state): State<Arc<AppState>>, req: Request<Body>) -> Response {
    let token = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .find_map(|kv| kv.strip_prefix("t="))
        .unwrap_or_default()
        .to_owned();
    let how = Delivery {
        signature_256: req
            .headers()
            .get("x-hub-signature-256")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        client_ip: req
            .extensions()
            .get::<PeerAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip()),
    };
    let body = match to_bytes(req.into_body(), MAX_PAYLOAD).await {
        Ok(b) => b,
        Err(_) => {
            return answer(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"message": format!("The payload is larger than {MAX_PAYLOAD} bytes")}),
            )
        }
    };
    match state
        .codepipeline
        .deliver_webhook(&token, &how, &body)
        .await
    {
        Ok(Delivered::Started(id)) => answer(
            StatusCode::OK,
            serde_json::json!({"pipelineExecutionId": id}),
        ),
        Ok(Delivered::Ignored(why)) => {
            tracing::info!(reason = %why, "webhook delivery ignored");
            answer(
                StatusCode::OK,
                serde_json::json!({"message": format!("Ignored: {why}")}),
            )
        }
        Ok(Delivered::Refused(why)) => {
            tracing::info!(reason = %why, "webhook delivery refused");
            answer(
                StatusCode::FORBIDDEN,
                serde_json::json!({"message": format!("Refused: {why}")}),
            )
        }
        Err(e) => {
            let e = slipway_model::ApiError::from(e);
            let status =
                StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            // A token that names no webhook is a 404, as for any unknown URL.
            let status = if e.code == "WebhookNotFoundException" {
                StatusCode::NOT_FOUND
            } else {
                status
            };
            answer(
                status,
                serde_json::json!({"message": e.message, "code": e.code}),
            )
        }
    }
}
