#!/usr/bin/env python3
"""py-consul's sessions and locks against a Skiff cluster: session create (ttl, behavior,
lock_delay), info, list, node, renew, destroy; kv.put(acquire=, release=); a second session
refused; destroy releases; the lock delay honoured; and Consul's leader-election recipe
(sessions, acquire, a blocking query on the key, acquire again when the holder's session
ends), done with py-consul calls only.

    py_consul_sessions.py --http 127.0.0.1:8001,127.0.0.1:8002,... --nodes n1,n2,...

`--nodes` are the ids of the nodes in the order of `--http` (a session's default Node is the
id of the node it was created through). Prints one line per check and exits 1 at the first
failure, saying what was expected and what came back. Exit 2: py-consul is missing (the Rust
test turns that into a skip).
"""

import argparse
import sys
import threading
import time

try:
    import consul
except ImportError as error:
    print(f"missing Python module: {error.name} (install with: pip install py-consul)")
    sys.exit(2)


class CheckFailed(Exception):
    pass


def check(what, got, expected):
    if got != expected:
        raise CheckFailed(f"{what}\n  expected: {expected!r}\n  got:      {got!r}")
    print(f"ok: {what}")


def check_true(what, condition, detail=""):
    if not condition:
        raise CheckFailed(f"{what}\n  {detail}")
    print(f"ok: {what}")


def client(text):
    host, _, port = text.rpartition(":")
    return consul.Consul(host=host, port=int(port))


def sessions_and_locks(clients, nodes):
    """Sessions through one node, locks through another, reads through a third."""
    a, b, c = clients[0], clients[1 % len(clients)], clients[2 % len(clients)]
    s1 = a.session.create(name="first", ttl=30, behavior="release", lock_delay=0)
    s2 = b.session.create(name="second", lock_delay=2)
    check_true("session.create answers a UUID", isinstance(s1, str) and len(s1) == 36, repr(s1))

    index, info = c.session.info(s1)
    check("session.info: ID", info["ID"], s1)
    check("session.info: Name", info["Name"], "first")
    check("session.info: TTL as Consul writes it", info["TTL"], "30s")
    check("session.info: Behavior", info["Behavior"], "release")
    check("session.info: LockDelay in nanoseconds", info["LockDelay"], 0)
    check("session.info: Node is the node it was created through", info["Node"], nodes[0])
    check_true("session.info: X-Consul-Index", int(index) >= 1, index)
    check("session.info of s2: LockDelay 2 s", c.session.info(s2)[1]["LockDelay"], 2_000_000_000)
    check("session.info of an unknown session: None", c.session.info("00000000-0000-4000-8000-000000000000")[1], None)
    _, listed = a.session.list()
    check("session.list", sorted(session["ID"] for session in listed), sorted([s1, s2]))
    _, on_node = c.session.node(nodes[0])
    check("session.node", [session["ID"] for session in on_node], [s1])

    renewed = b.session.renew(s1)
    check("session.renew answers the session", renewed["ID"], s1)
    try:
        b.session.renew("00000000-0000-4000-8000-000000000000")
        raise CheckFailed("session.renew of an unknown session: expected consul.NotFound")
    except consul.NotFound:
        print("ok: session.renew of an unknown session raises NotFound")

    check("kv.put(acquire=s1)", b.kv.put("py/lock", "held by s1", acquire=s1), True)
    check("kv.put(acquire=s2) of a held lock is refused", a.kv.put("py/lock", "s2", acquire=s2), False)
    _, entry = c.kv.get("py/lock")
    check("kv.get: Session is the holder", entry["Session"], s1)
    check("kv.get: LockIndex", entry["LockIndex"], 1)
    check("kv.get: the refused acquire wrote nothing", entry["Value"], b"held by s1")
    check("kv.put(release=s2) by a non-holder", c.kv.put("py/lock", "x", release=s2), False)
    check("kv.put(release=s1)", c.kv.put("py/lock", "free", release=s1), True)
    check("kv.put(acquire=s2) after the release", a.kv.put("py/lock", "held by s2", acquire=s2), True)
    check("kv.get: LockIndex counts acquisitions", c.kv.get("py/lock")[1]["LockIndex"], 2)

    # Destroying the holder's session releases the lock; its 2 s lock delay holds it back.
    s3 = c.session.create(name="third")
    check("session.destroy", b.session.destroy(s2), True)
    _, entry = a.kv.get("py/lock")
    check_true("session.destroy released the lock", "Session" not in entry, repr(entry))
    check("session.info of a destroyed session", a.session.info(s2)[1], None)
    destroyed = time.monotonic()
    check("kv.put(acquire=) within the lock delay is refused", c.kv.put("py/lock", "s3", acquire=s3), False)
    while not c.kv.put("py/lock", "s3", acquire=s3):
        if time.monotonic() - destroyed > 20:
            raise CheckFailed("the lock was not acquired 20 s after the lock delay of 2 s")
        time.sleep(0.2)
    waited = time.monotonic() - destroyed
    check_true("kv.put(acquire=) succeeds once the lock delay passed", waited >= 1.9, f"after {waited:.2f} s")

    # Behavior delete: the held key goes with the session.
    s4 = a.session.create(behavior="delete", lock_delay=0)
    check("kv.put(acquire=) by a delete session", b.kv.put("py/ephemeral", "here", acquire=s4), True)
    a.session.destroy(s4)
    check("Behavior delete: the key is deleted with the session", c.kv.get("py/ephemeral")[1], None)
    for session in (s1, s3):
        a.session.destroy(session)
    check("session.list after destroying all", a.session.list()[1], [])


