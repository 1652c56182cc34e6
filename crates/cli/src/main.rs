//! `skiff`: run a node (`serve`), a local cluster (`demo`), or talk to a cluster over its
//! HTTP API (`get`, `put`, `status`, `shell`, ...). See `skiff help`.

mod backup;
mod bench;
mod check;
mod client;
mod commands;
mod demo;
mod interrupts;
mod join;
mod lock;
mod serve;
mod shell;
mod status;
mod watch;

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use skiff_client::Client;

use crate::commands::Format;
use crate::serve::LogFormat;

/// jemalloc rather than glibc's malloc: with a million keys a node's RSS is about 23 MB
/// (13%) lower (bench/memory.sh: 155 MB against 178 MB per node, the state itself being
/// about 120 MB under both: the difference is freed memory glibc keeps), and write
/// throughput measured the same within the noise. (mimalloc kept more: up to 290 MB.)
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The demo's default log filter: warnings, but not the peers that refuse connections
/// while the nodes start and stop together.
const DEMO_LOG: &str = "warn,skiff::transport=error";

/// Exit code of a `get` whose key does not exist.
const EXIT_NOT_FOUND: u8 = 3;

#[derive(Parser)]
#[command(name = "skiff", version, about = "Skiff: a replicated key-value store on Raft")]
#[command(after_help = "Start a local 3-node cluster with `skiff demo`, then try `skiff put greeting hello`.")]
struct Cli {
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

/// How the client commands reach the cluster.
#[derive(Args)]
struct ClientArgs {
    /// The nodes' HTTP addresses, host:port or http://host:port, comma-separated; tried in
    /// order until one answers.
    #[arg(
        long,
        global = true,
        env = "SKIFF_ENDPOINTS",
        default_value = "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003",
        value_name = "LIST"
    )]
    endpoints: String,
    /// How long a command may take, retries included (500ms, 10s, 2m).
    #[arg(long, global = true, env = "SKIFF_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// Print the API's JSON instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    security: client::SecurityArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run one node of a cluster until SIGINT or SIGTERM.
    Serve(Box<ServeArgs>),
    /// Run a whole local cluster in this process (3 nodes on 127.0.0.1:8001-8003).
    Demo(DemoArgs),
    /// Print a key's value (exit code 3 if it does not exist).
    Get {
        key: String,
        /// Read this node's copy, however far behind, instead of a linearizable read.
        #[arg(long)]
        stale: bool,
        /// Print the value's bytes alone, without a final newline.
        #[arg(long)]
        raw: bool,
    },
    /// Set a key's value ("-" reads the value from standard input).
    Put {
        key: String,
        value: String,
        /// An opaque number stored with the value.
        #[arg(long)]
        flags: Option<u64>,
    },
    /// Delete a key (deleting a missing key succeeds).
    Delete {
        key: String,
        /// Delete every key that starts with KEY.
        #[arg(long)]
        recurse: bool,
    },
    /// List the keys under a prefix, with their values.
    List {
        #[arg(default_value = "")]
        prefix: String,
        /// The key names only.
        #[arg(long)]
        keys: bool,
    },
    /// Compare-and-set: write only if the key's ModifyIndex is N (0: only if it does not exist).
    Cas {
        key: String,
        /// The value ("-" reads it from standard input).
        value: String,
        #[arg(long, value_name = "N")]
        index: u64,
    },
    /// Every node's role, term, commit and health, one row per node.
    Status {
        /// Redraw the table in place until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// How often --watch redraws.
        #[arg(long, default_value = "1s", value_parser = parse_duration, requires = "watch")]
        interval: Duration,
    },
    /// Print a node's log, one entry per line, `*` before committed entries.
    Log {
        /// The first index (default: the last --limit entries).
        #[arg(long)]
        from: Option<u64>,
        /// At most this many entries (the server's default is 100, its maximum 1000).
        #[arg(long)]
        limit: Option<u64>,
    },
    /// List, add, remove or promote cluster members.
    #[command(subcommand)]
    Members(MembersCommand),
    /// Hand leadership to ID, or to the most up-to-date voter.
    TransferLeader { id: Option<String> },
    /// An interactive shell (reads commands from standard input when it is not a terminal).
    Shell,
    /// Print the changes under PREFIX as they happen, one line each (--json: the server's
    /// JSON), until Ctrl-C; resumes by itself after a leader change or a node's restart.
    Watch {
        /// The keys to follow ("" for every key).
        prefix: String,
        /// Print the changes after this log index (a snapshot of the prefix first when the
        /// node's history no longer reaches back to it) [default: from now on].
        #[arg(long, value_name = "N")]
        from: Option<u64>,
        /// Show each change's previous value.
        #[arg(long)]
        prev: bool,
    },
    /// Run a command while holding the lock NAME, like `consul lock`: its fencing token is in
    /// SKIFF_FENCE, and the command is stopped if the lock is lost (docs/coordination.md).
    Lock(LockArgs),
    /// Run a workload against a cluster while killing, pausing and partitioning nodes, then
    /// check that the history is linearizable and the replicas converged (docs/check.md).
    Check(CheckArgs),
    /// Load a cluster (Skiff over HTTP or Redis, or etcd) with puts, gets or both, and report
    /// throughput and latency percentiles (docs/bench.md).
    Bench(BenchArgs),
    /// Make a cluster CA and certificates for its nodes and clients (docs/security.md).
    Certs(CertsArgs),
    /// Save a backup of a running cluster, inspect one, or restore one into a new cluster
    /// (docs/operations.md, "Backup and restore").
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Make a stopped node the only member of a new cluster, with all its data: the last
    /// resort after losing a quorum for good (docs/operations.md, "Losing a quorum").
    Recover(RecoverArgs),
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Save a consistent backup of the cluster's state to FILE (written atomically, verified).
    Save {
        file: PathBuf,
        /// The node to ask (http://host:port or host:port) [default: the --endpoints, in order].
        #[arg(long, value_name = "URL")]
        addr: Option<String>,
    },
    /// Check a backup file whole and print what it holds.
    Inspect { file: PathBuf },
    /// Seed a new data directory of a new cluster from a backup; run it once per initial
    /// member, then start each with `skiff serve`.
    Restore {
        file: PathBuf,
        #[command(flatten)]
        node: NodeDirectoryArgs,
    },
}

