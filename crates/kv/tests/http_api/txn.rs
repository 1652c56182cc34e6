//! `PUT /v1/txn`: Consul's transactions, through the leader and followers; all or nothing;
//! hostile bodies.

use serde_json::{Value, json};
use skiff::NodeId;
use skiff_testkit::kv::HttpClient;
use skiff_testkit::real_clients;

use crate::{KvClient, Setup, value_of};

fn b64(text: &str) -> String {
    base64::Engine::encode(&base64::engine::general_purpose::STANDARD, text)
}

fn txn(client: &HttpClient, id: NodeId, ops: &Value) -> (u16, Value) {
    let reply = client.put(id, "/v1/txn", ops.to_string().as_bytes());
    let body = serde_json::from_str(&reply.text()).unwrap_or(Value::Null);
    (reply.status, body)
}

/// A balance as the store holds it.
fn balance(client: &HttpClient, id: NodeId, key: &str) -> (i64, u64) {
    let entry = client.entry(id, key);
    let text = String::from_utf8(value_of(&entry)).expect("text");
    (text.parse().expect("a number"), entry["ModifyIndex"].as_u64().expect("ModifyIndex"))
}

#[test]
fn a_transfer_applies_whole_through_a_follower_and_a_failed_check_applies_nothing() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-txn");
    let open = json!([
        {"KV": {"Verb": "check-not-exists", "Key": "acct/a"}},
        {"KV": {"Verb": "set", "Key": "acct/a", "Value": b64("100")}},
        {"KV": {"Verb": "set", "Key": "acct/b", "Value": b64("0"), "Flags": 7}},
    ]);
    let (status, body) = txn(&client, f1, &open);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Errors"], Value::Null);
    let results = body["Results"].as_array().expect("results");
    assert_eq!(results.len(), 2, "the writes answer their entries, the check nothing: {body}");
    assert_eq!((results[1]["KV"]["Key"].as_str(), results[1]["KV"]["Flags"].as_u64()), (Some("acct/b"), Some(7)));
    assert_eq!(results[0]["KV"]["Value"], Value::Null, "writes answer no value");
    // A transfer guarded by both modify indexes (a read-modify-write across keys).
    let ((a, ai), (b, bi)) = (balance(&client, f2, "acct/a"), balance(&client, f2, "acct/b"));
    let transfer = |ai: u64, bi: u64| {
        json!([
            {"KV": {"Verb": "cas", "Key": "acct/a", "Value": b64(&(a - 30).to_string()), "Index": ai}},
            {"KV": {"Verb": "cas", "Key": "acct/b", "Value": b64(&(b + 30).to_string()), "Index": bi}},
            {"KV": {"Verb": "get-tree", "Key": "acct/"}},
        ])
    };
    let (status, body) = txn(&client, f2, &transfer(ai, bi));
    assert_eq!(status, 200, "{body}");
    let read: Vec<(String, String)> = body["Results"].as_array().expect("results")[2..]
        .iter()
        .map(|result| {
            let value = result["KV"]["Value"].as_str().expect("a read has its value");
            let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, value).expect("base64");
            (result["KV"]["Key"].as_str().expect("key").to_string(), String::from_utf8(decoded).expect("text"))
        })
        .collect();
    assert_eq!(read, [("acct/a".to_string(), "70".to_string()), ("acct/b".to_string(), "30".to_string())]);
    // The same transfer again, with the now stale indexes: 409, the failing op named, nothing applied.
    let (status, body) = txn(&client, leader, &transfer(ai, bi));
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["Results"], Value::Null);
    assert_eq!(body["Errors"][0]["OpIndex"], 0, "{body}");
    assert!(body["Errors"][0]["What"].as_str().is_some_and(|what| what.contains("modify index")), "{body}");
    // A failure after writes undoes them: the delete-tree and the set before the failing get.
    let undone = json!([
        {"KV": {"Verb": "delete-tree", "Key": "acct/"}},
        {"KV": {"Verb": "set", "Key": "acct/c", "Value": b64("5")}},
        {"KV": {"Verb": "get", "Key": "acct/missing"}},
    ]);
    let (status, body) = txn(&client, f1, &undone);
    assert_eq!((status, body["Errors"][0]["OpIndex"].as_u64()), (409, Some(2)), "{body}");
    for id in [leader, f1, f2] {
        assert_eq!(balance(&client, id, "acct/a").0 + balance(&client, id, "acct/b").0, 100, "{id}: the total");
        assert_eq!(client.get(id, "/v1/kv/acct/c").status, 404, "{id}: the undone set");
    }
    cluster.shutdown();
}

