#!/usr/bin/env python3
"""Real Python clients against a Skiff cluster: redis-py over the Redis protocol (RESP2 and
RESP3) and py-consul over the HTTP API, on the same keyspace.

    python_clients.py --redis 127.0.0.1:6001,127.0.0.1:6002,... --http 127.0.0.1:8001,...

Every node listed is used: writes go through one node and are read back through another
(reads are linearizable, so no waiting is needed). Prints one line per check and exits 1
at the first failure, saying what was sent to which node, what was expected and what came
back. Exit 2: a module is missing (the Rust test turns that into a skip).

`--auth ADMIN_SECRET,APP_NAME,APP_SECRET` runs only the token checks, against a cluster with
`[auth]`: the app token reads and writes `app/`, reads `shared/`, and nothing else.

`--plain-redis` runs only the redis-py checks whose answers are Redis's own, so the script
can be checked against a real Redis (keys under `--prefix`; every key it writes is deleted).
"""

import argparse
import sys
import threading
import time

try:
    import consul
    import redis
except ImportError as error:
    print(f"missing Python module: {error.name} (install with: pip install redis py-consul)")
    sys.exit(2)


class CheckFailed(Exception):
    pass


def short(value):
    """A repr short enough for a failure message (1 MiB values are not)."""
    text = repr(value)
    return text if len(text) <= 300 else f"{text[:240]}...({len(text)} characters)"


def check(what, got, expected):
    """One check: prints `ok: what`, or raises with expected and got."""
    if got != expected:
        raise CheckFailed(f"{what}\n  expected: {short(expected)}\n  got:      {short(got)}")
    print(f"ok: {what}")


def check_true(what, condition, detail):
    if not condition:
        raise CheckFailed(f"{what}\n  {detail}")
    print(f"ok: {what}")


def check_error(what, call, *fragments):
    """`call()` must raise redis.ResponseError whose message contains every fragment
    (case-insensitive; a tuple fragment means any one of its alternatives)."""
    try:
        result = call()
    except redis.ResponseError as error:
        message = str(error).lower()
        for fragment in fragments:
            alternatives = fragment if isinstance(fragment, tuple) else (fragment,)
            if not any(alternative.lower() in message for alternative in alternatives):
                raise CheckFailed(
                    f"{what}\n  expected an error mentioning {fragment!r}\n  got: {type(error).__name__}: {error}"
                )
        print(f"ok: {what} -> error {str(error)!r}")
        return
    raise CheckFailed(f"{what}\n  expected a ResponseError\n  got: {short(result)}")


def address(text):
    host, _, port = text.rpartition(":")
    return host, int(port)


