//! Tokens (`[auth]`): over HTTP (Consul's three ways to send one, 403 `Permission denied`,
//! prefixes, management routes, filtered listings) and over Redis (`AUTH`, `HELLO ... AUTH`,
//! `NOAUTH`, `WRONGPASS`, `NOPERM`), a reload on SIGHUP, and hostile tokens.
//!
//! Every test of this file runs a cluster with `[auth]`, so every process that gets the
//! SIGHUP below has a handler for it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;

use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::KvCluster;
use skiff_testkit::tokens::{ADMIN, APP, TOKENS};
use skiff_testkit::wait::{TIMEOUT, eventually};

/// A 3-node cluster (http and redis) with the tokens above in `dir`.
fn secured(dir: &Path, name: &str) -> KvCluster {
    let tokens = skiff_testkit::tokens::write(dir);
    KvCluster::start(ClusterFile::builder(name, 3).http().redis().auth(&tokens, ADMIN).build())
}

#[test]
fn http_needs_a_token_and_checks_its_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secured(dir.path(), "auth-http");
    let admin = &cluster.client;
    let anonymous = admin.with_token(None);
    let app = admin.with_token(Some(APP.into()));
    let n1 = NodeId(1);

    // No token, a wrong one: 403, nothing written.
    let refused = anonymous.put(n1, "/v1/kv/app/a", b"x");
    assert_eq!(refused.status, 403, "{}", refused.text());
    // Its body unread, the server drops the connection: it says so, or the client's next
    // request on it fails now and then ("connection closed").
    assert_eq!(refused.header("Connection"), Some("close"), "a refused PUT with a body");
    assert!(refused.text().starts_with("Permission denied"), "{}", refused.text());
    let wrong = admin.request("PUT", n1, "/v1/kv/app/a", Some(b"x"), &[("X-Consul-Token", "app-secret-012345678")]);
    assert_eq!(wrong.status, 403);
    assert_eq!(admin.get(n1, "/v1/kv/app/a").status, 404, "a refused write wrote nothing");

    // Consul's three ways to send a token.
    admin.put(n1, "/v1/kv/shared/s", b"shared").ok();
    let bearer =
        anonymous.request("GET", n1, "/v1/kv/shared/s?raw", None, &[("Authorization", &format!("Bearer {APP}"))]);
    assert_eq!(bearer.ok().text(), "shared");
    assert_eq!(anonymous.get(n1, &format!("/v1/kv/shared/s?raw&token={APP}")).ok().text(), "shared");
    assert_eq!(app.get(n1, "/v1/kv/shared/s?raw").ok().text(), "shared");

    // Prefixes: write app/ (which implies read), read shared/, nothing else.
    assert!(app.put(n1, "/v1/kv/app/a", b"1").boolean());
    let refused = app.put(n1, "/v1/kv/shared/s", b"mine");
    assert_eq!((refused.status, refused.header("Connection")), (403, Some("close")), "{}", refused.text());
    assert_eq!(app.put(n1, "/v1/kv/other", b"x").status, 403);
    assert_eq!(app.put(n1, "/v1/kv/ap", b"x").status, 403, "a prefix is a prefix of the key, not the other way");
    admin.put(n1, "/v1/kv/other", b"secret").ok();
    assert_eq!(app.get(n1, "/v1/kv/other").status, 403);
    assert_eq!(app.delete(n1, "/v1/kv/other").status, 403);
    assert_eq!(admin.get(n1, "/v1/kv/other?raw").ok().text(), "secret");

    // Listings show only what the token may read; a recursive delete needs the whole prefix.
    let listed: Vec<String> = app
        .get(n1, "/v1/kv/?keys")
        .ok()
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ["app/a", "shared/s"]);
    let entries = app.get(n1, "/v1/kv/?recurse").ok().json();
    assert_eq!(entries.as_array().unwrap().len(), 2, "{entries}");
    assert_eq!(app.delete(n1, "/v1/kv/?recurse").status, 403);
    assert_eq!(app.delete(n1, "/v1/kv/app?recurse").status, 403, "\"app\" also covers \"apple\"");
    assert!(app.delete(n1, "/v1/kv/app/?recurse").boolean());
    assert_eq!(admin.get(n1, "/v1/kv/other?raw").ok().text(), "secret");

    // Admin routes need a management token; status needs any valid one.
    for path in
        ["/v1/skiff/members", "/v1/skiff/log", "/metrics", "/v1/operator/raft/configuration", "/v1/skiff/faults"]
    {
        assert_eq!(app.get(n1, path).status, 403, "{path}");
        // (Faults answer 403 of their own when fault injection is off.)
        assert!(!admin.get(n1, path).text().starts_with("Permission denied"), "{path}");
    }
    assert_eq!(app.post(n1, "/v1/operator/raft/transfer-leader", b"").status, 403);
    let refused = app.post(n1, "/v1/skiff/members", br#"{"id": "n9"}"#);
    assert_eq!((refused.status, refused.header("Connection")), (403, Some("close")), "{}", refused.text());
    assert_eq!(app.get(n1, "/v1/skiff/status").status, 200);
    assert_eq!(app.get(n1, "/v1/status/leader").status, 200);
    assert_eq!(anonymous.get(n1, "/v1/status/leader").status, 403);
    cluster.shutdown();
}