/// A node's identity and its data directory, for the commands that write one offline.
#[derive(Args)]
struct NodeDirectoryArgs {
    /// The cluster file (TOML, or JSON) of the cluster the directory is for.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The node's id in the cluster file (n1 or 1).
    #[arg(long)]
    id: String,
    /// The node's data directory.
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

impl NodeDirectoryArgs {
    fn into_directory(self) -> backup::NodeDirectory {
        backup::NodeDirectory { config: self.config, id: self.id, data_dir: self.data_dir }
    }
}

#[derive(Args)]
#[command(after_help = "The node must be stopped. Every entry in its log is kept, committed or not. Read \
docs/operations.md (\"Losing a quorum\") first.")]
struct RecoverArgs {
    #[command(flatten)]
    node: NodeDirectoryArgs,
    /// The members of the new cluster: this node alone (the others are added back later).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    members: Vec<String>,
}

#[derive(Args)]
#[command(after_help = "Then put `[tls] dir = \"DIR\"` in the cluster file. Run it again with more --nodes to add \
certificates for new nodes: the CA and existing files are kept.")]
struct CertsArgs {
    /// Where to write ca.pem, ca-key.pem, <id>.pem, <id>-key.pem, client.pem, client-key.pem.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The node ids, comma-separated (n1,n2,n3).
    #[arg(long, value_name = "LIST", value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// The host names and IP addresses clients and peers reach the nodes by, comma-separated;
    /// every node certificate names all of them.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "127.0.0.1,::1,localhost")]
    hosts: Vec<String>,
    /// Replace existing files, the CA included (every node then needs its new certificate).
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
enum MembersCommand {
    /// The members, their roles and addresses.
    List,
    /// Add a running node: as a learner, then (once caught up) a voter. Give its addresses,
    /// or list it in the cluster file with `join = true`.
    Add {
        id: String,
        #[command(flatten)]
        address: AddressArgs,
        /// Leave it a learner.
        #[arg(long)]
        learner: bool,
    },
    /// Replace a member by a new, running node: add the new one as a learner, let it catch
    /// up, promote it, then remove the old one (the cluster never has fewer voters).
    Replace {
        /// The member to replace.
        old: String,
        /// The new node's id.
        #[arg(long = "with", value_name = "ID")]
        new: String,
        #[command(flatten)]
        address: AddressArgs,
    },
    /// Remove a node from the cluster.
    Remove { id: String },
    /// Make a learner a voter.
    Promote { id: String },
}

/// A node's addresses, as `members add` and `replace` take them.
#[derive(Args, Clone, Debug, Default)]
struct AddressArgs {
    /// Where its peers reach it.
    #[arg(long, value_name = "HOST:PORT")]
    raft: Option<String>,
    /// Its HTTP API.
    #[arg(long, value_name = "HOST:PORT", requires = "raft")]
    http: Option<String>,
    /// Its Redis-protocol API.
    #[arg(long, value_name = "HOST:PORT", requires = "raft")]
    redis: Option<String>,
}

impl AddressArgs {
    fn new_member(&self, id: &str, learner: bool) -> skiff_client::NewMember {
        let AddressArgs { raft, http, redis } = self.clone();
        skiff_client::NewMember { id: id.to_string(), raft, http, redis, learner }
    }
}

#[derive(Args)]
struct LogArgs {
    /// A RUST_LOG-style filter: info, debug, skiff=debug,warn (default: RUST_LOG, then the
    /// command's default).
    #[arg(long, env = "SKIFF_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// Log lines as text or as JSON objects, on standard error.
    #[arg(long, env = "SKIFF_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
}

#[derive(Args)]
struct ServeArgs {
    /// The cluster file (TOML, or JSON). Optional with --join, and for a node that joined
    /// before (it saved the cluster's settings in its data directory).
    #[arg(long, env = "SKIFF_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// This node's id (n1 or 1).
    #[arg(long, env = "SKIFF_ID")]
    id: String,
    /// Join the running cluster that this member's HTTP API belongs to: learn its settings
    /// and members there (unless --config is given), start with no vote, and be added as a
    /// learner, then a voter once caught up. Also how a node whose data was lost rejoins.
    #[arg(long, env = "SKIFF_JOIN", value_name = "URL")]
    join: Option<String>,
    /// The peer address others reach this node at (over the cluster file's).
    #[arg(long = "raft", env = "SKIFF_RAFT", value_name = "HOST:PORT")]
    raft_address: Option<String>,
    /// The address to bind for peers, if not --raft (a container's 0.0.0.0:7001).
    #[arg(long = "raft-listen", env = "SKIFF_RAFT_LISTEN", value_name = "HOST:PORT")]
    raft_listen: Option<String>,
    /// This node's HTTP API address (over the cluster file's).
    #[arg(long = "http", env = "SKIFF_HTTP", value_name = "HOST:PORT")]
    http_address: Option<String>,
    /// This node's Redis-protocol address (over the cluster file's).
    #[arg(long = "redis", env = "SKIFF_REDIS", value_name = "HOST:PORT")]
    redis_address: Option<String>,
    /// This is the first start of a new cluster: vote at once with a new data directory,
    /// without waiting for the other initial members to show that the cluster is new too
    /// (as etcd's --initial-cluster-state new). Never for a node whose data was lost.
    #[arg(long, conflicts_with = "join")]
    bootstrap: bool,
    /// Where the node keeps its log and snapshots [default: data/<id>].
    #[arg(long, env = "SKIFF_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    limits: skiff_kv::Limits,
    /// Serve /v1/skiff/faults, which can drop or delay this node's peer traffic (for
    /// `skiff check` and experiments; never in production).
    #[arg(long, env = "SKIFF_FAULT_INJECTION", value_parser = clap::builder::BoolishValueParser::new())]
    fault_injection: bool,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    raft: serve::RaftFlags,
}

#[derive(Args)]
struct DemoArgs {
    /// How many nodes: n1..nN on 127.0.0.1, raft 7001.., http 8001.., redis 6001...
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=9), conflicts_with = "config")]
    nodes: u16,
    /// Run every node of this cluster file instead.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Keep the data here (default: a temporary directory removed at exit).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Make certificates and an admin token in the data directory, and turn on TLS (peers
    /// and clients) and tokens; the banner says how to connect.
    #[arg(long)]
    secure: bool,
    /// Slow motion: ticks ten times longer (an election timeout of 3-6 s) and every message
    /// three ticks on its way, so that the dashboard shows an election step by step.
    #[arg(long)]
    slow: bool,
    #[command(flatten)]
    log: LogArgs,
    #[command(flatten)]
    raft: serve::RaftFlags,
}

