//! The library against a real cluster: three `skiff_kv::Server`s in this process, on ports
//! the OS picked. Then against endpoints that misbehave (a dead port, a server that never
//! answers, one that answers garbage): each gives a typed error within the timeout.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use skiff_client::{Client, Consistency, DeleteOptions, Error, WriteOptions};
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::ports::free_port;
use skiff_testkit::wait::eventually;

/// The testkit's three-node KV cluster (which shuts its servers down when dropped), with
/// the endpoints the client is given.
struct Cluster {
    _servers: KvCluster,
    /// The nodes' HTTP addresses, `127.0.0.1:port`, n1 first.
    endpoints: Vec<String>,
}

impl Cluster {
    fn start() -> Cluster {
        let file = ClusterFile::builder("client", 3).http().build();
        let endpoints = file.http_addresses();
        let cluster = Cluster { _servers: KvCluster::start(file), endpoints };
        let client = cluster.client();
        eventually("a leader the client sees", || client.members().is_ok_and(|members| members.leader.is_some()));
        cluster
    }

    fn client(&self) -> Client {
        Client::new(&self.endpoints).expect("valid endpoints")
    }

    /// The endpoint of a node that is not the leader.
    fn follower(&self, client: &Client) -> String {
        let mut follower = None;
        eventually("a follower that knows the leader", || {
            follower = self.endpoints.iter().find(|endpoint| {
                client
                    .node_status(endpoint, Duration::from_secs(2))
                    .is_ok_and(|status| status.role == "follower" && status.leader.is_some())
            });
            follower.is_some()
        });
        follower.cloned().expect("a follower")
    }
}

#[test]
fn keys_are_written_read_listed_and_deleted() {
    let cluster = Cluster::start();
    let client = cluster.client();
    assert!(client.put("app/greeting", "hello").expect("put"));
    let flags = WriteOptions { flags: Some(42), ..WriteOptions::default() };
    assert!(client.put_with("app/limit", b"100", flags).expect("put with flags"));

    let entry = client.get("app/greeting", Consistency::Consistent).expect("get");
    assert_eq!((entry.key.as_str(), entry.value.as_slice()), ("app/greeting", &b"hello"[..]));
    assert_eq!(client.get("app/limit", Consistency::Consistent).expect("get").flags, 42);
    assert_eq!(client.get_raw("app/limit", Consistency::Consistent).expect("raw get"), b"100");
    eventually("a stale read of the write", || client.get("app/greeting", Consistency::Stale).is_ok());

    // Compare-and-set: a stale index is refused, the current one accepted.
    assert!(!client.cas("app/greeting", "late", entry.modify_index - 1).expect("cas"));
    assert!(client.cas("app/greeting", "again", entry.modify_index).expect("cas"));
    assert!(!client.cas("app/greeting", "create", 0).expect("cas=0 on an existing key"));
    let again = client.get("app/greeting", Consistency::Consistent).expect("get");
    assert_eq!(again.value, b"again");
    assert!(again.modify_index > entry.modify_index);

    let keys = client.list_keys("app/", Consistency::Consistent).expect("list keys");
    assert_eq!(keys, ["app/greeting", "app/limit"]);
    let entries = client.list("app/", Consistency::Consistent).expect("list");
    assert_eq!(entries.iter().map(|entry| entry.value.as_slice()).collect::<Vec<_>>(), [&b"again"[..], b"100"]);
    assert_eq!(client.list("nothing/", Consistency::Consistent).expect("empty list"), []);

    let stale_delete = DeleteOptions { cas: Some(entry.modify_index), ..DeleteOptions::default() };
    assert!(!client.delete_with("app/greeting", stale_delete).expect("delete with cas"));
    assert!(client.delete("app/greeting").expect("delete"));
    assert!(client.delete("app/greeting").expect("deleting a missing key is true"));
    match client.get("app/greeting", Consistency::Consistent) {
        Err(Error::NotFound { key }) => assert_eq!(key, "app/greeting"),
        other => panic!("a deleted key reads as NotFound, not {other:?}"),
    }
    assert!(matches!(client.get_raw("app/greeting", Consistency::Stale), Err(Error::NotFound { .. })));
    assert!(client.delete_with("app/", DeleteOptions { recurse: true, ..DeleteOptions::default() }).expect("recurse"));
    assert_eq!(client.list_keys("", Consistency::Consistent).expect("list all"), Vec::<String>::new());
}

