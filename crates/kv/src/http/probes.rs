//! `GET /v1/health` and `GET /v1/ready`: the probes of an orchestrator or a load balancer.
//!
//! - *Alive* (`/v1/health`): the process answers and the node's driver has not stopped. A
//!   failing liveness probe asks for a restart, so nothing a restart would not cure (no
//!   leader, a slow disk, a full keyspace) fails it.
//! - *Ready* (`/v1/ready`): the node can serve: it knows a leader, it has applied its
//!   committed entries to within a bound, and no alarm is raised. Every failing check is
//!   given, in words.
//!
//! Both answer without a token, with `[auth]` too (an orchestrator probes without one), so
//! they say nothing a client without a token may not know: the status in a word, the
//! node's own id, the lag bound, and the reasons, which name no key, size, address or
//! other node. Neither goes to the leader (no ReadIndex) nor waits long: the readiness
//! probe asks the node's driver for its status, and gives up on it after
//! [`STATUS_TIMEOUT`].

use super::*;

/// How many committed entries `/v1/ready` lets the node be behind in applying, unless the
/// query says otherwise (`?max_lag=`). About a second of writes at a modest rate: a node
/// that far behind serves reads late (a consistent read waits for its apply).
pub(super) const DEFAULT_MAX_LAG: u64 = 1000;

/// How long `/v1/ready` waits for the node's status before it answers "not ready".
const STATUS_TIMEOUT: Duration = Duration::from_secs(1);

/// The alarms `?exclude=` may name.
const ALARMS: [&str; 1] = ["NOSPACE"];

/// Whether `path` is one of the probes, which answer without a token.
pub(super) fn is_probe(path: &str) -> bool {
    matches!(path, "/v1/health" | "/v1/ready")
}

pub(super) async fn health(State(api): Shared) -> Response {
    match api.node.stop_reason() {
        None => probe(StatusCode::OK, json!({ "status": "alive", "id": api.label, "reasons": [] })),
        Some(error) => {
            let reasons = [format!("the node has stopped: {error}")];
            probe(StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "stopped", "id": api.label, "reasons": reasons }))
        }
    }
}

pub(super) async fn ready(State(api): Shared, uri: Uri) -> ApiResult {
    let query = Query::parse(&uri);
    let max_lag = query.number("max_lag")?.unwrap_or(DEFAULT_MAX_LAG);
    let excluded = excluded_alarms(&query)?;
    let mut reasons = Vec::new();
    if let Some(error) = api.node.stop_reason() {
        reasons.push(format!("the node has stopped: {error}"));
    } else {
        match tokio::time::timeout(STATUS_TIMEOUT, api.node.status()).await {
            Ok(Ok(status)) => reasons.extend(lag_reasons(status.leader, status.commit, status.applied, max_lag)),
            Ok(Err(error)) => reasons.push(format!("the node's status is unavailable: {error}")),
            Err(_) => reasons.push(format!(
                "the node did not report its status within {} s (its driver is busy or stuck)",
                STATUS_TIMEOUT.as_secs()
            )),
        }
    }
    if api.published.quota_alarm().is_some() && !excluded.contains(&"NOSPACE") {
        reasons.push(
            "the keyspace quota alarm (NOSPACE) is raised: writes that add bytes are refused until keys are deleted"
                .to_string(),
        );
    }
    let (code, word) =
        if reasons.is_empty() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") };
    Ok(probe(code, json!({ "status": word, "id": api.label, "max_lag": max_lag, "reasons": reasons })))
}

/// The alarms named by `?exclude=` (repeated, or separated by commas), each one of
/// [`ALARMS`]: those the readiness probe does not fail for.
fn excluded_alarms(query: &Query) -> ApiResult<Vec<&'static str>> {
    let mut excluded = Vec::new();
    let names = query.0.iter().filter(|(name, _)| name == "exclude").flat_map(|(_, value)| value.split(','));
    for name in names.map(str::trim).filter(|name| !name.is_empty()) {
        let Some(alarm) = ALARMS.iter().find(|alarm| **alarm == name) else {
            let known = ALARMS.join(", ");
            return Err(ApiError::bad_request(format!("exclude={name:?} is not an alarm; the alarms are: {known}")));
        };
        excluded.push(*alarm);
    }
    Ok(excluded)
}

/// Why a node with this view of the cluster is not ready to serve: no leader known, or
/// more than `max_lag` committed entries not yet applied. Empty when it is ready.
///
/// The commit index is the node's own: a follower learns it from the leader's messages,
/// so while it catches up on the log itself the bound is against what it has heard of.
fn lag_reasons(leader: Option<NodeId>, commit: Index, applied: Index, max_lag: u64) -> Vec<String> {
    let mut reasons = Vec::new();
    if leader.is_none() {
        reasons.push("no leader is known: an election is under way, or this node cannot reach a quorum".to_string());
    }
    let behind = commit.0.saturating_sub(applied.0);
    if behind > max_lag {
        reasons.push(format!(
            "{behind} committed entries are not applied yet (applied index {}, commit index {}), more than max_lag \
             {max_lag}",
            applied.0, commit.0
        ));
    }
    reasons
}

/// A probe's answer: JSON, never cached.
fn probe(code: StatusCode, body: Json) -> Response {
    let mut response = (code, axum::Json(body)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_with_a_leader_and_its_entries_applied_is_ready() {
        assert!(lag_reasons(Some(NodeId(2)), Index(50), Index(50), 0).is_empty());
        assert!(lag_reasons(Some(NodeId(2)), Index(1050), Index(50), 1000).is_empty(), "at the bound is ready");
    }

    #[test]
    fn every_failing_check_is_a_reason() {
        let reasons = lag_reasons(None, Index(1051), Index(50), 1000);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("no leader"), "{reasons:?}");
        assert!(reasons[1].starts_with("1001 committed entries are not applied"), "{reasons:?}");
        assert!(reasons[1].contains("max_lag 1000"), "{reasons:?}");
        assert_eq!(lag_reasons(Some(NodeId(1)), Index(3), Index(2), 0).len(), 1, "max_lag=0: one entry behind");
    }

    #[test]
    fn exclude_takes_known_alarms_only() {
        let parse = |query: &str| {
            let uri: Uri = format!("/v1/ready?{query}").parse().expect("a uri");
            excluded_alarms(&Query::parse(&uri)).map_err(|error| error.message)
        };
        assert_eq!(parse("exclude=NOSPACE"), Ok(vec!["NOSPACE"]));
        assert_eq!(parse("exclude=NOSPACE,&exclude="), Ok(vec!["NOSPACE"]));
        assert_eq!(parse("max_lag=3"), Ok(vec![]));
        for bad in ["exclude=nospace", "exclude=NOSPACE,CORRUPT", "exclude=%00", "exclude=NOSPACE%2C..%2F"] {
            let error = parse(bad).expect_err(bad);
            assert!(error.contains("is not an alarm"), "{bad}: {error}");
        }
    }
}
