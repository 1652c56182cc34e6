//! The cluster file: which nodes make up the cluster, where they listen, and
//! the Raft settings they share.
//!
//! One file describes the whole cluster and every node reads the same file; a node is
//! started with its own id (`skiff serve --config cluster.toml --id n1`). The file is TOML,
//! or JSON with the same schema when its name ends in `.json` (or its content starts with
//! `{`). [`ClusterConfig::load`] parses and [validates](ClusterConfig::validate) it, and
//! reports every problem it finds, each naming the node entry and field it concerns.
//! Unknown fields are refused by name, so a typo (`heartbeat_tick = 5`) is an error rather
//! than a silently ignored setting.
//!
//! ```toml
//! [cluster]
//! name = "demo"                   # required, not empty
//!
//! [[node]]                        # one table per node, at least one
//! id = "n1"                       # required: "n<number>" or "<number>"
//! raft = "10.0.0.1:7001"          # required: the address peers connect to
//! raft_listen = "0.0.0.0:7001"    # optional: the address to bind (default: raft)
//! http = "10.0.0.1:8001"          # optional: the client API
//! redis = "10.0.0.1:6001"         # optional: the Redis-protocol API
//!
//! [[node]]
//! id = "n2"
//! raft = "10.0.0.2:7001"
//! http = "10.0.0.2:8001"
//!
//! [[node]]
//! id = "n3"
//! raft = "10.0.0.3:7001"
//!
//! [raft]                          # optional, and so is each field (defaults shown)
//! tick_ms = 10                    # how long one tick of the consensus core lasts
//! heartbeat_ticks = 5             # a leader sends heartbeats this often
//! election_ticks = 30             # timeout drawn from [election_ticks, 2 * election_ticks)
//! snapshot_after_entries = 10000  # snapshot after at least this many entries (and log bytes ≥ the last snapshot's)
//! pre_vote = true                 # pre-vote before campaigning (thesis §9.6)
//! check_quorum = true             # a leader cut off from a majority steps down (thesis §6.2)
//! lease_reads = false             # reads from the leader's lease (thesis §6.4.1); needs check_quorum
//! max_inflight = 64               # AppendEntries in flight to one follower
//! max_inflight_bytes = 8388608    # bytes of entries in flight to one follower (8 MiB)
//! max_append_bytes = 1048576      # bytes of entries in one AppendEntries (1 MiB)
//! max_uncommitted_bytes = 67108864 # a leader refuses proposals beyond this backlog (64 MiB)
//! ```
//!
//! **Node ids.** An id is written `"n<number>"` or `"<number>"` and maps to the core's
//! [`NodeId`]: `"n1"` and `"1"` are both `NodeId(1)`, which is printed `n1`. Two entries
//! with the same number are the same node and are refused. Ids are never reused: give a
//! replacement node a new id.
//!
//! **Addresses** are `host:port`, where host is an IPv4 address, an IPv6 address in
//! brackets (`[::1]:7001`) or a host name (`node1.example.com:7001`). They are checked for
//! syntax only; names are resolved when a node connects or binds. Port 0 is refused: peers
//! must know the real port. `raft` is what the other nodes dial, so it cannot be a wildcard
//! such as `0.0.0.0`; to bind every interface, put the wildcard in `raft_listen` and a
//! reachable address in `raft`. No address may appear twice in the file (wildcards aside,
//! which stand for the interfaces of each node's own machine), and one node's listeners
//! must not share a port with a wildcard listener of the same node.
//!
//! **Durations** are in ticks of `tick_ms` milliseconds, as the core counts them:
//! with the defaults a heartbeat every 50 ms and an election timeout of 300-600 ms.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff_raft::{Membership, NodeId};
use thiserror::Error;

