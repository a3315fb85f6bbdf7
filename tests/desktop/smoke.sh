#!/usr/bin/env bash
# Desktop smoke test: opens the real bramble-desktop window under Xvfb,
# drives it through tauri-driver (WebDriver), and checks that the console
# shows the Messaging Agent as running and its live status stream open — i.e. the in-process server core
# started and the window's console reached it over loopback. Then it closes
# the app (SIGTERM) and checks that the server shut down cleanly.
#
# Build first:   npm run ui:build && cargo build -p bramble-desktop
# Then run:      bash tests/desktop/smoke.sh
#
# Needs: Xvfb, WebKitWebDriver (Debian: xvfb, webkit2gtk-driver), Node 20,
# tauri-driver 2 (installed with cargo when missing).
# Environment: CARGO_TARGET_DIR (where the binary is; default ./target),
# ARTIFACTS (screenshot and logs; default /tmp), SMOKE_TIMEOUT_S (60).
# Everything the app writes goes to a temporary folder, removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."

die() {
  echo "desktop smoke test FAILED: $*" >&2
  exit 1
}

target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
app="$target_dir/debug/bramble-desktop"
artifacts="${ARTIFACTS:-/tmp}"
native_driver=/usr/bin/WebKitWebDriver
mkdir -p "$artifacts"
artifacts="$(cd "$artifacts" && pwd)"

[[ -x "$app" ]] || die "$app does not exist; build it first with: cargo build -p bramble-desktop"
[[ -x "$native_driver" ]] || die "$native_driver is missing; install it with: apt-get install webkit2gtk-driver"
command -v Xvfb >/dev/null || die "Xvfb is missing; install it with: apt-get install xvfb"
command -v node >/dev/null || die "node (20 or later) is missing"

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v tauri-driver >/dev/null; then
  echo "installing tauri-driver 2 (cargo install, about a minute)"
  cargo install tauri-driver --locked --version '^2' || die "cargo install tauri-driver failed"
fi

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

work="$(mktemp -d /tmp/bramble-desktop-smoke-XXXXXX)"
xvfb_pid=""
driver_pid=""
cleanup() {
  local status=$?
  # tauri-driver runs in its own process group with WebKitWebDriver and the
  # app under it; end that group, then Xvfb.
  if [[ -n "$driver_pid" ]]; then
    kill -TERM -- "-$driver_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 -- "-$driver_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$driver_pid" 2>/dev/null || true
  fi
  if [[ -n "$xvfb_pid" ]]; then
    kill -TERM "$xvfb_pid" 2>/dev/null || true
    wait "$xvfb_pid" 2>/dev/null || true
  fi
  if [[ $status -ne 0 && -f "$work/driver.log" ]]; then
    echo "--- tauri-driver and app output (last 60 lines) ---" >&2
    tail -n 60 "$work/driver.log" >&2 || true
  fi
  [[ -f "$work/driver.log" ]] && cp "$work/driver.log" "$artifacts/desktop-smoke-driver.log" 2>/dev/null
  cat "$work"/data/logs/*.log >"$artifacts/desktop-smoke-app.log" 2>/dev/null || true
  rm -rf "$work"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The app's data, settings, webview storage and caches stay in $work.
unset BRAMBLE_CONFIG BRAMBLE_ADMIN__LISTEN
export BRAMBLE_DATA_DIR="$work/data"
# The Router's LAN path on a free port too, so a Bramble already running on
# this machine does not stop the test's one.
export BRAMBLE_ROUTER__LAN_LISTEN=127.0.0.1:0
export XDG_DATA_HOME="$work/xdg-data" XDG_CONFIG_HOME="$work/xdg-config" XDG_CACHE_HOME="$work/xdg-cache"
mkdir -p "$BRAMBLE_DATA_DIR" "$XDG_DATA_HOME" "$XDG_CONFIG_HOME" "$XDG_CACHE_HOME"

# A display number nobody uses.
display=""
for n in $(seq 99 199); do
  if [[ ! -e "/tmp/.X11-unix/X$n" && ! -e "/tmp/.X$n-lock" ]]; then display=$n; break; fi
done
[[ -n "$display" ]] || die "no free X display number between :99 and :199"
Xvfb ":$display" -screen 0 1280x800x24 -nolisten tcp >"$work/xvfb.log" 2>&1 &
xvfb_pid=$!
for _ in $(seq 1 100); do [[ -e "/tmp/.X11-unix/X$display" ]] && break; sleep 0.1; done
kill -0 "$xvfb_pid" 2>/dev/null || { cat "$work/xvfb.log" >&2; die "Xvfb :$display did not start"; }
[[ -e "/tmp/.X11-unix/X$display" ]] || die "Xvfb :$display did not open its socket within 10 s"
export DISPLAY=":$display"
unset WAYLAND_DISPLAY

port="$(free_port)"
native_port="$(free_port)"
while [[ "$native_port" == "$port" ]]; do native_port="$(free_port)"; done
setsid tauri-driver --port "$port" --native-port "$native_port" --native-driver "$native_driver" \
  >"$work/driver.log" 2>&1 &
driver_pid=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
(exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || die "tauri-driver did not listen on port $port within 10 s"
echo "Xvfb on :$display, tauri-driver on port $port (WebKitWebDriver on $native_port)"

WEBDRIVER_URL="http://127.0.0.1:$port" \
  BRAMBLE_DESKTOP="$app" \
  SCREENSHOT="$artifacts/desktop-smoke.png" \
  DRIVER_PGID="$driver_pid" \
  node tests/desktop/smoke.mjs || die "the console in the window did not come up (see above; screenshot: $artifacts/desktop-smoke.png)"

# smoke.mjs closed the app with SIGTERM; its log must say the in-process
# server shut down (the Configuration Database closed cleanly).
grep -hq "the server stopped" "$BRAMBLE_DATA_DIR"/logs/*.log 2>/dev/null ||
  die "the app's log does not say that the server stopped cleanly (see $artifacts/desktop-smoke-app.log)"
echo "the app closed and its server stopped cleanly"
echo "desktop smoke test passed"
