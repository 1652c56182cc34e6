//! The dashboard's server side, black box, as the page relies on it: the frames of
//! `GET /v1/skiff/events` (fields, values that agree across nodes, sampled messages, events
//! in words), its limits (the interval's range, at most 32 streams, a slow reader that costs
//! the node nothing and learns what it missed), `POST/DELETE /v1/skiff/pause`, the demo's
//! control routes, CORS for members' origins only, and which routes need a token.
//!
//! The event streams never end, so they are read on sockets of their own (HTTP/1.1 by hand,
//! chunked); every other request goes through the testkit's client.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use skiff::NodeId;
use skiff_kv::{DemoControl, DemoHandle, DemoNode, Server, ServerOptions};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::{HttpClient, KvCluster};
use skiff_testkit::tokens::{ADMIN, APP};
use skiff_testkit::wait::{TIMEOUT, eventually_ok};

/// The documented message kinds.
const KINDS: [&str; 12] = [
    "append",
    "append-response",
    "heartbeat",
    "heartbeat-response",
    "vote",
    "vote-response",
    "pre-vote",
    "pre-vote-response",
    "snapshot",
    "timeout-now",
    "read-index",
    "read-index-response",
];
const ROLES: [&str; 4] = ["follower", "pre-candidate", "candidate", "leader"];
/// The most streams a node serves, and the most messages and events a frame carries.
const MAX_EVENT_STREAMS: usize = 32;
const MAX_MESSAGES: usize = 64;
const MAX_FIRST_EVENTS: usize = 20;
const MAX_LOG_TAIL: u64 = 24;
/// A frame every 50 ms, the shortest interval: the tests wait for frames, not for time.
const FAST: &str = "/v1/skiff/events?interval_ms=50";
/// How long a socket read waits before the test fails: frames come every 50 ms.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

fn start(name: &str, nodes: u64, fault_injection: bool) -> KvCluster {
    KvCluster::start_with(ClusterFile::builder(name, nodes).http().build(), fault_injection)
}

// --- HTTP on a socket of its own -------------------------------------------------------

/// An answer whose head was read; its body is still on the socket.
struct Answer {
    what: String,
    status: u16,
    /// Names in lower case.
    headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
}

/// Sends `method path` (no body) to `address` on a new connection and reads the answer's head.
fn send(address: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(address).unwrap_or_else(|error| panic!("connecting to {address}: {error}"));
    send_on(stream, address, method, path, headers)
}

fn send_on(stream: TcpStream, address: &str, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let what = format!("{method} {address}{path}");
    stream.set_read_timeout(Some(READ_TIMEOUT)).expect("a read timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Content-Length: 0\r\n\r\n");
    (&stream).write_all(request.as_bytes()).unwrap_or_else(|error| panic!("{what}: sending: {error}"));
    let mut reader = BufReader::new(stream);
    let status_line = read_line(&mut reader, &what);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{what}: a status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let line = read_line(&mut reader, &what);
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or_else(|| panic!("{what}: a header {line:?}"));
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Answer { what, status, headers, reader }
}

/// A line without its CRLF.
fn read_line(reader: &mut BufReader<TcpStream>, what: &str) -> String {
    let mut line = String::new();
    reader.read_line(&mut line).unwrap_or_else(|error| panic!("{what}: reading: {error}"));
    line.trim_end_matches(['\r', '\n']).to_string()
}

/// The next chunk of a chunked body, `None` after the last.
fn read_chunk(reader: &mut BufReader<TcpStream>) -> std::io::Result<Option<Vec<u8>>> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(ErrorKind::UnexpectedEof.into());
    }
    let size = line.trim().split(';').next().unwrap_or_default();
    let size = usize::from_str_radix(size, 16).map_err(|_| std::io::Error::other(format!("a chunk size {line:?}")))?;
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk)?;
    chunk.truncate(size);
    Ok((size > 0).then_some(chunk))
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key == name).map(|(_, value)| value.as_str())
    }

    /// The whole body, of an answer that ends.
    fn body(mut self) -> String {
        let mut body = Vec::new();
        if let Some(length) = self.header("content-length") {
            let length: usize = length.parse().expect("a Content-Length");
            body.resize(length, 0);
            self.reader.read_exact(&mut body).unwrap_or_else(|error| panic!("{}: body: {error}", self.what));
        } else {
            assert_eq!(self.header("transfer-encoding"), Some("chunked"), "{}: a body of unknown length", self.what);
            while let Some(chunk) =
                read_chunk(&mut self.reader).unwrap_or_else(|error| panic!("{}: body: {error}", self.what))
            {
                body.extend(chunk);
            }
        }
        String::from_utf8(body).unwrap_or_else(|error| panic!("{}: a body that is not text: {error}", self.what))
    }

    /// The answer as an event stream, which it must be.
    fn stream(self) -> EventStream {
        assert_eq!(self.status, 200, "{}: status (headers {:?})", self.what, self.headers);
        assert_eq!(self.header("content-type"), Some("text/event-stream"), "{}", self.what);
        assert_eq!(self.header("cache-control"), Some("no-cache"), "{}", self.what);
        EventStream { what: self.what, reader: self.reader, pending: Vec::new(), ended: false }
    }

    /// The status and message of an answer that is not a stream.
    fn refused(self) -> (u16, String) {
        let status = self.status;
        assert_ne!(status, 200, "{}: expected a refusal", self.what);
        (status, self.body())
    }
}

