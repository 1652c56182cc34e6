//! Key-value: every route and parameter, through every node; then without a quorum.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};
use skiff_testkit::wait::eventually;

use crate::{
    KvClient, KvReply, Setup, create_index, expected_keys, kv_path, modify_index, recurse_entries, value_of,
    whole_store,
};

/// A write through each node is read back through each node (consistent reads by default),
/// with the documented entry and headers.
#[test]
fn a_write_through_any_node_is_read_through_every_node_with_the_documented_headers() {
    let Setup { cluster, client, leader, ids, .. } = Setup::start("http-kv-every-node");
    for &writer in &ids {
        let key = format!("every/{writer}");
        let value = format!("written through {writer}").into_bytes();
        client.set(writer, &key, &value);
        let mut indexes = BTreeSet::new();
        for &reader in &ids {
            let reply = client.get(reader, &kv_path(&key)).ok();
            let index = reply.index();
            assert_eq!(reply.known_leader(), "true", "{}", reply.what);
            let contact = reply.last_contact();
            if reader == leader {
                assert_eq!(contact, 0, "{}: X-Consul-LastContact on the leader", reply.what);
            } else {
                assert!(contact < 5_000, "{}: X-Consul-LastContact {contact} ms on a healthy follower", reply.what);
            }
            let what = reply.what.clone();
            let entry = reply.entry();
            assert_eq!(entry["Key"], key.as_str(), "{what}");
            assert_eq!(value_of(&entry), value, "{what}: {entry}");
            assert_eq!(create_index(&entry), modify_index(&entry), "{what}: a new key: {entry}");
            assert_eq!(entry["Flags"], 0, "{what}: {entry}");
            assert_eq!(index, modify_index(&entry), "{what}: X-Consul-Index is the key's ModifyIndex");
            indexes.insert(modify_index(&entry));
        }
        assert_eq!(indexes.len(), 1, "every node reads the same ModifyIndex for {key}: {indexes:?}");
    }
    cluster.shutdown();
}

/// Linearizable: a write through one node, acknowledged, is seen at once by a consistent
/// read through another (a follower that may not have it yet), and indexes only grow.
#[test]
fn an_acknowledged_write_is_seen_at_once_by_a_consistent_read_through_another_node() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-kv-linearizable");
    let mut last_index = 0;
    for i in 0..12 {
        let writer = [f1, leader, f2][i % 3];
        let reader = if writer == f1 { f2 } else { f1 };
        let value = format!("v{i}");
        client.set(writer, "linear", value.as_bytes());
        let path = if i % 2 == 0 { "/v1/kv/linear" } else { "/v1/kv/linear?consistent" };
        let entry = client.get(reader, path).entry();
        assert_eq!(value_of(&entry), value.as_bytes(), "write {i} through {writer}, read through {reader}: {entry}");
        assert!(modify_index(&entry) > last_index, "write {i}: ModifyIndex does not grow: {entry}");
        assert!(create_index(&entry) < modify_index(&entry) || i == 0, "write {i}: CreateIndex moved: {entry}");
        last_index = modify_index(&entry);
    }
    cluster.shutdown();
}

/// An update keeps CreateIndex and moves ModifyIndex.
#[test]
fn an_update_keeps_create_index_and_moves_modify_index() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-kv-update");
    client.set(leader, "every/n1", b"written through n1");
    let before = client.entry(f1, "every/n1");
    client.set(f2, "every/n1", b"updated");
    let after = client.entry(leader, "every/n1");
    assert_eq!(create_index(&after), create_index(&before), "{after}");
    assert!(modify_index(&after) > modify_index(&before), "{before} then {after}");
    assert_eq!(value_of(&after), b"updated");
    cluster.shutdown();
}

/// A missing key: 404, empty body, still with the headers, through every node.
#[test]
fn a_missing_key_is_404_with_an_empty_body_and_the_headers() {
    let Setup { cluster, client, leader, ids, .. } = Setup::start("http-kv-missing");
    client.set(leader, "present", b"so the store has an index");
    for &id in &ids {
        let reply = client.get(id, "/v1/kv/no/such/key").expect(404);
        assert!(reply.body.is_empty(), "{}: a 404 has an empty body, got {:?}", reply.what, reply.text());
        reply.index();
        assert_eq!(reply.known_leader(), "true", "{}", reply.what);
        reply.last_contact();
        client.get(id, "/v1/kv/no/such/key?raw").expect(404);
        client.get(id, "/v1/kv/no/such/key?stale").expect(404);
    }
    cluster.shutdown();
}

