#!/usr/bin/env bash
# A local multi-node Ray cluster on 127.0.0.1, for demos and fault drills: one head and N worker nodes,
# each its own `ray start` (own raylet, own process group), all listening on loopback only.
#
#   clusters/local_cluster.sh start [--workers N] [--cpus C] [--port P]   # prints the address
#   clusters/local_cluster.sh status                                      # nodes and resources
#   clusters/local_cluster.sh stop                                        # stops only these nodes
#   clusters/local_cluster.sh --dry-run start ...                         # print the commands only
#
# Then: facenas run configs/quickstart.yaml --address 127.0.0.1:P
#
# Stopping never calls `ray stop` (that kills every Ray of this user on the machine, other
# experiments included): each node runs `ray start --block` in its own session, its process group
# id is kept in the state folder, and `stop` signals exactly those groups.
#
# Authentication (RAY_AUTH_MODE, read by every Ray process and by the facenas driver):
#   - default `token`: the script makes sure a token exists (`ray get-auth-token --generate`, kept in
#     ~/.ray/auth_token), every node and every driver on this machine reads the same file, so
#     `facenas run --address 127.0.0.1:P` and `ray job submit` authenticate without further setup.
#   - `RAY_AUTH_MODE=disabled clusters/local_cluster.sh start` turns it off (tests do, on loopback).
#   Whatever you choose, use the same RAY_AUTH_MODE for the nodes and for the driver.
#
# Environment: RAY (the ray executable, default: `ray` next to this Python, else on PATH),
# LOCAL_CLUSTER_DIR (state folder, default /tmp/facenas-local-cluster-$USER).
set -euo pipefail

die() { echo "local_cluster.sh: $*" >&2; exit 2; }

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

DRY_RUN=0
WORKERS=1
CPUS=1
PORT=6390
STATE_DIR="${LOCAL_CLUSTER_DIR:-/tmp/facenas-local-cluster-${USER:-$(id -u)}}"
RAY_BIN="${RAY:-$(command -v ray || true)}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
# Without this Ray (Linux) rewrites 127.0.0.1 to the machine's outward address and listens on every
# interface; with it, 127.0.0.1 stays loopback (same switch as the facenas CLI for a local Ray).
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export RAY_USAGE_STATS_ENABLED=0

COMMAND=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --workers) [ $# -ge 2 ] || die "--workers needs a number"; WORKERS="$2"; shift ;;
        --cpus) [ $# -ge 2 ] || die "--cpus needs a number"; CPUS="$2"; shift ;;
        --port) [ $# -ge 2 ] || die "--port needs a number"; PORT="$2"; shift ;;
        start|stop|status) [ -z "$COMMAND" ] || die "one command at a time"; COMMAND="$1" ;;
        -h|--help) usage ;;
        *) die "unknown argument '$1'; usage: local_cluster.sh [--dry-run] start|stop|status [--workers N] [--cpus C] [--port P]" ;;
    esac
    shift
done
[ -n "$COMMAND" ] || usage
case "$WORKERS" in ''|*[!0-9]*) die "--workers must be a whole number >= 0, got '$WORKERS'" ;; esac
case "$CPUS" in ''|*[!0-9]*|0) die "--cpus must be a whole number >= 1, got '$CPUS'" ;; esac
case "$PORT" in ''|*[!0-9]*) die "--port must be a port number, got '$PORT'" ;; esac
case "$RAY_AUTH_MODE" in token|disabled) ;; *) die "RAY_AUTH_MODE must be token or disabled, got '$RAY_AUTH_MODE'" ;; esac
if [ "$DRY_RUN" = 0 ] && [ -z "$RAY_BIN" ]; then
    die "no 'ray' executable found; pip install facenas (or set RAY=/path/to/ray)"
fi
RAY_BIN="${RAY_BIN:-ray}"
PYTHON_BIN="$(dirname "$RAY_BIN")/python"
[ -x "$PYTHON_BIN" ] || PYTHON_BIN=python3
ADDRESS="127.0.0.1:${PORT}"

run() {  # print, then (unless --dry-run) run
    echo "+ $*"
    [ "$DRY_RUN" = 1 ] || "$@"
}

start_node() {  # name, shown command, then the command; the node runs in its own session (process group)
    local name="$1" shown="$2"; shift 2
    echo "+ setsid $shown  # node $name"
    [ "$DRY_RUN" = 1 ] && return 0
    setsid "$@" >"$STATE_DIR/$name.log" 2>&1 < /dev/null &
    echo "$!" >"$STATE_DIR/$name.pgid"  # setsid made the child a session (and group) leader
}

# A worker node on loopback. `ray start --address` refuses to join while
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with it unset Ray rewrites 127.0.0.1 to the outward address
# (where the loopback head does not answer). So a worker is started the way ray.cluster_utils.Cluster
# adds nodes: one raylet + object store for the head's GCS, kept until SIGTERM.
WORKER_PY='
import signal, sys
from ray._private.node import Node
from ray._private.parameter import RayParams

