//! Backups and the last resort, as an operator runs them: `skiff snapshot save` under
//! write load, `skiff snapshot restore` into a new 3-node cluster (every key acknowledged
//! before the save is there with its value and indexes), `inspect` and `restore` of
//! damaged and crafted files, and `skiff recover` of the one node left of three, to which
//! two new nodes are added.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{Cluster, SKIFF, skiff, stderr, stdout};
use serde_json::Value as Json;
use skiff::NodeId;
use skiff_storage::{BackupHeader, BackupWriter};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::HttpClient;
use skiff_testkit::process::spawn_demo;
use skiff_testkit::wait::eventually_ok;

/// Every key under `prefix` with its (value, CreateIndex, ModifyIndex), by a consistent
/// listing through node `id`.
fn listing(client: &HttpClient, id: NodeId, prefix: &str) -> BTreeMap<String, (Vec<u8>, u64, u64)> {
    let reply = client.get(id, &format!("/v1/kv/{prefix}?recurse"));
    if reply.status == 404 {
        return BTreeMap::new();
    }
    let entries: Vec<Json> = serde_json::from_slice(&reply.ok().body).unwrap();
    entries
        .iter()
        .map(|entry| {
            use base64::Engine;
            let value = entry["Value"].as_str().map(|text| base64::engine::general_purpose::STANDARD.decode(text));
            let key = entry["Key"].as_str().unwrap().to_string();
            let indexes = (entry["CreateIndex"].as_u64().unwrap(), entry["ModifyIndex"].as_u64().unwrap());
            (key, (value.transpose().unwrap().unwrap_or_default(), indexes.0, indexes.1))
        })
        .collect()
}

/// Waits until the nodes `ids` name the same leader, one of them; returns it.
fn wait_for_leader(client: &HttpClient, ids: &[NodeId]) -> NodeId {
    eventually_ok(format!("an agreed leader among {ids:?}"), || {
        let mut leaders = Vec::new();
        for &id in ids {
            let reply = client.try_request("GET", id, "/v1/skiff/status", None, &[])?;
            if reply.status != 200 {
                return Err(format!("{id}: HTTP {}", reply.status));
            }
            leaders.push(reply.json()["leader"].as_str().map(str::to_string));
        }
        match leaders.first() {
            Some(Some(leader)) if leaders.iter().all(|known| known.as_deref() == Some(leader)) => {
                let leader = skiff::config::parse_node_id(leader).unwrap();
                if ids.contains(&leader) { Ok(leader) } else { Err(format!("{leader}, not one of them")) }
            }
            _ => Err(format!("{leaders:?}")),
        }
    })
}

fn run(args: &[&str]) -> Output {
    skiff().args(args).output().expect("run skiff")
}

fn ok(args: &[&str]) -> String {
    let output = run(args);
    assert!(output.status.success(), "skiff {args:?} failed: {}", stderr(&output));
    stdout(&output)
}

/// `skiff ARGS` must fail with exit code 1 and an error containing `wanted`.
fn fails(args: &[&str], wanted: &str) {
    let output = run(args);
    assert_eq!(output.status.code(), Some(1), "skiff {args:?}: {output:?}");
    assert!(stderr(&output).contains(wanted), "skiff {args:?}: wanted {wanted:?} in {}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

fn path(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// Writers that put unique keys `load/<writer>/<n>` until stopped, recording each
/// acknowledged key in order.
struct Load {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(client: &HttpClient, writers: u64) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..writers)
            .map(|writer| {
                let (client, stop, acknowledged) = (client.clone(), Arc::clone(&stop), Arc::clone(&acknowledged));
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("load/{writer}/{n:06}");
                        let id = NodeId(1 + (n + writer) % 3);
                        match client.try_request("PUT", id, &format!("/v1/kv/{key}"), Some(key.as_bytes()), &[]) {
                            Ok(reply) if reply.status == 200 && reply.body == b"true" => {
                                acknowledged.lock().unwrap().push(key);
                            }
                            _ => {} // not acknowledged: not checked
                        }
                        n += 1;
                    }
                })
            })
            .collect();
        Load { stop, acknowledged, threads }
    }

    /// The keys acknowledged so far.
    fn acknowledged(&self) -> Vec<String> {
        self.acknowledged.lock().unwrap().clone()
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        self.acknowledged.lock().unwrap().clone()
    }
}

