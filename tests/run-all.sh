#!/usr/bin/env bash
# Warren's whole test suite, as CI runs it (from the repository root: bash tests/run-all.sh).
#
#  0. set-up, in the first seconds (before anything slow): a Python virtual environment in
#     target/pyenv with pika and pytest (pip), Debian's amqp-tools, curl and promtool (apt-get, when running
#     as root), rabbitmqadmin 2.x (cargo install), Chromium (apt-get) and playwright-core
#     (npm ci in tests/dashboard) for the dashboard test. What it cannot install is named with the exact command to run, and the script
#     stops there.
#  1. cargo test --workspace              (the Rust integration tests embed their own brokers),
#     then cargo test -p warren-broker --benches (each micro-benchmark run once, untimed)
#  2. cargo build -p warren-cli, then start `target/debug/warren serve` on a free loopback
#     port with a throwaway data dir, and wait until it accepts connections
#  3. against that broker: every example (cargo run --example NAME), the pika client tests
#     (tests/clients/pika_test.py, pika_x_death_test.py) and the amqp-tools test
#     (tests/clients/amqp_tools_test.sh)
#  4. the cargo fuzz targets, a minute each (tests/fuzz.sh)
#  5. stop the broker, print "run-all: N passed, M failed" for the steps of 3, and exit
#     non-zero if anything (cargo and fuzz steps included) failed.
#
# Needs: cargo and python3 (with its venv module); step 0 installs the rest.
#
# Environment:
#   RUN_ALL_SETUP_ONLY=1         stop after step 0 (for example to prepare a machine)
#   WARREN_TEST_URL=amqp://...   run step 3 against this broker instead of building and
#                                starting Warren (e.g. a RabbitMQ to compare with)
#   RUN_ALL_SKIP_CARGO_TEST=1    skip step 1
#   RUN_ALL_SKIP_FUZZ=1          skip step 4 (FUZZ_SECONDS=N runs each target N seconds)
#   EXAMPLES_CARGO_FLAGS="..."   which package the examples come from
#                                (default "-p warren"; e.g. "--manifest-path other/Cargo.toml")
#   STEP_TIMEOUT=seconds         limit for each step of 3 (default 300)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

EXAMPLES=(hello_world work_queues publish_subscribe routing topics rpc retry_dlq event_log)
read -r -a EXAMPLES_CARGO_FLAGS <<<"${EXAMPLES_CARGO_FLAGS:--p warren}"
STEP_TIMEOUT=${STEP_TIMEOUT:-300}

passed=0
failed=0
failures=()
cargo_failed=()
WARREN_PID=""
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/warren-run-all.XXXXXX")

stop_warren() {
  if [[ -n $WARREN_PID ]]; then
    if kill -0 "$WARREN_PID" 2>/dev/null; then
      kill "$WARREN_PID" 2>/dev/null || true
      for _ in $(seq 1 50); do
        kill -0 "$WARREN_PID" 2>/dev/null || break
        sleep 0.1
      done
      kill -9 "$WARREN_PID" 2>/dev/null || true
    fi
    wait "$WARREN_PID" 2>/dev/null || true
    WARREN_PID=""
  fi
}
on_exit() {
  stop_warren
  rm -rf "$WORKDIR"
}
trap on_exit EXIT
trap 'exit 130' INT TERM

banner() { printf '\n===== %s\n' "$*"; }

# ---- 0. set-up
# Everything here happens before the first cargo command, so a machine that lacks something
# learns it in seconds, not after the Rust tests.
export DEBIAN_FRONTEND=noninteractive
is_root() { [[ $(id -u) == 0 ]]; }

retry() { # retry CMD...: up to 3 attempts, for network hiccups
  local n
  for n in 1 2 3; do
    "$@" && return 0
    echo "attempt $n failed: $*" >&2
    ((n == 3)) || sleep $((n * 5))
  done
  return 1
}

# missing WHAT COMMAND: the set-up cannot go on; say exactly what to run.
missing() {
  echo "run-all: $1. Run this, then run the tests again:" >&2
  echo "  $2" >&2
  exit 1
}

