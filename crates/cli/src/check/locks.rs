//! The `lock` workload: clients take one lock in turn with Skiff leases, write fenced values
//! while they hold it, and some are paused past their TTL while holding it; a thread writes
//! keys with a lease of the same TTL and watches them disappear.
//!
//! Clients are threads, so a pause is a sleep: the client stops renewing and does nothing
//! for longer than its TTL (plus an election timeout and a margin), which is what SIGSTOP
//! would do to a client process. Then it tries a fenced write again with its old token.
//!
//! **What is checked** (each a proof from recorded answers and the final state):
//! - Every fenced write goes to a key of its own (`fenced/c<client>-<n>`, the value naming
//!   the client, the token and the sequence), so the final listing orders the writes that
//!   were applied by their Raft index (their `ModifyIndex`). In that order the tokens never
//!   go down, each write comes after its token's acquisition, no write of token `t` comes
//!   after a later acquisition `a > t` (the lock had moved on), and a token's writes are all
//!   from the client that acquired it. A write acknowledged `true` is in the listing; one
//!   refused as fenced is not. A write after a pause past the TTL is refused.
//! - A key put with a lease is gone by the lease's latest possible deadline (the grant's
//!   answer + TTL) plus the cluster's longest election timeout and a margin: a consistent
//!   read invoked after that which still finds it is a violation. A read that completed
//!   before the earliest deadline (the grant's request + TTL) and found it gone is one too.
//!   The measured error of each key is when a read first found it gone minus the earliest
//!   deadline (so it includes up to one polling interval).
//! - A full outage (`restart-all`) stops the cluster clock: no node runs to count the time,
//!   and it goes on from the entries the nodes replay (docs/coordination.md). So a key may
//!   outlive its deadline by the outages since its grant, and a write after a pause that an
//!   outage overlapped may be accepted: the lease had not ended on the cluster clock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use skiff_client::{Client, Consistency, Error, SessionId};

use super::membership::Roster;
use crate::client::Security;

/// How often the TTL thread reads each of its keys: the precision of the measured error.
const POLL: Duration = Duration::from_millis(20);
/// Added to the election timeout for what a leader needs to notice a due deadline and
/// commit its clock entry, and for reads on the way.
const EXPIRY_MARGIN: Duration = Duration::from_millis(500);
/// Fenced writes per tenure.
const WRITES_PER_TENURE: u64 = 3;
/// The share of tenures in which the client is paused past its TTL.
const PAUSE_RATIO: f64 = 0.3;

/// What the lock clients and the TTL thread share.
pub struct LockWorkload<'a> {
    pub members: &'a Roster,
    /// The run's key prefix (empty on a cluster started here).
    pub prefix: &'a str,
    pub start: Instant,
    pub stop: &'a AtomicBool,
    pub request_timeout: Duration,
    pub security: &'a Security,
    pub seed: u64,
    /// The leases' TTL.
    pub ttl: Duration,
    /// The longest election timeout of the cluster: how late an expiry may be, beyond a
    /// margin.
    pub election_timeout: Duration,
}

/// One fenced write as its client saw it.
#[derive(Clone, Debug, Serialize)]
pub struct FencedWrite {
    pub client: u64,
    pub key: String,
    pub token: u64,
    /// After a pause past the TTL: it must be refused.
    pub stale: bool,
    /// For a stale write, when the pause began and the write was sent (ns since the start).
    #[serde(skip)]
    pub paused: Option<(u64, u64)>,
    pub outcome: WriteOutcome,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteOutcome {
    Written,
    Refused,
    Unknown,
}

/// One key put with a lease, and what the reads saw.
#[derive(Clone, Debug, Default)]
pub struct TtlKey {
    key: String,
    /// When the grant was asked and answered, ns since the start.
    granted_from: u64,
    granted_by: u64,
    /// The latest invocation of a read that found it.
    last_present: Option<u64>,
    /// When the first read that found it gone completed.
    first_absent: Option<u64>,
}

/// How the report counts a client library error (the lock and transfer workloads).
pub(super) fn client_error_class(error: &Error) -> String {
    match error {
        Error::Unavailable { .. } => "HTTP 503".to_string(),
        Error::Timeout { .. } => "timeout".to_string(),
        Error::Connect { .. } => "connection refused".to_string(),
        Error::NoSuchSession { .. } => "session ended".to_string(),
        Error::Http { status, .. } => format!("HTTP {status}"),
        _ => "other".to_string(),
    }
}

/// What the lock clients recorded.
#[derive(Clone, Default)]
pub struct LockLog {
    /// Token -> the client whose acquire answered it.
    pub acquisitions: BTreeMap<u64, u64>,
    pub writes: Vec<FencedWrite>,
    pub pauses: u64,
    pub errors: BTreeMap<String, u64>,
}

impl LockLog {
    fn error(&mut self, error: &Error) {
        *self.errors.entry(client_error_class(error)).or_default() += 1;
    }

