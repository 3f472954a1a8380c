//! Live updates: a Server-Sent Events stream per page, fed from the event outbox. The page
//! names a topic (`pipeline:NAME`, `build:ID`, `deployment:ID`); each outbox event about it
//! sends `change`, and htmx fetches the page's live fragment again.

use crate::AppState;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How often the outbox is read for a stream.
const POLL: Duration = Duration::from_millis(200);

#[derive(serde::Deserialize)]
pub struct Topic {
    topic: String,
}

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

pub async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Query(q): Query<Topic>,
) -> Result<Response, super::Fail> {
    let s = super::require(&state, &headers, "/-/console/").await?;
    let start = {
        let mut conn = state
            .store
            .pool()
            .acquire()
            .await
            .map_err(super::internal)?;
        slipway_store::events::last_seq(&mut conn)
            .await
            .map_err(super::internal)?
    };
    let region = s.region.clone();
    let events = futures_util::stream::unfold((state, start), move |(state, mut seq)| {
        let (topic, region) = (q.topic.clone(), region.clone());
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
                    let ev = Event::default().event("change").data(seq.to_string());
                    return Some((Ok::<_, std::convert::Infallible>(ev), (state, seq)));
                }
            }
        }
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
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
