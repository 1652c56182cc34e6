//! `skiff serve`: one node of a cluster, until SIGINT or SIGTERM; and what `serve` and
//! `demo` share: logging, the cluster file, signals.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, ValueEnum};
use skiff::NodeId;
use skiff::config::{ClusterConfig, RaftSection, parse_node_id};
use skiff_kv::{Limits, Server, ServerOptions};

use crate::join::{self, OwnAddress};
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

/// The cluster file's `[raft]` settings as flags and `SKIFF_*` variables (`--tick-ms`,
/// `SKIFF_TICK_MS`, ...), which override the file; a flag wins over a variable. The flags are
/// made from the section's own keys and defaults ([`RaftSection::keys_and_defaults`]), so
/// a setting is named, defaulted and checked in one place, and described in one
/// (docs/configuration.md).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaftFlags {
    /// (key, value) of each setting a flag or variable gives, in the file's syntax.
    pub overrides: Vec<(String, String)>,
}

impl clap::Args for RaftFlags {
    fn augment_args(command: clap::Command) -> clap::Command {
        let heading = "Raft settings: override the cluster file's [raft] (docs/configuration.md)";
        command.next_help_heading(heading).args(RaftSection::keys_and_defaults().into_iter().map(raft_flag))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        RaftFlags::augment_args(command)
    }
}

/// The flag of the `[raft]` setting `key`. It shows the default in `--help`, but only a value
/// given on the command line or in the environment overrides the file.
fn raft_flag((key, default): (String, String)) -> Arg {
    let is_bool = default == "true" || default == "false";
    let value_name = match () {
        _ if is_bool => "BOOL",
        _ if key.ends_with("_ticks") => "TICKS",
        _ if key.ends_with("_bytes") => "BYTES",
        _ if key.ends_with("_ms") => "MS",
        _ => "N",
    };
    let arg = Arg::new(key.clone())
        .long(key.replace('_', "-"))
        .env(format!("SKIFF_{}", key.to_uppercase()))
        .value_name(value_name)
        .default_value(default);
    if is_bool {
        arg.value_parser(["true", "false"])
    } else {
        arg.value_parser(|text: &str| text.parse::<u64>().map(|_| text.to_string()))
    }
}

impl clap::FromArgMatches for RaftFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<RaftFlags, clap::Error> {
        let given =
            |key: &str| matches!(matches.value_source(key), Some(ValueSource::CommandLine | ValueSource::EnvVariable));
        let overrides = RaftSection::keys_and_defaults()
            .into_iter()
            .filter(|(key, _)| given(key))
            .filter_map(|(key, _)| Some((key.clone(), matches.get_one::<String>(&key)?.clone())))
            .collect();
        Ok(RaftFlags { overrides })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = RaftFlags::from_arg_matches(matches)?;
        Ok(())
    }
}

/// What `serve` needs, from flags and `SKIFF_*` variables.
pub struct ServeOptions {
    /// The cluster file; without it, the cluster's own (`--join`) or the one saved in the
    /// data directory by an earlier join.
    pub config: Option<PathBuf>,
    pub id: String,
    pub data_dir: Option<PathBuf>,
    pub raft: RaftFlags,
    pub limits: Limits,
    pub fault_injection: bool,
    /// This node's addresses, over the cluster file's entry.
    pub own: OwnAddress,
    /// `--join`: a client of a running member, to learn the cluster and be added.
    pub join: Option<skiff_client::Client>,
    /// `--bootstrap`: a new data directory votes at once.
    pub bootstrap: bool,
}

/// The cluster file `serve` runs with, and this node's id: `--config`, else (`--join`) the
/// running cluster's settings, else the file an earlier join saved in the data directory.
/// The node's own entry gets the address flags, and with `--join` is marked `join`.
fn cluster_for(options: &ServeOptions, data_dir: &Path) -> Result<(ClusterConfig, NodeId, bool)> {
    let id = parse_node_id(&options.id)?;
    let saved = join::saved_cluster_file(data_dir);
    let (cluster, fetched) = match (&options.config, &options.join) {
        (Some(config), _) => (ClusterConfig::load_with_overrides(config, &options.raft.overrides)?, false),
        (None, Some(client)) => {
            let info = client.cluster().context("cannot learn the cluster's settings from --join")?;
            let mut cluster = join::cluster_from(&info)?;
            for (key, value) in &options.raft.overrides {
                cluster.raft.set(key, value)?;
            }
            (cluster, true)
        }
        (None, None) if saved.exists() => (ClusterConfig::load_with_overrides(&saved, &options.raft.overrides)?, false),
        (None, None) => anyhow::bail!(
            "give --config FILE (the cluster file), or --join URL to join a running cluster (no {} from an \
             earlier join either)",
            saved.display()
        ),
    };
    let cluster = join::with_own_entry(cluster, id, &options.own, options.join.is_some())?;
    Ok((cluster, id, fetched))
}