    fn merge(&mut self, other: LockLog) {
        self.acquisitions.extend(other.acquisitions);
        self.writes.extend(other.writes);
        self.pauses += other.pauses;
        for (class, count) in other.errors {
            *self.errors.entry(class).or_default() += count;
        }
    }
}

impl LockWorkload<'_> {
    fn lock_key(&self) -> String {
        format!("{}lock", self.prefix)
    }

    /// The prefix of the fenced writes' keys.
    pub fn fenced_prefix(&self) -> String {
        format!("{}fenced/", self.prefix)
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// A client of the members now.
    fn client(&self) -> Option<Client> {
        let urls: Vec<String> = self.members.current().into_iter().map(|member| member.url).collect();
        let builder = Client::builder().endpoints(urls).timeout(self.request_timeout);
        self.security.apply(builder).build().ok()
    }

    /// How long a paused client does nothing: past its TTL by the election timeout and a
    /// margin, so that its lease has surely ended on the cluster clock.
    fn pause(&self) -> Duration {
        self.ttl + self.election_timeout + 2 * EXPIRY_MARGIN
    }

    /// Runs lock client `id` until told to stop.
    pub fn run_client(&self, id: u64) -> LockLog {
        let mut rng = StdRng::seed_from_u64(self.seed ^ (id + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
        let mut log = LockLog::default();
        let mut written = 0u64;
        let mut tenures = 0u64;
        while !self.stop.load(Ordering::Relaxed) {
            let Some(client) = self.client() else { break };
            let lease = match client.lease_grant(self.ttl) {
                Ok(lease) => lease.id,
                Err(error) => {
                    log.error(&error);
                    std::thread::sleep(POLL);
                    continue;
                }
            };
            let Some(token) = self.acquire(&client, &lease, &mut log) else { continue };
            log.acquisitions.insert(token, id);
            tenures += 1;
            // Client 0's first tenure always pauses, so every run has one.
            let paused = (id == 0 && tenures == 1) || rng.random_bool(PAUSE_RATIO);
            for seq in 1..=WRITES_PER_TENURE {
                written += 1;
                let stale = paused && seq == WRITES_PER_TENURE;
                let mut pause = None;
                if stale {
                    log.pauses += 1;
                    let began = self.now_ns();
                    std::thread::sleep(self.pause());
                    pause = Some((began, self.now_ns()));
                }
                let key = format!("{}c{id}-{written}", self.fenced_prefix());
                let value = format!("c{id} t{token} s{seq}");
                let outcome = match client.put_fenced(&key, value, token) {
                    Ok(true) => WriteOutcome::Written,
                    Ok(false) => WriteOutcome::Unknown,
                    Err(Error::Fenced { .. }) => WriteOutcome::Refused,
                    Err(error) => {
                        log.error(&error);
                        WriteOutcome::Unknown
                    }
                };
                log.writes.push(FencedWrite { client: id, key, token, stale, paused: pause, outcome });
                if !stale && let Err(error) = client.lease_keepalive(&lease) {
                    log.error(&error);
                }
            }
            let _ = client.release(&self.lock_key(), "", &lease);
            let _ = client.lease_revoke(&lease);
        }
        log
    }

    /// Acquires the lock for `lease`, renewing it while another holds the lock: the token,
    /// or `None` when the lease ended or the run is over.
    fn acquire(&self, client: &Client, lease: &SessionId, log: &mut LockLog) -> Option<u64> {
        let mut renewed = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            match client.acquire(&self.lock_key(), "held", lease) {
                Ok(Some(token)) => return Some(token),
                Ok(None) => std::thread::sleep(POLL / 2),
                Err(error @ Error::NoSuchSession { .. }) => {
                    log.error(&error);
                    return None;
                }
                Err(error) => log.error(&error),
            }
            if renewed.elapsed() >= self.ttl / 3 {
                match client.lease_keepalive(lease) {
                    Ok(_) => renewed = Instant::now(),
                    Err(error @ Error::NoSuchSession { .. }) => {
                        log.error(&error);
                        return None;
                    }
                    Err(error) => log.error(&error),
                }
            }
        }
        let _ = client.lease_revoke(lease);
        None
    }

    /// Puts keys with leases of the TTL, one about every second while their deadline (and
    /// the allowance) falls within the run, and reads each every [`POLL`] until it is gone.
    pub fn run_ttl_keys(&self, time: Duration) -> Vec<TtlKey> {
        let mut keys: Vec<TtlKey> = Vec::new();
        let mut next_grant = Instant::now();
        let mut number = 0;
        let last_grant = time.saturating_sub(self.ttl + self.election_timeout + 2 * EXPIRY_MARGIN);
        while !self.stop.load(Ordering::Relaxed) {
            let Some(client) = self.client() else { break };
            if Instant::now() >= next_grant && self.start.elapsed() < last_grant {
                next_grant = Instant::now() + Duration::from_secs(1);
                number += 1;
                let key = format!("{}ttl/k{number}", self.prefix);
                let granted_from = self.now_ns();
                if let Ok(lease) = client.lease_grant(self.ttl) {
                    let granted_by = self.now_ns();
                    if let Ok(true) = client.put_leased(&key, "expires", &lease.id) {
                        keys.push(TtlKey { key, granted_from, granted_by, ..TtlKey::default() });
                    }
                }
            }
            for entry in keys.iter_mut().filter(|entry| entry.first_absent.is_none()) {
                let invoked = self.now_ns();
                match client.get(&entry.key, Consistency::Consistent) {
                    Ok(_) => entry.last_present = Some(invoked),
                    Err(Error::NotFound { .. }) => entry.first_absent = Some(self.now_ns()),
                    Err(_) => {}
                }
            }
            std::thread::sleep(POLL);
        }
        keys
    }
}

/// What the lock workload found, as the report shows it.
#[derive(Debug, Default, Serialize)]
pub struct LockReport {
    pub passed: bool,
    pub acquisitions: u64,
    /// Fenced writes by outcome.
    pub written: u64,
    pub refused: u64,
    pub unknown: u64,
    /// Clients paused past their TTL holding the lock, and what their next write got.
    pub pauses: u64,
    pub stale_writes_refused: u64,
    /// Fenced writes applied, as the final listing shows them.
    pub writes_in_log: u64,
    pub errors: BTreeMap<String, u64>,
    pub ttl: TtlReport,
    /// What contradicts the guarantees, one line each.
    pub violations: Vec<String>,
}

/// How late keys with a lease disappeared.
#[derive(Debug, Default, Serialize)]
pub struct TtlReport {
    pub ttl_ms: u64,
    /// TTL keys put, and those seen gone before the run ended.
    pub keys: u64,
    pub expired: u64,
    /// How late a key may still be seen past its latest deadline: the longest election
    /// timeout plus a margin.
    pub allowance_ms: u64,
    /// First read that found a key gone minus its earliest deadline, less the full outages
    /// since its grant (the cluster clock stood still), in milliseconds.
    pub max_error_ms: Option<f64>,
    pub median_error_ms: Option<f64>,
    /// Keys seen expiring whose TTL spanned a full outage.
    pub across_outages: u64,
    pub poll_ms: u64,
}

/// One applied fenced write, from the final listing.
struct Applied {
    index: u64,
    client: u64,
    token: u64,
    key: String,
}

/// Parses `c<client> t<token> s<seq>`.
fn parse_value(value: &[u8]) -> Option<(u64, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.split(' ');
    let client = parts.next()?.strip_prefix('c')?.parse().ok()?;
    let token = parts.next()?.strip_prefix('t')?.parse().ok()?;
    Some((client, token))
}

/// Checks what the clients recorded against the final listing of the fenced keys
/// (`(key, value, modify index)`), and the TTL keys; builds the report. `outages` are the
/// full outages (`restart-all`), from the kill to the restart, in ns since the start.
pub fn conclude(
    log: LockLog,
    listing: &[(String, Vec<u8>, u64)],
    ttl_keys: &[TtlKey],
    ttl: Duration,
    allowance: Duration,
    outages: &[(u64, u64)],
) -> LockReport {
    let mut violations = Vec::new();
    let mut applied: Vec<Applied> = Vec::new();
    for (key, value, index) in listing {
        match parse_value(value) {
            Some((client, token)) => applied.push(Applied { index: *index, client, token, key: key.clone() }),
            None => violations.push(format!("{key}: a value no client wrote: {:?}", String::from_utf8_lossy(value))),
        }
    }
    applied.sort_by_key(|write| write.index);
    let in_log: BTreeSet<&str> = applied.iter().map(|write| write.key.as_str()).collect();
    for write in &log.writes {
        let present = in_log.contains(write.key.as_str());
        match write.outcome {
            WriteOutcome::Written if !present => {
                violations.push(format!("{}: acknowledged (token {}) but not in the store", write.key, write.token))
            }
            WriteOutcome::Refused if present => {
                violations.push(format!("{}: refused as fenced (token {}) yet applied", write.key, write.token))
            }
            _ => {}
        }
        let clock_stopped = write.paused.is_some_and(|(from, to)| down_ns(outages, from, to) > 0);
        if write.stale && write.outcome == WriteOutcome::Written && !clock_stopped {
            violations.push(format!(
                "{}: client {} wrote with token {} after a pause past its TTL",
                write.key, write.client, write.token
            ));
        }
    }
    let mut tokens: BTreeSet<u64> = log.acquisitions.keys().copied().collect();
    tokens.extend(applied.iter().map(|write| write.token));
    for pair in applied.windows(2) {
        if pair[1].token < pair[0].token {
            violations.push(format!(
                "interleaved holders: {} (token {}, index {}) after {} (token {}, index {})",
                pair[1].key, pair[1].token, pair[1].index, pair[0].key, pair[0].token, pair[0].index
            ));
        }
    }
    for write in &applied {
        if write.index <= write.token {
            violations.push(format!(
                "{}: applied at {} before its token {} was acquired",
                write.key, write.index, write.token
            ));
        }
        if let Some(later) = tokens.range(write.token + 1..write.index).next() {
            violations.push(format!(
                "{}: token {} wrote at index {} after the lock was acquired again at {later}",
                write.key, write.token, write.index
            ));
        }
        if let Some(&holder) = log.acquisitions.get(&write.token)
            && holder != write.client
        {
            violations.push(format!(
                "{}: client {} wrote with client {holder}'s token {}",
                write.key, write.client, write.token
            ));
        }
    }
    let ttl_report = ttl_report(ttl_keys, ttl, allowance, outages, &mut violations);
    let count = |outcome| log.writes.iter().filter(|write| !write.stale && write.outcome == outcome).count() as u64;
    LockReport {
        passed: violations.is_empty(),
        acquisitions: log.acquisitions.len() as u64,
        written: count(WriteOutcome::Written),
        refused: count(WriteOutcome::Refused),
        unknown: count(WriteOutcome::Unknown),
        pauses: log.pauses,
        stale_writes_refused: log
            .writes
            .iter()
            .filter(|write| write.stale && write.outcome == WriteOutcome::Refused)
            .count() as u64,
        writes_in_log: applied.len() as u64,
        errors: log.errors,
        ttl: ttl_report,
        violations,
    }
}

/// How long the outages and the span `from..to` (ns) overlap.
fn down_ns(outages: &[(u64, u64)], from: u64, to: u64) -> u64 {
    outages.iter().map(|&(start, end)| end.min(to).saturating_sub(start.max(from))).sum()
}

/// The TTL keys' errors, and their violations.
fn ttl_report(
    keys: &[TtlKey],
    ttl: Duration,
    allowance: Duration,
    outages: &[(u64, u64)],
    violations: &mut Vec<String>,
) -> TtlReport {
    let ttl_ns = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
    let allowance_ns = u64::try_from(allowance.as_nanos()).unwrap_or(u64::MAX);
    let mut errors: Vec<f64> = Vec::new();
    let mut across_outages = 0;
    for key in keys {
        let earliest = key.granted_from + ttl_ns;
        let latest = key.granted_by + ttl_ns;
        // The cluster clock stood still while the whole cluster was down.
        if let Some(present) = key.last_present
            && let down = down_ns(outages, key.granted_from, present)
            && present > latest + allowance_ns + down
        {
            violations.push(format!(
                "{}: still there {:.0} ms after its latest deadline (allowed: {} ms{})",
                key.key,
                (present - latest) as f64 / 1e6,
                allowance.as_millis(),
                match down {
                    0 => String::new(),
                    down => format!(", plus {:.0} ms of full outage", down as f64 / 1e6),
                }
            ));
        }
        if let Some(absent) = key.first_absent {
            if absent < earliest {
                violations.push(format!(
                    "{}: gone {:.0} ms before its earliest deadline",
                    key.key,
                    (earliest - absent) as f64 / 1e6
                ));
            }
            let down = down_ns(outages, key.granted_from, absent);
            across_outages += u64::from(down > 0);
            errors.push((absent as f64 - earliest as f64 - down as f64) / 1e6);
        }
    }
    errors.sort_by(f64::total_cmp);
    TtlReport {
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        keys: keys.len() as u64,
        expired: errors.len() as u64,
        allowance_ms: u64::try_from(allowance.as_millis()).unwrap_or(u64::MAX),
        max_error_ms: errors.last().copied(),
        median_error_ms: (!errors.is_empty()).then(|| errors[errors.len() / 2]),
        across_outages,
        poll_ms: u64::try_from(POLL.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The allowance of an expiry past its latest deadline: `election_timeout` and the margin.
pub fn allowance(election_timeout: Duration) -> Duration {
    election_timeout + EXPIRY_MARGIN
}

/// Merges the lock clients' logs.
pub fn merge(logs: Vec<LockLog>) -> LockLog {
    let mut all = LockLog::default();
    for log in logs {
        all.merge(log);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(client: u64, n: u64, token: u64, outcome: WriteOutcome) -> FencedWrite {
        FencedWrite { client, key: format!("fenced/c{client}-{n}"), token, stale: false, paused: None, outcome }
    }

    fn listed(client: u64, n: u64, token: u64, index: u64) -> (String, Vec<u8>, u64) {
        (format!("fenced/c{client}-{n}"), format!("c{client} t{token} s1").into_bytes(), index)
    }

    fn check(log: LockLog, listing: &[(String, Vec<u8>, u64)]) -> Vec<String> {
        conclude(log, listing, &[], Duration::from_secs(2), Duration::from_secs(1), &[]).violations
    }

    #[test]
    fn holders_in_turn_pass_and_interleaved_or_late_writes_fail() {
        let log = || LockLog {
            acquisitions: BTreeMap::from([(10, 1), (20, 2)]),
            writes: vec![
                write(1, 1, 10, WriteOutcome::Written),
                write(1, 2, 10, WriteOutcome::Unknown),
                write(2, 1, 20, WriteOutcome::Written),
            ],
            ..LockLog::default()
        };
        assert_eq!(
            check(log(), &[listed(1, 1, 10, 11), listed(1, 2, 10, 12), listed(2, 1, 20, 21)]),
            Vec::<String>::new()
        );
        // Client 1's write applied after client 2 acquired at 20: the lock had moved on.
        let late = check(log(), &[listed(1, 1, 10, 11), listed(2, 1, 20, 21), listed(1, 2, 10, 22)]);
        assert!(late.iter().any(|v| v.contains("interleaved")), "{late:?}");
        assert!(late.iter().any(|v| v.contains("after the lock was acquired again at 20")), "{late:?}");
        // An acknowledged write missing, a refused one applied.
        let mut refused = log();
        refused.writes[1].outcome = WriteOutcome::Refused;
        let wrong = check(refused, &[listed(1, 2, 10, 12), listed(2, 1, 20, 21)]);
        assert!(wrong.iter().any(|v| v.contains("acknowledged (token 10) but not in the store")), "{wrong:?}");
        assert!(wrong.iter().any(|v| v.contains("refused as fenced (token 10) yet applied")), "{wrong:?}");
        // A stale write that went through.
        let mut stale = log();
        stale.writes[1].stale = true;
        stale.writes[1].outcome = WriteOutcome::Written;
        stale.writes[1].paused = Some((1_000, 5_000));
        let listing = [listed(1, 1, 10, 11), listed(1, 2, 10, 12), listed(2, 1, 20, 21)];
        let wrong = check(stale.clone(), &listing);
        assert!(wrong.iter().any(|v| v.contains("after a pause past its TTL")), "{wrong:?}");
        // Unless the whole cluster was down during the pause: its clock stood still, and
        // the lease had not ended on it.
        let during = |outage| conclude(stale.clone(), &listing, &[], Duration::from_secs(2), Duration::ZERO, &[outage]);
        assert_eq!(during((2_000, 3_000)).violations, Vec::<String>::new());
        assert_eq!(during((6_000, 7_000)).violations.len(), 1, "an outage after the write excuses nothing");
    }

    #[test]
    fn ttl_keys_late_or_early_are_violations_and_errors_are_measured() {
        let ms = 1_000_000;
        let key = |first_absent, last_present| TtlKey {
            key: "ttl/k".into(),
            granted_from: 100 * ms,
            granted_by: 110 * ms,
            last_present: Some(last_present),
            first_absent: Some(first_absent),
        };
        let mut violations = Vec::new();
        let report = ttl_report(
            &[key(2300 * ms, 2000 * ms), key(2200 * ms, 2050 * ms)],
            Duration::from_secs(2),
            Duration::from_millis(600),
            &[],
            &mut violations,
        );
        assert_eq!(violations, Vec::<String>::new());
        assert_eq!((report.expired, report.max_error_ms, report.median_error_ms), (2, Some(200.0), Some(200.0)));
        ttl_report(
            &[key(2000 * ms, 1900 * ms)],
            Duration::from_secs(2),
            Duration::from_millis(600),
            &[],
            &mut violations,
        );
        assert!(violations[0].contains("before its earliest deadline"), "{violations:?}");
        violations.clear();
        let late = [key(3000 * ms, 2800 * ms)];
        ttl_report(&late, Duration::from_secs(2), Duration::from_millis(600), &[], &mut violations);
        assert!(violations[0].contains("still there"), "{violations:?}");
        // A full outage of 300 ms after the grant stopped the clock: as late is in time,
        // and the outage is not counted as the key's error.
        violations.clear();
        let outage = [(500 * ms, 800 * ms)];
        let report = ttl_report(&late, Duration::from_secs(2), Duration::from_millis(600), &outage, &mut violations);
        assert_eq!(violations, Vec::<String>::new());
        assert_eq!((report.across_outages, report.max_error_ms), (1, Some(600.0)));
        // One before the grant does not.
        ttl_report(&late, Duration::from_secs(2), Duration::from_millis(600), &[(0, 90 * ms)], &mut violations);
        assert!(violations[0].contains("still there"), "{violations:?}");
    }
}
