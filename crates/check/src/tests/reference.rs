//! The checker against a brute-force reference on thousands of tiny random histories.
//!
//! The search prunes a lot (memoisation, subsumption, forced reads, stranded values, the
//! filter on unknown-outcome writes); each pruning is argued sound in `search.rs`, and this
//! test checks the arguments: on histories small enough to try every order, both must agree.
//! Values come from a tiny set, so histories are often linearizable, often not, and values
//! repeat (which the stranded-value pruning must handle).

use super::random::Rng;
use super::*;

/// Whether some order of `operations` (each taking effect between its invocation and its
/// completion; those of unknown outcome possibly never) explains every result.
fn brute_force(operations: &[Operation]) -> bool {
    fn explains(operations: &[&Operation], state: Option<&str>) -> bool {
        if operations.iter().all(|operation| operation.outcome == Outcome::Unknown) {
            return true;
        }
        for (i, next) in operations.iter().enumerate() {
            // `next` may go first if nothing left completed before it was invoked.
            let may_go_first = operations.iter().all(|other| match other.outcome {
                Outcome::Ok { at_ns, .. } => at_ns >= next.invoke_ns,
                _ => true,
            });
            if !may_go_first {
                continue;
            }
            let result = match &next.outcome {
                Outcome::Ok { result, .. } => Some(result),
                _ => None,
            };
            let after = match (&next.call, result) {
                (Call::Get, Some(Reply::Value(observed))) => (observed.as_deref() == state).then_some(state),
                (Call::Put { value }, _) => Some(Some(value.as_str())),
                (Call::Delete, _) => Some(None),
                (Call::Cas { expected, .. }, Some(Reply::Swapped(false))) => {
                    (expected.as_deref() != state).then_some(state)
                }
                (Call::Cas { expected, new }, _) => (expected.as_deref() == state).then_some(Some(new.as_str())),
                _ => unreachable!("gets of unknown outcome are not generated"),
            };
            let rest: Vec<&Operation> =
                operations.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, operation)| *operation).collect();
            if let Some(after) = after
                && explains(&rest, after)
            {
                return true;
            }
            // An unknown outcome may also never take effect.
            if next.outcome == Outcome::Unknown && explains(&rest, state) {
                return true;
            }
        }
        false
    }
    let operations: Vec<&Operation> =
        operations.iter().filter(|operation| operation.outcome != Outcome::Failed).collect();
    explains(&operations, None)
}

/// The most operations a history has (the brute force is exponential in it).
fn max_operations() -> u64 {
    std::env::var("MAX_OPERATIONS").ok().and_then(|max| max.parse().ok()).unwrap_or(8)
}

fn tiny_random_history(rng: &mut Rng) -> Vec<Operation> {
    let values = ["a", "b", "c"];
    let value = |rng: &mut Rng| values[rng.below(3) as usize];
    let maybe_value = |rng: &mut Rng| if rng.percent(25) { None } else { Some(value(rng)) };
    let count = 1 + rng.below(max_operations());
    let unknown_percent = [10, 40][rng.below(2) as usize];
    (0..count)
        .map(|client| {
            let invoke_ms = rng.below(10);
            let complete_ms = invoke_ms + rng.below(6);
            let (call, result) = match rng.below(4) {
                0 => (Call::Get, Reply::Value(maybe_value(rng).map(str::to_owned))),
                1 => (Call::Put { value: value(rng).to_owned() }, Reply::Done),
                2 => (Call::Delete, Reply::Done),
                _ => {
                    let call = Call::Cas { expected: maybe_value(rng).map(str::to_owned), new: value(rng).to_owned() };
                    (call, Reply::Swapped(rng.percent(50)))
                }
            };
            let operation = operation(client, invoke_ms, complete_ms, call, result);
            if operation.call != Call::Get && rng.percent(unknown_percent) {
                unknown(operation)
            } else if rng.percent(10) {
                failed(operation)
            } else {
                operation
            }
        })
        .collect()
}

#[test]
fn agrees_with_brute_force_on_tiny_histories() {
    let rounds = std::env::var("ROUNDS").ok().and_then(|rounds| rounds.parse().ok()).unwrap_or(20_000);
    let mut rng = Rng::new(std::env::var("SEED").ok().and_then(|seed| seed.parse().ok()).unwrap_or(2024));
    let (mut verdicts, mut windows_checked) = ([0; 2], 0);
    for round in 0..rounds {
        let history = tiny_random_history(&mut rng);
        let expected = brute_force(&history);
        let report = check_default(&history);
        let expected_verdict = if expected { Verdict::Linearizable } else { Verdict::NotLinearizable };
        assert_eq!(report.verdict, expected_verdict, "round {round}: {history:#?}\n{report}");
        if let Some(violation) = report.violations.first() {
            // A self-contained window with nothing before it is itself not linearizable.
            let window = &violation.window;
            let Outcome::Ok { at_ns: culprit_ns, .. } = window.culprit().outcome else { panic!("a culprit completed") };
            let invoked_by_culprit = history
                .iter()
                .filter(|operation| operation.outcome != Outcome::Failed && operation.invoke_ns <= culprit_ns)
                .filter(|operation| !(operation.outcome == Outcome::Unknown && operation.call == Call::Get))
                .count();
            if window.self_contained && window.operations.len() + window.hidden_unknown_outcomes == invoked_by_culprit {
                let shown: Vec<usize> = window.operations.iter().map(|operation| operation.history_index).collect();
                let hidden = (0..history.len())
                    .filter(|index| history[*index].outcome == Outcome::Unknown && !shown.contains(index));
                let all: Vec<Operation> = shown.iter().copied().chain(hidden).map(|i| history[i].clone()).collect();
                assert!(!brute_force(&all), "round {round}: {history:#?}\n{report}");
                windows_checked += 1;
            }
        }
        verdicts[usize::from(expected)] += 1;
    }
    // Both verdicts are well represented, so the comparison means something.
    assert!(verdicts.iter().all(|&count| count > rounds / 5), "{verdicts:?}");
    assert!(windows_checked > rounds / 20, "{windows_checked}");
    eprintln!("{rounds} histories: {verdicts:?} (not linearizable, linearizable), {windows_checked} windows checked");
}
