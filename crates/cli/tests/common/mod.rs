//! Shared by the CLI tests: the testkit's process harness, bound to this crate's `skiff`
//! binary (only this crate's tests know its path).

#![allow(dead_code, unused_imports)] // each test file uses a part

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub use skiff_testkit::process::{DemoCluster as Cluster, KillOnDrop, signal, stderr, stdout, write_file};

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// `skiff` with no SKIFF_* variables from the environment.
pub fn skiff() -> Command {
    skiff_testkit::process::skiff(SKIFF)
}

/// A local cluster of `nodes` nodes (`skiff demo --config`) on free ports, with an agreed
/// leader.
pub fn cluster(nodes: u64) -> Cluster {
    Cluster::start(SKIFF, nodes)
}

/// The demo's banner up to its "running" line, and the rest of its output as it comes
/// (read on a thread, so the pipe never fills).
pub fn read_banner(
    child: &mut std::process::Child,
    errors: &std::path::Path,
) -> (String, mpsc::Receiver<String>, std::thread::JoinHandle<()>) {
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
                std::fs::read_to_string(errors).unwrap_or_default()
            ),
        }
    }
    (banner.join("\n"), receiver, reader)
}