def redis_session(nodes, prefix, skiff):
    """redis-py, RESP2: every command family, through every node."""
    names = [f"{host}:{port}" for host, port in nodes]
    r = [redis.Redis(host=host, port=port, socket_timeout=15) for host, port in nodes]
    r1, r2, r3 = r[0], r[1 % len(r)], r[2 % len(r)]
    n1, n2, n3 = names[0], names[1 % len(names)], names[2 % len(names)]
    k = lambda name: f"{prefix}{name}"  # noqa: E731

    for client, name in zip(r, names):
        check(f"PING through {name}", client.ping(), True)

    check(f"SET {k('a')} hello through {n1}", r1.set(k("a"), "hello"), True)
    check(f"GET {k('a')} through {n2}", r2.get(k("a")), b"hello")
    check(f"GET {k('a')} through {n3}", r3.get(k("a")), b"hello")
    check(f"GET {k('missing')} through {n2}", r2.get(k("missing")), None)
    check(f"SET {k('a')} NX through {n2} (exists)", r2.set(k("a"), "x", nx=True), None)
    check(f"SET {k('a')} XX GET through {n3}", r3.set(k("a"), "world", xx=True, get=True), b"hello")
    check(f"SET {k('b')} XX through {n1} (missing)", r1.set(k("b"), "x", xx=True), None)
    check(f"SET {k('b')} NX through {n1}", r1.set(k("b"), "bee", nx=True), True)
    binary = bytes(range(256))
    check(f"SET {k('bin')} (all 256 byte values) through {n2}", r2.set(k("bin"), binary), True)
    check(f"GET {k('bin')} through {n3}", r3.get(k("bin")), binary)

    check(f"INCR {k('n')} through {n1}", r1.incr(k("n")), 1)
    check(f"INCRBY {k('n')} 41 through {n2}", r2.incr(k("n"), 41), 42)
    check(f"DECR {k('n')} through {n3}", r3.decr(k("n")), 41)
    check(f"DECRBY {k('n')} 50 through {n1}", r1.decr(k("n"), 50), -9)
    check(f"GET {k('n')} through {n2}", r2.get(k("n")), b"-9")
    check_error(f"INCR {k('a')} (not an integer) through {n3}", lambda: r3.incr(k("a")), "not an integer")
    r1.set(k("max"), str(2**63 - 1))
    check_error(f"INCR {k('max')} at 2^63-1 through {n2}", lambda: r2.incr(k("max")), "overflow")
    check(f"APPEND {k('s')} abc through {n1}", r1.append(k("s"), "abc"), 3)
    check(f"APPEND {k('s')} de through {n2}", r2.append(k("s"), "de"), 5)
    check(f"STRLEN {k('s')} through {n3}", r3.strlen(k("s")), 5)

    mapping = {k("m1"): "one", k("m2"): "two", k("m3"): "three"}
    check(f"MSET 3 keys through {n2}", r2.mset(mapping), True)
    check(
        f"MGET through {n3}",
        r3.mget([k("m1"), k("missing"), k("m3"), k("m2")]),
        [b"one", None, b"three", b"two"],
    )
    check(f"EXISTS m1 m2 missing m1 through {n1}", r1.exists(k("m1"), k("m2"), k("missing"), k("m1")), 3)
    check(f"TYPE {k('m1')} through {n1}", r1.type(k("m1")), b"string")
    check(f"TYPE {k('missing')} through {n1}", r1.type(k("missing")), b"none")
    check(f"TTL {k('m1')} through {n2}", r2.ttl(k("m1")), -1)
    check(f"PTTL {k('missing')} through {n2}", r2.pttl(k("missing")), -2)

    written = {k(name) for name in ["a", "b", "bin", "n", "max", "s", "m1", "m2", "m3"]}
    check(
        f"SCAN MATCH {prefix}* COUNT 2 (scan_iter) through {n3}",
        sorted(r3.scan_iter(match=f"{prefix}*", count=2)),
        sorted(key.encode() for key in written),
    )
    check(
        f"KEYS {prefix}m? through {n1}", sorted(r1.keys(f"{prefix}m?")), [k(m).encode() for m in ["m1", "m2", "m3"]]
    )
    expected = [k(m).encode() for m in ["a", "b", "bin"]]
    check(f"KEYS {prefix}[ab]* through {n2}", sorted(r2.keys(f"{prefix}[ab]*")), expected)

    pipe = r2.pipeline(transaction=False)
    pipe.set(k("p"), "1").incr(k("p")).incrby(k("p"), 10).get(k("p")).get(k("missing")).delete(k("p")).exists(k("p"))
    check(f"pipeline (transaction=False) of 7 commands through {n2}", pipe.execute(), [True, 2, 12, b"12", None, 1, 0])
    pipe = r3.pipeline(transaction=False)
    pipe.set(k("q"), "x").incr(k("q")).get(k("q"))
    results = pipe.execute(raise_on_error=False)
    check_true(
        f"pipeline with a failing INCR through {n3}: the others are answered",
        results[0] is True
        and isinstance(results[1], redis.ResponseError)
        and "not an integer" in str(results[1])
        and results[2] == b"x",
        f"expected [True, ResponseError('...not an integer...'), b'x'], got {results!r}",
    )
    written.add(k("q"))

    named = redis.Redis(host=nodes[0][0], port=nodes[0][1], socket_timeout=15, single_connection_client=True)
    check(f"CLIENT SETNAME through {n1}", named.client_setname("skiff-python"), True)
    name = named.client_getname()
    name = name.decode() if isinstance(name, bytes) else name  # redis-py decodes it or not, by version
    check(f"CLIENT GETNAME on the same connection through {n1}", name, "skiff-python")
    check_true(f"CLIENT ID through {n1}", isinstance(named.client_id(), int), "not an integer")
    named.close()

    check(f"DEL a b missing through {n3}", r3.delete(k("a"), k("b"), k("missing")), 2)
    check(f"GET {k('a')} after DEL through {n1}", r1.get(k("a")), None)
    written -= {k("a"), k("b")}

    if skiff:
        # TTLs: python_ttls.py.
        check_error(
            f"SET of a 1 MiB + 1 value through {n2}",
            lambda: r2.set(k("big"), b"x" * ((1 << 20) + 1)),
            ("limit", "1048576"),
        )
        check(f"the connection still works after the refused value through {n2}", r2.get(k("big")), None)
        check(f"SET of a 1 MiB value through {n3}", r3.set(k("big"), b"y" * (1 << 20)), True)
        check(f"STRLEN of the 1 MiB value through {n1}", r1.strlen(k("big")), 1 << 20)
        written.add(k("big"))
        check(f"DBSIZE through {n2}", r2.dbsize(), len(written))
        roles = sorted(client.info("replication")["role"] for client in r)
        check("INFO replication role on every node", roles, ["master"] + ["slave"] * (len(r) - 1))
        infos = [client.info() for client in r]
        leaders = {info["raft_leader"] for info in infos}
        check_true("INFO raft_leader agrees on every node", len(leaders) == 1, f"raft_leader: {leaders}")
        keyspace = {"keys": len(written), "expires": 0, "avg_ttl": 0}
        check(f"INFO keyspace db0 through {n3}", r3.info("keyspace").get("db0"), keyspace)

    return r, written


