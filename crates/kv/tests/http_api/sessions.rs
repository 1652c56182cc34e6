//! Sessions, locks, leases and fencing over HTTP: `/v1/session/*`, `?acquire`, `?release`,
//! `?lease`, `?fence` / `Skiff-Fence`, `/v1/skiff/lease`, as `docs/http-api.md` states them,
//! through the leader and through followers; then hostile input and tokens.

use std::time::{Duration, Instant};

use serde_json::Value;
use skiff::NodeId;
use skiff_testkit::cluster_file::ClusterFile;
use skiff_testkit::kv::{HttpClient, KvCluster, Reply};
use skiff_testkit::real_clients;
use skiff_testkit::wait::eventually;

use crate::{Setup, kv_path, value_of};

/// `PUT /v1/session/create` with `body` through `id`: the new session's id.
fn create(client: &HttpClient, id: NodeId, body: &str) -> String {
    let reply = client.put(id, "/v1/session/create", body.as_bytes()).ok();
    let session =
        reply.json()["ID"].as_str().unwrap_or_else(|| panic!("{}: no ID in {}", reply.what, reply.text())).to_string();
    assert_eq!(session.len(), 36, "{}: a UUID: {session}", reply.what);
    session
}

/// The sessions of a session read (`info`, `list`, `node`), with `X-Consul-Index` checked.
fn sessions(client: &HttpClient, id: NodeId, path: &str) -> Vec<Value> {
    let reply = client.get(id, path).ok();
    reply.index();
    reply.json().as_array().unwrap_or_else(|| panic!("{}: not an array: {}", reply.what, reply.text())).clone()
}

fn ids(sessions: &[Value]) -> Vec<String> {
    let mut ids: Vec<String> = sessions.iter().map(|session| session["ID"].as_str().expect("ID").to_string()).collect();
    ids.sort();
    ids
}

fn acquire(client: &HttpClient, id: NodeId, key: &str, session: &str, value: &[u8]) -> Reply {
    client.put(id, &format!("/v1/kv/{key}?acquire={session}"), value).ok()
}

/// The fencing token a successful `?acquire` answered.
fn fence_of(reply: &Reply) -> u64 {
    let text = reply.header("Skiff-Fence").unwrap_or_else(|| panic!("{}: no Skiff-Fence", reply.what));
    text.parse().unwrap_or_else(|_| panic!("{}: Skiff-Fence {text:?}", reply.what))
}

/// The one entry of `GET /v1/kv/<key>` (locks shown: `LockIndex`, `Session`, `Fence`).
fn entry(client: &HttpClient, id: NodeId, key: &str) -> Value {
    let reply = client.get(id, &kv_path(key)).ok();
    let body = reply.json();
    assert_eq!(body.as_array().map(Vec::len), Some(1), "{}: {body}", reply.what);
    body[0].clone()
}

