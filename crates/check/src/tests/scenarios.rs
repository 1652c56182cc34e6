//! Hand-made histories, each a small scenario. Times are in milliseconds; the helpers take
//! (client, invoked, completed, call arguments..., result).

use super::*;

// Linearizable histories.

#[test]
fn sequential_history_is_linearizable() {
    let history = [
        get(1, 0, 1, None),
        put(1, 2, 3, "a"),
        get(1, 4, 5, Some("a")),
        put(2, 6, 7, "b"),
        get(1, 8, 9, Some("b")),
        delete(2, 10, 11),
        get(1, 12, 13, None),
    ];
    let report = assert_linearizable(&history);
    assert_eq!(report.keys["k"].operations_checked, 7);
}

#[test]
fn a_get_overlapping_a_put_may_see_either_value() {
    for seen in ["a", "b"] {
        // The get overlaps the put of "b": it may take effect before or after it.
        let history = [put(1, 0, 1, "a"), put(1, 2, 10, "b"), get(2, 3, 4, Some(seen)), get(2, 11, 12, Some("b"))];
        assert_linearizable(&history);
    }
}

#[test]
fn a_get_overlapping_a_put_sees_it_after_a_later_get_did() {
    // Both gets overlap the put; the first saw "b", the second "a" — impossible only if
    // the first completed before the second was invoked. Here they overlap, so "a" then "b"
    // is an order that works.
    let history = [put(1, 0, 1, "a"), put(1, 2, 10, "b"), get(2, 3, 6, Some("b")), get(3, 4, 7, Some("a"))];
    assert_linearizable(&history);
}

#[test]
fn operations_touching_at_one_instant_count_as_concurrent() {
    // The get completes at 5, exactly when the put is invoked: it may see "b".
    let history = [put(1, 0, 1, "a"), put(1, 5, 6, "b"), get(2, 2, 5, Some("b"))];
    assert_linearizable(&history);
}

#[test]
fn cas_succeeds_on_the_expected_value_and_fails_on_any_other() {
    let history = [
        cas(1, 0, 1, Some("a"), "x", false), // absent, not "a"
        cas(1, 2, 3, None, "a", true),       // absent: writes "a"
        cas(2, 4, 5, None, "y", false),      // not absent any more
        cas(2, 6, 7, Some("a"), "b", true),
        cas(1, 8, 9, Some("a"), "c", false),
        get(1, 10, 11, Some("b")),
        delete(2, 12, 13),
        cas(1, 14, 15, None, "d", true),
        get(2, 16, 17, Some("d")),
    ];
    assert_linearizable(&history);
}

#[test]
fn concurrent_cas_only_one_wins() {
    let history = [
        put(1, 0, 1, "a"),
        cas(1, 2, 6, Some("a"), "b", true),
        cas(2, 2, 6, Some("a"), "c", false),
        cas(3, 3, 7, Some("a"), "d", false),
        get(4, 8, 9, Some("b")),
    ];
    assert_linearizable(&history);
}

#[test]
fn delete_then_get_sees_nothing() {
    let history = [put(1, 0, 1, "a"), delete(1, 2, 3), get(2, 4, 5, None), delete(2, 6, 7), get(1, 8, 9, None)];
    assert_linearizable(&history);
}

#[test]
fn unknown_put_observed_later_took_effect() {
    // Client 2 timed out on its put of "b", long after which client 1 reads "b".
    let history = [put(1, 0, 1, "a"), unknown(put(2, 2, 3, "b")), get(1, 4, 5, Some("a")), get(1, 100, 101, Some("b"))];
    let report = assert_linearizable(&history);
    assert_eq!(report.keys["k"].unknown_outcomes, 1);
}

#[test]
fn unknown_put_never_observed_never_happened() {
    let history = [put(1, 0, 1, "a"), unknown(put(2, 2, 3, "b")), get(1, 4, 5, Some("a")), get(1, 100, 101, Some("a"))];
    assert_linearizable(&history);
}