/// The `cluster-id` a data directory's `node-id` file records.
fn cluster_id(data_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(data_dir.join("node-id")).ok()?;
    text.lines().find_map(|line| line.strip_prefix("cluster-id ").map(str::to_string))
}

#[test]
fn a_backup_saved_under_load_restores_into_a_new_cluster_with_every_acknowledged_key() {
    let file = ClusterFile::builder("backup-old", 3).http().raft("snapshot_after_entries", 300).build();
    let old = Cluster::start_file(SKIFF, file);
    let client = HttpClient::for_file(&old.file);
    // Keys whose CreateIndex and ModifyIndex differ.
    for i in 0..20 {
        client.set(NodeId(1), &format!("base/{i:02}"), b"first");
        client.set(NodeId(2), &format!("base/{i:02}"), format!("second {i}").as_bytes());
    }
    client.set(NodeId(3), "base/binary", &[0, 159, 146, 150, 255]);

    let load = Load::start(&client, 3);
    eventually_ok("writes under way", || {
        let count = load.acknowledged().len();
        if count >= 200 { Ok(()) } else { Err(count) }
    });
    let before_save = load.acknowledged();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("cluster.snap");
    let endpoints = old.endpoints.join(",");
    let saved = ok(&["snapshot", "save", path(&backup), "--endpoints", &endpoints]);
    assert!(saved.starts_with(&format!("saved {}: index ", backup.display())), "{saved}");
    let all_acknowledged = load.stop();
    assert!(!dir.path().join("cluster.snap.tmp").exists());

    // What the old cluster holds for the keys acknowledged before the save: each load key
    // is written once, so its indexes are final.
    let base = listing(&client, NodeId(1), "base/");
    let load_keys = listing(&client, NodeId(2), "load/");
    for key in &all_acknowledged {
        assert!(load_keys.contains_key(key), "the old cluster lost acknowledged {key}");
    }

    let inspected: Json = serde_json::from_str(&ok(&["snapshot", "inspect", path(&backup), "--json"])).unwrap();
    assert_eq!(inspected["cluster"], "backup-old");
    assert_eq!(inspected["checksum"], "ok");
    assert_eq!(inspected["voters"], serde_json::json!(["n1", "n2", "n3"]));
    let index = inspected["index"].as_u64().unwrap();
    let keys = inspected["keys"].as_u64().unwrap();
    assert!(keys as usize >= base.len() + before_save.len(), "{keys} keys");
    let text = ok(&["snapshot", "inspect", path(&backup)]);
    for wanted in ["cluster     backup-old", &format!("index       {index}"), "checksum    ok", &format!("{keys} keys")]
    {
        assert!(text.contains(wanted), "wanted {wanted:?} in:\n{text}");
    }

    // A new cluster, elsewhere, under another name: each member restored, then started.
    let new_dir = tempfile::tempdir().unwrap();
    let new_file = ClusterFile::builder("backup-new", 3).http().build();
    let config = new_file.write(new_dir.path());
    let data = new_dir.path().join("data");
    for id in ["n1", "n2", "n3"] {
        let dir = data.join(id);
        let restored = ok(&[
            "snapshot",
            "restore",
            path(&backup),
            "--config",
            path(&config),
            "--id",
            id,
            "--data-dir",
            path(&dir),
        ]);
        assert!(restored.contains(&format!("index {index}")), "{restored}");
    }
    // Not twice into the same directory.
    let again = ["snapshot", "restore", path(&backup), "--config", path(&config), "--id", "n1"];
    fails(&[&again[..], &["--data-dir", path(&data.join("n1"))]].concat(), "is not empty");

    let mut demo = Process(spawn_demo(SKIFF, new_dir.path(), &config));
    let new_client = HttpClient::for_file(&new_file);
    wait_for_leader(&new_client, &[NodeId(1), NodeId(2), NodeId(3)]);
    let restored_base = listing(&new_client, NodeId(3), "base/");
    assert_eq!(restored_base, base, "values, CreateIndex and ModifyIndex as they were");
    let restored_load = listing(&new_client, NodeId(1), "load/");
    for key in &before_save {
        assert_eq!(restored_load.get(key), load_keys.get(key), "{key}, acknowledged before the save");
    }
    for (key, entry) in &restored_load {
        assert_eq!(Some(entry), load_keys.get(key), "{key} is in the backup as the old cluster has it");
        assert!(entry.2 <= index, "{key} was written at {} after the backup's index {index}", entry.2);
    }
    // The new cluster goes on from the backup's index, under a new cluster id.
    let put = new_client.put(NodeId(2), "/v1/kv/after-restore", b"new");
    assert_eq!(put.status, 200, "{}", put.text());
    let after = listing(&new_client, NodeId(2), "after-restore");
    assert!(after["after-restore"].1 > index, "{after:?} after index {index}");
    let old_id = cluster_id(&old.dir.path().join("data").join("n1")).expect("the old cluster's id");
    let new_id = cluster_id(&data.join("n1")).expect("the new cluster's id");
    assert_ne!(old_id, new_id);
    for id in ["n2", "n3"] {
        assert_eq!(cluster_id(&data.join(id)).as_deref(), Some(new_id.as_str()), "{id} adopted the new id");
    }
    demo.stop();
}

