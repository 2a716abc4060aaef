#!/usr/bin/env bash
# Start a kubeling server in the background for interactive use (`make up`).
# State, certificates, the admin kubeconfig, the log and the pid live in $DATA_DIR (.kubeling).
# Idempotent: if the pid file names a live process, it only waits for readiness again.
set -euo pipefail

DATA_DIR="${DATA_DIR:-.kubeling}"
VENV="${VENV:-.venv}"
mkdir -p "$DATA_DIR"
DATA_DIR="$(cd "$DATA_DIR" && pwd)"
PID_FILE="$DATA_DIR/server.pid"
LOG="$DATA_DIR/server.log"

if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    echo "kubeling server already running (pid $(cat "$PID_FILE"))"
else
    # setsid: the server outlives this shell and make, and gets no terminal signals.
    # Every address, advertising the host's primary one (as k3s): pods reach the API server
    # through the `kubernetes` Service, and the cluster DNS through kube-dns.
    setsid "$VENV/bin/kubeling" server --data-dir "$DATA_DIR" --bind-address "${BIND_ADDRESS:-0.0.0.0}" \
        >>"$LOG" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    echo "kubeling server started (pid $!), log: $LOG"
fi

if ! "$VENV/bin/python" scripts/wait-ready.py "$DATA_DIR/admin.kubeconfig" \
        --timeout 60 --pid "$(cat "$PID_FILE")" --log "$LOG"; then
    exit 1
fi
echo
echo "export KUBECONFIG=$DATA_DIR/admin.kubeconfig"
echo "export PATH=$(cd "$VENV/bin" && pwd):\$PATH   # kubectl 1.33 and helm 4"
echo
echo "The server runs the controllers, the scheduler and a node agent (kubectl get nodes), e.g.:"
echo "  kubectl create deployment web --image=nginx --replicas=2 && kubectl rollout status deployment/web"
echo "Several nodes: kubeling cluster up --nodes 3. See README.md, 'Workloads' and 'Several nodes'."
