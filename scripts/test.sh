#!/usr/bin/env bash
# The one test command: installs what the test suite needs and is missing, then runs every test.
#
#   scripts/test.sh                     # everything: cargo test --all-features
#   scripts/test.sh --test proxy        # extra arguments go to cargo test as they are
#   scripts/test.sh --lib -- --nocapture
#   scripts/test.sh --setup-only        # install what is missing, run nothing
#
# System packages come from apt-get (Debian/Ubuntu; through sudo when not root). npm and PyPI
# packages go into the build directory (target/test-deps/, or $CARGO_TARGET_DIR/test-deps/), never
# into the system. Each step prints how long it took; any failure ends the script non-zero.
#
# Prerequisite this script does not install: a Rust toolchain (https://rustup.rs).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--setup-only" ] && [ "$#" -gt 1 ]; then
  echo "error: --setup-only takes no other arguments" >&2
  exit 2
fi

# ---------------------------------------------------------------------------------------------
# What the tests need. One line per Debian package: "package|bash check that succeeds when it is
# present|why". The check's output is discarded; after installing, it must succeed or the script
# stops. Programs: `type -P NAME` (a PATH lookup that ignores shell builtins such as kill); those in
# /usr/sbin (nginx) are not on a normal user's PATH: test the file, e.g. `test -x /usr/sbin/nginx`.
# Files: e.g. "fonts-noto-cjk|test -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc|...".
SYSTEM_PACKAGES=(
  "build-essential|type -P cc|a C compiler: ring, aws-lc-sys and mimalloc compile C code"
  "procps|type -P kill|tests/binary_e2e.rs stops the real binary with kill -TERM"
  "redis-server|type -P redis-server|the Redis backends' tests start their own server on a loopback port"
  "php-cli|php -r 'exit(function_exists(\"sodium_crypto_sign_verify_detached\") ? 0 : 1);'|examples/verify/php (built-in sodium) and the PHP demo upstream under php -S (tests/verifiers.rs, tests/php_upstream.rs)"
  "golang-go|type -P go|examples/verify/go, standard library only (tests/verifiers.rs)"
  "prometheus|type -P promtool|promtool checks and unit-tests deploy/prometheus/alerts.yml (tests/metrics.rs)"
  "default-jdk-headless|type -P javac|examples/verify/java, Java 17+ standard library only (tests/verifiers.rs)"
  "nodejs|node -e 'process.exit(process.features.require_module ? 0 : 1)'|examples/verify/node with jose (tests/verifiers.rs); jose 6 is an ES module that the example loads with require(), which needs Node.js 20.19+ or 22.12+"
  "nginx|test -x /usr/sbin/nginx|tests/front_proxies.rs runs the shipped deploy/nginx/ config (auth_request) in front of a login"
  "caddy|type -P caddy|tests/front_proxies.rs runs the shipped deploy/caddy/Caddyfile (forward_auth) in front of a login"
  "valgrind|type -P valgrind|the instruction-count guard benches/icount.rs (run by .ci/run) counts with callgrind"
  "chromium|type -P chromium|headless Chromium: the real-browser tests (tests/browser_*.rs) load the proxy's pages and the simulated WeChat's"
  "chromium-driver|type -P chromedriver|chromedriver: the real-browser tests drive Chromium over WebDriver (tests/support/browser.rs)"
  "fonts-noto-cjk|test -e /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc|CJK glyphs: the real-browser tests check that the zh-CN pages render Chinese text, and their screenshots read properly"
)

# npm packages, installed with `npm install` into target/test-deps/npm (their binaries on PATH,
# their modules on NODE_PATH). One line per package: "name@exact-version|why".
NPM_PACKAGES=(
  "jose@6.2.18|examples/verify/node verifies the identity JWT with it (tests/verifiers.rs)"
)

# PyPI packages, installed with pip into the virtualenv target/test-deps/venv (its bin/ first on
# PATH, so `python3` in a test is the venv's). One line per package: "name==exact-version|why".
PYPI_PACKAGES=(
  "PyJWT==2.15.1|examples/verify/python verifies the identity JWT with it (tests/verifiers.rs)"
  "cryptography==50.0.2|PyJWT's EdDSA (Ed25519) support (tests/verifiers.rs)"
)
# ---------------------------------------------------------------------------------------------

script_start=$(date +%s)
step_names=()
step_secs=()
current_step=""
current_start=0

# Starts a timed step (and ends the previous one).
step() {
  end_step
  current_step="$*"
  current_start=$(date +%s)
  echo
  echo "== $current_step"
}

end_step() {
  if [ -n "$current_step" ]; then
    step_names+=("$current_step")
    step_secs+=("$(($(date +%s) - current_start))")
    current_step=""
  fi
}