apt_updated=0
apt_install() { # apt_install PACKAGE...: as root only
  if ((!apt_updated)); then
    retry apt-get update -qq || return 1
    apt_updated=1
  fi
  retry apt-get install -y -qq "$@"
}

command -v cargo >/dev/null 2>&1 ||
  missing "cargo is not installed" "curl https://sh.rustup.rs -sSf | sh   # or see https://rustup.rs"

if ! command -v python3 >/dev/null 2>&1; then
  if is_root; then
    apt_install python3 python3-venv || missing "apt-get could not install python3" \
      "apt-get update && apt-get install -y python3 python3-venv"
  else
    missing "python3 is not installed" "sudo apt-get install -y python3 python3-venv"
  fi
fi

# pika and pytest, in a virtual environment of this checkout (nothing installed system-wide).
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$ROOT/$target_dir
PYENV=$target_dir/pyenv
PYTHON=$PYENV/bin/python
if ! "$PYTHON" -c 'import pika, pytest' >/dev/null 2>&1; then
  banner "set-up: Python virtual environment $PYENV with pika and pytest"
  rm -rf "$PYENV"
  if ! python3 -m venv "$PYENV" >/dev/null 2>&1; then
    # Debian splits the venv module (and its pip) into python3-venv.
    rm -rf "$PYENV"
    if is_root; then
      apt_install python3-venv || missing "apt-get could not install python3-venv" \
        "apt-get update && apt-get install -y python3-venv"
    else
      missing "python3 cannot create a virtual environment (no venv module)" \
        "sudo apt-get install -y python3-venv"
    fi
    python3 -m venv "$PYENV" ||
      missing "python3 -m venv $PYENV failed" "python3 -m venv $PYENV"
  fi
  if ! retry "$PYTHON" -m pip install -q --disable-pip-version-check pika pytest; then
    if python3 -c 'import pika, pytest' >/dev/null 2>&1; then
      echo "run-all: pip failed; using the system python3, which has pika and pytest" >&2
      PYTHON=$(command -v python3)
    else
      missing "pip could not install pika and pytest into $PYENV" \
        "$PYTHON -m pip install pika pytest"
    fi
  fi
fi
"$PYTHON" -c 'import pika, pytest, sys; print("run-all: pika", pika.__version__, "pytest", pytest.__version__, "in", sys.prefix)'

# rabbitmq-c's command-line tools (amqp-declare-queue, amqp-publish, amqp-consume, ...).
if ! command -v amqp-consume >/dev/null 2>&1 || ! command -v amqp-declare-queue >/dev/null 2>&1; then
  if is_root; then
    banner "set-up: apt-get install amqp-tools"
    apt_install amqp-tools || missing "apt-get could not install amqp-tools" \
      "apt-get update && apt-get install -y amqp-tools"
  else
    missing "the amqp-tools test needs Debian's amqp-tools" "sudo apt-get install -y amqp-tools"
  fi
fi
echo "run-all: amqp-tools at $(command -v amqp-consume)"

