#!/usr/bin/env bash
# Skiff, etcd and Redis side by side on one machine: see bench/README.md.
#
#   bench/compare.sh                      # the full run: 10 s per measurement, about 7 minutes
#   DURATION=1s WARMUP=0s bench/compare.sh   # a quick smoke test
#   SYSTEMS=tls MEMORY=0 bench/compare.sh     # only the TLS row: Skiff's writes, TLS off vs on
#
# Settings (environment): DURATION (10s), WARMUP (2s), CLIENTS ("1 16 64 256"), KEYS (10000),
# VALUE_SIZE (256), RB_REQUESTS (100000, per redis-benchmark test), SYSTEMS ("etcd skiff
# redis tls": which to run, for a partial table; tls is Skiff's writes at 64 clients with TLS
# off and on), TLS_ROUNDS (2: rounds of off then on), MEMORY (1: also run bench/memory.sh; 0: not),
# MEMORY_KEYS (1000000), BENCH_TMPDIR (where the
# temporary directory goes; default the workspace's target/), RESULTS (bench/RESULTS.md),
# SKIP_INSTALL=1 (do not call apt-get), SKIP_BUILD=1 (use target/release/skiff as it is).
set -euo pipefail

DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CLIENTS=${CLIENTS:-"1 16 64 256"}
KEYS=${KEYS:-10000}
VALUE_SIZE=${VALUE_SIZE:-256}
RB_REQUESTS=${RB_REQUESTS:-100000}
SEED=${SEED:-1}
SYSTEMS=${SYSTEMS:-"etcd skiff redis tls"}
TLS_ROUNDS=${TLS_ROUNDS:-2}
MEMORY=${MEMORY:-1}
MEMORY_KEYS=${MEMORY_KEYS:-1000000}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=${RESULTS:-$ROOT/bench/RESULTS.md}
SKIFF=$ROOT/target/release/skiff
START_SECONDS=$SECONDS

# Ports, all on 127.0.0.1.
ETCD_CLIENT_PORTS=(12379 22379 32379)
ETCD_PEER_PORTS=(12380 22380 32380)
SKIFF_RAFT_PORTS=(17101 17102 17103)
SKIFF_HTTP_PORTS=(17111 17112 17113)
SKIFF_REDIS_PORTS=(17121 17122 17123)
REDIS_PORT=17379

LOG_NAME=compare
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------------------------------
# Cleanup: every process this script started is in PIDS; the EXIT trap stops them all and
# removes the temporary directory, whether the script ends normally, fails or is interrupted.
PIDS=()
WORK=""

