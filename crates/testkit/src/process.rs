//! The `skiff` binary as child processes: a local cluster run by `skiff demo --config` on
//! ports from [`ports`](crate::ports), killed when its guard drops (on panic too), and the
//! client commands pointed at it. The binary's path comes from the test
//! (`env!("CARGO_BIN_EXE_skiff")`, which only the CLI crate's tests have).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::cluster_file::ClusterFile;
use crate::wait::eventually_ok;

/// `binary` with no SKIFF_* variables from the environment.
pub fn skiff(binary: &str) -> Command {
    let mut command = Command::new(binary);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SKIFF_") {
            command.env_remove(name);
        }
    }
    command
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes `text` to `name` in `dir`; returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
    path
}

/// Sends `signal` (`libc::SIGINT`, ...) to a child process.
pub fn signal(child: &Child, signal: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    let result = unsafe { libc::kill(pid, signal) };
    assert_eq!(result, 0, "kill({pid}, {signal})");
}

/// Kills a child process (SIGKILL) when dropped, unless the test stopped it first and
/// called [`KillOnDrop::disarm`].
pub struct KillOnDrop(Option<u32>);

impl KillOnDrop {
    pub fn new(child: &Child) -> KillOnDrop {
        KillOnDrop(Some(child.id()))
    }

    /// The test has reaped the child: killing its pid now could hit another process.
    pub fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|pid| libc::pid_t::try_from(pid).ok()) {
            // SAFETY: kill(2) on our own child's pid, which the test has not reaped yet.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Starts `skiff demo --config <config>` with its data in `dir/data` and its output in
/// `dir/demo.log`.
pub fn spawn_demo(binary: &str, dir: &Path, config: &Path) -> Child {
    let log = std::fs::File::create(dir.join("demo.log")).expect("a log file");
    skiff(binary)
        .args(["demo", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("a log file"))
        .stderr(log)
        .spawn()
        .expect("start skiff demo")
}

/// A local cluster run by `skiff demo --config` in a child process, killed when dropped.
pub struct DemoCluster {
    binary: String,
    child: Child,
    pub dir: tempfile::TempDir,
    pub file: ClusterFile,
    /// The cluster file's path.
    pub config: PathBuf,
    /// Every node's http address, in id order.
    pub endpoints: Vec<String>,
    /// How many nodes start as members (the others join later).
    pub members: usize,
}

impl DemoCluster {
    /// Starts `nodes` nodes with http addresses and waits until they agree on a leader.
    pub fn start(binary: &str, nodes: u64) -> DemoCluster {
        DemoCluster::start_file(binary, ClusterFile::builder("cli-test", nodes).http().build())
    }

    /// Starts the nodes of `file` (which needs http addresses; nodes listed with `join`
    /// wait to be added with `members add`) and waits until the members agree on a leader.
    pub fn start_file(binary: &str, file: ClusterFile) -> DemoCluster {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = file.write(dir.path());
        let child = spawn_demo(binary, dir.path(), &config);
        let endpoints = file.http_addresses();
        let members = file.nodes.iter().filter(|node| !node.join).count();
        let cluster = DemoCluster { binary: binary.to_string(), child, dir, file, config, endpoints, members };
        cluster.wait_for_leader(None);
        cluster
    }

    /// `skiff --endpoints <this cluster> ARGS`.
    pub fn skiff(&self) -> Command {
        let mut command = skiff(&self.binary);
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

    /// Every node's status, from `skiff status --json` (empty while that fails).
    pub fn status(&self) -> Vec<serde_json::Value> {
        let output = self.run(&["status", "--json"]);
        if !output.status.success() {
            return Vec::new();
        }
        serde_json::from_slice(&output.stdout).unwrap_or_default()
    }

    /// Waits until exactly one node is leader (`want`, if given) and every member names it.
    pub fn wait_for_leader(&self, want: Option<&str>) -> String {
        eventually_ok(format!("an agreed leader (want {want:?})"), || {
            let nodes = self.status();
            let leaders: Vec<&str> =
                nodes.iter().filter(|node| node["role"] == "leader").filter_map(|node| node["id"].as_str()).collect();
            if let [leader] = leaders[..]
                && nodes.len() == self.members
                && nodes.iter().all(|node| node["leader"] == leader)
                && want.is_none_or(|want| want == leader)
            {
                return Ok(leader.to_string());
            }
            Err(format!("{nodes:?}\ndemo log:\n{}", self.log()))
        })
    }

    /// What the demo printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("demo.log")).unwrap_or_default()
    }
}

impl Drop for DemoCluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process (a `skiff serve`) with its standard output and error in a log file,
/// SIGKILLed and reaped when dropped unless stopped first.
pub struct LoggedChild {
    child: Child,
    pub log: PathBuf,
    reaped: bool,
}

impl LoggedChild {
    /// Starts `command` with its output appended to `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> LoggedChild {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|error| panic!("opening {}: {error}", log.display()));
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("a log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {command:?}: {error}"));
        LoggedChild { child, log, reaped: false }
    }

    /// What it wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("try_wait on a child")
    }

    /// SIGKILLs it and reaps it: a crash, or a machine lost for good.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Sends SIGTERM and waits for it to exit; returns how it exited.
    pub fn stop(mut self) -> std::process::ExitStatus {
        signal(&self.child, libc::SIGTERM);
        let status = self.child.wait().expect("wait for the child");
        self.reaped = true;
        status
    }
}

impl Drop for LoggedChild {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
