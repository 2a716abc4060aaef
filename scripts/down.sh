#!/usr/bin/env bash
# Stop the server that `make up` started, by the pid it recorded; SIGTERM, then SIGKILL after 20s.
# Then remove its node's pods (containers outlive the agent on purpose): `kubeling node cleanup`.
set -euo pipefail

DATA_DIR="${DATA_DIR:-.kubeling}"
VENV="${VENV:-.venv}"
PID_FILE="$DATA_DIR/server.pid"
cleanup_node() {
    if [ -d "$DATA_DIR/agent" ] && [ "$(id -u)" = 0 ]; then
        "$VENV/bin/kubeling" node cleanup --data-dir "$DATA_DIR"
    fi
}
if [ ! -f "$PID_FILE" ]; then
    echo "kubeling server not running (no $PID_FILE)"
    cleanup_node
    exit 0
fi
pid="$(cat "$PID_FILE")"
if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "kubeling server (pid $pid) did not stop on SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid"
    fi
    echo "kubeling server stopped (pid $pid)"
else
    echo "kubeling server (pid $pid) was not running"
fi
rm -f "$PID_FILE"
cleanup_node