#[test]
fn unknown_cas_and_delete_may_take_effect() {
    let history = [
        put(1, 0, 1, "a"),
        unknown(cas(2, 2, 3, Some("a"), "b", false)), // the result is ignored
        get(1, 10, 11, Some("b")),
        unknown(delete(2, 12, 13)),
        get(1, 20, 21, Some("b")),
        get(3, 30, 31, None),
    ];
    assert_linearizable(&history);
}

#[test]
fn unknown_and_failed_gets_and_failed_writes_are_left_out() {
    let history = [
        put(1, 0, 1, "a"),
        unknown(get(2, 2, 3, Some("zzz"))), // constrains nothing
        failed(put(3, 4, 5, "b")),          // certainly did not happen
        failed(get(2, 6, 7, Some("b"))),
        get(1, 8, 9, Some("a")),
    ];
    let report = assert_linearizable(&history);
    assert_eq!(report.keys["k"].operations_checked, 2);
    assert_eq!(report.keys["k"].operations_dropped, 3);
}

#[test]
fn many_concurrent_operations_on_several_keys() {
    let history = [
        on("x", put(1, 0, 10, "x1")),
        on("y", put(2, 1, 4, "y1")),
        on("x", get(3, 2, 5, None)), // before x1
        on("y", put(4, 3, 12, "y2")),
        on("x", put(2, 5, 8, "x2")),
        on("y", get(3, 6, 9, Some("y2"))),
        on("x", get(4, 13, 14, Some("x1"))), // x1 took effect after x2
        on("y", get(1, 11, 13, Some("y2"))),
        on("z", cas(1, 15, 20, None, "z1", true)),
        on("z", cas(2, 16, 19, None, "z2", false)),
        on("z", get(3, 17, 18, Some("z1"))),
        on("x", unknown(delete(3, 19, 25))),
        on("x", get(2, 21, 22, Some("x1"))),
        on("y", delete(2, 23, 26)),
        on("y", get(4, 24, 27, Some("y2"))),
        on("x", get(4, 40, 41, None)),
    ];
    let report = assert_linearizable(&history);
    assert_eq!(report.keys.len(), 3);
    assert_eq!(report.keys["x"].operations_checked, 7);
}

// Histories that are not linearizable: each must be caught, on the right key, with the
// culprit marked and the operations that contradict it in the window.

#[test]
fn stale_read() {
    // The put of "b" completed before the get was invoked, yet the get returns "a".
    let history = [
        on("other", put(3, 0, 50, "o")),
        put(1, 0, 1, "a"),
        put(2, 2, 3, "b"),
        on("other", get(3, 51, 52, Some("o"))),
        get(1, 4, 5, Some("a")),
    ];
    let violation = assert_violation(&history, "k", 4, &[1, 2]);
    assert!(violation.window.self_contained);
    assert_eq!(
        violation.explanation,
        "get by client 1 at 0.004s returned \"a\", but no linearization of the 3 operations in this window allows it, \
         whatever earlier operations left in the key"
    );
}

#[test]
fn stale_read_among_concurrent_clients() {
    let mut history = vec![];
    for i in 0..20 {
        history.push(put(1 + i % 4, 10 * i, 10 * i + 6, &format!("v{i}")));
        history.push(get(5 + i % 3, 10 * i + 2, 10 * i + 8, Some(&format!("v{i}"))));
    }
    // After v19 (completed at 196), a get returns v18.
    history.push(get(9, 200, 201, Some("v18")));
    let violation = assert_violation(&history, "k", 40, &[38, 39]);
    assert!(violation.window.operations.len() <= 6, "{}", violation.window);
}

#[test]
fn lost_write() {
    // "b" is acknowledged, then every read sees "a" again, with no write in between.
    let history = [
        put(1, 0, 1, "a"),
        get(2, 2, 3, Some("a")),
        put(1, 4, 5, "b"),
        get(2, 6, 7, Some("a")),
        get(3, 8, 9, Some("a")),
    ];
    let violation = assert_violation(&history, "k", 3, &[2]);
    assert!(violation.window.self_contained);
}

