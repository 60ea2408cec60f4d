#!/usr/bin/env bash
# Renders a report.html to a PNG with headless Chromium (Debian's package), so the report can
# be looked at: scripts/screenshot-report.sh pinpipe-demo/out/report.html report.png [HEIGHT]
set -euo pipefail
report="${1:?usage: screenshot-report.sh REPORT.html OUT.png [HEIGHT]}"
out="${2:?usage: screenshot-report.sh REPORT.html OUT.png [HEIGHT]}"
height="${3:-6000}"
if ! command -v chromium >/dev/null; then
  apt-get update -qq && apt-get install -y -qq chromium >/dev/null
fi
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
# The network flags keep Chromium from reaching out at start; the report needs no network.
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size="1280,$height" \
  --screenshot="$(realpath -m "$out")" "file://$(realpath "$report")" 2>/dev/null
echo "wrote $out (1280 x $height)"
