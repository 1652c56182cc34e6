//! Cluster files for tests: n1..nN on loopback, every address on a port from [`ports`], so
//! clusters of parallel tests (and a `skiff demo` left running) never meet.

use std::fmt::{Display, Write as _};
use std::path::{Path, PathBuf};

use skiff::NodeId;
use skiff::config::ClusterConfig;

use crate::ports;

/// The addresses of one node of a [`ClusterFile`].
#[derive(Clone, Debug)]
pub struct NodeAddresses {
    pub id: NodeId,
    pub raft: String,
    pub http: Option<String>,
    pub redis: Option<String>,
    /// Listed with `join = true`: not an initial voter, added later.
    pub join: bool,
}

/// A cluster file of nodes n1..nN with free loopback ports.
#[derive(Clone, Debug)]
pub struct ClusterFile {
    pub name: String,
    pub nodes: Vec<NodeAddresses>,
    /// The `[raft]` section, as `key = value` lines.
    raft: Vec<String>,
    /// `[auth]`: the tokens file, and a management token's secret the test clients send.
    pub auth: Option<TestAuth>,
    /// `[tls] dir`: where the cluster's certificates are, if it has TLS.
    pub tls_dir: Option<PathBuf>,
}

/// The `[auth]` of a test cluster file.
#[derive(Clone, Debug)]
pub struct TestAuth {
    /// The tokens file (the test writes it, and keeps it while the cluster runs).
    pub tokens: PathBuf,
    /// A management token's secret in it.
    pub admin_secret: String,
}

/// What a [`ClusterFile`] will hold; [`ClusterFileBuilder::build`] picks the ports.
#[derive(Debug)]
pub struct ClusterFileBuilder {
    name: String,
    members: u64,
    joiners: u64,
    http: bool,
    redis: bool,
    raft: Vec<String>,
    auth: Option<TestAuth>,
    tls_dir: Option<PathBuf>,
}

impl ClusterFile {
    /// `members` nodes (n1..), each with a raft address; add more with the builder.
    pub fn builder(name: &str, members: u64) -> ClusterFileBuilder {
        ClusterFileBuilder {
            name: name.to_string(),
            members,
            joiners: 0,
            http: false,
            redis: false,
            raft: Vec::new(),
            auth: None,
            tls_dir: None,
        }
    }

    /// The file's text (TOML).
    pub fn to_toml(&self) -> String {
        let mut text = format!("[cluster]\nname = \"{}\"\n", self.name);
        if let Some(auth) = &self.auth {
            let _ = writeln!(text, "\n[auth]\ntokens = {:?}", auth.tokens.display().to_string());
        }
        if !self.raft.is_empty() {
            text.push_str("\n[raft]\n");
            for line in &self.raft {
                let _ = writeln!(text, "{line}");
            }
        }
        if let Some(dir) = &self.tls_dir {
            // A TOML literal string: no escapes in a path.
            let _ = write!(text, "\n[tls]\ndir = '{}'\n", dir.display());
        }
        for node in &self.nodes {
            let _ = write!(text, "\n[[node]]\nid = \"{}\"\nraft = \"{}\"\n", node.id, node.raft);
            if let Some(http) = &node.http {
                let _ = writeln!(text, "http = \"{http}\"");
            }
            if let Some(redis) = &node.redis {
                let _ = writeln!(text, "redis = \"{redis}\"");
            }
            if node.join {
                text.push_str("join = true\n");
            }
        }
        text
    }

    /// The file parsed and validated, as the servers read it.
    pub fn config(&self) -> ClusterConfig {
        let text = self.to_toml();
        ClusterConfig::from_toml_str(&text)
            .unwrap_or_else(|error| panic!("an invalid test cluster file ({error}):\n{text}"))
    }

    /// Writes the file as `cluster.toml` in `dir`; returns its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        let path = dir.join("cluster.toml");
        std::fs::write(&path, self.to_toml()).unwrap_or_else(|error| panic!("writing {}: {error}", path.display()));
        path
    }

    /// Node `id`'s addresses.
    pub fn node(&self, id: NodeId) -> &NodeAddresses {
        self.nodes.iter().find(|node| node.id == id).unwrap_or_else(|| panic!("{id} is not in the cluster file"))
    }

    /// Every node's http address, in id order (for `--endpoints`).
    pub fn http_addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.http.clone().expect("the cluster file has http addresses")).collect()
    }

    /// Every node's redis address, in id order.
    pub fn redis_addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.redis.clone().expect("the cluster file has redis addresses")).collect()
    }
}

impl ClusterFileBuilder {
    /// Adds `joiners` nodes after the members, listed with `join = true`.
    pub fn joiners(mut self, joiners: u64) -> Self {
        self.joiners = joiners;
        self
    }

    /// Gives every node an http (client API) address.
    pub fn http(mut self) -> Self {
        self.http = true;
        self
    }

    /// Gives every node a redis address.
    pub fn redis(mut self) -> Self {
        self.redis = true;
        self
    }

    /// Sets `key = value` in the `[raft]` section (`value` written as TOML: quote strings).
    pub fn raft(mut self, key: &str, value: impl Display) -> Self {
        self.raft.push(format!("{key} = {value}"));
        self
    }

    /// Adds `[auth]` with the tokens file at `tokens` (absolute), of which `admin_secret` is a
    /// management token: the testkit's clients send it.
    pub fn auth(mut self, tokens: &Path, admin_secret: &str) -> Self {
        self.auth = Some(TestAuth { tokens: tokens.to_path_buf(), admin_secret: admin_secret.to_string() });
        self
    }

    /// Gives the cluster TLS: `skiff certs` (CA, a certificate per node naming its id and
    /// loopback, a client certificate) into `dir`, and `[tls] dir` pointing there. `dir`
    /// should be absolute (the file may be parsed without a directory to resolve against).
    pub fn tls(mut self, dir: impl Into<PathBuf>) -> Self {
        self.tls_dir = Some(dir.into());
        self
    }

    /// Picks the ports (and writes the certificates, with [`tls`](Self::tls)).
    pub fn build(self) -> ClusterFile {
        if let Some(dir) = &self.tls_dir {
            let ids: Vec<NodeId> = (1..=self.members + self.joiners).map(NodeId).collect();
            let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
            skiff::tls::generate(dir, &ids, &hosts, false)
                .unwrap_or_else(|error| panic!("certificates in {}: {error}", dir.display()));
        }
        let nodes = (1..=self.members + self.joiners)
            .map(|i| NodeAddresses {
                id: NodeId(i),
                raft: ports::free_address(),
                http: self.http.then(ports::free_address),
                redis: self.redis.then(ports::free_address),
                join: i > self.members,
            })
            .collect();
        ClusterFile { name: self.name, nodes, raft: self.raft, auth: self.auth, tls_dir: self.tls_dir }
    }
}
