#!/usr/bin/env bash
# Render a steertown report headless and screenshot it, to check the page by eye.
#
#   scripts/check_report_render.sh reports/<run_id>/index.html [out.png] [height]
#
# Needs chromium (Debian: `apt-get install -y chromium`; pass --install to do that).
# Network is off for the page: background networking and component updates are
# disabled and the page itself must not need any (all scripts are inline).
set -euo pipefail

if [[ "${1:-}" == "--install" ]]; then
  shift
  command -v chromium >/dev/null || { apt-get update && apt-get install -y chromium; }
fi
page="${1:?usage: $0 [--install] reports/<run_id>/index.html [out.png] [height]}"
out="${2:-${page%.html}.png}"
height="${3:-2400}"
chrome="$(command -v chromium || command -v chromium-browser || true)"
[[ -n "$chrome" ]] || { echo "chromium not found (run with --install)" >&2; exit 2; }
[[ -f "$page" ]] || { echo "$page: no such file" >&2; exit 2; }

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# --virtual-time-budget lets the inline Vega scripts finish before the shot.
"$chrome" --headless --no-sandbox --disable-gpu --disable-background-networking \
  --disable-component-update --no-first-run --user-data-dir="$profile" \
  --hide-scrollbars --virtual-time-budget=10000 \
  --screenshot="$(realpath -m "$out")" --window-size=1280,"$height" \
  "file://$(realpath "$page")" 2>"$profile/stderr.log" || {
    cat "$profile/stderr.log" >&2; exit 1; }
[[ -s "$out" ]] || { echo "no screenshot written" >&2; cat "$profile/stderr.log" >&2; exit 1; }
echo "$out"
