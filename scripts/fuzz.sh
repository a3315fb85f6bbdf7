#!/usr/bin/env bash
# Fuzzes bramble-proto's decoders with libFuzzer (cargo-fuzz): frames, the
# reassembler, the encrypted envelope and the control messages.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# SECONDS_PER_TARGET defaults to 30; TARGET defaults to every file in
# crates/bramble-proto/fuzz/fuzz_targets/. Each target starts from its seed
# corpus (crates/bramble-proto/fuzz/corpus/TARGET, committed, never written
# to); what the fuzzer finds on the way goes to a working corpus in the
# build cache, so later runs go on from there.
#
# Installs cargo-fuzz (from crates.io) and the C/C++ toolchain it needs when
# missing. Only a stable Rust is needed: cargo-fuzz passes nightly-only
# flags (-Zsanitizer=address), which RUSTC_BOOTSTRAP=1 lets stable accept.
# Builds go to their own folder (BRAMBLE_FUZZ_TARGET_DIR, default
# /var/cache/bramble/fuzz-target) so the sanitizer flags never invalidate
# the main build cache.
#
# Exits 0 when no target crashed; otherwise 1, after naming each target
# that did and the input that makes it crash (saved under
# crates/bramble-proto/fuzz/artifacts/TARGET/) with the command that
# replays it.
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_DIR=crates/bramble-proto/fuzz
SECONDS_PER_TARGET=${1:-30}
[[ $SECONDS_PER_TARGET =~ ^[0-9]+$ && $SECONDS_PER_TARGET -gt 0 ]] \
  || { echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2; exit 2; }
shift || true

default_target_dir=/var/cache/bramble/fuzz-target
if ! mkdir -p "$default_target_dir" 2>/dev/null; then
  default_target_dir="${XDG_CACHE_HOME:-$HOME/.cache}/bramble/fuzz-target"
fi
export CARGO_TARGET_DIR="${BRAMBLE_FUZZ_TARGET_DIR:-$default_target_dir}"
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"
# scripts/common.sh for say/die/step/ensure_debs; it keeps the
# CARGO_TARGET_DIR set above.
source scripts/common.sh

if [ $# -gt 0 ]; then
  TARGETS=("$@")
else
  TARGETS=()
  for f in "$FUZZ_DIR"/fuzz_targets/*.rs; do TARGETS+=("$(basename "$f" .rs)"); done
fi
for t in "${TARGETS[@]}"; do
  [ -f "$FUZZ_DIR/fuzz_targets/$t.rs" ] || die "no fuzz target '$t' (see $FUZZ_DIR/fuzz_targets/)"
done

tools() {
  command -v cargo >/dev/null || die "Rust is not installed. Install it with rustup (https://rustup.rs), then run again."
  if command -v c++ >/dev/null && command -v pkg-config >/dev/null && pkg-config --exists openssl 2>/dev/null; then
    echo "C/C++ toolchain and OpenSSL headers present"
  else
    ensure_debs build-essential pkg-config libssl-dev
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
  fi
  cargo fuzz --version
}

step "tools" tools
# One cargo invocation for all targets: dependencies are built once.
step "build fuzz targets" cargo fuzz build --fuzz-dir "$FUZZ_DIR"

LOGS="$CARGO_TARGET_DIR/logs"
WORK="$CARGO_TARGET_DIR/corpus"
mkdir -p "$LOGS"
SUMMARY=()
CRASHES=()

stat_of() { sed -n "s/^stat::$1: *//p" "$2" | tail -1; }

run_target() {
  local t=$1 log="$LOGS/$1.log" status=0 dict=() artifact
  mkdir -p "$WORK/$t" "$FUZZ_DIR/artifacts/$t"
  [ -f "$FUZZ_DIR/dict/$t.dict" ] && dict=("-dict=$FUZZ_DIR/dict/$t.dict")
  # Working corpus first (new inputs are written there), seeds second.
  cargo fuzz run --fuzz-dir "$FUZZ_DIR" "$t" "$WORK/$t" "$FUZZ_DIR/corpus/$t" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
  local runs execs
  runs=$(stat_of number_of_executed_units "$log")
  execs=$(stat_of average_exec_per_sec "$log")
  if [ "$status" -eq 0 ]; then
    SUMMARY+=("$(printf '%-18s %10s runs %8s exec/s  ok' "$t" "${runs:-?}" "${execs:-?}")")
    echo "$t: ${runs:-?} runs, ${execs:-?} exec/s, no crash (log: $log)"
  else
    artifact=$(grep -o 'Test unit written to [^ ]*' "$log" | tail -1 | sed 's/Test unit written to //')
    SUMMARY+=("$(printf '%-18s %10s runs %8s exec/s  CRASH %s' "$t" "${runs:-?}" "${execs:-?}" "${artifact:-(no artifact; see log)}")")
    CRASHES+=("$t: ${artifact:-no artifact written, see $log}")
    echo "---- last lines of $log"
    tail -n 60 "$log"
    echo "$t CRASHED (exit $status); input: ${artifact:-none written}"
    [ -n "$artifact" ] && echo "replay: RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR=$CARGO_TARGET_DIR cargo fuzz run --fuzz-dir $FUZZ_DIR $t $artifact"
  fi
  return 0
}

for t in "${TARGETS[@]}"; do
  step "fuzz $t for ${SECONDS_PER_TARGET}s" run_target "$t"
done

say "summary (${SECONDS_PER_TARGET}s per target)"
printf '%s\n' "${SUMMARY[@]}"
printf '\n'
printf '%s\n' "${STEP_TIMES[@]}"
if [ ${#CRASHES[@]} -gt 0 ]; then
  printf '\nerror: %d target(s) crashed:\n' "${#CRASHES[@]}" >&2
  printf '  %s\n' "${CRASHES[@]}" >&2
  exit 1
fi
echo "no crashes"
