//! Limits and malformed requests: refused with the documented status and a JSON error,
//! through every node, and every node keeps working.

use skiff_testkit::kv::HttpClient;

use crate::{KvClient, MAX_KEY_BYTES, MAX_VALUE_BYTES, Setup, kv_path, value_of};

/// Every node still takes a write, and every node reads it.
fn every_node_keeps_working(client: &HttpClient, ids: &[skiff::NodeId]) {
    for &id in ids {
        let key = format!("after/{id}");
        client.set(id, &key, b"fine");
        for &reader in ids {
            assert_eq!(value_of(&client.entry(reader, &key)), b"fine");
        }
    }
}

/// A key of exactly 8 KiB is accepted; one byte more is 413, with an error naming the limit.
#[test]
fn a_key_of_8_kib_is_accepted_and_one_byte_more_is_413_naming_the_limit() {
    let Setup { cluster, client, leader, f1, f2, ids } = Setup::start("http-limits-key");
    let followers = [f1, f2];
    let key = "k".repeat(MAX_KEY_BYTES);
    client.set(followers[0], &key, b"long key");
    assert_eq!(value_of(&client.entry(followers[1], &key)), b"long key");
    let too_long = "k".repeat(MAX_KEY_BYTES + 1);
    for &id in &ids {
        let message = client.put(id, &kv_path(&too_long), b"x").error(413);
        assert!(
            ["8192", "8 KiB", "8KiB"].iter().any(|limit| message.contains(limit)),
            "PUT {id} of a {}-byte key: the error names no limit: {message:?}",
            too_long.len()
        );
    }
    client.get(leader, &kv_path(&too_long)).expect(404);
    every_node_keeps_working(&client, &ids);
    cluster.shutdown();
}

/// A value of exactly 1 MiB is accepted (through a follower); one byte more is 413.
#[test]
fn a_value_of_1_mib_is_accepted_and_one_byte_more_is_413_naming_the_limit() {
    let Setup { cluster, client, leader, f1, f2, ids } = Setup::start("http-limits-value");
    let followers = [f1, f2];
    let value: Vec<u8> = (0..MAX_VALUE_BYTES).map(|i| (i % 251) as u8).collect();
    client.set(followers[0], "big", &value);
    let raw = client.get(followers[1], "/v1/kv/big?raw").ok();
    assert!(raw.body == value, "{}: the 1 MiB value read back differs ({} bytes)", raw.what, raw.body.len());
    let mut too_big = value.clone();
    too_big.push(0);
    let names_the_limit = |message: &str| ["1048576", "1 MiB", "1MiB"].iter().any(|limit| message.contains(limit));
    for &id in &ids {
        // A client that waits for `100 Continue` gets the 413 without sending the value.
        let message =
            client.request("PUT", id, "/v1/kv/too-big", Some(&too_big), &[("Expect", "100-continue")]).error(413);
        assert!(names_the_limit(&message), "PUT {id} of a 1 MiB + 1 value: the error names no limit: {message:?}");
    }
    // A client that sends the value at once (most do: curl below 1 MiB, Python's requests,
    // Go's net/http) must get the 413 too, not a connection closed under it; twice per
    // node, as whether the answer is lost depends on timing.
    for &id in ids.iter().chain(&ids) {
        match client.try_request("PUT", id, "/v1/kv/too-big", Some(&too_big), &[]) {
            Ok(reply) => {
                let message = reply.error(413);
                assert!(names_the_limit(&message), "PUT {id} of a 1 MiB + 1 value: no limit named: {message:?}");
            }
            Err(error) => panic!(
                "{error}: the 413 for a value over the limit was lost: the server closed the connection \
                 before reading the request body"
            ),
        }
    }
    client.get(leader, "/v1/kv/too-big").expect(404);
    every_node_keeps_working(&client, &ids);
    cluster.shutdown();
}

/// Malformed parameters and keys: 400 with a JSON error, through every node; nothing written.
#[test]
fn malformed_parameters_and_keys_are_400_with_a_json_error_and_write_nothing() {
    let Setup { cluster, client, ids, .. } = Setup::start("http-limits-malformed");
    for &id in &ids {
        for (method, path) in [
            ("PUT", "/v1/kv/bad?cas=abc"),
            ("PUT", "/v1/kv/bad?cas=-1"),
            ("PUT", "/v1/kv/bad?flags=-1"),
            ("PUT", "/v1/kv/bad?flags=18446744073709551616"),
            ("PUT", "/v1/kv/bad?flags=abc"),
            ("DELETE", "/v1/kv/bad?cas=abc"),
            ("GET", "/v1/kv/bad?index=1&wait=xyz"),
            ("GET", "/v1/kv/bad?index=abc&wait=1s"),
            ("GET", "/v1/kv/%FF"),
            ("PUT", "/v1/kv/%FF"),
            ("DELETE", "/v1/kv/%FF"),
            ("GET", "/v1/kv/a%FFb?recurse"),
            ("PUT", "/v1/kv/"),
            ("GET", "/v1/skiff/log?limit=abc"),
            ("GET", "/v1/skiff/log?from=-3"),
        ] {
            let body: Option<&[u8]> = (method == "PUT").then_some(b"value");
            let message = client.request(method, id, path, body, &[]).error(400);
            assert!(!message.is_empty());
        }
        client.get(id, "/v1/kv/bad").expect(404);
    }
    every_node_keeps_working(&client, &ids);
    cluster.shutdown();
}

/// Unknown routes: 404 with a JSON error; a route with the wrong method: 405.
#[test]
fn unknown_routes_are_404_and_a_wrong_method_is_405() {
    let Setup { cluster, client, leader, ids, .. } = Setup::start("http-limits-routes");
    for &id in &ids {
        client.get(id, "/v1/no-such-route").error(404);
        client.get(id, "/nope").error(404);
        client.post(id, "/v1/kv/some-key", b"x").error(405);
        client.put(id, "/v1/status/leader", b"x").error(405);
        client.get(id, "/v1/operator/raft/transfer-leader").error(405);
        client.request("PATCH", id, "/v1/kv/some-key", Some(b"x"), &[]).error(405);
        client.delete(id, "/metrics").error(405);
    }
    client.get(leader, "/v1/kv/some-key").expect(404);
    every_node_keeps_working(&client, &ids);
    cluster.shutdown();
}