/// `GET /v1/skiff/events` as a browser's `EventSource` reads it.
struct EventStream {
    what: String,
    reader: BufReader<TcpStream>,
    /// Bytes read and not yet split into events.
    pending: Vec<u8>,
    ended: bool,
}

impl EventStream {
    fn open(address: &str, path: &str) -> EventStream {
        send(address, "GET", path, &[]).stream()
    }

    /// The next `state` frame; `None` once the stream ended (its node stopped).
    fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.pending.windows(2).position(|pair| pair == b"\n\n") {
                let event: Vec<u8> = self.pending.drain(..end + 2).collect();
                return Some(self.parse(&event));
            }
            if self.ended {
                assert!(self.pending.is_empty(), "{}: a partial event at the end: {:?}", self.what, self.pending);
                return None;
            }
            match read_chunk(&mut self.reader) {
                Ok(Some(chunk)) => self.pending.extend(chunk),
                Ok(None) => self.ended = true,
                // A node killed at once may close the connection without the last chunk.
                Err(error) if matches!(error.kind(), ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset) => {
                    self.ended = true
                }
                Err(error) => panic!("{}: reading a frame: {error}", self.what),
            }
        }
    }

    fn parse(&self, event: &[u8]) -> Value {
        let text = std::str::from_utf8(event).unwrap_or_else(|error| panic!("{}: not UTF-8: {error}", self.what));
        let mut lines = text.trim_end().lines();
        assert_eq!(lines.next(), Some("event: state"), "{}: the only event is `state`: {text}", self.what);
        let data = lines.next().and_then(|line| line.strip_prefix("data: "));
        let data = data.unwrap_or_else(|| panic!("{}: one data line: {text}", self.what));
        assert_eq!(lines.next(), None, "{}: one data line: {text}", self.what);
        serde_json::from_str(data).unwrap_or_else(|error| panic!("{}: not JSON ({error}): {data}", self.what))
    }

    fn frame(&mut self) -> Value {
        self.next().unwrap_or_else(|| panic!("{}: the stream ended", self.what))
    }

    /// Reads frames until `found` gives a value; fails after [`TIMEOUT`], naming `what`.
    fn until<T>(&mut self, what: &str, mut found: impl FnMut(&Value) -> Option<T>) -> T {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let frame = self.frame();
            if let Some(value) = found(&frame) {
                return value;
            }
            assert!(Instant::now() < deadline, "{}: not within {TIMEOUT:?}: {what}; last frame {frame}", self.what);
        }
    }
}

// --- Frames ----------------------------------------------------------------------------

fn u64_of(frame: &Value, field: &str) -> u64 {
    frame[field].as_u64().unwrap_or_else(|| panic!("{field} is not a whole number in {frame}"))
}

fn str_of<'a>(frame: &'a Value, field: &str) -> &'a str {
    frame[field].as_str().unwrap_or_else(|| panic!("{field} is not a string in {frame}"))
}

