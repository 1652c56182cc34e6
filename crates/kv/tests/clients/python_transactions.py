#!/usr/bin/env python3
"""redis-py against Skiff's Redis transactions: `pipeline(transaction=True)`, EXECABORT,
DISCARD, the WATCH retry recipe, and contention: several clients incrementing one counter
through WATCH/MULTI/EXEC, with retries, lose no update.

    python_transactions.py --redis LEADER,FOLLOWER,FOLLOWER [--prefix P]

Prints one line per check and exits 1 at the first failure (exit 2: a module is missing),
as python_clients.py, whose helpers it uses.
"""

import argparse
import sys
import threading

from python_clients import CheckFailed, address, check, check_true

try:
    import redis
    from redis.exceptions import ExecAbortError, ResponseError, WatchError
except ImportError as error:
    print(f"missing Python module: {error.name} (install with: pip install redis)")
    sys.exit(2)

# The contention check: clients, and increments each.
CLIENTS = 4
INCREMENTS = 50


def pipelines(r, prefix):
    """`pipeline(transaction=True)`: MULTI, the commands, EXEC; through every node."""
    for number, client in enumerate(r):
        k = lambda name: f"{prefix}{number}:{name}"  # noqa: E731
        with client.pipeline(transaction=True) as p:
            p.set(k("a"), 1).incr(k("a")).incrby(k("a"), 5).mset({k("b"): "x", k("c"): "y"}).delete(k("c"))
            check(f"node {number}: pipeline(transaction=True)", p.execute(), [True, 2, 7, True, 1])
        check(f"node {number}: its writes", client.mget(k("a"), k("b"), k("c")), [b"7", b"x", None])
        # A failure at run time is that command's error; the others apply, as in Redis.
        with client.pipeline(transaction=True) as p:
            p.set(k("word"), "hello").incr(k("word")).set(k("after"), "yes")
            results = p.execute(raise_on_error=False)
        check_true(
            f"node {number}: a run-time error in EXEC's array",
            results[0] is True and isinstance(results[1], ResponseError) and results[2] is True,
            f"results {results!r}",
        )
        check(f"node {number}: the commands around it applied", client.get(k("after")), b"yes")


def aborts_and_discard(r, prefix):
    """EXECABORT after an error at queue time; DISCARD; reads refused inside MULTI."""
    client = r[-1]
    k = lambda name: f"{prefix}abort:{name}"  # noqa: E731
    with client.pipeline(transaction=True) as p:
        p.set(k("x"), 1).execute_command("NOSUCHCOMMAND", k("x")).set(k("y"), 2)
        try:
            p.execute()
            raise CheckFailed("a transaction with an unknown command was executed")
        except ResponseError as error:
            check_true("pipeline with an unknown command raises its error", "unknown command" in str(error), str(error))
    check("nothing of the aborted transaction applied", client.mget(k("x"), k("y")), [None, None])

    # The raw exchange on one connection: QUEUED, the error at once, EXECABORT.
    connection = client.connection_pool.get_connection()
    try:

        def call(*args):
            connection.send_command(*args)
            return connection.read_response()

        check("MULTI", call("MULTI"), b"OK")
        check("SET queued", call("SET", k("x"), "1"), b"QUEUED")
        try:
            call("SET", k("x"))
            raise CheckFailed("SET with one argument was queued")
        except ResponseError as error:
            check_true("wrong arity refused at queue time", "wrong number of arguments" in str(error), str(error))
        try:
            call("EXEC")
            raise CheckFailed("EXEC ran a transaction with an error at queue time")
        except ExecAbortError as error:
            check("EXECABORT", str(error), "Transaction discarded because of previous errors.")
        check("MULTI again", call("MULTI"), b"OK")
        check("SET queued again", call("SET", k("x"), "1"), b"QUEUED")
        check("DISCARD", call("DISCARD"), b"OK")
        check("after DISCARD, nothing applied", call("GET", k("x")), None)
        try:
            call("DISCARD")
            raise CheckFailed("DISCARD without MULTI was accepted")
        except ResponseError as error:
            check("DISCARD without MULTI", str(error), "DISCARD without MULTI")
    finally:
        client.connection_pool.release(connection)

    with client.pipeline(transaction=True) as p:
        p.get(k("read")).set(k("read"), 1).get(k("read")).incr(k("read")).mget(k("read"), k("none")).exists(k("read"))
        check("reads inside MULTI see the transaction's state", p.execute(), [None, True, b"1", 2, [b"2", None], 1])
    with client.pipeline(transaction=True) as p:
        p.set(k("scan"), 1).keys("*")
        try:
            p.execute()
            raise CheckFailed("KEYS inside MULTI was run")
        except ResponseError as error:
            check_true("KEYS inside MULTI is refused, clearly", "inside MULTI" in str(error), str(error))
    check("and its transaction aborted", client.get(k("scan")), None)


def increment(client, key, interfere=None):
    """redis-py's WATCH recipe: read, then write in MULTI/EXEC, again on WatchError.
    Returns how many attempts were aborted."""
    aborted = 0
    with client.pipeline() as p:
        while True:
            try:
                p.watch(key)
                value = int(p.get(key) or 0)
                if interfere is not None and aborted == 0:
                    interfere()
                p.multi()
                p.set(key, value + 1)
                p.execute()
                return aborted
            except WatchError:
                aborted += 1


def watch_recipe(r, prefix):
    """A change between WATCH and EXEC aborts (WatchError); the retry succeeds."""
    key = f"{prefix}watched"
    r[0].set(key, 10)
    aborted = increment(r[1], key, interfere=lambda: r[2].incr(key))
    check("a write by another client between WATCH and EXEC aborts the first attempt", aborted, 1)
    check("the retry applied on the new value", r[0].get(key), b"12")
    check("without interference, no abort", increment(r[2], key), 0)
    check("the counter", r[1].get(key), b"13")


def contention(r, prefix):
    """CLIENTS threads, each with its own client on a node in turn, increment one counter
    INCREMENTS times each through the WATCH recipe: the final value is exact."""
    key = f"{prefix}counter"
    r[0].delete(key)
    aborts = [0] * CLIENTS
    failures = []

    def worker(number):
        node = r[number % len(r)].connection_pool.connection_kwargs
        client = redis.Redis(host=node["host"], port=node["port"], socket_timeout=30)
        try:
            for _ in range(INCREMENTS):
                aborts[number] += increment(client, key)
        except Exception as error:  # reported by the main thread
            failures.append(f"client {number}: {type(error).__name__}: {error}")
        finally:
            client.close()

    threads = [threading.Thread(target=worker, args=(number,)) for number in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    check("no client failed", failures, [])
    check(f"{CLIENTS} clients x {INCREMENTS} WATCH increments: no lost update", r[0].get(key), str(CLIENTS * INCREMENTS).encode())
    print(f"info: {sum(aborts)} aborted attempts retried ({aborts})")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True, help="Redis addresses, the leader first, comma-separated")
    parser.add_argument("--prefix", default="pytx:")
    args = parser.parse_args()
    nodes = [address(text) for text in args.redis.split(",") if text]
    print(f"redis-py {redis.__version__}, Python {sys.version.split()[0]}")
    r = [redis.Redis(host=host, port=port, socket_timeout=15) for host, port in nodes]
    try:
        pipelines(r, args.prefix)
        aborts_and_discard(r, args.prefix)
        watch_recipe(r, args.prefix)
        contention(r, args.prefix)
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        return 1
    except Exception as error:  # a client exception is a failure too, with what raised it
        import traceback

        traceback.print_exc(file=sys.stdout)
        print(f"FAILED: {type(error).__name__}: {error}")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