# curl (the management API tests drive the API with it) and promtool (Prometheus' checker of
# the /metrics exposition; Debian ships it in the prometheus package).
for tool in curl:curl promtool:prometheus; do
  cmd=${tool%%:*} pkg=${tool##*:}
  if ! command -v "$cmd" >/dev/null 2>&1; then
    if is_root; then
      banner "set-up: apt-get install $pkg (for $cmd)"
      apt_install "$pkg" || missing "apt-get could not install $pkg" "apt-get update && apt-get install -y $pkg"
    else
      missing "the management tests need $cmd" "sudo apt-get install -y $pkg"
    fi
  fi
done
echo "run-all: curl at $(command -v curl), promtool at $(command -v promtool)"

# rabbitmqadmin 2.x, RabbitMQ's own CLI for its HTTP API (tests/rabbitmqadmin.rs drives
# Warren's API with it). Built from crates.io: about 4 minutes on 2 cores, once per machine.
RABBITMQADMIN_VERSION=2.35.0
if ! rabbitmqadmin --version 2>/dev/null | grep -qF "$RABBITMQADMIN_VERSION"; then
  banner "set-up: cargo install rabbitmqadmin --version $RABBITMQADMIN_VERSION --locked"
  retry cargo install --quiet rabbitmqadmin --version "$RABBITMQADMIN_VERSION" --locked ||
    missing "cargo could not install rabbitmqadmin" \
      "cargo install rabbitmqadmin --version $RABBITMQADMIN_VERSION --locked"
fi
echo "run-all: $(rabbitmqadmin --version 2>/dev/null | head -1) at $(command -v rabbitmqadmin)"

# cargo-fuzz, for the fuzz targets (step 4) with the nightly toolchain the machines have.
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qF "$CARGO_FUZZ_VERSION"; then
  banner "set-up: cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked"
  retry cargo install --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked ||
    missing "cargo could not install cargo-fuzz" \
      "cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked"
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  retry rustup toolchain install nightly --profile minimal ||
    missing "the fuzz targets need the nightly toolchain" "rustup toolchain install nightly --profile minimal"
fi
echo "run-all: $(cargo fuzz --version), $(cargo +nightly --version)"

# The dashboard test: Debian's Chromium, driven by playwright-core from npm (node and npm
# come with the machine; Debian's nodejs and npm otherwise).
for tool in chromium:chromium node:nodejs npm:npm; do
  cmd=${tool%%:*} pkg=${tool##*:}
  if ! command -v "$cmd" >/dev/null 2>&1; then
    if is_root; then
      banner "set-up: apt-get install $pkg (for $cmd)"
      apt_install "$pkg" || missing "apt-get could not install $pkg" "apt-get update && apt-get install -y $pkg"
    else
      missing "the dashboard test needs $cmd" "sudo apt-get install -y $pkg"
    fi
  fi
done
if [[ ! -d tests/dashboard/node_modules/playwright-core ]]; then
  banner "set-up: npm ci in tests/dashboard (playwright-core)"
  retry npm ci --prefix tests/dashboard --no-audit --no-fund --silent ||
    missing "npm could not install playwright-core" "npm ci --prefix tests/dashboard"
fi
echo "run-all: $(chromium --version 2>/dev/null | head -1), node $(node --version)"

if [[ ${RUN_ALL_SETUP_ONLY:-} == 1 ]]; then
  echo "run-all: set-up done (RUN_ALL_SETUP_ONLY=1)"
  exit 0
fi

# step NAME CMD...: run one counted step with a time limit.
step() {
  local name=$1
  shift
  banner "$name"
  local rc=0
  timeout --kill-after=10 "$STEP_TIMEOUT" "$@" || rc=$?
  if ((rc == 0)); then
    passed=$((passed + 1))
    echo "----- $name: PASS"
  else
    failed=$((failed + 1))
    failures+=("$name")
    if ((rc == 124)); then
      echo "----- $name: FAIL (timed out after ${STEP_TIMEOUT}s)"
    else
      echo "----- $name: FAIL (exit $rc)"
    fi
  fi
}

# skip_all REASON: count every step of 3 as failed without running it.
skip_all() {
  local name
  for name in "${EXAMPLES[@]/#/example }" "pika tests" "amqp-tools test"; do
    echo "----- $name: FAIL (not run: $1)"
    failed=$((failed + 1))
    failures+=("$name")
  done
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# ---- 1. Rust tests
if [[ ${RUN_ALL_SKIP_CARGO_TEST:-} == 1 ]]; then
  banner "cargo test --workspace: skipped (RUN_ALL_SKIP_CARGO_TEST=1)"
else
  banner "cargo test --workspace"
  if ! cargo test --workspace --no-fail-fast; then
    cargo_failed+=("cargo test --workspace")
  fi
  # The criterion micro-benchmarks, built and run once each as a check (not timed).
  banner "cargo test -p warren-broker --benches"
  if ! cargo test -p warren-broker --benches; then
    cargo_failed+=("cargo test -p warren-broker --benches")
  fi
fi

# ---- 2. the broker
broker_ok=1
if [[ -n ${WARREN_TEST_URL:-} ]]; then
  AMQP_URL=$WARREN_TEST_URL
  banner "using the broker at $AMQP_URL (WARREN_TEST_URL); not starting Warren"
else
  banner "cargo build -p warren-cli"
  if ! cargo build -p warren-cli; then
    cargo_failed+=("cargo build -p warren-cli")
    broker_ok=0
  else
    WARREN_BIN=$target_dir/debug/warren
    PORT=$(free_port)
    DATA_DIR=$WORKDIR/data
    WARREN_LOG=$WORKDIR/warren.log
    mkdir -p "$DATA_DIR"
    banner "starting $WARREN_BIN serve --http-bind 127.0.0.1:0 --prometheus-bind 127.0.0.1:0 --bind 127.0.0.1:$PORT --data-dir $DATA_DIR"
    "$WARREN_BIN" serve --http-bind 127.0.0.1:0 --prometheus-bind 127.0.0.1:0 --bind "127.0.0.1:$PORT" --data-dir "$DATA_DIR" >"$WARREN_LOG" 2>&1 &
    WARREN_PID=$!
    up=0
    for _ in $(seq 1 300); do # 30 s
      if ! kill -0 "$WARREN_PID" 2>/dev/null; then
        break
      fi
      if port_open "$PORT"; then
        up=1
        break
      fi
      sleep 0.1
    done
    if ((up)); then
      echo "warren is listening on 127.0.0.1:$PORT (pid $WARREN_PID)"
      AMQP_URL="amqp://guest:guest@127.0.0.1:$PORT/%2f"
    else
      if kill -0 "$WARREN_PID" 2>/dev/null; then
        echo "warren (pid $WARREN_PID) did not accept connections on 127.0.0.1:$PORT within 30 s"
      else
        echo "warren exited before accepting connections"
      fi
      echo "--- last lines of its log:"
      tail -n 40 "$WARREN_LOG" || true
      stop_warren
      broker_ok=0
    fi
  fi
fi

# ---- 3. clients against the broker
if ((broker_ok)); then
  export AMQP_URL
  banner "cargo build --examples ${EXAMPLES_CARGO_FLAGS[*]}"
  if ! cargo build --examples "${EXAMPLES_CARGO_FLAGS[@]}"; then
    cargo_failed+=("cargo build --examples")
  fi
  for example in "${EXAMPLES[@]}"; do
    step "example $example" cargo run -q "${EXAMPLES_CARGO_FLAGS[@]}" --example "$example"
  done
  step "pika tests" "$PYTHON" -m pytest -q -p no:cacheprovider tests/clients/pika_test.py \
    tests/clients/pika_x_death_test.py
  step "amqp-tools test" bash tests/clients/amqp_tools_test.sh
else
  skip_all "no broker"
fi

# ---- 4. the fuzz targets, each for FUZZ_SECONDS (60 by default)
if [[ ${RUN_ALL_SKIP_FUZZ:-} == 1 ]]; then
  banner "fuzz targets: skipped (RUN_ALL_SKIP_FUZZ=1)"
else
  banner "fuzz targets (tests/fuzz.sh)"
  if ! bash tests/fuzz.sh; then
    cargo_failed+=("fuzz targets (tests/fuzz.sh)")
  fi
fi

# ---- 5. summary
if [[ -n $WARREN_PID ]]; then
  if ! kill -0 "$WARREN_PID" 2>/dev/null; then
    echo "warren (pid $WARREN_PID) died during the run; last lines of its log:"
    tail -n 40 "$WARREN_LOG" || true
    WARREN_PID=""
    cargo_failed+=("warren serve (died during the run)")
  fi
fi
stop_warren

banner "summary"
for f in "${cargo_failed[@]}"; do echo "FAILED: $f"; done
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "run-all: $passed passed, $failed failed"
if ((failed > 0 || ${#cargo_failed[@]} > 0)); then
  exit 1
fi
