//! `/metrics` on a running cluster: the metrics of docs/metrics.md are there with values
//! that follow what the cluster did (writes, replication, a stopped peer, snapshots taken
//! and installed), every metric served is documented, and the Grafana dashboard uses only
//! documented metrics.
//!
//! One cluster test in this binary: the recorder is the process's, and its node labels
//! (`n1`..`n3`) would mix with another cluster's.

use std::collections::{BTreeMap, BTreeSet};

use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::{HttpClient, KvCluster};
use skiff_testkit::wait::eventually_ok;

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The samples of a Prometheus text answer (our label values hold no `,` or `"`).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("a sample line: {line:?}"));
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("a sample value: {line:?}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or_else(|| panic!("a label: {line:?}"));
                    (key.to_string(), value.trim_matches('"').to_string())
                })
                .collect();
            Sample { name: name.to_string(), labels, value }
        })
        .collect()
}

/// One node's scrape.
struct Scrape {
    node: NodeId,
    samples: Vec<Sample>,
}

impl Scrape {
    fn of(client: &HttpClient, node: NodeId) -> Scrape {
        Scrape { node, samples: parse(&client.get(node, "/metrics").ok().text()) }
    }

    /// The sum of this node's samples of `name` that carry `labels`; `None` when there is none.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let node = self.node.to_string();
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|sample| sample.name == name && sample.labels.get("node") == Some(&node))
            .filter(|sample| {
                labels.iter().all(|(key, value)| sample.labels.get(*key).map(String::as_str) == Some(value))
            })
            .map(|sample| sample.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// As [`Scrape::get`], which must be there.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| panic!("{}: no {name} {labels:?}", self.node))
    }
}

/// `client`'s scrape of `node` once `check` accepts it.
fn scrape_until(
    client: &HttpClient,
    node: NodeId,
    what: &str,
    check: impl Fn(&Scrape) -> Result<(), String>,
) -> Scrape {
    eventually_ok(format!("{node}: {what}"), || {
        let scrape = Scrape::of(client, node);
        check(&scrape).map(|()| scrape)
    })
}

/// The metric names of docs/metrics.md: the first column of its tables.
fn documented() -> BTreeSet<String> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/metrics.md"))
        .expect("docs/metrics.md");
    text.lines()
        .filter_map(|line| line.strip_prefix("| `"))
        .filter_map(|rest| rest.split_once('`'))
        .map(|(name, _)| name.to_string())
        .filter(|name| name.starts_with("skiff_"))
        .collect()
}

/// A histogram's series carry its name with a suffix.
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix)).unwrap_or(name)
}

const WRITES: usize = 100;

