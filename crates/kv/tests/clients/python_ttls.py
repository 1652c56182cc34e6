#!/usr/bin/env python3
"""redis-py against Skiff's key expiry (TTLs): the commands' answers, keys that expire on
every node, and a key that expires through a leader change.

    python_ttls.py --redis LEADER,FOLLOWER,FOLLOWER [--election-ms MS] [--leader-stop]

The first node must be the leader. Prints one line per check and exits 1 at the first
failure (exit 2: a module is missing), as python_clients.py, whose helpers it uses.

`--leader-stop`: after writing a key with a 2 s TTL through the leader, the script prints
the line `stop-leader` and waits for a line on its stdin, sent once the leader is stopped;
then it checks, through the survivors only, that the key stayed until its TTL (a leader
change does not shorten it) and was gone by its TTL + the longest election timeout
(`--election-ms`) + a margin (a leader change does not restart it).

`--plain-redis` runs only the checks whose answers are Redis's own, against one node (a
real Redis 7, keys under `--prefix`, all deleted at the end).

Times: t0 is taken just before a SET is sent and t_ack once its reply arrived. Its deadline
is between t0 + TTL and t_ack + TTL: a read answered before t0 + TTL must see the key, and
the key must be gone from reads sent after t_ack + TTL + the margin.
"""

import argparse
import sys
import time
import warnings

from python_clients import CheckFailed, address, check, check_error, check_true

try:
    import redis
except ImportError as error:
    print(f"missing Python module: {error.name} (install with: pip install redis)")
    sys.exit(2)

# How late after its deadline a key may still be seen: a clock entry, its commit, and
# a busy machine's scheduling.
MARGIN_S = 0.5
# How often the readers look.
POLL_S = 0.02


def answers(what, commands, expected):
    """Runs (name, call) pairs; each must return its expected answer."""
    for (name, call), value in zip(commands, expected):
        check(f"{what}: {name}", call(), value)