#[derive(Args)]
#[command(after_help = "The command gets SKIFF_FENCE (the fencing token: pass it with writes as ?fence=), \
SKIFF_LOCK_KEY and SKIFF_SESSION. Exit code: the command's (128 + N if signal N ended it), or 1 if the lock could \
not be had within --wait or was lost (the command is then stopped). --timeout is each call's deadline, not the wait.")]
struct LockArgs {
    /// The key to lock.
    name: String,
    /// The command and its arguments (after --).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
    /// The session's TTL: it ends (and the lock with it) unless renewed within this long;
    /// renewed every TTL/3. Consul accepts 10s to 24h.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    ttl: Duration,
    /// After the session ends without a release (the holder died), nobody may take the lock
    /// for this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lock_delay: Duration,
    /// Give up (exit 1) if the lock is not had within this long [default: wait as long as it
    /// takes].
    #[arg(long, value_parser = parse_duration)]
    wait: Option<Duration>,
    /// When the lock is lost: how long the command has after SIGTERM before SIGKILL.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    grace: Duration,
    /// The value written to the key while it is held [default: "skiff lock, pid N"].
    #[arg(long)]
    value: Option<String>,
}

#[derive(Args)]
#[command(after_help = "Exit codes: 0 linearizable and converged, 1 a violation, divergence or an inconclusive \
check, 2 usage. With --endpoints, check your own cluster (started with --fault-injection) instead of starting one.")]
struct CheckArgs {
    /// What the clients do: kv (gets, puts, deletes, cas; checked for linearizability) or
    /// lock (leases, a lock, fenced writes, pauses past the TTL, keys that expire).
    #[arg(long, value_enum, default_value = "kv")]
    workload: check::WorkloadKind,
    /// The lock workload's lease TTL (at least 1s, the shortest lease).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    lock_ttl: Duration,
    /// How many nodes to start: n1..nN on 127.0.0.1.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=7))]
    nodes: u16,
    /// How long the workload runs (30s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    time: Duration,
    /// The faults, comma-separated: kill, pause, partition, leader, restart-all, membership
    /// (add, remove and replace nodes), or none [default: all; with --endpoints:
    /// partition,leader].
    #[arg(long, value_name = "LIST", value_parser = check::parse_faults)]
    faults: Option<check::FaultList>,
    /// Concurrent clients, each one operation at a time.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    clients: u16,
    /// How many keys the clients share (fewer keys: more contention).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1000))]
    keys: u16,
    /// The seed of the clients' choices and of the fault schedule [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Save the recorded history here as JSON (it is always saved when the check fails).
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Nodes listen on raft BASE+i and http BASE+100+i.
    #[arg(long, default_value_t = 17000, value_name = "BASE")]
    base_port: u16,
    /// Keep the nodes' data directories and logs even when the check passes.
    #[arg(long)]
    keep_data: bool,
    /// How long a client waits for one answer before recording the outcome as unknown.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// The nodes snapshot and compact their log after this many entries (small, so that
    /// restarted nodes catch up from snapshots).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    snapshot_after: u64,
    /// Start the cluster with TLS (certificates made in its directory) and tokens (a
    /// management token), and check it over HTTPS. Against your own cluster (--endpoints),
    /// give --cacert and --token instead.
    #[arg(long)]
    secure: bool,
    /// Do not run the change-feed check (a watcher per node on /v1/skiff/watch whose events
    /// must be the committed history; on by default for the kv workload).
    #[arg(long)]
    no_feed_check: bool,
}

