//! The Redis listener under load and abuse, spoken to over raw TCP: pipelines answered in
//! order and batched into few log entries, malformed and oversized input answered with an
//! error, and a client that never reads its replies held back without hurting others.
//! (Real clients, `redis-cli`, `redis-benchmark` and redis-py, are in `redis_clients.rs`.)
//!
//! Each test starts a 3-node cluster (the testkit's `KvCluster`) in one tokio runtime.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::resp::{Connection, Reply};
use skiff_testkit::wait::{eventually, eventually_ok};

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Some(text.as_bytes().to_vec()))
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

/// A 3-node cluster with Redis listeners.
fn start(name: &str) -> KvCluster {
    KvCluster::start(ClusterFile::builder(name, 3).http().redis().build())
}

/// The redis address of a follower, and of the leader.
fn follower_and_leader(cluster: &KvCluster) -> (SocketAddr, SocketAddr) {
    let leader = cluster.leader();
    (cluster.redis_address(cluster.others(leader)[0]), cluster.redis_address(leader))
}

/// The commit index `INFO replication` reports.
fn commit_index(connection: &mut Connection) -> u64 {
    let Reply::Bulk(Some(text)) = connection.call_words("INFO replication") else {
        panic!("INFO answers a bulk string")
    };
    let text = String::from_utf8(text).expect("INFO is text");
    let line = text.lines().find_map(|line| line.strip_prefix("raft_commit_index:")).expect("raft_commit_index");
    line.parse().expect("a number")
}

#[test]
fn pipelines_are_answered_in_order_see_their_own_writes_and_share_log_entries() {
    let cluster = start("redis-pipelines");
    let (follower, _) = follower_and_leader(&cluster);
    let mut connection = Connection::open(follower);
    let before = commit_index(&mut connection);

    // 1000 increments in one write, through a follower: each answered, in order, once.
    let increments: Vec<Vec<&[u8]>> = (0..1000).map(|_| vec![&b"INCR"[..], b"counter"]).collect();
    connection.send(&increments);
    for expected in 1..=1000 {
        assert_eq!(connection.read(), Reply::Integer(expected), "INCR number {expected}");
    }
    let after = commit_index(&mut connection);
    assert!(
        after - before <= 100,
        "1000 pipelined writes took {} log entries: they should share entries",
        after - before
    );

    // Reads and writes interleaved: each read sees the writes before it, none after it.
    let mut commands: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        let key = format!("k{}", i % 7).into_bytes();
        commands.push(vec![b"SET".to_vec(), key.clone(), format!("v{i}").into_bytes()]);
        expected.push(ok());
        commands.push(vec![b"GET".to_vec(), key.clone()]);
        expected.push(bulk(&format!("v{i}")));
        commands.push(vec![b"APPEND".to_vec(), key.clone(), b"!".to_vec()]);
        expected.push(Reply::Integer(format!("v{i}!").len() as i64));
        commands.push(vec![b"MGET".to_vec(), key, b"counter".to_vec()]);
        expected.push(Reply::Array(vec![bulk(&format!("v{i}!")), bulk("1000")]));
    }
    let borrowed: Vec<Vec<&[u8]>> = commands.iter().map(|args| args.iter().map(Vec::as_slice).collect()).collect();
    connection.send(&borrowed);
    for (number, expected) in expected.into_iter().enumerate() {
        assert_eq!(connection.read(), expected, "reply {number}");
    }

    // READONLY: reads from the follower's own state (eventually the same), READWRITE back.
    assert_eq!(connection.call_words("READONLY"), ok());
    eventually("the follower's own state reaches counter = 1000", || {
        connection.call_words("GET counter") == bulk("1000")
    });
    assert_eq!(connection.call_words("READWRITE"), ok());

    // Another connection, through every node, sees the same keyspace.
    for address in cluster.ids().into_iter().map(|id| cluster.redis_address(id)) {
        assert_eq!(Connection::open(address).call_words("GET counter"), bulk("1000"), "GET counter via {address}");
    }
    // Stopping the servers closes idle connections.
    cluster.shutdown();
    assert!(connection.closed(), "an idle connection is closed when its server stops");
}

