//! The change-feed check: one watcher per node follows that node's `GET /v1/skiff/watch`
//! stream of the run's prefix through the faults, and what they received must be one
//! committed history (docs/check.md, "The change feed").
//!
//! Each watcher ([`Follower`]) reads NDJSON from its node only. When its stream breaks (the
//! node was killed or cut off), falls silent for [`IDLE_TIMEOUT`] (paused), or is `cut`, it
//! opens a new one on the same node with `index=` the last index it has every change of;
//! the events of one log entry share an index, so an entry counts as complete only when a
//! later index, a `progress` or a `cut` follows it, and a partial entry is dropped with its
//! stream. A stream that begins with a snapshot (the node's history no longer reaches back:
//! it restarted) replaces the watcher's model of the prefix: a rebase, after which the
//! watcher's coverage starts again at the snapshot's index.
//!
//! What is proved, each with its own message:
//! 1. within a watcher, indexes never go backwards and no change is delivered twice;
//! 2. two watchers that saw the same index as events saw the same changes there (the
//!    [`Ledger`] keeps the first watcher's, once);
//! 3. an index some watcher saw is in every other watcher's events when that watcher's
//!    coverage includes it; the kv workload's acknowledged puts and swapped cas (every value
//!    written is unique) are in the feed at exactly one index, its failed ones at none;
//! 4. at the end, each watcher's model (snapshots and puts as writes, deletes and expiries
//!    as removals) equals a linearizable read of the prefix, compared when the watcher
//!    reaches an end marker written after that read.
//!
//! Memory: a watcher keeps the set of indexes it saw and a few coverage intervals; the
//! ledger keeps each index's changes once. That is a few tens of bytes per write, less
//! than the history the run keeps anyway.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, HOST, HeaderValue};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use skiff_check::{Call, Operation, Outcome, Reply};

use super::Member;
use crate::bench::stream::{self as tcp, Tls};
use crate::client::Security;

/// The longest a connection to a node may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest a node may take to answer a stream's request with its headers.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(3);
/// A stream that sends nothing for this long is given up and opened again: a paused node
/// sends nothing, and a quiet one sends a `progress` only after 15 s.
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a waiting watcher looks at the stop flag.
const SLICE: Duration = Duration::from_millis(200);
/// The wait before opening a stream again after a failure (a node that is down).
const RETRY_AFTER: Duration = Duration::from_millis(200);
/// How long every watcher may take to receive its first line, and, at the end, to reach the
/// end marker.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// Violations kept in the report (all are counted).
const MAX_VIOLATIONS: usize = 200;
/// Differences shown for one watcher's final state.
const MAX_DIFFERENCES: usize = 5;

/// The key written before the workload under the prefix, so that every watcher's stream
/// has a line to show where it starts.
const START_MARKER: &str = "skiff-check-feed-start";
/// The key written at the end, after the final read, that every watcher must reach.
const END_MARKER: &str = "skiff-check-feed-end";

/// One line of an NDJSON stream, as the feed sends it (docs/http-api.md).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Line {
    #[serde(rename = "type")]
    pub kind: String,
    pub index: Option<u64>,
    pub key: Option<String>,
    /// Base64.
    pub value: Option<String>,
    pub create_index: Option<u64>,
    pub modify_index: Option<u64>,
    pub flags: Option<u64>,
    /// Of a `cut`: every change up to here was sent.
    pub resume_from: Option<u64>,
    /// Of a `cut`: `slow`, `behind` or `shutdown`.
    pub reason: Option<String>,
}

/// What a change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Put,
    Delete,
    Expire,
}

/// One change of one log entry, compared whole between watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub key: String,
    /// Base64, for a put.
    pub value: Option<String>,
    pub create_index: u64,
    pub modify_index: u64,
    pub flags: u64,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Put => "put",
            Kind::Delete => "delete",
            Kind::Expire => "expire",
        };
        write!(f, "{kind} {:?}", self.key)?;
        if let Some(value) = &self.value {
            write!(f, "={}", shown(value))?;
        }
        write!(f, " (create {}, modify {}, flags {})", self.create_index, self.modify_index, self.flags)
    }
}

/// A key as a watcher's model holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Base64.
    pub value: String,
    pub create_index: u64,
    pub modify_index: u64,
    pub flags: u64,
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (create {}, modify {}, flags {})",
            shown(&self.value),
            self.create_index,
            self.modify_index,
            self.flags
        )
    }
}

/// A base64 value as text when it is UTF-8 (`"c1-4"`), else as base64.
fn shown(value: &str) -> String {
    match BASE64.decode(value).ok().and_then(|bytes| String::from_utf8(bytes).ok()) {
        Some(text) => format!("{text:?}"),
        None => format!("base64:{value}"),
    }
}

/// What the end of the run compares: the final read of the prefix, and the end marker
/// written after it.
pub struct Final {
    pub marker: String,
    /// The marker's value, base64.
    pub token: String,
    pub expected: BTreeMap<String, Held>,
}

impl Final {
    fn is_marker(&self, change: &Change) -> bool {
        change.kind == Kind::Put && change.key == self.marker && change.value.as_deref() == Some(self.token.as_str())
    }

    /// `Ok` if `model` (less the end marker) is the final read; else the differences.
    fn compare(&self, model: &BTreeMap<String, Held>) -> Result<(), String> {
        let keys: BTreeSet<&String> =
            model.keys().chain(self.expected.keys()).filter(|key| **key != self.marker).collect();
        let mut differences = Vec::new();
        for key in keys {
            match (model.get(key), self.expected.get(key)) {
                (Some(held), Some(read)) if held == read => {}
                (Some(held), Some(read)) => {
                    differences.push(format!("{key:?}: the events give {held}, the read {read}"))
                }
                (Some(held), None) => {
                    differences.push(format!("{key:?}: the events give {held}, the read has no such key"))
                }
                (None, Some(read)) => {
                    differences.push(format!("{key:?}: the events have no such key, the read {read}"))
                }
                (None, None) => {}
            }
        }
        if differences.is_empty() {
            return Ok(());
        }
        let more = differences.len().saturating_sub(MAX_DIFFERENCES);
        differences.truncate(MAX_DIFFERENCES);
        let mut text = differences.join("; ");
        if more > 0 {
            text.push_str(&format!("; and {more} more"));
        }
        Err(text)
    }
}

