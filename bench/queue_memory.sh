#!/usr/bin/env bash
# Memory per empty queue, and memory given back when the queues are deleted, of a release build.
#
#   bash bench/queue_memory.sh                  # 100,000 transient queues
#   QUEUES=10000 DURABLE=1 bash bench/queue_memory.sh
#   WARREN_BIN=/tmp/old-warren bash bench/queue_memory.sh   # another build of the broker
#
# Builds `warren` and the `queue_memory` example in release mode, starts
# `target/release/warren serve` on a free loopback port with a throwaway data directory, runs
# the example against it (declare QUEUES queues on one connection, delete them, read the
# broker's VmRSS before, after declaring, after deleting), then stops the broker.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
QUEUES=${QUEUES:-100000}
DURABLE=${DURABLE:-0}

target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
if [[ -z ${WARREN_BIN:-} ]]; then
  cargo build --release -p warren-cli --bin warren
  WARREN_BIN=$target_dir/release/warren
fi
cargo build --release -p warren --example queue_memory

WORK=$(mktemp -d "${TMPDIR:-/tmp}/warren-queue-memory.XXXXXX")
WARREN_PID=""
on_exit() {
  if [[ -n $WARREN_PID ]]; then
    kill "$WARREN_PID" 2>/dev/null || true
    wait "$WARREN_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

mkfifo "$WORK/out"
WARREN_LOG=warn "$WARREN_BIN" serve --http-bind 127.0.0.1:0 --prometheus-bind 127.0.0.1:0 --bind 127.0.0.1:0 --data-dir "$WORK/data" \
  >"$WORK/out" 2>"$WORK/stderr.log" &
WARREN_PID=$!
exec 3<"$WORK/out"
if ! read -r -t 60 first <&3; then
  echo "queue_memory.sh: the broker did not start:" >&2
  cat "$WORK/stderr.log" >&2
  exit 1
fi
addr=${first#warren: listening on }
# Keep reading its stdout, so the broker never blocks on a full pipe.
cat <&3 >/dev/null &

flags=(--pid "$WARREN_PID" --queues "$QUEUES" --url "amqp://guest:guest@$addr/%2f")
[[ $DURABLE == 1 ]] && flags+=(--durable)
"$target_dir/release/examples/queue_memory" "${flags[@]}"
