//! The entry point: split the history by key, search each key, and report.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::history::{Checked, InvalidHistory, Operation, checked_operations};
use crate::search::{ABSENT, Values, search};
use crate::window::{Violation, find_violation};

/// How hard to try.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Search steps (candidates tried plus backtracks) allowed per key, and again per probe
    /// when narrowing a violation down to its window. A key that needs more gets the verdict
    /// `Unknown`. A linearizable history needs a few steps per operation; a step costs tens of
    /// nanoseconds, and the memoisation cache holds up to one entry (tens of bytes) per step.
    pub max_steps_per_key: u64,
    /// How many operations that completed just before the violating one a window shows.
    pub context_operations: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self { max_steps_per_key: 10_000_000, context_operations: 5 }
    }
}

/// Whether a history (or one key's part of it) is linearizable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// There is an order of the operations, each taking effect at one instant between its
    /// invocation and its completion, that a single register would produce.
    Linearizable,
    /// There is no such order: the system broke its promise.
    NotLinearizable,
    /// The search ran out of steps before it could tell.
    Unknown,
}

/// The result of [`check`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `NotLinearizable` if any key is; otherwise `Unknown` if any key is; otherwise
    /// `Linearizable` (also for an empty history).
    pub verdict: Verdict,
    /// Every key of the history, with what was found.
    pub keys: BTreeMap<String, KeyReport>,
    /// One per key that is not linearizable, earliest violation first.
    pub violations: Vec<Violation>,
}

/// What was checked on one key, and what was found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    /// The key's verdict; `Unknown` if the search ran out of steps.
    pub verdict: Verdict,
    /// Operations checked: completed ones and writes of unknown outcome.
    pub operations_checked: usize,
    /// Of those, the writes (put, delete, cas) of unknown outcome.
    pub unknown_outcomes: usize,
    /// Operations left out: failed ones and gets of unknown outcome.
    pub operations_dropped: usize,
    /// Steps the search took on the whole key (at most `Options::max_steps_per_key`).
    pub search_steps: u64,
}

/// Checks that `history` is linearizable, key by key. Every key starts absent: a harness
/// working on a store that already holds data must use fresh keys.
///
/// Fails only if the history contradicts itself (see [`InvalidHistory`]).
pub fn check(history: &[Operation], options: &Options) -> Result<Report, InvalidHistory> {
    let checked = checked_operations(history)?;
    // Per key: how many operations the history has on it, and those to check.
    let mut by_key: BTreeMap<&str, (usize, Vec<Checked<'_>>)> = BTreeMap::new();
    for operation in history {
        by_key.entry(operation.key.as_str()).or_default().0 += 1;
    }
    for operation in checked {
        let key = history[operation.index].key.as_str();
        by_key.get_mut(key).expect("every key of the history has an entry").1.push(operation);
    }

    let mut keys = BTreeMap::new();
    let mut violations = Vec::new();
    for (key, (total, mut operations)) in by_key {
        operations.sort_by_key(|operation| (operation.invoke_ns, operation.index));
        let (report, violation) = check_key(history, key, &operations, options);
        let report = KeyReport { operations_dropped: total - operations.len(), ..report };
        keys.insert(key.to_owned(), report);
        violations.extend(violation);
    }
    violations.sort_by_key(|violation| (violation.window.culprit_complete_ns(), violation.key.clone()));
    let verdict = if !violations.is_empty() {
        Verdict::NotLinearizable
    } else if keys.values().any(|key| key.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    Ok(Report { verdict, keys, violations })
}

/// Checks one key's operations (sorted by invocation).
fn check_key(
    history: &[Operation],
    key: &str,
    operations: &[Checked<'_>],
    options: &Options,
) -> (KeyReport, Option<Violation>) {
    let mut values = Values::default();
    let search_ops: Vec<_> = operations.iter().map(|operation| values.search_op(operation)).collect();
    let outcome = search(&search_ops, ABSENT, options.max_steps_per_key);
    let report = KeyReport {
        verdict: outcome.verdict,
        operations_checked: operations.len(),
        unknown_outcomes: operations.iter().filter(|operation| operation.complete_ns.is_none()).count(),
        operations_dropped: 0,
        search_steps: outcome.steps,
    };
    let violation = (outcome.verdict == Verdict::NotLinearizable)
        .then(|| find_violation(history, key, operations, &mut values, options));
    (report, violation)
}

impl Report {
    /// Whether the whole history is linearizable (not merely not proven otherwise).
    pub fn is_linearizable(&self) -> bool {
        self.verdict == Verdict::Linearizable
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linearizable => "linearizable",
            Self::NotLinearizable => "not linearizable",
            Self::Unknown => "unknown",
        })
    }
}

impl fmt::Display for Report {
    /// A summary line, then each violation with its window, or the keys the search gave up
    /// on.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sum = |count: fn(&KeyReport) -> usize| self.keys.values().map(count).sum::<usize>();
        writeln!(
            f,
            "{}: {} checked on {} ({} of unknown outcome, {} left out)",
            self.verdict,
            counted(sum(|key| key.operations_checked), "operation"),
            counted(self.keys.len(), "key"),
            sum(|key| key.unknown_outcomes),
            sum(|key| key.operations_dropped),
        )?;
        for violation in &self.violations {
            write!(f, "\n{violation}")?;
        }
        let gave_up: Vec<_> = self.keys.iter().filter(|(_, key)| key.verdict == Verdict::Unknown).collect();
        if let Some((_, first)) = gave_up.first() {
            const NAMED: usize = 10;
            let mut names: Vec<_> = gave_up.iter().take(NAMED).map(|(name, _)| format!("{name:?}")).collect();
            if gave_up.len() > NAMED {
                names.push(format!("and {} more", gave_up.len() - NAMED));
            }
            writeln!(
                f,
                "the search gave up after {} on {}: {}; a larger step budget may decide",
                counted(first.search_steps as usize, "step"),
                counted(gave_up.len(), "key"),
                names.join(", ")
            )?;
        }
        Ok(())
    }
}

/// `1 key`, `7 keys`, `0 keys`.
pub(crate) fn counted(count: usize, noun: &str) -> String {
    if count == 1 { format!("1 {noun}") } else { format!("{count} {noun}s") }
}
