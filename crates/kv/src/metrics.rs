//! Prometheus metrics (`docs/metrics.md` lists them all): counters and histograms recorded
//! with the `metrics` crate where things happen (here, in `skiff` and in `skiff-storage`),
//! gauges read from the node's status at scrape time, rendered by the `/metrics` handler.

use std::collections::HashMap;
use std::sync::{OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use skiff::NodeStatus;

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// A gauge not set again for this long is dropped from the output. Every gauge is set at
/// scrape time, just before the text is rendered, so only a series nobody sets any more
/// goes: a peer removed from the cluster, or a peer's match lag on a node that is no longer
/// leader (only a leader knows it). Without this, such a series would show its last value
/// forever.
const STALE_GAUGE: Duration = Duration::from_secs(60);

/// The buckets of the latency histograms, in seconds.
const SECONDS_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// The buckets of `skiff_snapshot_size_bytes`: 1 KiB to 16 GiB, by factors of 4.
fn size_buckets() -> Vec<f64> {
    (0..13).map(|power| (1u64 << (10 + 2 * power)) as f64).collect()
}

/// The buckets of the count histograms (`skiff_wal_entries_per_sync`,
/// `skiff_apply_batch_entries`): 0, then 1 to 4096 by factors of 2.
fn count_buckets() -> Vec<f64> {
    std::iter::once(0.0).chain((0..13).map(|power| (1u64 << power) as f64)).collect()
}

/// The process's Prometheus recorder, installed on first use. `None` when the embedding
/// program installed another recorder first. Metric handles made before it is installed
/// record nothing: [`crate::Server::start`] installs it before it starts the node.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets(&SECONDS_BUCKETS)
                .ok()?
                .set_buckets_for_metric(Matcher::Full("skiff_snapshot_size_bytes".into()), &size_buckets())
                .ok()?
                .set_buckets_for_metric(Matcher::Full("skiff_wal_entries_per_sync".into()), &count_buckets())
                .ok()?
                .set_buckets_for_metric(Matcher::Full("skiff_apply_batch_entries".into()), &count_buckets())
                .ok()?
                .idle_timeout(MetricKindMask::GAUGE, Some(STALE_GAUGE));
            builder.install_recorder().ok()
        })
        .as_ref()
}

/// Sets what the node's status says of each peer: connected, last contact, round trip,
/// match lag (on the leader), and the transport's dropped messages to it.
pub fn record_peers(node: &str, status: &NodeStatus) {
    let last_index = status.last_log_id.index.0;
    for peer in &status.peers {
        let labels = [("node", node.to_string()), ("peer", peer.id.to_string())];
        let health = &peer.health;
        metrics::gauge!("skiff_peer_connected", &labels).set(if health.connected { 1.0 } else { 0.0 });
        if let Some(at) = health.last_contact {
            metrics::gauge!("skiff_peer_last_contact_seconds", &labels).set(at.elapsed().as_secs_f64());
        }
        if let Some(round_trip) = health.round_trip {
            metrics::gauge!("skiff_peer_round_trip_seconds", &labels).set(round_trip.as_secs_f64());
        }
        // Known on the leader only: how many of its entries the peer does not hold yet.
        if let Some(matched) = peer.match_index {
            let lag = last_index.saturating_sub(matched.0);
            metrics::gauge!("skiff_peer_match_lag_entries", &labels).set(lag as f64);
        }
        // The transport counts them (its queue to the peer full, the peer unreachable, a
        // message too large for a frame); this is its running total.
        let dropped = [("node", node.to_string()), ("peer", peer.id.to_string()), ("reason", "send".to_string())];
        metrics::counter!("skiff_dropped_messages_total", &dropped).absolute(health.dropped_messages);
    }
}

/// The HTTP API's request metrics (`skiff_http_requests_total` by route and code,
/// `skiff_http_request_seconds` by route), with each route and code's handles made the
/// first time it occurs: a request then costs a read lock and two atomic updates, not
/// five label strings and two registry lookups.
pub struct RequestMetrics {
    node: String,
    handles: RwLock<HashMap<RouteCode, (Counter, Histogram)>>,
}

/// A route's metric label and a response's status code.
type RouteCode = (&'static str, u16);

impl RequestMetrics {
    pub fn new(node: &str) -> RequestMetrics {
        RequestMetrics { node: node.to_string(), handles: RwLock::default() }
    }

    /// Counts one request and its latency.
    pub fn record(&self, route: &'static str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        if let Some((counter, histogram)) =
            self.handles.read().unwrap_or_else(PoisonError::into_inner).get(&(route, status))
        {
            counter.increment(1);
            histogram.record(seconds);
            return;
        }
        let node = self.node.clone();
        let counter = metrics::counter!("skiff_http_requests_total", "node" => node.clone(), "route" => route, "code" => status.to_string());
        let histogram = metrics::histogram!("skiff_http_request_seconds", "node" => node, "route" => route);
        counter.increment(1);
        histogram.record(seconds);
        self.handles.write().unwrap_or_else(PoisonError::into_inner).insert((route, status), (counter, histogram));
    }
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