def commands_session(r, prefix, skiff):
    """Every TTL command through redis-py, writes through one node and reads through another."""
    w, rd = r[0], r[-1]
    k = lambda name: f"{prefix}{name}"  # noqa: E731
    now = time.time()

    check("set(ex=100)", w.set(k("ex"), "v", ex=100), True)
    check("ttl after ex=100", rd.ttl(k("ex")), 100)
    pttl = rd.pttl(k("ex"))
    check_true("pttl after ex=100", 99_000 < pttl <= 100_000, f"pttl {pttl}")
    expiretime = rd.expiretime(k("ex"))
    check_true("expiretime after ex=100", abs(expiretime - (now + 100)) <= 2, f"expiretime {expiretime}, now {now}")
    check("ttl of a missing key", rd.ttl(k("missing")), -2)
    check("pttl of a missing key", rd.pttl(k("missing")), -2)
    check("expiretime of a missing key", rd.expiretime(k("missing")), -2)

    check("set(px=1500, nx=True) of a new key", w.set(k("px"), "v", px=1500, nx=True), True)
    check("set(px=1500, nx=True) of an existing key", w.set(k("px"), "w", px=99_000, nx=True), None)
    pttl = rd.pttl(k("px"))
    check_true("pttl after px=1500", 0 < pttl <= 1500, f"pttl {pttl}")
    check("the existing key kept its value", rd.get(k("px")), b"v")
    check("set(xx=True, get=True, ex=50)", w.set(k("px"), "x", xx=True, get=True, ex=50), b"v")
    check("ttl after set(xx, get, ex=50)", rd.ttl(k("px")), 50)

    exat = int(now) + 300
    check("set(exat=now + 300 s)", w.set(k("exat"), "v", exat=exat), True)
    ttl = rd.ttl(k("exat"))
    check_true("ttl after exat", 298 <= ttl <= 300, f"ttl {ttl}")
    check("expiretime after exat", rd.expiretime(k("exat")), exat)
    pxat = int(now * 1000) + 200_000
    check("set(pxat=now + 200 s)", w.set(k("pxat"), "v", pxat=pxat), True)
    # Converted to a time left on the writing node's wall clock, and back on the reading
    # node's: off by the reading node's apply delay, a few milliseconds.
    pexpiretime = rd.pexpiretime(k("pxat"))
    check_true(
        f"pexpiretime after pxat ({pexpiretime - pxat:+d} ms)",
        abs(pexpiretime - pxat) <= 100,
        f"pexpiretime {pexpiretime}, pxat {pxat}: {pexpiretime - pxat:+d} ms",
    )
    check("set(exat=a time passed)", w.set(k("past"), "v", exat=int(now) - 10), True)
    check("a key set with a passed exat is not there", rd.get(k("past")), None)

    check("set(keepttl=True) keeps the deadline", w.set(k("ex"), "v2", keepttl=True), True)
    check("ttl after keepttl", rd.ttl(k("ex")), 100)
    check("a plain set removes the deadline", w.set(k("ex"), "v3"), True)
    check("ttl after a plain set", rd.ttl(k("ex")), -1)
    check("pttl of a key without a deadline", rd.pttl(k("ex")), -1)
    check("expiretime of a key without a deadline", rd.expiretime(k("ex")), -1)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # redis-py prefers set(ex=); SETEX is the point here
        check("setex(10)", w.setex(k("setex"), 10, "v"), True)
    check("ttl after setex", rd.ttl(k("setex")), 10)
    check("psetex(2500)", w.psetex(k("psetex"), 2500, "v"), True)
    pttl = rd.pttl(k("psetex"))
    check_true("pttl after psetex", 2000 < pttl <= 2500, f"pttl {pttl}")

    key = k("e")
    w.set(key, "v")
    answers(
        "expire on a key without a deadline",
        [
            ("expire(xx=True)", lambda: w.expire(key, 100, xx=True)),
            ("expire(gt=True)", lambda: w.expire(key, 100, gt=True)),
            ("ttl", lambda: rd.ttl(key)),
            ("expire(lt=True)", lambda: w.expire(key, 100, lt=True)),
            ("ttl", lambda: rd.ttl(key)),
            ("expire(nx=True) with a deadline", lambda: w.expire(key, 10, nx=True)),
            ("expire(gt=True) earlier", lambda: w.expire(key, 50, gt=True)),
            ("expire(gt=True) later", lambda: w.expire(key, 200, gt=True)),
            ("expire(lt=True) later", lambda: w.expire(key, 300, lt=True)),
            ("expire(xx=True, lt=True) earlier", lambda: w.expire(key, 150, xx=True, lt=True)),
            ("ttl", lambda: rd.ttl(key)),
            ("pexpire(5000)", lambda: w.pexpire(key, 5000)),
            ("persist", lambda: w.persist(key)),
            ("persist again", lambda: w.persist(key)),
            ("ttl after persist", lambda: rd.ttl(key)),
            ("expire(nx=True) without a deadline", lambda: w.expire(key, 60, nx=True)),
            ("expireat(now + 500 s)", lambda: w.expireat(key, int(now) + 500)),
            ("expiretime", lambda: rd.expiretime(key)),
            ("persist of a missing key", lambda: w.persist(k("missing"))),
            ("expire of a missing key", lambda: w.expire(k("missing"), 10)),
        ],
        [False, False, -1, True, 100, False, False, True, False, True, 150, True, True, False, -1, True, True,
         int(now) + 500, False, False],
    )
    check_error("expire(nx=True, xx=True)", lambda: w.expire(key, 10, nx=True, xx=True), "NX and XX, GT or LT")
    check_error("expire(gt=True, lt=True)", lambda: w.expire(key, 10, gt=True, lt=True), "GT and LT options")
    check_error("set(ex=0)", lambda: w.set(k("bad"), "v", ex=0), "invalid expire time in 'set' command")
    check_error("SET ... EX -1", lambda: w.execute_command("SET", k("bad"), "v", "EX", -1), "invalid expire time")
    check_error("SET ... EX 10 PX 10", lambda: w.execute_command("SET", k("bad"), "v", "EX", 10, "PX", 10), "syntax error")
    check_error("SET ... EX 10 KEEPTTL", lambda: w.execute_command("SET", k("bad"), "v", "EX", 10, "KEEPTTL"), "syntax error")
    check_error("EXPIRE ... soon", lambda: w.execute_command("EXPIRE", key, "soon"), "not an integer")
    check_error("EXPIRE ... 10 SOMETIMES", lambda: w.execute_command("EXPIRE", key, 10, "SOMETIMES"), "Unsupported option")
    check("nothing was written by the refused commands", rd.exists(k("bad")), 0)

    check("getex without an option is a read", w.getex(k("setex")), b"v")
    check("ttl after a plain getex", rd.ttl(k("setex")), 10)
    check("getex(ex=30)", w.getex(k("setex"), ex=30), b"v")
    check("ttl after getex(ex=30)", rd.ttl(k("setex")), 30)
    check("getex(persist=True)", w.getex(k("setex"), persist=True), b"v")
    check("ttl after getex(persist=True)", rd.ttl(k("setex")), -1)
    check("getex(px=) of a missing key", w.getex(k("missing"), px=100), None)
    check_error("GETEX ... EX 10 PERSIST", lambda: w.execute_command("GETEX", k("setex"), "EX", 10, "PERSIST"), "syntax error")

    check("expire with a negative time deletes the key and answers 1", w.expire(k("setex"), -1), True)
    check("the key is gone", rd.exists(k("setex")), 0)

    if skiff:
        check_error(
            "SET ... FENCE with a token that holds no lock",
            lambda: w.execute_command("SET", k("fenced"), "v", "FENCE", 123456789),
            "fenced: token",  # redis-py drops the "ERR " in front
        )
        check("the fenced SET wrote nothing", rd.get(k("fenced")), None)


