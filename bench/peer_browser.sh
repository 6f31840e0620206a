#!/usr/bin/env bash
# Browser peers measured in headless Chromium: starts a release `warren serve` on free
# loopback ports, runs tests/dashboard/peer_bench.mjs against its /peer/demo, prints a
# Markdown table (browser direct vs browser relayed), and stops the broker.
#   bash bench/peer_browser.sh            # ROUNDS=3 by default
# Needs what the test suite needs: chromium, node, and `npm ci --prefix tests/dashboard`.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p warren-cli >&2
dir=$(mktemp -d)
out=$(mktemp)
target/release/warren serve --bind 127.0.0.1:0 --http-bind 127.0.0.1:0 --prometheus-bind 127.0.0.1:0 \
  --data-dir "$dir/data" > "$out" 2>"$dir/stderr.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir" "$out"' EXIT
for _ in $(seq 1 100); do
  grep -q "management API on" "$out" && break
  sleep 0.1
done
http=$(sed -n 's|^warren: management API on \(http://[^/]*\)/api/$|\1|p' "$out")
[[ -n "$http" ]] || { echo "warren serve did not start" >&2; cat "$dir/stderr.log" >&2; exit 1; }
WARREN_PEER_DEMO="$http/peer/demo" ROUNDS="${ROUNDS:-3}" node tests/dashboard/peer_bench.mjs