/// Hostile tokens get a 403 (or a 4xx from the HTTP layer), never a 500 or a panic.
#[test]
fn hostile_tokens_are_refused_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secured(dir.path(), "auth-hostile");
    let anonymous = cluster.client.with_token(None);
    let n2 = NodeId(2);
    let huge = "x".repeat(60_000);
    let cases: Vec<(String, Vec<(&str, &str)>)> = vec![
        ("/v1/kv/a".into(), vec![("X-Consul-Token", huge.as_str())]),
        ("/v1/kv/a".into(), vec![("Authorization", "Bearer")]),
        ("/v1/kv/a".into(), vec![("Authorization", "Basic YWRtaW46YWRtaW4=")]),
        ("/v1/kv/a?token=%ff%fe%00".into(), vec![]),
        ("/v1/kv/a?token=%zz".into(), vec![]),
        ("/v1/kv/a?token=".into(), vec![]),
        (format!("/v1/kv/a?token={}", "y".repeat(20_000)), vec![]),
    ];
    for (path, headers) in &cases {
        let reply = anonymous.request("GET", n2, path, None, headers);
        assert!((400..500).contains(&reply.status), "{path} {:?}: {}", headers.first().map(|h| h.0), reply.status);
    }
    // Bytes that are not UTF-8, straight on the socket.
    let mut stream = TcpStream::connect(cluster.client.address(n2)).unwrap();
    stream
        .write_all(
            b"GET /v1/kv/a HTTP/1.1\r\nHost: x\r\nX-Consul-Token: \xff\xfe\x80admin\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(cluster.client.get(n2, "/v1/status/leader").status, 200, "the node still serves");
    cluster.shutdown();
}

#[test]
fn a_hangup_reloads_the_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secured(dir.path(), "auth-reload");
    let n3 = NodeId(3);
    let app = cluster.client.with_token(Some(APP.into()));
    let mut redis = Resp::open(cluster.redis_address(n3));
    assert_eq!(redis.call(&["AUTH", "app", APP]), "+OK");
    assert!(app.put(n3, "/v1/kv/app/x", b"1").boolean());

    // The app token goes, another comes; a broken file would keep what is in use.
    let replaced = TOKENS.replace(APP, "new-app-secret-0123456789");
    std::fs::write(dir.path().join("tokens.toml"), replaced).unwrap();
    // SAFETY: kill(2) on this process; the servers of this file handle SIGHUP.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    eventually("the old app token to stop working", || app.get(n3, "/v1/kv/app/x").status == 403);
    let new = cluster.client.with_token(Some("new-app-secret-0123456789".into()));
    assert_eq!(new.get(n3, "/v1/kv/app/x?raw").ok().text(), "1");
    assert_eq!(redis.call(&["GET", "app/x"]), "-NOAUTH Authentication required.", "the connection's token is gone");

    std::fs::write(dir.path().join("tokens.toml"), "this is not a tokens file").unwrap();
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(new.get(n3, "/v1/kv/app/x?raw").ok().text(), "1", "a broken file keeps the tokens in use");
    cluster.shutdown();
}

