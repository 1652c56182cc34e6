//! The keyspace under hostile load (issue 16), against a one-node cluster on loopback whose
//! limits each test sets (a `skiff_kv::Server` in a tokio runtime, blocking clients on the
//! test thread and threads of their own):
//!
//! - a listing (`?recurse`) or a Redis `KEYS` under way does not hold up writes: a write is
//!   acknowledged while the listing is held at its start (the `test_gate` hook), and the
//!   listing then answers the state it was taken at;
//! - blocking-query wake-ups send no reads through the node, but for the watches whose key
//!   changed (`skiff_kv_node_reads_total`);
//! - blocking queries are capped per node and per client address (429, `Retry-After`);
//! - a listing over `max_listing_bytes` is refused with 413;
//! - the keyspace quota refuses writes (507, `-OOM`), lets deletes through, and raises an
//!   alarm in status and metrics that clears once space is freed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::Value;
use skiff::NodeId;
use skiff_kv::{Limits, Server, ServerOptions, test_gate};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::HttpClient;
use skiff_testkit::wait::{TIMEOUT, eventually};

const N1: NodeId = NodeId(1);

/// Tests that count reads or read gauges by node label take this exclusively: every node
/// of this binary is `n1`, and the metrics recorder is the process's.
static METRICS: RwLock<()> = RwLock::new(());

enum Metrics<'a> {
    Shared(#[allow(dead_code)] RwLockReadGuard<'a, ()>),
    Exclusive(#[allow(dead_code)] RwLockWriteGuard<'a, ()>),
}

fn metrics_shared() -> Metrics<'static> {
    Metrics::Shared(METRICS.read().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

fn metrics_exclusive() -> Metrics<'static> {
    Metrics::Exclusive(METRICS.write().unwrap_or_else(|poisoned| poisoned.into_inner()))
}

/// A one-node cluster with http and redis listeners and the given limits.
struct One {
    server: Option<Server>,
    client: HttpClient,
    redis: SocketAddr,
    runtime: tokio::runtime::Runtime,
    _metrics: Metrics<'static>,
    _dir: tempfile::TempDir,
}

impl One {
    fn start(name: &str, limits: Limits, metrics: Metrics<'static>) -> One {
        let file = ClusterFile::builder(name, 1).http().redis().build();
        let runtime =
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut options = ServerOptions::new(file.config(), N1, dir.path().join("n1"));
        options.limits = limits;
        let server = runtime.block_on(Server::start(options)).expect("the server starts");
        let redis = server.redis_address().expect("a redis listener");
        let client = HttpClient::for_file(&file);
        eventually("a leader", || client.get(N1, "/v1/status/leader").json() != Value::String(String::new()));
        One { server: Some(server), client, redis, runtime, _metrics: metrics, _dir: dir }
    }

    fn status(&self) -> Value {
        self.client.status(N1)
    }

    /// The value of the metric line that starts with `name{node="n1"` and holds `labels`.
    fn metric(&self, name: &str, labels: &str) -> f64 {
        let text = self.client.get(N1, "/metrics").ok().text();
        let prefix = format!("{name}{{");
        text.lines()
            .filter(|line| line.starts_with(&prefix) && line.contains("node=\"n1\"") && line.contains(labels))
            .map(|line| line.rsplit(' ').next().and_then(|value| value.parse::<f64>().ok()).expect("a value"))
            .sum()
    }
}

impl Drop for One {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server.shutdown());
        }
    }
}

/// A blocking RESP2 client: commands out, reply lines in (arrays flattened to their lines).
struct Redis {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Redis {
    fn open(address: SocketAddr) -> Redis {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).expect("a read timeout");
        Redis { writer: stream.try_clone().expect("a second handle"), reader: BufReader::new(stream) }
    }

