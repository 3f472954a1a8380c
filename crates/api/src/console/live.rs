//! Live updates: a Server-Sent Events stream per page, fed from the event outbox. A page's
//! stream watches a topic (`pipeline:NAME`, `build:ID`, `deployment:ID`); after each outbox
//! event about it the page's live fragment is drawn again and sent, and htmx swaps it in.

use crate::AppState;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How often the outbox is read for a stream.
const POLL: Duration = Duration::from_millis(200);

/// Whether outbox event `e` is about `topic` in `region`.
pub(crate) fn about(e: &Value, topic: &str, region: &str) -> bool {
    if e["region"].as_str() != Some(region) {
        return false;
    }
    let d = &e["detail"];
    match topic.split_once(':') {
        Some(("pipeline", name)) => {
            e["source"] == "aws.codepipeline" && d["pipeline"].as_str() == Some(name)
        }
        Some(("build", id)) => {
            e["source"] == "aws.codebuild"
                && d["build-id"]
                    .as_str()
                    .is_some_and(|b| b.ends_with(&format!("build/{id}")))
        }
        Some(("deployment", id)) => {
            e["source"] == "aws.codedeploy" && d["deploymentId"].as_str() == Some(id)
        }
        _ => false,
    }
}

/// The outbox position a page's stream starts after.
#[derive(serde::Deserialize)]
pub struct After {
    pub after: Option<i64>,
}

/// The outbox position now: a page drawn after reading it passes it to its stream, which
/// then misses nothing that happened after the page was drawn.
pub(crate) async fn position(state: &AppState) -> Result<i64, super::Fail> {
    let mut conn = state
        .store
        .pool()
        .acquire()
        .await
        .map_err(super::internal)?;
    Ok(slipway_store::events::last_seq(&mut conn)
        .await
        .map_err(super::internal)?)
}

/// How far back a stream may be asked to start (a page older than this is drawn again).
const MAX_BEHIND: i64 = 10_000;

/// A stream that yields each time outbox events about `topic` have been committed after
/// position `after` (several at once yield once; the newest position when None).
pub(crate) async fn changes(
    state: Arc<AppState>,
    region: String,
    topic: String,
    after: Option<i64>,
) -> Result<impl futures_util::Stream<Item = ()> + Send, super::Fail> {
    let now = position(&state).await?;
    let start = after.map_or(now, |a| a.clamp(now - MAX_BEHIND, now));
    Ok(futures_util::stream::unfold(
        (state, start),
        move |(state, mut seq)| {
            let (topic, region) = (topic.clone(), region.clone());
            async move {
                loop {
                    tokio::time::sleep(POLL).await;
                    let batch = {
                        let Ok(mut conn) = state.store.pool().acquire().await else {
                            continue;
                        };
                        slipway_store::events::after(&mut conn, seq, 500)
                            .await
                            .unwrap_or_default()
                    };
                    let mut hit = false;
                    for (n, body) in &batch {
                        seq = *n;
                        hit |= serde_json::from_str::<Value>(body)
                            .is_ok_and(|e| about(&e, &topic, &region));
                    }
                    if hit {
                        return Some(((), (state, seq)));
                    }
                }
            }
        },
    ))
}

/// A page's live stream: on every change, `render` draws the fragment again and it is sent
/// as event `name` (htmx's `sse-swap` puts it in place). Drawing after the change, in the
/// order of the changes, no update is lost to a request in flight.
pub(crate) fn fragments<S, F, Fut>(changes: S, name: &'static str, render: F) -> Response
where
    S: futures_util::Stream<Item = ()> + Send + 'static,
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<String>> + Send,
{
    use futures_util::StreamExt as _;
    let render = Arc::new(render);
    let events = changes
        .then(move |()| {
            let render = render.clone();
            async move { render().await }
        })
        .filter_map(|html| async move { html })
        .map(move |html| {
            Ok::<_, std::convert::Infallible>(Event::default().event(name).data(html))
        });
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn topics_match_their_own_events_only() {
        let p = json!({"region": "us-east-1", "source": "aws.codepipeline", "detail": {"pipeline": "ship"}});
        assert!(about(&p, "pipeline:ship", "us-east-1"));
        assert!(!about(&p, "pipeline:shi", "us-east-1"));
        assert!(!about(&p, "pipeline:ship", "eu-west-1"));
        let b = json!({"region": "us-east-1", "source": "aws.codebuild", "detail": {"build-id": "arn:aws:codebuild:us-east-1:0:build/web:abc"}});
        assert!(about(&b, "build:web:abc", "us-east-1"));
        assert!(!about(&b, "build:eb:abc", "us-east-1"));
        let d = json!({"region": "us-east-1", "source": "aws.codedeploy", "detail": {"deploymentId": "d-1"}});
        assert!(about(&d, "deployment:d-1", "us-east-1") && !about(&d, "nonsense", "us-east-1"));
    }
}
