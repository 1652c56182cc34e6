//! `skiff demo`: a whole local cluster in one process, a banner that says how to use it,
//! and a clean stop on Ctrl-C.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use skiff::config::{AuthSection, ClusterConfig, NodeConfig, TlsSection};

mod nodes;

use self::nodes::Nodes;
use crate::client::Security;
use crate::commands::Format;
use crate::serve::{RaftFlags, Signals};
use crate::status;

/// How long the demo waits for the first leader before saying so.
const ELECTION_WAIT: Duration = Duration::from_secs(10);
/// `--slow` makes every tick this many times longer.
const SLOW_MOTION: u64 = 10;

pub struct DemoOptions {
    pub nodes: usize,
    /// Make certificates and an admin token in the data directory, and use them.
    pub secure: bool,
    /// Ticks ten times longer ([`SLOW_MOTION`]).
    pub slow: bool,
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub raft: RaftFlags,
}

/// `ClusterConfig::demo()`'s pattern for `nodes` nodes: n<i> with raft on 127.0.0.1:700<i>,
/// http on 800<i>, redis on 600<i>.
pub fn demo_cluster(nodes: usize) -> ClusterConfig {
    let mut cluster = ClusterConfig::demo();
    let Some(template) = cluster.node.first().cloned() else { return cluster };
    let port = |base: usize, i: usize| format!("127.0.0.1:{}", base + i);
    cluster.node = (1..=nodes)
        .map(|i| NodeConfig {
            id: format!("n{i}"),
            raft: port(7000, i),
            http: Some(port(8000, i)),
            redis: Some(port(6000, i)),
            ..template.clone()
        })
        .collect();
    cluster
}

pub fn run(options: DemoOptions) -> Result<()> {
    let overrides = &options.raft.overrides;
    let cluster = match &options.config {
        Some(path) => ClusterConfig::load_with_overrides(path, overrides)?,
        None => {
            let mut cluster = demo_cluster(options.nodes);
            for (key, value) in overrides {
                cluster.raft.set(key, value)?;
            }
            cluster.validate()?;
            cluster
        }
    };
    if let Some(node) = cluster.node.iter().find(|node| node.http.is_none()) {
        bail!("node {} has no http address; the demo serves every node's API", node.id);
    }
    // The temporary directory is removed when `_temp` drops, after the servers stop.
    let (data_dir, _temp) = match &options.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new().prefix("skiff-demo-").tempdir().context("cannot create a temp dir")?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let mut cluster = cluster;
    if options.slow {
        cluster.raft.tick_ms = cluster.raft.tick_ms.saturating_mul(SLOW_MOTION);
    }
    let security = if options.secure { secure(&mut cluster, &data_dir)? } else { client_security(&cluster)? };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(demo(cluster, data_dir, options.data_dir.is_some(), security, options.slow))?;
    println!("stopped");
    Ok(())
}

/// The name of the token `--secure` makes.
const ADMIN_TOKEN: &str = "admin";

/// `--secure`: certificates for every node in `<data>/certs` and a management token in
/// `<data>/tokens.toml` (both kept if they exist, so a kept data directory keeps working),
/// switched on in `cluster`. Returns what a client needs.
fn secure(cluster: &mut ClusterConfig, data_dir: &std::path::Path) -> Result<Security> {
    use rand::Rng;
    let certs = data_dir.join("certs");
    let nodes: Vec<_> = cluster.node_ids().collect();
    let hosts = ["127.0.0.1", "::1", "localhost"].map(String::from);
    skiff::tls::generate(&certs, &nodes, &hosts, false)?;
    let tokens = data_dir.join("tokens.toml");
    let secret = match existing_secret(&tokens)? {
        Some(secret) => secret,
        None => {
            let secret = format!("{:032x}", rand::rng().random::<u128>());
            let text = format!(
                "# Made by skiff demo --secure.\n[[token]]\nname = \"{ADMIN_TOKEN}\"\nsecret = \"{secret}\"\nmanagement = true\n"
            );
            write_private(&tokens, &text)?;
            secret
        }
    };
    cluster.tls = Some(TlsSection { dir: Some(certs.clone()), ca: None, verify_clients: false });
    cluster.auth = Some(AuthSection { tokens });
    cluster.validate()?;
    let ca_pem = std::fs::read(certs.join("ca.pem")).context("cannot read the demo's CA")?;
    Ok(Security { ca_pem: Some(ca_pem), identity_pem: None, token: Some(secret) })
}