address, cpus, memory = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
params = RayParams(
    node_ip_address="127.0.0.1", gcs_address=address, num_cpus=cpus, num_gpus=0,
    object_store_memory=memory, min_worker_port=0, max_worker_port=0, node_manager_port=0,
    include_log_monitor=False,
)
node = Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
print(f"worker node {node.node_id} joined {address}", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
node.kill_all_processes(check_alive=False, allow_graceful=True)
'

wait_for_nodes() {  # until the head reports $1 alive nodes (or 60 s)
    local want="$1" deadline=$((SECONDS + 60)) alive
    while [ "$SECONDS" -lt "$deadline" ]; do
        alive="$(node_count 2>/dev/null || echo 0)"
        [ "$alive" -ge "$want" ] && return 0
        sleep 0.5
    done
    echo "local_cluster.sh: only ${alive:-0} of $want nodes came up; logs in $STATE_DIR" >&2
    return 1
}

node_count() {  # alive nodes, asked through the Ray Python API (works without ray[default])
    "$PYTHON_BIN" - "$ADDRESS" <<'PY'
import sys, ray
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
print(sum(1 for n in ray.nodes() if n["Alive"]))
ray.shutdown()
PY
}

cmd_start() {
    if [ "$DRY_RUN" = 0 ]; then
        if ls "$STATE_DIR"/*.pgid >/dev/null 2>&1; then
            die "a local cluster is already running (state in $STATE_DIR); stop it first: local_cluster.sh stop"
        fi
        mkdir -p "$STATE_DIR"
        echo "$ADDRESS" >"$STATE_DIR/address"
        echo "$RAY_AUTH_MODE" >"$STATE_DIR/auth_mode"
    fi
    if [ "$RAY_AUTH_MODE" = token ]; then
        echo "+ $RAY_BIN get-auth-token --generate  # once; kept in ~/.ray/auth_token"
        [ "$DRY_RUN" = 1 ] || "$RAY_BIN" get-auth-token --generate >/dev/null
    fi
    local memory=$((200 * 1024 * 1024))
    start_node head "$RAY_BIN start --block --head --port $PORT --node-ip-address 127.0.0.1 ..." "$RAY_BIN" start --block --head --port "$PORT" --node-ip-address 127.0.0.1 \
        --num-cpus "$CPUS" --object-store-memory "$memory" --include-dashboard false --disable-usage-stats
    if [ "$DRY_RUN" = 0 ]; then wait_for_nodes 1 || { cmd_stop; exit 1; }; fi
    local i
    for i in $(seq 1 "$WORKERS"); do
        start_node "worker$i" "python -c \"\$WORKER_PY\" $ADDRESS $CPUS $memory" "$PYTHON_BIN" -c "$WORKER_PY" "$ADDRESS" "$CPUS" "$memory"
    done
    if [ "$DRY_RUN" = 0 ]; then wait_for_nodes $((WORKERS + 1)) || { cmd_stop; exit 1; }; fi
    echo "local Ray cluster: head + $WORKERS worker(s), $CPUS CPU each, at $ADDRESS (RAY_AUTH_MODE=$RAY_AUTH_MODE)"
    echo "use it:  facenas run configs/quickstart.yaml --address $ADDRESS"
}

wait_gone() {  # until no process of our nodes' groups is left (or $1 seconds)
    local deadline=$((SECONDS + $1)) f alive
    while :; do
        alive=0
        for f in "$STATE_DIR"/*.pgid; do
            [ -f "$f" ] && kill -0 -- "-$(cat "$f")" 2>/dev/null && alive=1
        done
        [ "$alive" = 0 ] && return 0
        [ "$SECONDS" -ge "$deadline" ] && return 1
        sleep 0.3
    done
}

cmd_stop() {
    local f pgid stopped=0
    for f in "$STATE_DIR"/worker*.pgid "$STATE_DIR"/head.pgid; do  # workers first, head last
        [ -f "$f" ] || continue
        pgid="$(cat "$f")"
        run kill -TERM -- "-$pgid" 2>/dev/null || true
        stopped=$((stopped + 1))
    done
    [ "$DRY_RUN" = 1 ] && return 0
    wait_gone 15 || true
    for f in "$STATE_DIR"/worker*.pgid "$STATE_DIR"/head.pgid; do
        [ -f "$f" ] || continue
        kill -KILL -- "-$(cat "$f")" 2>/dev/null || true  # whatever ignored SIGTERM
    done
    wait_gone 10 || echo "local_cluster.sh: some node processes are still exiting" >&2
    rm -f "$STATE_DIR"/*.pgid
    echo "stopped $stopped node(s) of the local cluster"
}

cmd_status() {
    [ -f "$STATE_DIR/address" ] && ADDRESS="$(cat "$STATE_DIR/address")"
    [ -f "$STATE_DIR/auth_mode" ] && RAY_AUTH_MODE="$(cat "$STATE_DIR/auth_mode")"  # as the nodes were started
    if [ "$DRY_RUN" = 1 ]; then echo "+ count alive nodes at $ADDRESS"; return 0; fi
    ls "$STATE_DIR"/*.pgid >/dev/null 2>&1 || die "no local cluster is running (state folder $STATE_DIR)"
    echo "local Ray cluster at $ADDRESS: $(node_count) node(s) alive"
}

"cmd_$COMMAND"
