//! The report: what ran, what was injected, what the checker found; printed for people or
//! as one JSON object. And the progress display while the workload runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use skiff_check::{Call, Operation, Outcome, Reply, Verdict, Violation};

use super::FaultKind;
use super::converge::Convergence;
use super::faults::{FaultEvent, seconds};
use super::watch::Leaders;

/// Everything `skiff check` found, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct Report {
    /// The history is linearizable, the replicas converged, no term had two leaders and no
    /// node exited by itself.
    pub passed: bool,
    pub settings: Settings,
    /// Whether Ctrl-C (or SIGTERM) cut the workload short.
    pub interrupted: bool,
    /// How long the workload ran, in seconds.
    pub workload_seconds: f64,
    pub operations: Operations,
    /// Answers other than success, by kind (`HTTP 503`, `timeout`, `connection refused`, ...).
    pub errors: BTreeMap<String, u64>,
    pub faults: Faults,
    pub leaders: Leaders,
    /// Nodes that exited without being killed, with the end of their log.
    pub unexpected_exits: Vec<String>,
    pub convergence: Convergence,
    pub check: CheckSummary,
    /// The lock workload's findings (`--workload lock`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock: Option<super::locks::LockReport>,
    /// The transfer workload's findings (`--workload transfer`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer: Option<super::transfers::TransferReport>,
    /// The change-feed check's findings (the kv workload, unless `--no-feed-check`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feed: Option<super::feed::FeedReport>,
    /// Where the history was saved (always when the check failed).
    pub history: Option<String>,
    /// Where the nodes' data and logs are (kept with `--keep-data` or when the check failed).
    pub data_dir: Option<String>,
}

/// The command's settings, so a report can be reproduced.
#[derive(Debug, Serialize)]
pub struct Settings {
    /// Nodes started here, or `None` with `--endpoints`.
    pub nodes: Option<usize>,
    pub endpoints: Vec<String>,
    pub time_seconds: f64,
    pub faults: Vec<FaultKind>,
    pub clients: usize,
    pub keys: Vec<String>,
    pub seed: u64,
    pub request_timeout_ms: u64,
}

/// Operations of one kind, by outcome.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Counts {
    pub ok: u64,
    pub failed: u64,
    pub unknown: u64,
}

impl Counts {
    pub fn total(&self) -> u64 {
        self.ok + self.failed + self.unknown
    }
}

/// The history's operations by kind and outcome. A cas's read counts as a get.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Operations {
    pub total: u64,
    pub get: Counts,
    pub put: Counts,
    pub delete: Counts,
    pub cas: Counts,
    /// Of the cas that completed, those that wrote.
    pub cas_swapped: u64,
}

impl Operations {
    pub fn count(history: &[Operation]) -> Operations {
        let mut operations = Operations { total: history.len() as u64, ..Operations::default() };
        for operation in history {
            let counts = match operation.call {
                Call::Get => &mut operations.get,
                Call::Put { .. } => &mut operations.put,
                Call::Delete => &mut operations.delete,
                Call::Cas { .. } => &mut operations.cas,
            };
            match &operation.outcome {
                Outcome::Ok { result, .. } => {
                    counts.ok += 1;
                    if *result == Reply::Swapped(true) {
                        operations.cas_swapped += 1;
                    }
                }
                Outcome::Failed => counts.failed += 1,
                Outcome::Unknown => counts.unknown += 1,
            }
        }
        operations
    }

    fn rows(&self) -> [(&'static str, Counts); 4] {
        [("get", self.get), ("put", self.put), ("delete", self.delete), ("cas", self.cas)]
    }
}

/// The faults injected.
#[derive(Debug, Default, Serialize)]
pub struct Faults {
    /// By kind, every kind asked for (0 if it never came up).
    pub counts: BTreeMap<FaultKind, u64>,
    pub total: u64,
    pub events: Vec<FaultEvent>,
    /// Faults that could not be injected or healed, and why.
    pub errors: Vec<String>,
}

/// What the linearizability checker found.
#[derive(Debug, Serialize)]
pub struct CheckSummary {
    pub verdict: Verdict,
    pub keys: usize,
    /// Completed operations and writes of unknown outcome.
    pub operations_checked: usize,
    pub unknown_outcomes: usize,
    /// Failed operations and reads of unknown outcome, which constrain nothing.
    pub left_out: usize,
    pub seconds: f64,
    /// Keys on which the search ran out of steps.
    pub gave_up: Vec<String>,
    pub violations: Vec<Violation>,
}

impl CheckSummary {
    pub fn new(report: skiff_check::Report, seconds: f64) -> CheckSummary {
        let sum = |count: fn(&skiff_check::KeyReport) -> usize| report.keys.values().map(count).sum::<usize>();
        CheckSummary {
            verdict: report.verdict,
            keys: report.keys.len(),
            operations_checked: sum(|key| key.operations_checked),
            unknown_outcomes: sum(|key| key.unknown_outcomes),
            left_out: sum(|key| key.operations_dropped),
            seconds,
            gave_up: report
                .keys
                .iter()
                .filter(|(_, key)| key.verdict == Verdict::Unknown)
                .map(|(name, _)| name.clone())
                .collect(),
            violations: report.violations,
        }
    }
}

impl Report {
    /// The report for people.
    pub fn human(&self) -> String {
        let mut text = String::new();
        self.write_settings(&mut text);
        self.write_operations(&mut text);
        self.write_cluster(&mut text);
        self.write_lock(&mut text);
        self.write_transfer(&mut text);
        self.write_feed(&mut text);
        self.write_check(&mut text);
        text
    }

