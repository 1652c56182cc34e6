//! `skiff demo`: the banner, the client commands against it, and a clean stop on SIGINT;
//! and that the client commands' default endpoints are the demo's. The demo runs with a
//! cluster file on free ports, so a `skiff demo` left running on the default ports (raft
//! 7001-7003, http 8001-8003, redis 6001-6003) does not disturb the test, nor the test it.

mod common;

use common::{Demo, skiff, stdout};
use skiff::NodeId;
use skiff::config::ClusterConfig;
use skiff_testkit::cluster_file::ClusterFile;

#[test]
fn demo_serves_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("demo", 3).http().redis().build();
    let demo = Demo::start(dir.path(), &file, &[]);
    let banner = &demo.banner;
    let first_http = file.node(NodeId(1)).http.clone().expect("an http address");
    let last_raft = file.node(NodeId(3)).raft.clone();
    let endpoints = file.http_addresses().join(",");
    // Not the default ports, so the banner's commands name the endpoints.
    let get_command = format!("skiff --endpoints {endpoints} get greeting");
    for text in [first_http.as_str(), last_raft.as_str(), "leader: n", "curl", &get_command, "┆ leader "] {
        assert!(banner.contains(text), "{text:?} not in the banner:\n{banner}");
    }

    let put = skiff().args(["--endpoints", &endpoints, "put", "greeting", "hello"]).output().unwrap();
    assert!(put.status.success(), "{put:?}");
    let get = skiff().args(["--endpoints", &endpoints, "get", "greeting"]).output().unwrap();
    assert_eq!(stdout(&get), "hello\n", "{get:?}");

    let (status, rest) = demo.stop();
    assert_eq!(status.code(), Some(0), "after SIGINT: {rest:?}");
    assert_eq!(rest.last().map(String::as_str), Some("stopped"), "{rest:?}");
}

/// Without `--endpoints`, the client commands talk to the demo's default nodes: the http
/// addresses of `ClusterConfig::demo()` (the cluster `skiff demo` runs without `--config`).
#[test]
fn the_default_endpoints_are_the_demos() {
    let demo = ClusterConfig::demo();
    let http: Vec<&str> = demo.node.iter().map(|node| node.http.as_deref().expect("an http address")).collect();
    let help = skiff().arg("--help").output().unwrap();
    let text = stdout(&help);
    assert!(
        text.contains(&format!("[default: {}]", http.join(","))),
        "{http:?} are not the default endpoints:\n{text}"
    );
}

