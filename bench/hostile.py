"""The load of bench/hostile.sh: see there. Prints a table, and fails (exit 1) if the
leader changed, a node's RSS passed --max-rss-mib, or a second went by with no
acknowledged write."""

import argparse
import json
import re
import socket
import statistics
import subprocess
import threading
import time
import urllib.request


def status(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/skiff/status", timeout=2) as reply:
        return json.load(reply)


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as text:
        for line in text:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def command(*args):
    """One RESP command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        arg = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def load(port, keys):
    data = b"".join(command("SET", f"key:{i:08d}", b"v" * 100) for i in range(keys))
    subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=data, check=True, stdout=subprocess.DEVNULL)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(command("SET", "big", b"b" * (1 << 20)))
        assert sock.recv(100).startswith(b"+OK"), "SET big"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--keys", type=int, default=200_000)
    parser.add_argument("--writers", type=int, default=64)
    parser.add_argument("--keys-clients", type=int, default=50)
    parser.add_argument("--mget-clients", type=int, default=2)
    parser.add_argument("--max-rss-mib", type=float, default=1024)
    parser.add_argument("--redis", required=True)
    parser.add_argument("--http", required=True)
    parser.add_argument("--pids", required=True)
    args = parser.parse_args()
    redis_ports, http_ports = args.redis.split(), args.http.split()
    pids = [int(pid) for pid in args.pids.split()]

    first = status(http_ports[0])
    leader = first["leader"]
    leader_index = int(leader.lstrip("n")) - 1
    leader_redis = int(redis_ports[leader_index])
    load(leader_redis, args.keys)
    before = status(http_ports[leader_index])
    stop = threading.Event()
    counts = {"keys": 0, "keys_errors": 0, "mget": 0, "mget_answers": set()}
    lock = threading.Lock()

    def keys_loop(port):
        while not stop.is_set():
            done = subprocess.run(["redis-cli", "-p", str(port), "KEYS", "*"], stdout=subprocess.DEVNULL)
            with lock:
                counts["keys" if done.returncode == 0 else "keys_errors"] += 1

    # As many arguments as an 8 MiB command may hold (each costs its length plus about 66
    # bytes against the limit): about 120,000 times the 1 MiB key, a 120 GiB reply.
    mget = command("MGET", *(["big"] * ((8 << 20) // 70)))

    def mget_loop(port):
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(mget)
                first_line = sock.makefile("rb").readline()[:120].decode(errors="replace").strip()
            with lock:
                counts["mget"] += 1
                counts["mget_answers"].add(re.sub(r"\d+", "N", first_line))

    samples = []  # (time, [rss...], [(term, leader)...])

    def monitor():
        while not stop.is_set():
            views = []
            for port in http_ports:
                try:
                    view = status(port)
                    views.append((view["term"], view["leader"]))
                except Exception as error:  # a node that does not answer in 2 s is a finding
                    views.append(("no answer", str(error)[:60]))
            samples.append((time.time(), [rss_mib(pid) for pid in pids], views))
            stop.wait(0.5)

    writers = subprocess.Popen(
        ["redis-benchmark", "-p", str(leader_redis), "-t", "set", "-c", str(args.writers), "-n", "100000000",
         "-r", str(args.keys), "-d", "100"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    threads = [threading.Thread(target=monitor)]
    threads += [threading.Thread(target=keys_loop, args=(leader_redis,)) for _ in range(args.keys_clients)]
    threads += [threading.Thread(target=mget_loop, args=(leader_redis,)) for _ in range(args.mget_clients)]
    for thread in threads:
        thread.start()
    time.sleep(args.duration)
    stop.set()
    writers.terminate()
    output = writers.communicate()[0].decode(errors="replace")
    for thread in threads:
        thread.join()
    try:
        after = status(http_ports[leader_index])
    except Exception as error:  # the leader stopped answering: a finding, reported below
        after = {"term": "no answer", "leader": str(error)[:60], "applied": before["applied"]}

    # redis-benchmark's live line, about every 250 ms: "SET: rps=12345.6 (overall: ...)".
    rates = [float(rate) for rate in re.findall(r"rps=([0-9.]+)", output)]
    per_second = [statistics.mean(rates[i:i + 4]) for i in range(0, len(rates) - 3, 4)]
    peak = [max(sample[1][i] for sample in samples) for i in range(len(pids))]
    views = {view for sample in samples for view in sample[2]}
    leader_changed = before["term"] != after["term"] or after["leader"] != leader or any(
        view != (before["term"], leader) for view in views)
    print(f"duration            {args.duration:.0f} s, {args.keys} keys, {args.writers} writers, "
          f"{args.keys_clients} KEYS clients, {args.mget_clients} MGET clients (8 MiB, one 1 MiB key)")
    applied = after["applied"] - before["applied"]
    print(f"writes acknowledged {applied} entries applied on the leader; "
          f"per second: lowest {min(per_second, default=0):.0f}, median {statistics.median(per_second or [0]):.0f}")
    print(f"KEYS * answered     {counts['keys']} ({counts['keys_errors']} errors)")
    print(f"MGET answered       {counts['mget']}: {sorted(counts['mget_answers'])}")
    print(f"peak RSS (MiB)      " + ", ".join(f"n{i + 1} {rss:.0f}" for i, rss in enumerate(peak)))
    print(f"terms and leaders   {sorted(map(str, views))} (before: term {before['term']}, leader {leader})")
    failures = []
    if leader_changed:
        failures.append("the leader changed (or a node did not answer its status)")
    if max(peak) > args.max_rss_mib:
        failures.append(f"a node passed {args.max_rss_mib:.0f} MiB")
    if not per_second or min(per_second) == 0:
        failures.append("a second went by with no acknowledged write")
    for failure in failures:
        print(f"FAILED: {failure}")
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
