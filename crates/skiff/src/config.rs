//! The cluster file: which nodes make up the cluster, where they listen, and the Raft
//! settings they share. `docs/configuration.md` describes the format and every setting.
//!
//! One file describes the whole cluster and every node reads the same file; a node is
//! started with its own id (`skiff serve --config cluster.toml --id n1`). The file is TOML,
//! or JSON with the same schema. [`ClusterConfig::load`] parses and
//! [validates](ClusterConfig::validate) it, and reports every problem it finds, each naming
//! the node entry and field it concerns. Unknown fields are refused by name, so a typo
//! (`heartbeat_tick = 5`) is an error rather than a silently ignored setting.
//!
//! The `[raft]` section ([`RaftSection`]) is the consensus core's own
//! [`skiff_raft::Config`], flattened into the table beside the two settings of the
//! runtime: each setting has one name, one default and one check, the core's.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skiff_raft::{Membership, NodeId};

use crate::address::MemberAddress;
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
    #[serde(default, deserialize_with = "RaftSection::deserialize_naming_keys")]
    pub raft: RaftSection,
    /// `[tls]`: certificates for peers (mutual TLS) and clients (HTTPS, Redis over TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSection>,
    /// `[auth]`: the tokens clients must present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSection>,
}

/// `[cluster]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// The cluster's name, not empty. Peers exchange it when they connect and refuse a peer
    /// of another cluster, so two clusters on one network cannot mix.
    pub name: String,
    /// Lets a node serve on an address other than loopback without `[tls]` and `[auth]`.
    /// Off by default: such a node refuses to start, since anyone who can reach it could
    /// read and write everything, and pose as a peer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// `[tls]`. Paths relative to the cluster file are resolved against its directory by
/// [`ClusterConfig::load`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// A directory as `skiff certs` writes it: `ca.pem`, and `<id>.pem` with `<id>-key.pem`
    /// for each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// The cluster CA's certificate (PEM), instead of `dir/ca.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Clients of the HTTP API and the Redis port must also present a certificate signed by
    /// the cluster CA. Peers always must.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verify_clients: bool,
}

/// `[auth]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// The tokens file (TOML, `[[token]]` tables; see `docs/security.md`). A relative path is
    /// resolved against the cluster file's directory.
    pub tokens: PathBuf,
}

/// The certificate files of one node: what [`TlsSection`] and the node's entry say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The cluster CA's certificate.
    pub ca: PathBuf,
    /// The node's certificate (chain), PEM.
    pub cert: PathBuf,
    /// The node's private key, PEM.
    pub key: PathBuf,
    /// Whether clients must present a certificate too.
    pub verify_clients: bool,
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
    /// This node's certificate (PEM), instead of `<tls.dir>/<id>.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// This node's private key (PEM), instead of `<tls.dir>/<id>-key.pem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `[raft]`: the settings every node shares. Every key is optional in the file. The
/// runtime's two come first; the rest are the consensus core's [`skiff_raft::Config`]
/// (`heartbeat_interval_ticks`, `election_timeout_ticks`, ...), with the core's names,
/// defaults and validation. Durations are in ticks of [`tick_ms`](RaftSection::tick_ms).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Milliseconds per tick, at least 1.
    pub tick_ms: u64,
    /// Take a snapshot and compact the log after at least this many applied entries, at
    /// least 1, and once the log since the last snapshot is at least as large as that
    /// snapshot (so a large state is not rewritten every few thousand small writes).
    pub snapshot_after_entries: u64,
    /// The core's settings. Its per-node fields (`id`, `seed`, `applied`) are not in the
    /// file; [`RaftSection::core_config`] fills them in for one node.
    #[serde(flatten)]
    pub core: skiff_raft::Config,
}

