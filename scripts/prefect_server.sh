#!/usr/bin/env bash
# A real Prefect server on 127.0.0.1 in the foreground (no UI analytics, nothing external).
#   scripts/prefect_server.sh [PORT]        # default 4200; Ctrl-C stops it
# Studies (flows/study.py) and the deployment (flows/deploy.py) need one: export the
# PREFECT_API_URL line it prints in the shell that runs them. `make ui` starts this and
# the MLflow UI together.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT="${1:-${PREFECT_SERVER_API_PORT:-4200}}"
BIN="$ROOT/.venv/bin"
[ -x "$BIN/prefect" ] || { echo "error: $BIN/prefect not found; run make setup first" >&2; exit 2; }
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
unset PREFECT_API_URL  # the server must not try to talk to another one
if ! "$BIN/python" -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$PORT" 2>/dev/null; then
  echo "error: port $PORT on 127.0.0.1 is in use (a server already running? pass another port)" >&2
  exit 2
fi
echo "Prefect UI: http://127.0.0.1:$PORT    in other shells: export PREFECT_API_URL=http://127.0.0.1:$PORT/api"
exec "$BIN/prefect" server start --host 127.0.0.1 --port "$PORT" --analytics-off