#[test]
fn a_write_sent_to_a_follower_succeeds_and_a_dead_endpoint_is_skipped() {
    let cluster = Cluster::start();
    let follower = cluster.follower(&cluster.client());
    let through_follower = Client::new([&follower]).expect("a valid endpoint");
    assert!(through_follower.put("via/follower", "yes").expect("a write through a follower"));
    let entry = cluster.client().get("via/follower", Consistency::Consistent).expect("read back");
    assert_eq!(entry.value, b"yes");

    // A dead endpoint first: refused at once, and the next one answers.
    let dead = format!("127.0.0.1:{}", free_port());
    let client = Client::builder().endpoints([&dead]).endpoints(&cluster.endpoints).build().expect("valid endpoints");
    let started = Instant::now();
    assert!(client.put("after/dead", "ok").expect("a write past a dead endpoint"));
    assert_eq!(client.get("after/dead", Consistency::Consistent).expect("read").value, b"ok");
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

#[test]
fn answers_serialize_back_to_the_servers_json() {
    let cluster = Cluster::start();
    let client = cluster.client();
    client.put("json", "value").expect("put");
    let endpoint = &cluster.endpoints[0];
    let raw = |path: &str| -> serde_json::Value {
        let mut response = ureq::get(format!("http://{endpoint}{path}")).call().expect("the node answers");
        serde_json::from_slice(&response.body_mut().read_to_vec().expect("a body")).expect("JSON")
    };
    let one = Client::new([endpoint]).expect("a valid endpoint");
    let entries = vec![one.get("json", Consistency::Consistent).expect("get")];
    assert_eq!(to_json(&entries), raw("/v1/kv/json"));
    assert_eq!(to_json(&one.members().expect("members")), raw("/v1/skiff/members"));
    assert_eq!(to_json(&one.log(Some(1), Some(10)).expect("log")), raw("/v1/skiff/log?from=1&limit=10"));
    // The status changes from one moment to the next (contact times); compare the shape.
    let status = one.status().expect("status");
    let keys = |value: &serde_json::Value| value.as_object().map(|object| object.keys().cloned().collect::<Vec<_>>());
    assert_eq!(keys(&to_json(&status)), keys(&raw("/v1/skiff/status")));
}

fn to_json(answer: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(answer).expect("serializable")
}

#[test]
fn membership_and_leadership_calls() {
    let cluster = Cluster::start();
    let client = cluster.client();
    let before = client.members().expect("members");
    assert_eq!(before.members.len(), 3);
    let leader = before.leader.expect("a leader");
    client.transfer_leader(None).expect("a leader transfer");
    eventually("a new leader", || {
        client.members().is_ok_and(|members| members.leader.is_some_and(|now| now != leader))
    });
    match client.remove_member("n9") {
        Err(Error::Http { status: 404, .. }) => {}
        other => panic!("removing a non-member is an HTTP 404, not {other:?}"),
    }
    match client.promote_member("n1") {
        Err(Error::Http { status: 409, .. }) => {}
        other => panic!("promoting a voter is an HTTP 409, not {other:?}"),
    }
}

/// A server on a port of its own that answers every request with `answer` (after reading
/// the request's head), until the test ends.
fn answering(answer: &'static [u8]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = listener.local_addr().expect("an address").to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|read| read > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = reader.get_mut().write_all(answer);
        }
    });
    address
}

fn client_of(endpoint: &str, timeout: Duration) -> Client {
    Client::builder().endpoints([endpoint]).timeout(timeout).build().expect("a valid endpoint")
}

#[test]
fn a_200_with_garbage_is_a_decode_error() {
    let endpoint = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!");
    let client = client_of(&endpoint, Duration::from_secs(5));
    for error in [
        client.get("key", Consistency::Consistent).map(|_| ()),
        client.put("key", "value").map(|_| ()),
        client.members().map(|_| ()),
        client.status().map(|_| ()),
    ] {
        match error {
            Err(Error::Decode { endpoint: from, status: 200, detail }) => {
                assert_eq!(from, endpoint);
                assert!(detail.contains("not json!"), "{detail}");
            }
            other => panic!("garbage is a Decode error, not {other:?}"),
        }
    }
}

