#!/usr/bin/env bash
# The PHP demo in one command: a plain PHP page (examples/php/index.php) under PHP's built-in
# server on 127.0.0.1:8081, behind the sidecar on 127.0.0.1:8080 with the simulated WeChat
# (examples/php-demo.toml). Open http://127.0.0.1:8080, pick a test user, and the PHP page greets
# you by nickname after verifying the JWT. Ctrl-C stops both.
#
#   scripts/demo-php.sh
#
# Needs: a Rust toolchain and PHP 7.2+ with sodium (Debian/Ubuntu: apt-get install php-cli).
# Development only: simulated WeChat, fixed development secrets, loopback addresses.
set -euo pipefail
cd "$(dirname "$0")/.."

PROXY=127.0.0.1:8080
PHP_LISTEN=127.0.0.1:8081

command -v php >/dev/null 2>&1 || {
  echo "error: php not found: install PHP 7.2+ with sodium (Debian/Ubuntu: apt-get install php-cli)" >&2
  exit 1
}
php -r 'exit(function_exists("sodium_crypto_sign_verify_detached") ? 0 : 1);' || {
  echo "error: this PHP has no sodium extension (PHP 7.2+ bundles it; Debian's php-cli has it)" >&2
  exit 1
}

# Build first, so that PHP does not wait for the compiler.
cargo build --release --bin wechat-oauth-proxy

WECHAT_JWKS_URL="http://$PROXY/_wxauth/jwks.json" \
  WECHAT_JWT_ISSUER=wechat-oauth-proxy-php-demo \
  WECHAT_JWT_AUDIENCE=legacy-php \
  php -S "$PHP_LISTEN" -t examples/php examples/php/index.php &
php_pid=$!
trap 'kill "$php_pid" 2>/dev/null || true' EXIT

echo
echo "PHP demo: open http://$PROXY in a browser (PHP itself listens on $PHP_LISTEN)."
echo
target/release/wechat-oauth-proxy --config examples/php-demo.toml
