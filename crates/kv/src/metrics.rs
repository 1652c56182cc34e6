//! Prometheus metrics: counters and histograms recorded with the `metrics` crate, gauges
//! read from the node's status at scrape time, rendered by the `/metrics` handler.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus recorder, installed on first use. `None` when the embedding
/// program installed another recorder first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
            let builder = PrometheusBuilder::new().set_buckets(&buckets).ok()?;
            builder.install_recorder().ok()
        })
        .as_ref()
}

/// Counts one HTTP request and its latency.
pub fn record_request(node: &str, route: &'static str, status: u16, elapsed: Duration) {
    let labels = [("node", node.to_string()), ("route", route.to_string())];
    metrics::counter!(
        "skiff_http_requests_total",
        &[("node", node.to_string()), ("route", route.to_string()), ("code", status.to_string())]
    )
    .increment(1);
    metrics::histogram!("skiff_http_request_seconds", &labels).record(elapsed.as_secs_f64());
}

/// Counts the leaders this node sees come and go, until it stops.
pub async fn count_leader_changes(id: skiff::NodeId, mut leader: tokio::sync::watch::Receiver<skiff::LeaderInfo>) {
    let counter = metrics::counter!("skiff_raft_leader_changes_total", "node" => id.to_string());
    let mut last = leader.borrow_and_update().leader;
    while leader.changed().await.is_ok() {
        let now = leader.borrow_and_update().leader;
        if now.is_some() && now != last {
            counter.increment(1);
        }
        last = now;
    }
}
