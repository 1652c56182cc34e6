//! Redis transactions over raw TCP: MULTI queues (`+QUEUED`), an error at queue time makes
//! EXEC answer EXECABORT and apply nothing, DISCARD forgets, Redis 7's errors for misplaced
//! transaction commands, and WATCH: EXEC answers a nil array and applies nothing when a
//! watched key was written, deleted, created or expired since. (redis-py's transactions and
//! WATCH retries under contention are in `redis_clients.rs`.)

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::resp::{Connection, Reply};
use skiff_testkit::wait::eventually;

fn bulk(text: &str) -> Reply {
    Reply::Bulk(Some(text.as_bytes().to_vec()))
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn queued() -> Reply {
    Reply::Simple("QUEUED".into())
}

fn error_starting(reply: &Reply, start: &str) -> bool {
    matches!(reply, Reply::Error(text) if text.starts_with(start))
}

/// A 3-node cluster with Redis listeners, and a follower's Redis address.
fn start(name: &str) -> (KvCluster, SocketAddr) {
    let cluster = KvCluster::start(ClusterFile::builder(name, 3).http().redis().build());
    let leader = cluster.leader();
    let follower = cluster.redis_address(cluster.others(leader)[0]);
    (cluster, follower)
}

/// A client that reads each reply as its first line: for replies of one line, where the
/// testkit's client would read RESP2's nil array (`*-1`) as an empty one.
struct Lines {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Lines {
    fn open(address: SocketAddr) -> Lines {
        let stream = TcpStream::connect(address).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
        Lines { writer: stream.try_clone().expect("a second handle"), reader: BufReader::new(stream) }
    }

    fn call(&mut self, line: &str) -> String {
        let words: Vec<&str> = line.split(' ').collect();
        let mut bytes = format!("*{}\r\n", words.len());
        for word in words {
            bytes += &format!("${}\r\n{word}\r\n", word.len());
        }
        self.writer.write_all(bytes.as_bytes()).expect("send");
        self.next_line()
    }

    /// The next line of a reply.
    fn next_line(&mut self) -> String {
        let mut reply = String::new();
        self.reader.read_line(&mut reply).expect("a reply");
        reply.trim_end().to_string()
    }
}

#[test]
fn multi_queues_exec_answers_in_order_and_errors_at_queue_time_abort() {
    let (_cluster, follower) = start("redis-multi");
    let mut c = Connection::open(follower);

    // Queued, then answered together in order; a failure at run time (INCR of a word) is
    // that command's error in the array, and the others apply, as in Redis.
    assert_eq!(c.call_words("SET word hello"), ok());
    assert_eq!(c.call_words("MULTI"), ok());
    for line in ["SET a 1", "INCR a", "PING", "ECHO hi", "INCR word", "MSET b 2 c 3", "DEL c"] {
        assert_eq!(c.call_words(line), queued(), "{line}");
    }
    let Reply::Array(replies) = c.call_words("EXEC") else { panic!("EXEC answers an array") };
    assert_eq!(replies.len(), 7);
    assert_eq!(&replies[..4], &[ok(), Reply::Integer(2), Reply::Simple("PONG".into()), bulk("hi")]);
    assert!(error_starting(&replies[4], "ERR value is not an integer"), "{:?}", replies[4]);
    assert_eq!(&replies[5..], &[ok(), Reply::Integer(1)]);
    assert_eq!(c.call_words("MGET a b c"), Reply::Array(vec![bulk("2"), bulk("2"), Reply::Bulk(None)]));
    // Reads answer the state at their place in the transaction: after the writes before
    // them, before those after them.
    assert_eq!(c.call_words("MULTI"), ok());
    let lines = [
        "GET r",
        "SET r 1",
        "GET r",
        "INCR r",
        "MGET r nothing",
        "EXISTS r r nothing",
        "STRLEN r",
        "TYPE r",
        "TTL r",
        "PEXPIRE r 100000",
        "TTL r",
        "DEL r",
        "TYPE r",
        "TTL r",
    ];
    for line in lines {
        assert_eq!(c.call_words(line), queued(), "{line}");
    }
    let expected = vec![
        Reply::Bulk(None),
        ok(),
        bulk("1"),
        Reply::Integer(2),
        Reply::Array(vec![bulk("2"), Reply::Bulk(None)]),
        Reply::Integer(2),
        Reply::Integer(1),
        Reply::Simple("string".into()),
        Reply::Integer(-1),
        Reply::Integer(1),
        Reply::Integer(100),
        Reply::Integer(1),
        Reply::Simple("none".into()),
        Reply::Integer(-2),
    ];
    assert_eq!(c.call_words("EXEC"), Reply::Array(expected));
    // An empty transaction.
    assert_eq!(c.call_words("MULTI"), ok());
    assert_eq!(c.call_words("EXEC"), Reply::Array(Vec::new()));

    // Misplaced transaction commands: Redis 7's errors. A nested MULTI or a WATCH inside
    // MULTI is refused without aborting the transaction.
    assert_eq!(c.call_words("EXEC"), Reply::Error("ERR EXEC without MULTI".into()));
    assert_eq!(c.call_words("DISCARD"), Reply::Error("ERR DISCARD without MULTI".into()));
    assert_eq!(c.call_words("MULTI"), ok());
    assert_eq!(c.call_words("MULTI"), Reply::Error("ERR MULTI calls can not be nested".into()));
    assert_eq!(c.call_words("WATCH a"), Reply::Error("ERR WATCH inside MULTI is not allowed".into()));
    assert_eq!(c.call_words("SET nested yes"), queued());
    assert_eq!(c.call_words("EXEC"), Reply::Array(vec![ok()]));
    assert_eq!(c.call_words("GET nested"), bulk("yes"));

    // Errors at queue time: each answered at once, and EXEC answers EXECABORT and applies
    // none of the transaction's writes.
    let refused = [
        ("NOSUCHCOMMAND x", "ERR unknown command"),
        ("SET aborted", "ERR wrong number of arguments"),
        ("SET aborted 1 EX nonsense", "ERR"),
        ("SET aborted 1 NX XX", "ERR syntax error"),
        ("KEYS *", "ERR Skiff does not run KEYS, SCAN or DBSIZE inside MULTI"),
        ("CLIENT SETNAME inside", "ERR Command not allowed inside a transaction"),
    ];
    for (line, expected) in refused {
        assert_eq!(c.call_words("MULTI"), ok());
        assert_eq!(c.call_words("SET aborted yes"), queued());
        let reply = c.call_words(line);
        assert!(error_starting(&reply, expected), "{line}: {reply:?}");
        assert_eq!(c.call_words("INCR a"), queued(), "queueing goes on after {line}");
        assert_eq!(
            c.call_words("EXEC"),
            Reply::Error("EXECABORT Transaction discarded because of previous errors.".into()),
            "{line}"
        );
        assert_eq!(c.call_words("MGET aborted a"), Reply::Array(vec![Reply::Bulk(None), bulk("2")]), "{line}");
        assert_eq!(c.call_words("CLIENT GETNAME"), Reply::Bulk(None));
    }

    // DISCARD forgets the queue; the connection is out of the transaction.
    assert_eq!(c.call_words("MULTI"), ok());
    assert_eq!(c.call_words("SET discarded yes"), queued());
    assert_eq!(c.call_words("DISCARD"), ok());
    assert_eq!(c.call_words("GET discarded"), Reply::Bulk(None));
    assert_eq!(c.call_words("EXEC"), Reply::Error("ERR EXEC without MULTI".into()));

    // A whole transaction pipelined in one round, after a write on the same round.
    let commands: Vec<Vec<&[u8]>> = ["SET p 1", "MULTI", "INCR p", "INCR p", "EXEC", "GET p"]
        .iter()
        .map(|line| line.split(' ').map(str::as_bytes).collect())
        .collect();
    c.send(&commands);
    let replies: Vec<Reply> = (0..commands.len()).map(|_| c.read()).collect();
    assert_eq!(
        replies,
        vec![ok(), ok(), queued(), queued(), Reply::Array(vec![Reply::Integer(2), Reply::Integer(3)]), bulk("3")]
    );

    // QUIT inside MULTI is not queued: it answers and closes, and nothing queued applies.
    assert_eq!(c.call_words("MULTI"), ok());
    assert_eq!(c.call_words("SET quit yes"), queued());
    assert_eq!(c.call_words("QUIT"), ok());
    assert!(c.closed(), "QUIT closes the connection");
    let mut again = Connection::open(follower);
    assert_eq!(again.call_words("GET quit"), Reply::Bulk(None));
}

#[test]
fn exec_after_a_watched_key_changed_answers_nil_and_applies_nothing() {
    let (cluster, follower) = start("redis-watch");
    let leader = cluster.redis_address(cluster.leader());
    let mut other = Connection::open(leader);
    let mut c = Lines::open(follower);
    // Each change another client makes to a watched key, and one it does not make.
    let changes: [(&str, &str, bool); 6] = [
        ("k", "SET k other", true),
        ("k", "SET k same", true),
        ("k", "DEL k", true),
        ("absent", "SET absent now", true),
        ("k", "PEXPIRE k 100000", true),
        ("k", "SET unrelated x", false),
    ];
    for (key, change, aborts) in changes {
        other.call_words("DEL absent");
        assert_eq!(other.call_words("SET k same"), ok());
        assert_eq!(c.call(&format!("WATCH {key} unwatched")), "+OK");
        other.call_words(change);
        assert_eq!(c.call("MULTI"), "+OK");
        assert_eq!(c.call("SET result written"), "+QUEUED");
        let expected = if aborts { "*-1" } else { "*1" };
        assert_eq!(c.call("EXEC"), expected, "after {change}");
        if !aborts {
            assert_eq!(c.next_line(), "+OK", "the array's element");
        }
        let result = other.call_words("GET result");
        assert_eq!(result, if aborts { Reply::Bulk(None) } else { bulk("written") }, "after {change}");
        other.call_words("DEL result");
        // EXEC forgets the watched keys: the next transaction applies whatever changed.
        other.call_words(change);
        assert_eq!(c.call("MULTI"), "+OK");
        assert_eq!(c.call("SET result again"), "+QUEUED");
        assert_eq!(c.call("EXEC"), "*1");
        assert_eq!(c.next_line(), "+OK");
        assert_eq!(other.call_words("GET result"), bulk("again"));
        other.call_words("DEL result");
    }

    // A watched key that expires (its TTL passes) counts as changed.
    assert_eq!(other.call_words("SET short v PX 300"), ok());
    assert_eq!(c.call("WATCH short"), "+OK");
    eventually("the key expires", || other.call_words("EXISTS short") == Reply::Integer(0));
    assert_eq!(c.call("MULTI"), "+OK");
    assert_eq!(c.call("SET result expired"), "+QUEUED");
    assert_eq!(c.call("EXEC"), "*-1");
    assert_eq!(other.call_words("GET result"), Reply::Bulk(None));

    // UNWATCH and DISCARD forget the keys.
    for forget in ["UNWATCH", "DISCARD"] {
        assert_eq!(c.call("WATCH k"), "+OK");
        other.call_words("SET k changed");
        if forget == "DISCARD" {
            assert_eq!(c.call("MULTI"), "+OK");
        }
        assert_eq!(c.call(forget), "+OK");
        assert_eq!(c.call("MULTI"), "+OK");
        assert_eq!(c.call("SET result kept"), "+QUEUED");
        assert_eq!(c.call("EXEC"), "*1", "after {forget}");
        assert_eq!(c.next_line(), "+OK");
        assert_eq!(other.call_words("GET result"), bulk("kept"));
    }

    // A write by the watching connection itself, before MULTI, counts too (as in Redis).
    assert_eq!(c.call("WATCH k"), "+OK");
    assert_eq!(c.call("SET k mine"), "+OK");
    assert_eq!(c.call("MULTI"), "+OK");
    assert_eq!(c.call("SET result own"), "+QUEUED");
    assert_eq!(c.call("EXEC"), "*-1");
}