/// The whole cluster file. See the [module docs](self) for the format.
///
/// Invariant after [`ClusterConfig::validate`] (which [`load`](ClusterConfig::load),
/// [`from_toml_str`](ClusterConfig::from_toml_str) and
/// [`from_json_str`](ClusterConfig::from_json_str) run): every node id parses, ids and
/// addresses are unique, and the Raft settings are consistent. The accessors assume it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `[cluster]`: the cluster's identity.
    pub cluster: ClusterSection,
    /// `[[node]]`: the members, one table each, in file order.
    #[serde(default)]
    pub node: Vec<NodeConfig>,
    /// `[raft]`: settings shared by every node.
    #[serde(default)]
    pub raft: RaftSection,
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The cluster's name, not empty. Peers exchange it when they connect and refuse a peer
    /// of another cluster, so two clusters on one network cannot mix.
    pub name: String,
}

/// One `[[node]]` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// `"n<number>"` or `"<number>"`; see [`parse_node_id`] and [`NodeConfig::node_id`].
    pub id: String,
    /// The peer address other nodes connect to (`host:port`, not a wildcard).
    pub raft: String,
    /// The address the peer listener binds; `None` means [`raft`](NodeConfig::raft).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raft_listen: Option<String>,
    /// The client API address, if this node serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// The Redis-protocol API address, if this node serves one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
    /// `true` for a node that joins a running cluster: it is not in the initial membership,
    /// and becomes a member when an operator adds it (`skiff members add`). Every node
    /// still needs its entry to reach it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
}

/// `[raft]`: the consensus settings. Every field is optional in the file. Durations are
/// in ticks of [`tick_ms`](RaftSection::tick_ms); see [`skiff_raft::Config`] for what the
/// core does with each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Milliseconds per tick, at least 1. Default 10.
    pub tick_ms: u64,
    /// A leader sends heartbeats every this many ticks, at least 1. Default 5.
    pub heartbeat_ticks: u32,
    /// The election timeout is drawn from `[election_ticks, 2 * election_ticks)` for each
    /// wait (Raft §5.2). Must exceed `heartbeat_ticks`. Default 30.
    pub election_ticks: u32,
    /// Take a snapshot and compact the log after at least this many applied entries, at
    /// least 1, and once the log since the last snapshot is at least as large as that
    /// snapshot (so a large state is not rewritten every few thousand small writes).
    /// Default 10000.
    pub snapshot_after_entries: u64,
    /// Pre-vote before campaigning (thesis §9.6). Default on.
    pub pre_vote: bool,
    /// A leader cut off from a majority steps down; followers that hear a leader ignore
    /// vote requests (thesis §6.2, §4.2.3). Default on.
    pub check_quorum: bool,
    /// Serve linearizable reads from the leader's lease instead of a heartbeat round
    /// (thesis §6.4.1). Needs `check_quorum`. Default off.
    pub lease_reads: bool,
    /// At most this many `AppendEntries` in flight to one follower, at least 1. Default 64.
    pub max_inflight: usize,
    /// At most this many bytes of entries in flight to one follower, at least 1.
    /// Default 8 MiB.
    pub max_inflight_bytes: u64,
    /// At most this many bytes of entries in one `AppendEntries`, at least 1. Default 1 MiB.
    pub max_append_bytes: u64,
    /// A leader refuses proposals while it holds this many bytes of uncommitted entries,
    /// at least 1. Default 64 MiB.
    pub max_uncommitted_bytes: u64,
}

impl Default for RaftSection {
    fn default() -> RaftSection {
        RaftSection {
            tick_ms: 10,
            heartbeat_ticks: 5,
            election_ticks: 30,
            snapshot_after_entries: 10_000,
            pre_vote: true,
            check_quorum: true,
            lease_reads: false,
            max_inflight: 64,
            max_inflight_bytes: 8 << 20,
            max_append_bytes: 1 << 20,
            max_uncommitted_bytes: 64 << 20,
        }
    }
}

/// The syntax of a cluster file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Toml,
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Toml => "TOML",
            Format::Json => "JSON",
        })
    }
}