/// Checks that a frame of node `id` has the documented fields with values that hold
/// together, and that its members are `file`'s nodes.
fn check_frame(frame: &Value, file: &ClusterFile, id: NodeId, fault_injection: bool) {
    let keys: BTreeSet<&str> = frame.as_object().expect("an object").keys().map(String::as_str).collect();
    let documented = [
        "id",
        "uptime_ms",
        "tick_ms",
        "paused",
        "role",
        "term",
        "voted_for",
        "leader",
        "commit",
        "applied",
        "first_index",
        "snapshot_index",
        "last_log",
        "election_timer",
        "voters",
        "learners",
        "members",
        "peers",
        "log",
        "messages",
        "messages_per_s",
        "messages_skipped",
        "events",
        "faults",
    ];
    assert_eq!(keys, documented.into_iter().collect(), "the fields of {frame}");
    assert_eq!(frame["id"], id.to_string());
    let uptime = u64_of(frame, "uptime_ms");
    assert!(u64_of(frame, "tick_ms") > 0, "{frame}");
    assert!(frame["paused"].is_boolean(), "{frame}");
    let role = str_of(frame, "role");
    assert!(ROLES.contains(&role), "role {role:?}");
    let term = u64_of(frame, "term");
    assert!(term >= 1, "{frame}");
    for field in ["voted_for", "leader"] {
        assert!(frame[field].is_null() || frame[field].is_string(), "{field} in {frame}");
    }
    if role == "leader" {
        assert_eq!(frame["leader"], id.to_string(), "a leader knows it leads");
        assert_eq!(frame["voted_for"], id.to_string(), "a leader voted for itself");
    }

    // The log: its tail ends at last_log, commit and applied are within it.
    let (commit, applied) = (u64_of(frame, "commit"), u64_of(frame, "applied"));
    let (first, snapshot) = (u64_of(frame, "first_index"), u64_of(frame, "snapshot_index"));
    let last = (u64_of(&frame["last_log"], "index"), u64_of(&frame["last_log"], "term"));
    assert!(applied <= commit && commit <= last.0, "applied {applied} <= commit {commit} <= last {last:?}");
    assert!(first >= 1 && snapshot <= commit && last.1 <= term, "{frame}");
    let log: Vec<(u64, u64)> =
        frame["log"].as_array().expect("log").iter().map(|e| (u64_of(e, "index"), u64_of(e, "term"))).collect();
    let held = (last.0 + 1).saturating_sub(first);
    assert_eq!(log.len() as u64, held.min(MAX_LOG_TAIL), "the last <= 24 entries: {frame}");
    assert_eq!(log.last().copied(), (last.0 > 0).then_some(last), "the tail ends at last_log: {frame}");
    for pair in log.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + 1, "consecutive indexes: {log:?}");
        assert!(pair[0].1 <= pair[1].1, "terms never decrease along a log: {log:?}");
    }

    // The election timer runs on every node but a leader.
    if role == "leader" {
        assert!(frame["election_timer"].is_null(), "a leader has no election timer: {frame}");
    } else {
        let timer = &frame["election_timer"];
        let timeout = u64_of(timer, "timeout_ms");
        assert!(timeout > 0 && u64_of(timer, "elapsed_ms") <= timeout, "election_timer {timer}");
    }

    // Membership: the file's nodes, with their http addresses.
    let names: Vec<String> = file.nodes.iter().map(|node| node.id.to_string()).collect();
    assert_eq!(frame["voters"], json!(names), "{frame}");
    assert_eq!(frame["learners"], json!([]), "{frame}");
    let members: Vec<Value> = file
        .nodes
        .iter()
        .map(|node| json!({ "id": node.id.to_string(), "http": node.http, "scheme": "http" }))
        .collect();
    assert_eq!(frame["members"], json!(members));
    let others: BTreeSet<String> = names.iter().filter(|name| **name != id.to_string()).cloned().collect();
    let peers = frame["peers"].as_array().expect("peers");
    assert_eq!(peers.iter().map(|peer| str_of(peer, "id").to_string()).collect::<BTreeSet<_>>(), others);
    for peer in peers {
        assert!(peer["voter"].as_bool() == Some(true) && peer["connected"].is_boolean(), "{peer}");
        if role == "leader" {
            let (matched, next) = (u64_of(peer, "match"), u64_of(peer, "next"));
            assert!(matched <= last.0 && matched < next && next <= last.0 + 1, "{peer} of {frame}");
        } else {
            assert!(peer["match"].is_null() && peer["next"].is_null(), "match/next only on the leader: {peer}");
        }
        for field in ["last_contact_ms", "rtt_ms"] {
            assert!(peer[field].is_null() || peer[field].as_f64().is_some_and(|v| v >= 0.0), "{field}: {peer}");
        }
    }

    // What the node sent and what happened to it.
    let messages = frame["messages"].as_array().expect("messages");
    assert!(messages.len() <= MAX_MESSAGES, "{} messages", messages.len());
    for message in messages {
        assert!(KINDS.contains(&str_of(message, "kind")), "{message}");
        assert!(others.contains(str_of(message, "to")), "a message to another member: {message}");
        // A pre-vote asks for the term the node would campaign in, one past its own
        // (thesis §9.6), and a granted answer carries it back.
        let kind = str_of(message, "kind");
        let highest = if kind.starts_with("pre-vote") { term + 1 } else { term };
        assert!(u64_of(message, "term") <= highest && u64_of(message, "at_ms") <= uptime, "{message}");
        assert!(!str_of(message, "text").is_empty(), "{message}");
    }
    let seqs: Vec<u64> = messages.iter().map(|message| u64_of(message, "seq")).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "message seqs increase: {seqs:?}");
    let rates = frame["messages_per_s"].as_object().expect("messages_per_s");
    assert_eq!(rates.keys().map(String::as_str).collect::<BTreeSet<_>>(), KINDS.into_iter().collect());
    assert!(rates.values().all(|rate| rate.as_f64().is_some_and(|rate| rate >= 0.0)), "{rates:?}");
    u64_of(frame, "messages_skipped");
    let events = frame["events"].as_array().expect("events");
    for event in events {
        assert!(u64_of(event, "at_ms") <= uptime && !str_of(event, "text").is_empty(), "{event}");
    }
    let seqs: Vec<u64> = events.iter().map(|event| u64_of(event, "seq")).collect();
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "event seqs increase: {seqs:?}");
    if fault_injection {
        assert!(frame["faults"].is_array(), "{frame}");
    } else {
        assert!(frame["faults"].is_null(), "fault injection is off: {frame}");
    }
}

/// The events of a stream, checked to come once each, in order.
#[derive(Default)]
struct Events {
    texts: Vec<String>,
    next_seq: u64,
}

impl Events {
    fn take(&mut self, frame: &Value) {
        for event in frame["events"].as_array().expect("events") {
            let seq = u64_of(event, "seq");
            assert!(seq >= self.next_seq, "event {seq} shown twice or out of order (next {})", self.next_seq);
            self.next_seq = seq + 1;
            self.texts.push(str_of(event, "text").to_string());
        }
    }