# On any exit: the time of each step, and which one failed.
summary() {
  local status=$?
  local failed="$current_step"
  end_step
  echo
  echo "== timings"
  local i
  for i in "${!step_names[@]}"; do
    printf '%6ss  %s\n' "${step_secs[$i]}" "${step_names[$i]}"
  done
  printf '%6ss  total\n' "$(($(date +%s) - script_start))"
  if [ "$status" -ne 0 ]; then
    echo "== FAILED (exit $status)${failed:+ in: $failed}"
  elif [ "${1:-}" = "--setup-only" ]; then
    echo "== setup done (--setup-only: no tests run)"
  else
    echo "== all tests passed"
  fi
}
trap 'summary "$@"' EXIT

die() {
  echo "error: $*" >&2
  exit 1
}

# True when the check command of a package entry succeeds.
present() {
  (eval "$1") >/dev/null 2>&1
}

# Runs a command as root: directly, or through sudo.
as_root() {
  if [ "$(id -u)" = 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    die "need root to run: $* (run as root or install sudo)"
  fi
}

# Installs the SYSTEM_PACKAGES whose check fails, with one apt-get update before.
install_system_packages() {
  local entry package check why missing=()
  for entry in "$@"; do
    IFS='|' read -r package check why <<<"$entry"
    if present "$check"; then
      echo "present: $package"
    else
      echo "missing: $package — $why"
      missing+=("$package")
    fi
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  command -v apt-get >/dev/null 2>&1 ||
    die "not a Debian/Ubuntu system (no apt-get): install ${missing[*]} yourself and run again"
  echo "installing with apt-get: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}"
  for entry in "$@"; do
    IFS='|' read -r package check why <<<"$entry"
    present "$check" || die "$package installed but its check still fails: $check"
  done
}

# Installs "spec|why" entries into a directory with an installer function (called as
# `installer DIR SPEC...`), unless the stamp DIR/.installed records this exact list already.
install_listed() {
  local kind="$1" dir="$2" installer="$3" entry specs=()
  shift 3
  for entry in "$@"; do specs+=("${entry%%|*}"); done
  if [ "$(cat "$dir/.installed" 2>/dev/null)" = "${specs[*]}" ]; then
    echo "present ($kind, $dir): ${specs[*]}"
    return 0
  fi
  echo "installing $kind packages into $dir:"
  for entry in "$@"; do echo "  ${entry%%|*} — ${entry#*|}"; done
  rm -rf "$dir"
  "$installer" "$dir" "${specs[@]}"
  echo "${specs[*]}" >"$dir/.installed"
}

# npm packages into DIR/node_modules.
npm_installer() {
  local dir="$1"
  shift
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-save --no-audit --no-fund --loglevel=error "$@"
}

# PyPI packages into a fresh virtualenv at DIR.
pypi_installer() {
  local dir="$1"
  shift
  python3 -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
}

step "toolchain"
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust from https://rustup.rs"
cargo --version

step "system packages"
# The language package managers are needed only when there is something to install with them.
[ "${#NPM_PACKAGES[@]}" -eq 0 ] ||
  SYSTEM_PACKAGES+=("npm|type -P npm|installs the npm packages listed in scripts/test.sh")
[ "${#PYPI_PACKAGES[@]}" -eq 0 ] ||
  SYSTEM_PACKAGES+=("python3-venv|python3 -c 'import ensurepip, venv'|holds the PyPI packages listed in scripts/test.sh")
install_system_packages "${SYSTEM_PACKAGES[@]}"

# Tests find the tools installed below through PATH / NODE_PATH, or TEST_DEPS_DIR directly.
case "${CARGO_TARGET_DIR:-target}" in
  /*) deps="$CARGO_TARGET_DIR/test-deps" ;;
  *) deps="$(pwd)/${CARGO_TARGET_DIR:-target}/test-deps" ;;
esac
export TEST_DEPS_DIR="$deps"
if [ "${#NPM_PACKAGES[@]}" -gt 0 ]; then
  step "npm packages"
  install_listed npm "$deps/npm" npm_installer "${NPM_PACKAGES[@]}"
  export PATH="$deps/npm/node_modules/.bin:$PATH"
  export NODE_PATH="$deps/npm/node_modules${NODE_PATH:+:$NODE_PATH}"
fi
if [ "${#PYPI_PACKAGES[@]}" -gt 0 ]; then
  step "PyPI packages"
  install_listed PyPI "$deps/venv" pypi_installer "${PYPI_PACKAGES[@]}"
  export PATH="$deps/venv/bin:$PATH"
fi

[ "${1:-}" = "--setup-only" ] && exit 0

step "cargo test --all-features${*:+ $*}"
cargo test --all-features "$@"
