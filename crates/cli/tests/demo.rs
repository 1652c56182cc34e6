//! `skiff demo`: the banner, the client commands against it, and a clean stop on SIGINT;
//! and that the client commands' default endpoints are the demo's. The demo runs with a
//! cluster file on free ports, so a `skiff demo` left running on the default ports (raft
//! 7001-7003, http 8001-8003, redis 6001-6003) does not disturb the test, nor the test it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{KillOnDrop, signal, skiff, stdout};
use skiff::NodeId;
use skiff::config::ClusterConfig;
use skiff_testkit::cluster_file::ClusterFile;

#[test]
fn demo_serves_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let file = ClusterFile::builder("demo", 3).http().redis().build();
    let config = file.write(dir.path());
    let errors = dir.path().join("stderr");
    let mut child = skiff()
        .arg("demo")
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&errors).unwrap())
        .spawn()
        .expect("start skiff demo");
    let guard = KillOnDrop::new(&child);
    // Read the banner as it comes, on a thread, so the pipe never fills.
    let lines = BufReader::new(child.stdout.take().expect("stdout"));
    let (sender, receiver) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    let mut banner = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !banner.iter().any(|line: &String| line.starts_with("running")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(left) {
            Ok(line) => banner.push(line),
            Err(_) => panic!(
                "no 'running' line in time; banner so far:\n{}\nstderr:\n{}",
                banner.join("\n"),
                std::fs::read_to_string(&errors).unwrap_or_default()
            ),
        }
    }
    let banner = banner.join("\n");
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

    signal(&child, libc::SIGINT);
    let status = child.wait().expect("wait for demo");
    guard.disarm();
    let _ = reader.join();
    let rest: Vec<String> = receiver.try_iter().collect();
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
