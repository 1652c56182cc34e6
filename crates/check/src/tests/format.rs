//! The history's JSON form, refused histories, and the text a CLI prints.

use super::*;
use crate::InvalidHistory;

#[test]
fn json_form_of_each_kind_of_operation() {
    let history = [
        put(1, 0, 1, "a"),
        get(2, 2, 3, None),
        cas(3, 4, 5, None, "b", false),
        unknown(delete(4, 6, 7)),
        failed(get(5, 8, 9, Some("a"))),
    ];
    let lines: Vec<String> =
        history.iter().map(|operation| serde_json::to_string(operation).expect("serializable")).collect();
    assert_eq!(
        lines,
        [
            r#"{"client":1,"key":"k","call":{"op":"put","value":"a"},"invoke_ns":0,"outcome":{"status":"ok","at_ns":1000000,"result":"done"}}"#,
            r#"{"client":2,"key":"k","call":{"op":"get"},"invoke_ns":2000000,"outcome":{"status":"ok","at_ns":3000000,"result":{"value":null}}}"#,
            r#"{"client":3,"key":"k","call":{"op":"cas","expected":null,"new":"b"},"invoke_ns":4000000,"outcome":{"status":"ok","at_ns":5000000,"result":{"swapped":false}}}"#,
            r#"{"client":4,"key":"k","call":{"op":"delete"},"invoke_ns":6000000,"outcome":{"status":"unknown"}}"#,
            r#"{"client":5,"key":"k","call":{"op":"get"},"invoke_ns":8000000,"outcome":{"status":"failed"}}"#,
        ]
    );
    let json = serde_json::to_string(&history).expect("serializable");
    let back: Vec<Operation> = serde_json::from_str(&json).expect("what was written reads back");
    assert_eq!(back, history);
}

#[test]
fn report_round_trips_through_json() {
    let history = [put(1, 0, 1, "a"), put(2, 2, 3, "b"), get(1, 4, 5, Some("a"))];
    let report = check_default(&history);
    let json = serde_json::to_string(&report).expect("serializable");
    assert_eq!(serde_json::from_str::<Report>(&json).expect("reads back"), report);
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    for json in [
        r#"[{"client":1,"key":"k","call":{"op":"frobnicate"},"invoke_ns":0,"outcome":{"status":"unknown"}}]"#,
        r#"[{"client":1,"key":"k","call":{"op":"get"},"invoke_ns":-5,"outcome":{"status":"unknown"}}]"#,
        r#"[{"client":1,"key":"k","call":{"op":"get"},"invoke_ns":0,"outcome":{"status":"ok"}}]"#,
        r#"{"client":1}"#,
    ] {
        assert!(serde_json::from_str::<Vec<Operation>>(json).is_err(), "{json}");
    }
}

#[test]
fn self_contradicting_operations_are_refused() {
    let backwards = [put(1, 0, 1, "a"), put(1, 5, 4, "b")];
    let error = check(&backwards, &Options::default()).expect_err("completed before invoked");
    assert_eq!(error, InvalidHistory::CompletedBeforeInvoked { index: 1, invoke_ns: 5 * MS, at_ns: 4 * MS });

    let mismatched = [operation(1, 0, 1, Call::Put { value: "a".to_owned() }, Reply::Value(None))];
    let error = check(&mismatched, &Options::default()).expect_err("a put replies done");
    assert_eq!(error, InvalidHistory::WrongReply { index: 0, call: "put", reply: Reply::Value(None) });
    assert_eq!(
        error.to_string(),
        "operation 0 of the history is a put but its reply is Value(None); a put replies \"done\""
    );
}

#[test]
fn window_prints_one_aligned_line_per_operation() {
    let history = [
        on("other", put(9, 0, 1, "o")),
        put(1, 1000, 1001, "a"),
        put(22, 1002, 1003, "b"),
        unknown(put(3, 1003, 0, "c")),
        unknown(delete(5, 1003, 0)), // nothing reads absent: not shown
        get(1, 1004, 1005, Some("a")),
        get(4, 1004, 1007, Some("c")),
    ];
    let report = check_default(&history);
    assert_eq!(
        report.to_string(),
        r#"not linearizable: 7 operations checked on 2 keys (2 of unknown outcome, 0 left out)

key "k": get by client 1 at 1.004s returned "a", but no linearization of the 5 operations in this window (with 1 more write of unknown outcome, not shown) allows it, whatever earlier operations left in the key
times in ms from 1s:
   client  invoked  completed  call     result
        1    0.000      1.000  put "a"  ok
       22    2.000      3.000  put "b"  ok
        3    3.000          ?  put "c"  unknown
>       1    4.000      5.000  get      "a"
        4    4.000      7.000  get      "c"
(and 1 write of unknown outcome, not shown: nothing above reads its value)
"#
    );
}

#[test]
fn summary_names_the_keys_the_search_gave_up_on() {
    let history = [put(1, 0, 1, "a"), on("other", get(1, 0, 1, None))];
    let options = Options { max_steps_per_key: 0, ..Options::default() };
    let report = check(&history, &options).expect("valid");
    assert_eq!(report.verdict, Verdict::Unknown);
    assert_eq!(
        report.to_string(),
        "unknown: 2 operations checked on 2 keys (0 of unknown outcome, 0 left out)\n\
         the search gave up after 0 steps on 2 keys: \"k\", \"other\"; a larger step budget may decide\n"
    );
}
