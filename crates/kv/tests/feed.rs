//! The change feed, `GET /v1/skiff/watch` (`docs/http-api.md`), against real 3-node
//! clusters on loopback: a stream resumed from an index gets exactly the later changes in
//! log order; one resumed from before the history gets a snapshot, `snapshot-end`, then the
//! changes, nothing missing or twice; a follower streams what the leader does; a client that
//! stops reading is cut with where to resume; expiries, previous values and transactions
//! appear as applied (a failed transaction not at all); Server-Sent Events carry ids that
//! resume; a node that restarted streams a snapshot first; tokens and slots are enforced;
//! malformed requests get 400.
//!
//! Streams are read over a plain TCP connection (HTTP/1.1, chunked), so a test controls
//! when it reads.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde_json::Value;
use skiff::NodeId;
use skiff_kv::state::{Expiry, When};
use skiff_kv::{Command, Limits, Op, Output};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::tokens::{ADMIN, APP};

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
        let (status, content_type, feed) = Feed::request(address, query, "Accept: application/x-ndjson\r\n");
        assert!(status.starts_with("HTTP/1.1 200"), "the stream's status: {status:?}");
        assert_eq!(content_type, "application/x-ndjson");
        feed
    }

    /// Sends `GET /v1/skiff/watch?<query>` with `headers` (each ending in CRLF); returns the
    /// status line, the content type and the body's reader.
    fn request(address: &str, query: &str, headers: &str) -> (String, String, Feed) {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(READ_LIMIT)).expect("timeout");
        let mut writer = stream.try_clone().expect("clone");
        write!(writer, "GET /v1/skiff/watch?{query} HTTP/1.1\r\nHost: test\r\n{headers}\r\n").expect("send");
        let mut reader = BufReader::new(stream);
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        let mut content_type = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("a header");
            if line == "\r\n" {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-type:") {
                content_type = value.trim().to_string();
            }
        }
        (status, content_type, Feed { reader, pending: Vec::new(), ended: false })
    }

    /// The next line of the body (without its newline); `None` once the stream ended.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=at).collect();
                return Some(String::from_utf8(line[..line.len() - 1].to_vec()).expect("a line of text"));
            }
            if self.ended || !self.read_chunk() {
                self.ended = true;
                return None;
            }
        }
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
        let line = self.line()?;
        Some(serde_json::from_str(&line).unwrap_or_else(|error| panic!("an event is JSON: {error}: {line:?}")))
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

/// Writes `key` with a TTL of `ttl_ms` through `id`, stamped as the servers stamp writes.
fn set_with_ttl(cluster: &KvCluster, id: NodeId, key: &'static str, ttl_ms: u64) {
    let server = cluster.server(id);
    let op = Op::SetWith {
        key: Bytes::from_static(key.as_bytes()),
        value: Bytes::from_static(b"short-lived"),
        when: When::Always,
        get: false,
        expiry: Expiry::After(ttl_ms),
    };
    let command = Command { request: None, op: op.at(server.published().now_ms()) };
    match cluster.block_on(server.node().propose(command)) {
        Ok(Output::Set { written: true, .. }) => {}
        other => panic!("the write was not applied: {other:?}"),
    }
}

fn b64(text: &str) -> String {
    BASE64.encode(text)
}