    fn find(&self, pattern: &str) -> Option<&String> {
        self.find_after(0, pattern)
    }

    /// The first event after the first `seen` that says `pattern`.
    fn find_after(&self, seen: usize, pattern: &str) -> Option<&String> {
        self.texts[seen..].iter().find(|text| text.contains(pattern))
    }
}

// --- 1. Frames -------------------------------------------------------------------------

#[test]
fn frames_show_each_node_its_traffic_and_an_election() {
    let mut cluster = start("dash-frames", 3, false);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    let ids = cluster.ids();
    let mut streams: BTreeMap<NodeId, EventStream> =
        ids.iter().map(|&id| (id, EventStream::open(client.address(id), FAST))).collect();
    let mut events: BTreeMap<NodeId, Events> = ids.iter().map(|&id| (id, Events::default())).collect();

    // The first frames: the documented fields, recent events, one leader agreed by all.
    let mut terms = BTreeSet::new();
    for (&id, stream) in &mut streams {
        let frame = stream.frame();
        check_frame(&frame, &cluster.file, id, false);
        let recent = frame["events"].as_array().expect("events").len();
        assert!((1..=MAX_FIRST_EVENTS).contains(&recent), "a first frame carries the recent events: {frame}");
        assert_eq!(frame["messages"], json!([]), "a first frame has no messages (they are news as they happen)");
        events.get_mut(&id).expect("events").take(&frame);
        let start = format!("{id} started");
        let started = events[&id].texts.iter().any(|text| text.starts_with(&start) && !text.contains("election"));
        assert!(started, "the node's start is among its recent events: {:?}", events[&id].texts);
        let expected_role = if id == leader { "leader" } else { "follower" };
        assert_eq!((str_of(&frame, "role"), &frame["leader"]), (expected_role, &json!(leader.to_string())));
        terms.insert(u64_of(&frame, "term"));
    }
    assert_eq!(terms.len(), 1, "every node is in the leader's term: {terms:?}");
    let term = terms.into_iter().next().expect("a term");

    // Writes: the leader's frames show appends to each follower, and the commit in words.
    for i in 0..5 {
        client.set(leader, &format!("k{i}"), b"v");
    }
    let written = u64_of(&EventStream::open(client.address(leader), FAST).frame(), "commit");
    let followers: BTreeSet<String> = cluster.others(leader).iter().map(ToString::to_string).collect();
    let mut appended = BTreeSet::new();
    let leader_events = events.get_mut(&leader).expect("events");
    let before = leader_events.texts.len();
    let stream = streams.get_mut(&leader).expect("a stream");
    let committed = stream.until("appends to each follower, and the writes committed in words", |frame| {
        check_frame(frame, &cluster.file, leader, false);
        leader_events.take(frame);
        for message in frame["messages"].as_array().expect("messages") {
            if message["kind"] == "append" {
                assert_eq!(u64_of(message, "term"), term, "{message}");
                appended.insert(str_of(message, "to").to_string());
            }
        }
        // "n1 committed entry 7" or "n1 committed entries 3-7", in spans: the last one
        // reaches the writes.
        let prefix = format!("{leader} committed entr");
        let reached = leader_events.texts[before..].iter().filter(|text| text.starts_with(&prefix)).any(|text| {
            let last = text.rsplit([' ', '-']).next().and_then(|index| index.parse::<u64>().ok());
            last.unwrap_or_else(|| panic!("an index at the end of {text:?}")) >= written
        });
        (appended == followers && reached).then(|| leader_events.texts[before..].join("; "))
    });
    eprintln!("the leader said: {committed}");

    // Kill the leader: its stream ends, the others elect a new one and say so.
    cluster.kill(leader);
    let mut old = streams.remove(&leader).expect("a stream");
    let deadline = Instant::now() + TIMEOUT;
    while old.next().is_some() {
        assert!(Instant::now() < deadline, "the killed leader's stream goes on");
    }
    let survivors = cluster.others(leader);
    let seen: BTreeMap<NodeId, usize> = survivors.iter().map(|id| (*id, events[id].texts.len())).collect();
    let new_leader = cluster.leader_among(&survivors);
    let deadline = Instant::now() + TIMEOUT;
    let (mut started, mut became) = (None, None);
    while started.is_none() || became.is_none() {
        for &id in &survivors {
            let frame = streams.get_mut(&id).expect("a stream").frame();
            check_frame(&frame, &cluster.file, id, false);
            let (mine, seen) = (events.get_mut(&id).expect("events"), seen[&id]);
            mine.take(&frame);
            let (election, won) =
                (format!("{id} started an election for term "), format!("{new_leader} became leader of term "));
            started = started.or_else(|| mine.find_after(seen, &election).cloned());
            became = became.or_else(|| mine.find_after(seen, &won).cloned());
        }
        let texts: Vec<_> = survivors.iter().map(|id| &events[id].texts).collect();
        assert!(Instant::now() < deadline, "the survivors' events tell no election: {texts:?}");
    }
    let new_term = |text: &str| -> u64 {
        text.rsplit(' ').next().and_then(|term| term.parse().ok()).unwrap_or_else(|| panic!("a term in {text:?}"))
    };
    let (started, became) = (started.expect("started"), became.expect("became"));
    assert!(new_term(&started) > term && new_term(&became) > term, "{started}; {became}");
    let frame = streams.get_mut(&new_leader).expect("a stream").until("the new leader's frame", |frame| {
        (frame["role"] == "leader" && u64_of(frame, "term") == new_term(&became)).then(|| frame.clone())
    });
    // The killed node is still a member: the page keeps showing it.
    check_frame(&frame, &cluster.file, new_leader, false);
    drop(streams);
    cluster.shutdown();
}

