#!/usr/bin/env bash
# Installs what Bramble needs on a Debian 12 machine (as root; only what is
# missing), builds it, and runs it: the desktop window when a display is
# present, `bramble serve` (console at http://127.0.0.1:3180) otherwise.
# Extra arguments go to `bramble serve`, e.g. `--listen 127.0.0.1:8080`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh

ensure_debs "${DESKTOP_BUILD_DEBS[@]}"
check_toolchains
ensure_node_modules
npm run ui:build

if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then
  cargo build --release -p bramble-desktop
  exec "$CARGO_TARGET_DIR/release/bramble-desktop"
else
  cargo build --release --bin bramble
  exec "$CARGO_TARGET_DIR/release/bramble" serve "$@"
fi