#[test]
fn expiries_previous_values_and_transactions_appear_as_applied_and_a_failed_transaction_not_at_all() {
    let (cluster, leader, followers) = start("feed-kinds", Limits::default());
    let client = &cluster.client;
    let start = current_index(&cluster, leader);
    let mut feed = Feed::open(client.address(followers[0]), &format!("prefix=app/&index={start}&prev=true"));
    client.set(leader, "app/a", b"1");
    client.set(leader, "app/a", b"2");
    // A transaction whose cas fails writes nothing, so it sends nothing.
    let failing = format!(
        r#"[{{"KV":{{"Verb":"set","Key":"app/never","Value":"{}"}}}},{{"KV":{{"Verb":"cas","Key":"app/a","Value":"{}","Index":1}}}}]"#,
        b64("x"),
        b64("y")
    );
    assert_eq!(client.put(leader, "/v1/txn", failing.as_bytes()).status, 409);
    let both = format!(
        r#"[{{"KV":{{"Verb":"set","Key":"app/b","Value":"{}"}}}},{{"KV":{{"Verb":"delete","Key":"app/a"}}}}]"#,
        b64("3")
    );
    client.put(leader, "/v1/txn", both.as_bytes()).ok();
    set_with_ttl(&cluster, leader, "app/tmp", 200);

    let events: Vec<Value> = (0..6).map(|_| feed.event()).collect();
    let changes: Vec<Change> = events.iter().map(change).collect();
    let mut expected = vec![put("app/a", "1"), put("app/a", "2"), put("app/b", "3"), delete("app/a")];
    expected.push(put("app/tmp", "short-lived"));
    expected.push(("expire".into(), "app/tmp".into(), None));
    assert_eq!(changes, expected, "{events:#?}");
    let prev: Vec<&Value> = events.iter().map(|event| &event["prev_value"]).collect();
    let (one, two) = (Value::from(b64("1")), Value::from(b64("2")));
    assert_eq!(
        prev,
        [&Value::Null, &one, &Value::Null, &two, &Value::Null, &Value::from(b64("short-lived"))],
        "previous values"
    );
    let index = |n: usize| events[n]["index"].as_u64().expect("an index");
    assert_eq!(index(2), index(3), "one transaction, one index");
    assert!((0..5).all(|n| index(n) < index(n + 1) || n == 2), "log order: {events:#?}");
    assert_eq!(events[3]["create_index"], events[0]["create_index"], "a deletion names the key's creation");
    assert_eq!(events[5]["create_index"], events[4]["index"], "an expiry names the key's creation");
    cluster.shutdown();
}

/// The next Server-Sent Event: its `data:` JSON and its `id:`, if it has one.
fn sse_event(feed: &mut Feed) -> (Value, Option<u64>) {
    let mut data = None;
    let mut id = None;
    loop {
        let line = feed.line().expect("the stream ended early");
        if line.is_empty() {
            if let Some(data) = data {
                return (data, id);
            }
        } else if let Some(json) = line.strip_prefix("data: ") {
            assert!(data.is_none(), "one data line per event: {line}");
            data = Some(serde_json::from_str(json).expect("data is JSON"));
        } else if let Some(value) = line.strip_prefix("id: ") {
            id = Some(value.parse().expect("an id is an index"));
        } else {
            assert!(line.starts_with(':') || line.starts_with("retry:"), "an SSE line: {line:?}");
        }
    }
}

#[test]
fn server_sent_events_carry_an_id_after_each_entry_and_resume_from_last_event_id() {
    let (cluster, leader, _) = start("feed-sse", Limits::default());
    let client = &cluster.client;
    let start = current_index(&cluster, leader);
    let (status, content_type, mut feed) =
        Feed::request(client.address(leader), &format!("prefix=app/&index={start}"), "");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(content_type, "text/event-stream");
    client.set(leader, "app/a", b"1");
    let tree = format!(
        r#"[{{"KV":{{"Verb":"set","Key":"app/b","Value":"{}"}}}},{{"KV":{{"Verb":"set","Key":"app/c","Value":"{}"}}}}]"#,
        b64("2"),
        b64("3")
    );
    client.put(leader, "/v1/txn", tree.as_bytes()).ok();
    client.set(leader, "app/d", b"4");
    let (first, first_id) = sse_event(&mut feed);
    assert_eq!(change(&first), put("app/a", "1"));
    assert_eq!(first_id, first["index"].as_u64(), "an entry's last event carries its index as the id");
    // A transaction's two events: the id only on the second, where the entry is complete.
    let (b, b_id) = sse_event(&mut feed);
    let (c, c_id) = sse_event(&mut feed);
    assert_eq!((change(&b), change(&c)), (put("app/b", "2"), put("app/c", "3")));
    assert_eq!((b_id, c_id), (None, c["index"].as_u64()), "no id inside an entry");
    drop(feed);
    // What EventSource sends when it reconnects: the events after that id.
    let header = format!("Last-Event-ID: {}\r\n", first_id.expect("an id"));
    let (status, _, mut again) = Feed::request(client.address(leader), "prefix=app/", &header);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let resumed: Vec<Change> = (0..3).map(|_| change(&sse_event(&mut again).0)).collect();
    assert_eq!(resumed, vec![put("app/b", "2"), put("app/c", "3"), put("app/d", "4")]);
    cluster.shutdown();
}

