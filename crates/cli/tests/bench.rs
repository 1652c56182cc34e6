//! `skiff bench` end to end: a 3-node cluster (`skiff demo --config`, with HTTP and Redis
//! listeners) loaded over both protocols, the JSON report checked, and the data it wrote
//! read back; the same over TLS with a token (`skiff demo --secure`); then the usage errors
//! and an endpoint where nothing answers.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::{Cluster, Demo, SKIFF, skiff, stderr, stdout};
use serde_json::Value;
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::HttpClient;
use skiff_testkit::ports::free_address;

/// A 3-node cluster with Redis listeners.
fn start() -> Cluster {
    Cluster::start_file(SKIFF, ClusterFile::builder("bench-test", 3).http().redis().build())
}

/// Runs `skiff bench ARGS --json --warmup 500ms`; checks that it succeeded and returns its
/// report.
fn bench(cluster: &Cluster, args: &[&str]) -> Value {
    let output = skiff().arg("bench").args(args).args(["--json", "--warmup", "500ms"]).output().expect("bench");
    assert!(output.status.success(), "skiff bench {args:?} failed: {}\n{}", stderr(&output), cluster.log());
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|error| panic!("no JSON report ({error}): {}\n{}", stdout(&output), stderr(&output)))
}

/// Requests were answered, none failed, and the latencies are in order.
fn assert_clean(report: &Value) {
    let number = |value: &Value| value.as_u64().unwrap_or_else(|| panic!("not a number: {value} in {report:#}"));
    assert!(number(&report["requests"]) > 0, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["errors_by_kind"], serde_json::json!({}), "{report:#}");
    assert!(report["throughput"].as_f64().unwrap() > 0.0, "{report:#}");
    let latency = &report["latency_us"];
    let (p50, p90, p99, p99_9, max) = (
        number(&latency["p50"]),
        number(&latency["p90"]),
        number(&latency["p99"]),
        number(&latency["p99_9"]),
        number(&latency["max"]),
    );
    assert!(0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p99_9 && p99_9 <= max, "{report:#}");
}

/// Over HTTP: a run of a given total writes exactly those keys; a timed run lasts its time.
#[test]
fn a_cluster_loaded_over_http() {
    let cluster = start();
    let http = cluster.endpoints.join(",");
    let client = HttpClient::for_file(&cluster.file);
    let http_get = |path: &str| {
        let reply = client.get(NodeId(2), path);
        (reply.status, reply.body)
    };

    // Exactly 500 writes of 50 keys: afterwards the cluster holds those keys, and no other.
    let report = bench(
        &cluster,
        &[
            "put",
            "--endpoints",
            &http,
            "--keys",
            "50",
            "--total",
            "500",
            "--value-size",
            "37",
            "--clients",
            "8",
            "--connections",
            "4",
        ],
    );
    assert_clean(&report);
    assert_eq!(report["requests"], 500, "{report:#}");
    assert_eq!(report["target"], "skiff-http");
    assert_eq!(report["operations"]["put"]["requests"], 500);
    let (status, body) = http_get("/v1/kv/key-?keys");
    assert_eq!(status, 200);
    let keys: Vec<String> = serde_json::from_slice(&body).expect("a JSON list of keys");
    assert!(keys.len() >= 45, "500 uniform writes of 50 keys left only {keys:?}");
    for key in &keys {
        let n: u64 = key.strip_prefix("key-").and_then(|n| n.parse().ok()).expect("key-<n>");
        assert!(n < 50, "{key}");
    }
    for key in keys.iter().take(5) {
        let (status, value) = http_get(&format!("/v1/kv/{key}?raw"));
        assert_eq!(status, 200, "{key}");
        assert_eq!(value.len(), 37, "{key}: {value:?}");
        assert!(value.iter().all(|byte| byte.is_ascii_graphic()), "{key}: {value:?}");
    }

    let put = bench(&cluster, &["put", "--endpoints", &http, "--duration", "2s", "--target", "skiff-http"]);
    assert_clean(&put);
    assert_eq!(put["in_flight"], 16);
    assert_eq!(put["consistency"], Value::Null);
    assert!((2.0..4.0).contains(&put["duration_seconds"].as_f64().unwrap()), "{put:#}");
}

/// Over Redis: a get run and a mixed run with stale reads.
#[test]
fn a_cluster_loaded_over_redis() {
    let cluster = start();
    let redis = cluster.file.redis_addresses().join(",");
    let redis = redis.as_str();

    // A get run writes its keys first, so no read misses.
    let get = bench(
        &cluster,
        &["get", "--endpoints", redis, "--target", "skiff-redis", "--keys", "2000", "--duration", "2s"],
    );
    assert_clean(&get);
    assert_eq!(get["fill"]["keys"], 2000, "{get:#}");
    assert_eq!(get["fill"]["failed"], 0, "{get:#}");
    assert_eq!(get["misses"], 0, "{get:#}");
    assert_eq!(get["in_flight"], 64, "pipelined: every client in flight");
    assert_eq!(get["operations"]["put"], Value::Null, "the fill is not measured");

    // Mixed, with stale reads (READONLY on every connection).
    let mixed = bench(
        &cluster,
        &[
            "mixed",
            "--endpoints",
            redis,
            "--target",
            "skiff-redis",
            "--keys",
            "1000",
            "--duration",
            "2s",
            "--consistency",
            "stale",
            "--read-ratio",
            "0.5",
        ],
    );
    assert_clean(&mixed);
    assert_eq!(mixed["consistency"], "stale");
    assert_eq!(mixed["misses"], 0, "{mixed:#}");
    for operation in ["get", "put"] {
        assert!(mixed["operations"][operation]["requests"].as_u64().unwrap() > 0, "{mixed:#}");
    }
}