/// What went wrong with a cluster file, or with a lookup in a valid one.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read cluster file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The text is not valid TOML/JSON or does not fit the schema (a missing field, a
    /// wrong type, an unknown field: the message names it and says where).
    #[error("{}: invalid {format}: {message}", origin(.file))]
    Parse { file: Option<PathBuf>, format: Format, message: String },
    /// The file parsed but its content is wrong; every problem found is listed.
    #[error("{}", invalid_message(.file, .problems))]
    Invalid { file: Option<PathBuf>, problems: Vec<ConfigProblem> },
    /// A string given as a node id (by a flag, say) is not one.
    #[error("{id:?} is not a node id; write n<number> or <number> (up to 2^64-1), like \"n1\"")]
    BadNodeId { id: String },
    /// A node id that is not in the cluster.
    #[error("node {id} is not in cluster {cluster:?}, whose nodes are {}; check --id or the cluster file", id_list(.known))]
    UnknownNode { id: NodeId, cluster: String, known: Vec<NodeId> },
    /// The config could not be written as TOML (a number beyond TOML's 64-bit signed range).
    #[error("cannot write the cluster config as TOML: {0}")]
    Serialize(String),
}

/// One thing wrong in a parsed cluster file. Node entries are counted from 1 in file order.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ConfigProblem {
    /// `cluster.name` is empty or blank.
    #[error("cluster.name is empty; name the cluster (nodes refuse peers of a cluster with another name)")]
    EmptyClusterName,
    /// There is no `[[node]]` table.
    #[error("no nodes are listed; add a [[node]] table with id and raft for each node")]
    NoNodes,
    /// Every node has `join = true`: there is no initial member.
    #[error("every node has join = true; the nodes that start the cluster must not")]
    OnlyJoiners,
    /// Entry `entry` has an id that is not `n<number>` or `<number>`.
    #[error("node entry {entry}: id {id:?} is not a node id; write n<number> or <number> (up to 2^64-1), like \"n1\"")]
    BadNodeId { entry: usize, id: String },
    /// Two entries (number, id as written) have the same id.
    #[error("{}", duplicate_id_message(*.id, .first, .second))]
    DuplicateNodeId { id: NodeId, first: (usize, String), second: (usize, String) },
    /// An address that is not `host:port`; `reason` says why.
    #[error("node {node}: {field} address {address:?} {reason}")]
    BadAddress { node: String, field: &'static str, address: String, reason: String },
    /// A node advertises a wildcard (`0.0.0.0`, `[::]`) as its peer address.
    #[error(
        "node {node}: raft address {address} is a wildcard that peers cannot connect to; \
         put a reachable address in raft and the wildcard in raft_listen"
    )]
    WildcardRaftAddress { node: String, address: String },
    /// One address used twice (node, field), by two nodes or two fields of one node.
    #[error("{}", duplicate_address_message(.address, .first, .second))]
    DuplicateAddress { address: String, first: (String, &'static str), second: (String, &'static str) },
    /// Two listeners (field, address) of one node take the same port, one through a wildcard.
    #[error(
        "node {node}: {} {} and {} {} both listen on port {port} (a wildcard address takes the port \
         on every interface); give one of them another port",
        .first.0, .first.1, .second.0, .second.1
    )]
    PortConflict { node: String, port: u16, first: (&'static str, String), second: (&'static str, String) },
    /// A `[raft]` setting that must be positive is 0.
    #[error("raft.{field} is 0; it must be at least 1 (default {default})")]
    ZeroSetting { field: &'static str, default: u64 },
    /// `election_ticks` does not exceed `heartbeat_ticks`.
    #[error(
        "raft.election_ticks ({election_ticks}) must be greater than raft.heartbeat_ticks ({heartbeat_ticks}), \
         or followers start elections under a healthy leader; the defaults are 30 and 5"
    )]
    ElectionTicksTooLow { election_ticks: u32, heartbeat_ticks: u32 },
    /// `lease_reads` without `check_quorum`.
    #[error(
        "raft.lease_reads is on but raft.check_quorum is off; a lease is only safe when a leader steps down \
         after losing its majority (thesis §6.4.1): turn check_quorum on or lease_reads off"
    )]
    LeaseReadsNeedCheckQuorum,
    /// A setting the core refuses that the checks above do not cover.
    #[error("raft settings: {0}")]
    Core(String),
}

