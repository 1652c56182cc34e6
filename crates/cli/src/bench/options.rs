//! What `skiff bench` is asked to do: the workload, the target and its endpoints, and the
//! checks of the options that make a usage error.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use serde::Serialize;

use super::stream;
use crate::client::Security;

/// The most clients a run may have (and so connections, each a socket): a bound on what one
/// generator opens, far beyond what one machine's servers answer usefully.
pub const MAX_CLIENTS: usize = 4096;
/// The largest value a run may write (Skiff refuses more than 1 MiB by default, etcd 1.5 MiB).
pub const MAX_VALUE_SIZE: usize = 16 << 20;
/// The longest a request may wait for its answer (the latency histograms stop there).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// What the clients do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Writes of random keys.
    Put,
    /// Reads of random keys (written first by the fill phase).
    Get,
    /// Reads and writes, `--read-ratio` of them reads.
    Mixed,
}

/// The system under load, and the protocol that reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// Skiff's HTTP API: `PUT /v1/kv/<key>`, `GET /v1/kv/<key>?raw`.
    SkiffHttp,
    /// Skiff's Redis protocol: `SET`, `GET`.
    SkiffRedis,
    /// etcd's v3 JSON gateway: `POST /v3/kv/put`, `POST /v3/kv/range`.
    Etcd,
}

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::SkiffHttp => "skiff-http",
            Target::SkiffRedis => "skiff-redis",
            Target::Etcd => "etcd",
        }
    }

    /// Whether it speaks HTTP/1.1 (one request at a time per connection).
    pub fn is_http(self) -> bool {
        matches!(self, Target::SkiffHttp | Target::Etcd)
    }

    /// The endpoints when `--endpoints` is not given: the demo's nodes, or a local etcd
    /// (over TLS when `--cacert` is given, as `skiff demo --secure` serves them).
    fn default_endpoints(self) -> &'static str {
        match self {
            Target::SkiffHttp => "127.0.0.1:8001,127.0.0.1:8002,127.0.0.1:8003",
            Target::SkiffRedis => "127.0.0.1:6001,127.0.0.1:6002,127.0.0.1:6003",
            Target::Etcd => "127.0.0.1:2379",
        }
    }

    /// What to do when nothing answers.
    pub fn start_hint(self) -> &'static str {
        match self {
            Target::SkiffHttp | Target::SkiffRedis => {
                "start the demo with `cargo run --release -- demo`, or give your nodes' addresses with --endpoints"
            }
            Target::Etcd => {
                "start etcd (its JSON gateway is on the client URL, 2379 by default), or give it with --endpoints"
            }
        }
    }
}

/// How reads are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Consistency {
    /// Linearizable reads (Skiff: ReadIndex through the leader; etcd: a quorum read).
    Consistent,
    /// Each node answers from its own copy (Skiff: `?stale` or `READONLY`; etcd:
    /// `serializable`).
    Stale,
}

/// When the measured run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many requests (errors included).
    Total(u64),
}

/// What `skiff bench` was asked to do, as given on the command line.
pub struct BenchOptions {
    pub workload: Workload,
    pub target: Target,
    /// `--endpoints` as given on the command line; `None`: the target's defaults.
    pub endpoints: Option<String>,
    pub clients: usize,
    pub connections: usize,
    pub keys: u64,
    pub value_size: usize,
    pub duration: Option<Duration>,
    pub total: Option<u64>,
    pub warmup: Duration,
    pub consistency: Consistency,
    pub read_ratio: f64,
    pub fill: bool,
    pub seed: Option<u64>,
    pub json: bool,
    pub request_timeout: Duration,
    /// `--cacert`, `--cert`/`--key` and `--token`, read.
    pub security: Security,
}

/// The run's settings, checked.
#[derive(Clone, Debug)]
pub struct Settings {
    pub workload: Workload,
    pub target: Target,
    pub endpoints: Vec<Endpoint>,
    pub clients: usize,
    pub connections: usize,
    pub keys: u64,
    pub value_size: usize,
    pub stop: Stop,
    pub warmup: Duration,
    pub consistency: Consistency,
    /// The share of reads: 1 for `get`, 0 for `put`.
    pub read_ratio: f64,
    /// Whether every key is written once before the measured run.
    pub fill: bool,
    pub seed: u64,
    pub json: bool,
    pub request_timeout: Duration,
    /// The TLS client configuration, when `--cacert` is given.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `--token`: sent as `X-Consul-Token`, or with `AUTH` first on a Redis connection.
    pub token: Option<String>,
}

/// One endpoint: what the user wrote (normalized) and where it is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `http://host:port` or `https://host:port` for HTTP targets, `host:port` for Redis.
    pub name: String,
    pub address: SocketAddr,
    /// Over TLS: the name the node's certificate must carry.
    pub tls_name: Option<ServerName<'static>>,
}

impl Endpoint {
    /// The host and port, without a scheme (the HTTP `Host` header).
    pub fn host_port(&self) -> &str {
        self.name.split_once("://").map_or(self.name.as_str(), |(_, rest)| rest)
    }
}