def leader_election(clients):
    """Consul's leader-election recipe: every candidate creates a session and tries to
    acquire service/<name>/leader; the others watch the key with a blocking query and try
    again when it has no Session."""
    key = "service/pyweb/leader"
    first, second = clients[0], clients[-1]
    s1 = first.session.create(name="pyweb-1", ttl=30, lock_delay=0)
    s2 = second.session.create(name="pyweb-2", ttl=30, lock_delay=0)
    check("candidate 1 acquires the leader key", first.kv.put(key, "candidate 1", acquire=s1), True)
    elected = {}

    def candidate_2():
        try:
            index = None
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if second.kv.put(key, "candidate 2", acquire=s2):
                    elected["leader"] = "candidate 2"
                    return
                elected["watched"] = elected.get("watched", 0) + 1
                # Block until the key changes (the holder's session ending moves its index).
                index, entry = second.kv.get(key, index=index, wait="10s")
                elected["seen"] = entry
        except Exception as error:  # reported by the main thread
            elected["error"] = repr(error)

    watcher = threading.Thread(target=candidate_2)
    watcher.start()
    time.sleep(0.5)
    check_true("candidate 2 is not leader while candidate 1 holds the key", "leader" not in elected, repr(elected))
    check("the holder's session is destroyed", first.session.destroy(s1), True)
    watcher.join(timeout=40)
    check_true("candidate 2's thread finished", not watcher.is_alive())
    check_true("candidate 2 saw no error", "error" not in elected, elected.get("error"))
    check("candidate 2 is elected after its blocking query woke", elected.get("leader"), "candidate 2")
    check_true("candidate 2 waited in a blocking query first", elected.get("watched", 0) >= 1, repr(elected))
    _, entry = first.kv.get(key)
    check("the leader key names candidate 2's session", entry["Session"], s2)
    check("the leader key holds candidate 2's value", entry["Value"], b"candidate 2")
    second.session.destroy(s2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    parser.add_argument("--nodes", required=True)
    args = parser.parse_args()
    clients = [client(address) for address in args.http.split(",")]
    nodes = args.nodes.split(",")
    try:
        sessions_and_locks(clients, nodes)
        leader_election(clients)
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)


if __name__ == "__main__":
    main()