fn origin(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => format!("cluster file {}", path.display()),
        None => "cluster config".to_string(),
    }
}

fn invalid_message(file: &Option<PathBuf>, problems: &[ConfigProblem]) -> String {
    match problems {
        [problem] => format!("{}: {problem}", origin(file)),
        _ => {
            let mut message = format!("{} has {} problems:", origin(file), problems.len());
            for problem in problems {
                message.push_str(&format!("\n  - {problem}"));
            }
            message
        }
    }
}

fn id_list(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return "(none)".to_string();
    }
    ids.iter().map(NodeId::to_string).collect::<Vec<_>>().join(", ")
}

fn duplicate_id_message(id: NodeId, first: &(usize, String), second: &(usize, String)) -> String {
    let spellings =
        if first.1 == second.1 { String::new() } else { format!(", written {:?} and {:?}", first.1, second.1) };
    format!("node {id} is listed twice (entries {} and {}{spellings}); every node needs its own id", first.0, second.0)
}

fn duplicate_address_message(address: &str, first: &(String, &'static str), second: &(String, &'static str)) -> String {
    if first.0 == second.0 {
        format!(
            "node {}: address {address} is both its {} and its {} address; use two addresses",
            first.0, first.1, second.1
        )
    } else {
        format!(
            "address {address} is both node {}'s {} address and node {}'s {} address; every node needs its own",
            first.0, first.1, second.0, second.1
        )
    }
}

/// Parses a node id: `"n<number>"` or `"<number>"`, the number a `u64` written in decimal
/// digits. `"n1"` and `"1"` are both `NodeId(1)`.
pub fn parse_node_id(id: &str) -> Result<NodeId, ConfigError> {
    let digits = id.strip_prefix('n').unwrap_or(id);
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ConfigError::BadNodeId { id: id.to_string() });
    }
    digits.parse().map(NodeId).map_err(|_| ConfigError::BadNodeId { id: id.to_string() })
}

impl NodeConfig {
    /// This entry's id as the core's [`NodeId`].
    pub fn node_id(&self) -> Result<NodeId, ConfigError> {
        parse_node_id(&self.id)
    }

    /// The address the peer listener binds: `raft_listen`, or `raft` when it is not set.
    pub fn raft_listen_address(&self) -> &str {
        self.raft_listen.as_deref().unwrap_or(&self.raft)
    }
}

