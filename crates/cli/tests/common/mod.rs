//! Shared by the CLI tests: the `skiff` binary, and a local cluster run by `skiff demo
//! --config` in a child process that is killed when the guard drops (on panic too).
//!
//! Port plan (this crate's tests use 19400-19699 only): a cluster at base `B` takes raft
//! ports `B+1..` and http ports `B+11..`; every test has its own base, 20 apart.

#![allow(dead_code)] // each test file uses a part

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SKIFF: &str = env!("CARGO_BIN_EXE_skiff");

/// `skiff` with no SKIFF_* variables from the environment.
pub fn skiff() -> Command {
    let mut command = Command::new(SKIFF);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SKIFF_") {
            command.env_remove(name);
        }
    }
    command
}

/// Starts `skiff demo --config <config>` with its data in `dir/data` and its output in
/// `dir/demo.log`.
pub fn spawn_demo(dir: &std::path::Path, config: &std::path::Path) -> std::process::Child {
    let log = std::fs::File::create(dir.join("demo.log")).expect("log file");
    skiff()
        .args(["demo", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .spawn()
        .expect("start skiff demo")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A running local cluster.
pub struct Cluster {
    child: Child,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub endpoints: Vec<String>,
    /// How many nodes start as members (the others join later).
    pub members: usize,
}

impl Cluster {
    /// Starts `nodes` nodes at port base `base` and waits until they agree on a leader.
    pub fn start(base: u16, nodes: u16) -> Cluster {
        Cluster::start_with_joiners(base, nodes, 0)
    }

    /// Starts `nodes` members and `joiners` more nodes with `join = true`, which wait to be
    /// added with `members add`.
    pub fn start_with_joiners(base: u16, nodes: u16, joiners: u16) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("cluster.toml");
        let mut toml = cluster_toml(base, nodes + joiners);
        for i in nodes + 1..=nodes + joiners {
            let entry = format!("id = \"n{i}\"\n");
            toml = toml.replace(&entry, &format!("{entry}join = true\n"));
        }
        std::fs::write(&config, toml).expect("write cluster file");
        let child = spawn_demo(dir.path(), &config);
        let endpoints = (1..=nodes + joiners).map(|i| format!("127.0.0.1:{}", base + 10 + i)).collect();
        let cluster = Cluster { child, dir, config, endpoints, members: usize::from(nodes) };
        cluster.wait_for_leader(None);
        cluster
    }

    /// `skiff --endpoints <this cluster> ARGS`.
    pub fn skiff(&self) -> Command {
        let mut command = skiff();
        command.arg("--endpoints").arg(self.endpoints.join(","));
        command
    }

    /// Runs `skiff ARGS` against the cluster.
    pub fn run(&self, args: &[&str]) -> Output {
        self.skiff().args(args).output().expect("run skiff")
    }

    /// Runs `skiff ARGS` and checks that it succeeded; returns its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(output.status.success(), "skiff {args:?} failed: {output:?}\ndemo log:\n{}", self.log());
        stdout(&output)
    }

    /// Runs `skiff ARGS` with `input` on standard input.
    pub fn run_with_input(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .skiff()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run skiff");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("wait for skiff")
    }

    /// Every node's status, from `skiff status --json`.
    pub fn status(&self) -> Vec<serde_json::Value> {
        let output = self.run(&["status", "--json"]);
        if !output.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    }

    /// Waits until exactly one node is leader (`want`, if given) and every node names it.
    pub fn wait_for_leader(&self, want: Option<&str>) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let nodes = self.status();
            let leaders: Vec<&str> =
                nodes.iter().filter(|node| node["role"] == "leader").filter_map(|node| node["id"].as_str()).collect();
            if let [leader] = leaders[..]
                && nodes.len() == self.members
                && nodes.iter().all(|node| node["leader"] == leader)
                && want.is_none_or(|want| want == leader)
            {
                return leader.to_string();
            }
            assert!(Instant::now() < deadline, "no agreed leader (want {want:?}): {nodes:?}\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("demo.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A cluster file for `nodes` nodes at port base `base`.
pub fn cluster_toml(base: u16, nodes: u16) -> String {
    let mut toml = String::from("[cluster]\nname = \"cli-test\"\n");
    for i in 1..=nodes {
        toml.push_str(&format!(
            "\n[[node]]\nid = \"n{i}\"\nraft = \"127.0.0.1:{}\"\nhttp = \"127.0.0.1:{}\"\n",
            base + i,
            base + 10 + i
        ));
    }
    toml
}

/// Writes `text` to `name` in `dir`; returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