pub fn run(options: ServeOptions) -> Result<()> {
    let default_dir = || {
        let id = parse_node_id(&options.id).map(|id| id.to_string()).unwrap_or_else(|_| options.id.clone());
        Path::new("data").join(id)
    };
    let data_dir = options.data_dir.clone().unwrap_or_else(default_dir);
    let (cluster, id, fetched) = cluster_for(&options, &data_dir)?;
    let join = options.join;
    if options.fault_injection {
        tracing::warn!(node = %id, "fault injection is on: anyone who reaches the HTTP port can cut this node off");
    }
    let mut limits = options.limits;
    let open_files = raise_open_file_limit();
    let reserved = reserved_descriptors(cluster.node.len());
    limits.max_connections = fit_connections(limits.max_connections, open_files, reserved)?;
    let mut server_options = ServerOptions::new(cluster.clone(), id, &data_dir);
    server_options.limits = limits;
    server_options.fault_injection = options.fault_injection;
    if options.bootstrap {
        server_options.bootstrap = skiff::BootstrapMode::Force;
    }
    // A directory that never voted (new, or never confirmed) rejoins by being removed and
    // added back as a learner: its old self, if any, may have voted.
    let rejoin = skiff::bootstrap::is_unconfirmed(&data_dir);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut signals = Signals::listen()?;
        let server = Server::start(server_options).await.with_context(|| format!("cannot start node {id}"))?;
        tracing::info!(
            node = %id,
            http = %server.http_address(),
            redis = ?server.redis_address(),
            data_dir = %data_dir.display(),
            "node started"
        );
        if fetched {
            // A later `skiff serve --id ID --data-dir DIR` restarts with the same settings.
            let text = cluster.to_toml_string()?;
            std::fs::write(join::saved_cluster_file(&data_dir), text).context("cannot save the cluster's settings")?;
        }
        if let Some(client) = join {
            let joined = tokio::task::spawn_blocking(move || join::ensure_member(&client, &cluster, id, rejoin));
            let outcome = tokio::select! {
                joined = joined => joined?,
                stopped = server.node().stopped() => Err(anyhow::Error::new(stopped)),
            };
            match outcome {
                Ok(message) => tracing::info!(node = %id, "{message}"),
                Err(error) => {
                    let _ = server.shutdown().await;
                    return Err(error.context(format!("node {id} could not join the cluster")));
                }
            }
        }
        // A node that stops by itself (a storage failure, a panic) takes the process with
        // it, non-zero, so that a supervisor restarts it rather than leave it answering 500.
        let signal = tokio::select! {
            signal = signals.next() => signal?,
            stopped = server.node().stopped() => {
                let _ = server.shutdown().await;
                return Err(anyhow::Error::new(stopped).context(format!("node {id}")));
            }
        };
        tracing::info!(node = %id, signal, "shutting down (a leader hands off leadership first)");
        server.shutdown().await.with_context(|| format!("node {id} did not shut down cleanly"))?;
        tracing::info!(node = %id, "stopped");
        Ok(())
    })
}

/// Raises this process's soft limit on open files to its hard limit (a default soft limit
/// of 1024 is far below what thousands of client connections need, and running out in the
/// middle of creating a WAL segment stops the node); returns the limit in force.
#[cfg(unix)]
pub fn raise_open_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else { return 1024 };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return hard;
    }
    soft
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> u64 {
    u64::MAX
}

/// Descriptors kept for everything but client connections: the store (WAL segments, the
/// spare segment, snapshot files, directories), the peers (a connection each way), the
/// runtime (epoll, signals, the log), with room to spare.
fn reserved_descriptors(nodes: usize) -> u64 {
    128 + 4 * nodes as u64
}

/// The per-listener connection cap that fits the open-file limit: two listeners (HTTP and
/// Redis) at `wanted` each, plus `reserved`. A cap that does not fit is lowered, with a
/// warning that names the numbers; running out of descriptors while the store opens a WAL
/// segment would stop the node, running out on accept only delays a client.
fn fit_connections(wanted: usize, open_files: u64, reserved: u64) -> Result<usize> {
    let fits = usize::try_from(open_files.saturating_sub(reserved) / 2).unwrap_or(usize::MAX);
    if wanted <= fits {
        return Ok(wanted);
    }
    if fits < 16 {
        anyhow::bail!(
            "the open-file limit is {open_files}: too few for {reserved} kept for storage and peers plus client \
             connections; raise it (ulimit -n, or LimitNOFILE= in a systemd unit)"
        );
    }
    tracing::warn!(
        open_files,
        reserved,
        wanted,
        max_connections = fits,
        "the open-file limit does not fit --max-connections on both listeners: lowered; raise the limit (ulimit -n, LimitNOFILE=) to allow more"
    );
    Ok(fits)
}

/// SIGINT (Ctrl-C) and SIGTERM, listened for from when this is made: a signal that arrives
/// while a node is still starting is kept, not left to kill the process.
pub struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    /// Starts listening. Must be called inside a tokio runtime.
    pub fn listen() -> Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
            let interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
            Ok(Signals { terminate, interrupt })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next SIGINT or SIGTERM; returns which.
    pub async fn next(&mut self) -> Result<&'static str> {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.terminate.recv() => Ok("SIGTERM"),
                _ = self.interrupt.recv() => Ok("SIGINT"),
            }
        }
        #[cfg(not(unix))]
        {
            tokio::signal::ctrl_c().await.context("cannot listen for Ctrl-C")?;
            Ok("Ctrl-C")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection caps of both listeners and the descriptors kept for storage and peers
    /// fit the open-file limit: lowered when they don't, refused when almost nothing is left.
    #[test]
    fn connection_caps_fit_the_open_file_limit() {
        assert_eq!(fit_connections(10_000, 1 << 20, 140).expect("fits"), 10_000);
        assert_eq!(fit_connections(10_000, 4096, 140).expect("lowered"), (4096 - 140) / 2);
        let refused = fit_connections(10_000, 160, 140).expect_err("too few");
        assert!(refused.to_string().contains("ulimit -n"), "{refused}");
    }
}
