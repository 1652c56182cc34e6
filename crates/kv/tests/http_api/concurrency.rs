//! Blocking queries, CAS races, idempotent retries.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::{KvClient, KvReply, Setup, modify_index, recurse_entries, value_of};

/// How long after a blocking query starts the write that should wake it comes.
const WRITE_AFTER: Duration = Duration::from_millis(600);

/// A blocking query on a follower returns only after a write through another node, with a
/// higher index and the new value.
#[test]
fn a_blocking_query_returns_when_a_write_through_another_node_lands() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-blocking-write");
    client.set(leader, "watched", b"v0");
    let index = client.get(f1, "/v1/kv/watched").ok().index();
    std::thread::scope(|scope| {
        let started = Instant::now();
        let watcher = scope.spawn(|| client.get(f1, &format!("/v1/kv/watched?index={index}&wait=5s")));
        std::thread::sleep(WRITE_AFTER);
        client.set(f2, "watched", b"v1");
        let reply = watcher.join().expect("the watcher");
        let elapsed = started.elapsed();
        let what = reply.what.clone();
        let new_index = reply.index();
        let entry = reply.entry();
        assert!(elapsed >= WRITE_AFTER, "{what}: returned after {elapsed:?}, before the write");
        assert!(elapsed < Duration::from_millis(4500), "{what}: not woken by the write ({elapsed:?})");
        assert!(new_index > index, "{what}: X-Consul-Index {new_index} after a write, was {index}");
        assert_eq!(new_index, modify_index(&entry), "{what}: {entry}");
        assert_eq!(value_of(&entry), b"v1", "{what}: {entry}");
    });
    cluster.shutdown();
}

/// Without a write, a blocking query returns after about `wait`, with the same index; an
/// index already passed answers at once (and `m` is a unit).
#[test]
fn a_blocking_query_without_a_write_returns_after_about_wait() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-blocking-wait");
    client.set(leader, "watched", b"v1");
    let current = client.get(f1, "/v1/kv/watched").ok().index();
    for (id, wait, expected) in [(f2, "1s", 1000), (leader, "800ms", 800)] {
        let started = Instant::now();
        let reply = client.get(id, &format!("/v1/kv/watched?index={current}&wait={wait}"));
        let elapsed = started.elapsed();
        let reply = reply.ok();
        assert!(
            elapsed >= Duration::from_millis(expected * 9 / 10) && elapsed < Duration::from_millis(expected + 2500),
            "{}: returned after {elapsed:?}, expected about {wait}",
            reply.what
        );
        assert_eq!(reply.index(), current, "{}: X-Consul-Index without a write", reply.what);
        assert_eq!(value_of(&reply.entry()), b"v1");
    }
    let started = Instant::now();
    let reply = client.get(f1, &format!("/v1/kv/watched?index={}&wait=1m", current - 1)).ok();
    assert!(started.elapsed() < Duration::from_secs(3), "{}: an index already passed waited", reply.what);
    assert_eq!(reply.index(), current, "{}", reply.what);
    cluster.shutdown();
}

/// A blocking query on a missing key wakes when it is created.
#[test]
fn a_blocking_query_on_a_missing_key_wakes_when_it_is_created() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-blocking-missing");
    client.set(leader, "watched", b"so the store has an index");
    let missing = client.get(f2, "/v1/kv/later").expect(404).index();
    std::thread::scope(|scope| {
        let started = Instant::now();
        let watcher = scope.spawn(|| client.get(f2, &format!("/v1/kv/later?index={missing}&wait=5s")));
        std::thread::sleep(WRITE_AFTER);
        client.set(f1, "later", b"here");
        let reply = watcher.join().expect("the watcher");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= WRITE_AFTER && elapsed < Duration::from_millis(4500),
            "{}: returned after {elapsed:?}",
            reply.what
        );
        assert!(reply.index() > missing, "{}", reply.what);
        assert_eq!(value_of(&reply.entry()), b"here");
    });
    cluster.shutdown();
}

/// A blocking `recurse` wakes on the deletion of a key under its prefix.
#[test]
fn a_blocking_recurse_wakes_on_a_deletion_under_its_prefix() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-blocking-recurse");
    client.set(leader, "dir/x", b"x");
    client.set(leader, "dir/y", b"y");
    let dir_index = client.get(f1, "/v1/kv/dir/?recurse").ok().index();
    std::thread::scope(|scope| {
        let started = Instant::now();
        let watcher = scope.spawn(|| client.get(f1, &format!("/v1/kv/dir/?recurse&index={dir_index}&wait=5s")));
        std::thread::sleep(WRITE_AFTER);
        assert!(client.delete(f2, "/v1/kv/dir/y").boolean());
        let reply = watcher.join().expect("the watcher").ok();
        let elapsed = started.elapsed();
        assert!(
            elapsed >= WRITE_AFTER && elapsed < Duration::from_millis(4500),
            "{}: returned after {elapsed:?}",
            reply.what
        );
        assert!(reply.index() > dir_index, "{}: the deletion raises X-Consul-Index", reply.what);
        let keys: Vec<String> = recurse_entries(&reply).into_iter().map(|(key, _, _)| key).collect();
        assert_eq!(keys, ["dir/x"], "{}", reply.what);
    });
    cluster.shutdown();
}

