//! Tests: hand-made histories read like scenarios (`scenarios.rs`), the JSON form and the
//! report's text (`format.rs`), large generated histories and the step budget (`random.rs`),
//! and agreement with a brute-force checker on tiny random histories (`reference.rs`; for a
//! longer run: `ROUNDS=1000000 SEED=7 MAX_OPERATIONS=9 cargo test -p skiff-check reference`).
//!
//! Helpers build operations on key "k" with times in milliseconds, arguments in the order of
//! a window's columns: client, invoked, completed, then the call and its result.

mod format;
mod random;
mod reference;
mod scenarios;

use crate::{Call, Operation, Options, Outcome, Reply, Report, Verdict, Violation, check};

const MS: u64 = 1_000_000;

fn operation(client: u64, invoke_ms: u64, complete_ms: u64, call: Call, result: Reply) -> Operation {
    Operation {
        client,
        key: "k".to_owned(),
        call,
        invoke_ns: invoke_ms * MS,
        outcome: Outcome::Ok { at_ns: complete_ms * MS, result },
    }
}

fn put(client: u64, invoke_ms: u64, complete_ms: u64, value: &str) -> Operation {
    operation(client, invoke_ms, complete_ms, Call::Put { value: value.to_owned() }, Reply::Done)
}

fn get(client: u64, invoke_ms: u64, complete_ms: u64, observed: Option<&str>) -> Operation {
    operation(client, invoke_ms, complete_ms, Call::Get, Reply::Value(observed.map(str::to_owned)))
}

fn delete(client: u64, invoke_ms: u64, complete_ms: u64) -> Operation {
    operation(client, invoke_ms, complete_ms, Call::Delete, Reply::Done)
}

fn cas(client: u64, invoke_ms: u64, complete_ms: u64, expected: Option<&str>, new: &str, swapped: bool) -> Operation {
    let call = Call::Cas { expected: expected.map(str::to_owned), new: new.to_owned() };
    operation(client, invoke_ms, complete_ms, call, Reply::Swapped(swapped))
}

/// `operation` on another key.
fn on(key: &str, operation: Operation) -> Operation {
    Operation { key: key.to_owned(), ..operation }
}

/// `operation`, but its client never heard back.
fn unknown(operation: Operation) -> Operation {
    Operation { outcome: Outcome::Unknown, ..operation }
}

/// `operation`, but the server refused it.
fn failed(operation: Operation) -> Operation {
    Operation { outcome: Outcome::Failed, ..operation }
}

fn check_default(history: &[Operation]) -> Report {
    check(history, &Options::default()).expect("a valid history")
}

#[track_caller]
fn assert_linearizable(history: &[Operation]) -> Report {
    let report = check_default(history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert!(report.violations.is_empty());
    report
}

/// Asserts that exactly one key is not linearizable, that its culprit is the operation at
/// `culprit` in the history, and that its window holds every operation of `window`
/// (history indexes). Returns the violation.
#[track_caller]
fn assert_violation(history: &[Operation], key: &str, culprit: usize, window: &[usize]) -> Violation {
    let report = check_default(history);
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    assert_eq!(report.violations.len(), 1, "{report}");
    let violation = report.violations[0].clone();
    assert_eq!(violation.key, key, "{report}");
    assert_eq!(report.keys[key].verdict, Verdict::NotLinearizable);
    let indexes: Vec<usize> = violation.window.operations.iter().map(|operation| operation.history_index).collect();
    assert_eq!(indexes[violation.window.culprit], culprit, "{report}");
    for index in window {
        assert!(indexes.contains(index), "operation {index} missing from the window:\n{report}");
    }
    assert!(indexes.is_sorted_by_key(|&index| history[index].invoke_ns), "{report}");
    violation
}