#[derive(Args)]
#[command(after_help = "Without --endpoints: the demo's nodes (http 127.0.0.1:8001-8003, redis 6001-6003), or etcd \
on 127.0.0.1:2379. Exit codes: 0 done, 1 nothing answers (or no request succeeded), 2 usage.")]
struct BenchArgs {
    /// put: writes; get: reads (every key is written first); mixed: both (--read-ratio).
    #[arg(value_enum)]
    workload: bench::Workload,
    /// Concurrent clients, each one request at a time, back to back.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Persistent connections the clients share, spread over the endpoints.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Keys `key-0` .. `key-<N-1>`, drawn uniformly.
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    keys: u64,
    /// Bytes per value (printable, random).
    #[arg(long, default_value_t = 256, value_name = "BYTES")]
    value_size: usize,
    /// How long the measured run lasts [default: 30s].
    #[arg(long, value_parser = parse_duration, conflicts_with = "total")]
    duration: Option<Duration>,
    /// Stop after this many measured requests instead of after --duration.
    #[arg(long, value_name = "N")]
    total: Option<u64>,
    /// Reads: linearizable, or from each node's own copy.
    #[arg(long, value_enum, default_value = "consistent")]
    consistency: bench::Consistency,
    /// What to load, and through which protocol.
    #[arg(long, value_enum, default_value = "skiff-http")]
    target: bench::Target,
    /// Requests before the measured run, not recorded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    warmup: Duration,
    /// For mixed: the share of reads.
    #[arg(long, default_value_t = 0.9, value_name = "RATIO")]
    read_ratio: f64,
    /// Skip writing every key before a get or mixed run.
    #[arg(long)]
    no_fill: bool,
    /// The seed of the keys, values and operations [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// How long a request may wait for its answer before it counts as a timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    request_timeout: Duration,
}