/// CAS races: clients through every node with the same cas index; exactly one wins. And
/// cas=0 races to create a key: one creator.
#[test]
fn cas_races_through_every_node_have_exactly_one_winner() {
    const RACERS: usize = 9;
    let Setup { cluster, client, leader, f1, f2, ids } = Setup::start("http-cas-races");
    for round in 0..3 {
        client.set(leader, "race", format!("round {round}").as_bytes());
        let index = modify_index(&client.entry(f1, "race"));
        let barrier = Arc::new(Barrier::new(RACERS));
        let results: Vec<(usize, bool)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (client, barrier, id) = (client.clone(), barrier.clone(), ids[i % ids.len()]);
                    scope.spawn(move || {
                        barrier.wait();
                        let body = format!("racer {i}");
                        (i, client.put(id, &format!("/v1/kv/race?cas={index}"), body.as_bytes()).boolean())
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().expect("a racer")).collect()
        });
        let winners: Vec<usize> = results.iter().filter(|(_, won)| *won).map(|(i, _)| *i).collect();
        assert_eq!(winners.len(), 1, "round {round}: cas={index} races: winners {winners:?}");
        let entry = client.entry(f2, "race");
        assert_eq!(value_of(&entry), format!("racer {}", winners[0]).as_bytes(), "round {round}: {entry}");
        assert!(modify_index(&entry) > index, "round {round}: {entry}");

        let key = format!("created-{round}");
        let barrier = Arc::new(Barrier::new(RACERS));
        let winners: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..RACERS)
                .map(|i| {
                    let (client, barrier, id, key) = (client.clone(), barrier.clone(), ids[i % ids.len()], key.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        client.put(id, &format!("/v1/kv/{key}?cas=0"), format!("racer {i}").as_bytes()).boolean()
                    })
                })
                .collect();
            handles.into_iter().map(|handle| handle.join().expect("a racer")).filter(|won| *won).count()
        });
        assert_eq!(winners, 1, "round {round}: cas=0 races to create {key}");
    }
    cluster.shutdown();
}

/// Idempotent retries: the first result, not applied again, through any node. The same
/// key with another request: 422, and nothing applied.
#[test]
fn a_retry_with_its_idempotency_key_gets_the_first_result_and_is_not_applied_again() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-idempotent-retry");
    assert!(client.put_with_key(f1, "/v1/kv/idem", b"first", "k1").boolean(), "the first attempt");
    let first = client.entry(leader, "idem");
    client.set(leader, "idem", b"second");
    let second = client.entry(f2, "idem");
    assert!(modify_index(&second) > modify_index(&first));
    for &id in &[f2, leader, f1] {
        assert!(client.put_with_key(id, "/v1/kv/idem", b"first", "k1").boolean(), "retry of k1 through {id}");
        let entry = client.entry(id, "idem");
        assert_eq!(value_of(&entry), b"second", "the retry through {id} was applied again: {entry}");
        assert_eq!(modify_index(&entry), modify_index(&second), "the retry through {id} moved ModifyIndex: {entry}");
    }
    let message = client.put_with_key(leader, "/v1/kv/idem", b"different", "k1").error(422);
    eprintln!("422 for a reused Idempotency-Key with another body: {message}");
    client.put_with_key(f1, "/v1/kv/other", b"first", "k1").error(422);
    client.put_with_key(f2, "/v1/kv/idem?flags=7", b"first", "k1").error(422);
    client.delete_with_key(f2, "/v1/kv/idem", "k1").error(422);
    let entry = client.entry(f1, "idem");
    assert_eq!((value_of(&entry), modify_index(&entry)), (b"second".to_vec(), modify_index(&second)), "{entry}");
    client.get(leader, "/v1/kv/other").expect(404);
    cluster.shutdown();
}

/// A cas write that failed, retried with its key after the cas would succeed: still false.
/// A DELETE retried after the key was written again: true, and not deleted again.
#[test]
fn a_retried_cas_or_delete_keeps_its_first_outcome() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-idempotent-outcome");
    client.set(f1, "idem-cas", b"present");
    assert!(!client.put_with_key(f1, "/v1/kv/idem-cas?cas=0", b"create", "k2").boolean(), "cas=0 on a present key");
    assert!(client.delete(leader, "/v1/kv/idem-cas").boolean());
    assert!(!client.put_with_key(f2, "/v1/kv/idem-cas?cas=0", b"create", "k2").boolean(), "the retry of a failed cas");
    client.get(f1, "/v1/kv/idem-cas").expect(404);

    client.set(leader, "idem-del", b"x");
    assert!(client.delete_with_key(f1, "/v1/kv/idem-del", "k3").boolean());
    client.set(leader, "idem-del", b"back");
    let back = client.entry(f2, "idem-del");
    assert!(client.delete_with_key(f2, "/v1/kv/idem-del", "k3").boolean(), "the retried DELETE");
    let entry = client.entry(leader, "idem-del");
    assert_eq!((value_of(&entry), modify_index(&entry)), (b"back".to_vec(), modify_index(&back)), "{entry}");
    cluster.shutdown();
}

/// An Idempotency-Key of 256 bytes works; a longer one is bad input.
#[test]
fn idempotency_keys_up_to_256_bytes_work_and_longer_ones_are_400() {
    let Setup { cluster, client, leader, f1, f2, .. } = Setup::start("http-idempotent-long-key");
    let long_key = "i".repeat(256);
    assert!(client.put_with_key(f1, "/v1/kv/idem-long", b"a", &long_key).boolean());
    client.set(leader, "idem-long", b"b");
    assert!(client.put_with_key(f2, "/v1/kv/idem-long", b"a", &long_key).boolean());
    assert_eq!(value_of(&client.entry(f1, "idem-long")), b"b", "the retry with a 256-byte key was applied again");
    client.put_with_key(f1, "/v1/kv/idem-long", b"a", &"i".repeat(257)).error(400);
    cluster.shutdown();
}
