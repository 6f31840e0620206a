#!/usr/bin/env bash
# Runs Warren's cargo fuzz targets (fuzz/fuzz_targets) for a bounded time each, as CI does:
#
#   bash tests/fuzz.sh                 # each target for FUZZ_SECONDS (default 60), two at once
#   FUZZ_SECONDS=600 bash tests/fuzz.sh frames connection
#
# Each target starts from the seed corpus (fuzz/seeds/TARGET: real client traffic, recorded by
# tests/fuzz_seeds.rs), every input that ever failed it (fuzz/regressions/TARGET: run first,
# so a fixed failure stays fixed) and what earlier runs on this machine found
# (fuzz/corpus/TARGET, not committed). A crash stops that target: the input is written to
# fuzz/artifacts/TARGET/ and this script exits non-zero after printing how to replay it.
# Needs the nightly toolchain and cargo-fuzz (tests/run-all.sh installs cargo-fuzz).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FUZZ_SECONDS=${FUZZ_SECONDS:-60}
if (($# > 0)); then TARGETS=("$@"); else TARGETS=(frames methods tables connection); fi

cargo +nightly --version >/dev/null 2>&1 || {
  echo "fuzz: the nightly toolchain is missing: rustup toolchain install nightly" >&2
  exit 1
}
cargo fuzz --version >/dev/null 2>&1 || {
  echo "fuzz: cargo-fuzz is missing: cargo install cargo-fuzz --version 0.13.2 --locked" >&2
  exit 1
}

# Optimised, with debug assertions and overflow checks (cargo fuzz's default), AddressSanitizer.
# One build for all of them when all run (a build per target rebuilds the broker each time).
if (($# > 0)); then
  for t in "${TARGETS[@]}"; do cargo +nightly fuzz build "$t"; done
else
  cargo +nightly fuzz build
fi
BIN_DIR=fuzz/target/x86_64-unknown-linux-gnu/release

LOGS=$(mktemp -d "${TMPDIR:-/tmp}/warren-fuzz.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT

run_target() { # run_target NAME: one target, its log in $LOGS/NAME.log
  local t=$1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  local dirs=("fuzz/corpus/$t" "fuzz/seeds/$t")
  if [[ -d fuzz/regressions/$t ]]; then dirs+=("fuzz/regressions/$t"); fi
  "$BIN_DIR/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$FUZZ_SECONDS" \
    -rss_limit_mb=4096 -timeout=60 -print_final_stats=1 "${dirs[@]}" >"$LOGS/$t.log" 2>&1
}

failed=()
pids=()
names=()
flush() { # waits for the running targets and reports each
  local i log
  for i in "${!pids[@]}"; do
    log=$LOGS/${names[$i]}.log
    if wait "${pids[$i]}"; then
      echo "fuzz ${names[$i]}: $(grep -E '^Done [0-9]+ runs' "$log" || echo done)," \
        "coverage $(grep -oE 'cov: [0-9]+' "$log" | tail -n 1), no crash"
    else
      failed+=("${names[$i]}")
      echo "fuzz ${names[$i]}: FAILED; the end of its log:"
      grep -v -E '^#[0-9]+' "$log" | tail -n 60
      echo "replay with: cargo +nightly fuzz run ${names[$i]} fuzz/artifacts/${names[$i]}/<file>"
      echo "then keep the input in fuzz/regressions/${names[$i]}/ and add a regression test"
    fi
  done
  pids=()
  names=()
}
for t in "${TARGETS[@]}"; do
  run_target "$t" &
  pids+=($!)
  names+=("$t")
  # Two at a time: the machines have two cores.
  if ((${#pids[@]} >= 2)); then flush; fi
done
flush
if ((${#failed[@]} > 0)); then
  echo "fuzz: failures in ${failed[*]}"
  exit 1
fi
echo "fuzz: ${#TARGETS[@]} targets, ${FUZZ_SECONDS}s each, no crash"
