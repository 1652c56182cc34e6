//! The cluster `skiff check` runs itself: one `skiff serve --fault-injection` child process
//! per node, each with its own data directory and log file in one temporary directory,
//! which the fault thread kills, pauses and restarts.
//!
//! Every child runs in its own process group, so a Ctrl-C in the terminal reaches
//! `skiff check` alone, which heals and stops them itself. Dropping the [`LocalCluster`]
//! continues and kills every child, whatever happened (an error, a panic that unwinds).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use skiff::config::{AuthSection, ClusterConfig, ClusterSection, NodeConfig, RaftSection, TlsSection};

use super::Member;
use crate::client::Security;

/// The files of one node.
struct NodeFiles {
    id: String,
    data_dir: PathBuf,
    log: PathBuf,
}

/// What a node's process is doing.
enum Process {
    Running(Child),
    /// Stopped with SIGSTOP; SIGCONT resumes it.
    Paused(Child),
    /// Killed by the harness (SIGKILL) and reaped; restarted when the fault heals.
    Killed,
    /// Exited by itself: a crash, or a refusal to start. Restarted at the next heal.
    Exited,
}

/// The child processes of a local cluster, and their files.
pub struct LocalCluster {
    /// `None` once kept (`TempDir::keep`) or removed.
    temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    config: PathBuf,
    exe: PathBuf,
    nodes: Vec<NodeFiles>,
    processes: Mutex<Vec<Process>>,
    /// Whether to keep the directory when dropped: until a run passes, in case the logs are
    /// needed.
    keep: AtomicBool,
    /// Whether the directory's path was already printed.
    announced: AtomicBool,
}

/// A child that exited without being asked to.
pub struct UnexpectedExit {
    pub id: String,
    pub status: String,
    pub log: PathBuf,
    pub log_tail: String,
}

/// Where a node listens: raft on `base + i`, http on `base + 100 + i`.
pub fn ports(base_port: u16, i: usize) -> (u16, u16) {
    let i = u16::try_from(i).expect("at most 7 nodes");
    (base_port + i, base_port + 100 + i)
}

impl LocalCluster {
    /// Writes the cluster file and starts `nodes` nodes. Returns the cluster, its members,
    /// and how to reach them: with `secure`, the cluster has `[tls]` (certificates made in
    /// its directory) and `[auth]` (a tokens file with one management token), and the
    /// members are `https://` with that CA and token.
    pub fn start(
        nodes: usize,
        base_port: u16,
        snapshot_after_entries: u64,
        secure: bool,
        name: &str,
    ) -> Result<(LocalCluster, Vec<Member>, Security)> {
        let temp = tempfile::Builder::new().prefix("skiff-check-").tempdir().context("cannot create a temp dir")?;
        let dir = temp.path().to_path_buf();
        let mut members = Vec::new();
        let mut node_configs = Vec::new();
        let mut files = Vec::new();
        let scheme = if secure { "https" } else { "http" };
        for i in 1..=nodes {
            let (raft, http) = ports(base_port, i);
            let id = format!("n{i}");
            node_configs.push(NodeConfig {
                id: id.clone(),
                raft: format!("127.0.0.1:{raft}"),
                raft_listen: None,
                http: Some(format!("127.0.0.1:{http}")),
                redis: None,
                join: false,
                cert: None,
                key: None,
            });
            members.push(Member { id: id.clone(), url: format!("{scheme}://127.0.0.1:{http}") });
            files.push(NodeFiles { data_dir: dir.join(&id), log: dir.join(format!("{id}.log")), id });
        }
        let raft = RaftSection { snapshot_after_entries, ..RaftSection::default() };
        let mut cluster = ClusterConfig {
            cluster: ClusterSection { name: name.to_string(), insecure: false },
            node: node_configs,
            raft,
            tls: None,
            auth: None,
        };
        let security = if secure { secure_cluster(&mut cluster, &dir)? } else { Security::default() };
        cluster.validate().context("the generated cluster file is invalid (a bug in skiff check)")?;
        let config = dir.join("cluster.json");
        std::fs::write(&config, serde_json::to_vec_pretty(&cluster)?)
            .with_context(|| format!("cannot write {}", config.display()))?;
        let exe = std::env::current_exe().context("cannot find the skiff binary to start the nodes with")?;
        let local = LocalCluster {
            temp: Some(temp),
            dir,
            config,
            exe,
            nodes: files,
            processes: Mutex::new(Vec::new()),
            keep: AtomicBool::new(true),
            announced: AtomicBool::new(false),
        };
        for index in 0..nodes {
            let child = local.spawn(index, "start")?;
            local.lock().push(Process::Running(child));
        }
        Ok((local, members, security))
    }

    /// The directory holding the cluster file, the data directories and the logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Removes the directory when dropped (the run passed and `--keep-data` was not given).
    pub fn remove_when_done(&self) {
        self.keep.store(false, Ordering::Relaxed);
    }

    /// The directory is kept, and its path was printed.
    pub fn announce_kept(&self) {
        self.announced.store(true, Ordering::Relaxed);
    }