/// The admin token's secret in a tokens file a previous `--secure` run made, if any.
fn existing_secret(path: &std::path::Path) -> Result<Option<String>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let table: toml::Table = text.parse().with_context(|| format!("{} is not TOML", path.display()))?;
    let tokens = table.get("token").and_then(toml::Value::as_array).into_iter().flatten();
    let secret = tokens
        .filter(|token| token.get("name").and_then(toml::Value::as_str) == Some(ADMIN_TOKEN))
        .find_map(|token| token.get("secret").and_then(toml::Value::as_str).map(str::to_string));
    match secret {
        Some(secret) => Ok(Some(secret)),
        None => bail!("{} has no {ADMIN_TOKEN:?} token; remove the file to have a new one made", path.display()),
    }
}

fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// How the demo's own status table reaches a cluster file's nodes: its CA, if it has
/// `[tls]`. (Without `--secure` the demo knows no token: a file with `[auth]` shows no table.)
fn client_security(cluster: &ClusterConfig) -> Result<Security> {
    let Some(files) = cluster.node_ids().next().and_then(|id| cluster.tls_files(id)) else {
        return Ok(Security::default());
    };
    let ca_pem = std::fs::read(&files.ca).with_context(|| format!("cannot read {}", files.ca.display()))?;
    Ok(Security { ca_pem: Some(ca_pem), ..Security::default() })
}

async fn demo(cluster: ClusterConfig, data_dir: PathBuf, kept: bool, security: Security, slow: bool) -> Result<()> {
    let mut signals = Signals::listen()?;
    let nodes = Nodes::new(cluster.clone(), data_dir.clone(), slow)?;
    if let Err(error) = nodes.start_all().await {
        nodes.stop_all().await;
        return Err(error);
    }
    let endpoints: Vec<String> = cluster.node.iter().filter_map(|node| node.http.clone()).collect();
    print_banner(&cluster, &data_dir, kept, &security, slow);
    let started = Instant::now();
    let leader = nodes.any_running().map(|node| async move { node.wait_for_leader(ELECTION_WAIT).await });
    let stopped_early = tokio::select! {
        elected = async { leader?.await.ok() } => {
            match elected {
                Some(leader) => println!("leader: {leader} (elected in {:.1}s)\n", started.elapsed().as_secs_f64()),
                None => println!("no leader yet after {ELECTION_WAIT:?}; `skiff status` shows each node's view\n"),
            }
            false
        }
        signal = signals.next() => { signal?; true }
    };
    if !stopped_early {
        let table = tokio::task::spawn_blocking(move || print_status(&endpoints, &security));
        let _ = table.await;
        println!("\nrunning; Ctrl-C stops the cluster");
        signals.next().await?;
    }
    println!("stopping...");
    nodes.stop_all().await;
    Ok(())
}

fn print_status(endpoints: &[String], security: &Security) {
    let builder = skiff_client::Client::builder().endpoints(endpoints).timeout(Duration::from_secs(5));
    let client = security.apply(builder).build();
    if let Err(error) = client.map_err(anyhow::Error::from).and_then(|client| status::show(&client, Format::Human)) {
        println!("(status unavailable: {error:#})");
    }
}