/// The default duration of a run given neither `--duration` nor `--total`.
const DEFAULT_DURATION: Duration = Duration::from_secs(30);

impl BenchOptions {
    /// The checked settings, or what is wrong with the options (a usage error).
    pub fn settings(&self) -> Result<Settings, String> {
        if self.connections == 0 {
            return Err("--connections must be at least 1".to_string());
        }
        if self.clients < self.connections {
            return Err(format!(
                "--clients {} is fewer than --connections {}: every connection needs at least one client (as in \
                 etcd's benchmark, clients share the connections); use --clients {} or more, or fewer connections",
                self.clients, self.connections, self.connections
            ));
        }
        if self.clients > MAX_CLIENTS {
            return Err(format!("--clients {} is more than {MAX_CLIENTS}", self.clients));
        }
        if self.keys == 0 {
            return Err("--keys must be at least 1".to_string());
        }
        if self.value_size > MAX_VALUE_SIZE {
            return Err(format!("--value-size {} is more than {MAX_VALUE_SIZE} bytes", self.value_size));
        }
        if !(0.0..=1.0).contains(&self.read_ratio) {
            return Err(format!("--read-ratio {} is not between 0 and 1", self.read_ratio));
        }
        if self.request_timeout.is_zero() || self.request_timeout > MAX_REQUEST_TIMEOUT {
            return Err("--request-timeout must be more than 0 and at most 60s".to_string());
        }
        let stop = match (self.duration, self.total) {
            (Some(duration), _) if duration.is_zero() => return Err("--duration must be more than 0".to_string()),
            (_, Some(0)) => return Err("--total must be at least 1".to_string()),
            (Some(duration), None) => Stop::After(duration),
            (None, Some(total)) => Stop::Total(total),
            (None, None) => Stop::After(DEFAULT_DURATION),
            (Some(_), Some(_)) => return Err("give --duration or --total, not both".to_string()),
        };
        let alpn: &[&[u8]] = if self.target.is_http() { &[b"http/1.1"] } else { &[] };
        let tls = stream::client_config(&self.security, alpn)?;
        let endpoints = parse_endpoints(self.target, self.endpoints.as_deref(), tls.is_some())?;
        let read_ratio = match self.workload {
            Workload::Put => 0.0,
            Workload::Get => 1.0,
            Workload::Mixed => self.read_ratio,
        };
        Ok(Settings {
            workload: self.workload,
            target: self.target,
            endpoints,
            clients: self.clients,
            connections: self.connections,
            keys: self.keys,
            value_size: self.value_size,
            stop,
            warmup: self.warmup,
            consistency: self.consistency,
            read_ratio,
            fill: self.fill && read_ratio > 0.0,
            seed: self.seed.unwrap_or_else(rand::random),
            json: self.json,
            request_timeout: self.request_timeout,
            tls,
            token: self.security.token.clone(),
        })
    }
}

