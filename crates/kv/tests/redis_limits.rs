//! The Redis listener's limits against hostile load (issue 16), on one-node clusters with
//! the limits each test sets:
//!
//! - the reply budget (`max_reply_bytes`): an `MGET` of one large key repeated a hundred
//!   thousand times is refused before anything is copied; a pipeline gets the replies that
//!   fit and the budget error for the rest (redis-py's pipeline, as against a Redis whose
//!   client output buffer is full); `KEYS` over budget suggests `SCAN`; `SCAN COUNT <huge>`
//!   is capped;
//! - the idle `timeout`: an idle connection, and one trickling a command, is closed, a busy
//!   one is not; `CONFIG GET timeout` answers it (redis-cli);
//! - `accept` out of file descriptors (EMFILE, with a lowered `RLIMIT_NOFILE`): the listener
//!   backs off, counts the errors, and takes the waiting connection once descriptors are
//!   free.
//!
//! The file-descriptor test lowers the limit of the whole test process: it runs alone
//! (a write lock on [`SERIAL`]; every other test holds a read lock).
//!
//! redis-py (in `SKIFF_PYTHON`, default `python3`) is needed by the pipeline's test and
//! redis-cli by a part of the idle timeout's: a missing one skips what needs it with a
//! message, or fails the test under `SKIFF_REQUIRE_REAL_CLIENTS=1`, as the testkit's
//! `real_clients` has it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use skiff_kv::Limits;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::real_clients;
use skiff_testkit::resp::{Connection, Reply};
use skiff_testkit::wait::{TIMEOUT, eventually_ok};

/// Taken for reading by every test, for writing by the one that runs out of descriptors.
static SERIAL: RwLock<()> = RwLock::new(());

const MIB: usize = 1 << 20;

/// A one-node cluster with a Redis listener (the testkit's `KvCluster`), and the address
/// of that listener.
struct OneNode {
    cluster: KvCluster,
    redis: SocketAddr,
}

impl OneNode {
    fn start(name: &str, limits: Limits) -> OneNode {
        let cluster = KvCluster::start_with_limits(ClusterFile::builder(name, 1).http().redis().build(), limits);
        let redis = cluster.redis_address(cluster.leader());
        OneNode { cluster, redis }
    }

    fn connect(&self) -> Connection {
        Connection::open(self.redis)
    }

    /// The node's `/metrics`.
    fn metrics(&self) -> String {
        self.cluster.client.get(self.cluster.file.nodes[0].id, "/metrics").ok().text()
    }
}

/// Writes `count` keys `prefix<number>` with `value`, a thousand per MSET.
fn fill(connection: &mut Connection, prefix: &str, count: usize, value: &[u8]) {
    let keys: Vec<String> = (0..count).map(|i| format!("{prefix}{i:05}")).collect();
    for chunk in keys.chunks(1000) {
        let mut command: Vec<&[u8]> = vec![b"MSET"];
        for key in chunk {
            command.extend([key.as_bytes(), value]);
        }
        assert_eq!(connection.call(&command), Reply::Simple("OK".into()));
    }
}

/// The length of a bulk string of `len` bytes as RESP2 sends it.
fn bulk_bytes(len: usize) -> usize {
    len + len.to_string().len() + 5
}