def resp3_session(nodes, prefix):
    """redis-py with protocol=3: HELLO 3 on connect, the same answers, HELLO as a map."""
    (host, port), (host2, port2) = nodes[0], nodes[-1]
    k = lambda name: f"{prefix}{name}"  # noqa: E731
    r = redis.Redis(host=host, port=port, protocol=3, socket_timeout=15, single_connection_client=True)
    other = redis.Redis(host=host2, port=port2, protocol=3, socket_timeout=15)
    where = f"{host}:{port}"
    check(f"RESP3 PING through {where}", r.ping(), True)
    hello = r.execute_command("HELLO", "3")
    check_true(
        f"RESP3 HELLO 3 through {where} is a map with proto 3",
        isinstance(hello, dict) and hello.get(b"proto") == 3,
        f"got {hello!r}",
    )
    check(f"RESP3 SET {k('r3')} through {where}", r.set(k("r3"), "three"), True)
    check(f"RESP3 GET {k('r3')} through {host2}:{port2}", other.get(k("r3")), b"three")
    check(f"RESP3 GET {k('missing')} (null)", r.get(k("missing")), None)
    check(f"RESP3 INCR {k('r3n')}", r.incr(k("r3n")), 1)
    check(f"RESP3 MGET", r.mget([k("r3"), k("missing")]), [b"three", None])
    check_error(f"RESP3 INCR {k('r3')} (not an integer)", lambda: r.incr(k("r3")), "not an integer")
    check(f"RESP3 DEL", other.delete(k("r3"), k("r3n")), 2)
    r.close()
    other.close()


def blocking_query(client, name, key, how, wake, value):
    """A blocking kv.get of `key` through `client` waits, and `wake()` wakes it with `value`."""
    index, _ = client.kv.get(key)
    answer = {}

    def watch():
        try:
            answer["result"] = client.kv.get(key, index=index, wait="15s")
        except Exception as error:  # reported below
            answer["error"] = error

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(0.5)
    check_true(
        f"blocking kv.get {key} index={index} through {name} is still waiting after 0.5 s",
        watcher.is_alive(),
        f"it returned at once: {answer!r}",
    )
    woken_at = time.monotonic()
    wake()
    watcher.join(10)
    check_true(f"the blocking query returned after a {how}", not watcher.is_alive(), "still waiting after 10 s")
    check_true("the blocking query did not fail", "error" not in answer, f"{answer.get('error')!r}")
    new_index, entry = answer["result"]
    check("the blocking query's Value", entry and entry["Value"], value)
    check_true("its index grew", int(new_index) > int(index), f"{new_index} <= {index}")
    woke_after = time.monotonic() - woken_at
    check_true("it woke within 5 s of the write", woke_after < 5, f"after {woke_after:.1f} s")