    fn write_lock(&self, text: &mut String) {
        let Some(lock) = &self.lock else { return };
        let _ = writeln!(
            text,
            "\nlock: {} acquisitions; fenced writes {} written, {} refused, {} unknown; {} in the log in token order",
            lock.acquisitions, lock.written, lock.refused, lock.unknown, lock.writes_in_log
        );
        let _ = writeln!(
            text,
            "  {} clients paused past their TTL while holding the lock; {} of their writes refused",
            lock.pauses, lock.stale_writes_refused
        );
        let ttl = &lock.ttl;
        let measured = match (ttl.max_error_ms, ttl.median_error_ms) {
            (Some(max), Some(median)) => format!("expiry error max {max:.0} ms, median {median:.0} ms"),
            _ => "no expiry observed".to_string(),
        };
        let outages = match ttl.across_outages {
            0 => String::new(),
            keys => format!(", less the full outages since the grant ({keys} keys spanned one)"),
        };
        let _ = writeln!(
            text,
            "  TTL {} ms: {} of {} keys seen expiring; {measured} (first read that found it gone minus the earliest \
             deadline{outages}; reads every {} ms; allowed {} ms past the latest)",
            ttl.ttl_ms, ttl.expired, ttl.keys, ttl.poll_ms, ttl.allowance_ms
        );
        if lock.violations.is_empty() {
            let _ = writeln!(text, "  no violation");
        }
        for violation in &lock.violations {
            let _ = writeln!(text, "  VIOLATION: {violation}");
        }
    }

    fn write_transfer(&self, text: &mut String) {
        let Some(transfer) = &self.transfer else { return };
        let _ = writeln!(
            text,
            "\ntransfer: {} accounts, total {}; transfers {} ok, {} conflicted (409), {} unknown",
            transfer.accounts, transfer.total, transfer.ok, transfer.conflicted, transfer.unknown
        );
        let applied = match transfer.applied {
            Some(applied) => format!("{applied} transfers applied (final counters)"),
            None => "the final read failed".to_string(),
        };
        let _ = writeln!(
            text,
            "  {} reads of every account checked the total; {applied}, between {} and {}",
            transfer.totals_checked,
            transfer.ok,
            transfer.ok + transfer.unknown
        );
        if transfer.violations.is_empty() {
            let _ = writeln!(text, "  no violation");
        }
        for violation in transfer.violations.iter().take(20) {
            let _ = writeln!(text, "  VIOLATION: {violation}");
        }
        if transfer.violations.len() > 20 {
            let _ = writeln!(text, "  ... and {} more", transfer.violations.len() - 20);
        }
    }

    fn write_feed(&self, text: &mut String) {
        let Some(feed) = &self.feed else { return };
        let prefix = if feed.prefix.is_empty() { "every key".to_string() } else { format!("{:?}", feed.prefix) };
        let _ = writeln!(
            text,
            "\nchange feed: {} watchers of {prefix}; {} log indexes with changes; {} acknowledged writes found at one \
             index each ({} in a coverage gap); {}",
            feed.watchers.len(),
            feed.indexes,
            feed.acknowledged_found,
            feed.acknowledged_unverifiable,
            if feed.covered_without_gap { "covered without a gap" } else { "coverage has gaps (rebases)" }
        );
        for watcher in &feed.watchers {
            let _ = writeln!(
                text,
                "  {}: {} events in {} entries; {} reconnects, {} rebases, {} cuts; max lag {} indexes; {}",
                watcher.node,
                watcher.events,
                watcher.entries,
                watcher.reconnects,
                watcher.rebases,
                watcher.cuts,
                watcher.max_lag,
                watcher.final_state
            );
        }
        if feed.violations.is_empty() {
            let _ = writeln!(text, "  no violation");
        }
        for violation in feed.violations.iter().take(20) {
            let _ = writeln!(text, "  VIOLATION: {violation}");
        }
        if feed.violation_count > 20 {
            let _ = writeln!(text, "  ... and {} more", feed.violation_count - 20);
        }
    }

