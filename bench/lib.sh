# shellcheck shell=bash
# What bench/compare.sh, bench/memory.sh and bench/hostile.sh share. Source it after
# setting LOG_NAME (the tag of log lines), and use PIDS (the processes the script started)
# and WORK (its temporary directory), which wait_until and trap_cleanup read.

log() { printf '[%s %s] %s\n' "$LOG_NAME" "$(date -u +%H:%M:%S)" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

port_free() {
    ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# stop_pid PID: SIGTERM, up to 10 s for a graceful stop, then SIGKILL.
stop_pid() {
    local pid=$1 waited=0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < 100)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# stop_node N: stops node N's process, PIDS[N] (PIDS an associative array by node), with
# stop_pid, and forgets it.
stop_node() {
    local node=$1 pid
    pid=${PIDS[$node]:-}
    [[ -n $pid ]] || return 0
    stop_pid "$pid"
    unset "PIDS[$node]"
}

# trap_cleanup: however the script ends, stops every node in PIDS (stop_node) and removes
# WORK, unless KEEP=1 or the script failed: then it logs where the data and logs are. INT
# and TERM end the script (130, 143) through the same cleanup.
trap_cleanup() {
    trap cleanup_nodes EXIT
    trap 'log "interrupted"; exit 130' INT
    trap 'log "terminated"; exit 143' TERM
}

# cleanup_nodes: trap_cleanup's EXIT trap; exits with the script's status.
cleanup_nodes() {
    local status=$? node
    trap - EXIT INT TERM
    for node in "${!PIDS[@]}"; do
        stop_node "$node"
    done
    if [[ -n $WORK && -d $WORK ]]; then
        if [[ ${KEEP:-0} == 1 || $status != 0 ]]; then
            log "data and logs kept in $WORK"
        else
            rm -rf -- "$WORK"
        fi
    fi
    exit "$status"
}

# wait_until DESCRIPTION SECONDS COMMAND...: retries COMMAND every 0.2 s until it succeeds;
# its output goes to FOUND. Dies if it takes longer, or if a process in PIDS exits. (Not
# meant for $(...): a failure must stop the script, not a subshell.)
# shellcheck disable=SC2034 # FOUND is for the scripts that source this file
FOUND=""
wait_until() {
    local what=$1 seconds=$2 pid
    shift 2
    local deadline=$((SECONDS + seconds))
    # shellcheck disable=SC2034
    until FOUND=$("$@" 2>/dev/null); do
        ((SECONDS < deadline)) || die "$what: not ready after ${seconds}s (logs in $WORK)"
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null || die "$what: process $pid exited (logs in $WORK)"
        done
        sleep 0.2
    done
}

# skiff_cluster_config FILE NAME "RAFT PORTS" "HTTP PORTS" "REDIS PORTS": a cluster file for
# three nodes n1-n3 on 127.0.0.1, each with a Redis listener.
skiff_cluster_config() {
    local file=$1 name=$2 i
    local -a raft http redis
    read -r -a raft <<<"$3"
    read -r -a http <<<"$4"
    read -r -a redis <<<"$5"
    printf '[cluster]\nname = "%s"\n' "$name" >"$file"
    for i in 0 1 2; do
        printf '\n[[node]]\nid = "n%d"\nraft = "127.0.0.1:%s"\nhttp = "127.0.0.1:%s"\nredis = "127.0.0.1:%s"\n' \
            $((i + 1)) "${raft[i]}" "${http[i]}" "${redis[i]}" >>"$file"
    done
}