#[test]
fn an_mget_of_one_large_key_repeated_is_refused_before_it_is_built() {
    let _serial = SERIAL.read();
    let node = OneNode::start("mget-budget", Limits::default());
    let mut connection = node.connect();
    let value = vec![b'v'; MIB];
    assert_eq!(connection.call(&[b"SET", b"big", &value]), Reply::Simple("OK".into()));
    // 100,000 times a 1 MiB value: a 7 MB command asking for a 100 GB reply, which the
    // node would try to build (and be killed for) if it copied the value per argument.
    let repeats = 100_000;
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(std::iter::repeat_n(&b"big"[..], repeats));
    let size = 1 + repeats.to_string().len() + 2 + repeats * bulk_bytes(MIB);
    let expected = format!(
        "ERR reply of {size} bytes exceeds the reply budget of {} bytes (max-reply-bytes); ask for fewer keys",
        64 * MIB
    );
    assert_eq!(connection.call(&mget), Reply::Error(expected));
    // What fits the 64 MiB budget is answered: 60 copies of the value.
    let mut mget: Vec<&[u8]> = vec![b"MGET"];
    mget.extend(std::iter::repeat_n(&b"big"[..], 60));
    let Reply::Array(values) = connection.call(&mget) else { panic!("MGET answers an array") };
    assert_eq!(values.len(), 60);
    assert!(values.iter().all(|reply| *reply == Reply::Bulk(Some(value.clone()))));
    // And the connection goes on.
    assert_eq!(connection.call(&[b"PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn a_pipeline_over_the_budget_gets_the_replies_that_fit_and_errors_for_the_rest() {
    let _serial = SERIAL.read();
    let test = "a_pipeline_over_the_budget_gets_the_replies_that_fit_and_errors_for_the_rest";
    if !real_clients::present(test, &[real_clients::python_modules(&["redis"], "pip install redis")]) {
        return;
    }
    let limits = Limits { max_reply_bytes: 3 * MIB, ..Limits::default() };
    let node = OneNode::start("pipeline-budget", limits);
    // redis-py sends the pipeline in one write; the node reads it in one round. Two 1 MiB
    // values fit the 3 MiB budget, the third does not; a write is answered whatever the
    // budget, and a small value still fits what is left.
    let script = r#"
import sys, redis
r = redis.Redis(port=int(sys.argv[1]))
r.set("big", b"v" * (1 << 20))
r.set("small", b"s")
pipe = r.pipeline(transaction=False)
for _ in range(5):
    pipe.get("big")
pipe.set("k", "v")
pipe.get("small")
for reply in pipe.execute(raise_on_error=False):
    if isinstance(reply, Exception):
        print("error", type(reply).__name__, reply)
    elif isinstance(reply, bytes):
        print("value", len(reply))
    else:
        print("other", reply)
"#;
    let output = Command::new(real_clients::python())
        .args(["-c", script, &node.redis.port().to_string()])
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let left = 3 * MIB - 2 * bulk_bytes(MIB);
    let refused = format!(
        "error ResponseError reply of {} bytes exceeds the {left} bytes left of the reply budget of {} bytes \
         for this pipeline (max-reply-bytes); read the replies before sending more",
        bulk_bytes(MIB),
        3 * MIB
    );
    let expected = ["value 1048576", "value 1048576", &refused, &refused, &refused, "other True", "value 1"];
    assert_eq!(lines, expected, "{stdout}");
}

#[test]
fn keys_over_the_budget_suggests_scan_and_scan_count_is_capped() {
    let _serial = SERIAL.read();
    let limits = Limits { max_reply_bytes: 200_000, ..Limits::default() };
    let node = OneNode::start("keys-budget", limits);
    let mut connection = node.connect();
    // 10,005 short keys (130 KB of reply) then 100 long ones (100 KB): KEYS * is over the
    // 200 KB budget; SCAN with a huge COUNT reaches its cap of 10,000 keys first.
    fill(&mut connection, "k", 10_005, b"");
    let long = "x".repeat(1000);
    fill(&mut connection, &format!("long{long}"), 100, b"");
    assert_eq!(connection.call(&[b"DBSIZE"]), Reply::Integer(10_105));
    let Reply::Error(refused) = connection.call(&[b"KEYS", b"*"]) else { panic!("KEYS * over the budget is refused") };
    assert!(refused.starts_with("ERR reply of at least "), "{refused}");
    assert!(
        refused.ends_with(
            "exceeds the reply budget of 200000 bytes (max-reply-bytes); use SCAN, which returns the keys a part at a time"
        ),
        "{refused}"
    );
    let Reply::Array(keys) = connection.call(&[b"KEYS", b"k0000*"]) else { panic!("a KEYS that fits is answered") };
    assert_eq!(keys.len(), 10);

    let Reply::Array(parts) = connection.call(&[b"SCAN", b"0", b"COUNT", b"1000000000000"]) else {
        panic!("SCAN answers an array")
    };
    let [Reply::Bulk(Some(cursor)), Reply::Array(keys)] = &parts[..] else { panic!("{parts:?}") };
    assert_eq!(keys.len(), 10_000, "SCAN's COUNT is capped at 10,000");
    assert_ne!(&cursor[..], b"0", "the scan is not over");
    // The rest of the scan: the 5 short keys, then what fits of the long ones, and on.
    let mut seen = keys.len();
    let mut cursor = cursor.clone();
    while cursor != b"0" {
        let Reply::Array(parts) = connection.call(&[b"SCAN", &cursor, b"COUNT", b"1000000000000"]) else {
            panic!("SCAN answers an array")
        };
        let [Reply::Bulk(Some(next)), Reply::Array(keys)] = &parts[..] else { panic!("{parts:?}") };
        seen += keys.len();
        cursor = next.clone();
    }
    assert_eq!(seen, 10_105);
}

#[test]
fn an_idle_or_trickling_connection_is_closed_after_the_timeout() {
    let _serial = SERIAL.read();
    let limits = Limits { redis_timeout_secs: 1, ..Limits::default() };
    let node = OneNode::start("idle-timeout", limits);
    let test = "an_idle_or_trickling_connection_is_closed_after_the_timeout";
    if real_clients::present(test, &[real_clients::program_version("redis-cli", "apt-get install redis-tools")]) {
        let output = Command::new("redis-cli")
            .args(["-p", &node.redis.port().to_string(), "config", "get", "timeout"])
            .output()
            .expect("redis-cli runs");
        assert_eq!(String::from_utf8_lossy(&output.stdout), "timeout\n1\n");
    }

    let mut idle = node.connect();
    assert_eq!(idle.call(&[b"PING"]), Reply::Simple("PONG".into()));
    let mut silent = node.connect();
    // A client that sends part of a command, then a byte now and then: never idle for a
    // second, but its command takes longer than the timeout to arrive.
    let mut trickling = node.connect();
    trickling.send_raw(b"*2\r\n$3\r\nGET\r\n$40\r\n");
    let started = Instant::now();
    let mut trickled = 0;
    while started.elapsed() < TIMEOUT && trickled < 40 {
        std::thread::sleep(Duration::from_millis(200));
        if trickling.try_send_raw(b"k").is_err() {
            break;
        }
        trickled += 1;
    }
    assert!(trickled < 40, "the trickled command arrived whole: the connection was not closed");
    assert!(trickling.closed(), "the trickling connection is closed");
    // A connection in use is not idle.
    let mut busy = node.connect();
    for _ in 0..10 {
        assert_eq!(busy.call(&[b"PING"]), Reply::Simple("PONG".into()));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(idle.closed(), "the idle connection is closed");
    assert!(silent.closed(), "the connection that never sent a command is closed");
}

#[test]
fn config_get_timeout_answers_the_default() {
    let _serial = SERIAL.read();
    let node = OneNode::start("timeout-default", Limits::default());
    let mut connection = node.connect();
    let expected = Reply::Array(vec![Reply::Bulk(Some(b"timeout".to_vec())), Reply::Bulk(Some(b"300".to_vec()))]);
    assert_eq!(connection.call(&[b"CONFIG", b"GET", b"timeout"]), expected);
}

/// The process's `RLIMIT_NOFILE` lowered, until dropped (also when a test fails, so that
/// the tests after it have their descriptors).
struct DescriptorLimit(libc::rlimit);

impl DescriptorLimit {
    fn lower_to(descriptors: u64) -> DescriptorLimit {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the struct it is given, nothing else.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
        let lowered = libc::rlimit { rlim_cur: descriptors.min(limit.rlim_cur), rlim_max: limit.rlim_max };
        // SAFETY: setrlimit reads the struct it is given, nothing else.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
        DescriptorLimit(limit)
    }
}

impl Drop for DescriptorLimit {
    fn drop(&mut self) {
        // SAFETY: as in `lower_to`.
        let restored = unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.0) };
        assert_eq!(restored, 0, "restoring RLIMIT_NOFILE");
    }
}

/// `skiff_accept_errors_total` of the Redis listener, from `/metrics`.
fn accept_errors(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|line| line.starts_with("skiff_accept_errors_total{") && line.contains("protocol=\"Redis\""))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn accept_out_of_file_descriptors_backs_off_and_recovers() {
    let _serial = SERIAL.write();
    let node = OneNode::start("accept-emfile", Limits::default());
    let mut before = node.connect();
    assert_eq!(before.call(&[b"PING"]), Reply::Simple("PONG".into()));

    // Lower the process's descriptor limit to what is open plus a few, and take those.
    let open = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count() as u64;
    let lowered = DescriptorLimit::lower_to(open + 16);
    let mut fillers = Vec::new();
    let exhausted = loop {
        match std::fs::File::open("/dev/null") {
            Ok(file) => fillers.push(file),
            Err(error) => break error,
        }
    };
    assert_eq!(exhausted.raw_os_error(), Some(libc::EMFILE), "{exhausted}");
    // One descriptor for the client's socket; the node has none left to accept it with.
    fillers.pop();
    let mut waiting = TcpStream::connect(node.redis).expect("a connection to the backlog");
    waiting.write_all(b"PING\r\n").expect("sending");
    // The listener meets EMFILE and backs off; the connection waits in the backlog.
    std::thread::sleep(Duration::from_millis(500));
    drop(fillers);
    drop(lowered);

    waiting.set_read_timeout(Some(TIMEOUT)).expect("a read timeout");
    let mut pong = [0u8; 7];
    waiting.read_exact(&mut pong).expect("the waiting connection is served");
    assert_eq!(&pong, b"+PONG\r\n");
    assert_eq!(node.connect().call(&[b"PING"]), Reply::Simple("PONG".into()), "new connections are served");
    assert_eq!(before.call(&[b"PING"]), Reply::Simple("PONG".into()));
    let errors = eventually_ok("accept errors counted", || match accept_errors(&node.metrics()) {
        0 => Err("none".to_string()),
        errors => Ok(errors),
    });
    eprintln!("the Redis listener met {errors} accept errors");
}