#[test]
fn bad_input_gets_an_error_and_the_server_goes_on() {
    let cluster = start("redis-bad-input");
    let address = cluster.redis_address(NodeId(1));
    let mut connection = Connection::open(address);

    // Inline commands, as telnet and redis-benchmark send them.
    connection.send_raw(b"PING\r\nECHO \"two words\"\r\n");
    assert_eq!(connection.read(), Reply::Simple("PONG".into()));
    assert_eq!(connection.read(), bulk("two words"));

    // Errors in Redis's words; the connection stays usable.
    let wrong = |name: &str| Reply::Error(format!("ERR wrong number of arguments for '{name}' command"));
    assert_eq!(connection.call_words("GET"), wrong("get"));
    assert_eq!(connection.call_words("MSET a 1 b"), wrong("mset"));
    assert_eq!(
        connection.call_words("FROB x"),
        Reply::Error("ERR unknown command 'FROB', with args beginning with: 'x' ".into())
    );
    assert_eq!(connection.call_words("SET n abc"), ok());
    assert_eq!(connection.call_words("INCR n"), Reply::Error("ERR value is not an integer or out of range".into()));
    assert_eq!(connection.call_words("SELECT 3"), Reply::Error("ERR DB index is out of range".into()));

    // An oversized value is refused, its bytes skipped, and the next command answered.
    let big = vec![b'x'; (1 << 20) + 1];
    connection.send(&[vec![b"SET", b"big", &big], vec![b"PING"]]);
    let Reply::Error(message) = connection.read() else { panic!("SET of 1 MiB + 1 is refused") };
    assert!(message.starts_with("ERR") && message.contains("1048576"), "{message}");
    assert_eq!(connection.read(), Reply::Simple("PONG".into()));
    assert_eq!(connection.call_words("EXISTS big"), Reply::Integer(0));
    // One byte under the limit is fine.
    let fits = vec![b'y'; 1 << 20];
    connection.send(&[vec![b"SET", b"big", &fits]]);
    assert_eq!(connection.read(), ok());
    assert_eq!(connection.call_words("STRLEN big"), Reply::Integer(1 << 20));
    assert_eq!(
        connection.call_words("APPEND big z"),
        Reply::Error("ERR string exceeds maximum allowed size (1048576 bytes)".into())
    );

    // Malformed RESP: an error, then the connection is closed, as Redis does.
    for garbage in [&b"*1\r\n+PING\r\n"[..], b"*1\r\n$-7\r\n", b"*abc\r\n", b"*1\r\n$4\r\nPINGxx"] {
        let mut bad = Connection::open(address);
        bad.send_raw(garbage);
        let Reply::Error(message) = bad.read() else { panic!("{garbage:?} is answered with an error") };
        assert!(message.starts_with("ERR Protocol error"), "{garbage:?}: {message}");
        assert!(bad.closed(), "{garbage:?}: the connection is closed after a protocol error");
    }
    // None of it disturbed the first connection.
    assert_eq!(connection.call_words("GET n"), bulk("abc"));
    assert_eq!(connection.call_words("QUIT"), ok());
    assert!(connection.closed(), "QUIT closes the connection");
    cluster.shutdown();
}

#[test]
fn a_client_that_never_reads_is_held_back_and_others_are_served() {
    let cluster = start("redis-slow-reader");
    let address = cluster.redis_address(NodeId(2));
    let mut other = Connection::open(address);
    let value = vec![b'v'; 1 << 20];
    other.send(&[vec![b"SET", b"large", &value]]);
    assert_eq!(other.read(), ok());

    // Ask for the 1 MiB value over and over and never read: the server must stop reading
    // this client once its replies back up, so our writes stall long before we have asked
    // for gigabytes.
    let mut greedy = TcpStream::connect(address).expect("connect");
    greedy.set_write_timeout(Some(Duration::from_secs(2))).expect("a write timeout");
    let request = b"*2\r\n$3\r\nGET\r\n$5\r\nlarge\r\n".repeat(1000);
    let mut sent = 0usize;
    let stalled = loop {
        match greedy.write(&request) {
            Ok(written) => sent += written,
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                break true;
            }
            Err(error) => panic!("writing to the server: {error}"),
        }
        if sent > 64 << 20 {
            break false;
        }
    };
    let asked = sent / 24;
    assert!(stalled, "the server kept reading: {asked} requests for a 1 MiB value were accepted unread");
    eprintln!("the server stopped reading after {sent} bytes ({asked} requests, {} MiB of replies)", asked);

    // Meanwhile, another client is served at once.
    let started = Instant::now();
    assert_eq!(other.call_words("PING"), Reply::Simple("PONG".into()));
    assert_eq!(other.call_words("SET small 1"), ok());
    assert_eq!(other.call_words("GET small"), bulk("1"));
    assert!(started.elapsed() < Duration::from_secs(5), "the other client waited {:?}", started.elapsed());

    // When the greedy client goes away, its connection ends and is counted no more.
    drop(greedy);
    eventually_ok("the dropped client is disconnected", || {
        let Reply::Bulk(Some(text)) = other.call_words("INFO clients") else { panic!("INFO answers a bulk string") };
        let text = String::from_utf8(text).expect("text");
        if text.contains("connected_clients:1\r\n") { Ok(()) } else { Err(text) }
    });
    cluster.shutdown();
}

