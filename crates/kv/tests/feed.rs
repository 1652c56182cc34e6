//! The change feed, `GET /v1/skiff/watch` (`docs/http-api.md`), against real 3-node
//! clusters on loopback: a stream resumed from an index gets exactly the later changes in
//! log order; one resumed from before the history gets a snapshot, `snapshot-end`, then the
//! changes, nothing missing or twice; a follower streams what the leader does; a client that
//! stops reading is cut with where to resume; malformed requests get 400.
//!
//! Streams are read over a plain TCP connection (HTTP/1.1, chunked), so a test controls
//! when it reads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;
use skiff::NodeId;
use skiff_kv::Limits;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;

/// A safety net for a stream that sends nothing: the test fails instead of hanging.
const READ_LIMIT: Duration = Duration::from_secs(60);

/// An open feed stream, read as NDJSON.
struct Feed {
    reader: BufReader<TcpStream>,
    /// Bytes of the body not yet split into lines.
    pending: Vec<u8>,
    ended: bool,
}

impl Feed {
    /// Opens `GET /v1/skiff/watch?<query>` on `address`, as NDJSON; checks the 200.
    fn open(address: &str, query: &str) -> Feed {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(READ_LIMIT)).expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        write!(writer, "GET /v1/skiff/watch?{query} HTTP/1.1\r\nHost: test\r\nAccept: application/x-ndjson\r\n\r\n")
            .expect("send");
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        assert!(status.starts_with("HTTP/1.1 200"), "the stream's status: {status:?}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header");
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-type:") {
                assert_eq!(value.trim(), "application/x-ndjson");
            }
        }
        Feed { reader, pending: Vec::new(), ended: false }
    }

    /// Reads one chunk of the chunked body into `pending`; false at the body's end.
    fn read_chunk(&mut self) -> bool {
        let mut size = String::new();
        self.reader.read_line(&mut size).expect("a chunk size");
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or_else(|_| panic!("a chunk size: {size:?}"));
        let mut chunk = vec![0; size + 2];
        self.reader.read_exact(&mut chunk).expect("a chunk");
        self.pending.extend_from_slice(&chunk[..size]);
        size > 0
    }

    /// The next event; `None` once the stream ended.
    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(at) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Some(serde_json::from_slice(&line).expect("an event is JSON"));
            }
            if self.ended || !self.read_chunk() {
                self.ended = true;
                return None;
            }
        }
    }

    /// The next event that is not a `progress` event.
    fn event(&mut self) -> Value {
        loop {
            let event = self.next().expect("the stream ended early");
            if event["type"] != "progress" {
                return event;
            }
        }
    }
}

/// A change as a test expects it: type, key, value (for a put).
type Change = (String, String, Option<Vec<u8>>);

fn change(event: &Value) -> Change {
    let value = event["value"].as_str().map(|text| BASE64.decode(text).expect("base64"));
    (event["type"].as_str().expect("a type").to_string(), event["key"].as_str().expect("a key").to_string(), value)
}

fn put(key: &str, value: &str) -> Change {
    ("put".into(), key.into(), Some(value.as_bytes().to_vec()))
}

fn delete(key: &str) -> Change {
    ("delete".into(), key.into(), None)
}

/// The index of the last write (the cluster's index, as a consistent listing reports it).
fn current_index(cluster: &KvCluster, id: NodeId) -> u64 {
    cluster.client.get(id, "/v1/kv/?recurse").index()
}

fn start(name: &str, limits: Limits) -> (KvCluster, NodeId, Vec<NodeId>) {
    let cluster = KvCluster::start_with_limits(ClusterFile::builder(name, 3).http().build(), limits);
    let leader = cluster.leader();
    let followers = cluster.others(leader);
    (cluster, leader, followers)
}