/// `500ms`, `10s`, `2m`, or a number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 10s or 2m"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        _ => return Err(format!("{text:?} has unit {unit:?}; use ms, s or m")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|error| format!("{text:?}: {error}"))
}

/// A value argument: `-` reads standard input whole.
fn read_value(value: String) -> Result<Vec<u8>> {
    if value != "-" {
        return Ok(value.into_bytes());
    }
    let mut bytes = Vec::new();
    std::io::stdin().read_to_end(&mut bytes).context("cannot read the value from standard input")?;
    Ok(bytes)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            // `skiff list | head`: the reader left; nothing to say.
            let broken_pipe = error.chain().any(|cause| {
                cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if !broken_pipe {
                eprintln!("error: {}", report(&error));
            }
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, `: `-separated, leaving out a cause that an outer message
/// already quotes (many errors print their source in their own message).
fn report(error: &anyhow::Error) -> String {
    let mut message = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
    }
    message
}

impl CheckArgs {
    /// `skiff check`'s options; `--endpoints` only when given, else check starts its own cluster.
    fn into_options(self, client: &ClientArgs) -> Result<check::CheckOptions> {
        let security = client.security.load()?;
        let endpoints =
            check::endpoints_given().then(|| client::parse_endpoints(&client.endpoints, &security)).transpose()?;
        Ok(check::CheckOptions {
            workload: self.workload,
            lock_ttl: self.lock_ttl,
            nodes: usize::from(self.nodes),
            time: self.time,
            faults: self.faults.map(|list| list.0),
            clients: usize::from(self.clients),
            keys: usize::from(self.keys),
            seed: self.seed,
            history: self.history,
            json: client.json,
            base_port: self.base_port,
            keep_data: self.keep_data,
            endpoints,
            request_timeout: self.request_timeout,
            snapshot_after_entries: self.snapshot_after,
            security,
            secure: self.secure,
            feed_check: !self.no_feed_check,
        })
    }
}

impl BenchArgs {
    /// `skiff bench`'s options; `--endpoints` only when given, else the demo's or etcd's.
    fn into_options(self, client: &ClientArgs) -> Result<bench::BenchOptions> {
        Ok(bench::BenchOptions {
            workload: self.workload,
            target: self.target,
            endpoints: bench::endpoints_given().then(|| client.endpoints.clone()),
            clients: self.clients,
            connections: self.connections,
            keys: self.keys,
            value_size: self.value_size,
            duration: self.duration,
            total: self.total,
            warmup: self.warmup,
            consistency: self.consistency,
            read_ratio: self.read_ratio,
            fill: !self.no_fill,
            seed: self.seed,
            json: client.json,
            request_timeout: self.request_timeout,
            security: client.security.load()?,
        })
    }
}

/// `skiff certs`.
fn certs(args: CertsArgs) -> Result<()> {
    let nodes = args
        .nodes
        .iter()
        .map(|id| skiff::config::parse_node_id(id.trim()))
        .collect::<Result<Vec<_>, _>>()
        .context("--nodes")?;
    let hosts: Vec<String> =
        args.hosts.iter().map(|host| host.trim().to_string()).filter(|host| !host.is_empty()).collect();
    let made = skiff::tls::generate(&args.dir, &nodes, &hosts, args.force)?;
    for path in &made.written {
        println!("wrote {}", path.display());
    }
    for path in &made.kept {
        println!("kept  {}", path.display());
    }
    println!(
        "Put this in the cluster file (a relative dir is relative to the cluster file):\n\n[tls]\ndir = {:?}",
        args.dir.display().to_string()
    );
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let format = if cli.client.json { Format::Json } else { Format::Human };
    let client = || -> Result<Client> {
        let security = cli.client.security.load()?;
        let endpoints = client::parse_endpoints(&cli.client.endpoints, &security)?;
        if cli.client.timeout.is_zero() {
            bail!("--timeout must be more than 0");
        }
        let builder = Client::builder().endpoints(endpoints).timeout(cli.client.timeout);
        Ok(security.apply(builder).build()?)
    };
    match cli.command {
        Command::Serve(args) => {
            serve::init_logging(args.log.log.as_deref(), args.log.log_format, "info")?;
            let join = match &args.join {
                Some(url) => {
                    let security = cli.client.security.load()?;
                    let endpoints = client::parse_endpoints(url, &security)?;
                    let builder = Client::builder().endpoints(endpoints).timeout(cli.client.timeout);
                    Some(security.apply(builder).build()?)
                }
                None => None,
            };
            let options = serve::ServeOptions {
                config: args.config,
                id: args.id,
                data_dir: args.data_dir,
                raft: args.raft,
                limits: args.limits,
                fault_injection: args.fault_injection,
                own: join::OwnAddress {
                    raft: args.raft_address,
                    raft_listen: args.raft_listen,
                    http: args.http_address,
                    redis: args.redis_address,
                },
                join,
                bootstrap: args.bootstrap,
            };
            serve::run(options)?;
        }
        Command::Demo(args) => {
            serve::init_logging(args.log.log.as_deref(), args.log.log_format, DEMO_LOG)?;
            let nodes = usize::from(args.nodes);
            let options = demo::DemoOptions {
                nodes,
                secure: args.secure,
                slow: args.slow,
                config: args.config,
                data_dir: args.data_dir,
                raft: args.raft,
            };
            demo::run(options)?;
        }
        Command::Get { key, stale, raw } => {
            if !commands::get(&client()?, &key, stale, raw, format)? {
                eprintln!("not found: {key}");
                return Ok(ExitCode::from(EXIT_NOT_FOUND));
            }
        }
        Command::Put { key, value, flags } => commands::put(&client()?, &key, read_value(value)?, flags, format)?,
        Command::Delete { key, recurse } => commands::delete(&client()?, &key, recurse, format)?,
        Command::List { prefix, keys } => commands::list(&client()?, &prefix, keys, format)?,
        Command::Cas { key, value, index } => commands::cas(&client()?, &key, read_value(value)?, index, format)?,
        Command::Status { watch: true, interval } => status::watch(&client()?, interval)?,
        Command::Status { watch: false, .. } => status::show(&client()?, format)?,
        Command::Log { from, limit } => commands::log(&client()?, from, limit, format)?,
        Command::Members(members) => {
            let client = client()?;
            match members {
                MembersCommand::List => commands::members_list(&client, format)?,
                MembersCommand::Add { id, address, learner } => {
                    commands::members_add(&client, &address.new_member(&id, learner), format)?
                }
                MembersCommand::Replace { old, new, address } => {
                    commands::members_replace(&client, &old, &address.new_member(&new, false), format)?
                }
                MembersCommand::Remove { id } => commands::members_remove(&client, &id, format)?,
                MembersCommand::Promote { id } => commands::members_promote(&client, &id, format)?,
            }
        }
        Command::TransferLeader { id } => commands::transfer_leader(&client()?, id.as_deref(), format)?,
        Command::Shell => shell::run(&client()?)?,
        Command::Watch { prefix, from, prev } => {
            let style = if cli.client.json { watch::Style::Json } else { watch::Style::Human };
            return watch::run(&client()?, &prefix, from, prev, style);
        }
        Command::Lock(args) => {
            if args.ttl < Duration::from_millis(3) {
                bail!("--ttl must be at least 3ms (the session is renewed every TTL/3)");
            }
            let options = lock::LockOptions {
                value: args.value.unwrap_or_else(|| format!("skiff lock, pid {}", std::process::id())).into_bytes(),
                name: args.name,
                command: args.command,
                ttl: args.ttl,
                lock_delay: args.lock_delay,
                wait: args.wait,
                grace: args.grace,
            };
            return lock::run(client()?, options);
        }
        Command::Check(args) => return check::run(args.into_options(&cli.client)?),
        Command::Bench(args) => return bench::run(args.into_options(&cli.client)?),
        Command::Certs(args) => certs(args)?,
        Command::Snapshot(SnapshotCommand::Save { file, addr }) => {
            let endpoints = match addr {
                Some(addr) => vec![addr],
                None => cli.client.endpoints.split(',').map(str::to_string).filter(|e| !e.trim().is_empty()).collect(),
            };
            let security = cli.client.security.load()?;
            let options = backup::SaveOptions { file, endpoints, timeout: cli.client.timeout, security };
            backup::save(options, format)?;
        }
        Command::Snapshot(SnapshotCommand::Inspect { file }) => backup::inspect(&file, format)?,
        Command::Snapshot(SnapshotCommand::Restore { file, node }) => {
            backup::restore(&file, &node.into_directory(), format)?;
        }
        Command::Recover(args) => backup::recover(&args.node.into_directory(), &args.members, format)?,
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10h").is_err());
        assert!(parse_duration("fast").is_err());
    }

    #[test]
    fn report_leaves_out_quoted_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "in use");
        let error = anyhow::Error::new(io).context("cannot listen: in use").context("cannot start n1");
        assert_eq!(report(&error), "cannot start n1: cannot listen: in use");
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn demo_cluster_extends_the_demo_pattern() {
        let five = demo::demo_cluster(5);
        assert_eq!(five.node.len(), 5);
        assert_eq!(five.node[4].raft, "127.0.0.1:7005");
        assert_eq!(five.node[4].http.as_deref(), Some("127.0.0.1:8005"));
        assert!(five.validate().is_ok());
        let three = demo::demo_cluster(3);
        assert_eq!(three, skiff::config::ClusterConfig::demo());
    }
}
