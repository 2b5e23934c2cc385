#!/usr/bin/env bash
# Render a kvmctx HTML report in headless Chromium and save a screenshot.
#   scripts/screenshot_report.sh report.html shot.png [width] [height]
# Needs Debian's chromium (apt-get install -y chromium).
set -euo pipefail
html=$(realpath "$1"); png=$2; w=${3:-1300}; h=${4:-2600}
prof=$(mktemp -d)
trap 'rm -rf "$prof"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$prof" --hide-scrollbars --screenshot="$png" \
  --window-size="$w,$h" "file://$html" 2>/dev/null
echo "wrote $png"