#[test]
fn an_endpoint_that_never_answers_times_out_within_the_timeout() {
    // Bound but never accepted: the kernel completes the handshake, nothing answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("a port");
    let endpoint = silent.local_addr().expect("an address").to_string();
    let timeout = Duration::from_millis(800);
    let client = client_of(&endpoint, timeout);
    for call in [
        Box::new(|| client.get("key", Consistency::Consistent).map(|_| ())) as Box<dyn Fn() -> _>,
        Box::new(|| client.put("key", "value").map(|_| ())),
    ] {
        let started = Instant::now();
        match call() {
            Err(Error::Timeout { after, last_error }) => {
                assert_eq!(after, timeout);
                assert!(last_error.is_some_and(|error| error.contains(&endpoint)));
            }
            other => panic!("silence is a Timeout, not {other:?}"),
        }
        assert!(started.elapsed() < timeout + Duration::from_secs(1), "took {:?}", started.elapsed());
    }
    // A call that is not retried reports that it may have happened.
    assert!(matches!(client.remove_member("n3"), Err(Error::Lost { .. })));
    drop(silent);
}

#[test]
fn an_answer_that_is_not_http_and_dead_endpoints_are_typed_errors() {
    let endpoint = answering(b"hello, this is not HTTP\r\n\r\n");
    let timeout = Duration::from_millis(800);
    let started = Instant::now();
    let error = client_of(&endpoint, timeout).get("key", Consistency::Consistent);
    assert!(matches!(error, Err(Error::Timeout { last_error: Some(_), .. })), "{error:?}");
    assert!(started.elapsed() < timeout + Duration::from_secs(1), "took {:?}", started.elapsed());

    let dead = [free_port(), free_port()].map(|port| format!("127.0.0.1:{port}"));
    match Client::new(&dead).expect("valid endpoints").put("key", "value") {
        Err(Error::Connect { attempts }) => {
            assert_eq!(attempts.len(), 2);
            assert!(attempts.iter().zip(&dead).all(|(attempt, endpoint)| attempt.starts_with(endpoint.as_str())));
        }
        other => panic!("refused connections are a Connect error, not {other:?}"),
    }
}

#[test]
fn the_feed_shows_a_transaction_as_one_entry_and_a_new_watch_picks_up_at_resume_index() {
    use skiff_client::{FeedEvent, TxnOp, TxnOutcome, WatchOptions};
    let cluster = Cluster::start();
    let client = cluster.client();
    client.put("acct/before", "0").unwrap();
    // From now on: what was written before is not shown.
    let mut watch = client.feed("acct/", WatchOptions::default()).unwrap();
    client.put("acct/a", "1").unwrap();
    let ops = [
        TxnOp::Set { key: "acct/b".into(), value: b"2".to_vec(), flags: 0 },
        TxnOp::Set { key: "acct/c".into(), value: b"3".to_vec(), flags: 0 },
        TxnOp::Delete { key: "acct/a".into() },
    ];
    assert!(matches!(client.txn(&ops).unwrap(), TxnOutcome::Committed(_)));
    client.put("other/x", "no").unwrap();
    client.put("acct/d", "4").unwrap();

    let mut seen = Vec::new();
    while seen.len() < 5 {
        match watch.next().expect("a watch does not end").unwrap() {
            FeedEvent::Put(put) => seen.push(("put", put.key, put.index)),
            FeedEvent::Delete(gone) => seen.push(("delete", gone.key, gone.index)),
            FeedEvent::Progress { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let kinds: Vec<(&str, &str)> = seen.iter().map(|(kind, key, _)| (*kind, key.as_str())).collect();
    assert_eq!(
        kinds,
        [("put", "acct/a"), ("put", "acct/b"), ("put", "acct/c"), ("delete", "acct/a"), ("put", "acct/d")]
    );
    let txn = seen[1].2;
    assert!(seen[0].2 < txn && seen[2].2 == txn && seen[3].2 == txn && seen[4].2 > txn, "{seen:?}");
    assert_eq!(client.get("acct/d", Consistency::Consistent).unwrap().modify_index, seen[4].2);

    // The last entry is not known whole until something after it arrives: a new watch
    // picks up after the transaction and delivers acct/d again, and nothing before it.
    assert_eq!(watch.resume_index(), txn);
    let mut again =
        client.feed("acct/", WatchOptions { from: Some(watch.resume_index()), ..WatchOptions::default() }).unwrap();
    match again.next().expect("an event").unwrap() {
        FeedEvent::Put(put) => {
            assert_eq!((put.key.as_str(), put.value.as_slice(), put.index), ("acct/d", &b"4"[..], seen[4].2))
        }
        other => panic!("unexpected {other:?}"),
    }
}