/// `skiff demo --secure`: certificates and an admin token in the data directory; the CLI,
/// curl and redis-cli reach the cluster with the CA and the token the banner prints, and
/// not without them.
#[test]
fn secure_demo_needs_the_ca_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("demo", 3).http().redis().build();
    let demo = Demo::start(dir.path(), &file, &["--secure"]);
    let banner = &demo.banner;
    let ca = demo.ca();
    assert!(banner.contains(&format!("export SKIFF_CACERT={}", ca.display())), "{banner}");
    let token = demo.token();
    assert!(token.len() >= 32, "a long random secret: {token:?}");
    assert!(banner.contains("https://") && banner.contains("redis-cli --tls"), "{banner}");
    assert!(banner.contains("┆ leader "), "the demo's own status table reaches its nodes over TLS:\n{banner}");

    let endpoints = file.http_addresses().join(",");
    let cli = |ca: Option<&std::path::Path>, token: Option<&str>, args: &[&str]| {
        let mut command = skiff();
        command.args(["--endpoints", &endpoints, "--timeout", "3s"]).args(args);
        if let Some(ca) = ca {
            command.env("SKIFF_CACERT", ca);
        }
        if let Some(token) = token {
            command.env("SKIFF_TOKEN", token);
        }
        command.output().unwrap()
    };
    let put = cli(Some(&ca), Some(&token), &["put", "greeting", "hello"]);
    assert!(put.status.success(), "{put:?}");
    let get = cli(Some(&ca), Some(&token), &["get", "greeting"]);
    assert_eq!(stdout(&get), "hello\n", "{get:?}");
    // Plain HTTP to a TLS port fails; so does a token-less request.
    let plain = cli(None, Some(&token), &["get", "greeting"]);
    assert!(!plain.status.success() && common::stderr(&plain).contains("serves HTTPS"), "{plain:?}");
    let stranger = dir.path().join("stranger");
    skiff::tls::generate(&stranger, &[NodeId(1)], &["127.0.0.1".into()], false).unwrap();
    let wrong_ca = cli(Some(&stranger.join("ca.pem")), Some(&token), &["get", "greeting"]);
    assert!(!wrong_ca.status.success() && common::stderr(&wrong_ca).contains("certificate"), "{wrong_ca:?}");
    let anonymous = cli(Some(&ca), None, &["get", "greeting"]);
    assert!(!anonymous.status.success() && common::stderr(&anonymous).contains("403"), "{anonymous:?}");

    let first_http = file.node(NodeId(1)).http.clone().expect("an http address");
    let curl = |with_token: bool| {
        let mut command = std::process::Command::new("curl");
        command.arg("-sS").arg("--cacert").arg(&ca).args(["-w", " %{http_code}"]);
        if with_token {
            command.args(["-H", &format!("X-Consul-Token: {token}")]);
        }
        let output = command.arg(format!("https://{first_http}/v1/kv/greeting?raw")).output().unwrap();
        stdout(&output)
    };
    assert_eq!(curl(true), "hello 200");
    assert!(curl(false).ends_with(" 403"), "{}", curl(false));

    let redis = file.node(NodeId(2)).redis.clone().expect("a redis address");
    let (host, port) = redis.rsplit_once(':').unwrap();
    let redis_cli = |args: &[&str]| {
        let output = std::process::Command::new("redis-cli")
            .arg("--tls")
            .arg("--cacert")
            .arg(&ca)
            .args(["-h", host, "-p", port])
            .args(args)
            .output()
            .unwrap();
        stdout(&output)
    };
    assert_eq!(redis_cli(&["--user", "admin", "--pass", &token, "--no-auth-warning", "get", "greeting"]), "hello\n");
    assert!(redis_cli(&["get", "greeting"]).contains("NOAUTH"), "{}", redis_cli(&["get", "greeting"]));

    let (status, rest) = demo.stop();
    assert_eq!(status.code(), Some(0), "after SIGINT: {rest:?}");
}

/// `skiff certs`: a CA, node certificates and a client certificate; run again with more
/// nodes, it keeps what exists and adds the rest.
#[test]
fn certs_makes_a_ca_and_adds_nodes_later() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let bad = skiff().args(["certs", "--nodes", "n1,web"]).arg("--dir").arg(&certs).output().unwrap();
    assert_eq!(bad.status.code(), Some(1), "{bad:?}");
    assert!(common::stderr(&bad).contains("\"web\" is not a node id"), "{bad:?}");
    let made = skiff().args(["certs", "--nodes", "n1,n2"]).arg("--dir").arg(&certs).output().unwrap();
    assert!(made.status.success(), "{made:?}");
    for name in ["ca.pem", "ca-key.pem", "n1.pem", "n1-key.pem", "n2.pem", "n2-key.pem", "client.pem", "client-key.pem"]
    {
        assert!(certs.join(name).is_file(), "{name} missing: {}", stdout(&made));
    }
    assert!(stdout(&made).contains("[tls]"), "it says what to put in the cluster file");
    let ca = std::fs::read(certs.join("ca.pem")).unwrap();
    let again = skiff().args(["certs", "--nodes", "n1,n2,n3"]).arg("--dir").arg(&certs).output().unwrap();
    assert!(again.status.success(), "{again:?}");
    assert_eq!(std::fs::read(certs.join("ca.pem")).unwrap(), ca, "the CA is kept");
    assert!(stdout(&again).contains("wrote") && stdout(&again).contains("n3.pem"), "{}", stdout(&again));
    let verify = std::process::Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(certs.join("ca.pem"))
        .arg(certs.join("n3.pem"))
        .output();
    if let Ok(verify) = verify {
        assert!(verify.status.success(), "{verify:?}");
    }
}