// --- 2. Hostile input ------------------------------------------------------------------

#[test]
fn bad_intervals_and_unknown_routes_are_refused_with_a_reason() {
    let cluster = start("dash-hostile", 1, false);
    let address = cluster.client.address(NodeId(1)).to_string();
    for interval in ["0", "49", "5001", "abc", "99999999999999999999", "-1", "", "50.5"] {
        let path = format!("/v1/skiff/events?interval_ms={interval}");
        let (status, text) = send(&address, "GET", &path, &[]).refused();
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("interval_ms"), "{path}: {text}");
    }
    for interval in ["50", "5000"] {
        let mut stream = EventStream::open(&address, &format!("/v1/skiff/events?interval_ms={interval}"));
        check_frame(&stream.frame(), &cluster.file, NodeId(1), false);
    }

    let client = &cluster.client;
    for (method, path) in [
        ("GET", "/v1/skiff/demo"),
        ("POST", "/v1/skiff/demo/nodes"),
        ("POST", "/v1/skiff/demo/nodes/n1/kill"),
        ("POST", "/v1/skiff/demo/nodes/n1/restart"),
    ] {
        let reply = client.request(method, NodeId(1), path, None, &[]);
        assert_eq!(reply.status, 404, "{method} {path}: {}", reply.text());
        assert!(reply.text().contains("not part of a `skiff demo`"), "{method} {path}: {}", reply.text());
    }
    for method in ["POST", "DELETE"] {
        let reply = client.request(method, NodeId(1), "/v1/skiff/pause", None, &[]);
        assert_eq!(reply.status, 403, "{method} pause: {}", reply.text());
        assert!(reply.text().contains("--fault-injection"), "{}", reply.text());
    }
    // Nothing was paused.
    client.set(NodeId(1), "still", b"writable");
    cluster.shutdown();
}

/// A demo's control that records what it was asked.
struct FakeDemo {
    nodes: Mutex<Vec<DemoNode>>,
    asked: Mutex<Vec<String>>,
}

impl DemoControl for FakeDemo {
    fn nodes(&self) -> Vec<DemoNode> {
        self.nodes.lock().unwrap().clone()
    }

    fn slow(&self) -> bool {
        true
    }

    fn kill(&self, id: NodeId) -> BoxFuture<'static, Result<(), String>> {
        self.asked.lock().unwrap().push(format!("kill {id}"));
        for node in self.nodes.lock().unwrap().iter_mut().filter(|node| node.id == id) {
            node.running = false;
        }
        async { Ok(()) }.boxed()
    }

    fn restart(&self, id: NodeId) -> BoxFuture<'static, Result<(), String>> {
        self.asked.lock().unwrap().push(format!("restart {id}"));
        async move { Err(format!("{id} cannot start: its port is taken")) }.boxed()
    }

    fn add_learner(&self) -> BoxFuture<'static, Result<DemoNode, String>> {
        self.asked.lock().unwrap().push("add".into());
        let node = DemoNode { id: NodeId(4), http: "127.0.0.1:1".into(), running: true };
        self.nodes.lock().unwrap().push(node.clone());
        async move { Ok(node) }.boxed()
    }
}