#[test]
fn a_stream_resumed_from_an_index_gets_exactly_the_later_changes_in_log_order_then_live_ones() {
    let (cluster, leader, _) = start("feed-resume", Limits::default());
    let client = &cluster.client;
    client.set(leader, "app/a", b"1");
    client.set(leader, "app/b", b"2");
    let resume = current_index(&cluster, leader);
    client.set(leader, "app/a", b"3");
    client.set(leader, "other/x", b"outside the prefix");
    client.remove(leader, "app/b");
    client.set(leader, "app/c", b"4");
    let mut feed = Feed::open(client.address(leader), &format!("prefix=app/&index={resume}&prev=true"));
    let expected = vec![put("app/a", "3"), delete("app/b"), put("app/c", "4")];
    let events: Vec<Value> = (0..expected.len()).map(|_| feed.event()).collect();
    assert_eq!(events.iter().map(change).collect::<Vec<_>>(), expected);
    let indexes: Vec<u64> = events.iter().map(|event| event["index"].as_u64().expect("an index")).collect();
    assert!(indexes[0] > resume && indexes.windows(2).all(|pair| pair[0] < pair[1]), "in log order: {indexes:?}");
    // The previous values, asked for with prev=true.
    assert_eq!(events[0]["prev_value"], BASE64.encode("1"));
    assert_eq!(events[1]["prev_value"], BASE64.encode("2"));
    assert_eq!(events[2]["prev_value"], Value::Null);
    // The put's indexes are the key's, as a read shows them.
    let entry = &client.get(leader, "/v1/kv/app/c").json()[0];
    assert_eq!(events[2]["modify_index"], entry["ModifyIndex"]);
    assert_eq!(events[2]["create_index"], entry["CreateIndex"]);
    // Then the changes made while it is open, and nothing else in between.
    client.set(leader, "other/y", b"outside");
    client.set(leader, "app/d", b"5");
    let live = feed.event();
    assert_eq!(change(&live), put("app/d", "5"));
    assert!(live["index"].as_u64() > Some(indexes[2]));
    drop(feed);
    cluster.shutdown();
}

#[test]
fn a_stream_resumed_from_before_the_history_gets_a_snapshot_then_the_changes_after_it() {
    // A history of a few events only: the early writes fall out of it.
    let limits = Limits { feed_retain_bytes: 1_000, ..Limits::default() };
    let (cluster, leader, _) = start("feed-snapshot", limits);
    let client = &cluster.client;
    let value = "v".repeat(100);
    for round in 0..3 {
        for key in 0..10 {
            client.set(leader, &format!("app/{key}"), format!("{round}{value}").as_bytes());
        }
    }
    client.remove(leader, "app/3");
    client.set(leader, "other/x", b"outside");
    let state = client.get(leader, "/v1/kv/app/?recurse").json();
    let last_write = current_index(&cluster, leader);
    let mut feed = Feed::open(client.address(leader), "prefix=app/&index=1");
    let mut snapshot = Vec::new();
    let end = loop {
        let event = feed.event();
        if event["type"] == "snapshot-end" {
            break event["index"].as_u64().expect("the snapshot's index");
        }
        assert_eq!(event["type"], "snapshot", "before snapshot-end: {event}");
        snapshot.push(event);
    };
    // The snapshot is the prefix's state as a read shows it, key by key.
    let expected: Vec<(Value, Value, Value)> = state
        .as_array()
        .expect("a listing")
        .iter()
        .map(|e| (e["Key"].clone(), e["Value"].clone(), e["ModifyIndex"].clone()))
        .collect();
    let shown: Vec<(Value, Value, Value)> =
        snapshot.iter().map(|e| (e["key"].clone(), e["value"].clone(), e["modify_index"].clone())).collect();
    assert_eq!(shown, expected);
    assert!(end >= last_write, "the snapshot is current: {end} < {last_write}");
    // Then every change after it, once.
    client.set(leader, "app/0", b"after");
    client.remove(leader, "app/1");
    client.set(leader, "app/3", b"back");
    let after: Vec<Value> = (0..3).map(|_| feed.event()).collect();
    assert_eq!(
        after.iter().map(change).collect::<Vec<_>>(),
        vec![put("app/0", "after"), delete("app/1"), put("app/3", "back")]
    );
    assert!(
        after.iter().all(|event| event["index"].as_u64() > Some(end)),
        "nothing from before the snapshot: {after:?}"
    );
    drop(feed);
    cluster.shutdown();
}