/// The endpoints of `--endpoints` (comma-separated), or the target's defaults. With a CA
/// (`ca`), `host:port` is reached over TLS (`https://`); `https://` and `rediss://` need one.
fn parse_endpoints(target: Target, given: Option<&str>, ca: bool) -> Result<Vec<Endpoint>, String> {
    let text = given.unwrap_or(target.default_endpoints());
    let mut endpoints = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|entry| !entry.is_empty()) {
        let (name, tls) = if target.is_http() {
            let name = skiff_client::normalize_endpoint_as(entry, if ca { "https" } else { "http" })
                .map_err(|error| error.to_string())?;
            let tls = name.starts_with("https://");
            (name, tls)
        } else {
            let (address, tls) = match entry.split_once("://") {
                Some(("redis", address)) => (address, false),
                Some(("rediss", address)) => (address, true),
                _ => (entry, ca),
            };
            let address = address.trim_end_matches('/');
            if address.contains("://") || address.contains('/') || !address.contains(':') {
                return Err(format!("endpoint {entry:?} is not host:port, redis://host:port or rediss://host:port"));
            }
            (address.to_string(), tls)
        };
        if tls && !ca {
            return Err(format!("endpoint {entry:?} is reached over TLS: give the cluster's CA with --cacert"));
        }
        let host_port = name.split_once("://").map_or(name.as_str(), |(_, rest)| rest);
        let address = host_port
            .to_socket_addrs()
            .map_err(|error| format!("endpoint {entry:?}: {error}"))?
            .next()
            .ok_or_else(|| format!("endpoint {entry:?} has no address"))?;
        let tls_name = if tls {
            let host = host_port.rsplit_once(':').map_or(host_port, |(host, _)| host);
            Some(stream::server_name(host).map_err(|error| format!("endpoint {entry:?}: {error}"))?)
        } else {
            None
        };
        endpoints.push(Endpoint { name, address, tls_name });
    }
    if endpoints.is_empty() {
        return Err("--endpoints lists no endpoint".to_string());
    }
    Ok(endpoints)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> BenchOptions {
        BenchOptions {
            workload: Workload::Put,
            target: Target::SkiffHttp,
            endpoints: None,
            clients: 64,
            connections: 16,
            keys: 100_000,
            value_size: 256,
            duration: None,
            total: None,
            warmup: Duration::from_secs(2),
            consistency: Consistency::Consistent,
            read_ratio: 0.9,
            fill: true,
            seed: Some(7),
            json: false,
            request_timeout: Duration::from_secs(10),
            security: Security::default(),
        }
    }

    #[test]
    fn defaults_follow_the_target() {
        let settings = options().settings().unwrap();
        assert_eq!(settings.stop, Stop::After(DEFAULT_DURATION));
        let names: Vec<_> = settings.endpoints.iter().map(|endpoint| endpoint.name.as_str()).collect();
        assert_eq!(names, ["http://127.0.0.1:8001", "http://127.0.0.1:8002", "http://127.0.0.1:8003"]);
        assert_eq!(settings.read_ratio, 0.0);
        assert!(!settings.fill, "a put run writes without a fill");
        let redis = BenchOptions { target: Target::SkiffRedis, workload: Workload::Get, ..options() };
        let settings = redis.settings().unwrap();
        assert_eq!(settings.endpoints[2].name, "127.0.0.1:6003");
        assert_eq!(settings.read_ratio, 1.0);
        assert!(settings.fill);
        let etcd = BenchOptions { target: Target::Etcd, ..options() };
        assert_eq!(etcd.settings().unwrap().endpoints[0].name, "http://127.0.0.1:2379");
    }

    #[test]
    fn endpoints_are_normalized() {
        let given = |target, text: &str| {
            BenchOptions { target, endpoints: Some(text.to_string()), ..options() }
                .settings()
                .map(|settings| settings.endpoints.into_iter().map(|endpoint| endpoint.name).collect::<Vec<_>>())
        };
        assert_eq!(
            given(Target::SkiffHttp, "127.0.0.1:1, http://127.0.0.1:2/").unwrap(),
            ["http://127.0.0.1:1", "http://127.0.0.1:2"]
        );
        assert_eq!(given(Target::SkiffRedis, "redis://127.0.0.1:6379").unwrap(), ["127.0.0.1:6379"]);
        assert!(given(Target::SkiffRedis, "http://127.0.0.1:6379").is_err());
        assert!(given(Target::SkiffHttp, "https://127.0.0.1:1").unwrap_err().contains("--cacert"));
        assert!(given(Target::SkiffRedis, "rediss://127.0.0.1:1").unwrap_err().contains("--cacert"));
        assert!(given(Target::SkiffHttp, " , ").unwrap_err().contains("no endpoint"));
    }

    #[test]
    fn a_ca_makes_the_endpoints_tls() {
        let dir = tempfile::tempdir().unwrap();
        skiff::tls::generate(dir.path(), &[skiff::NodeId(1)], &["127.0.0.1".to_string()], false).unwrap();
        let ca_pem = std::fs::read(dir.path().join("ca.pem")).unwrap();
        let security = Security { ca_pem: Some(ca_pem), identity_pem: None, token: Some("secret".into()) };
        let settings = BenchOptions { security: security.clone(), ..options() }.settings().unwrap();
        assert_eq!(settings.endpoints[0].name, "https://127.0.0.1:8001");
        assert!(settings.endpoints.iter().all(|endpoint| endpoint.tls_name.is_some()));
        assert!(settings.tls.is_some());
        assert_eq!(settings.token.as_deref(), Some("secret"));
        let plain =
            BenchOptions { endpoints: Some("http://127.0.0.1:1".into()), security: security.clone(), ..options() };
        assert!(plain.settings().unwrap().endpoints[0].tls_name.is_none(), "http:// stays plain");
        let redis = BenchOptions { target: Target::SkiffRedis, security, ..options() };
        assert!(redis.settings().unwrap().endpoints.iter().all(|endpoint| endpoint.tls_name.is_some()));
        let bad = Security { ca_pem: Some(b"not a certificate".to_vec()), ..Security::default() };
        assert!(BenchOptions { security: bad, ..options() }.settings().unwrap_err().contains("--cacert"));
    }

    #[test]
    fn refusals() {
        let refused = |options: BenchOptions| options.settings().unwrap_err();
        assert!(
            refused(BenchOptions { clients: 8, ..options() }).contains("--clients 8 is fewer than --connections 16")
        );
        assert!(refused(BenchOptions { connections: 0, ..options() }).contains("--connections"));
        assert!(refused(BenchOptions { keys: 0, ..options() }).contains("--keys"));
        assert!(refused(BenchOptions { read_ratio: 1.5, ..options() }).contains("--read-ratio"));
        assert!(refused(BenchOptions { total: Some(0), ..options() }).contains("--total"));
        let both = BenchOptions { total: Some(5), duration: Some(Duration::from_secs(1)), ..options() };
        assert!(refused(both).contains("not both"));
        let total = BenchOptions { total: Some(5), ..options() };
        assert_eq!(total.settings().unwrap().stop, Stop::Total(5));
    }
}