/// Flags: an unsigned 64-bit number, round-tripped, through a follower.
#[test]
fn flags_are_an_unsigned_64_bit_number_kept_with_the_value() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-kv-flags");
    assert!(client.put(f1, "/v1/kv/flagged?flags=18446744073709551615", b"f").boolean());
    let entry = client.entry(f2, "flagged");
    assert_eq!(entry["Flags"].as_u64(), Some(u64::MAX), "{entry}");
    assert!(client.put(f2, "/v1/kv/flagged?flags=42", b"g").boolean());
    let entry = client.entry(leader, "flagged");
    assert_eq!((entry["Flags"].as_u64(), value_of(&entry)), (Some(42), b"g".to_vec()), "{entry}");
    cluster.shutdown();
}

/// An empty value is `null`, and `?raw` gives an empty body; binary values keep every
/// byte, through `?raw` and through base64.
#[test]
fn empty_and_binary_values_round_trip_through_raw_and_base64() {
    let Setup { cluster, client, leader, f1, f2, ids } = Setup::start("http-kv-values");
    client.set(f1, "empty", b"");
    let entry = client.entry(f2, "empty");
    assert_eq!(entry["Value"], Value::Null, "an empty value: {entry}");
    let raw = client.get(leader, "/v1/kv/empty?raw").ok();
    assert!(raw.body.is_empty(), "{}: {:?}", raw.what, raw.text());

    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    client.set(f2, "binary", &binary);
    for &id in &ids {
        let raw = client.get(id, "/v1/kv/binary?raw").ok();
        assert_eq!(raw.body, binary, "{}: raw bytes", raw.what);
        let content_type = raw.header("Content-Type").unwrap_or_default();
        assert!(content_type.starts_with("application/octet-stream"), "{}: Content-Type {content_type:?}", raw.what);
        assert_eq!(value_of(&client.entry(id, "binary")), binary, "GET {id} binary: base64 Value");
    }
    cluster.shutdown();
}

/// Percent-encoded keys are decoded: UTF-8 and spaces.
#[test]
fn percent_encoded_keys_are_decoded() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-kv-encoded");
    client.set(f1, "enc/caf%C3%A9%20au%20lait", b"latte");
    let entry = client.get(f2, "/v1/kv/enc/caf%C3%A9%20au%20lait").entry();
    assert_eq!(entry["Key"], "enc/café au lait", "{entry}");
    assert_eq!(client.get(leader, "/v1/kv/enc/?keys").ok().json(), json!(["enc/café au lait"]));
    cluster.shutdown();
}

/// PUT with cas: cas=0 creates only, cas=N replaces only at ModifyIndex N.
#[test]
fn put_with_cas_creates_only_at_0_and_replaces_only_at_the_modify_index() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-kv-cas");
    assert!(client.put(f1, "/v1/kv/cas-key?cas=0", b"created").boolean(), "cas=0 on an absent key");
    assert!(!client.put(f2, "/v1/kv/cas-key?cas=0", b"again").boolean(), "cas=0 on a present key");
    let entry = client.entry(leader, "cas-key");
    assert_eq!(value_of(&entry), b"created", "a failed cas changed the value: {entry}");
    let index = modify_index(&entry);
    assert!(!client.put(leader, &format!("/v1/kv/cas-key?cas={}", index + 1000), b"wrong").boolean());
    assert!(!client.put(f1, &format!("/v1/kv/cas-key?cas={}", index - 1), b"wrong").boolean());
    assert_eq!(modify_index(&client.entry(f2, "cas-key")), index, "a failed cas moved ModifyIndex");
    assert!(client.put(f2, &format!("/v1/kv/cas-key?cas={index}"), b"swapped").boolean(), "cas at ModifyIndex");
    let entry = client.entry(f1, "cas-key");
    assert_eq!(value_of(&entry), b"swapped", "{entry}");
    assert!(!client.put(f1, &format!("/v1/kv/cas-key?cas={index}"), b"stale cas").boolean(), "cas at an old index");
    cluster.shutdown();
}

/// The keys of [`a_tree`], and a few outside it.
const TREE: [&str; 6] = ["tree/a", "tree/b/c", "tree/b/d", "tree/b/e/f", "treehouse", "tree/e"];

/// Writes a tree (through every node) and a few other keys; returns the model of the
/// store. "treehouse" shares the prefix "tree" but not "tree/".
fn a_tree(setup: &Setup) -> BTreeMap<String, Vec<u8>> {
    let mut model = BTreeMap::new();
    for (key, value) in [("every/n1", "updated"), ("linear", "v11"), ("enc/café au lait", "latte"), ("empty", "")] {
        setup.client.set(setup.leader, &key.replace(' ', "%20").replace('é', "%C3%A9"), value.as_bytes());
        model.insert(key.to_string(), value.as_bytes().to_vec());
    }
    for (i, key) in TREE.iter().enumerate() {
        setup.client.set(setup.ids[i % 3], key, key.as_bytes());
        model.insert(key.to_string(), key.as_bytes().to_vec());
    }
    model
}