#[test]
fn value_flips_back() {
    // The put of "b" is still in flight, but once a read saw "b", a later read cannot see "a".
    let history = [put(1, 0, 1, "a"), put(1, 2, 100, "b"), get(2, 3, 4, Some("b")), get(3, 5, 6, Some("a"))];
    let violation = assert_violation(&history, "k", 3, &[1, 2]);
    assert!(violation.window.self_contained);
}

#[test]
fn cas_against_a_value_no_longer_current() {
    // "b" replaced "a" before the cas was invoked, yet the cas found "a".
    let history = [put(1, 0, 1, "a"), put(2, 2, 3, "b"), cas(3, 4, 5, Some("a"), "c", true), get(1, 6, 7, Some("c"))];
    let violation = assert_violation(&history, "k", 2, &[1]);
    assert!(violation.explanation.starts_with("cas \"a\" -> \"c\" by client 3 at 0.004s succeeded, but"));
}

#[test]
fn cas_failing_on_the_current_value() {
    let history = [put(1, 0, 1, "a"), cas(3, 4, 5, Some("a"), "c", false)];
    assert_violation(&history, "k", 1, &[0]);
}

#[test]
fn read_of_a_value_never_written() {
    let history = [put(1, 0, 1, "a"), get(2, 2, 3, Some("a")), get(2, 4, 5, Some("ghost")), put(1, 6, 7, "b")];
    let violation = assert_violation(&history, "k", 2, &[]);
    assert!(violation.window.self_contained);
}

#[test]
fn read_of_a_value_written_only_by_a_failed_put() {
    let history = [put(1, 0, 1, "a"), failed(put(2, 2, 3, "b")), get(1, 4, 5, Some("b"))];
    assert_violation(&history, "k", 2, &[0]);
}

#[test]
fn read_from_the_future() {
    // The get completed before the put of its value was invoked.
    let history = [put(1, 0, 1, "a"), get(2, 2, 3, Some("b")), put(1, 4, 5, "b"), get(2, 6, 7, Some("b"))];
    let violation = assert_violation(&history, "k", 1, &[]);
    assert!(violation.window.self_contained);
}

#[test]
fn violations_on_two_keys_are_both_reported_earliest_first() {
    let history = [
        on("late", put(1, 0, 1, "a")),
        on("late", get(1, 20, 21, None)),
        on("early", put(2, 0, 1, "a")),
        on("early", get(2, 10, 11, Some("b"))),
        on("fine", put(3, 0, 1, "a")),
    ];
    let report = check_default(&history);
    assert_eq!(report.verdict, Verdict::NotLinearizable);
    let keys: Vec<&str> = report.violations.iter().map(|violation| violation.key.as_str()).collect();
    assert_eq!(keys, ["early", "late"]);
    assert_eq!(report.keys["fine"].verdict, Verdict::Linearizable);
}

#[test]
fn window_shows_overlapping_operations_and_recent_context_only() {
    // Forty sequential writes and reads, then a stale read overlapping two puts.
    let mut history = vec![];
    for i in 0..40 {
        history.push(put(1, 10 * i, 10 * i + 2, &format!("v{i}")));
        history.push(get(2, 10 * i + 4, 10 * i + 6, Some(&format!("v{i}"))));
    }
    history.push(put(1, 400, 410, "w")); // 80
    history.push(put(3, 402, 404, "x")); // 81
    history.push(get(2, 405, 408, Some("v39"))); // 82: "x" completed before it started
    history.push(get(2, 420, 421, Some("w")));
    let violation = assert_violation(&history, "k", 82, &[80, 81, 79]);
    let window: Vec<usize> = violation.window.operations.iter().map(|operation| operation.history_index).collect();
    // The overlapping put of "w", the culprit, and the five latest operations completed
    // before it was invoked (the put of "x" among them).
    assert_eq!(window, [76, 77, 78, 79, 80, 81, 82]);
    assert!(violation.window.self_contained);
}
