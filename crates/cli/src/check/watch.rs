//! Watching the cluster through `/v1/skiff/status`: who leads, in which term, and the
//! watcher thread that counts leader changes while the workload runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;

use super::cluster::LocalCluster;
use super::http::{Access, Http, Status};
use super::membership::Roster;
use super::{Member, Signals};

/// How often the watcher polls every node.
const WATCH_INTERVAL: Duration = Duration::from_millis(200);
/// How long the watcher waits for one node's status (a paused node never answers).
const WATCH_TIMEOUT: Duration = Duration::from_millis(300);

/// Every member's status, `None` for a member that did not answer.
pub fn statuses(http: &Http, members: &[Member]) -> Vec<Option<Status>> {
    members.iter().map(|member| http.status(&member.url).ok()).collect()
}

/// The member that says it leads, in the highest term any leader reports.
pub fn find_leader(http: &Http, members: &[Member]) -> Option<usize> {
    statuses(http, members)
        .iter()
        .enumerate()
        .filter_map(|(index, status)| status.as_ref().filter(|status| status.role == "leader").map(|s| (s.term, index)))
        .max()
        .map(|(_, index)| index)
}

/// Waits until every member answers, one of them leads, and all name it; returns its
/// index. Stops early, with the node and the end of its log, if a local node exits.
pub fn wait_for_leader(
    http: &Http,
    members: &[Member],
    local: Option<&LocalCluster>,
    signals: &Signals,
    timeout: Duration,
) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(exit) = local.and_then(|local| local.unexpected_exits().into_iter().next()) {
            bail!(
                "node {} exited ({}) before the cluster had a leader; the end of its log ({}):\n{}",
                exit.id,
                exit.status,
                exit.log.display(),
                exit.log_tail
            );
        }
        let statuses = statuses(http, members);
        if let Some(leader) = agreed_leader(members, &statuses) {
            return Ok(leader);
        }
        signals.bail_if_aborted()?;
        if Instant::now() >= deadline {
            let views: Vec<String> = members
                .iter()
                .zip(&statuses)
                .map(|(member, status)| match status {
                    Some(status) => format!(
                        "{}: {} in term {}, leader {}",
                        member.id,
                        status.role,
                        status.term,
                        status.leader.as_deref().unwrap_or("unknown")
                    ),
                    None => format!("{}: no answer from {}", member.id, member.url),
                })
                .collect();
            bail!("the cluster did not agree on a leader within {timeout:?}: {}", views.join("; "));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The index of the leader every member names, if all answered and it says it leads.
fn agreed_leader(members: &[Member], statuses: &[Option<Status>]) -> Option<usize> {
    let leader = statuses.first()?.as_ref()?.leader.clone()?;
    let all_agree = statuses.iter().all(|status| status.as_ref().is_some_and(|s| s.leader.as_ref() == Some(&leader)));
    let index = members.iter().position(|member| member.id == leader)?;
    let leads = statuses[index].as_ref().is_some_and(|status| status.role == "leader");
    (all_agree && leads).then_some(index)
}

/// What the watcher saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Leaders {
    /// How many times a new (term, leader) pair appeared after the first.
    pub changes: u64,
    /// The lowest and highest term any node reported.
    pub first_term: Option<u64>,
    pub last_term: Option<u64>,
    /// Terms in which two nodes were named leader: a violation of Election Safety
    /// (Raft §5.2). Each entry is `term: n1 n2`.
    pub split_terms: Vec<String>,
}

/// Polls every member (of the moment) until `stop`, collecting the leaders it sees.
pub fn watch(members: &Roster, access: &Access, stop: &AtomicBool) -> Leaders {
    let http = Http::new(WATCH_TIMEOUT, access);
    let mut leaders: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    let mut terms: Option<(u64, u64)> = None;
    while !stop.load(Ordering::Relaxed) {
        for status in statuses(&http, &members.current()).into_iter().flatten() {
            terms = Some(
                terms.map_or((status.term, status.term), |(low, high)| (low.min(status.term), high.max(status.term))),
            );
            let named = leaders.entry(status.term).or_default();
            if status.role == "leader" {
                named.insert(status.id.clone());
            }
            if let Some(leader) = status.leader {
                named.insert(leader);
            }
        }
        std::thread::sleep(WATCH_INTERVAL);
    }
    let pairs: usize = leaders.values().map(BTreeSet::len).sum();
    let split_terms = leaders
        .iter()
        .filter(|(_, named)| named.len() > 1)
        .map(|(term, named)| format!("{term}: {}", named.iter().cloned().collect::<Vec<_>>().join(" ")))
        .collect();
    Leaders {
        changes: u64::try_from(pairs.saturating_sub(1)).unwrap_or(u64::MAX),
        first_term: terms.map(|(low, _)| low),
        last_term: terms.map(|(_, high)| high),
        split_terms,
    }
}