    fn send(&mut self, args: &[&[u8]]) {
        let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            bytes.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            bytes.extend_from_slice(arg);
            bytes.extend_from_slice(b"\r\n");
        }
        self.writer.write_all(&bytes).expect("send");
    }

    /// One reply: a line, or an array's element lines, or a bulk string's text.
    fn read(&mut self) -> Vec<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a reply");
        let line = line.trim_end().to_string();
        match line.split_at(1) {
            ("*", count) => (0..count.parse::<usize>().expect("a count")).flat_map(|_| self.read()).collect(),
            ("$", "-1") => vec!["(nil)".into()],
            ("$", length) => {
                let mut bytes = vec![0; length.parse::<usize>().expect("a length") + 2];
                self.reader.read_exact(&mut bytes).expect("a bulk string");
                vec![String::from_utf8_lossy(&bytes[..bytes.len() - 2]).into_owned()]
            }
            _ => vec![line],
        }
    }

    fn call(&mut self, line: &str) -> Vec<String> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        self.send(&args);
        self.read()
    }
}

/// Some reads are held at their start (gated): this fails rather than hang if one never
/// comes. Writes are checked while it is held.
const GATE_WAIT: Duration = Duration::from_secs(30);

fn kv_path(key: &str) -> String {
    format!("/v1/kv/{key}")
}

#[test]
fn a_listing_under_way_does_not_hold_up_writes_and_answers_the_state_it_began_with() {
    let one = One::start("listing-vs-writes", Limits::default(), metrics_shared());
    for number in 0..300 {
        one.client.set(N1, &format!("list/{number:03}"), &[b'v'; 100]);
    }
    let gate = test_gate::hold(b"list/");
    let client = one.client.clone();
    let listing = std::thread::spawn(move || client.get(N1, "/v1/kv/list/?recurse"));
    assert!(gate.wait_entered(GATE_WAIT), "the listing reached the gate");
    // While the listing is held (it holds a view, off the apply thread), writes are
    // applied and acknowledged, and reads see them.
    one.client.set(N1, "list/new", b"written during the listing");
    one.client.remove(N1, "list/000");
    assert_eq!(one.client.raw(N1, "list/new").as_deref(), Some(&b"written during the listing"[..]));
    assert_eq!(gate.waiting(), 1, "the listing is still held");
    drop(gate);
    let reply = listing.join().expect("the listing thread").ok();
    let keys: Vec<String> = reply
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .map(|entry| entry["Key"].as_str().expect("a key").to_string())
        .collect();
    assert_eq!(keys.len(), 300, "the state the listing began with");
    assert_eq!(keys.first().map(String::as_str), Some("list/000"));
    assert!(!keys.iter().any(|key| key == "list/new"));
}

#[test]
fn a_redis_keys_under_way_does_not_hold_up_writes() {
    let one = One::start("keys-vs-writes", Limits::default(), metrics_shared());
    let mut writer = Redis::open(one.redis);
    for number in 0..200 {
        assert_eq!(writer.call(&format!("SET rk:{number:03} v")), ["+OK"]);
    }
    let gate = test_gate::hold(b"rk:*");
    let address = one.redis;
    let keys = std::thread::spawn(move || Redis::open(address).call("KEYS rk:*"));
    assert!(gate.wait_entered(GATE_WAIT), "KEYS reached the gate");
    assert_eq!(writer.call("SET rk:new v"), ["+OK"]);
    assert_eq!(writer.call("GET rk:new"), ["v"]);
    assert_eq!(gate.waiting(), 1, "KEYS is still held");
    drop(gate);
    let keys = keys.join().expect("the KEYS thread");
    assert_eq!(keys.len(), 200, "the keys when KEYS began");
    assert!(!keys.iter().any(|key| key == "rk:new"));
}

/// A blocking query through `client`, in a thread: its reply.
fn blocking_query(client: &HttpClient, path: String) -> std::thread::JoinHandle<skiff_testkit::kv::Reply> {
    let client = client.clone();
    std::thread::spawn(move || client.get(N1, &path))
}