#[test]
fn a_restarted_follower_streams_a_snapshot_of_the_prefix_then_the_same_changes_as_the_leader() {
    let file = ClusterFile::builder("feed-restart", 3).http().raft("snapshot_after_entries", 20).build();
    let mut cluster = KvCluster::start_with_limits(file, Limits::default());
    let leader = cluster.leader();
    let follower = cluster.others(leader)[0];
    cluster.client.set(leader, "app/early", b"0");
    // Enough writes for the follower to take a snapshot: after a restart it starts from it,
    // and its history (in memory) starts there.
    for n in 0..30 {
        cluster.client.set(leader, &format!("app/{n:02}"), n.to_string().as_bytes());
    }
    skiff_testkit::wait::eventually("the follower took a snapshot", || {
        cluster.client.status(follower)["snapshot_index"].as_u64() >= Some(20)
    });
    cluster.stop(follower);
    for n in 30..60 {
        cluster.client.set(leader, &format!("app/{n:02}"), n.to_string().as_bytes());
    }
    cluster.client.remove(leader, "app/early");
    cluster.start_node(follower);
    let client = &cluster.client;
    let last = current_index(&cluster, leader);
    skiff_testkit::wait::eventually("the follower caught up", || {
        client.status(follower)["applied"].as_u64() >= Some(last)
    });
    let listing = client.get(leader, "/v1/kv/app/?recurse").json();
    let keys: Vec<&str> = listing.as_array().expect("a listing").iter().filter_map(|e| e["Key"].as_str()).collect();
    let mut feed = Feed::open(client.address(follower), "prefix=app/&index=1");
    let mut snapshot = Vec::new();
    let end = loop {
        let event = feed.event();
        if event["type"] == "snapshot-end" {
            break event["index"].as_u64().expect("an index");
        }
        assert_eq!(event["type"], "snapshot", "{event}");
        snapshot.push(event["key"].as_str().expect("a key").to_string());
    };
    assert_eq!(snapshot, keys, "the follower's snapshot is the prefix as the leader lists it");
    client.set(leader, "app/after", b"x");
    let mut on_leader = Feed::open(client.address(leader), &format!("prefix=app/&index={end}"));
    let (here, there) = (feed.event(), on_leader.event());
    assert_eq!(change(&here), put("app/after", "x"));
    assert_eq!(here, there, "the same event, at the same index, on both nodes");
    cluster.shutdown();
}

#[test]
fn a_token_must_read_the_prefix_and_streams_take_blocking_query_slots() {
    let dir = tempfile::tempdir().expect("a directory");
    let tokens = skiff_testkit::tokens::write(dir.path());
    let file = ClusterFile::builder("feed-auth", 3).http().auth(&tokens, ADMIN).build();
    let limits = Limits { max_blocking_queries_per_client: 1, ..Limits::default() };
    let cluster = KvCluster::start_with_limits(file, limits);
    let leader = cluster.leader();
    let address = cluster.client.address(leader);
    let app = format!("X-Consul-Token: {APP}\r\nAccept: application/x-ndjson\r\n");
    for (query, headers, expected) in [
        ("prefix=shared/", "Accept: application/x-ndjson\r\n", "HTTP/1.1 403"),
        ("prefix=secret/", app.as_str(), "HTTP/1.1 403"),
        ("", app.as_str(), "HTTP/1.1 403"),
    ] {
        let (status, _, _) = Feed::request(address, query, headers);
        assert!(status.starts_with(expected), "{query} with {headers:?}: {status}");
    }
    // The token may read shared/: a stream, which holds this client's only slot.
    let (status, _, open) = Feed::request(address, "prefix=shared/", &app);
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let (status, _, _) = Feed::request(address, "prefix=shared/", &app);
    assert!(status.starts_with("HTTP/1.1 429"), "a second stream from the same address: {status}");
    drop(open);
    // Its slot is given back when the client goes away.
    skiff_testkit::wait::eventually("the slot is free again", || {
        Feed::request(address, "prefix=shared/", &app).0.starts_with("HTTP/1.1 200")
    });
    cluster.shutdown();
}

#[test]
fn a_stream_of_a_node_that_stops_ends_with_a_cut_that_says_where_to_resume() {
    let (mut cluster, leader, followers) = start("feed-stop", Limits::default());
    cluster.client.set(leader, "app/a", b"1");
    let seen = current_index(&cluster, leader);
    let mut feed = Feed::open(cluster.client.address(followers[0]), &format!("prefix=app/&index={seen}"));
    // An in-process server: the runtime lives on after the server stops, and so would an
    // open stream that did not end itself.
    cluster.stop(followers[0]);
    let cut = feed.event();
    assert_eq!(cut["type"], "cut", "{cut}");
    assert_eq!(cut["reason"], "shutdown");
    assert!(cut["resume_from"].as_u64() >= Some(seen), "{cut}");
    assert!(feed.next().is_none(), "the stream ends after the cut");
    cluster.shutdown();
}