/// `?recurse` and `?keys` (with and without a separator) list a prefix in key order,
/// through every node; X-Consul-Index is the highest ModifyIndex read.
#[test]
fn recurse_and_keys_list_a_prefix_in_key_order() {
    let setup = Setup::start("http-kv-tree");
    let model = a_tree(&setup);
    let client = &setup.client;
    for &id in &setup.ids {
        let reply = client.get(id, "/v1/kv/tree/?recurse").ok();
        let entries = recurse_entries(&reply);
        let keys: Vec<&str> = entries.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(keys, ["tree/a", "tree/b/c", "tree/b/d", "tree/b/e/f", "tree/e"], "{}", reply.what);
        for (key, value, _) in &entries {
            assert_eq!(value, key.as_bytes(), "{}: {key}", reply.what);
        }
        let highest = entries.iter().map(|(_, _, index)| *index).max().expect("entries");
        assert_eq!(reply.index(), highest, "{}: X-Consul-Index is the highest ModifyIndex read", reply.what);

        let reply = client.get(id, "/v1/kv/tree?recurse").ok();
        let keys: Vec<String> = recurse_entries(&reply).into_iter().map(|(key, _, _)| key).collect();
        assert_eq!(keys, expected_keys(&model, "tree", None), "{}", reply.what);
        assert_eq!(keys.last().map(String::as_str), Some("treehouse"), "{}", reply.what);

        // keys, without and with a separator.
        assert_eq!(
            client.get(id, "/v1/kv/tree/?keys").ok().json(),
            json!(["tree/a", "tree/b/c", "tree/b/d", "tree/b/e/f", "tree/e"]),
            "GET {id} tree/?keys"
        );
        assert_eq!(
            client.get(id, "/v1/kv/tree/?keys&separator=/").ok().json(),
            json!(["tree/a", "tree/b/", "tree/e"]),
            "GET {id} tree/?keys&separator=/"
        );
        assert_eq!(
            client.get(id, "/v1/kv/tree/b/?keys&separator=/").ok().json(),
            json!(["tree/b/c", "tree/b/d", "tree/b/e/"]),
            "GET {id} tree/b/?keys&separator=/"
        );
        assert_eq!(
            client.get(id, "/v1/kv/?keys&separator=/").ok().json(),
            json!(expected_keys(&model, "", Some('/'))),
            "GET {id} ?keys&separator=/"
        );
        assert_eq!(
            client.get(id, "/v1/kv/?keys").ok().json(),
            json!(expected_keys(&model, "", None)),
            "GET {id} ?keys"
        );
        // No key under the prefix.
        client.get(id, "/v1/kv/nothing/here/?recurse").expect(404);
    }

    // The whole store, from the empty prefix, in key order.
    for &id in &setup.ids {
        let (what, entries) = whole_store(client, id);
        assert_eq!(entries, model, "{what}: the whole store");
    }
    setup.shutdown();
}

/// Stale reads: answered from the node's copy, which catches up; LastContact is there.
#[test]
fn a_stale_read_answers_from_the_nodes_copy_which_catches_up() {
    let Setup { cluster, client, leader, f1, ids, .. } = Setup::start("http-kv-stale");
    client.set(leader, "stale/k", b"s");
    for &id in &ids {
        eventually(format!("a stale read on {id} sees stale/k"), || {
            let reply = client.get(id, "/v1/kv/stale/k?stale");
            if reply.status == 404 {
                return false;
            }
            let contact = reply.last_contact();
            assert_eq!(reply.known_leader(), "true", "{}", reply.what);
            if id == leader {
                assert_eq!(contact, 0, "{}: X-Consul-LastContact on the leader", reply.what);
            }
            value_of(&reply.entry()) == b"s"
        });
    }
    let raw = client.get(f1, "/v1/kv/stale/k?stale&raw").ok();
    assert_eq!(raw.body, b"s", "{}", raw.what);
    cluster.shutdown();
}