#[test]
fn a_followers_stream_is_the_leaders() {
    let (cluster, leader, followers) = start("feed-followers", Limits::default());
    let client = &cluster.client;
    let txn = br#"[{"KV":{"Verb":"set","Key":"app/t1","Value":"dA=="}},{"KV":{"Verb":"delete","Key":"app/a"}}]"#;
    client.set(leader, "app/a", b"1");
    client.set(followers[0], "app/b", b"2");
    client.put(followers[1], "/v1/txn", txn).ok();
    client.delete(leader, "/v1/kv/app/?recurse").ok();
    client.set(followers[0], "app/last", b"end");
    let read_all = |id: NodeId| {
        let mut feed = Feed::open(client.address(id), "prefix=app/&index=0");
        let mut events = Vec::new();
        loop {
            let event = feed.event();
            let last = change(&event) == put("app/last", "end");
            events.push((event["index"].clone(), change(&event)));
            if last {
                return events;
            }
        }
    };
    let on_leader = read_all(leader);
    assert_eq!(on_leader.len(), 7, "every change: {on_leader:?}");
    for &follower in &followers {
        assert_eq!(read_all(follower), on_leader, "{follower}'s stream");
    }
    cluster.shutdown();
}

#[test]
fn a_client_that_stops_reading_is_cut_and_resumes_where_it_was_cut() {
    let limits = Limits { feed_max_lag_bytes: 64 << 10, ..Limits::default() };
    let (cluster, leader, _) = start("feed-slow", limits);
    let client = &cluster.client;
    let start = current_index(&cluster, leader);
    let mut feed = Feed::open(client.address(leader), &format!("prefix=big/&index={start}"));
    // Far more than the socket buffers hold, while the client reads nothing.
    let value = vec![b'x'; 100 << 10];
    let writes = 200;
    for n in 0..writes {
        client.set(leader, &format!("big/{n:04}"), &value);
    }
    let mut received = Vec::new();
    let cut = loop {
        let event = feed.event();
        if event["type"] == "cut" {
            break event;
        }
        assert_eq!(event["type"], "put");
        received.push(event["key"].as_str().expect("a key").to_string());
    };
    assert!(feed.next().is_none(), "the stream ends after the cut");
    assert!(received.len() < writes, "the stream was cut before the end: {} events", received.len());
    let expected: Vec<String> = (0..received.len()).map(|n| format!("big/{n:04}")).collect();
    assert_eq!(received, expected, "the events before the cut are the first writes, in order");
    assert_eq!(cut["reason"], "slow");
    // Resuming where the stream was cut gives the next write: nothing lost.
    let resume = cut["resume_from"].as_u64().expect("resume_from");
    let mut again = Feed::open(client.address(leader), &format!("prefix=big/&index={resume}"));
    let next = again.event();
    assert_eq!(next["key"], format!("big/{:04}", received.len()));
    cluster.shutdown();
}

#[test]
fn malformed_watch_requests_get_400() {
    let (cluster, leader, _) = start("feed-hostile", Limits::default());
    let client = &cluster.client;
    let long = "k".repeat((8 << 10) + 1);
    for query in ["index=abc", "index=-1", "index=99999999999999999999999", "prev=maybe", &format!("prefix={long}")] {
        let reply = client.get(leader, &format!("/v1/skiff/watch?{query}"));
        assert_eq!(reply.status, 400, "{}: {}", &query[..query.len().min(40)], reply.text());
    }
    let reply = client.request("GET", leader, "/v1/skiff/watch?prefix=a", None, &[("Last-Event-ID", "nope")]);
    assert_eq!(reply.status, 400, "{}", reply.text());
    cluster.shutdown();
}
