"""py-consul and redis-py, unchanged, against a Skiff cluster with TLS and tokens.

Run by crates/cli/tests/secure_clients.rs against `skiff demo --secure`. The environment
gives SKIFF_HTTP (host:port), SKIFF_REDIS (host:port), SKIFF_CA (the cluster CA),
SKIFF_ADMIN (a management token's secret) and SKIFF_APP (a token that reads "shared/" and
writes "app/"). Prints one line per check; exits 1 if any failed.
"""
import os
import ssl
import sys

import consul
import redis

failures = []


def check(what, condition, detail=""):
    print(("ok   " if condition else "FAIL ") + what + (f": {detail}" if detail and not condition else ""))
    if not condition:
        failures.append(what)


def raises(what, call, exception):
    try:
        result = call()
    except exception as error:
        check(what, True)
        return error
    except Exception as error:  # noqa: BLE001 - report the wrong kind
        check(what, False, f"raised {type(error).__name__}: {error}")
        return None
    check(what, False, f"returned {result!r}")
    return None


def split(address):
    host, port = address.rsplit(":", 1)
    return host, int(port)


def consul_checks(http, ca, admin, app):
    host, port = split(http)
    client = lambda token: consul.Consul(host=host, port=port, scheme="https", verify=ca, token=token)
    root = client(admin)
    check("py-consul: put with a management token", root.kv.put("app/py", "hello") is True)
    _, entry = root.kv.get("app/py")
    check("py-consul: get it back", entry is not None and entry["Value"] == b"hello", repr(entry))
    scoped = client(app)
    check("py-consul: a scoped token writes inside its prefix", scoped.kv.put("app/scoped", "1") is True)
    raises("py-consul: a scoped token may not write outside it", lambda: scoped.kv.put("other/x", "1"), consul.ACLPermissionDenied)
    raises("py-consul: nor read outside it", lambda: scoped.kv.get("other/x"), consul.ACLPermissionDenied)
    _, keys = scoped.kv.get("", keys=True)
    check("py-consul: a listing shows only readable keys", keys == ["app/py", "app/scoped"], repr(keys))
    raises("py-consul: no token is refused", lambda: client(None).kv.put("app/anonymous", "1"), consul.ACLPermissionDenied)
    raises(
        "py-consul: a server not signed by a trusted CA is refused",
        lambda: consul.Consul(host=host, port=port, scheme="https", verify=True, token=admin).kv.get("app/py"),
        Exception,
    )
    _, gone = root.kv.get("other/x")
    check("py-consul: nothing refused was written", gone is None, repr(gone))


def redis_checks(address, ca, admin, app):
    host, port = split(address)
    connect = lambda **options: redis.Redis(host=host, port=port, ssl=True, ssl_ca_certs=ca, socket_timeout=10, **options)
    root = connect(username="admin", password=admin)
    check("redis-py: SET over TLS with username and password", root.set("app/r", "v") is True)
    check("redis-py: GET", root.get("app/r") == b"v")
    check("redis-py: password alone (the default user)", connect(password=admin).get("app/r") == b"v")
    resp3 = connect(username="admin", password=admin, protocol=3)
    check("redis-py: RESP3 (HELLO 3 AUTH)", resp3.get("app/r") == b"v")
    scoped = connect(username="app", password=app)
    check("redis-py: a scoped token writes inside its prefix", scoped.set("app/s", "1") is True)
    raises("redis-py: NOPERM outside it", lambda: scoped.set("other/y", "1"), redis.exceptions.NoPermissionError)
    raises("redis-py: MGET with one key outside", lambda: scoped.mget("app/s", "other/y"), redis.exceptions.NoPermissionError)
    raises("redis-py: a wrong password", lambda: connect(username="admin", password="wrong-password-123").ping(), redis.exceptions.AuthenticationError)
    raises("redis-py: no password", lambda: connect().get("app/r"), redis.exceptions.AuthenticationError)
    plain = raises("redis-py: no TLS is refused", lambda: redis.Redis(host=host, port=port, password=admin, socket_timeout=5).get("app/r"), redis.exceptions.ResponseError)
    check("redis-py: ... saying the port speaks TLS", plain is not None and "speaks TLS" in str(plain), str(plain))
    check("redis-py: nothing refused was written", root.exists("other/y") == 0)


def main():
    env = os.environ
    ca, admin, app = env["SKIFF_CA"], env["SKIFF_ADMIN"], env["SKIFF_APP"]
    consul_checks(env["SKIFF_HTTP"], ca, admin, app)
    redis_checks(env["SKIFF_REDIS"], ca, admin, app)
    if failures:
        print(f"{len(failures)} check(s) failed")
        sys.exit(1)


if __name__ == "__main__":
    main()
