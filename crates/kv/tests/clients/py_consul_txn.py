#!/usr/bin/env python3
"""py-consul's txn.put against a Skiff cluster: every KV verb, results as Consul answers
them, a failing operation rolling back the whole transaction (409), through every node.

    py_consul_txn.py --http 127.0.0.1:8001,127.0.0.1:8002,...

Prints one line per check and exits 1 at the first failure. Exit 2: py-consul is missing.
"""

import argparse
import base64
import sys

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


def b64(text):
    return base64.b64encode(text.encode()).decode()


def kv(verb, key, value=None, **fields):
    op = {"Verb": verb, "Key": key}
    if value is not None:
        op["Value"] = b64(value)
    op.update(fields)
    return {"KV": op}


def values(result):
    return [
        (r["KV"]["Key"], base64.b64decode(r["KV"]["Value"]).decode() if r["KV"]["Value"] else None)
        for r in result["Results"]
    ]


def run(clients):
    a, b, c = clients[0], clients[1 % len(clients)], clients[2 % len(clients)]
    result = a.txn.put([kv("check-not-exists", "t/x"), kv("set", "t/x", "1", Flags=3), kv("set", "t/y", "2")])
    check("set: the writes answer their keys without values", values(result), [("t/x", None), ("t/y", None)])
    check("set: Flags", result["Results"][0]["KV"]["Flags"], 3)
    x_index = result["Results"][0]["KV"]["ModifyIndex"]

    result = b.txn.put([kv("get", "t/x"), kv("get-tree", "t/"), kv("check-index", "t/x", Index=x_index)])
    check("get, get-tree, check-index", values(result), [("t/x", "1"), ("t/x", "1"), ("t/y", "2"), ("t/x", None)])

    y_index = b.kv.get("t/y")[1]["ModifyIndex"]
    result = c.txn.put([kv("cas", "t/x", "10", Index=x_index), kv("delete-cas", "t/y", Index=y_index)])
    check("cas and delete-cas", values(result), [("t/x", None)])
    check("delete-cas deleted", a.kv.get("t/y")[1], None)

    session = a.session.create(lock_delay=0)
    result = b.txn.put([kv("lock", "t/lock", "me", Session=session), kv("check-session", "t/lock", Session=session)])
    check("lock: Session in the result", result["Results"][0]["KV"]["Session"], session)
    check("lock: LockIndex", result["Results"][0]["KV"]["LockIndex"], 1)
    c.txn.put([kv("unlock", "t/lock", Session=session)])
    check("unlock: no Session in reads", c.kv.get("t/lock")[1].get("Session"), None)

    # A failure rolls back everything before it, and says which operation failed.
    try:
        a.txn.put([kv("delete-tree", "t/"), kv("set", "t/new", "x"), kv("cas", "t/x", "11", Index=1)])
        raise CheckFailed("a transaction with a stale cas succeeded")
    except consul.exceptions.ClientError as error:
        text = str(error)
        check("a failed transaction answers 409", text.startswith("409"), True)
        check("it names the failing operation", '"OpIndex":2' in text.replace(" ", ""), True)
    check("nothing of it applied: t/x kept", b.kv.get("t/x")[1]["Value"], b"10")
    check("nothing of it applied: t/new absent", c.kv.get("t/new")[1], None)

    result = b.txn.put([kv("delete", "t/x"), kv("delete-tree", "t/")])
    check("delete and delete-tree answer nothing", result["Results"], [])
    check("the tree is gone", a.kv.get("t/", recurse=True)[1], None)
    a.session.destroy(session)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True)
    args = parser.parse_args()
    clients = []
    for address in args.http.split(","):
        host, _, port = address.rpartition(":")
        clients.append(consul.Consul(host=host, port=int(port)))
    try:
        run(clients)
    except CheckFailed as failure:
        print(f"FAILED: {failure}")
        sys.exit(1)


if __name__ == "__main__":
    main()
