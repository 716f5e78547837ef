#!/usr/bin/env bash
# A fleet on a 2-node ejabberd cluster, all on this machine (docs/scaling.md, "The tested
# script for one machine"; tests/integration/test_cluster_demo.py runs it).
#
#   1. `qe-worker server --engine ejabberd --nodes 2`: two private nodes on 127.0.0.1;
#   2. on node 1: `qe-worker run --workers 3` (worker@localhost/fleet-0..2, one process), and
#      one worker of service "demo"; on node 2: another worker of service "demo". Each worker
#      lists both nodes in QE_HOST, its own node first: when its node dies it logs in on the other;
#   3. a caller on node 2 calls fleet-0..2 by full JID (every call crosses nodes), then the
#      service "demo" twice (the least loaded worker answers, wherever it is);
#   4. on exit (the end, an error, Ctrl+C, SIGTERM) it stops the workers, then the cluster.
#
# Needs ejabberd (`apt-get install -y --no-install-recommends ejabberd`) and qe-worker: this
# checkout's .venv (`./run test` or `./run demo` makes it), else on PATH, or QE_WORKER=/path/to/it.
# Exit status: 0 when every call was answered.
set -euo pipefail

# qe-worker: $QE_WORKER, else this checkout's .venv (what ./run sets up), else the one on PATH
HERE=$(cd "$(dirname "$0")/.." && pwd)
if [[ -z ${QE_WORKER:-} ]]; then
    if [[ -x $HERE/.venv/bin/qe-worker ]]; then QE_WORKER=$HERE/.venv/bin/qe-worker; else QE_WORKER=qe-worker; fi
fi
WAIT=${CLUSTER_DEMO_WAIT:-30}  # seconds to wait for the cluster, then for each worker
DIR=$(mktemp -d "${TMPDIR:-/tmp}/qe-cluster-demo.XXXXXX")
PIDS=()        # the workers
SERVER_PID=""

cleanup() {
    trap - EXIT INT TERM
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ -n $SERVER_PID ]]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true  # stops the nodes, then epmd; removes its dir
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$DIR"
    echo "# stopped the workers and the cluster"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The cluster. One account for the workers, one for the caller; random passwords.
WORKER_PW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
CLIENT_PW=$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')
: >"$DIR/server.out"
"$QE_WORKER" server --engine ejabberd --nodes 2 --user "worker:$WORKER_PW" --user "client:$CLIENT_PW" \
    >"$DIR/server.out" 2>&1 &
SERVER_PID=$!
for ((i = 0; i < WAIT * 10; i++)); do
    grep -q "^# Ctrl+C stops the server" "$DIR/server.out" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$DIR/server.out" >&2; exit 1; }
    sleep 0.1
done
grep -q "^# Ctrl+C stops the server" "$DIR/server.out" || { echo "the cluster did not start" >&2; exit 1; }
# "# ejabberd dev cluster (2 nodes): node 1 127.0.0.1:P1, node 2 127.0.0.1:P2, domain ..."
NODE1=$(sed -n 's/.*node 1 \([0-9.]*:[0-9]*\),.*/\1/p' "$DIR/server.out" | head -1)
NODE2=$(sed -n 's/.*node 2 \([0-9.]*:[0-9]*\),.*/\1/p' "$DIR/server.out" | head -1)
echo "# cluster up: node 1 at $NODE1, node 2 at $NODE2"

# What every process shares: no TLS on loopback (a real cluster: leave QE_TLS at required),
# the workers answer the caller's account, their job files go to the demo's directory.
export QE_TLS=off QE_STATE_DIR="$DIR" QE_ALLOW=client@localhost QE_LOG_LEVEL=WARNING
on_node1="QE_HOST=$NODE1,$NODE2"  # its own node first, the other one for failover
on_node2="QE_HOST=$NODE2,$NODE1"

worker() {  # worker LOGFILE ENV... -- ARGS...: a qe-worker run in the background
    local log=$1; shift
    local env=()
    while [[ $1 != -- ]]; do env+=("$1"); shift; done; shift
    env QE_JID=worker@localhost QE_PASSWORD="$WORKER_PW" "${env[@]}" "$QE_WORKER" run "$@" >"$DIR/$log" 2>&1 &
    PIDS+=($!)
}

# 2. The workers.
worker fleet.log "$on_node1" -- --workers 3 --resource fleet
worker demo-n1.log "$on_node1" QE_APP=demo -- --resource demo-n1
worker demo-n2.log "$on_node2" QE_APP=demo -- --resource demo-n2

client() {  # the caller, on node 2
    env QE_JID=client@localhost QE_PASSWORD="$CLIENT_PW" "$on_node2" "$QE_WORKER" "$@"
}

until_answers() {  # until_answers ARGS...: retry a call until it is answered (a worker is starting)
    local out
    for ((i = 0; i < WAIT * 2; i++)); do
        if out=$(client "$@" --timeout 5 2>/dev/null); then echo "$out"; return 0; fi
        sleep 0.5
    done
    echo "no answer to: qe-worker $*" >&2
    return 1
}

# 3. The calls: by full JID across nodes, then through the service.
for i in 0 1 2; do
    echo "node 2 -> worker@localhost/fleet-$i (node 1): $(until_answers ping "worker@localhost/fleet-$i")"
done
for i in 1 2; do
    answer=$(until_answers call --app demo info)
    jid=$(sed -n 's/.*"jid": *"\([^"]*\)".*/\1/p' <<<"$answer")
    echo "node 2 -> service demo, call $i: answered by ${jid:-$answer}"
done
echo "# all calls answered"