    pub fn is_kept(&self) -> bool {
        self.keep.load(Ordering::Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Process>> {
        self.processes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts node `index` (again), appending to its log.
    fn spawn(&self, index: usize, why: &str) -> Result<Child> {
        let node = &self.nodes[index];
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .with_context(|| format!("cannot open {}", node.log.display()))?;
        let _ = writeln!(log, "---- skiff check: {why} {} ----", node.id);
        let mut command = Command::new(&self.exe);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SKIFF_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .arg("--id")
            .arg(&node.id)
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--fault-injection")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        command.spawn().with_context(|| format!("cannot start node {} ({})", node.id, self.exe.display()))
    }

    /// SIGKILLs node `index` (paused or not) and reaps it.
    pub fn kill(&self, index: usize) -> Result<()> {
        let mut processes = self.lock();
        match std::mem::replace(&mut processes[index], Process::Killed) {
            Process::Running(mut child) | Process::Paused(mut child) => {
                child.kill().with_context(|| format!("cannot kill node {}", self.nodes[index].id))?;
                let _ = child.wait();
            }
            other => processes[index] = other,
        }
        Ok(())
    }

    /// SIGSTOPs node `index` if it is running.
    pub fn pause(&self, index: usize) -> Result<()> {
        let mut processes = self.lock();
        if let Process::Running(child) = &processes[index] {
            signal(child, Signal::SIGSTOP).with_context(|| format!("cannot pause node {}", self.nodes[index].id))?;
            let Process::Running(child) = std::mem::replace(&mut processes[index], Process::Killed) else {
                unreachable!("matched above")
            };
            processes[index] = Process::Paused(child);
        }
        Ok(())
    }

    /// Brings node `index` back: SIGCONT if paused, a restart with the same data directory
    /// if killed or exited.
    pub fn heal(&self, index: usize) -> Result<()> {
        let mut processes = self.lock();
        match &processes[index] {
            Process::Running(_) => {}
            Process::Paused(child) => {
                signal(child, Signal::SIGCONT)
                    .with_context(|| format!("cannot resume node {}", self.nodes[index].id))?;
                let Process::Paused(child) = std::mem::replace(&mut processes[index], Process::Killed) else {
                    unreachable!("matched above")
                };
                processes[index] = Process::Running(child);
            }
            Process::Killed | Process::Exited => {
                let child = self.spawn(index, "restart")?;
                processes[index] = Process::Running(child);
            }
        }
        Ok(())
    }

    /// Heals every node.
    pub fn heal_all(&self) -> Result<()> {
        for index in 0..self.nodes.len() {
            self.heal(index)?;
        }
        Ok(())
    }

    /// The nodes that exited by themselves since the last call.
    pub fn unexpected_exits(&self) -> Vec<UnexpectedExit> {
        let mut processes = self.lock();
        let mut exits = Vec::new();
        for (index, process) in processes.iter_mut().enumerate() {
            let Process::Running(child) = process else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                *process = Process::Exited;
                let node = &self.nodes[index];
                exits.push(UnexpectedExit {
                    id: node.id.clone(),
                    status: status.to_string(),
                    log: node.log.clone(),
                    log_tail: log_tail(&node.log, 15),
                });
            }
        }
        exits
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for process in self.lock().iter_mut() {
            if let Process::Running(child) | Process::Paused(child) = process {
                let _ = signal(child, Signal::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let Some(temp) = self.temp.take() else { return };
        if self.keep.load(Ordering::Relaxed) {
            let dir = temp.keep();
            if !self.announced.load(Ordering::Relaxed) {
                super::note(&format!("the nodes' data and logs are kept in {}", dir.display()));
            }
        }
    }
}

/// Makes certificates (`certs/`) and a tokens file with one management token
/// (`tokens.toml`, a random secret) in `dir`, and names them in `cluster`'s `[tls]` and
/// `[auth]`. Returns the CA and the token.
fn secure_cluster(cluster: &mut ClusterConfig, dir: &Path) -> Result<Security> {
    use rand::Rng as _;
    let certs = dir.join("certs");
    let nodes: Vec<_> = cluster.node_ids().collect();
    skiff::tls::generate(&certs, &nodes, &["127.0.0.1".to_string()], true).context("cannot make certificates")?;
    let secret = format!("{:032x}", rand::rng().random::<u128>());
    let tokens = dir.join("tokens.toml");
    let text = format!(
        "# Made by skiff check --secure.\n[[token]]\nname = \"check\"\nsecret = \"{secret}\"\nmanagement = true\n"
    );
    write_private(&tokens, &text)?;
    cluster.tls = Some(TlsSection { dir: Some(certs.clone()), ca: None, verify_clients: false });
    cluster.auth = Some(AuthSection { tokens });
    let ca_path = certs.join("ca.pem");
    let ca_pem = std::fs::read(&ca_path).with_context(|| format!("cannot read {}", ca_path.display()))?;
    Ok(Security { ca_pem: Some(ca_pem), identity_pem: None, token: Some(secret) })
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

fn signal(child: &Child, signal: Signal) -> nix::Result<()> {
    let pid = i32::try_from(child.id()).map_err(|_| nix::Error::ESRCH)?;
    nix::sys::signal::kill(Pid::from_raw(pid), signal)
}

/// The last `lines` lines of a log file, indented, for an error message.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let tail = &all[all.len().saturating_sub(lines)..];
    tail.iter().map(|line| format!("    {line}\n")).collect()
}
