#!/usr/bin/env bash
# The numbers of docs/verification.md (decisions in situ, fingerprint, text measure):
# a fast-arm run of the default model through the real flow (simulate -> verify with the
# run's model -> analyze -> report), then the tables printed by verdict_numbers.py.
#
#   scripts/verdict_run.sh                    # 32 agents x 50 ticks: the documented run
#   POP=6 STEPS=3 scripts/verdict_run.sh verification.decision_samples=12 ...  # dev size
#
# Extra arguments are Hydra overrides passed to flows/run.py. The tables go to stdout and
# to storage/dumps/<run_id>/verification/numbers.md. Re-running resumes the same run id.
set -uo pipefail
cd "$(dirname "$0")/.."
POP=${POP:-32}
STEPS=${STEPS:-50}
SEED=${SEED:-0}
RUN_ID=${RUN_ID:-verdict-fast-p${POP}-t${STEPS}-s${SEED}}
PY=${PY:-.venv/bin/python}
# A loaded machine can take longer than Prefect's default 20 s to start its temporary server.
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=${PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS:-180}
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" flows/run.py +arm=fast population="$POP" steps="$STEPS" seed="$SEED" run_id="$RUN_ID" \
    live=false color=false "$@"
echo "flow exit code $? (1 = verdict FAIL; the numbers are still written)"
RUN_DIR=storage/dumps/$RUN_ID
if [ ! -f "$RUN_DIR/verification/report.json" ]; then
    "$PY" -m steertown verify "$RUN_DIR"
fi
"$PY" scripts/verdict_numbers.py "$RUN_DIR" | tee "$RUN_DIR/verification/numbers.md"
