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

# start_directory D PORT USERS: a lone slapd on 127.0.0.1:PORT from folder D
# holding USERS people (dc=example,dc=com, bind as cn=admin with "secret"),
# for the console's directory page. Prints its PID.
start_directory() {
  local d=$1 port=$2 users=$3 i
  mkdir -p "$d/db"
  cat >"$d/slapd.conf" <<CONF
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile $d/slapd.pid
argsfile $d/slapd.args
database mdb
maxsize 104857600
suffix "dc=example,dc=com"
rootdn "cn=admin,dc=example,dc=com"
rootpw secret
directory $d/db
index objectClass eq
index entryCSN,modifyTimestamp eq
access to * by * read
CONF
  {
    printf 'dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n'
    printf 'dn: ou=people,dc=example,dc=com\nobjectClass: organizationalUnit\nou: people\n\n'
    for ((i = 1; i <= users; i++)); do
      printf 'dn: uid=staff%d,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: staff%d\ncn: Staff %d\nsn: %d\nmail: staff%d@example.com\n\n' "$i" "$i" "$i" "$i" "$i"
    done
  } >"$d/data.ldif"
  slaptest -f "$d/slapd.conf" -u >/dev/null 2>&1
  slapadd -q -f "$d/slapd.conf" -l "$d/data.ldif" >/dev/null
  slapd -d 0 -h "ldap://127.0.0.1:$port/" -f "$d/slapd.conf" >"$d/slapd.log" 2>&1 &
  echo $!
  for ((i = 0; i < 500; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.01
  done
  die "slapd did not listen on 127.0.0.1:$port; see $d/slapd.log"
}

browser_tests() {
  local port data pid ldap_port ldap_pid relay_pid tb smtp relay_port relay_devices status=0
  port=$(free_port)
  ldap_port=$(free_port)
  data=$(mktemp -d /tmp/bramble-browser-XXXXXX)
  cargo build --bin bramble
  local bin="$CARGO_TARGET_DIR/debug/bramble"
  # The directory page syncs a real slapd ("corp"); "wrong-password" shows
  # how a refused bind reads on screen.
  ldap_pid=$(start_directory "$data/slapd" "$ldap_port" 400)
  # A mail testbed and a relay that e-mails activation requests into it,
  # for the device activated over the air in wireless.spec.ts.
  tb="$data/testbed"
  # The mail servers' own users must reach their folders inside it.
  chmod 755 "$data"
  if ! "$bin" testbed up --dir "$tb" >"$ARTIFACTS/testbed.log" 2>&1; then
    kill "$ldap_pid" 2>/dev/null || true
    cat "$ARTIFACTS/testbed.log"
    die "the mail testbed did not start; see above"
  fi
  smtp=$(sed -n 's/^smtp = "\(.*\)"$/\1/p' "$tb/bramble.toml")
  relay_port=$(free_port)
  relay_devices=$(free_port)
  cat >"$data/relay.toml" <<TOML
server_listen = "127.0.0.1:$relay_port"
device_listen = "127.0.0.1:$relay_devices"
smtp = "$smtp"

[[srp_accounts]]
srp_id = "S80001000"
key = "browser-test-srp-key"
TOML
  "$bin" relay --relay-config "$data/relay.toml" --write-certificate "$data/relay.crt" >"$ARTIFACTS/relay.log" 2>&1 &
  relay_pid=$!
  cat >"$data/bramble.toml" <<TOML
[[directories]]
name = "corp"
url = "ldap://127.0.0.1:$ldap_port"
bind_dn = "cn=admin,dc=example,dc=com"
bind_password = "secret"
base_dn = "dc=example,dc=com"
page_size = 50
sync_interval_secs = 86400

[[directories]]
name = "wrong-password"
url = "ldap://127.0.0.1:$ldap_port"
bind_dn = "cn=admin,dc=example,dc=com"
bind_password = "not the password"
base_dn = "dc=example,dc=com"
sync_interval_secs = 86400

[router]
relay_certificate = "$data/relay.crt"

TOML
  sed -n '/^\[mail\]/,/^$/p' "$tb/bramble.toml" >>"$data/bramble.toml"
  echo 'refresh_users_secs = 1' >>"$data/bramble.toml"
  BRAMBLE_CONFIG="$data/bramble.toml" BRAMBLE_DATA_DIR="$data" BRAMBLE_ROUTER__LAN_LISTEN=127.0.0.1:0 "$bin" serve --listen "127.0.0.1:$port" \
    >"$ARTIFACTS/serve.log" 2>&1 &
  pid=$!
  if ! wait_for_health "http://127.0.0.1:$port" 60; then
    kill "$pid" "$ldap_pid" "$relay_pid" 2>/dev/null || true
    "$bin" testbed down --dir "$tb" >/dev/null 2>&1 || true
    cat "$ARTIFACTS/serve.log"
    die "bramble serve did not report healthy components within 60 s"
  fi
  BRAMBLE_URL="http://127.0.0.1:$port" BRAMBLE_BIN="$bin" BRAMBLE_CONFIG="$data/bramble.toml" BRAMBLE_DATA_DIR="$data" \
    BRAMBLE_RELAY_SERVER="127.0.0.1:$relay_port" BRAMBLE_RELAY_DEVICES="127.0.0.1:$relay_devices" \
    npm run test:browser || status=$?
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  kill -TERM "$ldap_pid" "$relay_pid" 2>/dev/null || true
  wait "$ldap_pid" "$relay_pid" 2>/dev/null || true
  "$bin" testbed down --dir "$tb" >/dev/null 2>&1 || true
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