def set_and_time(client, key, **options):
    """SETs `key` with `options`; returns (t0, t_ack) on the monotonic clock."""
    t0 = time.monotonic()
    check_true(f"SET {key} {options}", client.set(key, "v", **options) is True, "not OK")
    return t0, time.monotonic()


def read_until(client, key, give_up):
    """GET `key` until it answers; (value, when sent, when answered), or raises at `give_up`.
    A node without a leader for a moment answers an error, or drops the connection: retried."""
    while True:
        sent = time.monotonic()
        try:
            value = client.get(key)
            return value, sent, time.monotonic()
        except (redis.ResponseError, redis.ConnectionError, redis.TimeoutError) as error:
            if time.monotonic() > give_up:
                raise CheckFailed(f"GET {key}: no answer by the deadline; last error: {error}")
            time.sleep(POLL_S)


def check_lifetime(what, readers, key, t0, t_ack, ttl_s, late_s):
    """The key, read through each of `readers` (name, client), is there until t0 + ttl_s at
    least, and gone from reads sent after t_ack + ttl_s + late_s. A read is served between
    its sending and its answer: one answered before t0 + ttl_s must see the key, one sent
    after the bound must not."""
    deadline_low, deadline_high = t0 + ttl_s, t_ack + ttl_s
    # Shortly before the deadline: still there (unless the read was answered after it).
    time.sleep(max(0.0, deadline_low - 0.3 - time.monotonic()))
    for name, client in readers:
        value, _, answered = read_until(client, key, deadline_high + late_s)
        if answered < deadline_low:
            check(f"{what}: {key} still there {deadline_low - answered:.3f} s before its TTL through {name}", value, b"v")
        else:
            print(f"note: {what}: the read through {name} was answered after the TTL; not a check")
    for name, client in readers:
        while True:
            value, sent, answered = read_until(client, key, deadline_high + late_s + 5)
            if value is None:
                if answered < deadline_low:
                    raise CheckFailed(f"{what}: {key} gone through {name} {deadline_low - answered:.3f} s before its TTL")
                late = max(answered - deadline_high, 0)
                print(f"ok: {what}: {key} gone through {name} by {late * 1000:.0f} ms after its TTL (allowed {late_s * 1000:.0f})")
                break
            if sent > deadline_high + late_s:
                raise CheckFailed(
                    f"{what}: {key} still there through {name} {sent - deadline_high:.3f} s after its TTL "
                    f"(allowed: {late_s:.3f} s)"
                )
            time.sleep(POLL_S)


def expiry_session(r, names, prefix):
    """A key with a 1.5 s TTL disappears on every node, and not before its TTL."""
    key = f"{prefix}short"
    t0, t_ack = set_and_time(r[0], key, px=1500)
    for name, client in zip(names, r):
        check(f"{key} is there at once through {name}", client.get(key), b"v")
    check_lifetime("px=1500 on every node", list(zip(names, r)), key, t0, t_ack, 1.5, MARGIN_S)


def leader_stop_session(r, names, prefix, election_s):
    """A key with a 2 s TTL written through the leader, which is stopped 1.4 s later: the
    survivors keep it until its TTL and drop it by TTL + election timeout + margin. Had the
    new leader restarted the TTL, it would live until at least 3.4 s."""
    key = f"{prefix}through-a-leader-stop"
    t0, t_ack = set_and_time(r[0], key, ex=2)
    for name, client in zip(names, r):
        check(f"{key} is there at once through {name}", client.get(key), b"v")
    time.sleep(max(0.0, t0 + 1.4 - time.monotonic()))
    print("stop-leader", flush=True)
    line = sys.stdin.readline()
    check_true(f"the leader {names[0]} was stopped at {time.monotonic() - t0:.3f} s", line.strip() == "stopped", f"got {line!r}")
    survivors = list(zip(names[1:], r[1:]))
    check_lifetime("ex=2 through a leader stop", survivors, key, t0, t_ack, 2.0, election_s + MARGIN_S)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis", required=True, help="host:port of each node's Redis listener, the leader first")
    parser.add_argument("--prefix", default="pyttl:", help="every key starts with this")
    parser.add_argument("--election-ms", type=int, default=600, help="the longest election timeout")
    parser.add_argument("--leader-stop", action="store_true", help="ask for the leader to be stopped (see above)")
    parser.add_argument("--plain-redis", action="store_true", help="a real Redis: only the checks Redis answers alike")
    args = parser.parse_args()
    nodes = [address(text) for text in args.redis.split(",") if text]
    names = [f"{host}:{port}" for host, port in nodes]
    print(f"redis-py {redis.__version__}, Python {sys.version.split()[0]}")
    r = [redis.Redis(host=host, port=port, socket_timeout=15) for host, port in nodes]
    try:
        if args.leader_stop:
            leader_stop_session(r, names, args.prefix, args.election_ms / 1000)
        else:
            commands_session(r, args.prefix, not args.plain_redis)
            expiry_session(r, names, args.prefix)
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
            leftover = list(r[0].scan_iter(match=f"{args.prefix}*"))
            if leftover:
                r[0].delete(*leftover)
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