def consul_session(http, redis_clients, prefix):
    """py-consul against the HTTP API, and the keyspace shared with the Redis protocol."""
    c = [consul.Consul(host=host, port=port) for host, port in http]
    names = [f"{host}:{port}" for host, port in http]
    c1, c2, c3 = c[0], c[1 % len(c)], c[2 % len(c)]
    n1, n2, n3 = names[0], names[1 % len(names)], names[2 % len(names)]
    k = lambda name: f"{prefix}c/{name}"  # noqa: E731

    check(f"kv.put {k('a')} through {n1}", c1.kv.put(k("a"), "alpha"), True)
    index, entry = c2.kv.get(k("a"))
    check(f"kv.get {k('a')} through {n2}: Value", entry and entry["Value"], b"alpha")
    check_true(f"kv.get {k('a')}: index", index and int(index) >= entry["ModifyIndex"], f"index {index}, entry {entry}")
    modify = entry["ModifyIndex"]
    check(f"kv.put cas={modify + 1000} (stale) through {n3}", c3.kv.put(k("a"), "beta", cas=modify + 1000), False)
    check(f"kv.put cas=0 on an existing key through {n3}", c3.kv.put(k("a"), "beta", cas=0), False)
    check(f"kv.put cas={modify} (current) through {n3}", c3.kv.put(k("a"), "beta", cas=modify), True)
    _, entry = c1.kv.get(k("a"))
    check(f"kv.get after cas through {n1}", entry["Value"], b"beta")
    check_true("ModifyIndex grew", entry["ModifyIndex"] > modify, f"{entry['ModifyIndex']} <= {modify}")
    check(f"kv.put cas=0 on a new key through {n2}", c2.kv.put(k("new"), "fresh", cas=0), True)

    for name in ["dir/x", "dir/y", "dir/sub/z"]:
        c[len(name) % len(c)].kv.put(k(name), name.upper())
    _, entries = c3.kv.get(k("dir/"), recurse=True)
    check(
        f"kv.get {k('dir/')} recurse=True through {n3}",
        [(e["Key"], e["Value"]) for e in entries or []],
        [(k("dir/sub/z"), b"DIR/SUB/Z"), (k("dir/x"), b"DIR/X"), (k("dir/y"), b"DIR/Y")],
    )
    _, names_only = c1.kv.get(k("dir/"), keys=True, separator="/")
    check(f"kv.get keys=True separator=/ through {n1}", names_only, [k("dir/sub/"), k("dir/x"), k("dir/y")])
    check(f"kv.delete {k('new')} through {n2}", c2.kv.delete(k("new")), True)
    _, entry = c3.kv.get(k("new"))
    check(f"kv.get of the deleted key through {n3}", entry, None)
    check(f"kv.delete {k('dir/')} recurse=True through {n1}", c1.kv.delete(k("dir/"), recurse=True), True)
    _, entries = c2.kv.get(k("dir/"), recurse=True)
    check(f"kv.get recurse after the recursive delete through {n2}", entries, None)

    # Blocking queries on one node, woken by a write through another: over HTTP, then over Redis.
    r1, r2 = redis_clients[0], redis_clients[-1]
    blocking_query(c1, n1, k("watch"), f"kv.put through {n2}", lambda: c2.kv.put(k("watch"), "woken"), b"woken")
    wake = lambda: r2.set(k("watch"), "woken by redis")  # noqa: E731
    blocking_query(c1, n1, k("watch"), "Redis SET through another node", wake, b"woken by redis")

    # One keyspace: Redis writes are Consul reads, and the other way round.
    binary = bytes(range(255, -1, -1))
    r1.set(k("from-redis"), binary)
    _, entry = c2.kv.get(k("from-redis"))
    check(f"SET over Redis, kv.get over HTTP through {n2}", entry and entry["Value"], binary)
    c3.kv.put(k("from-consul"), b"\x00consul\xff")
    check("kv.put over HTTP, GET over Redis", r2.get(k("from-consul")), b"\x00consul\xff")
    check("INCR over Redis of an HTTP value", (c1.kv.put(k("count"), "41"), r2.incr(k("count"))), (True, 42))
    _, entry = c3.kv.get(k("count"))
    check(f"kv.get of the INCRed value through {n3}", entry["Value"], b"42")
    check("DEL over Redis, kv.get over HTTP", (r1.delete(k("count")), c2.kv.get(k("count"))[1]), (1, None))
    c1.kv.delete(f"{prefix}c/", recurse=True)


