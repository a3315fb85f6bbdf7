#!/usr/bin/env bash
# Runs every Bramble test on a Debian 12 machine as root: installs what the
# tests need (only what is missing), builds, and runs, in this order:
#   formatting, the console's type-check and unit tests, the Rust tests,
#   the console in a real browser against a real `bramble serve`,
#   then the desktop window (Tauri under Xvfb) and clippy over everything.
# The desktop build comes after the browser tests so they never wait on it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ARTIFACTS="${ARTIFACTS:-$(mktemp -d /tmp/bramble-test-XXXXXX)}"
export ARTIFACTS
echo "artifacts (logs, screenshots): $ARTIFACTS"

step "Debian packages" ensure_debs "${DESKTOP_BUILD_DEBS[@]}" chromium xvfb xauth imagemagick webkit2gtk-driver python3 dovecot-imapd dovecot-lmtpd postfix slapd ldap-utils radicale
step "toolchains" check_toolchains
step "npm dependencies" ensure_node_modules
step "cargo fmt --check" cargo fmt --all -- --check
step "console build" npm run ui:build
step "console type-check" npm run ui:check
step "console unit tests" npm run ui:test
step "Rust tests" cargo test --all-targets

browser_tests() {
  local port data pid status=0
  port=$(free_port)
  data=$(mktemp -d /tmp/bramble-browser-XXXXXX)
  cargo build --bin bramble
  BRAMBLE_DATA_DIR="$data" BRAMBLE_ROUTER__LAN_LISTEN=127.0.0.1:0 "$CARGO_TARGET_DIR/debug/bramble" serve --listen "127.0.0.1:$port" \
    >"$ARTIFACTS/serve.log" 2>&1 &
  pid=$!
  if ! wait_for_health "http://127.0.0.1:$port" 60; then
    kill "$pid" 2>/dev/null || true
    cat "$ARTIFACTS/serve.log"
    die "bramble serve did not report healthy components within 60 s"
  fi
  BRAMBLE_URL="http://127.0.0.1:$port" npm run test:browser || status=$?
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  return $status
}
step "console in a real browser" browser_tests

step "desktop build" cargo build -p bramble-desktop
step "desktop unit tests" cargo test -p bramble-desktop
step "desktop window smoke test" bash tests/desktop/smoke.sh
step "clippy (all crates, all targets)" cargo clippy --workspace --all-targets -- -D warnings

say "timings"
printf '%s\n' "${STEP_TIMES[@]}"
echo "all Bramble tests passed"
