//! `/v1/skiff/faults`: fault injection, off unless the node was started with it.
//! And `/metrics`, Prometheus's text format.

use super::*;

/// The node's fault table, or 403 when fault injection is off.
fn faults(api: &Api) -> ApiResult<&skiff::transport::faults::Faults> {
    api.node.faults().ok_or_else(|| {
        ApiError::new(StatusCode::FORBIDDEN, "fault injection is off; start the node with --fault-injection to use it")
    })
}

fn faults_json(faults: &skiff::transport::faults::Faults) -> Response {
    axum::Json(json!({ "enabled": true, "faults": faults.list() })).into_response()
}

pub(super) async fn faults_list(State(api): Shared) -> ApiResult {
    Ok(faults_json(faults(&api)?))
}

/// Adds a fault: `{"action": "drop" | "delay", "delay_ms": N, "peers": ["n2"], "direction":
/// "in" | "out" | "both"}`.
pub(super) async fn faults_add(State(api): Shared, headers: HeaderMap, body: Body) -> ApiResult {
    let faults = faults(&api)?;
    let body = read_body(body, &headers, 64 << 10).await?;
    let fault: skiff::transport::faults::Fault = serde_json::from_slice(&body).map_err(|error| {
        ApiError::bad_request(format!(
            "a fault is {{\"action\": \"drop\" or \"delay\", \"delay_ms\": N, \"peers\": [\"n2\"], \
             \"direction\": \"in\", \"out\" or \"both\"}}: {error}"
        ))
    })?;
    // A peer is a node of the cluster file or a member added since (by address).
    let in_file: Vec<NodeId> = api.cluster.node_ids().collect();
    let membership = api.status().await?.membership;
    if let Some(unknown) = fault.peers.iter().find(|id| !in_file.contains(id) && !membership.contains(**id)) {
        return Err(ApiError::bad_request(format!("{unknown} is not a node of the cluster file (nor a member)")));
    }
    if fault.peers.contains(&api.node.id()) {
        return Err(ApiError::bad_request(format!("{} cannot cut itself off; name its peers", api.node.id())));
    }
    tracing::warn!(node = %api.node.id(), ?fault, "fault injected");
    faults.add(fault);
    Ok(faults_json(faults))
}

pub(super) async fn faults_clear(State(api): Shared) -> ApiResult {
    let faults = faults(&api)?;
    faults.clear();
    tracing::warn!(node = %api.node.id(), "faults cleared");
    Ok(faults_json(faults))
}

/// How long a scrape waits for the key count.
const KEYS_READ_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn metrics(State(api): Shared) -> ApiResult {
    let Some(handle) = crate::metrics::handle() else {
        let message = "the embedding program installed its own metrics recorder";
        return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message));
    };
    let status = api.status().await?;
    let node = [("node", api.label.clone())];
    metrics::gauge!("skiff_raft_term", &node).set(status.term.0 as f64);
    metrics::gauge!("skiff_raft_commit_index", &node).set(status.commit.0 as f64);
    metrics::gauge!("skiff_raft_applied_index", &node).set(status.applied.0 as f64);
    metrics::gauge!("skiff_raft_last_log_index", &node).set(status.last_log_id.index.0 as f64);
    metrics::gauge!("skiff_raft_snapshot_index", &node).set(status.snapshot_index.0 as f64);
    metrics::gauge!("skiff_raft_is_leader", &node).set(if status.role == RoleName::Leader { 1.0 } else { 0.0 });
    metrics::gauge!("skiff_apply_lag_entries", &node).set(status.commit.0.saturating_sub(status.applied.0) as f64);
    metrics::gauge!("skiff_raft_voters", &node).set(status.membership.voters.len() as f64);
    let published = &api.published;
    metrics::gauge!("skiff_kv_keyspace_bytes", &node).set(published.used_bytes() as f64);
    metrics::gauge!("skiff_kv_keyspace_quota_bytes", &node).set(api.limits.keyspace_quota_bytes as f64);
    let alarm = if published.quota_alarm().is_some() { 1.0 } else { 0.0 };
    metrics::gauge!("skiff_kv_quota_alarm", &node).set(alarm);
    metrics::gauge!("skiff_kv_blocking_queries", &node).set(api.blocking.count() as f64);
    metrics::gauge!("skiff_kv_watches", &node).set(published.watches() as f64);
    crate::metrics::record_peers(&api.label, &status);
    // The keys applied on this node: a stale read, bounded in time so a state machine held
    // up by a long apply leaves the gauge out rather than holding up the scrape; not counted
    // in `skiff_kv_node_reads_total` (that counts the reads clients cause).
    let keys = tokio::time::timeout(KEYS_READ_TIMEOUT, api.node.read_stale(|store| store.len())).await;
    if let Ok(Ok(keys)) = keys {
        metrics::gauge!("skiff_kv_keys", &node).set(keys as f64);
    }
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response())
}