#[test]
fn metrics_follow_writes_replication_snapshots_and_a_stopped_peer() {
    // A snapshot every 20 entries, so the writes below take some, and the leader's log is
    // compacted past what a stopped follower holds.
    let file = ClusterFile::builder("metrics", 3).http().raft("snapshot_after_entries", 20).build();
    let mut cluster = KvCluster::start(file);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    // In id order: n1, the node started first, is the leader or the follower kept running.
    let [follower, stopped] = <[NodeId; 2]>::try_from(cluster.others(leader)).expect("two followers");
    cluster.stop(stopped);
    let (follower_label, stopped_label) = (follower.to_string(), stopped.to_string());

    let before = Scrape::of(&client, leader);
    let committed_before = before.get("skiff_proposals_total", &[("outcome", "committed")]).unwrap_or(0.0);
    let fsyncs_before = before.get("skiff_wal_fsync_seconds_count", &[]).unwrap_or(0.0);
    let counted = |scrape: &Scrape, name: &str| scrape.get(name, &[]).unwrap_or(0.0);
    let syncs_before = counted(&before, "skiff_wal_syncs_total");
    let appended_before = counted(&before, "skiff_wal_entries_appended_total");
    let readies_before = counted(&before, "skiff_raft_readies_total");
    let batches_before = counted(&before, "skiff_apply_batch_entries_count");
    let applied_before = counted(&before, "skiff_apply_batch_entries_sum");
    for number in 0..WRITES {
        client.put(leader, &format!("/v1/kv/m/{number:03}"), &[b'v'; 100]).ok();
    }

    let after = scrape_until(&client, leader, "caught up", |scrape| {
        let lag = scrape.get("skiff_peer_match_lag_entries", &[("peer", &follower_label)]);
        let keys = scrape.get("skiff_kv_keys", &[]);
        let taken = scrape.get("skiff_snapshot_seconds_count", &[("kind", "take")]);
        let cut_off = scrape.get("skiff_peer_connected", &[("peer", &stopped_label)]);
        match (lag, keys, taken, cut_off) {
            (Some(0.0), Some(keys), Some(taken), Some(0.0)) if keys == WRITES as f64 && taken >= 1.0 => Ok(()),
            other => Err(format!("follower lag, keys, snapshots taken, stopped peer connected: {other:?}")),
        }
    });
    // Every write through the leader is one committed proposal there.
    let committed = after.value("skiff_proposals_total", &[("outcome", "committed")]) - committed_before;
    assert!(committed >= WRITES as f64, "{committed} proposals committed for {WRITES} writes");
    // Each write was made durable: fsyncs (group commit may share one between writes).
    let fsyncs = after.value("skiff_wal_fsync_seconds_count", &[]) - fsyncs_before;
    assert!(fsyncs >= 1.0, "{fsyncs} fsyncs for {WRITES} writes");
    assert!(after.value("skiff_wal_fsync_seconds_sum", &[]) > 0.0);
    assert!(after.value("skiff_wal_append_seconds_count", &[]) >= 1.0);
    write_path_counts_agree(&after, WRITES);
    // And over the writes alone: each was appended and applied in some batch, after at
    // least one Ready and one fdatasync, and no fdatasync made more entries durable than
    // were appended in that time.
    let syncs = after.value("skiff_wal_syncs_total", &[]) - syncs_before;
    let appended = after.value("skiff_wal_entries_appended_total", &[]) - appended_before;
    assert!(syncs >= 1.0 && syncs == fsyncs, "{syncs} syncs counted, {fsyncs} fsyncs timed");
    assert!(appended >= WRITES as f64, "{appended} entries appended for {WRITES} writes");
    assert!(after.value("skiff_raft_readies_total", &[]) - readies_before >= 1.0);
    let batches = after.value("skiff_apply_batch_entries_count", &[]) - batches_before;
    let applied = after.value("skiff_apply_batch_entries_sum", &[]) - applied_before;
    assert!(batches >= 1.0 && applied >= WRITES as f64, "{applied} entries applied in {batches} batches");
    let all_appends = after.value("skiff_wal_append_seconds_bucket", &[("le", "+Inf")]);
    assert_eq!(all_appends, after.value("skiff_wal_append_seconds_count", &[]), "the +Inf bucket counts every append");
    // The follower's WAL too: every node records, also the first started, whose store was
    // opened before any other (the recorder must be installed before a node starts).
    let replicated = scrape_until(&client, follower, "applied every write", |scrape| {
        let keys = scrape.get("skiff_kv_keys", &[]);
        if keys == Some(WRITES as f64) { Ok(()) } else { Err(format!("keys: {keys:?}")) }
    });
    assert!(replicated.value("skiff_wal_fsync_seconds_count", &[]) >= 1.0, "{follower}: fsyncs");
    assert!(replicated.value("skiff_wal_append_seconds_count", &[]) >= 1.0, "{follower}: appends");
    write_path_counts_agree(&replicated, WRITES);
    // The leader campaigned at least once to become leader.
    assert!(after.value("skiff_raft_elections_total", &[]) >= 1.0);
    // Per peer: the follower in touch, the stopped one not, and behind by at least the writes.
    assert_eq!(after.value("skiff_peer_connected", &[("peer", &follower_label)]), 1.0);
    let contact = after.value("skiff_peer_last_contact_seconds", &[("peer", &follower_label)]);
    assert!((0.0..5.0).contains(&contact), "last contact with a live follower {contact} s ago");
    let behind = after.value("skiff_peer_match_lag_entries", &[("peer", &stopped_label)]);
    assert!(behind >= WRITES as f64, "the stopped follower is {behind} entries behind");
    for peer in [&follower_label, &stopped_label] {
        assert!(after.get("skiff_dropped_messages_total", &[("peer", peer), ("reason", "send")]).is_some(), "{peer}");
    }
    // Snapshots: the first holds the keys of at least 10 writes (105 bytes each).
    let size = after.value("skiff_snapshot_size_bytes_sum", &[("kind", "take")]);
    assert!(size >= 1050.0, "snapshots of {size} bytes in all");
    assert!(after.get("skiff_snapshot_size_bytes_bucket", &[("kind", "take"), ("le", "1024")]).is_some());
    assert_eq!(after.value("skiff_kv_keyspace_bytes", &[]), (WRITES * (5 + 100)) as f64);

    // The stopped follower comes back: the leader's log no longer holds what it lacks, so it
    // installs a snapshot, and applies the rest.
    cluster.start_node(stopped);
    let back = scrape_until(&client, stopped, "restored from the leader's snapshot", |scrape| {
        let restored = scrape.get("skiff_snapshot_seconds_count", &[("kind", "restore")]);
        let (keys, lag) = (scrape.get("skiff_kv_keys", &[]), scrape.get("skiff_apply_lag_entries", &[]));
        match (restored, keys, lag) {
            (Some(restored), Some(keys), Some(0.0)) if restored >= 1.0 && keys == WRITES as f64 => Ok(()),
            other => Err(format!("snapshots restored, keys, apply lag: {other:?}")),
        }
    });
    assert!(back.value("skiff_snapshot_size_bytes_sum", &[("kind", "restore")]) > 0.0);
    // Only a leader knows its peers' match indexes: the follower shows none.
    assert_eq!(back.get("skiff_peer_match_lag_entries", &[]), None);
    scrape_until(&client, leader, "the stopped follower caught up", |scrape| {
        let lag = scrape.get("skiff_peer_match_lag_entries", &[("peer", &stopped_label)]);
        if lag == Some(0.0) { Ok(()) } else { Err(format!("{lag:?}")) }
    });

    // Everything served is documented.
    let documented = documented();
    let served: BTreeSet<&str> = after.samples.iter().chain(&back.samples).map(|sample| family(&sample.name)).collect();
    let missing: Vec<&&str> = served.iter().filter(|name| !documented.contains(**name)).collect();
    assert!(missing.is_empty(), "served but not in docs/metrics.md: {missing:?}");
    cluster.shutdown();
}

