#!/usr/bin/env bash
# Stop the server that `make up` started, by the pid it recorded; SIGTERM, then SIGKILL after 20s.
set -euo pipefail

PID_FILE="${DATA_DIR:-.kubeling}/server.pid"
if [ ! -f "$PID_FILE" ]; then
    echo "kubeling server not running (no $PID_FILE)"
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