#[test]
fn sessions_are_created_read_listed_renewed_and_destroyed_through_any_node() {
    let Setup { cluster, client, leader, f1, f2, ids: nodes } = Setup::start("http-sessions-crud");
    let a = create(&client, leader, r#"{"Name": "a", "TTL": "30s", "LockDelay": "2s", "Behavior": "delete"}"#);
    let b = create(&client, f1, "");
    assert_ne!(a, b);
    for &reader in &nodes {
        let info = sessions(&client, reader, &format!("/v1/session/info/{a}"));
        assert_eq!(info.len(), 1, "info of {a} through {reader}");
        let session = &info[0];
        assert_eq!(session["Name"], "a");
        assert_eq!(session["TTL"], "30s");
        assert_eq!(session["LockDelay"], 2_000_000_000u64, "nanoseconds, as Consul");
        assert_eq!(session["Behavior"], "delete");
        assert_eq!(session["Node"], leader.to_string(), "the node it was created through");
        assert_eq!(session["NodeChecks"], serde_json::json!([]));
        assert!(session["CreateIndex"].as_u64() >= Some(1) && session["ModifyIndex"] == session["CreateIndex"]);
        let defaults = &sessions(&client, reader, &format!("/v1/session/info/{b}"))[0];
        assert_eq!(
            (&defaults["TTL"], &defaults["LockDelay"], &defaults["Behavior"]),
            (&"".into(), &15_000_000_000u64.into(), &"release".into())
        );
        let mut both = vec![a.clone(), b.clone()];
        both.sort();
        assert_eq!(ids(&sessions(&client, reader, "/v1/session/list")), both);
        assert_eq!(ids(&sessions(&client, reader, &format!("/v1/session/node/{f1}"))), vec![b.clone()]);
        assert!(sessions(&client, reader, &format!("/v1/session/node/{f2}")).is_empty());
    }
    // Renew answers the session with a new ModifyIndex.
    let before = sessions(&client, f2, &format!("/v1/session/info/{a}"))[0]["ModifyIndex"].as_u64();
    let renewed = client.put(f2, &format!("/v1/session/renew/{a}"), b"").ok().json();
    assert_eq!(renewed[0]["ID"], a.as_str());
    assert!(renewed[0]["ModifyIndex"].as_u64() > before, "{renewed}");
    // Destroy answers true, and again for one already gone (as Consul).
    assert!(client.put(f2, &format!("/v1/session/destroy/{a}"), b"").boolean());
    assert!(client.put(leader, &format!("/v1/session/destroy/{a}"), b"").boolean());
    assert!(sessions(&client, f1, &format!("/v1/session/info/{a}")).is_empty(), "info of a destroyed session: []");
    assert_eq!(ids(&sessions(&client, leader, "/v1/session/list")), vec![b.clone()]);
    let message = client.put(f1, &format!("/v1/session/renew/{a}"), b"").error(404);
    assert!(message.contains(&a), "{message}");
    cluster.shutdown();
}

#[test]
fn a_lock_is_held_by_one_session_shown_in_reads_and_released() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-sessions-lock");
    let s1 = create(&client, leader, "");
    let s2 = create(&client, f1, "");
    let held = acquire(&client, f1, "lock/a", &s1, b"one");
    assert!(held.json().as_bool() == Some(true), "{}", held.text());
    let token = fence_of(&held);
    let refused = acquire(&client, f2, "lock/a", &s2, b"two");
    assert_eq!(refused.json(), false, "a second session may not take a held lock");
    assert!(refused.header("Skiff-Fence").is_none(), "no token for a refused acquire");
    for id in [leader, f1, f2] {
        let read = entry(&client, id, "lock/a");
        assert_eq!(value_of(&read), b"one", "the refused acquire wrote nothing: {read}");
        assert_eq!(
            (&read["Session"], &read["LockIndex"], &read["Fence"]),
            (&s1.as_str().into(), &1.into(), &token.into())
        );
    }
    // The holder acquiring again keeps its token and the lock index.
    let again = acquire(&client, leader, "lock/a", &s1, b"one again");
    assert_eq!(fence_of(&again), token);
    assert_eq!(entry(&client, f2, "lock/a")["LockIndex"], 1);
    // Only the holder releases.
    assert!(!client.put(f1, &format!("/v1/kv/lock/a?release={s2}"), b"x").boolean());
    assert!(client.put(f1, &format!("/v1/kv/lock/a?release={s1}"), b"free").boolean());
    let read = entry(&client, f2, "lock/a");
    assert!(read.get("Session").is_none() && read.get("Fence").is_none(), "released: {read}");
    assert_eq!((value_of(&read), &read["LockIndex"]), (b"free".to_vec(), &1.into()));
    // The next holder counts up the lock index and gets a newer token.
    let next = acquire(&client, f2, "lock/a", &s2, b"two");
    assert!(fence_of(&next) > token);
    assert_eq!(entry(&client, leader, "lock/a")["LockIndex"], 2);
    // An unknown session: 400, saying so; a listing shows Session too.
    let unknown = "00000000-0000-4000-8000-000000000000";
    let message = client.put(leader, &format!("/v1/kv/lock/b?acquire={unknown}"), b"x").error(400);
    assert!(message.contains("no such session") && message.contains(unknown), "{message}");
    assert_eq!(client.raw(leader, "lock/b"), None, "nothing written");
    let listing = client.get(f1, "/v1/kv/lock/?recurse").ok().json();
    assert_eq!(listing[0]["Session"], s2.as_str(), "{listing}");
    cluster.shutdown();
}

