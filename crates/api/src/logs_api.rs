//! CloudWatch Logs, as far as build logs need it: log group `/aws/codebuild/PROJECT`, one
//! stream per build (its uuid), read with GetLogEvents, FilterLogEvents,
//! DescribeLogGroups and DescribeLogStreams.

use crate::domain_error as api_error;
use slipway_codebuild::service::{CodeBuild, LogEvent, LogQuery};
use slipway_model::logs::*;
use slipway_model::{ApiError, Context};
use slipway_store::paging::paginate;

pub struct LogsService {
    pub cb: CodeBuild,
}

fn bad_token() -> ApiError {
    ApiError::new(
        "InvalidParameterException",
        400,
        "The specified nextToken is invalid.",
    )
}

fn group_name(name: Option<String>, identifier: Option<String>) -> Result<String, ApiError> {
    // An identifier may be the group's ARN (arn:aws:logs:REGION:ACCOUNT:log-group:NAME).
    match (name, identifier) {
        (Some(n), None) => Ok(n),
        (None, Some(i)) => Ok(i
            .split_once(":log-group:")
            .map_or(i.clone(), |(_, n)| n.trim_end_matches(":*").to_owned())),
        (Some(_), Some(_)) => Err(ApiError::new(
            "InvalidParameterException",
            400,
            "LogGroup name and LogGroup ARN are mutually exclusive parameters.",
        )),
        (None, None) => Err(ApiError::new(
            "InvalidParameterException",
            400,
            "Either the log group name or the log group identifier must be given.",
        )),
    }
}

impl LogsService {
    fn group_arn(&self, name: &str) -> String {
        slipway_regions::arn(
            "logs",
            self.cb.region(),
            self.cb.account_id(),
            &format!("log-group:{name}:*"),
        )
    }
}

fn output(e: &LogEvent) -> OutputLogEvent {
    OutputLogEvent {
        timestamp: Some(e.timestamp),
        message: Some(e.message.clone()),
        ingestion_time: Some(e.timestamp),
    }
}

impl CloudWatchLogsApi for LogsService {
    async fn get_log_events(
        &self,
        _ctx: &Context,
        input: GetLogEventsRequest,
    ) -> Result<GetLogEventsResponse, ApiError> {
        let group = group_name(input.log_group_name, input.log_group_identifier)?;
        let stream = input.log_stream_name.unwrap_or_default();
        let limit = i64::from(input.limit.unwrap_or(10_000).clamp(1, 10_000));
        // Tokens: f/SEQ reads forward after SEQ, b/SEQ backward before it.
        let mut q = LogQuery {
            start: input.start_time,
            end: input.end_time,
            limit,
            ..Default::default()
        };
        match input.next_token.as_deref() {
            Some(t) => {
                let (dir, seq) = t.split_once('/').ok_or_else(bad_token)?;
                let seq: i64 = seq.parse().map_err(|_| bad_token())?;
                match dir {
                    "f" => q.after = Some(seq),
                    "b" => {
                        q.backwards = true;
                        q.before = Some(seq);
                    }
                    _ => return Err(bad_token()),
                }
            }
            None => q.backwards = !input.start_from_head.unwrap_or(false),
        }
        let events = self
            .cb
            .log_events(&group, &stream, &q)
            .await
            .map_err(api_error)?;
        // With nothing new, the forward token stays where it was (clients poll with it).
        let last = events.last().map(|e| e.seq).or(q.after).unwrap_or(0);
        let first = events.first().map(|e| e.seq).or(q.before).unwrap_or(1);
        Ok(GetLogEventsResponse {
            events: Some(events.iter().map(output).collect()),
            next_forward_token: Some(format!("f/{last}")),
            next_backward_token: Some(format!("b/{first}")),
        })
    }