/// A secure cluster (`skiff demo --secure`: HTTPS, Redis over TLS, tokens) loaded over both
/// protocols with the CA and the admin token it made; without the token nothing is answered.
#[test]
fn a_secure_cluster_loaded_over_https_and_redis_tls() {
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("bench-tls", 3).http().redis().build();
    let demo = Demo::start(dir.path(), &file, &["--secure"]);
    let log = || demo.log();
    let (ca, token) = (demo.ca(), demo.token());

    let secure_bench = |args: &[&str], token: Option<&str>| {
        let mut command = skiff();
        command.arg("bench").args(args).args(["--json", "--warmup", "200ms", "--cacert"]).arg(&ca);
        if let Some(token) = token {
            command.env("SKIFF_TOKEN", token);
        }
        command.output().expect("bench")
    };
    let http = file.http_addresses().join(",");
    // Until the nodes agree on a leader, writes fail: wait for a clean run.
    let deadline = Instant::now() + Duration::from_secs(30);
    let args = ["put", "--endpoints", &http, "--total", "300", "--clients", "8", "--connections", "4"];
    let report: Value = loop {
        let output = secure_bench(&args, Some(&token));
        assert!(output.status.success(), "skiff bench {args:?} failed: {}\n{}", stderr(&output), log());
        let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
        if report["errors"] == 0 || Instant::now() > deadline {
            break report;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_clean(&report);
    assert_eq!(report["requests"], 300, "{report:#}");
    assert!(report["endpoints"][0].as_str().unwrap().starts_with("https://"), "{report:#}");

    let redis = file.redis_addresses().join(",");
    let args = ["mixed", "--target", "skiff-redis", "--endpoints", &redis, "--keys", "200", "--total", "2000"];
    let output = secure_bench(&args, Some(&token));
    assert!(output.status.success(), "skiff bench {args:?} failed: {}\n{}", stderr(&output), log());
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    assert_clean(&report);
    assert_eq!(report["misses"], 0, "{report:#}");

    // Without the token the run stops at the start (403 over HTTP, NOAUTH over Redis) and
    // says to give one.
    let anonymous = secure_bench(&["put", "--endpoints", &http, "--total", "20"], None);
    assert_eq!(anonymous.status.code(), Some(1), "{anonymous:?}");
    assert!(stderr(&anonymous).contains("HTTP 403") && stderr(&anonymous).contains("--token"), "{anonymous:?}");
    let anonymous = secure_bench(&["get", "--target", "skiff-redis", "--endpoints", &redis, "--total", "20"], None);
    assert_eq!(anonymous.status.code(), Some(1), "{anonymous:?}");
    assert!(stderr(&anonymous).contains("--token"), "{}", stderr(&anonymous));
    // Plain HTTP to a TLS port is not mistaken for a working node.
    let plain = skiff().args(["bench", "put", "--endpoints", &http, "--total", "20"]).output().unwrap();
    assert_eq!(plain.status.code(), Some(1), "{plain:?}");
    assert!(stderr(&plain).contains("serves HTTPS"), "{}", stderr(&plain));
    demo.stop();
}

fn run(args: &[&str]) -> Output {
    skiff().arg("bench").args(args).output().expect("run skiff bench")
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    let few = run(&["put", "--clients", "4", "--connections", "16"]);
    assert_eq!(few.status.code(), Some(2), "{few:?}");
    assert!(stderr(&few).contains("--clients 4 is fewer than --connections 16"), "{}", stderr(&few));

    let target = run(&["put", "--target", "zookeeper"]);
    assert_eq!(target.status.code(), Some(2), "{target:?}");
    assert!(stderr(&target).contains("invalid value 'zookeeper' for '--target"), "{}", stderr(&target));
    assert!(stderr(&target).contains("skiff-http, skiff-redis, etcd"), "{}", stderr(&target));

    let both = run(&["put", "--duration", "1s", "--total", "10"]);
    assert_eq!(both.status.code(), Some(2), "{both:?}");

    let ratio = run(&["mixed", "--read-ratio", "2"]);
    assert_eq!(ratio.status.code(), Some(2), "{ratio:?}");
    assert!(stderr(&ratio).contains("--read-ratio 2 is not between 0 and 1"), "{}", stderr(&ratio));

    let workload = run(&["delete"]);
    assert_eq!(workload.status.code(), Some(2), "{workload:?}");
}

#[test]
fn nothing_answering_exits_1_and_says_how_to_start_the_demo() {
    let nowhere = free_address();
    let output = run(&["put", "--endpoints", &nowhere, "--duration", "1s"]);
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = stderr(&output);
    assert!(message.contains(&format!("nothing answers at http://{nowhere}")), "{message}");
    assert!(message.contains("start the demo with `cargo run --release -- demo`"), "{message}");
    assert_eq!(stdout(&output), "");

    let redis = run(&["get", "--target", "skiff-redis", "--endpoints", &nowhere]);
    assert_eq!(redis.status.code(), Some(1), "{redis:?}");
    assert!(stderr(&redis).contains(&format!("nothing answers at {nowhere}")), "{}", stderr(&redis));
}