/// DELETE of one key: true, then 404, whose X-Consul-Index covers the deletion (also on a
/// `?recurse` of its prefix); deleting a missing key is true too.
#[test]
fn delete_of_a_key_is_true_and_then_404_past_the_deletions_index() {
    let setup = Setup::start("http-kv-delete");
    a_tree(&setup);
    let Setup { cluster, client, leader, f1, f2, ids } = setup;
    let deleted = client.entry(f1, "tree/e");
    assert!(client.delete(f2, "/v1/kv/tree/e").boolean(), "DELETE tree/e");
    for &id in &ids {
        let reply = client.get(id, "/v1/kv/tree/e").expect(404);
        assert!(reply.index() > modify_index(&deleted), "{}: X-Consul-Index after the deletion", reply.what);
        // tree/e was the last write under tree/: the prefix's index now is the deletion's.
        let reply = client.get(id, "/v1/kv/tree/?recurse").ok();
        let highest = recurse_entries(&reply).iter().map(|(_, _, index)| *index).max().expect("entries");
        assert!(
            reply.index() > modify_index(&deleted) && reply.index() > highest,
            "{}: X-Consul-Index {} includes the deletion of tree/e (at ModifyIndex {} before)",
            reply.what,
            reply.index(),
            modify_index(&deleted)
        );
    }
    // Deleting a missing key is true.
    assert!(client.delete(leader, "/v1/kv/tree/e").boolean(), "DELETE of a missing key");
    assert!(client.delete(f1, "/v1/kv/never/was").boolean(), "DELETE of a missing key");
    cluster.shutdown();
}

/// DELETE with cas deletes only at the key's ModifyIndex.
#[test]
fn delete_with_cas_deletes_only_at_the_modify_index() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-kv-delete-cas");
    client.set(leader, "tree/a", b"tree/a");
    let entry = client.entry(f2, "tree/a");
    let index = modify_index(&entry);
    assert!(!client.delete(f1, &format!("/v1/kv/tree/a?cas={}", index + 1000)).boolean(), "DELETE with a wrong cas");
    assert_eq!(modify_index(&client.entry(leader, "tree/a")), index, "a failed DELETE cas changed the key");
    assert!(client.delete(f2, &format!("/v1/kv/tree/a?cas={index}")).boolean(), "DELETE with the right cas");
    client.get(f1, "/v1/kv/tree/a").expect(404);
    cluster.shutdown();
}

/// DELETE recurse: every key under the prefix, and no other.
#[test]
fn delete_recurse_removes_every_key_under_the_prefix_and_no_other() {
    let setup = Setup::start("http-kv-delete-recurse");
    let mut model = a_tree(&setup);
    let Setup { cluster, client, f1, ids, .. } = setup;
    assert!(client.delete(f1, "/v1/kv/tree/?recurse").boolean(), "DELETE tree/?recurse");
    model.retain(|key, _| !key.starts_with("tree/"));
    for &id in &ids {
        client.get(id, "/v1/kv/tree/?recurse").expect(404);
        client.get(id, "/v1/kv/tree/b/c").expect(404);
        assert_eq!(value_of(&client.entry(id, "treehouse")), b"treehouse");
        let (what, entries) = whole_store(&client, id);
        assert_eq!(entries, model, "{what}: the whole store after the deletions");
    }
    cluster.shutdown();
}

/// Without a quorum (the two followers stopped): stale reads still answer from the node's
/// copy, and say when no leader is known; writes and consistent reads answer 503 (retry
/// after Retry-After) or 504 (timed out), with a JSON error.
#[test]
fn without_a_quorum_stale_reads_answer_and_writes_fail_with_503_or_504() {
    let Setup { mut cluster, client, leader, f1, f2, .. } = Setup::start("http-kv-no-quorum");
    client.set(leader, "treehouse", b"treehouse");
    cluster.stop(f1);
    cluster.stop(f2);
    eventually(format!("{leader}, alone, no longer knows a leader"), || {
        let reply = client.get(leader, "/v1/kv/treehouse?stale");
        assert_eq!(value_of(&reply.entry()), b"treehouse", "a stale read without a quorum");
        reply.known_leader() == "false"
    });
    std::thread::scope(|scope| {
        let write = scope.spawn(|| client.put(leader, "/v1/kv/no-quorum", b"x"));
        let read = scope.spawn(|| client.get(leader, "/v1/kv/treehouse"));
        for reply in [write.join().expect("the write"), read.join().expect("the read")] {
            let status = reply.status;
            assert!(status == 503 || status == 504, "{}: {status} without a quorum: {:?}", reply.what, reply.text());
            if status == 503 {
                let retry =
                    reply.header("Retry-After").unwrap_or_else(|| panic!("{}: 503 without Retry-After", reply.what));
                assert!(retry.parse::<u64>().is_ok(), "{}: Retry-After {retry:?}", reply.what);
            }
            reply.error(status);
        }
    });
    cluster.shutdown();
}
