#!/usr/bin/env bash
# Client compatibility test with rabbitmq-c's command-line tools (Debian package
# `amqp-tools`): declare a queue, publish 3 messages, get one, consume the other two,
# delete the queue. Runs against the broker at $AMQP_URL (default
# amqp://guest:guest@127.0.0.1:5672/%2f), which must already be listening.
#
#   apt-get install -y amqp-tools
#   AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f bash tests/clients/amqp_tools_test.sh
#
# Behaviour of the tools (amqp-tools 0.11, checked against RabbitMQ 3.10):
#   * Always pass the URL as --url=...: in amqp-delete-queue `-u` means --if-unused.
#   * amqp-declare-queue -q NAME prints the queue name; amqp-delete-queue prints the
#     number of messages deleted with the queue.
#   * amqp-get prints the body (no newline added) and exits 0; on an empty queue it
#     prints nothing and exits 2.
#   * amqp-consume -c N CMD runs CMD once per message with the body on its stdin, acks
#     after CMD exits 0, and stops after N messages. Options after CMD are still parsed
#     as amqp-consume's own unless `--` comes first.
set -euo pipefail

AMQP_URL=${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}
TOOL_TIMEOUT=${TOOL_TIMEOUT:-20}

fail() {
  echo "amqp_tools_test: FAIL: $*" >&2
  exit 1
}

missing=()
for tool in amqp-declare-queue amqp-publish amqp-consume amqp-get amqp-delete-queue; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "amqp_tools_test: FAIL: missing ${missing[*]}; install the Debian package amqp-tools:" >&2
  echo "    apt-get update && apt-get install -y amqp-tools" >&2
  exit 1
fi

QUEUE="amqp-tools-test.$$.$RANDOM"
ERR=$(mktemp)
cleanup() {
  if [[ -n ${QUEUE:-} ]]; then
    timeout "$TOOL_TIMEOUT" amqp-delete-queue --url="$AMQP_URL" -q "$QUEUE" >/dev/null 2>&1 || true
  fi
  rm -f "$ERR"
}
trap cleanup EXIT

# run NAME CMD...: run a tool with a timeout, capture stdout in $OUT, fail on non-zero.
run() {
  local what=$1
  shift
  local rc=0
  OUT=$(timeout "$TOOL_TIMEOUT" "$@" 2>"$ERR") || rc=$?
  if ((rc != 0)); then
    ((rc == 124)) && fail "$what timed out after ${TOOL_TIMEOUT}s: $*"
    fail "$what exited $rc: $* (stderr: $(cat "$ERR"))"
  fi
}

expect() { # expect WHAT GOT WANT
  [[ $2 == "$3" ]] || fail "$1: got '$2', expected '$3'"
  echo "ok - $1"
}

echo "amqp_tools_test: broker $AMQP_URL, queue $QUEUE"

run "amqp-declare-queue" amqp-declare-queue --url="$AMQP_URL" -q "$QUEUE"
expect "amqp-declare-queue prints the queue name" "$OUT" "$QUEUE"

for i in 1 2 3; do
  run "amqp-publish #$i" amqp-publish --url="$AMQP_URL" -e "" -r "$QUEUE" -b "message-$i"
done
echo "ok - published 3 messages"

run "amqp-get" amqp-get --url="$AMQP_URL" -q "$QUEUE"
expect "amqp-get returns the first message" "$OUT" "message-1"

# `cat` runs once per message with the body on stdin, so the bodies come out back to
# back with no separator. (A command that takes options of its own needs `--` before
# it, e.g. `-c 2 -- sh -c 'cat; echo'`, or amqp-consume parses them as its own.)
run "amqp-consume" amqp-consume --url="$AMQP_URL" -q "$QUEUE" -c 2 cat
expect "amqp-consume -c 2 cat gets the other two, in order" "$OUT" "message-2message-3"

rc=0
OUT=$(timeout "$TOOL_TIMEOUT" amqp-get --url="$AMQP_URL" -q "$QUEUE" 2>/dev/null) || rc=$?
((rc == 124)) && fail "amqp-get on the empty queue timed out"
expect "amqp-get on the empty queue exits 2" "$rc" "2"
expect "amqp-get on the empty queue prints nothing" "$OUT" ""

# A message left in the queue is counted by queue.delete-ok.
run "amqp-publish #4" amqp-publish --url="$AMQP_URL" -r "$QUEUE" -b "left behind"
run "amqp-delete-queue" amqp-delete-queue --url="$AMQP_URL" -q "$QUEUE"
expect "amqp-delete-queue reports 1 message deleted" "$OUT" "1"

rc=0
OUT=$(timeout "$TOOL_TIMEOUT" amqp-get --url="$AMQP_URL" -q "$QUEUE" 2>&1) || rc=$?
[[ $rc != 0 && $rc != 124 && $OUT == *404* ]] \
  || fail "amqp-get on the deleted queue: expected a 404 channel error, got exit $rc: $OUT"
echo "ok - the queue is gone (amqp-get: 404)"
QUEUE=""

echo "amqp_tools_test: PASS"