#[test]
fn demo_routes_check_the_node_and_the_action() {
    let file = ClusterFile::builder("dash-demo", 1).http().build();
    let dir = tempfile::tempdir().expect("a directory");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let n1 = NodeId(1);
    let http = file.node(n1).http.clone().expect("an http address");
    let demo = Arc::new(FakeDemo {
        nodes: Mutex::new(vec![
            DemoNode { id: n1, http: http.clone(), running: true },
            DemoNode { id: NodeId(2), http: "127.0.0.1:2".into(), running: true },
        ]),
        asked: Mutex::new(Vec::new()),
    });
    let mut options = ServerOptions::new(file.config(), n1, dir.path().join("n1"));
    options.demo = Some(DemoHandle(Arc::clone(&demo) as Arc<dyn DemoControl>));
    let server = runtime.block_on(Server::start(options)).expect("a server");
    let client = HttpClient::for_file(&file);

    let listed = client.get(n1, "/v1/skiff/demo").ok().json();
    let nodes = json!([
        { "id": "n1", "http": http, "running": true },
        { "id": "n2", "http": "127.0.0.1:2", "running": true },
    ]);
    assert_eq!(listed, json!({ "nodes": nodes, "slow": true }));

    for (path, status, expected) in [
        ("/v1/skiff/demo/nodes/n9/kill", 404, "n9 is not a node of this demo"),
        ("/v1/skiff/demo/nodes/n2/explode", 404, "kill or restart"),
        ("/v1/skiff/demo/nodes/n9/explode", 404, "n9 is not a node of this demo"),
        ("/v1/skiff/demo/nodes/bogus/kill", 400, "bogus"),
    ] {
        let reply = client.post(n1, path, b"");
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        assert!(reply.text().contains(expected), "{path}: {}", reply.text());
    }
    assert_eq!(*demo.asked.lock().unwrap(), Vec::<String>::new(), "nothing was done for a refused request");

    let killed = client.post(n1, "/v1/skiff/demo/nodes/n2/kill", b"").ok().json();
    assert_eq!(killed["nodes"][1], json!({ "id": "n2", "http": "127.0.0.1:2", "running": false }), "{killed}");
    let refused = client.post(n1, "/v1/skiff/demo/nodes/n2/restart", b"");
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json(), json!({ "error": "n2 cannot start: its port is taken" }), "the demo's own words");
    let added = client.post(n1, "/v1/skiff/demo/nodes", b"").ok().json();
    assert_eq!(added, json!({ "id": "n4", "http": "127.0.0.1:1", "running": true }));
    assert_eq!(*demo.asked.lock().unwrap(), ["kill n2", "restart n2", "add"]);
    runtime.block_on(server.shutdown()).expect("a clean shutdown");
}

// --- 3. Budget -------------------------------------------------------------------------

#[test]
fn a_node_serves_at_most_32_streams_and_a_closed_one_frees_its_slot() {
    let cluster = start("dash-budget", 1, false);
    let address = cluster.client.address(NodeId(1)).to_string();
    // One stream closes below: it must be noticed quickly, so it has frames often.
    let mut streams = vec![EventStream::open(&address, FAST)];
    for _ in 1..MAX_EVENT_STREAMS {
        streams.push(EventStream::open(&address, "/v1/skiff/events?interval_ms=5000"));
    }
    for stream in &mut streams {
        stream.frame();
    }
    let (status, text) = send(&address, "GET", FAST, &[]).refused();
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("32 event streams"), "{text}");
    // The other routes still answer.
    cluster.client.set(NodeId(1), "k", b"v");

    drop(streams.remove(0));
    let mut reopened = eventually_ok("a slot freed by a closed stream", || {
        let answer = send(&address, "GET", FAST, &[]);
        if answer.status == 200 { Ok(answer.stream()) } else { Err(format!("{:?}", answer.refused())) }
    });
    reopened.frame();
    let (status, _) = send(&address, "GET", FAST, &[]).refused();
    assert_eq!(status, 503, "the freed slot was taken again");
    drop(streams);
    drop(reopened);
    cluster.shutdown();
}

// --- 4. A slow reader ------------------------------------------------------------------

/// A reader that takes a frame a second and does not even read those while the cluster is
/// busy: the writes go on as fast, and each frame it gets carries a page of the newest
/// samples (no backlog), and counts the ones it never saw.
///
/// (An unread socket alone does not make the node skip: loopback and HTTP buffers hold
/// seconds of frames, which the reader finds in order when it reads on. A frame a second
/// under load spans more samples than a page, so the node's own limit is what is tested.)
#[test]
fn a_slow_reader_costs_nothing_and_learns_what_it_missed() {
    let cluster = start("dash-slow", 3, false);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    let address = client.address(leader).to_string();
    let mut slow = EventStream::open(&address, "/v1/skiff/events?interval_ms=1000");
    let mut uptime = u64_of(&slow.frame(), "uptime_ms");
    // A sample the node took after the slow stream began: one the stream could show.
    let mut probe = EventStream::open(&address, FAST);
    let mut next_seq = probe.until("a message sample", |frame| frame["messages"][0]["seq"].as_u64());
    drop(probe);

    // The reader reads nothing while the cluster takes 300 writes, all acknowledged.
    let started = Instant::now();
    for i in 0..300 {
        client.set(leader, &format!("slow/{i}"), b"value");
    }
    eprintln!("300 writes in {} ms while the stream was not read", started.elapsed().as_millis());
    // Where the node is now, from a stream that starts now.
    let now = u64_of(&EventStream::open(&address, FAST).frame(), "uptime_ms");

    // Reading on: each frame carries at most a page of samples, each sample once, and
    // counts every message the stream did not show.
    let (mut shown, mut unshown, mut skipped, mut frames) = (0, 0, 0, 0);
    slow.until("a frame from after the writes", |frame| {
        check_frame(frame, &cluster.file, leader, false);
        frames += 1;
        assert!(u64_of(frame, "uptime_ms") > uptime, "frames in order");
        uptime = u64_of(frame, "uptime_ms");
        for message in frame["messages"].as_array().expect("messages") {
            let seq = u64_of(message, "seq");
            assert!(seq >= next_seq, "sample {seq} shown twice, or out of order");
            unshown += seq - next_seq;
            next_seq = seq + 1;
            shown += 1;
        }
        let now_skipped = u64_of(frame, "messages_skipped");
        assert!(now_skipped >= skipped, "messages_skipped went down: {skipped} then {now_skipped}");
        skipped = now_skipped;
        assert!(skipped >= unshown, "{unshown} samples went unshown but messages_skipped is {skipped}");
        (uptime >= now).then_some(())
    });
    eprintln!("{frames} frames: {shown} samples shown, {unshown} not shown, {skipped} messages skipped");
    assert!(unshown > 0, "300 writes are sampled beyond a page: the reader got the newest only");
    assert!(shown > 0, "the reader got the newest samples");
    cluster.shutdown();
}