impl ClusterConfig {
    /// Reads and validates a cluster file: JSON if the name ends in `.json` or the content
    /// starts with `{`, TOML otherwise. Errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<ClusterConfig, ConfigError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let is_json = path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('{');
        let format = if is_json { Format::Json } else { Format::Toml };
        ClusterConfig::parse(&text, format, Some(path.to_path_buf()))
    }

    /// Parses and validates a cluster file's TOML text.
    pub fn from_toml_str(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Format::Toml, None)
    }

    /// Parses and validates a cluster file's JSON text (the same schema as TOML).
    pub fn from_json_str(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Format::Json, None)
    }

    fn parse(text: &str, format: Format, file: Option<PathBuf>) -> Result<ClusterConfig, ConfigError> {
        let parsed = match format {
            Format::Toml => toml::from_str::<ClusterConfig>(text).map_err(|error| error.to_string()),
            Format::Json => serde_json::from_str::<ClusterConfig>(text).map_err(|error| error.to_string()),
        };
        let config = parsed.map_err(|message| ConfigError::Parse {
            file: file.clone(),
            format,
            message: message.trim_end().to_string(),
        })?;
        match config.validate() {
            Err(ConfigError::Invalid { problems, .. }) => Err(ConfigError::Invalid { file, problems }),
            other => other.map(|()| config),
        }
    }

    /// Checks the whole config and reports every problem found ([`ConfigError::Invalid`]).
    /// Run it again after changing a loaded config (from flags, say).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.cluster.name.trim().is_empty() {
            problems.push(ConfigProblem::EmptyClusterName);
        }
        if self.node.is_empty() {
            problems.push(ConfigProblem::NoNodes);
        } else if self.node.iter().all(|node| node.join) {
            problems.push(ConfigProblem::OnlyJoiners);
        }
        self.check_ids(&mut problems);
        self.check_addresses(&mut problems);
        self.raft.check(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid { file: None, problems }) }
    }

    fn check_ids(&self, problems: &mut Vec<ConfigProblem>) {
        let mut seen: BTreeMap<NodeId, (usize, String)> = BTreeMap::new();
        for (position, node) in self.node.iter().enumerate() {
            let entry = position + 1;
            let Ok(id) = node.node_id() else {
                problems.push(ConfigProblem::BadNodeId { entry, id: node.id.clone() });
                continue;
            };
            match seen.get(&id) {
                Some(first) => problems.push(ConfigProblem::DuplicateNodeId {
                    id,
                    first: first.clone(),
                    second: (entry, node.id.clone()),
                }),
                None => {
                    seen.insert(id, (entry, node.id.clone()));
                }
            }
        }
    }

    fn check_addresses(&self, problems: &mut Vec<ConfigProblem>) {
        // The first use of each address in the file, to find the ones used twice.
        let mut first_use: BTreeMap<(Host, u16), (String, &'static str)> = BTreeMap::new();
        for (position, node) in self.node.iter().enumerate() {
            let label = node.node_id().map_or_else(|_| format!("entry {}", position + 1), |id| id.to_string());
            let raft = parse_field(problems, &label, "raft", &node.raft);
            if let Some((host, _)) = &raft
                && host.is_wildcard()
            {
                problems.push(ConfigProblem::WildcardRaftAddress { node: label.clone(), address: node.raft.clone() });
            }
            // The addresses this node binds, in field order.
            let mut listeners: Vec<(&'static str, &str, (Host, u16))> = Vec::new();
            match &node.raft_listen {
                None => listeners.extend(raft.map(|raft| ("raft", node.raft.as_str(), raft))),
                Some(listen_text) => {
                    let listen = parse_field(problems, &label, "raft_listen", listen_text);
                    if let Some(raft) = raft
                        && listen.as_ref() != Some(&raft)
                    {
                        // Only advertised: no bind, but no other node or field may use it.
                        record_use(&mut first_use, problems, raft, &node.raft, &label, "raft");
                    }
                    listeners.extend(listen.map(|listen| ("raft_listen", listen_text.as_str(), listen)));
                }
            }
            for (field, address) in [("http", &node.http), ("redis", &node.redis)] {
                if let Some(address) = address
                    && let Some(parsed) = parse_field(problems, &label, field, address)
                {
                    listeners.push((field, address.as_str(), parsed));
                }
            }
            for (i, (field, address, parsed)) in listeners.iter().enumerate() {
                let shares_port = |(_, _, other): &&(&'static str, &str, (Host, u16))| {
                    other.1 == parsed.1 && (other.0.is_wildcard() || parsed.0.is_wildcard())
                };
                if let Some((other_field, other_address, _)) = listeners[..i].iter().find(shares_port) {
                    problems.push(ConfigProblem::PortConflict {
                        node: label.clone(),
                        port: parsed.1,
                        first: (other_field, other_address.to_string()),
                        second: (field, address.to_string()),
                    });
                }
                record_use(&mut first_use, problems, parsed.clone(), address, &label, field);
            }
        }
    }

    /// The node with id `id`, or [`ConfigError::UnknownNode`] listing the cluster's nodes.
    pub fn node(&self, id: NodeId) -> Result<&NodeConfig, ConfigError> {
        self.node.iter().find(|node| node.node_id().ok() == Some(id)).ok_or_else(|| ConfigError::UnknownNode {
            id,
            cluster: self.cluster.name.clone(),
            known: self.node_ids().collect(),
        })
    }

    /// The ids of the listed nodes, in file order (entries whose id does not parse are
    /// skipped; a validated config has none).
    pub fn node_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.node.iter().filter_map(|node| node.node_id().ok())
    }

    /// The initial membership: every listed node that does not `join` later is a voter.
    pub fn voters(&self) -> Membership {
        Membership::with_voters(self.node.iter().filter(|node| !node.join).filter_map(|node| node.node_id().ok()))
    }

    /// The advertised raft addresses of every node other than `id`, by id.
    pub fn peers_of(&self, id: NodeId) -> BTreeMap<NodeId, String> {
        self.node
            .iter()
            .filter_map(|node| Some((node.node_id().ok()?, node.raft.clone())))
            .filter(|(peer, _)| *peer != id)
            .collect()
    }

    /// The core's settings for node `id`: the `[raft]` section mapped onto
    /// [`skiff_raft::Config`], with the election PRNG seeded from the id so nodes time out
    /// at different moments. Other fields keep the core's defaults.
    pub fn raft_config(&self, id: NodeId) -> skiff_raft::Config {
        self.raft.core_config(id)
    }

    /// How long one tick lasts: `raft.tick_ms`.
    pub fn tick_interval(&self) -> Duration {
        Duration::from_millis(self.raft.tick_ms)
    }

    /// The demo cluster that `skiff demo` runs: cluster `"demo"`, nodes
    /// n1..n3 with raft on 127.0.0.1:7001-7003, http on 127.0.0.1:8001-8003 and redis on
    /// 127.0.0.1:6001-6003, default Raft settings.
    pub fn demo() -> ClusterConfig {
        let node = (1..=3)
            .map(|i| NodeConfig {
                id: format!("n{i}"),
                raft: format!("127.0.0.1:700{i}"),
                raft_listen: None,
                http: Some(format!("127.0.0.1:800{i}")),
                redis: Some(format!("127.0.0.1:600{i}")),
                join: false,
            })
            .collect();
        ClusterConfig { cluster: ClusterSection { name: "demo".to_string() }, node, raft: RaftSection::default() }
    }

    /// The config as a TOML cluster file, which [`ClusterConfig::from_toml_str`] reads back.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|error| ConfigError::Serialize(error.to_string()))
    }
}

