//! The cluster `skiff check` runs itself: one `skiff serve --fault-injection` child process
//! per node, each with its own data directory and log file in one temporary directory,
//! which the fault thread kills, pauses and restarts, and (the `membership` fault) grows
//! with new nodes and shrinks by stopping removed ones for good.
//!
//! Node `nK` listens on the ports of a *slot*: raft `base + slot`, http `base + 100 + slot`.
//! The initial nodes hold slots 1..=N for good (the cluster file names their addresses, and
//! a node started with it refuses a second node at one of them); a new node takes the free
//! slot among the next [`extra_slots`]`(N)` that was freed the longest ago, so a port is
//! reused only well after its last node stopped.
//!
//! Every child runs in its own process group, so a Ctrl-C in the terminal reaches
//! `skiff check` alone, which heals and stops them itself. Dropping the [`LocalCluster`]
//! continues and kills every child, whatever happened (an error, a panic that unwinds).

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use anyhow::{Context, Result, anyhow, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use skiff::config::{AuthSection, ClusterConfig, ClusterSection, NodeConfig, RaftSection, TlsSection};

use super::Member;
use crate::client::Security;

/// How many processes may run at once beyond the initial count.
pub const EXTRA_PROCESSES: usize = 2;

/// How many slots after the `nodes` initial ones new nodes take from: enough for
/// `nodes + EXTRA_PROCESSES` of them (every initial node may have been removed), and two
/// more, so two slots are always free to choose from.
pub fn extra_slots(nodes: usize) -> usize {
    nodes + EXTRA_PROCESSES + 2
}

/// The files of one node, and how it is started.
struct NodeFiles {
    id: String,
    data_dir: PathBuf,
    log: PathBuf,
    slot: usize,
    /// The `serve` arguments of its first start, after `serve`.
    first: Vec<String>,
    /// The `serve` arguments of a restart.
    again: Vec<String>,
    /// Whether it was started at least once.
    started: bool,
}

/// One node: its files and its process.
struct Node {
    files: NodeFiles,
    process: Process,
}

/// How a node the `membership` fault adds is started.
pub enum NewNode<'a> {
    /// `skiff serve --join URL --id ... --raft ... --http ...`: it asks the cluster (through
    /// the member at `URL`) to add it. Restarted with `--id` and `--data-dir` only (it saved
    /// the cluster's settings).
    Join(&'a str),
    /// `skiff serve --config FILE --id ... --raft ... --http ...` with an id not in the file:
    /// it waits to be added through the members API.
    Waiting,
}

/// A node started by [`LocalCluster::start_new`].
#[derive(Clone, Debug)]
pub struct Started {
    pub member: Member,
    /// Its raft and http `host:port`.
    pub raft: String,
    pub http: String,
}

/// The nodes, and the slots free for new ones.
struct Nodes {
    list: Vec<Node>,
    /// Free slots, the longest free first.
    free: VecDeque<usize>,
    /// The number of the next new node's id (`n<next>`).
    next: usize,
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
    /// Removed from the cluster and stopped for good: never restarted.
    Retired,
}

/// The child processes of a local cluster, and their files.
pub struct LocalCluster {
    /// `None` once kept (`TempDir::keep`) or removed.
    temp: Option<tempfile::TempDir>,
    dir: PathBuf,
    config: PathBuf,
    exe: PathBuf,
    base_port: u16,
    /// How many nodes the cluster started with (slots 1..=initial).
    initial: usize,
    /// `http` or `https`.
    scheme: &'static str,
    /// With `--secure`: where the certificates are (new nodes get theirs there).
    certs: Option<PathBuf>,
    nodes: Mutex<Nodes>,
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

/// Where the node in slot `slot` listens: raft on `base + slot`, http on `base + 100 + slot`.
/// The options are checked so that these fit (`CheckOptions::fault_kinds`).
pub fn ports(base_port: u16, slot: usize) -> (u16, u16) {
    let slot = u16::try_from(slot).expect("at most 7 + extra_slots(7) slots");
    (base_port + slot, base_port + 100 + slot)
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
        let mut list = Vec::new();
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
            list.push(Node { files: NodeFiles::new(&dir, id, i), process: Process::Killed });
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
        for node in &mut list {
            let initial = ["--config".to_string(), config.display().to_string(), "--id".into(), node.files.id.clone()];
            node.files.first = initial.to_vec();
            if bootstrap_flag_needed(nodes) {
                node.files.first.push("--bootstrap".into());
            }
            node.files.again = initial.to_vec();
        }
        let local = LocalCluster {
            temp: Some(temp),
            certs: secure.then(|| dir.join("certs")),
            dir,
            config,
            exe,
            base_port,
            initial: nodes,
            scheme,
            nodes: Mutex::new(Nodes {
                list,
                free: (nodes + 1..=nodes + extra_slots(nodes)).collect(),
                next: nodes + 1,
            }),
            keep: AtomicBool::new(true),
            announced: AtomicBool::new(false),
        };
        for id in members.iter().map(|member| member.id.clone()) {
            local.heal(&id)?;
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

    fn lock(&self) -> MutexGuard<'_, Nodes> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How many nodes have a process (running, paused, or down until healed): every node
    /// not retired.
    pub fn live_count(&self) -> usize {
        self.lock().list.iter().filter(|node| !matches!(node.process, Process::Retired)).count()
    }

    /// Whether node `id`'s process is running (or paused). An exit found here is still
    /// reported by [`unexpected_exits`](Self::unexpected_exits): the status stays with the
    /// child.
    pub fn is_running(&self, id: &str) -> bool {
        let mut nodes = self.lock();
        let Ok(position) = nodes.position(id) else { return false };
        match &mut nodes.list[position].process {
            Process::Running(child) => matches!(child.try_wait(), Ok(None)),
            Process::Paused(_) => true,
            Process::Killed | Process::Exited | Process::Retired => false,
        }
    }

    /// Starts a new node, `n<next>`, in the free slot freed the longest ago, as `how` says.
    pub fn start_new(&self, how: NewNode<'_>) -> Result<Started> {
        let mut nodes = self.lock();
        let slot = nodes.free.pop_front().ok_or_else(|| anyhow!("no free slot for a new node"))?;
        let number = nodes.next;
        let id = format!("n{number}");
        nodes.next += 1;
        let (raft_port, http_port) = ports(self.base_port, slot);
        let (raft, http) = (format!("127.0.0.1:{raft_port}"), format!("127.0.0.1:{http_port}"));
        if let Some(certs) = &self.certs {
            let node_id = skiff::NodeId(u64::try_from(number)?);
            skiff::tls::generate(certs, &[node_id], &["127.0.0.1".to_string()], false)
                .with_context(|| format!("cannot make a certificate for {id}"))?;
        }
        let mut files = NodeFiles::new(&self.dir, id.clone(), slot);
        let addresses = ["--raft".to_string(), raft.clone(), "--http".into(), http.clone()];
        let own = ["--id".to_string(), id.clone()];
        files.first = match how {
            NewNode::Join(url) => ["--join", url].map(String::from).into_iter().chain(own.clone()).collect(),
            NewNode::Waiting => {
                ["--config".to_string(), self.config.display().to_string()].into_iter().chain(own.clone()).collect()
            }
        };
        files.first.extend(addresses.clone());
        files.again = match how {
            NewNode::Join(_) => own.to_vec(),
            NewNode::Waiting => files.first.clone(),
        };
        let child = match self.spawn(&mut files) {
            Ok(child) => child,
            Err(error) => {
                nodes.free.push_back(slot);
                return Err(error);
            }
        };
        nodes.list.push(Node { files, process: Process::Running(child) });
        let member = Member { id, url: format!("{}://{http}", self.scheme) };
        Ok(Started { member, raft, http })
    }

    /// Stops node `id` for good (SIGKILL): it was removed from the cluster. Its slot is
    /// free again, its data directory and log stay.
    pub fn retire(&self, id: &str) -> Result<()> {
        let mut nodes = self.lock();
        let position = nodes.position(id)?;
        let node = &mut nodes.list[position];
        match std::mem::replace(&mut node.process, Process::Retired) {
            Process::Running(mut child) | Process::Paused(mut child) => {
                let _ = signal(&child, Signal::SIGCONT);
                child.kill().with_context(|| format!("cannot stop node {id}"))?;
                let _ = child.wait();
            }
            Process::Retired => return Ok(()),
            Process::Killed | Process::Exited => {}
        }
        let slot = node.files.slot;
        if slot > self.initial {
            nodes.free.push_back(slot);
        }
        Ok(())
    }

    /// Starts a node (again), appending to its log.
    fn spawn(&self, files: &mut NodeFiles) -> Result<Child> {
        let why = if files.started { "restart" } else { "start" };
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&files.log)
            .with_context(|| format!("cannot open {}", files.log.display()))?;
        let _ = writeln!(log, "---- skiff check: {why} {} ----", files.id);
        let mut command = Command::new(&self.exe);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("SKIFF_") {
                command.env_remove(name);
            }
        }
        command
            .arg("serve")
            .args(if files.started { &files.again } else { &files.first })
            .arg("--data-dir")
            .arg(&files.data_dir)
            .arg("--fault-injection")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0);
        let child =
            command.spawn().with_context(|| format!("cannot start node {} ({})", files.id, self.exe.display()))?;
        files.started = true;
        Ok(child)
    }

    /// SIGKILLs node `id` (paused or not) and reaps it.
    pub fn kill(&self, id: &str) -> Result<()> {
        let mut nodes = self.lock();
        let position = nodes.position(id)?;
        let node = &mut nodes.list[position];
        match std::mem::replace(&mut node.process, Process::Killed) {
            Process::Running(mut child) | Process::Paused(mut child) => {
                child.kill().with_context(|| format!("cannot kill node {id}"))?;
                let _ = child.wait();
            }
            other => node.process = other,
        }
        Ok(())
    }

    /// SIGSTOPs node `id` if it is running.
    pub fn pause(&self, id: &str) -> Result<()> {
        let mut nodes = self.lock();
        let position = nodes.position(id)?;
        let node = &mut nodes.list[position];
        if let Process::Running(child) = &node.process {
            signal(child, Signal::SIGSTOP).with_context(|| format!("cannot pause node {id}"))?;
            let Process::Running(child) = std::mem::replace(&mut node.process, Process::Killed) else {
                unreachable!("matched above")
            };
            node.process = Process::Paused(child);
        }
        Ok(())
    }

    /// Brings node `id` back: SIGCONT if paused, a (re)start with the same data directory
    /// if killed or exited. A retired node stays stopped.
    pub fn heal(&self, id: &str) -> Result<()> {
        let mut nodes = self.lock();
        let position = nodes.position(id)?;
        self.heal_node(&mut nodes.list[position])
    }

    fn heal_node(&self, node: &mut Node) -> Result<()> {
        match &node.process {
            Process::Running(_) | Process::Retired => {}
            Process::Paused(child) => {
                signal(child, Signal::SIGCONT).with_context(|| format!("cannot resume node {}", node.files.id))?;
                let Process::Paused(child) = std::mem::replace(&mut node.process, Process::Killed) else {
                    unreachable!("matched above")
                };
                node.process = Process::Running(child);
            }
            Process::Killed | Process::Exited => {
                let child = self.spawn(&mut node.files)?;
                node.process = Process::Running(child);
            }
        }
        Ok(())
    }

    /// Heals every node that is not retired.
    pub fn heal_all(&self) -> Result<()> {
        let mut nodes = self.lock();
        for node in &mut nodes.list {
            self.heal_node(node)?;
        }
        Ok(())
    }

    /// The nodes that exited by themselves since the last call.
    pub fn unexpected_exits(&self) -> Vec<UnexpectedExit> {
        let mut nodes = self.lock();
        let mut exits = Vec::new();
        for node in &mut nodes.list {
            let Process::Running(child) = &mut node.process else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                node.process = Process::Exited;
                exits.push(UnexpectedExit {
                    id: node.files.id.clone(),
                    status: status.to_string(),
                    log: node.files.log.clone(),
                    log_tail: log_tail(&node.files.log, 15),
                });
            }
        }
        exits
    }
}

