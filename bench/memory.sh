#!/usr/bin/env bash
# Skiff's memory with many keys, and the time a restarted node takes to serve again: see
# bench/README.md ("bench/memory.sh").
#
#   bench/memory.sh                   # 1,000,000 keys of 100 bytes, about 2 minutes
#   KEYS=100000 bench/memory.sh       # a quick run
#   bench/memory.sh --json            # also one JSON object on stdout, after the table
#
# Settings (environment): KEYS (1000000), VALUE_SIZE (100), SKIFF (target/release/skiff:
# nothing is built), RAFT_PORTS ("17201 17202 17203"), HTTP_PORTS ("17211 17212 17213"),
# REDIS_PORTS ("17221 17222 17223"), SETTLE (5: seconds between the nodes agreeing on the
# applied index and reading their memory), RESTARTS (3: restarts of one follower; the
# median time is reported), BENCH_TMPDIR (where the temporary directory goes; default the
# workspace's target/), JSON=1 (as --json), KEEP=1 (keep the data directory and logs).
set -euo pipefail

KEYS=${KEYS:-1000000}
VALUE_SIZE=${VALUE_SIZE:-100}
SETTLE=${SETTLE:-5}
RESTARTS=${RESTARTS:-3}
JSON=${JSON:-0}
KEEP=${KEEP:-0}
read -r -a RAFT_PORTS <<<"${RAFT_PORTS:-17201 17202 17203}"
read -r -a HTTP_PORTS <<<"${HTTP_PORTS:-17211 17212 17213}"
read -r -a REDIS_PORTS <<<"${REDIS_PORTS:-17221 17222 17223}"

for arg in "$@"; do
    case $arg in
        --json) JSON=1 ;;
        -h | --help)
            # The comment at the top of this file.
            awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"
            exit 0
            ;;
        *)
            echo "memory.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SKIFF=${SKIFF:-$ROOT/target/release/skiff}

LOG_NAME=memory
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