def check_raises(what, call, exception, fragment):
    """`call()` must raise `exception` whose message contains `fragment`."""
    try:
        result = call()
    except exception as error:
        if fragment.lower() not in str(error).lower():
            raise CheckFailed(f"{what}\n  expected {exception.__name__} mentioning {fragment!r}\n  got: {error}")
        print(f"ok: {what} -> {type(error).__name__} {str(error)!r}")
        return
    except Exception as error:
        raise CheckFailed(f"{what}\n  expected {exception.__name__}\n  got: {type(error).__name__}: {error}")
    raise CheckFailed(f"{what}\n  expected {exception.__name__}\n  got: {short(result)}")


def auth_session(nodes, http, admin, app_name, app_secret):
    """With tokens: redis-py with a password, a username and password, RESP3's HELLO AUTH;
    py-consul with a token; the refusals each client raises."""
    (host, port), (h2, p2) = nodes[0], nodes[-1]
    admin_redis = redis.Redis(host=host, port=port, password=admin, socket_timeout=15)
    check("redis-py password=<admin>: SET other/x", admin_redis.set("other/x", "o"), True)

    bare = redis.Redis(host=host, port=port, protocol=2, socket_timeout=15)
    check_raises("redis-py RESP2 without a password: GET", lambda: bare.get("app/x"), redis.AuthenticationError, "Authentication required")
    bare3 = redis.Redis(host=host, port=port, protocol=3, socket_timeout=15)
    check_raises("redis-py RESP3 without a password: HELLO 3", lambda: bare3.get("app/x"), redis.AuthenticationError, "HELLO must be called with the client already authenticated")
    wrong = redis.Redis(host=host, port=port, password="not-the-secret-0000", protocol=2, socket_timeout=15)
    check_raises("redis-py with a wrong password: GET", lambda: wrong.get("app/x"), redis.AuthenticationError, "invalid username-password pair")

    # RESP2: AUTH <secret>, AUTH <name> <secret>.
    by_secret = redis.Redis(host=host, port=port, password=app_secret, protocol=2, socket_timeout=15)
    check("redis-py password=<app>: SET app/x", by_secret.set("app/x", "1"), True)
    check("redis-py password=<app>: GET app/x", by_secret.get("app/x"), b"1")
    check_raises("redis-py password=<app>: GET other/x", lambda: by_secret.get("other/x"), redis.exceptions.NoPermissionError, "no permissions to access one of the keys")
    check_raises("redis-py password=<app>: MSET with other/y", lambda: by_secret.mset({"app/y": "1", "other/y": "2"}), redis.exceptions.NoPermissionError, "no permissions to access one of the keys")
    check("the refused MSET wrote nothing", admin_redis.mget("app/y", "other/y"), [None, None])
    check("redis-py password=<app>: KEYS *", sorted(by_secret.keys("*")), [b"app/x"])

    by_name = redis.Redis(host=h2, port=p2, username=app_name, password=app_secret, protocol=2, socket_timeout=15)
    check("redis-py username=app password=<app>: INCR app/n", by_name.incr("app/n"), 1)
    check_raises("redis-py username=app: SET shared/x", lambda: by_name.set("shared/x", "1"), redis.exceptions.NoPermissionError, "no permissions to access one of the keys")
    wrong_name = redis.Redis(host=h2, port=p2, username="admin", password=app_secret, protocol=2, socket_timeout=15)
    check_raises("redis-py username=admin with app's secret", lambda: wrong_name.get("app/x"), redis.AuthenticationError, "invalid username-password pair")

    resp3 = redis.Redis(host=h2, port=p2, username=app_name, password=app_secret, protocol=3, socket_timeout=15)
    check("redis-py RESP3 (HELLO 3 AUTH): GET app/x", resp3.get("app/x"), b"1")
    resp3_default = redis.Redis(host=h2, port=p2, password=app_secret, protocol=3, socket_timeout=15)
    check("redis-py RESP3 password only (HELLO 3 AUTH default): GET app/n", resp3_default.get("app/n"), b"1")

    (chost, cport), (chost2, cport2) = http[0], http[-1]
    app = consul.Consul(host=chost, port=cport, token=app_secret)
    check("py-consul token=<app>: kv.put app/c", app.kv.put("app/c", "consul"), True)
    _, entry = consul.Consul(host=chost2, port=cport2, token=app_secret).kv.get("app/c")
    check("py-consul token=<app>: kv.get app/c through another node", entry and entry["Value"], b"consul")
    check_raises("py-consul token=<app>: kv.put other/c", lambda: app.kv.put("other/c", "x"), consul.ACLPermissionDenied, "Permission denied")
    check_raises("py-consul token=<app>: kv.get other/x", lambda: app.kv.get("other/x"), consul.ACLPermissionDenied, "Permission denied")
    no_token = consul.Consul(host=chost, port=cport)
    check_raises("py-consul without a token: kv.get app/c", lambda: no_token.kv.get("app/c"), consul.ACLPermissionDenied, "Permission denied")
    bad_token = consul.Consul(host=chost, port=cport, token="not-the-secret-0000")
    check_raises("py-consul with a wrong token: kv.put app/z", lambda: bad_token.kv.put("app/z", "x"), consul.ACLPermissionDenied, "Permission denied")
    _, entries = app.kv.get("", recurse=True)
    check("py-consul token=<app>: kv.get recurse sees its keys only", [e["Key"] for e in entries or []], ["app/c", "app/n", "app/x"])
    admin_consul = consul.Consul(host=chost, port=cport, token=admin)
    check("py-consul token=<admin>: kv.get other/c (nothing written)", admin_consul.kv.get("other/c")[1], None)
    check("py-consul token=<admin>: kv.get other/x", admin_consul.kv.get("other/x")[1]["Value"], b"o")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", required=True, help="host:port of each node's Redis listener, comma-separated")
    parser.add_argument("--http", default="", help="host:port of each node's HTTP API, comma-separated")
    parser.add_argument("--prefix", default="py:", help="every key starts with this")
    parser.add_argument("--auth", default="", help="ADMIN_SECRET,APP_NAME,APP_SECRET: only the token checks")
    parser.add_argument("--plain-redis", action="store_true", help="a real Redis: only the checks Redis answers alike")
    args = parser.parse_args()
    nodes = [address(text) for text in args.redis.split(",") if text]
    http = [address(text) for text in args.http.split(",") if text]
    skiff = not args.plain_redis
    if skiff and not http:
        parser.error("--http is required unless --plain-redis")
    versions = f"redis-py {redis.__version__}, py-consul {getattr(consul, '__version__', '?')}"
    print(f"{versions}, Python {sys.version.split()[0]}")
    written = set()
    clients = []
    try:
        if args.auth:
            admin, app_name, app_secret = args.auth.split(",")
            auth_session(nodes, http, admin, app_name, app_secret)
            print("all checks passed")
            return 0
        clients, written = redis_session(nodes, args.prefix, skiff)
        resp3_session(nodes, args.prefix)
        if skiff:
            consul_session(http, clients, args.prefix)
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        return 1
    except Exception as error:  # a client exception is a failure too, with what raised it
        import traceback

        traceback.print_exc(file=sys.stdout)
        print(f"FAILED: {type(error).__name__}: {error}")
        return 1
    finally:
        if args.plain_redis:
            cleanup = redis.Redis(host=nodes[0][0], port=nodes[0][1])
            leftover = list(cleanup.scan_iter(match=f"{args.prefix}*"))
            if leftover:
                cleanup.delete(*leftover)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