#[test]
fn damaged_truncated_and_crafted_backups_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let header = BackupHeader {
        last_log_id: skiff::LogId::new(skiff::Term(2), skiff::Index(50)),
        cluster: "crafted".into(),
        membership: skiff::Membership::with_voters([NodeId(1)]),
        node: NodeId(1),
        created_unix_ms: 0,
        state_machine: "skiff-kv".into(),
    };
    let mut writer = BackupWriter::new(Vec::new(), &header).unwrap();
    writer.write_all(&[7u8; 5000]).unwrap();
    let (good, _) = writer.finish().unwrap();
    let write = |name: &str, bytes: &[u8]| -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let truncated = write("truncated.snap", &good[..good.len() - 30]);
    let mut flipped = good.clone();
    flipped[good.len() / 2] ^= 0x10;
    let flipped = write("flipped.snap", &flipped);
    let mut huge = good[..12].to_vec();
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    let huge = write("huge-header.snap", &huge);
    let garbage = write("garbage.snap", b"PK\x03\x04 not a backup at all");
    let empty = write("empty.snap", b"");
    let missing = dir.path().join("missing.snap");

    let cases = [
        (&truncated, "cut short"),
        (&flipped, "does not match its checksum"),
        (&huge, "a header of 4294967295 bytes"),
        (&garbage, "is not a Skiff backup"),
        (&empty, "cut short"),
        (&missing, "cannot open"),
    ];
    let config = ClusterFile::builder("restore-target", 1).http().build().write(dir.path());
    for (file, wanted) in cases {
        fails(&["snapshot", "inspect", path(file)], wanted);
        let data_dir = dir.path().join("data");
        fails(
            &[
                "snapshot",
                "restore",
                path(file),
                "--config",
                path(&config),
                "--id",
                "n1",
                "--data-dir",
                path(&data_dir),
            ],
            wanted,
        );
        assert!(!data_dir.join("node-id").exists(), "{}: a damaged backup seeded a directory", file.display());
    }

    // The good one inspects; its data is not a KV snapshot, which the count says nothing of.
    let good = write("good.snap", &good);
    let text = ok(&["snapshot", "inspect", path(&good)]);
    assert!(text.contains("checksum    ok") && text.contains("index       50"), "{text}");
    // Another state machine's backup is not restored.
    let mut other = header.clone();
    other.state_machine = "counter".into();
    let (bytes, _) = BackupWriter::new(Vec::new(), &other).unwrap().finish().unwrap();
    let other = write("other.snap", &bytes);
    let data_dir = dir.path().join("other-data");
    fails(
        &["snapshot", "restore", path(&other), "--config", path(&config), "--id", "n1", "--data-dir", path(&data_dir)],
        "not a skiff-kv one",
    );
}

