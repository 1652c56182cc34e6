#!/usr/bin/env bash
# Skiff under hostile load (issue 16's "done when"): a 3-node cluster holding 200,000 keys
# takes 64 writers while 50 clients run `KEYS *` in a loop and others send 8 MiB MGETs of
# one 1 MiB key repeated. Prints, per node, the peak RSS, and for the cluster the leader
# changes and the acknowledged writes per second (lowest and median second).
#
#   bench/hostile.sh                     # 30 s of load
#   DURATION=10 bench/hostile.sh         # a shorter run
#
# Settings (environment): DURATION (30, seconds), KEYS (200000), WRITERS (64), KEYS_CLIENTS
# (50), MGET_CLIENTS (2), SKIFF (target/release/skiff: nothing is built), PYTHON (a python3
# with redis-py; default target/ci-venv/bin/python, else python3), RAFT_PORTS, HTTP_PORTS,
# REDIS_PORTS (three each, defaults 17301-3, 17311-3, 17321-3), BENCH_TMPDIR (where the data
# goes; default the workspace's target/), KEEP=1 (keep data and logs).
set -euo pipefail

DURATION=${DURATION:-30}
KEYS=${KEYS:-200000}
WRITERS=${WRITERS:-64}
KEYS_CLIENTS=${KEYS_CLIENTS:-50}
MGET_CLIENTS=${MGET_CLIENTS:-2}
KEEP=${KEEP:-0}
read -r -a RAFT_PORTS <<<"${RAFT_PORTS:-17301 17302 17303}"
read -r -a HTTP_PORTS <<<"${HTTP_PORTS:-17311 17312 17313}"
read -r -a REDIS_PORTS <<<"${REDIS_PORTS:-17321 17322 17323}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SKIFF=${SKIFF:-$ROOT/target/release/skiff}
PYTHON=${PYTHON:-$ROOT/target/ci-venv/bin/python}
[[ -x $PYTHON ]] || PYTHON=python3

LOG_NAME=hostile
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ -x $SKIFF ]] || die "$SKIFF not found: build it with cargo build --release -p skiff-cli (or set SKIFF)"
"$PYTHON" -c 'import redis' 2>/dev/null || die "$PYTHON has no redis-py (pip install redis, or set PYTHON)"

# Every process this script started is in PIDS (by node, 1 to 3); trap_cleanup (bench/lib.sh)
# stops them and removes WORK, however the script ends.
declare -A PIDS=()
WORK=""
trap_cleanup

for port in "${RAFT_PORTS[@]}" "${HTTP_PORTS[@]}" "${REDIS_PORTS[@]}"; do
    port_free "$port" || die "port $port is in use (set RAFT_PORTS, HTTP_PORTS, REDIS_PORTS)"
done
TMP_PARENT=${BENCH_TMPDIR:-$ROOT/target}
mkdir -p "$TMP_PARENT"
WORK=$(mktemp -d "$TMP_PARENT/skiff-hostile.XXXXXX")
CONFIG=$WORK/cluster.toml
skiff_cluster_config "$CONFIG" skiff-hostile "${RAFT_PORTS[*]}" "${HTTP_PORTS[*]}" "${REDIS_PORTS[*]}"
for node in 1 2 3; do
    "$SKIFF" serve --config "$CONFIG" --id "n$node" --data-dir "$WORK/n$node" --log warn >>"$WORK/n$node.log" 2>&1 &
    PIDS[$node]=$!
done
leader() { curl -sf --max-time 2 "http://127.0.0.1:${HTTP_PORTS[0]}/v1/status/leader" | grep -q ':'; }
wait_until "a leader" 30 leader
log "cluster up (data in $WORK); loading $KEYS keys and running the load for ${DURATION}s"

"$PYTHON" "$ROOT/bench/hostile.py" --duration "$DURATION" --keys "$KEYS" --writers "$WRITERS" \
    --keys-clients "$KEYS_CLIENTS" --mget-clients "$MGET_CLIENTS" \
    --redis "${REDIS_PORTS[*]}" --http "${HTTP_PORTS[*]}" --pids "${PIDS[1]} ${PIDS[2]} ${PIDS[3]}"
