# Shared by scripts/run.sh and scripts/test.sh. Sourced, not run.
#
# Keeps the cargo build folder outside the source tree (so a fresh clone
# builds incrementally), installs Debian packages only when missing, and
# times each step.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/bramble/target}"
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p "$CARGO_TARGET_DIR"

# Packages the desktop shell (Tauri/WebKitGTK) needs to build.
DESKTOP_BUILD_DEBS=(libwebkit2gtk-4.1-dev libgtk-3-dev librsvg2-dev libssl-dev build-essential pkg-config curl)

say() { printf '\n== %s\n' "$*"; }
die() { printf '\nerror: %s\n' "$*" >&2; exit 1; }

# step NAME COMMAND...: runs a command, reporting how long it took.
STEP_TIMES=()
step() {
  local name=$1; shift
  say "$name"
  local start=$SECONDS
  "$@"
  STEP_TIMES+=("$(printf '%-34s %4ss' "$name" $((SECONDS - start)))")
}

# ensure_debs PKG...: installs the missing ones (as root), never starting
# their system services.
ensure_debs() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    echo "all present: $*"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "missing Debian packages: ${missing[*]}. Install them as root (apt-get install ${missing[*]}) and run again."
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  echo "installing: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# Rust and Node.js come from their own installers; say so if absent.
check_toolchains() {
  command -v cargo >/dev/null || die "Rust is not installed. Install it with rustup (https://rustup.rs), then run again."
  command -v node >/dev/null || die "Node.js 20.19 or newer is not installed. Install it (e.g. from nodejs.org), then run again."
  local node_version
  node_version=$(node -p 'process.versions.node')
  node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a===20&&b>=19)?0:1)' \
    || die "Node.js $node_version is too old: the console's build needs 20.19 or newer."
  echo "cargo: $(cargo --version)"
  echo "node:  v$node_version, npm $(npm --version)"
}

# npm dependencies, reinstalled only when the lock file changed.
ensure_node_modules() {
  local stamp=node_modules/.bramble-lock-stamp
  if [ -f "$stamp" ] && cmp -s package-lock.json "$stamp"; then
    echo "node_modules up to date"
  else
    npm ci --no-audit --no-fund
    cp package-lock.json "$stamp"
  fi
}

# wait_for_health URL SECONDS: polls /health until every component runs.
wait_for_health() {
  local url=$1 limit=$2 i
  for ((i = 0; i < limit * 10; i++)); do
    if curl -fsS "$url/health" 2>/dev/null | grep -q '"status":"ok"'; then
      return 0
    fi
    sleep 0.1
  done
  return 1
}

# A free loopback TCP port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
