//! Shared by the CLI tests: the testkit's process harness, bound to this crate's `skiff`
//! binary (only this crate's tests know its path).

#![allow(dead_code, unused_imports)] // each test file uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use skiff_testkit::cluster_file::ClusterFile;

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

/// `skiff demo --config` of a test cluster file, run as a child with its data in
/// `dir/data`, read up to the banner's "running" line (the rest of its output is read on a
/// thread, so the pipe never fills). Killed on drop unless [`Demo::stop`]ped.
pub struct Demo {
    pub child: Child,
    /// The banner, up to and with its "running" line.
    pub banner: String,
    /// The data directory.
    pub data: PathBuf,
    errors: PathBuf,
    rest: mpsc::Receiver<String>,
    reader: Option<JoinHandle<()>>,
    guard: Option<KillOnDrop>,
}

impl Demo {
    /// Starts the demo of `file` with `extra` arguments (`--secure`), and waits for its
    /// banner.
    pub fn start(dir: &Path, file: &ClusterFile, extra: &[&str]) -> Demo {
        let config = file.write(dir);
        let errors = dir.join("stderr");
        let data = dir.join("data");
        let mut child = skiff()
            .arg("demo")
            .args(extra)
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(&data)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&errors).expect("a stderr file"))
            .spawn()
            .expect("start skiff demo");
        let guard = KillOnDrop::new(&child);
        let lines = BufReader::new(child.stdout.take().expect("stdout"));
        let (sender, rest) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let mut demo =
            Demo { child, banner: String::new(), data, errors, rest, reader: Some(reader), guard: Some(guard) };
        let mut banner = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !banner.iter().any(|line: &String| line.starts_with("running")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match demo.rest.recv_timeout(left) {
                Ok(line) => banner.push(line),
                Err(_) => {
                    panic!("no 'running' line in time; banner so far:\n{}\nstderr:\n{}", banner.join("\n"), demo.log())
                }
            }
        }
        demo.banner = banner.join("\n");
        demo
    }

    /// What the demo wrote to standard error so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.errors).unwrap_or_default()
    }

    /// With `--secure`: the admin token's secret the banner prints.
    pub fn token(&self) -> String {
        let banner = &self.banner;
        let token = banner.lines().find_map(|line| line.trim().strip_prefix("export SKIFF_TOKEN="));
        token.unwrap_or_else(|| panic!("no token in the banner:\n{banner}")).to_string()
    }

    /// With `--secure`: the CA the demo made.
    pub fn ca(&self) -> PathBuf {
        self.data.join("certs").join("ca.pem")
    }

    /// Stops the demo with SIGINT; returns how it exited and the lines it printed after its
    /// banner.
    pub fn stop(mut self) -> (ExitStatus, Vec<String>) {
        signal(&self.child, libc::SIGINT);
        let status = self.child.wait().expect("wait for the demo");
        if let Some(guard) = self.guard.take() {
            guard.disarm();
        }
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        (status, self.rest.try_iter().collect())
    }
}