    fn write_settings(&self, text: &mut String) {
        let settings = &self.settings;
        let target = match settings.nodes {
            Some(nodes) => format!("{nodes} nodes started here"),
            None => format!("the cluster at {}", settings.endpoints.join(",")),
        };
        let faults: Vec<String> = settings.faults.iter().map(ToString::to_string).collect();
        let faults = if faults.is_empty() { "none".to_string() } else { faults.join(",") };
        let _ = writeln!(
            text,
            "skiff check: {target}, {:.0}s{}, faults {faults}, {} clients, {} keys, seed {}",
            settings.time_seconds,
            if self.interrupted {
                format!(" (interrupted after {:.1}s)", self.workload_seconds)
            } else {
                String::new()
            },
            settings.clients,
            settings.keys.len(),
            settings.seed,
        );
    }

    fn write_operations(&self, text: &mut String) {
        let _ = writeln!(text, "\noperations  {:>8} {:>8} {:>8} {:>8}", "ok", "failed", "unknown", "total");
        let mut all = Counts::default();
        for (name, counts) in self.operations.rows() {
            let _ = writeln!(
                text,
                "  {name:<9}{:>8} {:>8} {:>8} {:>8}",
                counts.ok,
                counts.failed,
                counts.unknown,
                counts.total()
            );
            all = Counts {
                ok: all.ok + counts.ok,
                failed: all.failed + counts.failed,
                unknown: all.unknown + counts.unknown,
            };
        }
        let _ = writeln!(text, "  {:<9}{:>8} {:>8} {:>8} {:>8}", "all", all.ok, all.failed, all.unknown, all.total());
        let _ = writeln!(
            text,
            "  ({} of {} completed cas swapped; a cas's read counts as a get; failed = certainly not applied)",
            self.operations.cas_swapped, self.operations.cas.ok
        );
        if !self.errors.is_empty() {
            let errors: Vec<String> = self.errors.iter().map(|(kind, count)| format!("{kind} x{count}")).collect();
            let _ = writeln!(text, "  answers other than success: {}", errors.join(", "));
        }
    }

    fn write_cluster(&self, text: &mut String) {
        let counts: Vec<String> = self.faults.counts.iter().map(|(kind, count)| format!("{kind} {count}")).collect();
        let _ = writeln!(text, "\nfaults: {} injected ({})", self.faults.total, counts.join(", "));
        let changes: Vec<&str> = self
            .faults
            .events
            .iter()
            .filter(|event| event.kind == FaultKind::Membership)
            .map(|event| event.description.as_str())
            .collect();
        if !changes.is_empty() {
            let _ = writeln!(text, "  membership changes: {}", changes.join(", "));
        }
        for error in &self.faults.errors {
            let _ = writeln!(text, "  not injected or healed: {error}");
        }
        let terms = match (self.leaders.first_term, self.leaders.last_term) {
            (Some(first), Some(last)) => format!("terms {first} to {last}"),
            _ => "no term seen".to_string(),
        };
        let _ = writeln!(text, "leaders: {} changes, {terms}", self.leaders.changes);
        for split in &self.leaders.split_terms {
            let _ = writeln!(text, "  ELECTION SAFETY VIOLATED: two leaders in term {split}");
        }
        for exit in &self.unexpected_exits {
            let _ = writeln!(text, "  NODE EXITED BY ITSELF: {exit}");
        }
        let convergence = &self.convergence;
        match (&convergence.problem, convergence.converged) {
            (Some(problem), _) => {
                let _ = writeln!(text, "convergence: NOT CHECKED: {problem}");
            }
            (None, true) => {
                let _ = writeln!(
                    text,
                    "convergence: all {} nodes ({}) applied index {} and hold the same {} keys",
                    convergence.nodes,
                    convergence.members.join(" "),
                    convergence.applied_index.unwrap_or_default(),
                    convergence.keys
                );
            }
            (None, false) => {
                let _ = writeln!(
                    text,
                    "convergence: REPLICAS DIFFER at applied index {}:",
                    convergence.applied_index.unwrap_or_default()
                );
                for difference in &convergence.differences {
                    let _ = writeln!(text, "  {difference}");
                }
            }
        }
    }