/// The runtime's defaults; the core's are [`skiff_raft::Config::default`].
impl Default for RaftSection {
    fn default() -> RaftSection {
        RaftSection { tick_ms: 10, snapshot_after_entries: 10_000, core: skiff_raft::Config::default() }
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
    /// A flag or environment variable gives a `[raft]` setting a value it cannot take.
    #[error("cannot set raft.{key} to {value:?}: {reason}")]
    BadSetting { key: String, value: String, reason: String },
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
    /// A `[raft]` setting of the runtime that must be positive is 0.
    #[error("raft.{field} is 0; it must be at least 1 (default {default})")]
    ZeroSetting { field: &'static str, default: u64 },
    /// `[tls]` names neither `dir` nor `ca`.
    #[error("[tls] needs dir (as skiff certs writes it) or ca, with cert and key in each [[node]]")]
    TlsWithoutCa,
    /// `[tls]` has no `dir` and a node has no `cert` or `key`.
    #[error("node {node}: [tls] has no dir, so the node needs cert and key")]
    TlsWithoutCert { node: String },
    /// A setting the consensus core refuses ([`skiff_raft::Config::validate`]).
    #[error("raft.{0}")]
    Core(skiff_raft::InvalidConfig),
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

    /// The addresses this node advertises, as the membership records them.
    pub fn address(&self) -> MemberAddress {
        MemberAddress { raft: self.raft.clone(), http: self.http.clone(), redis: self.redis.clone() }
    }
}

impl ClusterConfig {
    /// Reads and validates a cluster file: JSON if the name ends in `.json` or the content
    /// starts with `{`, TOML otherwise. Errors name the file.
    pub fn load(path: impl AsRef<Path>) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::load_with_overrides(path, &[])
    }

    /// As [`load`](ClusterConfig::load), with `[raft]` settings (key, value) overridden
    /// before the config is validated, as flags and environment variables do; see
    /// [`RaftSection::set`].
    pub fn load_with_overrides(
        path: impl AsRef<Path>,
        overrides: &[(String, String)],
    ) -> Result<ClusterConfig, ConfigError> {
        let path = path.as_ref();
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let is_json = path.extension().is_some_and(|extension| extension.eq_ignore_ascii_case("json"))
            || text.trim_start().starts_with('{');
        let format = if is_json { Format::Json } else { Format::Toml };
        let mut config = ClusterConfig::parse(&text, format, Some(path.to_path_buf()), overrides)?;
        config.resolve_paths(path.parent().unwrap_or(Path::new("")));
        Ok(config)
    }

    /// Parses and validates a cluster file's TOML text.
    pub fn from_toml_str(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Format::Toml, None, &[])
    }

    /// Parses and validates a cluster file's JSON text (the same schema as TOML).
    pub fn from_json_str(text: &str) -> Result<ClusterConfig, ConfigError> {
        ClusterConfig::parse(text, Format::Json, None, &[])
    }

    fn parse(
        text: &str,
        format: Format,
        file: Option<PathBuf>,
        overrides: &[(String, String)],
    ) -> Result<ClusterConfig, ConfigError> {
        let parsed = match format {
            Format::Toml => toml::from_str::<ClusterConfig>(text).map_err(|error| error.to_string()),
            Format::Json => serde_json::from_str::<ClusterConfig>(text).map_err(|error| error.to_string()),
        };
        let mut config = parsed.map_err(|message| ConfigError::Parse {
            file: file.clone(),
            format,
            message: message.trim_end().to_string(),
        })?;
        for (key, value) in overrides {
            config.raft.set(key, value)?;
        }
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
        self.check_tls(&mut problems);
        if problems.is_empty() { Ok(()) } else { Err(ConfigError::Invalid { file: None, problems }) }
    }

    fn check_tls(&self, problems: &mut Vec<ConfigProblem>) {
        let Some(tls) = &self.tls else { return };
        if tls.dir.is_none() && tls.ca.is_none() {
            problems.push(ConfigProblem::TlsWithoutCa);
        }
        if tls.dir.is_none() {
            for node in self.node.iter().filter(|node| node.cert.is_none() || node.key.is_none()) {
                problems.push(ConfigProblem::TlsWithoutCert { node: node.id.clone() });
            }
        }
    }

