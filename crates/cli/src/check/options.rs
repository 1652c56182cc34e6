//! What `skiff check` is asked to do: the fault kinds, `--faults`, and the checks of the
//! options that make a usage error.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::cluster::extra_slots;
use crate::client::Security;

/// A kind of fault the fault thread injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL a random node; restart it (same data directory) when healing.
    Kill,
    /// SIGSTOP a random node; SIGCONT when healing.
    Pause,
    /// Cut a minority of nodes off from the others through the fault API.
    Partition,
    /// Kill the leader (with `--endpoints`: isolate it through the fault API).
    Leader,
    /// SIGKILL every node; restart them all when healing.
    RestartAll,
    /// Change the membership: add a new node, remove one, or replace one by a new node.
    Membership,
}

impl FaultKind {
    const ALL: [FaultKind; 6] = [
        FaultKind::Kill,
        FaultKind::Pause,
        FaultKind::Partition,
        FaultKind::Leader,
        FaultKind::RestartAll,
        FaultKind::Membership,
    ];

    fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Pause => "pause",
            FaultKind::Partition => "partition",
            FaultKind::Leader => "leader",
            FaultKind::RestartAll => "restart-all",
            FaultKind::Membership => "membership",
        }
    }

    /// Whether it needs the nodes' processes, which only a cluster started here has (the
    /// `membership` fault starts new ones).
    fn needs_processes(self) -> bool {
        matches!(self, FaultKind::Kill | FaultKind::Pause | FaultKind::RestartAll | FaultKind::Membership)
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--faults`: a comma-separated list of kinds, or `none`.
#[derive(Clone, Debug)]
pub struct FaultList(pub Vec<FaultKind>);

/// Parses `--faults`.
pub fn parse_faults(text: &str) -> Result<FaultList, String> {
    if text.trim() == "none" {
        return Ok(FaultList(Vec::new()));
    }
    let mut kinds = Vec::new();
    for name in text.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        let kind = FaultKind::ALL.into_iter().find(|kind| kind.name() == name).ok_or_else(|| {
            format!(
                "unknown fault {name:?}; the faults are kill, pause, partition, leader, restart-all and membership \
                 (or none)"
            )
        })?;
        if !kinds.contains(&kind) {
            kinds.push(kind);
        }
    }
    if kinds.is_empty() {
        return Err("no fault given; write none for a run without faults".to_string());
    }
    Ok(FaultList(kinds))
}

/// What the clients do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum WorkloadKind {
    /// Gets, puts, deletes and cas on a few keys, checked for linearizability.
    #[default]
    Kv,
    /// Clients take a lock with leases, write fenced values, and are paused past their TTL;
    /// keys put with a lease must disappear in time (docs/check.md).
    Lock,
    /// Clients move amounts between `--keys` accounts with transactions guarded by `cas`;
    /// every read of all accounts must find the same total (docs/check.md).
    Transfer,
}

/// What `skiff check` was asked to do.
pub struct CheckOptions {
    pub workload: WorkloadKind,
    /// The lock workload's lease TTL.
    pub lock_ttl: Duration,
    pub nodes: usize,
    pub time: Duration,
    /// `None`: every kind possible (partition and leader with `--endpoints`).
    pub faults: Option<Vec<FaultKind>>,
    pub clients: usize,
    pub keys: usize,
    pub seed: Option<u64>,
    pub history: Option<PathBuf>,
    pub json: bool,
    pub base_port: u16,
    pub keep_data: bool,
    /// The user's cluster (base URLs), instead of starting one.
    pub endpoints: Option<Vec<String>>,
    pub request_timeout: Duration,
    pub snapshot_after_entries: u64,
    /// With `--endpoints`: how the user's nodes are reached (`--cacert`, `--cert`/`--key`,
    /// `--token`).
    pub security: Security,
    /// Without `--endpoints`: start the cluster with TLS and tokens (`--secure`).
    pub secure: bool,
    /// Run a watcher per node on the change feed (the kv workload; off with
    /// `--no-feed-check`).
    pub feed_check: bool,
}

impl CheckOptions {
    /// The fault kinds to inject, or what is wrong with the options.
    pub(super) fn fault_kinds(&self) -> Result<Vec<FaultKind>, String> {
        if self.time.is_zero() {
            return Err("--time must be more than 0 (for instance 60s)".to_string());
        }
        if self.request_timeout.is_zero() {
            return Err("--request-timeout must be more than 0".to_string());
        }
        if self.workload == WorkloadKind::Lock && self.lock_ttl < Duration::from_secs(1) {
            return Err("--lock-ttl must be at least 1s, the shortest lease".to_string());
        }
        if self.workload == WorkloadKind::Transfer && self.keys < 2 {
            return Err("--workload transfer needs at least 2 accounts (--keys)".to_string());
        }
        let kinds = match (&self.faults, &self.endpoints) {
            (Some(kinds), _) => kinds.clone(),
            (None, Some(_)) => vec![FaultKind::Partition, FaultKind::Leader],
            (None, None) => {
                FaultKind::ALL.into_iter().filter(|&kind| kind != FaultKind::Partition || self.nodes > 1).collect()
            }
        };
        if self.endpoints.is_some() {
            if self.secure {
                return Err("--secure starts a secure cluster of check's own; against your cluster give its CA \
                            and a management token with --cacert and --token instead"
                    .to_string());
            }
            if let Some(kind) = kinds.iter().find(|kind| kind.needs_processes()) {
                return Err(format!(
                    "--faults {kind} cannot be used with --endpoints: skiff check can kill, pause and restart only \
                     the nodes it starts itself; against your own cluster use --faults partition,leader (leader \
                     isolates the leader through the fault API)"
                ));
            }
        } else {
            if self.nodes < 2 && kinds.contains(&FaultKind::Partition) {
                return Err("--faults partition needs at least 2 nodes".to_string());
            }
            // The membership fault's new nodes take the slots after the initial ones.
            let slots = self.nodes + if kinds.contains(&FaultKind::Membership) { extra_slots(self.nodes) } else { 0 };
            if usize::from(self.base_port) + 100 + slots > usize::from(u16::MAX) {
                return Err(format!("--base-port {} leaves no room for the http ports (base + 101..)", self.base_port));
            }
        }
        Ok(kinds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> CheckOptions {
        CheckOptions {
            workload: WorkloadKind::Kv,
            lock_ttl: Duration::from_secs(2),
            nodes: 3,
            time: Duration::from_secs(60),
            faults: None,
            clients: 8,
            keys: 8,
            seed: None,
            history: None,
            json: false,
            base_port: 17000,
            keep_data: false,
            endpoints: None,
            request_timeout: Duration::from_secs(2),
            snapshot_after_entries: 1000,
            security: Security::default(),
            secure: false,
            feed_check: true,
        }
    }

    #[test]
    fn fault_lists_parse() {
        let kinds = |text| parse_faults(text).map(|list| list.0);
        assert_eq!(kinds("kill,pause"), Ok(vec![FaultKind::Kill, FaultKind::Pause]));
        assert_eq!(kinds("restart-all, kill,kill"), Ok(vec![FaultKind::RestartAll, FaultKind::Kill]));
        assert_eq!(kinds("none"), Ok(vec![]));
        assert!(kinds("explode").unwrap_err().contains("unknown fault \"explode\""));
        assert!(kinds(",").is_err());
    }

    #[test]
    fn defaults_and_refusals() {
        assert_eq!(options().fault_kinds().unwrap(), FaultKind::ALL.to_vec());
        let remote = CheckOptions { endpoints: Some(vec!["http://127.0.0.1:8001".into()]), ..options() };
        assert_eq!(remote.fault_kinds().unwrap(), vec![FaultKind::Partition, FaultKind::Leader]);
        let kill = CheckOptions { faults: Some(vec![FaultKind::Kill]), ..remote };
        assert!(kill.fault_kinds().unwrap_err().contains("--faults kill cannot be used with --endpoints"));
        let zero = CheckOptions { time: Duration::ZERO, ..options() };
        assert!(zero.fault_kinds().unwrap_err().contains("--time must be more than 0"));
        let single = CheckOptions { nodes: 1, ..options() };
        assert!(!single.fault_kinds().unwrap().contains(&FaultKind::Partition));
        let single_partition = CheckOptions { faults: Some(vec![FaultKind::Partition]), ..single };
        assert!(single_partition.fault_kinds().is_err());
        let one_account = CheckOptions { workload: WorkloadKind::Transfer, keys: 1, ..options() };
        assert!(one_account.fault_kinds().unwrap_err().contains("at least 2 accounts"));
        let two_accounts = CheckOptions { workload: WorkloadKind::Transfer, keys: 2, ..options() };
        assert!(two_accounts.fault_kinds().is_ok());
    }

    #[test]
    fn membership_needs_a_cluster_started_here_and_room_for_its_ports() {
        assert_eq!(kinds_of("membership"), vec![FaultKind::Membership]);
        let remote = CheckOptions {
            endpoints: Some(vec!["http://127.0.0.1:8001".into()]),
            faults: Some(vec![FaultKind::Membership]),
            ..options()
        };
        assert!(remote.fault_kinds().unwrap_err().contains("--faults membership cannot be used with --endpoints"));
        // 3 nodes: http ports up to base + 100 + 3, and with membership 3 + 7 more slots.
        let top = u16::MAX - 103;
        let kill = CheckOptions { base_port: top, faults: Some(vec![FaultKind::Kill]), ..options() };
        assert!(kill.fault_kinds().is_ok());
        let membership = CheckOptions { base_port: top, faults: Some(vec![FaultKind::Membership]), ..options() };
        assert!(membership.fault_kinds().unwrap_err().contains("--base-port"));
        let room = CheckOptions { base_port: top - 7, ..membership };
        assert!(room.fault_kinds().is_ok());
    }

    fn kinds_of(text: &str) -> Vec<FaultKind> {
        parse_faults(text).expect("parses").0
    }
}