// --- 5. Pause --------------------------------------------------------------------------

#[test]
fn a_paused_leader_is_replaced_and_catches_up_when_resumed() {
    let cluster = start("dash-pause", 3, true);
    let client = cluster.client.clone();
    let leader = cluster.leader();
    let others = cluster.others(leader);
    let mut paused_stream = EventStream::open(client.address(leader), FAST);
    let before = paused_stream.frame();
    let term = u64_of(&before, "term");
    let mut paused_events = Events::default();
    paused_events.take(&before);

    for _ in 0..2 {
        let reply = client.post(leader, "/v1/skiff/pause", b"");
        assert_eq!(reply.ok().json(), json!({ "paused": true }), "pausing twice is pausing");
    }
    paused_stream.until("a frame that says paused", |frame| {
        check_frame(frame, &cluster.file, leader, true);
        paused_events.take(frame);
        (frame["paused"] == true).then_some(())
    });
    assert!(paused_events.find(&format!("{leader} was paused")).is_some(), "{:?}", paused_events.texts);

    // The others elect a new leader in a later term, and take writes.
    let new_leader = cluster.leader_among(&others);
    let mut stream = EventStream::open(client.address(new_leader), FAST);
    let frame = stream.until("the new leader's frame", |frame| (frame["role"] == "leader").then(|| frame.clone()));
    check_frame(&frame, &cluster.file, new_leader, true);
    let new_term = u64_of(&frame, "term");
    assert!(new_term > term, "a new term: {new_term} after {term}");
    client.set(new_leader, "during-pause", b"v");

    // The paused node answers, but takes nothing.
    let refused = client.put(leader, "/v1/kv/on-paused", b"v");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.text().contains("paused"), "{}", refused.text());
    let refused = client.get(leader, "/v1/kv/during-pause?raw");
    assert_eq!(refused.status, 503, "a consistent read on a paused node: {}", refused.text());
    let frame = paused_stream.frame();
    assert_eq!((&frame["paused"], u64_of(&frame, "term")), (&json!(true), term), "its clock stands still");

    // Resumed, it follows the new leader and catches up.
    // The new leader's commit now (a frame of a stream that starts now: after the write).
    let target = u64_of(&EventStream::open(client.address(new_leader), FAST).frame(), "commit");
    assert_eq!(client.delete(leader, "/v1/skiff/pause").ok().json(), json!({ "paused": false }));
    assert_eq!(client.delete(leader, "/v1/skiff/pause").ok().json(), json!({ "paused": false }));
    paused_stream.until("the resumed node following the new leader, caught up", |frame| {
        check_frame(frame, &cluster.file, leader, true);
        paused_events.take(frame);
        let following = frame["role"] == "follower" && frame["leader"] == new_leader.to_string();
        (frame["paused"] == false
            && following
            && u64_of(frame, "term") == new_term
            && u64_of(frame, "commit") >= target)
            .then_some(())
    });
    assert!(paused_events.find(&format!("{leader} resumed")).is_some(), "{:?}", paused_events.texts);
    assert_eq!(client.raw(leader, "during-pause").as_deref(), Some(&b"v"[..]));
    drop((paused_stream, stream));
    cluster.shutdown();
}

// --- 6. CORS ---------------------------------------------------------------------------