#[test]
fn locks_and_session_checks_in_a_transaction() {
    let Setup { cluster, client, leader, f1, .. } = Setup::start("http-txn-locks");
    let session = client.put(leader, "/v1/session/create", b"").ok().json()["ID"].as_str().expect("ID").to_string();
    let lock = json!([
        {"KV": {"Verb": "lock", "Key": "svc/leader", "Value": b64("n1"), "Session": session}},
        {"KV": {"Verb": "check-session", "Key": "svc/leader", "Session": session}},
    ]);
    let (status, body) = txn(&client, f1, &lock);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["Results"][0]["KV"]["Session"], json!(session));
    assert_eq!(body["Results"][0]["KV"]["LockIndex"], 1);
    let entry = client.get(leader, "/v1/kv/svc/leader").ok().json()[0].clone();
    assert_eq!(entry["Session"], json!(session), "{entry}");
    let unlock = json!([{"KV": {"Verb": "unlock", "Key": "svc/leader", "Session": session}}]);
    assert_eq!(txn(&client, leader, &unlock).0, 200);
    let (status, body) =
        txn(&client, leader, &json!([{"KV": {"Verb": "check-session", "Key": "svc/leader", "Session": session}}]));
    assert_eq!(status, 409, "not held any more: {body}");
    cluster.shutdown();
}

#[test]
fn hostile_transactions_are_refused_with_the_reason_and_write_nothing() {
    let Setup { cluster, client, leader, .. } = Setup::start("http-txn-hostile");
    let too_many: Vec<Value> = (0..5000).map(|i| json!({"KV": {"Verb": "get", "Key": format!("k{i}")}})).collect();
    let cases: Vec<(String, u16, &str)> = vec![
        ("not json".into(), 400, "JSON array"),
        ("{}".into(), 400, "JSON array"),
        ("[]".into(), 400, "no operations"),
        (json!([{"Node": {"Verb": "set"}}]).to_string(), 400, "only KV operations"),
        (json!([{"KV": {"Verb": "explode", "Key": "k"}}]).to_string(), 400, "unknown Verb"),
        (json!([{"KV": {"Verb": "set"}}]).to_string(), 400, "a Key is required"),
        (json!([{"KV": {"Verb": "set", "Key": "k", "Value": "***"}}]).to_string(), 400, "not base64"),
        (json!([{"KV": {"Verb": "set", "Key": "k", "Index": -1}}]).to_string(), 400, "Index"),
        (json!([{"KV": {"Verb": "lock", "Key": "k"}}]).to_string(), 400, "Session is required"),
        (json!([{"KV": {"Verb": "lock", "Key": "k", "Session": "../../x"}}]).to_string(), 400, "not a session id"),
        (json!([{"KV": {"Verb": "set", "Key": "k", "Extra": 1}}]).to_string(), 400, "unknown field"),
        (json!([{"KV": {"Verb": "set", "Key": "k".repeat(10_000)}}]).to_string(), 400, "the key is 10000 bytes"),
        (Value::Array(too_many).to_string(), 413, "the limit is 4096"),
        (format!("[{}]", "1,".repeat(1_100_000)), 413, "--max-txn-bytes"),
    ];
    for (body, status, wanted) in cases {
        let reply = client.put(leader, "/v1/txn", body.as_bytes());
        let shown: String = body.chars().take(60).collect();
        assert_eq!(reply.status, status, "{shown}: {}", reply.text());
        assert!(reply.text().contains(wanted), "{shown}: wanted {wanted:?} in {}", reply.text());
    }
    assert_eq!(client.get(leader, "/v1/kv/?recurse").status, 404, "nothing was written");
    cluster.shutdown();
}

/// `tests/clients/py_consul_txn.py`: py-consul's `txn.put` with every verb, through every
/// node. Without py-consul the test is skipped, or fails under
/// `SKIFF_REQUIRE_REAL_CLIENTS=1`, as the testkit's `real_clients` has it.
#[test]
fn py_consul_transactions_with_every_verb() {
    let test = "py_consul_transactions_with_every_verb";
    if !real_clients::present(test, &[real_clients::python_modules(&["consul"], "pip install py-consul")]) {
        return;
    }
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-txn-py-consul");
    let http: Vec<&str> = [f1, leader, f2].iter().map(|&id| client.address(id)).collect();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/py_consul_txn.py");
    let output = std::process::Command::new(real_clients::python())
        .arg(&script)
        .args(["--http", &http.join(",")])
        .output()
        .expect("the interpreter that imported py-consul runs");
    cluster.shutdown();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