    /// Makes the relative paths of `[tls]`, `[auth]` and the nodes' `cert`/`key` relative to
    /// `base` (the cluster file's directory), as [`load`](ClusterConfig::load) does.
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        if let Some(tls) = &mut self.tls {
            tls.dir.iter_mut().chain(tls.ca.iter_mut()).for_each(resolve);
        }
        if let Some(auth) = &mut self.auth {
            resolve(&mut auth.tokens);
        }
        for node in &mut self.node {
            node.cert.iter_mut().chain(node.key.iter_mut()).for_each(resolve);
        }
    }

    /// The certificate files of node `id`, if the cluster has `[tls]`.
    pub fn tls_files(&self, id: NodeId) -> Option<TlsFiles> {
        let tls = self.tls.as_ref()?;
        let node = self.node(id).ok();
        let in_dir = |name: String| tls.dir.as_ref().map(|dir| dir.join(name));
        Some(TlsFiles {
            ca: tls.ca.clone().or_else(|| in_dir("ca.pem".into()))?,
            cert: node.and_then(|node| node.cert.clone()).or_else(|| in_dir(format!("{id}.pem")))?,
            key: node.and_then(|node| node.key.clone()).or_else(|| in_dir(format!("{id}-key.pem")))?,
            verify_clients: tls.verify_clients,
        })
    }

    /// Why node `id` must not start as configured: it listens beyond loopback (raft, http or
    /// redis) while the cluster has no `[tls]` or no `[auth]`, and the file does not say
    /// `insecure = true`. `None` when it may start.
    pub fn exposure(&self, id: NodeId) -> Option<String> {
        if self.cluster.insecure || (self.tls.is_some() && self.auth.is_some()) {
            return None;
        }
        let node = self.node(id).ok()?;
        let exposed: Vec<String> = [
            ("raft", Some(node.raft_listen_address())),
            ("http", node.http.as_deref()),
            ("redis", node.redis.as_deref()),
        ]
        .into_iter()
        .filter_map(|(field, address)| Some((field, address?)))
        .filter(|(_, address)| !parse_address(address).is_ok_and(|(host, _)| host.is_loopback()))
        .map(|(field, address)| format!("{field} {address}"))
        .collect();
        if exposed.is_empty() {
            return None;
        }
        let missing = match (&self.tls, &self.auth) {
            (None, None) => "[tls] and [auth]",
            (None, Some(_)) => "[tls]",
            _ => "[auth]",
        };
        Some(format!(
            "node {id} listens beyond loopback ({}) but the cluster file has no {missing}, so anyone who can \
             reach it could read and write every key and pose as a peer. Make certificates with \
             `skiff certs --dir certs --nodes {}` and add [tls] dir = \"certs\" and [auth] tokens = \"tokens.toml\" \
             (docs/security.md), or put insecure = true in [cluster] if the network is yours alone",
            exposed.join(", "),
            self.node.iter().map(|node| node.id.as_str()).collect::<Vec<_>>().join(","),
        ))
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

    /// The initial membership: every listed node that does not `join` later is a voter,
    /// with the addresses its entry gives.
    pub fn voters(&self) -> Membership {
        let initial: Vec<(NodeId, &NodeConfig)> =
            self.node.iter().filter(|node| !node.join).filter_map(|node| Some((node.node_id().ok()?, node))).collect();
        let mut membership = Membership::with_voters(initial.iter().map(|(id, _)| *id));
        membership.addresses = initial.iter().map(|(id, node)| (*id, node.address().to_string())).collect();
        membership
    }

    /// The advertised raft addresses of every node other than `id`, by id.
    pub fn peers_of(&self, id: NodeId) -> BTreeMap<NodeId, String> {
        self.node
            .iter()
            .filter_map(|node| Some((node.node_id().ok()?, node.raft.clone())))
            .filter(|(peer, _)| *peer != id)
            .collect()
    }

    /// The core's config for node `id` ([`RaftSection::core_config`]).
    pub fn raft_config(&self, id: NodeId) -> skiff_raft::Config {
        self.raft.core_config(id)
    }

    /// How long one tick lasts: `raft.tick_ms`.
    pub fn tick_interval(&self) -> Duration {
        self.raft.tick()
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
                cert: None,
                key: None,
            })
            .collect();
        ClusterConfig {
            cluster: ClusterSection { name: "demo".to_string(), insecure: false },
            node,
            raft: RaftSection::default(),
            tls: None,
            auth: None,
        }
    }

    /// The config as a TOML cluster file, which [`ClusterConfig::from_toml_str`] reads back.
    pub fn to_toml_string(&self) -> Result<String, ConfigError> {
        toml::to_string(self).map_err(|error| ConfigError::Serialize(error.to_string()))
    }
}

