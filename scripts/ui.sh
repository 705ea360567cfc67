#!/usr/bin/env bash
# `make ui`: the Prefect UI (runs, stages, artifacts, deployments) and the MLflow UI (params,
# metrics, comparisons) on 127.0.0.1. Ctrl-C stops both.
#   PREFECT_PORT=4200 MLFLOW_PORT=5000 scripts/ui.sh
# MLflow reads the store the runs write to: $MLFLOW_TRACKING_URI, else <project>/mlflow.db
# (artifacts in <project>/mlartifacts).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="$ROOT/.venv/bin"
for tool in prefect mlflow python; do
  [ -x "$BIN/$tool" ] || { echo "error: $BIN/$tool not found; run make setup first" >&2; exit 2; }
done
PREFECT_PORT="${PREFECT_PORT:-4200}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
STORE="${MLFLOW_TRACKING_URI:-sqlite:///$ROOT/mlflow.db}"
# the switches MLflow reads (it ignores DO_NOT_TRACK=1 and MLFLOW_ENABLE_TELEMETRY)
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true
unset PREFECT_API_URL
LOGS="$ROOT/storage/logs"
mkdir -p "$LOGS"

for port in "$PREFECT_PORT" "$MLFLOW_PORT"; do
  if ! "$BIN/python" -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))" "$port" 2>/dev/null; then
    echo "error: port $port on 127.0.0.1 is in use (UIs already running? set PREFECT_PORT/MLFLOW_PORT)" >&2
    exit 2
  fi
done
case "$STORE" in
  sqlite:*|postgresql*|mysql*|mssql*) ;;
  *) echo "error: MLFLOW_TRACKING_URI=$STORE is not a database store the MLflow UI can serve" >&2; exit 2 ;;
esac

# each in its own session so that stopping it stops its worker processes too
setsid "$BIN/prefect" server start --host 127.0.0.1 --port "$PREFECT_PORT" --analytics-off \
  >"$LOGS/prefect-server.log" 2>&1 &
PREFECT_PID=$!
setsid "$BIN/mlflow" ui --host 127.0.0.1 --port "$MLFLOW_PORT" --backend-store-uri "$STORE" \
  --default-artifact-root "$ROOT/mlartifacts" >"$LOGS/mlflow-ui.log" 2>&1 &
MLFLOW_PID=$!

stop() {  # exit status
  trap - INT TERM EXIT
  echo; echo "stopping the Prefect server and the MLflow UI"
  for pid in "$PREFECT_PID" "$MLFLOW_PID"; do kill -TERM -- "-$pid" 2>/dev/null; done
  for _ in $(seq 20); do
    kill -0 "$PREFECT_PID" 2>/dev/null || kill -0 "$MLFLOW_PID" 2>/dev/null || exit "$1"
    sleep 0.5
  done
  for pid in "$PREFECT_PID" "$MLFLOW_PID"; do kill -KILL -- "-$pid" 2>/dev/null; done
  exit "$1"
}
trap 'stop 0' INT TERM
trap 'stop 1' EXIT

wait_up() {  # name url pid log
  for _ in $(seq 240); do
    if ! kill -0 "$3" 2>/dev/null; then
      echo "error: $1 exited; see $4" >&2; tail -5 "$4" >&2; return 1
    fi
    "$BIN/python" -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=2)" "$2" 2>/dev/null && return 0
    sleep 0.5
  done
  echo "error: $1 not answering at $2 after 120 s; see $4" >&2; return 1
}
wait_up "Prefect server" "http://127.0.0.1:$PREFECT_PORT/api/health" "$PREFECT_PID" "$LOGS/prefect-server.log" || stop 1
wait_up "MLflow UI" "http://127.0.0.1:$MLFLOW_PORT/health" "$MLFLOW_PID" "$LOGS/mlflow-ui.log" || stop 1

cat <<MSG
Prefect UI:  http://127.0.0.1:$PREFECT_PORT
MLflow UI:   http://127.0.0.1:$MLFLOW_PORT   (store: $STORE)
In the shells that run flows, studies or \`make serve\`:
  export PREFECT_API_URL=http://127.0.0.1:$PREFECT_PORT/api
Ctrl-C stops both.
MSG
wait -n "$PREFECT_PID" "$MLFLOW_PID"
echo "error: a UI server exited; see $LOGS/prefect-server.log and $LOGS/mlflow-ui.log" >&2
stop 1
