#!/usr/bin/env bash
# Warren and RabbitMQ side by side, driven by the same load generator (`warren perf`).
#
#   bash bench/compare.sh                           # all scenarios, 3 runs per broker, a table
#   bash bench/compare.sh --write                   # the same, and rewrite BENCHMARKS.md with it
#   RUNS=1 DURATION=3 SCENARIOS="1 8" bash bench/compare.sh
#
# What it does, from the repository root:
#  1. cargo build --release -p warren-cli
#  2. raises the open-file limit (ulimit -n 65536, or the hard limit if lower) for the client and
#     for Warren, then starts `target/release/warren serve --bind 127.0.0.1:5680` (management servers on free ports) on a throwaway
#     data dir (a free port instead if 5680 is taken); that process is stopped on exit
#  3. uses the RabbitMQ (beam.smp) listening on 127.0.0.1:5673, or starts one with
#     ../shared/rabbitmq/start.sh (installs Debian's rabbitmq-server on first use); either way it
#     is left running
#  4. runs each scenario RUNS times per broker, alternating which broker goes first (Warren then
#     RabbitMQ on odd runs, RabbitMQ then Warren on even ones); a run that fails (times out, or
#     `warren perf` finds a message nacked, unconfirmed or lost) is recorded as failed and the
#     benchmark goes on. Throughput and latency runs start with WARMUP seconds that their rates
#     and percentiles leave out (`warren perf --warmup`). Memory (backlog,
#     connections) is the growth of the broker's RSS during a run, on a fresh process each
#     time: Warren is restarted, and RabbitMQ runs on a fresh node started with start.sh on
#     port RABBITMQ_PORT+1 and stopped after the run (start.sh starts it through su, so it
#     keeps the default open-file limit of 1024: it holds about 833 connections)
#  5. prints a markdown table: the median of each broker, Warren's advantage (Warren/RabbitMQ
#     for rates, RabbitMQ/Warren for latency and memory: above 1 means Warren is better), the
#     target and whether it is met; with --write also BENCHMARKS.md (machine, command, table,
#     raw JSON of every run)
#
# Scenarios (see SCENARIO_DEFS below): 1 transient 16 B auto-ack, 2 manual ack, 3 persistent
# with confirms, 4 fanout to 10 queues, 5 topic with 1,000 bindings, 6 1 KiB bodies, 7 64 KiB
# bodies, 8 latency at 10,000 msg/s, 9 backlog of 1M messages (broker RSS per message, drain
# rate), 10 10,000 idle connections (held, broker RSS per connection), 11 latency at 10,000
# msg/s while another connection declares, binds and deletes a durable queue in a loop (the
# stream's p99, and the churn's cycles per second), 12 the same at a fixed churn rate, 13 a
# stream queue: 1M x 1 KiB appended with confirms, then replayed by 10 consumers from first
# (append and replay rates, broker RSS per stored message and its growth while replaying).
#
# Environment:
#   RUNS=3                 runs per broker and scenario
#   DURATION=5             measured seconds per throughput and latency run
#   WARMUP=1               seconds before that, left out of the figures
#   SCENARIOS="1 2 ... 13" which scenarios, in that order
#   WRITE=1                same as --write
#   WARREN_PORT=5680       RABBITMQ_PORT=5673
#   BACKLOG_COUNT=1000000  CONNECTIONS=10000  STREAM_COUNT=1000000
#   RUN_TIMEOUT=60         extra seconds a throughput/latency run may take beyond DURATION
#   LONG_TIMEOUT=300       limit for one backlog or connections run
#   STALL=10               a connections run whose broker accepts nothing new for this many
#                          seconds is measured by this script from /proc and stopped (warren
#                          perf waits forever on a broker that stopped accepting)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# The command as given, with the settings that came from the environment.
COMMAND=""
for var in RUNS DURATION WARMUP SCENARIOS WRITE WARREN_PORT RABBITMQ_PORT BACKLOG_COUNT CONNECTIONS STREAM_COUNT; do
  if [[ -n ${!var:-} ]]; then
    if [[ ${!var} == *[[:space:]]* ]]; then
      COMMAND+="$var=\"${!var}\" "
    else
      COMMAND+="$var=${!var} "
    fi
  fi