impl RaftSection {
    /// The core's config for node `id`: these settings, with the election PRNG seeded from
    /// the id so nodes time out at different moments.
    pub fn core_config(&self, id: NodeId) -> skiff_raft::Config {
        skiff_raft::Config { id, seed: id.0, ..self.core.clone() }
    }

    /// How long one tick lasts: `tick_ms`.
    pub fn tick(&self) -> Duration {
        Duration::from_millis(self.tick_ms)
    }

    /// Deserializes the section through a table, so that an error names the key at fault:
    /// through `flatten`, serde reports a wrong type against the whole section.
    fn deserialize_naming_keys<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<RaftSection, D::Error> {
        let table = toml::Table::deserialize(deserializer)?;
        table.clone().try_into().map_err(|error: toml::de::Error| {
            // The first key that is refused on its own is the one at fault.
            let alone = |key: &String, value: &toml::Value| {
                toml::Table::from_iter([(key.clone(), value.clone())]).try_into::<RaftSection>().err()
            };
            let Some((key, key_error)) = table.iter().find_map(|(key, value)| Some((key, alone(key, value)?))) else {
                return serde::de::Error::custom(error.message());
            };
            if !key_error.message().starts_with("unknown field") {
                return serde::de::Error::custom(format!("raft.{key}: {}", key_error.message()));
            }
            let keys = RaftSection::keys_and_defaults();
            let known: Vec<&str> = keys.iter().map(|(known, _)| known.as_str()).collect();
            serde::de::Error::custom(format!("unknown field `{key}` in [raft]; the settings are {}", known.join(", ")))
        })
    }

    /// Every `[raft]` key (alphabetically) with its default value, written as in the file:
    /// what flags and environment variables can set.
    pub fn keys_and_defaults() -> Vec<(String, String)> {
        match toml::Table::try_from(RaftSection::default()) {
            Ok(table) => table.into_iter().map(|(key, value)| (key, value.to_string())).collect(),
            Err(error) => unreachable!("the [raft] defaults are plain TOML: {error}"),
        }
    }

    /// Sets the setting `key` (one of [`keys_and_defaults`](RaftSection::keys_and_defaults))
    /// to `value`, written as in the file (`50`, `true`): how flags and environment variables
    /// override the file. [`ClusterConfig::validate`] checks the result.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let refused =
            |reason: String| ConfigError::BadSetting { key: key.to_string(), value: value.to_string(), reason };
        let keys = RaftSection::keys_and_defaults();
        if !keys.iter().any(|(known, _)| known == key) {
            let known: Vec<&str> = keys.iter().map(|(known, _)| known.as_str()).collect();
            return Err(refused(format!("there is no such setting; the [raft] settings are {}", known.join(", "))));
        }
        let parsed: toml::Value = value.parse().map_err(|error: toml::de::Error| refused(error.to_string()))?;
        let mut table = toml::Table::try_from(&*self).map_err(|error| refused(error.to_string()))?;
        table.insert(key.to_string(), parsed);
        *self = table.try_into().map_err(|error: toml::de::Error| refused(error.to_string()))?;
        Ok(())
    }

    fn check(&self, problems: &mut Vec<ConfigProblem>) {
        let defaults = RaftSection::default();
        for (field, value, default) in [
            ("tick_ms", self.tick_ms, defaults.tick_ms),
            ("snapshot_after_entries", self.snapshot_after_entries, defaults.snapshot_after_entries),
        ] {
            if value == 0 {
                problems.push(ConfigProblem::ZeroSetting { field, default });
            }
        }
        if let Err(error) = self.core.validate() {
            problems.push(ConfigProblem::Core(error));
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

    /// Loopback: `127.0.0.0/8`, `::1` or `localhost`.
    fn is_loopback(&self) -> bool {
        match self {
            Host::Ip(ip) => ip.is_loopback(),
            Host::Name(name) => name == "localhost",
        }
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
