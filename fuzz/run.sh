#!/usr/bin/env bash
# Fuzzes every target for SECONDS each (default 60), starting from the committed seeds
# (fuzz/seeds/<target>/) in a working corpus (fuzz/corpus/, not committed), and prints one
# line per target: executions, executions per second, coverage and whether it crashed.
# Needs a nightly toolchain (cargo-fuzz is installed if missing) and cmake (SentencePiece).
# JOBS=2 runs two targets at a time; TARGETS="npy ckpt" runs only those. Crashes land in fuzz/artifacts/<target>/; each becomes
# a regression input under tests/fixtures/fuzz/<target>/, which `cargo test` replays.
set -euo pipefail
cd "$(dirname "$0")"
SECS=${1:-60}
JOBS=${JOBS:-1}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
source ../scripts/ensure_cmake.sh
cargo +nightly fuzz build -O 2>&1 | tail -3
mkdir -p logs
run_one() {
  local t=$1
  mkdir -p "corpus/$t" "artifacts/$t"
  cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  # RSS and single-malloc limits catch inputs that make a reader allocate gigabytes;
  # -timeout catches inputs that make it spin.
  cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
    -max_total_time="$SECS" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 \
    -print_final_stats=1 -artifact_prefix="artifacts/$t/" >"logs/$t.log" 2>&1 && rc=0 || rc=$?
  local runs eps cov
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  eps=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]* ft: [0-9]*' "logs/$t.log" | tail -1 || echo "?")
  echo "$t: seconds $SECS, runs ${runs:-?}, exec/s ${eps:-?}, ${cov:-cov ?}, $([ $rc = 0 ] && echo ok || echo "CRASH (rc $rc, see fuzz/logs/$t.log and fuzz/artifacts/$t/)")"
  return $rc
}
status=0
pids=()
for t in ${TARGETS:-$(cargo +nightly fuzz list)}; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$JOBS" ]; then
    wait "${pids[0]}" || status=1
    pids=("${pids[@]:1}")
  fi
done
for p in "${pids[@]}"; do wait "$p" || status=1; done
exit $status