#[test]
fn a_destroyed_sessions_locks_are_released_or_deleted_by_its_behavior() {
    let Setup { cluster, client, leader, f1, .. } = Setup::start("http-sessions-behavior");
    let release = create(&client, leader, r#"{"LockDelay": "0s"}"#);
    let delete = create(&client, f1, r#"{"Behavior": "delete", "LockDelay": "0s"}"#);
    acquire(&client, leader, "kept", &release, b"v");
    acquire(&client, leader, "gone", &delete, b"v");
    assert!(client.put(f1, &format!("/v1/kv/leased?lease={release}"), b"v").boolean());
    assert_eq!(entry(&client, f1, "leased")["Session"], release.as_str());
    assert!(client.put(f1, &format!("/v1/session/destroy/{delete}"), b"").boolean());
    assert_eq!(client.raw(leader, "gone"), None, "Behavior delete deletes the held key");
    assert!(client.put(leader, &format!("/v1/session/destroy/{release}"), b"").boolean());
    let kept = entry(&client, f1, "kept");
    assert_eq!(value_of(&kept), b"v");
    assert!(kept.get("Session").is_none(), "released: {kept}");
    assert_eq!(client.raw(leader, "leased"), None, "a key put with ?lease goes with its session");
    cluster.shutdown();
}

#[test]
fn the_lock_delay_holds_a_lock_back_after_its_session_is_destroyed() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-sessions-lock-delay");
    const DELAY: Duration = Duration::from_secs(3);
    let first = create(&client, leader, r#"{"LockDelay": "3s"}"#);
    let second = create(&client, f1, "");
    assert!(acquire(&client, leader, "leader", &first, b"1").json() == true);
    assert!(client.put(f2, &format!("/v1/session/destroy/{first}"), b"").boolean());
    let destroyed = Instant::now();
    assert_eq!(acquire(&client, f1, "leader", &second, b"2").json(), false, "right after: within the lock delay");
    eventually("the second session acquires after the lock delay", || {
        acquire(&client, f2, "leader", &second, b"2").json() == true
    });
    // The delay runs on the cluster clock, which follows real time: never shorter.
    assert!(destroyed.elapsed() >= DELAY - Duration::from_millis(100), "acquired after {:?}", destroyed.elapsed());
    // An explicit release sets no delay (as Consul).
    let third = create(&client, leader, "");
    assert!(client.put(leader, &format!("/v1/kv/leader?release={second}"), b"").boolean());
    assert!(acquire(&client, f1, "leader", &third, b"3").json() == true);
    cluster.shutdown();
}

#[test]
fn a_session_not_renewed_ends_after_its_ttl_and_releases_its_lock() {
    let Setup { cluster, client, leader, f1, .. } = Setup::start("http-sessions-ttl");
    let session = create(&client, f1, r#"{"TTL": "10s", "LockDelay": "0s"}"#);
    let created = Instant::now();
    acquire(&client, leader, "ttl-lock", &session, b"v");
    eventually("the session ends after its TTL", || sessions(&client, leader, "/v1/session/list").is_empty());
    assert!(created.elapsed() >= Duration::from_millis(9_900), "ended after {:?}", created.elapsed());
    let read = entry(&client, f1, "ttl-lock");
    assert!(read.get("Session").is_none(), "released: {read}");
    let message = client.put(leader, &format!("/v1/session/renew/{session}"), b"").error(404);
    assert!(message.contains("does not exist"), "{message}");
    cluster.shutdown();
}

#[test]
fn a_fenced_write_applies_with_the_current_token_and_not_with_a_previous_holders() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-sessions-fence");
    let old = create(&client, leader, r#"{"LockDelay": "0s"}"#);
    let new = create(&client, f1, "");
    let old_token = fence_of(&acquire(&client, leader, "job/lock", &old, b""));
    assert!(client.put(f1, &format!("/v1/kv/job/data?fence={old_token}"), b"by old").boolean());
    // The lock passes on.
    assert!(client.put(f2, &format!("/v1/session/destroy/{old}"), b"").boolean());
    let new_token = fence_of(&acquire(&client, f2, "job/lock", &new, b""));
    assert!(new_token > old_token);
    // The paused former holder's writes, by query and by header, PUT and DELETE: 409.
    let stale = old_token.to_string();
    let replies = [
        client.put(leader, &format!("/v1/kv/job/data?fence={stale}"), b"late"),
        client.request("PUT", f1, "/v1/kv/job/data", Some(b"late"), &[("Skiff-Fence", &stale)]),
        client.request("DELETE", f2, "/v1/kv/job/data", None, &[("Skiff-Fence", &stale)]),
        client.delete(leader, &format!("/v1/kv/job/?recurse&fence={stale}")),
    ];
    for reply in replies {
        let what = reply.what.clone();
        let message = reply.error(409);
        assert!(message.starts_with("ERR fenced") && message.contains(&stale), "{what}: {message}");
    }
    assert_eq!(client.raw(f1, "job/data").as_deref(), Some(&b"by old"[..]), "nothing written");
    let fresh = new_token.to_string();
    let write = client.request("PUT", f2, "/v1/kv/job/data", Some(b"by new"), &[("Skiff-Fence", &fresh)]);
    assert!(write.boolean());
    assert_eq!(client.raw(leader, "job/data").as_deref(), Some(&b"by new"[..]));
    assert_eq!(entry(&client, leader, "job/lock")["Fence"], new_token);
    // A token and a header that disagree, or a token that is not a number: 400.
    let both =
        client.request("PUT", f1, &format!("/v1/kv/job/data?fence={fresh}"), Some(b"x"), &[("Skiff-Fence", &stale)]);
    assert!(both.error(400).contains("disagree"));
    for bad in ["abc", "-1", "0", "1.5", "99999999999999999999999"] {
        let message = client.put(leader, &format!("/v1/kv/job/data?fence={bad}"), b"x").error(400);
        assert!(message.contains("not a fencing token"), "{bad}: {message}");
    }
    assert!(client.delete(f1, &format!("/v1/kv/job/data?fence={fresh}")).boolean());
    assert_eq!(client.raw(leader, "job/data"), None);
    cluster.shutdown();
}

#[test]
fn leases_are_granted_kept_alive_read_and_revoked_with_their_keys() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-sessions-leases");
    let granted = client.post(f1, "/v1/skiff/lease", br#"{"TTL": "30s"}"#).ok().json();
    let lease = granted["ID"].as_str().expect("ID").to_string();
    assert_eq!(granted["TTL"], "30s");
    assert!(granted["RemainingMs"].as_u64().is_some_and(|ms| ms > 20_000 && ms <= 30_000), "{granted}");
    let by_query = client.post(leader, "/v1/skiff/lease?ttl=2s", b"").ok().json();
    let short = by_query["ID"].as_str().expect("ID").to_string();
    // A lease is a session with Behavior delete and no lock delay.
    let session = &sessions(&client, f2, &format!("/v1/session/info/{lease}"))[0];
    assert_eq!((&session["Behavior"], &session["LockDelay"]), (&"delete".into(), &0.into()));
    assert!(client.put(leader, &format!("/v1/kv/svc/a?lease={lease}"), b"10.0.0.1").boolean());
    assert!(client.put(f2, &format!("/v1/kv/svc/b?lease={lease}"), b"10.0.0.2").boolean());
    assert!(client.put(f2, &format!("/v1/kv/svc/c?lease={short}"), b"10.0.0.3").boolean());
    // Keepalives keep the short lease alive past its TTL.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let kept = client.put(f1, &format!("/v1/skiff/lease/{short}/keepalive"), b"").ok().json();
        assert_eq!(kept["ID"], short.as_str());
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(client.raw(leader, "svc/c").as_deref(), Some(&b"10.0.0.3"[..]), "kept alive");
    let read = client.get(leader, &format!("/v1/skiff/lease/{lease}")).ok().json();
    assert!(read["RemainingMs"].as_u64().is_some_and(|ms| ms <= 30_000), "{read}");
    // Not kept alive, it ends with its key.
    eventually("the short lease ends", || client.get(f1, &format!("/v1/skiff/lease/{short}")).status == 404);
    assert_eq!(client.raw(f2, "svc/c"), None);
    // Revoked: its keys are deleted.
    assert!(client.delete(f2, &format!("/v1/skiff/lease/{lease}")).boolean());
    assert_eq!((client.raw(leader, "svc/a"), client.raw(f1, "svc/b")), (None, None));
    assert!(!client.delete(f2, &format!("/v1/skiff/lease/{lease}")).boolean(), "already revoked");
    client.put(f1, &format!("/v1/skiff/lease/{lease}/keepalive"), b"").error(404);
    client.get(leader, &format!("/v1/skiff/lease/{lease}")).error(404);
    let message = client.put(leader, &format!("/v1/kv/svc/d?lease={lease}"), b"x").error(400);
    assert!(message.contains("no such session"), "{message}");
    cluster.shutdown();
}

#[test]
fn hostile_session_and_lease_input_gets_a_4xx_with_a_message() {
    let Setup { cluster, client, leader, f1, .. } = Setup::start("http-sessions-hostile");
    let session = create(&client, leader, "");
    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        ("PUT", "/v1/session/create".into(), b"{not json".to_vec(), 400, "not valid JSON"),
        ("PUT", "/v1/session/create".into(), br#"{"TTL": "5s"}"#.to_vec(), 400, "out of range"),
        ("PUT", "/v1/session/create".into(), br#"{"TTL": "forever"}"#.to_vec(), 400, "not a duration"),
        ("PUT", "/v1/session/create".into(), br#"{"LockDelay": "2h"}"#.to_vec(), 400, "LockDelay"),
        ("PUT", "/v1/session/create".into(), br#"{"Behavior": "explode"}"#.to_vec(), 400, "neither"),
        ("PUT", "/v1/session/create".into(), br#"{"Node": 7}"#.to_vec(), 400, "must be a string"),
        ("PUT", "/v1/session/create".into(), vec![b' '; 70_000], 413, "larger than"),
        ("PUT", "/v1/session/renew/not-a-uuid".into(), vec![], 400, "not a session id"),
        ("PUT", "/v1/session/destroy/..%2F..%2Fv1%2Fkv%2Fx".into(), vec![], 400, "not a session id"),
        ("GET", "/v1/session/info/%00".into(), vec![], 400, "not a session id"),
        ("PUT", format!("/v1/kv/x?acquire={session}&release={session}"), vec![], 400, "cannot be combined"),
        ("PUT", format!("/v1/kv/x?acquire={session}&cas=0"), vec![], 400, "cannot be combined"),
        ("PUT", "/v1/kv/x?acquire=../../etc".into(), vec![], 400, "not a session id"),
        ("PUT", "/v1/kv/x?lease=".into(), vec![], 400, "not a session id"),
        ("POST", "/v1/skiff/lease".into(), vec![], 400, "needs a TTL"),
        ("POST", "/v1/skiff/lease?ttl=0s".into(), vec![], 400, "out of range"),
        ("POST", "/v1/skiff/lease?ttl=10s".into(), br#"{"TTL": "10s"}"#.to_vec(), 400, "not both"),
        ("POST", "/v1/skiff/lease".into(), br#"{"TTL": "10s", "Keys": 1}"#.to_vec(), 400, "unknown field"),
        ("GET", "/v1/skiff/lease/zzz".into(), vec![], 400, "not a session id"),
    ];
    for (method, path, body, status, says) in cases {
        let reply = client.request(method, f1, &path, Some(&body), &[]);
        let what = reply.what.clone();
        let message = reply.error(status);
        assert!(message.contains(says), "{what}: {message:?} does not say {says:?}");
    }
    // Nothing of it created a session, and the node still answers.
    assert_eq!(ids(&sessions(&client, leader, "/v1/session/list")), vec![session]);
    cluster.shutdown();
}

#[test]
fn sessions_and_leases_need_a_token_that_may_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let tokens = dir.path().join("tokens.toml");
    const ADMIN: &str = "admin-secret-0123456789";
    let text = format!(
        "[[token]]\nname = \"admin\"\nsecret = \"{ADMIN}\"\nmanagement = true\n\n\
         [[token]]\nname = \"app\"\nsecret = \"app-secret-0123456789\"\nwrite = [\"app/\"]\n\n\
         [[token]]\nname = \"reader\"\nsecret = \"reader-secret-012345\"\nread = [\"\"]\n"
    );
    std::fs::write(&tokens, text).expect("the tokens file");
    let cluster = KvCluster::start(ClusterFile::builder("http-sessions-auth", 3).http().auth(&tokens, ADMIN).build());
    let leader = cluster.leader();
    let app = cluster.client.with_token(Some("app-secret-0123456789".into()));
    let reader = cluster.client.with_token(Some("reader-secret-012345".into()));
    let nobody = cluster.client.with_token(None);
    for (client, path, method) in [
        (&reader, "/v1/session/create", "PUT"),
        (&reader, "/v1/skiff/lease?ttl=10s", "POST"),
        (&nobody, "/v1/session/create", "PUT"),
        (&nobody, "/v1/session/list", "GET"),
    ] {
        let reply = client.request(method, leader, path, Some(b""), &[]);
        assert_eq!(reply.status, 403, "{}: {}", reply.what, reply.text());
        assert!(reply.text().starts_with("Permission denied"), "{}: {}", reply.what, reply.text());
    }
    let session = create(&app, leader, "");
    assert_eq!(ids(&sessions(&reader, leader, "/v1/session/list")), vec![session.clone()], "reading needs any token");
    assert_eq!(reader.put(leader, &format!("/v1/session/renew/{session}"), b"").status, 403);
    assert_eq!(reader.put(leader, &format!("/v1/session/destroy/{session}"), b"").status, 403);
    // Acquire needs write on the key, as other writes.
    assert_eq!(app.put(leader, &format!("/v1/kv/other/lock?acquire={session}"), b"").status, 403);
    assert_eq!(acquire(&app, leader, "app/lock", &session, b"").json(), true);
    assert!(app.put(leader, &format!("/v1/session/destroy/{session}"), b"").boolean());
    cluster.shutdown();
}

/// `tests/clients/py_consul_sessions.py`: py-consul's sessions, locks, lock delay and
/// Consul's leader-election recipe, through every node. Without py-consul (in
/// `SKIFF_PYTHON`, default `python3`) the test is skipped, or fails under
/// `SKIFF_REQUIRE_REAL_CLIENTS=1`, as the testkit's `real_clients` has it.
#[test]
fn py_consul_sessions_locks_and_leader_election() {
    let test = "py_consul_sessions_locks_and_leader_election";
    if !real_clients::present(test, &[real_clients::python_modules(&["consul"], "pip install py-consul")]) {
        return;
    }
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-sessions-py-consul");
    let order = [f1, leader, f2];
    let http: Vec<&str> = order.iter().map(|&id| client.address(id)).collect();
    let nodes: Vec<String> = order.iter().map(NodeId::to_string).collect();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/py_consul_sessions.py");
    let output = std::process::Command::new(real_clients::python())
        .arg(&script)
        .args(["--http", &http.join(","), "--nodes", &nodes.join(",")])
        .output()
        .expect("the interpreter that imported py-consul runs");
    cluster.shutdown();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        script.display(),
        output.status
    );
    eprintln!("py-consul: {} checks passed", stdout.lines().filter(|line| line.starts_with("ok: ")).count());
}
