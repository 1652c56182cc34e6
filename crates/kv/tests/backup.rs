//! `GET /v1/snapshot`: a backup holds every acknowledged write, with its indexes, and says
//! where it was taken (index, term, cluster, members); with `[auth]` only a management
//! token may take one.

use std::collections::BTreeMap;
use std::io::Read;

use serde_json::Value as Json;
use skiff::{NodeId, StateMachine};
use skiff_kv::{KvStore, Retention};
use skiff_storage::BackupReader;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;

/// Every key's (value, CreateIndex, ModifyIndex), through a consistent listing of node `id`.
fn listing(cluster: &KvCluster, id: NodeId) -> BTreeMap<String, (Vec<u8>, u64, u64)> {
    let reply = cluster.client.get(id, "/v1/kv/?recurse").ok();
    let entries: Vec<Json> = serde_json::from_slice(&reply.body).unwrap();
    entries
        .iter()
        .map(|entry| {
            let value = entry["Value"].as_str().map(|text| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(text).unwrap()
            });
            let key = entry["Key"].as_str().unwrap().to_string();
            let indexes = (entry["CreateIndex"].as_u64().unwrap(), entry["ModifyIndex"].as_u64().unwrap());
            (key, (value.unwrap_or_default(), indexes.0, indexes.1))
        })
        .collect()
}

#[test]
fn a_backup_holds_every_acknowledged_write_and_says_where_it_was_taken() {
    let cluster = KvCluster::start(ClusterFile::builder("backup-route", 3).http().build());
    for i in 0..60u64 {
        let id = NodeId(1 + i % 3);
        cluster.client.set(id, &format!("key/{i:03}"), format!("value {i}").as_bytes());
    }
    cluster.client.set(NodeId(1), "key/007", b"rewritten");
    cluster.client.remove(NodeId(2), "key/008");
    let before = listing(&cluster, NodeId(1));
    let last_write = before.values().map(|(_, _, modify)| *modify).max().unwrap();

    // From a follower: the read barrier goes through the leader.
    let leader = cluster.leader();
    let follower = cluster.others(leader)[0];
    let reply = cluster.client.get(follower, "/v1/snapshot").ok();
    assert_eq!(reply.header("Content-Type"), Some("application/octet-stream"));
    let mut backup = BackupReader::open(&reply.body[..], "the answer").unwrap();
    let header = backup.header().clone();
    assert_eq!(header.cluster, "backup-route");
    assert_eq!(header.node, follower);
    assert_eq!(header.membership.voters, [NodeId(1), NodeId(2), NodeId(3)].into());
    assert_eq!(header.state_machine, "skiff-kv");
    assert!(
        header.last_log_id.index.0 >= last_write,
        "taken at {} before the last write {last_write}",
        header.last_log_id
    );
    assert_eq!(reply.header("X-Skiff-Index"), Some(header.last_log_id.index.0.to_string().as_str()));
    assert_eq!(reply.header("X-Skiff-Term"), Some(header.last_log_id.term.0.to_string().as_str()));

    // The data is the KV store's snapshot: restored, it holds exactly what was listed.
    let mut data = Vec::new();
    backup.read_to_end(&mut data).unwrap();
    let mut restored = KvStore::new(Retention::default());
    restored.restore(&mut &data[..]).unwrap();
    let mut from_backup = BTreeMap::new();
    for entry in restored.range(b"") {
        let key = String::from_utf8(entry.key.to_vec()).unwrap();
        from_backup.insert(key, (entry.value.to_vec(), entry.create_index, entry.modify_index));
    }
    assert_eq!(from_backup, before);
    assert!(restored.index() <= header.last_log_id.index.0);
    cluster.shutdown();
}

const TOKENS: &str = r#"
[[token]]
name = "admin"
secret = "admin-secret-0123456789"
management = true

[[token]]
name = "reader"
secret = "reader-secret-0123456789"
read = [""]
"#;

#[test]
fn with_auth_only_a_management_token_takes_a_backup() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.toml");
    std::fs::write(&tokens, TOKENS).unwrap();
    let file = ClusterFile::builder("backup-auth", 1).http().auth(&tokens, "admin-secret-0123456789").build();
    let cluster = KvCluster::start(file);
    let n1 = NodeId(1);
    cluster.client.set(n1, "secret", b"s3cr3t");
    for token in [None, Some("reader-secret-0123456789".to_string())] {
        let reply = cluster.client.with_token(token.clone()).get(n1, "/v1/snapshot");
        assert_eq!(reply.status, 403, "{token:?}: {}", reply.text());
        assert!(!reply.body.windows(6).any(|window| window == b"s3cr3t"), "{token:?} saw the data");
    }
    let reply = cluster.client.get(n1, "/v1/snapshot").ok();
    assert!(BackupReader::open(&reply.body[..], "the answer").is_ok());
    cluster.shutdown();
}
