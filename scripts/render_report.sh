#!/usr/bin/env bash
# Render a gankit HTML report in headless Chromium and save a screenshot, to check that the
# self-contained report (inline CSS, base64 PNGs, no URLs) displays offline.
#
#   scripts/render_report.sh RUN_DIR_OR_REPORT.html [OUT.png] [WIDTHxHEIGHT]
#
# RUN_DIR: the report is (re)written to RUN_DIR/report.html with `gankit report` first.
# Needs the `chromium` binary (Debian: apt-get install -y chromium). The browser runs with a
# throw-away profile and with networking features off, so a report that tried to fetch anything
# would show it as missing content in the screenshot.
set -euo pipefail

src="${1:?usage: scripts/render_report.sh RUN_DIR|report.html [out.png] [WIDTHxHEIGHT]}"
out="${2:-/tmp/report.png}"
size="${3:-1200x2400}"

if [ -d "$src" ]; then
    python -m gankit.cli report "$src" --out "$src/report.html"
    html="$src/report.html"
else
    html="$src"
fi
html="$(cd "$(dirname "$html")" && pwd)/$(basename "$html")"

browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
    echo "error: no chromium found (Debian: apt-get install -y chromium)" >&2
    exit 2
fi

profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
"$browser" --headless --no-sandbox --disable-gpu --disable-background-networking \
    --disable-component-update --disable-sync --no-first-run --hide-scrollbars \
    --user-data-dir="$profile" --screenshot="$out" --window-size="${size/x/,}" \
    "file://$html" 2>/dev/null
echo "screenshot: $out ($size) of $html"