/// Times and options a client should never send to the expiry commands (huge, negative,
/// not numbers, binary, megabytes long), wrong arities and unknown options: each is
/// answered with an error, in order, on a connection that goes on; none writes anything.
#[test]
fn hostile_expiry_arguments_are_answered_with_errors_and_write_nothing() {
    let cluster = start("redis-hostile-expiry");
    let (follower, _) = follower_and_leader(&cluster);
    let mut connection = Connection::open(follower);
    assert_eq!(connection.call_words("SET k keep"), ok());

    let long_digits = "9".repeat(100_000);
    let long_option = "x".repeat(1 << 20);
    // Not a time anywhere.
    let garbage: Vec<&str> =
        vec!["abc", "1.5", "+5", " 5", "5 ", "0x10", "", "99999999999999999999", &long_digits, "\0\r\n", "-"];
    // Refused by SET, SETEX, PSETEX and GETEX (a time must be above 0 there).
    let not_positive = ["0", "-1", "-9223372036854775808"];
    let mut commands: Vec<Vec<String>> = Vec::new();
    let words = |line: &str| line.split(' ').map(str::to_string).collect::<Vec<String>>();
    for time in garbage.iter().copied().chain(not_positive) {
        for option in ["EX", "PX", "EXAT", "PXAT"] {
            commands.push([words("SET k v"), vec![option.into(), time.into()]].concat());
            commands.push(vec!["GETEX".into(), "k".into(), option.into(), time.into()]);
        }
        commands.push(vec!["SETEX".into(), "k".into(), time.into(), "v".into()]);
        commands.push(vec!["PSETEX".into(), "k".into(), time.into(), "v".into()]);
    }
    for time in &garbage {
        for command in ["EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT"] {
            commands.push(vec![command.into(), "k".into(), time.to_string()]);
            commands.push(vec![command.into(), "k".into(), time.to_string(), "NX".into()]);
        }
    }
    // Past 64 bits in milliseconds, or once the time now is added.
    for line in [
        "SET k v EX 9223372036854775807",
        "SET k v PX 9223372036854775807",
        "SET k v EXAT 9223372036854775807",
        "SET k v EX 9223372036854776",
        "SETEX k 9223372036854775807 v",
        "PSETEX k 9223372036854775807 v",
        "GETEX k EX 9223372036854775807",
        "EXPIRE k 9223372036854775807",
        "EXPIRE k -9223372036854775808",
        "PEXPIRE k 9223372036854775807",
        "EXPIREAT k 9223372036854775807",
        "EXPIREAT k -9223372036854775808",
    ] {
        commands.push(words(line));
    }
    // Options that do not exist or do not go together, and wrong arities.
    for line in [
        "SET k v EX 10 PX 10",
        "SET k v EX 10 KEEPTTL",
        "SET k v KEEPTTL EXAT 10",
        "SET k v EX",
        "SET k v PERSIST",
        "SET k v TTL 10",
        "SET k v FENCE",
        "SET k v FENCE abc",
        "SET k v FENCE 0",
        "SET k v FENCE -1",
        "SET k v FENCE 1 FENCE 2",
        "SET k v FENCE 1",
        "GETEX k PERSIST EX 10",
        "GETEX k EX 10 PX 10",
        "GETEX k KEEPTTL",
        "GETEX k EX",
        "GETEX k GET",
        "EXPIRE k 10 NX XX",
        "EXPIRE k 10 NX GT",
        "EXPIRE k 10 LT NX",
        "EXPIRE k 10 GT LT",
        "EXPIRE k 10 SOON",
        "PEXPIREAT k 10 XX XX LATER",
        "EXPIRE k",
        "EXPIRE",
        "PEXPIRE k",
        "EXPIREAT",
        "SETEX k 10",
        "SETEX k 10 v w",
        "PSETEX k",
        "GETEX",
        "PERSIST",
        "PERSIST k k",
        "TTL",
        "PTTL k k",
        "EXPIRETIME",
        "PEXPIRETIME k k",
    ] {
        commands.push(words(line));
    }
    commands.push(vec!["EXPIRE".into(), "k".into(), "10".into(), long_option.clone()]);
    commands.push(vec!["GETEX".into(), "k".into(), long_option.clone()]);
    commands.push(vec!["SET".into(), "k".into(), "v".into(), long_option]);

    // All of it in one pipeline: one error each, in order.
    let borrowed: Vec<Vec<&[u8]>> =
        commands.iter().map(|args| args.iter().map(|arg| arg.as_bytes()).collect()).collect();
    connection.send(&borrowed);
    for args in &commands {
        let shown: Vec<&str> = args.iter().map(|arg| &arg[..arg.len().min(40)]).collect();
        match connection.read() {
            Reply::Error(message) => {
                assert!(message.starts_with("ERR "), "{shown:?}: {message}");
                assert!(message.len() < 400, "{shown:?}: a {} byte error", message.len());
            }
            other => panic!("{shown:?} was answered {other:?}, not an error"),
        }
    }
    // Nothing was written, and the connection and the node go on.
    assert_eq!(connection.call_words("GET k"), bulk("keep"));
    assert_eq!(connection.call_words("TTL k"), Reply::Integer(-1));
    assert_eq!(connection.call_words("PING"), Reply::Simple("PONG".into()));
    for address in cluster.ids().into_iter().map(|id| cluster.redis_address(id)) {
        assert_eq!(Connection::open(address).call_words("TTL k"), Reply::Integer(-1), "TTL k via {address}");
    }
    cluster.shutdown();
}