/// Every index some watcher saw as events, with the changes first seen there; and the
/// violations found across watchers.
#[derive(Default)]
pub struct Ledger {
    entries: BTreeMap<u64, (String, Vec<Change>)>,
    violations: Violations,
}

impl Ledger {
    /// Records what `node` saw at `index`: the first watcher's changes are kept, every other
    /// watcher's must equal them (one committed history).
    fn record(&mut self, node: &str, index: u64, changes: &[Change]) {
        match self.entries.get(&index) {
            None => {
                self.entries.insert(index, (node.to_string(), changes.to_vec()));
            }
            Some((first, seen)) if seen != changes => {
                let message = format!(
                    "two histories at index {index}: {first} received [{}], {node} received [{}]",
                    list(seen),
                    list(changes)
                );
                self.violations.push(message);
            }
            Some(_) => {}
        }
    }
}

fn list(changes: &[Change]) -> String {
    changes.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// Messages, the first [`MAX_VIOLATIONS`] kept, all counted.
#[derive(Clone, Debug, Default)]
struct Violations {
    kept: Vec<String>,
    count: u64,
}

impl Violations {
    fn push(&mut self, message: String) {
        self.count += 1;
        if self.kept.len() < MAX_VIOLATIONS {
            self.kept.push(message);
        }
    }
}

/// What every watcher shares.
#[derive(Default)]
pub struct Shared {
    stop: AtomicBool,
    /// The highest index any watcher completed: a watcher's lag is measured from it.
    highest: AtomicU64,
    ledger: Mutex<Ledger>,
    final_read: Mutex<Option<Arc<Final>>>,
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One node's watcher: where it is in that node's feed, its model of the prefix, and what
/// it found.
pub struct Follower {
    node: String,
    /// Every change up to this index was received and applied: where a new stream resumes.
    complete: u64,
    /// Whether the current stream has sent a line (its first tells a snapshot from events).
    started: bool,
    /// Whether any stream ever sent a line.
    started_once: bool,
    /// The changes of the entry being received; complete only when something after it comes.
    pending: Option<(u64, Vec<Change>)>,
    /// The keys of the snapshot being received, at its index.
    snapshot: Option<(u64, BTreeMap<String, Held>)>,
    model: BTreeMap<String, Held>,
    /// The indexes this watcher had every change of, as intervals `(after, up_to]`: one per
    /// stretch of streams that resumed where the last one stopped.
    coverage: Vec<(u64, u64)>,
    /// The indexes at which it received changes.
    seen: BTreeSet<u64>,
    events: u64,
    streams: u64,
    rebases: u64,
    cuts: u64,
    max_lag: u64,
    /// Why streams ended (`idle`, `connection refused`, `cut: slow`...), counted.
    ended: BTreeMap<String, u64>,
    /// The comparison with the final read, once made.
    comparison: Option<Result<(), String>>,
    violations: Violations,
}

impl Follower {
    pub fn new(node: &str) -> Follower {
        Follower {
            node: node.to_string(),
            complete: 0,
            started: false,
            started_once: false,
            pending: None,
            snapshot: None,
            model: BTreeMap::new(),
            coverage: Vec::new(),
            seen: BTreeSet::new(),
            events: 0,
            streams: 0,
            rebases: 0,
            cuts: 0,
            max_lag: 0,
            ended: BTreeMap::new(),
            comparison: None,
            violations: Violations::default(),
        }
    }

    /// A new stream begins: what was not complete is dropped. Returns the index to resume
    /// after.
    pub fn open(&mut self) -> u64 {
        self.pending = None;
        self.snapshot = None;
        self.started = false;
        self.streams += 1;
        self.complete
    }

    fn violate(&mut self, message: String) {
        self.violations.push(format!("{}: {message}", self.node));
    }

    /// Takes one line of the current stream. Returns whether the stream ended (a `cut`).
    pub fn take(&mut self, line: &Line, shared: &Shared) -> bool {
        let first = !self.started;
        self.started = true;
        self.started_once = true;
        let Some(index) = line.index.or(line.resume_from) else {
            self.violate(format!("a {:?} line without an index", line.kind));
            return false;
        };
        match line.kind.as_str() {
            "snapshot" => self.snapshot_key(line, index, first),
            "snapshot-end" => {
                let keys = match self.snapshot.take() {
                    Some((_, keys)) => keys,
                    None if first => BTreeMap::new(),
                    None => {
                        self.violate(format!("a snapshot-end at index {index} in the middle of a stream"));
                        BTreeMap::new()
                    }
                };
                self.rebase(index, keys, shared);
            }
            "put" | "delete" | "expire" => {
                if first {
                    self.begin_events();
                }
                match change(line, index) {
                    Some(change) => self.event(index, change, shared),
                    None => self.violate(format!("a {} line at index {index} without its key", line.kind)),
                }
            }
            "progress" | "cut" => {
                if first {
                    self.begin_events();
                }
                self.reached(index, shared);
                if line.kind == "cut" {
                    self.cuts += 1;
                    let reason = format!("cut: {}", line.reason.as_deref().unwrap_or("no reason"));
                    *self.ended.entry(reason).or_default() += 1;
                    return true;
                }
            }
            other => self.violate(format!("an event of unknown type {other:?} at index {index}")),
        }
        false
    }

    /// A stream that begins with events resumes where the last one stopped.
    fn begin_events(&mut self) {
        if self.coverage.is_empty() {
            self.coverage.push((self.complete, self.complete));
        }
    }

    fn snapshot_key(&mut self, line: &Line, index: u64, first: bool) {
        if self.snapshot.is_none() {
            if !first {
                self.violate(format!("a snapshot key at index {index} in the middle of a stream"));
            }
            self.snapshot = Some((index, BTreeMap::new()));
        }
        let Some((at, keys)) = &mut self.snapshot else { return };
        let at = *at;
        match (&line.key, held(line)) {
            (Some(key), Some(held)) if at == index => {
                keys.insert(key.clone(), held);
            }
            _ => self.violate(format!("a malformed snapshot key at index {index} (snapshot at {at})")),
        }
    }

    /// A change at `index`: part of the pending entry, or the first of the next one, which
    /// completes the pending one.
    fn event(&mut self, index: u64, change: Change, shared: &Shared) {
        match &mut self.pending {
            Some((at, changes)) if *at == index => {
                if changes.contains(&change) {
                    self.violate(format!("{change} delivered twice at index {index}"));
                } else {
                    changes.push(change);
                }
                return;
            }
            Some((at, _)) if *at > index => {
                let at = *at;
                self.violate(format!("{change} at index {index} after index {at}: the stream went backwards"));
                return;
            }
            _ => {}
        }
        if let Some((at, changes)) = self.pending.take() {
            self.finish(at, changes, shared);
        }
        if index <= self.complete {
            self.violate(format!(
                "{change} at index {index}, after every change up to {} was received: delivered twice or out of order",
                self.complete
            ));
            return;
        }
        // The end marker is a plain put, alone in its entry: complete as soon as it comes
        // (nothing may follow it for a while).
        let marker = locked(&shared.final_read).as_ref().is_some_and(|final_read| final_read.is_marker(&change));
        self.pending = Some((index, vec![change]));
        if marker && let Some((at, changes)) = self.pending.take() {
            self.finish(at, changes, shared);
        }
    }

    /// Every change up to `index` was sent (`progress`, `cut`).
    fn reached(&mut self, index: u64, shared: &Shared) {
        if let Some((at, changes)) = self.pending.take() {
            if at > index {
                self.violate(format!("the stream said it had sent everything up to {index} after index {at}"));
            }
            self.finish(at, changes, shared);
        }
        if index < self.complete {
            self.violate(format!("the stream went back to index {index} after index {}", self.complete));
            return;
        }
        self.advance(index, shared);
    }

    /// The entry at `index` is complete: compare it, apply it.
    fn finish(&mut self, index: u64, changes: Vec<Change>, shared: &Shared) {
        let final_read = locked(&shared.final_read).clone();
        if let Some(final_read) = final_read
            && self.comparison.is_none()
            && changes.iter().any(|change| final_read.is_marker(change))
        {
            // The model just before the end marker: the final read was taken before it was
            // written, and the workload had stopped.
            self.comparison = Some(final_read.compare(&self.model));
        }
        for change in &changes {
            match change.kind {
                Kind::Put => {
                    let held = Held {
                        value: change.value.clone().unwrap_or_default(),
                        create_index: change.create_index,
                        modify_index: change.modify_index,
                        flags: change.flags,
                    };
                    self.model.insert(change.key.clone(), held);
                }
                Kind::Delete | Kind::Expire => {
                    self.model.remove(&change.key);
                }
            }
        }
        self.events += changes.len() as u64;
        self.seen.insert(index);
        locked(&shared.ledger).record(&self.node, index, &changes);
        self.advance(index, shared);
    }

    /// Every change up to `index` is in: the coverage grows, and the lag is measured.
    fn advance(&mut self, index: u64, shared: &Shared) {
        self.complete = index;
        if let Some(last) = self.coverage.last_mut() {
            last.1 = index;
        }
        let highest = shared.highest.fetch_max(index, Ordering::Relaxed).max(index);
        self.max_lag = self.max_lag.max(highest - index);
    }

    /// The stream began with a snapshot of the prefix at `index`: the model is replaced by
    /// it, and coverage starts again there.
    fn rebase(&mut self, index: u64, keys: BTreeMap<String, Held>, shared: &Shared) {
        if index < self.complete {
            self.violate(format!("a snapshot at index {index}, before index {} already received", self.complete));
        }
        let final_read = locked(&shared.final_read).clone();
        if let Some(final_read) = final_read
            && self.comparison.is_none()
            && keys.get(&final_read.marker).is_some_and(|held| held.value == final_read.token)
        {
            self.comparison = Some(final_read.compare(&keys));
        }
        self.model = keys;
        self.rebases += 1;
        if self.coverage.last().is_none_or(|last| last.1 != index) {
            self.coverage.push((index, index));
        }
        self.advance(index, shared);
    }
}

/// The change a `put`, `delete` or `expire` line describes.
fn change(line: &Line, index: u64) -> Option<Change> {
    let kind = match line.kind.as_str() {
        "put" => Kind::Put,
        "delete" => Kind::Delete,
        _ => Kind::Expire,
    };
    Some(Change {
        kind,
        key: line.key.clone()?,
        value: if kind == Kind::Put { Some(line.value.clone().unwrap_or_default()) } else { None },
        create_index: line.create_index.unwrap_or(0),
        modify_index: line.modify_index.unwrap_or(index),
        flags: line.flags.unwrap_or(0),
    })
}

/// A `snapshot` line's key.
fn held(line: &Line) -> Option<Held> {
    Some(Held {
        value: line.value.clone().unwrap_or_default(),
        create_index: line.create_index?,
        modify_index: line.modify_index?,
        flags: line.flags.unwrap_or(0),
    })
}

/// One watcher's findings, as the report shows them.
#[derive(Clone, Debug, Serialize)]
pub struct WatcherReport {
    pub node: String,
    /// Changes received as events (not snapshot keys), in complete entries.
    pub events: u64,
    /// Log entries (indexes) with changes under the prefix.
    pub entries: u64,
    /// Streams opened; all but the first are reconnects.
    pub streams: u64,
    pub reconnects: u64,
    /// Streams that began with a snapshot (the first one may).
    pub rebases: u64,
    /// Streams the node ended with a `cut`.
    pub cuts: u64,
    /// The most log indexes it was behind the most advanced watcher when an entry came in.
    pub max_lag: u64,
    /// The indexes it had every change of, as `[after, up_to]`.
    pub coverage: Vec<[u64; 2]>,
    /// Why its streams ended, counted.
    pub stream_ends: BTreeMap<String, u64>,
    /// `matched the final read`, or why not.
    pub final_state: String,
}

/// What the change-feed check found.
#[derive(Clone, Debug, Serialize)]
pub struct FeedReport {
    pub passed: bool,
    pub prefix: String,
    pub watchers: Vec<WatcherReport>,
    /// Log indexes with changes under the prefix that some watcher received.
    pub indexes: usize,
    /// Whether the watchers together covered every index from the first to the last.
    pub covered_without_gap: bool,
    /// Acknowledged puts and swapped cas found at exactly one index.
    pub acknowledged_found: u64,
    /// Acknowledged writes in no watcher's events, in a gap of the coverage: not provable.
    pub acknowledged_unverifiable: u64,
    pub violation_count: u64,
    pub violations: Vec<String>,
}

/// Judges what the watchers received. `current` are the nodes still members (the others'
/// final state is not compared); `writes` is the kv workload's history (every value
/// written unique), or empty.
pub fn judge(
    prefix: &str,
    followers: &[Follower],
    ledger: &Ledger,
    current: &[String],
    writes: &[Operation],
) -> FeedReport {
    let mut violations = Violations::default();
    for follower in followers {
        for message in &follower.violations.kept {
            violations.push(message.clone());
        }
        violations.count += follower.violations.count - follower.violations.kept.len() as u64;
    }
    for message in &ledger.violations.kept {
        violations.push(message.clone());
    }
    violations.count += ledger.violations.count - ledger.violations.kept.len() as u64;
    missing(followers, ledger, &mut violations);
    let covered_without_gap = merged(followers).len() == 1;
    let (found, unverifiable) = acknowledged(ledger, writes, covered_without_gap, &mut violations);
    let mut watchers = Vec::new();
    for follower in followers {
        let member = current.contains(&follower.node);
        let final_state = match (&follower.comparison, member) {
            (Some(Ok(())), _) => "matched the final read".to_string(),
            (Some(Err(differences)), _) => {
                violations.push(format!(
                    "{}: its events do not give the final read of the prefix: {differences}",
                    follower.node
                ));
                "DIFFERS from the final read".to_string()
            }
            (None, false) => "not compared: no longer a member".to_string(),
            (None, true) => {
                violations.push(format!(
                    "{}: never reached the end marker written after the final read (its last complete index {})",
                    follower.node, follower.complete
                ));
                "NOT REACHED".to_string()
            }
        };
        if !follower.started_once && member {
            violations.push(format!("{}: its feed never sent a line", follower.node));
        }
        watchers.push(WatcherReport {
            node: follower.node.clone(),
            events: follower.events,
            entries: follower.seen.len() as u64,
            streams: follower.streams,
            reconnects: follower.streams.saturating_sub(1),
            rebases: follower.rebases,
            cuts: follower.cuts,
            max_lag: follower.max_lag,
            coverage: follower.coverage.iter().map(|&(after, up_to)| [after, up_to]).collect(),
            stream_ends: follower.ended.clone(),
            final_state,
        });
    }
    FeedReport {
        passed: violations.count == 0,
        prefix: prefix.to_string(),
        watchers,
        indexes: ledger.entries.len(),
        covered_without_gap,
        acknowledged_found: found,
        acknowledged_unverifiable: unverifiable,
        violation_count: violations.count,
        violations: violations.kept,
    }
}

/// Every index some watcher saw must be in the events of each other watcher that had
/// every change there.
fn missing(followers: &[Follower], ledger: &Ledger, violations: &mut Violations) {
    for follower in followers {
        for &(after, up_to) in &follower.coverage {
            for (index, (first, changes)) in ledger.entries.range(after.saturating_add(1)..=up_to) {
                if !follower.seen.contains(index) {
                    violations.push(format!(
                        "{}: no events at index {index}, though its streams covered ({after}, {up_to}]; {first} \
                         received [{}]",
                        follower.node,
                        list(changes)
                    ));
                }
            }
        }
    }
}

/// The watchers' coverage intervals merged.
fn merged(followers: &[Follower]) -> Vec<(u64, u64)> {
    let mut all: Vec<(u64, u64)> = followers.iter().flat_map(|follower| follower.coverage.iter().copied()).collect();
    all.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (after, up_to) in all {
        match merged.last_mut() {
            Some(last) if after <= last.1 => last.1 = last.1.max(up_to),
            _ => merged.push((after, up_to)),
        }
    }
    merged
}

/// The kv workload's writes against the feed: each acknowledged put and swapped cas at
/// exactly one index, each failed or refused one at none, none at two. Returns how many
/// acknowledged were found, and how many were in no watcher's events while the coverage had
/// a gap (not provable either way).
fn acknowledged(ledger: &Ledger, writes: &[Operation], gapless: bool, violations: &mut Violations) -> (u64, u64) {
    let mut puts: HashMap<(&str, &str), Vec<u64>> = HashMap::new();
    for (index, (_, changes)) in &ledger.entries {
        for change in changes.iter().filter(|change| change.kind == Kind::Put) {
            let value = change.value.as_deref().unwrap_or("");
            puts.entry((change.key.as_str(), value)).or_default().push(*index);
        }
    }
    let (mut found, mut unverifiable) = (0, 0);
    for operation in writes {
        let (value, applied) = match (&operation.call, &operation.outcome) {
            (Call::Put { value }, Outcome::Ok { result: Reply::Done, .. }) => (value, Some(true)),
            (Call::Cas { new, .. }, Outcome::Ok { result: Reply::Swapped(swapped), .. }) => (new, Some(*swapped)),
            (Call::Put { value } | Call::Cas { new: value, .. }, Outcome::Failed) => (value, Some(false)),
            (Call::Put { value } | Call::Cas { new: value, .. }, _) => (value, None),
            _ => continue,
        };
        let encoded = BASE64.encode(value);
        let indexes = puts.get(&(operation.key.as_str(), encoded.as_str())).map_or(&[][..], Vec::as_slice);
        let what = format!("the write of {:?}={value:?} by client {}", operation.key, operation.client);
        match (applied, indexes) {
            (_, [_, _, ..]) => violations.push(format!("{what} is in the feed at indexes {indexes:?}: applied twice")),
            (Some(true), [_]) => found += 1,
            (Some(true), []) if gapless => violations.push(format!(
                "{what} was acknowledged, but is in no watcher's events, though together they covered every index"
            )),
            (Some(true), []) => unverifiable += 1,
            (Some(false), [index]) => violations.push(format!(
                "{what} was answered as not applied (a failure, or a cas that did not swap), but is in the feed at \
                 index {index}"
            )),
            _ => {}
        }
    }
    (found, unverifiable)
}

/// Where a node's feed is reached.
#[derive(Clone)]
struct Endpoint {
    node: String,
    address: SocketAddr,
    host: HeaderValue,
    tls: Option<Tls>,
}

impl Endpoint {
    fn new(member: &Member, security: &Security) -> Result<Endpoint> {
        let (https, rest) = match (member.url.strip_prefix("https://"), member.url.strip_prefix("http://")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) => (false, rest),
            (None, None) => bail!("{}: not an http:// or https:// URL", member.url),
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        let address = authority
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {authority}"))?
            .next()
            .ok_or_else(|| anyhow!("{authority} resolves to no address"))?;
        let tls = if https {
            let config = tcp::client_config(security, &[b"http/1.1"])
                .map_err(|error| anyhow!(error))?
                .ok_or_else(|| anyhow!("{} is https:// but no CA was given", member.url))?;
            let host = authority.rsplit_once(':').map_or(authority, |(host, _)| host);
            Some(Tls::new(&config, &tcp::server_name(host).map_err(|error| anyhow!(error))?))
        } else {
            None
        };
        Ok(Endpoint { node: member.id.clone(), address, host: HeaderValue::from_str(authority)?, tls })
    }
}

/// The watchers, running on a thread of their own until [`Watchers::finish`].
pub struct Watchers {
    prefix: String,
    shared: Arc<Shared>,
    followers: Arc<Vec<Mutex<Follower>>>,
    thread: Option<JoinHandle<()>>,
    client: skiff_client::Client,
}

impl Watchers {
    /// Starts a watcher on each of `members`, following `prefix` from index 0; writes the
    /// start marker and waits until every watcher has received a line (so every stream's
    /// start is known before the workload writes).
    pub fn start(members: &[Member], prefix: &str, security: &Security, timeout: Duration) -> Result<Watchers> {
        let endpoints: Vec<Endpoint> =
            members.iter().map(|member| Endpoint::new(member, security)).collect::<Result<_>>()?;
        let urls: Vec<String> = members.iter().map(|member| member.url.clone()).collect();
        let client = security.apply(skiff_client::Client::builder().endpoints(urls).timeout(timeout)).build()?;
        let token = security.token.clone().map(|token| HeaderValue::from_str(&token)).transpose()?;
        let shared = Arc::new(Shared::default());
        let followers: Arc<Vec<Mutex<Follower>>> =
            Arc::new(members.iter().map(|member| Mutex::new(Follower::new(&member.id))).collect());
        let thread = {
            let (shared, followers, prefix) = (Arc::clone(&shared), Arc::clone(&followers), prefix.to_string());
            std::thread::Builder::new()
                .name("skiff-check-feed".into())
                .spawn(move || run(endpoints, &prefix, token, &shared, &followers))
                .context("cannot start the feed watchers' thread")?
        };
        let watchers = Watchers { prefix: prefix.to_string(), shared, followers, thread: Some(thread), client };
        watchers
            .client
            .put(&format!("{prefix}{START_MARKER}"), format!("{:016x}", rand::random::<u64>()))
            .context("cannot write the feed check's start marker")?;
        watchers.wait_for(|follower| follower.started_once, &urls_ids(members));
        Ok(watchers)
    }

    /// Waits up to [`CATCH_UP_TIMEOUT`] until `done` holds for every watcher of `nodes`.
    fn wait_for(&self, done: impl Fn(&Follower) -> bool, nodes: &[String]) {
        let deadline = Instant::now() + CATCH_UP_TIMEOUT;
        while Instant::now() < deadline {
            let all = self.followers.iter().all(|follower| {
                let follower = locked(follower);
                !nodes.contains(&follower.node) || done(&follower)
            });
            if all {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Reads the prefix, writes the end marker, waits until every watcher of a node still a
    /// member has compared its model at the marker, stops the watchers and judges.
    pub fn finish(mut self, current: &[Member], writes: &[Operation]) -> FeedReport {
        let nodes = urls_ids(current);
        let ended = self.final_read_and_marker();
        if ended.is_ok() {
            self.wait_for(|follower| follower.comparison.is_some(), &nodes);
        }
        self.stop();
        let followers: Vec<Follower> = match Arc::try_unwrap(std::mem::take(&mut self.followers)) {
            Ok(followers) => followers
                .into_iter()
                .map(|follower| follower.into_inner().unwrap_or_else(PoisonError::into_inner))
                .collect(),
            Err(_) => Vec::new(),
        };
        let ledger = std::mem::take(&mut *locked(&self.shared.ledger));
        let mut report = judge(&self.prefix, &followers, &ledger, &nodes, writes);
        if let Err(error) = ended {
            report.passed = false;
            report.violation_count += 1;
            report.violations.insert(0, format!("the final read or the end marker failed: {error:#}"));
        }
        report
    }

    fn final_read_and_marker(&self) -> Result<()> {
        let entries = self
            .client
            .list(&self.prefix, skiff_client::Consistency::Consistent)
            .context("the final read of the prefix")?;
        let expected = entries
            .into_iter()
            .map(|entry| {
                let held = Held {
                    value: BASE64.encode(&entry.value),
                    create_index: entry.create_index,
                    modify_index: entry.modify_index,
                    flags: entry.flags,
                };
                (entry.key, held)
            })
            .collect();
        let marker = format!("{}{END_MARKER}", self.prefix);
        let value = format!("{:016x}", rand::random::<u64>());
        let token = BASE64.encode(&value);
        *locked(&self.shared.final_read) = Some(Arc::new(Final { marker: marker.clone(), token, expected }));
        self.client.put(&marker, value).context("writing the end marker")?;
        Ok(())
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
    }
}

fn urls_ids(members: &[Member]) -> Vec<String> {
    members.iter().map(|member| member.id.clone()).collect()
}

/// The watchers' thread: one task per node on a runtime of its own.
fn run(
    endpoints: Vec<Endpoint>,
    prefix: &str,
    token: Option<HeaderValue>,
    shared: &Arc<Shared>,
    followers: &Arc<Vec<Mutex<Follower>>>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            super::note(&format!("the feed watchers cannot start: {error}"));
            return;
        }
    };
    let query = encode_query(prefix);
    runtime.block_on(async {
        let tasks: Vec<_> = endpoints
            .into_iter()
            .enumerate()
            .map(|(slot, endpoint)| {
                let (shared, followers) = (Arc::clone(shared), Arc::clone(followers));
                let (query, token) = (query.clone(), token.clone());
                tokio::spawn(async move { follow(slot, endpoint, query, token, shared, followers).await })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// How a stream ended.
enum Ended {
    Cut,
    Stopped,
    Failed(String),
}

/// Follows one node's feed until told to stop, opening a new stream on that node whenever
/// one ends.
async fn follow(
    slot: usize,
    endpoint: Endpoint,
    query: String,
    token: Option<HeaderValue>,
    shared: Arc<Shared>,
    followers: Arc<Vec<Mutex<Follower>>>,
) {
    let follower = &followers[slot];
    while !shared.stop.load(Ordering::Relaxed) {
        let from = locked(follower).open();
        let path = format!("/v1/skiff/watch?prefix={query}&index={from}");
        match stream(&endpoint, &path, token.as_ref(), &shared, follower).await {
            Ended::Cut => {}
            Ended::Stopped => break,
            Ended::Failed(reason) => {
                *locked(follower).ended.entry(reason).or_default() += 1;
                tokio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

/// One stream: connects, asks for NDJSON, and hands each line to the follower.
async fn stream(
    endpoint: &Endpoint,
    path: &str,
    token: Option<&HeaderValue>,
    shared: &Shared,
    follower: &Mutex<Follower>,
) -> Ended {
    let io = match tokio::time::timeout(CONNECT_TIMEOUT, tcp::connect(endpoint.address, endpoint.tls.as_ref())).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => return Ended::Failed(crate::bench::connection::io_error_kind(&error)),
        Err(_) => return Ended::Failed("connect timeout".into()),
    };
    let (mut sender, connection) = match http1::handshake(TokioIo::new(io)).await {
        Ok(pair) => pair,
        Err(error) => return Ended::Failed(format!("handshake: {error}")),
    };
    let driver = tokio::spawn(connection);
    let ended = read(endpoint, path, token, shared, follower, &mut sender).await;
    driver.abort();
    ended
}

async fn read(
    endpoint: &Endpoint,
    path: &str,
    token: Option<&HeaderValue>,
    shared: &Shared,
    follower: &Mutex<Follower>,
    sender: &mut http1::SendRequest<Empty<Bytes>>,
) -> Ended {
    let mut request = hyper::Request::get(path)
        .header(HOST, endpoint.host.clone())
        .header(ACCEPT, HeaderValue::from_static("application/x-ndjson"));
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token.clone());
    }
    let Ok(request) = request.body(Empty::new()) else {
        return Ended::Failed(format!("{}: not a valid request path", endpoint.node));
    };
    let response = match tokio::time::timeout(ANSWER_TIMEOUT, sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => return Ended::Failed(hyper_reason(&error)),
        Err(_) => return Ended::Failed("no answer".into()),
    };
    if response.status() != hyper::StatusCode::OK {
        return Ended::Failed(format!("HTTP {}", response.status().as_u16()));
    }
    let mut body = response.into_body();
    let mut buffer: Vec<u8> = Vec::new();
    let mut heard = Instant::now();
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return Ended::Stopped;
        }
        let frame = match tokio::time::timeout(SLICE, body.frame()).await {
            Err(_) if heard.elapsed() >= IDLE_TIMEOUT => return Ended::Failed("idle".into()),
            Err(_) => continue,
            Ok(None) => return Ended::Failed("stream ended".into()),
            Ok(Some(Err(error))) => return Ended::Failed(hyper_reason(&error)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        heard = Instant::now();
        buffer.extend_from_slice(&data);
        while let Some(end) = buffer.iter().position(|&byte| byte == b'\n') {
            let text: Vec<u8> = buffer.drain(..=end).collect();
            let mut follower = locked(follower);
            match serde_json::from_slice::<Line>(&text[..end]) {
                Ok(line) => {
                    if follower.take(&line, shared) {
                        return Ended::Cut;
                    }
                }
                Err(error) => {
                    let shown = String::from_utf8_lossy(&text[..end.min(200)]).into_owned();
                    follower.violate(format!("an unreadable line ({error}): {shown}"));
                }
            }
        }
    }
}

fn hyper_reason(error: &hyper::Error) -> String {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return crate::bench::connection::io_error_kind(io);
        }
        source = cause.source();
    }
    if error.is_incomplete_message() { "connection closed".into() } else { format!("http: {error}") }
}

/// `prefix` for a query string: everything but unreserved characters and `/` escaped.
fn encode_query(prefix: &str) -> String {
    let mut out = String::new();
    for byte in prefix.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, index: u64, key: &str, value: &str, create: u64) -> Line {
        Line {
            kind: kind.to_string(),
            index: Some(index),
            key: Some(key.to_string()),
            value: (kind == "put").then(|| BASE64.encode(value)),
            create_index: Some(create),
            modify_index: Some(index),
            flags: Some(0),
            ..Line::default()
        }
    }

    fn progress(index: u64) -> Line {
        Line { kind: "progress".into(), index: Some(index), ..Line::default() }
    }

    fn snapshot(index: u64, key: &str, value: &str, create: u64, modify: u64) -> Line {
        Line {
            kind: "snapshot".into(),
            index: Some(index),
            key: Some(key.into()),
            value: Some(BASE64.encode(value)),
            create_index: Some(create),
            modify_index: Some(modify),
            flags: Some(0),
            ..Line::default()
        }
    }

    /// A history: k1 put at 3, k2 put at 5, k1 rewritten at 7, k2 deleted at 9, then
    /// progress at 9.
    fn history() -> Vec<Line> {
        vec![
            event("put", 3, "k1", "c0-1", 3),
            event("put", 5, "k2", "c1-1", 5),
            event("put", 7, "k1", "c0-2", 3),
            event("delete", 9, "k2", "", 5),
            progress(9),
        ]
    }

    fn feed(follower: &mut Follower, shared: &Shared, lines: &[Line]) {
        follower.open();
        for line in lines {
            follower.take(line, shared);
        }
    }

    fn judged(shared: &Shared, followers: &[Follower], writes: &[Operation]) -> FeedReport {
        let nodes: Vec<String> = followers.iter().map(|follower| follower.node.clone()).collect();
        judge("", followers, &locked(&shared.ledger), &nodes, writes)
    }

    fn put(client: u64, key: &str, value: &str, outcome: Outcome) -> Operation {
        Operation { client, key: key.into(), call: Call::Put { value: value.into() }, invoke_ns: 1, outcome }
    }

    fn acked() -> Outcome {
        Outcome::Ok { at_ns: 2, result: Reply::Done }
    }

    /// Final states for every follower, so that the judge looks only at the streams.
    fn compared(followers: &mut [Follower]) {
        for follower in followers {
            follower.comparison = Some(Ok(()));
        }
    }

    fn messages(report: &FeedReport) -> String {
        report.violations.join("\n")
    }

    #[test]
    fn identical_histories_pass() {
        let shared = Shared::default();
        let (mut a, mut b) = (Follower::new("n1"), Follower::new("n2"));
        feed(&mut a, &shared, &history());
        feed(&mut b, &shared, &history());
        let mut followers = [a, b];
        compared(&mut followers);
        let writes = [put(0, "k1", "c0-1", acked()), put(1, "k2", "c1-1", acked())];
        let report = judged(&shared, &followers, &writes);
        assert!(report.passed, "{}", messages(&report));
        assert_eq!(report.indexes, 4);
        assert!(report.covered_without_gap);
        assert_eq!(report.acknowledged_found, 2);
        assert_eq!(report.watchers[0].events, 4);
        assert_eq!(report.watchers[0].coverage, vec![[0, 9]]);
        let model: Vec<(&String, &Held)> = followers[0].model.iter().collect();
        assert_eq!(model.len(), 1);
        assert_eq!(model[0].1.value, BASE64.encode("c0-2"));
    }

    #[test]
    fn a_missing_event_fails() {
        let shared = Shared::default();
        let (mut a, mut b) = (Follower::new("n1"), Follower::new("n2"));
        feed(&mut a, &shared, &history());
        let mut lines = history();
        lines.remove(1);
        feed(&mut b, &shared, &lines);
        let mut followers = [a, b];
        compared(&mut followers);
        let report = judged(&shared, &followers, &[]);
        assert!(!report.passed);
        assert!(
            messages(&report).contains("n2: no events at index 5, though its streams covered (0, 9]"),
            "{}",
            messages(&report)
        );
    }

    #[test]
    fn an_event_delivered_twice_fails() {
        let shared = Shared::default();
        let mut a = Follower::new("n1");
        let mut lines = history();
        lines.insert(2, event("put", 3, "k1", "c0-1", 3));
        feed(&mut a, &shared, &lines);
        // Resumed from an older index than it had, the stream sends index 7 again.
        a.open();
        a.take(&event("put", 7, "k1", "c0-2", 3), &shared);
        a.take(&progress(9), &shared);
        let mut followers = [a];
        compared(&mut followers);
        let report = judged(&shared, &followers, &[]);
        let text = messages(&report);
        assert!(text.contains("at index 3 after index 5: the stream went backwards"), "{text}");
        assert!(text.contains("at index 7, after every change up to 9 was received: delivered twice"), "{text}");
        // Twice in one entry.
        let shared = Shared::default();
        let mut b = Follower::new("n1");
        feed(&mut b, &shared, &[event("put", 3, "k1", "c0-1", 3), event("put", 3, "k1", "c0-1", 3), progress(3)]);
        assert!(b.violations.kept[0].contains("delivered twice at index 3"), "{:?}", b.violations.kept);
    }

    #[test]
    fn a_differing_value_fails() {
        let shared = Shared::default();
        let (mut a, mut b) = (Follower::new("n1"), Follower::new("n2"));
        feed(&mut a, &shared, &history());
        let mut lines = history();
        lines[2] = event("put", 7, "k1", "c9-9", 3);
        feed(&mut b, &shared, &lines);
        let mut followers = [a, b];
        compared(&mut followers);
        let report = judged(&shared, &followers, &[]);
        let text = messages(&report);
        assert!(
            text.contains(
                "two histories at index 7: n1 received [put \"k1\"=\"c0-2\" (create 3, modify 7, flags 0)], n2 \
                 received [put \"k1\"=\"c9-9\""
            ),
            "{text}"
        );
    }

    #[test]
    fn acknowledged_writes_must_be_in_the_feed_once_and_failed_ones_never() {
        let shared = Shared::default();
        let mut a = Follower::new("n1");
        feed(&mut a, &shared, &history());
        let mut followers = [a];
        compared(&mut followers);
        let writes = [
            put(0, "k1", "c0-1", acked()),
            put(2, "k3", "c2-1", acked()),
            put(1, "k2", "c1-1", Outcome::Failed),
            put(3, "k3", "c3-1", Outcome::Unknown),
        ];
        let report = judged(&shared, &followers, &writes);
        let text = messages(&report);
        assert!(
            text.contains("the write of \"k3\"=\"c2-1\" by client 2 was acknowledged, but is in no watcher's events"),
            "{text}"
        );
        assert!(text.contains("\"k2\"=\"c1-1\" by client 1 was answered as not applied"), "{text}");
        assert_eq!(report.violation_count, 2, "{text}");
        assert_eq!(report.acknowledged_found, 1);
    }

    #[test]
    fn a_rebase_replaces_the_model_and_leaves_a_gap_that_is_not_a_violation() {
        let shared = Shared::default();
        let mut a = Follower::new("n1");
        feed(&mut a, &shared, &history());
        let mut b = Follower::new("n2");
        feed(&mut b, &shared, &history()[..2]);
        // n2's node restarted: its stream begins with a snapshot at 9.
        let end = Line { kind: "snapshot-end".into(), index: Some(9), ..Line::default() };
        feed(&mut b, &shared, &[snapshot(9, "k1", "c0-2", 3, 7), end]);
        let extra = [event("put", 11, "k3", "c2-1", 11), progress(11)];
        for follower in [&mut a, &mut b] {
            follower.open();
            for line in &extra {
                follower.take(line, &shared);
            }
        }
        assert_eq!(b.rebases, 1);
        assert_eq!(b.coverage, vec![(0, 3), (9, 11)]);
        assert_eq!(a.model, b.model);
        let mut followers = [a, b];
        compared(&mut followers);
        let writes = [put(2, "k3", "c2-1", acked())];
        let report = judged(&shared, &followers, &writes);
        assert!(report.passed, "{}", messages(&report));
        assert_eq!(report.acknowledged_found, 1);
    }

    #[test]
    fn the_final_state_is_compared_at_the_end_marker() {
        let shared = Shared::default();
        let (mut a, mut b) = (Follower::new("n1"), Follower::new("n2"));
        feed(&mut a, &shared, &history());
        let mut lines = history();
        // n2 misses the delete of k2 (and nothing else sees index 9 as events).
        lines.remove(3);
        feed(&mut b, &shared, &lines);
        let held = |value: &str, create, modify| Held {
            value: BASE64.encode(value),
            create_index: create,
            modify_index: modify,
            flags: 0,
        };
        let expected = BTreeMap::from([("k1".to_string(), held("c0-2", 3, 7))]);
        let marker = "skiff-check-feed-end".to_string();
        *locked(&shared.final_read) =
            Some(Arc::new(Final { marker: marker.clone(), token: BASE64.encode("t"), expected }));
        for follower in [&mut a, &mut b] {
            follower.open();
            follower.take(&event("put", 12, &marker, "t", 12), &shared);
            // The marker's entry is complete without anything after it.
            assert!(follower.comparison.is_some());
            follower.take(&progress(12), &shared);
        }
        assert_eq!(a.comparison, Some(Ok(())));
        let followers = [a, b];
        let report = judged(&shared, &followers, &[]);
        let text = messages(&report);
        assert!(
            text.contains("n2: its events do not give the final read of the prefix: \"k2\": the events give \"c1-1\""),
            "{text}"
        );
        assert!(text.contains("n2: no events at index 9"), "{text}");
        assert_eq!(report.watchers[0].final_state, "matched the final read");
    }

    #[test]
    fn a_watcher_that_never_reaches_the_marker_fails_unless_its_node_left() {
        let shared = Shared::default();
        let mut a = Follower::new("n1");
        feed(&mut a, &shared, &history());
        let followers = [a];
        let ledger = locked(&shared.ledger);
        let report = judge("", &followers, &ledger, &["n1".to_string()], &[]);
        assert!(messages(&report).contains("n1: never reached the end marker"), "{}", messages(&report));
        let report = judge("", &followers, &ledger, &[], &[]);
        assert!(report.passed, "{}", messages(&report));
        assert_eq!(report.watchers[0].final_state, "not compared: no longer a member");
    }

    #[test]
    fn prefixes_are_escaped_for_the_query() {
        assert_eq!(encode_query("skiff-check/0a1b/"), "skiff-check/0a1b/");
        assert_eq!(encode_query("a b&c=d+é"), "a%20b%26c%3Dd%2B%C3%A9");
    }
}