/// The write path's counts on a node that has taken at least `writes` writes (as leader or
/// follower) since it started, and applied them: they agree with each other.
fn write_path_counts_agree(scrape: &Scrape, writes: usize) {
    let node = scrape.node;
    let syncs = scrape.value("skiff_wal_syncs_total", &[]);
    let appended = scrape.value("skiff_wal_entries_appended_total", &[]);
    let readies = scrape.value("skiff_raft_readies_total", &[]);
    assert!(syncs >= 1.0, "{node}: {syncs} syncs");
    assert!(appended >= writes as f64, "{node}: {appended} entries appended for {writes} writes");
    // Every fdatasync is timed too; the driver syncs at most once per Ready, and once after
    // each snapshot it takes (the log is compacted).
    assert_eq!(syncs, scrape.value("skiff_wal_fsync_seconds_count", &[]), "{node}: syncs counted and timed");
    let taken = scrape.get("skiff_snapshot_seconds_count", &[("kind", "take")]).unwrap_or(0.0);
    assert!(readies + taken >= syncs, "{node}: {readies} Readies and {taken} snapshots, {syncs} syncs");
    // The histogram: one observation per sync, and the entries it made durable add up to at
    // most what was appended (the rest not yet synced, or made durable by a segment's roll).
    let per_sync = |suffix: &str| scrape.value(&format!("skiff_wal_entries_per_sync{suffix}"), &[]);
    assert_eq!(per_sync("_count"), syncs, "{node}: one observation per sync");
    let all = scrape.value("skiff_wal_entries_per_sync_bucket", &[("le", "+Inf")]);
    assert_eq!(all, syncs, "{node}: the +Inf bucket counts every sync");
    let durable = per_sync("_sum");
    assert!(durable <= appended && durable >= writes as f64, "{node}: {durable} entries synced, {appended} appended");
    // Applied: every committed entry in one batch, so at least the writes, in at least one.
    let batches = scrape.value("skiff_apply_batch_entries_count", &[]);
    let applied = scrape.value("skiff_apply_batch_entries_sum", &[]);
    assert!(batches >= 1.0 && applied >= writes as f64, "{node}: {applied} entries applied in {batches} batches");
    assert!(applied <= appended, "{node}: {applied} applied, {appended} appended");
}

#[test]
fn the_dashboard_uses_only_documented_metrics() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-dashboard.json");
    let text = std::fs::read_to_string(path).expect("docs/grafana-dashboard.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut used = BTreeSet::new();
    for panel in panels {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| panic!("a target without expr: {target}"));
            let names =
                expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("skiff_"));
            used.extend(names.map(|name| family(name).to_string()));
        }
    }
    assert!(used.len() >= 10, "the dashboard uses {used:?}");
    let documented = documented();
    let missing: Vec<&String> = used.iter().filter(|name| !documented.contains(*name)).collect();
    assert!(missing.is_empty(), "in the dashboard but not in docs/metrics.md: {missing:?}");
}