    fn write_check(&self, text: &mut String) {
        let check = &self.check;
        let _ = writeln!(
            text,
            "linearizability: {}: {} operations checked on {} keys ({} of unknown outcome, {} left out) in {:.2}s",
            check.verdict, check.operations_checked, check.keys, check.unknown_outcomes, check.left_out, check.seconds
        );
        if !check.gave_up.is_empty() {
            let _ = writeln!(
                text,
                "  INCONCLUSIVE: the search gave up on {} (too many concurrent writes of unknown outcome)",
                check.gave_up.join(", ")
            );
        }
        for violation in &check.violations {
            let _ = writeln!(text, "\n{violation}");
            let faults = faults_during(&self.faults.events, violation);
            if !faults.is_empty() {
                let _ = writeln!(text, "faults around this window: {}", faults.join("; "));
            }
        }
        if let Some(history) = &self.history {
            let _ = writeln!(text, "\nhistory saved to {history}");
        }
        if let Some(dir) = &self.data_dir {
            let _ = writeln!(text, "the nodes' data and logs are in {dir}");
        }
        let _ = writeln!(text, "\n{}", self.verdict_line());
    }

    /// `PASS: ...` or `FAIL: ...`, with every reason.
    pub fn verdict_line(&self) -> String {
        if self.passed && self.feed.is_some() {
            return "PASS: the history is linearizable, the replicas converged, and every node's change feed sent \
                    the committed history"
                .to_string();
        }
        if self.passed {
            return "PASS: the history is linearizable and the replicas converged".to_string();
        }
        let mut reasons = Vec::new();
        match self.check.verdict {
            Verdict::NotLinearizable => reasons.push("the history is not linearizable"),
            Verdict::Unknown => reasons.push("the check was inconclusive"),
            Verdict::Linearizable => {}
        }
        if !self.convergence.converged {
            reasons.push("the replicas did not converge");
        }
        if self.feed.as_ref().is_some_and(|feed| !feed.passed) {
            reasons.push("the change feed contradicts the committed history");
        }
        if !self.leaders.split_terms.is_empty() {
            reasons.push("a term had two leaders");
        }
        if !self.unexpected_exits.is_empty() {
            reasons.push("a node exited by itself");
        }
        format!("FAIL: {}", reasons.join("; "))
    }
}

/// The faults in force between the first invocation and the last completion of a
/// violation's window, as `kill n2 (12.3s-15.1s)`.
fn faults_during(events: &[FaultEvent], violation: &Violation) -> Vec<String> {
    let operations = &violation.window.operations;
    let from = operations.iter().map(|op| op.operation.invoke_ns).min().unwrap_or(0);
    let to = operations
        .iter()
        .map(|op| match op.operation.outcome {
            Outcome::Ok { at_ns, .. } => at_ns,
            Outcome::Unknown | Outcome::Failed => op.operation.invoke_ns,
        })
        .max()
        .unwrap_or(u64::MAX);
    events
        .iter()
        .filter(|event| event.start_ns <= to && event.end_ns >= from)
        .map(|event| format!("{} ({:.3}s-{:.3}s)", event.description, seconds(event.start_ns), seconds(event.end_ns)))
        .collect()
}

/// The progress bar while the workload runs (hidden when standard error is not a
/// terminal; then a line every 10 s instead).
pub struct Progress {
    bar: ProgressBar,
    total: Duration,
    last_line: Instant,
}

/// How often the progress is printed when there is no bar.
const PROGRESS_LINE_INTERVAL: Duration = Duration::from_secs(10);

impl Progress {
    pub fn new(total: Duration) -> Progress {
        let bar = ProgressBar::new(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
        let style = ProgressStyle::with_template("{bar:30.cyan/blue} {msg}").expect("a valid template");
        bar.set_style(style.progress_chars("=> "));
        Progress { bar, total, last_line: Instant::now() }
    }

    pub fn update(&mut self, elapsed: Duration, operations: u64, fault: &str) {
        let fault = if fault.is_empty() { "healthy" } else { fault };
        let message =
            format!("{:.0}s/{:.0}s  {operations} operations  {fault}", elapsed.as_secs_f64(), self.total.as_secs_f64());
        if self.bar.is_hidden() {
            if self.last_line.elapsed() >= PROGRESS_LINE_INTERVAL {
                super::note(&message);
                self.last_line = Instant::now();
            }
        } else {
            self.bar.set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
            self.bar.set_message(message);
        }
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