stop_all() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    PIDS=()
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if ((${#PIDS[@]} > 0)); then
        log "stopping ${#PIDS[@]} process(es) still running"
        stop_all
    fi
    if [[ -n $WORK && -d $WORK ]]; then
        rm -rf -- "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------------------------------
# 1. What we need: etcd, Redis, a few tools, and Skiff's release build.
as_root() {
    if ((EUID == 0)); then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

install_missing() {
    local -a packages=()
    # etcd and Redis only for the systems that need them (SYSTEMS=tls needs neither).
    if [[ " $SYSTEMS " == *" etcd "* ]]; then
        command -v etcd >/dev/null || packages+=(etcd-server)
        command -v etcdctl >/dev/null || packages+=(etcd-client)
    fi
    if [[ " $SYSTEMS " == *" redis "* ]]; then
        command -v redis-server >/dev/null || packages+=(redis-server)
    fi
    if [[ " $SYSTEMS " == *" redis "* || " $SYSTEMS " == *" skiff "* ]]; then
        command -v redis-benchmark >/dev/null || packages+=(redis-tools)
        command -v redis-cli >/dev/null || packages+=(redis-tools)
    fi
    command -v curl >/dev/null || packages+=(curl)
    command -v python3 >/dev/null || packages+=(python3)
    if ((${#packages[@]} == 0)); then
        log "etcd, Redis, curl and python3 are installed"
        return
    fi
    [[ ${SKIP_INSTALL:-0} == 1 ]] && die "missing packages: ${packages[*]} (and SKIP_INSTALL=1)"
    log "installing ${packages[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${packages[@]}" >/dev/null
}

install_missing
# Debian's redis-server package starts a system Redis on 6379; we use our own on $REDIS_PORT.

if [[ ${SKIP_BUILD:-0} != 1 ]]; then
    log "building skiff (cargo build --release -p skiff-cli)"
    (cd "$ROOT" && cargo build --release -p skiff-cli --quiet)
fi
[[ -x $SKIFF ]] || die "$SKIFF not found: build it with cargo build --release -p skiff-cli"

for port in "${ETCD_CLIENT_PORTS[@]}" "${ETCD_PEER_PORTS[@]}" "${SKIFF_RAFT_PORTS[@]}" \
    "${SKIFF_HTTP_PORTS[@]}" "${SKIFF_REDIS_PORTS[@]}" "$REDIS_PORT"; do
    port_free "$port" || die "port $port is in use"
done

# One temporary directory, on a real disk (target/ by default: the system temporary directory may be a tmpfs), for
# the fsync test and every system's data.
TMP_PARENT=${BENCH_TMPDIR:-$ROOT/target}
mkdir -p "$TMP_PARENT"
WORK=$(mktemp -d "$TMP_PARENT/skiff-compare.XXXXXX")
FSTYPE=$(df --output=fstype "$WORK" | tail -n 1 | tr -d ' ')
[[ $FSTYPE == tmpfs ]] && log "warning: $WORK is on a tmpfs: fsync costs nothing there; set BENCH_TMPDIR"
ROWS=$WORK/rows.jsonl
: >"$ROWS"
log "data in $WORK ($FSTYPE)"

# ---------------------------------------------------------------------------------------
# 2. One fdatasync on this disk: 4 KiB written and fdatasync'd, over and over (at most
# 1,000 times or 3 s), in a plain loop.
FSYNC_JSON=$(python3 - "$WORK/fsync-test" <<'EOF'
import json, os, sys, time
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
block = b"x" * 4096
samples = []
start = time.perf_counter()
for i in range(1000):
    t = time.perf_counter()
    os.write(fd, block)
    os.fdatasync(fd)
    samples.append(time.perf_counter() - t)
    if time.perf_counter() - start > 3:
        break
os.close(fd)
os.unlink(path)
samples.sort()
pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))] * 1e6
print(json.dumps({"n": len(samples), "mean_us": sum(samples) / len(samples) * 1e6,
                  "p50_us": pick(0.5), "p99_us": pick(0.99)}))
EOF
)
FSYNC_LINE=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("one 4 KiB write + fdatasync: mean %.0f us, p50 %.0f us, p99 %.0f us (%d writes, %.0f per second from one writer)" % (d["mean_us"], d["p50_us"], d["p99_us"], d["n"], 1e6 / d["mean_us"]))' "$FSYNC_JSON")
log "fsync: $FSYNC_LINE"

# One loopback round trip: a 64-byte ping-pong over TCP (TCP_NODELAY) between two Python
# processes, 2,000 times. Python's own time is in it, so it overstates the kernel's round
# trip a little (and the latency target built on it is a little easier).
RTT_JSON=$(python3 - <<'EOF'
import json, socket, subprocess, sys, time
server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(1)
port = server.getsockname()[1]
echo = subprocess.Popen([sys.executable, "-c", """
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    data = s.recv(64)
    if not data:
        break
    s.sendall(data)
""", str(port)])
conn, _ = server.accept()
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
samples = []
for i in range(2200):
    t = time.perf_counter()
    conn.sendall(b"x" * 64)
    got = 0
    while got < 64:
        got += len(conn.recv(64 - got))
    if i >= 200:
        samples.append(time.perf_counter() - t)
conn.close(); echo.wait()
samples.sort()
print(json.dumps({"n": len(samples), "p50_us": samples[len(samples) // 2] * 1e6}))
EOF
)
RTT_LINE=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("one 64-byte TCP round trip between two processes: p50 %.0f us (%d round trips)" % (d["p50_us"], d["n"]))' "$RTT_JSON")
log "loopback: $RTT_LINE"

# ---------------------------------------------------------------------------------------
# What a measured run costs the Skiff nodes. SKIFF_NODES holds "PID HTTP-PORT" for each
# node of the Skiff cluster that is up (empty while etcd or Redis runs: their rows have no
# cost columns). Before and after each measured run, node_sample records every node's CPU
# time (utime + stime of /proc/PID/stat: all its threads), its context switches (voluntary
# + nonvoluntary, summed over /proc/PID/task/*/status: a process's own status counts its
# first thread only; a thread that exits in between takes its count with it), and its
# WAL's counters from /metrics (skiff_wal_syncs_total, skiff_wal_entries_appended_total).
SKIFF_NODES=()

# node_sample FILE: the sample, as one JSON list (one object per node) in FILE.
node_sample() {
    python3 - "$1" "${SKIFF_NODES[@]}" <<'EOF'
import json, os, ssl, sys, urllib.request
out, nodes = sys.argv[1], sys.argv[2:]
ticks = os.sysconf("SC_CLK_TCK")
cacert = os.environ.get("SKIFF_CACERT")
context = ssl.create_default_context(cafile=cacert) if cacert else None
scheme = "https" if cacert else "http"

def metric(text, name, label=None, values=()):
    # The node serves its own series only; a counter not yet created reads 0. With label,
    # only the series whose label is one of values.
    total = 0.0
    for line in text.splitlines():
        if not (line.startswith(name + "{") or line.startswith(name + " ")):
            continue
        series, value = line.rsplit(" ", 1)
        if label is None or any(f'{label}="{v}"' in series for v in values):
            total += float(value)
    return total

samples = []
for node in nodes:
    pid, port = node.split()
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15
    switches = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        switches += int(line.split()[1])
        except FileNotFoundError:
            pass  # the thread exited meanwhile
    url = f"{scheme}://127.0.0.1:{port}/metrics"
    text = urllib.request.urlopen(url, timeout=5, context=context).read().decode()
    samples.append({"pid": int(pid), "cpu_seconds": cpu, "switches": switches,
                    "syncs": metric(text, "skiff_wal_syncs_total"),
                    "appended": metric(text, "skiff_wal_entries_appended_total"),
                    # The clients' key-value requests this node answered (not the scrapes).
                    "requests": metric(text, "skiff_http_requests_total", "route", ("kv", "kv_write"))
                    + metric(text, "skiff_redis_commands_total", "kind", ("read", "write")),
                    "writes": metric(text, "skiff_http_requests_total", "route", ("kv_write",))
                    + metric(text, "skiff_redis_commands_total", "kind", ("write",))})
json.dump(samples, open(out, "w"))
EOF
}

# node_cost BEFORE AFTER: what the run between the two samples cost all the nodes
# together, per request, as one JSON object: CPU µs per request, context switches per
# request, and writes per fsync (the writes ÷ the fdatasyncs of all the nodes; null for a
# run without writes). The requests and writes are the ones the nodes answered between the
# two samples (their own counters: HTTP requests to /v1/kv/, Redis commands), so the cost
# and what it is divided by cover the same time, however long a sample takes.
node_cost() {
    python3 - "$@" <<'EOF'
import json, sys
before, after = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
delta = lambda key: sum(a[key] - b[key] for a, b in zip(after, before))
cpu, switches, syncs = delta("cpu_seconds"), delta("switches"), delta("syncs")
requests, writes = delta("requests"), delta("writes")
print(json.dumps({"cpu_seconds": cpu, "switches": switches, "fsyncs": syncs,
                  "entries_appended": delta("appended"), "requests": requests, "writes": writes,
                  "cpu_us_per_request": cpu * 1e6 / requests if requests else None,
                  "switches_per_request": switches / requests if requests else None,
                  "writes_per_fsync": writes / syncs if writes and syncs else None}))
EOF
}

# cost_line COST_JSON: the cost, for the log.
cost_line() {
    python3 -c '
import json, sys
c = json.loads(sys.argv[1])
wpf = "—" if c["writes_per_fsync"] is None else "%.1f" % c["writes_per_fsync"]
print("[compare]   nodes: %.0f CPU µs/request, %s writes/fsync (%d fsyncs), %.1f switches/request (%d requests sampled)" % (
    c["cpu_us_per_request"] or 0, wpf, c["fsyncs"], c["switches_per_request"] or 0, c["requests"]))' "$1" >&2
}

# The seconds of a duration as skiff bench reads it (500ms, 2s, 1m; a bare number: seconds).
seconds_of() {
    python3 -c '
import re, sys
m = re.fullmatch(r"([0-9.]+)\s*(ms|s|m)?", sys.argv[1].strip())
if not m:
    sys.exit("cannot read the duration %r" % sys.argv[1])
print(float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, None: 1}[m.group(2)])' "$1"
}

# ---------------------------------------------------------------------------------------
# Helpers to run the load generators and keep one JSON line per measurement in $ROWS.

# bench SYSTEM TARGET ENDPOINTS WORKLOAD CLIENTS [extra skiff bench flags...]
bench() {
    local system=$1 target=$2 endpoints=$3 workload=$4 clients=$5
    shift 5
    # One connection per client: over HTTP/1.1 a connection carries one request at a time,
    # so every client has its request in flight, as with etcd's own benchmark tool.
    local connections=$clients
    local out=$WORK/bench-$system-$workload-$clients.json
    log "$system: skiff bench $workload --target $target --clients $clients --connections $connections"
    local -a args=(bench "$workload" --target "$target" --endpoints "$endpoints"
        --clients "$clients" --connections "$connections" --keys "$KEYS" --value-size "$VALUE_SIZE"
        --duration "$DURATION" --warmup "$WARMUP" --seed "$SEED" --json "$@")
    if [[ $workload == get ]]; then
        args+=(--consistency consistent --no-fill)
    fi
    # On a Skiff cluster, the nodes are sampled once the warm-up is over (by this script's
    # clock: the load generator starts within milliseconds) and again when the run is done,
    # so that their cost covers the measured requests.
    "$SKIFF" "${args[@]}" >"$out" 2>"$out.err" &
    local generator=$!
    if ((${#SKIFF_NODES[@]} > 0)); then
        sleep "$(seconds_of "$WARMUP")"
        node_sample "$out.before"
    fi
    if ! wait "$generator"; then
        log "  failed: $(tail -n 3 "$out.err")"
        printf '{"system":"%s","workload":"%s","clients":%d,"failed":true}\n' \
            "$system" "$workload" "$clients" >>"$ROWS"
        return 0
    fi
    local cost=null
    if ((${#SKIFF_NODES[@]} > 0)); then
        node_sample "$out.after"
        cost=$(node_cost "$out.before" "$out.after")
    fi
    python3 - "$system" "$workload" "$clients" "$out" "$cost" >>"$ROWS" <<'EOF'
import json, sys
system, workload, clients, path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
r = json.load(open(path))
print(json.dumps({"system": system, "workload": workload, "clients": clients,
                  "connections": r["connections"], "in_flight": r["in_flight"],
                  "throughput": r["throughput"], "p50_us": r["latency_us"]["p50"],
                  "p99_us": r["latency_us"]["p99"], "errors": r["errors"],
                  "errors_by_kind": r["errors_by_kind"], "misses": r["misses"],
                  "requests": r["requests"], "cost": json.loads(sys.argv[5])}))
EOF
    tail -n 1 "$ROWS" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print("[compare]   %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors, %d misses" % (r["throughput"], r["p50_us"]/1e3, r["p99_us"]/1e3, r["errors"], r["misses"]))' >&2
    [[ $cost == null ]] || cost_line "$cost"
}

# Writes every key once (the fill of a get run), so that the measured gets all hit.
fill() {
    local system=$1 target=$2 endpoints=$3
    log "$system: writing the $KEYS keys"
    "$SKIFF" bench get --target "$target" --endpoints "$endpoints" --clients 64 --connections 16 \
        --keys "$KEYS" --value-size "$VALUE_SIZE" --total 1 --warmup 0s --seed "$SEED" --json \
        >"$WORK/fill-$system.json" 2>"$WORK/fill-$system.err" || die "fill of $system failed: $(tail -n 3 "$WORK/fill-$system.err")"
}

# The put and get workloads at every client count.
workloads() {
    local system=$1 target=$2 endpoints=$3 clients
    for clients in $CLIENTS; do
        bench "$system" "$target" "$endpoints" put "$clients"
    done
    fill "$system" "$target" "$endpoints"
    for clients in $CLIENTS; do
        bench "$system" "$target" "$endpoints" get "$clients"
    done
}

# redis_benchmark SYSTEM PORT PIPELINE: SET, then GET, 64 clients, RB_REQUESTS each (one
# redis-benchmark run per test, so that a Skiff cluster's cost is measured for each).
redis_benchmark() {
    local system=$1 port=$2 pipeline=$3 test
    for test in set get; do
        local out=$WORK/rb-$system-$test-P$pipeline.csv
        log "$system: redis-benchmark -t $test -n $RB_REQUESTS -c 64 -P $pipeline -d $VALUE_SIZE -r $KEYS"
        ((${#SKIFF_NODES[@]} > 0)) && node_sample "$out.before"
        if ! redis-benchmark -h 127.0.0.1 -p "$port" -t "$test" -n "$RB_REQUESTS" -c 64 -P "$pipeline" \
            -d "$VALUE_SIZE" -r "$KEYS" --csv >"$out" 2>"$out.err"; then
            log "  failed: $(tail -n 3 "$out.err")"
            printf '{"system":"%s","workload":"rb-%s","clients":64,"pipeline":%d,"failed":true}\n' \
                "$system" "$test" "$pipeline" >>"$ROWS"
            continue
        fi
        local cost=null
        if ((${#SKIFF_NODES[@]} > 0)); then
            node_sample "$out.after"
            cost=$(node_cost "$out.before" "$out.after")
        fi
        python3 - "$system" "$pipeline" "$out" "$cost" >>"$ROWS" <<'EOF'
import csv, json, sys
system, pipeline, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = list(csv.reader(open(path)))
header = rows[0]
for row in rows[1:]:
    d = dict(zip(header, row))
    print(json.dumps({"system": system, "workload": "rb-" + d["test"].lower(), "clients": 64,
                      "pipeline": pipeline, "throughput": float(d["rps"]),
                      "p50_us": float(d["p50_latency_ms"]) * 1000,
                      "p99_us": float(d["p99_latency_ms"]) * 1000, "errors": 0, "misses": 0,
                      "cost": json.loads(sys.argv[4])}))
EOF
        log "  $(tr '\n' ' ' <"$out" | tr -d '"')"
        [[ $cost == null ]] || cost_line "$cost"
    done
}


# ---------------------------------------------------------------------------------------
# 3a. etcd: three members, fsync on (etcd always fsyncs its WAL).
etcd_healthy() {
    local port
    for port in "${ETCD_CLIENT_PORTS[@]}"; do
        curl -sf "http://127.0.0.1:$port/health" | grep -q '"health":"true"' || return 1
    done
}

# The endpoint of etcd's leader, from `etcdctl endpoint status`.
etcd_leader_endpoint() {
    ETCDCTL_API=3 etcdctl --endpoints "$1" endpoint status -w json | python3 -c '
import json, sys
for e in json.load(sys.stdin):
    if e["Status"]["header"]["member_id"] == e["Status"]["leader"]:
        print(e["Endpoint"])'
}

# leader_first LEADER LIST: the comma-separated LIST with LEADER moved to the front, so that
# the single-client runs (one connection: the first endpoint) talk to the leader, for etcd
# and Skiff alike, and no follower's forwarding hop is in their latency.
leader_first() {
    local leader=$1 list=$2 rest
    [[ -n $leader ]] || { echo "$list"; return; }
    rest=$(tr ',' '\n' <<<"$list" | grep -vxF "$leader" | paste -sd, -)
    echo "$leader${rest:+,$rest}"
}

run_etcd() {
    local cluster="" i
    for i in 0 1 2; do
        cluster+="${cluster:+,}e$((i + 1))=http://127.0.0.1:${ETCD_PEER_PORTS[i]}"
    done
    mkdir -p "$WORK/etcd"
    for i in 0 1 2; do
        local name=e$((i + 1))
        etcd --name "$name" --data-dir "$WORK/etcd/$name" \
            --listen-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[i]}" \
            --advertise-client-urls "http://127.0.0.1:${ETCD_CLIENT_PORTS[i]}" \
            --listen-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[i]}" \
            --initial-advertise-peer-urls "http://127.0.0.1:${ETCD_PEER_PORTS[i]}" \
            --initial-cluster "$cluster" --initial-cluster-token skiff-compare \
            --initial-cluster-state new --logger zap --log-level warn \
            >"$WORK/etcd/$name.log" 2>&1 &
        PIDS+=($!)
    done
    wait_until "etcd" 60 etcd_healthy
    local endpoints
    endpoints=$(printf 'http://127.0.0.1:%s,' "${ETCD_CLIENT_PORTS[@]}")
    endpoints=$(leader_first "$(etcd_leader_endpoint "${endpoints%,}")" "${endpoints%,}")
    log "etcd: 3 members up, endpoints (leader first) $endpoints"
    workloads etcd etcd "$endpoints"
    stop_all
    log "etcd: stopped"
}

# 3b. Skiff: three `skiff serve` processes (every write is fsync'd before it is acknowledged;
# there is no switch to turn that off).
SKIFF_HTTP_ENDPOINTS=$(printf '127.0.0.1:%s,' "${SKIFF_HTTP_PORTS[@]}")
SKIFF_HTTP_ENDPOINTS=${SKIFF_HTTP_ENDPOINTS%,}
SKIFF_REDIS_ENDPOINTS=$(printf '127.0.0.1:%s,' "${SKIFF_REDIS_PORTS[@]}")
SKIFF_REDIS_ENDPOINTS=${SKIFF_REDIS_ENDPOINTS%,}

# Every node names the same leader; prints the leader's id.
skiff_leader() {
    "$SKIFF" --endpoints "$SKIFF_HTTP_ENDPOINTS" --timeout 2s status --json | python3 -c '
import json, sys
nodes = json.load(sys.stdin)
leaders = {n.get("leader") for n in nodes}
# "health": what /v1/health answered on the node, {"status": "alive", ...} while it runs.
alive = lambda n: n.get("health", {}).get("status") == "alive"
ok = len(nodes) == 3 and len(leaders) == 1 and None not in leaders and all(alive(n) for n in nodes)
print(leaders.pop() if ok else "")
sys.exit(0 if ok else 1)'
}

run_skiff() {
    local config=$WORK/skiff/cluster.toml i
    mkdir -p "$WORK/skiff"
    skiff_cluster_config "$config" skiff-compare "${SKIFF_RAFT_PORTS[*]}" "${SKIFF_HTTP_PORTS[*]}" "${SKIFF_REDIS_PORTS[*]}"
    SKIFF_NODES=()
    for i in 1 2 3; do
        "$SKIFF" serve --config "$config" --id "n$i" --data-dir "$WORK/skiff/n$i" --log warn \
            >"$WORK/skiff/n$i.log" 2>&1 &
        PIDS+=($!)
        SKIFF_NODES+=("$! ${SKIFF_HTTP_PORTS[i - 1]}")
    done
    wait_until "skiff" 60 skiff_leader
    local leader
    leader=$(skiff_leader)
    log "skiff: 3 nodes up, leader $leader"
    local n=${leader#n}
    workloads skiff-http skiff-http "$(leader_first "127.0.0.1:${SKIFF_HTTP_PORTS[n - 1]}" "$SKIFF_HTTP_ENDPOINTS")"
    workloads skiff-redis skiff-redis "$(leader_first "127.0.0.1:${SKIFF_REDIS_PORTS[n - 1]}" "$SKIFF_REDIS_ENDPOINTS")"
    # redis-benchmark talks to one node: the leader (a follower forwards writes to it).
    leader=$(skiff_leader)
    local port=${SKIFF_REDIS_PORTS[${leader#n} - 1]}
    redis_benchmark skiff "$port" 1
    redis_benchmark skiff "$port" 16
    stop_all
    SKIFF_NODES=()
    log "skiff: stopped"
}

# 3d. TLS: Skiff's writes over HTTP at 64 clients, on a cluster without TLS and on one with
# `[tls]` (TLS between the peers and to the clients; no `[auth]`, so that the row measures
# TLS alone: 127.0.0.1 needs no tokens), alternating off and on for TLS_ROUNDS rounds so that
# both see the same machine. A fresh cluster each time.
run_tls_cluster() {
    local mode=$1 round=$2 i
    local dir=$WORK/tls-$mode-$round
    local config=$dir/cluster.toml
    mkdir -p "$dir"
    skiff_cluster_config "$config" skiff-compare-tls "${SKIFF_RAFT_PORTS[*]}" "${SKIFF_HTTP_PORTS[*]}" "${SKIFF_REDIS_PORTS[*]}"
    if [[ $mode == on ]]; then
        "$SKIFF" certs --dir "$dir/certs" --nodes n1,n2,n3 >/dev/null
        printf '\n[tls]\ndir = "%s"\n' "$dir/certs" >>"$config"
        export SKIFF_CACERT=$dir/certs/ca.pem
    fi
    SKIFF_NODES=()
    for i in 1 2 3; do
        "$SKIFF" serve --config "$config" --id "n$i" --data-dir "$dir/n$i" --log warn >"$dir/n$i.log" 2>&1 &
        PIDS+=($!)
        SKIFF_NODES+=("$! ${SKIFF_HTTP_PORTS[i - 1]}")
    done
    wait_until "skiff (TLS $mode)" 60 skiff_leader
    local leader
    leader=$(skiff_leader)
    log "skiff, TLS $mode (round $round): 3 nodes up, leader $leader"
    bench "tls-$mode-$round" skiff-http "$(leader_first "127.0.0.1:${SKIFF_HTTP_PORTS[${leader#n} - 1]}" "$SKIFF_HTTP_ENDPOINTS")" put 64
    stop_all
    SKIFF_NODES=()
    unset SKIFF_CACERT
}

run_tls() {
    local round
    for ((round = 1; round <= TLS_ROUNDS; round++)); do
        run_tls_cluster off "$round"
        run_tls_cluster on "$round"
    done
    log "tls: done"
}

# 3c. Redis: one server, every write appended and fsync'd before the reply.
run_redis() {
    mkdir -p "$WORK/redis"
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" \
        --appendonly yes --appendfsync always --save '' --daemonize no \
        --logfile "$WORK/redis/redis.log" >/dev/null 2>&1 &
    PIDS+=($!)
    wait_until "redis" 30 redis-cli -p "$REDIS_PORT" ping
    log "redis: up ($(redis-cli -p "$REDIS_PORT" config get appendfsync | tr '\n' ' '))"
    redis_benchmark redis "$REDIS_PORT" 1
    redis_benchmark redis "$REDIS_PORT" 16
    stop_all
    log "redis: stopped"
}

for system in $SYSTEMS; do
    case $system in
        etcd) run_etcd ;;
        skiff) run_skiff ;;
        redis) run_redis ;;
        tls) run_tls ;;
        *) die "unknown system in SYSTEMS: $system (etcd, skiff, redis, tls)" ;;
    esac
done

# 4. Skiff's memory with MEMORY_KEYS keys and a follower's restart (bench/memory.sh).
MEMORY_JSON=""
if [[ $MEMORY == 1 ]]; then
    log "skiff: bench/memory.sh with $MEMORY_KEYS keys of 100 bytes"
    if MEMORY_JSON=$(KEYS=$MEMORY_KEYS SKIFF=$SKIFF BENCH_TMPDIR=$WORK "$ROOT/bench/memory.sh" --json 2>"$WORK/memory.err" | tail -n 1); then
        log "  $(tail -n 4 "$WORK/memory.err" | tr '\n' ' ')"
    else
        log "  bench/memory.sh failed: $(tail -n 3 "$WORK/memory.err")"
        MEMORY_JSON=""
    fi
fi
export MEMORY_JSON

# ---------------------------------------------------------------------------------------
# 5. The table, on standard output and in $RESULTS with the machine and the versions.
ELAPSED=$((SECONDS - START_SECONDS))
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(cd "$ROOT" && git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    COMMIT="$COMMIT (with uncommitted changes)"
fi
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n 1)
[[ -n $CPU ]] || CPU=$(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1)
MEM=$(free -h | awk '/^Mem:/ {print $2}')
DISK=$(df -h --output=source,fstype,size,avail,target "$WORK" | tail -n 1 |
    awk '{printf "%s (%s, mounted on %s), %s, %s free", $1, $2, $5, $3, $4}')

export FSYNC_JSON RTT_JSON RTT_LINE FSYNC_LINE ELAPSED COMMIT CPU MEM DISK DURATION WARMUP KEYS VALUE_SIZE RB_REQUESTS SEED CLIENTS TLS_ROUNDS
NPROC_OUT=$(nproc)
ETCD_VERSION=$(etcd --version 2>/dev/null | head -n 1 || true)
REDIS_VERSION=$(redis-server --version 2>/dev/null || true)
[[ -n $ETCD_VERSION ]] || ETCD_VERSION="etcd: not installed (not run)"
[[ -n $REDIS_VERSION ]] || REDIS_VERSION="Redis: not installed (not run)"
RUSTC_VERSION=$(rustc --version)
DATE_UTC=$(date -u '+%Y-%m-%d %H:%M UTC')
KERNEL=$(uname -sr)
export NPROC_OUT ETCD_VERSION REDIS_VERSION RUSTC_VERSION DATE_UTC KERNEL

python3 - "$ROWS" "$RESULTS" <<'EOF'
import json, os, sys
rows_path, results_path = sys.argv[1], sys.argv[2]
rows = [json.loads(line) for line in open(rows_path) if line.strip()]
env = os.environ

def find(system, workload, clients, pipeline=None):
    for r in rows:
        if r["system"] == system and r["workload"] == workload and r["clients"] == clients \
                and r.get("pipeline") == pipeline:
            return r
    return None

def num(x):
    return f"{x:,.0f}"

def ms(us):
    v = us / 1000
    return f"{v:.3f}" if v < 1 else f"{v:.2f}" if v < 10 else f"{v:.1f}"

def cell(r):
    if r is None:
        return "—"
    if r.get("failed"):
        return "failed"
    s = f"{num(r['throughput'])} · {ms(r['p50_us'])} · {ms(r['p99_us'])}"
    if r.get("errors"):
        s += f" ({r['errors']} errors)"
    if r.get("misses"):
        s += f" ({r['misses']} misses)"
    return s

def ratio(a, b):
    if not a or not b or a.get("failed") or b.get("failed"):
        return "—"
    return f"{a['throughput'] / b['throughput']:.2f}× · {a['p99_us'] / b['p99_us']:.2f}×"

clients = [int(c) for c in env["CLIENTS"].split()]
lines = []
lines.append("| workload | clients | baseline | baseline: req/s · p50 · p99 | Skiff HTTP | Skiff Redis protocol | Skiff HTTP ÷ baseline: req/s · p99 | Skiff Redis ÷ baseline: req/s · p99 |")
lines.append("|---|---:|---|---|---|---|---|---|")
for workload, label in [("put", "put (write)"), ("get", "get (linearizable read)")]:
    for c in clients:
        e = find("etcd", workload, c)
        h = find("skiff-http", workload, c)
        r = find("skiff-redis", workload, c)
        lines.append(f"| {label} | {c} | etcd | {cell(e)} | {cell(h)} | {cell(r)} | {ratio(h, e)} | {ratio(r, e)} |")
for workload, label in [("rb-set", "redis-benchmark SET"), ("rb-get", "redis-benchmark GET")]:
    for p in (1, 16):
        base = find("redis", workload, 64, p)
        sk = find("skiff", workload, 64, p)
        lines.append(f"| {label}{' -P 16' if p > 1 else ''} | 64 | Redis | {cell(base)} | — | {cell(sk)} | — | {ratio(sk, base)} |")
# TLS off vs on: Skiff's writes over HTTP at 64 clients, each mode's rounds averaged.
tls = {mode: [r for r in rows if r["system"].startswith(f"tls-{mode}-") and not r.get("failed")] for mode in ("off", "on")}

def mean_row(runs):
    if not runs:
        return None
    n = len(runs)
    return {"throughput": sum(r["throughput"] for r in runs) / n, "p50_us": sum(r["p50_us"] for r in runs) / n,
            "p99_us": sum(r["p99_us"] for r in runs) / n, "errors": sum(r["errors"] for r in runs),
            "misses": 0}

tls_off, tls_on = mean_row(tls["off"]), mean_row(tls["on"])
if tls_off or tls_on:
    rounds = " / ".join(f"{num(r['throughput'])}" for r in tls["off"]) or "—"
    rounds_on = " / ".join(f"{num(r['throughput'])}" for r in tls["on"]) or "—"
    lines.append(f"| put (write), TLS off → on (peers and clients), {len(tls['off'])}+{len(tls['on'])} rounds | 64 | Skiff, TLS off | "
                 f"{cell(tls_off)} | {cell(tls_on)} | — | {ratio(tls_on, tls_off)} | — |")
table = "\n".join(lines)

# What each Skiff run cost the three nodes together, beside its throughput.
def cost_cells(r):
    c = r.get("cost") if r and not r.get("failed") else None
    if not c or not c["requests"]:
        return None
    wpf = "—" if c["writes_per_fsync"] is None else f"{c['writes_per_fsync']:.1f}"
    return (f"{num(r['throughput'])} | {c['cpu_us_per_request']:.0f} | {wpf} | "
            f"{c['switches_per_request']:.1f} | {c['cpu_seconds']:.1f} s · {c['fsyncs']:,.0f} · {c['switches']:,.0f}")

cost_lines = ["| workload | clients | Skiff target | req/s | CPU µs per request | writes per fsync | context switches per request | all nodes: CPU · fsyncs · switches |",
              "|---|---:|---|---:|---:|---:|---:|---|"]
for workload, label in [("put", "put (write)"), ("get", "get (linearizable read)")]:
    for c in clients:
        for system, target in (("skiff-http", "HTTP"), ("skiff-redis", "Redis protocol")):
            cells = cost_cells(find(system, workload, c))
            if cells:
                cost_lines.append(f"| {label} | {c} | {target} | {cells} |")
for workload, label in [("rb-set", "redis-benchmark SET"), ("rb-get", "redis-benchmark GET")]:
    for p in (1, 16):
        cells = cost_cells(find("skiff", workload, 64, p))
        if cells:
            cost_lines.append(f"| {label}{' -P 16' if p > 1 else ''} | 64 | Redis protocol (leader) | {cells} |")
for r in rows:
    if r["system"].startswith("tls-"):
        cells = cost_cells(r)
        if cells:
            cost_lines.append(f"| put (write), {r['system']} | 64 | HTTP | {cells} |")
costs = "\n".join(cost_lines) if len(cost_lines) > 2 else "(no Skiff run)"
cost_legend = ("The three Skiff nodes together, from the end of the warm-up to the end of each run "
               "(a redis-benchmark run: all of it): their CPU time (user + system) and context "
               "switches (voluntary + involuntary, all threads) from `/proc`, and their WAL "
               "fdatasyncs (`skiff_wal_syncs_total`), each divided by the key-value requests the nodes "
               "answered in that time (their own counters); writes per fsync is the writes ÷ all "
               "the nodes' fsyncs (— for reads). The load generator's own cost is not in them.")

# The issue's targets, judged from this run.
fsync = json.loads(env["FSYNC_JSON"])
rtt = json.loads(env["RTT_JSON"])

def ok(flag):
    return "**met**" if flag else "not met"

def usable(*rows):
    return all(r and not r.get("failed") for r in rows)

checks = []
e, h, r = find("etcd", "put", 64), find("skiff-http", "put", 64), find("skiff-redis", "put", 64)
if usable(e, h):
    t, p = h["throughput"] / e["throughput"], h["p99_us"] / e["p99_us"]
    line = f"| writes at 64 clients: ≥ 5× etcd's throughput, p99 ≤ 0.3× etcd's | HTTP: {t:.2f}×, p99 {p:.2f}×"
    if usable(r):
        line += f"; Redis protocol: {r['throughput'] / e['throughput']:.2f}×, p99 {r['p99_us'] / e['p99_us']:.2f}×"
    checks.append(f"{line} | {ok(t >= 5 and p <= 0.3)} (HTTP) |")
h1, e1 = find("skiff-http", "put", 1), find("etcd", "put", 1)
if usable(h1):
    # Two round trips: client to leader, leader to follower (the client talks to the leader).
    bound = 2 * fsync["p50_us"] + 2 * rtt["p50_us"]
    etcd_p50 = f" (etcd: {e1['p50_us']:.0f} µs)" if usable(e1) else ""
    checks.append(f"| single-client write p50 ≤ 2 fdatasyncs + 2 loopback round trips "
                  f"(2 × {fsync['p50_us']:.0f} + 2 × {rtt['p50_us']:.0f} = {bound:.0f} µs) | "
                  f"HTTP: {h1['p50_us']:.0f} µs{etcd_p50} | {ok(h1['p50_us'] <= bound)} |")
e, h = find("etcd", "get", 64), find("skiff-http", "get", 64)
if usable(e, h):
    t = h["throughput"] / e["throughput"]
    checks.append(f"| linearizable reads at 64 clients: ≥ 5× etcd | HTTP: {t:.2f}× | {ok(t >= 5)} |")
# Issue 20's targets: 60 % of Redis one request at a time, 50 % pipelined.
for p, label, goal in ((1, "redis-benchmark SET -c 64", 0.6), (16, "redis-benchmark SET -c 64 -P 16", 0.5)):
    base, sk = find("redis", "rb-set", 64, p), find("skiff", "rb-set", 64, p)
    if usable(base, sk):
        t = sk["throughput"] / base["throughput"]
        checks.append(f"| {label}: Skiff (3 nodes) ≥ {goal * 100:.0f} % of Redis (1 node, appendfsync always) | {t * 100:.0f} % | {ok(t >= goal)} |")
if tls_off and tls_on:
    cost = 1 - tls_on["throughput"] / tls_off["throughput"]
    checks.append(f"| TLS on peers and clients costs ≤ 15 % of write throughput at 64 clients (HTTP) | "
                  f"{cost * 100:.0f} % (off {rounds} req/s, on {rounds_on} req/s, by round) | {ok(cost <= 0.15)} |")
if env.get("MEMORY_JSON"):
    m = json.loads(env["MEMORY_JSON"])
    rss = max(n["rss_kb"] for n in m["nodes"]) / 1024
    peak = max(n["hwm_kb"] for n in m["nodes"]) / 1024
    per_key = max(n["bytes_per_key"] for n in m["nodes"])
    checks.append(f"| RSS per node ≤ 150 MB with {m['keys']:,} keys of {m['value_size']} bytes (`bench/memory.sh`) | "
                  f"{rss:.0f} MB on the largest node ({per_key} bytes per key over an empty node; peak {peak:.0f} MB) | {ok(rss <= 150)} |")
    r = m["restart"]
    checks.append(f"| restart to serving with {m['applied']:,} entries and {m['keys']:,} keys ≤ 3 s | "
                  f"{r['seconds']:.2f} s (median of {len(r['attempts'])}) | {ok(r['seconds'] <= 3)} |")
targets = "\n".join(["| target | this run | |", "|---|---|---|"] + checks)

legend = ("Each cell: throughput (req/s) · p50 (ms) · p99 (ms). A ratio cell: Skiff's throughput ÷ "
          "the baseline's (above 1: Skiff does more) · Skiff's p99 ÷ the baseline's (below 1: "
          "Skiff's tail is shorter).")
print()
print(table)
print()
print(legend)
print()
print(costs)
print()
print(targets)
print(f"fsync: {env['FSYNC_LINE']}")
print(f"loopback: {env['RTT_LINE']}")
print(f"run time: {int(env['ELAPSED']) // 60} min {int(env['ELAPSED']) % 60} s")

failed = [r for r in rows if r.get("failed")]
errors = [r for r in rows if r.get("errors")]
notes = []
for r in failed:
    notes.append(f"- {r['system']} {r['workload']} at {r['clients']} clients failed (no report).")
for r in errors:
    notes.append(f"- {r['system']} {r['workload']} at {r['clients']} clients: {r['errors']} errors {json.dumps(r.get('errors_by_kind', {}))}.")

md = f"""# Skiff, etcd and Redis on one machine

Written by `bench/compare.sh` on {env['DATE_UTC']}, in {int(env['ELAPSED']) // 60} min {int(env['ELAPSED']) % 60} s. See `bench/README.md` for what it does and its caveats.

## Machine

- CPUs: {env['NPROC_OUT']} (`nproc`), {env['CPU']}; kernel {env['KERNEL']}
- memory: {env['MEM']}
- disk (`df`, the temporary directory that held every system's data): {env['DISK']}
- fsync on that disk: {env['FSYNC_LINE']}
- loopback: {env['RTT_LINE']}

## Versions

- {env['ETCD_VERSION']} (Debian `etcd-server`), 3 members, each its own process
- {env['REDIS_VERSION']}
- {env['RUSTC_VERSION']}
- Skiff at commit {env['COMMIT']}, `cargo build --release`, 3 `skiff serve` processes

## Setup

All on 127.0.0.1, one system at a time, fsync on for all: etcd (always fsyncs its WAL),
Skiff (fsyncs every write before it answers), Redis with `--appendonly yes --appendfsync always --save ''`.

- `skiff bench put|get --clients N --connections N --keys {env['KEYS']} --value-size {env['VALUE_SIZE']} --duration {env['DURATION']} --warmup {env['WARMUP']} --seed {env['SEED']}`,
  gets with `--consistency consistent` (linearizable) after every key was written once;
  `--target etcd` (etcd's v3 JSON gateway, `/v3/kv/put` and `/v3/kv/range`) against its three
  members, `--target skiff-http` and `--target skiff-redis` against Skiff's three nodes.
  One connection per client, so every client has one request in flight, over HTTP/1.1
  (etcd, Skiff HTTP) and over the Redis protocol alike.
- `redis-benchmark -t set,get -n {env['RB_REQUESTS']} -c 64 -d {env['VALUE_SIZE']} -r {env['KEYS']}`, with and without `-P 16`,
  against the Redis server and against the Skiff leader's Redis port.
- TLS: `skiff bench put --target skiff-http --clients 64 --connections 64` (as above) against a fresh
  3-node Skiff cluster without TLS, then one with `[tls]` (TLS between the peers and to the
  clients; no tokens), alternating, {env['TLS_ROUNDS']} rounds of each; the row averages the rounds.

## Results

{legend}

{table}

## What the Skiff runs cost the nodes

{cost_legend}

{costs}

## Targets

{targets}
"""
if notes:
    md += "\nProblems during the run:\n\n" + "\n".join(notes) + "\n"
with open(results_path, "w") as f:
    f.write(md)
if notes:
    print("\n".join(notes))
print(f"written to {results_path}")
EOF