#[test]
fn watcher_wake_ups_send_no_reads_through_the_node_but_for_the_changed_key() {
    const WATCHERS: usize = 20;
    let one = One::start("watch-wake-ups", Limits::default(), metrics_exclusive());
    for number in 0..WATCHERS {
        one.client.set(N1, &format!("watched/{number}"), b"0");
    }
    let index = one.client.get(N1, "/v1/kv/watched/0").ok().index();
    let last = one.client.get(N1, "/v1/kv/watched/?recurse").ok().index();
    let mut waiting: Vec<_> = (0..WATCHERS)
        .map(|number| blocking_query(&one.client, format!("/v1/kv/watched/{number}?index={last}&wait=10m")))
        .collect();
    eventually("every blocking query waits", || one.status()["keyspace"]["watches"] == WATCHERS);
    let reads = || one.metric("skiff_kv_node_reads_total", "");
    let before = reads();
    for number in 0..50 {
        one.client.set(N1, &format!("other/{number}"), b"x");
    }
    assert_eq!(reads(), before, "writes to keys nobody watches wake no watcher: no reads through the node");
    one.client.set(N1, "watched/0", b"1");
    let woken = waiting.remove(0).join().expect("the woken query").ok();
    assert!(woken.index() > index && woken.index() > last);
    assert_eq!(reads(), before + 1.0, "the one watcher of the changed key read once");
    assert_eq!(one.status()["keyspace"]["watches"], WATCHERS - 1);
    // Let the others go.
    for number in 1..WATCHERS {
        one.client.set(N1, &format!("watched/{number}"), b"1");
    }
    for query in waiting {
        assert_eq!(query.join().expect("a woken query").ok().json()[0]["Value"], "MQ==");
    }
}

/// A blocking GET from the source address `from` (a loopback address of its own), sent
/// raw; returns the stream to read the answer from later.
fn blocking_from(one: &One, from: [u8; 4], path: &str) -> std::net::TcpStream {
    let to: SocketAddr = one.client.address(N1).parse().expect("an address");
    let stream = one.runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("a socket");
        socket.bind(SocketAddr::from((from, 0))).expect("bind a loopback source address");
        socket.connect(to).await.expect("connect")
    });
    let mut stream = stream.into_std().expect("a std stream");
    stream.set_nonblocking(false).expect("blocking");
    stream.set_read_timeout(Some(TIMEOUT)).expect("a read timeout");
    write!(stream, "GET {path} HTTP/1.1\r\nHost: n1\r\n\r\n").expect("send");
    stream
}