((${#RAFT_PORTS[@]} == 3 && ${#HTTP_PORTS[@]} == 3 && ${#REDIS_PORTS[@]} == 3)) ||
    die "RAFT_PORTS, HTTP_PORTS and REDIS_PORTS need three ports each"
[[ $KEYS =~ ^[1-9][0-9]*$ ]] || die "KEYS must be a positive number, not '$KEYS'"
[[ $RESTARTS =~ ^[1-9][0-9]*$ ]] || die "RESTARTS must be a positive number, not '$RESTARTS'"
[[ $VALUE_SIZE =~ ^[0-9]+$ ]] || die "VALUE_SIZE must be a number, not '$VALUE_SIZE'"
[[ -x $SKIFF ]] || die "$SKIFF not found: build it with cargo build --release -p skiff-cli (or set SKIFF)"
for tool in curl python3; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done

# ---------------------------------------------------------------------------------------
# Cleanup: every process this script started is in PIDS (by node, 1 to 3); the EXIT trap
# (trap_cleanup, bench/lib.sh) stops them and removes the temporary directory, however the
# script ends.
declare -A PIDS=()
WORK=""

trap_cleanup

for port in "${RAFT_PORTS[@]}" "${HTTP_PORTS[@]}" "${REDIS_PORTS[@]}"; do
    port_free "$port" || die "port $port is in use (set RAFT_PORTS, HTTP_PORTS, REDIS_PORTS)"
done

# Data on the workspace's disk, not in the system temporary directory (maybe a tmpfs: the
# restart would then read from memory and look faster than on a disk).
TMP_PARENT=${BENCH_TMPDIR:-$ROOT/target}
mkdir -p "$TMP_PARENT"
WORK=$(mktemp -d "$TMP_PARENT/skiff-memory.XXXXXX")
log "data in $WORK"

CONFIG=$WORK/cluster.toml
skiff_cluster_config "$CONFIG" skiff-memory "${RAFT_PORTS[*]}" "${HTTP_PORTS[*]}" "${REDIS_PORTS[*]}"

start_node() {
    local node=$1
    "$SKIFF" serve --config "$CONFIG" --id "n$node" --data-dir "$WORK/n$node" --log warn \
        >>"$WORK/n$node.log" 2>&1 &
    PIDS[$node]=$!
}

# status N: node N's /v1/skiff/status JSON (fails if it does not answer).
status() {
    curl -sf --max-time 2 "http://127.0.0.1:${HTTP_PORTS[$1 - 1]}/v1/skiff/status"
}

# field N NAME: one top-level field of node N's status ("" for null).
field() {
    status "$1" | python3 -c 'import json, sys; v = json.load(sys.stdin).get(sys.argv[1]); print("" if v is None else v)' "$2"
}

# Every node names the same leader; prints its number (1 to 3).
agreed_leader() {
    local node leader="" seen
    for node in 1 2 3; do
        seen=$(field "$node" leader) || return 1
        [[ -n $seen ]] || return 1
        [[ -z $leader || $leader == "$seen" ]] || return 1
        leader=$seen
    done
    echo "${leader#n}"
}

# Every node has applied the same index, and it is the leader's commit index; prints it.
applied_everywhere() {
    local node applied="" seen
    for node in 1 2 3; do
        seen=$(field "$node" applied) || return 1
        [[ -z $applied || $applied == "$seen" ]] || return 1
        applied=$seen
    done
    [[ $(field "$1" commit) == "$applied" ]] || return 1
    echo "$applied"
}


# memory N: "VmRSS VmHWM" of node N, in kB.
memory() {
    awk '/^VmRSS:/ { rss = $2 } /^VmHWM:/ { hwm = $2 } END { print rss, hwm }' "/proc/${PIDS[$1]}/status"
}

# ---------------------------------------------------------------------------------------
# 1. Three nodes, a leader, every key written once.
for node in 1 2 3; do
    start_node "$node"
done
wait_until "a leader" 60 agreed_leader
LEADER=$FOUND
declare -a BASELINE RSS HWM
for node in 1 2 3; do
    read -r rss _ <<<"$(memory "$node")"
    BASELINE[node]=$rss
done
log "3 nodes up, leader n$LEADER; RSS of the empty nodes (kB): ${BASELINE[*]}"

REDIS_ENDPOINTS=$(printf '127.0.0.1:%s,' "${REDIS_PORTS[@]}")
REDIS_ENDPOINTS=${REDIS_ENDPOINTS%,}
log "writing $KEYS keys of $VALUE_SIZE bytes through the Redis protocol"
FILL_STARTED=$SECONDS
# A get run of one request: its fill phase writes every key once (docs/bench.md).
"$SKIFF" bench get --target skiff-redis --endpoints "$REDIS_ENDPOINTS" --clients 256 --connections 16 \
    --keys "$KEYS" --value-size "$VALUE_SIZE" --total 1 --warmup 0s --json \
    >"$WORK/fill.json" 2>"$WORK/fill.err" || die "the fill failed: $(tail -n 3 "$WORK/fill.err")"
FILL_SECONDS=$((SECONDS - FILL_STARTED))
log "written in ${FILL_SECONDS}s"

wait_until "a leader after the fill" 60 agreed_leader
LEADER=$FOUND
wait_until "every node at the same applied index" 120 applied_everywhere "$LEADER"
APPLIED=$FOUND
log "every node applied $APPLIED; reading memory in ${SETTLE}s"
sleep "$SETTLE"
for node in 1 2 3; do
    read -r rss hwm <<<"$(memory "$node")"
    RSS[node]=$rss
    HWM[node]=$hwm
done
SNAPSHOT_INDEX=$(field "$LEADER" snapshot_index)

# ---------------------------------------------------------------------------------------
# 2. Restart one follower and time it from its start to serving: a stale read of the last
# key answers on it, and it has applied at least what it had before it stopped.
FOLLOWER=$(((LEADER % 3) + 1))
LAST_KEY=key-$((KEYS - 1))

serving() {
    local node=$1 applied
    curl -sf --max-time 1 -o /dev/null "http://127.0.0.1:${HTTP_PORTS[$node - 1]}/v1/kv/$LAST_KEY?stale&raw" || return 1
    applied=$(field "$node" applied) || return 1
    ((applied >= APPLIED))
}

# restart N: stops node N, starts it again and prints the seconds until it serves.
restart() {
    local node=$1 started deadline
    stop_node "$node"
    started=$EPOCHREALTIME
    start_node "$node"
    deadline=$((SECONDS + 120))
    until serving "$node" 2>/dev/null; do
        ((SECONDS < deadline)) || die "n$node does not serve after 120 s (log: $WORK/n$node.log)"
        kill -0 "${PIDS[$node]}" 2>/dev/null || die "n$node exited on restart (log: $WORK/n$node.log)"
        sleep 0.02
    done
    python3 -c 'import sys; print("%.2f" % (float(sys.argv[2]) - float(sys.argv[1])))' "$started" "$EPOCHREALTIME"
}

# Several restarts on a shared machine: the median is the figure, the spread its noise.
declare -a RESTART_TIMES=()
for ((attempt = 1; attempt <= RESTARTS; attempt++)); do
    log "restart $attempt of $RESTARTS: follower n$FOLLOWER (SIGTERM, wait for the exit, start again)"
    # Not in $(...): stop_node and start_node must change this shell's PIDS.
    restart "$FOLLOWER" >"$WORK/restart.out"
    RESTART_TIMES+=("$(cat "$WORK/restart.out")")
    log "n$FOLLOWER serves again after ${RESTART_TIMES[-1]}s"
done
RESTART_SECONDS=$(printf '%s\n' "${RESTART_TIMES[@]}" | sort -n | awk '{ t[NR] = $1 } END { print t[int((NR + 1) / 2)] }')
read -r RESTARTED_RSS RESTARTED_HWM <<<"$(memory "$FOLLOWER")"

# ---------------------------------------------------------------------------------------
# 3. The table, and optionally one JSON object.
mb() { python3 -c 'import sys; print("%.1f" % (int(sys.argv[1]) / 1024))' "$1"; }
per_key() { python3 -c 'import sys; print("%.0f" % ((int(sys.argv[1]) - int(sys.argv[2])) * 1024 / int(sys.argv[3])))' "$1" "$2" "$KEYS"; }

{
    printf '\n%s keys of %s bytes, applied index %s, snapshot index %s, fill %ss\n\n' \
        "$KEYS" "$VALUE_SIZE" "$APPLIED" "$SNAPSHOT_INDEX" "$FILL_SECONDS"
    printf '%-6s %-9s %10s %10s %12s %14s\n' node role "RSS MiB" "HWM MiB" "empty MiB" "bytes/key*"
    for node in 1 2 3; do
        role=follower
        ((node == LEADER)) && role=leader
        printf '%-6s %-9s %10s %10s %12s %14s\n' "n$node" "$role" "$(mb "${RSS[node]}")" "$(mb "${HWM[node]}")" \
            "$(mb "${BASELINE[node]}")" "$(per_key "${RSS[node]}" "${BASELINE[node]}")"
    done
    printf '\n* (RSS - RSS of the empty node) / keys: everything a key costs, Raft log included.\n'
    printf 'restart of follower n%s to serving: median %ss of %s (%s); then RSS %s MiB, HWM %s MiB\n\n' \
        "$FOLLOWER" "$RESTART_SECONDS" "$RESTARTS" "${RESTART_TIMES[*]}" "$(mb "$RESTARTED_RSS")" "$(mb "$RESTARTED_HWM")"
} >&2

if [[ $JSON == 1 ]]; then
    python3 - "$KEYS" "$VALUE_SIZE" "$APPLIED" "$LEADER" "$FOLLOWER" "$RESTART_SECONDS" \
        "$RESTARTED_RSS" "$RESTARTED_HWM" "${RSS[@]}" "${HWM[@]}" "${BASELINE[@]}" "${RESTART_TIMES[@]}" <<'EOF'
import json, sys
a = sys.argv[1:]
times = [float(x) for x in a[17:]]
keys, value_size, applied, leader, follower = int(a[0]), int(a[1]), int(a[2]), int(a[3]), int(a[4])
restart, restarted_rss, restarted_hwm = float(a[5]), int(a[6]), int(a[7])
rss, hwm, baseline = [int(x) for x in a[8:11]], [int(x) for x in a[11:14]], [int(x) for x in a[14:17]]
print(json.dumps({
    "benchmark": "memory", "keys": keys, "value_size": value_size, "applied": applied,
    "nodes": [{"id": f"n{i + 1}", "role": "leader" if i + 1 == leader else "follower",
               "rss_kb": rss[i], "hwm_kb": hwm[i], "empty_rss_kb": baseline[i],
               "bytes_per_key": round((rss[i] - baseline[i]) * 1024 / keys)} for i in range(3)],
    "restart": {"node": f"n{follower}", "seconds": restart, "attempts": times,
                "rss_kb": restarted_rss, "hwm_kb": restarted_hwm},
}))
EOF
fi