#[test]
fn only_members_origins_may_call_across_origins() {
    let cluster = start("dash-cors", 3, false);
    let client = &cluster.client;
    let (n1, n2) = (NodeId(1), NodeId(2));
    let n2_address = client.address(n2).to_string();
    let port = n2_address.rsplit_once(':').expect("a port").1;
    let member_origins =
        [format!("http://{n2_address}"), format!("http://localhost:{port}"), format!("http://{}", client.address(n1))];
    for origin in &member_origins {
        let reply = client.request("GET", n1, "/v1/skiff/status", None, &[("Origin", origin)]);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("Access-Control-Allow-Origin"), Some(origin.as_str()), "{origin}");
        assert!(reply.headers.get_all("Vary").iter().any(|v| v.to_str().unwrap().contains("Origin")), "{origin}");

        let preflight = client.request(
            "OPTIONS",
            n1,
            "/v1/kv/a",
            None,
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "PUT"),
                ("Access-Control-Request-Headers", "x-consul-token"),
            ],
        );
        assert_eq!(preflight.status, 204, "a preflight from {origin}");
        assert_eq!(preflight.header("Access-Control-Allow-Origin"), Some(origin.as_str()));
        let methods = preflight.header("Access-Control-Allow-Methods").unwrap_or_default().to_string();
        for method in ["GET", "PUT", "POST", "DELETE"] {
            assert!(methods.contains(method), "{method} in {methods:?}");
        }
        let headers = preflight.header("Access-Control-Allow-Headers").unwrap_or_default().to_ascii_lowercase();
        for header in ["x-consul-token", "content-type"] {
            assert!(headers.contains(header), "{header} in {headers:?}");
        }
    }
    // The event stream, as another member's page opens it.
    let stream = send(client.address(n1), "GET", FAST, &[("Origin", &member_origins[0])]);
    assert_eq!(stream.header("access-control-allow-origin"), Some(member_origins[0].as_str()));
    drop(stream.stream());

    let unused = skiff_testkit::ports::free_address();
    let foreign = [
        "http://evil.example".to_string(),
        format!("http://evil.example:{port}"),
        format!("https://{n2_address}"),
        format!("http://{unused}"),
        format!("http://{n2_address}.evil.example"),
        format!("http://evil.example@{n2_address}"),
        "null".to_string(),
    ];
    for origin in &foreign {
        let reply = client.request("GET", n1, "/v1/skiff/status", None, &[("Origin", origin)]);
        assert_eq!(reply.status, 200, "the request itself is answered (a browser hides it from the page)");
        assert_eq!(reply.header("Access-Control-Allow-Origin"), None, "{origin}");
        let preflight = client.request(
            "OPTIONS",
            n1,
            "/v1/kv/a",
            None,
            &[("Origin", origin), ("Access-Control-Request-Method", "DELETE")],
        );
        assert_ne!(preflight.status, 204, "a preflight from {origin}");
        assert_eq!(preflight.header("Access-Control-Allow-Origin"), None, "{origin}");
        assert_eq!(preflight.header("Access-Control-Allow-Methods"), None, "{origin}");
    }
    assert_eq!(client.raw(n1, "a"), None, "no preflight ran a request");
    cluster.shutdown();
}

// --- 7. Tokens -------------------------------------------------------------------------

#[test]
fn the_page_is_public_and_what_it_shows_needs_a_management_token() {
    let dir = tempfile::tempdir().expect("a directory");
    let tokens = skiff_testkit::tokens::write(dir.path());
    let file = ClusterFile::builder("dash-auth", 3).http().auth(&tokens, ADMIN).build();
    let cluster = KvCluster::start_with(file, true);
    let n1 = NodeId(1);
    let anonymous = cluster.client.with_token(None);
    for (path, kind) in
        [("/", "text/html"), ("/dashboard/app.js", "text/javascript"), ("/dashboard/style.css", "text/css")]
    {
        let reply = anonymous.get(n1, path).ok();
        assert!(reply.header("Content-Type").is_some_and(|value| value.starts_with(kind)), "{path}");
        assert!(!reply.body.is_empty(), "{path}");
    }
    let address = cluster.client.address(n1).to_string();
    let n2_origin = format!("http://{}", cluster.client.address(NodeId(2)));

    // Without a token, or with one that is not a management token: 403, which a page from
    // another member can read (to ask for a token).
    for (path, headers) in [
        (FAST.to_string(), vec![]),
        (FAST.to_string(), vec![("X-Consul-Token", APP)]),
        (format!("{FAST}&token={APP}"), vec![]),
        (format!("{FAST}&token=wrong"), vec![]),
    ] {
        let mut headers = headers;
        headers.push(("Origin", n2_origin.as_str()));
        let answer = send(&address, "GET", &path, &headers);
        let allowed = answer.header("access-control-allow-origin").map(str::to_owned);
        let (status, text) = answer.refused();
        assert_eq!((status, allowed.as_deref()), (403, Some(n2_origin.as_str())), "{path}: {text}");
        assert!(text.starts_with("Permission denied"), "{path}: {text}");
    }
    for method in ["POST", "DELETE"] {
        for client in [&anonymous, &anonymous.with_token(Some(APP.into()))] {
            let reply = client.request(method, n1, "/v1/skiff/pause", None, &[]);
            assert_eq!(reply.status, 403, "{method} pause");
            assert!(reply.text().starts_with("Permission denied"), "{}", reply.text());
        }
    }
    // A preflight carries no token: it is answered.
    let preflight = anonymous.request(
        "OPTIONS",
        n1,
        "/v1/skiff/pause",
        None,
        &[("Origin", &n2_origin), ("Access-Control-Request-Method", "POST")],
    );
    assert_eq!(preflight.status, 204);

    // A management token, in the header or the query (as an EventSource sends it).
    let mut stream = send(&address, "GET", FAST, &[("X-Consul-Token", ADMIN)]).stream();
    check_frame(&stream.frame(), &cluster.file, n1, true);
    let mut stream = EventStream::open(&address, &format!("{FAST}&token={ADMIN}"));
    check_frame(&stream.frame(), &cluster.file, n1, true);
    assert_eq!(
        anonymous.request("POST", n1, &format!("/v1/skiff/pause?token={ADMIN}"), None, &[]).ok().json(),
        json!({ "paused": true })
    );
    assert_eq!(cluster.client.delete(n1, "/v1/skiff/pause").ok().json(), json!({ "paused": false }));
    drop(stream);
    cluster.shutdown();
}
