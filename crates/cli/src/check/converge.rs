//! After the workload: read every key back through the leader, then check that the
//! replicas converged: once every node has applied the same index, every node's own copy
//! (`?stale`) must hold the same keys, values and indexes. The nodes are the final
//! members: after a `membership` fault, not those removed.

use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use serde::Serialize;
use skiff_check::{Operation, Outcome};
use ureq::http::Method;

use super::http::{Access, Answer, Http, KvEntry, snippet};
use super::watch::{find_leader, statuses};
use super::workload::Client;
use super::{Member, Signals};

/// How long the final reads may take in all.
const FINAL_READS_TIMEOUT: Duration = Duration::from_secs(30);

/// Reads every key once through the leader with a consistent read, recorded as client
/// `client`; a read that fails is recorded (and left out by the checker) and tried again.
pub fn final_reads(
    members: &[Member],
    keys: &[String],
    client: u64,
    start: Instant,
    request_timeout: Duration,
    access: &Access,
    signals: &Signals,
) -> Result<Vec<Operation>> {
    let counter = AtomicU64::new(0);
    let status_http = Http::new(request_timeout, access);
    let mut reader = Client::new(client, start, Http::new(request_timeout, access), &counter);
    let deadline = Instant::now() + FINAL_READS_TIMEOUT;
    for key in keys {
        loop {
            if let Some(leader) = find_leader(&status_http, members)
                && reader.get(&members[leader].url, key).is_some()
            {
                break;
            }
            signals.bail_if_aborted()?;
            if Instant::now() >= deadline {
                bail!("could not read {key:?} back through the leader within {FINAL_READS_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let reads = reader.log.history;
    debug_assert!(reads.iter().filter(|read| matches!(read.outcome, Outcome::Ok { .. })).count() == keys.len());
    Ok(reads)
}

/// Whether the replicas ended identical.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Convergence {
    pub converged: bool,
    /// The index every node had applied when their copies were compared.
    pub applied_index: Option<u64>,
    pub nodes: usize,
    /// The ids of the nodes compared: the final members.
    pub members: Vec<String>,
    /// Keys in the compared copies (of the first node).
    pub keys: usize,
    /// For each node that differs from the first: the first differing key.
    pub differences: Vec<String>,
    /// Why the copies could not be compared, if they could not.
    pub problem: Option<String>,
}

/// Waits up to `timeout` for every node to report the same applied index, then compares
/// their copies of the keys under `prefix`.
pub fn convergence(http: &Http, members: &[Member], prefix: &str, timeout: Duration) -> Convergence {
    let deadline = Instant::now() + timeout;
    let mut last_seen = String::new();
    while Instant::now() < deadline {
        match settled_copies(http, members, prefix) {
            Ok(Some((applied, copies))) => return compare(members, applied, &copies),
            Ok(None) => {}
            Err(error) => last_seen = format!("{error:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let applied: Vec<String> = members
        .iter()
        .zip(statuses(http, members))
        .map(|(member, status)| match status {
            Some(status) => format!("{} {}", member.id, status.applied),
            None => format!("{} no answer", member.id),
        })
        .collect();
    let mut problem = format!("the nodes did not reach one applied index within {timeout:?}: {}", applied.join(", "));
    if !last_seen.is_empty() {
        problem.push_str(&format!(" (last error: {last_seen})"));
    }
    Convergence { nodes: members.len(), members: ids(members), problem: Some(problem), ..Convergence::default() }
}

/// Every node's copy, if all nodes report the same applied index before and after reading
/// them (so the copies are of that one state).
fn settled_copies(http: &Http, members: &[Member], prefix: &str) -> Result<Option<(u64, Vec<Vec<KvEntry>>)>> {
    let Some(before) = same_applied(http, members) else { return Ok(None) };
    let copies = members.iter().map(|member| copy(http, &member.url, prefix)).collect::<Result<Vec<_>>>()?;
    Ok((same_applied(http, members) == Some(before)).then_some((before, copies)))
}

fn same_applied(http: &Http, members: &[Member]) -> Option<u64> {
    let applied: Vec<Option<u64>> =
        statuses(http, members).into_iter().map(|status| status.map(|status| status.applied)).collect();
    let first = (*applied.first()?)?;
    applied.iter().all(|&index| index == Some(first)).then_some(first)
}

/// A node's own copy of the keys under `prefix` (`?recurse&stale`).
fn copy(http: &Http, base: &str, prefix: &str) -> Result<Vec<KvEntry>> {
    let url = format!("{base}/v1/kv/{}?recurse&stale", skiff_client::encode_key(prefix));
    match http.send(Method::GET, &url, None) {
        Answer::Reply { status: 404, .. } => Ok(Vec::new()),
        Answer::Reply { status: 200, body } => Ok(serde_json::from_slice(&body)?),
        Answer::Reply { status, body } => bail!("{url} answered HTTP {status}: {}", snippet(&body)),
        Answer::NotSent(reason) | Answer::Lost(reason) => bail!("{url}: {reason}"),
    }
}

fn compare(members: &[Member], applied: u64, copies: &[Vec<KvEntry>]) -> Convergence {
    let reference = &copies[0];
    let differences: Vec<String> = members
        .iter()
        .zip(copies)
        .skip(1)
        .filter_map(|(member, copy)| first_difference(&members[0].id, reference, &member.id, copy))
        .collect();
    Convergence {
        converged: differences.is_empty(),
        applied_index: Some(applied),
        nodes: members.len(),
        members: ids(members),
        keys: reference.len(),
        differences,
        problem: None,
    }
}

fn ids(members: &[Member]) -> Vec<String> {
    members.iter().map(|member| member.id.clone()).collect()
}

/// The first key where two copies differ, described.
fn first_difference(first_id: &str, first: &[KvEntry], id: &str, other: &[KvEntry]) -> Option<String> {
    let describe = |entry: Option<&KvEntry>| match entry {
        None => "nothing".to_string(),
        Some(entry) => format!(
            "{:?} (CreateIndex {}, ModifyIndex {}, Flags {})",
            decoded(entry.value.as_deref()),
            entry.create_index,
            entry.modify_index,
            entry.flags
        ),
    };
    let length = first.len().max(other.len());
    (0..length).find_map(|position| {
        let (a, b) = (first.get(position), other.get(position));
        if a == b {
            return None;
        }
        // Name the smaller key: the one missing from the other copy, or the one that differs.
        let key = match (a, b) {
            (Some(a), Some(b)) => a.key.as_str().min(b.key.as_str()),
            (Some(a), None) => a.key.as_str(),
            (None, Some(b)) => b.key.as_str(),
            (None, None) => unreachable!("position < length"),
        };
        let find = |copy: &[KvEntry]| copy.iter().find(|entry| entry.key == key).cloned();
        Some(format!(
            "{id}: key {key:?} holds {} where {first_id} holds {}",
            describe(find(other).as_ref()),
            describe(find(first).as_ref())
        ))
    })
}

/// A base64 value as text, for a message.
fn decoded(value: Option<&str>) -> String {
    use base64::Engine as _;
    let bytes = value.map(|value| base64::engine::general_purpose::STANDARD.decode(value));
    match bytes {
        None => String::new(),
        Some(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
        Some(Err(_)) => format!("(base64) {}", value.unwrap_or_default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, modify_index: u64) -> KvEntry {
        KvEntry { key: key.into(), value: Some("dg==".into()), create_index: 1, modify_index, flags: 0 }
    }

    #[test]
    fn differences_name_the_first_key() {
        let a = vec![entry("k1", 3), entry("k2", 5)];
        assert_eq!(first_difference("n1", &a, "n2", &a.clone()), None);
        let b = vec![entry("k1", 3), entry("k2", 4)];
        let difference = first_difference("n1", &a, "n2", &b).expect("differs");
        assert!(difference.starts_with("n2: key \"k2\" holds \"v\" (CreateIndex 1, ModifyIndex 4"), "{difference}");
        let missing = first_difference("n1", &a, "n3", &a[..1]).expect("differs");
        assert!(missing.starts_with("n3: key \"k2\" holds nothing where n1 holds \"v\""), "{missing}");
    }
}