impl RaftSection {
    /// These settings as the core's [`skiff_raft::Config`] for node `id`.
    fn core_config(&self, id: NodeId) -> skiff_raft::Config {
        skiff_raft::Config {
            heartbeat_interval_ticks: self.heartbeat_ticks,
            election_timeout_ticks: self.election_ticks,
            pre_vote: self.pre_vote,
            check_quorum: self.check_quorum,
            lease_reads: self.lease_reads,
            max_inflight: self.max_inflight,
            max_inflight_bytes: self.max_inflight_bytes,
            max_append_bytes: self.max_append_bytes,
            max_uncommitted_bytes: self.max_uncommitted_bytes,
            ..skiff_raft::Config::new(id)
        }
    }

    fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let defaults = RaftSection::default();
        let counts: [(&'static str, u64, u64); 7] = [
            ("tick_ms", self.tick_ms, defaults.tick_ms),
            ("heartbeat_ticks", self.heartbeat_ticks.into(), defaults.heartbeat_ticks.into()),
            ("snapshot_after_entries", self.snapshot_after_entries, defaults.snapshot_after_entries),
            ("max_inflight", self.max_inflight as u64, defaults.max_inflight as u64),
            ("max_inflight_bytes", self.max_inflight_bytes, defaults.max_inflight_bytes),
            ("max_append_bytes", self.max_append_bytes, defaults.max_append_bytes),
            ("max_uncommitted_bytes", self.max_uncommitted_bytes, defaults.max_uncommitted_bytes),
        ];
        let before = problems.len();
        for (field, value, default) in counts {
            if value == 0 {
                problems.push(ConfigProblem::ZeroSetting { field, default });
            }
        }
        if self.election_ticks <= self.heartbeat_ticks {
            problems.push(ConfigProblem::ElectionTicksTooLow {
                election_ticks: self.election_ticks,
                heartbeat_ticks: self.heartbeat_ticks,
            });
        }
        if self.lease_reads && !self.check_quorum {
            problems.push(ConfigProblem::LeaseReadsNeedCheckQuorum);
        }
        if problems.len() == before {
            // Whatever else the core refuses, in its own words.
            if let Err(message) = self.core_config(NodeId(1)).validate() {
                problems.push(ConfigProblem::Core(message));
            }
        }
    }
}