    async fn filter_log_events(
        &self,
        _ctx: &Context,
        input: FilterLogEventsRequest,
    ) -> Result<FilterLogEventsResponse, ApiError> {
        let group = group_name(input.log_group_name, input.log_group_identifier)?;
        let mut streams: Vec<String> = self
            .cb
            .log_streams(&group)
            .await
            .map_err(api_error)?
            .into_iter()
            .map(|s| s.0)
            .collect();
        if let Some(names) = &input.log_stream_names {
            streams.retain(|s| names.contains(s));
        }
        if let Some(prefix) = &input.log_stream_name_prefix {
            streams.retain(|s| s.starts_with(prefix.as_str()));
        }
        // Filter patterns: space-separated terms that must all appear (quoted phrases
        // kept whole); `-term` excludes. JSON and metric patterns are not supported.
        let pattern = input.filter_pattern.unwrap_or_default();
        let terms = terms(&pattern);
        let mut matched = Vec::new();
        for s in &streams {
            let q = LogQuery {
                start: input.start_time,
                end: input.end_time,
                limit: i64::MAX,
                ..Default::default()
            };
            for e in self.cb.log_events(&group, s, &q).await.map_err(api_error)? {
                let ok = terms
                    .iter()
                    .all(|(neg, t)| e.message.contains(t.as_str()) != *neg);
                if ok {
                    matched.push(e);
                }
            }
        }
        matched.sort_by_key(|e| (e.timestamp, e.seq));
        let limit = input.limit.unwrap_or(10_000).clamp(1, 10_000) as usize;
        let page = paginate(matched, input.next_token.as_deref(), limit).ok_or_else(bad_token)?;
        Ok(FilterLogEventsResponse {
            events: Some(
                page.items
                    .iter()
                    .map(|e| FilteredLogEvent {
                        log_stream_name: Some(e.stream.clone()),
                        timestamp: Some(e.timestamp),
                        message: Some(e.message.clone()),
                        ingestion_time: Some(e.timestamp),
                        event_id: Some(format!("{}-{}", e.stream, e.seq)),
                    })
                    .collect(),
            ),
            searched_log_streams: Some(
                streams
                    .iter()
                    .map(|s| SearchedLogStream {
                        log_stream_name: Some(s.clone()),
                        searched_completely: Some(true),
                    })
                    .collect(),
            ),
            next_token: page.next_token,
        })
    }

    async fn describe_log_groups(
        &self,
        _ctx: &Context,
        input: DescribeLogGroupsRequest,
    ) -> Result<DescribeLogGroupsResponse, ApiError> {
        let prefix = input.log_group_name_prefix.unwrap_or_default();
        let mut groups = self.cb.log_groups(&prefix).await.map_err(api_error)?;
        if let Some(p) = &input.log_group_name_pattern {
            groups.retain(|g| g.0.to_lowercase().contains(&p.to_lowercase()));
        }
        let limit = input.limit.unwrap_or(50).clamp(1, 50) as usize;
        let page = paginate(groups, input.next_token.as_deref(), limit).ok_or_else(bad_token)?;
        Ok(DescribeLogGroupsResponse {
            log_groups: Some(
                page.items
                    .into_iter()
                    .map(|(name, created, bytes)| LogGroup {
                        arn: Some(self.group_arn(&name)),
                        log_group_name: Some(name),
                        creation_time: Some(created),
                        metric_filter_count: Some(0),
                        stored_bytes: Some(bytes),
                        log_group_class: Some("STANDARD".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            next_token: page.next_token,
        })
    }

    async fn describe_log_streams(
        &self,
        _ctx: &Context,
        input: DescribeLogStreamsRequest,
    ) -> Result<DescribeLogStreamsResponse, ApiError> {
        let group = group_name(input.log_group_name, input.log_group_identifier)?;
        let mut streams = self.cb.log_streams(&group).await.map_err(api_error)?;
        if let Some(p) = &input.log_stream_name_prefix {
            if input.order_by.as_deref() == Some("LastEventTime") {
                return Err(ApiError::new(
                    "InvalidParameterException",
                    400,
                    "Cannot order by LastEventTime with a logStreamNamePrefix.",
                ));
            }
            streams.retain(|s| s.0.starts_with(p.as_str()));
        }
        match input.order_by.as_deref() {
            Some("LastEventTime") => streams.sort_by_key(|s| s.3.unwrap_or(s.1)),
            _ => streams.sort_by(|a, b| a.0.cmp(&b.0)),
        }
        if input.descending.unwrap_or(false) {
            streams.reverse();
        }
        let limit = input.limit.unwrap_or(50).clamp(1, 50) as usize;
        let page = paginate(streams, input.next_token.as_deref(), limit).ok_or_else(bad_token)?;
        Ok(DescribeLogStreamsResponse {
            log_streams: Some(
                page.items
                    .into_iter()
                    .map(|(name, created, first, last)| LogStream {
                        arn: Some(slipway_regions::arn(
                            "logs",
                            self.cb.region(),
                            self.cb.account_id(),
                            &format!("log-group:{group}:log-stream:{name}"),
                        )),
                        log_stream_name: Some(name),
                        creation_time: Some(created),
                        first_event_timestamp: first,
                        last_event_timestamp: last,
                        last_ingestion_time: last,
                        ..Default::default()
                    })
                    .collect(),
            ),
            next_token: page.next_token,
        })
    }
}

/// The terms of a simple filter pattern: (excluded, text).
fn terms(pattern: &str) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut rest = pattern.trim();
    while !rest.is_empty() {
        let (neg, r) = match rest.strip_prefix('-') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (term, after) = if let Some(q) = r.strip_prefix('"') {
            match q.split_once('"') {
                Some((t, a)) => (t.to_owned(), a),
                None => (q.to_owned(), ""),
            }
        } else {
            match r.split_once(char::is_whitespace) {
                Some((t, a)) => (t.to_owned(), a),
                None => (r.to_owned(), ""),
            }
        };
        if !term.is_empty() {
            out.push((neg, term));
        }
        rest = after.trim_start();
    }
    out
}
