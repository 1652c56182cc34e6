//! `skiff serve`: one node of a cluster, until SIGINT or SIGTERM; and what `serve` and
//! `demo` share: logging, the cluster file, signals.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ValueEnum;
use skiff::NodeId;
use skiff::config::{ClusterConfig, parse_node_id};
use skiff_kv::{Limits, Server, ServerOptions};
use tracing_subscriber::EnvFilter;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr. `filter` is a `RUST_LOG`-style filter (`info`, `skiff=debug,warn`);
/// without one, `RUST_LOG`, then `default`.
pub fn init_logging(filter: Option<&str>, format: LogFormat, default: &str) -> Result<()> {
    let filter = match filter.map(str::to_string).or_else(|| std::env::var("RUST_LOG").ok()) {
        Some(filter) => EnvFilter::try_new(&filter).with_context(|| format!("invalid log filter {filter:?}"))?,
        None => EnvFilter::new(default),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// What `serve` needs, from flags and `SKIFF_*` variables.
pub struct ServeOptions {
    pub config: PathBuf,
    pub id: String,
    pub data_dir: Option<PathBuf>,
    pub limits: Limits,
    pub fault_injection: bool,
}

/// Reads the cluster file and checks that it lists `id`.
pub fn load_node(config: &Path, id: &str) -> Result<(ClusterConfig, NodeId)> {
    let cluster = ClusterConfig::load(config)?;
    let id = parse_node_id(id)?;
    cluster.node(id)?;
    Ok((cluster, id))
}

pub fn run(options: ServeOptions) -> Result<()> {
    let (cluster, id) = load_node(&options.config, &options.id)?;
    let data_dir = options.data_dir.unwrap_or_else(|| Path::new("data").join(id.to_string()));
    if options.fault_injection {
        tracing::warn!(node = %id, "fault injection is on: anyone who reaches the HTTP port can cut this node off");
    }
    let mut server_options = ServerOptions::new(cluster, id, &data_dir);
    server_options.limits = options.limits;
    server_options.fault_injection = options.fault_injection;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let server = Server::start(server_options).await.with_context(|| format!("cannot start node {id}"))?;
        tracing::info!(
            node = %id,
            http = %server.http_address(),
            redis = ?server.redis_address(),
            data_dir = %data_dir.display(),
            "node started"
        );
        let signal = wait_for_signal().await?;
        tracing::info!(node = %id, signal, "shutting down (a leader hands off leadership first)");
        server.shutdown().await.with_context(|| format!("node {id} did not shut down cleanly"))?;
        tracing::info!(node = %id, "stopped");
        Ok(())
    })
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM; returns which.
pub async fn wait_for_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
        tokio::select! {
            _ = terminate.recv() => Ok("SIGTERM"),
            _ = interrupt.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}