fn print_banner(cluster: &ClusterConfig, data_dir: &std::path::Path, kept: bool, security: &Security, slow: bool) {
    println!("Skiff demo: cluster {:?}, {} nodes in this process", cluster.cluster.name, cluster.node.len());
    println!();
    let first = cluster.node.first().and_then(|node| node.http.as_deref()).unwrap_or("127.0.0.1:8001");
    let motion = match slow {
        true => format!(
            " (slow motion: ticks of {} ms, messages {} ms on their way)",
            cluster.raft.tick_ms,
            cluster.raft.tick_ms * nodes::SLOW_MESSAGE_TICKS
        ),
        false => String::new(),
    };
    println!("  Dashboard: {}://{first}/   <- open it in a browser{motion}", security.scheme());
    println!();
    println!("  {:<4} {:<22} {:<22} redis", "node", "http (client API)", "raft (peers)");
    for node in &cluster.node {
        let http = node.http.as_deref().unwrap_or("-");
        println!("  {:<4} {:<22} {:<22} {}", node.id, http, node.raft, node.redis.as_deref().unwrap_or("-"));
    }
    let data = if kept { data_dir.display().to_string() } else { format!("{} (removed at exit)", data_dir.display()) };
    println!("\n  data: {data}\n");
    let first = cluster.node.first().and_then(|node| node.http.as_deref()).unwrap_or("127.0.0.1:8001");
    let all: Vec<&str> = cluster.node.iter().filter_map(|node| node.http.as_deref()).collect();
    let default = ["127.0.0.1:8001", "127.0.0.1:8002", "127.0.0.1:8003"];
    let flag = if all == default { String::new() } else { format!(" --endpoints {}", all.join(",")) };
    let scheme = security.scheme();
    // What curl and redis-cli need: the CA, and the token.
    let ca = cluster.tls.as_ref().and_then(|_| cluster.tls_files(cluster.node_ids().next()?)).map(|files| files.ca);
    let mut curl = String::from("curl");
    let mut redis_cli = String::from("redis-cli");
    if let Some(ca) = &ca {
        curl.push_str(&format!(" --cacert {}", ca.display()));
        redis_cli.push_str(&format!(" --tls --cacert {}", ca.display()));
    }
    if let Some(token) = &security.token {
        println!("TLS and tokens are on. In another terminal, first:");
        if let Some(ca) = &ca {
            println!("  export SKIFF_CACERT={}", ca.display());
        }
        println!("  export SKIFF_TOKEN={token}");
        println!();
        curl.push_str(" -H \"X-Consul-Token: $SKIFF_TOKEN\"");
        redis_cli.push_str(&format!(" --user {ADMIN_TOKEN} --pass $SKIFF_TOKEN"));
        println!("Then try it:");
    } else {
        println!("Try it, from another terminal:");
    }
    println!("  {curl} -X PUT -d 'hello' {scheme}://{first}/v1/kv/greeting");
    println!("  {curl} {scheme}://{first}/v1/kv/greeting?raw");
    println!("  skiff{flag} put greeting hello");
    println!("  skiff{flag} get greeting");
    println!("  skiff{flag} shell");
    println!("  skiff{flag} status --watch");
    if let Some(redis) = cluster.node.first().and_then(|node| node.redis.as_deref()) {
        let (host, port) = redis.rsplit_once(':').unwrap_or((redis, "6379"));
        let host = if host == "127.0.0.1" { String::new() } else { format!(" -h {host}") };
        println!("  {redis_cli}{host} -p {port} set greeting hello");
    }
    let first_id = cluster.node.first().map(|node| node.id.to_string()).unwrap_or_default();
    println!();
    println!("Fault injection is on: cut {first_id} off from the others, then heal it:");
    let others: Vec<String> = cluster.node.iter().skip(1).map(|node| format!("\"{}\"", node.id)).collect();
    println!(
        "  {curl} -X POST -d '{{\"action\":\"drop\",\"peers\":[{}]}}' {scheme}://{first}/v1/skiff/faults",
        others.join(",")
    );
    println!("  {curl} -X DELETE {scheme}://{first}/v1/skiff/faults");
    println!();
}