/// The host part of an address, compared the way a connection would see it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Host {
    Ip(IpAddr),
    /// A host name, lowercased.
    Name(String),
}

impl Host {
    fn is_wildcard(&self) -> bool {
        matches!(self, Host::Ip(ip) if ip.is_unspecified())
    }
}

/// Parses `host:port` without resolving names; the error completes "address "x" ...".
fn parse_address(address: &str) -> Result<(Host, u16), String> {
    const EXAMPLE: &str = "write host:port, like 127.0.0.1:7001";
    if address.is_empty() {
        return Err(format!("is empty; {EXAMPLE}"));
    }
    if address.chars().any(char::is_whitespace) {
        return Err(format!("contains whitespace; {EXAMPLE}"));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err("has a '[' without a matching ']'; write an IPv6 address like [::1]:7001".to_string());
        };
        let ip: Ipv6Addr =
            inside.parse().map_err(|_| format!("has {inside:?} in brackets, which is not an IPv6 address"))?;
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("has no port after the IPv6 address; {EXAMPLE}"));
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let Some((host, port)) = address.rsplit_once(':') else {
            return Err(format!("has no port; {EXAMPLE}"));
        };
        if host.contains(':') {
            return Err("looks like an IPv6 address without brackets; write it like [::1]:7001".to_string());
        }
        (parse_host(host)?, port)
    };
    Ok((host, parse_port(port)?))
}

fn parse_host(host: &str) -> Result<Host, String> {
    if host.is_empty() {
        return Err("has no host before the port; write host:port, like 127.0.0.1:7001".to_string());
    }
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let labels: Vec<&str> = host.split('.').collect();
    let valid_label = |label: &&str| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let numeric_top = labels.last().is_some_and(|label| label.bytes().all(|byte| byte.is_ascii_digit()));
    if host.len() > 253 || !labels.iter().all(valid_label) || numeric_top {
        return Err(format!(
            "has host {host:?}, which is neither an IPv4 address nor a host name \
             (letters, digits and '-' in dot-separated labels)"
        ));
    }
    Ok(Host::Name(host.to_ascii_lowercase()))
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("has no port after ':'; write host:port, like 127.0.0.1:7001".to_string());
    }
    let range_error = || format!("has port {port:?}, which is not a number from 1 to 65535");
    if !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(range_error());
    }
    match port.parse::<u16>() {
        Ok(0) => Err("has port 0; give the real port, which peers and clients must know".to_string()),
        Ok(port) => Ok(port),
        Err(_) => Err(range_error()),
    }
}

/// Parses the address in `node`'s `field`, or notes why it does not parse.
fn parse_field(
    problems: &mut Vec<ConfigProblem>,
    node: &str,
    field: &'static str,
    address: &str,
) -> Option<(Host, u16)> {
    parse_address(address)
        .map_err(|reason| {
            let (node, address) = (node.to_string(), address.to_string());
            problems.push(ConfigProblem::BadAddress { node, field, address, reason });
        })
        .ok()
}

/// Notes the use of `address` by `node`'s `field`, or the problem if it was used before.
fn record_use(
    first_use: &mut BTreeMap<(Host, u16), (String, &'static str)>,
    problems: &mut Vec<ConfigProblem>,
    parsed: (Host, u16),
    address: &str,
    node: &str,
    field: &'static str,
) {
    if parsed.0.is_wildcard() {
        return; // Each node's own machine; two nodes on two machines may both bind it.
    }
    match first_use.get(&parsed) {
        Some(first) => problems.push(ConfigProblem::DuplicateAddress {
            address: address.to_string(),
            first: first.clone(),
            second: (node.to_string(), field),
        }),
        None => {
            first_use.insert(parsed, (node.to_string(), field));
        }
    }
}