/// A child process killed (and reaped) when dropped.
struct Process(Child);

impl Process {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `skiff serve` of node `id` with its data in `dir/<id>`, logging to `dir/<id>.log`.
fn serve(dir: &Path, config: &Path, id: &str) -> Process {
    let log = std::fs::File::options().create(true).append(true).open(dir.join(format!("{id}.log"))).unwrap();
    let child = skiff()
        .args(["serve", "--config", path(config), "--id", id, "--data-dir", path(&dir.join(id))])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start skiff serve");
    Process(child)
}

#[test]
fn the_last_node_of_three_recovers_as_a_new_cluster_and_two_new_nodes_join_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("recover", 3).http().joiners(2).raft("snapshot_after_entries", 50).build();
    let config = file.write(dir.path());
    let client = HttpClient::for_file(&file);
    let mut nodes: BTreeMap<&str, Process> =
        ["n1", "n2", "n3"].into_iter().map(|id| (id, serve(dir.path(), &config, id))).collect();
    wait_for_leader(&client, &[NodeId(1), NodeId(2), NodeId(3)]);
    for i in 0..120 {
        client.set(NodeId(1 + i % 3), &format!("key/{i:03}"), format!("value {i}").as_bytes());
    }
    let before = listing(&client, NodeId(1), "key/");
    assert_eq!(before.len(), 120);

    // n2 and n3 are lost for good.
    for id in ["n2", "n3"] {
        nodes.remove(id);
        std::fs::remove_dir_all(dir.path().join(id)).unwrap();
    }
    let n1_dir = dir.path().join("n1");
    let recover = ["recover", "--config", path(&config), "--id", "n1", "--data-dir", path(&n1_dir)];
    fails(&recover, "in use by another process");
    nodes.remove("n1");
    fails(&[&recover[..], &["--members", "n1,n2"]].concat(), "recover makes a cluster of this one node");
    fails(
        &["recover", "--config", path(&config), "--id", "n1", "--data-dir", path(&dir.path().join("typo"))],
        "not a Skiff data directory",
    );
    let old_id = cluster_id(&n1_dir).unwrap();
    let said = ok(&[&recover[..], &["--members", "n1"]].concat());
    assert!(said.contains("one-member cluster"), "{said}");
    assert_ne!(cluster_id(&n1_dir).unwrap(), old_id, "a new cluster id");

    nodes.insert("n1", serve(dir.path(), &config, "n1"));
    assert_eq!(wait_for_leader(&client, &[NodeId(1)]), NodeId(1));
    assert_eq!(listing(&client, NodeId(1), "key/"), before, "every key, with its indexes");
    client.set(NodeId(1), "key/after-recover", b"alone");

    // Two new nodes, with empty data directories, are added back.
    let endpoint = file.node(NodeId(1)).http.clone().unwrap();
    for id in ["n4", "n5"] {
        nodes.insert(id, serve(dir.path(), &config, id));
        ok(&["members", "add", id, "--endpoints", &endpoint]);
    }
    let members: Json = serde_json::from_str(&ok(&["members", "list", "--json", "--endpoints", &endpoint])).unwrap();
    let voters: Vec<&str> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|member| member["voter"] == true)
        .map(|member| member["id"].as_str().unwrap())
        .collect();
    assert_eq!(voters, ["n1", "n4", "n5"], "{members}");

    // Now n1 goes too: n4 and n5 are a quorum and hold everything.
    nodes.remove("n1");
    let leader = wait_for_leader(&client, &[NodeId(4), NodeId(5)]);
    let mut after = listing(&client, leader, "key/");
    assert_eq!(after.remove("key/after-recover").map(|(value, _, _)| value), Some(b"alone".to_vec()));
    assert_eq!(after, before);
    for id in ["n4", "n5"] {
        assert_eq!(cluster_id(&dir.path().join(id)), cluster_id(&n1_dir), "{id} joined the new cluster");
    }
}