#[test]
fn redis_needs_auth_and_checks_every_key() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secured(dir.path(), "auth-redis");
    let address = cluster.redis_address(NodeId(1));
    let mut anonymous = Resp::open(address);
    assert_eq!(anonymous.call(&["GET", "app/a"]), "-NOAUTH Authentication required.");
    assert_eq!(anonymous.call(&["SET", "app/a", "1"]), "-NOAUTH Authentication required.");
    assert_eq!(anonymous.call(&["NOSUCHCOMMAND"]), "-NOAUTH Authentication required.");
    assert_eq!(anonymous.call(&["PING"]), "+PONG");
    assert_eq!(
        anonymous.call(&["AUTH", "app-secret-wrong-0123"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        anonymous.call(&["AUTH", "admin", APP]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(anonymous.call(&["GET", "app/a"]), "-NOAUTH Authentication required.");

    let mut admin = Resp::open(address);
    assert_eq!(admin.call(&["AUTH", ADMIN]), "+OK");
    assert_eq!(admin.call(&["SET", "other", "secret"]), "+OK");
    assert_eq!(admin.call(&["SET", "shared/s", "shared"]), "+OK");

    let mut app = Resp::open(address);
    assert_eq!(app.call(&["HELLO", "2", "AUTH", "app", APP]).chars().next(), Some('*'), "HELLO AUTH authenticates");
    assert_eq!(app.call(&["SET", "app/a", "1"]), "+OK");
    assert_eq!(app.call(&["GET", "shared/s"]), "$6");
    let noperm = "-NOPERM this user has no permissions to access one of the keys used as arguments";
    assert_eq!(app.call(&["GET", "other"]), noperm);
    assert_eq!(app.call(&["SET", "shared/s", "mine"]), noperm);
    assert_eq!(app.call(&["MGET", "app/a", "other"]), noperm);
    assert_eq!(app.call(&["MSET", "app/b", "1", "other", "2"]), noperm);
    assert_eq!(app.call(&["DEL", "app/a", "other"]), noperm);
    assert!(app.call(&["FLUSHALL"]).starts_with("-NOPERM"));
    assert!(app.call(&["DBSIZE"]).starts_with("-NOPERM"));
    assert_eq!(app.call(&["KEYS", "*"]), "*2", "only app/a and shared/s");
    assert_eq!(admin.call(&["GET", "other"]), "$6", "nothing refused was applied");
    assert_eq!(admin.call(&["EXISTS", "app/b"]), ":0");
    cluster.shutdown();
}

/// HELLO answers only an authenticated connection, unless it carries AUTH, as in Redis 7.
#[test]
fn hello_without_auth_needs_an_authenticated_connection() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = secured(dir.path(), "auth-hello");
    let mut redis = Resp::open(cluster.redis_address(NodeId(2)));
    let noauth_hello = "-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO \
                        <proto> AUTH <user> <pass> option can be used to authenticate the client and select the \
                        RESP protocol version at the same time";
    assert_eq!(redis.call(&["HELLO"]), noauth_hello);
    assert_eq!(redis.call(&["HELLO", "3"]), noauth_hello);
    assert_eq!(redis.call(&["HELLO", "3", "SETNAME", "sneaky"]), noauth_hello);
    assert_eq!(redis.call(&["GET", "app/a"]), "-NOAUTH Authentication required.", "still RESP2, still anonymous");
    assert_eq!(
        redis.call(&["HELLO", "3", "AUTH", "app", "app-secret-wrong-0123"]),
        "-WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(redis.call(&["HELLO", "3", "AUTH", "app", APP]).chars().next(), Some('%'), "RESP3 and authenticated");
    assert_eq!(redis.call(&["SET", "app/a", "1"]), "+OK");
    assert_eq!(redis.call(&["HELLO", "2"]).chars().next(), Some('*'), "HELLO alone, once authenticated");
    cluster.shutdown();
}

/// A tokens file that does not load stops the server from starting, and says why.
#[test]
fn a_bad_tokens_file_fails_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let cases = [
        (
            "[[token]]\nname = \"a\"\nsecret = \"short\"\nread = [\"\"]\n",
            "token 1 (\"a\"): the secret must be at least",
        ),
        (
            "[[token]]\nname = \"a\"\nsecret = \"aaaaaaaaaaaaaaaaaaaa\"\nread = [\"\"]\n\n\
             [[token]]\nname = \"b\"\nsecret = \"aaaaaaaaaaaaaaaaaaaa\"\nread = [\"\"]\n",
            "token 2 (\"b\"): the secret is the same as another token's",
        ),
        ("[[token]]\nname = \"a\"\nsecret = \"aaaaaaaaaaaaaaaaaaaa\"\nwrites = [\"x\"]\n", "unknown field `writes`"),
    ];
    for (text, expected) in cases {
        let tokens = dir.path().join("tokens.toml");
        std::fs::write(&tokens, text).unwrap();
        let error = start_error(&runtime, dir.path(), &tokens);
        assert!(error.contains(&tokens.display().to_string()) && error.contains(expected), "{error}");
        assert!(!error.contains("aaaaaaaaaaaaaaaa"), "the message shows a secret: {error}");
    }
    let missing = dir.path().join("missing.toml");
    let error = start_error(&runtime, dir.path(), &missing);
    assert!(error.contains("cannot read tokens file") && error.contains("missing.toml"), "{error}");
}

fn start_error(runtime: &tokio::runtime::Runtime, dir: &Path, tokens: &Path) -> String {
    let file = ClusterFile::builder("auth-bad-file", 1).http().redis().auth(tokens, ADMIN).build();
    let options = skiff_kv::ServerOptions::new(file.config(), NodeId(1), dir.join("data"));
    assert_eq!(options.tokens.as_deref(), Some(tokens), "ServerOptions::new takes [auth] tokens");
    match runtime.block_on(skiff_kv::Server::start(options)) {
        Ok(_) => panic!("a server started with the tokens file {}", tokens.display()),
        Err(error) => error.to_string(),
    }
}

#[test]
fn auth_without_tokens_says_the_server_has_no_password() {
    let cluster = KvCluster::start(ClusterFile::builder("auth-off", 1).http().redis().build());
    let mut redis = Resp::open(cluster.redis_address(NodeId(1)));
    let reply = redis.call(&["AUTH", "hunter2"]);
    assert!(reply.starts_with("-ERR AUTH <password> called without any password configured"), "{reply}");
    assert_eq!(redis.call(&["GET", "a"]), "$-1");
    cluster.shutdown();
}

/// A minimal RESP client: each call returns the reply's first line (and reads a bulk's
/// body, and an array's elements when they are bulk strings, so the next reply starts clean).
struct Resp {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Resp {
    fn open(address: SocketAddr) -> Resp {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        Resp { writer: stream.try_clone().unwrap(), reader: BufReader::new(stream) }
    }

    fn call(&mut self, args: &[&str]) -> String {
        let mut bytes = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            bytes.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
        }
        self.writer.write_all(&bytes).unwrap();
        let first = self.line();
        self.skip_rest(&first);
        first
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        line.trim_end().to_string()
    }

    fn skip_rest(&mut self, line: &str) {
        let count = |line: &str| line[1..].parse::<i64>().unwrap_or(-1);
        match line.as_bytes().first() {
            Some(b'$') if count(line) >= 0 => {
                let mut body = vec![0; count(line) as usize + 2];
                self.reader.read_exact(&mut body).unwrap();
            }
            Some(b'*') | Some(b'%') => {
                let pairs = if line.starts_with('%') { 2 } else { 1 };
                for _ in 0..pairs * count(line).max(0) {
                    let element = self.line();
                    self.skip_rest(&element);
                }
            }
            _ => {}
        }
    }
}