done
COMMAND+="bash bench/compare.sh${*:+ $*}"

WRITE=${WRITE:-0}
for arg in "$@"; do
  case $arg in
    --write) WRITE=1 ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "compare.sh: unknown argument $arg (try --help)" >&2
      exit 2
      ;;
  esac
done

RUNS=${RUNS:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
SCENARIOS=${SCENARIOS:-1 2 3 4 5 6 7 8 9 10 11 12 13}
WARREN_PORT=${WARREN_PORT:-5680}
RABBITMQ_PORT=${RABBITMQ_PORT:-5673}
BACKLOG_COUNT=${BACKLOG_COUNT:-1000000}
STREAM_COUNT=${STREAM_COUNT:-1000000}
CONNECTIONS=${CONNECTIONS:-10000}
RUN_TIMEOUT=${RUN_TIMEOUT:-60}
LONG_TIMEOUT=${LONG_TIMEOUT:-300}
STALL=${STALL:-10}

# id|warren perf arguments (the script adds --url, --json, --duration or --broker-pid)|title
SCENARIO_DEFS=(
  "1|throughput -s 16 --ack auto|transient 16 B, 1 producer, 1 queue, 1 consumer, auto-ack"
  "2|throughput -s 16 --ack manual --prefetch 1000 --ack-every 100|transient 16 B, manual ack (prefetch 1000, ack every 100)"
  "3|throughput -s 16 --persistent --confirm 1000 --ack manual|persistent 16 B to a durable queue, confirm window 1000, manual ack"
  "4|throughput -s 16 --exchange-type fanout --queues 10 -y 10|fanout to 10 queues, 10 consumers"
  "5|throughput -s 16 --exchange-type topic --bindings 1000|topic exchange, 1,000 wildcard bindings"
  "6|throughput -s 1024|1 KiB bodies"
  "7|throughput -s 65536|64 KiB bodies"
  "8|latency --rate 10000 -s 16|end-to-end latency at a fixed 10,000 msg/s"
  "9|backlog -n $BACKLOG_COUNT -s 16|backlog of $BACKLOG_COUNT x 16 B with no consumer, then drained"
  "10|connections -n $CONNECTIONS|$CONNECTIONS idle connections, one channel each"
  "11|latency --rate 10000 -s 16 --churn|latency at 10,000 msg/s while another connection declares, binds and deletes a durable queue in a loop"
  "12|latency --rate 10000 -s 16 --churn --churn-rate 100|latency at 10,000 msg/s under 100 definition-churn cycles per second (the same load on both brokers)"
  "13|stream -n $STREAM_COUNT -s 1024 -y 10|a stream (x-queue-type stream): $STREAM_COUNT x 1 KiB appended with confirms, then replayed from first by 10 consumers at once"
)

# Rows of the table: id|label|JSON key|better (higher, lower, or all: every run held all)|
# target for Warren's advantage (-: none)|unit. "published" is the rate the producer got its
# messages into the broker (sent_per_sec): against a flat-out producer a broker that falls
# behind builds a backlog, so what consumers receive says less about it.
ROWS=(
  "1|1. transient 16 B, auto-ack|received_per_sec|higher|5|msg/s"
  "2|2. transient 16 B, manual ack|received_per_sec|higher|5|msg/s"
  "3|3. persistent, confirms, manual ack|received_per_sec|higher|4|msg/s"
  "4|4. fanout to 10 queues (published)|sent_per_sec|higher|5|msg/s"
  "4|4. fanout to 10 queues (deliveries)|received_per_sec|higher|-|msg/s"
  "5|5. topic, 1,000 bindings (published)|sent_per_sec|higher|5|msg/s"
  "5|5. topic, 1,000 bindings (received)|received_per_sec|higher|-|msg/s"
  "6|6. 1 KiB bodies|received_per_sec|higher|5|msg/s"
  "7|7. 64 KiB bodies|bytes_per_sec|higher|2|B/s"
  "8|8. latency at 10k msg/s, p50|p50_ms|lower|-|ms"
  "8|8. latency at 10k msg/s, p99|p99_ms|lower|3|ms"
  "9|9. backlog: broker RSS per message|rss_bytes_per_message|lower|20|B"
  "9|9. backlog: publish (confirmed)|publish_per_sec|higher|-|msg/s"
  "9|9. backlog: drain|drain_per_sec|higher|-|msg/s"
  "10|10. connections held|held|all|-|count"
  "10|10. broker RSS per connection|bytes_per_connection|lower|8|B"
  "11|11. latency at 10k msg/s under definition churn, p99|p99_ms|lower|-|ms"
  "11|11. definition churn (durable declare, bind, delete)|churn_per_sec|higher|-|cycles/s"
  "12|12. latency at 10k msg/s under 100 churn cycles/s, p99|p99_ms|lower|-|ms"
  "13|13. stream: append 1 KiB with confirms|append_per_sec|higher|4|msg/s"
  "13|13. stream: 10 consumers replaying from first (total)|replay_per_sec|higher|5|msg/s"
  "13|13. stream: broker RSS growth while replaying|rss_replay_growth|lower|-|B"
  "13|13. stream: broker RSS per stored message|rss_bytes_per_message|lower|-|B"
)

scenario_field() { # scenario_field ID FIELD(1: args, 2: title)
  local def
  for def in "${SCENARIO_DEFS[@]}"; do
    if [[ ${def%%|*} == "$1" ]]; then
      cut -d'|' -f"$(($2 + 1))" <<<"$def"
      return 0
    fi
  done
  return 1
}

for id in $SCENARIOS; do
  if ! scenario_field "$id" 1 >/dev/null; then
    echo "compare.sh: no scenario $id (1 to 12)" >&2
    exit 2
  fi
done

log() { printf '%s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}
rss_of() { awk '/^VmRSS:/ {print $2 * 1024}' "/proc/$1/status" 2>/dev/null || true; }
fds_of() { # open file descriptors of a process (0 if it is gone)
  local n
  n=$( (find "/proc/$1/fd" -mindepth 1 -maxdepth 1 2>/dev/null || true) | wc -l)
  echo "${n:-0}"
}
settle_rss() { # settle_rss PID: wait (up to 30 s) until the RSS of PID moves by under 0.2% in a second
  local prev cur
  prev=$(rss_of "$1")
  for _ in $(seq 1 30); do
    sleep 1
    cur=$(rss_of "$1")
    [[ -n $cur && -n $prev ]] || return 0
    (((cur > prev ? cur - prev : prev - cur) * 500 < prev)) && return 0
    prev=$cur
  done
}
listener() { # listener PORT: "PID NAME" of the process listening on 127.0.0.1:PORT, if any
  ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\2 \1/p' | head -n 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/warren-compare.XXXXXX")
WARREN_PID=""
PERF_PID=""
stop_pid() { # stop_pid PID: TERM, up to 5 s, then KILL
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
on_exit() {
  [[ -n ${RABBITMQ_MEM_PID:-} ]] && stop_fresh_rabbitmq
  [[ -n $PERF_PID ]] && stop_pid "$PERF_PID"
  [[ -n $WARREN_PID ]] && stop_pid "$WARREN_PID"
  rm -rf "$WORK"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

# ---- 1. build
log "==> cargo build --release -p warren-cli"
cargo build --release -p warren-cli
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
BIN=$target_dir/release/warren

# ---- 2. Warren, with the raised open-file limit (the client inherits it too)
if ! ulimit -n 65536 2>/dev/null; then
  hard=$(ulimit -Hn)
  ulimit -n "$hard"
  log "note: the open-file hard limit is $hard, so ulimit -n is $hard rather than 65536"
fi
if port_open "$WARREN_PORT"; then
  taken=$WARREN_PORT
  WARREN_PORT=$(free_port)
  log "note: 127.0.0.1:$taken is taken (another broker?); Warren listens on 127.0.0.1:$WARREN_PORT"
fi
# start_warren: (re)starts our Warren on a fresh data dir and waits until it listens; sets
# WARREN_PID. Backlog and connections runs restart it, so that each measures the memory of a
# fresh process rather than one whose allocator still holds what the previous run freed.
start_warren() {
  if [[ -n $WARREN_PID ]]; then
    stop_pid "$WARREN_PID"
    WARREN_PID=""
  fi
  rm -rf "$WORK/data"
  mkdir -p "$WORK/data"
  log "==> $BIN serve --http-bind 127.0.0.1:0 --prometheus-bind 127.0.0.1:0 --bind 127.0.0.1:$WARREN_PORT --data-dir $WORK/data"
  "$BIN" serve --http-bind 127.0.0.1:0 --prometheus-bind 127.0.0.1:0 --bind "127.0.0.1:$WARREN_PORT" --data-dir "$WORK/data" >>"$WORK/warren.log" 2>&1 &
  WARREN_PID=$!
  for _ in $(seq 1 300); do
    kill -0 "$WARREN_PID" 2>/dev/null || break
    port_open "$WARREN_PORT" && return 0
    sleep 0.1
  done
  log "Warren did not start; its log:"
  tail -n 40 "$WORK/warren.log" >&2 || true
  return 1
}
start_warren
WARREN_URL="amqp://guest:guest@127.0.0.1:$WARREN_PORT/%2f"

# ---- 3. RabbitMQ
# start.sh is idempotent, but on a running node its second `rabbitmq-server -detached` exits and
# takes the node's pid file with it, so it is only called when nothing listens on the port.
RABBITMQ_URL="amqp://guest:guest@127.0.0.1:$RABBITMQ_PORT/%2f"
read -r RABBITMQ_PID rabbitmq_proc <<<"$(listener "$RABBITMQ_PORT")" || true
if [[ -n ${RABBITMQ_PID:-} && ${rabbitmq_proc:-} == beam.smp ]]; then
  log "==> RabbitMQ already runs on 127.0.0.1:$RABBITMQ_PORT (beam.smp pid $RABBITMQ_PID)"
else
  if [[ -n ${RABBITMQ_PID:-} ]]; then
    log "127.0.0.1:$RABBITMQ_PORT is held by $rabbitmq_proc (pid $RABBITMQ_PID), not RabbitMQ"
    exit 1
  fi
  log "==> $ROOT/../shared/rabbitmq/start.sh (PORT=$RABBITMQ_PORT)"
  PORT=$RABBITMQ_PORT bash "$ROOT/../shared/rabbitmq/start.sh" >&2
  read -r RABBITMQ_PID rabbitmq_proc <<<"$(listener "$RABBITMQ_PORT")" || true
fi
if [[ -z ${RABBITMQ_PID:-} ]]; then
  RABBITMQ_PID=$(cat "/tmp/rabbitmq-cmp-$RABBITMQ_PORT/pid" 2>/dev/null || pgrep -n -f "beam.smp.*cmp$RABBITMQ_PORT@" || true)
fi
if [[ -z $RABBITMQ_PID ]] || ! kill -0 "$RABBITMQ_PID" 2>/dev/null; then
  log "cannot find RabbitMQ's beam.smp process"
  exit 1
fi
log "Warren: $WARREN_URL (pid $WARREN_PID); RabbitMQ: $RABBITMQ_URL (pid $RABBITMQ_PID)"

# A fresh RabbitMQ node for each memory run (backlog, connections), as Warren gets a fresh process:
# the shared node's RSS does not grow when it reuses memory an earlier run freed. It is started
# by the shared start.sh on its own port and data dir (node cmp<PORT>) and stopped after the
# run; the limits of its process are recorded (start.sh's su does not pass ulimit -n through).
RABBITMQ_MEM_PORT=${RABBITMQ_MEM_PORT:-$((RABBITMQ_PORT + 1))}
RABBITMQ_MEM_URL="amqp://guest:guest@127.0.0.1:$RABBITMQ_MEM_PORT/%2f"
RABBITMQ_MEM_PID=""
start_fresh_rabbitmq() {
  stop_fresh_rabbitmq
  rm -rf "/tmp/rabbitmq-cmp-$RABBITMQ_MEM_PORT"
  PORT=$RABBITMQ_MEM_PORT bash "$ROOT/../shared/rabbitmq/start.sh" >&2 || return 1
  read -r RABBITMQ_MEM_PID _ <<<"$(listener "$RABBITMQ_MEM_PORT")" || true
  [[ -n $RABBITMQ_MEM_PID ]] || RABBITMQ_MEM_PID=$(cat "/tmp/rabbitmq-cmp-$RABBITMQ_MEM_PORT/pid" 2>/dev/null || true)
  [[ -n $RABBITMQ_MEM_PID ]] && kill -0 "$RABBITMQ_MEM_PID" 2>/dev/null || return 1
  RABBITMQ_MEM_NOFILE=$(awk '/^Max open files/ {print $4 " (soft) / " $5 " (hard)"}' "/proc/$RABBITMQ_MEM_PID/limits" 2>/dev/null || echo unknown)
}
stop_fresh_rabbitmq() {
  if port_open "$RABBITMQ_MEM_PORT" || [[ -n $RABBITMQ_MEM_PID ]]; then
    PORT=$RABBITMQ_MEM_PORT bash "$ROOT/../shared/rabbitmq/start.sh" stop >/dev/null 2>&1 || true
    for _ in $(seq 1 100); do
      [[ -n $RABBITMQ_MEM_PID ]] && kill -0 "$RABBITMQ_MEM_PID" 2>/dev/null || break
      sleep 0.1
    done
    RABBITMQ_MEM_PID=""
  fi
}

# Machine and software facts, for BENCHMARKS.md.
START_DATE=$(date -u '+%Y-%m-%d %H:%M UTC')
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 4. the runs
RESULTS=$WORK/results.jsonl
: >"$RESULTS"

# record ID BROKER RUN OK ERROR RESULT_FILE: append one line to $RESULTS.
record() {
  python3 - "$@" >>"$RESULTS" <<'PY'
import json, sys
sid, broker, run, ok, error, path = sys.argv[1:7]
result = None
try:
    with open(path) as f:
        lines = [l for l in f.read().splitlines() if l.strip().startswith("{")]
    if lines:
        result = json.loads(lines[-1])
except (OSError, ValueError):
    pass
ok = ok == "1" and result is not None
if ok is False and not error:
    error = "no JSON on stdout"
print(json.dumps({"scenario": int(sid), "broker": broker, "run": int(run), "ok": ok,
                  "error": error or None, "result": result}))
PY
}

# run_one ID BROKER RUN: one `warren perf` run, watched; always records a line.
run_one() {
  local id=$1 broker=$2 run=$3 url pid
  if [[ $broker == warren ]]; then
    url=$WARREN_URL pid=$WARREN_PID
  else
    url=$RABBITMQ_URL pid=$RABBITMQ_PID
  fi
  local -a args
  read -r -a args <<<"$(scenario_field "$id" 1)"
  local kind=${args[0]} limit
  # Memory runs get a fresh broker process: a reused one may hand out memory an earlier run
  # freed without its RSS growing.
  local fresh=0
  [[ $kind == backlog || $kind == connections || $kind == stream ]] && fresh=1
  if ((fresh)) && [[ $broker == warren ]]; then
    if ! start_warren; then
      record "$id" "$broker" "$run" 0 "Warren did not restart" /dev/null
      return 0
    fi
    pid=$WARREN_PID
  fi
  if ((fresh)) && [[ $broker == rabbitmq ]]; then
    if ! start_fresh_rabbitmq; then
      record "$id" "$broker" "$run" 0 "a fresh RabbitMQ node did not start on port $RABBITMQ_MEM_PORT" /dev/null
      return 0
    fi
    url=$RABBITMQ_MEM_URL pid=$RABBITMQ_MEM_PID
  fi
  local -a cmd=("$BIN" perf "${args[@]}" --url "$url" --json)
  case $kind in
    throughput | latency)
      cmd+=(--duration "$DURATION" --warmup "$WARMUP")
      limit=$((WARMUP + DURATION + RUN_TIMEOUT))
      ;;
    *)
      cmd+=(--broker-pid "$pid")
      limit=$LONG_TIMEOUT
      ;;
  esac
  local out=$WORK/out.$id.$broker.$run err=$WORK/err.$id.$broker.$run
  # Memory is measured as growth of the broker's RSS: start from a steady one (an Erlang VM, or
  # an allocator, may still be giving back what the previous scenario used).
  ((fresh)) && settle_rss "$pid"
  local fds0 rss0 fds last_fds last_rss last_change started rc=0 error="" note=""
  fds0=$(fds_of "$pid")
  rss0=$(rss_of "$pid")
  started=$SECONDS
  last_fds=$fds0 last_rss=$rss0 last_change=$SECONDS
  "${cmd[@]}" >"$out" 2>"$err" &
  PERF_PID=$!
  while kill -0 "$PERF_PID" 2>/dev/null; do
    if ((SECONDS - started > limit)); then
      error="timed out after ${limit}s"
      break
    fi
    if [[ $kind == connections ]]; then
      fds=$(fds_of "$pid")
      if ((fds != last_fds)); then
        last_fds=$fds last_change=$SECONDS
        last_rss=$(rss_of "$pid")
      elif ((SECONDS - last_change >= STALL)); then
        # The broker stopped accepting: count what it holds before the client lets go, with
        # its RSS as of the last connection it accepted.
        local held=$((fds - fds0))
        error="the broker accepted no new connection for ${STALL}s; held and RSS measured by compare.sh from /proc/$pid (fd count, VmRSS at the last accepted connection)"
        python3 -c 'import json, sys
n, held, r0, r1 = (int(x) for x in sys.argv[1:5])
print(json.dumps({"scenario": "connections", "requested": n, "held": held,
                  "rss_before": r0, "rss_after": r1,
                  "bytes_per_connection": (r1 - r0) / held if held > 0 and r1 > r0 else None,
                  "measured_by": "compare.sh"}))' "$CONNECTIONS" "$held" "${rss0:-0}" "${last_rss:-0}" >"$out"
        note=partial
        break
      fi
    fi
    sleep 0.2
  done
  if kill -0 "$PERF_PID" 2>/dev/null; then
    stop_pid "$PERF_PID"
    rc=1
  else
    wait "$PERF_PID" || rc=$?
  fi
  PERF_PID=""
  if [[ -z $error && $rc -ne 0 ]]; then
    error="exit $rc: $(grep -v '^\s*$' "$err" | tail -n 1 | cut -c1-300)"
  fi
  if [[ $note == partial ]]; then
    record "$id" "$broker" "$run" 1 "$error" "$out"
  else
    record "$id" "$broker" "$run" "$((rc == 0 && ${#error} == 0))" "$error" "$out"
  fi
  if ((fresh)) && [[ $broker == rabbitmq ]]; then
    stop_fresh_rabbitmq
  elif [[ $kind == connections ]]; then
    # Let the broker close the connections before the next run measures its baseline.
    for _ in $(seq 1 150); do
      (($(fds_of "$pid") <= fds0 + 10)) && break
      sleep 0.2
    done
  fi
}

# One line per run on stderr, so a long benchmark shows where it is.
cat >"$WORK/brief.py" <<'PY'
import json, sys
r = json.loads(sys.stdin.read())
keys = ("sent_per_sec", "received_per_sec", "bytes_per_sec", "p50_ms", "p99_ms",
        "rss_bytes_per_message", "drain_per_sec", "held", "bytes_per_connection",
        "churn_per_sec")
res = r["result"] or {}
shown = ", ".join(f"{k}={res[k]:.6g}" for k in keys if isinstance(res.get(k), (int, float)))
print((shown or "failed") + (f" ({r['error']})" if r["error"] else ""))
PY

total=0
for id in $SCENARIOS; do total=$((total + 2 * RUNS)); done
n=0
for id in $SCENARIOS; do
  log "==> scenario $id: $(scenario_field "$id" 2)"
  for run in $(seq 1 "$RUNS"); do
    # Alternate which broker goes first, so neither always runs on a machine the other warmed.
    if ((run % 2 == 1)); then order="warren rabbitmq"; else order="rabbitmq warren"; fi
    for broker in $order; do
      n=$((n + 1))
      run_one "$id" "$broker" "$run"
      log "  [$n/$total] $broker run $run: $(tail -n 1 "$RESULTS" | python3 "$WORK/brief.py")"
    done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- 5. the table
printf '%s\n' "${ROWS[@]}" >"$WORK/rows"
python3 - "$RESULTS" "$WORK/rows" "$SCENARIOS" >"$WORK/table.md" <<'PY'
import json, statistics, sys

results = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
rows = [l.rstrip("\n").split("|") for l in open(sys.argv[2]) if l.strip()]
wanted = [int(s) for s in sys.argv[3].split()]

def fmt(v, unit):
    if unit == "ms":
        return f"{v:.3f} ms"
    if unit == "count":
        return f"{v:.0f}"
    if unit == "B":
        return f"{v / 1024:.1f} KiB" if v >= 10 * 1024 else f"{v:.0f} B"
    if unit == "B/s":
        return f"{v / 1e6:.1f} MB/s"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M {unit}"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k {unit}"
    return f"{v:.0f} {unit}"

def values(sid, broker, key):
    runs = [r for r in results if r["scenario"] == sid and r["broker"] == broker]
    vals = [r["result"][key] for r in runs
            if r["ok"] and isinstance(r["result"].get(key), (int, float))]
    return runs, vals

def cell(runs, vals, unit):
    if not vals:
        return None, "failed" if runs else "not run"
    m = statistics.median(vals)
    text = fmt(m, unit)
    if len(vals) < len(runs):
        text += f" ({len(runs) - len(vals)} of {len(runs)} failed)"
    return m, text

print("| scenario | Warren median | RabbitMQ median | ratio | target | met? |")
print("| --- | ---: | ---: | ---: | ---: | --- |")
for sid, label, key, better, target, unit in rows:
    sid = int(sid)
    if sid not in wanted:
        continue
    w_runs, w_vals = values(sid, "warren", key)
    r_runs, r_vals = values(sid, "rabbitmq", key)
    w, w_text = cell(w_runs, w_vals, unit)
    r, r_text = cell(r_runs, r_vals, unit)
    ratio, met, target_text = "-", "-", "-"
    if better == "all":
        want = max((run["result"].get("requested", 0) for run in w_runs if run["ok"]), default=0)
        target_text = f"Warren holds all {want}"
        if w_runs:
            met = "yes" if w_vals and len(w_vals) == len(w_runs) and min(w_vals) >= want else "no"
    else:
        if w is not None and r is not None and w > 0 and r > 0:
            adv = w / r if better == "higher" else r / w
            ratio = f"{adv:.2f}x"
        if target != "-":
            target_text = f">= {target}x"
            if ratio != "-":
                met = "yes" if adv >= float(target) else "no"
            elif w is not None and r is not None:
                met = "n/a"
            elif w_runs or r_runs:
                met = "no (failed)"
    print(f"| {label} | {w_text} | {r_text} | {ratio} | {target_text} | {met} |")

notes = [r for r in results if r["error"]]
if notes:
    print()
    print("Failed or partial runs:")
    print()
    for r in notes:
        state = "partial" if r["ok"] else "failed"
        print(f"- scenario {r['scenario']}, {r['broker']} run {r['run']} ({state}): {r['error']}")
PY

echo
echo "ratio: Warren's advantage, Warren/RabbitMQ for rates and RabbitMQ/Warren for latency and"
echo "memory (above 1: Warren is better). Medians of $RUNS run(s) per broker, ${DURATION}s each"
echo "after ${WARMUP}s of warm-up. \"published\" is the producer's rate into the broker."
echo
cat "$WORK/table.md"

# ---- BENCHMARKS.md
if [[ $WRITE == 1 ]]; then
  commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit+=" with uncommitted changes"
  fi
  rmq_version=$(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null || echo unknown)
  erl_version=$(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo unknown)
  rmq_nofile=$(awk '/^Max open files/ {print $4 " (soft) / " $5 " (hard)"}' "/proc/$RABBITMQ_PID/limits" 2>/dev/null || echo unknown)
  {
    echo "# Benchmarks: Warren and RabbitMQ"
    echo
    echo "The latest output of \`bench/compare.sh\`, which rewrites this file when run with \`--write\`."
    echo "Both brokers run on the same machine and are driven by the same load generator,"
    echo "\`warren perf\` (a lean AMQP 0-9-1 client); the brokers take turns, and which goes first"
    echo "alternates from run to run. A run in which \`warren perf\` finds a message nacked,"
    echo "unconfirmed or lost counts as failed. \"published\" is the rate the producer got its"
    echo "messages into the broker; rates and percentiles leave out the first ${WARMUP}s of each run."
    echo "Run it yourself with \`bash bench/compare.sh\` (see its header for the settings)."
    echo "Memory figures are the growth of the broker's RSS during a run. Each backlog and connections"
    echo "run gets a fresh broker process: Warren is restarted, and RabbitMQ runs on a fresh node that"
    echo "the script starts with \`../shared/rabbitmq/start.sh\` on port $RABBITMQ_MEM_PORT and stops after"
    echo "the run (its open-file limit is listed below)."
    echo
    echo "- Date: $START_DATE"
    echo "- Command: \`$COMMAND\`"
    echo "- Runs: $RUNS per broker and scenario, ${DURATION}s per throughput or latency run after ${WARMUP}s of warm-up; medians shown"
    echo "- Machine: $(nproc) CPUs, $(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), kernel $(uname -r)"
    echo "- Load average (1, 5, 15 min): $LOAD_START at the start, $LOAD_END at the end"
    echo "- Warren: commit $commit, \`cargo build --release\` with $(rustc --version 2>/dev/null || echo 'rustc ?'); listening on 127.0.0.1:$WARREN_PORT, open-file limit $(ulimit -n)"
    echo "- RabbitMQ: $rmq_version (Debian package), Erlang $erl_version, started by \`../shared/rabbitmq/start.sh\` on 127.0.0.1:$RABBITMQ_PORT; open-file limit of its process $rmq_nofile; fresh nodes for memory runs on 127.0.0.1:$RABBITMQ_MEM_PORT, open-file limit ${RABBITMQ_MEM_NOFILE:-unknown}"
    echo
    echo "\`free -h\`:"
    echo
    echo '```'
    free -h
    echo '```'
    echo
    echo "## Results"
    echo
    echo "ratio: Warren's advantage, Warren/RabbitMQ for rates and RabbitMQ/Warren for latency and"
    echo "memory (above 1: Warren is better)."
    echo
    cat "$WORK/table.md"
    echo
    echo "Scenarios (\`warren perf\` arguments; the script adds \`--url\`, \`--json\`, and \`--duration\` or \`--broker-pid\`):"
    echo
    for id in $SCENARIOS; do
      echo "$id. $(scenario_field "$id" 2): \`warren perf $(scenario_field "$id" 1)\`"
    done
    echo
    echo "<details><summary>Raw results: one JSON line per run</summary>"
    echo
    echo '```json'
    cat "$RESULTS"
    echo '```'
    echo
    echo "</details>"
  } >"$ROOT/BENCHMARKS.md"
  log "wrote $ROOT/BENCHMARKS.md"
fi
