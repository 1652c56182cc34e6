//! Large generated histories, and the step budget.
//!
//! The generator simulates real registers: each client issues operations one after another,
//! each with an invocation, a linearization point and a completion drawn at random, so the
//! clients' operations overlap at random; applying the operations in the order of their
//! linearization points gives every result. The history is linearizable by construction.

use std::time::Instant;

use super::*;

/// SplitMix64: a small, good enough seeded generator (no `rand` dependency).
pub(super) struct Rng {
    state: u64,
}

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub(super) fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    pub(super) fn percent(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Workload {
    seed: u64,
    operations: usize,
    keys: u64,
    clients: u64,
    /// Percent of operations whose client times out (half of those writes take effect).
    unknown_percent: u64,
    /// Percent of operations the server refuses.
    failed_percent: u64,
}

/// An operation being generated: its linearization point decides its result.
struct Planned {
    linearize_ns: u64,
    operation: Operation,
    /// Whether a write of unknown outcome takes effect.
    takes_effect: bool,
}

fn random_history(workload: &Workload) -> Vec<Operation> {
    let mut rng = Rng::new(workload.seed);
    let mut free_at_ns = vec![0; workload.clients as usize];
    let mut planned = Vec::with_capacity(workload.operations);
    for _ in 0..workload.operations {
        let client = rng.below(workload.clients);
        let invoke_ns = free_at_ns[client as usize] + rng.below(300_000);
        let linearize_ns = invoke_ns + 1 + rng.below(1_000_000);
        let complete_ns = linearize_ns + rng.below(1_000_000);
        free_at_ns[client as usize] = complete_ns;
        let outcome = if rng.percent(workload.unknown_percent) {
            Outcome::Unknown
        } else if rng.percent(workload.failed_percent) {
            Outcome::Failed
        } else {
            Outcome::Ok { at_ns: complete_ns, result: Reply::Done } // the result comes later
        };
        let key = format!("key{}", rng.below(workload.keys));
        let operation = Operation { client, key, call: Call::Get, invoke_ns, outcome };
        planned.push(Planned { linearize_ns, operation, takes_effect: rng.percent(50) });
    }
    planned.sort_by_key(|planned| planned.linearize_ns);

    // Apply in linearization order, choosing calls and filling in results.
    let mut registers: std::collections::HashMap<String, Option<String>> = Default::default();
    let mut written: Vec<String> = Vec::new();
    let mut history = Vec::with_capacity(workload.operations);
    for (number, Planned { operation, takes_effect, .. }) in planned.into_iter().enumerate() {
        let mut operation = operation;
        let register = registers.entry(operation.key.clone()).or_default();
        let value = format!("v{number}");
        let applies = match operation.outcome {
            Outcome::Ok { .. } => true,
            Outcome::Unknown => takes_effect,
            Outcome::Failed => false,
        };
        let (call, result) = match rng.below(100) {
            0..40 => (Call::Get, Reply::Value(register.clone())),
            40..70 => {
                if applies {
                    *register = Some(value.clone());
                }
                (Call::Put { value }, Reply::Done)
            }
            70..75 => {
                if applies {
                    *register = None;
                }
                (Call::Delete, Reply::Done)
            }
            _ => {
                let expected = if rng.percent(60) || written.is_empty() {
                    register.clone()
                } else {
                    Some(written[rng.below(written.len() as u64) as usize].clone())
                };
                let swapped = expected == *register;
                if swapped && applies {
                    *register = Some(value.clone());
                }
                (Call::Cas { expected, new: value }, Reply::Swapped(swapped))
            }
        };
        if let Call::Put { value } | Call::Cas { new: value, .. } = &call {
            written.push(value.clone());
        }
        if let Outcome::Ok { result: slot, .. } = &mut operation.outcome {
            *slot = result;
        }
        operation.call = call;
        history.push(operation);
    }
    history.sort_by_key(|operation| operation.invoke_ns);
    history
}

/// Checks `history`, printing the time taken, and returns the report and the steps.
fn timed_check(name: &str, history: &[Operation]) -> (Report, u64) {
    let started = Instant::now();
    let report = check_default(history);
    let steps: u64 = report.keys.values().map(|key| key.search_steps).sum();
    eprintln!("{name}: {} operations, {} steps, {:?}", history.len(), steps, started.elapsed());
    (report, steps)
}

#[test]
fn large_random_history_is_linearizable() {
    let workload =
        Workload { seed: 7, operations: 50_000, keys: 20, clients: 8, unknown_percent: 1, failed_percent: 1 };
    let history = random_history(&workload);
    let (report, steps) = timed_check("50k operations, 20 keys", &history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert_eq!(report.keys.len(), 20);
    // A guard against the search losing its efficiency, independent of the machine's speed.
    assert!(steps < 3 * history.len() as u64, "{steps} steps");
}

#[test]
fn hot_key_with_many_concurrent_clients_is_linearizable() {
    let workload =
        Workload { seed: 11, operations: 20_000, keys: 1, clients: 24, unknown_percent: 2, failed_percent: 1 };
    let history = random_history(&workload);
    let (report, steps) = timed_check("20k operations, 1 key, 24 clients", &history);
    assert_eq!(report.verdict, Verdict::Linearizable, "{report}");
    assert!(steps < 20 * history.len() as u64, "{steps} steps");
}

#[test]
fn corrupted_read_in_a_large_history_is_found_with_a_small_window() {
    let workload = Workload { seed: 3, operations: 20_000, keys: 4, clients: 8, unknown_percent: 1, failed_percent: 0 };
    let mut history = random_history(&workload);
    let corrupted = (history.len() / 2..)
        .find(|&index| history[index].call == Call::Get && matches!(history[index].outcome, Outcome::Ok { .. }))
        .expect("gets are 40% of the operations");
    if let Outcome::Ok { result, .. } = &mut history[corrupted].outcome {
        *result = Reply::Value(Some("never written".to_owned()));
    }
    let (report, _) = timed_check("20k operations with one corrupted read", &history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    assert_eq!(report.violations.len(), 1, "{report}");
    let window = &report.violations[0].window;
    assert_eq!(window.operations[window.culprit].history_index, corrupted, "{report}");
    assert!(window.self_contained, "{report}");
    assert!(window.operations.len() <= 15, "{report}");
}

/// Writes of "a" and "b" (not unique values), `writes` of each, all concurrent, under
/// sequential gets that alternate "a", "b", "a", ...: each get needs a write of its own, so
/// more than `2 * writes` gets cannot be linearized. The writes of one value are
/// interchangeable, but the search cannot know it: it tries the subsets of them.
fn alternating_reads(writes: u64, gets: u64) -> Vec<Operation> {
    let mut history = vec![];
    for i in 0..writes {
        history.push(put(i, 0, 1000, "a"));
        history.push(put(100 + i, 0, 1000, "b"));
    }
    for i in 0..gets {
        history.push(get(999, 1 + 10 * i, 6 + 10 * i, Some(if i % 2 == 0 { "a" } else { "b" })));
    }
    history
}

#[test]
fn step_budget_turns_a_hopeless_search_into_unknown() {
    let options = Options { max_steps_per_key: 100_000, ..Options::default() };
    let mut history = alternating_reads(12, 25);
    history.push(on("easy", put(1, 0, 1, "a")));
    let started = Instant::now();
    let report = check(&history, &options).expect("valid");
    eprintln!("hopeless search: {:?}", started.elapsed());
    assert_eq!(report.verdict, Verdict::Unknown, "{report}");
    assert_eq!(report.keys["k"].verdict, Verdict::Unknown);
    assert_eq!(report.keys["k"].search_steps, 100_000);
    assert_eq!(report.keys["easy"].verdict, Verdict::Linearizable);
    assert!(report.violations.is_empty());

    // Smaller, the same search finishes, both ways.
    assert_eq!(check(&alternating_reads(3, 6), &options).expect("valid").verdict, Verdict::Linearizable);
    let report = check(&alternating_reads(3, 7), &options).expect("valid");
    assert_eq!(report.verdict, Verdict::NotLinearizable, "{report}");
    assert_eq!(report.violations[0].window.culprit().invoke_ns, 61 * MS, "{report}");
}

#[test]
fn writes_of_unknown_outcome_nobody_reads_are_left_out_of_the_window() {
    let mut history: Vec<Operation> = (0..20).map(|i| unknown(put(i, 0, 0, &format!("w{i}")))).collect();
    history.push(put(98, 1, 2, "a"));
    history.push(get(99, 3, 4, Some("ghost")));
    let report = check_default(&history);
    let violation = &report.violations[0];
    assert_eq!(violation.window.operations.len(), 2, "{report}");
    assert_eq!(violation.window.hidden_unknown_outcomes, 20);
    assert!(violation.explanation.contains("the 2 operations in this window (with 20 more writes of unknown outcome"));
}