/// Whether the first start of `nodes` initial nodes passes `--bootstrap` (this is a new
/// cluster: vote at once). Without it, a new data directory votes only once a quorum of the
/// *other* initial members are new too, and a node that finds a peer already holding the
/// cluster's log refuses to start (its data might have been lost). Up to 4 nodes that quorum
/// is every other node, so none votes before all have started, and the check runs as an
/// operator's first start does. From 5 nodes a quorum can start the cluster before the
/// slowest process is up, which would then refuse: the harness, which knows the cluster is
/// new, says so, as etcd's `--initial-cluster-state new` does. Restarts never pass it.
fn bootstrap_flag_needed(nodes: usize) -> bool {
    let others = nodes.saturating_sub(1);
    nodes / 2 + 1 < others
}

impl NodeFiles {
    /// Node `id`'s files in `dir`; its arguments are filled in by its starter.
    fn new(dir: &Path, id: String, slot: usize) -> NodeFiles {
        NodeFiles {
            data_dir: dir.join(&id),
            log: dir.join(format!("{id}.log")),
            id,
            slot,
            first: Vec::new(),
            again: Vec::new(),
            started: false,
        }
    }
}

impl Nodes {
    /// Where node `id` is in the list.
    fn position(&self, id: &str) -> Result<usize> {
        match self.list.iter().position(|node| node.files.id == id) {
            Some(position) => Ok(position),
            None => bail!("no node {id} was started here"),
        }
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.lock().list {
            if let Process::Running(child) | Process::Paused(child) = &mut node.process {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_start_says_bootstrap_only_where_a_quorum_could_start_without_the_slowest() {
        // 3 nodes: a quorum of the others (2) is both others; 4: 3 of 3. 5: 3 of 4.
        assert_eq!(
            (1..=7).map(bootstrap_flag_needed).collect::<Vec<_>>(),
            [false, false, false, false, true, true, true]
        );
    }
}