/// The status line, `Retry-After` and body of a (short) HTTP answer on `stream`.
fn answer(stream: std::net::TcpStream) -> (String, Option<String>, String) {
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    reader.read_line(&mut status).expect("a status line");
    let (mut retry_after, mut length) = (None, 0);
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(": ").expect("a header line");
        match name.to_ascii_lowercase().as_str() {
            "retry-after" => retry_after = Some(value.to_string()),
            "content-length" => length = value.parse().expect("a length"),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the body");
    (status.trim_end().to_string(), retry_after, String::from_utf8_lossy(&body).into_owned())
}

#[test]
fn blocking_queries_are_capped_per_client_address_and_per_node() {
    let limits = Limits { max_blocking_queries: 3, max_blocking_queries_per_client: 2, ..Limits::default() };
    let one = One::start("blocking-caps", limits, metrics_shared());
    one.client.set(N1, "capped", b"0");
    let index = one.client.get(N1, "/v1/kv/capped").ok().index();
    let path = format!("/v1/kv/capped?index={index}&wait=10m");
    let held = |count: usize| {
        eventually(format!("{count} blocking queries"), || one.status()["keyspace"]["blocking_queries"] == count)
    };
    let first = blocking_from(&one, [127, 0, 0, 2], &path);
    let second = blocking_from(&one, [127, 0, 0, 2], &path);
    held(2);
    let (status, retry_after, body) = answer(blocking_from(&one, [127, 0, 0, 2], &path));
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    assert_eq!(retry_after.as_deref(), Some("5"));
    assert!(body.contains("from 127.0.0.2") && body.contains("limit per client address is 2"), "{body}");
    let third = blocking_from(&one, [127, 0, 0, 3], &path);
    held(3);
    let (status, retry_after, body) = answer(blocking_from(&one, [127, 0, 0, 4], &path));
    assert_eq!(status, "HTTP/1.1 429 Too Many Requests");
    assert!(retry_after.is_some());
    assert!(body.contains("too many blocking queries on this node") && body.contains("the limit is 3"), "{body}");
    // A query that does not block is not counted; a change answers the held ones and frees
    // their slots.
    assert_eq!(one.client.get(N1, "/v1/kv/capped").status, 200);
    one.client.set(N1, "capped", b"1");
    for stream in [first, second, third] {
        assert_eq!(answer(stream).0, "HTTP/1.1 200 OK");
    }
    held(0);
    let again = blocking_from(&one, [127, 0, 0, 2], &path.replace(&format!("index={index}"), "index=1"));
    assert_eq!(answer(again).0, "HTTP/1.1 200 OK", "past the change, a blocking query answers at once");
}

#[test]
fn a_listing_over_the_limit_is_refused_and_a_narrower_one_is_served() {
    let limits = Limits { max_listing_bytes: 2000, ..Limits::default() };
    let one = One::start("listing-limit", limits, metrics_shared());
    for number in 0..20 {
        one.client.set(N1, &format!("big/{number:02}"), &[b'v'; 100]);
    }
    let message = one.client.get(N1, "/v1/kv/big/?recurse").error(413);
    assert!(
        message.contains("more than the limit of 2000 bytes") && message.contains("narrow the prefix"),
        "{message}"
    );
    let narrower = one.client.get(N1, "/v1/kv/big/0?recurse").ok();
    assert_eq!(narrower.json().as_array().map(Vec::len), Some(10));
    // Names are small: the whole prefix's names fit.
    assert_eq!(one.client.get(N1, "/v1/kv/big/?keys").ok().json().as_array().map(Vec::len), Some(20));
    let limits = Limits { max_listing_bytes: 50, ..Limits::default() };
    drop(one);
    let one = One::start("listing-limit-names", limits, metrics_shared());
    for number in 0..20 {
        one.client.set(N1, &format!("name/{number:02}"), b"v");
    }
    assert!(one.client.get(N1, "/v1/kv/name/?keys").error(413).contains("narrow the prefix"));
}

#[test]
fn the_quota_refuses_writes_lets_deletes_through_and_its_alarm_clears_once_space_is_freed() {
    let limits = Limits { keyspace_quota_bytes: 1000, ..Limits::default() };
    let one = One::start("quota", limits, metrics_exclusive());
    assert_eq!(one.status()["keyspace"]["quota_bytes"], 1000);
    assert_eq!(one.status()["keyspace"]["alarm"], Value::Null);
    // Keys of 5 bytes with 245-byte values: 250 bytes each; four fill the quota.
    for number in 0..4 {
        one.client.set(N1, &format!("q/{number:03}"), &[b'v'; 245]);
    }
    let message = one.client.put(N1, &kv_path("q/004"), &[b'v'; 245]).error(507);
    assert!(message.starts_with("OOM command not allowed when used memory > 'keyspace-quota'"), "{message}");
    assert!(message.contains("1000 bytes of keys and values used of 1000"), "{message}");
    assert_eq!(one.client.raw(N1, "q/004"), None, "nothing was written");
    let status = one.status();
    assert_eq!(status["keyspace"]["used_bytes"], 1000);
    let alarm = status["keyspace"]["alarm"].as_str().expect("the alarm is raised").to_string();
    assert!(alarm.starts_with("NOSPACE"), "{alarm}");
    assert_eq!(one.metric("skiff_kv_quota_alarm", ""), 1.0);
    assert_eq!(one.metric("skiff_kv_keyspace_bytes", ""), 1000.0);
    // Through Redis: the same refusal, for SET and for a whole MSET (nothing of it applies).
    let mut redis = Redis::open(one.redis);
    let refused = redis.call(&format!("SET q/r {}", "v".repeat(200)));
    assert!(refused[0].starts_with("-OOM command not allowed when used memory > 'keyspace-quota'"), "{refused:?}");
    let refused = redis.call(&format!("MSET q/m1 x q/m2 {}", "v".repeat(200)));
    assert!(refused[0].starts_with("-OOM "), "{refused:?}");
    assert_eq!(redis.call("EXISTS q/m1 q/m2"), [":0"]);
    // Deletes work; once space is freed the alarm clears by itself, and writes fit again.
    assert_eq!(redis.call("DEL q/000"), [":1"]);
    one.client.remove(N1, "q/001");
    let status = one.status();
    assert_eq!(status["keyspace"]["alarm"], Value::Null);
    assert_eq!(status["keyspace"]["used_bytes"], 500);
    assert_eq!(one.metric("skiff_kv_quota_alarm", ""), 0.0);
    one.client.set(N1, "q/004", &[b'v'; 245]);
    assert_eq!(redis.call("SET q/r small"), ["+OK"]);
}
