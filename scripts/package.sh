#!/usr/bin/env bash
# Builds the Debian package with cargo-deb ([package.metadata.deb] in Cargo.toml): the release
# binary without the `sim` feature (`--no-default-features --features redis,mimalloc`), the
# hardened unit and the system user from deploy/debian/, examples/production.toml as the
# conffile /etc/wechat-oauth-proxy/config.toml. Installs the pinned cargo-deb when missing.
#
#   scripts/package.sh                 build target/debian/wechat-oauth-proxy_<version>_<arch>.deb
#                                      (and the -dbgsym.ddeb with its debug symbols)
#   scripts/package.sh --install-test  build, then (CI) install it with dpkg -i, prove that
#                                      --check refuses the installed configuration until its
#                                      secret files exist and accepts it, as the service user,
#                                      once they do; systemd-analyze verify the unit; dpkg -r,
#                                      then purge. Refuses to run where the package is installed.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
PKG=wechat-oauth-proxy
ETC=/etc/$PKG
CONFIG=$ETC/config.toml
UNIT=/usr/lib/systemd/system/$PKG.service
# The secret files examples/production.toml names (component mode).
SECRETS=(component_secret message_token encoding_aes_key master_secret)

mode=build
case "${1:-}" in
    "") ;;
    --install-test) mode=install-test ;;
    *) echo "usage: $0 [--install-test]" >&2; exit 2 ;;
esac

if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

# cargo-deb prints the paths of what it wrote: the .deb and its -dbgsym.ddeb (debug symbols).
built=$(cargo deb --locked)
deb=$(grep '\.deb$' <<<"$built" | tail -n 1)
[ -f "$deb" ] || { echo "cargo deb did not report a package: $built" >&2; exit 1; }
while read -r f; do echo "$f ($(du -h "$f" | cut -f1))"; done <<<"$built"
[ "$mode" = install-test ] || exit 0

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
fail() { echo "package test FAILED: $*" >&2; exit 1; }
# --check as root, as an operator runs it (the secret files are root:$PKG 0640).
check() { $SUDO /usr/bin/$PKG --check --config "$1"; }

if dpkg-query -W -f '${Status}' "$PKG" 2>/dev/null | grep -q 'installed'; then
    fail "$PKG is installed on this machine: the test would replace it (dpkg -P $PKG first)"
fi
for s in "${SECRETS[@]}"; do
    [ ! -e "$ETC/$s" ] || fail "$ETC/$s exists: the test would overwrite it"
done
tmp=$(mktemp -d)
cleanup() {
    rm -rf "$tmp"
    $SUDO dpkg -P "$PKG" >/dev/null 2>&1 || true
    for s in "${SECRETS[@]}"; do $SUDO rm -f "$ETC/$s"; done
    $SUDO rmdir "$ETC" 2>/dev/null || true
}
trap cleanup EXIT

$SUDO dpkg -i "$deb"
getent passwd "$PKG" >/dev/null || fail "the postinst did not create the user $PKG"
[ -x /usr/bin/$PKG ] && [ -f "$CONFIG" ] && [ -f "$UNIT" ] || fail "files missing after dpkg -i"
dpkg-query -W -f '${Conffiles}\n' "$PKG" | grep -q " $CONFIG " || fail "$CONFIG is not a conffile"

# As shipped: no secret files, so --check must refuse (64) and name every file to create.
set +e
out=$(check "$CONFIG" 2>&1)
rc=$?
set -e
echo "$out"
[ "$rc" -eq 64 ] || fail "--check on the shipped configuration exited $rc, want 64"
for s in "${SECRETS[@]}"; do
    grep -q "cannot read $ETC/$s" <<<"$out" || fail "--check does not name $ETC/$s"
done

# Placeholder secrets as an operator would create them: random, root:$PKG, mode 0640.
secret() { # NAME VALUE
    printf '%s\n' "$2" | $SUDO install -m 0640 -o root -g "$PKG" /dev/stdin "$ETC/$1"
}
random() { head -c "$1" /dev/urandom | base64 -w0 | tr -d '=+/'; }
secret component_secret "$(random 24)"
secret message_token "$(random 24)"
secret encoding_aes_key "$(head -c 32 /dev/urandom | base64 -w0 | tr -d '=')"
secret master_secret "$(head -c 48 /dev/urandom | base64 -w0)"
$SUDO runuser -u "$PKG" -- /usr/bin/$PKG --check --config "$CONFIG" \
    || fail "--check as the service user refused the configuration with its secret files"

# The shipped binary has the Redis backends (scaling out needs no recompiling) ...
sed -e 's/^store = "durable"/store = "redis"/' -e 's/^# redis_url = /redis_url = /' \
    "$CONFIG" >"$tmp/redis.toml"
grep -q '^store = "redis"' "$tmp/redis.toml" || fail "could not switch the config to Redis"
check "$tmp/redis.toml" || fail "the packaged binary refuses store = redis"
# ... and not the simulator: the development config's [dev] is refused at start (a bad
# configuration: exit 64, checked before anything starts).
set +e
out=$(timeout 20 /usr/bin/$PKG --config config.toml --state-dir "$tmp/state" --listen 127.0.0.1:0 2>&1)
rc=$?
set -e
[ "$rc" -eq 64 ] && grep -q 'needs a build with the `sim` feature' <<<"$out" \
    || fail "the packaged binary started [dev] (exit $rc): $out"
# ... and --check refuses it the same way (what ExecStartPre runs), exit 64.
set +e
out=$(/usr/bin/$PKG --check --config config.toml 2>&1)
rc=$?
set -e
[ "$rc" -eq 64 ] && grep -q 'needs a build with the `sim` feature' <<<"$out" \
    || fail "--check of the packaged binary accepted [dev] (exit $rc): $out"

# An empty secret file is refused, never taken as a secret.
$SUDO truncate -s 0 "$ETC/master_secret"
out=$(check "$CONFIG" 2>&1) && fail "--check accepted an empty master_secret file"
grep -q "master_secret_file: $ETC/master_secret is empty" <<<"$out" \
    || fail "--check does not say that $ETC/master_secret is empty: $out"

if command -v systemd-analyze >/dev/null; then
    # No systemd runs here: verify the unit file only (never start it). verify exits 0 on an
    # unknown or malformed setting ("…, ignoring"), so any warning it prints fails too.
    verified=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$UNIT" 2>&1) \
        && [ -z "$verified" ] || fail "systemd-analyze verify $UNIT: $verified"
    systemd-analyze security --offline=yes "$UNIT" 2>/dev/null | tail -n 1 || true
else
    echo "systemd-analyze not found: unit not verified"
fi

$SUDO dpkg -r "$PKG"
[ ! -e /usr/bin/$PKG ] || fail "/usr/bin/$PKG left after dpkg -r"
echo "package test passed: $deb installed, checked and removed"
